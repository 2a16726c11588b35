//! thin_check's bar counts the work actually done: the blocks read ahead
//! and the nodes walked, so it moves from the first second of a cold run.

mod common;
use common::*;

use dmpd::io::source::{BlockSource, OpenOptions};
use dmpd::report::{Mode, Reporter};
use dmpd::thin::check::{check, CheckOptions};

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/{name}.bin.gz"))
}

#[test]
fn the_bar_counts_the_read_ahead_and_the_walk() {
    // Not a terminal here: the bar counts without drawing.
    let rep = Reporter::with_mode(Mode::Terminal);
    // A gzip'd image is held in memory: all of it is read ahead at once.
    let src = BlockSource::open(&fixture_path("snapshots"), OpenOptions::default()).unwrap();
    let r = check(&src, &CheckOptions::default(), &rep);
    assert!(r.passed(false));
    let allocated = r.superblock.unwrap().metadata_sm_root.nr_allocated;
    let (pos, len) = rep.finished_progress().unwrap();
    // The read-ahead covers every allocated block, and the walk visits
    // the tree nodes among them.
    let ahead = len - allocated;
    assert!(
        ahead >= allocated,
        "read ahead {ahead} of {allocated} allocated"
    );
    let walked = pos - ahead;
    assert!(
        walked > 0 && walked <= allocated,
        "walked {walked} of {allocated}"
    );
}

#[test]
fn a_file_source_counts_blocks_as_the_read_ahead_brings_them_in() {
    let s = Scratch::new("progress-file");
    let path = s.path("meta");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(fixture_path("snapshots")).unwrap()),
        &mut bytes,
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let rep = Reporter::with_mode(Mode::Terminal);
    let src = BlockSource::open(&path, OpenOptions::default()).unwrap();
    let r = check(&src, &CheckOptions::default(), &rep);
    assert!(r.passed(false));
    let allocated = r.superblock.unwrap().metadata_sm_root.nr_allocated;
    let (pos, len) = rep.finished_progress().unwrap();
    assert!(len >= 2 * allocated, "{len} for {allocated} allocated");
    // The walk alone is at most `allocated`; the read-ahead runs beside it.
    assert!(pos > 0 && pos <= len, "{pos} of {len}");
}
