//! The thin superblock (block 0; the metadata snapshot keeps a copy
//! elsewhere).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | checksum (salt: thin superblock) |
//! | 4 | 4 | flags (bit 0: needs_check) |
//! | 8 | 8 | block number of this block |
//! | 16 | 16 | uuid (unused) |
//! | 32 | 8 | magic 27022010 |
//! | 40 | 4 | version (1 or 2) |
//! | 44 | 4 | time (snapshot counter) |
//! | 48 | 8 | transaction id |
//! | 56 | 8 | metadata snapshot block, 0 if none |
//! | 64 | 128 | data space-map root |
//! | 192 | 128 | metadata space-map root |
//! | 320 | 8 | mapping tree root |
//! | 328 | 8 | device-details tree root |
//! | 336 | 4 | data block size (sectors) |
//! | 340 | 4 | metadata block size (sectors) |
//! | 344 | 8 | number of metadata blocks |
//! | 352 | 4 | compat flags |
//! | 356 | 4 | compat ro flags |
//! | 360 | 4 | incompat flags |

use crate::io::checksum::{self, BlockKind};
use crate::io::{le_u32, le_u64, BlockError, BlockSource, BLOCK_SIZE, SECTORS_PER_BLOCK};
use crate::pdata::space_map::root::{SpaceMapRoot, SPACE_MAP_ROOT_SIZE};

pub const SUPERBLOCK_LOCATION: u64 = 0;
pub const THIN_MAGIC: u64 = 27022010;
pub const NEEDS_CHECK: u32 = 1;

pub const FLAGS_OFFSET: usize = 4;
const BLOCKNR_OFFSET: usize = 8;
const UUID_OFFSET: usize = 16;
const UUID_SIZE: usize = 16;
const MAGIC_OFFSET: usize = 32;
const VERSION_OFFSET: usize = 40;
const TIME_OFFSET: usize = 44;
const TRANSACTION_OFFSET: usize = 48;
const METADATA_SNAP_OFFSET: usize = 56;
const DATA_SM_OFFSET: usize = 64;
const METADATA_SM_OFFSET: usize = 192;
pub const MAPPING_ROOT_OFFSET: usize = 320;
pub const DETAILS_ROOT_OFFSET: usize = 328;
const DATA_BLOCK_SIZE_OFFSET: usize = 336;
const METADATA_BLOCK_SIZE_OFFSET: usize = 340;
const NR_METADATA_BLOCKS_OFFSET: usize = 344;
const COMPAT_FLAGS_OFFSET: usize = 352;
const COMPAT_RO_FLAGS_OFFSET: usize = 356;
const INCOMPAT_FLAGS_OFFSET: usize = 360;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    pub flags: u32,
    pub blocknr: u64,
    pub uuid: [u8; UUID_SIZE],
    pub magic: u64,
    pub version: u32,
    pub time: u32,
    pub transaction_id: u64,
    pub metadata_snap: u64,
    pub data_sm_root: SpaceMapRoot,
    pub metadata_sm_root: SpaceMapRoot,
    pub mapping_root: u64,
    pub details_root: u64,
    pub data_block_size: u32,
    pub metadata_block_size: u32,
    pub nr_metadata_blocks: u64,
    pub compat_flags: u32,
    pub compat_ro_flags: u32,
    pub incompat_flags: u32,
}

impl Superblock {
    pub fn parse(b: &[u8]) -> Superblock {
        Superblock {
            flags: le_u32(b, FLAGS_OFFSET),
            blocknr: le_u64(b, BLOCKNR_OFFSET),
            uuid: b[UUID_OFFSET..UUID_OFFSET + UUID_SIZE].try_into().unwrap(),
            magic: le_u64(b, MAGIC_OFFSET),
            version: le_u32(b, VERSION_OFFSET),
            time: le_u32(b, TIME_OFFSET),
            transaction_id: le_u64(b, TRANSACTION_OFFSET),
            metadata_snap: le_u64(b, METADATA_SNAP_OFFSET),
            data_sm_root: SpaceMapRoot::parse(
                &b[DATA_SM_OFFSET..DATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE],
            ),
            metadata_sm_root: SpaceMapRoot::parse(
                &b[METADATA_SM_OFFSET..METADATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE],
            ),
            mapping_root: le_u64(b, MAPPING_ROOT_OFFSET),
            details_root: le_u64(b, DETAILS_ROOT_OFFSET),
            data_block_size: le_u32(b, DATA_BLOCK_SIZE_OFFSET),
            metadata_block_size: le_u32(b, METADATA_BLOCK_SIZE_OFFSET),
            nr_metadata_blocks: le_u64(b, NR_METADATA_BLOCKS_OFFSET),
            compat_flags: le_u32(b, COMPAT_FLAGS_OFFSET),
            compat_ro_flags: le_u32(b, COMPAT_RO_FLAGS_OFFSET),
            incompat_flags: le_u32(b, INCOMPAT_FLAGS_OFFSET),
        }
    }

