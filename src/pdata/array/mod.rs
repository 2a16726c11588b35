//! Persistent arrays (the kernel's dm-array): a vector of fixed-size values
//! stored in array blocks, found through an index btree whose key k maps
//! to the k-th array block. Cache mappings, hints and era arrays are
//! arrays; bitsets (`pdata::bitset`) are arrays of 64-bit words.
//!
//! How to use it:
//! - checking (parallel, counting references): describe each array as an
//!   [`walk::ArrayWalk`] (name, root, value size, expected length, an
//!   [`walk::ArrayVisitor`] for the values) and hand them all to
//!   [`walk::walk_arrays`] with the btree [`Walker`](crate::pdata::btree::walk::Walker)
//!   the rest of the check uses: index nodes are validated and counted by
//!   the walker, array blocks are validated here and counted through the
//!   walker's `RefCounter`, and every problem comes back as an
//!   [`ArrayDamage`] naming the array block index, the metadata block and
//!   the entries it costs;
//! - reading (dump, repair): [`view::ArrayView::read`] reads the index
//!   (any depth, no recursion) and gives borrowed [`ArrayBlockView`]s,
//!   positional lookups and in-order iteration, all without copying;
//! - writing (restore, repair): [`builder::ArrayBuilder`] streams values
//!   in index order through a `MetadataWriter`.
//!
//! Array block layout (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | checksum (salt: array block) |
//! | 4 | 4 | max_entries |
//! | 8 | 4 | nr_entries |
//! | 12 | 4 | value_size |
//! | 16 | 8 | block number of this block |
//! | 24 | value_size × max_entries | values; only the first nr_entries count |
//!
//! max_entries is always (4096 − 24) / value_size (no rounding); entry i
//! of the array lives in array block i / max_entries, slot i % max_entries.
//! Every block but the last is full.

pub mod builder;
pub mod view;
pub mod walk;

use std::fmt;
use std::ops::Range;

use crate::io::{le_u32, le_u64, BlockError, BLOCK_SIZE};

pub const ARRAY_HEADER_SIZE: usize = 24;
const MAX_ENTRIES_OFFSET: usize = 4;
const NR_ENTRIES_OFFSET: usize = 8;
const VALUE_SIZE_OFFSET: usize = 12;
const BLOCKNR_OFFSET: usize = 16;

/// Value size of an array's index btree leaves: array block numbers.
pub const INDEX_VALUE_SIZE: u32 = 8;

/// Entries of `value_size` bytes an array block holds, as the kernel
/// computes it.
pub const fn max_entries_for(value_size: u32) -> u32 {
    ((BLOCK_SIZE - ARRAY_HEADER_SIZE) / value_size as usize) as u32
}

/// Array blocks an array of `len` entries of `value_size` bytes takes.
pub fn blocks_for(len: u64, value_size: u32) -> u64 {
    len.div_ceil(max_entries_for(value_size) as u64)
}

/// What can be wrong with an array block's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArrayBlockError {
    ValueSizeMismatch {
        expected: u32,
        found: u32,
    },
    /// The kernel always stores the computed capacity.
    MaxEntriesMismatch {
        expected: u32,
        found: u32,
    },
    NrEntriesTooLarge {
        nr_entries: u32,
        max_entries: u32,
    },
    /// A block before the last that is not full: the kernel's cursor
    /// would read every later entry at a shifted position.
    NotFull {
        nr_entries: u32,
        max_entries: u32,
    },
    /// The last block holds a different number of entries than the
    /// array's length leaves for it.
    WrongLength {
        nr_entries: u32,
        expected: u32,
    },
}

impl fmt::Display for ArrayBlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArrayBlockError::ValueSizeMismatch { expected, found } => {
                write!(f, "value_size mismatch: expected {expected}, found {found}")
            }
            ArrayBlockError::MaxEntriesMismatch { expected, found } => write!(
                f,
                "max_entries is {found}, but an array block of this value size holds {expected}"
            ),
            ArrayBlockError::NrEntriesTooLarge {
                nr_entries,
                max_entries,
            } => write!(f, "nr_entries > max_entries ({nr_entries} > {max_entries})"),
            ArrayBlockError::NotFull {
                nr_entries,
                max_entries,
            } => write!(
                f,
                "holds {nr_entries} of {max_entries} entries but is not the last block \
                 (later entries would be read at shifted positions)"
            ),
            ArrayBlockError::WrongLength {
                nr_entries,
                expected,
            } => write!(
                f,
                "the last block holds {nr_entries} entries, the array's length leaves {expected} for it"
            ),
        }
    }
}

