//! Device trees that no live top-level tree reaches: volumes deleted
//! (lvremove) whose metadata blocks were not yet reused.
//!
//! When the kernel deletes a thin device it removes its entries from the
//! top-level and details trees, writing the changed leaves to new blocks,
//! and releases the device's blocks in both space maps. Until they are
//! reused, the blocks still hold what they held:
//! * the old top-level and details leaves, naming the device by its id
//!   (an "id" orphan: a device some stale top-level tree lists that the
//!   live one does not);
//! * the device's mapping tree (an "unattributed" orphan once the old
//!   top-level leaf is reused: a mapping tree nothing points at, sharing
//!   no node with a live device; of several such trees that share nodes,
//!   old versions of one another, the newest).
//!
//! Stale versions of live devices' trees are not orphans: a stale
//! top-level tree's entry for a live id, and any mapping tree sharing a
//! node with a live device, are left alone.

use std::collections::BTreeMap;

use roaring::RoaringTreemap;

use crate::pdata::block_hash::{BlockMap, BlockSet};
use crate::thin::block_time::BlockTime;
use crate::thin::device_details::DeviceDetails;

use super::entries::Span;
use super::trees::{Class, Trees};
use super::{rank, Found};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// Root of its mapping tree.
    pub root: u64,
    /// The id a stale top-level tree still gives it.
    pub old_id: Option<u64>,
    /// Its details, when a stale details tree still holds them.
    pub details: Option<DeviceDetails>,
    pub mappings: u64,
    /// The newest time of its mappings.
    pub newest_time: u32,
    /// Its mapped data blocks that live devices map too: since the delete
    /// released them, they may have been reused and hold other data.
    pub reused: u64,
}

/// The orphans of the metadata in `src`, with the device id a repair with
/// `--recover-orphans` gives each: the salvage such a repair makes, with
/// nothing written.
pub fn list(src: &crate::io::BlockSource) -> anyhow::Result<Vec<(u64, Orphan)>> {
    let opts = super::RepairOptions {
        recover_orphans: true,
        // The data block size does not change what is found.
        data_block_size: Some(128),
        ..Default::default()
    };
    Ok(super::salvage(src, &opts)?.recovered)
}

/// Data blocks the leaves of the tree at `root` map, as kept.
fn data_blocks(t: &mut Trees, root: u64, into: &mut RoaringTreemap) {
    for (leaf, kept) in t.leaves(root, Class::Mapping) {
        let v = t.nodes[&leaf].view;
        let mut add = |i: u32| {
            into.insert(BlockTime::unpack(v.value_u64(i)).block);
        };
        match kept {
            Some(k) => k.iter().for_each(|&i| add(i as u32)),
            None => (0..v.nr_entries()).for_each(add),
        }
    }
}

/// The orphans of the pool whose live devices are `live` (id -> root),
/// listed by the top-level tree `chosen` (None if none was).
pub(crate) fn find(f: &mut Found, chosen: Option<u64>, live: &BTreeMap<u64, u64>) -> Vec<Orphan> {
    let mut live_nodes = BlockSet::default();
    let mut live_data = RoaringTreemap::new();
    for &root in live.values() {
        live_nodes.extend(f.trees.nodes_of(root, Class::Mapping));
        data_blocks(&mut f.trees, root, &mut live_data);
    }

    // Devices stale top-level trees still list, newest tree first.
    let mut found: Vec<(Option<u64>, u64)> = Vec::new();
    let mut ids_seen = BlockSet::default();
    let mut listed = BlockSet::default();
    let stale_tops: Vec<u64> = f
        .tops
        .iter()
        .copied()
        .filter(|t| Some(*t) != chosen)
        .collect();
    for t in stale_tops {
        for (id, v) in f.trees.entries(t, Class::TopLevel) {
            let root = u64::from_le_bytes(v.try_into().unwrap());
            listed.insert(root);
            if live.contains_key(&id)
                || live_nodes.contains(&root)
                || f.trees.summary(root, Class::Mapping, Span::ALL).is_none()
                || !ids_seen.insert(id)
            {
                continue;
            }
            found.push((Some(id), root));
        }
    }
    let mut claimed = live_nodes;
    for &(_, root) in &found {
        claimed.extend(f.trees.nodes_of(root, Class::Mapping));
    }

    // Mapping trees nothing points at, sharing no node with the above,
    // grouped by the nodes they share (old versions of one another).
    let mut candidates: Vec<u64> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut owner: BlockMap<usize> = BlockMap::default();
    fn top(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for root in f.trees.roots(Class::Mapping) {
        if listed.contains(&root) || claimed.contains(&root) {
            continue;
        }
        if f.trees
            .summary(root, Class::Mapping, Span::ALL)
            .unwrap()
            .entries
            == 0
        {
            continue;
        }
        let nodes = f.trees.nodes_of(root, Class::Mapping);
        if nodes.iter().any(|n| claimed.contains(n)) {
            continue;
        }
        let me = candidates.len();
        candidates.push(root);
        parent.push(me);
        for n in nodes {
            match owner.get(&n) {
                Some(&other) => {
                    let (a, b) = (top(&mut parent, other), top(&mut parent, me));
                    parent[b] = a;
                }
                None => {
                    owner.insert(n, me);
                }
            }
        }
    }
    let mut best: BTreeMap<usize, u64> = BTreeMap::new();
    for (i, &root) in candidates.iter().enumerate() {
        let g = top(&mut parent, i);
        let better = match best.get(&g) {
            None => true,
            Some(&have) => {
                let sa = f.trees.summary(root, Class::Mapping, Span::ALL).unwrap();
                let sb = f.trees.summary(have, Class::Mapping, Span::ALL).unwrap();
                rank(&sa, &sb).then(have.cmp(&root)).is_lt()
            }
        };
        if better {
            best.insert(g, root);
        }
    }
    let mut unattributed: Vec<u64> = best.into_values().collect();
    unattributed.sort_unstable();
    found.extend(unattributed.into_iter().map(|r| (None, r)));

    // Details from stale details trees, the newest transaction first.
    let mut details_roots = f.details.clone();
    details_roots.sort_by_key(|d| std::cmp::Reverse((f.summaries[d].max_transaction, *d)));
    let mut stale_details: BTreeMap<u64, DeviceDetails> = BTreeMap::new();
    for d in details_roots {
        for (id, v) in f.trees.entries(d, Class::Details) {
            stale_details
                .entry(id)
                .or_insert_with(|| DeviceDetails::parse(v));
        }
    }

    found
        .into_iter()
        .map(|(old_id, root)| {
            let s = f.trees.summary(root, Class::Mapping, Span::ALL).unwrap();
            let mut data = RoaringTreemap::new();
            data_blocks(&mut f.trees, root, &mut data);
            Orphan {
                root,
                old_id,
                details: old_id.and_then(|id| stale_details.get(&id).copied()),
                mappings: s.entries,
                newest_time: s.age,
                reused: (&data & &live_data).len(),
            }
        })
        .collect()
}
