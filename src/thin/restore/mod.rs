//! thin_restore's engine: thin XML to binary metadata.
//!
//! Two streaming passes over the XML. The first validates everything and
//! sizes the result, so a mistake in the XML, or an output too small,
//! costs nothing: the output is not touched. The second builds the
//! metadata: where the output holds a valid transaction and room enough
//! beside it, every new block goes where that transaction's space map
//! says "free" (keep.rs), so a crash part way leaves it whole; otherwise
//! the old superblock is invalidated first (a crash then leaves no valid
//! superblock over half-written trees). Every new block is written and
//! flushed, and the new superblock is written last.
//! Memory is bounded by the devices and shared sections, not by the
//! number of mappings.

mod data_use;
pub mod keep;
pub mod log;
pub mod xml;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use roaring::RoaringTreemap;

use data_use::DataUses;

use crate::io::sink::BlockSink;
use crate::io::BLOCK_SIZE;
use crate::pdata::btree::builder::{
    build_root, build_tree, nodes_for, LevelBuilder, MetadataWriter,
};
use crate::pdata::btree::node::max_entries_for;
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::bitmap::{ENTRIES_PER_BITMAP, MAX_METADATA_BLOCKS};
use crate::pdata::space_map::writer;
use crate::report::phases;
use crate::thin::block_time::BlockTime;
use crate::thin::device_details::{DeviceDetails, DEVICE_DETAILS_SIZE};
use crate::thin::superblock::Superblock;

use log::ItemLog;
use xml::{
    DeviceAttrs, Item, ItemSource, ItemsAhead, MappingRun, SuperblockAttrs, XmlDoc, XmlError,
    XmlItems, XmlResult,
};

#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub transaction_id: Option<u64>,
    pub data_block_size: Option<u32>,
    pub nr_data_blocks: Option<u64>,
}

const MAPPING_VALUE_SIZE: u32 = 8;
const TOP_LEVEL_VALUE_SIZE: u32 = 8;
const MIN_DATA_BLOCK_SIZE: u32 = 128;
const MAX_DATA_BLOCK_SIZE: u32 = 2097152;

fn leaf_capacity() -> u64 {
    max_entries_for(MAPPING_VALUE_SIZE as usize) as u64
}

/// Internal nodes above `leaves` leaves (an empty tree is one leaf).
fn internal_nodes(leaves: u64) -> u64 {
    nodes_for(leaves * leaf_capacity(), MAPPING_VALUE_SIZE) - leaves.max(1)
}

#[derive(Clone, Debug, Default)]
struct DefInfo {
    first: Option<u64>,
    last: u64,
    mappings: u64,
    refs: u32,
}

impl DefInfo {
    fn leaves(&self) -> u64 {
        self.mappings.div_ceil(leaf_capacity())
    }
}

/// What the first pass learns.
#[derive(Debug)]
pub struct Plan {
    pub superblock: SuperblockAttrs,
    defs: HashMap<String, DefInfo>,
    /// Blocks the restore writes, except the metadata space map's own.
    blocks_before_space_map: u64,
    pub nr_devices: u64,
    pub nr_data_blocks: u64,
    /// The items, for the building pass to replay (None if they did not
    /// fit the log's budget: then it parses again).
    log: Option<ItemLog>,
}

impl Plan {
    /// The items the first pass recorded, unless they outgrew the log.
    pub fn replay(&self) -> Option<log::LogReplay<'_>> {
        self.log.as_ref().map(ItemLog::replay)
    }

    /// Metadata blocks needed on an output of `nr_blocks` blocks.
    pub fn blocks_needed(&self, nr_blocks: u64) -> u64 {
        writer::blocks_needed(self.blocks_before_space_map, nr_blocks)
    }

    /// The smallest output, in blocks, the metadata fits on (its space map
    /// grows with the output, a bitmap per 16320 blocks), and never less
    /// than the tools' floor of ten blocks.
    pub fn smallest_output(&self) -> u64 {
        writer::smallest_output(self.blocks_before_space_map)
    }

    /// The blocks the metadata may use of an output of `bytes` bytes, or
    /// an error naming the output, its size and the smallest that would do.
    pub fn room(&self, output: &str, bytes: u64) -> Result<u64> {
        writer::room(output, bytes, self.blocks_before_space_map)
    }
}

