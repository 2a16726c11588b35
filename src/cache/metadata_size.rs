//! How much metadata a cache needs, as the reference estimates it: 4 MiB
//! of room (superblock, space map, indices), 16 bytes per cache block
//! (a mapping and its dirty and discard bits, generously), and a hint and
//! 8 bytes more per cache block; capped at what a metadata space map can
//! address.

use crate::io::BLOCK_SIZE;
use crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS;

/// Fixed room of every cache's metadata, in bytes.
pub const BASE_BYTES: u128 = 4 << 20;

/// Metadata bytes for `nr_blocks` cache blocks with hints of up to
/// `max_hint_width` bytes.
pub fn metadata_bytes(nr_blocks: u64, max_hint_width: u32) -> u128 {
    let nr = nr_blocks as u128;
    let bytes = BASE_BYTES + nr * 16 + nr * (max_hint_width as u128 + 8);
    bytes.min(MAX_METADATA_BLOCKS as u128 * BLOCK_SIZE as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_values() {
        // 1024 blocks: 8248 sectors; 67108864 blocks: the cap, 3678208 sectors.
        assert_eq!(metadata_bytes(1024, 4), 8248 * 512);
        assert_eq!(metadata_bytes(67108864, 4), 3678208 * 512);
        assert_eq!(metadata_bytes(0, 4), BASE_BYTES);
    }
}
