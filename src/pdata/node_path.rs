//! Node paths: the block numbers from a tree's root down to a node, as the
//! reference tools print them in error messages (so that their explorer
//! can open the node): a header byte, the numbers in the integer code of
//! the pack format, all in Base64.
//!
//! Header byte: 2 × (entries encoded) + 1 if the path does not start at
//! block 0; a leading 0 is not encoded.

/// Encodes a path of block numbers.
pub fn encode(path: &[u64]) -> String {
    let (header, rest) = match path.split_first() {
        Some((0, rest)) => ((rest.len() * 2) as u8, rest),
        _ => ((path.len() * 2 + 1) as u8, path),
    };
    let mut bytes = vec![header];
    encode_u64s(rest, &mut bytes);
    base64(&bytes)
}

/// Opcodes of the pack format's value machine used here (high nibble).
const OP_SET: u8 = 0x00;
const OP_POS: u8 = 0x10;
const OP_POSW: u8 = 0x20;
const OP_NEG: u8 = 0x30;
const OP_NEGW: u8 = 0x40;

fn width(v: u64) -> usize {
    match v {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

fn push_le(out: &mut Vec<u8>, v: u64, w: usize) {
    out.extend_from_slice(&v.to_le_bytes()[..w]);
}

/// Each value as a delta from the previous one (the first from 0).
fn encode_u64s(values: &[u64], out: &mut Vec<u8>) {
    let mut base: Option<u64> = None;
    for &v in values {
        match base {
            Some(b) if v > b && v - b < 16 => out.push(OP_POS | (v - b) as u8),
            Some(b) if v < b && b - v < 16 => out.push(OP_NEG | (b - v) as u8),
            Some(b) if v > b && width(v - b) < width(v) => {
                let w = width(v - b);
                out.push(OP_POSW | w as u8);
                push_le(out, v - b, w);
            }
            Some(b) if v < b && width(b - v) < width(v) => {
                let w = width(b - v);
                out.push(OP_NEGW | w as u8);
                push_le(out, b - v, w);
            }
            _ => {
                let w = width(v);
                out.push(OP_SET | w as u8);
                push_le(out, v, w);
            }
        }
        base = Some(v);
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= n {
                s.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_paths_the_reference_prints() {
        // A top-level root at block 20 with a bad checksum.
        assert_eq!(encode(&[20]), "AwEU");
        // The superblock location itself (a subtree root pointer of 0).
        assert_eq!(encode(&[0]), "AA==");
        assert_eq!(encode(&[0, 6]), "AgEG");
    }

    /// Decodes the subset of the value machine `encode_u64s` emits.
    fn decode(mut bytes: &[u8]) -> Vec<u64> {
        let mut base = 0u64;
        let mut out = Vec::new();
        while let Some((&op, rest)) = bytes.split_first() {
            bytes = rest;
            let (code, arg) = (op & 0xf0, (op & 0x0f) as usize);
            let mut wide = || {
                let mut b = [0u8; 8];
                b[..arg].copy_from_slice(&bytes[..arg]);
                bytes = &bytes[arg..];
                u64::from_le_bytes(b)
            };
            base = match code {
                OP_SET => wide(),
                OP_POS => base + arg as u64,
                OP_NEG => base - arg as u64,
                OP_POSW => base + wide(),
                OP_NEGW => base - wide(),
                _ => panic!("unexpected op {op:#x}"),
            };
            out.push(base);
        }
        out
    }

    #[test]
    fn deltas_round_trip_compactly() {
        let values = [1000, 1003, 999, 70000, 69000, 5, u64::MAX, 0];
        let mut out = Vec::new();
        encode_u64s(&values, &mut out);
        assert_eq!(decode(&out), values);
        // 1003 and 999 are one-byte deltas from their predecessors.
        assert_eq!(&out[3..5], &[OP_POS | 3, OP_NEG | 4]);
    }
}
