//! Damaging cache metadata on purpose, precisely: find a structure
//! through the library's own views, change one thing, fix every checksum
//! touched (and the space map, where a block's references change), so
//! that only the named inconsistency remains. For tests, the damage
//! matrix and the cache_generate_damage developer tool.

use std::path::Path;

use crate::io::checksum::{seal, BlockKind};
use crate::io::{le_u64, BlockSource, BLOCK_SIZE};
use crate::pdata::array::view::read_index;
use crate::pdata::array::{max_entries_for, ARRAY_HEADER_SIZE};
use crate::pdata::bitset::WORD_SIZE;
use crate::pdata::btree::node::{NodeView, NODE_HEADER_SIZE};
use crate::pdata::space_map::bitmap::{self, ENTRIES_PER_BITMAP};

use super::hint::HINT_SIZE;
use super::mapping::{Mapping, DIRTY, MAPPING_SIZE};
use super::superblock::Superblock;

macro_rules! kinds {
    ($($kind:ident => $name:literal,)*) => {
        /// The damages the generator can make.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Damage {
            $($kind,)*
        }

        impl Damage {
            pub const ALL: &'static [Damage] = &[$(Damage::$kind,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Damage::$kind => $name,)*
                }
            }
        }
    };
}

kinds! {
    ArrayBlockChecksum => "array-block-checksum",
    ArrayBlockLocation => "array-block-location",
    ArrayNrEntriesOverMax => "array-nr-entries-over-max",
    ArrayIndexHole => "array-index-hole",
    OriginMappedTwice => "origin-mapped-twice",
    DirtyUnmapped => "dirty-unmapped",
    MetadataLeak => "metadata-leak",
    MetadataUnderCount => "metadata-under-count",
    SuperblockChecksum => "superblock-checksum",
    HintArrayShort => "hint-array-short",
}

/// Where a damage is, in cache_check's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The metadata block cache_check names.
    pub block: u64,
    /// The array block index concerned, if any.
    pub index: Option<u64>,
    /// The cache block(s) concerned, if any.
    pub cblocks: Vec<u64>,
    /// A second block concerned (the other mapping of an origin block).
    pub other_block: Option<u64>,
    /// The origin block concerned, if any.
    pub origin: Option<u64>,
}

impl Applied {
    fn at(block: u64) -> Applied {
        Applied {
            block,
            index: None,
            cblocks: Vec::new(),
            other_block: None,
            origin: None,
        }
    }
}

