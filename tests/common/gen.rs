//! A generated pool for tests that need one without ../shared: an origin
//! and three snapshots sharing sections of it (each rewriting some
//! sections with data of its own, at a later time), and a small device
//! whose tree is a single leaf. Deterministic.

use std::fmt::Write;
use std::path::Path;

use super::{code, run, stderr};

/// A small xorshift generator: the same pool on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SECTIONS: usize = 10;
const SECTION_MAPPINGS: usize = 600;

fn mapping(out: &mut String, virt: u64, data: u64, time: u32) {
    writeln!(
        out,
        "    <single_mapping origin_block=\"{virt}\" data_block=\"{data}\" time=\"{time}\"/>"
    )
    .unwrap();
}

/// The pool's XML.
pub fn snapshot_pool_xml() -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sections: Vec<Vec<(u64, u64)>> = Vec::new();
    let (mut virt, mut data) = (0u64, 0u64);
    for _ in 0..SECTIONS {
        let mut s = Vec::new();
        while s.len() < SECTION_MAPPINGS {
            let len = 1 + rng.below(40);
            s.extend((0..len).map(|i| (virt + i, data + i)));
            virt += len + rng.below(6);
            data += len + rng.below(4);
        }
        sections.push(s);
    }
    let mut next_data = data + 10;
    let mut out = String::from(
        "<superblock uuid=\"\" time=\"4\" transaction=\"9\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"100000\">\n",
    );
    for (i, s) in sections.iter().enumerate() {
        writeln!(out, "  <def name=\"s{i}\">").unwrap();
        for &(v, d) in s {
            mapping(&mut out, v, d, 0);
        }
        out.push_str("  </def>\n");
    }
    let device = |out: &mut String, id: u32, mapped: usize, created: u32, body: &str| {
        writeln!(
            out,
            "  <device dev_id=\"{id}\" mapped_blocks=\"{mapped}\" transaction=\"{id}\" creation_time=\"{created}\" snap_time=\"4\">"
        )
        .unwrap();
        out.push_str(body);
        out.push_str("  </device>\n");
    };
    let all: usize = sections.iter().map(Vec::len).sum();
    let origin: String = (0..SECTIONS)
        .map(|i| format!("    <ref name=\"s{i}\"/>\n"))
        .collect();
    device(&mut out, 0, all, 0, &origin);
    for snap in 1..=3u32 {
        let mut body = String::new();
        for (i, s) in sections.iter().enumerate() {
            if rng.below(10) < 3 {
                for &(v, _) in s {
                    mapping(&mut body, v, next_data, snap);
                    next_data += 1;
                }
            } else {
                writeln!(body, "    <ref name=\"s{i}\"/>").unwrap();
            }
        }
        device(&mut out, snap, all, snap, &body);
    }
    let mut small = String::new();
    for i in 0..100 {
        mapping(&mut small, i * 3, next_data + i, 4);
    }
    device(&mut out, 7, 100, 4, &small);
    out.push_str("</superblock>\n");
    out
}

/// Restores the pool into a new 8 MiB metadata file at `path`.
pub fn snapshot_pool(dir: &Path, path: &Path) -> Vec<u8> {
    let xml = dir.join("generated.xml");
    std::fs::write(&xml, snapshot_pool_xml()).unwrap();
    std::fs::File::create(path)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let o = run(
        "thin_restore",
        &["-i", xml.to_str().unwrap(), "-o", path.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    std::fs::read(path).unwrap()
}
