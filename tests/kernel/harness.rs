//! The VM harness of the kernel tier: finds QEMU and Debian's kernel
//! (unpacked by tests/kernel/setup.sh), assembles a throw-away initramfs
//! (busybox, dmsetup, lvm2, dmpd and the libraries they link, the dm
//! modules in dependency order), boots one scenario script per VM with
//! sparse host files as virtio disks, and reads the results back from
//! the serial console (`@@` lines) and the disk files.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::cpio::Cpio;

/// The modules the scenarios need; their dependencies come from modules.dep.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    // libcrc32c asks the crypto API for crc32c, and with no modprobe in
    // the guest the implementation must already be loaded.
    "crc32c_generic",
    "dm-mod",
    "dm-thin-pool",
    "dm-cache",
    "dm-cache-smq",
    "dm-era",
];

/// At most this many VMs run at once (the machine has two cores).
const MAX_VMS: usize = 2;

pub struct Env {
    qemu: PathBuf,
    kernel: PathBuf,
    accel: Vec<String>,
    smp: u32,
    base_initrd: PathBuf,
    /// target/tmp/kernel-tier: the base initramfs and the console logs.
    pub work: PathBuf,
    /// Where lvm2 was found (the lvm2 scenarios skip without it).
    pub lvm: bool,
    pub kernel_version: String,
}

/// The environment, or None after printing one line saying why the tier
/// is skipped.
pub fn env(test: &str) -> Option<&'static Env> {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    match ENV.get_or_init(Env::discover) {
        Ok(e) => Some(e),
        Err(why) => {
            skipped(test, &format!("kernel tier: {why}"));
            None
        }
    }
}

/// Says on the terminal, past the test harness's capture and in one
/// write, that `test` is skipped and why.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DMPD_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("dmpd-kernel")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Env {
    fn discover() -> Result<Env, String> {
        match std::env::var("DMPD_KERNEL").as_deref() {
            Ok("skip") | Ok("0") => return Err("DMPD_KERNEL=skip".into()),
            _ => {}
        }
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return Err("needs an x86_64 Linux host".into());
        }
        let setup = "run tests/kernel/setup.sh as root to get it";
        let missing = |what: &str| format!("{what} not found ({setup})");
        let qemu =
            find_program("qemu-system-x86_64").ok_or_else(|| missing("qemu-system-x86_64"))?;
        let busybox = find_program("busybox").ok_or_else(|| missing("busybox"))?;
        if !libraries(&busybox)?.is_empty() {
            return Err(format!(
                "{} is not static (install busybox-static)",
                busybox.display()
            ));
        }
        let dmsetup = find_program("dmsetup").ok_or_else(|| missing("dmsetup"))?;
        let cache = cache_dir();
        let version = std::fs::read_to_string(cache.join("READY"))
            .map_err(|_| missing(&format!("Debian's kernel in {}", cache.display())))?
            .trim()
            .to_string();
        // The uncompressed ELF (booted through its PVH entry) where
        // setup.sh made one, else the compressed image.
        let kernel = [
            format!("boot/vmlinux-{version}"),
            format!("boot/vmlinuz-{version}"),
        ]
        .iter()
        .map(|p| cache.join(p))
        .find(|p| p.is_file())
        .unwrap_or_else(|| cache.join(format!("boot/vmlinuz-{version}")));
        if !kernel.is_file() {
            return Err(missing(&kernel.display().to_string()));
        }
        let lvm = find_program("lvm");
        // KVM only where the host's provider is real hardware
        // virtualisation: under the pagetable-based nested provider this
        // kernel hangs right after decompression.
        let hw_kvm = Path::new("/sys/module/kvm_intel").exists()
            || Path::new("/sys/module/kvm_amd").exists();
        let accel = if hw_kvm && Path::new("/dev/kvm").exists() {
            vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]
        } else {
            vec![
                "-accel".into(),
                "tcg,thread=multi".into(),
                "-cpu".into(),
                "max".into(),
            ]
        };
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-tier");
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let base_initrd = work.join("base.cpio");
        let bytes = base_initramfs(&cache, &version, &busybox, &dmsetup, lvm.as_deref(), &work)?;
        let tmp = work.join(format!("base.cpio.{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &base_initrd).map_err(|e| e.to_string())?;
        Ok(Env {
            qemu,
            kernel,
            accel,
            smp: 1,
            base_initrd,
            work,
            lvm: lvm.is_some(),
            kernel_version: version,
        })
    }
}

