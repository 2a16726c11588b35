//! thin_ls's engine: per-device mapped, exclusive and shared block counts
//! in one pass over the physical nodes, however much the devices share.
//!
//! A mapping is shared when its data block is mapped more than once in
//! the pool (by two devices, or twice by one). Counting that per device
//! naively walks every shared subtree once per device; instead:
//! 1. every distinct node is validated once (the checker's walker);
//! 2. each node's multiplicity — how many device-root paths reach it — is
//!    propagated from the roots down, parents before children (a btree
//!    parent is always higher than its children);
//! 3. each distinct leaf adds its multiplicity to its data blocks' use
//!    counts (saturating at 2: only "once" or "more" matters);
//! 4. each leaf's exclusive mappings are counted once, and per-device
//!    totals are summed over internal nodes with memoisation.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rayon::prelude::*;

use crate::io::BlockSource;
use crate::pdata::block_hash::BlockMap;
use crate::pdata::btree::node::NodeView;
use crate::pdata::refcount::RefCounter;
use crate::thin::block_time::{data_runs, BlockTime};
use crate::thin::forest::{self, Forest};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    pub mapped: u64,
    pub exclusive: u64,
    /// Highest mapped virtual block, None when nothing is mapped.
    pub highest: Option<u64>,
}

impl DeviceCounts {
    pub fn shared(&self) -> u64 {
        self.mapped - self.exclusive
    }
}

/// Counts every device of `roots` (device id -> mapping-tree root).
/// `nr_data_blocks` sizes the data counter (from the live superblock).
pub fn count_devices(
    src: &BlockSource,
    roots: &BTreeMap<u64, u64>,
    nr_data_blocks: u64,
) -> Result<BTreeMap<u64, DeviceCounts>> {
    let nr_blocks = src.nr_blocks();
    let Forest {
        leaves,
        internals: memo,
    } = forest::validate(src, roots)?;

    // Multiplicities, parents before children.
    let mut mult = vec![0u32; nr_blocks as usize];
    for root in roots.values() {
        mult[*root as usize] += 1;
    }
    let mut internals: Vec<(u32, u64)> = memo
        .iter()
        .map(|(b, s)| (s.height.unwrap_or(0), *b))
        .collect();
    internals.sort_unstable_by(|a, b| b.cmp(a));
    for (_, b) in &internals {
        let node = NodeView::new(src.block(*b)?);
        let m = mult[*b as usize];
        for i in 0..node.nr_entries() {
            let child = node.value_u64(i) as usize;
            mult[child] = mult[child].saturating_add(m);
        }
    }

    // How often each data block is mapped: 0, 1 or more (the counters
    // saturate at 3). Mappings come in runs of neighbouring data blocks:
    // the uses of one 32-block counter word are added at once.
    let uses = RefCounter::new(nr_data_blocks);
    leaves.par_iter().try_for_each(|&l| -> Result<()> {
        let node = NodeView::new(src.block(l)?);
        let m = mult[l as usize].min(2);
        for run in data_runs(node.values_u64().map(BlockTime::unpack)) {
            if run.end > nr_data_blocks {
                let b = run.start.max(nr_data_blocks);
                bail!("device mapping in leaf {l} points to data block {b}, beyond the {nr_data_blocks} data blocks");
            }
            for _ in 0..m {
                uses.inc_range(run.clone());
            }
        }
        Ok(())
    })?;
    let exclusive_in_leaf: BlockMap<u64> = leaves
        .par_iter()
        .map(|&l| {
            let node = NodeView::new(src.block(l).unwrap());
            // By runs of consecutive data blocks, a counter word at a time.
            let n = data_runs(node.values_u64().map(BlockTime::unpack))
                .map(|run| uses.count_exactly_one(run))
                .sum();
            (l, n)
        })
        .collect();

    let mut exclusive_memo: BlockMap<u64> = BlockMap::default();
    let mut out = BTreeMap::new();
    for (id, root) in roots {
        let mapped = memo
            .get(root)
            .map(|s| s.entries)
            .unwrap_or_else(|| NodeView::new(src.block(*root).unwrap()).nr_entries() as u64);
        let exclusive = exclusive_below(src, *root, &exclusive_in_leaf, &mut exclusive_memo);
        out.insert(
            *id,
            DeviceCounts {
                mapped,
                exclusive,
                highest: highest_key(src, *root),
            },
        );
    }
    Ok(out)
}

fn exclusive_below(
    src: &BlockSource,
    block: u64,
    leaves: &BlockMap<u64>,
    memo: &mut BlockMap<u64>,
) -> u64 {
    if let Some(n) = leaves.get(&block) {
        return *n;
    }
    if let Some(n) = memo.get(&block) {
        return *n;
    }
    let node = NodeView::new(src.block(block).unwrap());
    let n = (0..node.nr_entries())
        .map(|i| exclusive_below(src, node.value_u64(i), leaves, memo))
        .sum();
    memo.insert(block, n);
    n
}

/// The last key of the rightmost leaf (trees were validated).
fn highest_key(src: &BlockSource, mut block: u64) -> Option<u64> {
    loop {
        let node = NodeView::new(src.block(block).ok()?);
        let n = node.nr_entries();
        if n == 0 {
            return None;
        }
        if node.is_leaf() {
            return Some(node.key(n - 1));
        }
        block = node.value_u64(n - 1);
    }
}
