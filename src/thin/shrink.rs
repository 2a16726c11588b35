//! thin_shrink's engine: move the data blocks that lie beyond a new, smaller
//! data size into free space below it, and rewrite the mappings.
//!
//! Works on thin XML, streaming, in two passes: the first collects the
//! mapped data ranges and plans the moves (ranges above the new size, in
//! ascending order, into free ranges below it, first fit, split as needed);
//! the second rewrites every mapping through the plan. Shared sections stay
//! shared: a data block is moved once, whichever devices map it.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::thin::dump::{Format, Header, Run};
use crate::thin::restore::xml::{Item, MappingRun, XmlDoc, XmlItems};

/// Data blocks [from, from + len) move to [to, to + len).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub from: u64,
    pub to: u64,
    pub len: u64,
}

/// The union of mapped data ranges, sorted and merged.
fn mapped_ranges(xml: &Path) -> Result<(u64, Vec<(u64, u64)>)> {
    let doc = XmlDoc::open(xml).with_context(|| format!("cannot read '{}'", xml.display()))?;
    let mut items = XmlItems::new(doc.bytes());
    let mut ranges = Vec::new();
    let mut nr_data_blocks = None;
    while let Some((item, _)) = items
        .next_item()
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
    {
        match item {
            Item::Superblock(s) => nr_data_blocks = Some(s.nr_data_blocks),
            Item::Mapping(r) => ranges.push((r.data, r.data + r.len)),
            _ => {}
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (b, e) in ranges {
        match merged.last_mut() {
            Some(last) if b <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((b, e)),
        }
    }
    Ok((
        nr_data_blocks.context("no superblock in the input")?,
        merged,
    ))
}

/// Plans the moves that bring every mapped block below `new_size`.
pub fn plan(mapped: &[(u64, u64)], new_size: u64) -> Result<Vec<Move>> {
    let mut free = Vec::new();
    let mut at = 0;
    for &(b, e) in mapped {
        if b >= new_size {
            break;
        }
        if b > at {
            free.push((at, b));
        }
        at = at.max(e);
    }
    if at < new_size {
        free.push((at, new_size));
    }
    let mut above: Vec<(u64, u64)> = mapped
        .iter()
        .filter(|&&(_, e)| e > new_size)
        .map(|&(b, e)| (b.max(new_size), e))
        .collect();
    above.reverse();
    let mut moves = Vec::new();
    let mut free = free.into_iter();
    let mut hole = free.next();
    while let Some((b, e)) = above.pop() {
        let Some((hb, he)) = hole else {
            let left: u64 = (e - b) + above.iter().map(|(b, e)| e - b).sum::<u64>();
            bail!("Insufficient free space: {left} mapped blocks lie at or beyond {new_size} and no free block below it is left");
        };
        let n = (e - b).min(he - hb);
        moves.push(Move {
            from: b,
            to: hb,
            len: n,
        });
        if b + n < e {
            above.push((b + n, e));
        }
        hole = if hb + n < he {
            Some((hb + n, he))
        } else {
            free.next()
        };
    }
    Ok(moves)
}

/// `run` through the moves: one or more runs.
fn remap(run: MappingRun, moves: &[Move], out: &mut Vec<Run>) {
    let (mut virt, mut data, mut left) = (run.virt, run.data, run.len);
    while left > 0 {
        // The move containing `data`, or the next one after it.
        let i = moves.partition_point(|m| m.from + m.len <= data);
        let (target, n) = match moves.get(i) {
            Some(m) if m.from <= data => {
                (m.to + (data - m.from), (m.from + m.len - data).min(left))
            }
            Some(m) => (data, (m.from - data).min(left)),
            None => (data, left),
        };
        out.push(Run {
            virt,
            data: target,
            len: n,
            time: run.time,
        });
        virt += n;
        data += n;
        left -= n;
    }
}

/// The data block size (sectors) the XML's superblock records.
pub fn data_block_size(xml: &Path) -> Result<u32> {
    let doc = XmlDoc::open(xml)?;
    let mut items = XmlItems::new(doc.bytes());
    while let Some((item, _)) = items
        .next_item()
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
    {
        if let Item::Superblock(s) = item {
            return Ok(s.data_block_size);
        }
    }
    bail!("no superblock in '{}'", xml.display())
}

/// Copies the moved data blocks on the data device, then flushes it.
pub fn copy_data(data: &Path, moves: &[Move], block_sectors: u32) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data)
        .with_context(|| format!("cannot open data device '{}'", data.display()))?;
    let bytes = block_sectors as u64 * 512;
    let mut buf = vec![0u8; bytes as usize];
    for m in moves {
        for i in 0..m.len {
            file.read_exact_at(&mut buf, (m.from + i) * bytes)
                .with_context(|| format!("reading data block {}", m.from + i))?;
            file.write_all_at(&buf, (m.to + i) * bytes)
                .with_context(|| format!("writing data block {}", m.to + i))?;
        }
    }
    file.sync_all()?;
    Ok(())
}

