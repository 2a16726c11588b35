//! Turning a stored space map and its reconciliation with the computed
//! counts into check findings, the same way for every target: structural
//! problems, runs of differing counts (the first few listed one per
//! line, then summed), and bookkeeping fields that disagree.
//!
//! ```ignore
//! let sm = disk::read_metadata(src, &walker, root);
//! if report_structure(&sm, &mut emit) {
//!     let leaked = report_reconciliation(&sm, reconcile(src, &sm, &refs), &mut emit);
//! }
//! ```

use crate::report::findings::{Finding, Location};

use super::disk::StoredSpaceMap;
use super::reconcile::{Discrepancy, Reconciliation};

/// Runs listed one per line before the rest are summarised.
pub const MAX_RUNS_LISTED: usize = 32;

/// What a check prints, in order: findings, and summary lines that are
/// not findings themselves.
pub enum Report {
    Finding(Finding),
    Line(String),
}

fn located(sm: &StoredSpaceMap, block: Option<u64>) -> Location {
    Location {
        tree: Some(format!("{} space map", sm.which.name())),
        block,
        ..Default::default()
    }
}

/// Reports what keeps the map's counts from being read; true if there
/// is nothing (the counts can be reconciled).
pub fn report_structure(sm: &StoredSpaceMap, out: &mut dyn FnMut(Report)) -> bool {
    let name = sm.which.name();
    for p in &sm.problems {
        out(Report::Finding(
            Finding::fatal(
                "space_map_structure",
                format!("{name} space map: {}", p.message),
            )
            .at(located(sm, p.block)),
        ));
    }
    for d in &sm.tree_damage {
        out(Report::Finding(d.finding()));
    }
    sm.problems.is_empty() && sm.tree_damage.is_empty()
}

/// Stable machine-readable names of the discrepancies.
pub fn kind_name(k: Discrepancy) -> &'static str {
    match k {
        Discrepancy::Leaked => "leaked_blocks",
        Discrepancy::OverCounted => "over_counted_blocks",
        Discrepancy::UnderCounted => "under_counted_blocks",
        Discrepancy::FreeButReferenced => "referenced_free_blocks",
    }
}

/// Reports a reconciliation; returns the number of blocks whose stored
/// count is above the computed one (leaked or over-counted: repairable
/// in place).
pub fn report_reconciliation(
    sm: &StoredSpaceMap,
    r: Reconciliation,
    out: &mut dyn FnMut(Report),
) -> u64 {
    let name = sm.which.name();
    for p in &r.problems {
        out(Report::Finding(
            Finding::fatal(
                "space_map_structure",
                format!("{name} space map: {}", p.message),
            )
            .at(located(sm, p.block)),
        ));
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
        out(Report::Finding(f.at(Location {
            blocks: Some((run.begin, run.end)),
            ..located(sm, Some(run.begin))
        })));
    }
    if r.runs.len() > MAX_RUNS_LISTED {
        out(Report::Line(format!(
            "{name} space map: {} more runs of differing counts not listed",
            r.runs.len() - MAX_RUNS_LISTED
        )));
    }
    let mut repairable = 0;
    for (kind, n) in &totals {
        out(Report::Line(format!(
            "{n} {name} block(s) {}",
            kind.describe()
        )));
        if matches!(kind, Discrepancy::Leaked | Discrepancy::OverCounted) {
            repairable += n;
        }
    }
    for m in &r.counters {
        let place = match (m.bitmap, m.block) {
            (Some(i), Some(b)) => format!("bitmap {i} (block {b}): "),
            _ => String::new(),
        };
        out(Report::Finding(
            Finding::non_fatal(
                "space_map_counter",
                format!(
                    "{name} space map: {place}{} is {} but the bitmaps say {}",
                    m.field, m.recorded, m.actual
                ),
            )
            .at(located(sm, m.block)),
        ));
    }
    repairable
}
