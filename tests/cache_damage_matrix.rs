//! The cache damage matrix: every damage cache_generate_damage makes, on
//! the project's own cache images (formats 1 and 2) and, when ../shared
//! is there, on the kernel-written ones. Per cell: cache_check's exit
//! status with and without --ignore-non-fatal-errors; cache_repair's
//! output checks clean (here and with Debian's 0.9.0 cache_check);
//! --auto-repair fixes the leak and writes nothing for the others.
//! `cargo test --test cache_damage_matrix -- --nocapture` prints it.

mod common;

use std::io::Read;
use std::path::Path;

use common::*;
use dmpd::cache::damage::{CacheImage, Damage};

fn images() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (
            "own v1".to_string(),
            dmpd::testing::cache_image(1, 3000, 1024),
        ),
        (
            "own v2".to_string(),
            dmpd::testing::cache_image(2, 3000, 1024),
        ),
    ];
    if have_kernel_images() {
        for name in ["cmeta_kernel_v1", "cmeta_kernel_v2", "cmeta_kernel_v1_huge"] {
            let gz = std::fs::read(kernel_dir().join(format!("{name}.bin.gz"))).unwrap();
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
            v.push((name.to_string(), out));
        }
    }
    v
}

fn status(tool: &str, args: &[&str], path: &Path) -> (i32, String) {
    let mut all = args.to_vec();
    all.push(path.to_str().unwrap());
    let o = run(tool, &all);
    (code(&o), stderr(&o))
}

fn debian_cache_check(path: &Path) -> Option<bool> {
    let tool = Path::new("/usr/sbin/cache_check");
    tool.exists().then(|| {
        std::process::Command::new(tool)
            .arg(path)
            .output()
            .unwrap()
            .status
            .success()
    })
}

#[test]
fn every_damage_on_every_image() {
    let s = Scratch::new("cache-matrix");
    let mut problems = Vec::new();
    let mut table = Vec::new();
    let debian = Path::new("/usr/sbin/cache_check").exists();
    if !debian {
        eprintln!("SKIPPED Debian's cache_check column: /usr/sbin/cache_check not installed");
    }
    for (name, pristine) in images() {
        for &d in Damage::ALL {
            let mut image = CacheImage::new(pristine.clone());
            let applied = match d.apply(&mut image) {
                Ok(a) => a,
                Err(e) => {
                    problems.push(format!("{name} {}: {e}", d.name()));
                    continue;
                }
            };
            let mut fail = |what: String| problems.push(format!("{name} {}: {what}", d.name()));
            let path = s.path("damaged");
            std::fs::write(&path, &image.bytes).unwrap();
            let (plain, err) = status("cache_check", &[], &path);
            if plain != 64 {
                fail(format!("check exits {plain}: {err}"));
            }
            // A hole has no block: its array block index is named.
            let named = match d {
                Damage::ArrayIndexHole => format!("array block {}", applied.index.unwrap()),
                _ => format!("block {}", applied.block),
            };
            if !err.contains(&named) {
                fail(format!("check does not name {named}: {err}"));
            }
            let (ignored, _) = status("cache_check", &["--ignore-non-fatal-errors"], &path);
            if (ignored == 0) != d.is_non_fatal() {
                fail(format!("--ignore-non-fatal-errors exits {ignored}"));
            }

            // Repair into a fresh output.
            let out = s.path("repaired");
            std::fs::File::create(&out)
                .unwrap()
                .set_len(pristine.len() as u64)
                .unwrap();
            let o = run(
                "cache_repair",
                &["-i", path.to_str().unwrap(), "-o", out.to_str().unwrap()],
            );
            let repair = if d == Damage::SuperblockChecksum {
                // cache_repair needs the superblock (it does not rebuild
                // one from the arrays): refused, naming it.
                if code(&o) != 64 || !stderr(&o).contains("bad checksum in superblock") {
                    fail(format!("repair: exit {}: {}", code(&o), stderr(&o)));
                }
                "refused (superblock)"
            } else {
                if code(&o) != 0 {
                    fail(format!("repair exits {}: {}", code(&o), stderr(&o)));
                }
                let (c, e) = status("cache_check", &[], &out);
                if c != 0 {
                    fail(format!("repaired output fails cache_check: {e}"));
                }
                if debian_cache_check(&out) == Some(false) {
                    fail("repaired output fails Debian's cache_check".into());
                }
                "ok"
            };

            // In-place repair: the leak fixed, everything else untouched.
            let (auto, err) = status("cache_check", &["--auto-repair"], &path);
            let after = std::fs::read(&path).unwrap();
            let auto_cell = if d == Damage::MetadataLeak {
                if auto != 0 || status("cache_check", &[], &path).0 != 0 {
                    fail(format!("--auto-repair did not fix the leak: {err}"));
                }
                "fixed"
            } else if d == Damage::HintArrayShort {
                // Non-fatal, but not a space-map problem: not repaired.
                if auto != 64 || after != image.bytes {
                    fail(format!("--auto-repair exits {auto} or wrote"));
                }
                "refused"
            } else {
                if auto != 64 || after != image.bytes {
                    fail(format!("--auto-repair exits {auto} or wrote"));
                }
                "refused"
            };
            table.push(format!(
                "| {} | {name} | {plain} / {ignored} | {repair} | {auto_cell} |",
                d.name()
            ));
        }
    }
    println!("| damage | image | check / ignored | cache_repair, then check | --auto-repair |");
    println!("|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