/// The shared libraries `ldd` names for a binary (none for a static one).
fn libraries(bin: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// An archive that creates each parent folder once.
struct Tree {
    cpio: Cpio,
    dirs: BTreeSet<String>,
    libs: BTreeSet<PathBuf>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            cpio: Cpio::new(),
            dirs: BTreeSet::new(),
            libs: BTreeSet::new(),
        }
    }

    fn parents(&mut self, path: &str) {
        let mut at = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len() - 1] {
            at.push('/');
            at.push_str(part);
            if self.dirs.insert(at.clone()) {
                self.cpio.dir(&at);
            }
        }
    }

    fn dir(&mut self, path: &str) {
        self.parents(&format!("{path}/x"));
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parents(path);
        self.cpio.file(path, mode, data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.cpio.symlink(path, target);
    }

    /// A host binary at `at`, with every library it links at its own path.
    fn binary(&mut self, host: &Path, at: &str) -> Result<(), String> {
        let data = std::fs::read(host).map_err(|e| format!("{}: {e}", host.display()))?;
        self.file(at, 0o755, &data);
        for lib in libraries(host)? {
            if self.libs.insert(lib.clone()) {
                let data = std::fs::read(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
                self.file(&lib.to_string_lossy(), 0o755, &data);
            }
        }
        Ok(())
    }
}

/// The module load order: every wanted module after its dependencies, as
/// modules.dep lists them (each line names all of a module's dependencies,
/// the ones to load first last).
fn module_order(moddir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let dep = std::fs::read_to_string(moddir.join("modules.dep"))
        .map_err(|e| format!("{}/modules.dep: {e}", moddir.display()))?;
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let stem = |p: &str| {
        let base = p.rsplit('/').next().unwrap_or(p);
        base.split(".ko").next().unwrap_or(base).to_string()
    };
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        if let Some((m, rest)) = line.split_once(':') {
            deps.insert(
                stem(m),
                (
                    m.to_string(),
                    rest.split_whitespace().map(str::to_string).collect(),
                ),
            );
        }
    }
    fn visit(
        name: &str,
        deps: &HashMap<String, (String, Vec<String>)>,
        order: &mut Vec<(String, String)>,
        stem: &dyn Fn(&str) -> String,
    ) {
        if order.iter().any(|(n, _)| n == name) {
            return;
        }
        let Some((path, ds)) = deps.get(name) else {
            return;
        };
        for d in ds.iter().rev() {
            visit(&stem(d), deps, order, stem);
        }
        order.push((name.to_string(), path.clone()));
    }
    let mut order = Vec::new();
    for m in MODULES {
        if deps.contains_key(*m) {
            visit(m, &deps, &mut order, &stem);
        } else if !builtin.lines().any(|l| stem(l) == *m) {
            return Err(format!("module {m} is neither in modules.dep nor built in"));
        }
    }
    Ok(order
        .into_iter()
        .map(|(n, p)| (n, moddir.join(p)))
        .collect())
}

/// A module file's bytes, decompressed where it ships as .ko.xz.
fn module_bytes(path: &Path) -> Result<Vec<u8>, String> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| format!("xz: {e}"))?;
        if !out.status.success() {
            return Err(format!("xz -dc {} failed", path.display()));
        }
        Ok(out.stdout)
    } else {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// dmpd without its debug information (a third of the size to unpack).
fn guest_dmpd(work: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_BIN_EXE_dmpd"));
    let dst = work.join(format!("dmpd-guest-{}", std::process::id()));
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(&dst)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(src, &dst).map_err(|e| format!("copy dmpd: {e}"))?;
    }
    Ok(dst)
}

