//! thin_migrate's engine: which blocks of a thin device to copy from
//! where. A device's mappings are read strictly (the checker's walker
//! validates its tree first) or through the salvage engine (`--repair`),
//! as runs in virtual order; they become copy extents in data-block order
//! (offline: the data device is read) or virtual order (live: the thin
//! device itself is read), and the unmapped ranges that go with them.

use anyhow::{bail, Result};

use crate::io::copy::Extent;
use crate::io::BlockSource;
use crate::thin::delta::{diff, DiffKind};
use crate::thin::devices::read_devices_strict;
use crate::thin::dump::{leaf_runs, Filter, Header};
use crate::thin::forest::{self, ordered_leaves};
use crate::thin::repair::{salvage, RepairOptions};
use crate::thin::rmap::Run;
use crate::thin::superblock::Superblock;

/// Adds a run, merging it into the last when it continues it in both
/// virtual and data address.
fn push(runs: &mut Vec<Run>, r: Run) {
    match runs.last_mut() {
        Some(last) if last.virt + last.len == r.virt && last.data + last.len == r.data => {
            last.len += r.len
        }
        _ => runs.push(r),
    }
}

fn runs_of(src: &BlockSource, leaves: &[u64], filter: Filter) -> Vec<Run> {
    let mut runs = Vec::new();
    leaf_runs(src, leaves, filter, |r| {
        push(
            &mut runs,
            Run {
                virt: r.virt,
                data: r.data,
                len: r.len,
            },
        )
    });
    runs
}

/// The pool's devices, and the mapping-tree root of device `id`.
fn device_root(src: &BlockSource, sb: &Superblock, id: u64, what: &str) -> Result<u64> {
    let (roots, _) = read_devices_strict(src, sb.mapping_root, sb.details_root)?;
    match roots.get(&id) {
        Some(r) => Ok(*r),
        None => {
            let ids: Vec<String> = roots.keys().map(|k| k.to_string()).collect();
            bail!(
                "{what}: no thin device {id} in the pool (its devices: {})",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            )
        }
    }
}

/// Refuses mappings to data blocks the pool does not have (the checker
/// reports them as damage; a copy would read past the data device).
fn within_pool(runs: &[Run], id: u64, nr_data_blocks: u64) -> Result<()> {
    if let Some(r) = runs.iter().find(|r| r.data + r.len > nr_data_blocks) {
        let at = nr_data_blocks.max(r.data) - r.data;
        bail!(
            "device {id} maps virtual block {} to data block {}, beyond the pool's {nr_data_blocks} \
             data blocks: the metadata is damaged (--repair reads what can be salvaged)",
            r.virt + at,
            r.data + at
        );
    }
    Ok(())
}

/// Device `id`'s mappings under superblock `sb`, in virtual order; its
/// tree must be whole, its mappings below `nr_data_blocks` (the live
/// superblock's: the kernel clears the space map roots in a metadata
/// snapshot's copy).
pub fn mappings(
    src: &BlockSource,
    sb: &Superblock,
    id: u64,
    nr_data_blocks: u64,
) -> Result<Vec<Run>> {
    let root = device_root(src, sb, id, "--thin-id")?;
    forest::validate_named(src, &[(format!("device {id}"), root)])?;
    let runs = runs_of(src, &ordered_leaves(src, root), Filter::default());
    within_pool(&runs, id, nr_data_blocks)?;
    Ok(runs)
}

/// What the salvage keeps of device `id`'s mappings, in virtual order,
/// with the salvaged pool's header and what the salvage found wrong.
pub fn salvaged_mappings(
    src: &BlockSource,
    opts: &RepairOptions,
    id: u64,
) -> Result<(Vec<Run>, Header, Vec<String>)> {
    let s = salvage(src, opts)?;
    let Some((_, _, leaves)) = s.devices.iter().find(|(d, _, _)| *d == id) else {
        let ids: Vec<String> = s.devices.iter().map(|(d, _, _)| d.to_string()).collect();
        bail!(
            "--thin-id: the salvaged metadata holds no thin device {id} (it holds: {})",
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        );
    };
    let leaves = leaves.clone().unwrap_or_default();
    let runs = runs_of(
        src,
        &leaves,
        Filter {
            drop_from: Some(s.nr_data_blocks),
            kept: Some(&s.kept),
        },
    );
    Ok((runs, s.header, s.warnings))
}

/// What turns a copy of device `base` into a copy of device `id`: the
/// virtual ranges `id` maps differently from `base` (or `base` does not
/// map), to copy, and those only `base` maps, to zero. Both as
/// (begin, length) in virtual blocks, in order.
pub struct Delta {
    pub copy: Vec<(u64, u64)>,
    pub zero: Vec<(u64, u64)>,
}

