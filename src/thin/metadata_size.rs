//! How much metadata a pool needs: one superblock, one mapping leaf per
//! 126 data blocks (half the 252 entries a leaf holds, as leaves are
//! about half full after random writes), and one block per thin device,
//! capped at what a metadata space map can address.

use crate::io::BLOCK_SIZE;
use crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS;

/// Mappings per leaf assumed by the estimate.
pub const MAPPINGS_PER_LEAF: u64 = 126;

/// Metadata bytes for a pool of `pool_bytes` in blocks of `block_bytes`
/// with up to `max_thins` devices.
pub fn metadata_bytes(pool_bytes: u128, block_bytes: u128, max_thins: u64) -> u128 {
    let nr_blocks = pool_bytes / block_bytes;
    let leaves = nr_blocks.div_ceil(MAPPINGS_PER_LEAF as u128);
    let blocks = (1 + leaves + max_thins as u128).min(MAX_METADATA_BLOCKS as u128);
    blocks * BLOCK_SIZE as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example() {
        // 2097152 sectors of pool, 128-sector blocks, 1 thin: 16384 blocks,
        // 131 leaves, 133 metadata blocks = 544768 bytes = 1064 sectors.
        assert_eq!(metadata_bytes(2097152 * 512, 128 * 512, 1), 1064 * 512);
    }
}
