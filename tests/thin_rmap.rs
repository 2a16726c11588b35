mod common;

use common::*;

/// The expected lines, computed from the reference dump of tmeta.
fn from_dump(regions: &[(u64, u64)]) -> Vec<String> {
    let pool = xml::parse(&std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap());
    let mut runs: Vec<(u64, u64, u64, u64)> = Vec::new(); // data, len, device, virt
    for (id, dev) in &pool.devices {
        let mut cur: Option<(u64, u64, u64)> = None; // virt, data, len
        let mut mine = Vec::new();
        for &(v, d, _) in &dev.mappings {
            if !regions.iter().any(|&(b, e)| d >= b && d < e) {
                continue;
            }
            match cur.as_mut() {
                Some((cv, cd, len)) if *cv + *len == v && *cd + *len == d => *len += 1,
                _ => {
                    mine.extend(cur.take());
                    cur = Some((v, d, 1));
                }
            }
        }
        mine.extend(cur);
        runs.extend(mine.into_iter().map(|(v, d, n)| (d, n, *id, v)));
    }
    runs.sort_by_key(|&(d, n, id, v)| (d, d + n, id, v));
    runs.iter()
        .map(|&(d, n, id, v)| format!("data {d}..{} -> thin({id}) {v}..{}", d + n, v + n))
        .collect()
}

#[test]
fn reverse_maps_match_the_dump() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    for regions in [
        vec![(0u64, 10u64)],
        vec![(100, 5000), (20000, 20100)],
        vec![(65000, 65536)],
        vec![(0, 65536)],
    ] {
        let mut args = Vec::new();
        for (b, e) in &regions {
            args.push("--region".to_string());
            args.push(format!("{b}..{e}"));
        }
        args.push(gz.to_str().unwrap().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run("thin_rmap", &args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let want = from_dump(&regions);
        let text = stdout(&o);
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), want.len(), "{regions:?}");
        assert!(got == want, "{regions:?}");
    }
}

#[test]
fn bad_regions_are_parse_errors() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    for bad in [
        "23,7890", "23..six", "89..88", "89..89", "89..", "", "89...99", "0..-1",
    ] {
        let o = run("thin_rmap", &["--region", bad, gz.to_str().unwrap()]);
        assert_eq!(code(&o), 2, "{bad}");
    }
    let o = run("thin_rmap", &[gz.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    let o = run(
        "thin_rmap",
        &["--region", "70000..70001", gz.to_str().unwrap()],
    );
    assert_eq!((code(&o), stdout(&o)), (0, String::new()));
}

#[test]
fn damaged_trees_are_named() {
    if !common::have_reference() {
        return;
    }
    let img = reference_dir().join("tmeta_device_id_reuse_with_corrupted_thins.bin.gz");
    let o = run("thin_rmap", &["--region", "0..100", img.to_str().unwrap()]);
    // The live trees of this image are sound; only its snapshot is damaged.
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let img = reference_dir().join("corrupted_tmeta_with_metadata_snap.bin.gz");
    let o = run("thin_rmap", &["--region", "0..100", img.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("mapping top-level: node error at block 20: checksum error"));
}
