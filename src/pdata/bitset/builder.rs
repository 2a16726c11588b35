//! Writing bitsets: set bits (or ranges) arrive in ascending order and
//! become words of an `ArrayBuilder`; clear words in between are written
//! as zeros without being built one by one.
//!
//! ```ignore
//! let mut dirty = BitsetBuilder::new(cache_blocks as u64);
//! for cblock in dirty_blocks_ascending { dirty.set(&mut w, cblock)?; }
//! let root = dirty.finish(&mut w)?;   // the caller counts the root
//! ```

use std::ops::Range;

use anyhow::{bail, Result};

use crate::pdata::array::builder::{self as array_builder, ArrayBuilder};
use crate::pdata::btree::builder::MetadataWriter;

use super::{words_for, WORD_SIZE};

pub struct BitsetBuilder {
    words: ArrayBuilder,
    nr_bits: u64,
    /// The word being built and its index.
    word: u64,
    word_index: u64,
    /// Bits below this are decided.
    next: u64,
}

impl BitsetBuilder {
    pub fn new(nr_bits: u64) -> BitsetBuilder {
        BitsetBuilder {
            words: ArrayBuilder::new(WORD_SIZE),
            nr_bits,
            word: 0,
            word_index: 0,
            next: 0,
        }
    }

    /// Moves the word being built to word `w`, writing those before it.
    fn move_to_word(&mut self, w: &mut MetadataWriter, wi: u64) -> Result<()> {
        if wi == self.word_index {
            return Ok(());
        }
        self.words.push(w, &self.word.to_le_bytes())?;
        self.words.push_zeros(w, wi - self.word_index - 1)?;
        self.word_index = wi;
        self.word = 0;
        Ok(())
    }

    fn check(&self, bits: &Range<u64>) -> Result<()> {
        if bits.start < self.next || bits.end > self.nr_bits || bits.start >= bits.end {
            bail!(
                "bit range {}..{} out of order or beyond the bitset's {} bits",
                bits.start,
                bits.end,
                self.nr_bits
            );
        }
        Ok(())
    }

    /// Sets bit `i`, which must be above every bit set before.
    pub fn set(&mut self, w: &mut MetadataWriter, i: u64) -> Result<()> {
        self.set_range(w, i..i + 1)
    }

    /// Sets bits `bits`, which must lie above every bit set before.
    pub fn set_range(&mut self, w: &mut MetadataWriter, bits: Range<u64>) -> Result<()> {
        self.check(&bits)?;
        let mut i = bits.start;
        while i < bits.end {
            self.move_to_word(w, i / 64)?;
            let lo = i % 64;
            let n = (bits.end - i).min(64 - lo);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << lo
            };
            self.word |= mask;
            i += n;
        }
        self.next = bits.end;
        Ok(())
    }

    /// Writes the remaining words (clear) and the index; returns the root.
    pub fn finish(mut self, w: &mut MetadataWriter) -> Result<u64> {
        let nr_words = words_for(self.nr_bits);
        if self.word_index < nr_words {
            self.words.push(w, &self.word.to_le_bytes())?;
            self.words.push_zeros(w, nr_words - self.word_index - 1)?;
        }
        self.words.finish(w)
    }
}

/// Metadata blocks a bitset of `nr_bits` bits takes.
pub fn blocks_needed(nr_bits: u64) -> u64 {
    array_builder::blocks_needed(words_for(nr_bits), WORD_SIZE)
}
