//! Persistent bitsets (the kernel's dm-bitset): an array (`pdata::array`)
//! of ceil(n / 64) 64-bit words; bit i is bit i % 64 (least significant
//! first) of word i / 64. The bit count n is the owner's (the cache's
//! block count, an era writeset's nr_bits); bits past it in the last word
//! are ignored.
//!
//! How to use it:
//! - checking: a [`BitsetCollector`] is the array visitor that gathers
//!   the bits of a bitset while `array::walk::walk_arrays` checks it;
//!   [`BitsetCollector::walk`] makes the `ArrayWalk` for it. Bits of
//!   damaged words read as clear and are listed as unknown;
//! - reading: [`BitsetView::read`] borrows the words in place and answers
//!   `get(bit)` (None where the word is unreadable) and `ones()`;
//! - writing: [`builder::BitsetBuilder`] takes set bits (or ranges) in
//!   ascending order and writes the words through an `ArrayBuilder`.

pub mod builder;

use std::ops::Range;

use crate::io::BlockSource;
use crate::pdata::array::view::ArrayView;
use crate::pdata::array::walk::{ArrayVisitor, ArrayWalk};
use crate::pdata::array::{max_entries_for, ArrayBlockView};
use crate::pdata::btree::walk::AtomicBitSet;

/// Bytes per bitset word (the array's value size).
pub const WORD_SIZE: u32 = 8;
/// Bits in one array block of words.
pub const BITS_PER_ARRAY_BLOCK: u64 = max_entries_for(WORD_SIZE) as u64 * 64;

/// Words a bitset of `nr_bits` bits takes.
pub fn words_for(nr_bits: u64) -> u64 {
    nr_bits.div_ceil(64)
}

/// The valid bits of word `w` of a bitset of `nr_bits` bits.
#[inline]
fn word_mask(w: u64, nr_bits: u64) -> u64 {
    let first = w * 64;
    if first + 64 <= nr_bits {
        u64::MAX
    } else if first >= nr_bits {
        0
    } else {
        (1u64 << (nr_bits - first)) - 1
    }
}

/// A bitset read from the metadata; words borrowed in place.
pub struct BitsetView<'a> {
    words: ArrayView<'a>,
    nr_bits: u64,
}

impl<'a> BitsetView<'a> {
    /// Reads the bitset `name` of `nr_bits` bits at index root `root`;
    /// damage is recorded in `array()` and the rest stays readable.
    pub fn read(src: &'a BlockSource, name: &str, root: u64, nr_bits: u64) -> BitsetView<'a> {
        BitsetView {
            words: ArrayView::read(src, name, root, WORD_SIZE, Some(words_for(nr_bits))),
            nr_bits,
        }
    }

    pub fn nr_bits(&self) -> u64 {
        self.nr_bits
    }

    /// The word array (damage, blocks).
    pub fn array(&self) -> &ArrayView<'a> {
        &self.words
    }

    pub fn is_intact(&self) -> bool {
        self.words.is_intact()
    }

    /// Word `w`, masked to the bitset's bits; None where unreadable.
    #[inline]
    pub fn word(&self, w: u64) -> Option<u64> {
        let bytes = self.words.get(w)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?) & word_mask(w, self.nr_bits))
    }

    /// Bit `i`; None if it lies in an unreadable word or past the end.
    #[inline]
    pub fn get(&self, i: u64) -> Option<bool> {
        if i >= self.nr_bits {
            return None;
        }
        self.word(i / 64).map(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// The set bits of the readable words, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u64> + '_ {
        let nr_bits = self.nr_bits;
        self.words.entries().flat_map(move |(w, bytes)| {
            let mut word = u64::from_le_bytes(bytes.try_into().unwrap()) & word_mask(w, nr_bits);
            std::iter::from_fn(move || {
                (word != 0).then(|| {
                    let bit = word.trailing_zeros() as u64;
                    word &= word - 1;
                    w * 64 + bit
                })
            })
        })
    }
}

/// Gathers a bitset's bits while its array is checked. Words of damaged
/// array blocks stay clear and their bits are not `known`.
pub struct BitsetCollector {
    nr_bits: u64,
    bits: AtomicBitSet,
    /// Array blocks whose words were read.
    read_blocks: AtomicBitSet,
}

impl BitsetCollector {
    /// A collector for `nr_bits` bits; `cap` bounds the memory for an
    /// absurd count (bits past it are not collected).
    pub fn new(nr_bits: u64, cap: u64) -> BitsetCollector {
        let n = nr_bits.min(cap);
        BitsetCollector {
            nr_bits,
            bits: AtomicBitSet::new(n),
            read_blocks: AtomicBitSet::new(n.div_ceil(BITS_PER_ARRAY_BLOCK)),
        }
    }

