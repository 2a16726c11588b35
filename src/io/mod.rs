//! Block sources and sinks, checksums and the input/output file rules shared
//! by every tool. Everything above this layer sees metadata as numbered
//! 4096-byte blocks.

pub mod ahead;
pub mod checksum;
pub mod copy;
pub mod discard;
pub mod dm;
pub mod error;
pub mod in_place;
pub mod input;
pub mod output;
pub mod pack;
pub mod sink;
pub mod source;
pub mod varint;
pub mod write_behind;
pub mod xml;

pub use checksum::BlockKind;
pub use error::BlockError;
pub use source::BlockSource;

/// Metadata is always addressed in blocks of this many bytes.
pub const BLOCK_SIZE: usize = 4096;

/// Sectors per metadata block, as recorded in superblocks.
pub const SECTORS_PER_BLOCK: u32 = (BLOCK_SIZE / 512) as u32;

/// Little-endian field readers over borrowed bytes. Callers bounds-check
/// the block; these only slice.
#[inline]
pub fn le_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

#[inline]
pub fn le_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}
