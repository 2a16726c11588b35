//! cache_restore's engine: cache XML (or salvaged items) to binary
//! metadata.
//!
//! Two passes over the items. The first validates the whole document
//! (every cache block below nr_cache_blocks and in ascending order, no
//! origin block mapped twice, hints of the declared width, discards in
//! order) and sizes the result, so a mistake in the XML, or an output too
//! small, costs nothing: the output is not touched. The second streams
//! the mapping array, the hint array, the dirty bitset (format 2) and the
//! discard bitset through the array and bitset builders, writes the
//! metadata space map, flushes, and writes the superblock last; where the
//! output holds a cache transaction and room beside it, that transaction
//! stays whole until then (`MetadataWriter::replacing`).
//!
//! Unlike the reference (tools.md Q8, Q9): a hint of the wrong size, a
//! long policy name or a mapping before the superblock are errors, not
//! crashes, and the statistics counters are written as zero.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use roaring::RoaringTreemap;

use crate::io::ahead::Ahead;
use crate::io::sink::BlockSink;
use crate::io::source::{BlockSource, OpenOptions};
use crate::io::{BlockKind, BLOCK_SIZE};
use crate::pdata::array::builder::{self as array_builder, ArrayBuilder};
use crate::pdata::bitset::builder::{self as bitset_builder, BitsetBuilder};
use crate::pdata::btree::builder::{nodes_for, MetadataWriter};
use crate::pdata::paged_set::PagedSet;
use crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS;
use crate::pdata::space_map::in_use::metadata_blocks_in_use;
use crate::pdata::space_map::writer;
use crate::report::phases;

use super::hint::HINT_SIZE;
use super::log::{self, CacheLog};
use super::mapping::{self, MAPPING_SIZE as MAPPING_VALUE_SIZE};
use super::superblock::{Superblock, CACHE_MAGIC, CLEAN_SHUTDOWN, POLICY_NAME_SIZE};
use super::xml::{
    CacheXmlItems, Hint, Item, Mapping, SuperblockAttrs, XmlDoc, XmlError, XmlResult,
    MAX_ORIGIN_BLOCK,
};

/// Cache block sizes the kernel accepts, in sectors.
pub const MIN_BLOCK_SIZE: u32 = 64;
pub const MAX_BLOCK_SIZE: u32 = 2097152;
/// The policy version every current kernel policy (smq, mq, cleaner) has.
pub const POLICY_VERSION: [u32; 3] = [2, 0, 0];

#[derive(Clone, Copy, Debug)]
pub struct RestoreOptions {
    /// Metadata format, 1 or 2.
    pub metadata_version: u32,
    /// Set the clean-shutdown flag (the kernel then trusts the dirty
    /// bits, hints and discards).
    pub clean_shutdown: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            metadata_version: 2,
            clean_shutdown: true,
        }
    }
}

/// Anything that yields cache items in document order: the XML parser,
/// or metadata salvaged in memory (repair).
pub trait ItemSource {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>>;
}

impl ItemSource for CacheXmlItems<'_> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        CacheXmlItems::next_item(self)
    }
}

/// Items held in memory; the position of each is its index.
pub struct ItemList<I: Iterator<Item = Item>> {
    items: I,
    at: u64,
}

impl<I: Iterator<Item = Item>> ItemList<I> {
    pub fn new(items: I) -> Self {
        ItemList { items, at: 0 }
    }
}

impl<I: Iterator<Item = Item>> ItemSource for ItemList<I> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        self.at += 1;
        Ok(self.items.next().map(|i| (i, self.at - 1)))
    }
}

/// What the first pass learns.
#[derive(Clone, Debug)]
pub struct Plan {
    pub superblock: SuperblockAttrs,
    pub nr_mappings: u64,
    pub nr_dirty: u64,
    pub nr_hints: u64,
    /// Bits of the discard bitset (0 when there are no discards): enough
    /// for every discard range and every mapped origin block, as the
    /// checkers take discard block size x bits for the origin's size.
    pub discard_nr_blocks: u64,
    pub version: u32,
}

