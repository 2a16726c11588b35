//! Computed reference counts, shared between worker threads.
//!
//! Two bits per block in atomic words (0, 1, 2, or 3 = "3 or more"), with
//! the rare counts above three kept exactly in sharded maps: a 16 GiB
//! metadata device (4 M blocks) costs 1 MiB, a pool of 2^28 data blocks
//! 64 MiB.
//!
//! Metadata blocks are few and often shared many times over (every
//! snapshot adds a reference to each shared node), so a counter made with
//! `for_metadata` keeps a plain 32-bit count per block instead when that
//! stays small: one atomic add per reference, no overflow maps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

const SHARDS: usize = 64;
const PER_WORD: u64 = 32;

/// Zeroed atomic words from a zeroed allocation: the pages of a large,
/// sparsely used counter are only touched where blocks are counted.
fn zeroed_atomics(n: usize) -> Vec<AtomicU64> {
    let mut words = std::mem::ManuallyDrop::new(vec![0u64; n]);
    let (ptr, len, cap) = (words.as_mut_ptr(), words.len(), words.capacity());
    // SAFETY: AtomicU64 has the size and alignment of u64, and all-zero
    // bytes are a valid AtomicU64; the allocation is handed over whole.
    unsafe { Vec::from_raw_parts(ptr as *mut AtomicU64, len, cap) }
}

fn zeroed_atomics32(n: usize) -> Vec<AtomicU32> {
    let mut words = std::mem::ManuallyDrop::new(vec![0u32; n]);
    let (ptr, len, cap) = (words.as_mut_ptr(), words.len(), words.capacity());
    // SAFETY: as above, for AtomicU32 and u32.
    unsafe { Vec::from_raw_parts(ptr as *mut AtomicU32, len, cap) }
}

/// What an update first guesses a word holds. A counter's pages are
/// mapped on first touch; a first touch that reads maps the shared zero
/// page and the write after it must copy that page and flush every
/// core's TLB (an IPI per 4 KiB page: 11 % of thin_check's time on m50).
/// A compare-exchange against zero is a write from the start, and is
/// right the first time for most words.
const UNTOUCHED: u64 = 0;

/// The largest counter `for_metadata` keeps dense: 8 M blocks (32 GiB of
/// metadata, more than a metadata device can be) cost 32 MiB.
const DENSE_LIMIT: u64 = 1 << 23;

