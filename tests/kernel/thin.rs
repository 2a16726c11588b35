//! Host-side reading of thin results: the kernel's status lines as the
//! guest printed them, and what dmpd says about the metadata disk.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use super::common::{code, run, stderr, stdout};
use super::harness::Outcome;

/// A thin-pool status line: `<transaction> <used>/<total metadata>
/// <used>/<total data> <held root or -> ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub transaction: u64,
    pub meta_used: u64,
    pub meta_total: u64,
    pub data_used: u64,
    pub data_total: u64,
    pub held: Option<u64>,
}

fn fraction(s: &str) -> (u64, u64) {
    let (a, b) = s.split_once('/').expect("used/total");
    (a.parse().unwrap(), b.parse().unwrap())
}

/// The words after the target name of the `@@KEY NAME: ...` line (KEY
/// `status` for the status at the end of a workload).
pub fn status_words(out: &Outcome, key: &str, name: &str, target: &str) -> Vec<String> {
    let line = out.value(key, &format!("{name}:"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(2), Some(&target), "{name}: status {line}");
    words[3..].iter().map(|w| w.to_string()).collect()
}

pub fn pool_status(out: &Outcome, key: &str, name: &str) -> PoolStatus {
    let w = status_words(out, key, name, "thin-pool");
    let (meta_used, meta_total) = fraction(&w[1]);
    let (data_used, data_total) = fraction(&w[2]);
    PoolStatus {
        transaction: w[0].parse().unwrap(),
        meta_used,
        meta_total,
        data_used,
        data_total,
        held: (w[3] != "-").then(|| w[3].parse().unwrap()),
    }
}

/// Mapped sectors of a thin device (status field 1).
pub fn mapped_sectors(out: &Outcome, key: &str, name: &str) -> u64 {
    status_words(out, key, name, "thin")[0].parse().unwrap()
}

/// The `@@sha NAME HEX` lines.
pub fn shas(out: &Outcome) -> BTreeMap<String, String> {
    out.values("sha")
        .into_iter()
        .map(|v| {
            let (n, h) = v.split_once(' ').unwrap();
            (n.to_string(), h.trim().to_string())
        })
        .collect()
}

/// The free metadata blocks a checker counts, from the kernel's status:
/// the kernel counts its metadata reserve (a tenth of the device, at most
/// 4096 blocks) as used.
pub fn checker_free_metadata(s: &PoolStatus) -> u64 {
    s.meta_total - s.meta_used + (s.meta_total / 10).min(4096)
}

/// What dmpd's thin_dump --flat says: per device (id -> mapped blocks),
/// the transaction, the data size, and the distinct data blocks used.
#[derive(Debug, Default)]
pub struct Dump {
    pub transaction: u64,
    pub nr_data_blocks: u64,
    pub devices: BTreeMap<u64, u64>,
    pub data_used: u64,
    /// The data blocks the mappings use.
    pub data_blocks: roaring::RoaringTreemap,
}

fn attr(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=\"");
    let at = line.find(&key)? + key.len();
    line[at..].split('"').next()?.parse().ok()
}

pub fn dump(meta: &Path, extra: &[&str]) -> Dump {
    let p = meta.to_str().unwrap();
    let mut args = vec!["--flat", p];
    args.extend_from_slice(extra);
    let o = run("thin_dump", &args);
    assert_eq!(code(&o), 0, "thin_dump {args:?}: {}", stderr(&o));
    let mut d = Dump::default();
    let mut used = roaring::RoaringTreemap::new();
    let mut dev = None;
    for line in stdout(&o).lines() {
        let l = line.trim_start();
        if l.starts_with("<superblock") {
            d.transaction = attr(l, "transaction").unwrap();
            d.nr_data_blocks = attr(l, "nr_data_blocks").unwrap();
        } else if l.starts_with("<device ") {
            let id = attr(l, "dev_id").unwrap();
            d.devices.insert(id, attr(l, "mapped_blocks").unwrap());
            dev = Some(id);
        } else if l.starts_with("<range_mapping") {
            let b = attr(l, "data_begin").unwrap();
            used.insert_range(b..b + attr(l, "length").unwrap());
        } else if l.starts_with("<single_mapping") {
            used.insert(attr(l, "data_block").unwrap());
        }
    }
    assert!(dev.is_some() || d.devices.is_empty());
    d.data_used = used.len();
    d.data_blocks = used;
    d
}

