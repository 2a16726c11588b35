//! The last stage of a check: reading both space maps and reconciling
//! their stored counts with the counts computed from the trees.

use crate::pdata::btree::walk::Walker;
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::check::{self as sm_check, report_structure, Report};
use crate::pdata::space_map::disk::{self, StoredSpaceMap};
use crate::pdata::space_map::reconcile::{reconcile, Reconciliation};
use crate::thin::superblock::Superblock;

use super::{Checker, Finding};

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

/// Passes the shared space-map reports on to the checker, in order.
fn emit<'c, 'a>(c: &'c mut Checker<'a>) -> impl FnMut(Report) + use<'c, 'a> {
    move |r| match r {
        Report::Finding(f) => c.report(f),
        Report::Line(l) => c.rep.line(&l),
    }
}

fn structure_ok(c: &mut Checker<'_>, sm: &StoredSpaceMap) -> bool {
    report_structure(sm, &mut emit(c))
}

fn report_reconciliation(c: &mut Checker<'_>, sm: &StoredSpaceMap, r: Reconciliation) {
    let leaked = sm_check::report_reconciliation(sm, r, &mut emit(c));
    match sm.which {
        disk::Which::Metadata => c.result.metadata_leaks += leaked,
        disk::Which::Data => c.result.data_leaks += leaked,
    }
}
