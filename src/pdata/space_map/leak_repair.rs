//! Repairing space-map leaks in place, the way the kernel commits: every
//! changed space-map block is written to a block that neither the trees
//! nor the old space maps use, the writes are flushed, and only then is
//! the superblock rewritten to point at the new blocks. A crash before the
//! superblock write leaves the old metadata exactly as it was.
//!
//! Only leaks are repaired: blocks whose stored count is higher than the
//! trees' references, where both counts are below three (counts of three
//! or more live in the ref-count trees, which this does not rewrite). Any
//! other difference is refused.
//!
//! What is written: each data bitmap with leaks, at a new block; the data
//! index btree's path to those entries, shadowed; every metadata bitmap
//! and the metadata index block, at new blocks (at most 256 blocks, and it
//! keeps the allocation bookkeeping simple: the new map describes itself).
//!
//! The target (thin, cache, era) supplies its maps' counts and a function
//! that turns the new space-map roots into its new superblock:
//!
//! ```ignore
//! commit(src, Maps { metadata, data: None, repair_tool: "cache_repair" },
//!        Extra::default(), |roots, _| my_superblock_with(roots), &mut sink)?;
//! ```

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};

use crate::io::checksum::{seal, BlockKind};
use crate::io::sink::BlockSink;
use crate::io::{BlockSource, BLOCK_SIZE};
use crate::pdata::btree::node::{NodeView, NODE_HEADER_SIZE};
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::bitmap::{
    self, IndexEntry, ENTRIES_PER_BITMAP, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE,
};
use crate::pdata::space_map::disk::StoredSpaceMap;
use crate::pdata::space_map::root::SpaceMapRoot;

/// One space map: the counts computed from the trees and the map as
/// stored.
#[derive(Clone, Copy)]
pub struct MapCounts<'a> {
    pub refs: &'a RefCounter,
    pub sm: &'a StoredSpaceMap,
}

/// The maps a repair rewrites.
#[derive(Clone, Copy)]
pub struct Maps<'a> {
    pub metadata: MapCounts<'a>,
    /// Thin pools also have a data space map.
    pub data: Option<MapCounts<'a>>,
    /// Named in refusals ("... use thin_repair").
    pub repair_tool: &'static str,
}

/// The space-map roots of the new transaction.
#[derive(Clone, Copy, Debug)]
pub struct NewRoots {
    pub metadata: SpaceMapRoot,
    pub data: Option<SpaceMapRoot>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakRepair {
    /// Space-map blocks written, superblock included.
    pub blocks_written: u64,
}

/// Offsets in a block: self-location (after checksum and flags/padding).
const BLOCKNR_OFFSET: usize = 8;

/// Hands out metadata blocks unused by the old transaction.
struct Allocator<'a> {
    counts: MapCounts<'a>,
    src: &'a BlockSource,
    next: u64,
    limit: u64,
}

impl Allocator<'_> {
    fn alloc(&mut self) -> Result<u64> {
        while self.next < self.limit {
            let b = self.next;
            self.next += 1;
            if self.counts.refs.get(b) == 0 && stored(self.src, self.counts.sm, b)? == 0 {
                return Ok(b);
            }
        }
        bail!("no free metadata block left to write the repaired space maps to")
    }
}

/// The stored two-bit count of block `b`.
fn stored(src: &BlockSource, sm: &StoredSpaceMap, b: u64) -> Result<u8> {
    let i = (b / ENTRIES_PER_BITMAP) as usize;
    let ie = sm
        .bitmaps
        .get(i)
        .copied()
        .flatten()
        .context("block beyond the space map")?;
    let bm = src.checked(ie.blocknr, BlockKind::Bitmap)?;
    Ok(bitmap::entry(bm, b % ENTRIES_PER_BITMAP))
}

