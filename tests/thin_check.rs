mod common;

use common::image::Image;
use common::*;

/// The thin fixtures (the era one is for era_check).
fn thin_fixtures() -> Vec<String> {
    reference_fixtures()
        .into_iter()
        .filter(|n| n.starts_with("tmeta") || n.starts_with("corrupted_tmeta"))
        .collect()
}

/// (exit status, stdout lines) recorded for the reference tools.
fn expected_check(file: &str) -> (i32, Vec<String>) {
    let text = std::fs::read_to_string(expected(file)).unwrap();
    let mut lines = text.lines();
    let exit: i32 = lines
        .next()
        .unwrap()
        .strip_prefix("exit=")
        .unwrap()
        .parse()
        .unwrap();
    // Either "--- stdout"/"--- stderr" sections, or both streams mixed:
    // the facts are the KEY=value lines.
    let facts = text
        .lines()
        .filter(|l| l.starts_with("TRANSACTION_ID=") || l.starts_with("METADATA_FREE_BLOCKS="))
        .map(str::to_string)
        .collect();
    (exit, facts)
}

fn stdout_lines(o: &std::process::Output) -> Vec<String> {
    stdout(o).lines().map(str::to_string).collect()
}

#[test]
fn reference_fixtures_get_the_reference_verdicts() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-fixtures");
    for name in thin_fixtures() {
        let img = scratch.fixture_image(&name);
        let img = img.to_str().unwrap();
        for (args, file) in [
            (vec![img], format!("{name}.check.txt")),
            (vec!["-m", img], format!("{name}.check-m.txt")),
        ] {
            let (exit, facts) = expected_check(&file);
            let o = run("thin_check", &args);
            assert_eq!(code(&o), exit, "{file}: stderr {}", stderr(&o));
            assert_eq!(stdout_lines(&o), facts, "{file}");
        }
    }
}

