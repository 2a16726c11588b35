//! Every tool against every kind of bad input, as a table: the exit
//! status, a message that names the file and the problem, no panic, and
//! every input and pre-existing output byte-identical afterwards.
//!
//! Rows are (tool, input or output case); a tool takes part in the rows
//! its command line has a slot for. All failures are gathered and
//! reported together, so one run shows the whole matrix.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// What a tool reads from its input slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reads {
    Binary,
    Xml,
    Pack,
}

/// What a tool writes to its output slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Writes {
    Nothing,
    /// Created or truncated (dumps, packs, thin_shrink's XML).
    Text,
    /// An existing file or device of binary metadata.
    Metadata,
}

struct Tool {
    name: &'static str,
    /// `IN`, `OUT` and `DATA` are replaced by paths.
    args: &'static [&'static str],
    reads: Reads,
    writes: Writes,
    /// Exit status when the metadata read is bad (thin_trim's pre-check).
    bad_metadata_status: i32,
}

const fn tool(
    name: &'static str,
    args: &'static [&'static str],
    reads: Reads,
    writes: Writes,
) -> Tool {
    Tool {
        name,
        args,
        reads,
        writes,
        bad_metadata_status: 64,
    }
}

const TOOLS: &[Tool] = &[
    tool("thin_check", &["IN"], Reads::Binary, Writes::Nothing),
    tool(
        "thin_dump",
        &["IN", "-o", "OUT"],
        Reads::Binary,
        Writes::Text,
    ),
    tool("thin_ls", &["IN"], Reads::Binary, Writes::Nothing),
    tool(
        "thin_delta",
        &["--thin1", "1", "--thin2", "2", "IN"],
        Reads::Binary,
        Writes::Nothing,
    ),
    tool(
        "thin_rmap",
        &["--region", "0..10", "IN"],
        Reads::Binary,
        Writes::Nothing,
    ),
    Tool {
        bad_metadata_status: 65,
        ..tool(
            "thin_trim",
            &["--metadata-dev", "IN", "--data-dev", "DATA"],
            Reads::Binary,
            Writes::Nothing,
        )
    },
    tool(
        "thin_repair",
        &["-i", "IN", "-o", "OUT"],
        Reads::Binary,
        Writes::Metadata,
    ),
    tool(
        "thin_restore",
        &["-i", "IN", "-o", "OUT"],
        Reads::Xml,
        Writes::Metadata,
    ),
    tool(
        "thin_metadata_pack",
        &["-f", "-i", "IN", "-o", "OUT"],
        Reads::Binary,
        Writes::Text,
    ),
    tool(
        "thin_metadata_unpack",
        &["-f", "-i", "IN", "-o", "OUT"],
        Reads::Pack,
        Writes::Text,
    ),
    tool(
        "thin_shrink",
        &["-i", "IN", "-o", "OUT", "--nr-blocks", "32000", "--no-copy"],
        Reads::Xml,
        Writes::Text,
    ),
    tool(
        "thin_shrink",
        &[
            "--binary",
            "-i",
            "IN",
            "-o",
            "OUT",
            "--nr-blocks",
            "32000",
            "--no-copy",
        ],
        Reads::Binary,
        Writes::Metadata,
    ),
    tool(
        "thin_migrate",
        &[
            "--metadata-dev",
            "IN",
            "--data-dev",
            "DATA",
            "--thin-id",
            "1",
            "--dest-file",
            "OUT",
        ],
        Reads::Binary,
        Writes::Text,
    ),
];

/// The project's pool with snapshots, in every form the tools read.
struct Inputs {
    binary: PathBuf,
    xml: PathBuf,
    pack: PathBuf,
    data: PathBuf,
}

