mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;

const BLOCK_BYTES: u64 = 128 * 512;

fn fixture_xml() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshots.xml")
}

fn marker(d: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    let text = format!("data block {d:5}");
    m[..text.len()].copy_from_slice(text.as_bytes());
    m
}

/// A sparse data file with a marker naming each mapped block.
fn data_file(scratch: &Scratch, pool: &xml::Pool) -> PathBuf {
    let path = scratch.path("data");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(32768 * BLOCK_BYTES).unwrap();
    for dev in pool.devices.values() {
        for &(_, d, _) in &dev.mappings {
            f.write_all_at(&marker(d), d * BLOCK_BYTES).unwrap();
        }
    }
    path
}

fn read_marker(path: &Path, d: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut m, d * BLOCK_BYTES)
        .unwrap();
    m
}

#[test]
fn every_device_reads_the_same_data_after_shrinking() {
    let scratch = Scratch::new("shrink");
    let before = xml::parse(&std::fs::read_to_string(fixture_xml()).unwrap());
    let data = data_file(&scratch, &before);
    let out = scratch.path("shrunk.xml");
    let o = run(
        "thin_shrink",
        &[
            "-i",
            fixture_xml().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--nr-blocks",
            "8192",
        ],
    );
    assert_eq!((code(&o), stderr(&o)), (0, String::new()));
    let after = xml::parse(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(after.superblock["nr_data_blocks"], "8192");
    let mut moved = 0;
    for (id, dev) in &before.devices {
        let new: HashMap<u64, u64> = after.devices[id]
            .mappings
            .iter()
            .map(|&(v, d, _)| (v, d))
            .collect();
        assert_eq!(new.len(), dev.mappings.len(), "device {id}");
        for &(v, d, _) in &dev.mappings {
            let nd = new[&v];
            assert!(nd < 8192, "device {id} block {v} still at {nd}");
            assert_eq!(
                read_marker(&data, nd),
                marker(d),
                "device {id} virtual block {v}"
            );
            moved += (nd != d) as u32;
        }
    }
    assert!(moved > 500, "only {moved} mappings moved");
    // Shared sections stay shared, and the result restores and checks.
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("<ref name="));
    let meta = scratch.path("meta");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    assert_eq!(
        code(&run(
            "thin_restore",
            &["-i", out.to_str().unwrap(), "-o", meta.to_str().unwrap()]
        )),
        0
    );
    let c = run("thin_check", &[meta.to_str().unwrap()]);
    assert_eq!(code(&c), 0, "{}", stderr(&c));
}

#[test]
fn binary_mode_and_no_copy() {
    let scratch = Scratch::new("shrink-binary");
    let meta = scratch.path("meta");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    assert_eq!(
        code(&run(
            "thin_restore",
            &[
                "-i",
                fixture_xml().to_str().unwrap(),
                "-o",
                meta.to_str().unwrap()
            ]
        )),
        0
    );
    let out = scratch.path("meta2");
    std::fs::File::create(&out)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let o = run(
        "thin_shrink",
        &[
            "--binary",
            "--no-copy",
            "-i",
            meta.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--nr-blocks",
            "8192",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(code(&run("thin_check", &[out.to_str().unwrap()])), 0);
    let d = run("thin_dump", &[out.to_str().unwrap()]);
    let pool = xml::parse(&stdout(&d));
    assert_eq!(pool.superblock["nr_data_blocks"], "8192");
    assert!(pool
        .devices
        .values()
        .all(|dev| dev.mappings.iter().all(|m| m.1 < 8192)));
}

#[test]
fn refuses_when_the_mapped_blocks_do_not_fit() {
    let scratch = Scratch::new("shrink-nofit");
    let before = xml::parse(&std::fs::read_to_string(fixture_xml()).unwrap());
    let data = data_file(&scratch, &before);
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&data).unwrap().blocks();
    let out = scratch.path("shrunk.xml");
    let o = run(
        "thin_shrink",
        &[
            "-i",
            fixture_xml().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--nr-blocks",
            "1000",
        ],
    );
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("Insufficient free space"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // Nothing was copied: the same blocks are allocated, the markers stand.
    assert_eq!(std::fs::metadata(&data).unwrap().blocks(), allocated);
    for dev in before.devices.values() {
        for &(_, d, _) in &dev.mappings {
            assert_eq!(read_marker(&data, d), marker(d));
        }
    }
}
