//! The era superblock (block 0; a metadata snapshot is a copy of it at
//! another block, same layout and checksum salt).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | checksum (salt: era superblock) |
//! | 4 | 4 | flags (the kernel writes 0 and never reads them) |
//! | 8 | 8 | block number of this block |
//! | 16 | 16 | uuid (unused, zero) |
//! | 32 | 8 | magic 2126579579 |
//! | 40 | 4 | version (1) |
//! | 44 | 128 | metadata space-map root |
//! | 172 | 4 | data block size (sectors) |
//! | 176 | 4 | metadata block size (sectors, 8) |
//! | 180 | 4 | nr_blocks: origin blocks tracked, the era array's length |
//! | 184 | 4 | current era |
//! | 188 | 4 | current writeset: nr_bits |
//! | 192 | 8 | current writeset: bitset root (0: none open) |
//! | 200 | 8 | writeset tree root |
//! | 208 | 8 | era array root |
//! | 216 | 8 | metadata snapshot block (0: none) |

use crate::io::checksum::{self, BlockKind};
use crate::io::{le_u32, le_u64, BlockError, BlockSource, BLOCK_SIZE, SECTORS_PER_BLOCK};
use crate::pdata::space_map::root::{SpaceMapRoot, SPACE_MAP_ROOT_SIZE};

pub const SUPERBLOCK_LOCATION: u64 = 0;
pub const ERA_MAGIC: u64 = 2126579579;
pub const ERA_VERSION: u32 = 1;
/// The flag the reference era_restore sets (clean shutdown); nothing
/// reads it.
pub const CLEAN_SHUTDOWN: u32 = 1;

const FLAGS_OFFSET: usize = 4;
const BLOCKNR_OFFSET: usize = 8;
const UUID_OFFSET: usize = 16;
const UUID_SIZE: usize = 16;
const MAGIC_OFFSET: usize = 32;
const VERSION_OFFSET: usize = 40;
const METADATA_SM_OFFSET: usize = 44;
const DATA_BLOCK_SIZE_OFFSET: usize = 172;
const METADATA_BLOCK_SIZE_OFFSET: usize = 176;
const NR_BLOCKS_OFFSET: usize = 180;
const CURRENT_ERA_OFFSET: usize = 184;
pub const CURRENT_WRITESET_OFFSET: usize = 188;
pub const WRITESET_TREE_ROOT_OFFSET: usize = 200;
pub const ERA_ARRAY_ROOT_OFFSET: usize = 208;
const METADATA_SNAP_OFFSET: usize = 216;

/// A writeset: a bitset of `nr_bits` bits at `root` (stored packed, 12
/// bytes: nr_bits u32 then root u64, in the superblock and as the
/// writeset tree's values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writeset {
    pub nr_bits: u32,
    pub root: u64,
}

pub const WRITESET_SIZE: u32 = 12;

impl Writeset {
    pub fn parse(b: &[u8]) -> Writeset {
        Writeset {
            nr_bits: le_u32(b, 0),
            root: le_u64(b, 4),
        }
    }

    pub fn to_bytes(self) -> [u8; WRITESET_SIZE as usize] {
        let mut v = [0u8; WRITESET_SIZE as usize];
        v[..4].copy_from_slice(&self.nr_bits.to_le_bytes());
        v[4..].copy_from_slice(&self.root.to_le_bytes());
        v
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    pub flags: u32,
    pub blocknr: u64,
    pub uuid: [u8; UUID_SIZE],
    pub magic: u64,
    pub version: u32,
    pub metadata_sm_root: SpaceMapRoot,
    pub data_block_size: u32,
    pub metadata_block_size: u32,
    pub nr_blocks: u32,
    pub current_era: u32,
    pub current_writeset: Writeset,
    pub writeset_tree_root: u64,
    pub era_array_root: u64,
    pub metadata_snap: u64,
}

impl Superblock {
    pub fn parse(b: &[u8]) -> Superblock {
        Superblock {
            flags: le_u32(b, FLAGS_OFFSET),
            blocknr: le_u64(b, BLOCKNR_OFFSET),
            uuid: b[UUID_OFFSET..UUID_OFFSET + UUID_SIZE].try_into().unwrap(),
            magic: le_u64(b, MAGIC_OFFSET),
            version: le_u32(b, VERSION_OFFSET),
            metadata_sm_root: SpaceMapRoot::parse(
                &b[METADATA_SM_OFFSET..METADATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE],
            ),
            data_block_size: le_u32(b, DATA_BLOCK_SIZE_OFFSET),
            metadata_block_size: le_u32(b, METADATA_BLOCK_SIZE_OFFSET),
            nr_blocks: le_u32(b, NR_BLOCKS_OFFSET),
            current_era: le_u32(b, CURRENT_ERA_OFFSET),
            current_writeset: Writeset::parse(&b[CURRENT_WRITESET_OFFSET..]),
            writeset_tree_root: le_u64(b, WRITESET_TREE_ROOT_OFFSET),
            era_array_root: le_u64(b, ERA_ARRAY_ROOT_OFFSET),
            metadata_snap: le_u64(b, METADATA_SNAP_OFFSET),
        }
    }

