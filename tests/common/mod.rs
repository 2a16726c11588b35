//! Helpers shared by the integration tests: running the binary, finding
//! the reference fixtures beside the checkout, scratch files.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/fixtures/reference`, beside the checkout (CI has it there).
pub fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/reference")
}

/// The names of the reference fixtures (file stems of the .bin.gz files).
pub fn reference_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(reference_dir())
        .expect("../shared/fixtures/reference must be beside the checkout")
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

pub mod gen;
pub mod image;
pub mod pools;
pub mod xml;
