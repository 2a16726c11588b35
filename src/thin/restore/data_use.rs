//! What restore's validating pass tracks per data block: whether the
//! device or def being read maps it already (a block mapped twice by one
//! device is an error), and how many devices and defs use it (blocks used
//! three times or more need entries in the space map's overflow tree,
//! which the plan must size).
//!
//! Pools up to `DENSE_LIMIT` blocks get flat arrays, allocated zeroed and
//! so only paged in where blocks are mapped; a run is a few word
//! operations. Larger ones keep roaring sets, whose cost follows the
//! mapped runs rather than the pool's size.

use roaring::RoaringTreemap;

use crate::pdata::refcount::spread_lanes;

/// 2^30 blocks: 256 MiB of counters and 128 MiB of seen bits at most,
/// and address space, not memory, for the blocks never mapped.
const DENSE_LIMIT: u64 = 1 << 30;

/// Blocks per counter word (two bits each).
const PER_COUNT_WORD: u64 = 32;

pub enum DataUses {
    Dense(Dense),
    Sparse(Sparse),
}

impl DataUses {
    pub fn new(nr_data_blocks: u64) -> DataUses {
        if nr_data_blocks <= DENSE_LIMIT {
            DataUses::Dense(Dense::new(nr_data_blocks))
        } else {
            DataUses::Sparse(Sparse::default())
        }
    }

    /// Records one use of `range` by the current device or def; false if
    /// it already maps one of these blocks, or the range ends beyond the
    /// pool (then what this container recorded is unspecified: the
    /// restore stops there).
    pub fn add(&mut self, range: std::ops::Range<u64>) -> bool {
        match self {
            DataUses::Dense(d) => d.add(range),
            DataUses::Sparse(s) => s.add(range),
        }
    }

    /// A new device or def starts.
    pub fn next_container(&mut self) {
        match self {
            DataUses::Dense(d) => d.next_container(),
            DataUses::Sparse(s) => s.seen.clear(),
        }
    }

    /// Blocks used three times or more.
    pub fn at_least_three(&self) -> u64 {
        match self {
            DataUses::Dense(d) => d.at_least_three,
            DataUses::Sparse(s) => s.thrice.len(),
        }
    }
}

pub struct Dense {
    nr_blocks: u64,
    /// Uses per block, two bits each, saturated at 3.
    counts: Vec<u64>,
    /// Blocks the current container maps, a bit each.
    seen: Vec<u64>,
    /// Words of `seen` set in this container, while few enough that
    /// clearing them one by one beats clearing the whole set.
    touched: Vec<u32>,
    touched_all: bool,
    at_least_three: u64,
}

impl Dense {
    fn new(nr_blocks: u64) -> Dense {
        Dense {
            nr_blocks,
            counts: vec![0; nr_blocks.div_ceil(PER_COUNT_WORD) as usize],
            seen: vec![0; nr_blocks.div_ceil(64) as usize],
            touched: Vec::new(),
            touched_all: false,
            at_least_three: 0,
        }
    }

    fn add(&mut self, range: std::ops::Range<u64>) -> bool {
        if range.end > self.nr_blocks {
            return false;
        }
        let mut b = range.start;
        while b < range.end {
            let w = (b / 64) as usize;
            let n = (range.end - b).min(64 - b % 64);
            let mask = lanes(n) << (b % 64);
            let limit = self.seen.len() / 16;
            let word = &mut self.seen[w];
            if *word & mask != 0 {
                return false;
            }
            if *word == 0 && !self.touched_all {
                if self.touched.len() < limit {
                    self.touched.push(w as u32);
                } else {
                    self.touched_all = true;
                    self.touched = Vec::new();
                }
            }
            *word |= mask;
            b += n;
        }
        self.count(range);
        true
    }

    fn count(&mut self, range: std::ops::Range<u64>) {
        let mut b = range.start;
        while b < range.end {
            let w = (b / PER_COUNT_WORD) as usize;
            let first = b % PER_COUNT_WORD;
            let n = (range.end - b).min(PER_COUNT_WORD - first);
            // A one in the low bit of each lane of the run.
            let ones = spread_lanes(lanes(n) as u32) << (2 * first);
            let cur = self.counts[w];
            let saturated = cur & (cur >> 1) & ones;
            let twos = (cur >> 1) & !cur & ones;
            self.at_least_three += twos.count_ones() as u64;
            // Saturated lanes stay at 3; the others go up by one.
            self.counts[w] = cur + (ones & !saturated);
            b += n;
        }
    }

    fn next_container(&mut self) {
        if self.touched_all {
            self.seen.fill(0);
            self.touched_all = false;
        } else {
            for &w in &self.touched {
                self.seen[w as usize] = 0;
            }
        }
        self.touched.clear();
    }
}

/// The low `n` bits set (n <= 64).
fn lanes(n: u64) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

#[derive(Default)]
pub struct Sparse {
    seen: RoaringTreemap,
    once: RoaringTreemap,
    twice: RoaringTreemap,
    thrice: RoaringTreemap,
}

impl Sparse {
    fn add(&mut self, range: std::ops::Range<u64>) -> bool {
        let len = range.end - range.start;
        if self.seen.insert_range(range.clone()) != len {
            return false;
        }
        let mut r = RoaringTreemap::new();
        r.insert_range(range);
        let before = &self.once & &r;
        self.once |= &r;
        if before.is_empty() {
            return true;
        }
        let third = &self.twice & &before;
        self.thrice |= third;
        let second = &before - &self.twice;
        self.twice |= second;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kinds agree on duplicates and on the blocks used three
    /// times, over runs crossing word boundaries and containers large
    /// enough to be cleared whole.
    #[test]
    fn dense_and_sparse_agree() {
        let nr = 5000;
        let mut dense = DataUses::Dense(Dense::new(nr));
        let mut sparse = DataUses::Sparse(Sparse::default());
        let mut x: u64 = 12345;
        let mut rejected = 0;
        for container in 0..40 {
            for _ in 0..if container % 7 == 0 { 400 } else { 20 } {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let start = (x >> 33) % nr;
                let len = 1 + (x >> 20) % 150;
                let range = start..(start + len).min(nr);
                let (d, s) = (dense.add(range.clone()), sparse.add(range.clone()));
                assert_eq!(d, s, "container {container} {range:?}");
                if !d {
                    // A restore stops at the first duplicate.
                    rejected += 1;
                    dense.next_container();
                    sparse.next_container();
                }
            }
            dense.next_container();
            sparse.next_container();
        }
        assert!(rejected > 10, "{rejected}");
        assert!(dense.at_least_three() > 100, "{}", dense.at_least_three());
        assert_eq!(dense.at_least_three(), sparse.at_least_three());
    }

    #[test]
    fn counts_saturate_at_three() {
        let mut d = Dense::new(100);
        for _ in 0..6 {
            assert!(d.add(30..40));
            d.next_container();
        }
        assert_eq!(d.at_least_three, 10);
        assert!(d.add(0..100));
        assert!(!d.add(99..100));
        assert_eq!(d.at_least_three, 10);
        d.next_container();
        assert!(!d.add(99..101), "beyond the pool");
    }
}
