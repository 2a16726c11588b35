//! thin_migrate's offline extraction: pools restored from XML over a data
//! file whose every used block carries a marker naming it, so each
//! virtual block of a copy can be traced to the data block it came from.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;

/// The generated pool's data block size (128 sectors).
const BB: u64 = 64 << 10;

/// The marker at both ends of data block `d`.
fn marker(d: u64) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[..16].copy_from_slice(b"dmpd-data-block ");
    m[16..].copy_from_slice(&d.to_le_bytes());
    m
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A pool: its metadata, its data file (markers on every mapped block)
/// and each device's mappings (virtual -> data) as the XML says.
struct Pool {
    meta: PathBuf,
    data: PathBuf,
    devices: BTreeMap<u64, BTreeMap<u64, u64>>,
}

fn pool(s: &Scratch) -> Pool {
    let meta = s.path("meta");
    gen::snapshot_pool(&s.dir, &meta);
    let parsed = xml::parse(&gen::snapshot_pool_xml());
    let devices: BTreeMap<u64, BTreeMap<u64, u64>> = parsed
        .devices
        .iter()
        .map(|(id, d)| (*id, d.mappings.iter().map(|m| (m.0, m.1)).collect()))
        .collect();
    let nr: u64 = parsed.superblock["nr_data_blocks"].parse().unwrap();
    let data = s.path("data");
    let f = std::fs::File::create(&data).unwrap();
    f.set_len(nr * BB).unwrap();
    let used: BTreeSet<u64> = devices.values().flat_map(|m| m.values().copied()).collect();
    for d in used {
        f.write_all_at(&marker(d), d * BB).unwrap();
        f.write_all_at(&marker(d), (d + 1) * BB - 24).unwrap();
    }
    Pool {
        meta,
        data,
        devices,
    }
}

fn migrate(meta: &Path, data: &Path, id: u64, out: &Path, extra: &[&str]) -> std::process::Output {
    let id = id.to_string();
    let mut args = vec![
        "--metadata-dev",
        p(meta),
        "--data-dev",
        p(data),
        "--thin-id",
        &id,
        "--dest-file",
        p(out),
    ];
    args.extend_from_slice(extra);
    run("thin_migrate", &args)
}

fn ok(o: &std::process::Output) {
    assert_eq!(code(&o.clone()), 0, "{}{}", stdout(o), stderr(o));
}

/// The allocated byte ranges of a file (SEEK_DATA / SEEK_HOLE).
fn allocated(path: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut at = 0i64;
    while at < len {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        out.push((data as u64, hole as u64));
        at = hole;
    }
    out
}

/// Holds a copy to `mappings`: its length is `len` (or the end of the
/// last mapped block), every mapped block carries its data block's
/// markers, and only mapped blocks hold data.
fn assert_copy(out: &Path, mappings: &BTreeMap<u64, u64>, len: Option<u64>, what: &str) {
    let end = mappings.keys().last().map_or(0, |v| (v + 1) * BB);
    let f = std::fs::File::open(out).unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        len.unwrap_or(end),
        "{what}: length"
    );
    let mut buf = [0u8; 24];
    for (&v, &d) in mappings {
        f.read_exact_at(&mut buf, v * BB).unwrap();
        assert_eq!(buf, marker(d), "{what}: start of virtual block {v}");
        f.read_exact_at(&mut buf, (v + 1) * BB - 24).unwrap();
        assert_eq!(buf, marker(d), "{what}: end of virtual block {v}");
    }
    for (from, to) in allocated(out) {
        for v in from / BB..to.div_ceil(BB) {
            assert!(
                mappings.contains_key(&v),
                "{what}: unmapped virtual block {v} holds data ({from}..{to} allocated)"
            );
        }
    }
    // Holes read as zeros: an unmapped block between mapped ones.
    if let Some(v) = (0..end / BB).find(|v| !mappings.contains_key(v)) {
        let mut block = vec![1u8; BB as usize];
        f.read_exact_at(&mut block, v * BB).unwrap();
        assert!(block.iter().all(|&b| b == 0), "{what}: block {v}");
    }
}

#[test]
fn every_device_of_a_pool_with_snapshots_comes_out_as_its_mappings_say() {
    let s = Scratch::new("migrate-all");
    let pool = pool(&s);
    assert_eq!(pool.devices.len(), 5);
    for (id, mappings) in &pool.devices {
        let out = s.path(&format!("thin{id}"));
        ok(&migrate(&pool.meta, &pool.data, *id, &out, &[]));
        assert_copy(&out, mappings, None, &format!("device {id}"));
        // Only what holds data is written: the two marked pages of each
        // mapped block (the zero pages between are left as holes).
        let bytes: u64 = allocated(&out).iter().map(|(a, b)| b - a).sum();
        assert_eq!(
            bytes,
            mappings.len() as u64 * 2 * 4096,
            "device {id}: allocated"
        );
    }
}