/// Bitmap `i` rebuilt to hold `wanted(b)` for each block, as a new block
/// image (self-location and checksum are filled in when it is placed),
/// whether it changed, its index entry and its count of used blocks.
/// Every stored count must equal `computed(b)` or be a leak of it.
fn rebuild_bitmap(
    src: &BlockSource,
    sm: &StoredSpaceMap,
    repair_tool: &str,
    i: usize,
    computed: &dyn Fn(u64) -> u32,
    wanted: &dyn Fn(u64) -> u32,
) -> Result<(Vec<u8>, bool, IndexEntry, u64)> {
    let ie = sm.bitmaps[i].context("missing bitmap")?;
    let old = src.checked(ie.blocknr, BlockKind::Bitmap)?;
    let mut new = old.to_vec();
    let first = i as u64 * ENTRIES_PER_BITMAP;
    let n = (sm.root.nr_blocks - first).min(ENTRIES_PER_BITMAP);
    let mut changed = false;
    let mut allocated = 0;
    for j in 0..n {
        let b = first + j;
        let s2 = bitmap::entry(old, j);
        let stored = if s2 == bitmap::OVERFLOW {
            sm.overflow.get(&b).copied().unwrap_or(0)
        } else {
            s2 as u32
        };
        let c = computed(b);
        if stored != c && (stored < c || stored >= 3) {
            bail!(
                "{} block {b}: stored count {stored}, computed {c}: not a leak that can be \
                 repaired in place; use {repair_tool}",
                sm.which.name()
            );
        }
        let w = wanted(b);
        if w > 0 {
            allocated += 1;
        }
        let w2 = w.min(3) as u8;
        if w2 != s2 {
            if w >= 3 || s2 == bitmap::OVERFLOW {
                bail!(
                    "{} block {b}: a count of three or more would change",
                    sm.which.name()
                );
            }
            bitmap::set_entry(&mut new, j, w2);
            changed = true;
        }
    }
    let zeros = (0..ENTRIES_PER_BITMAP)
        .filter(|&j| bitmap::entry(&new, j) == 0)
        .count() as u32;
    let first_free = (0..ENTRIES_PER_BITMAP)
        .find(|&j| bitmap::entry(&new, j) == 0)
        .unwrap_or(ENTRIES_PER_BITMAP) as u32;
    let entry = IndexEntry {
        blocknr: ie.blocknr,
        nr_free: zeros,
        none_free_before: first_free,
    };
    Ok((new, changed, entry, allocated))
}

fn finish_block(mut data: Vec<u8>, at: u64, kind: BlockKind) -> Vec<u8> {
    data[BLOCKNR_OFFSET..BLOCKNR_OFFSET + 8].copy_from_slice(&at.to_le_bytes());
    seal(&mut data, kind);
    data
}

/// Changes committed along with rewritten space maps.
#[derive(Default)]
pub struct Extra {
    /// Blocks to place at free locations (their self-location is filled in).
    pub new_blocks: Vec<(BlockKind, Vec<u8>)>,
    /// Blocks that gain one reference each.
    pub more_refs: Vec<u64>,
}

