//! cache_check's engine.
//!
//! The order follows the reference tools (tools.md §3.1): superblock,
//! then the mapping array with the dirty bitset, the hint array and the
//! discard bitset, then the metadata space map. What dmpd adds is
//! precision and completeness: the arrays are walked together, in
//! parallel, by the walker thin_check uses; every finding names the
//! array, the array block index, the metadata block and the cache blocks
//! concerned; an origin block mapped twice and dirty bits on unmapped
//! blocks are found; and every metadata block's reference count is
//! reconciled with the space map exactly as for thin metadata.

mod values;

use crate::io::{BlockSource, BLOCK_SIZE};
use crate::pdata::array::view::read_index;
use crate::pdata::array::walk::{walk_arrays, AnyValues, ArrayOutcome, ArrayWalk};
use crate::pdata::array::{max_entries_for, read_block};
use crate::pdata::bitset::BitsetCollector;
use crate::pdata::btree::walk::Walker;
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS;
use crate::pdata::space_map::check::{report_reconciliation, report_structure, Report};
use crate::pdata::space_map::disk::{self, StoredSpaceMap};
use crate::pdata::space_map::reconcile::reconcile;
use crate::report::Reporter;

pub use crate::report::findings::{Finding, Location, Severity};

use super::hint::HINT_SIZE;
use super::mapping::MAPPING_SIZE;
use super::read::{
    from_array_damage, from_index_damage, ReadError, Structure, DIRTY_BITSET, DISCARD_BITSET,
    HINT_ARRAY, MAPPING_ARRAY,
};
use super::superblock::{Superblock, CACHE_MAGIC, SUPERBLOCK_LOCATION};
use values::{LocatedBits, MappingChecker};

/// Value findings listed one by one before the rest are only counted.
pub const MAX_VALUE_FINDINGS: usize = 64;

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub super_block_only: bool,
    pub skip_mappings: bool,
    pub skip_hints: bool,
    pub skip_discards: bool,
    pub ignore_non_fatal: bool,
}

impl CheckOptions {
    /// Whether some structure is left out (then the space map cannot be
    /// reconciled and nothing is repaired).
    pub fn skips(&self) -> bool {
        self.skip_mappings || self.skip_hints || self.skip_discards
    }
}

#[derive(Debug, Default)]
pub struct CheckResult {
    pub findings: Vec<Finding>,
    pub superblock: Option<Superblock>,
    /// Why the check stopped before the end, if it did.
    pub aborted: Option<String>,
    /// Metadata blocks with a stored count above the computed one.
    pub metadata_leaks: u64,
    /// The computed and stored counts, when the space map was checked:
    /// what an in-place leak repair starts from.
    pub counts: Option<Box<Counts>>,
    /// Value findings found but not listed (past `MAX_VALUE_FINDINGS`).
    pub unlisted: u64,
}

/// Reference counts computed from the arrays, and the space map as stored.
pub struct Counts {
    pub metadata_refs: RefCounter,
    pub metadata_sm: StoredSpaceMap,
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counts { .. }")
    }
}

impl CheckResult {
    pub fn has_fatal(&self) -> bool {
        self.aborted.is_some() || self.findings.iter().any(Finding::is_fatal)
    }

    pub fn has_non_fatal(&self) -> bool {
        self.findings.iter().any(Finding::is_non_fatal)
    }

    /// Whether the metadata passes, given how non-fatal findings count.
    pub fn passed(&self, ignore_non_fatal: bool) -> bool {
        !self.has_fatal() && (ignore_non_fatal || !self.has_non_fatal())
    }
}

struct Checker<'a> {
    src: &'a BlockSource,
    opts: &'a CheckOptions,
    rep: &'a Reporter,
    result: CheckResult,
}

/// Checks the cache metadata in `src`. Findings are reported through
/// `rep` as they are made (nothing is printed for healthy metadata, as
/// the reference prints nothing); everything is also returned.
pub fn check(src: &BlockSource, opts: &CheckOptions, rep: &Reporter) -> CheckResult {
    let mut c = Checker {
        src,
        opts,
        rep,
        result: CheckResult::default(),
    };
    c.run();
    c.result
}

