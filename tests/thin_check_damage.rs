//! thin_check on damaged copies of a kernel-written image: each damage is
//! made precisely (checksums fixed) and must be named with its block.

mod common;

use common::image::Image;
use common::*;

fn tmeta() -> Image {
    Image::new(gunzip_fixture("tmeta"))
}

/// Writes the image, runs thin_check with `args`, returns (exit, stderr).
fn check(scratch: &Scratch, image: &Image, args: &[&str]) -> (i32, String, String) {
    let path = scratch.path("damaged");
    image.write_to(&path);
    let mut all = args.to_vec();
    all.push(path.to_str().unwrap());
    let o = run("thin_check", &all);
    (code(&o), stdout(&o), stderr(&o))
}

fn first_leaf_of_device_1(image: &Image) -> u64 {
    let (_, root) = image.device_roots()[0];
    image.first_leaf(root)
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

#[test]
fn flipped_byte_in_a_leaf_is_a_checksum_error_at_that_block() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-flip");
    let mut image = tmeta();
    let leaf = first_leaf_of_device_1(&image);
    image.block_mut(leaf)[2000] ^= 0x40;
    let (exit, out, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_eq!(out, "TRANSACTION_ID=21\nMETADATA_FREE_BLOCKS=16096\n");
    assert_has(&err, "device 1: node error: checksum error");
    assert_has(&err, &format!("(block {leaf}, keys [0.."));
    assert_has(&err, "check of mappings failed");
}

#[test]
fn leaked_metadata_block_is_non_fatal() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-meta-leak");
    let mut image = tmeta();
    let b = image.find_block_with_count(false, 0);
    image.set_stored_count(false, b, 1);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        &format!("metadata space map: block {b} leaked: stored count 1, computed 0"),
    );
    assert_has(&err, "1 metadata block(s) leaked");
    // Nothing else is inconsistent: the counters were kept in step.
    assert!(
        !err.contains("nr_free") && !err.contains("nr_allocated"),
        "{err}"
    );
    let (exit, _, err) = check(&s, &image, &["--ignore-non-fatal-errors"]);
    assert_eq!(exit, 0, "{err}");
    assert_has(&err, &format!("block {b} leaked"));
}

#[test]
fn sixteen_leaked_blocks_fold_into_one_line() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-meta-leak-run");
    let mut image = tmeta();
    let sb = image.superblock();
    let last = sb.metadata_sm_root.nr_blocks - 1;
    for b in last - 15..=last {
        assert_eq!(image.stored_count(false, b), 0);
        image.set_stored_count(false, b, 1);
    }
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        &format!(
            "metadata space map: blocks {}..{last} (16 blocks) leaked: stored count 1, computed 0",
            last - 15
        ),
    );
}

#[test]
fn under_counted_shared_node_is_fatal() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-meta-under");
    let mut image = tmeta();
    let b = image.find_block_with_count(false, 2);
    image.set_stored_count(false, b, 1);
    for args in [&[][..], &["--ignore-non-fatal-errors"]] {
        let (exit, _, err) = check(&s, &image, args);
        assert_eq!(exit, 64);
        assert_has(
            &err,
            &format!("metadata space map: block {b} under-counted: stored count 1, computed 2"),
        );
    }
}

#[test]
fn data_leak_and_data_under_count() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-data");
    let mut image = tmeta();
    let free = image.find_block_with_count(true, 0);
    image.set_stored_count(true, free, 1);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        &format!("data space map: block {free} leaked: stored count 1, computed 0"),
    );
    assert_eq!(check(&s, &image, &["--ignore-non-fatal-errors"]).0, 0);

    let mut image = tmeta();
    let shared = image.find_block_with_count(true, 2);
    image.set_stored_count(true, shared, 1);
    let (exit, _, err) = check(&s, &image, &["--ignore-non-fatal-errors"]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        &format!("data space map: block {shared} under-counted: stored count 1, computed 2"),
    );

    let mut image = tmeta();
    let used = image.find_block_with_count(true, 1);
    image.set_stored_count(true, used, 0);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        &format!(
            "data space map: block {used} referenced but marked free: stored count 0, computed 1"
        ),
    );
}

