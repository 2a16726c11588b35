//! era_invalidate against what the reference printed for the kernel's
//! images (live and --metadata-snapshot), the selection rule of tools.md
//! §4.4 on hand-made metadata, and the open current writeset, which the
//! reference ignores.

// Writesets are written as lists of marked runs, often of one run.
#![allow(clippy::single_range_in_vec_init)]

mod common;

use common::era::*;
use common::*;

fn invalidate(img: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = extra.to_vec();
    args.push(img.to_str().unwrap());
    run("era_invalidate", &args)
}

#[test]
fn kernel_images_give_what_the_reference_printed() {
    for (name, gz, expected) in shared_images() {
        let s = Scratch::new("era-invalidate-fixtures");
        let img = unpack(&s, &gz, &name);
        let mut seen = 0;
        for e in std::fs::read_dir(&expected).unwrap() {
            let file = e.unwrap().file_name().to_string_lossy().into_owned();
            let Some(rest) = file
                .strip_prefix(&format!("{name}.invalidate-"))
                .and_then(|r| r.strip_suffix(".xml"))
            else {
                continue;
            };
            let (snap, era) = match rest.strip_prefix("m-") {
                Some(e) => (true, e),
                None => (false, rest),
            };
            let mut args = vec!["--written-since", era];
            if snap {
                args.push("--metadata-snapshot");
            }
            let o = invalidate(&img, &args);
            let err = std::fs::read_to_string(expected.join(file.replace(".xml", ".err"))).unwrap();
            assert_eq!(
                format!("exit={}\n", code(&o)),
                err,
                "{file}: {}",
                stderr(&o)
            );
            let want = std::fs::read(expected.join(&file)).unwrap();
            assert!(o.stdout == want, "{file}: {}", stdout(&o));
            seen += 1;
        }
        if name.starts_with("emeta_kernel") {
            assert!(seen >= 6, "{name}: {seen} expected outputs");
        }
    }
}

#[test]
fn the_selection_rule_on_small_cases() {
    // tools.md §4.4: era array [1,2,3,4,5,0...] of 16 blocks, current era 5.
    let s = Scratch::new("era-invalidate-cases");
    let eras: Vec<(u32, u32)> = (0..5).map(|b| (b, b + 1)).collect();
    let img = restored(&s, "array-only", &era_xml(16, 5, &[], &eras));
    for (since, want) in [
        (
            "0",
            "<blocks>\n  <range begin=\"0\" end=\"16\"/>\n</blocks>",
        ),
        ("3", "<blocks>\n  <range begin=\"2\" end=\"5\"/>\n</blocks>"),
        ("6", "<blocks>\n</blocks>"),
    ] {
        let o = invalidate(&img, &["--written-since", since]);
        assert_eq!((code(&o), stdout(&o).as_str()), (0, want), "{since}");
    }
    // Writesets 3 {0,1}, 4 {4,5}, 5 {8,9} over an array.
    let array = [0, 1, 2, 1, 0, 1, 0, 0, 2, 0, 0, 0, 2, 2, 0, 0];
    let eras: Vec<(u32, u32)> = array
        .iter()
        .enumerate()
        .filter(|(_, &e)| e != 0)
        .map(|(b, &e)| (b as u32, e))
        .collect();
    let img = restored(
        &s,
        "writesets",
        &era_xml(
            16,
            5,
            &[(3, 16, &[0..2]), (4, 16, &[4..6]), (5, 16, &[8..10])],
            &eras,
        ),
    );
    let runs = |r: &[(u64, u64)]| -> String {
        let mut x = String::from("<blocks>\n");
        for (b, e) in r {
            if e - b == 1 {
                x.push_str(&format!("  <block block=\"{b}\"/>\n"));
            } else {
                x.push_str(&format!("  <range begin=\"{b}\" end=\"{e}\"/>\n"));
            }
        }
        x + "</blocks>"
    };
    for (since, want) in [
        ("3", runs(&[(0, 2), (4, 6), (8, 10)])),
        ("5", runs(&[(8, 10)])),
        ("2", runs(&[(0, 3), (4, 6), (8, 10), (12, 14)])),
        ("6", runs(&[])),
        ("0", runs(&[(0, 16)])),
    ] {
        let o = invalidate(&img, &["--written-since", since]);
        assert_eq!((code(&o), stdout(&o)), (0, want), "{since}");
    }
    let out = s.path("list.xml");
    let o = invalidate(&img, &["--written-since", "5", "-o", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), runs(&[(8, 10)]));
    let o = invalidate(&img, &["--written-since", "1", "--metadata-snapshot"]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("no current metadata snap"),
        "{}",
        stderr(&o)
    );
}