impl Plan {
    /// Blocks written before the metadata space map's bitmaps and index
    /// (its empty ref-count tree included).
    pub fn fixed_blocks(&self) -> u64 {
        let nr = self.superblock.nr_cache_blocks as u64;
        let mut blocks = 1 + array_builder::blocks_needed(nr, MAPPING_VALUE_SIZE);
        if self.superblock.hint_width != 0 {
            blocks += array_builder::blocks_needed(nr, self.superblock.hint_width);
        }
        if self.version >= 2 {
            blocks += bitset_builder::blocks_needed(nr);
        }
        blocks + bitset_builder::blocks_needed(self.discard_nr_blocks) + nodes_for(0, 4)
    }

    /// The blocks the metadata may use of an output of `bytes` bytes, or
    /// an error naming the output, its size and the smallest that would do.
    pub fn room(&self, output: &str, bytes: u64) -> Result<u64> {
        writer::room(output, bytes, self.fixed_blocks())
    }
}

/// A validation failure: at an offset, or an origin block mapped twice
/// (whose first mapping the caller looks up, on this path only).
enum Failure {
    At(XmlError),
    Twice { origin: u64, second: u32, at: u64 },
}

impl From<XmlError> for Failure {
    fn from(e: XmlError) -> Self {
        Failure::At(e)
    }
}

fn fail<T>(offset: u64, message: String) -> Result<T, Failure> {
    Err(Failure::At(XmlError { offset, message }))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    None,
    Mappings,
    Hints,
    Discards,
}

impl Section {
    fn tag(self) -> &'static str {
        match self {
            Section::None => "superblock",
            Section::Mappings => "mappings",
            Section::Hints => "hints",
            Section::Discards => "discards",
        }
    }
}

struct Validator {
    version: u32,
    sb: Option<SuperblockAttrs>,
    ended: bool,
    section: Section,
    seen: [bool; 3],
    /// The last cache block (mappings, hints) or discard end, per section.
    last: Option<u64>,
    /// Origins mapped so far; None where the source drops a second
    /// mapping of one itself (repair's salvage), so none can come.
    origins: Option<PagedSet>,
    nr_mappings: u64,
    nr_dirty: u64,
    nr_hints: u64,
    discard_end: u64,
    /// One past the highest origin block mapped.
    origin_end: u64,
}

impl Validator {
    fn new(version: u32) -> Self {
        Validator {
            version,
            sb: None,
            ended: false,
            section: Section::None,
            seen: [false; 3],
            last: None,
            origins: Some(PagedSet::new()),
            nr_mappings: 0,
            nr_dirty: 0,
            nr_hints: 0,
            discard_end: 0,
            origin_end: 0,
        }
    }

    fn run(mut self, items: &mut dyn ItemSource) -> Result<Plan, Failure> {
        let mut last_at = 0;
        while let Some((item, at)) = items.next_item()? {
            last_at = at;
            self.item(item, at)?;
        }
        if !self.ended {
            return fail(
                last_at,
                "incomplete source metadata: the document ends before </superblock>".into(),
            );
        }
        Ok(Plan {
            superblock: self.sb.take().unwrap(),
            nr_mappings: self.nr_mappings,
            nr_dirty: self.nr_dirty,
            nr_hints: self.nr_hints,
            discard_nr_blocks: match self.discard_end {
                0 => 0,
                end => end.max(self.origin_end),
            },
            version: self.version,
        })
    }