#[test]
fn swapped_keys_in_a_leaf() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-swap");
    let mut image = tmeta();
    let leaf = first_leaf_of_device_1(&image);
    image.swap_entries(leaf, 3, 4);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        "node error: keys out of order (entry 4: key 3 after 4)",
    );
    assert_has(&err, &format!("(block {leaf},"));
}

#[test]
fn overfull_node() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-overfull");
    let mut image = tmeta();
    let leaf = first_leaf_of_device_1(&image);
    image.set_nr_entries(leaf, 253);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(&err, "node error: nr_entries > max_entries (253 > 252)");
    assert_has(&err, &format!("(block {leaf},"));
}

#[test]
fn data_block_beyond_the_data_device() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-beyond");
    let mut image = tmeta();
    let leaf = first_leaf_of_device_1(&image);
    let nr_data = image.superblock().data_sm_root.nr_blocks;
    image.set_value_u64(leaf, 0, (nr_data + 5) << 24);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        &format!(
            "value error: 1 mapping(s) point beyond the data device ({nr_data} blocks), \
             first: virtual block 0 -> data block {}",
            nr_data + 5
        ),
    );
    assert_has(&err, &format!("(block {leaf},"));
}

#[test]
fn mapping_newer_than_the_pool() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-time");
    let mut image = tmeta();
    let leaf = first_leaf_of_device_1(&image);
    let time = image.superblock().time;
    let node = dmpd::pdata::btree::node::NodeView::new(image.block(leaf));
    let block = node.value_u64(0) >> 24;
    image.set_value_u64(leaf, 0, (block << 24) | (time as u64 + 1));
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(&err, &format!("virtual block 0 has time {}", time + 1));
}

#[test]
fn node_that_names_another_block() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-blocknr");
    let mut image = tmeta();
    let leaf = first_leaf_of_device_1(&image);
    image.block_mut(leaf)[8..16].copy_from_slice(&(leaf + 1).to_le_bytes());
    image.reseal_node(leaf);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        &format!(
            "node error: blocknr mismatch (block says it is {})",
            leaf + 1
        ),
    );
}

#[test]
fn child_pointer_beyond_the_device() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-child");
    let mut image = tmeta();
    let (_, root) = image.device_roots()[0];
    let node = dmpd::pdata::btree::node::NodeView::new(image.block(root));
    assert!(!node.is_leaf());
    image.set_value_u64(root, 1, 10_000_000);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        "io error: beyond the end of the metadata (16384 blocks)",
    );
    assert_has(&err, "(block 10000000,");
}

#[test]
fn device_missing_from_the_details_tree() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-details");
    let mut image = tmeta();
    let mut sb = image.superblock();
    // Point the details tree at the metadata snapshot-less copy of itself
    // minus a device: simplest is to shrink its (single) leaf by one.
    let details = sb.details_root;
    let node = dmpd::pdata::btree::node::NodeView::new(image.block(details));
    assert!(node.is_leaf());
    let n = node.nr_entries();
    image.set_nr_entries(details, n - 1);
    sb.flags = 0;
    image.set_superblock(&sb);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(&err, "device details tree and mapping tree are inconsistent: devices only in the mapping tree [16]");
}

#[test]
fn random_corruption_never_panics() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-random");
    let pristine = tmeta();
    // Blocks that hold metadata (non-zero), so the flips land somewhere.
    let used: Vec<u64> = (0..pristine.bytes.len() as u64 / 4096)
        .filter(|&b| pristine.block(b).iter().any(|&x| x != 0))
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut failures = 0;
    for round in 0..120 {
        let mut image = Image::new(pristine.bytes.clone());
        for _ in 0..1 + next() % 4 {
            let b = used[(next() % used.len() as u64) as usize];
            let off = (next() % 4096) as usize;
            image.block_mut(b)[off] ^= 1 << (next() % 8);
            // Half the time, reseal so the damage passes the checksum.
            if next() % 2 == 0 {
                if let Some(kind) = dmpd::io::checksum::kind_of(pristine.block(b)) {
                    dmpd::io::checksum::seal(image.block_mut(b), kind);
                }
            }
        }
        let (exit, _, err) = check(&s, &image, &[]);
        assert!(exit == 0 || exit == 64, "round {round}: exit {exit}\n{err}");
        assert!(!err.contains("panicked"), "round {round}: {err}");
        failures += (exit == 64) as u32;
    }
    assert!(
        failures > 60,
        "only {failures} of 120 corrupted images failed"
    );
}

