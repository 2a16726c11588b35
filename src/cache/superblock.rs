//! The cache superblock (block 0), formats 1 and 2.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | checksum (salt: cache superblock) |
//! | 4 | 4 | flags: 1 clean shutdown, 2 needs_check |
//! | 8 | 8 | block number of this block (0) |
//! | 16 | 16 | uuid (unused, zero) |
//! | 32 | 8 | magic 1623043 |
//! | 40 | 4 | version (1 or 2) |
//! | 44 | 16 | policy name, NUL-padded |
//! | 60 | 4 | policy hint size (4, or 0) |
//! | 64 | 128 | metadata space-map root |
//! | 192 | 8 | mapping array root |
//! | 200 | 8 | hint array root (0: none) |
//! | 208 | 8 | discard bitset root |
//! | 216 | 8 | discard block size (sectors) |
//! | 224 | 8 | discard blocks (bits of the discard bitset) |
//! | 232 | 4 | data block size (sectors) |
//! | 236 | 4 | metadata block size (8) |
//! | 240 | 4 | cache blocks |
//! | 244 | 4 | compat flags |
//! | 248 | 4 | compat ro flags |
//! | 252 | 4 | incompat flags |
//! | 256 | 16 | read hits, read misses, write hits, write misses |
//! | 272 | 12 | policy version: major, minor, patch |
//! | 284 | 8 | dirty bitset root (format 2 only) |

use crate::io::checksum::{self, BlockKind};
use crate::io::{le_u32, le_u64, BlockError, BlockSource, BLOCK_SIZE, SECTORS_PER_BLOCK};
use crate::pdata::space_map::root::{SpaceMapRoot, SPACE_MAP_ROOT_SIZE};

pub const SUPERBLOCK_LOCATION: u64 = 0;
pub const CACHE_MAGIC: u64 = 1623043;
pub const CLEAN_SHUTDOWN: u32 = 1;
pub const NEEDS_CHECK: u32 = 2;
pub const POLICY_NAME_SIZE: usize = 16;

const FLAGS_OFFSET: usize = 4;
const BLOCKNR_OFFSET: usize = 8;
const UUID_OFFSET: usize = 16;
const UUID_SIZE: usize = 16;
const MAGIC_OFFSET: usize = 32;
const VERSION_OFFSET: usize = 40;
const POLICY_NAME_OFFSET: usize = 44;
const POLICY_HINT_SIZE_OFFSET: usize = 60;
const METADATA_SM_OFFSET: usize = 64;
const MAPPING_ROOT_OFFSET: usize = 192;
const HINT_ROOT_OFFSET: usize = 200;
const DISCARD_ROOT_OFFSET: usize = 208;
const DISCARD_BLOCK_SIZE_OFFSET: usize = 216;
const DISCARD_NR_BLOCKS_OFFSET: usize = 224;
const DATA_BLOCK_SIZE_OFFSET: usize = 232;
const METADATA_BLOCK_SIZE_OFFSET: usize = 236;
const CACHE_BLOCKS_OFFSET: usize = 240;
const COMPAT_FLAGS_OFFSET: usize = 244;
const COMPAT_RO_FLAGS_OFFSET: usize = 248;
const INCOMPAT_FLAGS_OFFSET: usize = 252;
const STATS_OFFSET: usize = 256;
const POLICY_VERSION_OFFSET: usize = 272;
const DIRTY_ROOT_OFFSET: usize = 284;
/// Bytes the superblock uses in format 1 (format 2 adds the dirty root).
pub const V1_SIZE: usize = 284;
pub const V2_SIZE: usize = 292;

/// The statistics counters the kernel saves at suspend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub read_hits: u32,
    pub read_misses: u32,
    pub write_hits: u32,
    pub write_misses: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    pub flags: u32,
    pub blocknr: u64,
    pub uuid: [u8; UUID_SIZE],
    pub magic: u64,
    pub version: u32,
    /// The policy name field as stored (NUL-padded).
    pub policy_name: [u8; POLICY_NAME_SIZE],
    pub policy_hint_size: u32,
    pub metadata_sm_root: SpaceMapRoot,
    pub mapping_root: u64,
    pub hint_root: u64,
    pub discard_root: u64,
    pub discard_block_size: u64,
    pub discard_nr_blocks: u64,
    pub data_block_size: u32,
    pub metadata_block_size: u32,
    pub cache_blocks: u32,
    pub compat_flags: u32,
    pub compat_ro_flags: u32,
    pub incompat_flags: u32,
    pub stats: Stats,
    pub policy_version: [u32; 3],
    /// Format 2 only (bytes 284..292 are not part of a format 1
    /// superblock and are not read for one).
    pub dirty_root: Option<u64>,
}

