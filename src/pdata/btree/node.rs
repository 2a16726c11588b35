//! A zero-copy view of one btree node.
//!
//! Layout (all little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | checksum (salt: btree node) |
//! | 4 | 4 | flags: 1 internal, 2 leaf |
//! | 8 | 8 | block number of this node |
//! | 16 | 4 | nr_entries |
//! | 20 | 4 | max_entries |
//! | 24 | 4 | value_size |
//! | 28 | 4 | padding |
//! | 32 | 8 × max_entries | keys |
//! | ... | value_size × max_entries | values |

use std::fmt;

use crate::io::{le_u32, le_u64, BLOCK_SIZE};

pub const NODE_HEADER_SIZE: usize = 32;
pub const INTERNAL_NODE: u32 = 1;
pub const LEAF_NODE: u32 = 2;
const FLAGS_OFFSET: usize = 4;
const BLOCKNR_OFFSET: usize = 8;
const NR_ENTRIES_OFFSET: usize = 16;
const MAX_ENTRIES_OFFSET: usize = 20;
const VALUE_SIZE_OFFSET: usize = 24;
pub const KEY_SIZE: usize = 8;
/// Internal nodes hold child block numbers.
pub const INTERNAL_VALUE_SIZE: u32 = 8;

/// How many entries fit in a node with values of `value_size` bytes, as the
/// kernel computes it (rounded down to a multiple of 3).
pub const fn max_entries_for(value_size: usize) -> u32 {
    let n = (BLOCK_SIZE - NODE_HEADER_SIZE) / (KEY_SIZE + value_size);
    (n / 3 * 3) as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Internal,
    Leaf,
}

/// What can be wrong with a node on its own (without its parent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    BadFlags(u32),
    ValueSizeMismatch { expected: u32, found: u32 },
    MaxEntriesTooLarge(u32),
    MaxEntriesNotDivisibleBy3(u32),
    NrEntriesTooLarge { nr_entries: u32, max_entries: u32 },
    KeysOutOfOrder { index: u32, prev: u64, key: u64 },
    DuplicateKey { index: u32, key: u64 },
    Empty,
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::BadFlags(x) => {
                write!(f, "bad node flags {x:#x} (neither internal nor leaf)")
            }
            NodeError::ValueSizeMismatch { expected, found } => {
                write!(f, "value_size mismatch: expected {expected}, found {found}")
            }
            NodeError::MaxEntriesTooLarge(m) => write!(f, "max_entries is too large ({m})"),
            NodeError::MaxEntriesNotDivisibleBy3(m) => {
                write!(f, "max_entries is not divisible by 3 ({m})")
            }
            NodeError::NrEntriesTooLarge {
                nr_entries,
                max_entries,
            } => write!(f, "nr_entries > max_entries ({nr_entries} > {max_entries})"),
            NodeError::KeysOutOfOrder { index, prev, key } => {
                write!(
                    f,
                    "keys out of order (entry {index}: key {key} after {prev})"
                )
            }
            NodeError::DuplicateKey { index, key } => {
                write!(f, "duplicate key {key} (entry {index})")
            }
            NodeError::Empty => write!(f, "no keys present"),
        }
    }
}

/// A btree node borrowed from a block. Accessors never copy.
#[derive(Clone, Copy)]
pub struct NodeView<'a> {
    data: &'a [u8],
}

