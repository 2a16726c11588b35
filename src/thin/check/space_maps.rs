//! The last stage of a check: reading both space maps and reconciling
//! their stored counts with the counts computed from the trees.

use crate::pdata::btree::walk::Walker;
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::disk::{self, StoredSpaceMap};
use crate::pdata::space_map::reconcile::{reconcile, Discrepancy};
use crate::thin::superblock::Superblock;

use super::{node_finding, Checker, Finding, Location};

/// Runs listed one per line before the rest are summarised.
const MAX_RUNS_LISTED: usize = 32;

pub(super) fn check(
    c: &mut Checker<'_>,
    walker: &Walker,
    metadata_refs: &RefCounter,
    data_refs: &RefCounter,
    sb: &Superblock,
) -> Option<(StoredSpaceMap, StoredSpaceMap)> {
    let src = c.src;
    if sb.metadata_sm_root.nr_blocks > src.nr_blocks() {
        c.report(Finding::fatal(
            "space_map_structure",
            format!(
                "metadata space map: covers {} blocks but the metadata device holds only {}",
                sb.metadata_sm_root.nr_blocks,
                src.nr_blocks()
            ),
        ));
        return None;
    }
    // Both maps' own blocks are metadata references: read them all before
    // reconciling the metadata counts.
    let data_sm = disk::read_data(walker, sb.data_sm_root);
    let metadata_sm = disk::read_metadata(src, walker, sb.metadata_sm_root);
    for sm in [&data_sm, &metadata_sm] {
        if !structure_ok(c, sm) {
            return None;
        }
    }
    let data = reconcile(src, &data_sm, data_refs);
    report_reconciliation(c, &data_sm, data);
    let meta = reconcile(src, &metadata_sm, metadata_refs);
    report_reconciliation(c, &metadata_sm, meta);
    Some((data_sm, metadata_sm))
}

fn structure_ok(c: &mut Checker<'_>, sm: &StoredSpaceMap) -> bool {
    let name = sm.which.name();
    for p in &sm.problems {
        c.report(
            Finding::fatal(
                "space_map_structure",
                format!("{name} space map: {}", p.message),
            )
            .at(Location {
                tree: Some(format!("{name} space map")),
                block: p.block,
                ..Default::default()
            }),
        );
    }
    for d in &sm.tree_damage {
        c.report(node_finding(d, None));
    }
    sm.problems.is_empty() && sm.tree_damage.is_empty()
}

fn report_reconciliation(
    c: &mut Checker<'_>,
    sm: &StoredSpaceMap,
    r: crate::pdata::space_map::reconcile::Reconciliation,
) {
    let name = sm.which.name();
    for p in &r.problems {
        c.report(
            Finding::fatal(
                "space_map_structure",
                format!("{name} space map: {}", p.message),
            )
            .at(Location {
                tree: Some(format!("{name} space map")),
                block: p.block,
                ..Default::default()
            }),
        );
    }
    let mut listed = 0;
    let mut totals = std::collections::BTreeMap::<Discrepancy, u64>::new();
    for run in &r.runs {
        *totals.entry(run.kind).or_default() += run.end - run.begin;
        if listed == MAX_RUNS_LISTED {
            continue;
        }
        listed += 1;
        let blocks = if run.end - run.begin == 1 {
            format!("block {}", run.begin)
        } else {
            format!(
                "blocks {}..{} ({} blocks)",
                run.begin,
                run.end - 1,
                run.end - run.begin
            )
        };
        let message = format!(
            "{name} space map: {blocks} {}: stored count {}, computed {}",
            run.kind.describe(),
            run.stored,
            run.computed
        );
        let f = if run.kind.is_fatal() {
            Finding::fatal(kind_name(run.kind), message)
        } else {
            Finding::non_fatal(kind_name(run.kind), message)
        };
        c.report(f.at(Location {
            tree: Some(format!("{name} space map")),
            block: Some(run.begin),
            blocks: Some((run.begin, run.end)),
            ..Default::default()
        }));
    }
    if r.runs.len() > MAX_RUNS_LISTED {
        c.rep.line(&format!(
            "{name} space map: {} more runs of differing counts not listed",
            r.runs.len() - MAX_RUNS_LISTED
        ));
    }
    for (kind, n) in &totals {
        let line = format!("{n} {name} block(s) {}", kind.describe());
        c.rep.line(&line);
        if matches!(kind, Discrepancy::Leaked | Discrepancy::OverCounted) {
            match sm.which {
                disk::Which::Metadata => c.result.metadata_leaks += n,
                disk::Which::Data => c.result.data_leaks += n,
            }
        }
    }
    for m in &r.counters {
        let place = match (m.bitmap, m.block) {
            (Some(i), Some(b)) => format!("bitmap {i} (block {b}): "),
            _ => String::new(),
        };
        // The summaries (nr_free, none_free_before, nr_allocated) can be
        // rebuilt from the bitmaps in place; a ref-count entry cannot.
        let kind = if m.field.starts_with("ref-count") {
            "ref_count_entry"
        } else {
            "space_map_counter"
        };
        c.report(
            Finding::non_fatal(
                kind,
                format!(
                    "{name} space map: {place}{} is {} but the bitmaps say {}",
                    m.field, m.recorded, m.actual
                ),
            )
            .at(Location {
                tree: Some(format!("{name} space map")),
                block: m.block,
                ..Default::default()
            }),
        );
    }
}

fn kind_name(k: Discrepancy) -> &'static str {
    match k {
        Discrepancy::Leaked => "leaked_blocks",
        Discrepancy::OverCounted => "over_counted_blocks",
        Discrepancy::UnderCounted => "under_counted_blocks",
        Discrepancy::FreeButReferenced => "referenced_free_blocks",
    }
}