/// Smallest binary-metadata output the tools accept, in blocks.
pub use writer::MIN_OUTPUT_BLOCKS;

fn located(path: &Path, e: XmlError) -> anyhow::Error {
    let (line, col) = xml::locate(path, e.offset);
    anyhow!(
        "{}: line {line}, column {col}: {}",
        path.display(),
        e.message
    )
}

/// The first pass: validates the whole document and sizes the result.
pub fn validate(path: &Path, overrides: &Overrides) -> Result<Plan> {
    let doc = XmlDoc::open(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    std::thread::scope(|scope| {
        Validator::default().run(&mut ItemsAhead::parse(scope, &doc), overrides)
    })
    .map_err(|e| located(path, e))
}

/// The first pass over items from any source (repair's salvage).
pub fn validate_items(items: &mut dyn ItemSource, overrides: &Overrides) -> XmlResult<Plan> {
    Validator::default().run(items, overrides)
}

/// The first pass over XML from any reader (fuzzing, tests).
pub fn validate_reader(input: &[u8], overrides: &Overrides) -> XmlResult<Plan> {
    Validator::default().run(&mut XmlItems::new(input), overrides)
}

#[derive(Default)]
enum Container {
    #[default]
    None,
    Def(String, DefInfo),
    Device(DeviceAttrs),
}

#[derive(Default)]
struct Validator {
    sb: Option<SuperblockAttrs>,
    nr_data_blocks: u64,
    ended: bool,
    container: Container,
    defs: HashMap<String, DefInfo>,
    devices: HashSet<u32>,
    last_key: Option<u64>,
    mappings: u64,
    segment: u64,
    device_leaves: u64,
    inline_leaves: u64,
    internal: u64,
    /// Created at the first mapping, once the superblock has given the
    /// pool's size.
    data_uses: Option<DataUses>,
}

fn fail<T>(offset: u64, message: String) -> XmlResult<T> {
    Err(XmlError { offset, message })
}

impl Validator {
    fn run(mut self, items: &mut dyn ItemSource, overrides: &Overrides) -> XmlResult<Plan> {
        let mut last_at = 0;
        let mut log = ItemLog::new(log::DEFAULT_BUDGET);
        while let Some((item, at)) = items.next_item()? {
            last_at = at;
            log.record(&item, at);
            self.item(item, at, overrides)?;
        }
        if !self.ended {
            return fail(
                last_at,
                "incomplete source metadata: the document ends before </superblock>".into(),
            );
        }
        let sb = self.sb.take().unwrap();
        let def_leaves: u64 = self
            .defs
            .values()
            .filter(|d| d.refs > 0)
            .map(DefInfo::leaves)
            .sum();
        let shared_overflow: u64 = self
            .defs
            .values()
            .filter(|d| d.refs >= 3)
            .map(DefInfo::leaves)
            .sum();
        let data_overflow = self.data_uses.as_ref().map_or(0, DataUses::at_least_three);
        let devices = self.devices.len() as u64;
        let bitmaps = self.nr_data_blocks.div_ceil(ENTRIES_PER_BITMAP);
        let blocks = 1
            + self.inline_leaves
            + def_leaves
            + self.internal
            + nodes_for(devices, DEVICE_DETAILS_SIZE)
            + nodes_for(devices, TOP_LEVEL_VALUE_SIZE)
            + bitmaps
            + nodes_for(bitmaps, 16)
            + nodes_for(data_overflow, 4)
            + nodes_for(shared_overflow, 4);
        Ok(Plan {
            superblock: sb,
            defs: self.defs,
            blocks_before_space_map: blocks,
            nr_devices: devices,
            nr_data_blocks: self.nr_data_blocks,
            log: log.finish(),
        })
    }

    fn close_segment(&mut self) {
        let leaves = self.segment.div_ceil(leaf_capacity());
        self.inline_leaves += leaves;
        self.device_leaves += leaves;
        self.segment = 0;
    }

    fn item(&mut self, item: Item, at: u64, overrides: &Overrides) -> XmlResult<()> {
        if self.ended {
            return fail(at, "content after </superblock>".into());
        }
        match item {
            Item::Superblock(s) => {
                if self.sb.is_some() {
                    return fail(at, "duplicated superblock".into());
                }
                let bs = s.data_block_size;
                if !(MIN_DATA_BLOCK_SIZE..=MAX_DATA_BLOCK_SIZE).contains(&bs)
                    || bs % MIN_DATA_BLOCK_SIZE != 0
                {
                    return fail(at, format!(
                        "invalid data block size {bs}: it must be a multiple of {MIN_DATA_BLOCK_SIZE} sectors from {MIN_DATA_BLOCK_SIZE} to {MAX_DATA_BLOCK_SIZE}"
                    ));
                }
                self.nr_data_blocks = s.nr_data_blocks.max(overrides.nr_data_blocks.unwrap_or(0));
                let limit = ENTRIES_PER_BITMAP * MAX_METADATA_BLOCKS;
                if self.nr_data_blocks > limit {
                    return fail(
                        at,
                        format!(
                        "nr_data_blocks {} is more than any metadata device can describe ({limit})",
                        self.nr_data_blocks
                    ),
                    );
                }
                self.sb = Some(s);
            }
            _ if self.sb.is_none() => {
                return fail(
                    at,
                    "missing superblock: the document must start with <superblock>".into(),
                )
            }
            Item::EndSuperblock => {
                if !matches!(self.container, Container::None) {
                    return fail(at, "</superblock> inside a <def> or <device>".into());
                }
                self.ended = true;
            }
            Item::Def(name) => {
                if !matches!(self.container, Container::None) {
                    return fail(at, "a <def> may not be nested".into());
                }
                if self.defs.contains_key(&name) {
                    return fail(at, format!("<def name=\"{name}\"> is defined twice"));
                }
                self.container = Container::Def(name, DefInfo::default());
                self.start_container();
            }
            Item::Device(d) => {
                if !matches!(self.container, Container::None) {
                    return fail(at, "a <device> may not be nested".into());
                }
                if !self.devices.insert(d.dev_id) {
                    return fail(at, format!("device {} is defined twice", d.dev_id));
                }
                self.container = Container::Device(d);
                self.start_container();
                self.device_leaves = 0;
            }
            Item::EndDef => match std::mem::take(&mut self.container) {
                Container::Def(name, mut info) => {
                    info.last = self.last_key.unwrap_or(0);
                    info.mappings = self.mappings;
                    self.defs.insert(name, info);
                }
                _ => return fail(at, "</def> without a <def>".into()),
            },
            Item::EndDevice => match std::mem::take(&mut self.container) {
                Container::Device(d) => {
                    self.close_segment();
                    if self.mappings != d.mapped_blocks {
                        return fail(
                            at,
                            format!(
                                "device {}: mapped_blocks is {} but the device maps {} blocks",
                                d.dev_id, d.mapped_blocks, self.mappings
                            ),
                        );
                    }
                    self.internal += internal_nodes(self.device_leaves);
                    if self.device_leaves == 0 {
                        self.inline_leaves += 1; // an empty root leaf
                    }
                }
                _ => return fail(at, "</device> without a <device>".into()),
            },
            Item::Mapping(run) => self.mapping(run, at)?,
            Item::Ref(name) => {
                if !matches!(self.container, Container::Device(_)) {
                    return fail(at, "a <ref> must be inside a <device>".into());
                }
                let Some(def) = self.defs.get_mut(&name) else {
                    return fail(
                        at,
                        format!("<ref name=\"{name}\"> names no <def> defined before it"),
                    );
                };
                def.refs += 1;
                let def = def.clone();
                if let Some(first) = def.first {
                    if let Some(last) = self.last_key {
                        if first <= last {
                            return fail(at, format!(
                                "keys out of order: <ref name=\"{name}\"> starts at virtual block {first}, not after {last}"
                            ));
                        }
                    }
                    self.last_key = Some(def.last);
                }
                self.mappings += def.mappings;
                self.close_segment();
                self.device_leaves += def.leaves();
            }
        }
        Ok(())
    }

    fn start_container(&mut self) {
        self.last_key = None;
        self.mappings = 0;
        self.segment = 0;
        if let Some(u) = &mut self.data_uses {
            u.next_container();
        }
    }

    /// Where a mapping is, for messages.
    fn container_name(&self) -> String {
        match &self.container {
            Container::None => String::new(),
            Container::Def(name, _) => format!("<def name=\"{name}\">"),
            Container::Device(d) => format!("device {}", d.dev_id),
        }
    }

    fn mapping(&mut self, run: MappingRun, at: u64) -> XmlResult<()> {
        match &mut self.container {
            Container::None => {
                return fail(at, "a mapping must be inside a <def> or <device>".into())
            }
            Container::Def(_, info) => {
                info.first.get_or_insert(run.virt);
            }
            Container::Device(_) => {}
        }
        if let Some(last) = self.last_key {
            if run.virt <= last {
                return fail(
                    at,
                    format!(
                        "keys out of order in {}: virtual block {} after {last}",
                        self.container_name(),
                        run.virt
                    ),
                );
            }
        }
        let end = run.data + run.len;
        if end > self.nr_data_blocks {
            return fail(
                at,
                format!(
                    "block out of bounds in {}: data block {} is beyond nr_data_blocks {}",
                    self.container_name(),
                    end - 1,
                    self.nr_data_blocks
                ),
            );
        }
        let uses = self
            .data_uses
            .get_or_insert_with(|| DataUses::new(self.nr_data_blocks));
        if !uses.add(run.data..end) {
            return fail(
                at,
                format!(
                    "{} maps a data block in {}..{} twice",
                    self.container_name(),
                    run.data,
                    end - 1
                ),
            );
        }
        self.last_key = Some(run.virt + run.len - 1);
        self.mappings += run.len;
        self.segment += run.len;
        Ok(())
    }
}

/// The second pass: writes the metadata through `sink`, which covers
/// `nr_blocks` metadata blocks. Block 0 is zeroed and flushed first and
/// the superblock written last.
pub fn build(
    path: &Path,
    plan: &Plan,
    overrides: &Overrides,
    sink: &mut dyn BlockSink,
    nr_blocks: u64,
    keep: Option<RoaringTreemap>,
) -> Result<Superblock> {
    let place = |at: u64| {
        let (line, col) = xml::locate(path, at);
        format!("{}: line {line}, column {col}", path.display())
    };
    if let Some(log) = &plan.log {
        let mut items = log.replay();
        return build_items_keeping(&mut items, &place, plan, overrides, sink, nr_blocks, keep);
    }
    let doc = XmlDoc::open(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    std::thread::scope(|scope| {
        let mut items = ItemsAhead::parse(scope, &doc);
        build_items_keeping(&mut items, &place, plan, overrides, sink, nr_blocks, keep)
    })
}

/// The second pass over any item source; `place` names a position for
/// messages.
pub fn build_items(
    items: &mut dyn ItemSource,
    place: &dyn Fn(u64) -> String,
    plan: &Plan,
    overrides: &Overrides,
    sink: &mut dyn BlockSink,
    nr_blocks: u64,
) -> Result<Superblock> {
    build_items_keeping(items, place, plan, overrides, sink, nr_blocks, None)
}

/// `build_items` over an output whose current transaction uses `keep`
/// (keep::blocks_in_use): where the new metadata fits beside it, it is
/// built in the other blocks and block 0 is left alone until the end.
pub fn build_items_keeping(
    items: &mut dyn ItemSource,
    place: &dyn Fn(u64) -> String,
    plan: &Plan,
    overrides: &Overrides,
    sink: &mut dyn BlockSink,
    nr_blocks: u64,
    keep: Option<RoaringTreemap>,
) -> Result<Superblock> {
    let nr_blocks = nr_blocks.min(MAX_METADATA_BLOCKS);
    let mut w = MetadataWriter::replacing(sink, nr_blocks, plan.blocks_needed(nr_blocks), keep)?;
    let data_refs = RefCounter::new(plan.nr_data_blocks);
    let mut b = Builder {
        plan,
        data_refs: &data_refs,
        def_leaves: HashMap::new(),
        roots: BTreeMap::new(),
        details: BTreeMap::new(),
        current_def: None,
        current_device: None,
    };
    while let Some((item, at)) = items
        .next_item()
        .map_err(|e| anyhow!("{}: {}", place(e.offset), e.message))?
    {
        b.item(&mut w, item).with_context(|| place(at))?;
    }
    phases::phase("restore: mapping trees written");
    let roots = std::mem::take(&mut b.roots);
    let details = std::mem::take(&mut b.details);
    drop(b);

    for root in roots.values() {
        w.refs.inc(*root);
    }
    let top: Vec<(u64, [u8; 8])> = roots.iter().map(|(k, r)| (*k, r.to_le_bytes())).collect();
    let mapping_root = build_tree(
        &mut w,
        TOP_LEVEL_VALUE_SIZE,
        top.iter().map(|(k, v)| (*k, &v[..])),
    )?;
    let det: Vec<(u64, [u8; 24])> = details
        .iter()
        .map(|(k, d)| {
            let mut v = [0u8; 24];
            d.write(&mut v);
            (*k, v)
        })
        .collect();
    let details_root = build_tree(
        &mut w,
        DEVICE_DETAILS_SIZE,
        det.iter().map(|(k, v)| (*k, &v[..])),
    )?;
    let data_sm = writer::write_data(&mut w, &data_refs)?;
    phases::phase("restore: data space map written");
    for r in [
        0,
        mapping_root,
        details_root,
        data_sm.bitmap_root,
        data_sm.ref_count_root,
    ] {
        w.refs.inc(r);
    }
    let metadata_sm = writer::write_metadata(&mut w, nr_blocks)?;

    let s = &plan.superblock;
    let mut sb = Superblock::new_v2();
    sb.time = s.time;
    sb.transaction_id = s.transaction.max(overrides.transaction_id.unwrap_or(0));
    sb.data_block_size = overrides.data_block_size.unwrap_or(s.data_block_size);
    sb.nr_metadata_blocks = nr_blocks;
    sb.data_sm_root = data_sm;
    sb.metadata_sm_root = metadata_sm;
    sb.mapping_root = mapping_root;
    sb.details_root = details_root;
    w.commit(&sb.to_block())?;
    Ok(sb)
}

struct Builder<'p> {
    plan: &'p Plan,
    data_refs: &'p RefCounter,
    /// Leaves of each referenced def: (first key, block).
    def_leaves: HashMap<String, Vec<(u64, u64)>>,
    roots: BTreeMap<u64, u64>,
    details: BTreeMap<u64, DeviceDetails>,
    current_def: Option<(String, Option<LevelBuilder>)>,
    current_device: Option<(DeviceAttrs, LevelBuilder)>,
}

impl Builder<'_> {
    fn item(&mut self, w: &mut MetadataWriter, item: Item) -> Result<()> {
        match item {
            Item::Def(name) => {
                // A def nothing refers to leaves nothing behind.
                let used = self.plan.defs.get(&name).is_some_and(|d| d.refs > 0);
                let level = used.then(|| LevelBuilder::leaves(MAPPING_VALUE_SIZE));
                self.current_def = Some((name, level));
            }
            Item::EndDef => {
                if let Some((name, Some(mut level))) = self.current_def.take() {
                    level.flush(w)?;
                    self.def_leaves.insert(name, level.written);
                }
            }
            Item::Device(d) => {
                self.current_device = Some((d, LevelBuilder::leaves(MAPPING_VALUE_SIZE)))
            }
            Item::EndDevice => {
                let (d, mut level) = self
                    .current_device
                    .take()
                    .context("</device> without <device>")?;
                level.flush(w)?;
                let root = build_root(w, level.written, MAPPING_VALUE_SIZE)?;
                self.roots.insert(d.dev_id as u64, root);
                self.details.insert(
                    d.dev_id as u64,
                    DeviceDetails {
                        mapped_blocks: d.mapped_blocks,
                        transaction_id: d.transaction,
                        creation_time: d.creation_time,
                        snapshotted_time: d.snap_time,
                    },
                );
            }
            Item::Ref(name) => {
                let (_, level) = self
                    .current_device
                    .as_mut()
                    .context("<ref> outside a device")?;
                let leaves = self.def_leaves.get(&name).context("undefined <def>")?;
                for (k, b) in leaves {
                    level.push_node(w, *k, *b)?;
                }
            }
            Item::Mapping(run) => {
                let level = if let Some((_, level)) = self.current_def.as_mut() {
                    match level {
                        Some(l) => l,
                        None => return Ok(()),
                    }
                } else {
                    &mut self
                        .current_device
                        .as_mut()
                        .context("mapping outside a device")?
                        .1
                };
                level.push_run(w, run.virt, run.len, |i| {
                    BlockTime {
                        block: run.data + i,
                        time: run.time,
                    }
                    .pack()
                })?;
                self.data_refs.inc_range(run.data..run.data + run.len);
            }
            Item::Superblock(_) | Item::EndSuperblock => {}
        }
        Ok(())
    }
}

