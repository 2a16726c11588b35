//! Checking arrays with the parallel btree walker.
//!
//! The index btrees of every array given are walked together, in
//! parallel, by the walker that checks the rest of the metadata: it
//! validates and counts the index nodes. For each leaf entry this module
//! counts one reference to the array block through the walker's
//! `RefCounter` (an array block's count is the number of index leaves
//! pointing at it), validates the block (checksum, self-location, value
//! size, capacity, its share of the array's length) and hands its values,
//! in place, to the array's visitor. Afterwards the keys are checked to
//! cover exactly 0..B−1 for the B blocks the array's length needs.
//!
//! ```ignore
//! let outcome = walk_arrays(&walker, &[ArrayWalk {
//!     name: "mapping array".into(), root, value_size: 8, len: cache_blocks,
//!     visitor: &my_checker,
//! }]);
//! for d in &outcome[0].damage { println!("{d}") }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::{AtomicBitSet, Damage, LeafVisitor, NodeDamage, TreeSpec, Walker};

use super::{
    blocks_for, entries_of, read_block, ArrayBlockView, ArrayDamage, ArrayDamageKind,
    INDEX_VALUE_SIZE,
};

/// What to do with the values of each sound array block.
pub trait ArrayVisitor: Sync {
    /// Array block `index` (holding entries from index × max_entries) is
    /// sound; `block` borrows it. Returns a description of any bad
    /// values (the visitor names the entries itself).
    fn visit(&self, index: u64, block: ArrayBlockView<'_>) -> Result<(), String>;
}

/// Accepts any values: for arrays whose structure alone is checked.
pub struct AnyValues;

impl ArrayVisitor for AnyValues {
    fn visit(&self, _index: u64, _block: ArrayBlockView<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// One array to check.
pub struct ArrayWalk<'v> {
    /// Names the array in messages, and its index tree in node damage.
    pub name: String,
    pub root: u64,
    pub value_size: u32,
    /// Entries the array must hold (the owner's length).
    pub len: u64,
    pub visitor: &'v dyn ArrayVisitor,
}

/// What the walk found in one array.
#[derive(Debug, Default)]
pub struct ArrayOutcome {
    /// Damaged index nodes (from the walker).
    pub index_damage: Vec<NodeDamage>,
    /// Damaged, missing, extra or badly valued array blocks.
    pub damage: Vec<ArrayDamage>,
    /// Sound array blocks visited.
    pub blocks_visited: u64,
}

impl ArrayOutcome {
    pub fn is_clean(&self) -> bool {
        self.index_damage.is_empty() && self.damage.is_empty()
    }
}

struct State<'v> {
    walk: &'v ArrayWalk<'v>,
    /// Array block indices listed so far.
    listed: AtomicBitSet,
    nr_blocks: u64,
    damage: Mutex<Vec<ArrayDamage>>,
    visited: AtomicU64,
}

impl State<'_> {
    /// Notes that index `k` (below the array's block count) is listed;
    /// false if it was already.
    fn list(&self, k: u64) -> bool {
        // Indices past what the set covers cannot all be distinct blocks
        // of this device; the gap is reported as missing.
        k >= self.listed_cap() || self.listed.insert(k)
    }

    fn listed_cap(&self) -> u64 {
        self.listed.nr_words() * 64
    }
}

struct Leaves<'w, 'v> {
    walker: &'w Walker<'w>,
    arrays: Vec<State<'v>>,
}

impl Leaves<'_, '_> {
    fn state(&self, tree: &str) -> Option<&State<'_>> {
        self.arrays.iter().find(|s| s.walk.name == tree)
    }
}

