//! A set of u64 numbers that arrive in no particular order but cluster
//! (the origin blocks of a cache's mappings): bitmap pages of 2^15
//! numbers, found by hash, while the numbers are dense enough to fill
//! them; a roaring bitmap once they are not. Inserting into roaring's
//! sorted arrays one number at a time moved memory for every insert and
//! was most of a dense cache restore's validation.

use roaring::RoaringTreemap;

use super::block_hash::BlockMap;

const PAGE_BITS: u32 = 15;
const PAGE_WORDS: usize = 1 << (PAGE_BITS - 6);
const PAGE_BYTES: u64 = (PAGE_WORDS * 8) as u64;

/// Bytes per member the pages may cost, beyond the first 4 MiB, before
/// the set turns to roaring (which costs about 2 bytes per member).
const BYTES_PER_MEMBER: u64 = 16;
const FREE_BYTES: u64 = 4 << 20;

#[derive(Default)]
pub struct PagedSet {
    /// (page number, its bits), in the order pages were first needed.
    pages: Vec<(u64, Box<[u64; PAGE_WORDS]>)>,
    /// Where each page number's bits are in `pages`.
    index: BlockMap<u32>,
    /// The page of the last insert: origins come in runs, and a run's
    /// numbers share a page, so most inserts skip the hash lookup.
    last: Option<(u64, u32)>,
    sparse: Option<RoaringTreemap>,
    len: u64,
}

impl PagedSet {
    pub fn new() -> PagedSet {
        PagedSet::default()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `n`; false if it was there already.
    pub fn insert(&mut self, n: u64) -> bool {
        if let Some(r) = &mut self.sparse {
            let new = r.insert(n);
            self.len += new as u64;
            return new;
        }
        let key = n >> PAGE_BITS;
        let at = match self.last {
            Some((k, at)) if k == key => at,
            _ => {
                let next = self.pages.len() as u32;
                let at = *self.index.entry(key).or_insert(next);
                if at == next {
                    self.pages.push((key, Box::new([0; PAGE_WORDS])));
                }
                self.last = Some((key, at));
                at
            }
        };
        let page = &mut self.pages[at as usize].1;
        let bit = n & ((1 << PAGE_BITS) - 1);
        let (w, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        let new = page[w] & mask == 0;
        page[w] |= mask;
        self.len += new as u64;
        if self.pages.len() as u64 * PAGE_BYTES > FREE_BYTES + self.len * BYTES_PER_MEMBER {
            self.move_to_roaring();
        }
        new
    }

    pub fn contains(&self, n: u64) -> bool {
        match &self.sparse {
            Some(r) => r.contains(n),
            None => self.index.get(&(n >> PAGE_BITS)).is_some_and(|&at| {
                let bit = n & ((1 << PAGE_BITS) - 1);
                self.pages[at as usize].1[(bit / 64) as usize] & (1 << (bit % 64)) != 0
            }),
        }
    }

    fn move_to_roaring(&mut self) {
        let mut pages = std::mem::take(&mut self.pages);
        pages.sort_unstable_by_key(|(k, _)| *k);
        let mut r = RoaringTreemap::new();
        for (k, page) in &pages {
            let base = k << PAGE_BITS;
            let members = page.iter().enumerate().flat_map(|(w, &word)| {
                (0..64)
                    .filter(move |b| word & (1 << b) != 0)
                    .map(move |b| base + w as u64 * 64 + b)
            });
            // Pages in ascending order, members ascending within each.
            r.append(members).expect("members in ascending order");
        }
        self.index = BlockMap::default();
        self.last = None;
        self.sparse = Some(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense numbers stay in pages, scattered ones move to roaring;
    /// either way the set answers as a plain set does.
    #[test]
    fn answers_as_a_set_dense_or_scattered() {
        for (step, sparse) in [(3u64, false), (1 << 40, true)] {
            let mut s = PagedSet::new();
            let mut plain = std::collections::BTreeSet::new();
            let mut x = 12345u64;
            for _ in 0..100_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (x >> 40) % 200_000 * step;
                assert_eq!(s.insert(n), plain.insert(n), "{n}");
            }
            assert_eq!(s.sparse.is_some(), sparse);
            assert_eq!(s.len(), plain.len() as u64);
            for n in [0, 3, 6, step, 7 * step, 199_999 * step, 200_000 * step] {
                assert_eq!(s.contains(n), plain.contains(&n), "{n}");
            }
        }
    }
}
