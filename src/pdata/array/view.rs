//! Reading a whole array for dumping or salvaging: the index is read
//! without recursion (any depth), each array block is validated (in
//! parallel) and kept as a borrowed view, and every problem is recorded
//! while the rest stays readable. Counts no references: checking goes
//! through `walk`.
//!
//! ```ignore
//! let view = ArrayView::read(&src, "mapping array", root, 8, Some(cache_blocks));
//! if let Some(problem) = view.first_problem() { bail!("{problem}") }
//! for (cblock, value) in view.entries() { /* value: &[u8], in place */ }
//! ```

use rayon::prelude::*;

use crate::io::checksum::BlockKind;
use crate::io::{BlockError, BlockSource};
use crate::pdata::block_hash::BlockSet;
use crate::pdata::btree::node::{NodeKind, NodeView};
use crate::pdata::btree::walk::{Damage, KeyRange, NodeDamage};

use super::{
    entries_of, max_entries_for, read_block, ArrayBlockError, ArrayBlockView, ArrayDamage,
    ArrayDamageKind, INDEX_VALUE_SIZE,
};

/// Index levels beyond which a path must be a cycle (a valid index of
/// 2^32 array blocks has at most five).
const MAX_INDEX_DEPTH: u32 = 64;

/// An array read from the metadata: its blocks by index, borrowed.
pub struct ArrayView<'a> {
    value_size: u32,
    max_entries: u64,
    len: u64,
    blocks: Vec<Option<ArrayBlockView<'a>>>,
    /// Problems of array blocks and holes in the index.
    pub damage: Vec<ArrayDamage>,
    /// Problems of the index btree's nodes.
    pub index_damage: Vec<NodeDamage>,
}

