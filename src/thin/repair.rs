//! Salvage: finding the thin metadata in a damaged device by scanning it,
//! and choosing what to keep.
//!
//! 1. Every block is read; those whose checksum and self-location make
//!    them btree nodes, and which pass the node checks, are kept. A leaf
//!    with 24-byte values is a device-details leaf; a leaf with 8-byte
//!    values is a top-level leaf if it is non-empty and every value names
//!    another valid node, else a mapping leaf; an internal node takes the
//!    class of its children.
//! 2. Trees are summarised bottom-up, leniently: a child that is missing,
//!    damaged, of another class or out of key order is left out and only
//!    the keys below it are lost; the rest of the tree stands. Summaries
//!    give device or mapping counts, the histogram of mapping times and
//!    the newest time ("age").
//! 3. Candidate roots are top-level and details nodes no other node of
//!    their class points at.
//! 4. Top-level candidates are ranked by their time histograms: the newer
//!    newest time wins; on a tie, the larger count at that time; then the
//!    next-newest time, and so on; a histogram that runs out first loses
//!    (so empty trees rank last); then more devices, then more mappings.
//! 5. Each is paired with a details candidate holding exactly the same
//!    device ids, preferring one whose mapped_blocks add up to the
//!    mappings found.
//! 6. If the superblock (checksum or not) names a details tree that
//!    survived while its mapping tree did not, each device's mapping tree
//!    is found by its mapping count among the mapping roots nothing points
//!    at; this is used only when every device has exactly one such root,
//!    and gives the current state where the ranked pairs would give an
//!    older transaction's.
//! 7. If block 0 holds a valid superblock whose two roots are a pair, it is
//!    used as it is (overrides applied): healthy metadata comes out as it
//!    went in. Otherwise the best pair is used and the superblock rebuilt,
//!    taking from block 0 whatever is plausible even when its checksum is
//!    bad (magic right, data block size in range), else from the
//!    overrides; the transaction id is at least one more than any
//!    device's, the time at least the newest mapping's.
//! 8. A top-level tree without details gets synthesised details (every
//!    mapping is then treated as shared: snapshot time newer than any).
//! 9. Mappings to data blocks beyond the data device are dropped; the
//!    rest of their leaf is kept.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use rayon::prelude::*;

use crate::pdata::block_hash::{BlockMap, BlockSet};
use crate::report::phases;

use crate::io::checksum::{self, BlockKind};
use crate::io::{le_u64, BlockSource};
use crate::pdata::btree::node::{NodeKind, NodeView};
use crate::thin::block_time::BlockTime;
use crate::thin::device_details::{DeviceDetails, DEVICE_DETAILS_SIZE};
use crate::thin::dump::{DeviceLeaves, Header};
use crate::thin::superblock::{Superblock, THIN_MAGIC};

#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    pub transaction_id: Option<u64>,
    pub data_block_size: Option<u32>,
    pub nr_data_blocks: Option<u64>,
}

/// What a repair writes.
pub struct Salvage {
    pub header: Header,
    pub devices: Vec<DeviceLeaves>,
    /// Mappings at or beyond this data block are dropped.
    pub nr_data_blocks: u64,
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Mapping,
    TopLevel,
    Details,
}

/// What is known of a subtree.
#[derive(Clone, Debug, Default)]
struct Summary {
    entries: u64,
    first: u64,
    last: u64,
    /// Mapping times -> number of mappings (mapping and top-level trees).
    times: Histogram,
    highest_data: u64,
    /// Details: sum of mapped_blocks, newest transaction and time.
    mapped_sum: u64,
    max_transaction: u64,
    age: u32,
}

/// Counts by time, sorted by time. A tree holds few distinct times, so a
/// sorted vector beats a map at adding and merging.
#[derive(Clone, Debug, Default)]
struct Histogram(Vec<(u32, u64)>);

