//! Writing space maps for counts already known (restore, repair).

use anyhow::{bail, Result};

use crate::io::checksum::BlockKind;
use crate::io::BLOCK_SIZE;
use crate::pdata::btree::builder::{build_tree, MetadataWriter};
use crate::pdata::refcount::RefCounter;

use super::bitmap::{
    IndexEntry, BITMAP_HEADER_SIZE, ENTRIES_PER_BITMAP, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE,
    MAX_METADATA_BITMAPS, MAX_METADATA_BLOCKS,
};
use super::disk::REF_COUNT_VALUE_SIZE;
use super::root::SpaceMapRoot;

/// Counter words per bitmap block (16320 entries, 32 per word).
const WORDS_PER_BITMAP: usize = (ENTRIES_PER_BITMAP / 32) as usize;
const LOW_BITS: u64 = 0x5555_5555_5555_5555;

/// Bitmap block `index` for the first `nr_blocks` blocks of `counts` and
/// its index entry (blocknr filled by the caller), plus how many blocks
/// are in use. Works a counter word (32 blocks) at a time: the counter
/// and the bitmap hold the same two-bit counts, with the bits of each
/// pair swapped on disk.
fn bitmap_for(counts: &RefCounter, index: u64, nr_blocks: u64) -> (Vec<u8>, IndexEntry, u64) {
    let mut block = vec![0u8; BLOCK_SIZE];
    let first = index * ENTRIES_PER_BITMAP;
    let n = (nr_blocks - first).min(ENTRIES_PER_BITMAP);
    let first_word = index as usize * WORDS_PER_BITMAP;
    let mut used = 0;
    let mut first_free = None;
    for i in 0..(n as usize).div_ceil(32) {
        let w = counts.word(first_word + i);
        let valid = if (i + 1) * 32 <= n as usize {
            LOW_BITS
        } else {
            LOW_BITS & ((1u64 << (2 * (n as usize - i * 32))) - 1)
        };
        let in_use = (w | (w >> 1)) & LOW_BITS & valid;
        used += in_use.count_ones() as u64;
        let free = !in_use & valid;
        if first_free.is_none() && free != 0 {
            first_free = Some(i as u64 * 32 + free.trailing_zeros() as u64 / 2);
        }
        let disk = ((w & LOW_BITS) << 1) | ((w >> 1) & LOW_BITS);
        let off = BITMAP_HEADER_SIZE + i * 8;
        block[off..off + 8].copy_from_slice(&(disk & (valid | (valid << 1))).to_le_bytes());
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
        let (mut block, mut entry, used) = bitmap_for(counts, i, nr_blocks);
        let at = w.alloc()?;
        w.refs.inc(at);
        w.write(at, &mut block, BlockKind::Bitmap)?;
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
        let (mut block, mut entry, used) = bitmap_for(&w.refs, i as u64, nr_blocks);
        allocated += used;
        entry.blocknr = at;
        w.write(at, &mut block, BlockKind::Bitmap)?;
        let off = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
        entry.write(&mut index[off..off + INDEX_ENTRY_SIZE]);
    }
    w.write(index_at, &mut index, BlockKind::Index)?;
    Ok(SpaceMapRoot {
        nr_blocks,
        nr_allocated: allocated,
        bitmap_root: index_at,
        ref_count_root,
    })
}

/// Smallest binary-metadata output the tools accept, in blocks.
pub const MIN_OUTPUT_BLOCKS: u64 = 10;

/// Metadata blocks a writer uses on an output of `nr_blocks` blocks when
/// everything but the metadata space map's bitmaps and index (its empty
/// ref-count tree included) takes `fixed`: a bitmap per 16320 blocks of
/// the output, and the index.
pub fn blocks_needed(fixed: u64, nr_blocks: u64) -> u64 {
    fixed + nr_blocks.div_ceil(ENTRIES_PER_BITMAP) + 1
}

/// The smallest output, in blocks, that metadata of `fixed` blocks (as
/// for `blocks_needed`) fits on, and never less than the tools' floor of
/// ten blocks.
pub fn smallest_output(fixed: u64) -> u64 {
    let mut n = MIN_OUTPUT_BLOCKS.max(fixed + 2);
    while blocks_needed(fixed, n) > n {
        n = blocks_needed(fixed, n);
    }
    n
}

/// The blocks metadata of `fixed` blocks may use of an output of `bytes`
/// bytes named `output` (capped at what a space map addresses), or an
/// error naming the output, its size and the smallest that would do.
pub fn room(output: &str, bytes: u64, fixed: u64) -> Result<u64> {
    let smallest = smallest_output(fixed);
    let have = bytes / BLOCK_SIZE as u64;
    if smallest > MAX_METADATA_BLOCKS {
        bail!(
            "out of metadata space: the metadata needs {}, more than the {} a metadata \
             device can hold",
            blocks_and_bytes(smallest),
            blocks_and_bytes(MAX_METADATA_BLOCKS)
        );
    }
    if have < smallest {
        bail!(
            "Output file too small (out of metadata space): {output} holds {} ({bytes} bytes); \
             the metadata needs at least {}",
            plural(have),
            blocks_and_bytes(smallest)
        );
    }
    Ok(have.min(MAX_METADATA_BLOCKS))
}

fn plural(blocks: u64) -> String {
    if blocks == 1 {
        "1 block".to_string()
    } else {
        format!("{blocks} blocks")
    }
}

/// "38 blocks (155648 bytes)".
fn blocks_and_bytes(blocks: u64) -> String {
    format!("{} ({} bytes)", plural(blocks), blocks * BLOCK_SIZE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::space_map::bitmap;

    #[test]
    fn bitmaps_hold_each_count_and_the_free_figures() {
        let nr_blocks = ENTRIES_PER_BITMAP + 100;
        let counts = RefCounter::new(nr_blocks);
        // Block 0..5 used; 5 free; then counts 1, 2, 3, 5 spread about.
        counts.inc_range(0..5);
        for (b, n) in [(6u64, 1), (40, 2), (63, 3), (64, 5), (16319, 1), (16330, 2)] {
            for _ in 0..n {
                counts.inc(b);
            }
        }
        let (block, entry, used) = bitmap_for(&counts, 0, nr_blocks);
        for b in 0..ENTRIES_PER_BITMAP {
            assert_eq!(
                bitmap::entry(&block, b) as u32,
                counts.get(b).min(3),
                "block {b}"
            );
        }
        assert_eq!(used, 10);
        assert_eq!(entry.nr_free as u64, ENTRIES_PER_BITMAP - 10);
        assert_eq!(entry.none_free_before, 5);

        // The last bitmap covers 100 blocks; the rest count as free.
        let (block, entry, used) = bitmap_for(&counts, 1, nr_blocks);
        assert_eq!(bitmap::entry(&block, 10), 2);
        assert_eq!(used, 1);
        assert_eq!(entry.nr_free as u64, ENTRIES_PER_BITMAP - 1);
        assert_eq!(entry.none_free_before, 0);
    }

    #[test]
    fn a_full_bitmap_has_none_free_before_its_end() {
        let counts = RefCounter::new(64);
        counts.inc_range(0..64);
        let (_, entry, used) = bitmap_for(&counts, 0, 64);
        assert_eq!(used, 64);
        assert_eq!(entry.none_free_before, 64);
    }
}
