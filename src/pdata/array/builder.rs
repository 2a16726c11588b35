//! Writing arrays: values stream in index order into array blocks, each
//! full block is written at once and its (index, block) entry goes to the
//! index's leaf level; `finish` writes the last, partial block and the
//! index's internal levels, as the btree builder does for any tree.
//! Every array block gets one reference (its index leaf's); the root's
//! reference is the caller's to count, as with `build_root`.
//!
//! ```ignore
//! let mut hints = ArrayBuilder::new(4);
//! for h in hints_in_order { hints.push(&mut w, &h.to_le_bytes())?; }
//! hints.push_zeros(&mut w, rest)?;           // default (zero) values
//! let root = hints.finish(&mut w)?;
//! w.refs.inc(root);                          // the superblock's pointer
//! ```

use anyhow::Result;

use crate::io::checksum::BlockKind;
use crate::io::BLOCK_SIZE;
use crate::pdata::btree::builder::{build_root, nodes_for, LevelBuilder, MetadataWriter};

use super::{
    blocks_for, max_entries_for, ARRAY_HEADER_SIZE, INDEX_VALUE_SIZE, MAX_ENTRIES_OFFSET,
    NR_ENTRIES_OFFSET, VALUE_SIZE_OFFSET,
};

pub struct ArrayBuilder {
    value_size: usize,
    max: usize,
    /// The array block being filled, laid out as written.
    block: Vec<u8>,
    nr: usize,
    next_index: u64,
    len: u64,
    index: LevelBuilder,
}

impl ArrayBuilder {
    pub fn new(value_size: u32) -> ArrayBuilder {
        ArrayBuilder {
            value_size: value_size as usize,
            max: max_entries_for(value_size) as usize,
            block: vec![0u8; BLOCK_SIZE],
            nr: 0,
            next_index: 0,
            len: 0,
            index: LevelBuilder::leaves(INDEX_VALUE_SIZE),
        }
    }

    /// Entries pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one value of the array's value size.
    #[inline]
    pub fn push(&mut self, w: &mut MetadataWriter, value: &[u8]) -> Result<()> {
        debug_assert_eq!(value.len(), self.value_size);
        let at = ARRAY_HEADER_SIZE + self.nr * self.value_size;
        self.block[at..at + self.value_size].copy_from_slice(value);
        self.nr += 1;
        self.len += 1;
        if self.nr == self.max {
            self.emit(w)?;
        }
        Ok(())
    }

