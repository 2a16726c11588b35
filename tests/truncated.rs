//! A short file and widespread damage are summarised, not listed: the
//! first finding says the file is truncated with both sizes, and node
//! errors fold per device (every node stays in -v and in JSON).

mod common;

use common::image::Image;
use common::*;

/// A pool of 12 devices of 3,000 scattered mappings each (about 300
/// leaves), restored by dmpd into a 16 MiB file.
fn many_leaves(scratch: &Scratch) -> std::path::PathBuf {
    let mut xml = String::from(
        "<superblock uuid=\"\" time=\"1\" transaction=\"1\" version=\"2\" \
         data_block_size=\"128\" nr_data_blocks=\"100000\">\n",
    );
    let mut data = 0;
    for dev in 1..=12 {
        xml.push_str(&format!(
            "  <device dev_id=\"{dev}\" mapped_blocks=\"3000\" transaction=\"0\" \
             creation_time=\"0\" snap_time=\"0\">\n"
        ));
        for i in 0..3000 {
            xml.push_str(&format!(
                "    <single_mapping origin_block=\"{}\" data_block=\"{data}\" time=\"0\"/>\n",
                i * 2
            ));
            data += 1;
        }
        xml.push_str("  </device>\n");
    }
    xml.push_str("</superblock>\n");
    let x = scratch.path("pool.xml");
    std::fs::write(&x, xml).unwrap();
    let img = scratch.path("pool.bin");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let o = run(
        "thin_restore",
        &["-i", x.to_str().unwrap(), "-o", img.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    img
}

#[test]
fn a_short_copy_of_the_projects_pool_says_truncated_first() {
    let scratch = Scratch::new("trunc-own");
    let full = scratch.own_image("snapshots");
    let bytes = std::fs::read(&full).unwrap();
    let short = scratch.path("short.bin");
    std::fs::write(&short, &bytes[..20 * 4096]).unwrap();
    let p = short.to_str().unwrap();
    let o = run("thin_check", &[p]);
    assert_eq!(code(&o), 64);
    let err = stderr(&o);
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            "'{p}' looks truncated: it holds 20 blocks (81920 bytes), but its superblock \
             describes a metadata device of 1024 blocks (4194304 bytes)"
        )
    );
    // The tools that read trees whole say so too.
    for tool in [
        &["thin_ls"][..],
        &["thin_dump"],
        &["thin_rmap", "--region", "0..9"],
    ] {
        let mut args = tool[1..].to_vec();
        args.push(p);
        let o = run(tool[0], &args);
        assert_eq!(code(&o), 64, "{tool:?}");
        assert!(
            stderr(&o).contains(&format!("'{p}' looks truncated")),
            "{tool:?}: {}",
            stderr(&o)
        );
    }
    // A single block: the same sentence, singular.
    std::fs::write(&short, &bytes[..4096]).unwrap();
    let o = run("thin_check", &[p]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).starts_with(&format!(
            "'{p}' looks truncated: it holds 1 block (4096 bytes)"
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn many_damaged_leaves_fold_per_device_in_numeric_order() {
    let scratch = Scratch::new("trunc-fold");
    let img = many_leaves(&scratch);
    let mut image = Image::new(std::fs::read(&img).unwrap());
    // Zero the first leaf of every device: 12 checksum errors.
    let roots = image.device_roots();
    for (_, root) in &roots {
        let leaf = image.first_leaf(*root);
        image.block_mut(leaf).fill(0);
    }
    image.write_to(&img);
    let p = img.to_str().unwrap();
    let o = run("thin_check", &[p]);
    assert_eq!(code(&o), 64);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("damaged nodes in the mapping trees"))
        .unwrap_or_else(|| panic!("no summary: {err}"));
    assert_eq!(
        lines[at],
        "12 damaged nodes in the mapping trees of 12 devices: 12 \u{d7} checksum error"
    );
    let devices: Vec<u64> = lines[at + 1..at + 7]
        .iter()
        .map(|l| {
            let rest = l.trim_start().strip_prefix("thin device ").unwrap();
            rest.split(':').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(devices, vec![1, 2, 3, 4, 5, 6]);
    // A full leaf holds 252 mappings at even keys: [0..504].
    assert_eq!(
        lines[at + 1],
        "  thin device 1: 1 damaged node, keys [0..504]; 252 of 3000 expected mappings are missing"
    );
    assert_eq!(
        lines[at + 7],
        "  and 6 more devices (7, 8, 9, 10, 11, 12) with 6 damaged nodes"
    );
    assert!(lines.len() <= 15, "{err}");

    // -v: every node, with the reference tools' node path.
    let o = run("thin_check", &["-v", p]);
    let node_lines = stderr(&o)
        .lines()
        .filter(|l| l.contains(": node error: checksum error "))
        .count();
    assert_eq!(node_lines, 12, "{}", stderr(&o));

    // JSON: every node with its path, whatever the text does.
    let o = run("thin_check", &["--format", "json", p]);
    let json = stdout(&o);
    assert_eq!(json.matches("\"kind\":\"node_damage\"").count(), 12);
    assert_eq!(json.matches("\"node_path\":").count(), 12);
}

#[test]
fn a_100000_byte_prefix_of_tmeta_fits_in_fifteen_lines() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("trunc-tmeta");
    let bytes = gunzip_fixture("tmeta");
    let short = scratch.path("tmeta-prefix.bin");
    std::fs::write(&short, &bytes[..100_000]).unwrap();
    let p = short.to_str().unwrap();
    let o = run("thin_check", &[p]);
    assert_eq!(code(&o), 64);
    let err = stderr(&o);
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            "'{p}' looks truncated: it holds 24 blocks (100000 bytes), but its superblock \
             describes a metadata device of 16384 blocks (67108864 bytes)"
        )
    );
    let total = stdout(&o).lines().count() + err.lines().count();
    assert!(total <= 15, "{total} lines:\n{}{err}", stdout(&o));
    assert!(
        err.contains("177 damaged nodes in the mapping trees of 11 devices"),
        "{err}"
    );
    assert!(!err.contains("AwGl"), "node paths belong to -v: {err}");
}
