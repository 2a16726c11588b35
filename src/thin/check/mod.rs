//! thin_check's engine.
//!
//! The order of the work, and what each step reports, follows the
//! reference tools so that callers (lvm2, scripts) see what they expect:
//! superblock, stdout facts, device details and top-level trees, the
//! metadata snapshot's trees, every device's mapping tree, then the data
//! and metadata space maps. What dmpd adds is precision: every finding
//! names its tree, device, block and key range, and reference counts are
//! reconciled block by block for both space maps.

mod fold;
mod mappings;
mod space_maps;

use std::collections::BTreeMap;

use crate::io::{BlockSource, BLOCK_SIZE};
use crate::pdata::block_hash::BlockMap;
use crate::pdata::btree::walk::{NodeDamage, TreeSpec, Walker};
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS;
use crate::pdata::space_map::disk::StoredSpaceMap;
use crate::report::phases;
use crate::report::{Progress, Reporter};
use crate::thin::device_details::{DeviceDetails, DEVICE_DETAILS_SIZE};
use crate::thin::devices::{read_details, read_roots, unmatched_ids, TOP_LEVEL_VALUE_SIZE};
use crate::thin::superblock::{Superblock, SUPERBLOCK_LOCATION, THIN_MAGIC};

pub use crate::report::findings::{self, Finding, Location, Severity};
use mappings::{MappingVisitor, NoValues, SubtreePointer, TopLevelVisitor};

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub super_block_only: bool,
    pub skip_mappings: bool,
    pub ignore_non_fatal: bool,
    /// Check the metadata snapshot instead of the live trees.
    pub metadata_snap: bool,
    pub override_mapping_root: Option<u64>,
    pub override_details_root: Option<u64>,
    /// Print every damaged node with the reference tools' node path,
    /// instead of the folded summary.
    pub verbose: bool,
}

/// The facts thin_check prints on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub transaction_id: u64,
    pub metadata_free_blocks: u64,
}

#[derive(Debug, Default)]
pub struct CheckResult {
    pub findings: Vec<Finding>,
    pub facts: Option<Facts>,
    /// The live superblock as read (before overrides).
    pub superblock: Option<Superblock>,
    /// Why the check stopped before the end, if it did.
    pub aborted: Option<String>,
    /// Metadata blocks with a stored count above the computed one.
    pub metadata_leaks: u64,
    pub data_leaks: u64,
    /// The computed and stored counts, when the space maps were checked:
    /// what an in-place leak repair starts from.
    pub counts: Option<Box<Counts>>,
}

/// Reference counts computed from the trees, and the space maps as stored.
pub struct Counts {
    pub metadata_refs: RefCounter,
    pub data_refs: RefCounter,
    pub data_sm: StoredSpaceMap,
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

/// Checks the thin metadata in `src`. Titles, facts and findings are
/// reported through `rep` as the check goes; everything is also returned.
pub fn check(src: &BlockSource, opts: &CheckOptions, rep: &Reporter) -> CheckResult {
    let mut c = Checker {
        src,
        opts,
        rep,
        result: CheckResult::default(),
    };
    c.run();
    rep.finish_progress();
    c.result
}

impl<'a> Checker<'a> {
    fn report(&mut self, f: Finding) {
        self.rep.line(&render(&f, self.opts.verbose));
        self.result.findings.push(f);
    }

    fn abort(&mut self, why: String) {
        self.result.aborted = Some(why);
    }

