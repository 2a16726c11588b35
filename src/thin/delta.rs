//! thin_delta's engine: the differences between two mapping trees.
//!
//! Each tree is read in key order as runs of blocks contiguous in both
//! virtual and data address; the two run streams are swept together and
//! every stretch of virtual blocks is classified (mapped by the left tree
//! only, by the right only, by both to the same data, by both to
//! different data). Neighbouring stretches of one kind that touch in
//! virtual address are merged into one entry, as the reference tools do
//! (so an entry's data start is that of its first part). Leaves the two
//! trees share are read once and not compared.

use crate::io::BlockSource;
use crate::pdata::btree::node::NodeView;
use crate::thin::block_time::BlockTime;
use crate::thin::forest::ordered_leaves;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffKind {
    Same,
    Different,
    LeftOnly,
    RightOnly,
}

impl DiffKind {
    pub fn tag(self) -> &'static str {
        match self {
            DiffKind::Same => "same",
            DiffKind::Different => "different",
            DiffKind::LeftOnly => "left_only",
            DiffKind::RightOnly => "right_only",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiffEntry {
    pub kind: DiffKind,
    pub begin: u64,
    pub len: u64,
    /// Data block of `begin` in the left tree (if it maps it).
    pub left_data: Option<u64>,
    pub right_data: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    virt: u64,
    data: u64,
    len: u64,
}

/// A tree's mappings in key order, as maximal runs.
struct Runs<'a> {
    src: &'a BlockSource,
    leaves: std::iter::Copied<std::slice::Iter<'a, u64>>,
    node: Option<(NodeView<'a>, u32)>,
    pending: Option<Run>,
}

impl<'a> Runs<'a> {
    fn new(src: &'a BlockSource, leaves: &'a [u64]) -> Runs<'a> {
        Runs {
            src,
            leaves: leaves.iter().copied(),
            node: None,
            pending: None,
        }
    }

    fn next_mapping(&mut self) -> Option<(u64, u64)> {
        loop {
            if let Some((node, i)) = self.node.as_mut() {
                if *i < node.nr_entries() {
                    let k = node.key(*i);
                    let v = BlockTime::unpack(node.value_u64(*i)).block;
                    *i += 1;
                    return Some((k, v));
                }
            }
            let leaf = self.leaves.next()?;
            self.node = Some((NodeView::new(self.src.block(leaf).ok()?), 0));
        }
    }
}

impl Iterator for Runs<'_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        loop {
            match self.next_mapping() {
                None => return self.pending.take(),
                Some((virt, data)) => match self.pending.as_mut() {
                    Some(r) if r.virt + r.len == virt && r.data + r.len == data => r.len += 1,
                    _ => {
                        let done = self.pending.replace(Run { virt, data, len: 1 });
                        if done.is_some() {
                            return done;
                        }
                    }
                },
            }
        }
    }
}

/// Merges touching entries of one kind before handing them on.
struct Merger<F: FnMut(DiffEntry)> {
    current: Option<DiffEntry>,
    emit: F,
}

impl<F: FnMut(DiffEntry)> Merger<F> {
    fn push(&mut self, e: DiffEntry) {
        match self.current.as_mut() {
            Some(c) if c.kind == e.kind && c.begin + c.len == e.begin => c.len += e.len,
            _ => {
                if let Some(done) = self.current.replace(e) {
                    (self.emit)(done);
                }
            }
        }
    }

    fn finish(mut self) {
        if let Some(done) = self.current.take() {
            (self.emit)(done);
        }
    }
}

/// Calls `emit` with each merged difference entry, in virtual order.
///
/// A leaf both trees hold (the same block) has the same keys and values
/// in both: it is read once and reported as the same, uncompared. Between
/// two such leaves both trees cover the same keys, so the stretches of
/// other leaves are compared with each other alone.
pub fn diff(src: &BlockSource, left_root: u64, right_root: u64, emit: impl FnMut(DiffEntry)) {
    let left = ordered_leaves(src, left_root);
    let right = ordered_leaves(src, right_root);
    let right_at: std::collections::HashMap<u64, usize> =
        right.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    let mut out = Merger {
        current: None,
        emit,
    };
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        // The next leaf both hold, at or after the cursors.
        let next = (i..left.len())
            .find_map(|k| right_at.get(&left[k]).filter(|&&l| l >= j).map(|&l| (k, l)));
        let (mut k, mut l) = next.unwrap_or((left.len(), right.len()));
        diff_stretch(src, &left[i..k], &right[j..l], &mut out);
        while k < left.len() && l < right.len() && left[k] == right[l] {
            for r in Runs::new(src, &left[k..k + 1]) {
                out.push(entry(
                    DiffKind::Same,
                    r.virt,
                    r.len,
                    Some(r.data),
                    Some(r.data),
                ));
            }
            k += 1;
            l += 1;
        }
        (i, j) = (k, l);
    }
    out.finish();
}

/// Compares two stretches of leaves covering the same keys.
fn diff_stretch<F: FnMut(DiffEntry)>(
    src: &BlockSource,
    left: &[u64],
    right: &[u64],
    out: &mut Merger<F>,
) {
    let mut left = Runs::new(src, left);
    let mut right = Runs::new(src, right);
    let mut l = left.next();
    let mut r = right.next();
    loop {
        let (lr, rr) = match (l, r) {
            (None, None) => break,
            (Some(a), None) => {
                out.push(entry(DiffKind::LeftOnly, a.virt, a.len, Some(a.data), None));
                l = left.next();
                continue;
            }
            (None, Some(b)) => {
                out.push(entry(
                    DiffKind::RightOnly,
                    b.virt,
                    b.len,
                    None,
                    Some(b.data),
                ));
                r = right.next();
                continue;
            }
            (Some(a), Some(b)) => (a, b),
        };
        if lr.virt < rr.virt {
            // Left alone up to the right run's start (or its own end).
            let n = lr.len.min(rr.virt - lr.virt);
            out.push(entry(DiffKind::LeftOnly, lr.virt, n, Some(lr.data), None));
            l = advance(lr, n).or_else(|| left.next());
        } else if rr.virt < lr.virt {
            let n = rr.len.min(lr.virt - rr.virt);
            out.push(entry(DiffKind::RightOnly, rr.virt, n, None, Some(rr.data)));
            r = advance(rr, n).or_else(|| right.next());
        } else {
            let n = lr.len.min(rr.len);
            let kind = if lr.data == rr.data {
                DiffKind::Same
            } else {
                DiffKind::Different
            };
            out.push(entry(kind, lr.virt, n, Some(lr.data), Some(rr.data)));
            l = advance(lr, n).or_else(|| left.next());
            r = advance(rr, n).or_else(|| right.next());
        }
    }
}

fn entry(
    kind: DiffKind,
    begin: u64,
    len: u64,
    left_data: Option<u64>,
    right_data: Option<u64>,
) -> DiffEntry {
    DiffEntry {
        kind,
        begin,
        len,
        left_data,
        right_data,
    }
}

/// The rest of a run after its first `n` blocks, if any.
fn advance(r: Run, n: u64) -> Option<Run> {
    (n < r.len).then_some(Run {
        virt: r.virt + n,
        data: r.data + n,
        len: r.len - n,
    })
}
