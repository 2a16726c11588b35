//! Era metadata for the era tests: the kernel-written images of
//! ../shared (when present) and an image of the project's own, restored
//! from XML written here, so every test has something to run on.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::*;

/// The kernel-written era images in ../shared and their expected-output
/// folders: (name, gzip'd image, expected dir). Empty (with a SKIPPED
/// line) when ../shared is absent.
pub fn shared_images() -> Vec<(String, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    if have_kernel_images() {
        for name in ["emeta_kernel", "emeta_kernel_snap_held"] {
            out.push((
                name.to_string(),
                kernel_dir().join(format!("{name}.bin.gz")),
                kernel_dir().join("expected"),
            ));
        }
    }
    if have_reference() {
        let name = "emeta_with_metadata_snap";
        out.push((
            name.to_string(),
            reference_dir().join(format!("{name}.bin.gz")),
            reference_dir().join("expected"),
        ));
    }
    out
}

/// Decompresses `gz` into the scratch folder as `name.bin`.
pub fn unpack(s: &Scratch, gz: &Path, name: &str) -> PathBuf {
    use std::io::Read;
    let bytes = std::fs::read(gz).unwrap();
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .unwrap();
    let p = s.path(&format!("{name}.bin"));
    std::fs::write(&p, out).unwrap();
    p
}

/// Era XML: writesets given as (era, nr_bits, marked runs), the era
/// array as (block, era) for its non-zero entries.
pub fn era_xml(
    nr_blocks: u32,
    current_era: u32,
    writesets: &[(u32, u32, &[Range<u64>])],
    eras: &[(u32, u32)],
) -> String {
    let mut x = format!(
        "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"{nr_blocks}\" current_era=\"{current_era}\">\n"
    );
    for (era, nr_bits, runs) in writesets {
        x.push_str(&format!(
            "  <writeset era=\"{era}\" nr_bits=\"{nr_bits}\">\n"
        ));
        for r in runs.iter() {
            x.push_str(&format!(
                "    <marked block_begin=\"{}\" len=\"{}\"/>\n",
                r.start,
                r.end - r.start
            ));
        }
        x.push_str("  </writeset>\n");
    }
    x.push_str("  <era_array>\n");
    for (b, e) in eras {
        x.push_str(&format!("    <era block=\"{b}\" era=\"{e}\"/>\n"));
    }
    x.push_str("  </era_array>\n</superblock>");
    x
}

/// A file of `bytes` zero bytes.
pub fn blank(s: &Scratch, name: &str, bytes: u64) -> PathBuf {
    let p = s.path(name);
    std::fs::File::create(&p).unwrap().set_len(bytes).unwrap();
    p
}

/// Restores `xml` onto a fresh 8 MiB file; panics on failure.
pub fn restored(s: &Scratch, name: &str, xml: &str) -> PathBuf {
    let x = s.path(&format!("{name}.xml"));
    std::fs::write(&x, xml).unwrap();
    let out = blank(s, &format!("{name}.bin"), 8 << 20);
    let o = run(
        "era_restore",
        &["-i", x.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "era_restore: {}", stderr(&o));
    out
}

/// The project's own era image: 3000 blocks (three era-array blocks),
/// current era 6, archived writesets 4 and 5 with runs that cross
/// 64-bit words, an era array of eras 1..3.
pub fn own_image(s: &Scratch) -> PathBuf {
    let eras: Vec<(u32, u32)> = (0..3000u32)
        .filter(|b| b % 7 != 0)
        .map(|b| (b, 1 + b % 3))
        .collect();
    restored(
        s,
        "own-era",
        &era_xml(
            3000,
            6,
            &[
                (4, 3000, &[10..20, 60..200, 2990..3000]),
                (5, 3000, &[100..101, 1000..1100]),
            ],
            &eras,
        ),
    )
}

/// Debian's era_check on `p`: Some(exit status), None (with a SKIPPED
/// line) when it is not installed.
pub fn debian_era_check(p: &Path) -> Option<i32> {
    const DEBIAN: &str = "/usr/sbin/era_check";
    if !Path::new(DEBIAN).exists() {
        let thread = std::thread::current();
        eprintln!(
            "SKIPPED {}: needs {DEBIAN} (not found)",
            thread.name().unwrap_or("a test")
        );
        return None;
    }
    let o = std::process::Command::new(DEBIAN).arg(p).output().unwrap();
    Some(o.status.code().unwrap_or(-1))
}
