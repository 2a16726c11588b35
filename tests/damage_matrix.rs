//! Every kind of damage, on every healthy pool there is (kernel-written
//! ones from ../shared when present, the project's fixtures, a generated
//! pool with snapshots). Per cell:
//! * thin_check names the damage (and its block, where it has one) and
//!   exits as it should, with and without --ignore-non-fatal-errors;
//! * thin_repair's output passes dmpd's thin_check and Debian's 0.9.0
//!   thin_check (when installed);
//! * the repair keeps, device by device, exactly the mappings the damage
//!   did not touch, and invents none: at least the undamaged count minus
//!   the mappings of the damaged nodes themselves (the bound);
//! * a deleted device comes back whole with --recover-orphans;
//! * --auto-repair fixes what is non-fatal and refuses the rest, writing
//!   nothing.
//!
//! Run with `--nocapture` to see the table and the totals.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::image::{Applied, AtRisk, Damage, Image, Severity};
use common::pools::damage_pools;
use common::*;

use dmpd::io::BlockSource;
use dmpd::thin::dump::{dump, DumpOptions, Format};

const DEBIAN_CHECK: &str = "/usr/sbin/thin_check";

/// Device -> virtual block -> data block.
type Mappings = BTreeMap<u64, HashMap<u64, u64>>;

fn mappings(bytes: &[u8]) -> Mappings {
    let src = BlockSource::from_bytes(bytes, Path::new("image")).unwrap();
    let opts = DumpOptions {
        format: Format::Xml,
        metadata_snap: false,
        skip_mappings: false,
        dev_ids: None,
        flat: true,
        transaction_id: None,
        data_block_size: None,
        nr_data_blocks: None,
    };
    let mut out = Vec::new();
    dump(&src, &opts, &mut out).unwrap();
    xml::parse(&String::from_utf8(out).unwrap())
        .devices
        .into_iter()
        .map(|(id, d)| (id, d.mappings.iter().map(|&(v, d, _)| (v, d)).collect()))
        .collect()
}

/// Mappings under node `b` of a healthy image.
fn mappings_under(image: &Image, b: u64) -> u64 {
    let node = image.node(b);
    if node.is_leaf() {
        return node.nr_entries() as u64;
    }
    (0..node.nr_entries())
        .map(|i| mappings_under(image, node.value_u64(i)))
        .sum()
}

/// The subtrees at risk the tree at `b` (reached through `parent`)
/// reaches, with repeats.
fn reached(image: &Image, parent: Option<u64>, b: u64, targets: &[AtRisk], out: &mut Vec<u64>) {
    if targets
        .iter()
        .any(|t| t.node == b && (t.via.is_none() || t.via == parent))
    {
        out.push(b);
        return;
    }
    let node = image.node(b);
    if !node.is_leaf() {
        for i in 0..node.nr_entries() {
            reached(image, Some(b), node.value_u64(i), targets, out);
        }
    }
}

/// What thin_check must say about each damage.
fn phrase(d: Damage) -> &'static str {
    match d {
        Damage::NodeChecksum | Damage::ZeroedNode => "node error: checksum error",
        Damage::DanglingChild | Damage::DanglingChildSpaceMapsFollow => "checksum error",
        Damage::LeakedMetadataBlock => "metadata space map: block",
        Damage::UnderCountedSharedNode => "metadata space map: block",
        Damage::OverCountedNode => "over-counted",
        Damage::LeakedDataBlock => "data space map: block",
        Damage::UnderCountedDataBlock => "data space map: block",
        Damage::SwappedKeys => "keys out of order",
        Damage::NrEntriesOverMax => "nr_entries > max_entries",
        Damage::DataBlockBeyondEnd => "beyond the data device",
        Damage::ChildBeyondDevice => "beyond the end of the metadata",
        Damage::SuperblockChecksum => "bad checksum in superblock",
        Damage::WrongMappedBlocks => "but its details record",
        Damage::DeviceMissingFromTopLevel => "only in the details tree",
        Damage::BitmapChecksum => "checksum error",
        Damage::WrongNodeBlocknr => "blocknr mismatch",
        Damage::DuplicateKey => "duplicate key",
        Damage::KeyOutsideParentRange | Damage::SwappedChildPointers => {
            "outside the range the parent allows"
        }
        Damage::FutureMappingTime => "newer than the pool",
        Damage::FutureSnapshotTime => "later than the pool's time",
        Damage::StaleIndexNrFree => "nr_free is",
        Damage::WrongNrAllocated => "nr_allocated is",
        Damage::DeviceMissingFromDetails => "only in the mapping tree",
        Damage::DeletedDevice => "",
    }
}