    fn superblock(&mut self, s: SuperblockAttrs, at: u64) -> Result<(), Failure> {
        if self.sb.is_some() {
            return fail(at, "duplicated superblock".into());
        }
        let bs = s.block_size;
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) || !bs.is_multiple_of(MIN_BLOCK_SIZE) {
            return fail(
                at,
                format!(
                    "invalid block_size {bs}: a cache block is a multiple of {MIN_BLOCK_SIZE} \
                     sectors from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
                ),
            );
        }
        if s.policy.len() > POLICY_NAME_SIZE {
            return fail(
                at,
                format!(
                    "policy name '{}' is {} bytes; the superblock holds at most {POLICY_NAME_SIZE}",
                    String::from_utf8_lossy(&s.policy),
                    s.policy.len()
                ),
            );
        }
        if s.policy.contains(&0) {
            return fail(at, "the policy name holds a NUL byte".into());
        }
        if s.hint_width != 0 && s.hint_width != HINT_SIZE {
            return fail(
                at,
                format!(
                    "hint_width {} is not supported: hints are {HINT_SIZE} bytes (or hint_width 0 \
                     for none)",
                    s.hint_width
                ),
            );
        }
        self.sb = Some(s);
        Ok(())
    }

    fn open(&mut self, section: Section, at: u64) -> Result<(), Failure> {
        if self.section != Section::None {
            return fail(
                at,
                format!(
                    "<{}> inside <{}>: sections may not nest",
                    section.tag(),
                    self.section.tag()
                ),
            );
        }
        let i = section as usize - 1;
        if self.seen[i] {
            return fail(at, format!("a second <{}> section", section.tag()));
        }
        self.seen[i] = true;
        self.section = section;
        self.last = None;
        Ok(())
    }

    fn close(&mut self, section: Section, at: u64) -> Result<(), Failure> {
        if self.section != section {
            return fail(
                at,
                format!("</{}> without <{}>", section.tag(), section.tag()),
            );
        }
        self.section = Section::None;
        Ok(())
    }

    fn within(&self, section: Section, what: &str, at: u64) -> Result<(), Failure> {
        if self.section != section {
            return fail(at, format!("a <{what}> outside <{}>", section.tag()));
        }
        Ok(())
    }

    /// A cache block in bounds and after the one before it.
    fn cache_block(&mut self, cb: u32, what: &str, at: u64) -> Result<(), Failure> {
        let nr = self.sb.as_ref().unwrap().nr_cache_blocks;
        if cb >= nr {
            return fail(
                at,
                format!(
                    "array index out of bounds: <{what}> of cache block {cb}, but nr_cache_blocks \
                     is {nr}"
                ),
            );
        }
        if let Some(last) = self.last {
            if cb as u64 <= last {
                return fail(
                    at,
                    format!(
                        "unordered array index: <{what}> of cache block {cb} after cache block \
                         {last} (cache blocks must ascend)"
                    ),
                );
            }
        }
        self.last = Some(cb as u64);
        Ok(())
    }

    fn item(&mut self, item: Item, at: u64) -> Result<(), Failure> {
        if self.ended {
            return fail(at, "content after </superblock>".into());
        }
        match item {
            Item::Superblock(s) => return self.superblock(s, at),
            _ if self.sb.is_none() => {
                return fail(
                    at,
                    "missing superblock: the document must start with <superblock>".into(),
                )
            }
            Item::EndSuperblock => {
                if self.section != Section::None {
                    return fail(at, format!("</superblock> inside <{}>", self.section.tag()));
                }
                self.ended = true;
            }
            Item::Mappings => self.open(Section::Mappings, at)?,
            Item::Hints => self.open(Section::Hints, at)?,
            Item::Discards => self.open(Section::Discards, at)?,
            Item::EndMappings => self.close(Section::Mappings, at)?,
            Item::EndHints => self.close(Section::Hints, at)?,
            Item::EndDiscards => self.close(Section::Discards, at)?,
            Item::Mapping(m) => {
                self.within(Section::Mappings, "mapping", at)?;
                self.cache_block(m.cache_block, "mapping", at)?;
                if self
                    .origins
                    .as_mut()
                    .is_some_and(|o| !o.insert(m.origin_block))
                {
                    return Err(Failure::Twice {
                        origin: m.origin_block,
                        second: m.cache_block,
                        at,
                    });
                }
                self.nr_mappings += 1;
                self.origin_end = self.origin_end.max(m.origin_block + 1);
                self.nr_dirty += m.dirty as u64;
            }
            Item::Hint(h) => {
                self.within(Section::Hints, "hint", at)?;
                self.cache_block(h.cache_block, "hint", at)?;
                let width = self.sb.as_ref().unwrap().hint_width;
                if h.len != width as usize {
                    return fail(
                        at,
                        format!(
                            "the hint of cache block {} is {} bytes, but hint_width is {width}",
                            h.cache_block, h.len
                        ),
                    );
                }
                self.nr_hints += 1;
            }
            Item::Discard { begin, end } => {
                self.within(Section::Discards, "discard", at)?;
                if end > MAX_ORIGIN_BLOCK + 1 {
                    return fail(
                        at,
                        format!(
                            "discard range {begin}..{end} exceeds the 48-bit origin block limit"
                        ),
                    );
                }
                if let Some(last) = self.last {
                    if begin < last {
                        return fail(
                            at,
                            format!(
                                "discard range {begin}..{end} starts before the end of the one \
                                 before it ({last}): ranges must ascend without overlapping"
                            ),
                        );
                    }
                }
                self.last = Some(end);
                self.discard_end = end;
            }
        }
        Ok(())
    }
}

