//! Entry points for the fuzz targets (fuzz/) and their regression tests:
//! each runs the library over arbitrary bytes and must never panic.

use std::path::Path;

use crate::io::checksum::{self, seal, BlockKind};
use crate::io::sink::MemorySink;
use crate::io::{le_u32, pack, BlockSource, BLOCK_SIZE};
use crate::pdata::btree::node::NodeView;
use crate::pdata::space_map::bitmap;
use crate::report::{Mode, Reporter};
use crate::thin::check::{check, CheckOptions};
use crate::thin::dump::{dump, DumpOptions, Format};
use crate::thin::repair::{salvage, RepairOptions};
use crate::thin::restore::{build_items, validate_reader, Overrides};
use crate::thin::superblock::Superblock;

/// Blocks an image made from fuzz input has at most.
pub const MAX_IMAGE_BLOCKS: usize = 64;

/// Makes an image of the input, sealing block 0 as a superblock and
/// every block whose flags look like a btree node's as a node (bitmap and
/// index blocks by a marker byte), so that mutations reach past the
/// checksums; then checks, dumps and salvages it.
pub fn exercise_image(data: &[u8]) {
    let nr = (data.len() / BLOCK_SIZE).clamp(1, MAX_IMAGE_BLOCKS);
    let mut image = vec![0u8; nr * BLOCK_SIZE];
    let n = data.len().min(image.len());
    image[..n].copy_from_slice(&data[..n]);
    for (b, block) in image.chunks_mut(BLOCK_SIZE).enumerate() {
        if b == 0 {
            seal(block, BlockKind::ThinSuperblock);
        } else if matches!(le_u32(block, 4), 1 | 2) {
            block[8..16].copy_from_slice(&(b as u64).to_le_bytes());
            seal(block, BlockKind::BtreeNode);
        } else if block[4] == 0xb1 {
            seal(block, BlockKind::Bitmap);
        } else if block[4] == 0x1d {
            seal(block, BlockKind::Index);
        }
    }
    let Ok(src) = BlockSource::from_bytes(&image, Path::new("fuzz")) else {
        return;
    };
    let quiet = Reporter::with_mode(Mode::Quiet);
    let _ = check(&src, &CheckOptions::default(), &quiet);
    let snap = CheckOptions {
        metadata_snap: true,
        ..Default::default()
    };
    let _ = check(&src, &snap, &quiet);
    let opts = DumpOptions {
        format: Format::Xml,
        metadata_snap: false,
        skip_mappings: false,
        dev_ids: None,
        flat: false,
        transaction_id: None,
        data_block_size: None,
        nr_data_blocks: None,
    };
    let _ = dump(&src, &opts, &mut std::io::sink());
    let repair = RepairOptions {
        data_block_size: Some(128),
        ..Default::default()
    };
    let _ = salvage(&src, &repair);
    let _ = salvage(
        &src,
        &RepairOptions {
            recover_orphans: true,
            ..repair
        },
    );
}

/// One block's views: checksum kind, node validation, superblock, bitmap.
pub fn exercise_block(data: &[u8]) {
    let mut block = vec![0u8; BLOCK_SIZE];
    let n = data.len().min(BLOCK_SIZE);
    block[..n].copy_from_slice(&data[..n]);
    let _ = checksum::kind_of(&block);
    let node = NodeView::new(&block);
    for vs in [4, 8, 16, 24] {
        if node.validate(vs, true).is_ok() {
            for i in 0..node.nr_entries() {
                let _ = (node.key(i), node.value(i));
            }
        }
    }
    let _ = node.key_bounds_unchecked();
    let _ = Superblock::parse(&block);
    for i in [0, 1, 16319] {
        let _ = bitmap::entry(&block, i);
    }
    for i in 0..bitmap::MAX_METADATA_BITMAPS {
        let _ = bitmap::metadata_index_entry(&block, i);
    }
}

/// thin_restore's validating pass and, for documents it accepts that
/// fit a small output, the building pass replaying its item log into
/// memory.
pub fn exercise_xml(data: &[u8]) {
    const MAX_BLOCKS: u64 = 1024;
    let overrides = Overrides::default();
    let Ok(plan) = validate_reader(data, &overrides) else {
        return;
    };
    let nr_blocks = MAX_BLOCKS;
    if plan.blocks_needed(nr_blocks) > nr_blocks || plan.nr_data_blocks > 1 << 24 {
        return;
    }
    let Some(mut items) = plan.replay() else {
        return;
    };
    let mut image = vec![0u8; nr_blocks as usize * crate::io::BLOCK_SIZE];
    let mut sink = MemorySink {
        image: &mut image,
        limit: None,
        writes: 0,
    };
    let place = |at: u64| format!("byte {at}");
    build_items(&mut items, &place, &plan, &overrides, &mut sink, nr_blocks)
        .expect("a validated document builds");
}

