//! Writing an `EraModel` as binary era metadata (era_restore,
//! era_repair).
//!
//! The model is complete and validated before anything is written, and
//! the output's size is checked against what it needs. Then block 0 is
//! invalidated (zeroed and flushed: a crash part way leaves no valid
//! superblock over half-written trees, never the old superblock pointing
//! into overwritten blocks), every bitset, the writeset tree, the era
//! array and the metadata space map are written and flushed, and the new
//! superblock is written last and flushed.
//!
//! What is written: every writeset into the writeset tree (none open:
//! root 0, nr_bits = nr_blocks), the era array, no metadata snapshot,
//! flags 1 (clean shutdown, as the reference writes; nothing reads it).

use anyhow::{bail, Result};

use crate::io::sink::BlockSink;
use crate::io::BLOCK_SIZE;
use crate::pdata::array::builder::{self as array_builder, ArrayBuilder};
use crate::pdata::bitset::builder::{self as bitset_builder, BitsetBuilder};
use crate::pdata::btree::builder::{build_tree, nodes_for, MetadataWriter};
use crate::pdata::space_map::bitmap::{ENTRIES_PER_BITMAP, MAX_METADATA_BLOCKS};
use crate::pdata::space_map::writer;

use super::model::EraModel;
use super::superblock::{Superblock, Writeset, CLEAN_SHUTDOWN, WRITESET_SIZE};
use super::ERA_ENTRY_SIZE;

/// Smallest binary-metadata output the tools accept, in blocks.
const MIN_OUTPUT_BLOCKS: u64 = 10;
/// The ref-count tree's value size.
const REF_COUNT_VALUE_SIZE: u32 = 4;

/// Blocks the model takes before the space map's bitmaps and index.
pub fn blocks_before_space_map(model: &EraModel) -> u64 {
    1 + model
        .writesets
        .iter()
        .map(|w| bitset_builder::blocks_needed(w.nr_bits as u64))
        .sum::<u64>()
        + nodes_for(model.writesets.len() as u64, WRITESET_SIZE)
        + array_builder::blocks_needed(model.nr_blocks as u64, ERA_ENTRY_SIZE)
        + nodes_for(0, REF_COUNT_VALUE_SIZE)
}

fn needed(model: &EraModel, nr_blocks: u64) -> u64 {
    blocks_before_space_map(model) + nr_blocks.div_ceil(ENTRIES_PER_BITMAP) + 1
}

/// The blocks the metadata may use of an output of `bytes` bytes named
/// `output`, or an error with both sizes.
pub fn room(model: &EraModel, output: &str, bytes: u64) -> Result<u64> {
    let have = (bytes / BLOCK_SIZE as u64).min(MAX_METADATA_BLOCKS);
    let mut smallest = MIN_OUTPUT_BLOCKS.max(blocks_before_space_map(model) + 2);
    while needed(model, smallest) > smallest {
        smallest = needed(model, smallest);
    }
    if smallest > MAX_METADATA_BLOCKS {
        bail!(
            "out of metadata space: the metadata needs {smallest} blocks, more than the \
             {MAX_METADATA_BLOCKS} a metadata device can hold"
        );
    }
    if have < smallest {
        bail!(
            "Output file too small (out of metadata space): {output} holds {have} blocks \
             ({bytes} bytes); the metadata needs at least {smallest} blocks ({} bytes)",
            smallest * BLOCK_SIZE as u64
        );
    }
    Ok(have)
}

/// The metadata blocks of the era transaction on `output`, if it holds
/// one that can be kept whole while a new one is written beside it.
pub fn blocks_in_use(output: &std::path::Path) -> Option<roaring::RoaringTreemap> {
    use crate::io::{checksum::BlockKind, source::OpenOptions, BlockSource};
    // Not exclusive: the writer already holds the device that way.
    let src = BlockSource::open(output, OpenOptions { exclusive: false }).ok()?;
    if src.is_decompressed() {
        return None;
    }
    let sb = Superblock::parse(src.checked(0, BlockKind::EraSuperblock).ok()?);
    if sb.magic != super::superblock::ERA_MAGIC {
        return None;
    }
    crate::pdata::space_map::in_use::metadata_blocks_in_use(&src, &sb.metadata_sm_root)
}