fn names_block(d: Damage) -> bool {
    !matches!(
        d,
        Damage::ChildBeyondDevice
            | Damage::WrongMappedBlocks
            | Damage::DeviceMissingFromTopLevel
            | Damage::DeviceMissingFromDetails
            | Damage::FutureSnapshotTime
            | Damage::WrongNrAllocated
            | Damage::SwappedChildPointers
            | Damage::DeletedDevice
    )
}

/// Mappings each device loses to the damage: exactly these, no more.
fn expected_loss(d: Damage, image: &Image, reached: &[u64]) -> u64 {
    let per_node: u64 = match d {
        Damage::SwappedKeys | Damage::DuplicateKey => 2,
        Damage::KeyOutsideParentRange | Damage::DataBlockBeyondEnd => 1,
        Damage::NodeChecksum
        | Damage::ZeroedNode
        | Damage::ChildBeyondDevice
        | Damage::DanglingChild
        | Damage::DanglingChildSpaceMapsFollow => {
            return reached.iter().map(|&b| mappings_under(image, b)).sum();
        }
        _ => 0,
    };
    per_node * reached.len() as u64
}

/// Writes an image leaving its zeroed blocks as holes: most of a
/// fixture's blocks are free, and every cell writes one.
fn write_sparse(path: &Path, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    for (i, block) in bytes.chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.seek(SeekFrom::Start(i as u64 * 4096)).unwrap();
            f.write_all(block).unwrap();
        }
    }
    f.set_len(bytes.len() as u64).unwrap();
}

fn check(path: &Path, args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.push(path.to_str().unwrap());
    let o = run("thin_check", &all);
    (code(&o), stderr(&o))
}

/// What a cell shows, and its counts of mappings.
#[derive(Default)]
struct Cell {
    text: String,
    undamaged: u64,
    bound: u64,
    kept: u64,
}