fn good_inputs(s: &Scratch) -> Inputs {
    let binary = s.own_image("snapshots");
    let xml = own_fixture("snapshots.xml");
    let xml_copy = s.path("snapshots.xml");
    std::fs::copy(xml, &xml_copy).unwrap();
    let pack = s.path("snapshots.pack");
    let o = run(
        "thin_metadata_pack",
        &["-i", binary.to_str().unwrap(), "-o", pack.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // 32768 data blocks of 64 KiB, sparse.
    let data = s.path("data");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(32768 * 65536)
        .unwrap();
    Inputs {
        binary,
        xml: xml_copy,
        pack,
        data,
    }
}

/// A bad input: how to make it, and the words its message must hold
/// for each kind of reader (None: the tool does not read this slot kind
/// in a way the row is about).
struct BadInput {
    name: &'static str,
    make: fn(&Scratch, &Inputs) -> PathBuf,
    binary: &'static str,
    xml: &'static str,
    pack: &'static str,
    /// Still worth packing (damaged or another target's metadata):
    /// thin_metadata_pack succeeds on it.
    packable: bool,
}

fn write(s: &Scratch, name: &str, bytes: &[u8]) -> PathBuf {
    let p = s.path(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Block 0 sealed as another target's superblock.
fn other_superblock(kind: dmpd::io::BlockKind) -> Vec<u8> {
    let mut block = vec![0u8; 4096 * 16];
    block[32..40].copy_from_slice(&0x2a2au64.to_le_bytes());
    dmpd::io::checksum::seal(&mut block[..4096], kind);
    block
}

const BAD_INPUTS: &[BadInput] = &[
    BadInput {
        name: "missing path",
        make: |s, _| s.path("no-such-file"),
        binary: "Couldn't find input file",
        xml: "Couldn't find input file",
        pack: "Couldn't find input file",
        packable: false,
    },
    BadInput {
        name: "directory",
        make: |s, _| {
            let d = s.path("a-directory");
            std::fs::create_dir_all(&d).unwrap();
            d
        },
        binary: "Not a block device or regular file",
        xml: "Not a block device or regular file",
        pack: "Not a block device or regular file",
        packable: false,
    },
    BadInput {
        name: "empty file",
        make: |s, _| write(s, "empty", b""),
        binary: "too small to hold metadata (0 bytes",
        xml: "is empty",
        pack: "Not a pack file",
        packable: false,
    },
    BadInput {
        name: "shorter than a block",
        make: |s, i| {
            let b = std::fs::read(&i.binary).unwrap();
            write(s, "short", &b[..100])
        },
        binary: "too small to hold metadata (100 bytes",
        xml: "binary data, not XML",
        pack: "Not a pack file",
        packable: false,
    },
    BadInput {
        name: "truncated image",
        make: |s, i| {
            let b = std::fs::read(&i.binary).unwrap();
            write(s, "truncated.bin", &b[..20 * 4096])
        },
        binary: "looks truncated",
        xml: "binary thin metadata, not XML",
        pack: "Not a pack file",
        packable: true,
    },
    BadInput {
        name: "text file",
        make: |s, _| {
            write(
                s,
                "notes.txt",
                "pool notes, nothing more\n".repeat(400).as_bytes(),
            )
        },
        binary: "holds text",
        xml: "text that is not XML",
        pack: "Not a pack file",
        packable: false,
    },
    BadInput {
        name: "gzip cut short",
        make: |s, _| {
            let gz = std::fs::read(own_fixture("snapshots.bin.gz")).unwrap();
            write(s, "cut.bin.gz", &gz[..gz.len() / 2])
        },
        binary: "corrupt gzip stream",
        xml: "gzip-compressed",
        pack: "Not a pack file",
        packable: false,
    },
    BadInput {
        name: "pack cut short",
        make: |s, i| {
            let p = std::fs::read(&i.pack).unwrap();
            write(s, "cut.pack", &p[..p.len() / 2])
        },
        binary: "pack file truncated",
        xml: "metadata pack, not XML",
        pack: "pack file truncated",
        packable: false,
    },
    BadInput {
        name: "XML where binary is expected",
        make: |s, i| {
            // Long enough that the size check is not what stops it.
            let mut x = std::fs::read(&i.xml).unwrap();
            x.extend(std::iter::repeat_n(b' ', 8192));
            write(s, "given.xml", &x)
        },
        binary: "looks like XML",
        xml: "",
        pack: "Not a pack file",
        packable: false,
    },
    BadInput {
        name: "cache metadata",
        make: |s, _| {
            write(
                s,
                "cache.bin",
                &other_superblock(dmpd::io::BlockKind::CacheSuperblock),
            )
        },
        binary: "this is cache metadata",
        xml: "binary cache metadata, not XML",
        pack: "Not a pack file",
        packable: true,
    },
    BadInput {
        name: "era metadata",
        make: |s, _| {
            write(
                s,
                "era.bin",
                &other_superblock(dmpd::io::BlockKind::EraSuperblock),
            )
        },
        binary: "this is era metadata",
        xml: "binary era metadata, not XML",
        pack: "Not a pack file",
        packable: true,
    },
];

/// Everything a run may change, read before it.
struct Snapshot(Vec<(PathBuf, Option<Vec<u8>>)>);

impl Snapshot {
    fn take(paths: &[&Path]) -> Snapshot {
        Snapshot(
            paths
                .iter()
                .map(|p| (p.to_path_buf(), read_if_file(p)))
                .collect(),
        )
    }

    /// Paths whose bytes (or existence) changed.
    fn changed(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(p, before)| &read_if_file(p) != before)
            .map(|(p, _)| p.display().to_string())
            .collect()
    }
}

/// A file's bytes; for the large sparse data file, its size, allocated
/// blocks and modification time (any write changes one of them).
fn read_if_file(p: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(p).ok()?;
    if meta.file_type().is_symlink() {
        return std::fs::read_link(p)
            .ok()
            .map(|t| t.to_string_lossy().into_owned().into_bytes());
    }
    if !meta.is_file() {
        return None;
    }
    if meta.len() > 64 << 20 {
        let stamp = format!(
            "{} {} {}.{}",
            meta.len(),
            meta.blocks(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        return Some(stamp.into_bytes());
    }
    Some(std::fs::read(p).unwrap())
}

struct Outcome {
    row: String,
    problems: Vec<String>,
}

fn substitute(t: &Tool, input: &Path, output: &Path, data: &Path) -> Vec<String> {
    t.args
        .iter()
        .map(|a| match *a {
            "IN" => input.display().to_string(),
            "OUT" => output.display().to_string(),
            "DATA" => data.display().to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// Runs one row and says what is wrong with it, if anything.
#[allow(clippy::too_many_arguments)]
fn row(
    t: &Tool,
    case: &str,
    mut cmd: Command,
    args: &[String],
    watch: &[&Path],
    status: i32,
    words: &[&str],
) -> Outcome {
    let before = Snapshot::take(watch);
    let o = cmd.args(args).output().unwrap();
    let err = stderr(&o);
    let mut problems = Vec::new();
    if code(&o) != status {
        problems.push(format!("exit {} (wanted {status})", code(&o)));
    }
    if err.contains("panicked") || code(&o) == 101 {
        problems.push("panicked".into());
    }
    for w in words {
        if !err.contains(w) {
            problems.push(format!("message lacks {w:?}"));
        }
    }
    let changed = before.changed();
    if !changed.is_empty() {
        problems.push(format!("changed {changed:?}"));
    }
    if !problems.is_empty() {
        problems.push(format!("stderr: {}", err.trim_end()));
    }
    Outcome {
        row: format!("{} ({}): {case}", t.name, t.args.join(" ")),
        problems,
    }
}

fn dmpd_tool(t: &Tool) -> Command {
    let mut c = dmpd();
    c.arg(t.name);
    c
}

fn as_nobody(t: &Tool) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_dmpd"))
        .arg(t.name);
    c
}

/// The path, as the tools print it.
fn shown(p: &Path) -> String {
    format!("'{}'", p.display())
}

fn report(outcomes: &[Outcome]) {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.problems.is_empty()).collect();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "bad-input matrix: {} rows, {} failed",
        outcomes.len(),
        failed.len()
    );
    if !failed.is_empty() {
        let text: Vec<String> = failed
            .iter()
            .map(|o| format!("{}\n    {}", o.row, o.problems.join("\n    ")))
            .collect();
        panic!(
            "{} of {} rows failed:\n{}",
            failed.len(),
            outcomes.len(),
            text.join("\n")
        );
    }
}

#[test]
fn bad_inputs_are_named_and_change_nothing() {
    let s = Scratch::new("bad-input");
    let inputs = good_inputs(&s);
    let mut outcomes = Vec::new();
    for bad in BAD_INPUTS {
        let input = (bad.make)(&s, &inputs);
        for t in TOOLS {
            let words = match t.reads {
                Reads::Binary => bad.binary,
                Reads::Xml => bad.xml,
                Reads::Pack => bad.pack,
            };
            if words.is_empty() {
                continue;
            }
            // A fresh, pre-existing output of the right kind.
            let output = s.path(&format!("out-{}", t.name));
            let _ = std::fs::remove_file(&output);
            if t.writes == Writes::Metadata {
                std::fs::File::create(&output)
                    .unwrap()
                    .set_len(8 << 20)
                    .unwrap();
            } else {
                std::fs::write(&output, b"an earlier output").unwrap();
            }
            let args = substitute(t, &input, &output, &inputs.data);
            if t.name == "thin_metadata_pack" && bad.packable {
                outcomes.push(row(
                    t,
                    bad.name,
                    dmpd_tool(t),
                    &args,
                    &[&input, &inputs.data],
                    0,
                    &[],
                ));
                continue;
            }
            // Input problems are runtime failures; the pre-check of
            // thin_trim has its own status once it runs.
            let input_level = [
                "Couldn't find",
                "Not a block device",
                "too small",
                "corrupt gzip",
                "pack file truncated",
            ];
            let status = if input_level.iter().any(|w| words.contains(w)) {
                64
            } else {
                t.bad_metadata_status
            };
            let shown_input = shown(&input);
            outcomes.push(row(
                t,
                bad.name,
                dmpd_tool(t),
                &args,
                &[&input, &output, &inputs.data],
                status,
                &[words, &shown_input],
            ));
        }
    }
    report(&outcomes);
}

#[test]
fn outputs_that_are_inputs_or_unusable_are_refused() {
    let s = Scratch::new("bad-output");
    let inputs = good_inputs(&s);
    let mut outcomes = Vec::new();
    // Hold the input open so /proc/<this process>/fd/N names it.
    for t in TOOLS.iter().filter(|t| t.writes != Writes::Nothing) {
        let input = match t.reads {
            Reads::Binary => &inputs.binary,
            Reads::Xml => &inputs.xml,
            Reads::Pack => &inputs.pack,
        };
        let held = std::fs::File::open(input).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
        let link = s.path(&format!("link-{}", t.name));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(input, &link).unwrap();
        let hard = s.path(&format!("hard-{}", t.name));
        let _ = std::fs::remove_file(&hard);
        std::fs::hard_link(input, &hard).unwrap();
        let dotted = input
            .parent()
            .unwrap()
            .join(".")
            .join(input.file_name().unwrap());
        let spellings: Vec<(&str, PathBuf)> = vec![
            ("the input itself", input.clone()),
            ("a symlink to the input", link.clone()),
            ("a hard link to the input", hard.clone()),
            (
                "/proc/PID/fd/N of the input",
                PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id())),
            ),
            ("a ./ spelling of the input", dotted),
        ];
        for (case, out) in &spellings {
            let args = substitute(t, input, out, &inputs.data);
            outcomes.push(row(
                t,
                &format!("output is {case}"),
                dmpd_tool(t),
                &args,
                &[input, &link, &hard, &inputs.data],
                64,
                &["refusing to write", "same file as the input", &shown(input)],
            ));
        }
        drop(held);

        // Unusable outputs: a directory, /dev/full, too small, read-only.
        let dir = s.path(&format!("outdir-{}", t.name));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_words: &[&str] = match t.writes {
            Writes::Metadata => &["Not a block device or regular file"],
            _ => &["Is a directory"],
        };
        let args = substitute(t, input, &dir, &inputs.data);
        let mut words = dir_words.to_vec();
        let shown_dir = shown(&dir);
        words.push(&shown_dir);
        outcomes.push(row(
            t,
            "output is a directory",
            dmpd_tool(t),
            &args,
            &[input, &inputs.data],
            64,
            &words,
        ));

        let full = Path::new("/dev/full");
        let full_words: &[&str] = match t.writes {
            Writes::Metadata => &["Not a block device or regular file", "'/dev/full'"],
            _ => &["No space left on device"],
        };
        let args = substitute(t, input, full, &inputs.data);
        outcomes.push(row(
            t,
            "output is /dev/full",
            dmpd_tool(t),
            &args,
            &[input, &inputs.data],
            64,
            full_words,
        ));

        if t.writes == Writes::Metadata {
            let small = s.path(&format!("small-{}", t.name));
            std::fs::write(&small, vec![0xa5u8; 4096]).unwrap();
            let args = substitute(t, input, &small, &inputs.data);
            let shown_small = shown(&small);
            outcomes.push(row(
                t,
                "output too small",
                dmpd_tool(t),
                &args,
                &[input, &small, &inputs.data],
                64,
                &["too small", &shown_small],
            ));
        }

        // Read-only output, as an unprivileged user (root ignores modes).
        let ro_dir = s.path(&format!("ro-{}", t.name));
        std::fs::create_dir_all(&ro_dir).unwrap();
        set_mode(&s.dir, 0o755);
        set_mode(&ro_dir, 0o755);
        let ro = ro_dir.join("out");
        if t.writes == Writes::Metadata {
            std::fs::File::create(&ro)
                .unwrap()
                .set_len(8 << 20)
                .unwrap();
        } else {
            std::fs::write(&ro, b"an earlier output").unwrap();
        }
        set_mode(&ro, 0o444);
        set_mode(input, 0o644);
        set_mode(&inputs.data, 0o644);
        let args = substitute(t, input, &ro, &inputs.data);
        outcomes.push(row(
            t,
            "output is read-only (unprivileged user)",
            as_nobody(t),
            &args,
            &[input, &ro, &inputs.data],
            64,
            &["Permission denied", &shown(&ro)],
        ));
    }
    report(&outcomes);
}

fn set_mode(p: &Path, mode: u32) {
    let mut perm = std::fs::metadata(p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, mode);
    std::fs::set_permissions(p, perm).unwrap();
}

#[test]
fn good_input_succeeds_and_bad_options_follow_the_exit_table() {
    let s = Scratch::new("good-input");
    let inputs = good_inputs(&s);
    let mut outcomes = Vec::new();
    for t in TOOLS {
        let input = match t.reads {
            Reads::Binary => &inputs.binary,
            Reads::Xml => &inputs.xml,
            Reads::Pack => &inputs.pack,
        };
        let output = s.path(&format!("good-out-{}", t.name));
        let _ = std::fs::remove_file(&output);
        if t.writes == Writes::Metadata {
            std::fs::File::create(&output)
                .unwrap()
                .set_len(8 << 20)
                .unwrap();
        }
        let args = substitute(t, input, &output, &inputs.data);
        outcomes.push(row(t, "good input", dmpd_tool(t), &args, &[input], 0, &[]));

        let mut args = args.clone();
        args.insert(0, "--no-such-option".into());
        let status = dmpd::commands::usage_status(t.name);
        outcomes.push(row(
            t,
            "unknown option",
            dmpd_tool(t),
            &args,
            &[input, &inputs.data],
            status,
            &["unexpected argument '--no-such-option' found"],
        ));
    }
    report(&outcomes);
}

/// A loop device and the file behind it are the same bytes: neither may
/// be written while the other is read. Needs root and loop devices.
#[test]
fn loop_devices_and_their_backing_files_are_one_input() {
    let s = Scratch::new("bad-loop");
    let image = s.own_image("snapshots");
    let attach = Command::new("losetup")
        .args(["-f", "--show", image.to_str().unwrap()])
        .output();
    let dev = match attach {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED loop_devices_and_their_backing_files_are_one_input: \
                 cannot attach a loop device (needs root and /dev/loop-control)"
            );
            return;
        }
    };
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    let img = image.to_str().unwrap();
    let before = std::fs::read(&image).unwrap();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "thin_dump",
            vec![&dev, "-o", img],
            "the file behind the loop device",
        ),
        (
            "thin_repair",
            vec!["-i", &dev, "-o", img],
            "the file behind the loop device",
        ),
        (
            "thin_repair",
            vec!["-i", img, "-o", &dev],
            "a loop device backed by the input",
        ),
        (
            "thin_metadata_pack",
            vec!["-f", "-i", &dev, "-o", img],
            "the file behind",
        ),
    ];
    for (tool, args, words) in cases {
        let o = run(tool, &args);
        assert_eq!(code(&o), 64, "{tool} {args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(words),
            "{tool} {args:?}: {}",
            stderr(&o)
        );
        assert!(
            std::fs::read(&image).unwrap() == before,
            "{tool} changed the image"
        );
    }
}