#[test]
fn gzip_images_are_read_directly() {
    if !common::have_reference() {
        return;
    }
    let gz = reference_dir().join("tmeta.bin.gz");
    let o = run("thin_check", &[gz.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "TRANSACTION_ID=21\nMETADATA_FREE_BLOCKS=16096\n"
    );
}

#[test]
fn damage_in_the_top_level_tree_names_tree_block_and_path() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-top-level");
    let img = scratch.fixture_image("corrupted_tmeta_with_metadata_snap");
    let o = run("thin_check", &[img.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o).contains("mapping top-level: node error: checksum error (block 20, keys [..])"),
        "{}",
        stderr(&o)
    );
    // With -v, the reference tools' encoded node path as well.
    let o = run("thin_check", &["-v", img.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(
        stderr(&o)
            .contains("mapping top-level: node error: checksum error AwEU (block 20, keys [..])"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn quiet_prints_nothing() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-quiet");
    let good = scratch.fixture_image("tmeta");
    let o = run("thin_check", &["-q", good.to_str().unwrap()]);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (0, String::new(), String::new())
    );
    let bad = scratch.fixture_image("tmeta_with_corrupted_metadata_snap");
    let o = run("thin_check", &["--quiet", bad.to_str().unwrap()]);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (64, String::new(), String::new())
    );
}

#[test]
fn input_rules() {
    let scratch = Scratch::new("check-input");
    let o = run("thin_check", &["no-such-file"]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("Couldn't find input file 'no-such-file'"));

    let o = run("thin_check", &[scratch.dir.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("Not a block device or regular file"));

    let tiny = scratch.path("tiny");
    std::fs::write(&tiny, vec![0u8; 1024]).unwrap();
    let o = run("thin_check", &[tiny.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("too small") && stderr(&o).contains("binary metadata"));

    let xml = scratch.path("dump.xml");
    let mut text = b"<superblock uuid=\"\" time=\"0\"".to_vec();
    text.resize(8192, b' ');
    std::fs::write(&xml, text).unwrap();
    let o = run("thin_check", &[xml.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("looks like XML"), "{}", stderr(&o));

    let zeros = scratch.path("zeros");
    std::fs::write(&zeros, vec![0u8; 16 << 20]).unwrap();
    for extra in [&[][..], &["--super-block-only"][..]] {
        let mut args = extra.to_vec();
        args.push(zeros.to_str().unwrap());
        let o = run("thin_check", &args);
        assert_eq!(code(&o), 64);
        assert!(stderr(&o).contains("bad checksum in superblock"));
        assert_eq!(stdout(&o), "");
    }
}

#[test]
fn command_line_errors_exit_1_never_2_and_never_for_damage() {
    // lvm2 would read 2 as "thin_check not installed" and skip the check.
    let o = run("thin_check", &["--hedgehogs-only", "x"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("unexpected argument '--hedgehogs-only' found"));
    let o = run("thin_check", &[]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("the following required arguments were not provided"));
    for combo in [
        &["--auto-repair", "-m"][..],
        &["--auto-repair", "--ignore-non-fatal-errors"],
        &["--auto-repair", "--super-block-only"],
        &["--auto-repair", "--skip-mappings"],
        &["--auto-repair", "--override-mapping-root", "5"],
        &["--clear-needs-check-flag", "-m"],
        &["--clear-needs-check-flag", "--override-details-root", "5"],
    ] {
        let mut args = combo.to_vec();
        args.push("x");
        assert_eq!(code(&run("thin_check", &args)), 1, "{combo:?}");
    }
}

#[test]
fn version_and_help() {
    for flag in ["-V", "--version"] {
        let o = run("thin_check", &[flag]);
        assert_eq!(code(&o), 0);
        assert_eq!(stdout(&o), format!("{}\n", env!("CARGO_PKG_VERSION")));
    }
    let o = run("thin_check", &["-V", "x"]);
    assert_eq!(code(&o), 1);
    let o = run("thin_check", &["--help"]);
    assert_eq!(code(&o), 0);
    for opt in [
        "--super-block-only",
        "--skip-mappings",
        "--ignore-non-fatal-errors",
        "--clear-needs-check-flag",
        "--metadata-snap",
        "--override-mapping-root <BLOCKNR>",
        "--format",
        "--quiet",
    ] {
        assert!(stdout(&o).contains(opt), "help lacks {opt}");
    }
    assert!(!stdout(&o).contains("io-engine"));
}

#[test]
fn superblock_only_reads_nothing_else() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-sb-only");
    let bytes = gunzip_fixture("tmeta");
    let path = scratch.path("first-block");
    std::fs::write(&path, &bytes[..4096]).unwrap();
    let o = run(
        "thin_check",
        &["--super-block-only", path.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "TRANSACTION_ID=21\nMETADATA_FREE_BLOCKS=16096\n"
    );
    let o = run("thin_check", &[path.to_str().unwrap()]);
    assert_eq!(code(&o), 64, "a truncated image fails the full check");
}

#[test]
fn every_option_alone_passes_healthy_metadata_and_leaves_it_untouched() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-options");
    let img = scratch.fixture_image("tmeta");
    let before = std::fs::read(&img).unwrap();
    let p = img.to_str().unwrap();
    for opt in [
        "--super-block-only",
        "--skip-mappings",
        "--ignore-non-fatal-errors",
        "--clear-needs-check-flag",
        "--auto-repair",
    ] {
        let o = run("thin_check", &[opt, p]);
        assert_eq!(code(&o), 0, "{opt}: {}", stderr(&o));
    }
    assert!(
        std::fs::read(&img).unwrap() == before,
        "healthy metadata was written"
    );
}

#[test]
fn clear_needs_check_flag_rewrites_only_the_flag() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-clear-flag");
    let mut image = Image::new(gunzip_fixture("tmeta"));
    let mut sb = image.superblock();
    sb.flags |= 1;
    image.set_superblock(&sb);
    let path = scratch.path("flagged");
    image.write_to(&path);
    let p = path.to_str().unwrap();

    // A plain check reports and keeps the flag.
    assert_eq!(code(&run("thin_check", &[p])), 0);
    assert_eq!(
        Image::new(std::fs::read(&path).unwrap()).superblock().flags & 1,
        1
    );

    // lvm2's invocation clears it and changes nothing else.
    let o = run("thin_check", &["-q", "--clear-needs-check-flag", p]);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (0, String::new(), String::new())
    );
    let after = std::fs::read(&path).unwrap();
    let cleared = Image::new(after.clone()).superblock();
    assert_eq!(cleared.flags & 1, 0);
    assert_eq!(
        cleared,
        Superblock {
            flags: sb.flags & !1,
            ..sb.clone()
        }
    );
    assert_eq!(after[4096..], image.bytes[4096..]);
}

use dmpd::thin::superblock::Superblock;

#[test]
fn clear_needs_check_flag_is_refused_when_the_check_fails() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-clear-refused");
    let mut image = Image::new(gunzip_fixture("tmeta"));
    let mut sb = image.superblock();
    sb.flags |= 1;
    image.set_superblock(&sb);
    let b = image.find_block_with_count(false, 2);
    image.set_stored_count(false, b, 1);
    let path = scratch.path("flagged-bad");
    image.write_to(&path);
    let o = run(
        "thin_check",
        &["--clear-needs-check-flag", path.to_str().unwrap()],
    );
    assert_eq!(code(&o), 64);
    assert!(
        std::fs::read(&path).unwrap() == image.bytes,
        "failed check wrote to the image"
    );
}

#[test]
fn read_only_input_is_never_opened_for_writing() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-read-only");
    let img = scratch.fixture_image("tmeta");
    let mut perm = std::fs::metadata(&img).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(&img, perm.clone()).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&scratch.dir, perm).unwrap();
    // Run as an unprivileged user, so that permissions apply even to root.
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_dmpd"))
        .args(["thin_check", img.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "TRANSACTION_ID=21\nMETADATA_FREE_BLOCKS=16096\n"
    );
}

#[test]
fn json_output_is_one_document_with_structured_findings() {
    if !common::have_reference() {
        return;
    }
    let scratch = Scratch::new("check-json");
    let mut image = Image::new(gunzip_fixture("tmeta"));
    let b = image.find_block_with_count(false, 0);
    image.set_stored_count(false, b, 1);
    let path = scratch.path("leak");
    image.write_to(&path);
    let o = run("thin_check", &["--format", "json", path.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert_eq!(stderr(&o), "");
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1);
    assert!(
        out.starts_with("{\"passed\":false,\"transaction_id\":21,\"metadata_free_blocks\":16095,")
    );
    assert!(out.contains(&format!(
        "{{\"severity\":\"non-fatal\",\"kind\":\"leaked_blocks\",\"message\":\"metadata space map: block {b} leaked: stored count 1, computed 0\",\"tree\":\"metadata space map\",\"block\":{b},\"blocks\":{{\"begin\":{b},\"end\":{}}}}}",
        b + 1
    )), "{out}");
}

/// Clearing needs_check is one block write: power lost before it leaves
/// the flag set, after it the flag clear; the metadata checks either way.
#[test]
fn a_crash_while_clearing_the_flag_leaves_a_valid_superblock() {
    if !common::have_reference() {
        return;
    }
    use dmpd::io::sink::{BlockSink, MemorySink};
    use dmpd::thin::superblock::without_needs_check;
    let mut image = Image::new(gunzip_fixture("tmeta_with_empty_roots"));
    let mut sb = image.superblock();
    sb.flags |= 1;
    image.set_superblock(&sb);
    let cleared = without_needs_check(image.block(0)).unwrap();
    for k in 0..=1 {
        let mut bytes = image.bytes.clone();
        let mut sink = MemorySink {
            image: &mut bytes,
            limit: Some(k),
            writes: 0,
        };
        let done = sink
            .write_block(0, &cleared)
            .and_then(|_| sink.flush())
            .is_ok();
        let after = Image::new(bytes);
        assert_eq!(after.superblock().flags & 1, if done { 0 } else { 1 });
        let src =
            dmpd::io::BlockSource::from_bytes(&after.bytes, std::path::Path::new("x")).unwrap();
        let r = dmpd::thin::check::check(
            &src,
            &dmpd::thin::check::CheckOptions::default(),
            &dmpd::report::Reporter::with_mode(dmpd::report::Mode::Quiet),
        );
        assert!(r.passed(false), "after {k} writes: {:?}", r.findings);
    }
}