#[test]
fn gzip_and_pack_metadata_give_the_same_copy() {
    let s = Scratch::new("migrate-forms");
    let pool = pool(&s);
    let gz = s.path("meta.gz");
    let o = std::process::Command::new("gzip")
        .args(["-c", p(&pool.meta)])
        .output()
        .unwrap();
    std::fs::write(&gz, o.stdout).unwrap();
    let pack = s.path("meta.pack");
    ok(&run(
        "thin_metadata_pack",
        &["-i", p(&pool.meta), "-o", p(&pack)],
    ));
    let plain = s.path("plain");
    ok(&migrate(&pool.meta, &pool.data, 2, &plain, &[]));
    for (name, meta) in [("gzip", &gz), ("pack", &pack)] {
        let out = s.path(name);
        ok(&migrate(meta, &pool.data, 2, &out, &[]));
        assert_copy(&out, &pool.devices[&2], None, name);
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&plain).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn size_sets_the_length_and_may_not_cut_a_mapping() {
    let s = Scratch::new("migrate-size");
    let pool = pool(&s);
    let m = &pool.devices[&7];
    let end = (m.keys().last().unwrap() + 1) * BB;
    let out = s.path("sized");
    let size = (end + 10 * BB + 512).to_string();
    ok(&migrate(
        &pool.meta,
        &pool.data,
        7,
        &out,
        &["--size", &size],
    ));
    assert_copy(&out, m, Some(end + 10 * BB + 512), "--size larger");

    let short = (end - BB).to_string();
    let o = migrate(&pool.meta, &pool.data, 7, &out, &["--size", &short]);
    assert_eq!(code(&o), 64);
    assert_eq!(
        stderr(&o),
        format!(
            "--size {short} ends before device 7's last mapped block (its mappings reach byte {end})\n"
        )
    );
    let o = migrate(&pool.meta, &pool.data, 7, &out, &["--size", "1000"]);
    assert_eq!(code(&o), 64);
    assert_eq!(stderr(&o), "--size 1000 is not a multiple of 512 bytes\n");
}

#[test]
fn a_missing_device_or_source_is_named() {
    let s = Scratch::new("migrate-missing");
    let pool = pool(&s);
    let out = s.path("out");
    let o = migrate(&pool.meta, &pool.data, 4, &out, &[]);
    assert_eq!(code(&o), 64);
    assert_eq!(
        stderr(&o),
        "--thin-id: no thin device 4 in the pool (its devices: 0, 1, 2, 3, 7)\n"
    );
    let o = run("thin_migrate", &["--dest-file", p(&out)]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).starts_with("no source given: --source-dev"));
    let o = run("thin_migrate", &["--source-dev", p(&out)]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).starts_with("no destination given"));
    // The options of the two modes do not mix; half an offline source is
    // a command-line error.
    let o = run(
        "thin_migrate",
        &[
            "--source-dev",
            "/dev/null",
            "--thin-id",
            "1",
            "--dest-file",
            p(&out),
        ],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = run(
        "thin_migrate",
        &["--metadata-dev", p(&pool.meta), "--dest-file", p(&out)],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // Live mode wants a device-mapper block device.
    let o = run(
        "thin_migrate",
        &["--source-dev", p(&pool.meta), "--dest-file", p(&out)],
    );
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("is not a block device"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing is created for a refused source");
}

#[test]
fn the_destination_may_be_neither_the_metadata_nor_the_data() {
    let s = Scratch::new("migrate-guard");
    let pool = pool(&s);
    let before = allocated(&pool.data);
    for target in [&pool.data, &pool.meta] {
        let o = migrate(&pool.meta, &pool.data, 1, target, &[]);
        assert_eq!(code(&o), 64);
        assert!(
            stderr(&o).starts_with(&format!("refusing to write '{}'", target.display())),
            "{}",
            stderr(&o)
        );
        let o = run(
            "thin_migrate",
            &[
                "--metadata-dev",
                p(&pool.meta),
                "--data-dev",
                p(&pool.data),
                "--thin-id",
                "1",
                "--dest-dev",
                p(target),
            ],
        );
        assert_eq!(code(&o), 64);
    }
    assert_eq!(allocated(&pool.data), before);
    ok(&run("thin_check", &[p(&pool.meta)]));
}

#[test]
fn delta_id_turns_a_copy_of_one_snapshot_into_a_copy_of_another() {
    let s = Scratch::new("migrate-delta");
    let pool = pool(&s);
    for (base, id) in [(0, 1), (1, 3), (3, 7), (7, 2)] {
        let out = s.path(&format!("delta-{base}-{id}"));
        ok(&migrate(&pool.meta, &pool.data, base, &out, &[]));
        ok(&migrate(
            &pool.meta,
            &pool.data,
            id,
            &out,
            &["--delta-id", &base.to_string()],
        ));
        let full = s.path(&format!("full-{id}"));
        ok(&migrate(&pool.meta, &pool.data, id, &full, &[]));
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&full).unwrap(),
            "--delta-id {base} --thin-id {id}"
        );
        assert_copy(&out, &pool.devices[&id], None, &format!("{base} -> {id}"));
    }
}