    fn run(&mut self) {
        let src = self.src;
        let mut sb = match Superblock::read(src, SUPERBLOCK_LOCATION) {
            Ok(sb) => sb,
            Err(e) => {
                return self.abort(crate::thin::superblock::bad_superblock(src, &e));
            }
        };
        self.result.superblock = Some(sb.clone());
        if sb.magic != THIN_MAGIC {
            return self.abort(format!(
                "superblock at block 0 has magic {} (thin metadata has {THIN_MAGIC})",
                sb.magic
            ));
        }
        if let Some(root) = self.opts.override_mapping_root {
            sb.mapping_root = root;
        }
        if let Some(root) = self.opts.override_details_root {
            sb.details_root = root;
        }

        let snap = (sb.metadata_snap != 0).then(|| Superblock::read(src, sb.metadata_snap));
        if self.opts.metadata_snap {
            match &snap {
                None => return self.abort("no current metadata snap".into()),
                Some(Err(e)) => {
                    return self.abort(format!("metadata snap: bad checksum in superblock ({e})"))
                }
                Some(Ok(_)) => {}
            }
        }

        let facts = Facts {
            transaction_id: sb.transaction_id,
            metadata_free_blocks: sb.metadata_sm_root.nr_free(),
        };
        self.result.facts = Some(facts);
        self.rep
            .fact(&format!("TRANSACTION_ID={}", facts.transaction_id));
        self.rep.fact(&format!(
            "METADATA_FREE_BLOCKS={}",
            facts.metadata_free_blocks
        ));

        self.check_superblock_fields(&sb);
        if !self.opts.super_block_only {
            self.check_length(&sb);
        }
        if self.opts.super_block_only || self.result.has_fatal() && !self.truncated(&sb) {
            return;
        }

        self.rep.line("Checking thin metadata");
        self.rep.line("device details tree");
        // The data counters are sized from this: it must be sane. A
        // truncated file is judged by the size its superblock records.
        let described = self.src.nr_blocks().max(self.described_blocks(&sb));
        if let Err(why) = sb.data_size_plausible(described) {
            return self.report(Finding::fatal("superblock", why));
        }
        // The bar counts the blocks the read-ahead brings in and the nodes
        // the walk visits: on a cold cache the sequential read-ahead is
        // most of the time, and the walk, in tree order, follows it.
        let runs = allocated_runs(self.src, &sb);
        let ahead: u64 = runs.iter().map(|r| r.end - r.start).sum();
        let progress = self.rep.start_progress(
            "Checking thin metadata",
            ahead + sb.metadata_sm_root.nr_allocated,
        );
        let read = progress.clone();
        self.src.prefetch(runs, move |n| read.inc(n));
        phases::phase("check: prefetch started");
        self.check_trees(&sb, snap, progress);
    }

    /// Metadata blocks the superblock's space map describes (capped at
    /// what a space map can hold, so a damaged count stays bounded).
    fn described_blocks(&self, sb: &Superblock) -> u64 {
        sb.metadata_sm_root.nr_blocks.min(MAX_METADATA_BLOCKS)
    }

    fn truncated(&self, sb: &Superblock) -> bool {
        self.src.nr_blocks() < self.described_blocks(sb)
    }

    /// A file shorter than its space map says is the one finding that
    /// explains every unreadable node after it: it comes first.
    fn check_length(&mut self, sb: &Superblock) {
        let Some(sentence) = crate::thin::superblock::truncation(self.src) else {
            return;
        };
        self.report(Finding::fatal("truncated", sentence).at(Location {
            blocks: Some((self.src.nr_blocks(), self.described_blocks(sb))),
            ..Default::default()
        }));
    }

    /// Fields a walk would trip over later, reported with their values.
    fn check_superblock_fields(&mut self, sb: &Superblock) {
        if sb.version != 1 && sb.version != 2 {
            self.report(Finding::fatal(
                "superblock",
                format!("superblock version {} is neither 1 nor 2", sb.version),
            ));
        }
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
    }

