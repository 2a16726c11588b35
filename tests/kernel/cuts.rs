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
        // Debian's 0.9.0 cache_check and era_check have no
        // --ignore-non-fatal-errors (and nothing non-fatal to ignore).
        let args: &[&str] = match kind {
            Kind::Thin => &["--ignore-non-fatal-errors", p],
            _ => &[p],
        };
        let d = std::process::Command::new(debian)
            .args(args)
            .output()
            .unwrap();
        if (d.status.code() == Some(0)) != dmpd_ok {
            return Err(format!(
                "dmpd's {check} {} but Debian's {}",
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
}

pub struct Report {
    pub name: String,
    /// The write's length when uncut (host clock, start to end marker).
    pub write_time: Duration,
    /// (moment after the writer started, what the checkers saw, whether
    /// the writer had printed its end marker before the kill).
    pub cuts: Vec<(Duration, Result<&'static str, String>, bool)>,
}

/// The guest script running every writer at once, each on its own disks
/// (`$D_w<i><name>`) and files (`/data/w<i>/...`), between `@@start-i`
/// and `@@end-i` markers.
fn script(writers: &[Writer]) -> String {
    let mut x = String::from("sync\nsay go\n");
    for (i, w) in writers.iter().enumerate() {
        let cmd = w
            .command
            .replace("$D_", &format!("$D_w{i}"))
            .replace("/data/", &format!("/data/w{i}/"));
        x.push_str(&format!(
            "( say start-{i}; {cmd} >/dev/null; say end-{i} $? ) &\n"
        ));
    }
    x.push_str("wait\nsay done\nsync\n");
    x
}

/// One VM with fresh copies of every writer's disks; returns the VM and
/// each writer's judged disk.
fn vm(writers: &[Writer], dir: &Path, run: &str) -> (Vm, Vec<PathBuf>) {
    let mut vm = Vm::new(&format!("cuts-{run}"), dir).timeout(Duration::from_secs(240));
    let mut judged = Vec::new();
    for (i, w) in writers.iter().enumerate() {
        for (name, template) in &w.disks {
            let copy = dir.join(format!("{run}-w{i}{name}"));
            super::harness::sparse_copy(template, &copy);
            if *name == w.judged {
                judged.push(copy.clone());
            }
            vm = vm.disk(&format!("w{i}{name}"), &copy);
        }
        for (at, data) in &w.files {
            vm = vm.file(&at.replace("/data/", &format!("/data/w{i}/")), data.clone());
        }
    }
    (vm.script(&script(writers)), judged)
}

/// Power cuts for several writers at once: every boot runs all of them
/// side by side (give it writers whose writes take about as long) and is
/// killed once. Two uncut runs (in parallel, as the cuts
/// run) time the writes on the host clock; then `n` cuts spread evenly
/// over 0..1.1 of the window until the last writer ends, each at a random
/// point within its slot.
pub fn power_cuts(env: &Env, dir: &Path, writers: &[Writer], n: usize, seed: u64) -> Vec<Report> {
    let whole: Vec<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|r| {
                let (vm, judged) = vm(writers, dir, &format!("whole{r}"));
                scope.spawn(move || (vm.run(env), judged))
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Per writer: how long after `go` it starts, and how long it writes.
    let mut start = vec![Duration::ZERO; writers.len()];
    let mut length = vec![Duration::ZERO; writers.len()];
    for (out, judged) in &whole {
        out.assert_ok();
        for (i, w) in writers.iter().enumerate() {
            assert_eq!(
                out.values(&format!("end-{i}")),
                ["0"],
                "{}: the writer failed",
                w.name
            );
            assert_eq!(w.judge(&judged[i]), Ok("new"), "{}: uncut run", w.name);
            let go = out.time_of("go").unwrap();
            let s = out.time_of(&format!("start-{i}")).unwrap();
            let e = out.time_of(&format!("end-{i}")).unwrap();
            start[i] += (s - go) / 2;
            length[i] += (e - s) / 2;
        }
    }
    // All writers start together, as in the uncut runs (so each meets
    // the same contention); the cuts spread over the whole window until
    // the last one ends, and a little past it.
    let window = (0..writers.len())
        .map(|i| start[i] + length[i])
        .max()
        .unwrap();
    let mut rng = Lcg(seed);
    let moments: Vec<Duration> = (0..n)
        .map(|k| window.mul_f64(1.1 * (k as f64 + rng.next()) / n as f64))
        .collect();
    let results: Vec<Vec<(Result<&'static str, String>, bool)>> = std::thread::scope(|scope| {
        let runs: Vec<_> = moments
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let (vm, judged) = vm(writers, dir, &format!("cut{k}"));
                scope.spawn(move || {
                    let out = vm.run_cut(env, "go", *t);
                    assert!(!out.timed_out, "{}: timed out", out.name);
                    writers
                        .iter()
                        .enumerate()
                        .map(|(i, w)| {
                            let verdict = w.judge(&judged[i]);
                            let ended = !out.values(&format!("end-{i}")).is_empty();
                            let _ = std::fs::remove_file(&judged[i]);
                            (verdict, ended)
                        })
                        .collect()
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    writers
        .iter()
        .enumerate()
        .map(|(i, w)| Report {
            name: w.name.clone(),
            write_time: length[i],
            cuts: moments
                .iter()
                .zip(&results)
                .map(|(t, r)| (t.saturating_sub(start[i]), r[i].0.clone(), r[i].1))
                .collect(),
        })
        .collect()
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
