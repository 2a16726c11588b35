mod common;

use std::path::{Path, PathBuf};

use common::*;
use dmpd::io::sink::MemorySink;
use dmpd::io::BlockSource;
use dmpd::report::{Mode, Reporter};
use dmpd::thin::check::{check, CheckOptions};
use dmpd::thin::restore::{restore, Overrides};

const DEBIAN_CHECK: &str = "/usr/sbin/thin_check";
const DEBIAN_RESTORE: &str = "/usr/sbin/thin_restore";
const DEBIAN_DUMP: &str = "/usr/sbin/thin_dump";

fn debian_available() -> bool {
    let ok = Path::new(DEBIAN_CHECK).exists() && Path::new(DEBIAN_RESTORE).exists();
    if !ok {
        eprintln!(
            "note: Debian's thin-provisioning-tools are absent; interoperability not checked"
        );
    }
    ok
}

fn zeroed(scratch: &Scratch, name: &str, bytes: u64) -> PathBuf {
    let p = scratch.path(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(bytes).unwrap();
    p
}

fn restore_cmd(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("thin_restore", &args)
}

/// The expected dumps that describe a restorable pool (a metadata
/// snapshot's copy records no data blocks, so its mappings are out of
/// bounds: those must be refused).
fn dumps() -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for name in reference_fixtures()
        .into_iter()
        .filter(|n| !n.starts_with("emeta"))
    {
        for stem in ["dump", "dump-m"] {
            let file = format!("{name}.{stem}.xml");
            let Ok(text) = std::fs::read_to_string(expected(&file)) else {
                continue;
            };
            let restorable = !(text.contains("nr_data_blocks=\"0\"") && text.contains("mapping"));
            out.push((file, restorable));
        }
    }
    out
}

#[test]
fn every_reference_dump_restores_checks_and_dumps_back() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("restore-roundtrip");
    let debian = debian_available();
    for (file, restorable) in dumps() {
        let xml_path = expected(&file);
        let out = zeroed(&scratch, "meta", 64 << 20);
        let o = restore_cmd(&xml_path, &out, &[]);
        if !restorable {
            assert_eq!(code(&o), 64, "{file}");
            assert!(
                stderr(&o).contains("block out of bounds"),
                "{file}: {}",
                stderr(&o)
            );
            assert!(
                std::fs::read(&out).unwrap().iter().all(|&b| b == 0),
                "{file}: output touched"
            );
            continue;
        }
        assert_eq!(
            (code(&o), stdout(&o), stderr(&o)),
            (0, String::new(), String::new()),
            "{file}"
        );
        let c = run("thin_check", &[out.to_str().unwrap()]);
        assert_eq!(code(&c), 0, "{file}: {}", stderr(&c));
        if debian {
            let d = std::process::Command::new(DEBIAN_CHECK)
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                d.status.success(),
                "{file}: Debian thin_check: {}",
                String::from_utf8_lossy(&d.stderr)
            );
        }
        let d = run("thin_dump", &[out.to_str().unwrap()]);
        let want = xml::parse(&std::fs::read_to_string(&xml_path).unwrap());
        assert_eq!(xml::parse(&stdout(&d)), want, "{file}");
    }
}

#[test]
fn shared_sections_stay_shared_on_disk() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("restore-sharing");
    let shared = zeroed(&scratch, "shared", 64 << 20);
    assert_eq!(
        code(&restore_cmd(&expected("tmeta.dump.xml"), &shared, &[])),
        0
    );
    let flat_xml = scratch.path("flat.xml");
    let d = run(
        "thin_dump",
        &[
            "--flat",
            "-o",
            flat_xml.to_str().unwrap(),
            shared.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&d), 0);
    let flat = zeroed(&scratch, "flat", 64 << 20);
    assert_eq!(code(&restore_cmd(&flat_xml, &flat, &[])), 0);
    let free = |p: &Path| -> u64 {
        let o = run("thin_check", &[p.to_str().unwrap()]);
        stdout(&o)
            .lines()
            .find_map(|l| l.strip_prefix("METADATA_FREE_BLOCKS="))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (used_shared, used_flat) = (16384 - free(&shared), 16384 - free(&flat));
    // The kernel-written original uses 288 blocks.
    assert!(
        used_shared <= 288,
        "def/ref restore used {used_shared} blocks"
    );
    assert!(
        used_flat > used_shared + 200,
        "flat {used_flat} vs shared {used_shared}"
    );
}

