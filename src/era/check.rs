//! era_check's engine.
//!
//! Order: the superblock; the writeset trees (live, then the metadata
//! snapshot's); every writeset's bitset (archived ones, the open current
//! writeset) and both era arrays, array block by array block; the values
//! (eras against the current era, writeset sizes against nr_blocks);
//! then the metadata space map, whose stored counts are reconciled with
//! the counts computed from everything reached (the snapshot's superblock
//! copy and trees included, its unreferenced current writeset not), as
//! thin_check does: leaks are non-fatal, under-counts fatal.

use std::sync::Mutex;

use crate::io::{BlockSource, BLOCK_SIZE};
use crate::pdata::array::view::ArrayView;
use crate::pdata::array::walk::{walk_arrays, AnyValues, ArrayVisitor, ArrayWalk};
use crate::pdata::array::{
    name_range, ArrayBlockError, ArrayBlockView, ArrayDamage, ArrayDamageKind,
};
use crate::pdata::bitset::{words_for, WORD_SIZE};
use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::{Damage, LeafVisitor, TreeSpec, Walker};
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS;
use crate::pdata::space_map::check::{report_reconciliation, report_structure, Report};
use crate::pdata::space_map::disk;
use crate::pdata::space_map::reconcile::reconcile;
use crate::report::findings::{Finding, Location};
use crate::report::Reporter;

use super::superblock::{
    bad_superblock, Superblock, Writeset, ERA_MAGIC, ERA_VERSION, SUPERBLOCK_LOCATION,
    WRITESET_SIZE,
};
use super::ERA_ENTRY_SIZE;

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub super_block_only: bool,
    pub ignore_non_fatal: bool,
}

#[derive(Debug, Default)]
pub struct CheckResult {
    pub findings: Vec<Finding>,
    pub superblock: Option<Superblock>,
    /// Why the check stopped before the end, if it did.
    pub aborted: Option<String>,
    /// Metadata blocks with a stored count above the computed one.
    pub metadata_leaks: u64,
}

impl CheckResult {
    pub fn has_fatal(&self) -> bool {
        self.aborted.is_some() || self.findings.iter().any(Finding::is_fatal)
    }

    pub fn has_non_fatal(&self) -> bool {
        self.findings.iter().any(Finding::is_non_fatal)
    }

    pub fn passed(&self, ignore_non_fatal: bool) -> bool {
        !self.has_fatal() && (ignore_non_fatal || !self.has_non_fatal())
    }
}

/// Checks the era metadata in `src`, reporting findings through `rep`
/// as they are made.
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

struct Checker<'a> {
    src: &'a BlockSource,
    opts: &'a CheckOptions,
    rep: &'a Reporter,
    result: CheckResult,
}

/// A writeset tree entry as the walk found it.
#[derive(Clone, Debug)]
struct Entry {
    tree: String,
    era: u64,
    writeset: Writeset,
}

/// Gathers the writeset trees' values (each distinct leaf once).
#[derive(Default)]
struct WritesetLeaves {
    entries: Mutex<Vec<Entry>>,
}

impl LeafVisitor for WritesetLeaves {
    fn visit(&self, tree: &str, _block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        let mut bad = Vec::new();
        let mut out = Vec::new();
        for i in 0..leaf.nr_entries() {
            let era = leaf.key(i);
            if era > u32::MAX as u64 {
                bad.push(era);
                continue;
            }
            out.push(Entry {
                tree: tree.to_string(),
                era,
                writeset: Writeset::parse(leaf.value(i)),
            });
        }
        self.entries.lock().unwrap().extend(out);
        (!bad.is_empty())
            .then(|| Damage::BadValues(format!("writeset tree keys {bad:?} are not 32-bit eras")))
    }
}

/// Era array values must not be newer than the current era.
struct EraValues {
    current_era: u32,
}

impl ArrayVisitor for EraValues {
    fn visit(&self, index: u64, block: ArrayBlockView<'_>) -> Result<(), String> {
        let first = index * crate::pdata::array::max_entries_for(ERA_ENTRY_SIZE) as u64;
        let mut newer = Vec::new();
        for (i, era) in block.values_u32().enumerate() {
            if era > self.current_era {
                newer.push((first + i as u64, era));
            }
        }
        if newer.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = newer
            .iter()
            .take(8)
            .map(|(b, e)| format!("block {b} has era {e}"))
            .collect();
        let more = if newer.len() > 8 {
            format!(" and {} more", newer.len() - 8)
        } else {
            String::new()
        };
        Err(format!(
            "{} origin block(s) with an era newer than the current era {}: {}{more}",
            newer.len(),
            self.current_era,
            shown.join(", ")
        ))
    }
}