fn base_initramfs(
    cache: &Path,
    version: &str,
    busybox: &Path,
    dmsetup: &Path,
    lvm: Option<&Path>,
    work: &Path,
) -> Result<Vec<u8>, String> {
    let mut t = Tree::new();
    for d in [
        "/proc", "/sys", "/dev", "/tmp", "/run", "/etc", "/data", "/mnt",
    ] {
        t.dir(d);
    }
    t.binary(busybox, "/bin/busybox")?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("busybox --list: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            t.symlink(&format!("/bin/{applet}"), "busybox");
        }
    }
    t.binary(dmsetup, "/sbin/dmsetup")?;
    let dmpd = guest_dmpd(work)?;
    t.binary(&dmpd, "/sbin/dmpd")?;
    let _ = std::fs::remove_file(&dmpd);
    // Every tool this build has, linked under its own name.
    for tool in dmpd::commands::TOOLS {
        t.symlink(&format!("/sbin/{}", tool.name), "dmpd");
    }
    if let Some(lvm) = lvm {
        t.binary(lvm, "/sbin/lvm")?;
        t.file("/etc/lvm/lvm.conf", 0o644, include_bytes!("guest/lvm.conf"));
        t.dir("/run/lock/lvm");
        t.dir("/run/lvm");
        t.dir("/etc/lvm/backup");
        t.dir("/etc/lvm/archive");
    }
    let moddir = cache.join("lib/modules").join(version);
    let mut order = String::new();
    for (name, path) in module_order(&moddir)? {
        t.file(&format!("/mods/{name}.ko"), 0o644, &module_bytes(&path)?);
        order.push_str(&name);
        order.push('\n');
    }
    t.file("/mods/order", 0o644, order.as_bytes());
    t.file("/init", 0o755, include_bytes!("guest/init.sh"));
    t.file("/lib.sh", 0o644, include_bytes!("guest/lib.sh"));
    Ok(t.cpio.finish())
}

/// Two VMs at a time at most, whatever the test threads.
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= MAX_VMS {
            used = SLOTS.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.used.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        SLOTS.freed.notify_one();
    }
}

/// A sparse file of `bytes` bytes (a disk for the guest).
pub fn sparse_file(path: &Path, bytes: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(bytes).unwrap();
}

/// Copies a disk file, leaving holes where the source reads as zeros.
pub fn sparse_copy(from: &Path, to: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = std::fs::File::open(from).unwrap();
    let len = src.metadata().unwrap().len();
    let mut dst = std::fs::File::create(to).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64)).unwrap();
        } else {
            dst.write_all(&buf[..n]).unwrap();
        }
    }
    dst.set_len(len).unwrap();
}

pub struct Disk {
    pub name: String,
    pub path: PathBuf,
    /// QEMU's cache mode: `none` (O_DIRECT on the host) for every disk, so
    /// a killed VM leaves on the file exactly what reached the "device".
    pub cache: &'static str,
}

pub struct Vm {
    name: String,
    disks: Vec<Disk>,
    script: String,
    files: Vec<(String, Vec<u8>)>,
    timeout: Duration,
    dir: PathBuf,
}

/// What a run left: the serial log and the `@@` lines in it.
pub struct Outcome {
    pub name: String,
    pub log: String,
    pub exit: Option<i32>,
    pub elapsed: Duration,
    /// For power cuts: whether QEMU was killed before the script ended.
    pub cut: bool,
    pub timed_out: bool,
    /// When each `@@` line reached the host, from QEMU's start.
    pub times: Vec<(Duration, String)>,
}