    fn check_trees(
        &mut self,
        sb: &Superblock,
        snap: Option<Result<Superblock, crate::io::BlockError>>,
        progress: Progress,
    ) {
        let src = self.src;
        let opts = self.opts;
        let sm_blocks = sb.metadata_sm_root.nr_blocks.min(MAX_METADATA_BLOCKS);
        let metadata_refs = RefCounter::for_metadata(src.nr_blocks().max(sm_blocks));
        let mut walker = Walker::new(src, &metadata_refs, !opts.ignore_non_fatal);
        walker.set_progress(progress);
        walker.count_reference(SUPERBLOCK_LOCATION);

        // Live top-level and details trees.
        let top_level = TopLevelVisitor::default();
        let mut live: Option<(BTreeMap<u64, u64>, BTreeMap<u64, DeviceDetails>)> = None;
        if !opts.metadata_snap {
            walker.walk(
                "device details tree",
                sb.details_root,
                &[],
                TreeSpec::new(DEVICE_DETAILS_SIZE),
                &NoValues,
            );
            walker.walk(
                "mapping top-level",
                sb.mapping_root,
                &[],
                TreeSpec::new(TOP_LEVEL_VALUE_SIZE),
                &top_level,
            );
            let damage = walker.take_findings();
            let fatal = !damage.is_empty();
            for d in damage {
                self.report(node_finding(&d, None));
            }
            if fatal {
                return;
            }
            let roots = read_roots(src, sb.mapping_root);
            let details = read_details(src, sb.details_root);
            if !self.same_devices(&roots, &details, "") {
                return;
            }
            self.check_details(sb, &details, "");
            live = Some((roots, details));
        }

        // The metadata snapshot's trees: errors are held back until the
        // mappings have been checked, as the reference tools do.
        let mut snap_error = None;
        let mut snap_view: Option<(BTreeMap<u64, u64>, BTreeMap<u64, DeviceDetails>)> = None;
        match snap {
            None => {}
            Some(Err(e)) => {
                snap_error = Some(format!("metadata snap: bad checksum in superblock ({e})"))
            }
            Some(Ok(snap_sb)) => {
                walker.count_reference(sb.metadata_snap);
                walker.walk(
                    "metadata snapshot device details tree",
                    snap_sb.details_root,
                    &[],
                    TreeSpec::new(DEVICE_DETAILS_SIZE),
                    &NoValues,
                );
                walker.walk(
                    "metadata snapshot mapping top-level",
                    snap_sb.mapping_root,
                    &[],
                    TreeSpec::new(TOP_LEVEL_VALUE_SIZE),
                    &top_level,
                );
                let damage = walker.take_findings();
                if let Some(first) = damage.first() {
                    snap_error = Some(format!("metadata snap: {}", first));
                    for d in &damage {
                        self.result.findings.push(node_finding(d, None));
                    }
                } else {
                    let roots = read_roots(src, snap_sb.mapping_root);
                    let details = read_details(src, snap_sb.details_root);
                    if self.same_devices(&roots, &details, "metadata snapshot ") {
                        self.check_details(sb, &details, "metadata snapshot ");
                        snap_view = Some((roots, details));
                    } else {
                        snap_error = Some(
                            "metadata snap: device ids in the details and mapping trees differ"
                                .into(),
                        );
                    }
                }
            }
        }

        if opts.skip_mappings {
            return;
        }
        self.rep.line("mapping tree");

        // Every device tree, walked once per pointer to it.
        let nr_data_blocks = sb.data_sm_root.nr_blocks;
        let data_refs = RefCounter::new(nr_data_blocks);
        let pointers: Vec<SubtreePointer> =
            std::mem::take(&mut *top_level.pointers.lock().unwrap());
        // Name each pointer after the view it belongs to, for messages.
        let trees: Vec<(String, u64, Vec<u64>)> = pointers
            .iter()
            .map(|p| {
                let in_live = live
                    .as_ref()
                    .is_some_and(|(l, _)| l.get(&p.device) == Some(&p.root));
                let prefix = if in_live { "" } else { "metadata snapshot " };
                (format!("{prefix}device {}", p.device), p.root, vec![])
            })
            .collect();
        let visitor = MappingVisitor {
            data_refs: &data_refs,
            nr_data_blocks,
            pool_time: sb.time,
        };
        phases::phase("check: walking mapping trees");
        walker.walk_many(&trees, TreeSpec::MAPPING, &visitor);
        phases::phase("check: mapping trees walked");

        let mut damage = walker.take_findings();
        let nr_damaged = damage.len();

        // Mapped block counts of live devices, then of the devices only
        // the metadata snapshot holds.
        let mut memo = BlockMap::default();
        let mut losses = Vec::new();
        if let Some((roots, details)) = &live {
            losses.extend(self.check_counts(&walker, roots, details, &mut memo, ""));
        }
        if let Some((roots, details)) = &snap_view {
            let exclusive: BTreeMap<u64, u64> = roots
                .iter()
                .filter(|(id, root)| live.as_ref().is_none_or(|(l, _)| l.get(id) != Some(root)))
                .map(|(id, root)| (*id, *root))
                .collect();
            losses.extend(self.check_counts(
                &walker,
                &exclusive,
                details,
                &mut memo,
                "metadata snapshot ",
            ));
        }
        // Depth problems found while counting.
        let late = walker.take_findings();
        let mapping_failed = !losses.is_empty() || !late.is_empty();
        self.report_mapping_damage(&damage, losses);
        for d in &late {
            self.report(node_finding(d, device_of(&d.tree)));
        }
        damage.extend(late);
        if mapping_failed || nr_damaged > 0 {
            self.abort("check of mappings failed".into());
        }
        if let Some(e) = snap_error {
            self.abort(e);
            return;
        }
        if opts.metadata_snap || self.result.has_fatal() {
            return;
        }

        phases::phase("check: mapped counts compared");
        let maps = space_maps::check(self, &walker, &metadata_refs, &data_refs, sb);
        phases::phase("check: space maps reconciled");
        drop(walker);
        if let Some((data_sm, metadata_sm)) = maps {
            self.result.counts = Some(Box::new(Counts {
                metadata_refs,
                data_refs,
                data_sm,
                metadata_sm,
            }));
        }
    }

