//! Reading cache metadata for dumping and salvaging.
//!
//! [`CacheMetadata::read`] reads the superblock, then the mapping array,
//! the hint array, the (format 2) dirty bitset and the discard bitset,
//! each as a borrowed view of the metadata: nothing is copied, any index
//! depth works, and damage is recorded and confined to the entries it
//! costs while everything else stays readable. Counts no references
//! (checking is `cache::check`).
//!
//! ```ignore
//! let src = BlockSource::open(path, OpenOptions { exclusive: true })?;
//! let md = CacheMetadata::read(&src, &ReadOptions::default())?; // superblock problems
//! for d in md.damage() {
//!     // e.g. skip d.entries (cache blocks) when salvaging, or refuse:
//!     eprintln!("{d}");
//! }
//! for e in md.mapped() {
//!     // e.cblock, e.mapping.origin, e.dirty (None: its dirty bit is
//!     // unreadable, treat as dirty), e.hint (None: no readable hint)
//! }
//! ```

use std::fmt;
use std::ops::Range;

use crate::io::{BlockError, BlockSource};
use crate::pdata::array::view::ArrayView;
use crate::pdata::array::{max_entries_for, ArrayDamage};
use crate::pdata::bitset::{BitsetView, WORD_SIZE};
use crate::pdata::btree::walk::NodeDamage;

use super::hint::MAX_HINT_SIZE;
use super::mapping::{Mapping, MAPPING_SIZE};
use super::superblock::{Superblock, CACHE_MAGIC};

/// The names the arrays carry in messages.
pub const MAPPING_ARRAY: &str = "mapping array";
pub const HINT_ARRAY: &str = "hint array";
pub const DIRTY_BITSET: &str = "dirty bitset";
pub const DISCARD_BITSET: &str = "discard bitset";

/// Why the metadata cannot be read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Block 0 is not a cache superblock (checksum, or another kind).
    Superblock(BlockError),
    Magic {
        found: u64,
    },
    Version {
        found: u32,
    },
    /// A format 2 superblock without a dirty bitset root.
    NoDirtyBitset,
    /// A hint size no policy uses.
    HintSize {
        found: u32,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Superblock(e) => write!(f, "bad checksum in superblock ({e})"),
            ReadError::Magic { found } => write!(
                f,
                "superblock at block 0 has magic {found} (cache metadata has {CACHE_MAGIC})"
            ),
            ReadError::Version { found } => {
                write!(
                    f,
                    "unsupported metadata version {found} (cache metadata is format 1 or 2)"
                )
            }
            ReadError::NoDirtyBitset => write!(
                f,
                "dirty bitset not found: the format 2 superblock's dirty bitset root is 0"
            ),
            ReadError::HintSize { found } => write!(
                f,
                "policy hint size is {found} bytes (supported: 4, at most {MAX_HINT_SIZE})"
            ),
        }
    }
}

impl std::error::Error for ReadError {}

/// Superblock fields every reader relies on, checked.
pub fn validate_superblock(sb: &Superblock) -> Result<(), ReadError> {
    if sb.magic != CACHE_MAGIC {
        return Err(ReadError::Magic { found: sb.magic });
    }
    if sb.version != 1 && sb.version != 2 {
        return Err(ReadError::Version { found: sb.version });
    }
    if sb.dirty_root == Some(0) {
        return Err(ReadError::NoDirtyBitset);
    }
    if sb.has_hints() && sb.policy_hint_size > MAX_HINT_SIZE {
        return Err(ReadError::HintSize {
            found: sb.policy_hint_size,
        });
    }
    Ok(())
}

/// Reads and validates the superblock at block 0.
pub fn read_superblock(src: &BlockSource) -> Result<Superblock, ReadError> {
    let sb = Superblock::read(src).map_err(ReadError::Superblock)?;
    validate_superblock(&sb)?;
    Ok(sb)
}

/// Which arrays to read besides the mappings (and the dirty bitset,
/// which the mappings need).
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    pub hints: bool,
    pub discards: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            hints: true,
            discards: true,
        }
    }
}