/// The cache XML reader: validated in both formats and, where small
/// enough, restored in memory, read back and dumped; the dump must
/// restore and dump again to the same text.
pub fn exercise_cache_xml(data: &[u8]) {
    use crate::cache::dump::{DumpOptions, MetadataItems};
    use crate::cache::read::CacheMetadata;
    use crate::cache::restore::{restore_bytes, validate_reader, ItemSource, RestoreOptions};
    use crate::cache::xml::XmlWriter;
    const MAX_BLOCKS: u64 = 256;
    let dump_of = |image: &[u8]| -> Vec<u8> {
        let src = BlockSource::from_bytes(image, Path::new("fuzz")).expect("an image");
        let md = CacheMetadata::read(&src, &Default::default()).expect("restored metadata reads");
        assert!(
            md.is_intact(),
            "restored metadata is damaged: {:?}",
            md.damage()
        );
        let mut items = MetadataItems::new(&md, &DumpOptions::default());
        let mut w = XmlWriter::new(Vec::new());
        while let Some((item, _)) = items.next_item().expect("items of metadata") {
            w.item(&item).unwrap();
        }
        w.finish().unwrap()
    };
    for version in [1, 2] {
        let Ok(plan) = validate_reader(data, version) else {
            continue;
        };
        if plan.fixed_blocks() + 2 > MAX_BLOCKS {
            continue;
        }
        let opts = RestoreOptions {
            metadata_version: version,
            clean_shutdown: true,
        };
        let restore = |xml: &[u8]| -> Vec<u8> {
            let mut image = vec![0u8; MAX_BLOCKS as usize * BLOCK_SIZE];
            let mut sink = MemorySink {
                image: &mut image,
                limit: None,
                writes: 0,
            };
            restore_bytes(xml, &opts, &mut sink, MAX_BLOCKS).expect("a validated document builds");
            image
        };
        let first = dump_of(&restore(data));
        let second = dump_of(&restore(&first));
        assert!(first == second, "dump, restore, dump differs");
    }
}

/// The pack reader.
pub fn exercise_pack(data: &[u8]) {
    let _ = pack::read_header(data);
    let _ = pack::unpack_each(data, |_, _| Ok(()));
}

/// Healthy cache metadata of format `version` and `cache_blocks` blocks
/// in an image of `nr_blocks` blocks, written with the library's array,
/// bitset and space-map writers: every third cache block c maps origin
/// block 7c + 2, every sixth is dirty, hints are c % 64 for mapped
/// blocks, discard bits 8..16 of 64 are set, clean shutdown. For tests
/// and fuzz seeds that need no ../shared.
pub fn cache_image(version: u32, cache_blocks: u64, nr_blocks: u64) -> Vec<u8> {
    cache_image_with(version, cache_blocks, nr_blocks, 3, true)
}

/// As `cache_image`, with every `every`-th cache block mapped (every
/// second of those dirty) and, without `hints`, no hint array: a sparse
/// cache of any size (33,000,000 blocks take a 3-level mapping index).
pub fn cache_image_with(
    version: u32,
    cache_blocks: u64,
    nr_blocks: u64,
    every: u64,
    hints: bool,
) -> Vec<u8> {
    use crate::cache::mapping::{Mapping, DIRTY, VALID};
    use crate::cache::superblock::{Superblock as CacheSuperblock, CLEAN_SHUTDOWN};
    use crate::pdata::array::builder::ArrayBuilder;
    use crate::pdata::bitset::builder::BitsetBuilder;
    use crate::pdata::btree::builder::MetadataWriter;
    use crate::pdata::space_map::writer::write_metadata;

    let every = every.max(1);
    let dirty = |c: u64| c.is_multiple_of(2 * every);
    let mut image = vec![0u8; nr_blocks as usize * BLOCK_SIZE];
    let mut sb = CacheSuperblock::new(version);
    {
        let mut sink = MemorySink {
            image: &mut image,
            limit: None,
            writes: 0,
        };
        let mut w = MetadataWriter::new(&mut sink, 1, nr_blocks);
        w.refs.inc(0);
        let mut m = ArrayBuilder::new(8);
        let mut h = ArrayBuilder::new(4);
        let mut c = 0;
        while c < cache_blocks {
            let flags = VALID | if version == 1 && dirty(c) { DIRTY } else { 0 };
            let v = Mapping {
                origin: 7 * c + 2,
                flags,
            }
            .pack();
            m.push(&mut w, &v.to_le_bytes()).expect("room");
            let gap = (every - 1).min(cache_blocks - c - 1);
            m.push_zeros(&mut w, gap).expect("room");
            if hints {
                let hint = (c % 64) as u32;
                h.push(&mut w, &hint.to_le_bytes()).expect("room");
                h.push_zeros(&mut w, gap).expect("room");
            }
            c += every;
        }
        sb.mapping_root = m.finish(&mut w).expect("room");
        if hints {
            sb.hint_root = h.finish(&mut w).expect("room");
            sb.policy_hint_size = 4;
        }
        if version >= 2 {
            let mut d = BitsetBuilder::new(cache_blocks);
            for c in (0..cache_blocks).step_by(2 * every as usize) {
                d.set(&mut w, c).expect("room");
            }
            sb.dirty_root = Some(d.finish(&mut w).expect("room"));
        }
        let mut disc = BitsetBuilder::new(64);
        disc.set_range(&mut w, 8..16).expect("room");
        sb.discard_root = disc.finish(&mut w).expect("room");
        for root in [
            sb.mapping_root,
            sb.hint_root,
            sb.dirty_root.unwrap_or(0),
            sb.discard_root,
        ] {
            if root != 0 {
                w.refs.inc(root);
            }
        }
        sb.metadata_sm_root = write_metadata(&mut w, nr_blocks).expect("room");
    }
    sb.flags = CLEAN_SHUTDOWN;
    sb.policy_name[..3].copy_from_slice(b"smq");
    sb.policy_version = [2, 0, 0];
    sb.data_block_size = 64;
    sb.cache_blocks = cache_blocks as u32;
    // 64 discard blocks covering at least the origin blocks mapped.
    sb.discard_nr_blocks = 64;
    sb.discard_block_size = 64 * (7 * cache_blocks + 3).div_ceil(64).max(1);
    image[..BLOCK_SIZE].copy_from_slice(&sb.to_block());
    image
}

