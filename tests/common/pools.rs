//! The healthy pools damage tests run on: kernel-written ones from
//! ../shared when it is there, the project's own fixtures, and a
//! generated pool with snapshots.

use std::io::{Read, Write};
use std::path::Path;

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
/// missing is named in one line on the terminal and left out.
pub fn damage_pools(scratch: &Scratch) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, path) in [
        ("tmeta", super::reference_dir().join("tmeta.bin.gz")),
        (
            "kernel_snaps",
            super::kernel_dir().join("tmeta_kernel_snaps.bin.gz"),
        ),
        ("snapshots", super::own_fixture("snapshots.bin.gz")),
        ("plain", super::own_fixture("plain.bin.gz")),
    ] {
        match gunzip(&path) {
            Some(bytes) => out.push((name, bytes)),
            None => {
                let line = format!(
                    "SKIPPED pool {name}: needs {} (not found)\n",
                    path.display()
                );
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
    let generated = scratch.path("generated.bin");
    out.push((
        "generated",
        super::gen::snapshot_pool(&scratch.dir, &generated),
    ));
    out
}

/// One of ../shared's kernel-written images, if it is there.
pub fn kernel_image(name: &str) -> Option<Vec<u8>> {
    gunzip(&super::kernel_dir().join(format!("{name}.bin.gz")))
}