impl Outcome {
    /// An outcome read back from a saved console log (the committed
    /// fixtures keep the `@@` lines of the run that made them).
    pub fn from_log(name: &str, log: &str) -> Outcome {
        Outcome {
            name: name.to_string(),
            log: log.to_string(),
            exit: Some(0),
            elapsed: Duration::ZERO,
            cut: false,
            timed_out: false,
            times: Vec::new(),
        }
    }

    /// With DMPD_KERNEL_SAVE=DIR: keeps the metadata the kernel wrote as
    /// DIR/NAME.bin.gz and the run's results (status, tables, sha256
    /// lines) as DIR/NAME.status, for fixtures/kernel.
    pub fn save_fixture(&self, name: &str, meta: &Path) {
        let Some(dir) = std::env::var_os("DMPD_KERNEL_SAVE") else {
            return;
        };
        use std::io::Write;
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = std::fs::File::create(dir.join(format!("{name}.bin.gz"))).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        gz.write_all(&std::fs::read(meta).unwrap()).unwrap();
        gz.finish().unwrap();
        let lines: Vec<String> = self
            .results()
            .filter(|r| {
                ["status ", "table ", "sha "]
                    .iter()
                    .any(|k| r.starts_with(k))
            })
            .map(|r| format!("@@{r}\n"))
            .collect();
        std::fs::write(dir.join(format!("{name}.status")), lines.concat()).unwrap();
    }

    /// When the host read the first `@@KEY...` line.
    pub fn time_of(&self, key: &str) -> Option<Duration> {
        self.times
            .iter()
            .find(|(_, l)| l.split_whitespace().next() == Some(key))
            .map(|(t, _)| *t)
    }

    /// The `@@` lines, prefix removed.
    pub fn results(&self) -> impl Iterator<Item = &str> {
        self.log
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').split_once("@@").map(|(_, r)| r))
    }

    /// The rest of every `@@KEY rest` line.
    pub fn values<'a>(&'a self, key: &'a str) -> Vec<&'a str> {
        self.results()
            .filter_map(|r| {
                let (k, rest) = r.split_once(' ').unwrap_or((r, ""));
                (k == key).then_some(rest)
            })
            .collect()
    }

    /// The one `@@KEY rest` line with this key and first word.
    pub fn value(&self, key: &str, first: &str) -> String {
        let found: Vec<&str> = self
            .values(key)
            .into_iter()
            .filter(|v| v.split_whitespace().next() == Some(first))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one '@@{key} {first}' line\n{}",
            self.name,
            self.tail()
        );
        found[0]
            .split_once(' ')
            .map(|(_, r)| r.trim().to_string())
            .unwrap_or_default()
    }

    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Panics with the log unless the script ran to its end with status 0
    /// and reported no failure.
    pub fn assert_ok(&self) {
        let fails = self.values("fail");
        assert!(
            !self.timed_out && self.exit == Some(0) && fails.is_empty(),
            "{}: guest script {} (exit {:?}, failures {:?}):\n{}",
            self.name,
            if self.timed_out {
                "timed out"
            } else {
                "failed"
            },
            self.exit,
            fails,
            self.tail()
        );
    }
}

impl Vm {
    pub fn new(name: &str, dir: &Path) -> Vm {
        Vm {
            name: name.to_string(),
            disks: Vec::new(),
            script: String::new(),
            files: Vec::new(),
            timeout: Duration::from_secs(400),
            dir: dir.to_path_buf(),
        }
    }

    /// Attaches a host file; the guest sees it as /dev/vdX in order and
    /// as `$D_<name>` in the script.
    pub fn disk(mut self, name: &str, path: &Path) -> Vm {
        self.disks.push(Disk {
            name: name.to_string(),
            path: path.to_path_buf(),
            cache: "none",
        });
        self
    }

    pub fn script(mut self, text: &str) -> Vm {
        self.script.push_str(text);
        self.script.push('\n');
        self
    }

