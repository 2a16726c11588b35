//! Comparing the counts a space map stores with the counts computed from
//! every structure that references the blocks.

use rayon::prelude::*;

use crate::io::{BlockKind, BlockSource};
use crate::pdata::refcount::RefCounter;

use super::bitmap::{self, ENTRIES_PER_BITMAP, OVERFLOW};
use super::disk::{SpaceMapProblem, StoredSpaceMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Discrepancy {
    /// Stored > 0 but nothing references the block: space lost, no harm
    /// to data (the kernel's bootstrap-mode bug left these).
    Leaked,
    /// Stored > computed > 0: the block will never be freed; no harm.
    OverCounted,
    /// 0 < stored < computed: freeing one user frees the block for the
    /// others to be overwritten (the shared-leaf and FILO refcount bugs).
    UnderCounted,
    /// Stored 0 but referenced: the next allocation overwrites it.
    FreeButReferenced,
}

impl Discrepancy {
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Discrepancy::UnderCounted | Discrepancy::FreeButReferenced
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Discrepancy::Leaked => "leaked",
            Discrepancy::OverCounted => "over-counted",
            Discrepancy::UnderCounted => "under-counted",
            Discrepancy::FreeButReferenced => "referenced but marked free",
        }
    }

    pub fn classify(stored: u32, computed: u32) -> Option<Discrepancy> {
        use std::cmp::Ordering::*;
        match (stored.cmp(&computed), stored, computed) {
            (Equal, _, _) => None,
            (Greater, _, 0) => Some(Discrepancy::Leaked),
            (Greater, _, _) => Some(Discrepancy::OverCounted),
            (Less, 0, _) => Some(Discrepancy::FreeButReferenced),
            (Less, _, _) => Some(Discrepancy::UnderCounted),
        }
    }
}

/// Consecutive blocks with the same discrepancy and the same counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiffRun {
    pub kind: Discrepancy,
    pub begin: u64,
    pub end: u64,
    pub stored: u32,
    pub computed: u32,
}

/// A bookkeeping field that disagrees with the bitmaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterMismatch {
    pub bitmap: Option<u64>,
    pub block: Option<u64>,
    pub field: &'static str,
    pub recorded: u64,
    pub actual: u64,
}

#[derive(Debug, Default)]
pub struct Reconciliation {
    pub runs: Vec<DiffRun>,
    pub counters: Vec<CounterMismatch>,
    pub problems: Vec<SpaceMapProblem>,
}

struct BitmapResult {
    runs: Vec<DiffRun>,
    allocated: u64,
    counters: Vec<CounterMismatch>,
    problem: Option<SpaceMapProblem>,
}

/// Swaps the two bits of every entry so that a stored bitmap word reads
/// like a `RefCounter` word (count's high bit above its low bit).
#[inline]
fn natural(word: u64) -> u64 {
    const LOW: u64 = 0x5555_5555_5555_5555;
    ((word & LOW) << 1) | ((word >> 1) & LOW)
}

/// Entries of a natural-order word that are non-zero, as one bit each.
#[inline]
fn nonzero_mask(word: u64) -> u64 {
    (word | (word >> 1)) & 0x5555_5555_5555_5555
}

pub fn reconcile(src: &BlockSource, sm: &StoredSpaceMap, computed: &RefCounter) -> Reconciliation {
    let nr_blocks = sm.root.nr_blocks;
    let results: Vec<BitmapResult> = sm
        .bitmaps
        .par_iter()
        .enumerate()
        .map(|(i, ie)| match ie {
            Some(ie) => check_bitmap(src, sm, computed, i as u64, *ie, nr_blocks),
            None => BitmapResult {
                runs: Vec::new(),
                allocated: 0,
                counters: Vec::new(),
                problem: None,
            },
        })
        .collect();

    let mut out = Reconciliation::default();
    let mut allocated = 0;
    for r in results {
        allocated += r.allocated;
        merge_runs(&mut out.runs, r.runs);
        out.counters.extend(r.counters);
        out.problems.extend(r.problem);
    }
    if out.problems.is_empty() && allocated != sm.root.nr_allocated {
        out.counters.push(CounterMismatch {
            bitmap: None,
            block: None,
            field: "nr_allocated",
            recorded: sm.root.nr_allocated,
            actual: allocated,
        });
    }
    out
}

fn merge_runs(into: &mut Vec<DiffRun>, runs: Vec<DiffRun>) {
    for r in runs {
        match into.last_mut() {
            Some(last)
                if last.end == r.begin
                    && last.kind == r.kind
                    && last.stored == r.stored
                    && last.computed == r.computed =>
            {
                last.end = r.end
            }
            _ => into.push(r),
        }
    }
}

