//! cache_dump's engine: cache metadata as XML items, in the order and
//! form the reference's cache_dump writes them (one `<mapping>` per valid
//! cache block, ascending, then one `<hint>` per valid cache block with a
//! readable hint; discards are never dumped).
//!
//! The same items feed cache_repair's restore ([`MetadataItems`] is a
//! restore `ItemSource`), so `cache_dump --repair` and `cache_repair` salvage
//! exactly the same. In repair mode damage costs only the entries it
//! covers: an unreadable mapping block its cache blocks, an unreadable
//! hint block only those hints, an unreadable dirty word only those bits
//! (taken as dirty, the safe side); a mapping whose origin block is
//! already mapped by an earlier cache block, and entries with flags the
//! format does not have, are dropped with a warning.

use std::io::Write;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use roaring::RoaringBitmap;

use crate::io::BlockSource;
use crate::pdata::array::max_entries_for;
use crate::pdata::paged_set::PagedSet;

use super::hint::HINT_SIZE;
use super::mapping::{Mapping as MappingValue, DIRTY, MAPPING_SIZE, VALID};
use super::read::{CacheMetadata, Entry, ReadOptions, Structure};
use super::restore::ItemSource;
use super::xml::{Hint, Item, Mapping, SuperblockAttrs, XmlResult, XmlWriter, MAX_HINT_BYTES};

#[derive(Clone, Copy, Debug, Default)]
pub struct DumpOptions {
    /// Salvage what is readable instead of failing on damage.
    pub repair: bool,
}

/// Opens the metadata for dumping: without `repair`, damage in the
/// mappings, hints or dirty bits is an error naming it.
pub fn open<'a>(src: &'a BlockSource, opts: &DumpOptions) -> Result<CacheMetadata<'a>> {
    let md = CacheMetadata::read(
        src,
        &ReadOptions {
            hints: true,
            discards: false,
        },
    )
    .map_err(|e| {
        let what = crate::io::input::what_it_holds(src.head(crate::io::BLOCK_SIZE), "cache")
            .map(|w| format!("; {w}"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "cannot read the cache metadata in '{}': {e}{what}",
            src.path().display()
        )
    })?;
    let truncated = crate::io::input::truncation(src, md.sb.metadata_sm_root.nr_blocks);
    if !opts.repair {
        let damage: Vec<_> = md
            .damage()
            .into_iter()
            .filter(|d| d.structure != Structure::Discards)
            .collect();
        if let Some(t) = &truncated {
            if !damage.is_empty() {
                bail!("{t}; {} of its structures cannot be read", damage.len());
            }
        }
        if let Some(first) = damage.first() {
            let more = match damage.len() {
                1 => String::new(),
                2 => " (and 1 more problem)".to_string(),
                n => format!(" (and {} more problems)", n - 1),
            };
            bail!(
                "'{}': {first}{more}; cache_dump --repair (or cache_repair) salvages everything \
                 else",
                src.path().display()
            );
        }
    }
    if opts.repair {
        // Nothing of the mappings readable: an empty cache would pass for
        // one without dirty data, and its origin would be read stale.
        let nr = md.cache_blocks();
        let all_lost = nr > 0
            && md.damage().iter().any(|d| {
                d.structure == Structure::Mappings && d.lost.start == 0 && d.lost.end >= nr
            });
        if all_lost {
            let why = truncated.unwrap_or_else(|| "its mapping array cannot be read".into());
            bail!(
                "nothing could be salvaged from '{}': {why}",
                src.path().display()
            );
        }
    }
    Ok(md)
}

