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
    pub refs: RefCounter,
}

impl<'a> MetadataWriter<'a> {
    /// Blocks from `first` up to `limit` (exclusive) are available.
    pub fn new(sink: &'a mut dyn BlockSink, first: u64, limit: u64) -> MetadataWriter<'a> {
        MetadataWriter {
            sink,
            next: first,
            limit,
            refs: RefCounter::for_metadata(limit),
        }
    }

    pub fn alloc(&mut self) -> Result<u64> {
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

    /// Seals `data` as `kind` at block `b` and writes it.
    pub fn write(&mut self, b: u64, mut data: Vec<u8>, kind: BlockKind) -> Result<()> {
        data[8..16].copy_from_slice(&b.to_le_bytes());
        seal(&mut data, kind);
        self.sink.write_block(b, &data)?;
        Ok(())
    }

    pub fn sink(&mut self) -> &mut dyn BlockSink {
        self.sink
    }
}

/// Entries of one node being filled.
#[derive(Default)]
struct NodeBuf {
    keys: Vec<u64>,
    values: Vec<u8>,
}

impl NodeBuf {
    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Lays out a node block.
fn node_block(flags: u32, value_size: u32, keys: &[u64], values: &[u8]) -> Vec<u8> {
    let max = max_entries_for(value_size as usize);
    let mut b = vec![0u8; BLOCK_SIZE];
    b[4..8].copy_from_slice(&flags.to_le_bytes());
    b[16..20].copy_from_slice(&(keys.len() as u32).to_le_bytes());
    b[20..24].copy_from_slice(&max.to_le_bytes());
    b[24..28].copy_from_slice(&value_size.to_le_bytes());
    for (i, k) in keys.iter().enumerate() {
        let off = NODE_HEADER_SIZE + i * KEY_SIZE;
        b[off..off + 8].copy_from_slice(&k.to_le_bytes());
    }
    let voff = NODE_HEADER_SIZE + max as usize * KEY_SIZE;
    b[voff..voff + values.len()].copy_from_slice(values);
    b
}

/// Streams sorted entries into nodes of one level.
pub struct LevelBuilder {
    flags: u32,
    value_size: u32,
    max: usize,
    held: Option<NodeBuf>,
    current: NodeBuf,
    /// (first key, block) of the nodes written.
    pub written: Vec<(u64, u64)>,
}

impl LevelBuilder {
    pub fn leaves(value_size: u32) -> LevelBuilder {
        Self::new(LEAF_NODE, value_size)
    }

    fn new(flags: u32, value_size: u32) -> LevelBuilder {
        LevelBuilder {
            flags,
            value_size,
            max: max_entries_for(value_size as usize) as usize,
            held: None,
            current: NodeBuf::default(),
            written: Vec::new(),
        }
    }

    pub fn push(&mut self, w: &mut MetadataWriter, key: u64, value: &[u8]) -> Result<()> {
        debug_assert_eq!(value.len(), self.value_size as usize);
        if self.current.len() == self.max {
            if let Some(full) = self.held.take() {
                self.emit(w, full)?;
            }
            self.held = Some(std::mem::take(&mut self.current));
        }
        self.current.keys.push(key);
        self.current.values.extend_from_slice(value);
        Ok(())
    }

    fn emit(&mut self, w: &mut MetadataWriter, node: NodeBuf) -> Result<()> {
        let b = w.alloc()?;
        if self.flags == INTERNAL_NODE {
            for chunk in node.values.chunks(8) {
                w.refs.inc(u64::from_le_bytes(chunk.try_into().unwrap()));
            }
        }
        let first = node.keys[0];
        w.write(
            b,
            node_block(self.flags, self.value_size, &node.keys, &node.values),
            BlockKind::BtreeNode,
        )?;
        self.written.push((first, b));
        Ok(())
    }

    /// Writes what is pending, sharing entries between the last two nodes
    /// if the last would be under a third full.
    pub fn flush(&mut self, w: &mut MetadataWriter) -> Result<()> {
        let mut current = std::mem::take(&mut self.current);
        if let Some(mut held) = self.held.take() {
            if current.len() < self.max / 3 {
                let total = held.len() + current.len();
                let keep = total.div_ceil(2);
                let vs = self.value_size as usize;
                let mut moved = NodeBuf {
                    keys: held.keys.split_off(keep),
                    values: held.values.split_off(keep * vs),
                };
                moved.keys.extend_from_slice(&current.keys);
                moved.values.extend_from_slice(&current.values);
                current = moved;
            }
            self.emit(w, held)?;
        }
        if current.len() > 0 {
            self.emit(w, current)?;
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
            node_block(LEAF_NODE, leaf_value_size, &[], &[]),
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
