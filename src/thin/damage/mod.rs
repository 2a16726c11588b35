//! Damaging metadata images on purpose, precisely: find a structure
//! through the library's own views, change one thing, fix every checksum
//! touched, so that only the named inconsistency remains. For tests, the
//! damage matrix and the thin_generate_damage developer tool.

mod delete;
mod kinds;

pub use kinds::{Applied, AtRisk, Damage, Severity, STALE_LEAKS};

use std::path::Path;

use crate::io::checksum::{seal, BlockKind};
use crate::io::BlockSource;
use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::node::NODE_HEADER_SIZE;
use crate::pdata::btree::walk::read_entries;
use crate::pdata::space_map::bitmap::{self, IndexEntry, ENTRIES_PER_BITMAP, OVERFLOW};
use crate::thin::superblock::Superblock;

pub const BS: usize = 4096;

pub struct Image {
    pub bytes: Vec<u8>,
}

impl Image {
    pub fn new(bytes: Vec<u8>) -> Image {
        Image { bytes }
    }

    pub fn block(&self, b: u64) -> &[u8] {
        &self.bytes[b as usize * BS..(b as usize + 1) * BS]
    }

    pub fn block_mut(&mut self, b: u64) -> &mut [u8] {
        &mut self.bytes[b as usize * BS..(b as usize + 1) * BS]
    }

    pub fn superblock(&self) -> Superblock {
        Superblock::parse(self.block(0))
    }

    pub fn set_superblock(&mut self, sb: &Superblock) {
        // Keep bytes beyond the known fields as they are.
        let new = sb.to_block();
        self.block_mut(0)[..512].copy_from_slice(&new[..512]);
        seal(self.block_mut(0), BlockKind::ThinSuperblock);
    }

    fn source(&self) -> BlockSource {
        BlockSource::from_bytes(&self.bytes, Path::new("test image")).unwrap()
    }

    /// (device id, subtree root) from the live top-level tree.
    pub fn device_roots(&self) -> Vec<(u64, u64)> {
        let src = self.source();
        read_entries(&src, self.superblock().mapping_root, 8)
            .into_iter()
            .map(|(k, v)| (k, u64::from_le_bytes(v.try_into().unwrap())))
            .collect()
    }

    /// The leftmost leaf under `root`.
    pub fn first_leaf(&self, mut root: u64) -> u64 {
        loop {
            let node = NodeView::new(self.block(root));
            if node.is_leaf() {
                return root;
            }
            root = node.value_u64(0);
        }
    }

    pub fn reseal_node(&mut self, b: u64) {
        seal(self.block_mut(b), BlockKind::BtreeNode);
    }

