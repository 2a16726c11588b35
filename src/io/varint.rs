//! LEB128 varints and zigzag differences: the compact item logs the
//! restore passes keep in memory (thin and cache) are written and read
//! with these.

pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `*pos`, which moves past it; None if the bytes end
/// first or it is longer than a u64.
pub fn get(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let &b = bytes.get(*pos)?;
        *pos += 1;
        if shift >= 64 {
            return None;
        }
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

/// A wrapped difference as a small number whichever way it points.
pub fn zigzag(d: u64) -> u64 {
    (d << 1) ^ (((d as i64) >> 63) as u64)
}

pub fn unzigzag(z: u64) -> u64 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back() {
        let vals = [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let mut out = Vec::new();
        for v in vals {
            put(&mut out, v);
        }
        let mut pos = 0;
        for v in vals {
            assert_eq!(get(&out, &mut pos), Some(v));
        }
        assert_eq!(get(&out, &mut pos), None);
        assert_eq!(get(&[0xff; 11], &mut 0), None);
        for d in [0u64, 1, u64::MAX, 5u64.wrapping_sub(9)] {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
        assert_eq!(zigzag(u64::MAX), 1);
    }
}