/// The first pass over any item source (repair's salvage, fuzzing).
pub fn validate_items(items: &mut dyn ItemSource, version: u32) -> XmlResult<Plan> {
    validate_items_logged(items, version, false, false).map(|(plan, _)| plan)
}

/// `validate_items`, and with `record` the items as a log for the
/// second pass (None if it outgrew its budget), so that a costly source
/// (repair's salvage) is read once. `origins_unique`: the source never
/// maps an origin block twice (the salvage drops a second mapping), so
/// that is not checked again.
pub fn validate_items_logged(
    items: &mut dyn ItemSource,
    version: u32,
    record: bool,
    origins_unique: bool,
) -> XmlResult<(Plan, Option<CacheLog>)> {
    let mut recording = Recording {
        items,
        log: record.then(|| CacheLog::new(log::DEFAULT_BUDGET)),
    };
    let mut validator = Validator::new(version);
    if origins_unique {
        validator.origins = None;
    }
    let plan = validator.run(&mut recording).map_err(|f| match f {
        Failure::At(e) => e,
        Failure::Twice { origin, second, at } => XmlError {
            offset: at,
            message: format!(
                "origin block {origin} is mapped twice (again by cache block {second})"
            ),
        },
    })?;
    Ok((plan, recording.log.and_then(CacheLog::finish)))
}

/// The first pass over XML in memory (fuzzing, tests).
pub fn validate_reader(input: &[u8], version: u32) -> XmlResult<Plan> {
    validate_items(&mut CacheXmlItems::new(input), version)
}

fn located(path: &Path, e: XmlError) -> anyhow::Error {
    let (line, col) = super::xml::locate(path, e.offset);
    anyhow!(
        "'{}': line {line}, column {col}: {}",
        path.display(),
        e.message
    )
}

/// The cache block that first maps `origin` in `doc` (the error path of
/// a duplicate: a second look rather than a map kept for every mapping).
fn first_mapping_of(doc: &[u8], origin: u64) -> Option<u32> {
    let mut items = CacheXmlItems::new(doc);
    while let Ok(Some((item, _))) = items.next_item() {
        if let Item::Mapping(m) = item {
            if m.origin_block == origin {
                return Some(m.cache_block);
            }
        }
    }
    None
}

/// The first pass over an XML file: validates it whole and sizes the
/// result; errors name the file, line and column.
pub fn validate(path: &Path, version: u32) -> Result<Plan> {
    validate_logged(path, version, false).map(|(plan, _)| plan)
}

/// Items per batch from the parsing thread, and batches queued. Each
/// batch wakes the validating thread once, and on a VM a wake-up costs
/// tens of microseconds: with 512 items a batch, c2m's 4 million items
/// spent half of the first pass in the channel (0.95 s, against 0.50 s
/// with 8192). The batches in flight add about 5 MiB of heap.
const PARSED_BATCH: usize = 8192;
const PARSED_AHEAD: usize = 4;

impl ItemSource for Ahead<XmlResult<Option<(Item, u64)>>> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        self.next().unwrap_or(Ok(None))
    }
}

/// Items passed on as they are read, and recorded.
struct Recording<'a> {
    items: &'a mut dyn ItemSource,
    log: Option<CacheLog>,
}

impl ItemSource for Recording<'_> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        let next = self.items.next_item()?;
        if let (Some(log), Some((item, at))) = (&mut self.log, &next) {
            log.record(item, *at);
        }
        Ok(next)
    }
}

