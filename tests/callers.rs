//! The tools as the programs that depend on them run them (tools.md §7):
//! lvm2's activation check, repair, transaction probe, version probe and
//! restore of a pool that maps an existing volume; Stratis' check and
//! size estimate; cadvisor's thin_ls; wyng-backup's thin_delta. Each is
//! run through a link named after the tool, with the argument vector the
//! caller builds, and its output read the way the caller reads it.
//!
//! The checkers lvm2 runs before activation are a table (CHECKERS): a
//! checker that lands (cache_check, whose lvm2 call is the same) gets
//! every activation test by adding its row.

mod common;
use common::image::{Damage, Image};
use common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dmpd::commands::TOOLS;

/// A directory of links named after the tools, as a system holds them.
struct Sbin {
    dir: PathBuf,
}

impl Sbin {
    fn new(s: &Scratch) -> Sbin {
        let dir = s.path("sbin");
        std::fs::create_dir_all(&dir).unwrap();
        for t in TOOLS {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dmpd"), dir.join(t.name)).unwrap();
        }
        Sbin { dir }
    }

    fn path(&self, tool: &str) -> PathBuf {
        self.dir.join(tool)
    }

    /// Runs `tool` with exactly `args`, as a caller's exec would.
    fn run<S: AsRef<std::ffi::OsStr>>(&self, tool: &str, args: &[S]) -> Output {
        Command::new(self.path(tool))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// One of the project's own fixtures (fixtures/NAME.bin.gz), expanded.
fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/{name}.bin.gz"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn write_image(s: &Scratch, name: &str, image: &Image) -> PathBuf {
    let path = s.path(name);
    image.write_to(&path);
    path
}

/// The pool in fixtures/snapshots.xml, by device: virtual -> data block.
fn snapshots_pool() -> BTreeMap<u64, BTreeMap<u64, u64>> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshots.xml"),
    )
    .unwrap();
    xml::parse(&text)
        .devices
        .into_iter()
        .map(|(id, d)| (id, d.mappings.iter().map(|&(v, b, _)| (v, b)).collect()))
        .collect()
}

/// A checker lvm2 runs as `<tool> -q --clear-needs-check-flag <device>`
/// before activating a pool, and metadata to run it on.
struct Checker {
    tool: &'static str,
    /// Healthy metadata with the needs_check flag set.
    flagged: fn() -> Image,
    /// Whether the needs_check flag is set.
    needs_check: fn(&Image) -> bool,
    /// Metadata with damage that must stop activation.
    damaged: fn() -> Image,
}

fn thin_flagged() -> Image {
    let mut image = Image::new(fixture("snapshots"));
    let mut sb = image.superblock();
    sb.flags |= 1;
    image.set_superblock(&sb);
    image
}

fn thin_damaged() -> Image {
    let mut image = Image::new(fixture("snapshots"));
    Damage::NodeChecksum.apply(&mut image).unwrap();
    image
}

/// The project's own cache metadata (format 2) with needs_check set.
fn cache_flagged() -> Image {
    let mut bytes = dmpd::testing::cache_image(2, 3000, 1024);
    let mut sb = dmpd::cache::superblock::Superblock::parse(&bytes[..4096]);
    sb.flags |= dmpd::cache::superblock::NEEDS_CHECK;
    sb.write_fields(&mut bytes[..4096]);
    dmpd::io::checksum::seal(&mut bytes[..4096], dmpd::io::BlockKind::CacheSuperblock);
    Image::new(bytes)
}

/// Cache metadata with an origin block mapped by two cache blocks.
fn cache_damaged() -> Image {
    let mut image = dmpd::cache::damage::CacheImage::new(dmpd::testing::cache_image(2, 3000, 1024));
    dmpd::cache::damage::Damage::OriginMappedTwice
        .apply(&mut image)
        .unwrap();
    Image::new(image.bytes)
}

const CHECKERS: &[Checker] = &[
    Checker {
        tool: "thin_check",
        flagged: thin_flagged,
        needs_check: |image| image.superblock().needs_check(),
        damaged: thin_damaged,
    },
    Checker {
        tool: "cache_check",
        flagged: cache_flagged,
        needs_check: |image| {
            dmpd::cache::superblock::Superblock::parse(image.block(0)).needs_check()
        },
        damaged: cache_damaged,
    },
];