/// As `exercise_image`, for cache metadata: block 0 sealed as a cache
/// superblock, btree nodes and array blocks (a marker byte) sealed at
/// their own location; then cache_check's engine with and without its
/// skip options, and the reader over every entry.
pub fn exercise_cache_image(data: &[u8]) {
    use crate::cache::check::{check as cache_check, CheckOptions as CacheOptions};
    use crate::cache::read::{CacheMetadata, ReadOptions};
    let nr = (data.len() / BLOCK_SIZE).clamp(1, MAX_IMAGE_BLOCKS);
    let mut image = vec![0u8; nr * BLOCK_SIZE];
    let n = data.len().min(image.len());
    image[..n].copy_from_slice(&data[..n]);
    for (b, block) in image.chunks_mut(BLOCK_SIZE).enumerate() {
        if b == 0 {
            seal(block, BlockKind::CacheSuperblock);
        } else if matches!(le_u32(block, 4), 1 | 2) {
            block[8..16].copy_from_slice(&(b as u64).to_le_bytes());
            seal(block, BlockKind::BtreeNode);
        } else if matches!(le_u32(block, 12), 4 | 8) {
            block[16..24].copy_from_slice(&(b as u64).to_le_bytes());
            seal(block, BlockKind::Array);
        } else if block[4] == 0xb1 {
            seal(block, BlockKind::Bitmap);
        } else if block[4] == 0x1d {
            seal(block, BlockKind::Index);
        }
    }
    let Ok(src) = BlockSource::from_bytes(&image, Path::new("fuzz")) else {
        return;
    };
    let quiet = Reporter::with_mode(Mode::Quiet);
    for opts in [
        CacheOptions::default(),
        CacheOptions {
            ignore_non_fatal: true,
            skip_hints: true,
            ..Default::default()
        },
    ] {
        let _ = cache_check(&src, &opts, &quiet);
    }
    if let Ok(md) = CacheMetadata::read(&src, &ReadOptions::default()) {
        let _ = md.damage();
        let mut n = 0u64;
        for e in md.entries() {
            n = n.wrapping_add(e.mapping.origin ^ e.hint.map_or(0, |h| h.len() as u64));
        }
        let _ = (n, md.discarded(), md.get(u32::MAX as u64));
    }
}

