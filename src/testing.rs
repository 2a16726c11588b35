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