/// lvm.conf's default check options (tools.md §7).
const LVM2_CHECK_OPTIONS: [&str; 2] = ["-q", "--clear-needs-check-flag"];

#[test]
fn lvm2_activation_check_clears_the_flag_of_healthy_metadata_silently() {
    let s = Scratch::new("callers-activate");
    let sbin = Sbin::new(&s);
    for c in CHECKERS {
        let before = (c.flagged)();
        assert!(
            (c.needs_check)(&before),
            "{}: the fixture is not flagged",
            c.tool
        );
        let dev = write_image(&s, c.tool, &before);
        let mut args: Vec<&str> = LVM2_CHECK_OPTIONS.to_vec();
        args.push(dev.to_str().unwrap());
        let o = sbin.run(c.tool, &args);
        assert_eq!(code(&o), 0, "{}: {}", c.tool, stderr(&o));
        assert_eq!(
            (stdout(&o).as_str(), stderr(&o).as_str()),
            ("", ""),
            "{}",
            c.tool
        );
        let after = Image::new(std::fs::read(&dev).unwrap());
        assert!(
            !(c.needs_check)(&after),
            "{}: the flag is still set",
            c.tool
        );
        // Only the superblock was written.
        let changed: Vec<u64> = (0..before.bytes.len() as u64 / 4096)
            .filter(|&b| before.block(b) != after.block(b))
            .collect();
        assert_eq!(changed, vec![0], "{}", c.tool);
        // Run again, as on the next activation: nothing to do.
        let o = sbin.run(c.tool, &args);
        assert_eq!(code(&o), 0, "{}: {}", c.tool, stderr(&o));
        assert_eq!(std::fs::read(&dev).unwrap(), after.bytes, "{}", c.tool);
    }
}

#[test]
fn lvm2_activation_check_of_damaged_metadata_fails_without_2_and_writes_nothing() {
    let s = Scratch::new("callers-damaged");
    let sbin = Sbin::new(&s);
    for c in CHECKERS {
        let image = (c.damaged)();
        let dev = write_image(&s, c.tool, &image);
        let mut args: Vec<&str> = LVM2_CHECK_OPTIONS.to_vec();
        args.push(dev.to_str().unwrap());
        let o = sbin.run(c.tool, &args);
        assert_eq!(code(&o), 64, "{}: {}", c.tool, stderr(&o));
        assert_eq!(stdout(&o), "", "{}", c.tool);
        assert_eq!(std::fs::read(&dev).unwrap(), image.bytes, "{}", c.tool);

        // A mistyped option in lvm.conf's check options: lvm2 would read
        // 2 as "not installed" and activate unchecked.
        let mut typo = args.clone();
        typo.insert(2, "--skip-mapings");
        let o = sbin.run(c.tool, &typo);
        assert_eq!(code(&o), 1, "{}: {}", c.tool, stderr(&o));
        assert!(
            stderr(&o).contains("--skip-mapings"),
            "{}: {}",
            c.tool,
            stderr(&o)
        );
        assert_eq!(std::fs::read(&dev).unwrap(), image.bytes, "{}", c.tool);
    }
}

#[test]
fn lvm2_and_wyng_version_probes_read_a_bare_version_from_every_tool() {
    let s = Scratch::new("callers-version");
    let sbin = Sbin::new(&s);
    let version = env!("CARGO_PKG_VERSION");
    for t in TOOLS {
        for flag in ["-V", "--version"] {
            let o = sbin.run(t.name, &[flag]);
            assert_eq!(code(&o), 0, "{} {flag}: {}", t.name, stderr(&o));
            assert_eq!(stdout(&o), format!("{version}\n"), "{} {flag}", t.name);
            assert_eq!(stderr(&o), "", "{} {flag}", t.name);
            // lvm2's configure: the text after the last space, split on
            // '.', major, minor and patch numeric.
            let first = stdout(&o).lines().next().unwrap().to_string();
            let word = first.rsplit(' ').next().unwrap();
            let parts: Vec<&str> = word.split('.').collect();
            assert_eq!(parts.len(), 3, "{}: {first}", t.name);
            assert!(
                parts.iter().all(|p| p.parse::<u32>().is_ok()),
                "{}: {first}",
                t.name
            );
        }
        // `dmpd TOOL -V` too.
        let o = run(t.name, &["-V"]);
        assert_eq!(stdout(&o), format!("{version}\n"), "dmpd {} -V", t.name);
    }
    // wyng-backup compares the first five bytes of `thin_delta -V`, as a
    // string, with "0.7.4".
    let o = sbin.run("thin_delta", &["-V"]);
    let head = String::from_utf8_lossy(&o.stdout[..5]).trim().to_string();
    assert!(head.as_str() >= "0.7.4", "{head}");
}