fn check_bitmap(
    src: &BlockSource,
    sm: &StoredSpaceMap,
    computed: &RefCounter,
    index: u64,
    ie: bitmap::IndexEntry,
    nr_blocks: u64,
) -> BitmapResult {
    let mut res = BitmapResult {
        runs: Vec::new(),
        allocated: 0,
        counters: Vec::new(),
        problem: None,
    };
    let bitmap = match src.checked(ie.blocknr, BlockKind::Bitmap) {
        Ok(b) => b,
        Err(e) => {
            res.problem = Some(SpaceMapProblem {
                block: Some(ie.blocknr),
                message: format!("bitmap {index} at block {}: {}", ie.blocknr, e.reason()),
            });
            return res;
        }
    };
    let first = index * ENTRIES_PER_BITMAP;
    let count = (nr_blocks - first).min(ENTRIES_PER_BITMAP);
    let mut zeros_in_range = 0u64;
    let mut first_free: Option<u64> = None;
    for w in 0..count.div_ceil(32) as usize {
        let base = first + w as u64 * 32;
        let in_word = (count - w as u64 * 32).min(32);
        let valid = if in_word == 32 {
            u64::MAX
        } else {
            (1u64 << (2 * in_word)) - 1
        };
        let stored = natural(bitmap::word(bitmap, w)) & valid;
        let ours = computed.word((base / 32) as usize) & valid;
        let nz = nonzero_mask(stored);
        let zeros = in_word - nz.count_ones() as u64;
        zeros_in_range += zeros;
        res.allocated += nz.count_ones() as u64;
        if zeros > 0 && first_free.is_none() {
            let j = (!nz & 0x5555_5555_5555_5555 & valid).trailing_zeros() as u64 / 2;
            first_free = Some(w as u64 * 32 + j);
        }
        // Fast path: identical and no saturated entries to look up.
        let saturated = stored & (stored >> 1) & 0x5555_5555_5555_5555;
        if stored == ours && saturated == 0 {
            continue;
        }
        for j in 0..in_word {
            let b = base + j;
            let s2 = ((stored >> (2 * j)) & 3) as u8;
            let c2 = ((ours >> (2 * j)) & 3) as u8;
            if s2 == c2 && s2 != OVERFLOW {
                continue;
            }
            let s = if s2 == OVERFLOW {
                sm.overflow.get(&b).copied().unwrap_or(0)
            } else {
                s2 as u32
            };
            let c = computed.get(b);
            if s2 == OVERFLOW && s < 3 {
                res.counters.push(CounterMismatch {
                    bitmap: Some(index),
                    block: Some(b),
                    field: "ref-count tree entry (bitmap says 3 or more)",
                    recorded: s as u64,
                    actual: 3,
                });
            }
            if let Some(kind) = Discrepancy::classify(s, c) {
                merge_runs(
                    &mut res.runs,
                    vec![DiffRun {
                        kind,
                        begin: b,
                        end: b + 1,
                        stored: s,
                        computed: c,
                    }],
                );
            }
        }
    }
    // The kernel starts every bitmap with nr_free = 16320, even the last,
    // partial one, so entries past the end count as free there.
    let zeros_whole = zeros_in_range + (ENTRIES_PER_BITMAP - count);
    if ie.nr_free as u64 != zeros_in_range && ie.nr_free as u64 != zeros_whole {
        res.counters.push(CounterMismatch {
            bitmap: Some(index),
            block: Some(ie.blocknr),
            field: "nr_free",
            recorded: ie.nr_free as u64,
            actual: zeros_in_range,
        });
    }
    if let Some(ff) = first_free {
        if (ie.none_free_before as u64) > ff {
            res.counters.push(CounterMismatch {
                bitmap: Some(index),
                block: Some(ie.blocknr),
                field: "none_free_before",
                recorded: ie.none_free_before as u64,
                actual: ff,
            });
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(Discrepancy::classify(1, 1), None);
        assert_eq!(Discrepancy::classify(1, 0), Some(Discrepancy::Leaked));
        assert_eq!(Discrepancy::classify(2, 1), Some(Discrepancy::OverCounted));
        assert_eq!(Discrepancy::classify(1, 2), Some(Discrepancy::UnderCounted));
        assert_eq!(
            Discrepancy::classify(0, 1),
            Some(Discrepancy::FreeButReferenced)
        );
    }

    #[test]
    fn natural_order_swaps_pairs() {
        // Stored count 1 for entry 0 is the upper bit of the pair.
        assert_eq!(natural(0b10), 0b01);
        assert_eq!(natural(0b01), 0b10);
        assert_eq!(natural(0b11), 0b11);
        assert_eq!(nonzero_mask(0b0110), 0b0101);
    }
}