#[test]
fn unreadable_data_blocks_are_counted_and_the_rest_copied() {
    let s = Scratch::new("migrate-short-data");
    let pool = pool(&s);
    let m = &pool.devices[&7];
    // Device 7's data blocks are the pool's last ones: cut the data file
    // inside them.
    let cut = *m.values().nth(60).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pool.data)
        .unwrap()
        .set_len(cut * BB)
        .unwrap();
    let lost: Vec<u64> = m.values().filter(|&&d| d >= cut).copied().collect();
    assert_eq!(lost.len(), 40);
    let out = s.path("out");
    let o = migrate(&pool.meta, &pool.data, 7, &out, &["--buffer-size-meg", "1"]);
    assert_eq!(code(&o), 64);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot read data block {cut} of '{}': it lies beyond the end",
            pool.data.display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with("40 read error(s) and 0 write error(s): 60 of the 100 mapped blocks to copy were copied\n"),
        "{err}"
    );
    let kept: BTreeMap<u64, u64> = m
        .iter()
        .filter(|(_, &d)| d < cut)
        .map(|(v, d)| (*v, *d))
        .collect();
    let end = (m.keys().last().unwrap() + 1) * BB;
    assert_copy(&out, &kept, Some(end), "the readable blocks");
}

#[test]
fn metadata_snap_reads_the_snapshot() {
    let s = Scratch::new("migrate-snap");
    let pool = pool(&s);
    let out = s.path("out");
    let o = migrate(&pool.meta, &pool.data, 1, &out, &["-m"]);
    assert_eq!(code(&o), 64);
    assert_eq!(stderr(&o), "no current metadata snap\n");
    ok(&run("thin_reserve_metadata_snap", &[p(&pool.meta)]));
    ok(&migrate(&pool.meta, &pool.data, 1, &out, &["-m"]));
    assert_copy(&out, &pool.devices[&1], None, "-m");
}

/// With --repair the copy holds what the salvage keeps: the same as a
/// copy read (strictly) from thin_repair's output.
#[test]
fn repair_extracts_what_the_salvage_keeps() {
    let s = Scratch::new("migrate-repair");
    let pool = pool(&s);
    for kind in ["zeroed-node", "data-block-beyond-end", "node-checksum"] {
        let damaged = s.path(&format!("damaged-{kind}"));
        std::fs::copy(&pool.meta, &damaged).unwrap();
        ok(&run("thin_generate_damage", &["--kind", kind, p(&damaged)]));
        let repaired = s.path(&format!("repaired-{kind}"));
        std::fs::File::create(&repaired)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        ok(&run(
            "thin_repair",
            &["-i", p(&damaged), "-o", p(&repaired)],
        ));
        let mut strict_failed = 0;
        for id in pool.devices.keys() {
            let strict = migrate(&damaged, &pool.data, *id, &s.path("strict"), &[]);
            strict_failed += (code(&strict) != 0) as u32;
            let salvaged = s.path(&format!("salvaged-{kind}-{id}"));
            ok(&migrate(
                &damaged,
                &pool.data,
                *id,
                &salvaged,
                &["--repair", "-q"],
            ));
            let expected = s.path(&format!("expected-{kind}-{id}"));
            ok(&migrate(&repaired, &pool.data, *id, &expected, &[]));
            assert!(
                std::fs::read(&salvaged).unwrap() == std::fs::read(&expected).unwrap(),
                "{kind}: device {id}"
            );
        }
        assert!(strict_failed > 0, "{kind}: the damage stops a strict read");
    }
}