impl LeafVisitor for Leaves<'_, '_> {
    fn visit(&self, tree: &str, _block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        let st = self.state(tree)?;
        let w = st.walk;
        let src = self.walker.source();
        let mut found = Vec::new();
        let damage = |indices: std::ops::Range<u64>, block, entries, kind| ArrayDamage {
            array: w.name.clone(),
            indices,
            block: Some(block),
            entries,
            kind,
        };
        for (k, b) in leaf.entries_u64() {
            if !self.walker.count_reference(b) {
                let e = crate::io::BlockError::OutOfBounds {
                    block: b,
                    nr_blocks: src.nr_blocks(),
                };
                let entries = entries_of(k, w.value_size, w.len);
                found.push(damage(k..k + 1, b, entries, ArrayDamageKind::Block(e)));
                st.list(k);
                continue;
            }
            if k >= st.nr_blocks {
                found.push(damage(k..k + 1, b, 0..0, ArrayDamageKind::Beyond));
                continue;
            }
            if !st.list(k) {
                found.push(damage(k..k + 1, b, 0..0, ArrayDamageKind::Duplicate));
                continue;
            }
            match read_block(src, b, w.value_size, k, Some(w.len)) {
                Err(kind) => {
                    let entries = entries_of(k, w.value_size, w.len);
                    found.push(damage(k..k + 1, b, entries, kind));
                }
                Ok(view) => {
                    st.visited.fetch_add(1, Ordering::Relaxed);
                    if let Err(what) = w.visitor.visit(k, view) {
                        found.push(damage(k..k + 1, b, 0..0, ArrayDamageKind::Values(what)));
                    }
                }
            }
        }
        if !found.is_empty() {
            st.damage.lock().unwrap().extend(found);
        }
        None
    }
}

/// Walks `arrays` in parallel with `walker`, which counts every index
/// node and array block reached. Takes the walker's findings (take
/// earlier ones first): each array's index damage is in its outcome.
pub fn walk_arrays(walker: &Walker<'_>, arrays: &[ArrayWalk<'_>]) -> Vec<ArrayOutcome> {
    let leaves = Leaves {
        walker,
        arrays: arrays
            .iter()
            .map(|walk| {
                // An absurd length cannot list more blocks than exist.
                let nr_blocks = blocks_for(walk.len, walk.value_size);
                State {
                    walk,
                    listed: AtomicBitSet::new(nr_blocks.min(walker.source().nr_blocks() + 1)),
                    nr_blocks,
                    damage: Mutex::new(Vec::new()),
                    visited: AtomicU64::new(0),
                }
            })
            .collect(),
    };
    let trees: Vec<(String, u64, Vec<u64>)> = arrays
        .iter()
        .map(|a| (a.name.clone(), a.root, Vec::new()))
        .collect();
    walker.walk_many(&trees, TreeSpec::new(INDEX_VALUE_SIZE), &leaves);

    let mut index_damage = walker.take_findings();
    leaves
        .arrays
        .into_iter()
        .map(|st| {
            let name = &st.walk.name;
            let (mine, rest): (Vec<NodeDamage>, Vec<NodeDamage>) =
                index_damage.drain(..).partition(|d| &d.tree == name);
            index_damage = rest;
            let mut damage = st.damage.into_inner().unwrap();
            let mut missing = holes(&st.listed, st.nr_blocks, st.walk, &mine);
            if !missing.is_empty() {
                missing = listed_elsewhere(walker, st.walk, missing);
            }
            damage.extend(missing);
            damage.sort_by_key(|d| d.indices.start);
            ArrayOutcome {
                index_damage: mine,
                damage,
                blocks_visited: st.visited.into_inner(),
            }
        })
        .collect()
}

/// Holes the walk saw only because an index leaf is shared with another
/// array walked here (an era metadata snapshot's era array shares
/// leaves with the live one): the walker hands each leaf to the first
/// array that reaches it. The index itself, read again without counting,
/// says which of those array blocks it does list; those are no holes.
fn listed_elsewhere(
    walker: &Walker<'_>,
    walk: &ArrayWalk<'_>,
    missing: Vec<ArrayDamage>,
) -> Vec<ArrayDamage> {
    let (pointers, _) = super::view::read_index(walker.source(), &walk.name, walk.root);
    if pointers.is_empty() {
        return missing;
    }
    let listed: std::collections::BTreeSet<u64> = pointers.iter().map(|p| p.0).collect();
    let mut out: Vec<ArrayDamage> = Vec::new();
    for hole in missing {
        // The parts of the hole between the keys the index lists.
        let mut start = hole.indices.start;
        let ends = listed
            .range(hole.indices.clone())
            .copied()
            .chain(std::iter::once(hole.indices.end));
        for end in ends {
            if start < end {
                let first = entries_of(start, walk.value_size, walk.len);
                let last = entries_of(end - 1, walk.value_size, walk.len);
                out.push(ArrayDamage {
                    indices: start..end,
                    entries: first.start..last.end,
                    ..hole.clone()
                });
            }
            start = end + 1;
        }
    }
    out
}

