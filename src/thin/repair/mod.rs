//! Salvage: finding the thin metadata in a damaged device by scanning it,
//! and choosing what to keep. Nothing is given up while something can be
//! read, and only what is itself wrong is lost.
//!
//! 0. Metadata that needs no salvage (block 0 intact, its trees valid
//!    and in agreement) is taken as it stands, without a scan (see
//!    `sound`); the steps below give the same result for it.
//! 1. Every block is read; those whose checksum makes them btree nodes
//!    and whose header can be read are kept, even if they claim more
//!    entries than fit or record another block as their location (see
//!    `scan`). A leaf with 24-byte values is a device-details leaf; a leaf
//!    with 8-byte values is a top-level leaf if its values are metadata
//!    block numbers, else a mapping leaf; an internal node takes the class
//!    of its children.
//! 2. Trees are summarised bottom-up, each node within the key range its
//!    parent gives it (see `trees`): an entry that is out of range, out of
//!    order or repeated is dropped alone (see `entries`); a child that is
//!    missing or of another class costs its own keys; children whose
//!    pointers were swapped go back where their keys say.
//! 3. Candidate roots are top-level and details nodes no other node of
//!    their class points at, ranked by their time histograms: the newer
//!    newest time wins; on a tie, the larger count at that time; then the
//!    next-newest time, and so on; a histogram that runs out first loses;
//!    then more devices, then more mappings.
//! 4. Which trees describe the pool: the ones block 0 names, checksum or
//!    not, if they are usable nodes of their class (the superblock is the
//!    best evidence of the current transaction, and following it keeps
//!    what later transactions changed). Otherwise the best-ranked
//!    top-level tree, with the details tree holding the same device ids
//!    (or, failing that, the most of them).
//! 5. Device by device: a device in both trees is kept; one the top-level
//!    tree does not list is found by its mapping count among the mapping
//!    roots nothing points at (if exactly one matches), else kept without
//!    mappings, as is one whose listed root is damaged (a tree found by
//!    count would be an older version of it); one without details gets synthesised details whose
//!    snapshot time is newer than any mapping (every mapping is then
//!    treated as shared, so later writes copy rather than overwrite).
//! 6. The superblock is block 0's when its roots were followed (overrides
//!    applied), else rebuilt from whatever of block 0 is plausible and the
//!    overrides. The pool's time is raised to the newest time any mapping
//!    or device records, so that no mapping is newer than the pool (a
//!    snapshot taken later would otherwise not see it as shared); the
//!    transaction id to at least every device's.
//! 7. Mappings to data blocks beyond the data device are dropped; the
//!    rest of their leaf is kept. An overfull leaf keeps, of the entries
//!    that fit and are in order, as many as its device's details account
//!    for.
//! 8. With `recover_orphans`, device trees no live top-level tree reaches
//!    come back as new devices above the highest live id (see `orphans`).

mod entries;
pub mod orphans;
mod scan;
mod sound;
mod trees;

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};

use crate::io::BlockSource;
use crate::pdata::block_hash::{BlockMap, BlockSet};
use crate::report::phases;
use crate::thin::block_time::BlockTime;
use crate::thin::device_details::DeviceDetails;
use crate::thin::dump::{DeviceLeaves, Header, KeptEntries};
use crate::thin::superblock::{Superblock, THIN_MAGIC};

use entries::Span;
use trees::{Class, SalvagedLeaf, Summary, Trees};

pub use orphans::Orphan;

#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    pub transaction_id: Option<u64>,
    pub data_block_size: Option<u32>,
    pub nr_data_blocks: Option<u64>,
    /// Bring back device trees no live top-level tree reaches.
    pub recover_orphans: bool,
}

/// What a repair writes.
pub struct Salvage {
    pub header: Header,
    pub devices: Vec<DeviceLeaves>,
    /// Mappings at or beyond this data block are dropped.
    pub nr_data_blocks: u64,
    /// The entries kept of leaves that lost some.
    pub kept: KeptEntries,
    /// What was found wrong and what was done about it.
    pub warnings: Vec<String>,
    /// Orphaned device trees brought back: (new device id, what it was).
    pub recovered: Vec<(u64, Orphan)>,
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

/// The trees a salvage found, before a superblock is chosen.
pub(crate) struct Found<'a> {
    pub trees: Trees<'a>,
    /// Top-level roots, best first.
    pub tops: Vec<u64>,
    /// Details roots, in block order.
    pub details: Vec<u64>,
    pub summaries: HashMap<u64, std::rc::Rc<Summary>>,
    pub stale: Option<Superblock>,
}

