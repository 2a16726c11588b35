//! cache_check on the kernel-written cache images (as the reference
//! recorded them), on each named damage of them (exact messages and exit
//! statuses), and its options: repairs, the needs_check flag, skips.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::*;
use dmpd::cache::damage::{Applied, CacheImage, Damage};
use dmpd::cache::read::{CacheMetadata, ReadOptions};
use dmpd::cache::superblock::{Superblock, CLEAN_SHUTDOWN, NEEDS_CHECK};
use dmpd::io::checksum::{seal, BlockKind};
use dmpd::io::source::{BlockSource, OpenOptions};

const IMAGES: &[&str] = &[
    "cmeta_kernel_v1",
    "cmeta_kernel_v2",
    "cmeta_kernel_v2_large",
    "cmeta_kernel_v1_huge",
];

fn kernel_image(name: &str) -> Vec<u8> {
    let gz = std::fs::read(kernel_dir().join(format!("{name}.bin.gz"))).unwrap();
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn write(s: &Scratch, name: &str, bytes: &[u8]) -> PathBuf {
    let p = s.path(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn check(path: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.push(path.to_str().unwrap());
    let o = run("cache_check", &all);
    (code(&o), stdout(&o), stderr(&o))
}

/// Debian's cache_check 0.9.0 as an independent judge, when installed.
fn debian_accepts(path: &Path) -> Option<bool> {
    let tool = Path::new("/usr/sbin/cache_check");
    if !tool.exists() {
        eprintln!("SKIPPED debian cache_check: /usr/sbin/cache_check not installed");
        return None;
    }
    let o = std::process::Command::new(tool).arg(path).output().unwrap();
    if !o.status.success() {
        eprintln!("Debian's cache_check on {path:?}: {}", stderr(&o));
    }
    Some(o.status.success())
}

/// exit, stdout and stderr as `NAME.check.txt` records them.
fn recorded(name: &str) -> (i32, String, String) {
    let text = std::fs::read_to_string(
        kernel_dir()
            .join("expected")
            .join(format!("{name}.check.txt")),
    )
    .unwrap();
    let (head, rest) = text.split_once("\n--- stdout\n").unwrap();
    let exit = head.strip_prefix("exit=").unwrap().trim().parse().unwrap();
    let (out, err) = rest.split_once("--- stderr\n").unwrap();
    (exit, out.to_string(), err.to_string())
}

#[test]
fn kernel_images_check_as_the_reference_recorded() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-kernel");
    for name in IMAGES {
        let (exit, out, err) = recorded(name);
        // Read straight from the gzip'd image and from a plain copy.
        let gz = kernel_dir().join(format!("{name}.bin.gz"));
        let plain = write(&s, name, &kernel_image(name));
        for p in [gz.as_path(), plain.as_path()] {
            let got = check(p, &[]);
            assert_eq!(got, (exit, out.clone(), err.clone()), "{name}: {p:?}");
        }
        // Every option that reads less passes too, and -q prints nothing.
        for opt in [
            "-q",
            "--super-block-only",
            "--skip-mappings",
            "--skip-hints",
            "--skip-discards",
            "--ignore-non-fatal-errors",
        ] {
            assert_eq!(
                check(&plain, &[opt]),
                (0, String::new(), String::new()),
                "{name} {opt}"
            );
        }
        let (code, json, err) = check(&plain, &["--format", "json"]);
        assert_eq!((code, err.as_str()), (0, ""), "{name}");
        assert!(
            json.starts_with("{\"passed\":true,\"version\":")
                && json.ends_with("\"findings\":[]}\n"),
            "{name}: {json}"
        );
        // Healthy metadata is never written, even with the repair options.
        let before = std::fs::read(&plain).unwrap();
        for opt in ["--auto-repair", "--clear-needs-check-flag"] {
            assert_eq!(check(&plain, &[opt]).0, 0, "{name} {opt}");
            assert!(
                std::fs::read(&plain).unwrap() == before,
                "{name} {opt} wrote"
            );
        }
    }
}

/// The kernel's `dmsetup status` fields: (mapped, dirty) cache blocks.
fn kernel_counts(name: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(
        kernel_dir()
            .join("expected")
            .join(format!("{name}.kernel-status.txt")),
    )
    .unwrap();
    let line = text.lines().find(|l| l.starts_with("cache: ")).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    // cache: 0 LEN cache MBS used/total CBS used/total rh rm wh wm demotions promotions dirty
    let at = f.iter().position(|&x| x == "cache").unwrap();
    let mapped = f[at + 4].split('/').next().unwrap().parse().unwrap();
    let dirty = f[at + 11].parse().unwrap();
    (mapped, dirty)
}

#[test]
fn the_reader_sees_what_the_kernel_said_it_had() {
    if !have_kernel_images() {
        return;
    }
    for name in IMAGES {
        let bytes = kernel_image(name);
        let src = BlockSource::from_bytes(&bytes, Path::new(name)).unwrap();
        let md = CacheMetadata::read(&src, &ReadOptions::default()).unwrap();
        assert!(md.is_intact(), "{name}: {:?}", md.damage());
        let mapped = md.mapped().count() as u64;
        let dirty = md.mapped().filter(|e| e.dirty == Some(true)).count() as u64;
        assert_eq!((mapped, dirty), kernel_counts(name), "{name}");
        // Clean shutdown: a hint per cache block, smq levels below 64.
        let hints = md.hints.as_ref().unwrap();
        assert_eq!(hints.len(), md.cache_blocks(), "{name}");
        assert!(md.mapped().all(|e| e
            .hint
            .is_some_and(|h| u32::from_le_bytes(h.try_into().unwrap()) < 64)));
        // The README: the 64-cache-block discard left these bits set.
        let discarded: u64 = md.discarded().iter().map(|r| r.end - r.start).sum();
        let want = match *name {
            "cmeta_kernel_v2_large" => 16,
            "cmeta_kernel_v1_huge" => 32,
            _ => 64,
        };
        assert_eq!(discarded, want, "{name}");
    }
}

/// Applies `d` to a copy of `name`; the image and where the damage is.
fn damaged(name: &str, d: Damage) -> (Vec<u8>, Applied) {
    let mut image = CacheImage::new(kernel_image(name));
    let applied = d.apply(&mut image).unwrap();
    (image.bytes, applied)
}

/// What cache_check must print on stderr for damage `d` of `name`.
fn expected_stderr(name: &str, path: &Path, d: Damage, a: &Applied) -> String {
    let b = a.block;
    let fatal = "metadata contains errors: 1 fatal problem(s) found\n";
    let v2 = name.contains("v2");
    match d {
        Damage::ArrayBlockChecksum => format!(
            "mapping array: array block 0 at block {b} (cache blocks 0..508 lost): checksum error\n{fatal}"
        ),
        Damage::ArrayBlockLocation => format!(
            "mapping array: array block 0 at block {b} (cache blocks 0..508 lost): blocknr mismatch (block says it is {})\n{fatal}",
            b + 1000
        ),
        Damage::ArrayNrEntriesOverMax => format!(
            "mapping array: array block 0 at block {b} (cache blocks 0..508 lost): nr_entries > max_entries (510 > 509)\n{fatal}"
        ),
        Damage::ArrayIndexHole => format!(
            "mapping array: array block 1 (cache blocks 509..1017 lost): missing from the array index (a hole)\n{fatal}"
        ),
        Damage::OriginMappedTwice => {
            let (c1, c2) = (a.cblocks[0], a.cblocks[1]);
            format!(
                "mapping array: origin block {} is mapped by cache block {c1} (array block {} at block {}) \
                 and by cache block {c2} (array block {} at block {b})\n{fatal}",
                a.origin.unwrap(),
                c1 / 509,
                a.other_block.unwrap(),
                c2 / 509
            )
        }
        Damage::DirtyUnmapped if v2 => format!(
            "dirty bitset: cache block {} is dirty but not mapped (bitset array block 0 at block {b})\n{fatal}",
            a.cblocks[0]
        ),
        Damage::DirtyUnmapped => {
            let c = a.cblocks[0];
            format!(
                "mapping array: cache block {c} (array block {} at block {b}): dirty but not mapped (no valid flag)\n{fatal}",
                c / 509
            )
        }
        Damage::MetadataLeak => format!(
            "metadata space map: block {b} leaked: stored count 1, computed 0\n\
             1 metadata block(s) leaked\n\
             the metadata space map contains 1 leaked block(s); they waste space but endanger no data: \
             --auto-repair repairs them, --ignore-non-fatal-errors accepts them\n"
        ),
        Damage::MetadataUnderCount => format!(
            "metadata space map: block {b} referenced but marked free: stored count 0, computed 1\n\
             1 metadata block(s) referenced but marked free\n\
             metadata space map contains errors: 1 fatal problem(s) found\n"
        ),
        Damage::SuperblockChecksum => format!(
            "bad checksum in superblock of '{}' (block 0: checksum error)\n",
            path.display()
        ),
        Damage::HintArrayShort => {
            // 4096 cache blocks: hints in 5 array blocks of 1018, the
            // last (of 24) dropped.
            format!(
                "hint array (index root at block {b}): holds 4072 hints but the cache has 4096 blocks: \
                 shorter than the mapping array (cache blocks 4072..4095 without a hint)\n\
                 metadata check found non-fatal problems; --ignore-non-fatal-errors accepts them\n"
            )
        }
    }
}

#[test]
fn every_damage_is_named_exactly() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-damage");
    for name in ["cmeta_kernel_v1", "cmeta_kernel_v2"] {
        for &d in Damage::ALL {
            let (bytes, applied) = damaged(name, d);
            let path = write(&s, &format!("{name}-{}", d.name()), &bytes);
            let (exit, out, err) = check(&path, &[]);
            let want = expected_stderr(name, &path, d, &applied);
            assert_eq!(
                (exit, out.as_str(), err.as_str()),
                (64, "", want.as_str()),
                "{name} {}",
                d.name()
            );
            // -q: the status alone.
            assert_eq!(check(&path, &["-q"]), (64, String::new(), String::new()));
            // Non-fatal damage is accepted on request; nothing else is.
            let (exit, _, _) = check(&path, &["--ignore-non-fatal-errors"]);
            assert_eq!(exit == 0, d.is_non_fatal(), "{name} {}", d.name());
            // The JSON document names the finding's block.
            if d != Damage::SuperblockChecksum && d != Damage::ArrayIndexHole {
                let (_, json, _) = check(&path, &["--format", "json"]);
                assert!(json.contains("\"passed\":false"), "{json}");
                assert!(
                    json.contains(&format!("\"block\":{}", applied.block)),
                    "{name} {}: {json}",
                    d.name()
                );
            }
        }
    }
}

#[test]
fn a_damage_in_a_skipped_structure_is_not_seen() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-skip");
    let name = "cmeta_kernel_v2";
    let cases = [
        (Damage::ArrayBlockChecksum, "--skip-mappings"),
        (Damage::DirtyUnmapped, "--skip-mappings"),
        (Damage::HintArrayShort, "--skip-hints"),
        (Damage::ArrayBlockChecksum, "--super-block-only"),
        (Damage::MetadataLeak, "--skip-discards"),
    ];
    for (d, opt) in cases {
        let (bytes, _) = damaged(name, d);
        let path = write(&s, d.name(), &bytes);
        assert_eq!(
            check(&path, &[opt]),
            (0, String::new(), String::new()),
            "{} {opt}",
            d.name()
        );
    }
    let (bytes, _) = damaged(name, Damage::SuperblockChecksum);
    let path = write(&s, "sb", &bytes);
    assert_eq!(check(&path, &["--super-block-only"]).0, 64);
}