/// An array block borrowed from the metadata. Accessors never copy.
#[derive(Clone, Copy)]
pub struct ArrayBlockView<'a> {
    data: &'a [u8],
}

impl<'a> ArrayBlockView<'a> {
    /// Wraps a 4096-byte block. No checks: `validate` before trusting the
    /// entry count.
    pub fn new(data: &'a [u8]) -> ArrayBlockView<'a> {
        debug_assert_eq!(data.len(), BLOCK_SIZE);
        ArrayBlockView { data }
    }

    pub fn checksum(&self) -> u32 {
        le_u32(self.data, 0)
    }
    pub fn max_entries(&self) -> u32 {
        le_u32(self.data, MAX_ENTRIES_OFFSET)
    }
    pub fn nr_entries(&self) -> u32 {
        le_u32(self.data, NR_ENTRIES_OFFSET)
    }
    pub fn value_size(&self) -> u32 {
        le_u32(self.data, VALUE_SIZE_OFFSET)
    }
    pub fn blocknr(&self) -> u64 {
        le_u64(self.data, BLOCKNR_OFFSET)
    }

    /// The header checks a block can pass on its own: value size as
    /// expected, the computed capacity, entries within it. After this,
    /// every accessor is in bounds for `0..nr_entries`.
    pub fn validate(&self, value_size: u32) -> Result<(), ArrayBlockError> {
        if self.value_size() != value_size {
            return Err(ArrayBlockError::ValueSizeMismatch {
                expected: value_size,
                found: self.value_size(),
            });
        }
        let max = max_entries_for(value_size);
        if self.max_entries() != max {
            return Err(ArrayBlockError::MaxEntriesMismatch {
                expected: max,
                found: self.max_entries(),
            });
        }
        if self.nr_entries() > max {
            return Err(ArrayBlockError::NrEntriesTooLarge {
                nr_entries: self.nr_entries(),
                max_entries: max,
            });
        }
        Ok(())
    }

    /// `validate`, plus the entry count array block `index` must have in
    /// an array of `len` entries.
    pub fn validate_at(
        &self,
        value_size: u32,
        index: u64,
        len: u64,
    ) -> Result<(), ArrayBlockError> {
        self.validate(value_size)?;
        let max = max_entries_for(value_size) as u64;
        let first = index.saturating_mul(max);
        let expected = len.saturating_sub(first).min(max) as u32;
        let nr = self.nr_entries();
        if nr == expected {
            return Ok(());
        }
        if first.saturating_add(max) < len {
            Err(ArrayBlockError::NotFull {
                nr_entries: nr,
                max_entries: max as u32,
            })
        } else {
            Err(ArrayBlockError::WrongLength {
                nr_entries: nr,
                expected,
            })
        }
    }

    /// The bytes of the first nr_entries values (nothing if the header
    /// would reach past the block).
    pub fn values_bytes(&self) -> &'a [u8] {
        let n = self.nr_entries() as usize * self.value_size() as usize;
        self.data
            .get(ARRAY_HEADER_SIZE..ARRAY_HEADER_SIZE.saturating_add(n))
            .unwrap_or(&[])
    }

    /// Value `i`'s bytes, if it is one of the block's entries.
    #[inline]
    pub fn value(&self, i: u32) -> Option<&'a [u8]> {
        let vs = self.value_size() as usize;
        let start = ARRAY_HEADER_SIZE + i as usize * vs;
        (i < self.nr_entries())
            .then(|| self.data.get(start..start + vs))
            .flatten()
    }

    /// The values, in order, as byte slices of `value_size` bytes.
    pub fn values(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let vs = (self.value_size() as usize).max(1);
        self.values_bytes().chunks_exact(vs)
    }

    /// The values of a block of 8-byte values.
    pub fn values_u64(&self) -> impl Iterator<Item = u64> + 'a {
        self.values_bytes()
            .chunks_exact(8)
            .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
    }

    /// The values of a block of 4-byte values.
    pub fn values_u32(&self) -> impl Iterator<Item = u32> + 'a {
        self.values_bytes()
            .chunks_exact(4)
            .map(|v| u32::from_le_bytes(v.try_into().unwrap()))
    }
}