    fn same_devices(
        &mut self,
        roots: &BTreeMap<u64, u64>,
        details: &BTreeMap<u64, DeviceDetails>,
        which: &str,
    ) -> bool {
        let (only_mapping, only_details) = unmatched_ids(roots, details);
        if only_mapping.is_empty() && only_details.is_empty() {
            return true;
        }
        self.report(Finding::fatal(
            "device_set_mismatch",
            format!(
                "{which}device details tree and mapping tree are inconsistent: \
                 devices only in the mapping tree {only_mapping:?}, only in the details tree {only_details:?}"
            ),
        ));
        false
    }

    fn check_details(
        &mut self,
        sb: &Superblock,
        details: &BTreeMap<u64, DeviceDetails>,
        which: &str,
    ) {
        for (id, d) in details {
            let loc = Location {
                tree: Some(format!("{which}device details tree")),
                device: Some(*id),
                ..Default::default()
            };
            for (what, t) in [
                ("creation", d.creation_time),
                ("snapshot", d.snapshotted_time),
            ] {
                if t > sb.time {
                    self.report(
                        Finding::fatal(
                            "future_time",
                            format!(
                                "{which}thin device {id}: {what} time {t} is later than the pool's time {}",
                                sb.time
                            ),
                        )
                        .at(loc.clone()),
                    );
                }
            }
            if d.transaction_id > sb.transaction_id {
                self.report(
                    Finding::non_fatal(
                        "future_transaction",
                        format!(
                            "{which}thin device {id}: transaction {} is later than the pool's transaction {}",
                            d.transaction_id, sb.transaction_id
                        ),
                    )
                    .at(loc),
                );
            }
        }
    }

    /// Node damage in the mapping trees and what it cost each device:
    /// folded by default, every node with `-v`.
    fn report_mapping_damage(&mut self, damage: &[NodeDamage], losses: Vec<(fold::Loss, Finding)>) {
        let mut findings: Vec<Finding> = damage
            .iter()
            .map(|d| node_finding(d, device_of(&d.tree)))
            .collect();
        if !damage.is_empty() {
            findings.push(Finding::fatal(
                "mapping_damage_summary",
                format!(
                    "{} damaged node(s) or value(s) in the data mapping trees",
                    damage.len()
                ),
            ));
        }
        let (losses, loss_findings): (Vec<fold::Loss>, Vec<Finding>) = losses.into_iter().unzip();
        findings.extend(loss_findings);
        if self.opts.verbose || damage.len() <= fold::FOLD_ABOVE {
            for f in findings {
                self.report(f);
            }
            return;
        }
        for line in fold::mapping_damage(damage, &losses) {
            self.rep.line(&line);
        }
        self.result.findings.extend(findings);
    }