/// cache_check against bad input and other targets' metadata, and the
/// thin tools against a kernel-written cache image: exit 64, the input
/// named and unchanged, no panic; and a healthy cache image checked by
/// an unprivileged user who cannot write it.
#[test]
fn cache_check_names_bad_inputs_and_other_targets_metadata() {
    let s = Scratch::new("bad-input-cache");
    let inputs = good_inputs(&s);
    let check = tool("cache_check", &["IN"], Reads::Binary, Writes::Nothing);
    let mut rows: Vec<(&str, PathBuf, &str)> = vec![
        (
            "missing path",
            s.path("no-such-file"),
            "Couldn't find input file",
        ),
        (
            "empty file",
            write(&s, "c-empty", b""),
            "too small to hold metadata (0 bytes",
        ),
        (
            "text file",
            write(&s, "c-notes.txt", "cache notes\n".repeat(800).as_bytes()),
            "holds text",
        ),
        (
            "thin metadata",
            inputs.binary.clone(),
            "this is thin metadata",
        ),
        (
            "era metadata",
            write(
                &s,
                "c-era.bin",
                &other_superblock(dmpd::io::BlockKind::EraSuperblock),
            ),
            "this is era metadata",
        ),
        (
            "a cache superblock with another magic",
            write(
                &s,
                "c-magic.bin",
                &other_superblock(dmpd::io::BlockKind::CacheSuperblock),
            ),
            "has magic 10794 (cache metadata has 1623043)",
        ),
    ];
    let dir = s.path("c-dir");
    std::fs::create_dir_all(&dir).unwrap();
    rows.push(("directory", dir, "Not a block device or regular file"));
    let mut xml = std::fs::read(&inputs.xml).unwrap();
    xml.extend(std::iter::repeat_n(b' ', 8192));
    rows.push(("XML", write(&s, "c-given.xml", &xml), "looks like XML"));
    let mut outcomes = Vec::new();
    let kernel_v2 = kernel_dir().join("cmeta_kernel_v2.bin.gz");
    let cache_image = have_kernel_images().then(|| {
        let gz = std::fs::read(&kernel_v2).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut bytes)
            .unwrap();
        write(&s, "cmeta.bin", &bytes)
    });
    if let Some(image) = &cache_image {
        let bytes = std::fs::read(image).unwrap();
        rows.push((
            "truncated cache image",
            write(&s, "c-truncated.bin", &bytes[..20 * 4096]),
            "looks truncated",
        ));
        let gz = std::fs::read(&kernel_v2).unwrap();
        rows.push((
            "gzip cut short",
            write(&s, "c-cut.bin.gz", &gz[..gz.len() / 2]),
            "corrupt gzip stream",
        ));
    }
    for (case, input, words) in &rows {
        let args = substitute(&check, input, input, input);
        outcomes.push(row(
            &check,
            case,
            dmpd_tool(&check),
            &args,
            &[input],
            64,
            &[words, &shown(input)],
        ));
    }
    if let Some(image) = &cache_image {
        // The thin tools refuse a cache image, naming it.
        let out = s.path("c-out");
        for t in TOOLS
            .iter()
            .filter(|t| t.reads == Reads::Binary && t.name != "thin_metadata_pack")
        {
            std::fs::File::create(&out)
                .unwrap()
                .set_len(8 << 20)
                .unwrap();
            let args = substitute(t, image, &out, &inputs.data);
            outcomes.push(row(
                t,
                "kernel-written cache metadata",
                dmpd_tool(t),
                &args,
                &[image, &out, &inputs.data],
                t.bad_metadata_status,
                &["this is cache metadata", &shown(image)],
            ));
        }
        // Read-only: an unprivileged user checks a file it cannot write.
        set_mode(&s.dir, 0o755);
        set_mode(image, 0o444);
        let args = substitute(&check, image, image, image);
        outcomes.push(row(
            &check,
            "healthy cache image, read-only, unprivileged user",
            as_nobody(&check),
            &args,
            &[image],
            0,
            &[],
        ));
    }
    report(&outcomes);
}