/// Bit j of `lanes` moved to bit 2j: a one in each chosen two-bit lane.
#[inline]
pub(crate) fn spread_lanes(lanes: u32) -> u64 {
    let mut x = lanes as u64;
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

pub struct RefCounter {
    /// Exact counts, one per block, when the counter is dense (then
    /// `words` is empty).
    dense: Vec<AtomicU32>,
    words: Vec<AtomicU64>,
    /// Count minus three, for blocks whose two bits are saturated.
    overflow: Vec<Mutex<HashMap<u64, u32>>>,
    nr_blocks: u64,
}

impl RefCounter {
    pub fn new(nr_blocks: u64) -> RefCounter {
        let nr_words = nr_blocks.div_ceil(PER_WORD) as usize;
        RefCounter {
            dense: Vec::new(),
            words: zeroed_atomics(nr_words),
            overflow: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            nr_blocks,
        }
    }

    /// A counter for metadata blocks: dense when `nr_blocks` is small
    /// enough (a size read from damaged metadata may not be).
    pub fn for_metadata(nr_blocks: u64) -> RefCounter {
        if nr_blocks > DENSE_LIMIT {
            return RefCounter::new(nr_blocks);
        }
        RefCounter {
            dense: zeroed_atomics32(nr_blocks as usize),
            words: Vec::new(),
            overflow: Vec::new(),
            nr_blocks,
        }
    }

    fn is_dense(&self) -> bool {
        self.words.is_empty() && !self.dense.is_empty()
    }

    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    /// Adds one reference to block `b`, which must be below `nr_blocks`.
    /// Returns the count before the increment, saturated at 3.
    #[inline]
    pub fn inc(&self, b: u64) -> u8 {
        debug_assert!(b < self.nr_blocks);
        if self.is_dense() {
            return self.dense[b as usize]
                .fetch_add(1, Ordering::Relaxed)
                .min(3) as u8;
        }
        let word = &self.words[(b / PER_WORD) as usize];
        let shift = 2 * (b % PER_WORD);
        let mut cur = UNTOUCHED;
        loop {
            let v = ((cur >> shift) & 3) as u8;
            if v == 3 {
                *self.shard(b).lock().unwrap().entry(b).or_insert(0) += 1;
                return 3;
            }
            match word.compare_exchange_weak(
                cur,
                cur + (1u64 << shift),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return v,
                Err(now) => cur = now,
            }
        }
    }

    /// Adds one reference to each of `blocks`, which must lie in one
    /// 32-block word (block / 32 == `word`) and be distinct. One atomic
    /// update serves them all unless one of them is already saturated.
    #[inline]
    pub fn inc_word(&self, word: u64, lanes: u32) {
        if self.is_dense() {
            let mut rest = lanes;
            while rest != 0 {
                self.inc(word * PER_WORD + rest.trailing_zeros() as u64);
                rest &= rest - 1;
            }
            return;
        }
        let add = spread_lanes(lanes);
        let w = &self.words[word as usize];
        let mut cur = UNTOUCHED;
        loop {
            // A lane at 3 would carry into its neighbour.
            let saturated = cur & (cur >> 1) & add;
            if saturated != 0 {
                for j in 0..32 {
                    if lanes & (1 << j) != 0 {
                        self.inc(word * PER_WORD + j);
                    }
                }
                return;
            }
            match w.compare_exchange_weak(cur, cur + add, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Adds one reference to each block of `blocks`, a word at a time.
    pub fn inc_range(&self, blocks: std::ops::Range<u64>) {
        debug_assert!(blocks.end <= self.nr_blocks);
        let mut b = blocks.start;
        while b < blocks.end {
            let word = b / PER_WORD;
            let first = (b % PER_WORD) as u32;
            let n = (blocks.end - b).min(PER_WORD - first as u64) as u32;
            let lanes = if n == 32 {
                u32::MAX
            } else {
                ((1u32 << n) - 1) << first
            };
            self.inc_word(word, lanes);
            b += n as u64;
        }
    }

    /// How many blocks of `blocks` have a count of exactly one, a word
    /// at a time.
    pub fn count_exactly_one(&self, blocks: std::ops::Range<u64>) -> u64 {
        if self.is_dense() {
            return blocks.filter(|&b| self.get(b) == 1).count() as u64;
        }
        let mut n = 0;
        let mut b = blocks.start;
        while b < blocks.end {
            let word = b / PER_WORD;
            let first = b % PER_WORD;
            let len = (blocks.end - b).min(PER_WORD - first);
            let lanes = if len == PER_WORD {
                u32::MAX
            } else {
                ((1u32 << len) - 1) << first
            };
            let w = self.words[word as usize].load(Ordering::Relaxed);
            // A lane holds 1 when its low bit is set and its high bit not.
            let ones = w & !(w >> 1) & 0x5555_5555_5555_5555 & spread_lanes(lanes);
            n += ones.count_ones() as u64;
            b += len;
        }
        n
    }

    #[inline]
    pub fn get(&self, b: u64) -> u32 {
        if self.is_dense() {
            return self.dense[b as usize].load(Ordering::Relaxed);
        }
        let v = self.two_bits(b);
        if v == 3 {
            3 + self.shard(b).lock().unwrap().get(&b).copied().unwrap_or(0)
        } else {
            v as u32
        }
    }

    /// The saturated two-bit count of block `b`.
    #[inline]
    pub fn two_bits(&self, b: u64) -> u8 {
        if self.is_dense() {
            return self.get(b).min(3) as u8;
        }
        let w = self.words[(b / PER_WORD) as usize].load(Ordering::Relaxed);
        ((w >> (2 * (b % PER_WORD))) & 3) as u8
    }

    /// The 32 saturated counts of blocks 32w..32w+32, two bits each in
    /// natural order (count of block 32w+j at bits 2j..2j+2).
    #[inline]
    pub fn word(&self, w: usize) -> u64 {
        if self.is_dense() {
            let first = w * PER_WORD as usize;
            let last = (first + PER_WORD as usize).min(self.dense.len());
            return self.dense[first.min(last)..last]
                .iter()
                .enumerate()
                .fold(0, |word, (j, c)| {
                    word | (c.load(Ordering::Relaxed).min(3) as u64) << (2 * j)
                });
        }
        self.words[w].load(Ordering::Relaxed)
    }

    /// Heap used by the counters (for benchmarks).
    pub fn heap_bytes(&self) -> usize {
        self.dense.len() * 4
            + self.words.len() * 8
            + self
                .overflow
                .iter()
                .map(|m| m.lock().unwrap().capacity() * 16)
                .sum::<usize>()
    }

    fn shard(&self, b: u64) -> &Mutex<HashMap<u64, u32>> {
        &self.overflow[(b as usize) % SHARDS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn counts_past_saturation() {
        let rc = RefCounter::new(100);
        for _ in 0..7 {
            rc.inc(42);
        }
        rc.inc(43);
        assert_eq!(rc.get(42), 7);
        assert_eq!(rc.get(43), 1);
        assert_eq!(rc.get(0), 0);
        assert_eq!(rc.two_bits(42), 3);
    }

    #[test]
    fn word_increments_match_single_ones() {
        let rc = RefCounter::new(64);
        rc.inc(33);
        rc.inc(33);
        rc.inc(33); // saturated: the word update must fall back
        rc.inc_word(1, 0b1011);
        rc.inc_word(1, 0b0011);
        assert_eq!(rc.get(32), 2);
        assert_eq!(rc.get(33), 5);
        assert_eq!(rc.get(34), 0);
        assert_eq!(rc.get(35), 1);
        assert_eq!(rc.get(36), 0);
    }

    #[test]
    fn dense_counters_agree_with_packed_ones() {
        let packed = RefCounter::new(100);
        let dense = RefCounter::for_metadata(100);
        assert!(dense.is_dense());
        for rc in [&packed, &dense] {
            for _ in 0..7 {
                rc.inc(42);
            }
            rc.inc_word(1, 0b1011);
            rc.inc_range(60..100);
            rc.inc(99);
        }
        for b in 0..100 {
            assert_eq!(dense.get(b), packed.get(b), "block {b}");
            assert_eq!(dense.two_bits(b), packed.two_bits(b), "block {b}");
        }
        for w in 0..4 {
            assert_eq!(dense.word(w), packed.word(w), "word {w}");
        }
        assert!(!RefCounter::for_metadata(DENSE_LIMIT + 1).is_dense());
    }

    #[test]
    fn counts_blocks_used_exactly_once() {
        let rc = RefCounter::new(200);
        rc.inc_range(0..100);
        rc.inc_range(30..40);
        for _ in 0..3 {
            rc.inc(50);
        }
        for (range, want) in [
            (0..200, 89u64),
            (0..32, 30),
            (31..33, 0),
            (45..55, 9),
            (100..200, 0),
        ] {
            let slow = range.clone().filter(|&b| rc.get(b) == 1).count() as u64;
            assert_eq!(slow, want, "{range:?}");
            assert_eq!(rc.count_exactly_one(range.clone()), want, "{range:?}");
        }
        let dense = RefCounter::for_metadata(10);
        dense.inc(3);
        dense.inc(4);
        dense.inc(4);
        assert_eq!(dense.count_exactly_one(0..10), 1);
    }

    #[test]
    fn lanes_spread_to_even_bits() {
        for lanes in [0u32, 1, 0b1011, 0x8000_0000, u32::MAX, 0x1234_5678] {
            let want = (0..32)
                .filter(|j| lanes & (1 << j) != 0)
                .fold(0u64, |a, j| a | 1 << (2 * j));
            assert_eq!(spread_lanes(lanes), want);
        }
    }

    #[test]
    fn range_increments_match_single_ones() {
        let rc = RefCounter::new(200);
        rc.inc_range(5..100);
        rc.inc_range(31..33);
        rc.inc_range(64..96);
        rc.inc_range(199..200);
        for b in 0..200 {
            let want = (5..100).contains(&b) as u32
                + (31..33).contains(&b) as u32
                + (64..96).contains(&b) as u32
                + (b == 199) as u32;
            assert_eq!(rc.get(b), want, "block {b}");
        }
    }

    #[test]
    fn concurrent_increments_are_exact() {
        let rc = RefCounter::new(1000);
        (0..8000u64).into_par_iter().for_each(|i| {
            rc.inc(i % 1000);
        });
        assert!((0..1000).all(|b| rc.get(b) == 8));
    }
}
