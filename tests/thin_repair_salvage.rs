//! thin_repair on damage that costs only what is itself wrong, on the
//! generated pool with snapshots (always there) and on kernel-written
//! pools from ../shared (when there): exact mappings kept per device,
//! the output accepted by dmpd's and Debian's thin_check; deleted devices
//! listed and recovered; outputs too small refused before anything is
//! written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::image::{Damage, Image};
use common::*;

const DEBIAN_CHECK: &str = "/usr/sbin/thin_check";

/// Device -> virtual block -> (data block, time).
type Mappings = BTreeMap<u64, BTreeMap<u64, (u64, u32)>>;

fn mappings(pool: &xml::Pool) -> Mappings {
    pool.devices
        .iter()
        .map(|(id, d)| {
            (
                *id,
                d.mappings.iter().map(|&(v, d, t)| (v, (d, t))).collect(),
            )
        })
        .collect()
}

fn dump(path: &Path) -> xml::Pool {
    let o = run("thin_dump", &[path.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    xml::parse(&stdout(&o))
}

fn output(scratch: &Scratch, name: &str) -> PathBuf {
    let p = scratch.path(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    p
}

fn checks_clean(path: &Path) {
    let c = run("thin_check", &[path.to_str().unwrap()]);
    assert_eq!(code(&c), 0, "dmpd thin_check: {}", stderr(&c));
    if Path::new(DEBIAN_CHECK).exists() {
        let d = std::process::Command::new(DEBIAN_CHECK)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            d.status.success(),
            "Debian thin_check: {}",
            String::from_utf8_lossy(&d.stderr)
        );
    } else {
        println!("{DEBIAN_CHECK} is missing: the repair is checked by dmpd only");
    }
}

/// Repairs `image`; returns the repaired pool and what thin_repair said.
fn repair(scratch: &Scratch, image: &Image, extra: &[&str]) -> (xml::Pool, String) {
    let input = scratch.path("damaged");
    image.write_to(&input);
    let out = output(scratch, "repaired");
    let mut args = vec!["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run("thin_repair", &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    checks_clean(&out);
    (dump(&out), stderr(&o))
}

fn generated(scratch: &Scratch) -> Image {
    Image::new(gen::snapshot_pool(&scratch.dir, &scratch.path("pool")))
}

fn pristine(scratch: &Scratch, image: &Image) -> xml::Pool {
    let p = scratch.path("pristine");
    image.write_to(&p);
    dump(&p)
}

/// Devices whose tree reaches node `b`.
fn devices_reaching(image: &Image, b: u64) -> Vec<u64> {
    fn reaches(image: &Image, at: u64, b: u64) -> bool {
        let node = image.node(at);
        at == b
            || !node.is_leaf()
                && (0..node.nr_entries()).any(|i| reaches(image, node.value_u64(i), b))
    }
    image
        .device_roots()
        .into_iter()
        .filter(|(_, r)| reaches(image, *r, b))
        .map(|(id, _)| id)
        .collect()
}

/// The repaired mappings are the original's without `lost` (device,
/// virtual block) pairs; nothing else changed.
fn assert_lost(before: &Mappings, after: &Mappings, lost: &[(u64, u64)]) {
    let mut want = before.clone();
    for (dev, v) in lost {
        assert!(
            want.get_mut(dev).unwrap().remove(v).is_some(),
            "device {dev} had no block {v}"
        );
    }
    for (id, m) in &want {
        let got = after.get(id).unwrap_or_else(|| panic!("device {id} lost"));
        assert_eq!(got.len(), m.len(), "device {id}: mappings kept");
        assert!(got == m, "device {id}: mappings differ");
    }
    assert_eq!(after.len(), want.len(), "devices");
}

#[test]
fn an_overfull_leaf_keeps_what_its_device_accounts_for() {
    let scratch = Scratch::new("salvage-overfull");
    let clean = generated(&scratch);
    let before = mappings(&pristine(&scratch, &clean));
    // The small device's tree is one leaf: nothing above bounds its keys.
    let root = clean
        .device_roots()
        .into_iter()
        .find(|(id, _)| *id == 7)
        .unwrap()
        .1;
    assert!(clean.node(root).is_leaf());
    // And a leaf under an internal node, shared by several devices.
    let (_, origin_root) = clean.device_roots()[0];
    let shared = clean.first_leaf(origin_root);
    for leaf in [root, shared] {
        let mut image = Image::new(clean.bytes.clone());
        let max = image.node(leaf).max_entries();
        image.set_nr_entries(leaf, max + 1);
        let (pool, said) = repair(&scratch, &image, &[]);
        assert_lost(&before, &mappings(&pool), &[]);
        assert!(said.contains(&format!("block {leaf}")), "{said}");
    }
}

#[test]
fn a_misplaced_node_is_kept_where_its_parent_points() {
    let scratch = Scratch::new("salvage-blocknr");
    let clean = generated(&scratch);
    let before = mappings(&pristine(&scratch, &clean));
    let mut image = Image::new(clean.bytes.clone());
    let applied = Damage::WrongNodeBlocknr.apply(&mut image).unwrap();
    let (pool, said) = repair(&scratch, &image, &[]);
    assert_lost(&before, &mappings(&pool), &[]);
    assert!(
        said.contains(&format!(
            "leaf at block {} records block {}",
            applied.block,
            applied.block + 1
        )),
        "{said}"
    );
    // Block+1 holds a sound node of its own: the parent's pointer decided.
    assert!(said.contains("the parent's pointer decides"), "{said}");
}

#[test]
fn one_wrong_entry_costs_only_itself() {
    let scratch = Scratch::new("salvage-entries");
    let clean = generated(&scratch);
    let before = mappings(&pristine(&scratch, &clean));
    for d in [
        Damage::SwappedKeys,
        Damage::DuplicateKey,
        Damage::KeyOutsideParentRange,
    ] {
        let mut image = Image::new(clean.bytes.clone());
        let leaf = d.apply(&mut image).unwrap().block;
        let node = clean.node(leaf);
        let lost_keys: Vec<u64> = match d {
            // Both neighbours: either could be the one out of place.
            Damage::SwappedKeys => vec![node.key(0), node.key(1)],
            // The key held twice with two values, and the key overwritten.
            Damage::DuplicateKey => vec![node.key(0), node.key(1)],
            // The one entry below the range its parent gives the leaf.
            _ => vec![node.key(0)],
        };
        let lost: Vec<(u64, u64)> = devices_reaching(&clean, leaf)
            .into_iter()
            .flat_map(|dev| lost_keys.iter().map(move |&k| (dev, k)))
            .collect();
        assert!(!lost.is_empty());
        let (pool, _) = repair(&scratch, &image, &[]);
        assert_lost(&before, &mappings(&pool), &lost);
    }
}

#[test]
fn swapped_child_pointers_go_back_by_their_keys() {
    let scratch = Scratch::new("salvage-swapped");
    let clean = generated(&scratch);
    let before = mappings(&pristine(&scratch, &clean));
    let mut image = Image::new(clean.bytes.clone());
    let parent = Damage::SwappedChildPointers
        .apply(&mut image)
        .unwrap()
        .block;
    let (pool, said) = repair(&scratch, &image, &[]);
    assert_lost(&before, &mappings(&pool), &[]);
    assert!(
        said.contains(&format!(
            "internal node at block {parent}: children out of place"
        )),
        "{said}"
    );
}

#[test]
fn future_times_raise_the_pool_time() {
    let scratch = Scratch::new("salvage-times");
    let clean = generated(&scratch);
    let before = mappings(&pristine(&scratch, &clean));
    let pool_time = clean.superblock().time;
    for (d, newest) in [
        (Damage::FutureMappingTime, pool_time + 5),
        (Damage::FutureSnapshotTime, pool_time + 3),
    ] {
        let mut image = Image::new(clean.bytes.clone());
        d.apply(&mut image).unwrap();
        let (pool, said) = repair(&scratch, &image, &[]);
        assert_eq!(pool.superblock["time"], newest.to_string(), "{}", d.name());
        assert!(said.contains("the pool's time is raised"), "{said}");
        let after = mappings(&pool);
        // Every mapping kept, the future one with its own time.
        for (id, m) in &before {
            let got = &after[id];
            assert_eq!(got.len(), m.len());
            assert!(m.iter().all(|(v, (data, _))| got[v].0 == *data));
        }
    }
}

#[test]
fn a_device_without_details_comes_back_with_synthesised_ones() {
    let scratch = Scratch::new("salvage-details");
    let clean = generated(&scratch);
    let orig = pristine(&scratch, &clean);
    let before = mappings(&orig);
    let mut image = Image::new(clean.bytes.clone());
    Damage::DeviceMissingFromDetails.apply(&mut image).unwrap();
    let (pool, said) = repair(&scratch, &image, &[]);
    assert_lost(&before, &mappings(&pool), &[]);
    assert!(said.contains("without device details"), "{said}");
    // Device 0 lost its details: every mapping is treated as shared (the
    // snapshot time is the pool's, newer than every mapping).
    let d = &pool.devices[&0].attrs;
    assert_eq!(d["snap_time"], pool.superblock["time"]);
    assert_eq!(d["mapped_blocks"], before[&0].len().to_string());
    // The other devices keep theirs as they were.
    for id in [1, 2, 3, 7] {
        assert_eq!(
            pool.devices[&id].attrs, orig.devices[&id].attrs,
            "device {id}"
        );
    }
}

#[test]
fn a_device_missing_from_the_top_level_tree_is_found_by_its_count() {
    let scratch = Scratch::new("salvage-toplevel");
    let clean = generated(&scratch);
    let orig = pristine(&scratch, &clean);
    let mut image = Image::new(clean.bytes.clone());
    Damage::DeviceMissingFromTopLevel.apply(&mut image).unwrap();
    let (pool, said) = repair(&scratch, &image, &[]);
    assert_eq!(pool, orig);
    assert!(said.contains("device 7: found its mapping tree"), "{said}");
}

fn orphans(path: &Path) -> Vec<Vec<String>> {
    let o = run(
        "thin_ls",
        &["--orphans", "--no-headers", path.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn a_deleted_device_is_listed_and_recovered_whole() {
    let scratch = Scratch::new("salvage-orphans");
    let clean = generated(&scratch);
    let before = mappings(&pristine(&scratch, &clean));
    // Device 2, a snapshot sharing most of its leaves with the others,
    // deleted as the kernel deletes it.
    let mut image = Image::new(clean.bytes.clone());
    let root = image.delete_device(2).unwrap();
    let path = scratch.path("deleted");
    image.write_to(&path);
    checks_clean(&path);
    let unchanged = std::fs::read(&path).unwrap();

    // Listed, nothing written: the root, its old id, its mappings, the
    // newest time, the id a repair gives it (above the highest live, 7).
    let list = orphans(&path);
    assert_eq!(list.len(), 1, "{list:?}");
    let row = &list[0];
    assert_eq!(row[0], root.to_string());
    assert_eq!(row[1], "2");
    assert_eq!(row[2], before[&2].len().to_string());
    assert_eq!(row[3], "2");
    assert_eq!(row[5], "8");
    assert!(std::fs::read(&path).unwrap() == unchanged);

    // Without the option, the deletion stands.
    let (pool, _) = repair(&scratch, &image, &[]);
    let mut want = before.clone();
    let deleted = want.remove(&2).unwrap();
    assert_eq!(mappings(&pool), want);

    // With it, device 8 holds exactly what device 2 held.
    let (pool, said) = repair(&scratch, &image, &["--recover-orphans"]);
    let mut after = mappings(&pool);
    assert_eq!(after.remove(&8), Some(deleted.clone()), "{said}");
    assert_eq!(after, want);
    assert!(
        said.contains("(device 2 before it was deleted) as device 8"),
        "{said}"
    );

    // thin_dump --repair --recover-orphans writes the same.
    let o = run(
        "thin_dump",
        &[
            "--repair",
            "--recover-orphans",
            "-q",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(mappings(&xml::parse(&stdout(&o)))[&8], deleted);
}

#[test]
fn a_deleted_device_whose_old_top_level_leaf_was_reused_is_still_found() {
    let scratch = Scratch::new("salvage-unattributed");
    let clean = generated(&scratch);
    let before = mappings(&pristine(&scratch, &clean));
    let mut image = Image::new(clean.bytes.clone());
    let old_top = image.superblock().mapping_root;
    let old_details = image.superblock().details_root;
    image.delete_device(7).unwrap();
    // The freed leaves get reused for something else.
    image.block_mut(old_top).fill(0);
    image.block_mut(old_details).fill(0);
    let path = scratch.path("deleted");
    image.write_to(&path);
    checks_clean(&path);
    let list = orphans(&path);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0][1], "-");
    assert_eq!(list[0][2], "100");
    // Above the highest live id, now 3.
    assert_eq!(list[0][5], "4");
    let (pool, said) = repair(&scratch, &image, &["--recover-orphans"]);
    assert_eq!(mappings(&pool).get(&4), Some(&before[&7]), "{said}");
}

#[test]
fn kernel_deleted_snapshots_are_listed() {
    if !common::have_kernel_images() {
        return;
    }
    // tmeta_kernel_snaps: thin 4, a snapshot, was deleted by the kernel.
    let scratch = Scratch::new("salvage-kernel-orphans");
    let bytes = pools::kernel_image("tmeta_kernel_snaps").unwrap();
    let path = scratch.path("kernel_snaps");
    std::fs::write(&path, bytes).unwrap();
    let list = orphans(&path);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0][1], "4");
    // Its mappings: a snapshot of thin 2 or 1, newest time 3.
    assert_eq!(list[0][3], "3");
    assert!(list[0][2].parse::<u64>().unwrap() > 0);
}

#[test]
fn an_output_too_small_is_refused_before_anything_is_written() {
    let scratch = Scratch::new("salvage-small");
    let clean = generated(&scratch);
    let input = scratch.path("input");
    clean.write_to(&input);
    // 12 blocks: above the tools' floor, below what the pool needs.
    let out = scratch.path("small");
    let pattern: Vec<u8> = (0..12 * 4096).map(|i| (i % 251) as u8).collect();
    std::fs::write(&out, &pattern).unwrap();
    let o = run(
        "thin_repair",
        &["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert_eq!(code(&o), 64);
    let err = stderr(&o);
    assert!(
        err.contains("holds 12 blocks (49152 bytes); the metadata needs at least"),
        "{err}"
    );
    assert!(err.contains(out.to_str().unwrap()), "{err}");
    assert!(
        std::fs::read(&out).unwrap() == pattern,
        "the output was written"
    );
    // The figure named is enough, and one block less is not.
    let needed: u64 = err
        .split("needs at least ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    for (blocks, ok) in [(needed - 1, false), (needed, true)] {
        std::fs::File::create(&out)
            .unwrap()
            .set_len(blocks * 4096)
            .unwrap();
        let o = run(
            "thin_repair",
            &["-i", input.to_str().unwrap(), "-o", out.to_str().unwrap()],
        );
        assert_eq!(code(&o) == 0, ok, "{blocks} blocks: {}", stderr(&o));
    }
    checks_clean(&out);

    // thin_restore: the true requirement, with units, for any size short
    // of it (the floor of ten blocks included); that much is enough.
    let xml = scratch.path("pool.xml");
    std::fs::write(&xml, gen::snapshot_pool_xml()).unwrap();
    let restore = |bytes: u64, fill: u8| {
        std::fs::write(&out, vec![fill; bytes as usize]).unwrap();
        run(
            "thin_restore",
            &["-i", xml.to_str().unwrap(), "-o", out.to_str().unwrap()],
        )
    };
    let mut needed = None;
    for bytes in [4096u64, 40960] {
        let o = restore(bytes, 7);
        assert_eq!(code(&o), 64);
        let err = stderr(&o);
        let blocks = bytes / 4096;
        let plural = if blocks == 1 { "block" } else { "blocks" };
        let head = format!("holds {blocks} {plural} ({bytes} bytes); the metadata needs at least ");
        let rest = err.split(&head).nth(1).unwrap_or_else(|| panic!("{err}"));
        let n: u64 = rest.split(' ').next().unwrap().parse().unwrap();
        assert!(
            rest.starts_with(&format!("{n} blocks ({} bytes)", n * 4096)),
            "{err}"
        );
        assert!(needed.is_none_or(|m| m == n));
        needed = Some(n);
        assert!(std::fs::read(&out).unwrap() == vec![7u8; bytes as usize]);
    }
    let needed = needed.unwrap();
    assert_eq!(code(&restore((needed - 1) * 4096, 0)), 64);
    let o = restore(needed * 4096, 0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    checks_clean(&out);
}