    /// Compares each device's mapping count with its details; returns
    /// each device that failed.
    fn check_counts(
        &mut self,
        walker: &Walker,
        roots: &BTreeMap<u64, u64>,
        details: &BTreeMap<u64, DeviceDetails>,
        memo: &mut BlockMap<crate::pdata::btree::walk::SubtreeSummary>,
        which: &'static str,
    ) -> Vec<(fold::Loss, Finding)> {
        let mut failed = Vec::new();
        for (id, root) in roots {
            let expected = details.get(id).map(|d| d.mapped_blocks).unwrap_or(0);
            let summary = walker.summarise(&format!("device {id}"), *root, memo);
            let loc = Location {
                tree: Some(format!("{which}device {id} mapping tree")),
                device: Some(*id),
                block: Some(*root),
                ..Default::default()
            };
            let (message, short) = if summary.height.is_none()
                && summary.entries == 0
                && summary.damaged > 0
            {
                (
                        format!(
                            "{which}thin device {id} is missing its mapping root (block {root} is unusable); \
                             details expect {expected} mappings"
                        ),
                        format!("its root is unusable; all {expected} mappings are missing"),
                    )
            } else if summary.damaged > 0 {
                let errors = if summary.damaged > 255 {
                    "255+".to_string()
                } else {
                    summary.damaged.to_string()
                };
                let missing = format!(
                    "{} of {expected} expected mappings are missing",
                    expected.saturating_sub(summary.entries)
                );
                (
                    format!("{which}thin device {id} has {errors} damaged node(s): {missing}"),
                    missing,
                )
            } else if summary.entries != expected {
                let short = format!(
                    "{} mappings, but its details record {expected}",
                    summary.entries
                );
                (format!("{which}thin device {id} has {short}"), short)
            } else {
                continue;
            };
            let loss = fold::Loss {
                which,
                device: *id,
                text: short,
            };
            failed.push((loss, Finding::fatal("mapped_blocks", message).at(loc)));
        }
        failed
    }
}

fn node_finding(d: &NodeDamage, device: Option<u64>) -> Finding {
    let mut f = d.finding();
    f.location.device = device;
    f
}

/// The runs of blocks the metadata space map says are in use (short free
/// gaps included), inside the source: what is read ahead, in the
/// background and in block order, so a cold walk finds them in memory
/// instead of faulting them in one at a time. Best effort: damage is
/// reported later by the walk itself.
fn allocated_runs(src: &BlockSource, sb: &Superblock) -> Vec<std::ops::Range<u64>> {
    use crate::io::BlockKind;
    use crate::pdata::space_map::bitmap::{self, ENTRIES_PER_BITMAP};
    /// Free gaps shorter than this are read through.
    const GAP: u64 = 256;
    let root = &sb.metadata_sm_root;
    let Ok(index) = src.checked(root.bitmap_root, BlockKind::Index) else {
        return Vec::new();
    };
    let nr_bitmaps = root
        .nr_blocks
        .div_ceil(ENTRIES_PER_BITMAP)
        .min(bitmap::MAX_METADATA_BITMAPS as u64);
    let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
    for i in 0..nr_bitmaps as usize {
        let ie = bitmap::metadata_index_entry(index, i);
        let Ok(bm) = src.checked(ie.blocknr, BlockKind::Bitmap) else {
            continue;
        };
        let first = i as u64 * ENTRIES_PER_BITMAP;
        let n = (root.nr_blocks - first).min(ENTRIES_PER_BITMAP);
        for w in 0..n.div_ceil(32) as usize {
            if bitmap::word(bm, w) == 0 {
                continue;
            }
            let b = first + w as u64 * 32;
            match runs.last_mut() {
                Some(r) if b <= r.end + GAP => r.end = b + 32,
                _ => runs.push(b..b + 32),
            }
        }
    }
    for r in &mut runs {
        r.end = r.end.min(src.nr_blocks());
    }
    runs.retain(|r| r.start < r.end);
    runs
}

/// The device a tree name such as "metadata snapshot device 3" names.
fn device_of(tree: &str) -> Option<u64> {
    tree.rsplit_once("device ")
        .and_then(|(_, id)| id.parse().ok())
}

/// The text form of a finding: its long form with `-v`, where it has one.
pub fn render(f: &Finding, verbose: bool) -> String {
    match (&f.detail, verbose) {
        (Some(detail), true) => detail.clone(),
        _ => f.message.clone(),
    }
}
