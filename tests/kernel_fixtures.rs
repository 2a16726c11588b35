//! The kernel-written images committed in fixtures/kernel (made by the
//! kernel tier, tests/kernel.rs, with DMPD_KERNEL_SAVE): dmpd's checkers
//! pass, and its listings agree with the status the kernel printed at the
//! end of the workload. These run everywhere, VM or not.

mod common;
#[path = "kernel/cpio.rs"]
mod cpio;
#[path = "kernel/harness.rs"]
mod harness;
#[path = "kernel/thin.rs"]
mod thin;

use std::io::Read;
use std::path::Path;

use common::Scratch;
use harness::Outcome;

fn images() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kernel");
    let mut found: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".bin.gz")?.to_string();
            let status = std::fs::read_to_string(dir.join(format!("{stem}.status"))).ok()?;
            Some((stem, status))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn thin_images_agree_with_the_kernels_status() {
    let s = Scratch::new("kernel-fixtures");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kernel");
    let mut checked = 0;
    for (name, status) in images().into_iter().filter(|(n, _)| n.starts_with("tmeta")) {
        let out = Outcome::from_log(&name, &status);
        let mut bytes = Vec::new();
        let gz = std::fs::read(dir.join(format!("{name}.bin.gz"))).unwrap();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut bytes)
            .unwrap();
        let img = s.path(&format!("{name}.bin"));
        std::fs::write(&img, bytes).unwrap();
        // Pool and thin devices from the tables: `NAME: 0 LEN thin POOL ID`.
        let tables = out.values("table");
        let pool = tables
            .iter()
            .find(|t| t.split_whitespace().nth(3) == Some("thin-pool"))
            .and_then(|t| t.split(':').next())
            .unwrap_or_else(|| panic!("{name}: no thin-pool table"));
        let devs: Vec<(&str, u64)> = tables
            .iter()
            .filter(|t| t.split_whitespace().nth(3) == Some("thin"))
            .map(|t| {
                let dev = t.split(':').next().unwrap();
                (dev, t.split_whitespace().last().unwrap().parse().unwrap())
            })
            .collect();
        assert!(!devs.is_empty(), "{name}: no thin devices");
        thin::agree(&out, "status", &img, pool, &devs);
        checked += 1;
    }
    assert!(checked >= 2, "fixtures/kernel holds {checked} thin images");
}

/// thin_repair of the held-snapshot image with one device's mapping root
/// damaged (node-checksum picks device 0's root here) must build from the
/// superblock's own top-level and details trees, which are intact: no
/// device the kernel deleted may come back and no device may gain
/// mappings. dmpd 1.4.0 instead rebuilds from older trees it finds on the
/// device ("the superblock did not describe the trees found"): deleted
/// thin 4 returns with 139 mappings, thin 5 vanishes, and thin 3 gets back
/// the 16 blocks the kernel had discarded. The kernel activates that
/// metadata without complaint.
#[test]
#[ignore = "thin_repair prefers stale trees when a device root is damaged; found by the kernel tier, left to the thin_repair work"]
fn repair_of_a_damaged_device_root_keeps_the_current_devices() {
    let s = Scratch::new("kernel-fixture-repair");
    let gz = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kernel/tmeta_tier_snaps_held.bin.gz"),
    )
    .unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .unwrap();
    let img = s.path("meta");
    std::fs::write(&img, &bytes).unwrap();
    let before = thin::ls_mapped(&img, &[]);
    let p = img.to_str().unwrap();
    let o = common::run("thin_generate_damage", &["--kind", "node-checksum", p]);
    assert_eq!(common::code(&o), 0);
    let out = s.path("repaired");
    std::fs::File::create(&out)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let o = common::run("thin_repair", &["-i", p, "-o", out.to_str().unwrap()]);
    assert_eq!(common::code(&o), 0, "{}", common::stderr(&o));
    let after = thin::ls_mapped(&out, &[]);
    for (dev, mapped) in &after {
        let was = before.get(dev).copied();
        assert!(
            was.is_some(),
            "thin {dev} was deleted but the repair brought it back: {after:?}"
        );
        assert!(
            *mapped <= was.unwrap(),
            "thin {dev} gained mappings: {before:?} -> {after:?}"
        );
    }
}