/// The transaction id lvm2 finds in the first line of `thin_dump DEV`.
fn lvm2_transaction(first_line: &str) -> Option<u64> {
    let at = first_line.find("transaction=\"")? + "transaction=\"".len();
    let digits: String = first_line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn lvm2_repair_then_reads_the_transaction_from_the_dumps_first_line() {
    let s = Scratch::new("callers-repair");
    let sbin = Sbin::new(&s);
    let source = thin_damaged();
    let lvm2_transaction_id = source.superblock().transaction_id;
    let meta = write_image(&s, "tmeta", &source);
    // Older lvm2 passes its (empty) repair options as an empty argument
    // before -i; newer lvm2 drops it.
    for (n, stray) in [None, Some("")].into_iter().enumerate() {
        let spare = s.path(&format!("spare{n}"));
        std::fs::File::create(&spare)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let mut args: Vec<&str> = stray.into_iter().collect();
        args.extend(["-i", meta.to_str().unwrap(), "-o", spare.to_str().unwrap()]);
        let o = sbin.run("thin_repair", &args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert_eq!(
            std::fs::read(&meta).unwrap(),
            source.bytes,
            "the input was written"
        );

        // `thin_dump <spare>`, first line only, from a shell pipe as
        // lvm2's popen reads it.
        let script = format!(
            "{} {} | head -1",
            sbin.path("thin_dump").display(),
            spare.display()
        );
        let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "",
            "thin_dump wrote error text when its reader left"
        );
        let first = stdout(&o);
        assert!(first.starts_with("<superblock "), "{first}");
        let id = lvm2_transaction(&first).unwrap_or_else(|| panic!("no transaction in {first}"));
        assert!(
            id == lvm2_transaction_id || id == lvm2_transaction_id + 1,
            "transaction {id}, lvm2 has {lvm2_transaction_id}"
        );
        // The spare checks clean: lvm2 swaps it in next.
        let o = sbin.run("thin_check", &["-q", spare.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    // The stray argument is accepted where lvm2 puts it, but nothing else
    // unknown is.
    let o = sbin.run(
        "thin_repair",
        &["-i", meta.to_str().unwrap(), "-o", "/dev/null", "x", "y"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

/// Thin XML of one device with `n` single mappings that never merge into
/// ranges (virtual blocks advance by two, data blocks by one).
fn scattered_pool_xml(n: u64) -> String {
    let mut xml = format!(
        "<superblock uuid=\"\" time=\"0\" transaction=\"7\" version=\"2\" \
         data_block_size=\"128\" nr_data_blocks=\"{n}\">\n  <device dev_id=\"1\" \
         mapped_blocks=\"{n}\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n"
    );
    for i in 0..n {
        xml.push_str(&format!(
            "    <single_mapping origin_block=\"{}\" data_block=\"{i}\" time=\"0\"/>\n",
            2 * i
        ));
    }
    xml.push_str("  </device>\n</superblock>\n");
    xml
}

fn metadata_file(s: &Scratch, name: &str, bytes: u64) -> PathBuf {
    let path = s.path(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    path
}

#[test]
fn a_reader_that_closes_the_pipe_after_the_first_line_gets_no_error_text() {
    let s = Scratch::new("callers-pipe");
    let sbin = Sbin::new(&s);
    let xml = s.path("pool.xml");
    std::fs::write(&xml, scattered_pool_xml(40_000)).unwrap();
    let meta = metadata_file(&s, "meta", 8 << 20);
    let o = sbin.run(
        "thin_restore",
        &["-i", xml.to_str().unwrap(), "-o", meta.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // The whole dump is far beyond a pipe's buffer (64 KiB), so the dump
    // is still writing, blocked, when the reader goes.
    let full = sbin.run("thin_dump", &[&meta]);
    assert_eq!(code(&full), 0);
    assert!(full.stdout.len() > 2 << 20, "{} bytes", full.stdout.len());

    let mut child = Command::new(sbin.path("thin_dump"))
        .arg(&meta)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(lvm2_transaction(&first), Some(7), "{first}");
    drop(reader);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "", "error text after the reader left");
    // Ended by the closed pipe, with the runtime-failure status (not
    // killed by a signal, not a panic's 101).
    assert_eq!(status.code(), Some(64));
}

#[test]
fn lvm2_restores_a_pool_from_an_unlinked_file_through_proc_fd() {
    let s = Scratch::new("callers-restore");
    let sbin = Sbin::new(&s);
    // What lvm2 writes to a deleted temporary file when it creates a pool
    // mapping an existing volume: one device, one range from virtual 0.
    let (chunk, nr_blocks, data_begin) = (128u64, 16_000u64, 0u64);
    let doc = format!(
        "<superblock uuid=\"\" time=\"0\" transaction=\"1\" version=\"2\" \
         data_block_size=\"{chunk}\" nr_data_blocks=\"{nr_blocks}\">\n \
         <device dev_id=\"1\" mapped_blocks=\"{nr_blocks}\" transaction=\"0\" \
         creation_time=\"0\" snap_time=\"0\">\n  <range_mapping origin_begin=\"0\" \
         data_begin=\"{data_begin}\" length=\"{nr_blocks}\" time=\"0\"/>\n </device>\n</superblock>"
    );
    let tmp = s.path("lvm2-tmpfile");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .unwrap();
    std::fs::remove_file(&tmp).unwrap();
    f.write_all(doc.as_bytes()).unwrap();
    f.flush().unwrap();
    let input = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&f)
    );
    let lv = metadata_file(&s, "pool_tmeta", 4 << 20);
    let o = sbin.run("thin_restore", &["-i", &input, "-o", lv.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    drop(f);

    let o = sbin.run("thin_check", &[&lv]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = sbin.run("thin_dump", &[&lv]);
    let pool = xml::parse(&stdout(&o));
    assert_eq!(pool.superblock["transaction"], "1");
    assert_eq!(pool.superblock["data_block_size"], chunk.to_string());
    assert_eq!(pool.superblock["nr_data_blocks"], nr_blocks.to_string());
    assert_eq!(pool.devices.len(), 1);
    let want: Vec<(u64, u64, u32)> = (0..nr_blocks).map(|v| (v, data_begin + v, 0)).collect();
    assert_eq!(pool.devices[&1].mappings, want);
}

#[test]
fn stratis_checks_with_auto_repair_and_sizes_metadata_in_sectors() {
    let s = Scratch::new("callers-stratis");
    let sbin = Sbin::new(&s);
    // `thin_check --auto-repair DEV`: healthy metadata is left alone...
    let healthy = Image::new(fixture("snapshots"));
    let dev = write_image(&s, "healthy", &healthy);
    let o = sbin.run("thin_check", &["--auto-repair", dev.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(&dev).unwrap(), healthy.bytes);
    // ...leaks are repaired in place...
    let mut leaky = Image::new(fixture("snapshots"));
    Damage::LeakedDataBlock.apply(&mut leaky).unwrap();
    let dev = write_image(&s, "leaky", &leaky);
    assert_eq!(
        code(&sbin.run("thin_check", &["-q", dev.to_str().unwrap()])),
        64
    );
    let o = sbin.run("thin_check", &["--auto-repair", dev.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        code(&sbin.run("thin_check", &["-q", dev.to_str().unwrap()])),
        0
    );
    // ...and other damage fails the call, untouched.
    let damaged = thin_damaged();
    let dev = write_image(&s, "damaged", &damaged);
    let o = sbin.run("thin_check", &["--auto-repair", dev.to_str().unwrap()]);
    assert_eq!(code(&o), 64, "{}", stderr(&o));
    assert_eq!(std::fs::read(&dev).unwrap(), damaged.bytes);

    // `thin_metadata_size -b <bytes>b -s <bytes>b -m N -n`; Stratis parses
    // the trimmed output as a u64 count of sectors.
    let sectors = |block: u64, pool: u64, thins: u64| -> u64 {
        let o = sbin.run(
            "thin_metadata_size",
            &[
                "-b",
                &format!("{block}b"),
                "-s",
                &format!("{pool}b"),
                "-m",
                &thins.to_string(),
                "-n",
            ],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        stdout(&o)
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("{e}: {:?}", stdout(&o)))
    };
    let small = sectors(4 << 20, 1 << 40, 100);
    let more_thins = sectors(4 << 20, 1 << 40, 10_000);
    let bigger_pool = sectors(4 << 20, 16 << 40, 100);
    assert!(
        small > 0 && small < more_thins && small < bigger_pool,
        "{small} {more_thins} {bigger_pool}"
    );
    // 2^18 data blocks of 4 MiB need at least their mapping entries (16
    // bytes each: 4 MiB, 8192 sectors); in bytes it would be 512 times more.
    assert!((8192..1 << 20).contains(&small), "{small}");
}

#[test]
fn cadvisor_reads_exclusive_bytes_per_device_from_the_metadata_snapshot() {
    let s = Scratch::new("callers-cadvisor");
    let sbin = Sbin::new(&s);
    let dev = s.path("tmeta");
    std::fs::write(&dev, fixture("snapshots_with_metadata_snap")).unwrap();
    let o = sbin.run(
        "thin_ls",
        &[
            "--no-headers",
            "-m",
            "-o",
            "DEV,EXCLUSIVE_BYTES",
            dev.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // cadvisor: whitespace-separated fields, exactly two, the second a
    // decimal u64; other lines are skipped.
    let mut got = BTreeMap::new();
    for line in stdout(&o).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 2, "{line:?}");
        got.insert(fields[0].to_string(), fields[1].parse::<u64>().unwrap());
    }
    // Exclusive: data blocks no other device maps, in bytes.
    let pool = snapshots_pool();
    let mut users: BTreeMap<u64, u32> = BTreeMap::new();
    for map in pool.values() {
        for b in map.values() {
            *users.entry(*b).or_default() += 1;
        }
    }
    let want: BTreeMap<String, u64> = pool
        .iter()
        .map(|(id, map)| {
            let own = map.values().filter(|b| users[b] == 1).count() as u64;
            (id.to_string(), own * 128 * 512)
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn wyng_reads_the_changes_between_two_snapshots_from_thin_delta() {
    let s = Scratch::new("callers-wyng");
    let sbin = Sbin::new(&s);
    let dev = s.path("tmeta");
    std::fs::write(&dev, fixture("snapshots_with_metadata_snap")).unwrap();
    let pool = snapshots_pool();
    let dev = dev.to_str().unwrap();
    for (a, b) in [(1u64, 2u64), (1, 3), (3, 1)] {
        // wyng's spelling, then the short one.
        let (t1, t2) = (format!("--thin1={a}"), format!("--thin2={b}"));
        let wyng = sbin.run("thin_delta", &["--metadata-snap", &t1, &t2, dev]);
        let short = sbin.run(
            "thin_delta",
            &[
                "-m",
                "--thin1",
                &a.to_string(),
                "--thin2",
                &b.to_string(),
                dev,
            ],
        );
        assert_eq!(code(&wyng), 0, "{}", stderr(&wyng));
        assert_eq!(wyng.stdout, short.stdout);
        // wyng: the root's data_block_size, the one <diff>'s children as
        // (tag, begin, length); it marks different and right_only blocks
        // changed and counts left_only ones freed.
        let text = stdout(&wyng);
        let root = text.lines().next().unwrap();
        assert!(root.starts_with("<superblock ") && root.contains("data_block_size=\"128\""));
        assert_eq!(text.matches("<diff ").count(), 1, "{text}");
        let (mut changed, mut freed) = (Vec::new(), Vec::new());
        for line in text.lines().map(str::trim) {
            let tag: String = line
                .trim_start_matches('<')
                .chars()
                .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
                .collect();
            let attr = |name: &str| -> u64 {
                let at = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                line[at..].split('"').next().unwrap().parse().unwrap()
            };
            let target = match tag.as_str() {
                "different" | "right_only" => &mut changed,
                "left_only" => &mut freed,
                _ => continue,
            };
            let begin = attr("begin");
            target.extend(begin..begin + attr("length"));
        }
        let (left, right) = (&pool[&a], &pool[&b]);
        let want_changed: Vec<u64> = right
            .iter()
            .filter(|(v, d)| left.get(v) != Some(d))
            .map(|(v, _)| *v)
            .collect();
        let want_freed: Vec<u64> = left
            .keys()
            .filter(|v| !right.contains_key(v))
            .copied()
            .collect();
        assert!(!changed.is_empty(), "{a} -> {b}: the snapshots differ");
        assert_eq!(changed, want_changed, "{a} -> {b}");
        assert_eq!(freed, want_freed, "{a} -> {b}");
    }
}

/// Cache XML of `n` cache blocks, every other one mapped, every fourth
/// dirty, each with a hint.
fn cache_xml(n: u32) -> String {
    let mut xml = format!(
        "<superblock uuid=\"\" block_size=\"64\" nr_cache_blocks=\"{n}\" policy=\"smq\" \
         hint_width=\"4\">\n  <mappings>\n"
    );
    for c in (0..n).step_by(2) {
        xml.push_str(&format!(
            "    <mapping cache_block=\"{c}\" origin_block=\"{}\" dirty=\"{}\"/>\n",
            7 * c,
            c % 4 == 0
        ));
    }
    xml.push_str("  </mappings>\n  <hints>\n");
    for c in (0..n).step_by(2) {
        xml.push_str(&format!(
            "    <hint cache_block=\"{c}\" data=\"AQAAAA==\"/>\n"
        ));
    }
    xml.push_str("  </hints>\n</superblock>");
    xml
}

#[test]
fn lvm2_cache_repair_writes_a_spare_that_the_activation_check_passes() {
    let s = Scratch::new("callers-cache-repair");
    let sbin = Sbin::new(&s);
    let xml = s.path("cache.xml");
    std::fs::write(&xml, cache_xml(4000)).unwrap();
    let meta = metadata_file(&s, "cmeta", 4 << 20);
    let o = sbin.run(
        "cache_restore",
        &["-i", xml.to_str().unwrap(), "-o", meta.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Damage the second mapping array block (cache blocks 509..1017):
    // its checksum no longer matches.
    let mut bytes = std::fs::read(&meta).unwrap();
    let block = (1..bytes.len() / 4096)
        .filter(|&b| {
            let blk = &bytes[b * 4096..(b + 1) * 4096];
            // Full blocks of 8-byte values: mapping blocks (the dirty
            // bitset's 63 words fill none).
            dmpd::io::checksum::matches(blk, dmpd::io::BlockKind::Array)
                && blk[12] == 8
                && u32::from_le_bytes(blk[8..12].try_into().unwrap()) == 509
        })
        .nth(1)
        .unwrap();
    bytes[block * 4096 + 64] ^= 0x40;
    std::fs::write(&meta, &bytes).unwrap();
    let o = sbin.run("cache_check", &["-q", meta.to_str().unwrap()]);
    assert_ne!(code(&o), 0, "the damage is not seen");
    for (n, stray) in [None, Some("")].into_iter().enumerate() {
        let spare = metadata_file(&s, &format!("spare{n}"), 4 << 20);
        // `cache_repair <options...> -i <metadata> -o <spare>`.
        let mut args: Vec<&str> = stray.into_iter().collect();
        args.extend(["-i", meta.to_str().unwrap(), "-o", spare.to_str().unwrap()]);
        let o = sbin.run("cache_repair", &args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("mappings are dropped"),
            "{}",
            stderr(&o)
        );
        assert!(
            std::fs::read(&meta).unwrap() == bytes,
            "the input was written"
        );
        // lvm2 swaps the spare in and checks it at activation.
        let o = sbin.run(
            "cache_check",
            &["-q", "--clear-needs-check-flag", spare.to_str().unwrap()],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = sbin.run(
        "cache_repair",
        &["-i", meta.to_str().unwrap(), "-o", "/dev/null", "x", "y"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}
