//! Editing metadata images in tests: find structures through the
//! library's own views, change one thing, fix the checksums touched, so
//! that only the intended inconsistency remains.

use std::path::Path;

use dmpd::io::checksum::{seal, BlockKind};
use dmpd::io::BlockSource;
use dmpd::pdata::btree::node::NodeView;
use dmpd::pdata::btree::walk::read_entries;
use dmpd::pdata::space_map::bitmap::{self, IndexEntry, ENTRIES_PER_BITMAP};
use dmpd::thin::superblock::Superblock;

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
        let sb = self.superblock();
        let n = if data {
            sb.data_sm_root.nr_blocks
        } else {
            sb.metadata_sm_root.nr_blocks
        };
        (0..n)
            .find(|&b| self.stored_count(data, b) == count)
            .expect("no block with that count")
    }

    pub fn write_to(&self, path: &Path) {
        std::fs::write(path, &self.bytes).unwrap();
    }
}
