//! The values of the mapping array and of the bitsets, checked while the
//! array walk hands over each sound array block, and afterwards against
//! each other: origin blocks mapped twice, dirty bits of unmapped blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::io::BlockSource;
use crate::pdata::array::walk::{ArrayVisitor, ArrayWalk};
use crate::pdata::array::{max_entries_for, ArrayBlockView};
use crate::pdata::bitset::{words_for, BitsetCollector, BITS_PER_ARRAY_BLOCK, WORD_SIZE};
use crate::pdata::btree::walk::AtomicBitSet;
use crate::report::findings::{Finding, Location};

use crate::cache::mapping::{Mapping, MappingError, MAPPING_SIZE};
use crate::cache::read::{DIRTY_BITSET, MAPPING_ARRAY};

const PER_BLOCK: u64 = max_entries_for(MAPPING_SIZE) as u64;

/// A slot per array block index recording the metadata block it was
/// read from (0: not read; block 0 is the superblock).
struct BlockOf(Vec<AtomicU64>);

impl BlockOf {
    fn new(nr: u64, cap: u64) -> BlockOf {
        BlockOf((0..nr.min(cap)).map(|_| AtomicU64::new(0)).collect())
    }

    fn set(&self, index: u64, block: u64) {
        if let Some(s) = self.0.get(index as usize) {
            s.store(block, Ordering::Relaxed);
        }
    }

    fn get(&self, index: u64) -> Option<u64> {
        let b = self.0.get(index as usize)?.load(Ordering::Relaxed);
        (b != 0).then_some(b)
    }
}

/// A bitset collector that also remembers where each array block was.
pub struct LocatedBits {
    pub bits: BitsetCollector,
    blocks: BlockOf,
}

impl LocatedBits {
    pub fn new(bits: BitsetCollector, src: &BlockSource) -> LocatedBits {
        let nr = words_for(bits.nr_bits()).div_ceil(max_entries_for(WORD_SIZE) as u64);
        LocatedBits {
            bits,
            blocks: BlockOf::new(nr, src.nr_blocks() + 1),
        }
    }

    /// The array walk that checks the bitset at `root` into this.
    pub fn walk<'v>(&'v self, name: &str, root: u64) -> ArrayWalk<'v> {
        ArrayWalk {
            name: name.to_string(),
            root,
            value_size: WORD_SIZE,
            len: words_for(self.bits.nr_bits()),
            visitor: self,
        }
    }

    /// The metadata block holding bit `i`'s word, if it was read.
    pub fn block_of_bit(&self, i: u64) -> Option<u64> {
        self.blocks.get(i / BITS_PER_ARRAY_BLOCK)
    }
}

impl ArrayVisitor for LocatedBits {
    fn visit(&self, index: u64, block: ArrayBlockView<'_>) -> Result<(), String> {
        self.blocks.set(index, block.blocknr());
        self.bits.visit(index, block)
    }
}

/// Checks each mapping on its own as its block arrives, and gathers what
/// the checks across the array need.
pub struct MappingChecker {
    version: u32,
    origin_blocks: Option<u64>,
    cache_blocks: u64,
    /// Cache blocks with the VALID flag.
    valid: AtomicBitSet,
    blocks: BlockOf,
    /// One past the highest origin block of a valid mapping, and how
    /// many valid mappings there are: what `repeated` plans by.
    origin_end: AtomicU64,
    nr_valid: AtomicU64,
    problems: Mutex<Vec<(u64, MappingError)>>,
}

impl MappingChecker {
    pub fn new(
        src: &BlockSource,
        version: u32,
        cache_blocks: u64,
        origin_blocks: Option<u64>,
    ) -> MappingChecker {
        // No more cache blocks can be read than the device's blocks hold.
        let cap = (src.nr_blocks() + 1).saturating_mul(PER_BLOCK);
        let nr_array_blocks = cache_blocks.div_ceil(PER_BLOCK);
        MappingChecker {
            version,
            origin_blocks,
            cache_blocks,
            valid: AtomicBitSet::new(cache_blocks.min(cap)),
            blocks: BlockOf::new(nr_array_blocks, src.nr_blocks() + 1),
            origin_end: AtomicU64::new(0),
            nr_valid: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
        }
    }

    /// "cache block 5 (array block 0 at block 12)"
    fn place(&self, c: u64) -> String {
        let k = c / PER_BLOCK;
        match self.blocks.get(k) {
            Some(b) => format!("cache block {c} (array block {k} at block {b})"),
            None => format!("cache block {c} (array block {k})"),
        }
    }