impl<'a> NodeView<'a> {
    /// Wraps a 4096-byte block. No checks: call `validate` before trusting
    /// entry counts.
    pub fn new(data: &'a [u8]) -> NodeView<'a> {
        debug_assert_eq!(data.len(), BLOCK_SIZE);
        NodeView { data }
    }

    pub fn flags(&self) -> u32 {
        le_u32(self.data, FLAGS_OFFSET)
    }
    pub fn blocknr(&self) -> u64 {
        le_u64(self.data, BLOCKNR_OFFSET)
    }
    pub fn nr_entries(&self) -> u32 {
        le_u32(self.data, NR_ENTRIES_OFFSET)
    }
    pub fn max_entries(&self) -> u32 {
        le_u32(self.data, MAX_ENTRIES_OFFSET)
    }
    pub fn value_size(&self) -> u32 {
        le_u32(self.data, VALUE_SIZE_OFFSET)
    }

    pub fn kind(&self) -> Option<NodeKind> {
        match self.flags() {
            INTERNAL_NODE => Some(NodeKind::Internal),
            LEAF_NODE => Some(NodeKind::Leaf),
            _ => None,
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.flags() == LEAF_NODE
    }

    /// Checks what a node can be checked for on its own. `leaf_value_size`
    /// is the value size the tree's leaves must have. After this succeeds,
    /// `key`, `value` and friends are in bounds for `0..nr_entries`.
    pub fn validate(&self, leaf_value_size: u32, strict: bool) -> Result<NodeKind, NodeError> {
        let kind = self.kind().ok_or(NodeError::BadFlags(self.flags()))?;
        let expected = match kind {
            NodeKind::Internal => INTERNAL_VALUE_SIZE,
            NodeKind::Leaf => leaf_value_size,
        };
        if self.value_size() != expected {
            return Err(NodeError::ValueSizeMismatch {
                expected,
                found: self.value_size(),
            });
        }
        let max = self.max_entries();
        let room = (BLOCK_SIZE - NODE_HEADER_SIZE) as u64 / (KEY_SIZE as u64 + expected as u64);
        if max as u64 > room {
            return Err(NodeError::MaxEntriesTooLarge(max));
        }
        if strict && !max.is_multiple_of(3) {
            return Err(NodeError::MaxEntriesNotDivisibleBy3(max));
        }
        let nr = self.nr_entries();
        if nr > max {
            return Err(NodeError::NrEntriesTooLarge {
                nr_entries: nr,
                max_entries: max,
            });
        }
        if kind == NodeKind::Internal && nr == 0 {
            return Err(NodeError::Empty);
        }
        let mut prev = None;
        for i in 0..nr {
            let key = self.key(i);
            if let Some(p) = prev {
                if key == p {
                    return Err(NodeError::DuplicateKey { index: i, key });
                }
                if key < p {
                    return Err(NodeError::KeysOutOfOrder {
                        index: i,
                        prev: p,
                        key,
                    });
                }
            }
            prev = Some(key);
        }
        Ok(kind)
    }

    #[inline]
    pub fn key(&self, i: u32) -> u64 {
        le_u64(self.data, NODE_HEADER_SIZE + i as usize * KEY_SIZE)
    }

    pub fn first_key(&self) -> Option<u64> {
        (self.nr_entries() > 0).then(|| self.key(0))
    }

    pub fn last_key(&self) -> Option<u64> {
        let n = self.nr_entries();
        (n > 0).then(|| self.key(n - 1))
    }

    /// Keys of a node whose header may be damaged: the first and last
    /// key if the entry count is plausible, without trusting anything else.
    pub fn key_bounds_unchecked(&self) -> Option<(u64, u64)> {
        let n = self.nr_entries() as usize;
        let room = (BLOCK_SIZE - NODE_HEADER_SIZE) / KEY_SIZE;
        if n == 0 || n > room || n > self.max_entries() as usize {
            return None;
        }
        Some((self.key(0), self.key(n as u32 - 1)))
    }

    #[inline]
    fn values_offset(&self) -> usize {
        NODE_HEADER_SIZE + self.max_entries() as usize * KEY_SIZE
    }

    #[inline]
    pub fn value(&self, i: u32) -> &'a [u8] {
        let vs = self.value_size() as usize;
        let start = self.values_offset() + i as usize * vs;
        &self.data[start..start + vs]
    }

    #[inline]
    pub fn value_u64(&self, i: u32) -> u64 {
        le_u64(self.data, self.values_offset() + i as usize * 8)
    }

    #[inline]
    pub fn value_u32(&self, i: u32) -> u32 {
        le_u32(self.data, self.values_offset() + i as usize * 4)
    }

    /// Keys and 8-byte values of a validated node, in order (nothing if
    /// the header would reach past the block).
    pub fn entries_u64(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let keys = self.keys_bytes();
        let values = self.values_bytes(8);
        let n = keys.len().min(values.len()) / 8;
        keys[..n * 8]
            .chunks_exact(8)
            .zip(values[..n * 8].chunks_exact(8))
            .map(|(k, v)| {
                (
                    u64::from_le_bytes(k.try_into().unwrap()),
                    u64::from_le_bytes(v.try_into().unwrap()),
                )
            })
    }

    /// The 8-byte values of a validated node, in order.
    pub fn values_u64(&self) -> impl Iterator<Item = u64> + 'a {
        self.values_bytes(8)
            .chunks_exact(8)
            .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
    }