impl Found<'_> {
    fn usable(&mut self, b: u64, class: Class) -> bool {
        self.trees.class(b) == Some(class) && self.trees.summary(b, class, Span::ALL).is_some()
    }

    fn ids(&mut self, root: u64, class: Class) -> Vec<u64> {
        self.trees
            .entries(root, class)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// The details root that goes with top-level root `top`: the one with
    /// exactly its device ids (preferring mapped_blocks that add up to the
    /// mappings found), else the one sharing the most ids.
    fn details_for(&mut self, top: u64) -> Option<u64> {
        let t_ids = self.ids(top, Class::TopLevel);
        let mapped = self
            .trees
            .summary(top, Class::TopLevel, Span::ALL)
            .map_or(0, |s| s.mapped_sum);
        let mut best: Option<((bool, usize, bool), u64)> = None;
        for d in self.details.clone() {
            let d_ids = self.ids(d, Class::Details);
            let common = d_ids
                .iter()
                .filter(|id| t_ids.binary_search(id).is_ok())
                .count();
            if common == 0 {
                continue;
            }
            let score = (
                d_ids == t_ids,
                common,
                self.summaries[&d].mapped_sum == mapped,
            );
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, d));
            }
        }
        best.map(|(_, d)| d)
    }
}

pub(crate) fn find(src: &BlockSource) -> Found<'_> {
    let stale = stale_superblock(src);
    let mut trees = Trees::new(src, stale.as_ref().map(|s| s.mapping_root));
    phases::phase("repair: blocks scanned");
    let mut tops = trees.roots(Class::TopLevel);
    let details = trees.roots(Class::Details);
    let mut summaries = HashMap::new();
    for &b in tops.iter().chain(&details) {
        let class = trees.class(b).unwrap();
        if let Some(s) = trees.summary(b, class, Span::ALL) {
            summaries.insert(b, s);
        }
    }
    tops.sort_by(|a, b| rank(&summaries[a], &summaries[b]).then(a.cmp(b)));
    phases::phase("repair: trees summarised");
    Found {
        trees,
        tops,
        details,
        summaries,
        stale,
    }
}

/// The two trees chosen to describe the pool, and whether block 0 named
/// them.
struct Choice {
    top: Option<u64>,
    details: Option<u64>,
    follows_superblock: bool,
}

fn choose(f: &mut Found) -> Choice {
    let named = f
        .stale
        .as_ref()
        .map(|sb| (sb.mapping_root, sb.details_root));
    if let Some((t, d)) = named {
        let top = f.usable(t, Class::TopLevel).then_some(t);
        let details = f.usable(d, Class::Details).then_some(d);
        if top.is_some() || details.is_some() {
            let details = details.or_else(|| f.details_for(t));
            return Choice {
                top,
                details,
                follows_superblock: true,
            };
        }
    }
    if let Some(&top) = f.tops.first() {
        // The best-ranked top-level tree that has details, else the best.
        for t in f.tops.clone() {
            if let Some(d) = f.details_for(t) {
                if f.ids(d, Class::Details) == f.ids(t, Class::TopLevel) {
                    return Choice {
                        top: Some(t),
                        details: Some(d),
                        follows_superblock: false,
                    };
                }
            }
        }
        return Choice {
            top: Some(top),
            details: f.details_for(top),
            follows_superblock: false,
        };
    }
    // No top-level tree at all: the details tree of the newest transaction,
    // its devices' trees found by their mapping counts.
    let details = f.details.iter().copied().max_by_key(|d| {
        let s = &f.summaries[d];
        (s.max_transaction, s.entries, std::cmp::Reverse(*d))
    });
    Choice {
        top: None,
        details,
        follows_superblock: false,
    }
}

/// One device being put together.
struct Assembled {
    id: u64,
    details: DeviceDetails,
    synthesised: bool,
    root: Option<u64>,
    leaves: Vec<SalvagedLeaf>,
}

