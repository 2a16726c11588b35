//! Writing btrees bottom-up from sorted entries, as a restore or repair
//! does.
//!
//! Nodes are filled to capacity as entries stream in; the last full node
//! is held back so that, when a sequence ends, the last two nodes can
//! share their entries and neither ends up below a third full (the
//! checker's under-population rule). Internal levels are built over the
//! (first key, block) list of the level below in the same way. Every
//! child pointer written counts one reference to the child.

use anyhow::{bail, Result};

use crate::io::checksum::{seal, BlockKind};
use crate::io::sink::BlockSink;
use crate::io::BLOCK_SIZE;
use crate::pdata::btree::node::{
    max_entries_for, INTERNAL_NODE, KEY_SIZE, LEAF_NODE, NODE_HEADER_SIZE,
};
use crate::pdata::refcount::RefCounter;

/// Allocates metadata blocks in order and writes them through a sink,
/// keeping the reference count of every block it hands out.
pub struct MetadataWriter<'a> {
    sink: &'a mut dyn BlockSink,
    next: u64,
    limit: u64,
    /// Blocks never handed out: those of a transaction kept whole until
    /// the new superblock replaces it.
    avoid: Option<roaring::RoaringTreemap>,
    pub refs: RefCounter,
}

impl<'a> MetadataWriter<'a> {
    /// Blocks from `first` up to `limit` (exclusive) are available.
    pub fn new(sink: &'a mut dyn BlockSink, first: u64, limit: u64) -> MetadataWriter<'a> {
        MetadataWriter {
            sink,
            next: first,
            limit,
            avoid: None,
            refs: RefCounter::for_metadata(limit),
        }
    }

    /// A writer for new metadata of `needed` blocks (as
    /// `space_map::writer::blocks_needed` counts them) replacing whatever
    /// the `nr_blocks` blocks behind `sink` hold. Where the transaction
    /// there uses `keep` (`space_map::in_use`) and leaves room beside it,
    /// no block of it is handed out and block 0 is left alone until
    /// `commit`: a crash part way leaves the old transaction whole.
    /// Otherwise block 0 is zeroed and flushed first, so a crash leaves no
    /// valid superblock over half-written trees.
    pub fn replacing(
        sink: &'a mut dyn BlockSink,
        nr_blocks: u64,
        needed: u64,
        keep: Option<roaring::RoaringTreemap>,
    ) -> Result<MetadataWriter<'a>> {
        let keep = keep.filter(|k| needed + k.range_cardinality(1..nr_blocks) <= nr_blocks);
        Ok(match keep {
            Some(k) => MetadataWriter::new(sink, 1, nr_blocks).avoiding(k),
            None => {
                sink.write_block(0, &[0u8; BLOCK_SIZE])?;
                sink.flush()?;
                MetadataWriter::new(sink, 1, nr_blocks)
            }
        })
    }

    /// The commit point: flushes every block written, then writes the
    /// sealed `superblock` at block 0 and flushes again.
    pub fn commit(&mut self, superblock: &[u8]) -> Result<()> {
        self.sink.flush()?;
        crate::report::phases::phase("restore: flushed");
        self.sink.write_block(0, superblock)?;
        self.sink.flush()?;
        Ok(())
    }