    /// A file the guest finds at `at` (e.g. /data/x.xml).
    pub fn file(mut self, at: &str, data: Vec<u8>) -> Vm {
        self.files.push((at.to_string(), data));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Vm {
        self.timeout = t;
        self
    }

    pub fn run(&self, env: &Env) -> Outcome {
        self.run_inner(env, None)
    }

    /// Runs until the guest prints `@@<marker>`, then kills QEMU after
    /// `delay` (no shutdown: a power cut).
    pub fn run_cut(&self, env: &Env, marker: &str, delay: Duration) -> Outcome {
        self.run_inner(env, Some((marker, delay)))
    }

    fn initrd(&self, env: &Env) -> PathBuf {
        let mut t = Tree::new();
        let mut pre = String::from("#!/bin/sh\n. /lib.sh\n");
        for (i, d) in self.disks.iter().enumerate() {
            pre.push_str(&format!(
                "D_{}=/dev/vd{}\n",
                d.name,
                (b'a' + i as u8) as char
            ));
        }
        pre.push_str(&format!("wait_disks {}\n", self.disks.len()));
        t.file(
            "/scenario.sh",
            0o755,
            format!("{pre}{}", self.script).as_bytes(),
        );
        for (at, data) in &self.files {
            t.file(at, 0o644, data);
        }
        let mut bytes = std::fs::read(&env.base_initrd).unwrap();
        bytes.extend_from_slice(&t.cpio.finish());
        let path = self.dir.join(format!("{}.initrd", self.name));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn run_inner(&self, env: &Env, cut: Option<(&str, Duration)>) -> Outcome {
        let initrd = self.initrd(env);
        let _slot = Slot::take();
        let mut cmd = Command::new(&env.qemu);
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-m", "1G"])
        .args(["-smp", &env.smp.to_string()])
        .args(&env.accel)
        .arg("-kernel")
        .arg(&env.kernel)
        .arg("-initrd")
        .arg(&initrd)
        // no_timer_check: under TCG on a loaded host the kernel's check
        // of the IO-APIC timer can miss its ticks and panic at boot
        // ("IO-APIC + timer doesn't work!"), seen at a load average of 28.
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check",
        ]);
        for d in &self.disks {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache={}",
                d.path.display(),
                d.cache
            ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("cannot start qemu-system-x86_64");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut log = String::new();
        let deadline = start + self.timeout;
        let mut timed_out = false;
        let mut was_cut = false;
        let mut ended = false;
        let mut times = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(line) => {
                    if let Some((_, r)) = line.trim_end_matches('\r').split_once("@@") {
                        times.push((start.elapsed(), r.to_string()));
                    }
                    log.push_str(line.trim_end_matches('\r'));
                    log.push('\n');
                    if line.contains("@@exit ") {
                        ended = true;
                    }
                    if let Some((marker, delay)) = cut {
                        if line
                            .trim_end_matches('\r')
                            .ends_with(&format!("@@{marker}"))
                        {
                            std::thread::sleep(delay);
                            // Did the script end meanwhile? Only lines
                            // already sent can tell; the kill decides.
                            let _ = child.kill();
                            was_cut = true;
                            break;
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if timed_out {
            let _ = child.kill();
        }
        let status = child.wait().expect("wait for qemu");
        for line in rx.try_iter() {
            if line.contains("@@exit ") {
                ended = true;
            }
            log.push_str(line.trim_end_matches('\r'));
            log.push('\n');
        }
        let _ = reader.join();
        if !ended && !was_cut && !timed_out && !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            log.push_str(&format!("qemu exited {status}: {err}\n"));
        }
        let exit = log
            .lines()
            .filter_map(|l| l.split_once("@@exit ").map(|(_, r)| r.trim().parse().ok()))
            .next_back()
            .flatten();
        let _ = std::fs::remove_file(&initrd);
        // Every run's console log stays for reading after a failure.
        let _ = std::fs::write(env.work.join(format!("{}.log", self.name)), &log);
        Outcome {
            name: self.name.clone(),
            log,
            exit,
            elapsed: start.elapsed(),
            cut: was_cut && !ended,
            timed_out,
            times,
        }
    }
}