/// Names the entries of the era array (origin blocks) and of bitsets
/// (words, shown as the bits they hold).
fn blocks_named(r: &std::ops::Range<u64>) -> String {
    name_range("origin block", "origin blocks", r)
}

fn bits_named(r: &std::ops::Range<u64>, nr_bits: u64) -> String {
    let bits = r.start * 64..(r.end * 64).min(nr_bits);
    name_range("bit", "bits", &bits)
}

impl<'a> Checker<'a> {
    fn report(&mut self, f: Finding) {
        self.rep.line(&f.message);
        self.result.findings.push(f);
    }

    fn fatal(
        &mut self,
        kind: &'static str,
        message: String,
        tree: Option<&str>,
        block: Option<u64>,
    ) {
        self.report(Finding::fatal(kind, message).at(Location {
            tree: tree.map(str::to_string),
            block,
            ..Default::default()
        }));
    }

    fn run(&mut self) {
        let src = self.src;
        self.rep.line("Checking era metadata");
        let sb = match Superblock::read(src, SUPERBLOCK_LOCATION) {
            Ok(sb) => sb,
            Err(e) => {
                self.result.aborted = Some(bad_superblock(src, &e));
                return;
            }
        };
        self.result.superblock = Some(sb.clone());
        if sb.magic != ERA_MAGIC {
            self.result.aborted = Some(format!(
                "superblock at block 0 has magic {} (era metadata has {ERA_MAGIC})",
                sb.magic
            ));
            return;
        }
        if sb.version != ERA_VERSION {
            self.result.aborted = Some(format!(
                "unknown superblock version {} (era metadata has version {ERA_VERSION})",
                sb.version
            ));
            return;
        }
        self.superblock_fields(&sb, SUPERBLOCK_LOCATION, "");
        if self.opts.super_block_only {
            return;
        }
        self.trees(&sb);
    }

    fn superblock_fields(&mut self, sb: &Superblock, at: u64, which: &str) {
        if sb.blocknr != at {
            self.fatal(
                "superblock",
                format!(
                    "{which}superblock at block {at} records its location as block {}",
                    sb.blocknr
                ),
                None,
                Some(at),
            );
        }
        if sb.data_block_size == 0 {
            self.fatal(
                "superblock",
                format!("{which}superblock data block size is 0 sectors"),
                None,
                Some(at),
            );
        }
        if sb.metadata_block_size != (BLOCK_SIZE / 512) as u32 {
            self.report(
                Finding::non_fatal(
                    "superblock",
                    format!(
                        "{which}superblock metadata block size is {} sectors, expected {}",
                        sb.metadata_block_size,
                        BLOCK_SIZE / 512
                    ),
                )
                .at(Location {
                    block: Some(at),
                    ..Default::default()
                }),
            );
        }
    }