impl Damage {
    pub fn from_name(name: &str) -> Option<Damage> {
        Damage::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Whether cache_check's finding is non-fatal (repairable in place,
    /// or accepted with --ignore-non-fatal-errors).
    pub fn is_non_fatal(self) -> bool {
        matches!(self, Damage::MetadataLeak | Damage::HintArrayShort)
    }

    /// Applies the damage to `image`; says where it is.
    pub fn apply(self, image: &mut CacheImage) -> Result<Applied, String> {
        let none = |what: &str| format!("{}: the image has no {what}", self.name());
        let sb = image.superblock();
        match self {
            Damage::ArrayBlockChecksum => {
                let (k, b) = image
                    .array_block(sb.mapping_root, 0)
                    .ok_or_else(|| none("mapping array block"))?;
                image.block_mut(b)[ARRAY_HEADER_SIZE + 3] ^= 0x20;
                Ok(Applied {
                    index: Some(k),
                    ..Applied::at(b)
                })
            }
            Damage::ArrayBlockLocation => {
                let (k, b) = image
                    .array_block(sb.mapping_root, 0)
                    .ok_or_else(|| none("mapping array block"))?;
                image.put_u64(b, 16, b + 1000);
                seal(image.block_mut(b), BlockKind::Array);
                Ok(Applied {
                    index: Some(k),
                    ..Applied::at(b)
                })
            }
            Damage::ArrayNrEntriesOverMax => {
                let (k, b) = image
                    .array_block(sb.mapping_root, 0)
                    .ok_or_else(|| none("mapping array block"))?;
                let max = max_entries_for(MAPPING_SIZE);
                image.put_u32(b, 8, max + 1);
                seal(image.block_mut(b), BlockKind::Array);
                Ok(Applied {
                    index: Some(k),
                    ..Applied::at(b)
                })
            }
            Damage::ArrayIndexHole => {
                // Array block 1 (block 0 if there is no other) leaves the
                // index and is freed: only the hole remains.
                let pointers = image.pointers(sb.mapping_root);
                if pointers.len() < 2 {
                    return Err(none("mapping array of two array blocks"));
                }
                let (k, b) = pointers[1];
                let (leaf, pos) = image
                    .leaf_entry(sb.mapping_root, k)
                    .ok_or_else(|| none("index entry"))?;
                image.remove_entry(leaf, pos);
                image.set_stored_count(b, 0);
                Ok(Applied {
                    index: Some(k),
                    ..Applied::at(b)
                })
            }
            Damage::OriginMappedTwice => {
                let mapped = image.mapped(&sb);
                let (&(c1, m1, b1), &(c2, _, b2)) = match mapped.as_slice() {
                    [first, .., last] => (first, last),
                    _ => return Err(none("two mapped cache blocks")),
                };
                let old = Mapping::unpack(
                    image
                        .mapping_value(&sb, c2)
                        .ok_or_else(|| none("mapping"))?,
                );
                let new = Mapping {
                    origin: m1.origin,
                    flags: old.flags,
                };
                image.set_mapping_value(&sb, c2, new.pack());
                Ok(Applied {
                    cblocks: vec![c1, c2],
                    other_block: Some(b1),
                    origin: Some(m1.origin),
                    index: Some(c2 / max_entries_for(MAPPING_SIZE) as u64),
                    ..Applied::at(b2)
                })
            }
            Damage::DirtyUnmapped => {
                let c = image
                    .first_unmapped(&sb)
                    .ok_or_else(|| none("unmapped cache block"))?;
                match sb.dirty_root {
                    None => {
                        let b = image.set_mapping_value(&sb, c, DIRTY as u64);
                        Ok(Applied {
                            cblocks: vec![c],
                            index: Some(c / max_entries_for(MAPPING_SIZE) as u64),
                            ..Applied::at(b)
                        })
                    }
                    Some(root) => {
                        let per = max_entries_for(WORD_SIZE) as u64;
                        let word = c / 64;
                        let (_, b) = image
                            .array_block(root, word / per)
                            .ok_or_else(|| none("dirty bitset block"))?;
                        let off = ARRAY_HEADER_SIZE + ((word % per) * 8) as usize;
                        let v = le_u64(image.block(b), off) | 1 << (c % 64);
                        image.put_u64(b, off, v);
                        seal(image.block_mut(b), BlockKind::Array);
                        Ok(Applied {
                            cblocks: vec![c],
                            index: Some(word / per),
                            ..Applied::at(b)
                        })
                    }
                }
            }
            Damage::MetadataLeak => {
                let n = sb.metadata_sm_root.nr_blocks;
                let b = (1..n)
                    .find(|&b| image.stored_count(b) == 0)
                    .ok_or_else(|| none("free metadata block"))?;
                image.set_stored_count(b, 1);
                Ok(Applied::at(b))
            }
            Damage::MetadataUnderCount => {
                // Cache metadata shares nothing: every used block is counted
                // once, so the one under-count there is a used block marked
                // free (the next allocation would overwrite it).
                let (_, b) = image
                    .array_block(sb.mapping_root, 0)
                    .ok_or_else(|| none("mapping array block"))?;
                image.set_stored_count(b, 0);
                Ok(Applied::at(b))
            }
            Damage::SuperblockChecksum => {
                image.block_mut(0)[300] ^= 1;
                Ok(Applied::at(0))
            }
            Damage::HintArrayShort => {
                if !sb.has_hints() || sb.policy_hint_size != HINT_SIZE {
                    return Err(none("hint array"));
                }
                let pointers = image.pointers(sb.hint_root);
                let &(k, b) = pointers.last().ok_or_else(|| none("hint array block"))?;
                if pointers.len() >= 2 {
                    // The last array block leaves the index and is freed.
                    let (leaf, pos) = image
                        .leaf_entry(sb.hint_root, k)
                        .ok_or_else(|| none("index entry"))?;
                    image.remove_entry(leaf, pos);
                    image.set_stored_count(b, 0);
                } else {
                    let nr = le_u32_at(image.block(b), 8);
                    if nr < 2 {
                        return Err(none("hint array of two hints"));
                    }
                    image.put_u32(b, 8, nr - 1);
                    seal(image.block_mut(b), BlockKind::Array);
                }
                Ok(Applied {
                    index: Some(k),
                    ..Applied::at(sb.hint_root)
                })
            }
        }
    }
}

fn le_u32_at(b: &[u8], off: usize) -> u32 {
    crate::io::le_u32(b, off)
}

/// A whole cache metadata image in memory, edited in place.
pub struct CacheImage {
    pub bytes: Vec<u8>,
}

impl CacheImage {
    pub fn new(bytes: Vec<u8>) -> CacheImage {
        CacheImage { bytes }
    }