    fn located(&self, tree: &str, c: u64, block: Option<u64>) -> Location {
        Location {
            tree: Some(tree.to_string()),
            block,
            keys: Some(format!("[{c}..{}]", c + 1)),
            ..Default::default()
        }
    }

    /// The findings across the array, sorted by cache block: value
    /// problems, origins mapped twice and (format 2) dirty bits of
    /// unmapped blocks. At most `max` are returned; the count of the
    /// rest comes with them.
    /// `src` is read again for the origins mapped twice: holding every
    /// (origin, cache block) pair through the walk cost 16 bytes a
    /// mapping, several times the reference's whole heap on a dense cache.
    pub fn finish(
        &self,
        src: &BlockSource,
        dirty: Option<&LocatedBits>,
        max: usize,
    ) -> (Vec<Finding>, u64) {
        let mut out: Vec<(u64, Finding)> = Vec::new();
        let mut problems = std::mem::take(&mut *self.problems.lock().unwrap());
        problems.sort_by_key(|p| p.0);
        for (c, e) in problems {
            let k = c / PER_BLOCK;
            out.push((
                c,
                Finding::fatal(
                    "mapping_value",
                    format!("{MAPPING_ARRAY}: {}: {e}", self.place(c)),
                )
                .at(self.located(MAPPING_ARRAY, c, self.blocks.get(k))),
            ));
        }

        // Every valid mapping of array block k, as the walk read it.
        let part = |k: usize, sink: &mut dyn FnMut(u64, u32)| {
            let Some(data) = self.blocks.get(k as u64).and_then(|b| src.block(b).ok()) else {
                return;
            };
            let first = k as u64 * PER_BLOCK;
            for (i, v) in ArrayBlockView::new(data).values_u64().enumerate() {
                let m = Mapping::unpack(v);
                if m.is_valid() {
                    sink(m.origin, (first + i as u64) as u32);
                }
            }
        };
        let origins = repeated(
            self.blocks.0.len(),
            part,
            self.origin_end.load(Ordering::Relaxed),
            self.nr_valid.load(Ordering::Relaxed),
        );
        let mut i = 0;
        while i < origins.len() {
            let (o, first) = origins[i];
            let mut j = i + 1;
            while j < origins.len() && origins[j].0 == o {
                let c = origins[j].1 as u64;
                out.push((
                    c,
                    Finding::fatal(
                        "origin_mapped_twice",
                        format!(
                            "{MAPPING_ARRAY}: origin block {o} is mapped by {} and by {}",
                            self.place(first as u64),
                            self.place(c)
                        ),
                    )
                    .at(self.located(
                        MAPPING_ARRAY,
                        c,
                        self.blocks.get(c / PER_BLOCK),
                    )),
                ));
                j += 1;
            }
            i = j;
        }

        if let Some(d) = dirty {
            let words = d.bits.bits().nr_words().min(self.valid.nr_words());
            for w in 0..words {
                let stray = d.bits.bits().word(w) & !self.valid.word(w);
                if stray == 0 {
                    continue;
                }
                let mut bits = stray;
                while bits != 0 {
                    let c = w * 64 + bits.trailing_zeros() as u64;
                    bits &= bits - 1;
                    // Only where the mapping was read: an unreadable
                    // mapping block is reported already.
                    if c >= self.cache_blocks || self.blocks.get(c / PER_BLOCK).is_none() {
                        continue;
                    }
                    let at = d.block_of_bit(c);
                    let where_ = match at {
                        Some(b) => format!(
                            " (bitset array block {} at block {b})",
                            c / BITS_PER_ARRAY_BLOCK
                        ),
                        None => String::new(),
                    };
                    out.push((
                        c,
                        Finding::fatal(
                            "dirty_unmapped",
                            format!(
                                "{DIRTY_BITSET}: cache block {c} is dirty but not mapped{where_}"
                            ),
                        )
                        .at(self.located(DIRTY_BITSET, c, at)),
                    ));
                }
            }
        }
        out.sort_by_key(|(c, _)| *c);
        let unlisted = out.len().saturating_sub(max) as u64;
        out.truncate(max);
        (out.into_iter().map(|(_, f)| f).collect(), unlisted)
    }
}

