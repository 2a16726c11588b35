//! thin_rmap's engine: which devices and virtual blocks map given data
//! blocks.
//!
//! Leaves are scanned once each, during the validating walk, for
//! mappings into the regions; each device's runs are then assembled over
//! its internal nodes, without reading a leaf again, and every device
//! reaching a shared leaf is reported (the reference tools report only
//! the first).
//!
//! The output is sorted by data block, and a shared pool can hold many
//! times more runs than it has leaves in the regions, so the runs are
//! never all held at once: they are counted per stretch of data blocks,
//! and each stretch of at most `CHUNK_RUNS` runs is gathered, sorted and
//! handed out in turn.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;

use crate::io::BlockSource;
use crate::pdata::block_hash::BlockMap;
use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::{Damage, LeafVisitor, SubtreeSummary};
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

impl Run {
    /// Whether `next` continues this run, in virtual and data blocks.
    fn is_followed_by(&self, next: &Run) -> bool {
        self.virt + self.len == next.virt && self.data + self.len == next.data
    }
}

fn push(runs: &mut Vec<Run>, r: Run) {
    match runs.last_mut() {
        Some(last) if last.is_followed_by(&r) => last.len += r.len,
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

/// Runs gathered and sorted at a time: 32 bytes each, so 1 MiB.
const CHUNK_RUNS: u64 = 32 * 1024;

/// Stretches a range of data blocks is counted in before it is cut into
/// chunks.
const NR_BUCKETS: u64 = 1024;

/// Hands `emit` every run of every device into the regions, in order of
/// (data block, end, device, virtual block).
pub fn rmap(
    src: &BlockSource,
    roots: &BTreeMap<u64, u64>,
    regions: &[Region],
    emit: &mut dyn FnMut(DeviceRun) -> Result<()>,
) -> Result<()> {
    rmap_in_chunks(src, roots, regions, CHUNK_RUNS, emit)
}

fn rmap_in_chunks(
    src: &BlockSource,
    roots: &BTreeMap<u64, u64>,
    regions: &[Region],
    chunk_runs: u64,
    emit: &mut dyn FnMut(DeviceRun) -> Result<()>,
) -> Result<()> {
    let visitor = RunsByLeaf {
        regions,
        found: Mutex::new(BlockMap::default()),
    };
    let forest = forest::validate_with(src, roots, &visitor, forest::LeafList::Drop)?;
    let by_leaf = visitor.found.into_inner().unwrap();
    // The data blocks the runs start in: [lo, hi).
    let Some((lo, hi)) = by_leaf
        .values()
        .flatten()
        .fold(None, |b: Option<(u64, u64)>, r| {
            Some(b.map_or((r.data, r.data + 1), |(lo, hi)| {
                (lo.min(r.data), hi.max(r.data + 1))
            }))
        })
    else {
        return Ok(());
    };
    let trees = Trees::new(src, roots, &forest.internals, &by_leaf);
    emit_range(&trees, lo, hi, chunk_runs, emit)
}

/// The devices' trees, pruned to the subtrees that hold runs.
struct Trees<'a> {
    src: &'a BlockSource,
    /// (device, root, height)
    devices: Vec<(u64, u64, u32)>,
    by_leaf: &'a BlockMap<Vec<Run>>,
    /// Whether each internal node has a leaf with runs below it.
    live: BlockMap<bool>,
}

impl<'a> Trees<'a> {
    fn new(
        src: &'a BlockSource,
        roots: &BTreeMap<u64, u64>,
        internals: &BlockMap<SubtreeSummary>,
        by_leaf: &'a BlockMap<Vec<Run>>,
    ) -> Trees<'a> {
        let mut trees = Trees {
            src,
            devices: Vec::new(),
            by_leaf,
            live: BlockMap::default(),
        };
        for (&device, &root) in roots {
            // The validating walk's summaries give the heights.
            let height = internals.get(&root).and_then(|s| s.height).unwrap_or(0);
            if trees.is_live(root, height) {
                trees.devices.push((device, root, height));
            }
        }
        trees
    }

    fn is_live(&mut self, block: u64, height: u32) -> bool {
        if height == 0 {
            return self.by_leaf.contains_key(&block);
        }
        if let Some(&live) = self.live.get(&block) {
            return live;
        }
        let node = NodeView::new(self.src.block(block).expect("validated node"));
        let mut live = false;
        for i in 0..node.nr_entries() {
            // Every child is visited, so each gets its memo entry.
            live |= self.is_live(node.value_u64(i), height - 1);
        }
        self.live.insert(block, live);
        live
    }

    /// Hands `f` each device's runs, in device then key order, merged
    /// across leaf boundaries.
    fn for_each_run(&self, f: &mut dyn FnMut(u64, Run)) {
        for &(device, root, height) in &self.devices {
            let mut pending: Option<Run> = None;
            self.runs_below(root, height, &mut |r| match &mut pending {
                Some(p) if p.is_followed_by(&r) => p.len += r.len,
                _ => {
                    if let Some(p) = pending.replace(r) {
                        f(device, p);
                    }
                }
            });
            if let Some(p) = pending {
                f(device, p);
            }
        }
    }

    fn runs_below(&self, block: u64, height: u32, f: &mut dyn FnMut(Run)) {
        if height == 0 {
            for &r in self.by_leaf.get(&block).map_or(&[][..], |v| &v[..]) {
                f(r);
            }
            return;
        }
        if self.live.get(&block) != Some(&true) {
            return;
        }
        let node = NodeView::new(self.src.block(block).expect("validated node"));
        for i in 0..node.nr_entries() {
            self.runs_below(node.value_u64(i), height - 1, f);
        }
    }
}

