//! Marking written-back blocks clean, in a new transaction.
//!
//! The reference rewrites the mapping array's or dirty bitset's blocks
//! in place (tools.md §3.6): a crash part way leaves blocks with new
//! checksums beside old ones. Here the changed structure is built anew
//! (format 1: the mapping array, with the written blocks' DIRTY flags
//! cleared; format 2: the dirty bitset, without their bits) in blocks the
//! current transaction does not use; the structures that do not change
//! (hints, discards, and the mapping array in format 2) are shared, their
//! blocks counted in a new metadata space map. Everything is flushed,
//! then the superblock is written last: a crash at any point leaves the
//! old transaction, in which the blocks are still dirty (harmless: they
//! are written back again), or the new one.

use anyhow::{bail, Context, Result};
use roaring::RoaringTreemap;

use crate::cache::mapping::{Mapping, DIRTY, MAPPING_SIZE};
use crate::cache::read::{CacheMetadata, ReadOptions, DISCARD_BITSET, HINT_ARRAY, MAPPING_ARRAY};
use crate::cache::superblock::Superblock;
use crate::io::checksum::{seal, BlockKind};
use crate::io::sink::BlockSink;
use crate::io::BlockSource;
use crate::pdata::array::builder::ArrayBuilder;
use crate::pdata::array::walk::{walk_arrays, AnyValues, ArrayWalk};
use crate::pdata::bitset::builder::BitsetBuilder;
use crate::pdata::bitset::WORD_SIZE;
use crate::pdata::btree::builder::MetadataWriter;
use crate::pdata::btree::walk::Walker;
use crate::pdata::refcount::RefCounter;
use crate::pdata::space_map::writer;

/// The blocks with a count in `refs` (the counts a check computed for
/// the current transaction, block 0 included).
pub fn in_use(refs: &RefCounter) -> RoaringTreemap {
    (0..refs.nr_blocks()).filter(|&b| refs.get(b) > 0).collect()
}

/// Writes a new transaction of the metadata in `src` in which the cache
/// blocks `clean` (ascending) are clean, through `sink` (the same
/// device), leaving every block of `keep` (the current transaction's,
/// see [`in_use`]) alone until the superblock. Returns the new
/// superblock. On error the superblock has not been written.
pub fn mark_clean(
    src: &BlockSource,
    keep: RoaringTreemap,
    clean: &[u64],
    sink: &mut dyn BlockSink,
) -> Result<Superblock> {
    let md = CacheMetadata::read(
        src,
        &ReadOptions {
            hints: true,
            discards: false,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(d) = md.damage().first() {
        bail!("metadata damaged: {d}");
    }
    let old = md.sb.clone();
    let cache_blocks = md.cache_blocks();
    let nr_blocks = old.metadata_sm_root.nr_blocks;
    if nr_blocks > src.nr_blocks() || nr_blocks == 0 {
        bail!(
            "the metadata space map describes {nr_blocks} blocks, but the device holds {}",
            src.nr_blocks()
        );
    }

    // The structures kept as they are, and the blocks they take.
    let hint_len = md.hints.as_ref().map(|h| h.len());
    let shared = RefCounter::for_metadata(nr_blocks);
    {
        let walker = Walker::new(src, &shared, true);
        let mut walks = Vec::new();
        if let Some(len) = hint_len {
            walks.push(ArrayWalk {
                name: HINT_ARRAY.into(),
                root: old.hint_root,
                value_size: old.policy_hint_size,
                len,
                visitor: &AnyValues,
            });
        }
        if old.discard_root != 0 {
            walks.push(ArrayWalk {
                name: DISCARD_BITSET.into(),
                root: old.discard_root,
                value_size: WORD_SIZE,
                len: old.discard_nr_blocks.div_ceil(64),
                visitor: &AnyValues,
            });
        }
        if old.version >= 2 {
            walks.push(ArrayWalk {
                name: MAPPING_ARRAY.into(),
                root: old.mapping_root,
                value_size: MAPPING_SIZE,
                len: cache_blocks,
                visitor: &AnyValues,
            });
        }
        for (walk, out) in walks.iter().zip(walk_arrays(&walker, &walks)) {
            if !out.is_clean() {
                bail!("{} is damaged; the metadata was left as it was", walk.name);
            }
        }
    }

    let mut w = MetadataWriter::new(sink, 1, nr_blocks).avoiding(keep);
    for b in 0..nr_blocks {
        for _ in 0..shared.get(b) {
            w.refs.inc(b);
        }
    }
    drop(shared);
    let mut sb = old.clone();
    let mut clean_iter = clean.iter().copied().peekable();
    let mut is_clean = |c: u64| {
        while clean_iter.next_if(|&x| x < c).is_some() {}
        clean_iter.next_if_eq(&c).is_some()
    };
    if let Some(dirty) = &md.dirty {
        let mut bits = BitsetBuilder::new(cache_blocks);
        for c in dirty.ones() {
            if !is_clean(c) {
                bits.set(&mut w, c)?;
            }
        }
        let root = bits.finish(&mut w)?;
        w.refs.inc(root);
        sb.dirty_root = Some(root);
    } else {
        let mut mappings = ArrayBuilder::new(MAPPING_SIZE);
        let mut next = 0;
        for e in md.entries() {
            if e.cblock != next {
                bail!("{MAPPING_ARRAY}: cache block {next} cannot be read");
            }
            next += 1;
            let mut m: Mapping = e.mapping;
            if m.dirty_flag() && is_clean(e.cblock) {
                m.flags &= !DIRTY;
            }
            let v = m.pack();
            if v == 0 {
                mappings.push_zeros(&mut w, 1)?;
            } else {
                mappings.push(&mut w, &v.to_le_bytes())?;
            }
        }
        if next != cache_blocks {
            bail!("{MAPPING_ARRAY}: cache block {next} cannot be read");
        }
        let root = mappings.finish(&mut w)?;
        w.refs.inc(root);
        sb.mapping_root = root;
    }
    // The shared roots were counted by their walks (the superblock's
    // pointers, as the checker counts them); block 0 is the superblock.
    w.refs.inc(0);
    sb.metadata_sm_root =
        writer::write_metadata(&mut w, nr_blocks).context("writing the new metadata space map")?;
    // The rest of block 0 stays byte for byte; the fields are new.
    let mut block = src.block(0)?.to_vec();
    sb.write_fields(&mut block);
    seal(&mut block, BlockKind::CacheSuperblock);
    w.commit(&block)
        .context("flushing the new metadata and writing its superblock")?;
    Ok(sb)
}