    /// Reads and checksums the era superblock at `location` (0, or the
    /// metadata snapshot's block).
    pub fn read(src: &BlockSource, location: u64) -> Result<Superblock, BlockError> {
        let b = src.block(location)?;
        if !checksum::matches(b, BlockKind::EraSuperblock) {
            return Err(match checksum::kind_of(b) {
                Some(found) => BlockError::WrongKind {
                    block: location,
                    wanted: BlockKind::EraSuperblock,
                    found,
                },
                None => BlockError::Checksum {
                    block: location,
                    wanted: BlockKind::EraSuperblock,
                },
            });
        }
        Ok(Superblock::parse(b))
    }

    /// Serialises into a block image with a valid checksum.
    pub fn to_block(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&self.flags.to_le_bytes());
        b[BLOCKNR_OFFSET..BLOCKNR_OFFSET + 8].copy_from_slice(&self.blocknr.to_le_bytes());
        b[UUID_OFFSET..UUID_OFFSET + UUID_SIZE].copy_from_slice(&self.uuid);
        b[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&self.magic.to_le_bytes());
        b[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&self.version.to_le_bytes());
        self.metadata_sm_root
            .write(&mut b[METADATA_SM_OFFSET..METADATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE]);
        for (off, v) in [
            (DATA_BLOCK_SIZE_OFFSET, self.data_block_size),
            (METADATA_BLOCK_SIZE_OFFSET, self.metadata_block_size),
            (NR_BLOCKS_OFFSET, self.nr_blocks),
            (CURRENT_ERA_OFFSET, self.current_era),
        ] {
            b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[CURRENT_WRITESET_OFFSET..CURRENT_WRITESET_OFFSET + WRITESET_SIZE as usize]
            .copy_from_slice(&self.current_writeset.to_bytes());
        for (off, v) in [
            (WRITESET_TREE_ROOT_OFFSET, self.writeset_tree_root),
            (ERA_ARRAY_ROOT_OFFSET, self.era_array_root),
            (METADATA_SNAP_OFFSET, self.metadata_snap),
        ] {
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        checksum::seal(&mut b, BlockKind::EraSuperblock);
        b
    }

    /// A fresh superblock with the fields a writer must always set.
    pub fn new() -> Superblock {
        Superblock {
            magic: ERA_MAGIC,
            version: ERA_VERSION,
            metadata_block_size: SECTORS_PER_BLOCK,
            ..Default::default()
        }
    }
}

/// The error for a block 0 that is not an era superblock: the reference
/// tools' words, the file, and what it holds when that can be told.
pub fn bad_superblock(src: &BlockSource, e: &BlockError) -> String {
    let mut m = format!(
        "bad checksum in superblock of '{}' ({e})",
        src.path().display()
    );
    if e.block() == SUPERBLOCK_LOCATION {
        if let Some(what) = crate::io::input::what_it_holds(src.head(BLOCK_SIZE), "era") {
            m.push_str(": ");
            m.push_str(&what);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips_at_its_offset() {
        let sb = Superblock {
            flags: 1,
            blocknr: 0,
            uuid: [0; 16],
            magic: ERA_MAGIC,
            version: 1,
            metadata_sm_root: SpaceMapRoot {
                nr_blocks: 1024,
                nr_allocated: 15,
                bitmap_root: 483,
                ref_count_root: 2,
            },
            data_block_size: 128,
            metadata_block_size: 8,
            nr_blocks: 512,
            current_era: 3,
            current_writeset: Writeset {
                nr_bits: 512,
                root: 0,
            },
            writeset_tree_root: 481,
            era_array_root: 420,
            metadata_snap: 412,
        };
        let b = sb.to_block();
        assert!(checksum::matches(&b, BlockKind::EraSuperblock));
        assert_eq!(le_u64(&b, 32), ERA_MAGIC);
        assert_eq!(le_u64(&b, 60), 483);
        assert_eq!(le_u32(&b, 172), 128);
        assert_eq!(le_u32(&b, 180), 512);
        assert_eq!(le_u32(&b, 184), 3);
        assert_eq!(le_u32(&b, 188), 512);
        assert_eq!(le_u64(&b, 200), 481);
        assert_eq!(le_u64(&b, 208), 420);
        assert_eq!(le_u64(&b, 216), 412);
        assert!(b[224..].iter().all(|&x| x == 0));
        assert_eq!(Superblock::parse(&b), sb);
    }
}