    /// Reads and checksums the superblock at `location` (0 for the live
    /// one, the snapshot block for the metadata snapshot). As the kernel
    /// does, the self-location field is not required to match: the
    /// snapshot copy keeps the live superblock's.
    pub fn read(src: &BlockSource, location: u64) -> Result<Superblock, BlockError> {
        let b = src.block(location)?;
        if !checksum::matches(b, BlockKind::ThinSuperblock) {
            return Err(match checksum::kind_of(b) {
                Some(found) => BlockError::WrongKind {
                    block: location,
                    wanted: BlockKind::ThinSuperblock,
                    found,
                },
                None => BlockError::Checksum {
                    block: location,
                    wanted: BlockKind::ThinSuperblock,
                },
            });
        }
        Ok(Superblock::parse(b))
    }

    /// The data space map's size must be describable: each 16320 data
    /// blocks take one bitmap block of the metadata device.
    pub fn data_size_plausible(&self, metadata_blocks: u64) -> Result<(), String> {
        let limit =
            crate::pdata::space_map::bitmap::ENTRIES_PER_BITMAP.saturating_mul(metadata_blocks);
        if self.data_sm_root.nr_blocks > limit {
            return Err(format!(
                "the data space map claims {} data blocks, more than a {metadata_blocks}-block \
                 metadata device can describe ({limit})",
                self.data_sm_root.nr_blocks
            ));
        }
        Ok(())
    }

    pub fn needs_check(&self) -> bool {
        self.flags & NEEDS_CHECK != 0
    }

    /// Serialises into a block image with a valid checksum.
    pub fn to_block(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        self.write_fields(&mut b);
        checksum::seal(&mut b, BlockKind::ThinSuperblock);
        b
    }

    fn write_fields(&self, b: &mut [u8]) {
        b[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&self.flags.to_le_bytes());
        b[BLOCKNR_OFFSET..BLOCKNR_OFFSET + 8].copy_from_slice(&self.blocknr.to_le_bytes());
        b[UUID_OFFSET..UUID_OFFSET + UUID_SIZE].copy_from_slice(&self.uuid);
        b[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&self.magic.to_le_bytes());
        b[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&self.version.to_le_bytes());
        b[TIME_OFFSET..TIME_OFFSET + 4].copy_from_slice(&self.time.to_le_bytes());
        b[TRANSACTION_OFFSET..TRANSACTION_OFFSET + 8]
            .copy_from_slice(&self.transaction_id.to_le_bytes());
        b[METADATA_SNAP_OFFSET..METADATA_SNAP_OFFSET + 8]
            .copy_from_slice(&self.metadata_snap.to_le_bytes());
        self.data_sm_root
            .write(&mut b[DATA_SM_OFFSET..DATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE]);
        self.metadata_sm_root
            .write(&mut b[METADATA_SM_OFFSET..METADATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE]);
        b[MAPPING_ROOT_OFFSET..MAPPING_ROOT_OFFSET + 8]
            .copy_from_slice(&self.mapping_root.to_le_bytes());
        b[DETAILS_ROOT_OFFSET..DETAILS_ROOT_OFFSET + 8]
            .copy_from_slice(&self.details_root.to_le_bytes());
        b[DATA_BLOCK_SIZE_OFFSET..DATA_BLOCK_SIZE_OFFSET + 4]
            .copy_from_slice(&self.data_block_size.to_le_bytes());
        b[METADATA_BLOCK_SIZE_OFFSET..METADATA_BLOCK_SIZE_OFFSET + 4]
            .copy_from_slice(&self.metadata_block_size.to_le_bytes());
        b[NR_METADATA_BLOCKS_OFFSET..NR_METADATA_BLOCKS_OFFSET + 8]
            .copy_from_slice(&self.nr_metadata_blocks.to_le_bytes());
        b[COMPAT_FLAGS_OFFSET..COMPAT_FLAGS_OFFSET + 4]
            .copy_from_slice(&self.compat_flags.to_le_bytes());
        b[COMPAT_RO_FLAGS_OFFSET..COMPAT_RO_FLAGS_OFFSET + 4]
            .copy_from_slice(&self.compat_ro_flags.to_le_bytes());
        b[INCOMPAT_FLAGS_OFFSET..INCOMPAT_FLAGS_OFFSET + 4]
            .copy_from_slice(&self.incompat_flags.to_le_bytes());
    }