pub fn salvage(src: &BlockSource, opts: &RepairOptions) -> Result<Salvage> {
    if let Some(s) = sound::salvage(src, opts) {
        phases::phase("repair: the metadata is sound, no scan needed");
        return Ok(s);
    }
    salvage_by_scan(src, opts)
}

/// The salvage of steps 1-8 above, whatever state the metadata is in.
fn salvage_by_scan(src: &BlockSource, opts: &RepairOptions) -> Result<Salvage> {
    let mut f = find(src);
    let choice = choose(&mut f);
    let mut warnings = Vec::new();
    if choice.top.is_none() && choice.details.is_none() && !opts.recover_orphans {
        let orphans = orphans::find(&mut f, None, &BTreeMap::new()).len();
        if orphans > 0 {
            bail!(
                "no compatible roots found: no top-level or details tree survived, but {orphans} \
                 orphaned device tree(s) did: --recover-orphans brings them back"
            );
        }
        bail!("no compatible roots found: the scan found no device mapping tree");
    }
    f.trees.forget_notes();

    // Device by device.
    let top_entries: BTreeMap<u64, u64> = match choice.top {
        Some(t) => f
            .trees
            .entries(t, Class::TopLevel)
            .into_iter()
            .map(|(k, v)| (k, u64::from_le_bytes(v.try_into().unwrap())))
            .collect(),
        None => BTreeMap::new(),
    };
    let det_entries: BTreeMap<u64, DeviceDetails> = match choice.details {
        Some(d) => f
            .trees
            .entries(d, Class::Details)
            .into_iter()
            .map(|(k, v)| (k, DeviceDetails::parse(v)))
            .collect(),
        None => BTreeMap::new(),
    };
    let mut ids: Vec<u64> = top_entries
        .keys()
        .chain(det_entries.keys())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let used: BlockSet = top_entries
        .values()
        .copied()
        .filter(|&r| f.usable(r, Class::Mapping))
        .collect();
    let mut unclaimed: Vec<(u64, u64)> = f
        .trees
        .roots(Class::Mapping)
        .into_iter()
        .filter(|r| !used.contains(r))
        .map(|r| {
            (
                r,
                f.trees
                    .summary(r, Class::Mapping, Span::ALL)
                    .unwrap()
                    .entries,
            )
        })
        .collect();
    let mut devices = Vec::new();
    for id in ids {
        let listed = top_entries.get(&id).copied();
        let mut root = listed;
        if let Some(r) = root {
            if !f.usable(r, Class::Mapping) {
                warnings.push(format!(
                    "device {id}: its mapping tree root (block {r}) holds no usable node"
                ));
                root = None;
            }
        }
        let det = det_entries.get(&id).copied();
        if let (None, Some(r), Some(d)) = (root, listed, det) {
            // The top-level tree names this device's tree and its root is
            // damaged. A tree nothing points at with as many mappings is
            // then an older version of it (the kernel writes a changed
            // node elsewhere and lets the old one go): taking it would
            // bring back old data as if it were current.
            warnings.push(format!(
                "device {id}: kept without mappings: its root (block {r}) is damaged, and a tree \
                 elsewhere holding its {} mappings would be an older version of it",
                d.mapped_blocks
            ));
        } else if root.is_none() {
            if let Some(d) = det {
                let matching: Vec<usize> = (0..unclaimed.len())
                    .filter(|&i| unclaimed[i].1 == d.mapped_blocks)
                    .collect();
                if let [i] = matching[..] {
                    let (r, _) = unclaimed.remove(i);
                    warnings.push(format!(
                        "device {id}: found its mapping tree at block {r}, the one tree nothing \
                         points at holding its {} mappings",
                        d.mapped_blocks
                    ));
                    root = Some(r);
                } else {
                    warnings.push(format!(
                        "device {id}: its mapping tree was not found ({} candidate trees hold \
                         its {} mappings); kept without mappings",
                        matching.len(),
                        d.mapped_blocks
                    ));
                }
            }
        }
        let leaves = root.map_or_else(Vec::new, |r| f.trees.leaves(r, Class::Mapping));
        devices.push(Assembled {
            id,
            details: det.unwrap_or_default(),
            synthesised: det.is_none(),
            root,
            leaves,
        });
    }
    let synthesised = devices.iter().filter(|d| d.synthesised).count();
    if synthesised > 0 {
        warnings.push(format!(
            "found {synthesised} mapping tree(s) without device details; details were made up \
             (every mapping treated as shared)"
        ));
    }

    // Orphans, as new devices above the highest live id.
    let mut recovered = Vec::new();
    if opts.recover_orphans {
        let live: BTreeMap<u64, u64> = devices
            .iter()
            .filter_map(|d| d.root.map(|r| (d.id, r)))
            .collect();
        let first = devices.iter().map(|d| d.id + 1).max().unwrap_or(0);
        for (next, o) in (first..).zip(orphans::find(&mut f, choice.top, &live)) {
            let leaves = f.trees.leaves(o.root, Class::Mapping);
            warnings.push(format!(
                "recovered the orphaned mapping tree at block {}{} as device {next}: {} mappings, \
                 newest time {}, {} of its data blocks also mapped by live devices",
                o.root,
                o.old_id.map_or(String::new(), |id| format!(
                    " (device {id} before it was deleted)"
                )),
                o.mappings,
                o.newest_time,
                o.reused
            ));
            devices.push(Assembled {
                id: next,
                details: o.details.unwrap_or_default(),
                synthesised: true,
                root: Some(o.root),
                leaves,
            });
            recovered.push((next, o));
        }
    }
    warnings.append(&mut f.trees.notes.clone());

    let header = choose_header(&mut f, &choice, &devices, opts, &mut warnings)?;
    let limit = header.nr_data_blocks;

    // Per-leaf entry lists: what each leaf keeps, agreed between the
    // devices sharing it.
    let mut kept: KeptEntries = BlockMap::default();
    for d in &devices {
        for (leaf, k) in &d.leaves {
            if let Some(k) = k {
                let k: Vec<u16> = k.to_vec();
                match kept.get_mut(leaf) {
                    Some(have) if *have != k => have.retain(|i| k.contains(i)),
                    Some(_) => {}
                    None => {
                        kept.insert(*leaf, k);
                    }
                }
            }
        }
    }
    let mut counts = MappingCounts {
        limit,
        whole: BlockMap::default(),
    };
    for d in &devices {
        if d.synthesised {
            continue;
        }
        let mapped = counts.of(&f.trees, &kept, &d.leaves);
        trim_overfull(&f, &mut kept, d, mapped, &mut warnings);
    }

    let mut out = Vec::new();
    for mut d in devices {
        let mapped = counts.of(&f.trees, &kept, &d.leaves);
        if d.synthesised {
            // The pool's time is newer than every mapping here: as the
            // snapshot time it makes every mapping shared.
            d.details.transaction_id = header.transaction.saturating_sub(1);
            if d.details == DeviceDetails::default() {
                d.details.creation_time = header.time;
            }
            d.details.creation_time = d.details.creation_time.min(header.time);
            d.details.snapshotted_time = header.time;
        }
        d.details.mapped_blocks = mapped;
        out.push((
            d.id,
            d.details,
            Some(d.leaves.into_iter().map(|(l, _)| l).collect()),
        ));
    }
    Ok(Salvage {
        header,
        devices: out,
        nr_data_blocks: limit,
        kept,
        warnings,
        recovered,
    })
}

