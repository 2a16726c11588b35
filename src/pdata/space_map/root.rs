//! The 128-byte space-map root a superblock embeds (only its first 32
//! bytes are used).

use crate::io::le_u64;

pub const SPACE_MAP_ROOT_SIZE: usize = 128;
const NR_BLOCKS_OFFSET: usize = 0;
const NR_ALLOCATED_OFFSET: usize = 8;
const BITMAP_ROOT_OFFSET: usize = 16;
const REF_COUNT_ROOT_OFFSET: usize = 24;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceMapRoot {
    /// Blocks the map covers.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Metadata map: the index block. Data map: the index btree's root.
    pub bitmap_root: u64,
    /// Root of the btree of counts of three or more.
    pub ref_count_root: u64,
}

impl SpaceMapRoot {
    pub fn parse(bytes: &[u8]) -> SpaceMapRoot {
        SpaceMapRoot {
            nr_blocks: le_u64(bytes, NR_BLOCKS_OFFSET),
            nr_allocated: le_u64(bytes, NR_ALLOCATED_OFFSET),
            bitmap_root: le_u64(bytes, BITMAP_ROOT_OFFSET),
            ref_count_root: le_u64(bytes, REF_COUNT_ROOT_OFFSET),
        }
    }

    pub fn write(&self, out: &mut [u8]) {
        out[..SPACE_MAP_ROOT_SIZE].fill(0);
        for (off, v) in [
            (NR_BLOCKS_OFFSET, self.nr_blocks),
            (NR_ALLOCATED_OFFSET, self.nr_allocated),
            (BITMAP_ROOT_OFFSET, self.bitmap_root),
            (REF_COUNT_ROOT_OFFSET, self.ref_count_root),
        ] {
            out[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    pub fn nr_free(&self) -> u64 {
        self.nr_blocks.saturating_sub(self.nr_allocated)
    }
}