/// An era array of several blocks (1018 entries each, so blocks start
/// part way through a 64-block word) with eras that change every few
/// blocks: each threshold lists exactly the blocks of that era or later.
#[test]
fn eras_across_array_blocks_that_do_not_start_on_words() {
    let s = Scratch::new("era-invalidate-blocks");
    let nr_blocks = 3 * 1018 + 77;
    // Era of block b: a pattern with runs of 1 to 7 blocks, 0 included.
    let era_of = |b: u32| (b / (1 + b % 7)) % 9;
    let eras: Vec<(u32, u32)> = (0..nr_blocks)
        .map(|b| (b, era_of(b)))
        .filter(|&(_, e)| e != 0)
        .collect();
    let img = restored(&s, "blocks", &era_xml(nr_blocks, 9, &[], &eras));
    for since in [1u32, 4, 8, 9] {
        let mut want = String::from("<blocks>\n");
        let mut b = 0;
        while b < nr_blocks {
            if era_of(b) < since {
                b += 1;
                continue;
            }
            let start = b;
            while b < nr_blocks && era_of(b) >= since {
                b += 1;
            }
            want.push_str(&if b - start == 1 {
                format!("  <block block=\"{start}\"/>\n")
            } else {
                format!("  <range begin=\"{start}\" end=\"{b}\"/>\n")
            });
        }
        want.push_str("</blocks>");
        let o = invalidate(&img, &["--written-since", &since.to_string()]);
        assert_eq!((code(&o), stdout(&o)), (0, want), "{since}");
    }
}

/// The open current writeset holds the current era's writes: listed on
/// live metadata (the reference would print nothing here).
#[test]
fn the_open_current_writeset_counts_on_live_metadata() {
    let s = Scratch::new("era-invalidate-current");
    // Era 5 archived with blocks 70..75; then the superblock is made to
    // name that bitset as the open writeset of era 6 as well, as a
    // running device has one.
    let img = restored(&s, "current", &era_xml(200, 6, &[(5, 200, &[70..75])], &[]));
    let mut bytes = std::fs::read(&img).unwrap();
    let tree_root = u64::from_le_bytes(bytes[200..208].try_into().unwrap()) as usize;
    let leaf = &bytes[tree_root * 4096..(tree_root + 1) * 4096];
    let max = u32::from_le_bytes(leaf[20..24].try_into().unwrap()) as usize;
    let value: [u8; 12] = leaf[32 + max * 8..32 + max * 8 + 12].try_into().unwrap();
    bytes[188..200].copy_from_slice(&value);
    dmpd::io::checksum::seal(&mut bytes[..4096], dmpd::io::BlockKind::EraSuperblock);
    std::fs::write(&img, &bytes).unwrap();
    let o = invalidate(&img, &["--written-since", "6"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "<blocks>\n  <range begin=\"70\" end=\"75\"/>\n</blocks>"
    );
    let o = run("era_dump", &[img.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("<writeset era=\"6\" nr_bits=\"200\">"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn damage_is_an_error_not_a_shorter_list() {
    let s = Scratch::new("era-invalidate-damage");
    let img = own_image(&s);
    let o = run(
        "era_generate_damage",
        &["--kind", "era-array-checksum", img.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0);
    let o = invalidate(&img, &["--written-since", "2"]);
    assert_eq!(code(&o), 64);
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("era array: array block 0 at block 6"),
        "{}",
        stderr(&o)
    );
}