/// The mappings below a data-block limit that devices' leaves hold, each
/// whole leaf counted once however many devices share it (snapshots
/// share most of theirs).
struct MappingCounts {
    limit: u64,
    /// Leaves that keep every entry; trimming changes only kept lists.
    whole: BlockMap<u64>,
}

impl MappingCounts {
    fn of(&mut self, t: &Trees, kept: &KeptEntries, leaves: &[SalvagedLeaf]) -> u64 {
        leaves
            .iter()
            .map(|&(l, _)| {
                if kept.contains_key(&l) {
                    mappings_below(t, kept, l, self.limit)
                } else {
                    *self
                        .whole
                        .entry(l)
                        .or_insert_with(|| mappings_below(t, kept, l, self.limit))
                }
            })
            .sum()
    }
}

/// Mappings of `leaf` (as kept) to data blocks below `limit`.
fn mappings_below(t: &Trees, kept: &KeptEntries, leaf: u64, limit: u64) -> u64 {
    let v = t.nodes[&leaf].view;
    let below = |i: u32| BlockTime::unpack(v.value_u64(i)).block < limit;
    match kept.get(&leaf) {
        Some(k) => k.iter().filter(|&&i| below(i as u32)).count() as u64,
        None => (0..v.nr_entries()).filter(|&i| below(i)).count() as u64,
    }
}

