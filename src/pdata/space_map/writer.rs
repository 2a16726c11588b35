//! Writing space maps for counts already known (restore, repair).

use anyhow::{bail, Result};

use crate::io::checksum::BlockKind;
use crate::io::BLOCK_SIZE;
use crate::pdata::btree::builder::{build_tree, MetadataWriter};
use crate::pdata::refcount::RefCounter;

use super::bitmap::{
    self, IndexEntry, ENTRIES_PER_BITMAP, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE, MAX_METADATA_BITMAPS,
};
use super::disk::REF_COUNT_VALUE_SIZE;
use super::root::SpaceMapRoot;

/// A bitmap block image for blocks [first, first + 16320) and its index
/// entry (blocknr filled by the caller), plus how many blocks are in use.
fn bitmap_for(
    first: u64,
    nr_blocks: u64,
    count: &dyn Fn(u64) -> u32,
) -> (Vec<u8>, IndexEntry, u64) {
    let mut block = vec![0u8; BLOCK_SIZE];
    let n = (nr_blocks - first).min(ENTRIES_PER_BITMAP);
    let mut used = 0;
    let mut first_free = None;
    for j in 0..n {
        let c = count(first + j);
        if c > 0 {
            used += 1;
            bitmap::set_entry(&mut block, j, c.min(3) as u8);
        } else if first_free.is_none() {
            first_free = Some(j);
        }
    }
    // As the kernel keeps them: entries past the end count as free.
    let entry = IndexEntry {
        blocknr: 0,
        nr_free: (ENTRIES_PER_BITMAP - used) as u32,
        none_free_before: first_free.unwrap_or(n) as u32,
    };
    (block, entry, used)
}

/// The ref-count tree for counts of three or more.
fn ref_count_tree(
    w: &mut MetadataWriter,
    nr_blocks: u64,
    counts: &dyn Fn(u64) -> u32,
    overflowing: &[u64],
) -> Result<u64> {
    let values: Vec<(u64, [u8; 4])> = overflowing
        .iter()
        .filter(|&&b| b < nr_blocks)
        .map(|&b| (b, counts(b).to_le_bytes()))
        .collect();
    let root = build_tree(
        w,
        REF_COUNT_VALUE_SIZE,
        values.iter().map(|(k, v)| (*k, &v[..])),
    )?;
    Ok(root)
}

/// Blocks of `counts` with a count of three or more, a word at a time.
fn overflowing(counts: &RefCounter) -> Vec<u64> {
    let mut out = Vec::new();
    for w in 0..counts.nr_blocks().div_ceil(32) as usize {
        let word = counts.word(w);
        let mut saturated = word & (word >> 1) & 0x5555_5555_5555_5555;
        while saturated != 0 {
            let lane = saturated.trailing_zeros() as u64 / 2;
            out.push(w as u64 * 32 + lane);
            saturated &= saturated - 1;
        }
    }
    out
}

/// Writes the data space map for `counts`; the caller counts the
/// references its superblock makes to the two roots.
pub fn write_data(w: &mut MetadataWriter, counts: &RefCounter) -> Result<SpaceMapRoot> {
    let nr_blocks = counts.nr_blocks();
    let get = |b: u64| counts.get(b);
    let ref_count_root = ref_count_tree(w, nr_blocks, &get, &overflowing(counts))?;
    let mut entries = Vec::new();
    let mut allocated = 0;
    for i in 0..nr_blocks.div_ceil(ENTRIES_PER_BITMAP) {
        let (block, mut entry, used) = bitmap_for(i * ENTRIES_PER_BITMAP, nr_blocks, &get);
        let at = w.alloc()?;
        w.refs.inc(at);
        w.write(at, block, BlockKind::Bitmap)?;
        entry.blocknr = at;
        allocated += used;
        let mut value = [0u8; INDEX_ENTRY_SIZE];
        entry.write(&mut value);
        entries.push((i, value));
    }
    let index_root = build_tree(
        w,
        INDEX_ENTRY_SIZE as u32,
        entries.iter().map(|(k, v)| (*k, &v[..])),
    )?;
    Ok(SpaceMapRoot {
        nr_blocks,
        nr_allocated: allocated,
        bitmap_root: index_root,
        ref_count_root,
    })
}

/// Writes the metadata space map for the writer's own counts, including
/// the blocks the map itself takes. Call last: nothing may be allocated
/// after it. `nr_blocks` is the size the map describes.
pub fn write_metadata(w: &mut MetadataWriter, nr_blocks: u64) -> Result<SpaceMapRoot> {
    let nr_bitmaps = nr_blocks.div_ceil(ENTRIES_PER_BITMAP);
    if nr_bitmaps as usize > MAX_METADATA_BITMAPS {
        bail!("{nr_blocks} metadata blocks need more bitmaps than one index block holds");
    }
    let over = overflowing(&w.refs);
    let snapshot: std::collections::HashMap<u64, u32> =
        over.iter().map(|&b| (b, w.refs.get(b))).collect();
    let counts_of = move |b: u64| snapshot.get(&b).copied().unwrap_or(0);
    let ref_count_root = ref_count_tree(w, nr_blocks, &counts_of, &over)?;
    w.refs.inc(ref_count_root);
    // Reserve the map's own blocks first, so the bitmaps describe them.
    let bitmap_blocks: Vec<u64> = (0..nr_bitmaps).map(|_| w.alloc()).collect::<Result<_>>()?;
    let index_at = w.alloc()?;
    for b in bitmap_blocks.iter().chain(std::iter::once(&index_at)) {
        w.refs.inc(*b);
    }
    let mut index = vec![0u8; BLOCK_SIZE];
    let mut allocated = 0;
    for (i, &at) in bitmap_blocks.iter().enumerate() {
        let refs = &w.refs;
        let get = |b: u64| refs.get(b);
        let (block, mut entry, used) = bitmap_for(i as u64 * ENTRIES_PER_BITMAP, nr_blocks, &get);
        allocated += used;
        entry.blocknr = at;
        w.write(at, block, BlockKind::Bitmap)?;
        let off = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
        entry.write(&mut index[off..off + INDEX_ENTRY_SIZE]);
    }
    w.write(index_at, index, BlockKind::Index)?;
    Ok(SpaceMapRoot {
        nr_blocks,
        nr_allocated: allocated,
        bitmap_root: index_at,
        ref_count_root,
    })
}