    /// The array walk that checks the bitset at `root` into this.
    pub fn walk<'v>(&'v self, name: &str, root: u64) -> ArrayWalk<'v> {
        ArrayWalk {
            name: name.to_string(),
            root,
            value_size: WORD_SIZE,
            len: words_for(self.nr_bits),
            visitor: self,
        }
    }

    pub fn nr_bits(&self) -> u64 {
        self.nr_bits
    }

    /// The bits read (clear where unreadable).
    pub fn bits(&self) -> &AtomicBitSet {
        &self.bits
    }

    /// Whether bit `i`'s word was read.
    pub fn known(&self, i: u64) -> bool {
        self.read_blocks.contains(i / BITS_PER_ARRAY_BLOCK)
    }

    /// Ranges of bits whose words could not be read.
    pub fn unknown(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        let blocks = self.nr_bits.div_ceil(BITS_PER_ARRAY_BLOCK);
        for k in 0..blocks {
            if self.read_blocks.contains(k) {
                continue;
            }
            let r = k * BITS_PER_ARRAY_BLOCK..((k + 1) * BITS_PER_ARRAY_BLOCK).min(self.nr_bits);
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }
}

impl ArrayVisitor for BitsetCollector {
    fn visit(&self, index: u64, block: ArrayBlockView<'_>) -> Result<(), String> {
        let first = index * max_entries_for(WORD_SIZE) as u64;
        for (i, word) in block.values_u64().enumerate() {
            let w = first + i as u64;
            self.bits.or_word(w, word & word_mask(w, self.nr_bits));
        }
        if index < self.read_blocks.nr_words() * 64 {
            self.read_blocks.insert(index);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::builder::BitsetBuilder;
    use super::*;
    use crate::io::BLOCK_SIZE;
    use crate::pdata::array::walk::walk_arrays;
    use crate::pdata::btree::walk::Walker;
    use crate::pdata::refcount::RefCounter;
    use std::path::Path;

    /// A bitset of `nr_bits` with `set` (ascending) written by the builder.
    fn built(nr_bits: u64, set: &[Range<u64>]) -> (Vec<u8>, u64) {
        let nr_blocks = builder::blocks_needed(nr_bits) + 2;
        crate::pdata::array::testing::write_image(nr_blocks, |w| {
            let mut b = BitsetBuilder::new(nr_bits);
            for r in set {
                if r.end - r.start == 1 {
                    b.set(w, r.start).unwrap();
                } else {
                    b.set_range(w, r.clone()).unwrap();
                }
            }
            b.finish(w).unwrap()
        })
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn bits_round_trip_through_the_builder() {
        let cases: Vec<(u64, Vec<Range<u64>>)> = vec![
            (0, vec![]),
            (1, vec![0..1]),
            (64, vec![63..64]),
            (1100, vec![1..2, 509..510, 1099..1100]),
            (100_000, vec![0..1, 62..130, 32_575..32_577, 65_000..99_999]),
        ];
        for (nr_bits, set) in cases {
            let (image, root) = built(nr_bits, &set);
            let src = BlockSource::from_bytes(&image, Path::new("bits")).unwrap();
            let view = BitsetView::read(&src, "bits", root, nr_bits);
            assert!(
                view.is_intact(),
                "{nr_bits}: {:?}",
                view.array().first_problem()
            );
            let want: Vec<u64> = set.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(view.ones().collect::<Vec<_>>(), want, "{nr_bits}");
            for &i in &want {
                assert_eq!(view.get(i), Some(true));
            }
            assert_eq!(view.get(nr_bits), None);

            // The check walk gathers the same bits and counts every block.
            let refs = RefCounter::for_metadata(src.nr_blocks());
            let c = BitsetCollector::new(nr_bits, u64::MAX);
            let walker = Walker::new(&src, &refs, true);
            let out = walk_arrays(&walker, &[c.walk("bits", root)]);
            assert!(out[0].is_clean(), "{:?}", out[0]);
            let got: Vec<u64> = (0..nr_bits).filter(|&i| c.bits().contains(i)).collect();
            assert_eq!(got, want);
            assert!(c.unknown().is_empty());
        }
    }

    #[test]
    fn the_dirty_bitset_of_the_worked_example() {
        // format-cache-era §6.2: 1100 cache blocks, dirty 1 and 509: word 0
        // is 0x2, word 7 is 1 << 61, in one array block of 18 words.
        let (image, root) = built(1100, &[1..2, 509..510]);
        let src = BlockSource::from_bytes(&image, Path::new("bits")).unwrap();
        let view = BitsetView::read(&src, "dirty", root, 1100);
        assert_eq!(view.array().len(), 18);
        assert_eq!(view.word(0), Some(2));
        assert_eq!(view.word(7), Some(1 << 61));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn stray_bits_past_the_end_are_ignored() {
        let (mut image, root) = built(70, &[69..70]);
        // Set bit 70 (beyond the end) in word 1 by hand.
        let blk = 1usize; // the first block written is the array block
        let at = blk * BLOCK_SIZE + 24 + 8;
        image[at] |= 1 << 6;
        crate::io::checksum::seal(
            &mut image[blk * BLOCK_SIZE..(blk + 1) * BLOCK_SIZE],
            crate::io::BlockKind::Array,
        );
        let src = BlockSource::from_bytes(&image, Path::new("bits")).unwrap();
        let view = BitsetView::read(&src, "bits", root, 70);
        assert_eq!(view.ones().collect::<Vec<_>>(), vec![69]);
    }
}
