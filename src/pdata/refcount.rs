//! Computed reference counts, shared between worker threads.
//!
//! Two bits per block in atomic words (0, 1, 2, or 3 = "3 or more"), with
//! the rare counts above three kept exactly in sharded maps: a 16 GiB
//! metadata device (4 M blocks) costs 1 MiB, a pool of 2^28 data blocks
//! 64 MiB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

pub struct RefCounter {
    words: Vec<AtomicU64>,
    /// Count minus three, for blocks whose two bits are saturated.
    overflow: Vec<Mutex<HashMap<u64, u32>>>,
    nr_blocks: u64,
}

impl RefCounter {
    pub fn new(nr_blocks: u64) -> RefCounter {
        let nr_words = nr_blocks.div_ceil(PER_WORD) as usize;
        RefCounter {
            words: zeroed_atomics(nr_words),
            overflow: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            nr_blocks,
        }
    }

    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    /// Adds one reference to block `b`, which must be below `nr_blocks`.
    /// Returns the count before the increment, saturated at 3.
    #[inline]
    pub fn inc(&self, b: u64) -> u8 {
        debug_assert!(b < self.nr_blocks);
        let word = &self.words[(b / PER_WORD) as usize];
        let shift = 2 * (b % PER_WORD);
        let mut cur = word.load(Ordering::Relaxed);
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
        let mut add = 0u64;
        for j in 0..32 {
            if lanes & (1 << j) != 0 {
                add |= 1u64 << (2 * j);
            }
        }
        let w = &self.words[word as usize];
        let mut cur = w.load(Ordering::Relaxed);
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

    #[inline]
    pub fn get(&self, b: u64) -> u32 {
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
        let w = self.words[(b / PER_WORD) as usize].load(Ordering::Relaxed);
        ((w >> (2 * (b % PER_WORD))) & 3) as u8
    }

    /// The 32 saturated counts of blocks 32w..32w+32, two bits each in
    /// natural order (count of block 32w+j at bits 2j..2j+2).
    #[inline]
    pub fn word(&self, w: usize) -> u64 {
        self.words[w].load(Ordering::Relaxed)
    }

    /// Heap used by the counters (for benchmarks).
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 8
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
    fn concurrent_increments_are_exact() {
        let rc = RefCounter::new(1000);
        (0..8000u64).into_par_iter().for_each(|i| {
            rc.inc(i % 1000);
        });
        assert!((0..1000).all(|b| rc.get(b) == 8));
    }
}