impl Histogram {
    fn add(&mut self, time: u32, n: u64) {
        match self.0.binary_search_by_key(&time, |(t, _)| *t) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(n),
            Err(i) => self.0.insert(i, (time, n)),
        }
    }

    fn merge(&mut self, other: &Histogram) {
        for &(t, n) in &other.0 {
            self.add(t, n);
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, (u32, u64)> {
        self.0.iter()
    }
}

struct Scan<'a> {
    src: &'a BlockSource,
    nodes: BlockMap<NodeView<'a>>,
    classes: BlockMap<Option<Class>>,
    summaries: BlockMap<Option<Summary>>,
    /// Valid children of each internal node, once worked out.
    children_of: BlockMap<Vec<u64>>,
}

fn valid_node(src: &BlockSource, b: u64) -> Option<NodeView<'_>> {
    let data = src.block(b).ok()?;
    // The block number first: it rules out most blocks without a checksum.
    if le_u64(data, 8) != b || !checksum::matches(data, BlockKind::BtreeNode) {
        return None;
    }
    let node = NodeView::new(data);
    let vs = node.value_size();
    if vs != 8 && vs != DEVICE_DETAILS_SIZE && !node.is_leaf() {
        return None;
    }
    node.validate(if node.is_leaf() { vs } else { 8 }, false)
        .ok()?;
    Some(node)
}

