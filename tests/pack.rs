//! thin_metadata_pack / thin_metadata_unpack and packed inputs.

mod common;

use std::path::Path;

use common::*;

fn unpack(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("thin_metadata_unpack", &args)
}

#[test]
fn reference_packs_unpack_to_the_reference_images() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("unpack-fixtures");
    for name in reference_fixtures() {
        let out = scratch.path(&format!("{name}.bin"));
        let o = unpack(&reference_dir().join(format!("{name}.pack")), &out, &[]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(
            std::fs::read(&out).unwrap() == gunzip_fixture(&name),
            "{name} differs"
        );
    }
}

#[test]
fn pack_then_unpack_keeps_every_metadata_block() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("pack-roundtrip");
    for name in reference_fixtures() {
        let original = gunzip_fixture(&name);
        let img = scratch.fixture_image(&name);
        let packed = scratch.path(&format!("{name}.pack"));
        let o = run(
            "thin_metadata_pack",
            &["-i", img.to_str().unwrap(), "-o", packed.to_str().unwrap()],
        );
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let back = scratch.path(&format!("{name}.back"));
        assert_eq!(code(&unpack(&packed, &back, &[])), 0);
        let back = std::fs::read(&back).unwrap();
        assert_eq!(back.len(), original.len());
        for (b, (x, y)) in original.chunks(4096).zip(back.chunks(4096)).enumerate() {
            if dmpd::io::checksum::kind_of(x).is_some() {
                assert!(x == y, "{name}: metadata block {b} changed");
            } else {
                assert!(
                    y.iter().all(|&v| v == 0),
                    "{name}: block {b} should read back as zeros"
                );
            }
        }
        // Compressed: the 64 MiB tmeta packs small.
        if name == "tmeta" {
            assert!(std::fs::metadata(&packed).unwrap().len() < 1 << 20);
        }
    }
}

#[test]
fn every_read_only_tool_accepts_a_pack_directly() {
    if !common::have_reference() {
        return;
    }
    let pack = reference_dir().join("tmeta.pack");
    let p = pack.to_str().unwrap();
    let o = run("thin_check", &[p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "TRANSACTION_ID=21\nMETADATA_FREE_BLOCKS=16096\n"
    );
    let o = run("thin_dump", &[p]);
    assert!(stdout(&o) == std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap());
    assert_eq!(code(&run("thin_ls", &[p])), 0);
    assert_eq!(code(&run("thin_rmap", &["--region", "0..10", p])), 0);
    assert_eq!(
        code(&run("thin_delta", &["--thin1", "1", "--thin2", "2", p])),
        0
    );
}

#[test]
fn damaged_packs_are_clear_errors() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("unpack-damaged");
    let good = std::fs::read(reference_dir().join("tmeta_with_empty_roots.pack")).unwrap();
    let out = scratch.path("out");

    // Not a pack: refused before the output is created.
    let notpack = scratch.path("notpack");
    std::fs::write(&notpack, vec![0u8; 8192]).unwrap();
    let o = unpack(&notpack, &out, &[]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("Not a pack file"));
    assert!(!out.exists());

    // Every truncation and many single-bit flips: exit 0 or 64, never a crash.
    let damaged = scratch.path("damaged");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut cases: Vec<Vec<u8>> = (0..good.len())
        .step_by(7)
        .map(|n| good[..n].to_vec())
        .collect();
    for _ in 0..150 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes = good.clone();
        let at = (seed % bytes.len() as u64) as usize;
        bytes[at] ^= 1 << ((seed >> 60) as u8 % 8);
        cases.push(bytes);
    }
    let mut failed = 0;
    for (i, bytes) in cases.iter().enumerate() {
        std::fs::write(&damaged, bytes).unwrap();
        let o = unpack(&damaged, &out, &["-f"]);
        let c = code(&o);
        assert!(c == 0 || c == 64, "case {i}: exit {c}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "case {i}");
        if c == 64 {
            failed += 1;
            assert!(!stderr(&o).is_empty());
        }
    }
    assert!(
        failed > cases.len() / 2,
        "{failed} of {} damaged packs failed",
        cases.len()
    );
    let o = run("thin_check", &[damaged.to_str().unwrap()]);
    assert!(code(&o) == 0 || code(&o) == 64);
}

#[test]
fn the_overwrite_question() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("unpack-prompt");
    let pack = reference_dir().join("tmeta_with_empty_roots.pack");
    let out = scratch.fixture_image("tmeta_device_id_reuse");
    let before = std::fs::read(&out).unwrap();
    for (answer, overwritten) in [("n\n", false), ("", false), ("YES\n", true)] {
        std::fs::write(&out, &before).unwrap();
        let mut child = dmpd()
            .args([
                "thin_metadata_unpack",
                "-i",
                pack.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), answer.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(stderr(&o).contains("already holds metadata; overwrite it? [y/n]: "));
        assert_eq!(code(&o), if overwritten { 0 } else { 64 }, "{answer:?}");
        assert_eq!(
            std::fs::read(&out).unwrap() != before,
            overwritten,
            "{answer:?}"
        );
    }
    let o = unpack(&pack, &out, &["--force"]);
    assert_eq!((code(&o), stderr(&o)), (0, String::new()));
}

/// Power lost after every possible number of writes: the zeroed output
/// has no valid superblock, or the whole image.
#[test]
fn a_crash_while_unpacking_never_leaves_a_valid_superblock_over_missing_blocks() {
    if !common::have_reference() {
        return;
    }
    use dmpd::io::pack;
    use dmpd::io::sink::MemorySink;
    let packed = {
        let mut out = Vec::new();
        pack::pack(&gunzip_fixture("tmeta_with_empty_roots"), &mut out).unwrap();
        out
    };
    let size = pack::read_header(&packed).unwrap() as usize * 4096;
    let mut full = vec![0u8; size];
    let mut sink = MemorySink {
        image: &mut full,
        limit: None,
        writes: 0,
    };
    pack::unpack_to_sink(&packed, &mut sink).unwrap();
    let total = sink.writes;
    assert!(full == gunzip_fixture("tmeta_with_empty_roots"));
    for k in 0..total {
        let mut image = vec![0u8; size];
        let mut sink = MemorySink {
            image: &mut image,
            limit: Some(k),
            writes: 0,
        };
        assert!(pack::unpack_to_sink(&packed, &mut sink).is_err());
        assert_eq!(
            dmpd::io::checksum::kind_of(&image[..4096]),
            None,
            "crash after {k} writes"
        );
    }
}
