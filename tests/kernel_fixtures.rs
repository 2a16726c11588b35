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
/// damaged (node-checksum picks device 0's root, a single leaf, here) must
/// build from the superblock's own top-level and details trees, which are
/// intact: every current device comes back, no device the kernel deleted
/// returns (an earlier build revived thin 4 from stale trees and lost
/// thin 5), the undamaged devices keep exactly their mappings and only
/// device 0 loses what its damaged leaf held. The output passes both
/// checkers.
#[test]
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
    assert!(
        common::stderr(&o)
            .contains("device 0: its mapping tree root (block 207) holds no usable node"),
        "{}",
        common::stderr(&o)
    );
    let after = thin::ls_mapped(&out, &[]);
    let mut expected = before.clone();
    expected.insert(0, 0);
    assert_eq!(
        after, expected,
        "devices and mapping counts before: {before:?}"
    );
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 5]);
    thin::check_clean(&out, &[]);
}
