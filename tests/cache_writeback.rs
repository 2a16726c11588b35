//! cache_writeback end to end: caches built with cache_restore (formats 1
//! and 2, a quarter of the blocks dirty) over a fast-device file and an
//! origin file whose every block carries a marker naming it; after the
//! writeback the origin holds each dirty block's data at its origin
//! block and nothing else changed, the metadata calls exactly the written
//! blocks clean, and both checkers pass. Injected I/O errors cost exactly
//! their blocks; a crash at any write of the metadata update leaves the
//! old metadata or the new.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{code, run, stderr, stdout, Scratch};

/// 64-sector (32 KiB) cache blocks.
const BLOCK: usize = 64 * 512;
const CACHE_BLOCKS: u64 = 256;
const ORIGIN_BLOCKS: u64 = 1024;

/// Mapped cache blocks: every other one; cache block c holds origin
/// block (c * 37 + 11) % ORIGIN_BLOCKS (distinct, scattered); a quarter
/// of all cache blocks (every fourth) is dirty.
fn origin_of(c: u64) -> u64 {
    (c * 37 + 11) % ORIGIN_BLOCKS
}
fn mapped(c: u64) -> bool {
    c.is_multiple_of(2)
}
fn dirty(c: u64) -> bool {
    c.is_multiple_of(4)
}

fn xml() -> String {
    let mut s = format!(
        "<superblock uuid=\"\" block_size=\"64\" nr_cache_blocks=\"{CACHE_BLOCKS}\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n"
    );
    for c in (0..CACHE_BLOCKS).filter(|&c| mapped(c)) {
        s.push_str(&format!(
            "    <mapping cache_block=\"{c}\" origin_block=\"{}\" dirty=\"{}\"/>\n",
            origin_of(c),
            dirty(c)
        ));
    }
    s.push_str("  </mappings>\n</superblock>");
    s
}

/// The marker block `i` of a device tagged `tag` carries: its tag and
/// number in every 16 bytes.
fn marker(tag: u8, i: u64) -> Vec<u8> {
    let mut unit = [tag; 16];
    unit[..8].copy_from_slice(&i.to_le_bytes());
    unit.iter().copied().cycle().take(BLOCK).collect()
}

fn device(path: &Path, tag: u8, blocks: u64, offset: usize) {
    let mut d = vec![0xeeu8; offset];
    for i in 0..blocks {
        d.extend_from_slice(&marker(tag, i));
    }
    std::fs::write(path, d).unwrap();
}

fn block_at(d: &[u8], offset: usize, i: u64) -> &[u8] {
    let at = offset + i as usize * BLOCK;
    &d[at..at + BLOCK]
}

