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
use crate::pdata::btree::walk::{Damage, LeafVisitor};
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
    count_devices_with(src, roots, nr_data_blocks, true)
}

/// As `count_devices`; without `exclusive` the exclusive counts are left
/// at 0 and the data blocks are not counted at all (the mapped counts
/// and highest blocks come from the walk alone).
pub fn count_devices_with(
    src: &BlockSource,
    roots: &BTreeMap<u64, u64>,
    nr_data_blocks: u64,
    exclusive: bool,
) -> Result<BTreeMap<u64, DeviceCounts>> {
    let nr_blocks = src.nr_blocks();
    // How often each data block is mapped: 0, 1 or more (the counters
    // saturate at 3), counted during the walk, once per distinct leaf.
    // Counting each leaf once rather than once per path to it loses
    // nothing that matters: a block mapped by a leaf that one path
    // reaches is shared exactly when it has another mapping, and every
    // mapping of a leaf reached by several paths is shared anyway.
    let uses = Uses {
        counter: RefCounter::new(if exclusive { nr_data_blocks } else { 0 }),
        counting: exclusive,
        nr_data_blocks,
        first_beyond: std::sync::Mutex::new(None),
    };
    let Forest {
        leaves,
        internals: memo,
    } = forest::validate_with(src, roots, &uses, forest::LeafList::Keep)?;
    if let Some((l, b)) = *uses.first_beyond.lock().unwrap() {
        bail!("device mapping in leaf {l} points to data block {b}, beyond the {nr_data_blocks} data blocks");
    }
    let uses = uses.counter;

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

    // Only a leaf reached by one path can hold exclusive mappings: the
    // rest are not read again.
    let exclusive_in_leaf: BlockMap<u64> = leaves
        .par_iter()
        .map(|&l| {
            if !exclusive || mult[l as usize] != 1 {
                return (l, 0);
            }
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

/// Counts the data blocks of each leaf as the walk reaches it.
struct Uses {
    counter: RefCounter,
    /// Whether to count at all, or only to look for blocks past the end.
    counting: bool,
    nr_data_blocks: u64,
    /// The lowest leaf mapping a block past the data device, and that block.
    first_beyond: std::sync::Mutex<Option<(u64, u64)>>,
}

impl LeafVisitor for Uses {
    fn visit(&self, _tree: &str, block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        let limit = self.nr_data_blocks;
        if !self.counting
            && leaf
                .values_u64()
                .all(|v| BlockTime::unpack(v).block < limit)
        {
            return None;
        }
        for run in data_runs(leaf.values_u64().map(BlockTime::unpack)) {
            if run.end > limit {
                let b = run.start.max(limit);
                let mut first = self.first_beyond.lock().unwrap();
                if first.is_none_or(|(l, _)| block < l) {
                    *first = Some((block, b));
                }
                return None;
            }
            if self.counting {
                self.counter.inc_range(run);
            }
        }
        None
    }
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