/// thin_ls: device id -> mapped blocks.
pub fn ls_mapped(meta: &Path, extra: &[&str]) -> BTreeMap<u64, u64> {
    let p = meta.to_str().unwrap();
    let mut args = vec!["--no-headers", "-o", "DEV,MAPPED_BLOCKS", p];
    args.extend_from_slice(extra);
    let o = run("thin_ls", &args);
    assert_eq!(code(&o), 0, "thin_ls {args:?}: {}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let w: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (w[0], w[1])
        })
        .collect()
}

/// dmpd's thin_check (exit 0, and its free metadata count) and Debian's
/// 0.9.0 thin_check, both on the file.
pub fn check_clean(meta: &Path, extra: &[&str]) -> u64 {
    let p = meta.to_str().unwrap();
    let mut args = extra.to_vec();
    args.push(p);
    let o = run("thin_check", &args);
    assert_eq!(
        code(&o),
        0,
        "dmpd thin_check {args:?}:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    if let Some(debian) = debian_thin_check() {
        let d = std::process::Command::new(debian)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            d.status.code(),
            Some(0),
            "Debian thin_check {args:?}: {}",
            String::from_utf8_lossy(&d.stderr)
        );
    }
    stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("METADATA_FREE_BLOCKS="))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0)
}

/// Debian's 0.9.0 thin_check, the independent checker, where installed.
pub fn debian_thin_check() -> Option<&'static Path> {
    Some(Path::new("/usr/sbin/thin_check")).filter(|p| p.is_file())
}

/// The superblock of a metadata file.
pub fn superblock(meta: &Path) -> dmpd::thin::superblock::Superblock {
    use std::io::Read;
    let mut b = vec![0u8; 4096];
    std::fs::File::open(meta)
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    dmpd::thin::superblock::Superblock::parse(&b)
}

/// Every agreement between the kernel's last status and dmpd's reading
/// of the metadata it left: devices and their mapped blocks (thin_ls and
/// thin_dump), transaction id, data size and used data blocks, free
/// metadata blocks, the held metadata snapshot.
pub fn agree(out: &Outcome, key: &str, meta: &Path, pool: &str, devs: &[(&str, u64)]) {
    let st = pool_status(out, key, pool);
    let free = check_clean(meta, &[]);
    assert_eq!(
        free,
        checker_free_metadata(&st),
        "free metadata blocks vs {st:?}"
    );
    let sb = superblock(meta);
    assert_eq!(sb.transaction_id, st.transaction);
    assert_eq!(
        (sb.metadata_snap != 0).then_some(sb.metadata_snap),
        st.held,
        "held metadata root"
    );
    let d = dump(meta, &[]);
    assert_eq!(d.transaction, st.transaction);
    assert_eq!(d.nr_data_blocks, st.data_total);
    // The data space map counts the blocks a held metadata snapshot's
    // trees use too (the kernel keeps them allocated while it is held).
    let mut data_blocks = d.data_blocks.clone();
    if st.held.is_some() {
        data_blocks |= &dump(meta, &["-m"]).data_blocks;
    }
    assert_eq!(data_blocks.len(), st.data_used, "used data blocks");
    let ls = ls_mapped(meta, &[]);
    let block_sectors = sb.data_block_size as u64;
    let kernel: BTreeMap<u64, u64> = devs
        .iter()
        .map(|(name, id)| (*id, mapped_sectors(out, key, name) / block_sectors))
        .collect();
    assert_eq!(ls, kernel, "thin_ls mapped blocks vs the kernel's");
    assert_eq!(d.devices, kernel, "thin_dump mapped_blocks vs the kernel's");
    if st.held.is_some() {
        check_clean(meta, &["-m"]);
        let snap = ls_mapped(meta, &["-m"]);
        let dm = dump(meta, &["-m"]);
        assert_eq!(snap, dm.devices, "thin_ls -m vs thin_dump -m");
    }
}

/// The attribute `name` of every `<TAG ...>` line of an XML dump.
pub fn xml_attrs(xml: &str, tag: &str, name: &str) -> Vec<String> {
    let open = format!("<{tag} ");
    let key = format!(" {name}=\"");
    xml.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with(&open))
        .filter_map(|l| {
            let at = l.find(&key)? + key.len();
            Some(l[at..].split('"').next()?.to_string())
        })
        .collect()
}
