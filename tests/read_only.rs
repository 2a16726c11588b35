//! Every tool that only reads metadata works on a file it may not write,
//! run by an unprivileged user (so that permissions bind even when the
//! tests run as root), and leaves its bytes unchanged.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_dmpd"))
        .args(args)
        .output()
        .unwrap()
}

fn chmod(path: &Path, mode: u32) {
    let mut perm = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, mode);
    std::fs::set_permissions(path, perm).unwrap();
}

#[test]
fn read_only_tools_never_write_their_input() {
    let scratch = Scratch::new("read-only");
    chmod(&scratch.dir, 0o777);
    // The project's own pool with a metadata snapshot: runs in any clone.
    let img = scratch.own_image("snapshots_with_metadata_snap");
    chmod(&img, 0o444);
    let before = std::fs::read(&img).unwrap();
    let p = img.to_str().unwrap();
    let out = scratch.path("out");
    let o = out.to_str().unwrap();
    let repaired = scratch.path("repaired");
    std::fs::File::create(&repaired)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    chmod(&repaired, 0o666);
    let r = repaired.to_str().unwrap();
    let data = scratch.path("data");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(32768 * 65536)
        .unwrap();
    chmod(&data, 0o666);
    let d = data.to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["thin_check", p],
        vec!["thin_check", "-m", p],
        vec!["thin_dump", p],
        vec!["thin_dump", "-m", p],
        vec!["thin_dump", "--repair", p],
        vec!["thin_ls", p],
        vec!["thin_delta", "--thin1", "1", "--thin2", "2", p],
        vec!["thin_rmap", "--region", "0..100", p],
        vec!["thin_repair", "-i", p, "-o", r],
        vec!["thin_metadata_pack", "-f", "-i", p, "-o", o],
        vec!["thin_trim", "--metadata-dev", p, "--data-dev", d],
    ];
    for args in runs {
        let o = as_nobody(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{args:?} changed its input"
        );
    }
    // A tool that must write refuses, and still changes nothing.
    let o = as_nobody(&["thin_check", "--clear-needs-check-flag", p]);
    assert_eq!(
        code(&o),
        0,
        "nothing to clear, so nothing to write: {}",
        stderr(&o)
    );
    assert!(std::fs::read(&img).unwrap() == before);
}