    /// Hands out no block of `avoid`.
    pub fn avoiding(mut self, avoid: roaring::RoaringTreemap) -> MetadataWriter<'a> {
        self.avoid = Some(avoid);
        self
    }

    pub fn alloc(&mut self) -> Result<u64> {
        if let Some(avoid) = &self.avoid {
            while avoid.contains(self.next) {
                self.next += 1;
            }
        }
        if self.next >= self.limit {
            bail!(
                "out of metadata space: all {} metadata blocks are used",
                self.limit
            );
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Blocks handed out so far (including the reserved ones before `first`).
    pub fn used(&self) -> u64 {
        self.next
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Seals `data` as `kind` at block `b` and writes it. The block's
    /// self-location goes where its kind keeps it (array blocks at 16,
    /// everything else at 8).
    pub fn write(&mut self, b: u64, data: &mut [u8], kind: BlockKind) -> Result<()> {
        let at = kind.blocknr_offset();
        data[at..at + 8].copy_from_slice(&b.to_le_bytes());
        seal(data, kind);
        self.sink.write_block(b, data)?;
        Ok(())
    }

    pub fn sink(&mut self) -> &mut dyn BlockSink {
        self.sink
    }
}

/// One node being filled, laid out in place as its block: entries are
/// written where they will be read, and the block is reused once written.
struct NodeImage {
    block: Vec<u8>,
    len: usize,
}

impl NodeImage {
    fn new() -> NodeImage {
        NodeImage {
            block: vec![0u8; BLOCK_SIZE],
            len: 0,
        }
    }

    fn key(&self, i: usize) -> u64 {
        let off = NODE_HEADER_SIZE + i * KEY_SIZE;
        u64::from_le_bytes(self.block[off..off + 8].try_into().unwrap())
    }
}

/// An empty node block (the root of an empty tree).
fn empty_node_block(flags: u32, value_size: u32) -> Vec<u8> {
    let max = max_entries_for(value_size as usize);
    let mut b = vec![0u8; BLOCK_SIZE];
    b[4..8].copy_from_slice(&flags.to_le_bytes());
    b[20..24].copy_from_slice(&max.to_le_bytes());
    b[24..28].copy_from_slice(&value_size.to_le_bytes());
    b
}

/// Streams sorted entries into nodes of one level.
pub struct LevelBuilder {
    flags: u32,
    value_size: usize,
    max: usize,
    /// Where the values start in a node block.
    values_at: usize,
    held: Option<NodeImage>,
    current: NodeImage,
    spare: Vec<NodeImage>,
    /// (first key, block) of the nodes written.
    pub written: Vec<(u64, u64)>,
}

impl LevelBuilder {
    pub fn leaves(value_size: u32) -> LevelBuilder {
        Self::new(LEAF_NODE, value_size)
    }

    fn new(flags: u32, value_size: u32) -> LevelBuilder {
        let max = max_entries_for(value_size as usize) as usize;
        LevelBuilder {
            flags,
            value_size: value_size as usize,
            max,
            values_at: NODE_HEADER_SIZE + max * KEY_SIZE,
            held: None,
            current: NodeImage::new(),
            spare: Vec::new(),
            written: Vec::new(),
        }
    }

    fn fresh(&mut self) -> NodeImage {
        self.spare.pop().unwrap_or_else(NodeImage::new)
    }

    /// Copies entries `from` of `src` to the end of `dst`.
    fn append(&self, dst: &mut NodeImage, src: &NodeImage, from: std::ops::Range<usize>) {
        let n = from.len();
        let (ks, kd) = (
            NODE_HEADER_SIZE + from.start * KEY_SIZE,
            NODE_HEADER_SIZE + dst.len * KEY_SIZE,
        );
        dst.block[kd..kd + n * KEY_SIZE].copy_from_slice(&src.block[ks..ks + n * KEY_SIZE]);
        let vs = self.value_size;
        let (vsrc, vdst) = (
            self.values_at + from.start * vs,
            self.values_at + dst.len * vs,
        );
        dst.block[vdst..vdst + n * vs].copy_from_slice(&src.block[vsrc..vsrc + n * vs]);
        dst.len += n;
    }

    /// Makes room for an entry: a full current node is held back, and the
    /// one held before it written.
    #[inline]
    fn make_room(&mut self, w: &mut MetadataWriter) -> Result<()> {
        if self.current.len == self.max {
            if let Some(full) = self.held.take() {
                self.emit(w, full)?;
            }
            let next = self.fresh();
            self.held = Some(std::mem::replace(&mut self.current, next));
        }
        Ok(())
    }

    /// As `count` calls of `push` with keys from `first_key` up and the
    /// 8-byte values `value(0)`, `value(1)`, ..., filled a node at a time:
    /// a restore pushes tens of millions of entries from runs.
    pub fn push_run(
        &mut self,
        w: &mut MetadataWriter,
        first_key: u64,
        count: u64,
        value: impl Fn(u64) -> u64,
    ) -> Result<()> {
        assert_eq!(self.value_size, 8, "push_run writes 8-byte values");
        let mut i = 0;
        while i < count {
            self.make_room(w)?;
            let node = &mut self.current;
            let n = (self.max - node.len).min((count - i) as usize);
            let k = NODE_HEADER_SIZE + node.len * KEY_SIZE;
            for (j, key) in node.block[k..k + n * KEY_SIZE]
                .chunks_exact_mut(KEY_SIZE)
                .enumerate()
            {
                key.copy_from_slice(&(first_key + i + j as u64).to_le_bytes());
            }
            let v = self.values_at + node.len * 8;
            for (j, val) in node.block[v..v + n * 8].chunks_exact_mut(8).enumerate() {
                val.copy_from_slice(&value(i + j as u64).to_le_bytes());
            }
            node.len += n;
            i += n as u64;
        }
        Ok(())
    }

    #[inline]
    pub fn push(&mut self, w: &mut MetadataWriter, key: u64, value: &[u8]) -> Result<()> {
        debug_assert_eq!(value.len(), self.value_size);
        self.make_room(w)?;
        let node = &mut self.current;
        let k = NODE_HEADER_SIZE + node.len * KEY_SIZE;
        node.block[k..k + KEY_SIZE].copy_from_slice(&key.to_le_bytes());
        let v = self.values_at + node.len * self.value_size;
        node.block[v..v + self.value_size].copy_from_slice(value);
        node.len += 1;
        Ok(())
    }

    fn emit(&mut self, w: &mut MetadataWriter, mut node: NodeImage) -> Result<()> {
        let b = w.alloc()?;
        let (n, vs) = (node.len, self.value_size);
        if self.flags == INTERNAL_NODE {
            let values = &node.block[self.values_at..self.values_at + n * vs];
            for chunk in values.chunks_exact(8) {
                w.refs.inc(u64::from_le_bytes(chunk.try_into().unwrap()));
            }
        }
        let first = node.key(0);
        let block = &mut node.block;
        // Unused entries read as zeros, whatever a reused block held.
        block[NODE_HEADER_SIZE + n * KEY_SIZE..self.values_at].fill(0);
        block[self.values_at + n * vs..].fill(0);
        block[0..NODE_HEADER_SIZE].fill(0);
        block[4..8].copy_from_slice(&self.flags.to_le_bytes());
        block[16..20].copy_from_slice(&(n as u32).to_le_bytes());
        block[20..24].copy_from_slice(&(self.max as u32).to_le_bytes());
        block[24..28].copy_from_slice(&(vs as u32).to_le_bytes());
        w.write(b, block, BlockKind::BtreeNode)?;
        self.written.push((first, b));
        node.len = 0;
        self.spare.push(node);
        Ok(())
    }

    /// Writes what is pending, sharing entries between the last two nodes
    /// if the last would be under a third full.
    pub fn flush(&mut self, w: &mut MetadataWriter) -> Result<()> {
        let fresh = self.fresh();
        let mut current = std::mem::replace(&mut self.current, fresh);
        if let Some(mut held) = self.held.take() {
            if current.len < self.max / 3 {
                let total = held.len + current.len;
                let keep = total.div_ceil(2);
                let mut moved = self.fresh();
                self.append(&mut moved, &held, keep..held.len);
                self.append(&mut moved, &current, 0..current.len);
                held.len = keep;
                current.len = 0;
                self.spare.push(current);
                current = moved;
            }
            self.emit(w, held)?;
        }
        if current.len > 0 {
            self.emit(w, current)?;
        } else {
            self.spare.push(current);
        }
        Ok(())
    }

    /// Adds a node written elsewhere (a shared leaf), after what is
    /// pending. Its reference is counted by the parent that points at it.
    pub fn push_node(&mut self, w: &mut MetadataWriter, first_key: u64, block: u64) -> Result<()> {
        self.flush(w)?;
        self.written.push((first_key, block));
        Ok(())
    }
}

/// Builds the internal levels over `children` and returns the root (a
/// new empty leaf if there are no children). The root's own reference is
/// the caller's to count.
pub fn build_root(
    w: &mut MetadataWriter,
    mut children: Vec<(u64, u64)>,
    leaf_value_size: u32,
) -> Result<u64> {
    if children.is_empty() {
        let b = w.alloc()?;
        w.write(
            b,
            &mut empty_node_block(LEAF_NODE, leaf_value_size),
            BlockKind::BtreeNode,
        )?;
        return Ok(b);
    }
    while children.len() > 1 {
        let mut level = LevelBuilder::new(INTERNAL_NODE, 8);
        for (k, b) in &children {
            level.push(w, *k, &b.to_le_bytes())?;
        }
        level.flush(w)?;
        children = level.written;
    }
    Ok(children[0].1)
}

/// Writes a whole tree from sorted (key, value) entries.
pub fn build_tree<'v>(
    w: &mut MetadataWriter,
    value_size: u32,
    entries: impl IntoIterator<Item = (u64, &'v [u8])>,
) -> Result<u64> {
    let mut leaves = LevelBuilder::leaves(value_size);
    for (k, v) in entries {
        leaves.push(w, k, v)?;
    }
    leaves.flush(w)?;
    build_root(w, leaves.written, value_size)
}

/// Nodes a tree of `n` entries takes with this builder (for sizing an
/// output before writing anything).
pub fn nodes_for(n: u64, value_size: u32) -> u64 {
    let mut total = 0;
    let mut count = n
        .div_ceil(max_entries_for(value_size as usize) as u64)
        .max(1);
    total += count;
    let fanout = max_entries_for(8) as u64;
    while count > 1 {
        count = count.div_ceil(fanout);
        total += count;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sink::MemorySink;

    /// The image a leaf level of `runs` (first key, count) builds, pushed
    /// entry by entry or run by run.
    fn build(runs: &[(u64, u64)], by_run: bool) -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut image = vec![0u8; 64 * BLOCK_SIZE];
        let mut sink = MemorySink {
            image: &mut image,
            limit: None,
            writes: 0,
        };
        let mut w = MetadataWriter::new(&mut sink, 1, 64);
        let mut level = LevelBuilder::leaves(8);
        let value = |key: u64| key * 3 + 1;
        for &(first, count) in runs {
            if by_run {
                level
                    .push_run(&mut w, first, count, |i| value(first + i))
                    .unwrap();
            } else {
                for k in first..first + count {
                    level.push(&mut w, k, &value(k).to_le_bytes()).unwrap();
                }
            }
        }
        level.flush(&mut w).unwrap();
        let written = level.written.clone();
        drop(w);
        (image, written)
    }

    #[test]
    fn a_run_builds_what_its_entries_build_one_by_one() {
        let max = max_entries_for(8) as u64;
        // Runs that fill nodes exactly, cross node boundaries, leave a
        // last node below a third full, and are empty.
        for runs in [
            vec![(0, max)],
            vec![
                (0, 3),
                (10, max + 5),
                (2 * max + 20, 0),
                (3 * max, 2 * max + 7),
            ],
            vec![(5, 1), (7, 4 * max + 1)],
        ] {
            let (one_by_one, nodes) = build(&runs, false);
            let (by_run, run_nodes) = build(&runs, true);
            assert_eq!(nodes, run_nodes, "{runs:?}");
            assert!(one_by_one == by_run, "{runs:?}");
            assert!(!nodes.is_empty());
        }
    }
}