impl<'a> ArrayView<'a> {
    /// Reads the array `name` at index root `root`. With `len` (the
    /// owner's length), the index must list exactly the blocks that
    /// length takes and each must hold its share; without it, the length
    /// is what the blocks hold (every block but the last must be full).
    pub fn read(
        src: &'a BlockSource,
        name: &str,
        root: u64,
        value_size: u32,
        len: Option<u64>,
    ) -> ArrayView<'a> {
        let max = max_entries_for(value_size) as u64;
        let (pointers, index_damage) = read_index(src, name, root);
        let mut damage = Vec::new();
        // The array cannot hold more blocks than the device does (an
        // absurd length from a damaged superblock must not size memory).
        let limit = src.nr_blocks();
        let wanted = match len {
            Some(len) => len.div_ceil(max),
            None => pointers.last().map_or(0, |(k, _)| k.saturating_add(1)),
        };
        let nr_blocks = wanted.min(limit);
        let mut slots: Vec<Option<u64>> = vec![None; nr_blocks as usize];
        for &(key, b) in &pointers {
            if key >= wanted {
                damage.push(ArrayDamage {
                    array: name.to_string(),
                    indices: key..key + 1,
                    block: Some(b),
                    entries: 0..0,
                    kind: ArrayDamageKind::Beyond,
                });
                continue;
            }
            match slots.get_mut(key as usize) {
                Some(slot @ None) => *slot = Some(b),
                Some(Some(_)) => damage.push(ArrayDamage {
                    array: name.to_string(),
                    indices: key..key + 1,
                    block: Some(b),
                    entries: 0..0,
                    kind: ArrayDamageKind::Duplicate,
                }),
                None => {} // beyond the device: reported as missing below
            }
        }
        let checked: Vec<Result<Option<ArrayBlockView<'a>>, ArrayDamage>> = slots
            .par_iter()
            .enumerate()
            .map(|(k, slot)| {
                let Some(b) = *slot else { return Ok(None) };
                read_block(src, b, value_size, k as u64, len)
                    .map(Some)
                    .map_err(|kind| ArrayDamage {
                        array: name.to_string(),
                        indices: k as u64..k as u64 + 1,
                        block: Some(b),
                        entries: entries_of(k as u64, value_size, len.unwrap_or(u64::MAX)),
                        kind,
                    })
            })
            .collect();
        let mut blocks = Vec::with_capacity(checked.len());
        for r in checked {
            match r {
                Ok(v) => blocks.push(v),
                Err(d) => {
                    damage.push(d);
                    blocks.push(None);
                }
            }
        }
        let mut view = ArrayView {
            value_size,
            max_entries: max,
            len: 0,
            blocks,
            damage,
            index_damage,
        };
        view.len = match len {
            Some(len) => len,
            None => view.length_from_blocks(name),
        };
        view.report_holes(name, wanted, &pointers);
        view.damage.sort_by_key(|d| d.indices.start);
        view
    }

    /// Without an owner's length: what the blocks hold. A block before
    /// the last that is not full is damage.
    fn length_from_blocks(&mut self, name: &str) -> u64 {
        let n = self.blocks.len();
        let mut total = 0;
        for k in 0..n {
            let Some(v) = self.blocks[k] else {
                total += self.max_entries;
                continue;
            };
            let nr = v.nr_entries() as u64;
            if k + 1 < n && nr != self.max_entries {
                self.damage.push(ArrayDamage {
                    array: name.to_string(),
                    indices: k as u64..k as u64 + 1,
                    block: Some(v.blocknr()),
                    entries: 0..0,
                    kind: ArrayDamageKind::Header(ArrayBlockError::NotFull {
                        nr_entries: nr as u32,
                        max_entries: self.max_entries as u32,
                    }),
                });
                self.blocks[k] = None;
            }
            total += if k + 1 < n { self.max_entries } else { nr };
        }
        total
    }

    /// Array blocks the index should list but does not, outside subtrees
    /// already reported damaged.
    fn report_holes(&mut self, name: &str, wanted: u64, pointers: &[(u64, u64)]) {
        let mut listed = pointers.iter().map(|p| p.0).peekable();
        let mut holes: Vec<std::ops::Range<u64>> = Vec::new();
        let mut k = 0;
        while k < wanted {
            while listed.next_if(|&x| x < k).is_some() {}
            if listed.peek() == Some(&k) {
                k += 1;
                continue;
            }
            // Skip ahead to the next listed key in one step, and take
            // out the key ranges of damaged subtrees as ranges (a damaged
            // key can make the gap astronomically long).
            let next = listed.peek().copied().unwrap_or(wanted).min(wanted);
            let mut gaps: Vec<std::ops::Range<u64>> = std::iter::once(k..next).collect();
            for d in &self.index_damage {
                let (lo, hi) = (d.keys.lo.unwrap_or(0), d.keys.hi.unwrap_or(u64::MAX));
                gaps = gaps
                    .into_iter()
                    .flat_map(|g| [g.start..g.end.min(lo), g.start.max(hi)..g.end])
                    .filter(|g| !g.is_empty())
                    .collect();
            }
            for g in gaps {
                match holes.last_mut() {
                    Some(h) if h.end == g.start => h.end = g.end,
                    _ => holes.push(g),
                }
            }
            k = next;
        }
        let len = self.len;
        for h in holes {
            let first = entries_of(h.start, self.value_size, len);
            let last = entries_of(h.end - 1, self.value_size, len);
            self.damage.push(ArrayDamage {
                array: name.to_string(),
                indices: h,
                block: None,
                entries: first.start..last.end,
                kind: ArrayDamageKind::Missing,
            });
        }
    }

    /// The array's length in entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn value_size(&self) -> u32 {
        self.value_size
    }

    /// True when every entry can be read.
    pub fn is_intact(&self) -> bool {
        self.damage.is_empty()
            && self.index_damage.is_empty()
            && self.blocks.len() as u64 == self.len.div_ceil(self.max_entries)
    }

    /// The first problem found, in words, if any.
    pub fn first_problem(&self) -> Option<String> {
        if let Some(d) = self.index_damage.first() {
            return Some(d.to_string());
        }
        if let Some(d) = self.damage.first() {
            return Some(d.to_string());
        }
        (!self.is_intact()).then(|| {
            format!(
                "the array needs {} array blocks, more than the metadata holds",
                self.len.div_ceil(self.max_entries)
            )
        })
    }

    /// Array block `k`, if it was read intact.
    pub fn block(&self, k: u64) -> Option<ArrayBlockView<'a>> {
        self.blocks.get(k as usize).copied().flatten()
    }

    /// Array blocks by index, None where damaged or missing.
    pub fn blocks(&self) -> &[Option<ArrayBlockView<'a>>] {
        &self.blocks
    }

    /// Entry `i`'s bytes, if it is readable.
    #[inline]
    pub fn get(&self, i: u64) -> Option<&'a [u8]> {
        if i >= self.len {
            return None;
        }
        let block = self.block(i / self.max_entries)?;
        block.value((i % self.max_entries) as u32)
    }

    /// The readable entries, in order, with their positions.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &'a [u8])> + '_ {
        let max = self.max_entries;
        self.blocks.iter().enumerate().flat_map(move |(k, b)| {
            b.iter()
                .flat_map(move |v| v.values().enumerate())
                .map(move |(i, v)| (k as u64 * max + i as u64, v))
        })
    }
}