impl<'a> Scan<'a> {
    fn new(src: &'a BlockSource) -> Scan<'a> {
        let nodes: BlockMap<NodeView<'a>> = src
            .data_extents()
            .into_par_iter()
            .flat_map(|blocks| blocks.into_par_iter())
            .filter_map(|b| valid_node(src, b).map(|n| (b, n)))
            .collect();
        phases::phase("repair: blocks scanned");
        Scan {
            src,
            nodes,
            classes: BlockMap::default(),
            summaries: BlockMap::default(),
            children_of: BlockMap::default(),
        }
    }

    fn class(&mut self, b: u64) -> Option<Class> {
        if let Some(c) = self.classes.get(&b) {
            return *c;
        }
        self.classes.insert(b, None); // a cycle resolves to nothing
        let node = *self.nodes.get(&b)?;
        let class = if node.is_leaf() {
            match node.value_size() {
                DEVICE_DETAILS_SIZE => Some(Class::Details),
                8 if node.nr_entries() > 0
                    && node.entries_u64().all(|(_, v)| {
                        v < self.src.nr_blocks() && self.nodes.contains_key(&v) && v != b
                    }) =>
                {
                    Some(Class::TopLevel)
                }
                8 => Some(Class::Mapping),
                _ => None,
            }
        } else {
            (0..node.nr_entries()).find_map(|i| self.class(node.value_u64(i)))
        };
        self.classes.insert(b, class);
        class
    }

    /// The valid children of an internal node of `class`, in key order.
    fn children(&mut self, node: NodeView<'a>, class: Class) -> Vec<u64> {
        let block = node.blocknr();
        if let Some(kids) = self.children_of.get(&block) {
            return kids.clone();
        }
        let mut out = Vec::new();
        let mut last: Option<u64> = None;
        for i in 0..node.nr_entries() {
            let c = node.value_u64(i);
            if self.class(c) != Some(class) {
                continue;
            }
            let Some((first, end)) = self.span(c, class) else {
                continue;
            };
            if last.is_some_and(|l| first <= l) || first < node.key(i) {
                continue;
            }
            last = Some(end);
            out.push(c);
        }
        self.children_of.insert(block, out.clone());
        out
    }

    /// The first and last key of a valid subtree, without copying its
    /// summary.
    fn span(&mut self, b: u64, class: Class) -> Option<(u64, u64)> {
        if !self.summaries.contains_key(&b) {
            self.summary(b, class);
        }
        self.summaries
            .get(&b)
            .and_then(|s| s.as_ref())
            .map(|s| (s.first, s.last))
    }

    fn summary(&mut self, b: u64, class: Class) -> Option<Summary> {
        if let Some(s) = self.summaries.get(&b) {
            return s.clone();
        }
        self.summaries.insert(b, None);
        let s = self.compute(b, class);
        self.summaries.insert(b, s.clone());
        s
    }

    fn compute(&mut self, b: u64, class: Class) -> Option<Summary> {
        if self.class(b) != Some(class) {
            return None;
        }
        let node = *self.nodes.get(&b)?;
        let mut s = Summary::default();
        if node.kind() == Some(NodeKind::Internal) {
            let kids = self.children(node, class);
            if kids.is_empty() {
                return None;
            }
            // children() worked out every kid's summary: merge them in
            // place rather than copying each.
            for (i, k) in kids.iter().enumerate() {
                let c = self.summaries.get(k)?.as_ref()?;
                if i == 0 {
                    s.first = c.first;
                }
                s.last = c.last;
                s.entries = s.entries.saturating_add(c.entries);
                s.times.merge(&c.times);
                s.highest_data = s.highest_data.max(c.highest_data);
                s.mapped_sum = s.mapped_sum.saturating_add(c.mapped_sum);
                s.max_transaction = s.max_transaction.max(c.max_transaction);
                s.age = s.age.max(c.age);
            }
            return Some(s);
        }
        s.first = node.first_key().unwrap_or(0);
        s.last = node.last_key().unwrap_or(0);
        match class {
            Class::Mapping => {
                s.entries = node.nr_entries() as u64;
                // Neighbouring mappings mostly share a time: count runs.
                let mut run: Option<(u32, u64)> = None;
                for (_, v) in node.entries_u64() {
                    let bt = BlockTime::unpack(v);
                    match &mut run {
                        Some((t, n)) if *t == bt.time => *n += 1,
                        _ => {
                            if let Some((t, n)) = run.replace((bt.time, 1)) {
                                s.times.add(t, n);
                            }
                        }
                    }
                    s.highest_data = s.highest_data.max(bt.block);
                    s.age = s.age.max(bt.time);
                }
                if let Some((t, n)) = run {
                    s.times.add(t, n);
                }
            }
            Class::TopLevel => {
                for (_, root) in node.entries_u64() {
                    s.entries += 1;
                    if self.span(root, Class::Mapping).is_none() {
                        continue;
                    }
                    let Some(Some(c)) = self.summaries.get(&root) else {
                        continue;
                    };
                    s.mapped_sum = s.mapped_sum.saturating_add(c.entries);
                    s.times.merge(&c.times);
                    s.highest_data = s.highest_data.max(c.highest_data);
                    s.age = s.age.max(c.age);
                }
            }
            Class::Details => {
                for i in 0..node.nr_entries() {
                    let d = DeviceDetails::parse(node.value(i));
                    s.entries += 1;
                    s.mapped_sum = s.mapped_sum.saturating_add(d.mapped_blocks);
                    s.max_transaction = s.max_transaction.max(d.transaction_id);
                    s.age = s.age.max(d.creation_time).max(d.snapshotted_time);
                }
            }
        }
        Some(s)
    }

    /// Leaves of a valid tree of `class`, in key order, skipping damage.
    fn leaves(&mut self, root: u64, class: Class) -> Vec<u64> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        // A node met twice in one tree is a cycle or a duplicate: once.
        let mut seen = BlockSet::default();
        while let Some(b) = stack.pop() {
            if !seen.insert(b) || self.span(b, class).is_none() {
                continue;
            }
            let node = self.nodes[&b];
            if node.is_leaf() {
                out.push(b);
            } else {
                let kids = self.children(node, class);
                stack.extend(kids.into_iter().rev());
            }
        }
        out
    }

    fn entries(&mut self, root: u64, class: Class) -> Vec<(u64, &'a [u8])> {
        let mut out = Vec::new();
        for leaf in self.leaves(root, class) {
            let node = self.nodes[&leaf];
            out.extend((0..node.nr_entries()).map(|i| (node.key(i), node.value(i))));
        }
        out
    }