    fn trees(&mut self, sb: &Superblock) {
        let src = self.src;
        let sm_blocks = sb.metadata_sm_root.nr_blocks.min(MAX_METADATA_BLOCKS);
        let refs = RefCounter::for_metadata(src.nr_blocks().max(sm_blocks));
        let walker = Walker::new(src, &refs, !self.opts.ignore_non_fatal);
        walker.count_reference(SUPERBLOCK_LOCATION);

        let leaves = WritesetLeaves::default();
        walker.walk(
            "writeset tree",
            sb.writeset_tree_root,
            &[],
            TreeSpec::new(WRITESET_SIZE),
            &leaves,
        );

        // The metadata snapshot: its superblock copy and its two trees.
        let mut snap: Option<Superblock> = None;
        if sb.metadata_snap != 0 {
            match Superblock::read(src, sb.metadata_snap) {
                Err(e) => self.fatal(
                    "metadata_snapshot",
                    format!(
                        "metadata snapshot at block {}: {}",
                        sb.metadata_snap,
                        e.reason()
                    ),
                    None,
                    Some(sb.metadata_snap),
                ),
                Ok(s) => {
                    walker.count_reference(sb.metadata_snap);
                    self.superblock_fields(&s, sb.metadata_snap, "metadata snapshot ");
                    walker.walk(
                        "metadata snapshot writeset tree",
                        s.writeset_tree_root,
                        &[],
                        TreeSpec::new(WRITESET_SIZE),
                        &leaves,
                    );
                    snap = Some(s);
                }
            }
        }
        for d in walker.take_findings() {
            self.report(d.finding());
        }

        let mut entries = leaves.entries.into_inner().unwrap();
        entries.sort_by(|a, b| a.tree.cmp(&b.tree).then(a.era.cmp(&b.era)));
        self.writeset_eras(sb, snap.as_ref(), &entries);

        // Every bitset and both era arrays: the live side's first, so a
        // structure the snapshot shares is named after the live side.
        let mut bitsets: Vec<(String, Writeset)> = entries
            .iter()
            .map(|e| {
                let prefix = if e.tree.starts_with("metadata snapshot") {
                    "metadata snapshot "
                } else {
                    ""
                };
                (format!("{prefix}writeset era {}", e.era), e.writeset)
            })
            .collect();
        if sb.current_writeset.root != 0 {
            bitsets.push((
                format!("current writeset (era {})", sb.current_era),
                sb.current_writeset,
            ));
        }
        bitsets.sort_by_key(|(name, _)| name.starts_with("metadata snapshot"));
        let live_values = EraValues {
            current_era: sb.current_era,
        };
        let snap_values = EraValues {
            current_era: snap.as_ref().map_or(0, |s| s.current_era),
        };
        let mut walked = std::collections::HashSet::<u64>::new();
        let mut resized = Vec::new();
        for snapshot_side in [false, true] {
            let mut walks: Vec<ArrayWalk<'_>> = Vec::new();
            for (name, ws) in &bitsets {
                if name.starts_with("metadata snapshot") != snapshot_side {
                    continue;
                }
                // Two tree values may hold one bitset (copied leaves of a
                // shared tree): one walk, one more reference per value.
                if !walked.insert(ws.root) {
                    walker.count_reference(ws.root);
                    continue;
                }
                walks.push(ArrayWalk {
                    name: name.clone(),
                    root: ws.root,
                    value_size: WORD_SIZE,
                    len: words_for(ws.nr_bits as u64),
                    visitor: &AnyValues,
                });
            }
            let (name, array_sb, values) = match (&snap, snapshot_side) {
                (_, false) => ("era array", sb, &live_values),
                (Some(s), true) => ("metadata snapshot era array", s, &snap_values),
                (None, true) => ("", sb, &live_values),
            };
            if !name.is_empty() {
                if walked.insert(array_sb.era_array_root) {
                    walks.push(ArrayWalk {
                        name: name.into(),
                        root: array_sb.era_array_root,
                        value_size: ERA_ENTRY_SIZE,
                        len: array_sb.nr_blocks as u64,
                        visitor: values,
                    });
                } else {
                    walker.count_reference(array_sb.era_array_root);
                }
            }
            let outcomes = walk_arrays(&walker, &walks);
            for (walk, outcome) in walks.iter().zip(&outcomes) {
                for d in &outcome.index_damage {
                    self.report(d.finding());
                }
                let is_bitset = walk.value_size == WORD_SIZE;
                let nr_bits = bitsets
                    .iter()
                    .find(|(n, _)| *n == walk.name)
                    .map_or(0, |(_, ws)| ws.nr_bits as u64);
                for d in &outcome.damage {
                    let text = if is_bitset {
                        d.describe(&|r| bits_named(r, nr_bits))
                    } else {
                        d.describe(&blocks_named)
                    };
                    let kind = match d.kind {
                        ArrayDamageKind::Values(_) => "future_era",
                        _ => "array_damage",
                    };
                    self.fatal(kind, text, Some(&walk.name), d.block);
                }
                if is_bitset && outcome.damage.iter().any(length_damage) {
                    if let Some((_, ws)) = bitsets.iter().find(|(n, _)| *n == walk.name) {
                        if self.wrong_size(&walk.name, *ws) {
                            resized.push(walk.name.clone());
                        }
                    }
                }
            }
        }
        bitsets.retain(|(n, _)| !resized.contains(n));
        self.writeset_sizes(sb, &bitsets);

        if self.result.has_fatal() {
            return;
        }
        self.space_map(sb, &walker, &refs);
    }