/// The cache tools, with cache inputs: `Reads::Binary` is cache
/// metadata, `Reads::Xml` cache XML.
const CACHE_TOOLS: &[Tool] = &[
    tool(
        "cache_dump",
        &["IN", "-o", "OUT"],
        Reads::Binary,
        Writes::Text,
    ),
    tool(
        "cache_repair",
        &["-i", "IN", "-o", "OUT"],
        Reads::Binary,
        Writes::Metadata,
    ),
    tool(
        "cache_restore",
        &["-i", "IN", "-o", "OUT"],
        Reads::Xml,
        Writes::Metadata,
    ),
];

/// A small cache in both forms the cache tools read.
fn good_cache_inputs(s: &Scratch) -> Inputs {
    let mut xml = String::from(
        "<superblock uuid=\"\" block_size=\"64\" nr_cache_blocks=\"2000\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n",
    );
    for c in (0..2000).step_by(3) {
        xml += &format!(
            "    <mapping cache_block=\"{c}\" origin_block=\"{}\" dirty=\"{}\"/>\n",
            5 * c,
            c % 2 == 0
        );
    }
    xml += "  </mappings>\n  <hints>\n  </hints>\n</superblock>";
    let xml_path = s.path("cache.xml");
    std::fs::write(&xml_path, xml).unwrap();
    let binary = s.path("cache.bin");
    std::fs::File::create(&binary)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let o = run(
        "cache_restore",
        &[
            "-i",
            xml_path.to_str().unwrap(),
            "-o",
            binary.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    Inputs {
        binary,
        xml: xml_path,
        pack: PathBuf::new(),
        data: PathBuf::new(),
    }
}

/// A bad input to a cache tool and the words its message must hold
/// (binary: cache_dump and cache_repair; xml: cache_restore).
struct CacheBadInput {
    name: &'static str,
    make: fn(&Scratch, &Inputs) -> PathBuf,
    binary: &'static str,
    xml: &'static str,
}

const CACHE_BAD_INPUTS: &[CacheBadInput] = &[
    CacheBadInput {
        name: "missing path",
        make: |s, _| s.path("no-such-file"),
        binary: "Couldn't find input file",
        xml: "Couldn't find input file",
    },
    CacheBadInput {
        name: "directory",
        make: |s, _| {
            let d = s.path("a-directory");
            std::fs::create_dir_all(&d).unwrap();
            d
        },
        binary: "Not a block device or regular file",
        xml: "Not a block device or regular file",
    },
    CacheBadInput {
        name: "empty file",
        make: |s, _| write(s, "empty", b""),
        binary: "too small to hold metadata (0 bytes",
        xml: "is empty",
    },
    CacheBadInput {
        name: "shorter than a block",
        make: |s, i| {
            let b = std::fs::read(&i.binary).unwrap();
            write(s, "short", &b[..100])
        },
        binary: "too small to hold metadata (100 bytes",
        xml: "binary data, not XML",
    },
    CacheBadInput {
        name: "truncated image",
        make: |s, i| {
            let b = std::fs::read(&i.binary).unwrap();
            write(s, "truncated.bin", &b[..3 * 4096])
        },
        binary: "looks truncated",
        xml: "binary cache metadata, not XML",
    },
    CacheBadInput {
        name: "zeroed",
        make: |s, _| write(s, "zeroed.bin", &vec![0u8; 1 << 20]),
        binary: "bad checksum in superblock",
        xml: "binary data, not XML",
    },
    CacheBadInput {
        name: "text file",
        make: |s, _| {
            write(
                s,
                "notes.txt",
                "cache notes, nothing more\n".repeat(400).as_bytes(),
            )
        },
        binary: "holds text",
        xml: "text that is not XML",
    },
    CacheBadInput {
        name: "gzip cut short",
        make: |s, i| {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&std::fs::read(&i.binary).unwrap()).unwrap();
            let gz = gz.finish().unwrap();
            write(s, "cut.bin.gz", &gz[..gz.len() / 2])
        },
        binary: "corrupt gzip stream",
        xml: "gzip-compressed",
    },
    CacheBadInput {
        name: "XML where binary is expected",
        make: |s, i| {
            let mut x = std::fs::read(&i.xml).unwrap();
            x.extend(std::iter::repeat_n(b' ', 8192));
            write(s, "given.xml", &x)
        },
        binary: "looks like XML",
        xml: "",
    },
    CacheBadInput {
        name: "thin metadata",
        make: |s, _| {
            write(
                s,
                "thin.bin",
                &other_superblock(dmpd::io::BlockKind::ThinSuperblock),
            )
        },
        binary: "this is thin metadata",
        xml: "binary thin metadata, not XML",
    },
    CacheBadInput {
        name: "era metadata",
        make: |s, _| {
            write(
                s,
                "era.bin",
                &other_superblock(dmpd::io::BlockKind::EraSuperblock),
            )
        },
        binary: "this is era metadata",
        xml: "binary era metadata, not XML",
    },
    CacheBadInput {
        name: "thin XML",
        make: |s, _| {
            let x = std::fs::read(own_fixture("snapshots.xml")).unwrap();
            write(s, "thin.xml", &x)
        },
        binary: "looks like XML",
        xml: "unknown attribute 'time' in <superblock>",
    },
];

#[test]
fn bad_inputs_to_the_cache_tools_are_named_and_change_nothing() {
    let s = Scratch::new("bad-cache-input");
    let inputs = good_cache_inputs(&s);
    let mut outcomes = Vec::new();
    for bad in CACHE_BAD_INPUTS {
        let input = (bad.make)(&s, &inputs);
        for t in CACHE_TOOLS {
            let words = match t.reads {
                Reads::Xml => bad.xml,
                _ => bad.binary,
            };
            if words.is_empty() {
                continue;
            }
            let output = s.path(&format!("out-{}", t.name));
            let _ = std::fs::remove_file(&output);
            if t.writes == Writes::Metadata {
                std::fs::write(&output, vec![0x3cu8; 4 << 20]).unwrap();
            } else {
                std::fs::write(&output, b"an earlier output").unwrap();
            }
            let args = substitute(t, &input, &output, &inputs.data);
            let shown_input = shown(&input);
            outcomes.push(row(
                t,
                bad.name,
                dmpd_tool(t),
                &args,
                &[&input, &output],
                64,
                &[words, &shown_input],
            ));
        }
    }
    report(&outcomes);
}

#[test]
fn cache_outputs_that_are_inputs_or_unusable_are_refused() {
    let s = Scratch::new("bad-cache-output");
    let inputs = good_cache_inputs(&s);
    let mut outcomes = Vec::new();
    for t in CACHE_TOOLS {
        let input = match t.reads {
            Reads::Xml => &inputs.xml,
            _ => &inputs.binary,
        };
        let link = s.path(&format!("link-{}", t.name));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(input, &link).unwrap();
        let hard = s.path(&format!("hard-{}", t.name));
        let _ = std::fs::remove_file(&hard);
        std::fs::hard_link(input, &hard).unwrap();
        for (case, out) in [
            ("the input itself", input.clone()),
            ("a symlink to the input", link.clone()),
            ("a hard link to the input", hard.clone()),
        ] {
            let args = substitute(t, input, &out, &inputs.data);
            outcomes.push(row(
                t,
                &format!("output is {case}"),
                dmpd_tool(t),
                &args,
                &[input, &link, &hard],
                64,
                &["refusing to write", "same file as the input", &shown(input)],
            ));
        }
        let full = Path::new("/dev/full");
        let full_words: &[&str] = match t.writes {
            Writes::Metadata => &["Not a block device or regular file", "'/dev/full'"],
            _ => &["No space left on device"],
        };
        let args = substitute(t, input, full, &inputs.data);
        outcomes.push(row(
            t,
            "output is /dev/full",
            dmpd_tool(t),
            &args,
            &[input],
            64,
            full_words,
        ));
        if t.writes == Writes::Metadata {
            // Too small: the floor of ten blocks, and the true need.
            for (case, bytes, words) in [
                ("output below 40960 bytes", 4096, "too small"),
                (
                    "output too small for the metadata",
                    12 * 4096,
                    "the metadata needs at least 15 blocks (61440 bytes)",
                ),
            ] {
                let small = s.path(&format!("small-{}", t.name));
                std::fs::write(&small, vec![0xa5u8; bytes]).unwrap();
                let args = substitute(t, input, &small, &inputs.data);
                let shown_small = shown(&small);
                outcomes.push(row(
                    t,
                    case,
                    dmpd_tool(t),
                    &args,
                    &[input, &small],
                    64,
                    &[words, &shown_small],
                ));
            }
        }
        // Read-only output, as an unprivileged user.
        let ro_dir = s.path(&format!("ro-{}", t.name));
        std::fs::create_dir_all(&ro_dir).unwrap();
        set_mode(&s.dir, 0o755);
        set_mode(&ro_dir, 0o755);
        let ro = ro_dir.join("out");
        if t.writes == Writes::Metadata {
            std::fs::write(&ro, vec![0x3cu8; 4 << 20]).unwrap();
        } else {
            std::fs::write(&ro, b"an earlier output").unwrap();
        }
        set_mode(&ro, 0o444);
        set_mode(input, 0o644);
        let args = substitute(t, input, &ro, &inputs.data);
        outcomes.push(row(
            t,
            "output is read-only (unprivileged user)",
            as_nobody(t),
            &args,
            &[input, &ro],
            64,
            &["Permission denied", &shown(&ro)],
        ));
        // The good input succeeds, and an unknown option exits as the
        // exit table says.
        let good = s.path(&format!("good-{}", t.name));
        let _ = std::fs::remove_file(&good);
        if t.writes == Writes::Metadata {
            std::fs::File::create(&good)
                .unwrap()
                .set_len(4 << 20)
                .unwrap();
        }
        let args = substitute(t, input, &good, &inputs.data);
        outcomes.push(row(t, "good input", dmpd_tool(t), &args, &[input], 0, &[]));
        let mut args = args.clone();
        args.insert(0, "--no-such-option".into());
        outcomes.push(row(
            t,
            "unknown option",
            dmpd_tool(t),
            &args,
            &[input],
            dmpd::commands::usage_status(t.name),
            &["unexpected argument '--no-such-option' found"],
        ));
    }
    report(&outcomes);
}

/// cache_writeback against bad metadata, origin and fast inputs: the
/// input named, the status (65 where the metadata is read but fails the
/// pre-check, 64 where a file cannot be used at all), no panic, and all
/// three files unchanged.
#[test]
fn cache_writeback_names_bad_inputs_and_touches_nothing() {
    let s = Scratch::new("bad-input-writeback");
    let inputs = good_inputs(&s);
    let wb = tool(
        "cache_writeback",
        &[
            "--metadata-device",
            "IN",
            "--origin-device",
            "OUT",
            "--fast-device",
            "DATA",
        ],
        Reads::Binary,
        Writes::Nothing,
    );
    // A healthy cache with dirty blocks, and its devices.
    let xml = write(
        &s,
        "w-cache.xml",
        b"<superblock uuid=\"\" block_size=\"64\" nr_cache_blocks=\"8\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n    <mapping cache_block=\"1\" origin_block=\"3\" dirty=\"true\"/>\n  </mappings>\n</superblock>",
    );
    let meta = s.path("w-meta");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let o = run(
        "cache_restore",
        &["-i", xml.to_str().unwrap(), "-o", meta.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let fast = write(&s, "w-fast", &vec![0xfa; 8 * 32768]);
    let origin = write(&s, "w-origin", &vec![0x0e; 8 * 32768]);
    let dir = s.path("w-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = s.path("no-such-file");

    let mut outcomes = Vec::new();
    let metadata_rows: Vec<(&str, PathBuf, i32, &str)> = vec![
        (
            "missing path",
            missing.clone(),
            64,
            "Couldn't find input file",
        ),
        (
            "directory",
            dir.clone(),
            64,
            "Not a block device or regular file",
        ),
        (
            "empty file",
            write(&s, "w-empty", b""),
            64,
            "too small to hold metadata (0 bytes",
        ),
        (
            "text file",
            write(&s, "w-notes.txt", "cache notes\n".repeat(800).as_bytes()),
            65,
            "holds text",
        ),
        (
            "thin metadata",
            inputs.binary.clone(),
            65,
            "this is thin metadata",
        ),
    ];
    for (case, input, status, words) in &metadata_rows {
        let args = substitute(&wb, input, &origin, &fast);
        outcomes.push(row(
            &wb,
            &format!("metadata: {case}"),
            dmpd_tool(&wb),
            &args,
            &[input, &origin, &fast],
            *status,
            &[words, &shown(input)],
        ));
    }
    for (case, bad, words) in [
        ("missing path", &missing, "Couldn't find input file"),
        ("directory", &dir, "Not a block device or regular file"),
    ] {
        let args = substitute(&wb, &meta, bad, &fast);
        outcomes.push(row(
            &wb,
            &format!("origin: {case}"),
            dmpd_tool(&wb),
            &args,
            &[&meta, &fast],
            64,
            &[words, &shown(bad)],
        ));
        let args = substitute(&wb, &meta, &origin, bad);
        outcomes.push(row(
            &wb,
            &format!("fast: {case}"),
            dmpd_tool(&wb),
            &args,
            &[&meta, &origin],
            64,
            &[words, &shown(bad)],
        ));
    }
    // The origin is the fast device, or the metadata.
    for (case, o, f) in [
        ("origin is the fast device", &fast, &fast),
        ("origin is the metadata", &meta, &fast),
    ] {
        let args = substitute(&wb, &meta, o, f);
        outcomes.push(row(
            &wb,
            case,
            dmpd_tool(&wb),
            &args,
            &[&meta, o, f],
            64,
            &["same file", &shown(o)],
        ));
    }
    report(&outcomes);
}

/// The era tools against bad input, other targets' metadata and unusable
/// outputs: exit 64 (1 for era_check and era_repair's command-line
/// errors), the input named, nothing changed, no panic; and a healthy
/// era image read by an unprivileged user who cannot write it.
#[test]
fn era_tools_name_bad_inputs_and_other_targets_metadata() {
    let s = Scratch::new("bad-input-era");
    let inputs = good_inputs(&s);
    let readers = [
        tool("era_check", &["IN"], Reads::Binary, Writes::Nothing),
        tool(
            "era_dump",
            &["IN", "-o", "OUT"],
            Reads::Binary,
            Writes::Text,
        ),
        tool(
            "era_invalidate",
            &["--written-since", "1", "IN"],
            Reads::Binary,
            Writes::Nothing,
        ),
        tool(
            "era_repair",
            &["-i", "IN", "-o", "OUT"],
            Reads::Binary,
            Writes::Metadata,
        ),
    ];
    let dir = s.path("e-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let mut xml = std::fs::read(&inputs.xml).unwrap();
    xml.extend(std::iter::repeat_n(b' ', 8192));
    let rows: Vec<(&str, PathBuf, &str)> = vec![
        (
            "missing path",
            s.path("no-such-file"),
            "Couldn't find input file",
        ),
        ("directory", dir, "Not a block device or regular file"),
        (
            "empty file",
            write(&s, "e-empty", b""),
            "too small to hold metadata (0 bytes",
        ),
        (
            "text file",
            write(&s, "e-notes.txt", "era notes\n".repeat(800).as_bytes()),
            "holds text",
        ),
        (
            "thin metadata",
            inputs.binary.clone(),
            "this is thin metadata",
        ),
        (
            "cache metadata",
            write(
                &s,
                "e-cache.bin",
                &other_superblock(dmpd::io::BlockKind::CacheSuperblock),
            ),
            "this is cache metadata",
        ),
        ("XML", write(&s, "e-given.xml", &xml), "looks like XML"),
        (
            "zeroed superblock",
            write(&s, "e-zero.bin", &vec![0u8; 16 * 4096]),
            "block 0 is all zeros",
        ),
    ];
    let out = s.path("e-out");
    let mut outcomes = Vec::new();
    for t in &readers {
        for (case, input, words) in &rows {
            let _ = std::fs::remove_file(&out);
            if t.writes == Writes::Metadata {
                std::fs::File::create(&out)
                    .unwrap()
                    .set_len(8 << 20)
                    .unwrap();
            }
            let args = substitute(t, input, &out, input);
            outcomes.push(row(
                t,
                case,
                dmpd_tool(t),
                &args,
                &[input],
                64,
                &[words, &shown(input)],
            ));
        }
    }
    // era_restore's XML slot and the writers' output slots.
    let era_xml = write(
        &s,
        "e.xml",
        b"<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"64\" current_era=\"1\">\n</superblock>",
    );
    let restore = tool(
        "era_restore",
        &["-i", "IN", "-o", "OUT"],
        Reads::Xml,
        Writes::Metadata,
    );
    for (case, input, words) in [
        (
            "missing path",
            s.path("no-such.xml"),
            "Couldn't find input file",
        ),
        (
            "thin metadata",
            inputs.binary.clone(),
            "holds binary thin metadata, not XML",
        ),
        (
            "text file",
            write(&s, "e-text", b"not xml at all\n"),
            "text that is not XML",
        ),
    ] {
        std::fs::File::create(&out)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let args = substitute(&restore, &input, &out, &input);
        outcomes.push(row(
            &restore,
            case,
            dmpd_tool(&restore),
            &args,
            &[&input, &out],
            64,
            &[words],
        ));
    }
    let small = write(&s, "e-small", &[0u8; 4096]);
    let image = write(&s, "e-good.bin", &[0u8; 8 << 20]);
    let o = run(
        "era_restore",
        &[
            "-i",
            era_xml.to_str().unwrap(),
            "-o",
            image.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for (t, input) in [(&restore, &era_xml), (&readers[3], &image)] {
        for (case, output, words) in [
            (
                "output missing",
                s.path("e-no-out"),
                "Couldn't find output file",
            ),
            ("output too small", small.clone(), "too small"),
            ("output is the input", input.clone(), "refusing to write"),
        ] {
            let args = substitute(t, input, &output, input);
            outcomes.push(row(
                t,
                case,
                dmpd_tool(t),
                &args,
                &[input, &output],
                64,
                &[words],
            ));
        }
    }
    // Read-only: an unprivileged user reads a healthy image it cannot write.
    set_mode(&s.dir, 0o755);
    set_mode(&image, 0o444);
    for t in &readers[..3] {
        let args: Vec<String> = substitute(t, &image, Path::new("/dev/null"), &image);
        outcomes.push(row(
            t,
            "healthy era image, read-only, unprivileged user",
            as_nobody(t),
            &args,
            &[&image],
            0,
            &[],
        ));
    }
    report(&outcomes);
}
