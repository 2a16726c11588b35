//! The metadata blocks a committed transaction uses, as its own metadata
//! space map counts them: what a writer replacing that transaction must
//! leave alone until its new superblock is written, so that a crash at
//! any moment leaves the old transaction or the new one.

use roaring::RoaringTreemap;

use crate::io::source::BlockSource;
use crate::io::BlockKind;

use super::bitmap::{self, metadata_index_entry, ENTRIES_PER_BITMAP, MAX_METADATA_BITMAPS};
use super::root::SpaceMapRoot;

/// Blocks with a non-zero count in the metadata space map at `root`,
/// block 0 included; None where the map cannot be read whole.
pub fn metadata_blocks_in_use(src: &BlockSource, root: &SpaceMapRoot) -> Option<RoaringTreemap> {
    let nr_bitmaps = root.nr_blocks.div_ceil(ENTRIES_PER_BITMAP) as usize;
    if nr_bitmaps == 0 || nr_bitmaps > MAX_METADATA_BITMAPS {
        return None;
    }
    let index = src.checked(root.bitmap_root, BlockKind::Index).ok()?;
    let mut used = RoaringTreemap::new();
    used.insert(0);
    for i in 0..nr_bitmaps {
        let entry = metadata_index_entry(index, i);
        let map = src.checked(entry.blocknr, BlockKind::Bitmap).ok()?;
        let first = i as u64 * ENTRIES_PER_BITMAP;
        for j in 0..ENTRIES_PER_BITMAP.min(root.nr_blocks - first) {
            if bitmap::entry(map, j) != 0 {
                used.insert(first + j);
            }
        }
    }
    Some(used)
}
