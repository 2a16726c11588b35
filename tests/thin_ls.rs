mod common;

use std::collections::HashMap;

use common::*;

const REFERENCE_FIELDS: &str =
    "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS,TRANSACTION,CREATE_TIME,SNAP_TIME";

#[test]
fn every_fixture_lists_as_the_reference_does() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("ls-fixtures");
    for name in reference_fixtures()
        .into_iter()
        .filter(|n| !n.starts_with("emeta"))
    {
        let text = std::fs::read_to_string(expected(&format!("{name}.ls.txt"))).unwrap();
        let exit: i32 = text
            .lines()
            .find_map(|l| l.strip_prefix("exit="))
            .unwrap()
            .parse()
            .unwrap();
        let img = scratch.fixture_image(&name);
        let o = run(
            "thin_ls",
            &[
                "--no-headers",
                "-o",
                REFERENCE_FIELDS,
                img.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&o), exit, "{name}: {}", stderr(&o));
        if exit == 0 {
            let want: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("exit=") && *l != "Scanning data mappings")
                .collect();
            assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), want, "{name}");
            assert_eq!(stderr(&o), "Scanning data mappings\n");
        } else {
            assert!(
                stderr(&o).contains("mapping top-level"),
                "{name}: {}",
                stderr(&o)
            );
        }
    }
}

/// Every field of device 1 of tmeta, against figures computed here from
/// the reference dump: mapped = its mappings, exclusive = those whose data
/// block no other mapping in the pool uses.
#[test]
fn every_field_matches_an_independent_count_from_the_dump() {
    if !common::have_reference() {
        return;
    }
    let pool = xml::parse(&std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap());
    let mut uses: HashMap<u64, u32> = HashMap::new();
    for d in pool.devices.values() {
        for (_, data, _) in &d.mappings {
            *uses.entry(*data).or_default() += 1;
        }
    }
    let dev = &pool.devices[&1];
    let mapped = dev.mappings.len() as u64;
    let exclusive = dev.mappings.iter().filter(|(_, d, _)| uses[d] == 1).count() as u64;
    let shared = mapped - exclusive;
    let highest = dev.mappings.iter().map(|m| m.0).max().unwrap();
    let bs = 128u64;
    assert_eq!((mapped, exclusive), (10713, 64));

    let fields = [
        ("DEV", "1".to_string()),
        ("TRANSACTION", "0".into()),
        ("CREATE_TIME", "0".into()),
        ("SNAP_TIME", "15".into()),
        ("MAPPED_BLOCKS", mapped.to_string()),
        ("EXCLUSIVE_BLOCKS", exclusive.to_string()),
        ("SHARED_BLOCKS", shared.to_string()),
        ("HIGHEST_BLOCK", highest.to_string()),
        ("MAPPED_SECTORS", (mapped * bs).to_string()),
        ("EXCLUSIVE_SECTORS", (exclusive * bs).to_string()),
        ("SHARED_SECTORS", (shared * bs).to_string()),
        ("HIGHEST_SECTOR", ((highest + 1) * bs - 1).to_string()),
        ("MAPPED_BYTES", (mapped * bs * 512).to_string()),
        ("EXCLUSIVE_BYTES", (exclusive * bs * 512).to_string()),
        ("SHARED_BYTES", (shared * bs * 512).to_string()),
        ("HIGHEST_BYTE", ((highest + 1) * bs * 512 - 1).to_string()),
        // 702087168 bytes, 4194304 bytes, 697892864 bytes, 1073741823 bytes
        ("MAPPED", "670MiB".into()),
        ("EXCLUSIVE", "4096KiB".into()),
        ("SHARED", "666MiB".into()),
        ("HIGHEST_MAPPED", "1024MiB".into()),
    ];
    let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
    let gz = reference_dir().join("tmeta.bin.gz");
    let o = run("thin_ls", &["-o", &names.join(","), gz.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, names);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let want: Vec<&str> = fields.iter().map(|f| f.1.as_str()).collect();
    assert_eq!(row, want);
    assert_eq!(out.lines().count(), 1 + pool.devices.len());
}

#[test]
fn default_columns_align_right_with_a_trailing_space() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta_with_shared_internal_root.bin.gz");
    let o = run("thin_ls", &[gz.to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "DEV MAPPED CREATE_TIME SNAP_TIME ");
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{out}");
}

#[test]
fn details_only_fields_do_not_scan_mappings() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    let o = run(
        "thin_ls",
        &[
            "-o",
            "DEV,TRANSACTION",
            "--no-headers",
            gz.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0);
    assert_eq!(stderr(&o), "");
    assert_eq!(stdout(&o).lines().next().unwrap(), " 1  0 ");
}

#[test]
fn metadata_snapshot_and_bad_input() {
    if !common::have_reference() {
        return;
    }
    let snap = reference_dir().join("tmeta_with_metadata_snap.bin.gz");
    let o = run(
        "thin_ls",
        &["-m", "--no-headers", "-o", "DEV", snap.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stdout(&o).is_empty());
    let plain = reference_dir().join("tmeta.bin.gz");
    let o = run("thin_ls", &["-m", plain.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("no current metadata snap"));
    let o = run("thin_ls", &["-o", "DEV,COLOUR", plain.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown field 'COLOUR'"));
    let o = run("thin_ls", &["no-such-file"]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("Couldn't find input file"));
}
