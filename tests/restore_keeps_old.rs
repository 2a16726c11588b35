//! thin_restore and thin_repair over a device that holds a valid
//! transaction build the new metadata beside it: a crash after any number
//! of writes leaves the old transaction whole or the new one, never a
//! device with neither (before, block 0 was invalidated first, and a cut
//! before the final superblock left no valid transaction at all).

mod common;

use std::path::{Path, PathBuf};

use common::{code, run, stdout, Scratch};
use dmpd::io::sink::MemorySink;
use dmpd::thin::restore::{keep, restore_to, Overrides};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A 4 MiB file `name` holding fixtures/XML as thin_restore writes it.
fn restored(s: &Scratch, name: &str, xml: &str) -> PathBuf {
    let path = s.path(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    tool(
        "thin_restore",
        &["-i", fixture(xml).to_str().unwrap(), "-o", p(&path)],
    );
    path
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn tool(name: &str, args: &[&str]) {
    let o = run(name, args);
    assert_eq!(code(&o), 0, "{name} {args:?}");
}

fn dump(path: &Path) -> Option<String> {
    let o = run("thin_dump", &["--flat", p(path)]);
    (code(&o) == 0).then(|| stdout(&o))
}

fn restore_over(
    image: &mut Vec<u8>,
    limit: Option<usize>,
    keep: &roaring::RoaringTreemap,
) -> (bool, usize) {
    let nr_blocks = image.len() as u64 / 4096;
    let mut sink = MemorySink {
        image,
        limit,
        writes: 0,
    };
    let xml = fixture("snapshots.xml");
    let r = restore_to(
        &xml,
        &Overrides::default(),
        "the image",
        nr_blocks * 4096,
        Some(keep.clone()),
        || Ok(&mut sink),
    );
    (r.is_ok(), sink.writes)
}

#[test]
fn a_crash_during_restore_over_old_metadata_leaves_old_or_new() {
    let s = Scratch::new("restore-keeps-old");
    let old = restored(&s, "old", "plain.xml");
    let old_dump = dump(&old).unwrap();
    let old_bytes = std::fs::read(&old).unwrap();
    let keep = keep::blocks_in_use(&old).expect("the old transaction's blocks");
    assert!(keep.contains(0) && keep.len() > 1);

    let mut full = old_bytes.clone();
    let (done, total) = restore_over(&mut full, None, &keep);
    assert!(done);
    let new_at = s.path("new");
    std::fs::write(&new_at, &full).unwrap();
    let new_dump = dump(&new_at).unwrap();
    assert_ne!(old_dump, new_dump);
    // Built beside the old transaction, the new metadata is the same.
    assert_eq!(
        dump(&restored(&s, "fresh", "snapshots.xml")).unwrap(),
        new_dump
    );

    let cut = s.path("cut");
    for k in 0..total {
        let mut bytes = old_bytes.clone();
        assert!(!restore_over(&mut bytes, Some(k), &keep).0);
        std::fs::write(&cut, &bytes).unwrap();
        assert_eq!(
            dump(&cut).as_deref(),
            Some(old_dump.as_str()),
            "crash after {k} of {total} writes"
        );
        assert_eq!(
            code(&run("thin_check", &[p(&cut)])),
            0,
            "crash after {k} writes"
        );
    }
}

/// The tools themselves keep the old transaction: restoring or repairing
/// over it writes no block its space map counts.
#[test]
fn thin_restore_and_repair_write_beside_the_old_transaction() {
    let s = Scratch::new("restore-beside-old");
    let old = restored(&s, "old", "plain.xml");
    let before = std::fs::read(&old).unwrap();
    let used = keep::blocks_in_use(&old).unwrap();
    let changed_used = |after: &[u8]| {
        used.iter()
            .filter(|&b| b != 0)
            .filter(|&b| {
                let r = b as usize * 4096..(b as usize + 1) * 4096;
                before[r.clone()] != after[r]
            })
            .count()
    };
    let snaps = fixture("snapshots.xml");
    tool("thin_restore", &["-i", p(&snaps), "-o", p(&old)]);
    assert_eq!(
        changed_used(&std::fs::read(&old).unwrap()),
        0,
        "thin_restore"
    );

    std::fs::write(&old, &before).unwrap();
    let src = restored(&s, "src", "snapshots.xml");
    tool("thin_repair", &["-i", p(&src), "-o", p(&old)]);
    assert_eq!(
        changed_used(&std::fs::read(&old).unwrap()),
        0,
        "thin_repair"
    );
    assert_eq!(dump(&old), dump(&src));
}