/// Where a finding about an array block is.
fn at_array(structure: Structure, block: Option<u64>, index: Option<u64>) -> Location {
    Location {
        tree: Some(structure.name().to_string()),
        block,
        keys: index.map(|k| format!("[{k}..{}]", k + 1)),
        ..Default::default()
    }
}

impl Checker<'_> {
    fn report(&mut self, f: Finding) {
        self.rep.line(&f.message);
        self.result.findings.push(f);
    }

    fn abort(&mut self, why: String) {
        self.result.aborted = Some(why);
    }

    fn run(&mut self) {
        let src = self.src;
        let sb = match Superblock::read(src) {
            Ok(sb) => sb,
            Err(e) => return self.abort(bad_superblock(src, &e)),
        };
        self.result.superblock = Some(sb.clone());
        let unusable = |e: ReadError| format!("'{}': {e}", src.path().display());
        if sb.magic != CACHE_MAGIC {
            return self.abort(unusable(ReadError::Magic { found: sb.magic }));
        }
        if sb.version != 1 && sb.version != 2 {
            return self.abort(unusable(ReadError::Version { found: sb.version }));
        }
        if sb.dirty_root == Some(0) {
            return self.abort(unusable(ReadError::NoDirtyBitset));
        }
        self.check_superblock_fields(&sb);
        if self.opts.super_block_only {
            return;
        }
        if let Some(sentence) = truncation(src, &sb) {
            self.report(Finding::fatal("truncated", sentence).at(Location {
                blocks: Some((src.nr_blocks(), described_blocks(&sb))),
                ..Default::default()
            }));
        }
        self.check_arrays(&sb);
    }

    fn check_superblock_fields(&mut self, sb: &Superblock) {
        if sb.data_block_size == 0 {
            self.report(Finding::fatal(
                "superblock",
                "superblock data block size is 0 sectors".into(),
            ));
        }
        if sb.metadata_block_size != (BLOCK_SIZE / 512) as u32 {
            self.report(Finding::non_fatal(
                "superblock",
                format!(
                    "superblock metadata block size is {} sectors, expected {}",
                    sb.metadata_block_size,
                    BLOCK_SIZE / 512
                ),
            ));
        }
        if sb.incompat_flags != 0 {
            self.report(Finding::fatal(
                "superblock",
                format!(
                    "superblock incompat flags are {:#x}: the kernel refuses the metadata",
                    sb.incompat_flags
                ),
            ));
        }
    }

    /// The hint array's length as its own blocks say (its index's last
    /// key and that block's entry count); `cache_blocks` when they
    /// cannot tell (the walk then reports why).
    fn hint_len(&self, sb: &Superblock) -> u64 {
        let cache_blocks = sb.cache_blocks as u64;
        let (pointers, damage) = read_index(self.src, HINT_ARRAY, sb.hint_root);
        if !damage.is_empty() {
            return cache_blocks;
        }
        let Some(&(k, b)) = pointers.last() else {
            return 0;
        };
        match read_block(self.src, b, sb.policy_hint_size, k, None) {
            Ok(v) => k
                .saturating_mul(max_entries_for(sb.policy_hint_size) as u64)
                .saturating_add(v.nr_entries() as u64),
            Err(_) => cache_blocks,
        }
    }

    fn check_arrays(&mut self, sb: &Superblock) {
        let src = self.src;
        let opts = self.opts;
        let cache_blocks = sb.cache_blocks as u64;
        let sm_blocks = described_blocks(sb);
        let metadata_refs = RefCounter::for_metadata(src.nr_blocks().max(sm_blocks));
        let walker = Walker::new(src, &metadata_refs, !opts.ignore_non_fatal);
        walker.count_reference(SUPERBLOCK_LOCATION);

        // What to walk.
        let origin_blocks = sb.origin_blocks_hint();
        let cap = src.nr_blocks().saturating_mul(BLOCK_SIZE as u64 * 8);
        let mappings = MappingChecker::new(src, sb.version, cache_blocks, origin_blocks);
        let dirty_bits = sb
            .dirty_root
            .map(|_| LocatedBits::new(BitsetCollector::new(cache_blocks, cap), src));
        let hints_wanted = !opts.skip_hints && sb.has_hints();
        if hints_wanted && sb.policy_hint_size != HINT_SIZE {
            self.report(Finding::fatal(
                "hint_size",
                format!(
                    "policy hint size is {} bytes; only 4-byte hints are supported",
                    sb.policy_hint_size
                ),
            ));
            self.abort("metadata contains errors".into());
            return;
        }
        let hint_len = hints_wanted.then(|| self.hint_len(sb));
        let discards_wanted = !opts.skip_discards && sb.discard_root != 0;
        let discard_bits = LocatedBits::new(BitsetCollector::new(sb.discard_nr_blocks, cap), src);

        let mut walks: Vec<(Structure, u64, ArrayWalk<'_>)> = Vec::new();
        if !opts.skip_mappings {
            walks.push((
                Structure::Mappings,
                cache_blocks,
                ArrayWalk {
                    name: MAPPING_ARRAY.into(),
                    root: sb.mapping_root,
                    value_size: MAPPING_SIZE,
                    len: cache_blocks,
                    visitor: &mappings,
                },
            ));
            if let (Some(root), Some(bits)) = (sb.dirty_root, &dirty_bits) {
                walks.push((
                    Structure::Dirty,
                    cache_blocks,
                    bits.walk(DIRTY_BITSET, root),
                ));
            }
        }
        if let Some(len) = hint_len {
            walks.push((
                Structure::Hints,
                len,
                ArrayWalk {
                    name: HINT_ARRAY.into(),
                    root: sb.hint_root,
                    value_size: sb.policy_hint_size,
                    len,
                    visitor: &AnyValues,
                },
            ));
        }
        if discards_wanted {
            walks.push((
                Structure::Discards,
                sb.discard_nr_blocks,
                discard_bits.walk(DISCARD_BITSET, sb.discard_root),
            ));
        }
        let arrays: Vec<ArrayWalk<'_>> = walks
            .iter()
            .map(|(_, _, w)| ArrayWalk {
                name: w.name.clone(),
                root: w.root,
                value_size: w.value_size,
                len: w.len,
                visitor: w.visitor,
            })
            .collect();
        let outcomes = walk_arrays(&walker, &arrays);
        for ((structure, len, _), outcome) in walks.iter().zip(&outcomes) {
            self.report_array(*structure, sb.policy_hint_size, *len, outcome);
        }

        if !opts.skip_mappings {
            let dirty = dirty_bits.as_ref();
            let (findings, unlisted) = mappings.finish(src, dirty, MAX_VALUE_FINDINGS);
            for f in findings {
                self.report(f);
            }
            if unlisted > 0 {
                self.rep.line(&format!(
                    "{unlisted} more problem(s) of mapping values or dirty bits not listed"
                ));
                self.result.unlisted = unlisted;
            }
        }
        if let Some(len) = hint_len {
            self.check_hint_len(sb, len);
        }

        if self.result.has_fatal() {
            self.abort("metadata contains errors".into());
            return;
        }
        if opts.skips() {
            return;
        }
        let sm = self.check_space_map(&walker, &metadata_refs, sb);
        drop(walker);
        if let Some(metadata_sm) = sm {
            self.result.counts = Some(Box::new(Counts {
                metadata_refs,
                metadata_sm,
            }));
        }
    }

    fn report_array(&mut self, s: Structure, hint_size: u32, len: u64, outcome: &ArrayOutcome) {
        for d in &outcome.index_damage {
            let cd = from_index_damage(s, hint_size, len, d);
            let f = Finding::fatal("array_index_damage", cd.message.clone())
                .at(at_array(s, cd.block, None));
            self.report(f);
        }
        for d in &outcome.damage {
            let cd = from_array_damage(s, hint_size, len, d);
            let f = Finding::fatal("array_block_damage", cd.message.clone()).at(at_array(
                s,
                cd.block,
                Some(d.indices.start),
            ));
            self.report(f);
        }
    }

    fn check_hint_len(&mut self, sb: &Superblock, len: u64) {
        let cache_blocks = sb.cache_blocks as u64;
        if len == cache_blocks {
            return;
        }
        let (what, range) = if len < cache_blocks {
            ("shorter", len..cache_blocks)
        } else {
            ("longer", cache_blocks..len)
        };
        let message = format!(
            "hint array (index root at block {}): holds {len} hints but the cache has {cache_blocks} blocks: {what} than \
             the mapping array ({} {})",
            sb.hint_root,
            super::read::name_cblocks(&range),
            if len < cache_blocks {
                "without a hint"
            } else {
                "beyond the cache"
            }
        );
        let loc = at_array(Structure::Hints, Some(sb.hint_root), None);
        // The kernel writes the whole hint array at each suspend, when it
        // sets the clean-shutdown flag; after a resize the old array stays
        // until the next suspend, with the flag clear.
        let f = if sb.clean_shutdown() {
            Finding::non_fatal("hint_array_length", message)
        } else {
            Finding::note(
                "hint_array_length",
                format!(
                    "{message}; the cache was not shut down cleanly, so the kernel ignores hints"
                ),
            )
        };
        self.report(f.at(loc));
    }

    /// Reconciles the space map with the counts; the map as stored when
    /// only repairable differences were found.
    fn check_space_map(
        &mut self,
        walker: &Walker,
        refs: &RefCounter,
        sb: &Superblock,
    ) -> Option<StoredSpaceMap> {
        let src = self.src;
        if sb.metadata_sm_root.nr_blocks > src.nr_blocks() {
            self.report(Finding::fatal(
                "space_map_structure",
                format!(
                    "metadata space map: covers {} blocks but the metadata device holds only {}",
                    sb.metadata_sm_root.nr_blocks,
                    src.nr_blocks()
                ),
            ));
            self.abort("metadata space map contains errors".into());
            return None;
        }
        let sm = disk::read_metadata(src, walker, sb.metadata_sm_root);
        let mut reports = Vec::new();
        let ok = report_structure(&sm, &mut |r| reports.push(r));
        let mut leaked = 0;
        if ok {
            let r = reconcile(src, &sm, refs);
            leaked = report_reconciliation(&sm, r, &mut |r| reports.push(r));
        }
        for r in reports {
            match r {
                Report::Finding(f) => self.report(f),
                Report::Line(l) => self.rep.line(&l),
            }
        }
        self.result.metadata_leaks = leaked;
        if self.result.has_fatal() {
            self.abort("metadata space map contains errors".into());
            return None;
        }
        Some(sm)
    }
}

