mod common;

use std::collections::BTreeMap;

use common::*;

/// (kind, begin, length, left data, right data) from the reference dump,
/// classified block by block and merged where contiguous.
fn from_dump(a: u64, b: u64) -> Vec<(&'static str, u64, u64, u64, u64)> {
    let pool = xml::parse(&std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap());
    let map = |id: u64| -> BTreeMap<u64, u64> {
        pool.devices[&id]
            .mappings
            .iter()
            .map(|&(v, d, _)| (v, d))
            .collect()
    };
    let (left, right) = (map(a), map(b));
    let mut keys: Vec<u64> = left.keys().chain(right.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out: Vec<(&str, u64, u64, u64, u64)> = Vec::new();
    for v in keys {
        let (kind, ld, rd) = match (left.get(&v), right.get(&v)) {
            (Some(&l), Some(&r)) if l == r => ("same", l, r),
            (Some(&l), Some(&r)) => ("different", l, r),
            (Some(&l), None) => ("left_only", l, 0),
            (None, Some(&r)) => ("right_only", 0, r),
            (None, None) => unreachable!(),
        };
        match out.last_mut() {
            Some(e) if e.0 == kind && e.1 + e.2 == v => e.2 += 1,
            _ => out.push((kind, v, 1, ld, rd)),
        }
    }
    out
}

fn delta(args: &[&str]) -> String {
    let gz = reference_dir().join("tmeta.bin.gz");
    let mut all = args.to_vec();
    all.push(gz.to_str().unwrap());
    let o = run("thin_delta", &all);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
}

const HEADER: &str =
    "<superblock uuid=\"\" time=\"15\" transaction=\"21\" data_block_size=\"128\" nr_data_blocks=\"65536\">";

#[test]
fn differences_match_the_dump() {
    if !common::have_reference() {
        return;
    }
    for (a, b) in [(1, 2), (1, 16), (15, 16), (3, 3)] {
        let want = from_dump(a, b);
        let mut text = format!("{HEADER}\n  <diff left=\"{a}\" right=\"{b}\">\n");
        for (kind, begin, len, _, _) in &want {
            text.push_str(&format!(
                "    <{kind} begin=\"{begin}\" length=\"{len}\"/>\n"
            ));
        }
        text.push_str("  </diff>\n</superblock>");
        let got = delta(&["--thin1", &a.to_string(), "--thin2", &b.to_string()]);
        assert!(
            got == text,
            "devices {a} and {b} differ from the dump's figures"
        );
    }
}

#[test]
fn verbose_groups_kinds_with_data_blocks() {
    if !common::have_reference() {
        return;
    }
    let want = from_dump(1, 16);
    let mut text = format!("{HEADER}\n  <diff left=\"1\" right=\"16\">\n");
    let mut open: Option<&str> = None;
    for (kind, begin, len, ld, rd) in &want {
        if open != Some(kind) {
            if let Some(k) = open {
                text.push_str(&format!("    </{k}>\n"));
            }
            text.push_str(&format!("    <{kind}>\n"));
            open = Some(kind);
        }
        let line = match *kind {
            "different" => format!(
                "      <range begin=\"{begin}\" left_data_begin=\"{ld}\" right_data_begin=\"{rd}\" length=\"{len}\"/>\n"
            ),
            "right_only" => format!("      <range begin=\"{begin}\" data_begin=\"{rd}\" length=\"{len}\"/>\n"),
            _ => format!("      <range begin=\"{begin}\" data_begin=\"{ld}\" length=\"{len}\"/>\n"),
        };
        text.push_str(&line);
    }
    text.push_str(&format!(
        "    </{}>\n  </diff>\n</superblock>",
        open.unwrap()
    ));
    let got = delta(&["--verbose", "--snap1", "1", "--snap2", "16"]);
    assert!(
        got == text,
        "verbose output differs:\n{}",
        &got[..got.len().min(2000)]
    );
}

#[test]
fn by_root_and_errors() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    let p = gz.to_str().unwrap();
    let o = run("thin_delta", &["--thin2", "2", p]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("--thin1 or --root1 not specified"));
    let o = run(
        "thin_delta",
        &["--thin1", "1", "--root1", "5", "--thin2", "2", p],
    );
    assert_eq!(code(&o), 2);
    let o = run("thin_delta", &["--thin1", "7", "--thin2", "2", p]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("snap1: no thin device 7"),
        "{}",
        stderr(&o)
    );
    let o = run("thin_delta", &["--root1", "0", "--thin2", "2", p]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("tree at block 0"), "{}", stderr(&o));
}