/// `validate`, and with `record` the items as a log for the second pass
/// (None if it outgrew its budget).
fn validate_logged(path: &Path, version: u32, record: bool) -> Result<(Plan, Option<CacheLog>)> {
    let doc = XmlDoc::open(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    // The document is parsed and recorded on a second thread while this
    // one validates: the two cost about the same.
    let mut log = record.then(|| CacheLog::new(log::DEFAULT_BUDGET));
    let outcome = std::thread::scope(|scope| {
        let log = &mut log;
        let mut parsed = Ahead::spawn(scope, PARSED_BATCH, PARSED_AHEAD, |out| {
            let mut items = CacheXmlItems::of_doc(&doc);
            loop {
                let next = items.next_item();
                if let (Some(log), Ok(Some((item, at)))) = (log.as_mut(), &next) {
                    log.record(item, *at);
                }
                let last = !matches!(next, Ok(Some(_)));
                if !out.push(next) || last {
                    return;
                }
            }
        });
        Validator::new(version).run(&mut parsed)
    });
    match outcome {
        Ok(plan) => Ok((plan, log.and_then(CacheLog::finish))),
        Err(Failure::At(e)) => Err(located(path, e)),
        Err(Failure::Twice { origin, second, at }) => {
            let first = first_mapping_of(doc.bytes(), origin)
                .map(|c| format!("cache block {c} and "))
                .unwrap_or_default();
            Err(located(
                path,
                XmlError {
                    offset: at,
                    message: format!(
                        "origin block {origin} is mapped twice: by {first}cache block {second}"
                    ),
                },
            ))
        }
    }
}

/// The second pass: writes the metadata through `sink`, which covers
/// `nr_blocks` blocks of which the transaction there uses `keep`; the
/// superblock goes last. `place` names an item position for messages.
pub fn build_items(
    items: &mut dyn ItemSource,
    place: &dyn Fn(u64) -> String,
    plan: &Plan,
    opts: &RestoreOptions,
    sink: &mut dyn BlockSink,
    nr_blocks: u64,
    keep: Option<RoaringTreemap>,
) -> Result<Superblock> {
    let nr_blocks = nr_blocks.min(MAX_METADATA_BLOCKS);
    let needed = writer::blocks_needed(plan.fixed_blocks(), nr_blocks);
    let mut w = MetadataWriter::replacing(sink, nr_blocks, needed, keep)?;
    let s = &plan.superblock;
    let nr = s.nr_cache_blocks as u64;
    let v2 = opts.metadata_version >= 2;
    let mut arrays = Arrays {
        mappings: ArrayBuilder::new(MAPPING_VALUE_SIZE),
        hints: (s.hint_width != 0).then(|| ArrayBuilder::new(s.hint_width)),
        dirty: v2.then(|| BitsetBuilder::new(nr)),
        discards: BitsetBuilder::new(plan.discard_nr_blocks),
    };
    while let Some((item, at)) = items
        .next_item()
        .map_err(|e| anyhow!("{}: {}", place(e.offset), e.message))?
    {
        arrays.item(&mut w, item).with_context(|| place(at))?;
    }
    let Arrays {
        mut mappings,
        hints,
        dirty,
        discards,
        ..
    } = arrays;
    let left = nr - mappings.len();
    mappings.push_zeros(&mut w, left)?;
    let mapping_root = mappings.finish(&mut w)?;
    let hint_root = match hints {
        Some(mut h) => {
            let left = nr - h.len();
            h.push_zeros(&mut w, left)?;
            h.finish(&mut w)?
        }
        None => 0,
    };
    let dirty_root = dirty.map(|d| d.finish(&mut w)).transpose()?;
    let discard_root = discards.finish(&mut w)?;
    phases::phase("restore: arrays written");
    // The superblock's own block and its pointers (hint root 0: none).
    w.refs.inc(0);
    for r in [mapping_root, discard_root]
        .into_iter()
        .chain((hint_root != 0).then_some(hint_root))
        .chain(dirty_root)
    {
        w.refs.inc(r);
    }
    let metadata_sm = writer::write_metadata(&mut w, nr_blocks)?;

    let mut sb = Superblock::new(opts.metadata_version);
    sb.flags = if opts.clean_shutdown {
        CLEAN_SHUTDOWN
    } else {
        0
    };
    sb.policy_name[..s.policy.len()].copy_from_slice(&s.policy);
    sb.policy_hint_size = s.hint_width;
    sb.policy_version = POLICY_VERSION;
    sb.metadata_sm_root = metadata_sm;
    sb.mapping_root = mapping_root;
    sb.hint_root = hint_root;
    sb.discard_root = discard_root;
    if plan.discard_nr_blocks > 0 {
        sb.discard_block_size = s.block_size as u64;
        sb.discard_nr_blocks = plan.discard_nr_blocks;
    }
    sb.data_block_size = s.block_size;
    sb.cache_blocks = s.nr_cache_blocks;
    sb.dirty_root = dirty_root;
    w.commit(&sb.to_block())?;
    Ok(sb)
}

struct Arrays {
    mappings: ArrayBuilder,
    hints: Option<ArrayBuilder>,
    dirty: Option<BitsetBuilder>,
    discards: BitsetBuilder,
}

impl Arrays {
    fn item(&mut self, w: &mut MetadataWriter, item: Item) -> Result<()> {
        match item {
            Item::Mapping(Mapping {
                cache_block,
                origin_block,
                dirty,
            }) => {
                let gap = cache_block as u64 - self.mappings.len();
                self.mappings.push_zeros(w, gap)?;
                let mut value = mapping::Mapping {
                    origin: origin_block,
                    flags: mapping::VALID,
                };
                if dirty {
                    match &mut self.dirty {
                        Some(bits) => bits.set(w, cache_block as u64)?,
                        None => value.flags |= mapping::DIRTY,
                    }
                }
                self.mappings.push(w, &value.pack().to_le_bytes())?;
            }
            Item::Hint(h @ Hint { cache_block, .. }) => {
                let Some(hints) = &mut self.hints else {
                    bail!("a hint, but hint_width is 0");
                };
                let gap = cache_block as u64 - hints.len();
                hints.push_zeros(w, gap)?;
                hints.push(w, h.data())?;
            }
            Item::Discard { begin, end } => self.discards.set_range(w, begin..end)?,
            _ => {}
        }
        Ok(())
    }
}

/// The cache transaction now on `output`: the blocks its metadata space
/// map counts, or None where it holds no valid cache superblock (the
/// writer then invalidates block 0 first).
pub fn blocks_in_use(output: &Path) -> Option<RoaringTreemap> {
    let src = BlockSource::open(output, OpenOptions { exclusive: false }).ok()?;
    if src.is_decompressed() {
        return None;
    }
    let sb = Superblock::parse(src.checked(0, BlockKind::CacheSuperblock).ok()?);
    if sb.magic != CACHE_MAGIC {
        return None;
    }
    metadata_blocks_in_use(&src, &sb.metadata_sm_root)
}

/// Restores the XML at `xml_path` onto an output of `bytes` bytes named
/// `output`, which `open` opens only once the document is validated and
/// known to fit; `keep` is the transaction already there.
pub fn restore_to<S: BlockSink>(
    xml_path: &Path,
    opts: &RestoreOptions,
    output: &str,
    bytes: u64,
    keep: Option<RoaringTreemap>,
    open: impl FnOnce() -> Result<S>,
) -> Result<Superblock> {
    let (plan, log) = validate_logged(xml_path, opts.metadata_version, true)?;
    phases::phase("restore: validated");
    let usable = plan.room(output, bytes)?;
    let mut sink = open()?;
    let place = |at: u64| {
        let (line, col) = super::xml::locate(xml_path, at);
        format!("'{}': line {line}, column {col}", xml_path.display())
    };
    // The log replayed, or (past its budget) the XML parsed again.
    let (doc, mut parsed, mut replay);
    let items: &mut dyn ItemSource = match &log {
        Some(log) => {
            replay = log.replay();
            &mut replay
        }
        None => {
            doc = XmlDoc::open(xml_path)
                .with_context(|| format!("cannot read '{}'", xml_path.display()))?;
            parsed = CacheXmlItems::of_doc(&doc);
            &mut parsed
        }
    };
    build_items(items, &place, &plan, opts, &mut sink, usable, keep)
}

/// Restores XML held in memory onto `sink` of `nr_blocks` blocks (tests,
/// fuzzing): validates, sizes, builds.
pub fn restore_bytes(
    xml: &[u8],
    opts: &RestoreOptions,
    sink: &mut dyn BlockSink,
    nr_blocks: u64,
) -> Result<Superblock> {
    let plan = validate_reader(xml, opts.metadata_version)
        .map_err(|e| anyhow!("byte {}: {}", e.offset, e.message))?;
    let usable = plan.room("the output", nr_blocks * BLOCK_SIZE as u64)?;
    let place = |at: u64| format!("byte {at}");
    build_items(
        &mut CacheXmlItems::new(xml),
        &place,
        &plan,
        opts,
        sink,
        usable,
        None,
    )
}