/// Runs of array block indices the index should list and does not,
/// outside subtrees already reported damaged.
fn holes(
    listed: &AtomicBitSet,
    nr_blocks: u64,
    walk: &ArrayWalk<'_>,
    damaged: &[NodeDamage],
) -> Vec<ArrayDamage> {
    let mut out: Vec<ArrayDamage> = Vec::new();
    let cap = (listed.nr_words() * 64).min(nr_blocks);
    for k in 0..cap {
        if listed.contains(k) || damaged.iter().any(|d| d.keys.contains(k)) {
            continue;
        }
        let entries = entries_of(k, walk.value_size, walk.len);
        match out.last_mut() {
            Some(h) if h.indices.end == k => {
                h.indices.end = k + 1;
                h.entries.end = entries.end;
            }
            _ => out.push(ArrayDamage {
                array: walk.name.clone(),
                indices: k..k + 1,
                block: None,
                entries,
                kind: ArrayDamageKind::Missing,
            }),
        }
    }
    if cap < nr_blocks {
        let entries = entries_of(cap, walk.value_size, walk.len);
        out.push(ArrayDamage {
            array: walk.name.clone(),
            indices: cap..nr_blocks,
            block: None,
            entries: entries.start..walk.len,
            kind: ArrayDamageKind::Missing,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestImage;
    use super::*;
    use crate::io::BlockSource;
    use crate::pdata::btree::node::LEAF_NODE;
    use crate::pdata::refcount::RefCounter;
    use std::path::Path;

    /// Sums the values it sees, and rejects the value 13.
    struct Sum(AtomicU64);

    impl ArrayVisitor for Sum {
        fn visit(&self, index: u64, block: ArrayBlockView<'_>) -> Result<(), String> {
            let mut bad = None;
            for (i, v) in block.values_u64().enumerate() {
                self.0.fetch_add(v, Ordering::Relaxed);
                if v == 13 {
                    bad.get_or_insert(index * 509 + i as u64);
                }
            }
            bad.map_or(Ok(()), |e| Err(format!("entry {e} is 13")))
        }
    }

    fn check(
        img: &TestImage,
        root: u64,
        len: u64,
        strict: bool,
    ) -> (ArrayOutcome, u64, RefCounter) {
        let src = BlockSource::from_bytes(&img.bytes, Path::new("test")).unwrap();
        let refs = RefCounter::for_metadata(src.nr_blocks());
        let sum = Sum(AtomicU64::new(0));
        let outcome = {
            let walker = Walker::new(&src, &refs, strict);
            let arrays = [ArrayWalk {
                name: "numbers".into(),
                root,
                value_size: 8,
                len,
                visitor: &sum,
            }];
            walk_arrays(&walker, &arrays).pop().unwrap()
        };
        (outcome, sum.0.into_inner(), refs)
    }

    #[test]
    fn walks_indices_of_any_depth_and_counts_every_block() {
        // Index nodes of at most three entries (and capacity 3, so they
        // are not under-filled): 30 array blocks take a 4-level index.
        for (nr_arrays, want_levels) in
            [(1u64, 1), (3, 1), (7, 2), (9, 2), (10, 3), (27, 3), (30, 4)]
        {
            let n = nr_arrays * 509 - 100;
            let mut img = TestImage::new(nr_arrays * 2 + 32);
            let values: Vec<u64> = (0..n).map(|i| 2 * i).collect();
            let blocks = img.u64_array_blocks(&values);
            let (root, levels) = img.index(&blocks, 3, 3);
            assert_eq!(levels, want_levels, "{nr_arrays} array blocks");
            let (outcome, sum, refs) = check(&img, root, n, true);
            assert!(outcome.is_clean(), "{nr_arrays}: {outcome:?}");
            assert_eq!(outcome.blocks_visited, nr_arrays);
            assert_eq!(sum, n * (n - 1));
            // Every index node and array block written, once each.
            for b in 1..img.next {
                assert_eq!(refs.get(b), 1, "block {b} of {nr_arrays}");
            }
            assert_eq!(refs.get(img.next), 0);
        }
    }

    #[test]
    fn array_block_damage_is_named_and_costs_only_that_block() {
        let mut img = TestImage::new(64);
        let values: Vec<u64> = (0..509 * 5)
            .map(|i| if i == 600 { 13 } else { 1 })
            .collect();
        let blocks = img.u64_array_blocks(&values);
        let (root, _) = img.index(&blocks, 3, 3);
        // Block 3 (array index 2): wrong self-location, resealed.
        {
            let d = img.block_mut(blocks[2]);
            d[16..24].copy_from_slice(&99u64.to_le_bytes());
            crate::io::checksum::seal(d, crate::io::BlockKind::Array);
        }
        let (outcome, sum, refs) = check(&img, root, 509 * 5, true);
        assert!(outcome.index_damage.is_empty());
        let got: Vec<String> = outcome.damage.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            vec![
                format!("numbers: array block 1 at block {}: value error: entry 600 is 13", blocks[1]),
                format!(
                    "numbers: array block 2 at block {} (entries 1018..1526 lost): blocknr mismatch (block says it is 99)",
                    blocks[2]
                ),
            ]
        );
        assert_eq!(sum, 509 * 4 - 1 + 13);
        // The damaged block is still one reference.
        assert_eq!(refs.get(blocks[2]), 1);
    }

    #[test]
    fn holes_extra_and_repeated_blocks() {
        let mut img = TestImage::new(64);
        let values: Vec<u64> = vec![1; 509 * 3];
        let b = img.u64_array_blocks(&values);
        let extra = img.u64_array_blocks(&[1]);
        // Keys 0, 0 (again), 2 and 5 (beyond): 1 is a hole.
        let leaf = img.node(LEAF_NODE, 252, &[(0, b[0]), (2, b[2]), (5, extra[0])]);
        let dup = img.node(LEAF_NODE, 252, &[(0, b[1])]);
        let root = img.node(
            crate::pdata::btree::node::INTERNAL_NODE,
            252,
            &[(0, leaf), (6, dup)],
        );
        let (outcome, _, _) = check(&img, root, 509 * 3, false);
        let kinds: Vec<(std::ops::Range<u64>, ArrayDamageKind)> = outcome
            .damage
            .iter()
            .map(|d| (d.indices.clone(), d.kind.clone()))
            .collect();
        // The dup leaf's keys start below its parent's key: node damage.
        assert_eq!(outcome.index_damage.len(), 1, "{:?}", outcome.index_damage);
        assert!(
            kinds.contains(&(1..2, ArrayDamageKind::Missing)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&(5..6, ArrayDamageKind::Beyond)),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_short_last_block_or_a_gap_inside_the_array_is_damage() {
        let mut img = TestImage::new(64);
        let values: Vec<u64> = vec![0; 509 * 2 + 10];
        let mut b = img.u64_array_blocks(&values);
        // The middle block holds 500 entries: later ones would shift.
        let short = img.array_block(8, &vec![&[0u8; 8][..]; 500]);
        b[1] = short;
        let (root, _) = img.index(&b, 252, 252);
        let (outcome, _, _) = check(&img, root, 509 * 2 + 10, true);
        assert_eq!(outcome.damage.len(), 1);
        assert!(outcome.damage[0].to_string().contains("not the last block"));
        // Told the array is one entry longer, the last block is short.
        let (outcome, _, _) = check(&img, root, 509 * 2 + 11, true);
        assert!(outcome
            .damage
            .iter()
            .any(|d| d.to_string().contains("length leaves 11")));
    }
}
