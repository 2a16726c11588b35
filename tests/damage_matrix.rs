//! Every kind of damage, on several healthy images: thin_check names it
//! with its block and exits as it should, thin_repair's output checks
//! clean, and --auto-repair fixes leaks and refuses the rest, untouched.
//! Run with `--nocapture` to see the matrix as a table.

mod common;

use std::path::{Path, PathBuf};

use common::image::{Damage, Image};
use common::*;

fn images(scratch: &Scratch) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("tmeta", gunzip_fixture("tmeta"))];
    let snapshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshots.bin.gz");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(snapshots).unwrap()),
        &mut bytes,
    )
    .unwrap();
    out.push(("snapshots", bytes));
    // A generated pool: an origin and four snapshots sharing sections.
    let xml_path = scratch.path("gen.xml");
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/gen_thin_xml.py");
    let o = std::process::Command::new("python3")
        .arg(gen)
        .args(["--mappings", "200000", "--snaps", "4", "--seed", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(&xml_path, o.stdout).unwrap();
    let meta = scratch.path("gen.bin");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let r = run(
        "thin_restore",
        &[
            "-i",
            xml_path.to_str().unwrap(),
            "-o",
            meta.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&r), 0, "{}", stderr(&r));
    out.push(("generated", std::fs::read(&meta).unwrap()));
    out
}

/// What thin_check must say about each damage, besides the block.
fn phrase(d: Damage) -> &'static str {
    match d {
        Damage::NodeChecksum => "node error: checksum error",
        Damage::LeakedMetadataBlock => "metadata space map: block",
        Damage::UnderCountedSharedNode => "under-counted",
        Damage::OverCountedNode => "over-counted",
        Damage::LeakedDataBlock => "data space map: block",
        Damage::UnderCountedDataBlock => "data space map: block",
        Damage::SwappedKeys => "keys out of order",
        Damage::NrEntriesOverMax => "nr_entries > max_entries",
        Damage::DataBlockBeyondEnd => "beyond the data device",
        Damage::ChildBeyondDevice => "beyond the end of the metadata",
        Damage::SuperblockChecksum => "bad checksum in superblock",
        Damage::WrongMappedBlocks => "but its details record",
        Damage::DeviceMissingFromTopLevel => "only in the details tree",
        Damage::BitmapChecksum => "checksum error",
        Damage::WrongNodeBlocknr => "blocknr mismatch",
    }
}

fn names_block(d: Damage) -> bool {
    !matches!(
        d,
        Damage::ChildBeyondDevice | Damage::WrongMappedBlocks | Damage::DeviceMissingFromTopLevel
    )
}

fn check(path: &Path, args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.push(path.to_str().unwrap());
    let o = run("thin_check", &all);
    (code(&o), stderr(&o))
}

#[test]
fn damage_matrix() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("matrix");
    let images = images(&scratch);
    let mut table = vec![format!(
        "| damage | {} |",
        images
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" | ")
    )];
    table.push(format!("|---|{}", "---|".repeat(images.len())));
    let mut cells = 0;
    for d in Damage::ALL {
        let mut row = format!("| {} |", d.name());
        for (name, pristine) in &images {
            let mut image = Image::new(pristine.clone());
            let block = d
                .apply(&mut image)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let path = scratch.path(&format!("{name}-{}", d.name()));
            image.write_to(&path);
            let here = format!("{} on {name}", d.name());

            // thin_check: exit status, the damage named, its block.
            let (exit, err) = check(&path, &[]);
            assert_eq!(exit, 64, "{here}: {err}");
            assert!(err.contains(phrase(d)), "{here}: {err}");
            if names_block(d) {
                assert!(
                    err.contains(&format!("block {block}")),
                    "{here}: block {block} not named: {err}"
                );
            }
            let (ignored, err) = check(&path, &["--ignore-non-fatal-errors"]);
            assert_eq!(
                ignored,
                if d.is_leak() { 0 } else { 64 },
                "{here} ignored: {err}"
            );

            // thin_repair: the output checks clean.
            let out = scratch.path("repaired");
            std::fs::File::create(&out)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
            let r = run(
                "thin_repair",
                &["-i", path.to_str().unwrap(), "-o", out.to_str().unwrap()],
            );
            assert_eq!(code(&r), 0, "{here} repair: {}", stderr(&r));
            let (clean, err) = check(&out, &[]);
            assert_eq!(clean, 0, "{here} repaired: {err}");

            // --auto-repair: leaks fixed in place, anything else refused.
            let (auto, err) = check(&path, &["--auto-repair"]);
            if d.is_leak() {
                assert_eq!(auto, 0, "{here} auto-repair: {err}");
                assert_eq!(
                    check(&path, &[]).0,
                    0,
                    "{here}: not clean after auto-repair"
                );
            } else {
                assert_eq!(auto, 64, "{here} auto-repair");
                assert!(
                    std::fs::read(&path).unwrap() == image.bytes,
                    "{here}: auto-repair wrote"
                );
            }
            row.push_str(&format!(
                " check {exit}/{ignored}, repair ok, auto {} |",
                if d.is_leak() { "fixed" } else { "refused" }
            ));
            cells += 1;
            let _ = std::fs::remove_file(&path);
        }
        table.push(row);
    }
    assert_eq!(cells, 45);
    println!("{}", table.join("\n"));
}