pub fn delta(src: &BlockSource, sb: &Superblock, base: u64, id: u64) -> Result<Delta> {
    let base_root = device_root(src, sb, base, "--delta-id")?;
    let root = device_root(src, sb, id, "--thin-id")?;
    forest::validate_named(
        src,
        &[
            (format!("device {base}"), base_root),
            (format!("device {id}"), root),
        ],
    )?;
    let mut d = Delta {
        copy: Vec::new(),
        zero: Vec::new(),
    };
    diff(src, base_root, root, |e| match e.kind {
        DiffKind::Same => {}
        DiffKind::LeftOnly => d.zero.push((e.begin, e.len)),
        DiffKind::Different | DiffKind::RightOnly => match d.copy.last_mut() {
            Some((b, l)) if *b + *l == e.begin => *l += e.len,
            _ => d.copy.push((e.begin, e.len)),
        },
    });
    Ok(d)
}

/// The parts of `runs` (virtual order) inside `ranges` (virtual order).
pub fn restrict(runs: &[Run], ranges: &[(u64, u64)]) -> Vec<Run> {
    let mut out = Vec::new();
    let mut i = 0;
    for &(begin, len) in ranges {
        let end = begin + len;
        while i < runs.len() && runs[i].virt + runs[i].len <= begin {
            i += 1;
        }
        let mut j = i;
        while j < runs.len() && runs[j].virt < end {
            let r = runs[j];
            let lo = r.virt.max(begin);
            let hi = (r.virt + r.len).min(end);
            out.push(Run {
                virt: lo,
                data: r.data + (lo - r.virt),
                len: hi - lo,
            });
            j += 1;
        }
    }
    out
}

/// Virtual ranges below `end` that `runs` (virtual order) leave unmapped,
/// as (begin, length).
pub fn gaps(runs: &[Run], end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in runs {
        if r.virt >= end {
            break;
        }
        if r.virt > at {
            out.push((at, r.virt - at));
        }
        at = at.max(r.virt + r.len);
    }
    if at < end {
        out.push((at, end - at));
    }
    out
}

/// The virtual block after the last mapped one (0 when none is mapped).
pub fn mapped_end(runs: &[Run]) -> u64 {
    runs.iter().map(|r| r.virt + r.len).max().unwrap_or(0)
}

/// Copy extents reading the data device: in data-block order, so the
/// data device is read sequentially where the mappings allow.
pub fn extents_from_data(runs: &[Run]) -> Vec<Extent> {
    let mut v: Vec<Extent> = runs
        .iter()
        .map(|r| Extent {
            from: r.data,
            to: r.virt,
            len: r.len,
        })
        .collect();
    v.sort_unstable();
    v
}

/// Copy extents reading the thin device itself (live): virtual ranges to
/// the same place, neighbours merged.
pub fn extents_in_place(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<Extent> {
    let mut v: Vec<Extent> = Vec::new();
    for (begin, len) in ranges {
        match v.last_mut() {
            Some(e) if e.from + e.len == begin => e.len += len,
            _ => v.push(Extent {
                from: begin,
                to: begin,
                len,
            }),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(virt: u64, data: u64, len: u64) -> Run {
        Run { virt, data, len }
    }

    #[test]
    fn gaps_between_and_after_runs() {
        let runs = [run(2, 50, 3), run(5, 10, 1), run(9, 0, 2)];
        assert_eq!(gaps(&runs, 14), vec![(0, 2), (6, 3), (11, 3)]);
        assert_eq!(gaps(&runs, 10), vec![(0, 2), (6, 3)]);
        assert_eq!(gaps(&[], 4), vec![(0, 4)]);
        assert_eq!(gaps(&runs, 0), vec![]);
        assert_eq!(mapped_end(&runs), 11);
    }

    #[test]
    fn restrict_cuts_runs_to_ranges() {
        let runs = [run(0, 100, 10), run(20, 5, 4)];
        assert_eq!(
            restrict(&runs, &[(3, 2), (8, 14), (30, 2)]),
            vec![run(3, 103, 2), run(8, 108, 2), run(20, 5, 2)]
        );
    }

    #[test]
    fn data_order_and_in_place_extents() {
        let runs = [run(0, 9, 2), run(4, 1, 3)];
        assert_eq!(
            extents_from_data(&runs),
            vec![
                Extent {
                    from: 1,
                    to: 4,
                    len: 3
                },
                Extent {
                    from: 9,
                    to: 0,
                    len: 2
                }
            ]
        );
        assert_eq!(
            extents_in_place([(0, 2), (2, 3), (7, 1)]),
            vec![
                Extent {
                    from: 0,
                    to: 0,
                    len: 5
                },
                Extent {
                    from: 7,
                    to: 7,
                    len: 1
                }
            ]
        );
    }

    #[test]
    fn mappings_beyond_the_pool_are_refused() {
        assert!(within_pool(&[run(0, 0, 10)], 1, 10).is_ok());
        let e = within_pool(&[run(4, 8, 4)], 1, 10).unwrap_err().to_string();
        assert!(e.contains("virtual block 6 to data block 10"), "{e}");
    }
}
