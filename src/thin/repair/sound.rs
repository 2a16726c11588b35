//! The salvage of metadata that needs none: when block 0's superblock is
//! intact and leads to trees that validate throughout, agree with each
//! other and with the data device, the scan (every block read, every
//! tree summarised node by node) could only find those same trees. They
//! are then taken as they stand, as a dump would read them, at the cost
//! of one parallel walk.
//!
//! Anything short of that goes to the scan, which also says what it
//! found wrong. The conditions are the ones under which the scan keeps
//! every device, every entry and block 0's header: a test compares the
//! two on every sound fixture.

use rayon::prelude::*;

use crate::io::{BlockKind, BlockSource};
use crate::pdata::btree::node::NodeView;
use crate::thin::block_time::BlockTime;
use crate::thin::devices::read_devices_strict;
use crate::thin::dump::{DeviceLeaves, Header, KeptEntries};
use crate::thin::forest::{ordered_leaves, validate_with, LeafList, Nothing};
use crate::thin::superblock::{Superblock, THIN_MAGIC};

use super::{plausible_block_size, RepairOptions, Salvage};

/// The salvage of `src` when it is sound; None when the scan is needed.
pub fn salvage(src: &BlockSource, opts: &RepairOptions) -> Option<Salvage> {
    if opts.recover_orphans {
        return None;
    }
    let sb = Superblock::parse(src.checked(0, BlockKind::ThinSuperblock).ok()?);
    if sb.magic != THIN_MAGIC {
        return None;
    }
    let data_block_size = opts.data_block_size.unwrap_or(sb.data_block_size);
    if !plausible_block_size(data_block_size) || sb.data_sm_root.nr_blocks == 0 {
        return None;
    }
    let (roots, details) = read_devices_strict(src, sb.mapping_root, sb.details_root).ok()?;
    if !roots.keys().eq(details.keys()) {
        return None;
    }
    let forest = validate_with(src, &roots, &Nothing, LeafList::Keep).ok()?;

    // The newest time and highest data block any mapping records.
    let (age, highest) = forest
        .leaves
        .par_iter()
        .map(|&leaf| newest_and_highest(src, leaf))
        .reduce(|| (0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    let nr_data_blocks = sb
        .data_sm_root
        .nr_blocks
        .max(opts.nr_data_blocks.unwrap_or(0));
    let roots: Vec<(u64, u64)> = roots.into_iter().collect();
    let sequences: Vec<Vec<u64>> = roots
        .par_iter()
        .map(|&(_, root)| ordered_leaves(src, root))
        .collect();
    let mut max_tid = 0;
    let mut devices: Vec<DeviceLeaves> = Vec::with_capacity(roots.len());
    for ((id, _), leaves) in roots.iter().zip(sequences) {
        let d = details[id];
        let mapped: u64 = leaves.iter().map(|&l| entries(src, l)).sum();
        let newest = age.max(d.creation_time).max(d.snapshotted_time);
        if mapped != d.mapped_blocks || newest > sb.time {
            return None;
        }
        max_tid = max_tid.max(d.transaction_id);
        devices.push((*id, d, Some(leaves)));
    }
    if highest >= nr_data_blocks {
        return None;
    }
    let header = Header {
        time: sb.time,
        transaction: sb
            .transaction_id
            .max(opts.transaction_id.unwrap_or(0))
            .max(max_tid),
        flags: 0,
        version: 2,
        data_block_size,
        nr_data_blocks,
    };
    Some(Salvage {
        header,
        devices,
        nr_data_blocks,
        kept: KeptEntries::default(),
        warnings: Vec::new(),
        recovered: Vec::new(),
    })
}

fn entries(src: &BlockSource, leaf: u64) -> u64 {
    src.block(leaf)
        .map_or(0, |b| NodeView::new(b).nr_entries() as u64)
}

/// The newest time and highest data block of a validated mapping leaf.
fn newest_and_highest(src: &BlockSource, leaf: u64) -> (u32, u64) {
    let Ok(b) = src.block(leaf) else {
        return (0, 0);
    };
    let v = NodeView::new(b);
    (0..v.nr_entries())
        .map(|i| BlockTime::unpack(v.value_u64(i)))
        .fold((0, 0), |(t, h), bt| (t.max(bt.time), h.max(bt.block)))
}

/// Device ids and what the sound and the scanning salvage make of them,
/// for the test that compares the two.
#[cfg(test)]
pub(super) fn describe(s: &Salvage) -> String {
    use std::collections::BTreeMap;
    let devices: BTreeMap<u64, String> = s
        .devices
        .iter()
        .map(|(id, d, l)| (*id, format!("{d:?} {l:?}")))
        .collect();
    format!(
        "{:?} nr {} kept {:?} warnings {:?} recovered {} devices {devices:?}",
        s.header,
        s.nr_data_blocks,
        s.kept,
        s.warnings,
        s.recovered.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::source::OpenOptions;
    use std::path::{Path, PathBuf};

    /// Every thin image at hand: the project's own fixtures, and those
    /// of ../shared when it is beside the checkout.
    fn images() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // As the integration tests find ../shared (CI hides it once).
        let shared = std::env::var_os("DMPD_SHARED_DIR")
            .map_or_else(|| root.join("../shared"), PathBuf::from);
        let mut out = Vec::new();
        for dir in [
            root.join("fixtures"),
            root.join("fixtures/kernel"),
            shared.join("fixtures/reference"),
            shared.join("fixtures/kernel"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                eprintln!(
                    "SKIPPED part of the sound-salvage comparison: needs {} (not found)",
                    dir.display()
                );
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                let thin = name.starts_with("tmeta")
                    || name.starts_with("corrupted_tmeta")
                    || name == "plain.bin.gz"
                    || name.starts_with("snapshots");
                if thin && name.ends_with(".bin.gz") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn sound_metadata_is_salvaged_as_the_scan_salvages_it() {
        let overridden = RepairOptions {
            transaction_id: Some(1 << 40),
            nr_data_blocks: Some(1 << 30),
            ..Default::default()
        };
        let mut sound = Vec::new();
        let mut scanned = Vec::new();
        for path in images() {
            let src = BlockSource::open(&path, OpenOptions { exclusive: false }).unwrap();
            for opts in [RepairOptions::default(), overridden] {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                match salvage(&src, &opts) {
                    Some(fast) => {
                        let slow = super::super::salvage_by_scan(&src, &opts).unwrap();
                        assert_eq!(describe(&fast), describe(&slow), "{name} {opts:?}");
                        sound.push(name);
                    }
                    None => scanned.push(name),
                }
            }
        }
        // The project's own sound pools take the short way, with and
        // without overrides; damaged ones never do.
        for name in ["plain.bin.gz", "snapshots.bin.gz"] {
            assert_eq!(sound.iter().filter(|n| *n == name).count(), 2, "{name}");
        }
        // Its live trees are damaged (the others named "corrupted" have
        // only a damaged metadata snapshot, which repair leaves behind).
        assert!(!sound.iter().any(|n| n.starts_with("corrupted_tmeta")));
    }

    /// Every kind of damage the generator makes, to a pool with
    /// snapshots: either the short way declines, or it salvages what the
    /// scan does (damage to the space maps alone, which repair rebuilds).
    #[test]
    fn damaged_metadata_is_scanned_or_salvaged_alike() {
        use crate::thin::damage::{Damage, Image};
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshots.bin.gz");
        let pristine = BlockSource::open(&path, OpenOptions { exclusive: false }).unwrap();
        let bytes = pristine
            .block_range(0, pristine.nr_blocks())
            .unwrap()
            .to_vec();
        let mut declined = Vec::new();
        let mut alike = Vec::new();
        for &kind in Damage::ALL {
            let mut image = Image::new(bytes.clone());
            if kind.apply(&mut image).is_err() {
                continue;
            }
            let src = BlockSource::from_bytes(&image.bytes, &path).unwrap();
            let opts = RepairOptions::default();
            match salvage(&src, &opts) {
                Some(fast) => {
                    let slow = super::super::salvage_by_scan(&src, &opts).unwrap();
                    assert_eq!(describe(&fast), describe(&slow), "{}", kind.name());
                    alike.push(kind.name());
                }
                None => declined.push(kind.name()),
            }
        }
        for tree_damage in [
            "node-checksum",
            "swapped-keys",
            "superblock-checksum",
            "wrong-mapped-blocks",
            "data-block-beyond-end",
            "future-mapping-time",
            "device-missing-from-details",
        ] {
            assert!(declined.contains(&tree_damage), "{tree_damage}: {alike:?}");
        }
        assert!(alike.contains(&"leaked-metadata-block"), "{declined:?}");
    }

    #[test]
    fn orphan_recovery_always_scans() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plain.bin.gz");
        let src = BlockSource::open(&path, OpenOptions { exclusive: false }).unwrap();
        let opts = RepairOptions {
            recover_orphans: true,
            ..Default::default()
        };
        assert!(salvage(&src, &opts).is_none());
        assert!(salvage(&src, &RepairOptions::default()).is_some());
    }
}
