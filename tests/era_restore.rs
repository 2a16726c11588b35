//! era_restore: every expected dump restores and dumps back the same;
//! Debian's era_check accepts what it writes; <marked> runs across
//! 64-bit words restore exactly (the reference's quirk Q12 does not);
//! bad XML and unusable outputs are refused before the output is touched.

// Writesets are written as lists of marked runs, often of one run.
#![allow(clippy::single_range_in_vec_init)]

mod common;

use common::era::*;
use common::*;

fn restore(xml: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    run(
        "era_restore",
        &["-i", xml.to_str().unwrap(), "-o", out.to_str().unwrap()],
    )
}

#[test]
fn expected_dumps_round_trip_and_debian_accepts_them() {
    for (name, _, expected) in shared_images() {
        let s = Scratch::new("era-restore-round-trip");
        let xml = expected.join(format!("{name}.dump.xml"));
        let out = blank(&s, "out.bin", 8 << 20);
        let o = restore(&xml, &out);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(stderr(&o), "");
        let o = run("era_dump", &[out.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(
            o.stdout == std::fs::read(&xml).unwrap(),
            "{name}: dump of the restore differs"
        );
        let o = run("era_check", &[out.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        if let Some(status) = debian_era_check(&out) {
            assert_eq!(status, 0, "{name}: Debian's era_check refuses the restore");
        }
    }
}

/// Quirk Q12 fixed: runs that cross one or many 64-bit words, start or
/// end on a boundary, or cover the last, partial word, mark exactly
/// their blocks.
#[test]
fn marked_runs_crossing_words_restore_exactly() {
    let s = Scratch::new("era-restore-marked");
    let runs = [
        1..2,
        30..70,
        127..129,
        192..256,
        300..1000,
        33000..33100,
        40000..40003,
    ];
    let img = restored(&s, "marked", &era_xml(40003, 3, &[(3, 40003, &runs)], &[]));
    let o = run("era_dump", &[img.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let x = stdout(&o);
    let marked: Vec<u64> = x
        .lines()
        .filter(|l| l.contains("value=\"true\""))
        .map(|l| l.split('"').nth(1).unwrap().parse().unwrap())
        .collect();
    let want: Vec<u64> = runs.iter().flat_map(|r| r.clone()).collect();
    assert_eq!(marked, want);
    if let Some(status) = debian_era_check(&img) {
        assert_eq!(status, 0);
    }
    let o = run("era_check", &[img.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn own_image_passes_debian_era_check() {
    let s = Scratch::new("era-restore-own");
    let img = own_image(&s);
    if let Some(status) = debian_era_check(&img) {
        assert_eq!(status, 0);
    }
}

#[test]
fn bad_xml_is_refused_and_the_output_left_alone() {
    let s = Scratch::new("era-restore-bad");
    let out = blank(&s, "out.bin", 1 << 20);
    std::fs::write(&out, vec![0xa5u8; 1 << 20]).unwrap();
    for (body, words) in [
        (
            era_xml(10, 2, &[(3, 10, &[0..1])], &[]),
            "line 2, column 3: writeset era 3 is newer than the current era 2",
        ),
        (
            era_xml(10, 2, &[(1, 10, &[5..11])], &[]),
            "reach beyond writeset era 1's 10 bits",
        ),
        (
            era_xml(10, 2, &[], &[(10, 1)]),
            "era array block 10 is beyond nr_blocks 10",
        ),
        (
            era_xml(10, 2, &[], &[(3, 1), (2, 1)]),
            "out of order: block 2 after 3",
        ),
        (
            "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"1\" current_era=\"1\">".into(),
            "incomplete source metadata",
        ),
    ] {
        let xml = s.path("bad.xml");
        std::fs::write(&xml, &body).unwrap();
        let o = restore(&xml, &out);
        assert_eq!(code(&o), 64, "{words}");
        assert!(
            stderr(&o).contains(words),
            "'{words}' not in {}",
            stderr(&o)
        );
        assert!(
            std::fs::read(&out).unwrap().iter().all(|&b| b == 0xa5),
            "{words}: output touched"
        );
    }
}

#[test]
fn outputs_too_small_or_the_input_itself_are_refused() {
    let s = Scratch::new("era-restore-output");
    let xml = s.path("big.xml");
    std::fs::write(
        &xml,
        era_xml(4_000_000, 1, &[(1, 4_000_000, &[0..4_000_000])], &[]),
    )
    .unwrap();
    let out = blank(&s, "small.bin", 40960);
    let o = restore(&xml, &out);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("Output file too small (out of metadata space)"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read(&out).unwrap().iter().all(|&b| b == 0));
    let o = restore(&xml, &xml);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains(&*xml.display().to_string()),
        "{}",
        stderr(&o)
    );
    let tiny = blank(&s, "tiny.bin", 4096);
    let o = restore(&xml, &tiny);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("too small"), "{}", stderr(&o));
}

#[test]
fn restoring_over_old_metadata_replaces_it() {
    let s = Scratch::new("era-restore-over");
    let img = own_image(&s);
    let xml = s.path("again.xml");
    std::fs::write(&xml, era_xml(100, 1, &[], &[])).unwrap();
    let o = restore(&xml, &img);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run("era_dump", &[img.to_str().unwrap()]);
    assert!(stdout(&o).starts_with(
        "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"100\" current_era=\"1\">"
    ));
    let o = run("era_check", &[img.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
