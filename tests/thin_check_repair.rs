//! In-place leak repair (thin_check --auto-repair / --clear-needs-check-flag).

mod common;

use std::path::Path;

use common::image::Image;
use common::*;
use dmpd::io::sink::MemorySink;
use dmpd::io::BlockSource;
use dmpd::report::{Mode, Reporter};
use dmpd::thin::check::{check, CheckOptions, CheckResult};
use dmpd::thin::leak_repair::repair_leaks;

fn leaky(metadata: usize, data: usize) -> Image {
    let mut image = Image::new(gunzip_fixture("tmeta"));
    let sb = image.superblock();
    let mut b = sb.metadata_sm_root.nr_blocks;
    for _ in 0..metadata {
        b -= 1;
        assert_eq!(image.stored_count(false, b), 0);
        image.set_stored_count(false, b, 1);
    }
    let mut d = 0;
    for _ in 0..data {
        while image.stored_count(true, d) != 0 {
            d += 1;
        }
        image.set_stored_count(true, d, 1);
    }
    image
}

fn check_bytes(bytes: &[u8]) -> CheckResult {
    let src = BlockSource::from_bytes(bytes, Path::new("image")).unwrap();
    check(
        &src,
        &CheckOptions::default(),
        &Reporter::with_mode(Mode::Quiet),
    )
}

fn tool(path: &Path, args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.push(path.to_str().unwrap());
    let o = run("thin_check", &all);
    (code(&o), stderr(&o))
}

#[test]
fn auto_repair_fixes_metadata_and_data_leaks_writing_only_free_blocks() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("repair-leaks");
    let image = leaky(16, 5);
    let path = s.path("leaky");
    image.write_to(&path);
    let (exit, err) = tool(&path, &[]);
    assert_eq!(exit, 64);
    assert!(
        err.contains("16 metadata block(s) leaked") && err.contains("5 data block(s) leaked"),
        "{err}"
    );

    let (exit, err) = tool(&path, &["--auto-repair"]);
    assert_eq!(exit, 0, "{err}");
    assert!(
        err.contains("repairing leaks: 16 metadata block(s), 5 data block(s)"),
        "{err}"
    );
    let (exit, err) = tool(&path, &[]);
    assert_eq!(exit, 0, "{err}");

    // Every block that changed was free in the old transaction, except
    // the superblock: the old metadata was never overwritten.
    let after = Image::new(std::fs::read(&path).unwrap());
    let mut changed = 0;
    for b in 1..image.bytes.len() as u64 / 4096 {
        if after.block(b) != image.block(b) {
            assert_eq!(image.stored_count(false, b), 0, "block {b} was in use");
            changed += 1;
        }
    }
    // Two metadata bitmaps and the index, one data bitmap and the data
    // index leaf.
    assert_eq!(changed, 5);
    let (old_sb, new_sb) = (image.superblock(), after.superblock());
    assert_eq!(
        new_sb.metadata_sm_root.nr_allocated,
        old_sb.metadata_sm_root.nr_allocated - 16
    );
    assert_eq!(
        new_sb.data_sm_root.nr_allocated,
        old_sb.data_sm_root.nr_allocated - 5
    );
    assert_eq!(new_sb.mapping_root, old_sb.mapping_root);
}

#[test]
fn clear_needs_check_flag_repairs_leaks_and_clears_the_flag() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("repair-flag");
    let mut image = leaky(1, 0);
    let mut sb = image.superblock();
    sb.flags |= 1;
    image.set_superblock(&sb);
    let path = s.path("leaky-flagged");
    image.write_to(&path);
    let (exit, err) = tool(&path, &["-q", "--clear-needs-check-flag"]);
    assert_eq!((exit, err.as_str()), (0, ""));
    let after = Image::new(std::fs::read(&path).unwrap());
    assert_eq!(after.superblock().flags & 1, 0);
    assert_eq!(tool(&path, &[]).0, 0);
}

#[test]
fn under_counts_are_refused_and_nothing_is_written() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("repair-refuse");
    let mut image = leaky(3, 0);
    let b = image.find_block_with_count(false, 2);
    image.set_stored_count(false, b, 1);
    let path = s.path("bad");
    image.write_to(&path);
    for opt in ["--auto-repair", "--clear-needs-check-flag"] {
        let (exit, err) = tool(&path, &[opt]);
        assert_eq!(exit, 64, "{err}");
        assert!(std::fs::read(&path).unwrap() == image.bytes, "{opt} wrote");
    }
}

#[test]
fn leaks_on_a_read_only_file_fail_without_writing() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("repair-ro");
    let image = leaky(2, 0);
    let path = s.path("ro");
    image.write_to(&path);
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(&path, perm.clone()).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&s.dir, perm).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_dmpd"))
        .args(["thin_check", "--auto-repair", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    assert!(std::fs::read(&path).unwrap() == image.bytes);
}

/// Power is lost after every possible number of writes: the image checks
/// exactly as before (leaks only) or clean, never worse.
#[test]
fn a_crash_at_any_write_leaves_old_or_new_metadata() {
    if !common::have_reference() {
        return;
    }
    let image = leaky(16, 5);
    let before = check_bytes(&image.bytes);
    assert!(!before.has_fatal());
    let counts = before.counts.as_ref().unwrap();
    let src = BlockSource::from_bytes(&image.bytes, Path::new("image")).unwrap();

    let mut full = image.bytes.clone();
    let mut sink = MemorySink {
        image: &mut full,
        limit: None,
        writes: 0,
    };
    let done = repair_leaks(&src, counts, false, &mut sink).unwrap();
    let total = sink.writes;
    assert_eq!(total as u64, done.blocks_written);
    assert!(check_bytes(&full).passed(false));

    for k in 0..total {
        let mut bytes = image.bytes.clone();
        let mut sink = MemorySink {
            image: &mut bytes,
            limit: Some(k),
            writes: 0,
        };
        assert!(repair_leaks(&src, counts, false, &mut sink).is_err());
        let r = check_bytes(&bytes);
        assert!(
            !r.has_fatal(),
            "crash after {k} writes left fatal damage: {:?}",
            r.findings
        );
        assert_eq!(
            (r.metadata_leaks, r.data_leaks),
            (before.metadata_leaks, before.data_leaks),
            "crash after {k} writes"
        );
    }
}

/// The same with writes since the last flush dropped.
#[test]
fn a_crash_that_drops_unflushed_writes_leaves_old_or_new() {
    if !common::have_reference() {
        return;
    }
    use dmpd::io::sink::VolatileSink;
    let image = leaky(16, 5);
    let before = check_bytes(&image.bytes);
    let counts = before.counts.as_ref().unwrap();
    let src = BlockSource::from_bytes(&image.bytes, Path::new("image")).unwrap();
    let mut probe = image.bytes.clone();
    let mut sink = VolatileSink::new(&mut probe, None);
    repair_leaks(&src, counts, false, &mut sink).unwrap();
    let total = sink.writes;
    for k in 0..total {
        let mut bytes = image.bytes.clone();
        let mut sink = VolatileSink::new(&mut bytes, Some(k));
        assert!(repair_leaks(&src, counts, false, &mut sink).is_err());
        let r = check_bytes(&bytes);
        assert!(!r.has_fatal(), "crash after {k} writes: {:?}", r.findings);
        assert_eq!(
            (r.metadata_leaks, r.data_leaks),
            (before.metadata_leaks, before.data_leaks)
        );
    }
}