/// Array block `index` of an array of `len` entries (None: length
/// unknown, so only the header is checked) read from block `b`: checksum,
/// self-location, header.
pub fn read_block(
    src: &crate::io::BlockSource,
    b: u64,
    value_size: u32,
    index: u64,
    len: Option<u64>,
) -> Result<ArrayBlockView<'_>, ArrayDamageKind> {
    let data = src
        .checked(b, crate::io::BlockKind::Array)
        .map_err(ArrayDamageKind::Block)?;
    let view = ArrayBlockView::new(data);
    match len {
        Some(len) => view.validate_at(value_size, index, len),
        None => view.validate(value_size),
    }
    .map_err(ArrayDamageKind::Header)?;
    Ok(view)
}

/// The entries array block `index` holds in an array of `len` entries
/// of `value_size` bytes.
pub fn entries_of(index: u64, value_size: u32, len: u64) -> Range<u64> {
    let max = max_entries_for(value_size) as u64;
    let first = index.saturating_mul(max).min(len);
    first..first.saturating_add(max).min(len)
}

/// What is wrong with one part of an array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArrayDamageKind {
    /// The array block cannot be read as one (checksum, self-location,
    /// beyond the device).
    Block(BlockError),
    Header(ArrayBlockError),
    /// The index has no entry for these array blocks, though the array's
    /// length needs them.
    Missing,
    /// The index points at array blocks past the array's length.
    Beyond,
    /// Two index entries for the same array block index.
    Duplicate,
    /// The block is sound but some of its values are not.
    Values(String),
}

/// One problem of an array, with what it costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayDamage {
    /// The array's name ("mapping array").
    pub array: String,
    /// Array block indices concerned (index keys).
    pub indices: Range<u64>,
    /// The metadata block, where there is one.
    pub block: Option<u64>,
    /// Array entries made unreadable (empty for value errors, which
    /// name their entries themselves).
    pub entries: Range<u64>,
    pub kind: ArrayDamageKind,
}

impl ArrayDamage {
    /// The damage in words, entries named by `name` (e.g. a cache layer
    /// renders entries 3..5 as "cache blocks 3..4").
    pub fn describe(&self, name: &dyn Fn(&Range<u64>) -> String) -> String {
        let blocks = if self.indices.end - self.indices.start <= 1 {
            format!("array block {}", self.indices.start)
        } else {
            format!(
                "array blocks {}..{}",
                self.indices.start,
                self.indices.end - 1
            )
        };
        let at = self
            .block
            .map(|b| format!(" at block {b}"))
            .unwrap_or_default();
        let lost = if self.entries.is_empty() {
            String::new()
        } else {
            format!(" ({} lost)", name(&self.entries))
        };
        let what = match &self.kind {
            ArrayDamageKind::Block(e) => e.reason(),
            ArrayDamageKind::Header(e) => e.to_string(),
            ArrayDamageKind::Missing => "missing from the array index (a hole)".to_string(),
            ArrayDamageKind::Beyond => "listed in the index beyond the array's length".to_string(),
            ArrayDamageKind::Duplicate => "listed twice in the array index".to_string(),
            ArrayDamageKind::Values(v) => format!("value error: {v}"),
        };
        format!("{}: {blocks}{at}{lost}: {what}", self.array)
    }
}

/// "entries a..b" for a range of array entries.
pub fn plain_entries(r: &Range<u64>) -> String {
    name_range("entry", "entries", r)
}

/// A range named with singular and plural words: "entry 5",
/// "entries 5..9" (inclusive end, as the tools print key ranges).
pub fn name_range(one: &str, many: &str, r: &Range<u64>) -> String {
    if r.end.saturating_sub(r.start) == 1 {
        format!("{one} {}", r.start)
    } else {
        format!("{many} {}..{}", r.start, r.end.saturating_sub(1))
    }
}

impl fmt::Display for ArrayDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&plain_entries))
    }
}

