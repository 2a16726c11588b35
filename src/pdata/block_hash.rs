//! Hash maps and sets keyed by block numbers.
//!
//! The standard hasher (SipHash) defends against chosen keys at several
//! times the cost; block numbers come from the metadata being read, and
//! the walks that key maps by them (repair's scan, a dump's sharing
//! analysis) do millions of lookups. One multiply per key spreads
//! neighbouring blocks over the table.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct BlockHasher(u64);

/// An odd constant near 2^64 / golden ratio (Fibonacci hashing).
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for BlockHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(SPREAD);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes its bucket from the low bits and its tag from
        // the top seven: fold the well-mixed high half down.
        self.0 ^ (self.0 >> 32)
    }
}

pub type BlockMap<V> = HashMap<u64, V, BuildHasherDefault<BlockHasher>>;
pub type BlockSet = HashSet<u64, BuildHasherDefault<BlockHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_behave_as_maps() {
        let mut m: BlockMap<u64> = BlockMap::default();
        for b in 0..10_000u64 {
            m.insert(b * 4096, b);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u64).all(|b| m[&(b * 4096)] == b));
        assert!(!m.contains_key(&1));
    }
}