/// What repair mode could not keep, in words (one line each).
pub fn losses(md: &CacheMetadata) -> Vec<String> {
    md.damage()
        .into_iter()
        .filter(|d| d.structure != Structure::Discards)
        .map(|d| {
            let cost = match d.structure {
                Structure::Mappings => "their mappings are dropped",
                Structure::Hints => "their hints are written as zero",
                Structure::Dirty => "they are taken as dirty",
                Structure::Discards => "",
            };
            format!("{d}: {cost}")
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Superblock,
    BeginMappings,
    Mappings,
    BeginHints,
    Hints,
    End,
    Done,
}

/// The XML items of cache metadata, produced as they are read.
pub struct MetadataItems<'m, 'a> {
    md: &'m CacheMetadata<'a>,
    repair: bool,
    stage: Stage,
    iter: Option<Box<dyn Iterator<Item = Entry<'a>> + 'm>>,
    /// Origins mapped so far (repair: a second mapping of one is dropped).
    origins: PagedSet,
    /// Cache blocks whose mapping was dropped (their hints go too).
    dropped: RoaringBitmap,
    /// Repair drops hints of a size no checker accepts.
    no_hints: bool,
    /// Why entries were dropped, for the caller to print.
    pub warnings: Vec<String>,
    at: u64,
}

impl<'m, 'a> MetadataItems<'m, 'a> {
    pub fn new(md: &'m CacheMetadata<'a>, opts: &DumpOptions) -> Self {
        MetadataItems {
            md,
            repair: opts.repair,
            stage: Stage::Superblock,
            iter: None,
            origins: PagedSet::new(),
            dropped: RoaringBitmap::new(),
            no_hints: false,
            warnings: Vec::new(),
            at: 0,
        }
    }

    pub fn superblock_attrs(md: &CacheMetadata) -> SuperblockAttrs {
        SuperblockAttrs {
            uuid: String::new(),
            block_size: md.sb.data_block_size,
            nr_cache_blocks: md.sb.cache_blocks,
            policy: md.sb.policy().to_vec(),
            hint_width: md.sb.policy_hint_size,
        }
    }

    /// The mapping item of `e`, or None where repair drops it.
    fn mapping(&mut self, e: &Entry) -> Option<Item> {
        let m = &e.mapping;
        let cblock = e.cblock as u32;
        if self.repair {
            let allowed = if self.md.version() == 1 {
                VALID | DIRTY
            } else {
                VALID
            };
            if m.flags & !allowed != 0 {
                self.warnings.push(format!(
                    "cache block {cblock}: mapping flags {:#x} are not format {}'s: the \
                     mapping is dropped",
                    m.flags,
                    self.md.version()
                ));
                self.dropped.insert(cblock);
                return None;
            }
            if !self.origins.insert(m.origin) {
                self.warnings.push(format!(
                    "cache block {cblock}: origin block {} is mapped by an earlier cache block: \
                     this mapping is dropped",
                    m.origin
                ));
                self.dropped.insert(cblock);
                return None;
            }
        }
        Some(Item::Mapping(Mapping {
            cache_block: cblock,
            origin_block: m.origin,
            // An unreadable dirty bit (repair only) is taken as dirty.
            dirty: e.dirty.unwrap_or(true),
        }))
    }

    fn hint(&self, e: &Entry) -> Option<Item> {
        if self.no_hints {
            return None;
        }
        let data = e.hint?;
        if self.dropped.contains(e.cblock as u32) || data.len() > MAX_HINT_BYTES {
            return None;
        }
        let mut bytes = [0u8; MAX_HINT_BYTES];
        bytes[..data.len()].copy_from_slice(data);
        Some(Item::Hint(Hint {
            cache_block: e.cblock as u32,
            len: data.len(),
            bytes,
        }))
    }

    fn next(&mut self) -> Option<Item> {
        loop {
            match self.stage {
                Stage::Superblock => {
                    self.stage = Stage::BeginMappings;
                    let mut sb = Self::superblock_attrs(self.md);
                    if self.repair && sb.hint_width != 0 && sb.hint_width != HINT_SIZE {
                        // No checker accepts other hints: the policy
                        // rebuilds them.
                        self.warnings.push(format!(
                            "policy hint size {} is not the kernel's {HINT_SIZE}: the hints are \
                             dropped",
                            sb.hint_width
                        ));
                        sb.hint_width = 0;
                        self.no_hints = true;
                    }
                    return Some(Item::Superblock(sb));
                }
                Stage::BeginMappings => {
                    self.stage = Stage::Mappings;
                    self.iter = Some(Box::new(self.md.mapped_without_hints()));
                    return Some(Item::Mappings);
                }
                Stage::Mappings => match self.iter.as_mut().and_then(|i| i.next()) {
                    Some(e) => {
                        if let Some(item) = self.mapping(&e) {
                            return Some(item);
                        }
                    }
                    None => {
                        self.stage = Stage::BeginHints;
                        return Some(Item::EndMappings);
                    }
                },
                Stage::BeginHints => {
                    self.stage = Stage::Hints;
                    self.iter = match self.md.hints {
                        Some(_) => Some(Box::new(self.md.mapped())),
                        None => None,
                    };
                    return Some(Item::Hints);
                }
                Stage::Hints => match self.iter.as_mut().and_then(|i| i.next()) {
                    Some(e) => {
                        if let Some(item) = self.hint(&e) {
                            return Some(item);
                        }
                    }
                    None => {
                        self.iter = None;
                        self.stage = Stage::End;
                        return Some(Item::EndHints);
                    }
                },
                Stage::End => {
                    self.stage = Stage::Done;
                    return Some(Item::EndSuperblock);
                }
                Stage::Done => return None,
            }
        }
    }
}

impl ItemSource for MetadataItems<'_, '_> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        self.at += 1;
        Ok(self.next().map(|i| (i, self.at - 1)))
    }
}