/// Writes the repaired space maps (and `extra`) at free blocks, flushes,
/// then writes the superblock `superblock` makes from the new roots and
/// the blocks `extra.new_blocks` were placed at, and flushes again.
pub fn commit(
    src: &BlockSource,
    maps: Maps<'_>,
    extra: Extra,
    superblock: impl FnOnce(&NewRoots, &[u64]) -> Vec<u8>,
    sink: &mut dyn BlockSink,
) -> Result<LeakRepair> {
    let repair_tool = maps.repair_tool;
    let meta = maps.metadata;
    let mut out = LeakRepair::default();
    let mut alloc = Allocator {
        counts: meta,
        src,
        next: 1,
        limit: meta.sm.root.nr_blocks.min(src.nr_blocks()),
    };
    let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
    // Metadata blocks the new transaction stops using, and starts using.
    let mut freed: Vec<u64> = Vec::new();

    // Data bitmaps with leaks, at new blocks.
    let mut data_root = None;
    if let Some(data) = maps.data {
        let data_sm = data.sm;
        let data_count = |b: u64| data.refs.get(b);
        let mut data_entries: BTreeMap<u64, IndexEntry> = BTreeMap::new();
        let mut data_allocated = 0;
        for i in 0..data_sm.bitmaps.len() {
            let (content, changed, mut entry, allocated) =
                rebuild_bitmap(src, data_sm, repair_tool, i, &data_count, &data_count)?;
            data_allocated += allocated;
            if !changed {
                continue;
            }
            freed.push(entry.blocknr);
            let at = alloc.alloc()?;
            entry.blocknr = at;
            writes.push((at, finish_block(content, at, BlockKind::Bitmap)));
            data_entries.insert(i as u64, entry);
        }
        let mut root = data_sm.root;
        root.nr_allocated = data_allocated;
        if !data_entries.is_empty() {
            root.bitmap_root = shadow_index(
                src,
                data_sm.root.bitmap_root,
                &data_entries,
                &mut alloc,
                &mut writes,
                &mut freed,
            )?;
        }
        data_root = Some(root);
    }

    let mut placed = Vec::new();
    for (kind, content) in extra.new_blocks {
        let at = alloc.alloc()?;
        writes.push((at, finish_block(content, at, kind)));
        placed.push(at);
    }

    // Every metadata bitmap and the index block, at new blocks.
    let meta_sm = meta.sm;
    let nr_bitmaps = meta_sm.bitmaps.len();
    let new_locations: Vec<u64> = (0..=nr_bitmaps)
        .map(|_| alloc.alloc())
        .collect::<Result<_>>()?;
    for ie in meta_sm.bitmaps.iter().flatten() {
        freed.push(ie.blocknr);
    }
    freed.push(meta_sm.root.bitmap_root);
    for b in &freed {
        if meta.refs.get(*b) != 1 {
            bail!("space-map block {b} is referenced more than once; use {repair_tool}");
        }
    }
    let mut overrides: HashMap<u64, u32> = freed.iter().map(|b| (*b, 0)).collect();
    for (b, _) in &writes {
        overrides.insert(*b, 1);
    }
    for b in &new_locations {
        overrides.insert(*b, 1);
    }
    for b in &extra.more_refs {
        let now = overrides
            .get(b)
            .copied()
            .unwrap_or_else(|| meta.refs.get(*b));
        overrides.insert(*b, now + 1);
    }
    let computed = |b: u64| meta.refs.get(b);
    let wanted = |b: u64| overrides.get(&b).copied().unwrap_or_else(|| computed(b));
    let mut index = vec![0u8; BLOCK_SIZE];
    let index_at = new_locations[nr_bitmaps];
    let mut meta_allocated = 0;
    for (i, &at) in new_locations[..nr_bitmaps].iter().enumerate() {
        let (content, _, mut entry, allocated) =
            rebuild_bitmap(src, meta_sm, repair_tool, i, &computed, &wanted)?;
        meta_allocated += allocated;
        entry.blocknr = at;
        writes.push((at, finish_block(content, at, BlockKind::Bitmap)));
        let off = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
        entry.write(&mut index[off..off + INDEX_ENTRY_SIZE]);
    }
    writes.push((index_at, finish_block(index, index_at, BlockKind::Index)));
    let mut metadata_root = meta_sm.root;
    metadata_root.bitmap_root = index_at;
    metadata_root.nr_allocated = meta_allocated;
    let roots = NewRoots {
        metadata: metadata_root,
        data: data_root,
    };
    let sb_new_block = superblock(&roots, &placed);

    // The new transaction, then the superblock that commits it.
    for (b, data) in &writes {
        sink.write_block(*b, data)?;
    }
    sink.flush()?;
    sink.write_block(0, &sb_new_block)?;
    sink.flush()?;
    out.blocks_written = writes.len() as u64 + 1;
    Ok(out)
}

/// Copies the index-btree nodes on the paths to `entries` into new blocks
/// with the new entries, returning the new root.
fn shadow_index(
    src: &BlockSource,
    block: u64,
    entries: &BTreeMap<u64, IndexEntry>,
    alloc: &mut Allocator<'_>,
    writes: &mut Vec<(u64, Vec<u8>)>,
    freed: &mut Vec<u64>,
) -> Result<u64> {
    let old = src.checked(block, BlockKind::BtreeNode)?;
    let node = NodeView::new(old);
    let n = node.nr_entries();
    let max = node.max_entries() as usize;
    let mut new = old.to_vec();
    if node.is_leaf() {
        for i in 0..n {
            if let Some(e) = entries.get(&node.key(i)) {
                let off = NODE_HEADER_SIZE + max * 8 + i as usize * INDEX_ENTRY_SIZE;
                e.write(&mut new[off..off + INDEX_ENTRY_SIZE]);
            }
        }
    } else {
        for i in 0..n {
            let lo = node.key(i);
            let hi = if i + 1 < n { node.key(i + 1) } else { u64::MAX };
            let below: BTreeMap<u64, IndexEntry> =
                entries.range(lo..hi).map(|(k, v)| (*k, *v)).collect();
            if below.is_empty() {
                continue;
            }
            let child = shadow_index(src, node.value_u64(i), &below, alloc, writes, freed)?;
            let off = NODE_HEADER_SIZE + max * 8 + i as usize * 8;
            new[off..off + 8].copy_from_slice(&child.to_le_bytes());
        }
    }
    freed.push(block);
    let at = alloc.alloc()?;
    writes.push((at, finish_block(new, at, BlockKind::BtreeNode)));
    Ok(at)
}