/// Rewrites `xml` to `out` with every mapping below `new_size`.
pub fn shrink_xml(xml: &Path, new_size: u64, out: &mut dyn Write) -> Result<Vec<Move>> {
    let (_, mapped) = mapped_ranges(xml)?;
    let moves = plan(&mapped, new_size)?;
    let doc = XmlDoc::open(xml)?;
    let mut items = XmlItems::new(doc.bytes());
    let fmt = Format::Xml;
    let mut buf = Vec::new();
    let mut pending: Option<Run> = None;
    let mut runs = Vec::new();
    let flush = |pending: &mut Option<Run>, buf: &mut Vec<u8>| {
        if let Some(r) = pending.take() {
            fmt.run(&r, buf);
        }
    };
    while let Some((item, _)) = items
        .next_item()
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
    {
        match item {
            Item::Superblock(s) => fmt.begin(
                &Header {
                    time: s.time,
                    transaction: s.transaction,
                    flags: s.flags,
                    version: s.version,
                    data_block_size: s.data_block_size,
                    nr_data_blocks: new_size,
                },
                &mut buf,
            ),
            Item::Def(name) => {
                buf.extend_from_slice(b"  <def name=\"");
                buf.extend_from_slice(name.replace('"', "&quot;").as_bytes());
                buf.extend_from_slice(b"\">\n");
            }
            Item::EndDef => {
                flush(&mut pending, &mut buf);
                fmt.end_def(&mut buf);
            }
            Item::Device(d) => fmt.begin_device(
                d.dev_id as u64,
                &crate::thin::device_details::DeviceDetails {
                    mapped_blocks: d.mapped_blocks,
                    transaction_id: d.transaction,
                    creation_time: d.creation_time,
                    snapshotted_time: d.snap_time,
                },
                &mut buf,
            ),
            Item::EndDevice => {
                flush(&mut pending, &mut buf);
                fmt.end_device(&mut buf);
            }
            Item::Ref(name) => {
                flush(&mut pending, &mut buf);
                buf.extend_from_slice(b"    <ref name=\"");
                buf.extend_from_slice(name.replace('"', "&quot;").as_bytes());
                buf.extend_from_slice(b"\"/>\n");
            }
            Item::Mapping(run) => {
                runs.clear();
                remap(run, &moves, &mut runs);
                for r in &runs {
                    match pending.as_mut() {
                        Some(p)
                            if p.virt + p.len == r.virt
                                && p.data + p.len == r.data
                                && p.time == r.time =>
                        {
                            p.len += r.len
                        }
                        _ => {
                            flush(&mut pending, &mut buf);
                            pending = Some(*r);
                        }
                    }
                }
            }
            Item::EndSuperblock => fmt.end(&mut buf),
        }
        if buf.len() > 1 << 20 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_fill_holes_first_fit() {
        // Mapped: 0..2, 5..6, 10..14; shrink to 8: free 2..5, 6..8.
        let moves = plan(&[(0, 2), (5, 6), (10, 14)], 8).unwrap();
        assert_eq!(
            moves,
            vec![
                Move {
                    from: 10,
                    to: 2,
                    len: 3
                },
                Move {
                    from: 13,
                    to: 6,
                    len: 1
                }
            ]
        );
        assert!(plan(&[(0, 2), (5, 6), (10, 16)], 8).is_err());
        let mut out = Vec::new();
        remap(
            MappingRun {
                virt: 100,
                data: 9,
                len: 6,
                time: 1,
            },
            &moves,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                Run {
                    virt: 100,
                    data: 9,
                    len: 1,
                    time: 1
                },
                Run {
                    virt: 101,
                    data: 2,
                    len: 3,
                    time: 1
                },
                Run {
                    virt: 104,
                    data: 6,
                    len: 1,
                    time: 1
                },
                Run {
                    virt: 105,
                    data: 14,
                    len: 1,
                    time: 1
                },
            ]
        );
    }
}
