//! The project's own fixtures: small pools written as XML, restored by
//! fixtures/regenerate.sh into gzip'd images.

mod common;

use std::path::PathBuf;

use common::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

#[test]
fn images_check_clean_and_dump_back_to_their_xml() {
    for name in ["plain", "snapshots"] {
        let img = fixture(&format!("{name}.bin.gz"));
        let o = run("thin_check", &[img.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        let d = run("thin_dump", &[img.to_str().unwrap()]);
        assert_eq!(code(&d), 0);
        let want = xml::parse(&std::fs::read_to_string(fixture(&format!("{name}.xml"))).unwrap());
        assert_eq!(xml::parse(&stdout(&d)), want, "{name}");
    }
}

#[test]
fn snapshots_share_their_sections_on_disk() {
    let img = fixture("snapshots.bin.gz");
    let o = run(
        "thin_ls",
        &[
            "--no-headers",
            "-o",
            "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stdout(&o),
        "1 3574   0 3574 \n2 3574 568 3006 \n3 3574 512 3062 \n"
    );
    let d = run("thin_dump", &[img.to_str().unwrap()]);
    // Six sections: s2 and s3 are held by every device in that order, so
    // the dump shares them as one run.
    assert_eq!(stdout(&d).matches("<def ").count(), 5);
}

#[test]
fn the_metadata_snapshot_image_checks_and_dumps_both_ways() {
    let img = fixture("snapshots_with_metadata_snap.bin.gz");
    let p = img.to_str().unwrap();
    for args in [vec![p], vec!["-m", p]] {
        let o = run("thin_check", &args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "TRANSACTION_ID=5\nMETADATA_FREE_BLOCKS=985\n");
    }
    let live = stdout(&run("thin_dump", &[p]));
    let snap = stdout(&run("thin_dump", &["-m", p]));
    // The kernel's snapshot copy records no data space map.
    assert_eq!(
        snap,
        live.replacen("nr_data_blocks=\"32768\"", "nr_data_blocks=\"0\"", 1)
    );
    let want = xml::parse(&std::fs::read_to_string(fixture("snapshots.xml")).unwrap());
    assert_eq!(xml::parse(&live), want);
}