fn set_flags(bytes: &mut [u8], set: u32, clear: u32) {
    let mut sb = Superblock::parse(&bytes[..4096]);
    sb.flags = (sb.flags | set) & !clear;
    sb.write_fields(&mut bytes[..4096]);
    seal(&mut bytes[..4096], BlockKind::CacheSuperblock);
}

fn flags(path: &Path) -> u32 {
    let src = BlockSource::open(path, OpenOptions { exclusive: false }).unwrap();
    Superblock::read(&src).unwrap().flags
}

#[test]
fn leaks_are_repaired_in_place_and_needs_check_cleared() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-repair");
    for name in ["cmeta_kernel_v1", "cmeta_kernel_v2"] {
        for opt in ["--auto-repair", "--clear-needs-check-flag"] {
            let (mut bytes, applied) = damaged(name, Damage::MetadataLeak);
            set_flags(&mut bytes, NEEDS_CHECK, 0);
            let path = write(&s, &format!("{name}-leak"), &bytes);
            let (exit, out, err) = check(&path, &[opt]);
            assert_eq!((exit, out.as_str()), (0, ""), "{name} {opt}: {err}");
            assert_eq!(
                err,
                format!(
                    "metadata space map: block {} leaked: stored count 1, computed 0\n\
                     1 metadata block(s) leaked\n\
                     repairing the metadata space map: 1 leaked block(s), 0 stale counter(s)\n\
                     metadata space map repaired: 3 space-map blocks written, then the superblock\n\
                     needs_check flag cleared\n",
                    applied.block
                )
            );
            // Clean now; needs_check clear, clean shutdown kept.
            assert_eq!(check(&path, &[]), (0, String::new(), String::new()));
            assert_eq!(flags(&path), CLEAN_SHUTDOWN, "{name} {opt}");
            if let Some(ok) = debian_accepts(&path) {
                assert!(ok, "{name} {opt}: Debian's cache_check rejects the repair");
            }
        }
        // lvm2's call, on a leak: quiet, and fixed.
        let (bytes, _) = damaged(name, Damage::MetadataLeak);
        let path = write(&s, &format!("{name}-lvm"), &bytes);
        assert_eq!(
            check(&path, &["-q", "--clear-needs-check-flag"]),
            (0, String::new(), String::new())
        );
        assert_eq!(check(&path, &[]).0, 0);
    }
}