    /// Mappings in `leaves` to data blocks below `limit`: a leaf's
    /// summary answers unless it maps a block at or past the limit.
    fn mappings_below(&self, leaves: &[u64], limit: u64) -> u64 {
        leaves
            .iter()
            .map(|l| match self.summaries.get(l) {
                Some(Some(s)) if s.highest_data < limit => s.entries,
                _ => self.nodes[l]
                    .entries_u64()
                    .filter(|(_, v)| BlockTime::unpack(*v).block < limit)
                    .count() as u64,
            })
            .sum()
    }

    /// Roots of `class`: valid nodes no valid node of the class points at.
    fn roots(&mut self, class: Class) -> Vec<u64> {
        let blocks: Vec<u64> = self.nodes.keys().copied().collect();
        let mut referenced = BlockSet::default();
        let mut members = Vec::new();
        for b in blocks {
            if self.class(b) != Some(class) || self.span(b, class).is_none() {
                continue;
            }
            members.push(b);
            let node = self.nodes[&b];
            if !node.is_leaf() {
                referenced.extend(self.children(node, class));
            }
        }
        let mut roots: Vec<u64> = members
            .into_iter()
            .filter(|b| !referenced.contains(b))
            .collect();
        roots.sort_unstable();
        roots
    }
}

/// When the superblock's details tree survived but its mapping tree did
/// not, each device's mapping tree is found by its mapping count: a root
/// no other mapping node points at, holding exactly `mapped_blocks`
/// mappings. Only if every device has exactly one such root (anything
/// else could swap two devices' data).
fn guided_by_details(scan: &mut Scan, details_root: u64) -> Option<Vec<(u64, u64)>> {
    if scan.class(details_root) != Some(Class::Details) {
        return None;
    }
    scan.summary(details_root, Class::Details)?;
    let details: Vec<(u64, DeviceDetails)> = scan
        .entries(details_root, Class::Details)
        .into_iter()
        .map(|(k, v)| (k, DeviceDetails::parse(v)))
        .collect();
    let roots = scan.roots(Class::Mapping);
    let counts: Vec<(u64, u64)> = roots
        .iter()
        .filter_map(|&r| scan.summary(r, Class::Mapping).map(|s| (r, s.entries)))
        .collect();
    let mut out = Vec::new();
    for (id, d) in &details {
        let mut matching = counts.iter().filter(|(_, n)| *n == d.mapped_blocks);
        let (root, _) = matching.next()?;
        if matching.next().is_some() {
            return None;
        }
        out.push((*id, *root));
    }
    Some(out)
}

/// Newer histories first (see the module's ranking rules).
fn rank(a: &Summary, b: &Summary) -> std::cmp::Ordering {
    let mut x = a.times.iter().rev();
    let mut y = b.times.iter().rev();
    loop {
        match (x.next(), y.next()) {
            (Some((ta, na)), Some((tb, nb))) => {
                let o = tb.cmp(ta).then(nb.cmp(na));
                if o.is_ne() {
                    return o;
                }
            }
            (Some(_), None) => return std::cmp::Ordering::Less,
            (None, Some(_)) => return std::cmp::Ordering::Greater,
            (None, None) => {
                return b
                    .entries
                    .cmp(&a.entries)
                    .then(b.mapped_sum.cmp(&a.mapped_sum))
            }
        }
    }
}

/// Superblock fields worth trusting from block 0, checksum or not.
fn stale_superblock(src: &BlockSource) -> Option<Superblock> {
    let data = src.block(0).ok()?;
    let sb = Superblock::parse(data);
    (sb.magic == THIN_MAGIC).then_some(sb)
}

fn plausible_block_size(s: u32) -> bool {
    (128..=2097152).contains(&s) && s.is_multiple_of(128)
}

