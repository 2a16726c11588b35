//! Reading a space map as stored: its bitmaps (through the metadata
//! map's index block or the data map's index btree) and its ref-count
//! tree. Every block read here is also one metadata reference, counted
//! through the walker.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::io::{BlockKind, BlockSource, BLOCK_SIZE};
use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::{Damage, LeafVisitor, NodeDamage, TreeSpec, Walker};

use super::bitmap::{
    metadata_index_entry, IndexEntry, ENTRIES_PER_BITMAP, INDEX_ENTRY_SIZE, MAX_METADATA_BITMAPS,
};
use super::root::SpaceMapRoot;

/// Value size of ref-count tree leaves (a u32 count).
pub const REF_COUNT_VALUE_SIZE: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Metadata,
    Data,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Metadata => "metadata",
            Which::Data => "data",
        }
    }
}

/// A structural problem of a space map (fatal: counts cannot be trusted).
#[derive(Clone, Debug)]
pub struct SpaceMapProblem {
    pub block: Option<u64>,
    pub message: String,
}

pub struct StoredSpaceMap {
    pub which: Which,
    pub root: SpaceMapRoot,
    /// Index entry of each bitmap, by bitmap number; None where missing.
    pub bitmaps: Vec<Option<IndexEntry>>,
    /// Exact counts of blocks whose two bits say "three or more".
    pub overflow: HashMap<u64, u32>,
    pub problems: Vec<SpaceMapProblem>,
    /// Damage in the index or ref-count btrees.
    pub tree_damage: Vec<NodeDamage>,
}

impl StoredSpaceMap {
    pub fn nr_bitmaps(&self) -> usize {
        self.root.nr_blocks.div_ceil(ENTRIES_PER_BITMAP) as usize
    }
}

/// Collects (key, value bytes) of leaves, for small trees.
pub struct Collect<const N: usize> {
    pub entries: Mutex<Vec<(u64, [u8; N])>>,
}

impl<const N: usize> Collect<N> {
    pub fn new() -> Self {
        Collect {
            entries: Mutex::new(Vec::new()),
        }
    }

    pub fn into_sorted(self) -> Vec<(u64, [u8; N])> {
        let mut v = self.entries.into_inner().unwrap();
        v.sort_by_key(|e| e.0);
        v
    }
}

impl<const N: usize> Default for Collect<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LeafVisitor for Collect<N> {
    fn visit(&self, _tree: &str, _block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        let mut out = self.entries.lock().unwrap();
        for i in 0..leaf.nr_entries() {
            out.push((leaf.key(i), leaf.value(i).try_into().unwrap()));
        }
        None
    }
}

fn read_ref_counts(walker: &Walker, which: Which, root: &SpaceMapRoot) -> HashMap<u64, u32> {
    let counts = Collect::<4>::new();
    let tree = format!("{} space map ref-count tree", which.name());
    walker.walk(
        &tree,
        root.ref_count_root,
        &[],
        TreeSpec::new(REF_COUNT_VALUE_SIZE),
        &counts,
    );
    counts
        .into_sorted()
        .into_iter()
        .map(|(k, v)| (k, u32::from_le_bytes(v)))
        .collect()
}

/// Reads the metadata space map: one index block of up to 255 entries.
pub fn read_metadata(src: &BlockSource, walker: &Walker, root: SpaceMapRoot) -> StoredSpaceMap {
    let mut sm = StoredSpaceMap {
        which: Which::Metadata,
        root,
        bitmaps: Vec::new(),
        overflow: HashMap::new(),
        problems: Vec::new(),
        tree_damage: Vec::new(),
    };
    let nr_bitmaps = sm.nr_bitmaps();
    if nr_bitmaps > MAX_METADATA_BITMAPS {
        sm.problems.push(SpaceMapProblem {
            block: None,
            message: format!(
                "covers {} blocks, more than one index block can describe ({} bitmaps > {})",
                root.nr_blocks, nr_bitmaps, MAX_METADATA_BITMAPS
            ),
        });
        return sm;
    }
    walker.count_reference(root.bitmap_root);
    match src.checked(root.bitmap_root, BlockKind::Index) {
        Err(e) => sm.problems.push(SpaceMapProblem {
            block: Some(root.bitmap_root),
            message: format!("index block {}: {}", root.bitmap_root, e.reason()),
        }),
        Ok(index) => {
            for i in 0..nr_bitmaps {
                let ie = metadata_index_entry(index, i);
                walker.count_reference(ie.blocknr);
                sm.bitmaps.push(Some(ie));
            }
        }
    }
    sm.overflow = read_ref_counts(walker, Which::Metadata, &root);
    sm.tree_damage = walker.take_findings();
    sm
}

/// Reads the data space map: index entries are the values of a btree
/// keyed by bitmap number.
pub fn read_data(walker: &Walker, root: SpaceMapRoot) -> StoredSpaceMap {
    let mut sm = StoredSpaceMap {
        which: Which::Data,
        root,
        bitmaps: Vec::new(),
        overflow: HashMap::new(),
        problems: Vec::new(),
        tree_damage: Vec::new(),
    };
    let nr_bitmaps = sm.nr_bitmaps();
    let entries = Collect::<INDEX_ENTRY_SIZE>::new();
    walker.walk(
        "data space map index tree",
        root.bitmap_root,
        &[],
        TreeSpec::new(INDEX_ENTRY_SIZE as u32),
        &entries,
    );
    sm.bitmaps = vec![None; nr_bitmaps];
    for (key, value) in entries.into_sorted() {
        let ie = IndexEntry::parse(&value);
        walker.count_reference(ie.blocknr);
        match sm.bitmaps.get_mut(key as usize) {
            Some(slot) => *slot = Some(ie),
            None => sm.problems.push(SpaceMapProblem {
                block: Some(ie.blocknr),
                message: format!(
                    "index entry for bitmap {key} lies beyond the {nr_bitmaps} bitmaps \
                     that {} blocks need",
                    root.nr_blocks
                ),
            }),
        }
    }
    for (i, slot) in sm.bitmaps.iter().enumerate() {
        if slot.is_none() {
            sm.problems.push(SpaceMapProblem {
                block: None,
                message: format!(
                    "no index entry for bitmap {i} (blocks {}..{})",
                    i as u64 * ENTRIES_PER_BITMAP,
                    ((i as u64 + 1) * ENTRIES_PER_BITMAP).min(root.nr_blocks)
                ),
            });
        }
    }
    sm.overflow = read_ref_counts(walker, Which::Data, &root);
    sm.tree_damage = walker.take_findings();
    sm
}

const _: () = assert!(BLOCK_SIZE == 4096);