    /// Appends `n` all-zero values (the default of every array in use:
    /// unmapped cache blocks, zero hints, clear bitset words).
    pub fn push_zeros(&mut self, w: &mut MetadataWriter, mut n: u64) -> Result<()> {
        while n > 0 {
            // The current block's unused values are zero already.
            let take = ((self.max - self.nr) as u64).min(n) as usize;
            self.nr += take;
            self.len += take as u64;
            n -= take as u64;
            if self.nr == self.max {
                self.emit(w)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, w: &mut MetadataWriter) -> Result<()> {
        let b = w.alloc()?;
        let block = &mut self.block;
        block[..ARRAY_HEADER_SIZE].fill(0);
        block[MAX_ENTRIES_OFFSET..MAX_ENTRIES_OFFSET + 4]
            .copy_from_slice(&(self.max as u32).to_le_bytes());
        block[NR_ENTRIES_OFFSET..NR_ENTRIES_OFFSET + 4]
            .copy_from_slice(&(self.nr as u32).to_le_bytes());
        block[VALUE_SIZE_OFFSET..VALUE_SIZE_OFFSET + 4]
            .copy_from_slice(&(self.value_size as u32).to_le_bytes());
        w.write(b, block, BlockKind::Array)?;
        w.refs.inc(b);
        self.index.push(w, self.next_index, &b.to_le_bytes())?;
        self.next_index += 1;
        // The next block starts from zeros.
        let used = ARRAY_HEADER_SIZE + self.nr * self.value_size;
        self.block[..used].fill(0);
        self.nr = 0;
        Ok(())
    }

    /// Writes what is pending and the index; returns the index root (an
    /// empty leaf for an empty array).
    pub fn finish(mut self, w: &mut MetadataWriter) -> Result<u64> {
        if self.nr > 0 {
            self.emit(w)?;
        }
        self.index.flush(w)?;
        build_root(w, self.index.written, INDEX_VALUE_SIZE)
    }
}

/// Metadata blocks an array of `len` entries takes: its array blocks and
/// its index nodes (for sizing an output before writing).
pub fn blocks_needed(len: u64, value_size: u32) -> u64 {
    let blocks = blocks_for(len, value_size);
    blocks + nodes_for(blocks, INDEX_VALUE_SIZE)
}

/// Writes a whole array of `values` (each `value_size` bytes).
pub fn build_array<'v>(
    w: &mut MetadataWriter,
    value_size: u32,
    values: impl IntoIterator<Item = &'v [u8]>,
) -> Result<u64> {
    let mut a = ArrayBuilder::new(value_size);
    for v in values {
        a.push(w, v)?;
    }
    a.finish(w)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::io::sink::BlockSink;
    use crate::io::BlockSource;
    use crate::pdata::array::view::{read_index, ArrayView};
    use crate::pdata::block_hash::BlockMap;
    use crate::pdata::btree::node::NodeView;
    use std::path::Path;

    fn built(len: u64, value_size: u32, f: impl Fn(u64) -> Vec<u8>) -> (Vec<u8>, u64) {
        let nr_blocks = blocks_needed(len, value_size) + 2;
        crate::pdata::array::testing::write_image(nr_blocks, |w| {
            let mut a = ArrayBuilder::new(value_size);
            for i in 0..len {
                let v = f(i);
                if v.iter().all(|&x| x == 0) {
                    a.push_zeros(w, 1).unwrap();
                } else {
                    a.push(w, &v).unwrap();
                }
            }
            assert_eq!(a.len(), len);
            let root = a.finish(w).unwrap();
            let used = w.used();
            // Every block but the root has exactly one reference.
            for b in 1..used {
                assert_eq!(w.refs.get(b), (b != root) as u32, "block {b}");
            }
            assert_eq!(used - 1, blocks_needed(len, value_size), "{len} entries");
            root
        })
    }

    #[test]
    fn arrays_read_back_entry_for_entry() {
        for (len, vs) in [
            (0u64, 8u32),
            (1, 8),
            (509, 8),
            (510, 8),
            (1100, 8),
            (5000, 4),
            (130_000, 8),
        ] {
            let value = |i: u64| -> Vec<u8> {
                let x = if i.is_multiple_of(7) { 0 } else { i * 3 + 1 };
                x.to_le_bytes()[..vs as usize].to_vec()
            };
            let (image, root) = built(len, vs, value);
            let src = BlockSource::from_bytes(&image, Path::new("built")).unwrap();
            let view = ArrayView::read(&src, "built", root, vs, Some(len));
            assert!(view.is_intact(), "{len}: {:?}", view.first_problem());
            let mut n = 0;
            for (i, v) in view.entries() {
                assert_eq!(v, &value(i)[..], "entry {i} of {len}");
                n += 1;
            }
            assert_eq!(n, len);
        }
    }

    /// A sink that keeps only btree nodes, so arrays of tens of thousands
    /// of blocks can be built to look at the shape of their index.
    struct NodesOnly(BlockMap<Vec<u8>>);

    impl BlockSink for NodesOnly {
        fn write_block(&mut self, b: u64, data: &[u8]) -> std::io::Result<()> {
            if crate::io::checksum::kind_of(data) == Some(BlockKind::BtreeNode) {
                self.0.insert(b, data.to_vec());
            }
            Ok(())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// (flags, nr_entries) from the root to the leftmost leaf.
    fn shape_of_index(nr_array_blocks: u64) -> Vec<(u32, u32)> {
        let len = nr_array_blocks * 509;
        let limit = blocks_needed(len, 8) + 2;
        let mut sink = NodesOnly(BlockMap::default());
        let mut w = MetadataWriter::new(&mut sink, 1, limit);
        let mut a = ArrayBuilder::new(8);
        a.push_zeros(&mut w, len).unwrap();
        let mut b = a.finish(&mut w).unwrap();
        drop(w);
        let mut shape = Vec::new();
        loop {
            let node = NodeView::new(&sink.0[&b]);
            shape.push((node.flags(), node.nr_entries()));
            if node.is_leaf() {
                return shape;
            }
            b = node.value_u64(0);
        }
    }

    #[test]
    fn index_depth_at_the_two_to_three_level_boundary() {
        // The depths the reference tools reach at these sizes
        // (format-cache-era §6.4; they split the last two leaves 126/127,
        // this builder 127/126).
        assert_eq!(shape_of_index(252), vec![(2, 252)]);
        assert_eq!(shape_of_index(253), vec![(1, 2), (2, 127)]);
        assert_eq!(shape_of_index(63_504), vec![(1, 252), (2, 252)]);
        assert_eq!(shape_of_index(63_505), vec![(1, 2), (1, 127), (2, 252)]);
    }

    #[test]
    fn a_three_level_index_reads_back_in_order() {
        // 63,505 array blocks indexed in three levels. Only the nodes are
        // kept, in a sparse file: the pointers come back in key order,
        // each exactly once.
        use std::os::unix::fs::FileExt;
        let len = 63_505 * 509u64;
        let limit = blocks_needed(len, 8) + 2;
        let mut sink = NodesOnly(BlockMap::default());
        let mut w = MetadataWriter::new(&mut sink, 1, limit);
        let mut a = ArrayBuilder::new(8);
        a.push_zeros(&mut w, len).unwrap();
        let root = a.finish(&mut w).unwrap();
        drop(w);
        let dir = std::env::temp_dir().join(format!("dmpd-deep-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("index.bin");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(limit * BLOCK_SIZE as u64).unwrap();
        for (b, data) in &sink.0 {
            f.write_all_at(data, b * BLOCK_SIZE as u64).unwrap();
        }
        let src = BlockSource::open(&path, Default::default()).unwrap();
        let (pointers, damage) = read_index(&src, "deep", root);
        assert!(damage.is_empty(), "{damage:?}");
        assert_eq!(pointers.len(), 63_505);
        assert!(pointers.iter().enumerate().all(|(i, p)| p.0 == i as u64));

        // The checking walk goes through the same three levels: every
        // index node sound, every array block reached and counted once
        // (their contents were not kept, so each fails its checksum).
        let refs = crate::pdata::refcount::RefCounter::for_metadata(src.nr_blocks());
        let walker = crate::pdata::btree::walk::Walker::new(&src, &refs, true);
        let out = crate::pdata::array::walk::walk_arrays(
            &walker,
            &[crate::pdata::array::walk::ArrayWalk {
                name: "deep".into(),
                root,
                value_size: 8,
                len,
                visitor: &crate::pdata::array::walk::AnyValues,
            }],
        );
        drop(walker);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out[0].index_damage.is_empty(), "{:?}", out[0].index_damage);
        assert_eq!(out[0].damage.len(), 63_505);
        assert!(pointers.iter().all(|(_, b)| refs.get(*b) == 1));
        assert!(sink.0.keys().all(|b| refs.get(*b) == 1));
    }
}