/// Emits, in order, the runs starting in data blocks [lo, hi): counted
/// per bucket first, then gathered a chunk of buckets at a time; a bucket
/// too full for one chunk is counted again in finer buckets.
fn emit_range(
    trees: &Trees<'_>,
    lo: u64,
    hi: u64,
    chunk_runs: u64,
    emit: &mut dyn FnMut(DeviceRun) -> Result<()>,
) -> Result<()> {
    let width = (hi - lo).div_ceil(NR_BUCKETS);
    let mut counts = vec![0u64; (hi - lo).div_ceil(width) as usize];
    trees.for_each_run(&mut |_, r| {
        if (lo..hi).contains(&r.data) {
            counts[((r.data - lo) / width) as usize] += 1;
        }
    });
    let mut b = 0;
    while b < counts.len() {
        let (mut e, mut n) = (b + 1, counts[b]);
        while e < counts.len() && n + counts[e] <= chunk_runs {
            n += counts[e];
            e += 1;
        }
        let begin = lo + b as u64 * width;
        let end = (lo + e as u64 * width).min(hi);
        if n > chunk_runs && width > 1 {
            emit_range(trees, begin, end, chunk_runs, emit)?;
        } else if n > 0 {
            let mut chunk = Vec::with_capacity(n as usize);
            trees.for_each_run(&mut |device, run| {
                if (begin..end).contains(&run.data) {
                    chunk.push(DeviceRun { device, run });
                }
            });
            chunk.sort_unstable_by_key(|d| {
                (d.run.data, d.run.data + d.run.len, d.device, d.run.virt)
            });
            for d in chunk {
                emit(d)?;
            }
        }
        b = e;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::source::OpenOptions;
    use crate::thin::devices::read_devices_strict;
    use crate::thin::superblock::Superblock;
    use std::path::Path;

    fn in_chunks(
        src: &BlockSource,
        roots: &BTreeMap<u64, u64>,
        r: &[Region],
        n: u64,
    ) -> Vec<DeviceRun> {
        let mut out = Vec::new();
        rmap_in_chunks(src, roots, r, n, &mut |d| {
            out.push(d);
            Ok(())
        })
        .unwrap();
        out
    }

    /// Every chunk size, down to one run per chunk (which splits buckets
    /// down to single data blocks), gives the order of one whole sort.
    #[test]
    fn chunked_output_is_the_whole_sort() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        for name in ["plain.bin.gz", "snapshots.bin.gz"] {
            let src =
                BlockSource::open(&root.join(name), OpenOptions { exclusive: false }).unwrap();
            let sb = Superblock::read(&src, 0).unwrap();
            let (roots, _) = read_devices_strict(&src, sb.mapping_root, sb.details_root).unwrap();
            for regions in [
                vec![Region {
                    begin: 0,
                    end: u64::MAX,
                }],
                vec![
                    Region { begin: 3, end: 40 },
                    Region {
                        begin: 100,
                        end: 1000,
                    },
                ],
            ] {
                let mut whole = in_chunks(&src, &roots, &regions, u64::MAX);
                let before = whole.clone();
                whole.sort_by_key(|d| (d.run.data, d.run.data + d.run.len, d.device, d.run.virt));
                assert_eq!(before, whole, "{name}");
                eprintln!("{name} {regions:?}: {} runs", whole.len());
                assert!(whole.len() > 10 || name == "plain.bin.gz", "{name}");
                let devices: std::collections::BTreeSet<u64> =
                    whole.iter().map(|d| d.device).collect();
                assert!(devices.len() > 1 || name == "plain.bin.gz", "{name}");
                for n in [1, 2, 7, 100] {
                    assert_eq!(
                        in_chunks(&src, &roots, &regions, n),
                        whole,
                        "{name} chunks of {n}"
                    );
                }
            }
        }
    }
}
