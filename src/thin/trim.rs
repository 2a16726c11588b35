//! thin_trim's engine: the data blocks the data space map records as
//! free, as maximal runs.

use crate::io::{BlockKind, BlockSource};
use crate::pdata::btree::walk::Walker;
use crate::pdata::space_map::bitmap::{self, ENTRIES_PER_BITMAP};
use crate::pdata::space_map::disk;
use crate::thin::superblock::Superblock;

/// Runs [begin, end) of data blocks whose stored count is zero.
pub fn free_data_runs(src: &BlockSource, sb: &Superblock) -> anyhow::Result<Vec<(u64, u64)>> {
    let walker = Walker::uncounted(src, false);
    let sm = disk::read_data(&walker, sb.data_sm_root);
    if let Some(p) = sm.problems.first() {
        anyhow::bail!("data space map: {}", p.message);
    }
    if let Some(d) = sm.tree_damage.first() {
        anyhow::bail!(
            "data space map: {}: {} (block {})",
            d.tree,
            d.damage,
            d.block()
        );
    }
    let nr_blocks = sm.root.nr_blocks;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (i, ie) in sm.bitmaps.iter().enumerate() {
        let ie = ie.expect("read_data reports missing bitmaps as problems");
        let bm = src
            .checked(ie.blocknr, BlockKind::Bitmap)
            .map_err(|e| anyhow::anyhow!("data space map: bitmap {i}: {e}"))?;
        let first = i as u64 * ENTRIES_PER_BITMAP;
        let count = (nr_blocks - first).min(ENTRIES_PER_BITMAP);
        for j in 0..count {
            if bitmap::entry(bm, j) != 0 {
                continue;
            }
            let b = first + j;
            match runs.last_mut() {
                Some((_, end)) if *end == b => *end = b + 1,
                _ => runs.push((b, b + 1)),
            }
        }
    }
    Ok(runs)
}