/// Which structure a piece of damage is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    Mappings,
    Hints,
    Dirty,
    Discards,
}

impl Structure {
    pub fn name(self) -> &'static str {
        match self {
            Structure::Mappings => MAPPING_ARRAY,
            Structure::Hints => HINT_ARRAY,
            Structure::Dirty => DIRTY_BITSET,
            Structure::Discards => DISCARD_BITSET,
        }
    }
}

/// One damaged part of the cache metadata and exactly what it costs.
#[derive(Clone, Debug)]
pub struct CacheDamage {
    pub structure: Structure,
    /// The metadata block at fault, where there is one.
    pub block: Option<u64>,
    /// Array block indices concerned (keys of the array's index).
    pub indices: Range<u64>,
    /// What is lost: cache blocks (mappings, hints, dirty bits) or
    /// discard blocks (discard bits) whose values cannot be read.
    pub lost: Range<u64>,
    /// In words, as cache_check prints it.
    pub message: String,
}

impl fmt::Display for CacheDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// "cache block 5", "cache blocks 5..9" (inclusive end).
pub fn name_cblocks(r: &Range<u64>) -> String {
    crate::pdata::array::name_range("cache block", "cache blocks", r)
}

/// "discard block 5", "discard blocks 5..9".
pub fn name_dblocks(r: &Range<u64>) -> String {
    crate::pdata::array::name_range("discard block", "discard blocks", r)
}

/// Entries per array block of each structure, and how many owner
/// entries (cache or discard blocks) one array entry stands for.
fn geometry(s: Structure, hint_size: u32) -> (u64, u64) {
    match s {
        Structure::Mappings => (max_entries_for(MAPPING_SIZE) as u64, 1),
        Structure::Hints => (max_entries_for(hint_size.max(1)) as u64, 1),
        Structure::Dirty | Structure::Discards => (max_entries_for(WORD_SIZE) as u64, 64),
    }
}

/// Array damage in the owner's terms (cache blocks or discard blocks).
pub fn from_array_damage(s: Structure, hint_size: u32, len: u64, d: &ArrayDamage) -> CacheDamage {
    let (_, per) = geometry(s, hint_size);
    let lost = (d.entries.start.saturating_mul(per)).min(len)
        ..(d.entries.end.saturating_mul(per)).min(len);
    let namer = |r: &Range<u64>| {
        let r = (r.start.saturating_mul(per)).min(len)..(r.end.saturating_mul(per)).min(len);
        if s == Structure::Discards {
            name_dblocks(&r)
        } else {
            name_cblocks(&r)
        }
    };
    CacheDamage {
        structure: s,
        block: d.block,
        indices: d.indices.clone(),
        lost,
        message: d.describe(&namer),
    }
}

/// Index node damage in the owner's terms.
pub fn from_index_damage(s: Structure, hint_size: u32, len: u64, d: &NodeDamage) -> CacheDamage {
    let (max, per) = geometry(s, hint_size);
    let lo = d.keys.lo.unwrap_or(0);
    let nr_array_blocks = len.div_ceil(per).div_ceil(max);
    let hi = d.keys.hi.unwrap_or(u64::MAX).min(nr_array_blocks.max(lo));
    let lost = (lo.saturating_mul(max).saturating_mul(per)).min(len)
        ..(hi.saturating_mul(max).saturating_mul(per)).min(len);
    let what = if lost.is_empty() {
        String::new()
    } else if s == Structure::Discards {
        format!(" ({} lost)", name_dblocks(&lost))
    } else {
        format!(" ({} lost)", name_cblocks(&lost))
    };
    CacheDamage {
        structure: s,
        block: Some(d.block()),
        indices: lo..hi,
        lost,
        message: format!(
            "{}: index node at block {}{what}: {}",
            s.name(),
            d.block(),
            d.damage
        ),
    }
}