    fn keys_bytes(&self) -> &'a [u8] {
        let n = self.nr_entries() as usize;
        self.data
            .get(NODE_HEADER_SIZE..NODE_HEADER_SIZE + n * KEY_SIZE)
            .unwrap_or(&[])
    }

    fn values_bytes(&self, value_size: usize) -> &'a [u8] {
        let n = self.nr_entries() as usize;
        let start = self.values_offset();
        self.data.get(start..start + n * value_size).unwrap_or(&[])
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds a node block for tests.
    pub fn make_node(flags: u32, value_size: u32, entries: &[(u64, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        let max = max_entries_for(value_size as usize);
        b[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&flags.to_le_bytes());
        b[NR_ENTRIES_OFFSET..NR_ENTRIES_OFFSET + 4]
            .copy_from_slice(&(entries.len() as u32).to_le_bytes());
        b[MAX_ENTRIES_OFFSET..MAX_ENTRIES_OFFSET + 4].copy_from_slice(&max.to_le_bytes());
        b[VALUE_SIZE_OFFSET..VALUE_SIZE_OFFSET + 4].copy_from_slice(&value_size.to_le_bytes());
        let voff = NODE_HEADER_SIZE + max as usize * KEY_SIZE;
        for (i, (k, v)) in entries.iter().enumerate() {
            b[NODE_HEADER_SIZE + i * 8..NODE_HEADER_SIZE + i * 8 + 8]
                .copy_from_slice(&k.to_le_bytes());
            let s = voff + i * value_size as usize;
            b[s..s + v.len()].copy_from_slice(v);
        }
        b
    }

    #[test]
    fn kernel_max_entries() {
        assert_eq!(max_entries_for(8), 252);
        assert_eq!(max_entries_for(24), 126);
        assert_eq!(max_entries_for(16), 168);
        assert_eq!(max_entries_for(4), 336);
    }

    #[test]
    fn entry_iterators_read_in_order_and_never_past_the_block() {
        let (a, b) = (7u64.to_le_bytes(), 9u64.to_le_bytes());
        let node = make_node(LEAF_NODE, 8, &[(1, &a), (5, &b)]);
        let view = NodeView::new(&node);
        assert_eq!(view.entries_u64().collect::<Vec<_>>(), vec![(1, 7), (5, 9)]);
        assert_eq!(view.values_u64().collect::<Vec<_>>(), vec![7, 9]);
        // A header claiming more entries than fit: nothing, no panic.
        let mut bad = node.clone();
        bad[NR_ENTRIES_OFFSET..NR_ENTRIES_OFFSET + 4].copy_from_slice(&100_000u32.to_le_bytes());
        let view = NodeView::new(&bad);
        assert_eq!(view.entries_u64().count(), 0);
        assert_eq!(view.values_u64().count(), 0);
    }

    #[test]
    fn validate_spots_disorder_and_duplicates() {
        let v = 0u64.to_le_bytes();
        let ok = make_node(LEAF_NODE, 8, &[(1, &v), (5, &v)]);
        assert_eq!(NodeView::new(&ok).validate(8, true), Ok(NodeKind::Leaf));
        let dup = make_node(LEAF_NODE, 8, &[(5, &v), (5, &v)]);
        assert_eq!(
            NodeView::new(&dup).validate(8, true),
            Err(NodeError::DuplicateKey { index: 1, key: 5 })
        );
        let rev = make_node(LEAF_NODE, 8, &[(6, &v), (5, &v)]);
        assert!(matches!(
            NodeView::new(&rev).validate(8, true),
            Err(NodeError::KeysOutOfOrder { .. })
        ));
        assert!(matches!(
            NodeView::new(&ok).validate(24, true),
            Err(NodeError::ValueSizeMismatch { .. })
        ));
    }

    #[test]
    fn validate_spots_overfull_nodes() {
        let v = 0u64.to_le_bytes();
        let mut b = make_node(LEAF_NODE, 8, &[(1, &v)]);
        b[NR_ENTRIES_OFFSET..NR_ENTRIES_OFFSET + 4].copy_from_slice(&253u32.to_le_bytes());
        assert!(matches!(
            NodeView::new(&b).validate(8, true),
            Err(NodeError::NrEntriesTooLarge { .. })
        ));
        b[MAX_ENTRIES_OFFSET..MAX_ENTRIES_OFFSET + 4].copy_from_slice(&400u32.to_le_bytes());
        assert!(matches!(
            NodeView::new(&b).validate(8, true),
            Err(NodeError::MaxEntriesTooLarge(400))
        ));
    }
}