/// Test helpers: array blocks and index trees built by hand, so tests
/// can make shapes (tiny index nodes, deep trees, damage) the builder
/// never would.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::io::checksum::{seal, BlockKind};
    use crate::pdata::btree::node::{INTERNAL_NODE, LEAF_NODE, NODE_HEADER_SIZE};

    /// Runs `build` with a writer over a fresh in-memory image of
    /// `nr_blocks` blocks (block 0 left free); returns the image and what
    /// `build` returned.
    pub fn write_image<T>(
        nr_blocks: u64,
        build: impl FnOnce(&mut crate::pdata::btree::builder::MetadataWriter) -> T,
    ) -> (Vec<u8>, T) {
        let mut image = vec![0u8; nr_blocks as usize * BLOCK_SIZE];
        let mut sink = crate::io::sink::MemorySink {
            image: &mut image,
            limit: None,
            writes: 0,
        };
        let mut w = crate::pdata::btree::builder::MetadataWriter::new(&mut sink, 1, nr_blocks);
        let out = build(&mut w);
        drop(w);
        (image, out)
    }

    /// An image of `nr_blocks` zero blocks to place things in.
    pub struct TestImage {
        pub bytes: Vec<u8>,
        pub next: u64,
    }

    impl TestImage {
        pub fn new(nr_blocks: u64) -> TestImage {
            TestImage {
                bytes: vec![0u8; nr_blocks as usize * BLOCK_SIZE],
                next: 1,
            }
        }

        pub fn block_mut(&mut self, b: u64) -> &mut [u8] {
            &mut self.bytes[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE]
        }

        pub fn alloc(&mut self) -> u64 {
            self.next += 1;
            self.next - 1
        }

        /// An array block holding `values` (each `value_size` bytes).
        pub fn array_block(&mut self, value_size: u32, values: &[&[u8]]) -> u64 {
            let b = self.alloc();
            let d = self.block_mut(b);
            d[MAX_ENTRIES_OFFSET..MAX_ENTRIES_OFFSET + 4]
                .copy_from_slice(&max_entries_for(value_size).to_le_bytes());
            d[NR_ENTRIES_OFFSET..NR_ENTRIES_OFFSET + 4]
                .copy_from_slice(&(values.len() as u32).to_le_bytes());
            d[VALUE_SIZE_OFFSET..VALUE_SIZE_OFFSET + 4].copy_from_slice(&value_size.to_le_bytes());
            d[BLOCKNR_OFFSET..BLOCKNR_OFFSET + 8].copy_from_slice(&b.to_le_bytes());
            for (i, v) in values.iter().enumerate() {
                let at = ARRAY_HEADER_SIZE + i * value_size as usize;
                d[at..at + v.len()].copy_from_slice(v);
            }
            seal(d, BlockKind::Array);
            b
        }

        /// An array of u64 values in full blocks, the last partial.
        pub fn u64_array_blocks(&mut self, values: &[u64]) -> Vec<u64> {
            let max = max_entries_for(8) as usize;
            values
                .chunks(max)
                .map(|c| {
                    let bytes: Vec<[u8; 8]> = c.iter().map(|v| v.to_le_bytes()).collect();
                    let refs: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
                    self.array_block(8, &refs)
                })
                .collect()
        }

        /// A btree node claiming capacity `max` with 8-byte values.
        pub fn node(&mut self, flags: u32, max: u32, entries: &[(u64, u64)]) -> u64 {
            let b = self.alloc();
            let d = self.block_mut(b);
            d[4..8].copy_from_slice(&flags.to_le_bytes());
            d[8..16].copy_from_slice(&b.to_le_bytes());
            d[16..20].copy_from_slice(&(entries.len() as u32).to_le_bytes());
            d[20..24].copy_from_slice(&max.to_le_bytes());
            d[24..28].copy_from_slice(&8u32.to_le_bytes());
            let values_at = NODE_HEADER_SIZE + max as usize * 8;
            for (i, (k, v)) in entries.iter().enumerate() {
                let ko = NODE_HEADER_SIZE + i * 8;
                d[ko..ko + 8].copy_from_slice(&k.to_le_bytes());
                let vo = values_at + i * 8;
                d[vo..vo + 8].copy_from_slice(&v.to_le_bytes());
            }
            seal(d, BlockKind::BtreeNode);
            b
        }

        /// An index over `blocks` (key i -> blocks[i]) whose nodes hold at
        /// most `fanout` entries and claim capacity `max`: small fanouts
        /// make deep trees from few blocks. Returns the root and the
        /// number of levels.
        pub fn index(&mut self, blocks: &[u64], fanout: usize, max: u32) -> (u64, u32) {
            if blocks.is_empty() {
                return (self.node(LEAF_NODE, max, &[]), 1);
            }
            let mut level: Vec<(u64, u64)> = blocks
                .chunks(fanout)
                .enumerate()
                .map(|(i, c)| {
                    let entries: Vec<(u64, u64)> = c
                        .iter()
                        .enumerate()
                        .map(|(j, b)| ((i * fanout + j) as u64, *b))
                        .collect();
                    (entries[0].0, self.node(LEAF_NODE, max, &entries))
                })
                .collect();
            let mut levels = 1;
            while level.len() > 1 {
                level = level
                    .chunks(fanout)
                    .map(|c| (c[0].0, self.node(INTERNAL_NODE, max, c)))
                    .collect();
                levels += 1;
            }
            (level[0].1, levels)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestImage;
    use super::*;

    #[test]
    fn kernel_capacities() {
        assert_eq!(max_entries_for(8), 509);
        assert_eq!(max_entries_for(4), 1018);
        assert_eq!(blocks_for(1100, 8), 3);
        assert_eq!(blocks_for(0, 8), 0);
        assert_eq!(blocks_for(32_323_536, 8), 63_504);
    }

    #[test]
    fn a_block_reads_its_header_and_values_in_place() {
        let mut img = TestImage::new(4);
        let (a, b) = (7u64.to_le_bytes(), 9u64.to_le_bytes());
        let blk = img.array_block(8, &[&a, &b]);
        let data = &img.bytes[blk as usize * BLOCK_SIZE..(blk as usize + 1) * BLOCK_SIZE];
        let v = ArrayBlockView::new(data);
        assert_eq!(
            (v.max_entries(), v.nr_entries(), v.value_size()),
            (509, 2, 8)
        );
        assert_eq!(v.blocknr(), blk);
        assert!(v.validate(8).is_ok());
        assert_eq!(v.values_u64().collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(v.value(1), Some(&b[..]));
        assert_eq!(v.value(2), None);
        // The slice is the block's own bytes, not a copy.
        assert_eq!(
            v.values_bytes().as_ptr(),
            data[ARRAY_HEADER_SIZE..].as_ptr()
        );
    }

    #[test]
    fn headers_are_checked_against_the_layout() {
        let mut img = TestImage::new(4);
        let blk = img.array_block(4, &[&[1, 0, 0, 0]]);
        let data = img.block_mut(blk).to_vec();
        let v = ArrayBlockView::new(&data);
        assert_eq!(
            v.validate(8),
            Err(ArrayBlockError::ValueSizeMismatch {
                expected: 8,
                found: 4
            })
        );
        assert!(v.validate(4).is_ok());
        assert!(v.validate_at(4, 0, 1).is_ok());
        assert_eq!(
            v.validate_at(4, 0, 2000),
            Err(ArrayBlockError::NotFull {
                nr_entries: 1,
                max_entries: 1018
            })
        );
        assert_eq!(
            v.validate_at(4, 1, 1020),
            Err(ArrayBlockError::WrongLength {
                nr_entries: 1,
                expected: 2
            })
        );
        let mut bad = data.clone();
        bad[MAX_ENTRIES_OFFSET..MAX_ENTRIES_OFFSET + 4].copy_from_slice(&508u32.to_le_bytes());
        assert!(matches!(
            ArrayBlockView::new(&bad).validate(4),
            Err(ArrayBlockError::MaxEntriesMismatch { .. })
        ));
        let mut over = data;
        over[NR_ENTRIES_OFFSET..NR_ENTRIES_OFFSET + 4].copy_from_slice(&5000u32.to_le_bytes());
        let v = ArrayBlockView::new(&over);
        assert!(matches!(
            v.validate(4),
            Err(ArrayBlockError::NrEntriesTooLarge { .. })
        ));
        // Unvalidated, the accessors still stay inside the block.
        assert_eq!(v.values().count(), 0);
        assert_eq!(v.value(4000), None);
    }

    #[test]
    fn damage_is_described_with_the_owners_names() {
        let d = ArrayDamage {
            array: "mapping array".into(),
            indices: 2..3,
            block: Some(77),
            entries: 1018..1527,
            kind: ArrayDamageKind::Block(BlockError::Checksum {
                block: 77,
                wanted: crate::io::BlockKind::Array,
            }),
        };
        assert_eq!(
            d.describe(&|r| name_range("cache block", "cache blocks", r)),
            "mapping array: array block 2 at block 77 (cache blocks 1018..1526 lost): checksum error"
        );
        let hole = ArrayDamage {
            array: "hint array".into(),
            indices: 3..5,
            block: None,
            entries: 3054..5090,
            kind: ArrayDamageKind::Missing,
        };
        assert_eq!(
            hole.to_string(),
            "hint array: array blocks 3..4 (entries 3054..5089 lost): missing from the array index (a hole)"
        );
    }
}
