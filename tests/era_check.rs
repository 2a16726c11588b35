//! era_check on healthy era metadata (the kernel's images, the project's
//! own) and on each kind of damage the generator makes: exit status and
//! the precise message.

mod common;

use common::era::*;
use common::*;

#[test]
fn kernel_images_pass_as_the_reference_says() {
    for (name, gz, expected) in shared_images() {
        let s = Scratch::new("era-check-fixtures");
        let img = unpack(&s, &gz, &name);
        let o = run("era_check", &[img.to_str().unwrap()]);
        let want = std::fs::read_to_string(expected.join(format!("{name}.check.txt"))).unwrap();
        // exit=N, then stdout, then stderr, as recorded.
        assert!(want.starts_with("exit=0\n"), "{name}: {want}");
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{name}");
        assert_eq!(stderr(&o), "Checking era metadata\n", "{name}");
        assert!(
            want.ends_with("--- stderr\nChecking era metadata\n"),
            "{name}: {want}"
        );
    }
}

#[test]
fn own_image_passes_and_json_reports_the_superblock() {
    let s = Scratch::new("era-check-own");
    let img = own_image(&s);
    let o = run("era_check", &["--format", "json", img.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"passed\":true,\"current_era\":6,\"nr_blocks\":3000,\"metadata_snap\":0,\"findings\":[]}\n"
    );
    let o = run("era_check", &["-q", img.to_str().unwrap()]);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (0, String::new(), String::new())
    );
}

#[test]
fn version_is_bare_and_command_line_errors_exit_1() {
    let o = run("era_check", &["-V"]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o), format!("{}\n", env!("CARGO_PKG_VERSION")));
    let o = run("era_check", &["--no-such-option", "x"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = run("era_check", &[]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

/// Damages a copy of `img` with `kind`; returns its path.
pub fn damaged(s: &Scratch, img: &std::path::Path, kind: &str) -> std::path::PathBuf {
    let p = s.path(&format!("{kind}.bin"));
    std::fs::copy(img, &p).unwrap();
    let o = run(
        "era_generate_damage",
        &["--kind", kind, p.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{kind}: {}", stderr(&o));
    p
}

/// Each kind on the own image (always there): the message era_check
/// gives, and the status.
#[test]
fn each_damage_kind_is_named_precisely() {
    let s = Scratch::new("era-check-damage");
    let img = own_image(&s);
    // Block numbers follow from era_restore's layout of the own image:
    // the two bitsets first (blocks 1..4), the writeset tree, the era
    // array's three blocks and index, then the space map.
    let cases: &[(&str, i32, &[&str])] = &[
        (
            "writeset-checksum",
            64,
            &["writeset era 4: array block 0 at block 1 (bits 0..2999 lost): checksum error"],
        ),
        (
            "era-array-checksum",
            64,
            &["era array: array block 0 at block 6 (origin blocks 0..1017 lost): checksum error"],
        ),
        (
            "future-era",
            64,
            &["era array: array block 0 at block 6: value error: 1 origin block(s) with an era \
               newer than the current era 6: block 0 has era 11"],
        ),
        (
            "writeset-size",
            64,
            &["writeset era 4: nr_bits is 38576 (603 words), but its bitset holds 47 words (3008 bits)"],
        ),
        (
            "metadata-leak",
            64,
            &[
                "metadata space map: block 2047 leaked: stored count 1, computed 0",
                "the metadata space map contains 1 leaked block(s)",
            ],
        ),
        (
            "metadata-under-count",
            64,
            &["metadata space map: block 9 referenced but marked free: stored count 0, computed 1"],
        ),
        (
            "superblock-checksum",
            64,
            &["bad checksum in superblock of '", "(block 0: checksum error)"],
        ),
    ];
    for (kind, status, words) in cases {
        let d = damaged(&s, &img, kind);
        let o = run("era_check", &[d.to_str().unwrap()]);
        assert_eq!(code(&o), *status, "{kind}: {}", stderr(&o));
        for w in *words {
            assert!(
                stderr(&o).contains(w),
                "{kind}: '{w}' not in:\n{}",
                stderr(&o)
            );
        }
    }
    // A leak alone is non-fatal.
    let d = damaged(&s, &img, "metadata-leak");
    let o = run(
        "era_check",
        &["--ignore-non-fatal-errors", d.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// The same kinds on the kernel's images: detected, with the structure
/// named.
#[test]
fn damage_to_kernel_images_is_detected() {
    for (name, gz, _) in shared_images() {
        let s = Scratch::new("era-check-kernel-damage");
        let img = unpack(&s, &gz, &name);
        for (kind, words) in [
            ("writeset-checksum", "checksum error"),
            ("era-array-checksum", "era array: array block 0 at block"),
            ("future-era", "newer than the current era"),
            ("writeset-size", "but its bitset holds"),
            ("metadata-leak", "leaked: stored count 1, computed 0"),
            ("metadata-under-count", "stored count"),
            ("superblock-checksum", "bad checksum in superblock"),
        ] {
            let d = damaged(&s, &img, kind);
            let o = run("era_check", &[d.to_str().unwrap()]);
            assert_eq!(code(&o), 64, "{name} {kind}: {}", stderr(&o));
            assert!(stderr(&o).contains(words), "{name} {kind}: {}", stderr(&o));
        }
    }
}

#[test]
fn a_snapshot_is_counted_and_its_current_writeset_is_not() {
    // The held snapshot's trees are reconciled with the space map (the
    // check passes only if they are counted); an unreferenced block
    // counted as used is a leak.
    for (name, gz, _) in shared_images() {
        if !name.contains("snap") {
            continue;
        }
        let s = Scratch::new("era-check-snap");
        let img = unpack(&s, &gz, &name);
        let o = run("era_check", &["--format", "json", img.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{name}: {}", stdout(&o));
        assert!(
            !stdout(&o).contains("\"metadata_snap\":0"),
            "{name}: {}",
            stdout(&o)
        );
    }
}

#[test]
fn thin_metadata_is_named_as_such() {
    let s = Scratch::new("era-check-thin");
    let img = s.own_image("snapshots");
    let o = run("era_check", &[img.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("this is thin metadata"),
        "{}",
        stderr(&o)
    );
}