/// One cell of the matrix.
fn cell(scratch: &Scratch, pool: &str, clean: &Image, before: &Mappings, d: Damage) -> Cell {
    let here = format!("{} on {pool}", d.name());
    let mut image = Image::new(clean.bytes.clone());
    let Applied { block, at_risk } = d
        .apply(&mut image)
        .unwrap_or_else(|e| panic!("{pool}: {e}"));
    let path = scratch.path(&format!("{pool}-{}", d.name()));
    write_sparse(&path, &image.bytes);

    // thin_check: exit status, the damage named, its block.
    let severity = d.severity();
    let (exit, err) = check(&path, &[]);
    let want = if severity == Severity::Clean { 0 } else { 64 };
    assert_eq!(exit, want, "{here}: {err}");
    assert!(err.contains(phrase(d)), "{here}: {err}");
    if names_block(d) {
        assert!(
            err.contains(&format!("block {block}")) || err.contains(&format!("blocks {block}..")),
            "{here}: block {block} not named: {err}"
        );
    }
    let (ignored, err) = check(&path, &["--ignore-non-fatal-errors"]);
    let want = if severity == Severity::Fatal { 64 } else { 0 };
    assert_eq!(ignored, want, "{here} ignored: {err}");

    // thin_repair: both checkers accept the output.
    let out = scratch.path(&format!("{pool}-{}-repaired", d.name()));
    std::fs::File::create(&out)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let mut args = vec!["-i", path.to_str().unwrap(), "-o", out.to_str().unwrap()];
    if d == Damage::DeletedDevice {
        args.push("--recover-orphans");
    }
    let r = run("thin_repair", &args);
    assert_eq!(code(&r), 0, "{here} repair: {}", stderr(&r));
    let (ok, err) = check(&out, &[]);
    assert_eq!(ok, 0, "{here} repaired: {err}");
    if Path::new(DEBIAN_CHECK).exists() {
        let o = std::process::Command::new(DEBIAN_CHECK)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{here}: Debian's thin_check rejects the repair: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // What was kept, device by device.
    let after = mappings(&std::fs::read(&out).unwrap());
    let _ = std::fs::remove_file(&out);
    let roots: BTreeMap<u64, u64> = clean.device_roots().into_iter().collect();
    let (mut undamaged, mut bound, mut kept) = (0, 0, 0);
    let deleted = (d == Damage::DeletedDevice).then(|| clean.last_device().unwrap());
    for (id, maps) in before {
        let n = maps.len() as u64;
        undamaged += n;
        if Some(*id) == deleted {
            // Back under a new id, every mapping as it was.
            let back = after
                .iter()
                .filter(|(new, _)| *new == id || !before.contains_key(new))
                .find(|(_, m)| *m == maps);
            assert!(
                back.is_some(),
                "{here}: device {id} was not recovered whole"
            );
            bound += n;
            kept += n;
            continue;
        }
        let mut hit = Vec::new();
        reached(clean, None, roots[id], &at_risk, &mut hit);
        let at_risk_here: u64 = hit.iter().map(|&b| mappings_under(clean, b)).sum();
        let got = after
            .get(id)
            .unwrap_or_else(|| panic!("{here}: device {id} lost"));
        for (v, data) in got {
            assert_eq!(
                maps.get(v),
                Some(data),
                "{here}: device {id} virtual block {v} was invented"
            );
        }
        let k = got.len() as u64;
        assert_eq!(
            k,
            n - expected_loss(d, clean, &hit),
            "{here}: device {id} keeps {k} of {n} mappings"
        );
        bound += n - at_risk_here;
        kept += k;
    }
    assert!(kept >= bound, "{here}: kept {kept} < bound {bound}");
    for id in after.keys() {
        assert!(
            before.contains_key(id) || deleted.is_some(),
            "{here}: device {id} appeared"
        );
    }

    // --auto-repair: non-fatal findings fixed in place, the rest refused.
    let (auto, err) = check(&path, &["--auto-repair"]);
    let fixed = match severity {
        Severity::Fatal => {
            assert_eq!(auto, 64, "{here} auto-repair");
            assert!(
                std::fs::read(&path).unwrap() == image.bytes,
                "{here}: auto-repair wrote"
            );
            "refused"
        }
        Severity::NonFatal => {
            assert_eq!(auto, 0, "{here} auto-repair: {err}");
            let (again, err) = check(&path, &[]);
            assert_eq!(again, 0, "{here}: not clean after auto-repair: {err}");
            "fixed"
        }
        Severity::Clean => {
            assert_eq!(auto, 0, "{here} auto-repair: {err}");
            assert!(
                std::fs::read(&path).unwrap() == image.bytes,
                "{here}: auto-repair wrote to clean metadata"
            );
            "clean"
        }
    };
    let _ = std::fs::remove_file(&path);
    Cell {
        text: format!(" {exit}/{ignored}, kept {kept}/{bound}, auto {fixed} |"),
        undamaged,
        bound,
        kept,
    }
}

#[test]
fn damage_matrix() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("matrix");
    let pools = damage_pools(&scratch);
    let befores: Vec<Mappings> = pools.iter().map(|(_, b)| mappings(b)).collect();
    let images: Vec<Image> = pools.iter().map(|(_, b)| Image::new(b.clone())).collect();
    let kinds = Damage::ALL;
    let jobs: Vec<(usize, usize)> = (0..kinds.len())
        .flat_map(|k| (0..pools.len()).map(move |p| (k, p)))
        .collect();
    let results: Mutex<BTreeMap<(usize, usize), Cell>> = Mutex::default();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(&(k, p)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = cell(&scratch, pools[p].0, &images[p], &befores[p], kinds[k]);
                    results.lock().unwrap().insert((k, p), r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();

    let mut table = vec![
        format!(
            "| damage | {} |",
            pools
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        format!("|---|{}", "---|".repeat(pools.len())),
    ];
    let mut t = Cell::default();
    let mut cells = 0;
    for (k, d) in kinds.iter().enumerate() {
        let mut row = format!("| {} |", d.name());
        for p in 0..pools.len() {
            let c = &results[&(k, p)];
            row.push_str(&c.text);
            cells += 1;
            t.undamaged += c.undamaged;
            t.bound += c.bound;
            t.kept += c.kept;
        }
        table.push(row);
    }
    assert_eq!(cells, kinds.len() * pools.len());
    println!("{}", table.join("\n"));
    println!(
        "{} cells ({} kinds x {} pools): mappings kept {} of {} undamaged, bound {}",
        cells,
        kinds.len(),
        pools.len(),
        t.kept,
        t.undamaged,
        t.bound
    );
}
