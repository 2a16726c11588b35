//! thin_dump's engine: metadata to XML (or a human-readable listing).
//!
//! The trees are validated first (the checker's walker), then each
//! selected device's leaves are listed in key order and the runs of
//! leaves devices share are found (see `sharing`). Output is assembled
//! as units (tags, and leaf sequences to format); the leaf sequences of a
//! window of units are formatted in parallel and written in order.

pub mod format;
pub mod sharing;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{anyhow, Result};
use rayon::prelude::*;

use crate::io::BlockSource;
use crate::pdata::btree::node::NodeView;
use crate::thin::block_time::BlockTime;
use crate::thin::device_details::DeviceDetails;
use crate::thin::devices::read_devices_strict;
use crate::thin::forest::{self, ordered_leaves};
use crate::thin::restore::xml::{
    DeviceAttrs, Emitter, Item, MappingRun, SuperblockAttrs, XmlError,
};
use crate::thin::superblock::{live_and_chosen, Superblock};

pub use format::{Format, Header, Run};
use sharing::Segment;

#[derive(Clone, Debug)]
pub struct DumpOptions {
    pub format: Format,
    pub metadata_snap: bool,
    pub skip_mappings: bool,
    /// Only these devices (all when None).
    pub dev_ids: Option<Vec<u64>>,
    /// Write every device's mappings in full, without `<def>`/`<ref>`.
    pub flat: bool,
    pub transaction_id: Option<u64>,
    pub data_block_size: Option<u32>,
    pub nr_data_blocks: Option<u64>,
}

/// Units formatted per window; bounds memory on large pools.
const WINDOW: usize = 256;

enum Unit {
    Text(Vec<u8>),
    Leaves(Vec<u64>),
}

/// The superblock a dump describes: the live one with overrides, or the
/// metadata snapshot's copy as it is.
pub fn select_superblock(src: &BlockSource, opts: &DumpOptions) -> Result<Superblock> {
    let (_, chosen) = live_and_chosen(src, opts.metadata_snap)?;
    if opts.metadata_snap {
        return Ok(chosen);
    }
    let mut sb = chosen;
    if let Some(t) = opts.transaction_id {
        sb.transaction_id = sb.transaction_id.max(t);
    }
    if let Some(s) = opts.data_block_size {
        sb.data_block_size = s;
    }
    if let Some(n) = opts.nr_data_blocks {
        sb.data_sm_root.nr_blocks = sb.data_sm_root.nr_blocks.max(n);
    }
    Ok(sb)
}

pub fn dump(src: &BlockSource, opts: &DumpOptions, out: &mut dyn Write) -> Result<()> {
    let sb = select_superblock(src, opts)?;
    let header = Header {
        time: sb.time,
        transaction: sb.transaction_id,
        flags: sb.flags & crate::thin::superblock::NEEDS_CHECK,
        version: sb.version,
        data_block_size: sb.data_block_size,
        nr_data_blocks: sb.data_sm_root.nr_blocks,
    };
    let fmt = opts.format;
    let (roots, details) = read_devices_strict(src, sb.mapping_root, sb.details_root)?;
    let selected: Vec<(u64, DeviceDetails)> = details
        .iter()
        .filter(|(id, _)| opts.dev_ids.as_ref().is_none_or(|ids| ids.contains(id)))
        .map(|(id, d)| (*id, *d))
        .collect();

    if opts.skip_mappings {
        let devices: Vec<DeviceLeaves> =
            selected.into_iter().map(|(id, d)| (id, d, None)).collect();
        return write_devices(
            src,
            &header,
            fmt,
            opts.flat,
            &devices,
            Filter::default(),
            out,
        );
    }
    let device_roots = device_roots(&selected, &roots)?;
    let named: Vec<(String, u64)> = device_roots
        .iter()
        .map(|(id, r)| (format!("device {id}"), *r))
        .collect();
    forest::validate_named(src, &named)?;
    let sequences: Vec<Vec<u64>> = device_roots
        .par_iter()
        .map(|(_, r)| ordered_leaves(src, *r))
        .collect();
    let devices: Vec<DeviceLeaves> = selected
        .into_iter()
        .zip(sequences)
        .map(|((id, d), leaves)| (id, d, Some(leaves)))
        .collect();
    write_devices(
        src,
        &header,
        fmt,
        opts.flat,
        &devices,
        Filter::default(),
        out,
    )
}