impl Superblock {
    pub fn parse(b: &[u8]) -> Superblock {
        let version = le_u32(b, VERSION_OFFSET);
        Superblock {
            flags: le_u32(b, FLAGS_OFFSET),
            blocknr: le_u64(b, BLOCKNR_OFFSET),
            uuid: b[UUID_OFFSET..UUID_OFFSET + UUID_SIZE].try_into().unwrap(),
            magic: le_u64(b, MAGIC_OFFSET),
            version,
            policy_name: b[POLICY_NAME_OFFSET..POLICY_NAME_OFFSET + POLICY_NAME_SIZE]
                .try_into()
                .unwrap(),
            policy_hint_size: le_u32(b, POLICY_HINT_SIZE_OFFSET),
            metadata_sm_root: SpaceMapRoot::parse(
                &b[METADATA_SM_OFFSET..METADATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE],
            ),
            mapping_root: le_u64(b, MAPPING_ROOT_OFFSET),
            hint_root: le_u64(b, HINT_ROOT_OFFSET),
            discard_root: le_u64(b, DISCARD_ROOT_OFFSET),
            discard_block_size: le_u64(b, DISCARD_BLOCK_SIZE_OFFSET),
            discard_nr_blocks: le_u64(b, DISCARD_NR_BLOCKS_OFFSET),
            data_block_size: le_u32(b, DATA_BLOCK_SIZE_OFFSET),
            metadata_block_size: le_u32(b, METADATA_BLOCK_SIZE_OFFSET),
            cache_blocks: le_u32(b, CACHE_BLOCKS_OFFSET),
            compat_flags: le_u32(b, COMPAT_FLAGS_OFFSET),
            compat_ro_flags: le_u32(b, COMPAT_RO_FLAGS_OFFSET),
            incompat_flags: le_u32(b, INCOMPAT_FLAGS_OFFSET),
            stats: Stats {
                read_hits: le_u32(b, STATS_OFFSET),
                read_misses: le_u32(b, STATS_OFFSET + 4),
                write_hits: le_u32(b, STATS_OFFSET + 8),
                write_misses: le_u32(b, STATS_OFFSET + 12),
            },
            policy_version: [
                le_u32(b, POLICY_VERSION_OFFSET),
                le_u32(b, POLICY_VERSION_OFFSET + 4),
                le_u32(b, POLICY_VERSION_OFFSET + 8),
            ],
            dirty_root: (version >= 2).then(|| le_u64(b, DIRTY_ROOT_OFFSET)),
        }
    }

    /// Reads and checksums the superblock at block 0.
    pub fn read(src: &BlockSource) -> Result<Superblock, BlockError> {
        let b = src.block(SUPERBLOCK_LOCATION)?;
        if !checksum::matches(b, BlockKind::CacheSuperblock) {
            return Err(match checksum::kind_of(b) {
                Some(found) => BlockError::WrongKind {
                    block: SUPERBLOCK_LOCATION,
                    wanted: BlockKind::CacheSuperblock,
                    found,
                },
                None => BlockError::Checksum {
                    block: SUPERBLOCK_LOCATION,
                    wanted: BlockKind::CacheSuperblock,
                },
            });
        }
        Ok(Superblock::parse(b))
    }

    pub fn clean_shutdown(&self) -> bool {
        self.flags & CLEAN_SHUTDOWN != 0
    }

    pub fn needs_check(&self) -> bool {
        self.flags & NEEDS_CHECK != 0
    }

    /// The policy name without its padding: up to the first NUL (all
    /// 16 bytes if there is none, as the reference tools read it).
    pub fn policy(&self) -> &[u8] {
        let end = self
            .policy_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(POLICY_NAME_SIZE);
        &self.policy_name[..end]
    }

    /// Whether the hint array is in use: a root, and a hint size.
    pub fn has_hints(&self) -> bool {
        self.hint_root != 0 && self.policy_hint_size != 0
    }

    /// The origin size in cache blocks the discard bitset implies, when
    /// the metadata was shut down cleanly (an upper bound: the bitset's
    /// size is rounded up).
    pub fn origin_blocks_hint(&self) -> Option<u64> {
        if !self.clean_shutdown()
            || self.discard_block_size == 0
            || self.discard_nr_blocks == 0
            || self.data_block_size == 0
        {
            return None;
        }
        Some(
            self.discard_block_size
                .saturating_mul(self.discard_nr_blocks)
                / self.data_block_size as u64,
        )
    }

    /// A block image with these fields and a valid checksum. Format 1
    /// leaves bytes 284.. zero.
    pub fn to_block(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        self.write_fields(&mut b);
        checksum::seal(&mut b, BlockKind::CacheSuperblock);
        b
    }

