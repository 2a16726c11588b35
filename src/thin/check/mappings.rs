//! Visitors for the thin trees: the top-level mapping tree (device id to
//! subtree root), the device-details tree, and the per-device mapping
//! trees whose leaves hold the data references.

use std::sync::Mutex;

use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::{Damage, LeafVisitor};
use crate::pdata::refcount::RefCounter;
use crate::thin::block_time::{data_runs, BlockTime};

/// A pointer from a top-level leaf to a device's mapping tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtreePointer {
    pub device: u64,
    pub root: u64,
    /// The top-level leaf holding the pointer.
    pub leaf: u64,
}

/// Collects the subtree pointers of every distinct top-level leaf: each
/// pointer is one reference to the subtree's root.
#[derive(Default)]
pub struct TopLevelVisitor {
    pub pointers: Mutex<Vec<SubtreePointer>>,
}

impl LeafVisitor for TopLevelVisitor {
    fn visit(&self, _tree: &str, block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        let mut out = self.pointers.lock().unwrap();
        for (device, root) in leaf.entries_u64() {
            out.push(SubtreePointer {
                device,
                root,
                leaf: block,
            });
        }
        None
    }
}

/// Accepts any leaf: for trees whose values hold no references.
pub struct NoValues;

impl LeafVisitor for NoValues {
    fn visit(&self, _tree: &str, _block: u64, _leaf: NodeView<'_>) -> Option<Damage> {
        None
    }
}

/// Counts the data references of each distinct mapping leaf and checks
/// each mapping's data block and time.
pub struct MappingVisitor<'a> {
    pub data_refs: &'a RefCounter,
    pub nr_data_blocks: u64,
    pub pool_time: u32,
}

impl LeafVisitor for MappingVisitor<'_> {
    fn visit(&self, _tree: &str, _block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        // Mappings come in runs of consecutive data blocks: each run is
        // counted a 32-block counter word at a time. Blocks past the data
        // device are left out here and described below.
        let limit = self.nr_data_blocks;
        let (mut max_block, mut max_time) = (0u64, 0u32);
        let mappings = leaf.values_u64().map(BlockTime::unpack).inspect(|bt| {
            max_block = max_block.max(bt.block);
            max_time = max_time.max(bt.time);
        });
        for run in data_runs(mappings) {
            let run = run.start.min(limit)..run.end.min(limit);
            if !run.is_empty() {
                self.data_refs.inc_range(run);
            }
        }
        if max_block < limit && max_time <= self.pool_time {
            return None;
        }
        let mut beyond = 0u64;
        let mut first_beyond = None;
        let mut future = 0u64;
        let mut first_future = None;
        for (key, value) in leaf.entries_u64() {
            let bt = BlockTime::unpack(value);
            if bt.block >= limit {
                beyond += 1;
                first_beyond.get_or_insert((key, bt.block));
            }
            if bt.time > self.pool_time {
                future += 1;
                first_future.get_or_insert((key, bt.time));
            }
        }
        let mut problems = Vec::new();
        if let Some((key, block)) = first_beyond {
            problems.push(format!(
                "{beyond} mapping(s) point beyond the data device ({} blocks), \
                 first: virtual block {key} -> data block {block}",
                self.nr_data_blocks
            ));
        }
        if let Some((key, time)) = first_future {
            problems.push(format!(
                "{future} mapping(s) are newer than the pool (time {}), first: virtual block \
                 {key} has time {time}; the kernel would treat a shared block as exclusive",
                self.pool_time
            ));
        }
        (!problems.is_empty()).then(|| Damage::BadValues(problems.join("; ")))
    }
}
