//! Damaging healthy era metadata on purpose, in one named way each, every
//! checksum it touches fixed but the one it breaks: for tests and the
//! era_generate_damage developer tool.

use std::path::Path;

use crate::io::checksum::{seal, BlockKind};
use crate::io::{BlockSource, BLOCK_SIZE};
use crate::pdata::array::view::read_index;
use crate::pdata::btree::node::{NodeView, NODE_HEADER_SIZE};
use crate::pdata::space_map::bitmap::{
    self, ENTRIES_PER_BITMAP, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE,
};

use super::read::{writeset_tree, EraState, EraWriteset, Side};
use super::superblock::{Superblock, WRITESET_SIZE};

macro_rules! kinds {
    ($($kind:ident => $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EraDamage {
            $($kind,)*
        }

        impl EraDamage {
            pub const ALL: &'static [EraDamage] = &[$(EraDamage::$kind,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(EraDamage::$kind => $name,)*
                }
            }
        }
    };
}

kinds! {
    WritesetChecksum => "writeset-checksum",
    EraArrayChecksum => "era-array-checksum",
    FutureEra => "future-era",
    WritesetSize => "writeset-size",
    MetadataLeak => "metadata-leak",
    MetadataUnderCount => "metadata-under-count",
    SuperblockChecksum => "superblock-checksum",
}

impl EraDamage {
    pub fn from_name(name: &str) -> Option<EraDamage> {
        Self::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Only a leak is non-fatal.
    pub fn is_fatal(self) -> bool {
        self != EraDamage::MetadataLeak
    }

    /// Damages `image`; returns the block changed.
    pub fn apply(self, image: &mut [u8]) -> Result<u64, String> {
        let mut img = Image { bytes: image };
        match self {
            EraDamage::WritesetChecksum => {
                let ws = img.first_writeset()?;
                let b = img.first_array_block(ws.writeset.root)?;
                img.flip(b);
                Ok(b)
            }
            EraDamage::EraArrayChecksum => {
                let b = img.first_array_block(img.sb().era_array_root)?;
                img.flip(b);
                Ok(b)
            }
            EraDamage::FutureEra => {
                let sb = img.sb();
                let b = img.first_array_block(sb.era_array_root)?;
                let future = sb
                    .current_era
                    .checked_add(5)
                    .ok_or("current era too large")?;
                img.block_mut(b)[24..28].copy_from_slice(&future.to_le_bytes());
                seal(img.block_mut(b), BlockKind::Array);
                Ok(b)
            }
            EraDamage::WritesetSize => {
                let sb = img.sb();
                let src = img.source();
                let (tree, _) =
                    writeset_tree(&src, sb.writeset_tree_root, true).map_err(|e| e.to_string())?;
                drop(src);
                if tree.is_empty() {
                    return Err("no archived writeset to resize".into());
                }
                // The tree is one leaf in every image the kernel writes
                // with few eras; its first value's nr_bits doubles (plus
                // a block's worth), so the bitset no longer fits it.
                let leaf = sb.writeset_tree_root;
                let node = NodeView::new(img.block(leaf));
                if !node.is_leaf() {
                    return Err("the writeset tree is not a single leaf".into());
                }
                let off = NODE_HEADER_SIZE + node.max_entries() as usize * 8;
                let old = u32::from_le_bytes(img.block(leaf)[off..off + 4].try_into().unwrap());
                let new = old.saturating_mul(2).saturating_add(64 * 509);
                img.block_mut(leaf)[off..off + 4].copy_from_slice(&new.to_le_bytes());
                debug_assert_eq!(WRITESET_SIZE, 12);
                seal(img.block_mut(leaf), BlockKind::BtreeNode);
                Ok(leaf)
            }
            EraDamage::MetadataLeak => {
                let b = img.find_count(0)?;
                img.set_count(b, 1)?;
                Ok(b)
            }
            EraDamage::MetadataUnderCount => {
                let b = img.sb().era_array_root;
                let c = img.count(b)?;
                if c == 0 || c >= 3 {
                    return Err(format!("the era array root has count {c}"));
                }
                img.set_count(b, c - 1)?;
                Ok(b)
            }
            EraDamage::SuperblockChecksum => {
                img.flip(0);
                Ok(0)
            }
        }
    }
}

struct Image<'a> {
    bytes: &'a mut [u8],
}