    /// Archived eras against the current era, per side.
    fn writeset_eras(&mut self, sb: &Superblock, snap: Option<&Superblock>, entries: &[Entry]) {
        for e in entries {
            let (side, current, open) = if e.tree.starts_with("metadata snapshot") {
                let Some(s) = snap else { continue };
                // The snapshot's current writeset is not its own.
                ("metadata snapshot ", s.current_era, false)
            } else {
                ("", sb.current_era, sb.current_writeset.root != 0)
            };
            if e.era > current as u64 {
                self.fatal(
                    "future_era",
                    format!(
                        "{side}writeset tree: writeset era {} is newer than the current era {current}",
                        e.era
                    ),
                    Some(&e.tree),
                    None,
                );
            } else if e.era == current as u64 && open {
                self.fatal(
                    "duplicate_era",
                    format!(
                        "{side}writeset tree: era {} is archived while it is still the current era \
                         with an open writeset (two writesets for one era)",
                        e.era
                    ),
                    Some(&e.tree),
                    None,
                );
            }
        }
    }

    /// A bitset whose array does not hold the words its nr_bits needs:
    /// say both figures.
    fn wrong_size(&mut self, name: &str, ws: Writeset) -> bool {
        let held = ArrayView::read(self.src, name, ws.root, WORD_SIZE, None);
        let words = words_for(ws.nr_bits as u64);
        if !held.is_intact() || held.len() == words {
            return false;
        }
        self.fatal(
            "writeset_size",
            format!(
                "{name}: nr_bits is {} ({words} words), but its bitset holds {} words ({} bits)",
                ws.nr_bits,
                held.len(),
                held.len() * 64
            ),
            Some(name),
            Some(ws.root),
        );
        true
    }

    /// The open writeset covers the origin as it is now; archived ones
    /// may be of an earlier size (the kernel folds min(nr_bits,
    /// nr_blocks) bits of each).
    fn writeset_sizes(&mut self, sb: &Superblock, bitsets: &[(String, Writeset)]) {
        for (name, ws) in bitsets {
            if ws.nr_bits == sb.nr_blocks || name.starts_with("metadata snapshot") {
                continue;
            }
            if name.starts_with("current") {
                self.fatal(
                    "writeset_size",
                    format!(
                        "{name}: nr_bits is {}, but the origin has {} blocks (nr_blocks); \
                         the current writeset always covers the whole origin",
                        ws.nr_bits, sb.nr_blocks
                    ),
                    Some(name),
                    Some(ws.root),
                );
            } else {
                self.report(Finding::note(
                    "writeset_size",
                    format!(
                        "{name}: nr_bits is {}, the origin now has {} blocks (the origin was \
                         resized since; the kernel folds the first {} bits)",
                        ws.nr_bits,
                        sb.nr_blocks,
                        ws.nr_bits.min(sb.nr_blocks)
                    ),
                ));
            }
        }
    }

    fn space_map(&mut self, sb: &Superblock, walker: &Walker<'_>, refs: &RefCounter) {
        let src = self.src;
        if sb.metadata_sm_root.nr_blocks > src.nr_blocks() {
            self.fatal(
                "space_map_structure",
                format!(
                    "metadata space map: covers {} blocks but the metadata device holds only {}",
                    sb.metadata_sm_root.nr_blocks,
                    src.nr_blocks()
                ),
                Some("metadata space map"),
                None,
            );
            return;
        }
        let sm = disk::read_metadata(src, walker, sb.metadata_sm_root);
        let mut reports = Vec::new();
        let ok = report_structure(&sm, &mut |r| reports.push(r));
        let leaked = if ok {
            let r = reconcile(src, &sm, refs);
            report_reconciliation(&sm, r, &mut |r| reports.push(r))
        } else {
            0
        };
        for r in reports {
            match r {
                Report::Finding(f) => self.report(f),
                Report::Line(l) => self.rep.line(&l),
            }
        }
        self.result.metadata_leaks = leaked;
    }
}

/// Array damage that says the array is not as long as its owner says.
fn length_damage(d: &ArrayDamage) -> bool {
    matches!(
        d.kind,
        ArrayDamageKind::Missing
            | ArrayDamageKind::Beyond
            | ArrayDamageKind::Header(ArrayBlockError::WrongLength { .. })
            | ArrayDamageKind::Header(ArrayBlockError::NotFull { .. })
    )
}