/// Writes `model` onto an output of `nr_blocks` usable blocks. Where
/// `keep` (`blocks_in_use`) names the transaction already there and
/// there is room beside it, it stays whole until the new superblock is
/// written; otherwise block 0 is invalidated first.
pub fn build(
    model: &EraModel,
    sink: &mut dyn BlockSink,
    nr_blocks: u64,
    keep: Option<roaring::RoaringTreemap>,
) -> Result<Superblock> {
    let nr_blocks = nr_blocks.min(MAX_METADATA_BLOCKS);
    let mut w = MetadataWriter::replacing(sink, nr_blocks, needed(model, nr_blocks), keep)?;

    let mut tree: Vec<(u64, [u8; WRITESET_SIZE as usize])> = Vec::new();
    for ws in &model.writesets {
        let mut bits = BitsetBuilder::new(ws.nr_bits as u64);
        for r in &ws.marked {
            bits.set_range(&mut w, r.clone())?;
        }
        let root = bits.finish(&mut w)?;
        // The tree's value holds the bitset's one reference.
        w.refs.inc(root);
        let value = Writeset {
            nr_bits: ws.nr_bits,
            root,
        };
        tree.push((ws.era as u64, value.to_bytes()));
    }
    let tree_root = build_tree(
        &mut w,
        WRITESET_SIZE,
        tree.iter().map(|(k, v)| (*k, &v[..])),
    )?;

    let mut eras = ArrayBuilder::new(ERA_ENTRY_SIZE);
    let mut next = 0u64;
    for &(block, era) in &model.eras {
        eras.push_zeros(&mut w, block as u64 - next)?;
        eras.push(&mut w, &era.to_le_bytes())?;
        next = block as u64 + 1;
    }
    eras.push_zeros(&mut w, model.nr_blocks as u64 - next)?;
    let era_root = eras.finish(&mut w)?;

    for r in [0, tree_root, era_root] {
        w.refs.inc(r);
    }
    let metadata_sm = writer::write_metadata(&mut w, nr_blocks)?;
    let sb = Superblock {
        flags: CLEAN_SHUTDOWN,
        metadata_sm_root: metadata_sm,
        data_block_size: model.block_size,
        nr_blocks: model.nr_blocks,
        current_era: model.current_era,
        current_writeset: Writeset {
            nr_bits: model.nr_blocks,
            root: 0,
        },
        writeset_tree_root: tree_root,
        era_array_root: era_root,
        ..Superblock::new()
    };
    let sink = w.sink();
    sink.flush()?;
    sink.write_block(0, &sb.to_block())?;
    sink.flush()?;
    Ok(sb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::era::model::ModelWriteset;
    use crate::io::sink::VolatileSink;
    use crate::io::BlockSource;

    fn model() -> EraModel {
        EraModel {
            block_size: 128,
            nr_blocks: 5000,
            current_era: 4,
            writesets: vec![ModelWriteset {
                era: 4,
                nr_bits: 5000,
                marked: vec![3..70, 4000..4999],
            }],
            eras: (0..5000).map(|b| (b, 1 + b % 3)).collect(),
        }
    }

    /// Power lost after every possible number of writes, over an image
    /// that held valid era metadata: block 0 is the old superblock only
    /// before anything else was written, the new one only once
    /// everything it points at is durable, and otherwise invalid.
    #[test]
    fn a_power_cut_never_leaves_a_superblock_over_partial_trees() {
        let nr_blocks = 64;
        let mut old = vec![0u8; nr_blocks * BLOCK_SIZE];
        build(
            &model(),
            &mut VolatileSink::new(&mut old, None),
            nr_blocks as u64,
            None,
        )
        .unwrap();
        let mut total = old.clone();
        let mut counting = VolatileSink::new(&mut total, None);
        build(&model(), &mut counting, nr_blocks as u64, None).unwrap();
        let writes = counting.writes;
        for limit in 0..=writes {
            let mut image = old.clone();
            let done = build(
                &model(),
                &mut VolatileSink::new(&mut image, Some(limit)),
                nr_blocks as u64,
                None,
            );
            let src = BlockSource::from_bytes(&image, std::path::Path::new("cut")).unwrap();
            let sb = Superblock::read(&src, 0);
            match limit {
                0 => assert!(sb.is_ok() && image == old, "nothing written yet"),
                l if l == writes => {
                    done.unwrap();
                    let r = crate::era::check::check(
                        &src,
                        &Default::default(),
                        &crate::report::Reporter::with_mode(crate::report::Mode::Quiet),
                    );
                    assert!(r.passed(false), "{:?}", r.findings);
                }
                l => {
                    assert!(done.is_err(), "cut at {l}");
                    assert!(
                        sb.is_err(),
                        "a valid superblock after {l} of {writes} writes"
                    );
                }
            }
        }
    }
}