impl Image<'_> {
    fn block(&self, b: u64) -> &[u8] {
        &self.bytes[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE]
    }

    fn block_mut(&mut self, b: u64) -> &mut [u8] {
        &mut self.bytes[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE]
    }

    fn sb(&self) -> Superblock {
        Superblock::parse(self.block(0))
    }

    fn source(&self) -> BlockSource {
        BlockSource::from_bytes(self.bytes, Path::new("image")).unwrap()
    }

    /// Breaks a block's checksum by changing its last byte.
    fn flip(&mut self, b: u64) {
        self.block_mut(b)[BLOCK_SIZE - 1] ^= 0x5a;
    }

    fn first_writeset(&self) -> Result<EraWriteset, String> {
        let src = self.source();
        let state = EraState::open(&src, Side::Live, true).map_err(|e| e.to_string())?;
        state
            .writesets
            .first()
            .copied()
            .ok_or_else(|| "no writeset".to_string())
    }

    fn first_array_block(&self, root: u64) -> Result<u64, String> {
        let src = self.source();
        let (pointers, _) = read_index(&src, "array", root);
        pointers
            .first()
            .map(|p| p.1)
            .ok_or_else(|| format!("the array at {root} has no blocks"))
    }

    fn index(&self) -> u64 {
        self.sb().metadata_sm_root.bitmap_root
    }

    fn entry(&self, b: u64) -> bitmap::IndexEntry {
        bitmap::metadata_index_entry(self.block(self.index()), (b / ENTRIES_PER_BITMAP) as usize)
    }

    fn count(&self, b: u64) -> Result<u8, String> {
        let ie = self.entry(b);
        Ok(bitmap::entry(
            self.block(ie.blocknr),
            b % ENTRIES_PER_BITMAP,
        ))
    }

    fn find_count(&self, want: u8) -> Result<u64, String> {
        let n = self
            .sb()
            .metadata_sm_root
            .nr_blocks
            .min((self.bytes.len() / BLOCK_SIZE) as u64);
        (1..n)
            .rev()
            .find(|&b| self.count(b) == Ok(want))
            .ok_or_else(|| format!("no block with count {want}"))
    }

    /// Sets block `b`'s stored count, keeping the index entry's nr_free
    /// and the superblock's nr_allocated consistent with it.
    fn set_count(&mut self, b: u64, count: u8) -> Result<(), String> {
        let old = self.count(b)?;
        let i = (b / ENTRIES_PER_BITMAP) as usize;
        let mut ie = self.entry(b);
        bitmap::set_entry(self.block_mut(ie.blocknr), b % ENTRIES_PER_BITMAP, count);
        seal(self.block_mut(ie.blocknr), BlockKind::Bitmap);
        let delta: i64 = match (old == 0, count == 0) {
            (true, false) => -1,
            (false, true) => 1,
            _ => 0,
        };
        ie.nr_free = (ie.nr_free as i64 + delta) as u32;
        if count == 0 {
            ie.none_free_before = ie.none_free_before.min((b % ENTRIES_PER_BITMAP) as u32);
        }
        let index = self.index();
        let off = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
        ie.write(&mut self.block_mut(index)[off..off + INDEX_ENTRY_SIZE]);
        seal(self.block_mut(index), BlockKind::Index);
        let mut sb = self.sb();
        sb.metadata_sm_root.nr_allocated = (sb.metadata_sm_root.nr_allocated as i64 - delta) as u64;
        let block = sb.to_block();
        self.block_mut(0).copy_from_slice(&block);
        Ok(())
    }
}
