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

/// The pack reader.
pub fn exercise_pack(data: &[u8]) {
    let _ = pack::read_header(data);
    let _ = pack::unpack_each(data, |_, _| Ok(()));
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
