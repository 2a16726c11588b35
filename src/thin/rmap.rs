//! thin_rmap's engine: which devices and virtual blocks map given data
//! blocks.
//!
//! Leaves are scanned once each, during the validating walk, for
//! mappings into the regions; each device's runs are then assembled over its internal
//! nodes, without reading a leaf again, and every device reaching a
//! shared leaf is reported (the reference tools report only the first).

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;

use crate::io::BlockSource;
use crate::pdata::block_hash::BlockMap;
use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::{Damage, LeafVisitor};
use crate::thin::block_time::BlockTime;
use crate::thin::forest;

/// A range of data blocks, [begin, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub begin: u64,
    pub end: u64,
}

/// `len` blocks from virtual `virt` map to data blocks from `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Run {
    pub virt: u64,
    pub data: u64,
    pub len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRun {
    pub device: u64,
    pub run: Run,
}

fn push(runs: &mut Vec<Run>, r: Run) {
    match runs.last_mut() {
        Some(last) if last.virt + last.len == r.virt && last.data + last.len == r.data => {
            last.len += r.len
        }
        _ => runs.push(r),
    }
}

/// The runs of a leaf's mappings into the regions. Values are tested
/// against the regions' overall bounds first: most leaves of a large pool
/// map nothing in them.
fn leaf_runs(leaf: NodeView<'_>, regions: &[Region]) -> Vec<Run> {
    let lo = regions.iter().map(|r| r.begin).min().unwrap_or(0);
    let hi = regions.iter().map(|r| r.end).max().unwrap_or(0);
    let mut runs = Vec::new();
    for (virt, v) in leaf.entries_u64() {
        let data = BlockTime::unpack(v).block;
        if data >= lo && data < hi && regions.iter().any(|r| data >= r.begin && data < r.end) {
            push(&mut runs, Run { virt, data, len: 1 });
        }
    }
    runs
}

/// Collects each distinct leaf's runs during the validating walk, while
/// the leaf is in cache.
struct RunsByLeaf<'r> {
    regions: &'r [Region],
    found: Mutex<BlockMap<Vec<Run>>>,
}

impl LeafVisitor for RunsByLeaf<'_> {
    fn visit(&self, _tree: &str, block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        let runs = leaf_runs(leaf, self.regions);
        if !runs.is_empty() {
            self.found.lock().unwrap().insert(block, runs);
        }
        None
    }
}

pub fn rmap(
    src: &BlockSource,
    roots: &BTreeMap<u64, u64>,
    regions: &[Region],
) -> Result<Vec<DeviceRun>> {
    let visitor = RunsByLeaf {
        regions,
        found: Mutex::new(BlockMap::default()),
    };
    let forest = forest::validate_with(src, roots, &visitor)?;
    let by_leaf = visitor.found.into_inner().unwrap();
    // Each device's leaves are found through its internal nodes alone
    // (the walk's summaries give their heights): no leaf is read again,
    // and no subtree's runs are kept beyond the device being listed.
    let mut out = Vec::new();
    let mut runs = Vec::new();
    for (device, root) in roots {
        runs.clear();
        let height = forest
            .internals
            .get(root)
            .and_then(|s| s.height)
            .unwrap_or(0);
        runs_below(src, *root, height, &by_leaf, &mut runs);
        out.extend(runs.iter().map(|&run| DeviceRun {
            device: *device,
            run,
        }));
    }
    out.sort_unstable_by_key(|d| (d.run.data, d.run.data + d.run.len, d.device, d.run.virt));
    Ok(out)
}

/// Appends the runs of the subtree at `block`, `height` levels above its
/// leaves, in key order.
fn runs_below(
    src: &BlockSource,
    block: u64,
    height: u32,
    by_leaf: &BlockMap<Vec<Run>>,
    runs: &mut Vec<Run>,
) {
    if height == 0 {
        for &r in by_leaf.get(&block).map_or(&[][..], |v| &v[..]) {
            push(runs, r);
        }
        return;
    }
    let node = NodeView::new(src.block(block).expect("validated node"));
    for i in 0..node.nr_entries() {
        runs_below(src, node.value_u64(i), height - 1, by_leaf, runs);
    }
}