    pub fn block(&self, b: u64) -> &[u8] {
        &self.bytes[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE]
    }

    pub fn block_mut(&mut self, b: u64) -> &mut [u8] {
        &mut self.bytes[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE]
    }

    pub fn superblock(&self) -> Superblock {
        Superblock::parse(self.block(0))
    }

    /// Writes the fields of `sb` (the rest of block 0 as it was).
    pub fn set_superblock(&mut self, sb: &Superblock) {
        sb.write_fields(self.block_mut(0));
        seal(self.block_mut(0), BlockKind::CacheSuperblock);
    }

    fn put_u32(&mut self, b: u64, off: usize, v: u32) {
        self.block_mut(b)[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u64(&mut self, b: u64, off: usize, v: u64) {
        self.block_mut(b)[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn source(&self) -> BlockSource {
        BlockSource::from_bytes(&self.bytes, Path::new("cache image")).expect("a whole image")
    }

    /// (array block index, block) of the array with index root `root`.
    pub fn pointers(&self, root: u64) -> Vec<(u64, u64)> {
        read_index(&self.source(), "array", root).0
    }

    /// Array block `k` of the array at `root`.
    pub fn array_block(&self, root: u64, k: u64) -> Option<(u64, u64)> {
        self.pointers(root).into_iter().find(|p| p.0 == k)
    }

    /// The index leaf holding key `k`, and the entry's position in it.
    fn leaf_entry(&self, root: u64, k: u64) -> Option<(u64, usize)> {
        let mut b = root;
        loop {
            let node = NodeView::new(self.block(b));
            let n = node.nr_entries();
            let pos = (0..n).rev().find(|&e| node.key(e) <= k)?;
            if node.is_leaf() {
                return (node.key(pos) == k).then_some((b, pos as usize));
            }
            b = node.value_u64(pos);
        }
    }

    /// Removes entry `i` of an index node (8-byte values), closing the gap.
    fn remove_entry(&mut self, node: u64, i: usize) {
        let v = NodeView::new(self.block(node));
        let (n, max) = (v.nr_entries() as usize, v.max_entries() as usize);
        let blk = self.block_mut(node);
        let keys = NODE_HEADER_SIZE;
        blk.copy_within(keys + (i + 1) * 8..keys + n * 8, keys + i * 8);
        let values = keys + max * 8;
        blk.copy_within(values + (i + 1) * 8..values + n * 8, values + i * 8);
        self.put_u32(node, 16, n as u32 - 1);
        seal(self.block_mut(node), BlockKind::BtreeNode);
    }

    /// The block and byte offset of cache block `c`'s mapping.
    fn mapping_at(&self, sb: &Superblock, c: u64) -> Option<(u64, usize)> {
        let per = max_entries_for(MAPPING_SIZE) as u64;
        let (_, b) = self.array_block(sb.mapping_root, c / per)?;
        Some((b, ARRAY_HEADER_SIZE + ((c % per) * 8) as usize))
    }

    pub fn mapping_value(&self, sb: &Superblock, c: u64) -> Option<u64> {
        let (b, off) = self.mapping_at(sb, c)?;
        Some(le_u64(self.block(b), off))
    }

    /// Sets cache block `c`'s mapping value; returns its array block.
    fn set_mapping_value(&mut self, sb: &Superblock, c: u64, v: u64) -> u64 {
        let (b, off) = self.mapping_at(sb, c).expect("a readable mapping");
        self.put_u64(b, off, v);
        seal(self.block_mut(b), BlockKind::Array);
        b
    }

    /// (cache block, mapping, array block) of every valid mapping.
    fn mapped(&self, sb: &Superblock) -> Vec<(u64, Mapping, u64)> {
        let per = max_entries_for(MAPPING_SIZE) as u64;
        let mut out = Vec::new();
        for (k, b) in self.pointers(sb.mapping_root) {
            let blk = self.block(b);
            let nr = crate::io::le_u32(blk, 8).min(per as u32) as u64;
            for i in 0..nr {
                let m = Mapping::unpack(le_u64(blk, ARRAY_HEADER_SIZE + i as usize * 8));
                if m.is_valid() {
                    out.push((k * per + i, m, b));
                }
            }
        }
        out
    }

    /// The first cache block whose mapping is 0.
    fn first_unmapped(&self, sb: &Superblock) -> Option<u64> {
        let per = max_entries_for(MAPPING_SIZE) as u64;
        self.pointers(sb.mapping_root)
            .into_iter()
            .find_map(|(k, b)| {
                let blk = self.block(b);
                let nr = crate::io::le_u32(blk, 8).min(per as u32) as u64;
                (0..nr)
                    .find(|&i| le_u64(blk, ARRAY_HEADER_SIZE + i as usize * 8) == 0)
                    .map(|i| k * per + i)
            })
    }

    fn index_entry(&self, i: usize) -> (u64, bitmap::IndexEntry) {
        let index = self.superblock().metadata_sm_root.bitmap_root;
        (index, bitmap::metadata_index_entry(self.block(index), i))
    }

    /// The stored two-bit count of metadata block `b`.
    pub fn stored_count(&self, b: u64) -> u8 {
        let (_, ie) = self.index_entry((b / ENTRIES_PER_BITMAP) as usize);
        bitmap::entry(self.block(ie.blocknr), b % ENTRIES_PER_BITMAP)
    }

    /// Sets metadata block `b`'s stored count, keeping nr_free,
    /// none_free_before and nr_allocated consistent with it, so the only
    /// inconsistency is the count itself.
    pub fn set_stored_count(&mut self, b: u64, count: u8) {
        let i = (b / ENTRIES_PER_BITMAP) as usize;
        let old = self.stored_count(b);
        let (index, ie) = self.index_entry(i);
        bitmap::set_entry(self.block_mut(ie.blocknr), b % ENTRIES_PER_BITMAP, count);
        seal(self.block_mut(ie.blocknr), BlockKind::Bitmap);
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
        let off = 16 + i * 16;
        new_ie.write(&mut self.block_mut(index)[off..off + 16]);
        seal(self.block_mut(index), BlockKind::Index);
        let mut sb = self.superblock();
        sb.metadata_sm_root.nr_allocated = (sb.metadata_sm_root.nr_allocated as i64 - delta) as u64;
        self.set_superblock(&sb);
    }
}
