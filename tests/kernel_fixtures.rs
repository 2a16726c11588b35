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
    let img = unpacked(&s, "tmeta_tier_snaps_held");
    let before = thin::ls_mapped(&img, &[]);
    let (_, said, out) = damaged_and_repaired(&s, &img);
    assert!(
        said.contains("device 0: its mapping tree root (block 207) holds no usable node"),
        "{said}"
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

/// A device whose whole tree is one leaf, damaged: an older version of
/// that leaf with the same number of mappings lies unreferenced
/// elsewhere. Repair must not revive it as the device (an earlier build
/// did: thin 0 then read as it did before the writes that followed a
/// snapshot); the device is kept without mappings, the others exactly.
#[test]
fn repair_does_not_revive_an_older_version_of_a_damaged_root_leaf() {
    let s = Scratch::new("kernel-fixture-leaf-root");
    let img = unpacked(&s, "tmeta_tier_leaf_root");
    let before = thin::ls_mapped(&img, &[]);
    let (damage, said, out) = damaged_and_repaired(&s, &img);
    assert!(damage.contains("node-checksum at block 143"), "{damage}");
    assert!(
        said.contains("device 0: kept without mappings: its root (block 143) is damaged"),
        "{said}"
    );
    assert!(!said.contains("found its mapping tree"), "{said}");
    let mut expected = before.clone();
    expected.insert(0, 0);
    assert_eq!(thin::ls_mapped(&out, &[]), expected, "before: {before:?}");
    thin::check_clean(&out, &[]);
}

/// `img` given a node-checksum damage and repaired into an 8 MiB file:
/// what the damage tool and thin_repair (which must succeed) said, and
/// the repaired file.
fn damaged_and_repaired(s: &Scratch, img: &Path) -> (String, String, std::path::PathBuf) {
    let p = img.to_str().unwrap();
    let o = common::run("thin_generate_damage", &["--kind", "node-checksum", p]);
    assert_eq!(common::code(&o), 0);
    let damage = common::stdout(&o) + &common::stderr(&o);
    let out = s.path("repaired");
    std::fs::File::create(&out)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let o = common::run("thin_repair", &["-i", p, "-o", out.to_str().unwrap()]);
    assert_eq!(common::code(&o), 0, "{}", common::stderr(&o));
    (damage, common::stderr(&o), out)
}

/// The gunzipped image `name` of fixtures/kernel, in the scratch dir.
fn unpacked(s: &Scratch, name: &str) -> std::path::PathBuf {
    let gz = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/kernel/{name}.bin.gz")),
    )
    .unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .unwrap();
    let img = s.path(&format!("{name}.bin"));
    std::fs::write(&img, bytes).unwrap();
    img
}

/// dmpd's `tool` passes on `img`, and Debian's 0.9.0 one where installed.
fn checks_clean(tool: &str, img: &Path, name: &str) {
    let p = img.to_str().unwrap();
    let o = common::run(tool, &[p]);
    assert_eq!(
        common::code(&o),
        0,
        "{name}: {tool}: {}",
        common::stderr(&o)
    );
    let debian = Path::new("/usr/sbin").join(tool);
    if debian.is_file() {
        let o = std::process::Command::new(&debian).arg(p).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{name}: Debian's {tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        println!("SKIPPED Debian's {tool} on {name}: not installed");
    }
}

fn used_total(s: &str) -> (u64, u64) {
    let (a, b) = s.split_once('/').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// The cache images: cache_check passes, and cache_dump's mappings,
/// dirty flags, block size and cache size are the kernel's residency,
/// dirty count, block size and cache size.
#[test]
fn cache_images_agree_with_the_kernels_status() {
    let s = Scratch::new("kernel-fixtures-cache");
    let mut checked = 0;
    for (name, status) in images().into_iter().filter(|(n, _)| n.starts_with("cmeta")) {
        let out = Outcome::from_log(&name, &status);
        let img = unpacked(&s, &name);
        // <meta block> <used>/<total> <cache block> <used>/<total> <read
        // hits> <misses> <write hits> <misses> <demotions> <promotions> <dirty>
        let w = thin::status_words(&out, "status", "cache", "cache");
        let (resident, nr_cache_blocks) = used_total(&w[3]);
        let dirty: u64 = w[10].parse().unwrap();
        checks_clean("cache_check", &img, &name);
        let dump = common::run("cache_dump", &[img.to_str().unwrap()]);
        assert_eq!(common::code(&dump), 0, "{name}: cache_dump");
        let xml = common::stdout(&dump);
        assert_eq!(
            thin::xml_attrs(&xml, "superblock", "block_size"),
            [w[2].as_str()],
            "{name}: block size"
        );
        assert_eq!(
            thin::xml_attrs(&xml, "superblock", "nr_cache_blocks"),
            [nr_cache_blocks.to_string()],
            "{name}: cache blocks"
        );
        let flags = thin::xml_attrs(&xml, "mapping", "dirty");
        assert_eq!(
            flags.len() as u64,
            resident,
            "{name}: mappings vs residency"
        );
        let mut cblocks = thin::xml_attrs(&xml, "mapping", "cache_block");
        cblocks.sort();
        cblocks.dedup();
        assert_eq!(
            cblocks.len() as u64,
            resident,
            "{name}: distinct cache blocks"
        );
        assert_eq!(
            flags.iter().filter(|f| *f == "true").count() as u64,
            dirty,
            "{name}: dirty mappings vs the kernel's dirty count"
        );
        checked += 1;
    }
    assert!(checked >= 1, "fixtures/kernel holds {checked} cache images");
}

/// The era images: era_check passes, and era_dump's current era, block
/// size and block count are the kernel's.
#[test]
fn era_images_agree_with_the_kernels_status() {
    let s = Scratch::new("kernel-fixtures-era");
    let mut checked = 0;
    for (name, status) in images().into_iter().filter(|(n, _)| n.starts_with("emeta")) {
        let out = Outcome::from_log(&name, &status);
        let img = unpacked(&s, &name);
        // <meta block> <used>/<total> <current era> <held root or ->
        let w = thin::status_words(&out, "status", "era", "era");
        // `era: 0 LEN era META ORIGIN BLOCK_SECTORS`, less its name
        let table: Vec<String> = out
            .value("table", "era:")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let sectors: u64 = table[1].parse().unwrap();
        let block: u64 = table[5].parse().unwrap();
        checks_clean("era_check", &img, &name);
        let dump = common::run("era_dump", &[img.to_str().unwrap()]);
        assert_eq!(common::code(&dump), 0, "{name}: era_dump");
        let xml = common::stdout(&dump);
        assert_eq!(
            thin::xml_attrs(&xml, "superblock", "current_era"),
            [w[2].as_str()],
            "{name}: current era"
        );
        assert_eq!(
            thin::xml_attrs(&xml, "superblock", "block_size"),
            [block.to_string()],
            "{name}: block size"
        );
        assert_eq!(
            thin::xml_attrs(&xml, "superblock", "nr_blocks"),
            [(sectors / block).to_string()],
            "{name}: blocks"
        );
        checked += 1;
    }
    assert!(checked >= 1, "fixtures/kernel holds {checked} era images");
}
