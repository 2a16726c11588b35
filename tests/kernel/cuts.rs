//! Power cuts: a dmpd writer runs in the guest on cache=none disks and
//! QEMU is killed (no shutdown) at moments spread over the whole write;
//! after each cut the host's checkers, dmpd's and Debian's 0.9.0, must
//! find the old transaction or the new one, whole.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::{code, run, stdout};
use super::harness::{Env, Vm};
use super::thin::{debian_thin_check, superblock};

/// What the checkers see on a metadata file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// thin_dump --flat of the transaction.
    pub dump: String,
    pub needs_check: bool,
    /// Whether thin_check passes without --ignore-non-fatal-errors.
    pub clean: bool,
}

/// Which target's metadata a writer writes: its checker and dump tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Thin,
    Cache,
    Era,
}

impl Kind {
    fn tool(self, what: &str) -> String {
        let prefix = match self {
            Kind::Thin => "thin",
            Kind::Cache => "cache",
            Kind::Era => "era",
        };
        format!("{prefix}_{what}")
    }
}

/// The state of thin metadata on `meta`, or why it is neither transaction.
pub fn seen(meta: &Path) -> Result<Seen, String> {
    seen_as(Kind::Thin, meta)
}

/// The state of the metadata on `meta` as the checkers of `kind` see it.
pub fn seen_as(kind: Kind, meta: &Path) -> Result<Seen, String> {
    let p = meta.to_str().unwrap();
    let check = kind.tool("check");
    let lenient = run(&check, &["--ignore-non-fatal-errors", p]);
    let dmpd_ok = code(&lenient) == 0;
    let debian = match kind {
        Kind::Thin => debian_thin_check().map(Path::to_path_buf),
        _ => Some(PathBuf::from(format!("/usr/sbin/{check}"))).filter(|p| p.is_file()),
    };
    if let Some(debian) = debian {
        let d = std::process::Command::new(debian)
            .args(["--ignore-non-fatal-errors", p])
            .output()
            .unwrap();
        if (d.status.code() == Some(0)) != dmpd_ok {
            return Err(format!(
                "dmpd's thin_check {} but Debian's {}",
                if dmpd_ok { "passes" } else { "fails" },
                if dmpd_ok { "fails" } else { "passes" }
            ));
        }
    }
    if !dmpd_ok {
        let msg = String::from_utf8_lossy(&lenient.stderr);
        return Err(format!(
            "no valid metadata: {}",
            msg.lines().next().unwrap_or("")
        ));
    }
    let dump = match kind {
        Kind::Thin => run("thin_dump", &["--flat", p]),
        _ => run(&kind.tool("dump"), &[p]),
    };
    if code(&dump) != 0 {
        return Err(format!(
            "{} fails on metadata {check} passes",
            kind.tool("dump")
        ));
    }
    Ok(Seen {
        dump: stdout(&dump),
        needs_check: kind == Kind::Thin && superblock(meta).needs_check(),
        clean: code(&run(&check, &[p])) == 0,
    })
}

pub struct Writer {
    pub kind: Kind,
    pub name: String,
    /// Disks in order: guest name and the file each run starts from.
    pub disks: Vec<(String, PathBuf)>,
    /// The disk whose metadata is judged.
    pub judged: String,
    pub files: Vec<(String, Vec<u8>)>,
    /// The guest command (its disks are $D_<name>).
    pub command: String,
    pub old: Seen,
    pub new: Seen,
}

/// A small deterministic generator for the cut moments.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Report {
    pub write_time: Duration,
    /// (moment after the start marker, what the checkers saw).
    pub cuts: Vec<(Duration, Result<&'static str, String>)>,
}

impl Writer {
    /// `TOOL -i /data/new.xml -o $D_meta` over a disk holding `old`,
    /// which on the host left `new`.
    pub fn restore_over(kind: Kind, old: &Path, xml: &Path, new: &Path) -> Writer {
        let tool = kind.tool("restore");
        Writer {
            kind,
            name: tool.clone(),
            disks: vec![("meta".into(), old.to_path_buf())],
            judged: "meta".into(),
            files: vec![("/data/new.xml".into(), std::fs::read(xml).unwrap())],
            command: format!("{tool} -i /data/new.xml -o $D_meta"),
            old: seen_as(kind, old).unwrap(),
            new: seen_as(kind, new).unwrap(),
        }
    }

    fn vm(&self, dir: &Path, run: &str) -> (Vm, PathBuf) {
        let mut vm =
            Vm::new(&format!("cut-{}-{run}", self.name), dir).timeout(Duration::from_secs(180));
        let mut judged = None;
        for (name, template) in &self.disks {
            let copy = dir.join(format!("{}-{run}-{name}", self.name));
            super::harness::sparse_copy(template, &copy);
            if *name == self.judged {
                judged = Some(copy.clone());
            }
            vm = vm.disk(name, &copy);
        }
        for (at, data) in &self.files {
            vm = vm.file(at, data.clone());
        }
        // The start marker follows a sync, so nothing else is in flight.
        let vm = vm.script(&format!(
            "sync\nsay go\n{} >/dev/null\nrc=$?\nsay done $rc\nsync",
            self.command
        ));
        (vm, judged.unwrap())
    }