/// One cache block's state, borrowed from the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub cblock: u64,
    pub mapping: Mapping,
    /// Format 1: the DIRTY flag; format 2: the dirty bitset's bit. None
    /// where that bit cannot be read (a salvager should call it dirty).
    pub dirty: Option<bool>,
    /// The hint's bytes, where the hint array holds a readable one.
    pub hint: Option<&'a [u8]>,
}

/// Cache metadata read from a block source; every array borrowed.
pub struct CacheMetadata<'a> {
    pub sb: Superblock,
    /// `cache_blocks` mappings.
    pub mappings: ArrayView<'a>,
    /// The hint array, its length as its blocks say (None: no hints, or
    /// not asked for).
    pub hints: Option<ArrayView<'a>>,
    /// Format 2: `cache_blocks` dirty bits.
    pub dirty: Option<BitsetView<'a>>,
    /// `discard_nr_blocks` bits (None: not asked for).
    pub discards: Option<BitsetView<'a>>,
}

impl<'a> CacheMetadata<'a> {
    /// Reads the metadata in `src`. Only a superblock that cannot be
    /// used is an error; damage inside the arrays is in `damage()`.
    pub fn read(src: &'a BlockSource, opts: &ReadOptions) -> Result<CacheMetadata<'a>, ReadError> {
        let sb = read_superblock(src)?;
        let cache_blocks = sb.cache_blocks as u64;
        let mappings = ArrayView::read(
            src,
            MAPPING_ARRAY,
            sb.mapping_root,
            MAPPING_SIZE,
            Some(cache_blocks),
        );
        let hints = (opts.hints && sb.has_hints())
            .then(|| ArrayView::read(src, HINT_ARRAY, sb.hint_root, sb.policy_hint_size, None));
        let dirty = sb
            .dirty_root
            .map(|root| BitsetView::read(src, DIRTY_BITSET, root, cache_blocks));
        let discards = opts
            .discards
            .then(|| BitsetView::read(src, DISCARD_BITSET, sb.discard_root, sb.discard_nr_blocks));
        Ok(CacheMetadata {
            sb,
            mappings,
            hints,
            dirty,
            discards,
        })
    }

    pub fn version(&self) -> u32 {
        self.sb.version
    }

    pub fn cache_blocks(&self) -> u64 {
        self.sb.cache_blocks as u64
    }

    /// Every problem found, structure by structure, in index order.
    pub fn damage(&self) -> Vec<CacheDamage> {
        let hs = self.sb.policy_hint_size;
        let mut out = Vec::new();
        let mut add = |s: Structure, len: u64, view: &ArrayView<'_>| {
            out.extend(
                view.index_damage
                    .iter()
                    .map(|d| from_index_damage(s, hs, len, d)),
            );
            out.extend(view.damage.iter().map(|d| from_array_damage(s, hs, len, d)));
            // An array longer than the metadata could hold is cut short.
            let (max, per) = geometry(s, hs);
            let have = view.blocks().len() as u64;
            let want = len.div_ceil(per).div_ceil(max);
            if have < want && view.index_damage.is_empty() && view.damage.is_empty() {
                let lost = (have * max * per).min(len)..len;
                let named = if s == Structure::Discards {
                    name_dblocks(&lost)
                } else {
                    name_cblocks(&lost)
                };
                out.push(CacheDamage {
                    structure: s,
                    block: None,
                    indices: have..want,
                    message: format!(
                        "{}: needs {want} array blocks, more than the metadata holds ({named} lost)",
                        s.name()
                    ),
                    lost,
                });
            }
        };
        add(Structure::Mappings, self.cache_blocks(), &self.mappings);
        if let Some(h) = &self.hints {
            add(Structure::Hints, h.len(), h);
        }
        if let Some(d) = &self.dirty {
            add(Structure::Dirty, d.nr_bits(), d.array());
        }
        if let Some(d) = &self.discards {
            add(Structure::Discards, d.nr_bits(), d.array());
        }
        out
    }

    /// True when every structure read is whole.
    pub fn is_intact(&self) -> bool {
        self.damage().is_empty()
    }

