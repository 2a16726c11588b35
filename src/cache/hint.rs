//! Hints: the policy's per-cache-block value, an array of
//! `policy_hint_size` bytes per entry indexed by cache block. The kernel
//! (smq, mq, cleaner) uses 4-byte hints only; it keeps up to 128.
//!
//! The hint array is written whole at each suspend with `cache_blocks`
//! entries; after a resize it keeps its old length until the next
//! suspend, so its length is read from its own blocks.

/// The only hint size the kernel's policies write.
pub const HINT_SIZE: u32 = 4;
/// The kernel's limit on a policy's hint size.
pub const MAX_HINT_SIZE: u32 = 128;

/// A hint's bytes as a little-endian number (4-byte hints: smq's queue
/// level; longer hints: their first 8 bytes).
#[inline]
pub fn hint_value(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    #[test]
    fn values() {
        assert_eq!(super::hint_value(&[7, 0, 0, 0]), 7);
        assert_eq!(super::hint_value(&[1, 2]), 0x201);
    }
}