pub fn salvage(src: &BlockSource, opts: &RepairOptions) -> Result<Salvage> {
    let mut scan = Scan::new(src);
    let mut warnings = Vec::new();
    let mut tops = scan.roots(Class::TopLevel);
    let details_roots = scan.roots(Class::Details);
    let summaries: HashMap<u64, Summary> = tops
        .iter()
        .chain(&details_roots)
        .filter_map(|&b| {
            let class = scan.class(b)?;
            scan.summary(b, class).map(|s| (b, s))
        })
        .collect();
    tops.sort_by(|a, b| rank(&summaries[a], &summaries[b]).then(a.cmp(b)));
    if tops.is_empty() {
        bail!("no compatible roots found: the scan found no device mapping tree");
    }

    let ids = |scan: &mut Scan, root: u64, class: Class| -> Vec<u64> {
        scan.entries(root, class)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    let mut pairs: Vec<(u64, Option<u64>)> = Vec::new();
    for &t in &tops {
        let t_ids = ids(&mut scan, t, Class::TopLevel);
        let mut matching: Vec<u64> = details_roots
            .iter()
            .copied()
            .filter(|&d| ids(&mut scan, d, Class::Details) == t_ids)
            .collect();
        matching.sort_by_key(|d| (summaries[d].mapped_sum != summaries[&t].mapped_sum, *d));
        pairs.extend(matching.into_iter().map(|d| (t, Some(d))));
    }

    let live = Superblock::read(src, 0).ok();
    let stale = stale_superblock(src);
    let sb_pair_intact = stale.as_ref().is_some_and(|sb| {
        pairs
            .iter()
            .any(|(t, d)| *t == sb.mapping_root && *d == Some(sb.details_root))
    });
    if !sb_pair_intact {
        if let Some(sb) = &stale {
            if let Some(roots) = guided_by_details(&mut scan, sb.details_root) {
                return guided_salvage(&mut scan, sb, &roots, opts);
            }
        }
    }
    // A superblock naming an intact pair is followed, even with a bad
    // checksum: its roots agree with what the scan found.
    let named = stale.as_ref().and_then(|sb| {
        pairs
            .iter()
            .find(|(t, d)| *t == sb.mapping_root && *d == Some(sb.details_root))
            .copied()
    });
    let chosen = named
        .or_else(|| pairs.first().copied())
        .unwrap_or((tops[0], None));
    let sb_matches = named.is_some();
    let live = if sb_matches { stale.clone() } else { live };

    let top_summary = summaries[&chosen.0].clone();
    let details: BTreeMap<u64, DeviceDetails> = match chosen.1 {
        Some(d) => scan
            .entries(d, Class::Details)
            .into_iter()
            .map(|(k, v)| (k, DeviceDetails::parse(v)))
            .collect(),
        None => BTreeMap::new(),
    };
    let age = top_summary
        .age
        .max(chosen.1.map_or(0, |d| summaries[&d].age));

    let header = if sb_matches {
        let sb = live.clone().unwrap();
        Header {
            time: sb.time,
            transaction: sb.transaction_id.max(opts.transaction_id.unwrap_or(0)),
            flags: 0,
            version: 2,
            data_block_size: opts.data_block_size.unwrap_or(sb.data_block_size),
            nr_data_blocks: sb
                .data_sm_root
                .nr_blocks
                .max(opts.nr_data_blocks.unwrap_or(0)),
        }
    } else {
        let stale_ok = stale.as_ref();
        let data_block_size = match opts.data_block_size {
            Some(s) => s,
            None => match stale_ok.map(|s| s.data_block_size).filter(|s| plausible_block_size(*s)) {
                Some(s) => s,
                None => bail!(
                    "the superblock is damaged: give the pool's data block size with --data-block-size"
                ),
            },
        };
        if !plausible_block_size(data_block_size) {
            bail!("invalid data block size {data_block_size}: a multiple of 128 sectors from 128 to 2097152");
        }
        let max_tid = chosen.1.map_or(0, |d| summaries[&d].max_transaction);
        // The data device's size: given, else the old superblock's, else
        // just enough for what the trees map.
        let nr_data_blocks = opts
            .nr_data_blocks
            .or(stale_ok
                .map(|s| s.data_sm_root.nr_blocks)
                .filter(|n| *n > 0))
            .unwrap_or(top_summary.highest_data + 1);
        let tid = opts
            .transaction_id
            .or(stale_ok.map(|s| s.transaction_id))
            .unwrap_or(1)
            .max(if chosen.1.is_some() { max_tid + 1 } else { 1 });
        let time = stale_ok
            .map_or(0, |s| s.time)
            .max(age + if chosen.1.is_some() { 0 } else { 1 });
        warnings.push(format!(
            "the superblock did not describe the trees found; rebuilt it (mapping root {}, details root {})",
            chosen.0,
            chosen.1.map_or("none".to_string(), |d| d.to_string())
        ));
        Header {
            time,
            transaction: tid,
            flags: 0,
            version: 2,
            data_block_size,
            nr_data_blocks,
        }
    };
    if chosen.1.is_none() {
        warnings.push(format!(
            "found {} mapping trees without device details; details were made up (every mapping treated as shared)",
            top_summary.entries
        ));
    }

    let mut devices = Vec::new();
    for (id, value) in scan.entries(chosen.0, Class::TopLevel) {
        let root = u64::from_le_bytes(value.try_into().unwrap());
        let leaves = scan.leaves(root, Class::Mapping);
        let mapped = scan.mappings_below(&leaves, header.nr_data_blocks);
        let mut d = details.get(&id).copied().unwrap_or(DeviceDetails {
            mapped_blocks: 0,
            transaction_id: header.transaction.saturating_sub(1),
            creation_time: age + 1,
            snapshotted_time: age + 1,
        });
        d.mapped_blocks = mapped;
        devices.push((id, d, Some(leaves)));
    }
    let nr_data_blocks = header.nr_data_blocks;
    Ok(Salvage {
        header,
        devices,
        nr_data_blocks,
        warnings,
    })
}

/// The salvage when the superblock's details tree guided the search.
fn guided_salvage(
    scan: &mut Scan,
    sb: &Superblock,
    roots: &[(u64, u64)],
    opts: &RepairOptions,
) -> Result<Salvage> {
    let details: BTreeMap<u64, DeviceDetails> = scan
        .entries(sb.details_root, Class::Details)
        .into_iter()
        .map(|(k, v)| (k, DeviceDetails::parse(v)))
        .collect();
    let data_block_size = opts
        .data_block_size
        .or(Some(sb.data_block_size).filter(|s| plausible_block_size(*s)))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the superblock is damaged: give the pool's data block size with --data-block-size"
            )
        })?;
    let mut highest = 0;
    for (_, r) in roots {
        highest = highest.max(
            scan.summary(*r, Class::Mapping)
                .map_or(0, |s| s.highest_data),
        );
    }
    let nr_data_blocks = opts
        .nr_data_blocks
        .or(Some(sb.data_sm_root.nr_blocks).filter(|n| *n > 0))
        .unwrap_or(highest + 1);
    let header = Header {
        time: sb.time,
        transaction: sb.transaction_id.max(opts.transaction_id.unwrap_or(0)),
        flags: 0,
        version: 2,
        data_block_size,
        nr_data_blocks,
    };
    let mut devices = Vec::new();
    for (id, root) in roots {
        let leaves = scan.leaves(*root, Class::Mapping);
        let mut d = details[id];
        d.mapped_blocks = scan.mappings_below(&leaves, nr_data_blocks);
        devices.push((*id, d, Some(leaves)));
    }
    Ok(Salvage {
        header,
        devices,
        nr_data_blocks,
        warnings: vec![format!(
            "the mapping tree was lost; found each device's mappings through the device details tree (block {})",
            sb.details_root
        )],
    })
}
