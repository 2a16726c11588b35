//! A small, independent reader of thin XML dumps for tests: expands
//! `<def>`/`<ref>` into per-device mapping lists.

use std::collections::{BTreeMap, HashMap};

/// One mapped block: (virtual block, data block, time).
pub type Mapping = (u64, u64, u32);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub attrs: BTreeMap<String, String>,
    pub mappings: Vec<Mapping>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub superblock: BTreeMap<String, String>,
    pub devices: BTreeMap<u64, Device>,
}

fn attrs(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(' ').next().unwrap().to_string();
        let after = &rest[eq + 2..];
        let end = after.find('"').unwrap();
        out.insert(name, after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

fn num(a: &BTreeMap<String, String>, k: &str) -> u64 {
    a[k].parse().unwrap()
}

fn expand(line: &str, out: &mut Vec<Mapping>) {
    let a = attrs(line);
    if line.starts_with("<single_mapping") {
        out.push((
            num(&a, "origin_block"),
            num(&a, "data_block"),
            num(&a, "time") as u32,
        ));
    } else if line.starts_with("<range_mapping") {
        let (o, d, n) = (
            num(&a, "origin_begin"),
            num(&a, "data_begin"),
            num(&a, "length"),
        );
        for i in 0..n {
            out.push((o + i, d + i, num(&a, "time") as u32));
        }
    }
}

pub fn parse(text: &str) -> Pool {
    let mut pool = Pool::default();
    let mut defs: HashMap<String, Vec<Mapping>> = HashMap::new();
    let mut current_def: Option<(String, Vec<Mapping>)> = None;
    let mut current_dev: Option<(u64, Device)> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with("<superblock") {
            pool.superblock = attrs(line);
        } else if line.starts_with("<def") {
            current_def = Some((attrs(line)["name"].clone(), Vec::new()));
        } else if line.starts_with("</def") {
            let (name, m) = current_def.take().unwrap();
            defs.insert(name, m);
        } else if line.starts_with("<device") {
            let a = attrs(line);
            current_dev = Some((
                num(&a, "dev_id"),
                Device {
                    attrs: a,
                    mappings: Vec::new(),
                },
            ));
        } else if line.starts_with("</device") {
            let (id, d) = current_dev.take().unwrap();
            pool.devices.insert(id, d);
        } else if line.starts_with("<ref") {
            let name = attrs(line)["name"].clone();
            let (_, dev) = current_dev.as_mut().unwrap();
            dev.mappings.extend(defs[&name].iter().copied());
        } else if let Some((_, m)) = current_def.as_mut() {
            expand(line, m);
        } else if let Some((_, d)) = current_dev.as_mut() {
            expand(line, &mut d.mappings);
        }
    }
    pool
}