#[test]
fn fatal_damage_is_never_written() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-norepair");
    for d in [
        Damage::MetadataUnderCount,
        Damage::OriginMappedTwice,
        Damage::HintArrayShort,
    ] {
        let (mut bytes, _) = damaged("cmeta_kernel_v2", d);
        set_flags(&mut bytes, NEEDS_CHECK, 0);
        let path = write(&s, d.name(), &bytes);
        for opt in ["--auto-repair", "--clear-needs-check-flag"] {
            assert_eq!(check(&path, &[opt]).0, 64, "{} {opt}", d.name());
            assert!(
                std::fs::read(&path).unwrap() == bytes,
                "{} {opt} wrote",
                d.name()
            );
        }
    }
}

#[test]
fn needs_check_is_cleared_only_after_a_whole_check() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-flag");
    let mut bytes = kernel_image("cmeta_kernel_v1");
    set_flags(&mut bytes, NEEDS_CHECK, CLEAN_SHUTDOWN);
    let path = write(&s, "flag", &bytes);
    // As the reference: neither --super-block-only nor a --skip option
    // clears it, and a plain check leaves it.
    for args in [
        &["--clear-needs-check-flag", "--super-block-only"][..],
        &["--clear-needs-check-flag", "--skip-hints"][..],
        &["--auto-repair", "--skip-discards"][..],
        &[][..],
    ] {
        assert_eq!(check(&path, args).0, 0, "{args:?}");
        assert_eq!(flags(&path), NEEDS_CHECK, "{args:?}");
    }
    let (exit, _, err) = check(&path, &["--clear-needs-check-flag"]);
    assert_eq!((exit, err.as_str()), (0, "needs_check flag cleared\n"));
    assert_eq!(flags(&path), 0, "the clean-shutdown flag stays as it was");
    let (_, json, _) = check(&path, &["--format", "json", "--auto-repair"]);
    assert!(json.contains("\"needs_check_cleared\":false"), "{json}");
}