    /// A fresh superblock with the fields a writer must always set.
    pub fn new_v2() -> Superblock {
        Superblock {
            magic: THIN_MAGIC,
            version: 2,
            metadata_block_size: SECTORS_PER_BLOCK,
            ..Default::default()
        }
    }
}

/// The error for a superblock that is not a thin superblock: the
/// reference tools' words (scripts match them), the file, and what the
/// file holds when that can be told (text, XML, zeros, another target).
pub fn bad_superblock(src: &BlockSource, e: &BlockError) -> String {
    let mut m = format!(
        "bad checksum in superblock of '{}' ({e})",
        src.path().display()
    );
    if e.block() == SUPERBLOCK_LOCATION {
        if let Some(what) = crate::io::input::what_it_holds(src.head(BLOCK_SIZE), "thin") {
            m.push_str(": ");
            m.push_str(&what);
        }
    }
    m
}

/// When `src` is shorter than its superblock's metadata space map says,
/// the sentence that says so with both sizes; the one finding that
/// explains every unreadable block after it.
pub fn truncation(src: &BlockSource) -> Option<String> {
    let sb = Superblock::read(src, SUPERBLOCK_LOCATION).ok()?;
    crate::io::input::truncation(src, sb.metadata_sm_root.nr_blocks)
}

/// The live superblock, and the one to read trees from: the live one,
/// or with `metadata_snap` the snapshot's copy it points at.
pub fn live_and_chosen(
    src: &BlockSource,
    metadata_snap: bool,
) -> anyhow::Result<(Superblock, Superblock)> {
    let live = Superblock::read(src, SUPERBLOCK_LOCATION)
        .map_err(|e| anyhow::anyhow!("{}", bad_superblock(src, &e)))?;
    if !metadata_snap {
        return Ok((live.clone(), live));
    }
    if live.metadata_snap == 0 {
        anyhow::bail!("no current metadata snap");
    }
    let snap = Superblock::read(src, live.metadata_snap)
        .map_err(|e| anyhow::anyhow!("metadata snap: bad checksum in superblock ({e})"))?;
    Ok((live, snap))
}

/// The superblock `current` with needs_check cleared and resealed, only
/// the flags field and checksum changed; None if the flag is clear.
pub fn without_needs_check(current: &[u8]) -> Option<Vec<u8>> {
    let flags = le_u32(current, FLAGS_OFFSET);
    if flags & NEEDS_CHECK == 0 {
        return None;
    }
    let mut block = current.to_vec();
    block[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&(flags & !NEEDS_CHECK).to_le_bytes());
    checksum::seal(&mut block, BlockKind::ThinSuperblock);
    Some(block)
}

/// Clears the needs_check flag of the superblock at block 0 of `path` in
/// place: one block write, then a flush. Returns false (and writes
/// nothing) if the flag was clear.
pub fn clear_needs_check(path: &std::path::Path) -> anyhow::Result<bool> {
    crate::io::in_place::rewrite_superblock(path, BlockKind::ThinSuperblock, |block| {
        match without_needs_check(block) {
            Some(cleared) => {
                block.copy_from_slice(&cleared);
                true
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut sb = Superblock::new_v2();
        sb.flags = NEEDS_CHECK;
        sb.time = 5;
        sb.transaction_id = 21;
        sb.mapping_root = 7;
        sb.details_root = 8;
        sb.data_block_size = 128;
        sb.nr_metadata_blocks = 1024;
        sb.metadata_sm_root.nr_blocks = 1024;
        sb.metadata_sm_root.nr_allocated = 10;
        let b = sb.to_block();
        assert!(checksum::matches(&b, BlockKind::ThinSuperblock));
        assert_eq!(Superblock::parse(&b), sb);
        assert!(sb.needs_check());
    }
}