    fn put_u32(&mut self, b: u64, off: usize, v: u32) {
        self.block_mut(b)[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u64(&mut self, b: u64, off: usize, v: u64) {
        self.block_mut(b)[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_nr_entries(&mut self, node: u64, n: u32) {
        self.put_u32(node, 16, n);
        self.reseal_node(node);
    }

    /// Swaps entries i and j (keys and values) of a node with 8-byte values.
    pub fn swap_entries(&mut self, node: u64, i: usize, j: usize) {
        let max = NodeView::new(self.block(node)).max_entries() as usize;
        let b = self.block_mut(node);
        for base in [32usize, 32 + max * 8] {
            let (x, y) = (base + i * 8, base + j * 8);
            let tmp: [u8; 8] = b[x..x + 8].try_into().unwrap();
            b.copy_within(y..y + 8, x);
            b[y..y + 8].copy_from_slice(&tmp);
        }
        self.reseal_node(node);
    }

    /// Overwrites the 8-byte value of entry i of a node.
    pub fn set_value_u64(&mut self, node: u64, i: usize, v: u64) {
        let max = NodeView::new(self.block(node)).max_entries() as usize;
        self.put_u64(node, 32 + max * 8 + i * 8, v);
        self.reseal_node(node);
    }

    /// The metadata space map's index entry for bitmap `i`.
    fn metadata_index(&self, i: usize) -> (u64, IndexEntry) {
        let index = self.superblock().metadata_sm_root.bitmap_root;
        (index, bitmap::metadata_index_entry(self.block(index), i))
    }

    /// (index entries' location, index entry) of the data map's bitmap i:
    /// the leaf holding it and the entry number in that leaf.
    fn data_index(&self, i: u64) -> (u64, usize, IndexEntry) {
        let mut node_b = self.superblock().data_sm_root.bitmap_root;
        loop {
            let node = NodeView::new(self.block(node_b));
            let n = node.nr_entries();
            let pos = (0..n).rev().find(|&e| node.key(e) <= i).unwrap();
            if node.is_leaf() {
                assert_eq!(node.key(pos), i);
                return (node_b, pos as usize, IndexEntry::parse(node.value(pos)));
            }
            node_b = node.value_u64(pos);
        }
    }

    /// The stored 2-bit count of a block in the metadata or data map.
    pub fn stored_count(&self, data: bool, b: u64) -> u8 {
        let i = b / ENTRIES_PER_BITMAP;
        let bm = if data {
            self.data_index(i).2.blocknr
        } else {
            self.metadata_index(i as usize).1.blocknr
        };
        bitmap::entry(self.block(bm), b % ENTRIES_PER_BITMAP)
    }

    /// Sets the stored count of block `b`, keeping nr_free, none_free_before
    /// and nr_allocated consistent with the new bitmap, so the only
    /// inconsistency is the count itself.
    pub fn set_stored_count(&mut self, data: bool, b: u64, count: u8) {
        let i = b / ENTRIES_PER_BITMAP;
        let old = self.stored_count(data, b);
        let (ie, loc) = if data {
            let (leaf, pos, ie) = self.data_index(i);
            (ie, (leaf, pos))
        } else {
            let (index, ie) = self.metadata_index(i as usize);
            (ie, (index, i as usize))
        };
        let bm = ie.blocknr;
        bitmap::set_entry(self.block_mut(bm), b % ENTRIES_PER_BITMAP, count);
        seal(self.block_mut(bm), BlockKind::Bitmap);

        let delta: i64 = match (old == 0, count == 0) {
            (true, false) => -1,
            (false, true) => 1,
            _ => 0,
        };
        let mut new_ie = ie;
        new_ie.nr_free = (ie.nr_free as i64 + delta) as u32;
        if count == 0 {
            new_ie.none_free_before = new_ie.none_free_before.min((b % ENTRIES_PER_BITMAP) as u32);
        }
        let (where_b, pos) = loc;
        if data {
            let max = NodeView::new(self.block(where_b)).max_entries() as usize;
            let off = 32 + max * 8 + pos * 16;
            new_ie.write(&mut self.block_mut(where_b)[off..off + 16]);
            self.reseal_node(where_b);
        } else {
            let off = 16 + pos * 16;
            new_ie.write(&mut self.block_mut(where_b)[off..off + 16]);
            seal(self.block_mut(where_b), BlockKind::Index);
        }
        let mut sb = self.superblock();
        let root = if data {
            &mut sb.data_sm_root
        } else {
            &mut sb.metadata_sm_root
        };
        root.nr_allocated = (root.nr_allocated as i64 - delta) as u64;
        self.set_superblock(&sb);
    }

    /// The first block of a map with the given stored count.
    pub fn find_block_with_count(&self, data: bool, count: u8) -> u64 {
        self.try_find_block_with_count(data, count)
            .expect("no block with that count")
    }

    pub fn try_find_block_with_count(&self, data: bool, count: u8) -> Option<u64> {
        let sb = self.superblock();
        let n = if data {
            sb.data_sm_root.nr_blocks
        } else {
            sb.metadata_sm_root.nr_blocks
        };
        (0..n).find(|&b| self.stored_count(data, b) == count)
    }

    pub fn write_to(&self, path: &Path) {
        std::fs::write(path, &self.bytes).unwrap();
    }

    /// The leftmost internal node of any device tree, if there is one.
    fn an_internal_node(&self) -> Option<u64> {
        self.device_roots()
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| !NodeView::new(self.block(*r)).is_leaf())
    }

    /// The first node whose stored metadata count is in `counts`.
    fn a_node_counted(&self, counts: std::ops::RangeInclusive<u8>) -> Option<u64> {
        let n = self.superblock().metadata_sm_root.nr_blocks;
        (0..n).find(|&b| {
            counts.contains(&self.stored_count(false, b))
                && crate::io::checksum::kind_of(self.block(b)) == Some(BlockKind::BtreeNode)
        })
    }

    /// A node with a stored count of 1 (the first device's first leaf).
    fn first_leaf_of_first_device(&self) -> Option<u64> {
        let (_, root) = *self.device_roots().first()?;
        Some(self.first_leaf(root))
    }

    pub fn node(&self, b: u64) -> NodeView<'_> {
        NodeView::new(self.block(b))
    }

    /// An internal node of a device tree whose children are leaves, with
    /// at least two of them: the first device's, else any device's.
    fn bottom_internal_node(&self) -> Option<u64> {
        for (_, root) in self.device_roots() {
            let mut b = root;
            loop {
                let node = self.node(b);
                if node.is_leaf() {
                    break;
                }
                let child = node.value_u64(0);
                if self.node(child).is_leaf() {
                    if node.nr_entries() >= 2 {
                        return Some(b);
                    }
                    break;
                }
                b = child;
            }
        }
        None
    }

    pub fn set_key(&mut self, node: u64, i: usize, key: u64) {
        self.put_u64(node, NODE_HEADER_SIZE + i * 8, key);
        self.reseal_node(node);
    }

    /// Removes entry `i` of a node, closing the gap.
    pub fn remove_entry(&mut self, node: u64, i: usize) {
        let v = self.node(node);
        let (n, max, vs) = (
            v.nr_entries() as usize,
            v.max_entries() as usize,
            v.value_size() as usize,
        );
        let b = self.block_mut(node);
        let keys = NODE_HEADER_SIZE;
        b.copy_within(keys + (i + 1) * 8..keys + n * 8, keys + i * 8);
        let values = keys + max * 8;
        b.copy_within(values + (i + 1) * vs..values + n * vs, values + i * vs);
        self.set_nr_entries(node, n as u32 - 1);
    }

    /// Copies node `from` to block `to`, recording its new location.
    fn copy_node(&mut self, from: u64, to: u64) {
        let content = self.block(from).to_vec();
        self.block_mut(to).copy_from_slice(&content);
        self.put_u64(to, 8, to);
        self.reseal_node(to);
    }

    fn ref_count_root(&self, data: bool) -> u64 {
        let sb = self.superblock();
        if data {
            sb.data_sm_root.ref_count_root
        } else {
            sb.metadata_sm_root.ref_count_root
        }
    }

    /// The ref-count tree leaf and entry holding block `b`'s count.
    fn ref_count_entry(&self, data: bool, b: u64) -> Option<(u64, u32)> {
        let mut node_b = self.ref_count_root(data);
        loop {
            let node = self.node(node_b);
            let n = node.nr_entries();
            let pos = (0..n).rev().find(|&e| node.key(e) <= b)?;
            if node.is_leaf() {
                return (node.key(pos) == b).then_some((node_b, pos));
            }
            node_b = node.value_u64(pos);
        }
    }

    /// The exact count of block `b` in the data or metadata space map.
    pub fn count(&self, data: bool, b: u64) -> u32 {
        match self.stored_count(data, b) {
            OVERFLOW => self
                .ref_count_entry(data, b)
                .map_or(3, |(leaf, i)| self.node(leaf).value_u32(i)),
            c => c as u32,
        }
    }

    /// Sets the exact count of block `b`, keeping the counters and the
    /// ref-count tree consistent. Counts may not newly reach three.
    pub fn set_count(&mut self, data: bool, b: u64, count: u32) -> Result<(), String> {
        let old = self.count(data, b);
        if old == count {
            return Ok(());
        }
        match (old >= 3, count >= 3) {
            (false, false) => self.set_stored_count(data, b, count as u8),
            (true, true) => {
                let (leaf, i) = self
                    .ref_count_entry(data, b)
                    .ok_or(format!("block {b}: no ref-count entry"))?;
                let max = self.node(leaf).max_entries() as usize;
                let off = NODE_HEADER_SIZE + max * 8 + i as usize * 4;
                self.block_mut(leaf)[off..off + 4].copy_from_slice(&count.to_le_bytes());
                self.reseal_node(leaf);
            }
            (true, false) => {
                self.set_stored_count(data, b, count as u8);
                // The kernel drops the ref-count entry; a lone root leaf
                // may shrink freely, a deeper tree's leaves must stay a
                // third full, so there the stale entry stays (unread).
                if let Some((leaf, i)) = self.ref_count_entry(data, b) {
                    let node = self.node(leaf);
                    if leaf == self.ref_count_root(data)
                        || node.nr_entries() > node.max_entries() / 3
                    {
                        self.remove_entry(leaf, i as usize);
                    }
                }
            }
            (false, true) => return Err(format!("block {b}: cannot raise a count to {count}")),
        }
        Ok(())
    }

    /// A free metadata block, now counted once.
    fn allocate(&mut self) -> Option<u64> {
        let b = (1..self.superblock().metadata_sm_root.nr_blocks)
            .find(|&b| self.stored_count(false, b) == 0)?;
        self.set_stored_count(false, b, 1);
        Some(b)
    }

    /// A free metadata block whose checksum is no block kind's (the
    /// kernel leaves old nodes and space-map blocks in free blocks).
    fn free_non_node(&self) -> Option<u64> {
        (1..self.superblock().metadata_sm_root.nr_blocks).find(|&b| {
            self.stored_count(false, b) == 0
                && crate::io::checksum::kind_of(self.block(b)).is_none()
        })
    }

    /// Drops one reference to the node at `b`, as the kernel's btree
    /// delete does: the last reference going releases its children, or a
    /// leaf's data blocks.
    pub fn release_node(&mut self, b: u64) -> Result<(), String> {
        let c = self.count(false, b);
        if c == 0 {
            return Err(format!("node {b} is already free"));
        }
        self.set_count(false, b, c - 1)?;
        if c > 1 {
            return Ok(());
        }
        let node = self.node(b);
        let values: Vec<u64> = (0..node.nr_entries()).map(|i| node.value_u64(i)).collect();
        if node.is_leaf() {
            for v in values {
                let d = crate::thin::block_time::BlockTime::unpack(v).block;
                let c = self.count(true, d);
                if c > 0 {
                    self.set_count(true, d, c - 1)?;
                }
            }
        } else {
            for child in values {
                self.release_node(child)?;
            }
        }
        Ok(())
    }

    /// Sets a bitmap entry alone, leaving the index entry and the
    /// superblock's nr_allocated as they were.
    fn set_bitmap_entry_only(&mut self, b: u64, count: u8) {
        let (_, ie) = self.metadata_index((b / ENTRIES_PER_BITMAP) as usize);
        bitmap::set_entry(self.block_mut(ie.blocknr), b % ENTRIES_PER_BITMAP, count);
        seal(self.block_mut(ie.blocknr), BlockKind::Bitmap);
    }
}