/// Metadata blocks the superblock's space map describes (capped at what
/// a space map can hold, so a damaged count stays bounded).
fn described_blocks(sb: &Superblock) -> u64 {
    sb.metadata_sm_root.nr_blocks.min(MAX_METADATA_BLOCKS)
}

/// When `src` is shorter than its space map says, the sentence that says
/// so: the one finding that explains every unreadable block after it.
fn truncation(src: &BlockSource, sb: &Superblock) -> Option<String> {
    let want = described_blocks(sb);
    let have = src.nr_blocks();
    (have < want).then(|| {
        format!(
            "'{}' looks truncated: it holds {have} {} ({} bytes), but its superblock \
             describes a metadata device of {want} blocks ({} bytes)",
            src.path().display(),
            if have == 1 { "block" } else { "blocks" },
            src.len(),
            want * BLOCK_SIZE as u64
        )
    })
}

/// The final error for an unusable block 0, saying what it holds when
/// it is recognisably something else.
pub fn bad_superblock(src: &BlockSource, e: &crate::io::BlockError) -> String {
    let mut m = format!(
        "bad checksum in superblock of '{}' ({e})",
        src.path().display()
    );
    if let Some(what) = crate::io::input::what_it_holds(src.head(BLOCK_SIZE), "cache") {
        m.push_str(": ");
        m.push_str(&what);
    }
    m
}