/// Writes the metadata in `src` as XML to `out`; warnings of repair
/// mode go to `warn`.
pub fn dump(
    src: &BlockSource,
    opts: &DumpOptions,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(&str),
) -> Result<()> {
    let md = open(src, opts)?;
    if !opts.repair {
        return dump_in_parallel(&md, out);
    }
    for l in losses(&md) {
        warn(&l);
    }
    let mut items = MetadataItems::new(&md, opts);
    let mut w = XmlWriter::new(out);
    while let Some((item, _)) = items.next_item().map_err(|e| anyhow::anyhow!(e.message))? {
        w.item(&item).context("output error")?;
    }
    for l in &items.warnings {
        warn(l);
    }
    let out = w.finish().context("output error")?;
    out.flush().context("output error")?;
    Ok(())
}

/// Formats one entry's line (or none) into a part of the document.
type LineOf<'e> = dyn Fn(&mut XmlWriter<Vec<u8>>, &Entry) -> std::io::Result<()> + Sync + 'e;

/// Mapping array blocks a task formats (about 2,000 cache blocks: a
/// dense cache's lines for them are some 120 KiB), and tasks formatted
/// ahead of the writer: the lines held at once stay near the
/// reference's whole heap.
const CHUNK: usize = 2;
/// Bytes set aside per `<mapping>` or `<hint>` line (a mapping line is at
/// most 85; a hint line of the usual 4-byte hints, 48).
const LINE_ROOM: usize = 88;
const WINDOW: usize = 4;
/// Each task's line buffer (see XmlWriter::part_writer).
const PART_BUFFER: usize = 4096 + 256;

/// The dump of sound metadata (what `MetadataItems` yields without
/// repair: nothing is dropped), its mapping and hint lines formatted on
/// every core a window of chunks at a time and written in order.
fn dump_in_parallel(md: &CacheMetadata, out: &mut dyn Write) -> Result<()> {
    let mut w = XmlWriter::new(out);
    w.superblock(&MetadataItems::superblock_attrs(md))
        .context("output error")?;
    let blocks = md.mappings.blocks();
    let per_block = max_entries_for(MAPPING_SIZE) as u64;
    // Each task's text and buffer, made here and reused for every window:
    // the tasks allocate nothing, so the worker threads never take a
    // malloc arena of their own (resident memory the dump would not use).
    let room = CHUNK * per_block as usize * LINE_ROOM;
    let mut spaces: Vec<(Vec<u8>, Vec<u8>)> = (0..WINDOW)
        .map(|_| (Vec::with_capacity(room), Vec::with_capacity(PART_BUFFER)))
        .collect();
    let mut each_mapped =
        |w: &mut XmlWriter<&mut dyn Write>, line: &LineOf| -> std::io::Result<()> {
            for window in blocks.chunks(CHUNK * WINDOW).enumerate() {
                let (first, window) = (window.0 * CHUNK * WINDOW, window.1);
                let done: Vec<std::io::Result<()>> = window
                    .par_chunks(CHUNK)
                    .zip(spaces.par_iter_mut())
                    .enumerate()
                    .map(|(t, (chunk, (text, buf)))| {
                        text.clear();
                        let mut part =
                            XmlWriter::part_writer(std::mem::take(text), std::mem::take(buf));
                        for (j, block) in chunk.iter().enumerate() {
                            let Some(block) = block else { continue };
                            let base = (first + t * CHUNK + j) as u64 * per_block;
                            for (i, v) in block.values().enumerate() {
                                if !MappingValue::from_bytes(v).is_valid() {
                                    continue;
                                }
                                if let Some(e) = md.get(base + i as u64) {
                                    line(&mut part, &e)?;
                                }
                            }
                        }
                        (*text, *buf) = part.into_parts()?;
                        Ok(())
                    })
                    .collect();
                for ((text, _), r) in spaces.iter().zip(done) {
                    r?;
                    w.lines(text)?;
                }
            }
            Ok(())
        };
    w.begin_mappings().context("output error")?;
    each_mapped(&mut w, &|part, e| {
        part.mapping(&Mapping {
            cache_block: e.cblock as u32,
            origin_block: e.mapping.origin,
            dirty: e.dirty.unwrap_or(true),
        })
    })
    .context("output error")?;
    w.end_mappings().context("output error")?;
    w.begin_hints().context("output error")?;
    if md.hints.is_some() {
        each_mapped(&mut w, &|part, e| match e.hint {
            Some(data) if data.len() <= MAX_HINT_BYTES => part.hint(e.cblock as u32, data),
            _ => Ok(()),
        })
        .context("output error")?;
    }
    w.end_hints().context("output error")?;
    let out = w.finish().context("output error")?;
    out.flush().context("output error")?;
    Ok(())
}