    /// Writes the fields into the first bytes of `b` (the rest is left
    /// as it is); the caller seals the block.
    pub fn write_fields(&self, b: &mut [u8]) {
        let u32_at = |b: &mut [u8], off: usize, v: u32| {
            b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        };
        let u64_at = |b: &mut [u8], off: usize, v: u64| {
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        };
        u32_at(b, FLAGS_OFFSET, self.flags);
        u64_at(b, BLOCKNR_OFFSET, self.blocknr);
        b[UUID_OFFSET..UUID_OFFSET + UUID_SIZE].copy_from_slice(&self.uuid);
        u64_at(b, MAGIC_OFFSET, self.magic);
        u32_at(b, VERSION_OFFSET, self.version);
        b[POLICY_NAME_OFFSET..POLICY_NAME_OFFSET + POLICY_NAME_SIZE]
            .copy_from_slice(&self.policy_name);
        u32_at(b, POLICY_HINT_SIZE_OFFSET, self.policy_hint_size);
        self.metadata_sm_root
            .write(&mut b[METADATA_SM_OFFSET..METADATA_SM_OFFSET + SPACE_MAP_ROOT_SIZE]);
        u64_at(b, MAPPING_ROOT_OFFSET, self.mapping_root);
        u64_at(b, HINT_ROOT_OFFSET, self.hint_root);
        u64_at(b, DISCARD_ROOT_OFFSET, self.discard_root);
        u64_at(b, DISCARD_BLOCK_SIZE_OFFSET, self.discard_block_size);
        u64_at(b, DISCARD_NR_BLOCKS_OFFSET, self.discard_nr_blocks);
        u32_at(b, DATA_BLOCK_SIZE_OFFSET, self.data_block_size);
        u32_at(b, METADATA_BLOCK_SIZE_OFFSET, self.metadata_block_size);
        u32_at(b, CACHE_BLOCKS_OFFSET, self.cache_blocks);
        u32_at(b, COMPAT_FLAGS_OFFSET, self.compat_flags);
        u32_at(b, COMPAT_RO_FLAGS_OFFSET, self.compat_ro_flags);
        u32_at(b, INCOMPAT_FLAGS_OFFSET, self.incompat_flags);
        u32_at(b, STATS_OFFSET, self.stats.read_hits);
        u32_at(b, STATS_OFFSET + 4, self.stats.read_misses);
        u32_at(b, STATS_OFFSET + 8, self.stats.write_hits);
        u32_at(b, STATS_OFFSET + 12, self.stats.write_misses);
        for (i, v) in self.policy_version.iter().enumerate() {
            u32_at(b, POLICY_VERSION_OFFSET + 4 * i, *v);
        }
        if let Some(root) = self.dirty_root {
            u64_at(b, DIRTY_ROOT_OFFSET, root);
        }
    }

    /// A fresh superblock of `version` with the fields a writer must
    /// always set.
    pub fn new(version: u32) -> Superblock {
        Superblock {
            magic: CACHE_MAGIC,
            version,
            metadata_block_size: SECTORS_PER_BLOCK,
            dirty_root: (version >= 2).then_some(0),
            ..Default::default()
        }
    }
}

/// Clears the needs_check flag of the cache superblock at block 0 of
/// `path` in place (one block write, then a flush); false if it was
/// clear. The clean-shutdown flag is left as it is.
pub fn clear_needs_check(path: &std::path::Path) -> anyhow::Result<bool> {
    crate::io::in_place::rewrite_superblock(path, BlockKind::CacheSuperblock, |block| {
        let flags = le_u32(block, FLAGS_OFFSET);
        if flags & NEEDS_CHECK == 0 {
            return false;
        }
        block[FLAGS_OFFSET..FLAGS_OFFSET + 4]
            .copy_from_slice(&(flags & !NEEDS_CHECK).to_le_bytes());
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_versions() {
        for version in [1, 2] {
            let mut sb = Superblock::new(version);
            sb.flags = CLEAN_SHUTDOWN | NEEDS_CHECK;
            sb.policy_name[..3].copy_from_slice(b"smq");
            sb.policy_hint_size = 4;
            sb.mapping_root = 6;
            sb.hint_root = 8;
            sb.discard_root = 1;
            sb.data_block_size = 128;
            sb.cache_blocks = 1100;
            sb.stats.read_misses = 9;
            sb.policy_version = [2, 0, 0];
            if version == 2 {
                sb.dirty_root = Some(8);
            }
            sb.metadata_sm_root.nr_blocks = 1024;
            let b = sb.to_block();
            assert!(checksum::matches(&b, BlockKind::CacheSuperblock));
            assert_eq!(Superblock::parse(&b), sb);
            assert_eq!(sb.policy(), b"smq");
            assert!(sb.clean_shutdown() && sb.needs_check());
            // Format 1 stops at byte 284.
            let end = if version == 1 { V1_SIZE } else { V2_SIZE };
            assert!(b[end..].iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn a_v1_superblock_ignores_bytes_past_its_end() {
        let sb = Superblock::new(1);
        let mut b = sb.to_block();
        b[DIRTY_ROOT_OFFSET] = 7;
        assert_eq!(Superblock::parse(&b).dirty_root, None);
    }

    #[test]
    fn origin_size_from_the_discard_bitset() {
        let mut sb = Superblock::new(2);
        sb.data_block_size = 64;
        sb.discard_block_size = 128;
        sb.discard_nr_blocks = 16384;
        assert_eq!(sb.origin_blocks_hint(), None);
        sb.flags = CLEAN_SHUTDOWN;
        assert_eq!(sb.origin_blocks_hint(), Some(32768));
    }
}