struct Cache {
    meta: PathBuf,
    fast: PathBuf,
    origin: PathBuf,
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A cache of format `version`; data offsets in bytes.
fn cache(s: &Scratch, version: u32, clean: bool, fast_off: usize, origin_off: usize) -> Cache {
    let x = s.path("cache.xml");
    std::fs::write(&x, xml()).unwrap();
    let meta = s.path("meta");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let v = version.to_string();
    let mut args = vec!["-i", p(&x), "-o", p(&meta), "--metadata-version", &v];
    if !clean {
        args.push("--omit-clean-shutdown");
    }
    let o = run("cache_restore", &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let fast = s.path("fast");
    let origin = s.path("origin");
    device(&fast, 0xfa, CACHE_BLOCKS, fast_off);
    device(&origin, 0x0e, ORIGIN_BLOCKS, origin_off);
    Cache { meta, fast, origin }
}

fn writeback(c: &Cache, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--metadata-device",
        p(&c.meta),
        "--origin-device",
        p(&c.origin),
        "--fast-device",
        p(&c.fast),
    ];
    args.extend_from_slice(extra);
    run("cache_writeback", &args)
}

/// The dirty cache blocks the metadata records, from cache_dump.
fn dirty_in_metadata(meta: &Path) -> BTreeSet<u64> {
    let o = run("cache_dump", &[p(meta)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter(|l| l.contains("dirty=\"true\""))
        .map(|l| {
            let v = l.split("cache_block=\"").nth(1).unwrap();
            v[..v.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

fn checks_clean(meta: &Path) {
    let o = run("cache_check", &[p(meta)]);
    assert_eq!(code(&o), 0, "cache_check: {}", stderr(&o));
    let debian = Path::new("/usr/sbin/cache_check");
    if debian.exists() {
        let o = std::process::Command::new(debian)
            .arg(meta)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "Debian's cache_check: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        println!("SKIPPED Debian's cache_check: /usr/sbin/cache_check not found");
    }
}

/// The origin after a writeback of the cache blocks `written`: each at
/// its origin block, every other origin block its own marker.
fn assert_origin(c: &Cache, written: &BTreeSet<u64>, fast_off: usize, origin_off: usize) {
    let fast = std::fs::read(&c.fast).unwrap();
    let origin = std::fs::read(&c.origin).unwrap();
    assert_eq!(origin.len(), origin_off + ORIGIN_BLOCKS as usize * BLOCK);
    assert!(origin[..origin_off].iter().all(|&b| b == 0xee));
    let by_origin: std::collections::HashMap<u64, u64> =
        written.iter().map(|&cb| (origin_of(cb), cb)).collect();
    for o in 0..ORIGIN_BLOCKS {
        let got = block_at(&origin, origin_off, o);
        match by_origin.get(&o) {
            Some(&cb) => assert!(
                got == block_at(&fast, fast_off, cb),
                "origin block {o} should hold cache block {cb}"
            ),
            None => assert!(got == marker(0x0e, o), "origin block {o} was changed"),
        }
    }
}

fn all_dirty() -> BTreeSet<u64> {
    (0..CACHE_BLOCKS)
        .filter(|&c| mapped(c) && dirty(c))
        .collect()
}

#[test]
fn writes_back_exactly_the_dirty_blocks_and_marks_them_clean() {
    for version in [1, 2] {
        let s = Scratch::new(&format!("writeback-v{version}"));
        let c = cache(&s, version, true, 0, 0);
        let dirty = all_dirty();
        assert_eq!(dirty.len() as u64, CACHE_BLOCKS / 4);
        assert_eq!(dirty_in_metadata(&c.meta), dirty);
        let o = writeback(&c, &[]);
        assert_eq!(code(&o), 0, "v{version}: {}", stderr(&o));
        assert_eq!(stdout(&o), "64/64 blocks copied successfully.\n");
        assert_origin(&c, &dirty, 0, 0);
        assert_eq!(dirty_in_metadata(&c.meta), BTreeSet::new(), "v{version}");
        checks_clean(&c.meta);
        // The mappings themselves are unchanged.
        let dump = stdout(&run("cache_dump", &[p(&c.meta)]));
        assert_eq!(
            dump.matches("<mapping ").count() as u64,
            CACHE_BLOCKS / 2,
            "v{version}"
        );
        // Nothing left to do: a second run copies nothing.
        let o = writeback(&c, &[]);
        assert_eq!(code(&o), 0);
        assert_eq!(stdout(&o), "0/0 blocks copied successfully.\n");
    }
}

#[test]
fn no_metadata_update_copies_and_leaves_the_metadata_byte_for_byte() {
    for version in [1, 2] {
        let s = Scratch::new(&format!("writeback-nomd-v{version}"));
        let c = cache(&s, version, true, 0, 0);
        let before = std::fs::read(&c.meta).unwrap();
        let o = writeback(&c, &["--no-metadata-update", "-q"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), "");
        assert_eq!(stderr(&o), "");
        assert_origin(&c, &all_dirty(), 0, 0);
        assert!(std::fs::read(&c.meta).unwrap() == before);
    }
}

#[test]
fn offsets_place_the_data() {
    let (fast_off, origin_off) = (1 << 20, 4 << 20);
    let s = Scratch::new("writeback-offsets");
    let c = cache(&s, 2, true, fast_off, origin_off);
    let o = writeback(
        &c,
        &[
            "--fast-device-offset",
            "2048",
            "--origin-device-offset",
            "8192",
            "--buffer-size-meg",
            "1",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_origin(&c, &all_dirty(), fast_off, origin_off);
    checks_clean(&c.meta);
}

#[test]
fn after_an_unclean_shutdown_every_mapped_block_is_written_back() {
    for version in [1, 2] {
        let s = Scratch::new(&format!("writeback-unclean-v{version}"));
        let c = cache(&s, version, false, 0, 0);
        let o = writeback(&c, &[]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), "128/128 blocks copied successfully.\n");
        let every: BTreeSet<u64> = (0..CACHE_BLOCKS).filter(|&c| mapped(c)).collect();
        assert_origin(&c, &every, 0, 0);
        assert_eq!(dirty_in_metadata(&c.meta), BTreeSet::new());
        checks_clean(&c.meta);
    }
}

#[test]
fn failing_blocks_stay_dirty_and_are_listed() {
    for version in [1, 2] {
        let s = Scratch::new(&format!("writeback-fail-v{version}"));
        let c = cache(&s, version, true, 0, 0);
        // Reading cache block 8 and writing the origin block of cache
        // block 40 fail, however often they are tried.
        let read_fails = 8u64;
        let write_fails = 40u64;
        let spec = format!(
            "fast:read:{}+1,origin:write:{}+4096",
            read_fails as usize * BLOCK + 100,
            origin_of(write_fails) as usize * BLOCK + 4096
        );
        let args = vec![
            "--metadata-device".to_string(),
            p(&c.meta).into(),
            "--origin-device".into(),
            p(&c.origin).into(),
            "--fast-device".into(),
            p(&c.fast).into(),
            "--list-failed-blocks".into(),
            "--retry-count".into(),
            "3".into(),
        ];
        let o = common::dmpd()
            .arg("cache_writeback")
            .args(&args)
            .env("DMPD_TEST_FAIL_IO", &spec)
            .output()
            .unwrap();
        assert_eq!(code(&o), 64, "{}", stderr(&o));
        let out = stdout(&o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "62/64 blocks copied successfully.");
        let (first, second) = if origin_of(read_fails) < origin_of(write_fails) {
            (1, 2)
        } else {
            (2, 1)
        };
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[first].starts_with(&format!(
                "failed: cache block 8 (origin block {}): reading the fast device failed: ",
                origin_of(8)
            )),
            "{out}"
        );
        assert!(
            lines[second].starts_with(&format!(
                "failed: cache block 40 (origin block {}): writing the origin device failed: ",
                origin_of(40)
            )),
            "{out}"
        );
        assert!(out.contains("Input/output error"));
        assert!(
            stderr(&o).contains("incomplete writeback: 2 of 64 block(s) were not written back"),
            "{}",
            stderr(&o)
        );
        let written: BTreeSet<u64> = all_dirty()
            .into_iter()
            .filter(|&c| c != read_fails && c != write_fails)
            .collect();
        assert_origin(&c, &written, 0, 0);
        assert_eq!(
            dirty_in_metadata(&c.meta),
            BTreeSet::from([read_fails, write_fails]),
            "v{version}"
        );
        checks_clean(&c.meta);
    }
}

#[test]
fn retries_get_past_a_transient_error() {
    let s = Scratch::new("writeback-retry");
    let c = cache(&s, 2, true, 0, 0);
    // The first five reads touching cache block 12 fail. A run reads it
    // once with the blocks of its run, once on its own, then
    // --retry-count more times.
    let spec = format!("fast:read:{}+1*5", 12 * BLOCK);
    let run_with = |retries: &str| {
        common::dmpd()
            .arg("cache_writeback")
            .args([
                "--metadata-device",
                p(&c.meta),
                "--origin-device",
                p(&c.origin),
                "--fast-device",
                p(&c.fast),
                "--retry-count",
                retries,
            ])
            .env("DMPD_TEST_FAIL_IO", &spec)
            .output()
            .unwrap()
    };
    // Each run starts with five failures to meet. Four tries, four
    // failures: block 12 alone stays dirty.
    let o = run_with("2");
    assert_eq!(code(&o), 64, "{}", stderr(&o));
    assert_eq!(stdout(&o), "63/64 blocks copied successfully.\n");
    assert_eq!(dirty_in_metadata(&c.meta), BTreeSet::from([12]));
    // Six tries: the sixth succeeds (the new run has block 12 only).
    let o = run_with("4");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "1/1 blocks copied successfully.\n");
    assert_eq!(dirty_in_metadata(&c.meta), BTreeSet::new());
    assert_origin(&c, &all_dirty(), 0, 0);
}

#[test]
fn damaged_metadata_stops_the_copy_with_65() {
    let s = Scratch::new("writeback-damaged");
    let c = cache(&s, 2, true, 0, 0);
    let mut meta = std::fs::read(&c.meta).unwrap();
    // One byte of the mapping array's index root (superblock byte 192).
    let root = u64::from_le_bytes(meta[192..200].try_into().unwrap()) as usize;
    meta[root * 4096 + 100] ^= 1;
    std::fs::write(&c.meta, &meta).unwrap();
    let o = writeback(&c, &[]);
    assert_eq!(code(&o), 65, "{}", stderr(&o));
    assert!(stderr(&o).contains("Nothing was copied"), "{}", stderr(&o));
    assert_origin(&c, &BTreeSet::new(), 0, 0);
}

#[test]
fn refuses_overlapping_devices_and_unaligned_offsets() {
    let s = Scratch::new("writeback-guards");
    let c = cache(&s, 2, true, 0, 0);
    let o = run(
        "cache_writeback",
        &[
            "--metadata-device",
            p(&c.meta),
            "--origin-device",
            p(&c.fast),
            "--fast-device",
            p(&c.fast),
        ],
    );
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("same file"), "{}", stderr(&o));
    let o = run(
        "cache_writeback",
        &[
            "--metadata-device",
            p(&c.fast),
            "--origin-device",
            p(&c.origin),
            "--fast-device",
            p(&c.fast),
        ],
    );
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("same file"), "{}", stderr(&o));
    let o = writeback(&c, &["--fast-device-offset", "7"]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("not page aligned"), "{}", stderr(&o));
    assert_origin(&c, &BTreeSet::new(), 0, 0);
    assert_eq!(dirty_in_metadata(&c.meta), all_dirty());
}

/// A crash after every number of writes of the metadata update, with
/// writes lost since the last flush: the metadata then checks clean and
/// holds the old dirty set or the new one.
#[test]
fn a_crash_during_the_metadata_update_leaves_old_or_new() {
    use dmpd::cache::check::{check, CheckOptions};
    use dmpd::cache::read::{CacheMetadata, ReadOptions};
    use dmpd::cache::writeback::update::{in_use, mark_clean};
    use dmpd::io::sink::VolatileSink;
    use dmpd::io::BlockSource;
    use dmpd::report::{Mode, Reporter};

    let dirty_of = |image: &[u8]| -> Option<BTreeSet<u64>> {
        let src = BlockSource::from_bytes(image, Path::new("image")).ok()?;
        if !check(
            &src,
            &CheckOptions::default(),
            &Reporter::with_mode(Mode::Quiet),
        )
        .passed(false)
        {
            return None;
        }
        let md = CacheMetadata::read(&src, &ReadOptions::default()).ok()?;
        Some(
            md.mapped()
                .filter(|e| e.dirty == Some(true))
                .map(|e| e.cblock)
                .collect(),
        )
    };
    for version in [1, 2] {
        let s = Scratch::new(&format!("writeback-crash-v{version}"));
        let c = cache(&s, version, true, 0, 0);
        let old = std::fs::read(&c.meta).unwrap();
        let old_dirty = all_dirty();
        assert_eq!(dirty_of(&old), Some(old_dirty.clone()));
        // Mark half of the dirty blocks clean.
        let clean: Vec<u64> = old_dirty.iter().copied().step_by(2).collect();
        let new_dirty: BTreeSet<u64> = old_dirty
            .iter()
            .copied()
            .filter(|c| !clean.contains(c))
            .collect();
        let update = |image: &mut Vec<u8>, limit: Option<usize>| -> (bool, usize) {
            let snapshot = image.clone();
            let src = BlockSource::from_bytes(&snapshot, Path::new("old")).unwrap();
            let r = check(
                &src,
                &CheckOptions::default(),
                &Reporter::with_mode(Mode::Quiet),
            );
            let keep = in_use(&r.counts.unwrap().metadata_refs);
            let mut sink = VolatileSink::new(image, limit);
            let ok = mark_clean(&src, keep, &clean, &mut sink).is_ok();
            (ok, sink.writes)
        };
        let mut full = old.clone();
        let (ok, writes) = update(&mut full, None);
        assert!(ok);
        assert_eq!(dirty_of(&full), Some(new_dirty.clone()), "v{version}");
        assert!(writes > 2);
        let mut outcomes = BTreeSet::new();
        for limit in 0..writes {
            let mut image = old.clone();
            let (ok, _) = update(&mut image, Some(limit));
            assert!(!ok, "v{version}: cut after {limit} writes");
            let got = dirty_of(&image);
            assert!(
                got.as_ref() == Some(&old_dirty) || got.as_ref() == Some(&new_dirty),
                "v{version}: cut after {limit} of {writes} writes: {got:?}"
            );
            outcomes.insert(got == Some(new_dirty.clone()));
        }
        // Every cut before the superblock write keeps the old metadata.
        assert_eq!(outcomes, BTreeSet::from([false]), "v{version}");
    }
}