/// Era metadata from fuzz input: block 0 sealed as an era superblock,
/// node-looking blocks as btree nodes, array-looking blocks (value size
/// 4 or 8 and its capacity) as array blocks, bitmap and index blocks by
/// a marker byte; then checked, dumped, salvaged, listed by
/// era_invalidate, and whatever salvage gives restored into memory,
/// where it must check clean.
pub fn exercise_era_image(data: &[u8]) {
    use crate::era;
    let nr = (data.len() / BLOCK_SIZE).clamp(1, MAX_IMAGE_BLOCKS);
    let mut image = vec![0u8; nr * BLOCK_SIZE];
    let n = data.len().min(image.len());
    image[..n].copy_from_slice(&data[..n]);
    for (b, block) in image.chunks_mut(BLOCK_SIZE).enumerate() {
        let vs = le_u32(block, 12);
        let array =
            matches!(vs, 4 | 8) && le_u32(block, 4) == crate::pdata::array::max_entries_for(vs);
        if b == 0 {
            seal(block, BlockKind::EraSuperblock);
        } else if array {
            block[16..24].copy_from_slice(&(b as u64).to_le_bytes());
            seal(block, BlockKind::Array);
        } else if matches!(le_u32(block, 4), 1 | 2) {
            block[8..16].copy_from_slice(&(b as u64).to_le_bytes());
            seal(block, BlockKind::BtreeNode);
        } else if block[4] == 0xb1 {
            seal(block, BlockKind::Bitmap);
        } else if block[4] == 0x1d {
            seal(block, BlockKind::Index);
        }
    }
    let Ok(src) = BlockSource::from_bytes(&image, Path::new("fuzz")) else {
        return;
    };
    let quiet = Reporter::with_mode(Mode::Quiet);
    for ignore_non_fatal in [false, true] {
        let opts = era::check::CheckOptions {
            super_block_only: false,
            ignore_non_fatal,
        };
        let _ = era::check::check(&src, &opts, &quiet);
    }
    if let Ok(model) = era::dump::read_model(&src) {
        let bits: u64 = model.writesets.iter().map(|w| w.nr_bits as u64).sum();
        if bits + (model.nr_blocks as u64) < 1 << 20 {
            let _ = model.write_xml(&mut std::io::sink());
            let _ = model.write_logical_xml(&mut std::io::sink());
        }
    }
    for side in [era::read::Side::Live, era::read::Side::Snapshot] {
        for since in [0, 3] {
            let _ = era::invalidate::written_since(&src, side, since);
        }
    }
    if let Ok(s) = era::repair::salvage(&src) {
        restore_era_model(&s.model);
    }
}

/// Era XML from fuzz input: parsed and validated; a document accepted
/// that fits a small output is restored into memory, must check clean,
/// and must dump back to a document that parses to the same model.
pub fn exercise_era_xml(data: &[u8]) {
    let Ok(model) = crate::era::xml::parse(data) else {
        return;
    };
    if restore_era_model(&model) {
        let mut xml = Vec::new();
        model.write_xml(&mut xml).expect("writes to memory");
        let again = crate::era::xml::parse(&xml).expect("a dump parses");
        assert_eq!(again, model, "dump and parse do not round-trip");
    }
}

/// Restores `model` into a 1024-block memory image if it fits; the
/// result must pass era_check. Returns whether it was restored.
fn restore_era_model(model: &crate::era::model::EraModel) -> bool {
    use crate::era;
    const MAX_BLOCKS: u64 = 1024;
    let bits: u64 = model.writesets.iter().map(|w| w.nr_bits as u64).sum();
    if bits + model.nr_blocks as u64 > 1 << 20 {
        return false;
    }
    let Ok(usable) = era::restore::room(model, "memory", MAX_BLOCKS * BLOCK_SIZE as u64) else {
        return false;
    };
    let mut image = vec![0u8; MAX_BLOCKS as usize * BLOCK_SIZE];
    let mut sink = MemorySink {
        image: &mut image,
        limit: None,
        writes: 0,
    };
    era::restore::build(model, &mut sink, usable).expect("a model that fits builds");
    let src = BlockSource::from_bytes(&image, Path::new("restored")).unwrap();
    let r = era::check::check(&src, &Default::default(), &Reporter::with_mode(Mode::Quiet));
    assert!(
        r.passed(false),
        "restored metadata fails era_check: {:?} {:?}",
        r.aborted,
        r.findings
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_image_checks_clean_in_both_formats() {
        for version in [1, 2] {
            for cache_blocks in [0, 1, 1100, 40_000] {
                let image = cache_image(version, cache_blocks, 512);
                let src = BlockSource::from_bytes(&image, Path::new("cache")).unwrap();
                let r = crate::cache::check::check(
                    &src,
                    &Default::default(),
                    &Reporter::with_mode(Mode::Quiet),
                );
                assert!(
                    r.passed(false),
                    "{version} {cache_blocks}: {:?}",
                    r.findings
                );
                let md =
                    crate::cache::read::CacheMetadata::read(&src, &Default::default()).unwrap();
                assert_eq!(md.mapped().count() as u64, cache_blocks.div_ceil(3));
                let dirty = md.mapped().filter(|e| e.dirty == Some(true)).count() as u64;
                assert_eq!(dirty, cache_blocks.div_ceil(6));
                exercise_cache_image(&image[..MAX_IMAGE_BLOCKS * BLOCK_SIZE]);
            }
        }
    }
}