    fn judge(&self, meta: &Path) -> Result<&'static str, String> {
        let s = seen_as(self.kind, meta)?;
        if s == self.old {
            Ok("old")
        } else if s == self.new {
            Ok("new")
        } else {
            Err(format!(
                "valid metadata that is neither transaction (needs_check {}, clean {})",
                s.needs_check, s.clean
            ))
        }
    }

    /// One uncut run to time the write (from the start marker to the end
    /// marker, as the host sees them), then `n` cuts spread evenly over it
    /// and a little past it, each at a random moment within its slot.
    pub fn power_cuts(&self, env: &Env, dir: &Path, n: usize, seed: u64) -> Report {
        let (vm, meta) = self.vm(dir, "whole");
        let out = vm.run(env);
        out.assert_ok();
        assert_eq!(
            out.values("done"),
            ["0"],
            "{}: the writer failed",
            self.name
        );
        assert_eq!(self.judge(&meta), Ok("new"), "{}: uncut run", self.name);
        let write_time = out.time_of("done").unwrap() - out.time_of("go").unwrap();
        let mut rng = Lcg(seed);
        let moments: Vec<Duration> = (0..n)
            .map(|i| write_time.mul_f64(1.05 * (i as f64 + rng.next()) / n as f64))
            .collect();
        let cuts = std::thread::scope(|scope| {
            let handles: Vec<_> = moments
                .iter()
                .enumerate()
                .map(|(i, &at)| {
                    let (vm, meta) = self.vm(dir, &i.to_string());
                    scope.spawn(move || {
                        let out = vm.run_cut(env, "go", at);
                        assert!(!out.timed_out, "{}: cut {i} timed out", out.name);
                        let verdict = self.judge(&meta);
                        let _ = std::fs::remove_file(&meta);
                        (at, verdict)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        Report { write_time, cuts }
    }
}

/// A pool as thin XML: an origin of `n` mappings scattered over the data
/// device, and a snapshot sharing every other one with its own in
/// between, so the trees have many leaves and shared subtrees.
pub fn pool_xml(seed: u64, n: u64) -> String {
    let nr_data = 4 * n;
    let mut rng = Lcg(seed);
    let mut x = format!(
        "<superblock uuid=\"\" time=\"1\" transaction=\"{seed}\" version=\"2\" \
         data_block_size=\"128\" nr_data_blocks=\"{nr_data}\">\n"
    );
    // Data blocks: a pseudo-random permutation's first 2n values.
    let mut blocks: Vec<u64> = (0..nr_data).collect();
    for i in 0..(2 * n) as usize {
        let j = i + (rng.next() * (blocks.len() - i) as f64) as usize;
        blocks.swap(i, j);
    }
    let origin = &blocks[..n as usize];
    let own = &blocks[n as usize..2 * n as usize];
    x.push_str(&format!(
        "  <device dev_id=\"0\" mapped_blocks=\"{n}\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n"
    ));
    for (v, d) in origin.iter().enumerate() {
        x.push_str(&format!(
            "    <single_mapping origin_block=\"{v}\" data_block=\"{d}\" time=\"0\"/>\n"
        ));
    }
    x.push_str("  </device>\n");
    x.push_str(&format!(
        "  <device dev_id=\"1\" mapped_blocks=\"{n}\" transaction=\"0\" creation_time=\"1\" snap_time=\"1\">\n"
    ));
    for v in 0..n as usize {
        let (d, t) = if v % 2 == 0 {
            (origin[v], 0)
        } else {
            (own[v], 1)
        };
        x.push_str(&format!(
            "    <single_mapping origin_block=\"{v}\" data_block=\"{d}\" time=\"{t}\"/>\n"
        ));
    }
    x.push_str("  </device>\n</superblock>\n");
    x
}

/// A cache as XML: `n` of `nr` cache blocks mapped to scattered origin
/// blocks, every third dirty.
pub fn cache_xml(seed: u64, nr: u64, n: u64) -> String {
    let mut rng = Lcg(seed);
    let mut x = format!(
        "<superblock uuid=\"\" block_size=\"64\" nr_cache_blocks=\"{nr}\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n"
    );
    let mut origin: Vec<u64> = (0..2 * nr).collect();
    for c in 0..n as usize {
        let j = c + (rng.next() * (origin.len() - c) as f64) as usize;
        origin.swap(c, j);
        let dirty = if c % 3 == 0 { "true" } else { "false" };
        x.push_str(&format!(
            "    <mapping cache_block=\"{c}\" origin_block=\"{}\" dirty=\"{dirty}\"/>\n",
            origin[c]
        ));
    }
    x.push_str("  </mappings>\n</superblock>\n");
    x
}

/// An era as XML: `nr` blocks, each last written in a pseudo-random era
/// before `era`.
pub fn era_xml(seed: u64, nr: u64, era: u64) -> String {
    let mut rng = Lcg(seed);
    let mut x = format!(
        "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"{nr}\" current_era=\"{era}\">\n  <era_array>\n"
    );
    for b in 0..nr {
        let e = (rng.next() * era as f64) as u64;
        x.push_str(&format!("    <era block=\"{b}\" era=\"{e}\"/>\n"));
    }
    x.push_str("  </era_array>\n</superblock>\n");
    x
}
