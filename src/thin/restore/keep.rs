//! Keeping the old transaction whole while a writer replaces it. A
//! writer that builds new metadata over a device holding a valid thin
//! transaction places every new block where the old transaction's own
//! metadata space map says "free", and leaves block 0 alone until the
//! final superblock write: a crash at any moment then leaves the old
//! transaction or the new one, never a device with neither.

use std::path::Path;

use roaring::RoaringTreemap;

use crate::io::source::{BlockSource, OpenOptions};
use crate::io::BlockKind;
use crate::pdata::space_map::in_use::metadata_blocks_in_use;
use crate::thin::superblock::{Superblock, THIN_MAGIC};

/// The metadata blocks the transaction now on `output` uses, as its
/// metadata space map counts them, block 0 included; None where `output`
/// holds no valid thin superblock or its space map cannot be read (the
/// writer then invalidates block 0 first and builds over everything).
pub fn blocks_in_use(output: &Path) -> Option<RoaringTreemap> {
    // Not exclusive: the writer already holds the device that way.
    let src = BlockSource::open(output, OpenOptions { exclusive: false }).ok()?;
    if src.is_decompressed() {
        return None;
    }
    let sb = Superblock::parse(src.checked(0, BlockKind::ThinSuperblock).ok()?);
    if sb.magic != THIN_MAGIC {
        return None;
    }
    metadata_blocks_in_use(&src, &sb.metadata_sm_root)
}
