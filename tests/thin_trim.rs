mod common;

use std::os::unix::fs::FileExt;

use common::image::Image;
use common::*;

const BLOCK_BYTES: u64 = 128 * 512;
const MARK: &[u8] = b"dmpd-data-block";

/// A sparse data file for tmeta's 65536 blocks with a marker at the start
/// of every 97th block.
fn data_file(scratch: &Scratch) -> (std::path::PathBuf, Vec<u64>) {
    let path = scratch.path("data");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(65536 * BLOCK_BYTES).unwrap();
    let sampled: Vec<u64> = (0..65536).step_by(97).collect();
    for b in &sampled {
        f.write_all_at(MARK, b * BLOCK_BYTES).unwrap();
    }
    (path, sampled)
}

fn marked(path: &std::path::Path, b: u64) -> bool {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; MARK.len()];
    f.read_exact_at(&mut buf, b * BLOCK_BYTES).unwrap();
    buf == MARK
}

#[test]
fn punches_holes_exactly_where_the_data_space_map_is_free() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("trim");
    let meta = scratch.fixture_image("tmeta");
    let image = Image::new(std::fs::read(&meta).unwrap());
    let (data, sampled) = data_file(&scratch);
    let o = run(
        "thin_trim",
        &[
            "--metadata-dev",
            meta.to_str().unwrap(),
            "--data-dev",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "TRANSACTION_ID=21\nMETADATA_FREE_BLOCKS=16096\n"
    );
    let mut kept = 0;
    for b in sampled {
        let used = image.stored_count(true, b) > 0;
        assert_eq!(marked(&data, b), used, "data block {b}");
        kept += used as u32;
    }
    assert!(kept > 100 && kept < 676, "kept {kept}");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 65536 * BLOCK_BYTES);
    assert!(
        std::fs::read(&meta).unwrap() == image.bytes,
        "metadata was written"
    );
}

#[test]
fn refuses_damaged_metadata_with_status_65_and_touches_nothing() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("trim-damaged");
    let mut image = Image::new(gunzip_fixture("tmeta"));
    let b = image.find_block_with_count(false, 2);
    image.set_stored_count(false, b, 1);
    let meta = scratch.path("meta");
    image.write_to(&meta);
    let (data, sampled) = data_file(&scratch);
    let o = run(
        "thin_trim",
        &[
            "--metadata-dev",
            meta.to_str().unwrap(),
            "--data-dev",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 65);
    assert!(
        stderr(&o).contains("run thin_check for the details"),
        "{}",
        stderr(&o)
    );
    assert!(sampled.iter().all(|b| marked(&data, *b)));
}

#[test]
fn refuses_a_data_device_smaller_than_the_pool() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("trim-small");
    let meta = scratch.fixture_image("tmeta");
    let data = scratch.path("small");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let o = run(
        "thin_trim",
        &[
            "-q",
            "--metadata-dev",
            meta.to_str().unwrap(),
            "--data-dev",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 64);
    assert_eq!(stderr(&o), "");
    let o = run(
        "thin_trim",
        &[
            "--metadata-dev",
            meta.to_str().unwrap(),
            "--data-dev",
            data.to_str().unwrap(),
        ],
    );
    assert!(stderr(&o).contains("holds 1048576 bytes"), "{}", stderr(&o));
    let o = run("thin_trim", &["--metadata-dev", meta.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
}
