mod common;

use common::*;

fn dump(args: &[&str]) -> std::process::Output {
    run("thin_dump", args)
}

fn err_file(name: &str) -> Option<(i32, String)> {
    let text = std::fs::read_to_string(expected(name)).ok()?;
    let exit = text
        .lines()
        .find_map(|l| l.strip_prefix("exit="))?
        .parse()
        .ok()?;
    let msg = text.lines().next().unwrap_or("").to_string();
    Some((exit, msg))
}

#[test]
fn dumps_are_byte_identical_to_the_reference() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("dump-fixtures");
    let mut identical = 0;
    for name in reference_fixtures()
        .into_iter()
        .filter(|n| !n.starts_with("emeta"))
    {
        let img = scratch.fixture_image(&name);
        let img = img.to_str().unwrap();
        for (args, stem) in [(vec![img], "dump"), (vec!["-m", img], "dump-m")] {
            let o = dump(&args);
            if let Ok(want) = std::fs::read_to_string(expected(&format!("{name}.{stem}.xml"))) {
                assert_eq!(code(&o), 0, "{name} {stem}: {}", stderr(&o));
                assert_eq!(
                    stderr(&o),
                    "",
                    "{name} {stem}: nothing on stderr on success"
                );
                assert!(
                    stdout(&o) == want,
                    "{name} {stem} differs from the reference dump"
                );
                identical += 1;
            } else if let Some((exit, _)) = err_file(&format!("{name}.{stem}.err")) {
                assert_eq!(code(&o), exit, "{name} {stem}: {}", stderr(&o));
            }
        }
    }
    assert_eq!(identical, 13);
}

#[test]
fn failures_name_the_problem() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("dump-errors");
    let img = scratch.fixture_image("tmeta");
    let o = dump(&["-m", img.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("no current metadata snap"));

    let snap = scratch.fixture_image("tmeta_with_corrupted_metadata_snap");
    let o = dump(&["-m", snap.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("bad checksum in superblock"));

    let zeros = scratch.path("zeros");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    let o = dump(&[zeros.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("bad checksum in superblock"));
    let o = dump(&["-q", zeros.to_str().unwrap()]);
    assert_eq!((code(&o), stderr(&o)), (64, String::new()));

    let o = dump(&["no-such-file"]);
    assert!(stderr(&o).contains("Couldn't find input file"));
    let o = dump(&[scratch.dir.to_str().unwrap()]);
    assert!(stderr(&o).contains("Not a block device or regular file"));

    let bad = scratch.fixture_image("corrupted_tmeta_with_metadata_snap");
    let o = dump(&[bad.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("node error at block 20: checksum error"),
        "{}",
        stderr(&o)
    );

    let o = dump(&["--repair", "-m", img.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    let o = dump(&["--format", "yaml", img.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
}

#[test]
fn human_readable_listing() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta_with_shared_internals_and_leaves.bin.gz");
    let o = dump(&["-f", "human_readable", gz.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Derived by hand from expected/tmeta_with_shared_internals_and_leaves.dump.xml.
    let want = "begin superblock: \"\", 1, 2, 0, 2, 128, 131072
def: 26
    (0..65349) -> (0..65349), 0

device: 1
mapped_blocks: 65536
transaction: 0
creation time: 0
snap time: 1
    ref: 26
    (65350..65535) -> (65350..65535), 0

device: 2
mapped_blocks: 65600
transaction: 1
creation time: 1
snap time: 1
    ref: 26
    (65350..65535) -> (65350..65535), 0
    (65536..65599) -> (65536..65599), 1

end superblock
";
    assert_eq!(stdout(&o), want);
}

#[test]
fn flat_dumps_hold_the_same_metadata_without_sharing() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    let o = dump(&["--flat", gz.to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    let flat = stdout(&o);
    assert!(!flat.contains("<def") && !flat.contains("<ref"));
    let want = xml::parse(&std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap());
    assert_eq!(xml::parse(&flat), want);
    let o = dump(&["--no-shared", gz.to_str().unwrap()]);
    assert!(stdout(&o) == flat);
}

#[test]
fn matches_debian_thin_dump_0_9() {
    if !common::have_reference() {
        return;
    }
    let debian = std::path::Path::new("/usr/sbin/thin_dump");
    if !debian.exists() {
        eprintln!("note: /usr/sbin/thin_dump absent, comparison skipped");
        return;
    }
    let scratch = Scratch::new("dump-debian");
    let img = scratch.fixture_image("tmeta");
    let theirs = std::process::Command::new(debian)
        .arg(&img)
        .output()
        .unwrap();
    assert!(theirs.status.success());
    let ours = dump(&[img.to_str().unwrap()]);
    let mut theirs = xml::parse(&String::from_utf8_lossy(&theirs.stdout));
    // 0.9.0 always writes flags="0".
    theirs.superblock.remove("flags");
    assert_eq!(xml::parse(&stdout(&ours)), theirs);
}

#[test]
fn device_selection_overrides_and_skip_mappings() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    let p = gz.to_str().unwrap();
    let o = dump(&["--dev-id", "9", "--dev-id", "2", "--dev-id", "77", p]);
    let pool = xml::parse(&stdout(&o));
    assert_eq!(pool.devices.keys().copied().collect::<Vec<_>>(), vec![2, 9]);
    let full = xml::parse(&std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap());
    assert_eq!(pool.devices[&2], full.devices[&2]);

    let o = dump(&["--skip-mappings", p]);
    let text = stdout(&o);
    assert!(!text.contains("mapping") && !text.contains("<def"));
    assert!(text.contains("  <device dev_id=\"16\" mapped_blocks=\"10684\" transaction=\"15\" creation_time=\"15\" snap_time=\"15\">\n  </device>\n</superblock>"));

    let o = dump(&[
        "--transaction-id",
        "40",
        "--data-block-size",
        "256",
        "--nr-data-blocks",
        "10",
        "--skip-mappings",
        p,
    ]);
    assert!(stdout(&o).starts_with(
        "<superblock uuid=\"\" time=\"15\" transaction=\"40\" version=\"2\" data_block_size=\"256\" nr_data_blocks=\"65536\">\n"
    ));
}

#[test]
fn output_file_read_only_input_and_broken_pipe() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("dump-output");
    let img = scratch.fixture_image("tmeta");
    let mut perm = std::fs::metadata(&img).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(&img, perm).unwrap();
    let out = scratch.path("out.xml");
    let o = dump(&["-o", out.to_str().unwrap(), img.to_str().unwrap()]);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (0, String::new(), String::new())
    );
    assert!(
        std::fs::read_to_string(&out).unwrap()
            == std::fs::read_to_string(expected("tmeta.dump.xml")).unwrap()
    );

    let o = dump(&["-o", "/nonexistent-dir/x.xml", img.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("output error"));

    // A reader that stops after one byte: exit 64 and nothing on stderr.
    let mut child = dmpd()
        .args(["thin_dump", img.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 64);
    assert_eq!(stderr(&o), "");
}

#[test]
fn output_to_a_character_device() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    let o = dump(&["-o", "/dev/null", gz.to_str().unwrap()]);
    assert_eq!((code(&o), stderr(&o)), (0, String::new()));
}