/// The (key, array block) pointers of an index, in key order, and the
/// damage found in its nodes. Iterative: a stack, not recursion, and
/// each node is expanded once (a node met again is a cycle).
pub fn read_index(src: &BlockSource, name: &str, root: u64) -> (Vec<(u64, u64)>, Vec<NodeDamage>) {
    let mut pointers = Vec::new();
    let mut damage = Vec::new();
    let mut seen = BlockSet::default();
    let mut leaf_depth: Option<u32> = None;
    let mut stack: Vec<(Vec<u64>, KeyRange, u32)> = vec![(vec![root], KeyRange::ALL, 0)];
    while let Some((path, keys, depth)) = stack.pop() {
        let block = *path.last().unwrap();
        let mut fail = |damage_kind: Damage, path: Vec<u64>| {
            damage.push(NodeDamage {
                tree: name.to_string(),
                path,
                keys,
                damage: damage_kind,
            })
        };
        if depth > MAX_INDEX_DEPTH || !seen.insert(block) {
            fail(Damage::Cycle, path);
            continue;
        }
        let node = match src.checked(block, BlockKind::BtreeNode) {
            Ok(data) => NodeView::new(data),
            Err(e) => {
                fail(Damage::Block(e), path);
                continue;
            }
        };
        let kind = match node.validate(INDEX_VALUE_SIZE, false) {
            Ok(k) => k,
            Err(e) => {
                fail(Damage::Node(e), path);
                continue;
            }
        };
        if let Some((first, last)) = node.key_bounds_unchecked() {
            if !keys.contains(first) || !keys.contains(last) {
                fail(Damage::KeysOutOfRange { first, last }, path);
                continue;
            }
        }
        match kind {
            NodeKind::Leaf => {
                if *leaf_depth.get_or_insert(depth) != depth {
                    fail(Damage::UnevenDepth, path.clone());
                }
                pointers.extend(node.entries_u64());
            }
            NodeKind::Internal => {
                for i in (0..node.nr_entries()).rev() {
                    let child_keys = keys.child(&node, i);
                    let mut child_path = path.clone();
                    child_path.push(node.value_u64(i));
                    stack.push((child_path, child_keys, depth + 1));
                }
            }
        }
    }
    // Leaves come off the stack in key order already; a damaged tree
    // may not keep that promise.
    if !pointers.is_sorted_by_key(|p| p.0) {
        pointers.sort_by_key(|p| p.0);
    }
    (pointers, damage)
}

/// Reads a whole array strictly: the first problem is an error.
pub fn read_strict<'a>(
    src: &'a BlockSource,
    name: &str,
    root: u64,
    value_size: u32,
    len: Option<u64>,
) -> Result<ArrayView<'a>, String> {
    let view = ArrayView::read(src, name, root, value_size, len);
    match view.first_problem() {
        Some(p) => Err(p),
        None => Ok(view),
    }
}