    /// The dirty state of cache block `c` with mapping `m`.
    #[inline]
    fn dirty_of(&self, c: u64, m: &Mapping) -> Option<bool> {
        match &self.dirty {
            None => Some(m.dirty_flag()),
            Some(bits) => bits.get(c),
        }
    }

    /// Cache block `c`, if its mapping is readable.
    pub fn get(&self, c: u64) -> Option<Entry<'a>> {
        let m = Mapping::from_bytes(self.mappings.get(c)?);
        Some(Entry {
            cblock: c,
            mapping: m,
            dirty: self.dirty_of(c, &m),
            hint: self.hints.as_ref().and_then(|h| h.get(c)),
        })
    }

    /// Every readable mapping entry (unmapped ones too), in cache-block
    /// order; entries of damaged array blocks are left out.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.mappings.entries().map(move |(c, bytes)| {
            let m = Mapping::from_bytes(bytes);
            Entry {
                cblock: c,
                mapping: m,
                dirty: self.dirty_of(c, &m),
                hint: self.hints.as_ref().and_then(|h| h.get(c)),
            }
        })
    }

    /// The readable entries with the VALID flag, in cache-block order.
    pub fn mapped(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.mapped_with(true)
    }

    /// As `mapped`, but with no hints looked up (each is an array
    /// lookup): for a pass over the mappings alone.
    pub fn mapped_without_hints(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.mapped_with(false)
    }

    fn mapped_with(&self, hints: bool) -> impl Iterator<Item = Entry<'a>> + '_ {
        // Tested before the dirty bit and hint are looked up: a sparse
        // cache's unmapped entries cost one flag test each.
        self.mappings.entries().filter_map(move |(c, bytes)| {
            let m = Mapping::from_bytes(bytes);
            m.is_valid().then(|| Entry {
                cblock: c,
                mapping: m,
                dirty: self.dirty_of(c, &m),
                hint: if hints {
                    self.hints.as_ref().and_then(|h| h.get(c))
                } else {
                    None
                },
            })
        })
    }

    /// Runs of set discard bits (discard blocks), ascending.
    pub fn discarded(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        let Some(bits) = &self.discards else {
            return out;
        };
        for b in bits.ones() {
            match out.last_mut() {
                Some(r) if r.end == b => r.end = b + 1,
                _ => out.push(b..b + 1),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::mapping::{DIRTY, VALID};
    use crate::io::BLOCK_SIZE;
    use crate::pdata::array::builder::ArrayBuilder;
    use crate::pdata::bitset::builder::BitsetBuilder;
    use std::path::Path;

    /// A format `version` cache of `n` blocks: block c maps origin 3c+1
    /// when c.is_multiple_of(3), dirty when c.is_multiple_of(6); hints c % 64; discard
    /// bits 5..9 of 100.
    fn image(version: u32, n: u64) -> Vec<u8> {
        let nr_blocks = 2 * (n / 500 + 16);
        let (mut image, sb) = crate::pdata::array::testing::write_image(nr_blocks, |w| {
            let mapping = |c: u64| {
                let mut flags = 0;
                if c.is_multiple_of(3) {
                    flags |= VALID;
                    if version == 1 && c.is_multiple_of(6) {
                        flags |= DIRTY;
                    }
                }
                let origin = if c.is_multiple_of(3) { 3 * c + 1 } else { 0 };
                Mapping { origin, flags }.pack()
            };
            let mut m = ArrayBuilder::new(8);
            for c in 0..n {
                m.push(w, &mapping(c).to_le_bytes()).unwrap();
            }
            let mut h = ArrayBuilder::new(4);
            for c in 0..n {
                h.push(w, &((c % 64) as u32).to_le_bytes()).unwrap();
            }
            let mut d = BitsetBuilder::new(n);
            for c in (0..n).step_by(6) {
                d.set(w, c).unwrap();
            }
            let mut disc = BitsetBuilder::new(100);
            disc.set_range(w, 5..10).unwrap();
            let mut sb = Superblock::new(version);
            sb.cache_blocks = n as u32;
            sb.mapping_root = m.finish(w).unwrap();
            sb.hint_root = h.finish(w).unwrap();
            sb.policy_hint_size = 4;
            sb.discard_root = disc.finish(w).unwrap();
            sb.discard_nr_blocks = 100;
            let dirty = d.finish(w).unwrap();
            if version == 2 {
                sb.dirty_root = Some(dirty);
            }
            sb
        });
        image[..BLOCK_SIZE].copy_from_slice(&sb.to_block());
        image
    }

    #[test]
    fn reads_every_structure_in_cache_block_order() {
        for version in [1, 2] {
            // 130,000 blocks: a two-level mapping index.
            for n in [0u64, 1, 509, 1100, 130_000] {
                let img = image(version, n);
                let src = BlockSource::from_bytes(&img, Path::new("c")).unwrap();
                let md = CacheMetadata::read(&src, &ReadOptions::default()).unwrap();
                assert!(md.is_intact(), "{version} {n}: {:?}", md.damage());
                let mapped: Vec<Entry> = md.mapped().collect();
                assert_eq!(mapped.len() as u64, n.div_ceil(3));
                for e in &mapped {
                    assert_eq!(e.cblock % 3, 0);
                    assert_eq!(e.mapping.origin, 3 * e.cblock + 1);
                    assert_eq!(e.dirty, Some(e.cblock % 6 == 0), "{version} {}", e.cblock);
                    assert_eq!(e.hint, Some(&((e.cblock % 64) as u32).to_le_bytes()[..]));
                }
                assert_eq!(md.entries().count() as u64, n);
                assert_eq!(md.discarded(), vec![5..10]);
                if n > 0 {
                    assert_eq!(md.get(n - 1).unwrap().cblock, n - 1);
                }
                assert!(md.get(n).is_none());
            }
        }
    }

    #[test]
    fn a_damaged_array_block_costs_only_its_cache_blocks() {
        let mut img = image(2, 1100);
        let src = BlockSource::from_bytes(&img, Path::new("c")).unwrap();
        let md = CacheMetadata::read(&src, &ReadOptions::default()).unwrap();
        let second = md.mappings.block(1).unwrap().blocknr() as usize;
        drop(md);
        img[second * BLOCK_SIZE + 100] ^= 1;
        let src = BlockSource::from_bytes(&img, Path::new("c")).unwrap();
        let md = CacheMetadata::read(&src, &ReadOptions::default()).unwrap();
        let damage = md.damage();
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].structure, Structure::Mappings);
        assert_eq!(damage[0].block, Some(second as u64));
        assert_eq!(damage[0].indices, 1..2);
        assert_eq!(damage[0].lost, 509..1018);
        assert_eq!(
            damage[0].to_string(),
            format!("mapping array: array block 1 at block {second} (cache blocks 509..1017 lost): checksum error")
        );
        let cblocks: Vec<u64> = md.entries().map(|e| e.cblock).collect();
        assert_eq!(cblocks.len(), 1100 - 509);
        assert!(cblocks.iter().all(|c| !(509..1018).contains(c)));
    }

    #[test]
    fn superblock_problems_are_typed() {
        let mut img = image(2, 10);
        let src = BlockSource::from_bytes(&img, Path::new("c")).unwrap();
        let mut sb = Superblock::read(&src).unwrap();
        sb.dirty_root = Some(0);
        img[..BLOCK_SIZE].copy_from_slice(&sb.to_block());
        let src = BlockSource::from_bytes(&img, Path::new("c")).unwrap();
        assert_eq!(
            CacheMetadata::read(&src, &ReadOptions::default()).err(),
            Some(ReadError::NoDirtyBitset)
        );
        img[8] ^= 1;
        let src = BlockSource::from_bytes(&img, Path::new("c")).unwrap();
        assert!(matches!(
            CacheMetadata::read(&src, &ReadOptions::default()).err(),
            Some(ReadError::Superblock(_))
        ));
    }
}