/// Restores `xml` onto an output of `nr_blocks` blocks through `sink`:
/// validates, checks the size, then builds.
pub fn restore(
    xml_path: &Path,
    overrides: &Overrides,
    sink: &mut dyn BlockSink,
    nr_blocks: u64,
) -> Result<Superblock> {
    let (plan, usable) = plan_for(
        xml_path,
        overrides,
        "the output",
        nr_blocks * BLOCK_SIZE as u64,
    )?;
    build(xml_path, &plan, overrides, sink, usable, None)
}

/// Restores `xml` onto an output of `bytes` bytes named `output`, which
/// `open` opens only once the metadata is validated and known to fit. A
/// transaction already there (`keep`, from keep::blocks_in_use) stays
/// whole until the new superblock is written, where there is room.
pub fn restore_to<S: BlockSink>(
    xml_path: &Path,
    overrides: &Overrides,
    output: &str,
    bytes: u64,
    keep: Option<RoaringTreemap>,
    open: impl FnOnce() -> Result<S>,
) -> Result<Superblock> {
    let (plan, usable) = plan_for(xml_path, overrides, output, bytes)?;
    let mut sink = open()?;
    build(xml_path, &plan, overrides, &mut sink, usable, keep)
}

/// The plan of a restore and the blocks of the output it may use.
fn plan_for(
    xml_path: &Path,
    overrides: &Overrides,
    output: &str,
    bytes: u64,
) -> Result<(Plan, u64)> {
    let plan = validate(xml_path, overrides)?;
    phases::phase("restore: validated");
    let usable = plan.room(output, bytes)?;
    Ok((plan, usable))
}
