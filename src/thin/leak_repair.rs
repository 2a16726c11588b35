//! Thin's in-place space-map repairs, on the shared leak repair
//! (`pdata::space_map::leak_repair`): leaks in both space maps, and a
//! metadata snapshot taken offline.

use anyhow::{bail, Result};

use crate::io::checksum::{seal, BlockKind};
use crate::io::sink::BlockSink;
use crate::io::BlockSource;
use crate::pdata::space_map::leak_repair::{commit, Extra, MapCounts, Maps, NewRoots};
use crate::thin::check::Counts;
use crate::thin::superblock::{Superblock, NEEDS_CHECK};

pub use crate::pdata::space_map::leak_repair::LeakRepair;

fn maps(counts: &Counts) -> Maps<'_> {
    Maps {
        metadata: MapCounts {
            refs: &counts.metadata_refs,
            sm: &counts.metadata_sm,
        },
        data: Some(MapCounts {
            refs: &counts.data_refs,
            sm: &counts.data_sm,
        }),
        repair_tool: "thin_repair",
    }
}

/// The current superblock block with the new roots (and `edit`), only
/// the fields a repair changes rewritten, resealed.
fn new_superblock(
    current: &[u8],
    roots: &NewRoots,
    clear_needs_check: bool,
    edit: impl FnOnce(&mut Superblock),
) -> Vec<u8> {
    let mut sb = Superblock::parse(current);
    sb.metadata_sm_root = roots.metadata;
    if let Some(data) = roots.data {
        sb.data_sm_root = data;
    }
    if clear_needs_check {
        sb.flags &= !NEEDS_CHECK;
    }
    edit(&mut sb);
    let mut block = current.to_vec();
    // Only the fields this repair changes; the rest stays byte for byte.
    block[..512].copy_from_slice(&sb.to_block()[..512]);
    seal(&mut block, BlockKind::ThinSuperblock);
    block
}

/// Repairs the leaks `counts` shows, writing through `sink`.
pub fn repair_leaks(
    src: &BlockSource,
    counts: &Counts,
    clear_needs_check: bool,
    sink: &mut dyn BlockSink,
) -> Result<LeakRepair> {
    let current = src.block(0)?;
    commit(
        src,
        maps(counts),
        Extra::default(),
        |roots, _| new_superblock(current, roots, clear_needs_check, |_| {}),
        sink,
    )
}

/// Bytes of the superblock holding the two space-map roots.
const SPACE_MAPS_START: usize = 64;
const SPACE_MAPS_END: usize = 320;

/// Takes a metadata snapshot as the kernel does: a copy of the superblock
/// (its space-map roots cleared) at a free block, one more reference to
/// the mapping and details roots, and the live superblock pointing at the
/// copy. Leaks are repaired on the way. Returns the copy's block.
pub fn reserve_metadata_snap(
    src: &BlockSource,
    counts: &Counts,
    sink: &mut dyn BlockSink,
) -> Result<u64> {
    let current = src.block(0)?;
    let sb = Superblock::parse(current);
    if sb.metadata_snap != 0 {
        bail!(
            "a metadata snapshot is already held at block {}",
            sb.metadata_snap
        );
    }
    let mut copy = current.to_vec();
    copy[SPACE_MAPS_START..SPACE_MAPS_END].fill(0);
    let extra = Extra {
        new_blocks: vec![(BlockKind::ThinSuperblock, copy)],
        more_refs: vec![sb.mapping_root, sb.details_root],
    };
    let mut held = 0;
    commit(
        src,
        maps(counts),
        extra,
        |roots, placed| {
            held = placed[0];
            new_superblock(current, roots, false, |sb| sb.metadata_snap = placed[0])
        },
        sink,
    )?;
    Ok(held)
}