impl From<BlockError> for ArrayDamageKind {
    fn from(e: BlockError) -> Self {
        ArrayDamageKind::Block(e)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestImage;
    use super::*;
    use std::path::Path;

    fn source(img: &TestImage) -> BlockSource {
        BlockSource::from_bytes(&img.bytes, Path::new("test")).unwrap()
    }

    /// `n` u64 values 0, 1, 2, ... in array blocks, indexed with nodes of
    /// at most `fanout` entries.
    fn numbers(n: u64, fanout: usize) -> (TestImage, u64, u32) {
        let mut img = TestImage::new(n / 509 + 64);
        let values: Vec<u64> = (0..n).collect();
        let blocks = img.u64_array_blocks(&values);
        let (root, levels) = img.index(&blocks, fanout, 3);
        (img, root, levels)
    }

    #[test]
    fn reads_indices_of_every_depth() {
        // Nodes of three entries: 30 array blocks need a 4-level index.
        for (n, want_levels) in [
            (509 * 2, 1),
            (509 * 3 + 5, 2),
            (509 * 9, 2),
            (509 * 20, 3),
            (509 * 30, 4),
        ] {
            let (img, root, levels) = numbers(n, 3);
            assert_eq!(levels, want_levels, "{n} entries");
            let src = source(&img);
            let view = ArrayView::read(&src, "numbers", root, 8, Some(n));
            assert!(view.is_intact(), "{n}: {:?}", view.first_problem());
            let got: Vec<u64> = view
                .entries()
                .map(|(i, v)| {
                    assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), i);
                    i
                })
                .collect();
            assert_eq!(got.len() as u64, n);
            assert_eq!(view.get(n - 1), Some(&(n - 1).to_le_bytes()[..]));
            assert_eq!(view.get(n), None);
            // Without the owner's length, the blocks tell it.
            let free = ArrayView::read(&src, "numbers", root, 8, None);
            assert_eq!(free.len(), n);
        }
    }

    #[test]
    fn an_empty_array_is_an_empty_leaf() {
        let mut img = TestImage::new(4);
        let (root, _) = img.index(&[], 3, 252);
        let src = source(&img);
        let view = ArrayView::read(&src, "empty", root, 8, Some(0));
        assert!(view.is_intact());
        assert_eq!(view.entries().count(), 0);
    }

    #[test]
    fn damage_costs_only_its_own_entries() {
        let (mut img, root, _) = numbers(509 * 9, 3);
        // Array block index 4 is the fifth block written (blocks from 1).
        img.block_mut(5)[100] ^= 1;
        let src = source(&img);
        let view = ArrayView::read(&src, "numbers", root, 8, Some(509 * 9));
        assert_eq!(view.damage.len(), 1, "{:?}", view.damage);
        let d = &view.damage[0];
        assert_eq!((d.indices.clone(), d.block), (4..5, Some(5)));
        assert_eq!(d.entries, 2036..2545);
        assert!(matches!(
            d.kind,
            ArrayDamageKind::Block(BlockError::Checksum { .. })
        ));
        assert_eq!(view.entries().count() as u64, 509 * 8);
        assert_eq!(view.get(2036), None);
        assert!(view.get(2545).is_some());
    }

    #[test]
    fn holes_and_short_arrays_are_named() {
        let mut img = TestImage::new(64);
        let values: Vec<u64> = (0..509 * 4).collect();
        let mut blocks = img.u64_array_blocks(&values);
        blocks.remove(2);
        // Keys 0, 1, 3: index 2 is a hole.
        let entries: Vec<(u64, u64)> = [(0u64, blocks[0]), (1, blocks[1]), (3, blocks[2])].to_vec();
        let root = img.node(crate::pdata::btree::node::LEAF_NODE, 252, &entries);
        let src = source(&img);
        let view = ArrayView::read(&src, "numbers", root, 8, Some(509 * 4));
        let kinds: Vec<_> = view
            .damage
            .iter()
            .map(|d| (d.indices.clone(), d.kind.clone()))
            .collect();
        assert_eq!(kinds, vec![(2..3, ArrayDamageKind::Missing)]);
        // The same index, told the array is longer: blocks 4.. are missing.
        let view = ArrayView::read(&src, "numbers", root, 8, Some(509 * 6));
        let kinds: Vec<_> = view
            .damage
            .iter()
            .map(|d| (d.indices.clone(), d.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (2..3, ArrayDamageKind::Missing),
                (4..6, ArrayDamageKind::Missing)
            ]
        );
        assert_eq!(view.damage[1].entries, 2036..3054);
        // Told it is shorter, the last listed block is too full.
        let view = ArrayView::read(&src, "numbers", root, 8, Some(509 * 3));
        assert!(view
            .damage
            .iter()
            .any(|d| d.indices == (3..4) && d.kind == ArrayDamageKind::Beyond));
        let view = ArrayView::read(&src, "numbers", root, 8, Some(509 * 4 - 7));
        assert!(view.damage.iter().any(|d| d.indices == (3..4)
            && matches!(
                d.kind,
                ArrayDamageKind::Header(ArrayBlockError::WrongLength { .. })
            )));
    }

    #[test]
    fn a_cyclic_index_ends() {
        let mut img = TestImage::new(16);
        let blocks = img.u64_array_blocks(&[1, 2, 3]);
        let leaf = img.node(crate::pdata::btree::node::LEAF_NODE, 3, &[(0, blocks[0])]);
        // An internal node whose second child is itself (key 1 onwards).
        let me = img.next;
        let root = img.node(
            crate::pdata::btree::node::INTERNAL_NODE,
            3,
            &[(0, leaf), (1, me)],
        );
        assert_eq!(root, me);
        let src = source(&img);
        let view = ArrayView::read(&src, "cyclic", root, 8, Some(3));
        assert!(view.index_damage.iter().any(|d| d.damage == Damage::Cycle));
        assert_eq!(view.entries().count(), 3);
    }
}
