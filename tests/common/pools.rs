//! The healthy pools damage tests run on: kernel-written ones from
//! ../shared when it is there, the project's own fixtures, and a
//! generated pool with snapshots.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Scratch;

fn gunzip(path: &Path) -> Option<Vec<u8>> {
    let gz = std::fs::read(path).ok()?;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// (name, image) of every pool there is; a pool of ../shared that is
/// missing is named in one printed line and left out.
pub fn damage_pools(scratch: &Scratch) -> Vec<(&'static str, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/fixtures");
    let mut out = Vec::new();
    for (name, path) in [
        ("tmeta", shared.join("reference/tmeta.bin.gz")),
        (
            "kernel_snaps",
            shared.join("kernel/tmeta_kernel_snaps.bin.gz"),
        ),
        ("snapshots", root.join("fixtures/snapshots.bin.gz")),
        ("plain", root.join("fixtures/plain.bin.gz")),
    ] {
        match gunzip(&path) {
            Some(bytes) => out.push((name, bytes)),
            None => println!("skipping pool {name}: {} is missing", path.display()),
        }
    }
    let generated = scratch.path("generated.bin");
    out.push((
        "generated",
        super::gen::snapshot_pool(&scratch.dir, &generated),
    ));
    out
}
