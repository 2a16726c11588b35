//! Damaging metadata images on purpose, precisely: find a structure
//! through the library's own views, change one thing, fix every checksum
//! touched, so that only the named inconsistency remains. For tests, the
//! damage matrix and the thin_generate_damage developer tool.

use std::path::Path;

use crate::io::checksum::{seal, BlockKind};
use crate::io::BlockSource;
use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::read_entries;
use crate::pdata::space_map::bitmap::{self, IndexEntry, ENTRIES_PER_BITMAP};
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
}

/// The damages this module can make, each leaving exactly one kind of
/// inconsistency (named after the kernel bug signature where there is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    NodeChecksum,
    LeakedMetadataBlock,
    UnderCountedSharedNode,
    OverCountedNode,
    LeakedDataBlock,
    UnderCountedDataBlock,
    SwappedKeys,
    NrEntriesOverMax,
    DataBlockBeyondEnd,
    ChildBeyondDevice,
    SuperblockChecksum,
    WrongMappedBlocks,
    DeviceMissingFromTopLevel,
    BitmapChecksum,
    WrongNodeBlocknr,
}

impl Damage {
    pub const ALL: [Damage; 15] = [
        Damage::NodeChecksum,
        Damage::LeakedMetadataBlock,
        Damage::UnderCountedSharedNode,
        Damage::OverCountedNode,
        Damage::LeakedDataBlock,
        Damage::UnderCountedDataBlock,
        Damage::SwappedKeys,
        Damage::NrEntriesOverMax,
        Damage::DataBlockBeyondEnd,
        Damage::ChildBeyondDevice,
        Damage::SuperblockChecksum,
        Damage::WrongMappedBlocks,
        Damage::DeviceMissingFromTopLevel,
        Damage::BitmapChecksum,
        Damage::WrongNodeBlocknr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Damage::NodeChecksum => "node-checksum",
            Damage::LeakedMetadataBlock => "leaked-metadata-block",
            Damage::UnderCountedSharedNode => "under-counted-shared-node",
            Damage::OverCountedNode => "over-counted-node",
            Damage::LeakedDataBlock => "leaked-data-block",
            Damage::UnderCountedDataBlock => "under-counted-data-block",
            Damage::SwappedKeys => "swapped-keys",
            Damage::NrEntriesOverMax => "nr-entries-over-max",
            Damage::DataBlockBeyondEnd => "data-block-beyond-end",
            Damage::ChildBeyondDevice => "child-beyond-device",
            Damage::SuperblockChecksum => "superblock-checksum",
            Damage::WrongMappedBlocks => "wrong-mapped-blocks",
            Damage::DeviceMissingFromTopLevel => "device-missing-from-top-level",
            Damage::BitmapChecksum => "bitmap-checksum",
            Damage::WrongNodeBlocknr => "wrong-node-blocknr",
        }
    }

    pub fn from_name(name: &str) -> Option<Damage> {
        Damage::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Leaks (stored counts above the references) endanger no data.
    pub fn is_leak(self) -> bool {
        matches!(
            self,
            Damage::LeakedMetadataBlock | Damage::OverCountedNode | Damage::LeakedDataBlock
        )
    }

    /// Applies the damage; returns the block it is at.
    pub fn apply(self, image: &mut Image) -> Result<u64, String> {
        let none = |what: &str| format!("{}: the image has no {what}", self.name());
        let leaf = image
            .first_leaf_of_first_device()
            .ok_or_else(|| none("device"))?;
        Ok(match self {
            Damage::NodeChecksum => {
                image.block_mut(leaf)[2000] ^= 0x40;
                leaf
            }
            Damage::LeakedMetadataBlock => {
                let b = image
                    .try_find_block_with_count(false, 0)
                    .ok_or_else(|| none("free metadata block"))?;
                image.set_stored_count(false, b, 1);
                b
            }
            Damage::UnderCountedSharedNode => {
                let b = image
                    .a_node_counted(2..=3)
                    .ok_or_else(|| none("shared node"))?;
                image.set_stored_count(false, b, 1);
                b
            }
            Damage::OverCountedNode => {
                let b = image
                    .a_node_counted(1..=1)
                    .ok_or_else(|| none("unshared node"))?;
                image.set_stored_count(false, b, 2);
                b
            }
            Damage::LeakedDataBlock => {
                let b = image
                    .try_find_block_with_count(true, 0)
                    .ok_or_else(|| none("free data block"))?;
                image.set_stored_count(true, b, 1);
                b
            }
            Damage::UnderCountedDataBlock => {
                // A block two leaves share loses one count; failing that,
                // a used block is marked free (the FILO bug's two faces).
                match image.try_find_block_with_count(true, 2) {
                    Some(b) => {
                        image.set_stored_count(true, b, 1);
                        b
                    }
                    None => {
                        let b = image
                            .try_find_block_with_count(true, 1)
                            .ok_or_else(|| none("used data block"))?;
                        image.set_stored_count(true, b, 0);
                        b
                    }
                }
            }
            Damage::SwappedKeys => {
                if NodeView::new(image.block(leaf)).nr_entries() < 2 {
                    return Err(none("leaf with two entries"));
                }
                image.swap_entries(leaf, 0, 1);
                leaf
            }
            Damage::NrEntriesOverMax => {
                let max = NodeView::new(image.block(leaf)).max_entries();
                image.set_nr_entries(leaf, max + 1);
                leaf
            }
            Damage::DataBlockBeyondEnd => {
                let nr = image.superblock().data_sm_root.nr_blocks;
                image.set_value_u64(leaf, 0, (nr + 5) << 24);
                leaf
            }
            Damage::ChildBeyondDevice => {
                let node = image
                    .an_internal_node()
                    .ok_or_else(|| none("internal node"))?;
                let beyond = (image.bytes.len() / BS) as u64 + 1000;
                image.set_value_u64(node, 0, beyond);
                node
            }
            Damage::SuperblockChecksum => {
                image.block_mut(0)[1000] ^= 0xff;
                0
            }
            Damage::WrongMappedBlocks => {
                let details = image.superblock().details_root;
                if !NodeView::new(image.block(details)).is_leaf() {
                    return Err(none("single-leaf details tree"));
                }
                let max = NodeView::new(image.block(details)).max_entries() as usize;
                let off = 32 + max * 8;
                let v = u64::from_le_bytes(image.block(details)[off..off + 8].try_into().unwrap());
                image.block_mut(details)[off..off + 8].copy_from_slice(&(v + 1).to_le_bytes());
                image.reseal_node(details);
                details
            }
            Damage::DeviceMissingFromTopLevel => {
                let top = image.superblock().mapping_root;
                let node = NodeView::new(image.block(top));
                if !node.is_leaf() || node.nr_entries() == 0 {
                    return Err(none("single-leaf top-level tree"));
                }
                let n = node.nr_entries();
                image.set_nr_entries(top, n - 1);
                top
            }
            Damage::BitmapChecksum => {
                let index = image.superblock().metadata_sm_root.bitmap_root;
                let bm = bitmap::metadata_index_entry(image.block(index), 0).blocknr;
                image.block_mut(bm)[4000] ^= 0x01;
                bm
            }
            Damage::WrongNodeBlocknr => {
                image.block_mut(leaf)[8..16].copy_from_slice(&(leaf + 1).to_le_bytes());
                image.reseal_node(leaf);
                leaf
            }
        })
    }
}