/// A device with more mappings than its details record, holding one
/// overfull leaf: the excess is that leaf's stale tail (entries past its
/// true count that happened to lie in range and in order).
fn trim_overfull(
    f: &Found,
    kept: &mut KeptEntries,
    d: &Assembled,
    mapped: u64,
    warnings: &mut Vec<String>,
) {
    let Some(excess) = mapped
        .checked_sub(d.details.mapped_blocks)
        .filter(|e| *e > 0)
    else {
        return;
    };
    let overfull: Vec<u64> = d
        .leaves
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| f.trees.nodes[l].overfull())
        .collect();
    let [leaf] = overfull[..] else { return };
    let Some(k) = kept.get_mut(&leaf) else { return };
    if (k.len() as u64) < excess {
        return;
    }
    k.truncate(k.len() - excess as usize);
    warnings.push(format!(
        "device {}: leaf at block {leaf} claims more entries than fit; kept the first {}, as \
         many as the device's details account for",
        d.id,
        k.len()
    ));
}

fn choose_header(
    f: &mut Found,
    choice: &Choice,
    devices: &[Assembled],
    opts: &RepairOptions,
    warnings: &mut Vec<String>,
) -> Result<Header> {
    // The newest time anything records, and the highest data block.
    let mut age = 0u32;
    let mut highest = 0u64;
    let mut max_tid = 0u64;
    for d in devices {
        if let Some(r) = d.root {
            if let Some(s) = f.trees.summary(r, Class::Mapping, Span::ALL) {
                age = age.max(s.age);
                highest = highest.max(s.highest_data);
            }
        }
        if !d.synthesised {
            age = age
                .max(d.details.creation_time)
                .max(d.details.snapshotted_time);
            max_tid = max_tid.max(d.details.transaction_id);
        }
    }
    let synthesised = devices.iter().any(|d| d.synthesised);
    let stale = f.stale.clone();
    let data_block_size = match opts.data_block_size {
        Some(s) => s,
        None => match stale
            .as_ref()
            .map(|s| s.data_block_size)
            .filter(|s| plausible_block_size(*s))
        {
            Some(s) => s,
            None => bail!(
                "the superblock is damaged: give the pool's data block size with --data-block-size"
            ),
        },
    };
    if !plausible_block_size(data_block_size) {
        bail!("invalid data block size {data_block_size}: a multiple of 128 sectors from 128 to 2097152");
    }
    let stale_nr = stale
        .as_ref()
        .map(|s| s.data_sm_root.nr_blocks)
        .filter(|n| *n > 0);
    let (nr_data_blocks, transaction) = match (&stale, choice.follows_superblock) {
        (Some(sb), true) => (
            stale_nr
                .unwrap_or(highest + 1)
                .max(opts.nr_data_blocks.unwrap_or(0)),
            sb.transaction_id
                .max(opts.transaction_id.unwrap_or(0))
                .max(max_tid),
        ),
        _ => {
            warnings.push(format!(
                "the superblock did not describe the trees found; rebuilt it (mapping root {}, \
                 details root {})",
                choice.top.map_or("none".to_string(), |t| t.to_string()),
                choice.details.map_or("none".to_string(), |d| d.to_string())
            ));
            (
                opts.nr_data_blocks.or(stale_nr).unwrap_or(highest + 1),
                opts.transaction_id
                    .or(stale.as_ref().map(|s| s.transaction_id))
                    .unwrap_or(1)
                    .max(if choice.details.is_some() {
                        max_tid + 1
                    } else {
                        1
                    }),
            )
        }
    };
    let stale_time = stale.as_ref().map_or(0, |s| s.time);
    let mut time = stale_time.max(age);
    if synthesised {
        time = time.max(age.saturating_add(1));
    }
    if age > stale_time && stale.is_some() && choice.follows_superblock {
        warnings.push(format!(
            "mappings or devices record time {age}, later than the pool's {stale_time}: the pool's \
             time is raised to {time}"
        ));
    }
    Ok(Header {
        time,
        transaction,
        flags: 0,
        version: 2,
        data_block_size,
        nr_data_blocks,
    })
}