#[test]
fn a_short_hint_array_after_an_unclean_shutdown_is_only_noted() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-hints");
    let (mut bytes, applied) = damaged("cmeta_kernel_v1", Damage::HintArrayShort);
    set_flags(&mut bytes, 0, CLEAN_SHUTDOWN);
    let path = write(&s, "hints", &bytes);
    assert_eq!(
        check(&path, &[]),
        (
            0,
            String::new(),
            format!(
                "hint array (index root at block {}): holds 4072 hints but the cache has 4096 blocks: \
                 shorter than the mapping array (cache blocks 4072..4095 without a hint); the cache was \
                 not shut down cleanly, so the kernel ignores hints\n",
                applied.block
            )
        )
    );
}

#[test]
fn command_line() {
    let o = run("cache_check", &["-V"]);
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, format!("{}\n", env!("CARGO_PKG_VERSION")))
    );
    let v = stdout(&o);
    let parts: Vec<&str> = v.trim().split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "{v}"
    );
    // Never 2: lvm2 would read "not installed".
    assert_eq!(code(&run("cache_check", &["--no-such-option", "x"])), 1);
    assert_eq!(code(&run("cache_check", &[])), 1);
    assert_eq!(code(&run("cache_check", &["-h"])), 0);
    let s = Scratch::new("cache-cli");
    let missing = s.path("missing");
    assert_eq!(check(&missing, &["-q"]), (64, String::new(), String::new()));
}