#[test]
fn flat_dumps_interoperate_with_debian_0_9() {
    if !common::have_reference() {
        return;
    }
    if !debian_available() {
        return;
    }
    let scratch = Scratch::new("restore-debian");
    let ours = zeroed(&scratch, "ours", 64 << 20);
    assert_eq!(
        code(&restore_cmd(&expected("tmeta.dump.xml"), &ours, &[])),
        0
    );
    let flat_xml = scratch.path("flat.xml");
    assert_eq!(
        code(&run(
            "thin_dump",
            &[
                "--flat",
                "-o",
                flat_xml.to_str().unwrap(),
                ours.to_str().unwrap()
            ]
        )),
        0
    );
    let theirs = zeroed(&scratch, "theirs", 64 << 20);
    let r = std::process::Command::new(DEBIAN_RESTORE)
        .args([
            "-i",
            flat_xml.to_str().unwrap(),
            "-o",
            theirs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let d = std::process::Command::new(DEBIAN_DUMP)
        .arg(&theirs)
        .output()
        .unwrap();
    let mut back = xml::parse(&String::from_utf8_lossy(&d.stdout));
    back.superblock.remove("flags");
    let want = xml::parse(&std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap());
    assert_eq!(back, want);
    // Debian's own restore puts a ref-count-tree key above its leftmost
    // child's first key (so the kernel could not look that count up):
    // dmpd's check names it precisely.
    let c = run("thin_check", &[theirs.to_str().unwrap()]);
    assert_eq!(code(&c), 64);
    assert!(stderr(&c).contains("data space map ref-count tree: node error: keys 3..188 outside the range the parent allows"), "{}", stderr(&c));
}

const SB: &str = "<superblock uuid=\"\" time=\"1\" transaction=\"2\" data_block_size=\"128\" nr_data_blocks=\"100\">";
const DEV: &str = "<device dev_id=\"1\" mapped_blocks=\"2\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">";

#[test]
fn bad_xml_is_named_with_line_and_column_and_the_output_is_untouched() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("restore-bad");
    // An output holding valid metadata: it must survive every bad input.
    let out = zeroed(&scratch, "meta", 16 << 20);
    assert_eq!(
        code(&restore_cmd(
            &expected("tmeta_with_empty_roots.dump.xml"),
            &out,
            &[]
        )),
        0
    );
    let before = std::fs::read(&out).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (format!("<?xml version=\"1.0\"?>\n{SB}</superblock>"), "line 1, column 1: unsupported element: XML declaration"),
        (format!("{SB}\n  <device dev_id=\"1\"/>\n</superblock>"), "line 2, column 3: <device/> must have an end tag"),
        (format!("{SB}\n  <blob/>\n</superblock>"), "line 2, column 3: unknown empty element '<blob>'"),
        (format!("{SB}\n{DEV}\n<single_mapping origin_block=\"0\" data_block=\"1\" time=\"0\" colour=\"x\"/>"), "unknown attribute 'colour' in <single_mapping>"),
        (format!("{SB}\n{DEV}\n<single_mapping origin_block=\"0\" data_block=\"1\"/>"), "line 3, column 1: missing attribute 'time' in <single_mapping>"),
        (format!("{SB}\n{DEV}\n<single_mapping origin_block=\"5\" data_block=\"1\" time=\"0\"/>\n<single_mapping origin_block=\"4\" data_block=\"2\" time=\"0\"/>\n</device></superblock>"), "line 4, column 1: keys out of order in device 1: virtual block 4 after 5"),
        (format!("{SB}\n{DEV}\n<range_mapping origin_begin=\"0\" data_begin=\"99\" length=\"2\" time=\"0\"/>\n</device></superblock>"), "block out of bounds in device 1: data block 100 is beyond nr_data_blocks 100"),
        (format!("{SB}\n{DEV}\n<single_mapping origin_block=\"0\" data_block=\"1\" time=\"0\"/>\n<single_mapping origin_block=\"1\" data_block=\"1\" time=\"0\"/>\n</device></superblock>"), "device 1 maps a data block in 1..1 twice"),
        (format!("{SB}\n{DEV}\n<single_mapping origin_block=\"0\" data_block=\"1\" time=\"0\"/>\n</device></superblock>"), "line 4, column 1: device 1: mapped_blocks is 2 but the device maps 1 blocks"),
        (format!("{SB}\n{DEV}\n<range_mapping origin_begin=\"0\" data_begin=\"1\" length=\"2\" time=\"0\"/>\n</device>\n{DEV}\n</device></superblock>"), "line 5, column 1: device 1 is defined twice"),
        (format!("{SB}\n{DEV}\n<ref name=\"7\"/>\n</device></superblock>"), "line 3, column 1: <ref name=\"7\"> names no <def> defined before it"),
        (format!("{SB}\n{DEV}\n"), "incomplete source metadata"),
        (String::new(), "is empty: an XML metadata dump was expected"),
        ("<device dev_id=\"1\" mapped_blocks=\"0\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\"></device>".into(), "line 1, column 1: missing superblock"),
        (format!("{SB}</superblock>\n{SB}</superblock>"), "content after </superblock>"),
        (SB.replace("128", "100") + "</superblock>", "invalid data block size 100"),
        (format!("{SB}\n  <def name=\"a\"><def name=\"b\"></def></def></superblock>"), "line 2, column 17: a <def> may not be nested"),
        (format!("{SB}\n<single_mapping origin_block=\"0\" data_block=\"1\" time=\"0\"/></superblock>"), "a mapping must be inside a <def> or <device>"),
        (format!("{SB}\n{DEV}\n<single_mapping origin_block=\"0\" data_block=\"1\" time=\"x\"/>"), "attribute 'time' of <single_mapping> is not a decimal number"),
        (format!("{SB}\n</device></superblock>"), "parse error"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let xml_path = scratch.path(&format!("bad{i}.xml"));
        std::fs::write(&xml_path, text).unwrap();
        let o = restore_cmd(&xml_path, &out, &[]);
        assert_eq!(code(&o), 64, "case {i}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "case {i}: {err}");
        assert!(err.contains(want), "case {i}: expected {want:?} in {err}");
        assert!(
            std::fs::read(&out).unwrap() == before,
            "case {i}: output changed"
        );
    }
}

#[test]
fn output_rules() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("restore-output");
    let xml_path = expected("tmeta.dump.xml");
    let o = restore_cmd(&xml_path, &scratch.path("missing"), &[]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("Couldn't find output file"));
    let tiny = zeroed(&scratch, "tiny", 4096);
    let o = restore_cmd(&xml_path, &tiny, &[]);
    assert!(
        stderr(&o).contains("Output file too small"),
        "{}",
        stderr(&o)
    );
    // tmeta needs about 280 blocks: 64 blocks are too few, and nothing is written.
    let small = zeroed(&scratch, "small", 64 * 4096);
    let o = restore_cmd(&xml_path, &small, &[]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("out of metadata space"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read(&small).unwrap().iter().all(|&b| b == 0));
    let o = run("thin_restore", &["-i", xml_path.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    let o = restore_cmd(&scratch.path("no-such.xml"), &small, &[]);
    assert!(stderr(&o).contains("Couldn't find input file"));

    let ro = zeroed(&scratch, "ro", 4 << 20);
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(&ro, perm.clone()).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&scratch.dir, perm).unwrap();
    let small_xml = expected("tmeta_with_empty_roots.dump.xml");
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_dmpd"))
        .args([
            "thin_restore",
            "-i",
            small_xml.to_str().unwrap(),
            "-o",
            ro.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

#[test]
fn overrides_and_an_lvm2_style_document() {
    let scratch = Scratch::new("restore-lvm2");
    let xml_path = scratch.path("lvm.xml");
    std::fs::write(
        &xml_path,
        "<superblock uuid=\"\" time=\"0\" transaction=\"1\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"1000\">\n \
         <device dev_id=\"1\" mapped_blocks=\"1000\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n  \
         <range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"1000\" time=\"0\"/>\n </device>\n</superblock>\n",
    )
    .unwrap();
    let out = zeroed(&scratch, "meta", 4 << 20);
    let o = restore_cmd(
        &xml_path,
        &out,
        &[
            "-q",
            "--transaction-id",
            "5",
            "--nr-data-blocks",
            "2000",
            "--data-block-size",
            "256",
        ],
    );
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (0, String::new(), String::new())
    );
    let d = run("thin_dump", &[out.to_str().unwrap()]);
    let text = stdout(&d);
    assert!(text.starts_with(
        "<superblock uuid=\"\" time=\"0\" transaction=\"5\" version=\"2\" data_block_size=\"256\" nr_data_blocks=\"2000\">\n"
    ), "{text}");
    assert!(text.contains(
        "<range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"1000\" time=\"0\"/>"
    ));
    assert_eq!(code(&run("thin_check", &[out.to_str().unwrap()])), 0);
}

/// Power lost after every possible number of writes: the output holds the
/// old metadata untouched (nothing written yet), no valid superblock, or
/// the complete new metadata.
#[test]
fn a_crash_at_any_write_never_leaves_a_valid_superblock_over_partial_trees() {
    if !common::have_reference() {
        return;
    }
    let xml_path = expected("tmeta_with_shared_internal_root.dump.xml");
    let size = 1024 * 4096;
    // Start from valid old metadata, so a crash that kept the old
    // superblock would be caught.
    let mut old = vec![0u8; size];
    {
        let mut sink = MemorySink {
            image: &mut old,
            limit: None,
            writes: 0,
        };
        restore(
            &expected("tmeta_with_empty_roots.dump.xml"),
            &Overrides::default(),
            &mut sink,
            1024,
        )
        .unwrap();
    }
    let mut full = old.clone();
    let mut sink = MemorySink {
        image: &mut full,
        limit: None,
        writes: 0,
    };
    restore(&xml_path, &Overrides::default(), &mut sink, 1024).unwrap();
    let total = sink.writes;
    assert!(total > 5, "{total} writes");
    let quiet = Reporter::with_mode(Mode::Quiet);
    for k in 0..=total {
        let mut image = old.clone();
        let mut sink = MemorySink {
            image: &mut image,
            limit: Some(k),
            writes: 0,
        };
        let finished = restore(&xml_path, &Overrides::default(), &mut sink, 1024).is_ok();
        assert_eq!(finished, k == total);
        let src = BlockSource::from_bytes(&image, Path::new("crash")).unwrap();
        let r = check(&src, &CheckOptions::default(), &quiet);
        if finished {
            assert!(r.passed(false), "complete restore: {:?}", r.findings);
        } else if k == 0 {
            // Power lost before the first write: the old metadata, intact.
            assert!(image == old);
        } else {
            let why = r.aborted.clone().unwrap_or_default();
            assert!(
                why.contains("bad checksum in superblock"),
                "crash after {k} writes: {why} {:?}",
                r.findings
            );
        }
    }
}

/// Power lost with the writes since the last flush dropped: the same
/// guarantee.
#[test]
fn a_crash_that_drops_unflushed_writes_is_as_safe() {
    if !common::have_reference() {
        return;
    }
    use dmpd::io::sink::VolatileSink;
    let xml_path = expected("tmeta_with_shared_internal_root.dump.xml");
    let mut old = vec![0u8; 1024 * 4096];
    restore(
        &expected("tmeta_with_empty_roots.dump.xml"),
        &Overrides::default(),
        &mut MemorySink {
            image: &mut old,
            limit: None,
            writes: 0,
        },
        1024,
    )
    .unwrap();
    let mut probe = old.clone();
    let mut sink = VolatileSink::new(&mut probe, None);
    restore(&xml_path, &Overrides::default(), &mut sink, 1024).unwrap();
    let total = sink.writes;
    let quiet = Reporter::with_mode(Mode::Quiet);
    for k in 0..total {
        let mut image = old.clone();
        let mut sink = VolatileSink::new(&mut image, Some(k));
        assert!(restore(&xml_path, &Overrides::default(), &mut sink, 1024).is_err());
        let src = BlockSource::from_bytes(&image, Path::new("crash")).unwrap();
        let r = check(&src, &CheckOptions::default(), &quiet);
        let why = r.aborted.clone().unwrap_or_default();
        // Block 0 is zeroed and flushed first: before that lands, the old
        // metadata is intact; after, no superblock is valid until the end.
        assert!(
            image == old || why.contains("bad checksum in superblock"),
            "crash after {k} writes: {why} {:?}",
            r.findings
        );
    }
}

/// The building pass replays what the validating pass recorded: for every
/// reference dump and fixture, exactly the items a fresh parse reads.
#[test]
fn the_item_log_replays_exactly_what_was_parsed() {
    if !common::have_reference() {
        return;
    }
    use dmpd::thin::restore::validate;
    use dmpd::thin::restore::xml::{ItemSource, XmlDoc, XmlItems};
    let mut files: Vec<PathBuf> = dumps()
        .into_iter()
        .filter(|(_, restorable)| *restorable)
        .map(|(f, _)| expected(&f))
        .collect();
    files.push(PathBuf::from("fixtures/snapshots.xml"));
    files.push(PathBuf::from("fixtures/plain.xml"));
    assert!(files.len() > 5);
    for path in files {
        let doc = XmlDoc::open(&path).unwrap();
        let mut parsed = Vec::new();
        let mut items = XmlItems::new(doc.bytes());
        while let Some(i) = items.next_item().unwrap() {
            parsed.push(i);
        }
        let plan = validate(&path, &Overrides::default()).unwrap();
        let mut replay = plan.replay().expect("a small document fits the log");
        let mut replayed = Vec::new();
        while let Some(i) = ItemSource::next_item(&mut replay).unwrap() {
            replayed.push(i);
        }
        assert!(!parsed.is_empty());
        assert_eq!(replayed, parsed, "{}", path.display());
    }
}
