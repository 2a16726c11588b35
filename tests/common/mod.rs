//! Helpers shared by the integration tests: running the binary, finding
//! the reference fixtures beside the checkout, scratch files.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared` beside the checkout (CI has it there), or where
/// `DMPD_SHARED_DIR` points (CI points it at nothing once, to prove the
/// suite passes in a plain clone).
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("DMPD_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
}

/// `../shared/fixtures/reference`: kernel-written images and what the
/// reference tools print for them.
pub fn reference_dir() -> PathBuf {
    shared_dir().join("fixtures/reference")
}

/// `../shared/fixtures/kernel`: images written by Linux 6.1's targets.
pub fn kernel_dir() -> PathBuf {
    shared_dir().join("fixtures/kernel")
}

/// The project's own fixtures (always present).
pub fn own_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// True when `dir` exists; otherwise says on the terminal (past the test
/// harness's capture) which test is skipped and what it needs.
pub fn have(dir: &Path) -> bool {
    if dir.is_dir() {
        return true;
    }
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // One write, so parallel tests' lines stay whole.
    let line = format!("SKIPPED {test}: needs {} (not found)\n", dir.display());
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// True when ../shared's reference fixtures are present; otherwise says
/// which test is skipped (callers return at once).
pub fn have_reference() -> bool {
    have(&reference_dir())
}

/// As `have_reference`, for ../shared's kernel-written images.
pub fn have_kernel_images() -> bool {
    have(&kernel_dir())
}

/// The names of the reference fixtures (file stems of the .bin.gz files).
pub fn reference_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(reference_dir())
        .expect("the reference fixtures (callers check with needs_reference!)")
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".bin.gz").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

pub fn expected(name: &str) -> PathBuf {
    reference_dir().join("expected").join(name)
}

/// A scratch directory unique to one test, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dmpd-test-{}-{}-{n}", test, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Decompresses one of the project's own gzip'd images (fixtures/).
    pub fn own_image(&self, name: &str) -> PathBuf {
        let gz = std::fs::read(own_fixture(&format!("{name}.bin.gz"))).unwrap();
        let mut bytes = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut bytes)
            .unwrap();
        let out = self.path(&format!("{name}.bin"));
        std::fs::write(&out, bytes).unwrap();
        out
    }

    /// Decompresses a reference fixture into a plain image file.
    pub fn fixture_image(&self, name: &str) -> PathBuf {
        let bytes = gunzip_fixture(name);
        let out = self.path(&format!("{name}.bin"));
        std::fs::write(&out, bytes).unwrap();
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn gunzip_fixture(name: &str) -> Vec<u8> {
    let gz = std::fs::read(reference_dir().join(format!("{name}.bin.gz"))).unwrap();
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub fn dmpd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmpd"))
}

/// Runs `dmpd <tool> <args>`.
pub fn run(tool: &str, args: &[&str]) -> Output {
    dmpd().arg(tool).args(args).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub mod era;
pub mod gen;
pub mod image;
pub mod pools;
pub mod xml;
