//! era_repair on each kind of damage: the output checks clean (dmpd's
//! and Debian's era_check), what the damage did not touch is kept, and
//! what it cost is counted as written, never as clean.

mod common;

use std::path::{Path, PathBuf};

use common::era::*;
use common::*;

fn damaged(s: &Scratch, img: &Path, kind: &str) -> PathBuf {
    let p = s.path(&format!("{kind}.bin"));
    std::fs::copy(img, &p).unwrap();
    let o = run(
        "era_generate_damage",
        &["--kind", kind, p.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{kind}: {}", stderr(&o));
    p
}

/// Repairs `input` into a fresh file; returns it and the warnings.
fn repair(s: &Scratch, input: &Path) -> (PathBuf, String) {
    let out = blank(s, "repaired.bin", 8 << 20);
    let o = run(
        "era_repair",
        &["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o2 = run("era_check", &[out.to_str().unwrap()]);
    assert_eq!(code(&o2), 0, "repaired output: {}", stderr(&o2));
    if let Some(status) = debian_era_check(&out) {
        assert_eq!(status, 0, "Debian's era_check refuses the repaired output");
    }
    (out, stderr(&o))
}

fn dump(p: &Path) -> String {
    let o = run("era_dump", &[p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
}

fn section<'a>(x: &'a str, start: &str, end: &str) -> &'a str {
    let a = x.find(start).unwrap();
    &x[a..a + x[a..].find(end).unwrap()]
}

#[test]
fn each_damage_kind_is_repaired_on_the_own_image() {
    let s = Scratch::new("era-repair-own");
    let img = own_image(&s);
    let healthy = dump(&img);
    let era_array = |x: &str| section(x, "<era_array>", "</era_array>").to_string();
    let writeset =
        |x: &str, e: u32| section(x, &format!("<writeset era=\"{e}\""), "</writeset>").to_string();

    // A writeset block: that era's bits become all set; the rest intact.
    let (out, warn) = repair(&s, &damaged(&s, &img, "writeset-checksum"));
    let x = dump(&out);
    assert!(warn.contains("writeset era 4: bits 0..2999 cannot be read; those blocks are counted as written in era 4"), "{warn}");
    assert_eq!(writeset(&x, 4).matches("value=\"true\"").count(), 3000);
    assert_eq!(writeset(&x, 5), writeset(&healthy, 5));
    assert_eq!(era_array(&x), era_array(&healthy));

    // An era-array block: its 1018 entries get the current era; the
    // other blocks' entries and every writeset are kept.
    let (out, warn) = repair(&s, &damaged(&s, &img, "era-array-checksum"));
    let x = dump(&out);
    assert!(
        warn.contains("era array: array block 0 at block 6 (origin blocks 0..1017 lost): checksum error; those blocks are given the current era 6"),
        "{warn}"
    );
    let lines =
        |x: &str| -> Vec<String> { era_array(x).lines().skip(1).map(String::from).collect() };
    let (got, had) = (lines(&x), lines(&healthy));
    for b in 0..3000 {
        if b < 1018 {
            assert_eq!(got[b], format!("    <era block=\"{b}\" era=\"6\"/>"));
        } else {
            assert_eq!(got[b], had[b], "block {b}");
        }
    }
    assert_eq!(writeset(&x, 4), writeset(&healthy, 4));

    // An era newer than the current one: clamped to it, nothing else.
    let (out, warn) = repair(&s, &damaged(&s, &img, "future-era"));
    assert!(
        warn.contains("1 origin block(s) had an era newer than the current era 6"),
        "{warn}"
    );
    let x = dump(&out);
    assert_eq!(
        x.replacen(
            "<era block=\"0\" era=\"6\"/>",
            "<era block=\"0\" era=\"0\"/>",
            1
        ),
        healthy
    );

    // A writeset of the wrong size: restored with the size its bitset
    // holds, every bit kept.
    let (out, warn) = repair(&s, &damaged(&s, &img, "writeset-size"));
    assert!(warn.contains("writeset era 4: nr_bits 38576 disagrees with its bitset of 47 words; restored with nr_bits 3000"), "{warn}");
    assert_eq!(dump(&out), healthy);

    // Space-map damage and a superblock checksum cost nothing.
    for kind in [
        "metadata-leak",
        "metadata-under-count",
        "superblock-checksum",
    ] {
        let (out, _) = repair(&s, &damaged(&s, &img, kind));
        assert_eq!(dump(&out), healthy, "{kind}");
    }
}

#[test]
fn kernel_images_repair_from_every_damage_kind() {
    for (name, gz, expected) in shared_images() {
        let s = Scratch::new("era-repair-kernel");
        let img = unpack(&s, &gz, &name);
        let healthy = std::fs::read_to_string(expected.join(format!("{name}.dump.xml"))).unwrap();
        for kind in [
            "writeset-checksum",
            "era-array-checksum",
            "future-era",
            "writeset-size",
            "metadata-leak",
            "metadata-under-count",
            "superblock-checksum",
        ] {
            let (out, _) = repair(&s, &damaged(&s, &img, kind));
            let x = dump(&out);
            if matches!(
                kind,
                "writeset-size" | "metadata-leak" | "metadata-under-count" | "superblock-checksum"
            ) {
                assert_eq!(x, healthy, "{name} {kind}");
            } else {
                // Same elements; only the values the damage cost differ.
                assert_eq!(x.lines().count(), healthy.lines().count(), "{name} {kind}");
                let differ = x
                    .lines()
                    .zip(healthy.lines())
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    differ > 0 && differ <= 4096,
                    "{name} {kind}: {differ} lines differ"
                );
            }
        }
    }
}

#[test]
fn an_unreadable_superblock_is_the_one_thing_not_salvaged() {
    let s = Scratch::new("era-repair-zeroed");
    let img = own_image(&s);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[..4096].fill(0);
    std::fs::write(&img, &bytes).unwrap();
    let out = blank(&s, "out.bin", 8 << 20);
    let o = run(
        "era_repair",
        &["-i", img.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("bad checksum in superblock"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("block 0 is all zeros"),
        "{}",
        stderr(&o)
    );
    let o = run("era_repair", &["--bad"]);
    assert_eq!(code(&o), 1);
}