#[test]
fn child_keys_outside_the_parents_range() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-range");
    let mut image = tmeta();
    let (_, root) = image.device_roots()[0];
    let node = dmpd::pdata::btree::node::NodeView::new(image.block(root));
    assert!(!node.is_leaf() && node.nr_entries() > 2);
    let child = node.value_u64(1);
    let child_first = dmpd::pdata::btree::node::NodeView::new(image.block(child)).key(0);
    let raised = child_first + 1;
    assert!(raised < node.key(2));
    image.block_mut(root)[32 + 8..32 + 16].copy_from_slice(&raised.to_le_bytes());
    image.reseal_node(root);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(&err, &format!("device 1: node error: keys {child_first}.."));
    assert_has(&err, "outside the range the parent allows");
    assert_has(&err, &format!("(block {child}, keys [{raised}.."));
}

#[test]
fn override_roots() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-override");
    let image = tmeta();
    let sb = image.superblock();
    let real = sb.mapping_root.to_string();
    let (exit, _, err) = check(&s, &image, &["--override-mapping-root", &real]);
    assert_eq!(exit, 0, "{err}");
    let (exit, _, err) = check(&s, &image, &["--override-mapping-root", "0"]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        "mapping top-level: node error: not a btree node (its checksum is a thin superblock's) (block 0, keys [..])",
    );
    // The reference tools' node path is for -v (and JSON), not for people.
    assert!(!err.contains("AA=="), "{err}");
    let (exit, _, err) = check(&s, &image, &["-v", "--override-mapping-root", "0"]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        "mapping top-level: node error: not a btree node (its checksum is a thin superblock's) AA== (block 0, keys [..])",
    );
    let details = sb.details_root.to_string();
    let (exit, _, err) = check(&s, &image, &["--override-details-root", &details]);
    assert_eq!(exit, 0, "{err}");
}

#[test]
fn skip_mappings_does_not_read_device_trees() {
    if !common::have_reference() {
        return;
    }
    let s = Scratch::new("dmg-skip");
    let mut image = tmeta();
    let leaf = first_leaf_of_device_1(&image);
    image.block_mut(leaf)[100] ^= 1;
    assert_eq!(check(&s, &image, &[]).0, 64);
    let (exit, out, err) = check(&s, &image, &["--skip-mappings"]);
    assert_eq!(exit, 0, "{err}");
    assert_eq!(out, "TRANSACTION_ID=21\nMETADATA_FREE_BLOCKS=16096\n");
    assert_eq!(err, "Checking thin metadata\ndevice details tree\n");
}

#[test]
fn under_populated_internal_node_is_reported_unless_relaxed() {
    let s = Scratch::new("dmg-underpop");
    let xml_path = s.path("big.xml");
    std::fs::write(
        &xml_path,
        "<superblock uuid=\"\" time=\"0\" transaction=\"1\" data_block_size=\"128\" nr_data_blocks=\"200000\">\n\
         <device dev_id=\"1\" mapped_blocks=\"100000\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n\
         <range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"100000\" time=\"0\"/>\n\
         </device>\n</superblock>",
    )
    .unwrap();
    let meta = s.path("meta");
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let o = run(
        "thin_restore",
        &[
            "-i",
            xml_path.to_str().unwrap(),
            "-o",
            meta.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut image = Image::new(std::fs::read(&meta).unwrap());
    let (_, root) = image.device_roots()[0];
    let child = dmpd::pdata::btree::node::NodeView::new(image.block(root)).value_u64(0);
    assert!(!dmpd::pdata::btree::node::NodeView::new(image.block(child)).is_leaf());
    image.set_nr_entries(child, 10);
    let (exit, _, err) = check(&s, &image, &[]);
    assert_eq!(exit, 64);
    assert_has(
        &err,
        "device 1: node error: nr_entries < max_entries / 3 (10 of 252 in a non-root node)",
    );
    assert_has(&err, &format!("(block {child},"));
    let (exit, _, err) = check(&s, &image, &["--ignore-non-fatal-errors"]);
    assert_eq!(exit, 64, "the lost mappings still fail the check");
    assert!(!err.contains("max_entries / 3"), "{err}");
    assert_has(&err, "mappings, but its details record 100000");
}