#[test]
fn the_projects_own_cache_images_pass_this_and_debians_checker() {
    let s = Scratch::new("cache-own");
    for version in [1, 2] {
        // 140,000 blocks: a two-level mapping index.
        for cache_blocks in [0, 1100, 140_000] {
            let image = dmpd::testing::cache_image(version, cache_blocks, 2048);
            let path = write(&s, &format!("own-{version}-{cache_blocks}"), &image);
            assert_eq!(
                check(&path, &[]),
                (0, String::new(), String::new()),
                "{version} {cache_blocks}"
            );
            // Debian's 0.9.0 reports the empty arrays of a cache of no
            // blocks as "missing mappings [1, 0]" (the kernel formats
            // metadata with such arrays too): it judges the others.
            if cache_blocks == 0 {
                continue;
            }
            if let Some(ok) = debian_accepts(&path) {
                assert!(
                    ok,
                    "{version} {cache_blocks}: Debian's cache_check rejects it"
                );
            }
        }
    }
}

/// thin_check's random-corruption test, for cache images: bits flipped
/// in blocks that hold metadata, half the time resealed so the damage
/// passes the checksum; cache_check (plain, and --auto-repair on the
/// copy) exits 0 or 64 and never panics, and most copies fail.
#[test]
fn random_corruption_never_panics() {
    let s = Scratch::new("cache-random");
    let mut images = vec![
        ("own v1", dmpd::testing::cache_image(1, 3000, 64)),
        ("own v2", dmpd::testing::cache_image(2, 3000, 64)),
    ];
    if have_kernel_images() {
        images.push(("cmeta_kernel_v2", kernel_image("cmeta_kernel_v2")));
        images.push(("cmeta_kernel_v1_huge", kernel_image("cmeta_kernel_v1_huge")));
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (name, pristine) in &images {
        let used: Vec<usize> = (0..pristine.len() / 4096)
            .filter(|&b| pristine[b * 4096..(b + 1) * 4096].iter().any(|&x| x != 0))
            .collect();
        let mut failures = 0;
        let rounds = 40;
        for round in 0..rounds {
            let mut image = pristine.clone();
            for _ in 0..1 + next() % 4 {
                let b = used[(next() % used.len() as u64) as usize];
                let block = &mut image[b * 4096..(b + 1) * 4096];
                block[(next() % 4096) as usize] ^= 1 << (next() % 8);
                if next() % 2 == 0 {
                    if let Some(kind) =
                        dmpd::io::checksum::kind_of(&pristine[b * 4096..(b + 1) * 4096])
                    {
                        seal(block, kind);
                    }
                }
            }
            let path = write(&s, "random", &image);
            let (exit, _, err) = check(&path, &[]);
            assert!(
                exit == 0 || exit == 64,
                "{name} round {round}: exit {exit}\n{err}"
            );
            assert!(!err.contains("panicked"), "{name} round {round}: {err}");
            failures += (exit == 64) as u32;
            let (exit, _, err) = check(&path, &["--auto-repair"]);
            assert!(
                exit == 0 || exit == 64,
                "{name} round {round} repair: exit {exit}\n{err}"
            );
            assert!(
                !err.contains("panicked"),
                "{name} round {round} repair: {err}"
            );
            if exit == 0 {
                assert_eq!(
                    check(&path, &[]).0,
                    0,
                    "{name} round {round}: repaired but not clean"
                );
            }
        }
        assert!(
            failures > rounds / 2,
            "{name}: only {failures} of {rounds} corrupted images failed"
        );
    }
}

/// Index levels above the array blocks, following the first child.
fn index_depth(image: &[u8], root: u64) -> u32 {
    let mut b = root as usize;
    let mut depth = 1;
    loop {
        let node = dmpd::pdata::btree::node::NodeView::new(&image[b * 4096..(b + 1) * 4096]);
        if node.is_leaf() {
            return depth;
        }
        b = node.value_u64(0) as usize;
        depth += 1;
    }
}

/// 33,000,000 cache blocks: the mapping array's 64,834 array blocks take
/// a 3-level index (the depth where the kernel's own walker once broke).
/// Checked clean, and a damaged last array block is found and named with
/// its cache blocks.
#[test]
fn a_cache_of_33_million_blocks_has_a_three_level_index_and_checks() {
    let s = Scratch::new("cache-deep");
    let cache_blocks = 33_000_000u64;
    let nr_blocks = 66_000 + 1_100 + 64;
    let mut image = dmpd::testing::cache_image_with(2, cache_blocks, nr_blocks, 100, false);
    let sb = Superblock::parse(&image[..4096]);
    assert_eq!(index_depth(&image, sb.mapping_root), 3);
    let path = write(&s, "deep", &image);
    assert_eq!(check(&path, &[]), (0, String::new(), String::new()));

    // The last array block (index 64,833: cache blocks 32,999,997..),
    // reached through the third level, damaged.
    let (k, b) = *dmpd::pdata::array::view::read_index(
        &BlockSource::open(&path, OpenOptions { exclusive: false }).unwrap(),
        "mapping array",
        sb.mapping_root,
    )
    .0
    .last()
    .unwrap();
    assert_eq!(k, cache_blocks.div_ceil(509) - 1);
    image[b as usize * 4096 + 100] ^= 1;
    let path = write(&s, "deep", &image);
    let first = k * 509;
    assert_eq!(
        check(&path, &[]),
        (
            64,
            String::new(),
            format!(
                "mapping array: array block {k} at block {b} (cache blocks {first}..{} lost): checksum error\n\
                 metadata contains errors: 1 fatal problem(s) found\n",
                cache_blocks - 1
            )
        )
    );
}

#[test]
fn superblock_fields_the_arrays_depend_on() {
    let s = Scratch::new("cache-sb-fields");
    let edit = |f: &dyn Fn(&mut Superblock)| {
        let mut bytes = dmpd::testing::cache_image(2, 1100, 64);
        let mut sb = Superblock::parse(&bytes[..4096]);
        f(&mut sb);
        sb.write_fields(&mut bytes[..4096]);
        seal(&mut bytes[..4096], BlockKind::CacheSuperblock);
        bytes
    };
    let path = write(&s, "hint8", &edit(&|sb| sb.policy_hint_size = 8));
    assert_eq!(
        check(&path, &[]),
        (
            64,
            String::new(),
            "policy hint size is 8 bytes; only 4-byte hints are supported\n\
             metadata contains errors: 1 fatal problem(s) found\n"
                .to_string()
        )
    );
    // Not looked at when the hints are skipped.
    assert_eq!(check(&path, &["--skip-hints"]).0, 0);
    // Fatal even when only the superblock is checked.
    let path = write(&s, "dbs0", &edit(&|sb| sb.data_block_size = 0));
    assert_eq!(
        check(&path, &["--super-block-only"]),
        (
            64,
            String::new(),
            "superblock data block size is 0 sectors\n\
             metadata contains errors: 1 fatal problem(s) found\n"
                .to_string()
        )
    );
    let path = write(&s, "v2root0", &edit(&|sb| sb.dirty_root = Some(0)));
    assert_eq!(check(&path, &["-q"]), (64, String::new(), String::new()));
    assert_eq!(
        check(&path, &[]).2,
        format!(
            "'{}': dirty bitset not found: the format 2 superblock's dirty bitset root is 0\n",
            path.display()
        )
    );
}