impl ArrayVisitor for MappingChecker {
    fn visit(&self, index: u64, block: ArrayBlockView<'_>) -> Result<(), String> {
        self.blocks.set(index, block.blocknr());
        let first = index * PER_BLOCK;
        let (mut origin_end, mut nr_valid) = (0, 0);
        let mut problems = Vec::new();
        for (i, v) in block.values_u64().enumerate() {
            let c = first + i as u64;
            let m = Mapping::unpack(v);
            if let Some(e) = m.problem(self.version, self.origin_blocks) {
                problems.push((c, e));
            }
            if m.is_valid() {
                if c < self.valid.nr_words() * 64 {
                    self.valid.insert(c);
                }
                origin_end = origin_end.max(m.origin + 1);
                nr_valid += 1;
            }
        }
        self.origin_end.fetch_max(origin_end, Ordering::Relaxed);
        self.nr_valid.fetch_add(nr_valid, Ordering::Relaxed);
        if !problems.is_empty() {
            self.problems.lock().unwrap().extend(problems);
        }
        Ok(())
    }
}

/// The (origin, cache block) pairs whose origin occurs more than once,
/// sorted, from `nr_parts` parts of the mappings (`part(k, sink)` hands
/// each valid mapping of part k to `sink`), of which there are
/// `nr_valid` with origins below `origin_end`. Where the origins are
/// dense enough a shared bitset over them finds the repeats and only
/// those are gathered, in a second look; otherwise every pair is
/// gathered and sorted (singles are left for the caller to skip).
fn repeated<F>(nr_parts: usize, part: F, origin_end: u64, nr_valid: u64) -> Vec<(u64, u32)>
where
    F: Fn(usize, &mut dyn FnMut(u64, u32)) + Sync,
{
    let gather = |want: &(dyn Fn(u64) -> bool + Sync)| {
        let mut pairs: Vec<(u64, u32)> = (0..nr_parts)
            .into_par_iter()
            .flat_map_iter(|k| {
                let mut out = Vec::new();
                part(k, &mut |o, c| {
                    if want(o) {
                        out.push((o, c));
                    }
                });
                out
            })
            .collect();
        pairs.par_sort_unstable();
        pairs
    };
    if nr_valid == 0 {
        return Vec::new();
    }
    // A bitset no larger than the pairs would be (or 1 MiB).
    let words = origin_end.div_ceil(64);
    if words > (nr_valid * 2).max(1 << 17) {
        return gather(&|_| true);
    }
    let seen: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
    let twice = Mutex::new(Vec::new());
    (0..nr_parts).into_par_iter().for_each(|k| {
        let mut again = Vec::new();
        part(k, &mut |o, _| {
            let (w, bit) = ((o / 64) as usize, 1u64 << (o % 64));
            if seen[w].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
                again.push(o);
            }
        });
        if !again.is_empty() {
            twice.lock().unwrap().extend(again);
        }
    });
    let mut twice = twice.into_inner().unwrap();
    if twice.is_empty() {
        return Vec::new();
    }
    twice.sort_unstable();
    twice.dedup();
    gather(&|o| twice.binary_search(&o).is_ok())
}

#[cfg(test)]
mod tests {
    use super::repeated;

    /// `repeated` over pairs cut into parts of two, as array blocks.
    fn of(pairs: Vec<(u64, u32)>) -> Vec<(u64, u32)> {
        let end = pairs.iter().map(|p| p.0 + 1).max().unwrap_or(0);
        let parts: Vec<&[(u64, u32)]> = pairs.chunks(2).collect();
        let part = |k: usize, sink: &mut dyn FnMut(u64, u32)| {
            for &(o, c) in parts[k] {
                sink(o, c);
            }
        };
        repeated(parts.len(), part, end, pairs.len() as u64)
    }

    #[test]
    fn repeats_are_found_dense_or_sparse() {
        // Dense: the bitset path.
        let dense = vec![(5, 9), (1, 0), (5, 2), (7, 3), (5, 4), (1, 8)];
        assert_eq!(of(dense), vec![(1, 0), (1, 8), (5, 2), (5, 4), (5, 9)]);
        assert_eq!(of(vec![(3, 1), (4, 2)]), vec![]);
        // Sparse (origins near 2^48): sorted; singles stay and are
        // skipped by the caller.
        let sparse = vec![(1 << 47, 3), (9, 1), (1 << 47, 2)];
        assert_eq!(of(sparse), vec![(9, 1), (1 << 47, 2), (1 << 47, 3)]);
        assert_eq!(of(vec![]), vec![]);
    }
}
