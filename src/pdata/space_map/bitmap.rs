//! Bitmap and index blocks.
//!
//! Bitmap block: checksum u32, unused u32, block number u64, then 4080
//! bytes holding 16320 two-bit entries. Entry i lives in 64-bit word i/32
//! at bits 2(i mod 32) and 2(i mod 32)+1, and the *lower* bit is the high
//! bit of the count. 3 means "three or more: see the ref-count tree".
//!
//! Index entry (16 bytes): bitmap block u64, nr_free u32,
//! none_free_before u32. The metadata space map keeps up to 255 of them in
//! one index block (checksum u32, padding u32, block number u64, entries);
//! the data space map keeps them as values of a btree keyed by bitmap
//! index.

use crate::io::{le_u32, le_u64, BLOCK_SIZE};

pub const BITMAP_HEADER_SIZE: usize = 16;
pub const ENTRIES_PER_BITMAP: u64 = ((BLOCK_SIZE - BITMAP_HEADER_SIZE) * 4) as u64;
pub const INDEX_ENTRY_SIZE: usize = 16;
pub const INDEX_HEADER_SIZE: usize = 16;
/// Index entries in the metadata space map's single index block.
pub const MAX_METADATA_BITMAPS: usize = 255;
/// The most metadata blocks a metadata space map can describe.
pub const MAX_METADATA_BLOCKS: u64 = MAX_METADATA_BITMAPS as u64 * ENTRIES_PER_BITMAP;
/// Two-bit value meaning "look in the ref-count tree".
pub const OVERFLOW: u8 = 3;

/// The 2-bit count of entry `i` of a bitmap block.
#[inline]
pub fn entry(bitmap: &[u8], i: u64) -> u8 {
    let word = le_u64(bitmap, BITMAP_HEADER_SIZE + (i / 32) as usize * 8);
    let shift = 2 * (i % 32);
    let lo = (word >> shift) & 1; // high bit of the count
    let hi = (word >> (shift + 1)) & 1; // low bit of the count
    ((lo << 1) | hi) as u8
}

/// Sets entry `i` of a bitmap block being built.
#[inline]
pub fn set_entry(bitmap: &mut [u8], i: u64, count: u8) {
    let off = BITMAP_HEADER_SIZE + (i / 32) as usize * 8;
    let mut word = le_u64(bitmap, off);
    let shift = 2 * (i % 32);
    word &= !(3u64 << shift);
    let high = ((count >> 1) & 1) as u64;
    let low = (count & 1) as u64;
    word |= (high << shift) | (low << (shift + 1));
    bitmap[off..off + 8].copy_from_slice(&word.to_le_bytes());
}

/// The 2-bit counts of one 64-bit bitmap word, 32 entries, in order.
#[inline]
pub fn word(bitmap: &[u8], w: usize) -> u64 {
    le_u64(bitmap, BITMAP_HEADER_SIZE + w * 8)
}

/// Entry `j` (0..32) of a bitmap word.
#[inline]
pub fn word_entry(word: u64, j: u64) -> u8 {
    let shift = 2 * j;
    ((((word >> shift) & 1) << 1) | ((word >> (shift + 1)) & 1)) as u8
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexEntry {
    pub blocknr: u64,
    pub nr_free: u32,
    pub none_free_before: u32,
}

impl IndexEntry {
    pub fn parse(bytes: &[u8]) -> IndexEntry {
        IndexEntry {
            blocknr: le_u64(bytes, 0),
            nr_free: le_u32(bytes, 8),
            none_free_before: le_u32(bytes, 12),
        }
    }

    pub fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.blocknr.to_le_bytes());
        out[8..12].copy_from_slice(&self.nr_free.to_le_bytes());
        out[12..16].copy_from_slice(&self.none_free_before.to_le_bytes());
    }
}

/// Entry `i` of a metadata index block.
pub fn metadata_index_entry(index_block: &[u8], i: usize) -> IndexEntry {
    let off = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
    IndexEntry::parse(&index_block[off..off + INDEX_ENTRY_SIZE])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_swapped_bits() {
        let mut b = vec![0u8; BLOCK_SIZE];
        for (i, c) in [(0u64, 1u8), (1, 2), (31, 3), (32, 1), (16319, 2)] {
            set_entry(&mut b, i, c);
        }
        assert_eq!(entry(&b, 0), 1);
        assert_eq!(entry(&b, 1), 2);
        assert_eq!(entry(&b, 31), 3);
        assert_eq!(entry(&b, 32), 1);
        assert_eq!(entry(&b, 16319), 2);
        assert_eq!(entry(&b, 2), 0);
        // count 1 is stored in the upper bit of the pair
        assert_eq!(le_u64(&b, BITMAP_HEADER_SIZE) & 0b11, 0b10);
        assert_eq!(word_entry(word(&b, 0), 1), 2);
        assert_eq!(ENTRIES_PER_BITMAP, 16320);
    }
}