/// A device to write: id, details, and its leaves in key order (None
/// writes the device without mappings).
pub type DeviceLeaves = (u64, DeviceDetails, Option<Vec<u64>>);

/// The entries to write of leaves that lost some (repair's salvage): leaf
/// block -> indices of the entries kept, in key order. Other leaves are
/// written whole.
pub type KeptEntries = crate::pdata::block_hash::BlockMap<Vec<u16>>;

/// What to leave out of the leaves written (repair).
#[derive(Clone, Copy, Default)]
pub struct Filter<'a> {
    /// Mappings to data blocks at or beyond this are left out.
    pub drop_from: Option<u64>,
    pub kept: Option<&'a KeptEntries>,
}

/// Writes a dump of `devices`, sharing the leaf runs several devices hold
/// (unless `flat`), leaving out what `filter` says (repair).
pub fn write_devices(
    src: &BlockSource,
    header: &Header,
    fmt: Format,
    flat: bool,
    devices: &[DeviceLeaves],
    filter: Filter,
    out: &mut dyn Write,
) -> Result<()> {
    let mut units = Vec::new();
    let mut text = Vec::new();
    fmt.begin(header, &mut text);
    let sequences: Vec<Vec<u64>> = devices
        .iter()
        .map(|(_, _, l)| l.clone().unwrap_or_default())
        .collect();
    let share = if flat {
        sharing::Sharing {
            defs: Vec::new(),
            devices: sequences
                .into_iter()
                .map(|s| vec![Segment::Inline(s)])
                .collect(),
        }
    } else {
        sharing::analyse(&sequences)
    };
    for def in share.defs.iter() {
        fmt.begin_def(def[0], &mut text);
        units.push(Unit::Text(std::mem::take(&mut text)));
        units.push(Unit::Leaves(def.clone()));
        fmt.end_def(&mut text);
    }
    for ((id, d, _), segments) in devices.iter().zip(&share.devices) {
        fmt.begin_device(*id, d, &mut text);
        for seg in segments {
            match seg {
                Segment::Shared(i) => fmt.reference(share.defs[*i][0], &mut text),
                Segment::Inline(leaves) if leaves.is_empty() => {}
                Segment::Inline(leaves) => {
                    units.push(Unit::Text(std::mem::take(&mut text)));
                    units.push(Unit::Leaves(leaves.clone()));
                }
            }
        }
        fmt.end_device(&mut text);
    }
    fmt.end(&mut text);
    units.push(Unit::Text(text));

    for window in units.chunks(WINDOW) {
        let parts: Vec<Vec<u8>> = window
            .par_iter()
            .map(|u| match u {
                Unit::Text(t) => t.clone(),
                Unit::Leaves(leaves) => format_leaves(src, fmt, leaves, filter),
            })
            .collect();
        for p in parts {
            out.write_all(&p)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn device_roots(
    selected: &[(u64, DeviceDetails)],
    roots: &BTreeMap<u64, u64>,
) -> Result<Vec<(u64, u64)>> {
    selected
        .iter()
        .map(|(id, _)| {
            roots
                .get(id)
                .map(|r| (*id, *r))
                .ok_or_else(|| anyhow!("device {id} has details but no mapping tree"))
        })
        .collect()
}

/// The mappings of consecutive leaves as merged runs, in key order,
/// without what `filter` leaves out (thin_migrate reads a device's
/// mappings, strict or salvaged, through this too).
pub fn leaf_runs(src: &BlockSource, leaves: &[u64], filter: Filter, mut f: impl FnMut(&Run)) {
    let mut run: Option<Run> = None;
    let mut add = |virt: u64, v: u64| {
        let bt = BlockTime::unpack(v);
        if filter.drop_from.is_some_and(|limit| bt.block >= limit) {
            return;
        }
        match run.as_mut() {
            Some(r)
                if r.virt + r.len == virt && r.data + r.len == bt.block && r.time == bt.time =>
            {
                r.len += 1
            }
            _ => {
                if let Some(done) = run.replace(Run {
                    virt,
                    data: bt.block,
                    len: 1,
                    time: bt.time,
                }) {
                    f(&done);
                }
            }
        }
    };
    for &leaf in leaves {
        let Ok(data) = src.block(leaf) else { continue };
        let node = NodeView::new(data);
        match filter.kept.and_then(|k| k.get(&leaf)) {
            Some(kept) => {
                for &i in kept {
                    add(node.key(i as u32), node.value_u64(i as u32));
                }
            }
            None => {
                for (virt, v) in node.entries_u64() {
                    add(virt, v);
                }
            }
        }
    }
    if let Some(done) = run {
        f(&done);
    }
}

/// The mappings of consecutive leaves as merged runs, formatted.
fn format_leaves(src: &BlockSource, fmt: Format, leaves: &[u64], filter: Filter) -> Vec<u8> {
    let mut out = Vec::with_capacity(leaves.len() * 4096);
    leaf_runs(src, leaves, filter, |r| fmt.run(r, &mut out));
    out
}

/// Items numbered in order, for messages.
struct Numbered<'a> {
    out: &'a mut Emitter,
    at: u64,
}

impl Numbered<'_> {
    /// False once the consumer has stopped.
    fn emit(&mut self, item: Item) -> bool {
        self.at += 1;
        self.out.emit(Ok((item, self.at)))
    }

    fn leaves(&mut self, src: &BlockSource, leaves: &[u64], filter: Filter) -> bool {
        let mut going = true;
        leaf_runs(src, leaves, filter, |r| {
            going = going
                && self.emit(Item::Mapping(MappingRun {
                    virt: r.virt,
                    data: r.data,
                    len: r.len,
                    time: r.time,
                }));
        });
        going
    }
}

/// What `write_devices` would write (shared runs as defs), as items for
/// the restore engine: repair builds its output from these without an
/// XML text in between. Positions are item numbers.
pub fn emit_devices(
    src: &BlockSource,
    header: &Header,
    devices: &[DeviceLeaves],
    filter: Filter,
    out: &mut Emitter,
) {
    let mut out = Numbered { out, at: 0 };
    let sequences: Vec<Vec<u64>> = devices
        .iter()
        .map(|(_, _, l)| l.clone().unwrap_or_default())
        .collect();
    let share = sharing::analyse(&sequences);
    let going = out.emit(Item::Superblock(SuperblockAttrs {
        uuid: String::new(),
        time: header.time,
        transaction: header.transaction,
        flags: header.flags,
        version: header.version,
        data_block_size: header.data_block_size,
        nr_data_blocks: header.nr_data_blocks,
    }));
    if !going {
        return;
    }
    for def in &share.defs {
        if !(out.emit(Item::Def(def[0].to_string()))
            && out.leaves(src, def, filter)
            && out.emit(Item::EndDef))
        {
            return;
        }
    }
    for ((id, d, _), segments) in devices.iter().zip(&share.devices) {
        let Ok(dev_id) = u32::try_from(*id) else {
            out.out.emit(Err(XmlError {
                offset: out.at,
                message: format!("device id {id} does not fit 32 bits"),
            }));
            return;
        };
        let going = out.emit(Item::Device(DeviceAttrs {
            dev_id,
            mapped_blocks: d.mapped_blocks,
            transaction: d.transaction_id,
            creation_time: d.creation_time,
            snap_time: d.snapshotted_time,
        }));
        if !going {
            return;
        }
        for seg in segments {
            let going = match seg {
                Segment::Shared(i) => out.emit(Item::Ref(share.defs[*i][0].to_string())),
                Segment::Inline(leaves) => out.leaves(src, leaves, filter),
            };
            if !going {
                return;
            }
        }
        if !out.emit(Item::EndDevice) {
            return;
        }
    }
    out.emit(Item::EndSuperblock);
}
