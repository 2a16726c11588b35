//! The XML side of the cache tools: cache_dump against what the reference
//! printed for the kernel-written images, cache_restore (validation,
//! sizing, what it writes, crash safety), dump/restore round trips checked
//! by Debian's 0.9.0 cache_check as well as ours, cache_repair's losses
//! per damaged array block, and cache_metadata_size's figures.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const KERNEL_IMAGES: &[&str] = &[
    "cmeta_kernel_v1",
    "cmeta_kernel_v2",
    "cmeta_kernel_v1_huge",
    "cmeta_kernel_v2_large",
];

fn kernel_expected(name: &str) -> PathBuf {
    kernel_dir().join("expected").join(name)
}

fn kernel_image(name: &str) -> PathBuf {
    kernel_dir().join(format!("{name}.bin.gz"))
}

/// The metadata format of a kernel image, from its name.
fn version_of(name: &str) -> &'static str {
    if name.contains("_v1") {
        "1"
    } else {
        "2"
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A zeroed output of `bytes`.
fn output(s: &Scratch, name: &str, bytes: u64) -> PathBuf {
    let out = s.path(name);
    std::fs::File::create(&out).unwrap().set_len(bytes).unwrap();
    out
}

/// Debian's cache_check, when installed.
fn debian_cache_check() -> Option<&'static str> {
    let path = "/usr/sbin/cache_check";
    if Path::new(path).exists() {
        return Some(path);
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("SKIPPED {test} (Debian's cache_check part): needs {path} (not found)");
    None
}

/// Both checkers accept `image`.
fn checks_clean(image: &Path) {
    let o = run("cache_check", &[p(image)]);
    assert_eq!(
        code(&o),
        0,
        "cache_check {}: {}",
        image.display(),
        stderr(&o)
    );
    if let Some(check) = debian_cache_check() {
        let o = std::process::Command::new(check)
            .arg(image)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "Debian cache_check {}: {}{}",
            image.display(),
            stdout(&o),
            stderr(&o)
        );
    }
}

fn dump(image: &Path) -> Vec<u8> {
    let o = run("cache_dump", &[p(image)]);
    assert_eq!(
        code(&o),
        0,
        "cache_dump {}: {}",
        image.display(),
        stderr(&o)
    );
    assert_eq!(stderr(&o), "");
    o.stdout
}

#[test]
fn dumps_of_kernel_images_are_the_references_byte_for_byte() {
    if !have_kernel_images() {
        return;
    }
    for name in KERNEL_IMAGES {
        let want = std::fs::read(kernel_expected(&format!("{name}.dump.xml"))).unwrap();
        assert!(
            dump(&kernel_image(name)) == want,
            "{name}: cache_dump differs from the reference's"
        );
    }
}

#[test]
fn restoring_each_expected_dump_and_dumping_again_gives_the_same_xml() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-roundtrip");
    for name in KERNEL_IMAGES {
        let xml = kernel_expected(&format!("{name}.dump.xml"));
        let want = std::fs::read(&xml).unwrap();
        // The image's own format and the other one: the XML is the same.
        for version in ["1", "2"] {
            let out = output(&s, &format!("{name}-v{version}.bin"), 8 << 20);
            let o = run(
                "cache_restore",
                &["-i", p(&xml), "-o", p(&out), "--metadata-version", version],
            );
            assert_eq!(code(&o), 0, "{name} v{version}: {}", stderr(&o));
            assert_eq!((stdout(&o), stderr(&o)), (String::new(), String::new()));
            checks_clean(&out);
            assert!(
                dump(&out) == want,
                "{name} restored as v{version}: dump differs"
            );
            assert_eq!(
                superblock(&out).version,
                version.parse::<u32>().unwrap(),
                "{name}"
            );
        }
        let _ = version_of(name);
    }
}

#[test]
fn repairing_healthy_kernel_images_keeps_everything() {
    if !have_kernel_images() {
        return;
    }
    let s = Scratch::new("cache-repair-healthy");
    for name in KERNEL_IMAGES {
        let out = output(&s, &format!("{name}.bin"), 8 << 20);
        let o = run(
            "cache_repair",
            &["-i", p(&kernel_image(name)), "-o", p(&out)],
        );
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{name}");
        checks_clean(&out);
        let want = std::fs::read(kernel_expected(&format!("{name}.dump.xml"))).unwrap();
        assert!(dump(&out) == want, "{name}: repaired dump differs");
        let sb = superblock(&out);
        assert_eq!(sb.version.to_string(), version_of(name), "{name}");
        assert!(sb.clean_shutdown(), "{name}");
    }
}

fn superblock(image: &Path) -> dmpd::cache::superblock::Superblock {
    let bytes = std::fs::read(image).unwrap();
    assert!(
        dmpd::io::checksum::matches(&bytes[..4096], dmpd::io::BlockKind::CacheSuperblock),
        "{}: block 0 is not a cache superblock",
        image.display()
    );
    dmpd::cache::superblock::Superblock::parse(&bytes[..4096])
}

/// The worked example of format-cache-era.md §6.2 (five mappings across
/// three array blocks, four hints).
const EXAMPLE: &str = "<superblock uuid=\"\" block_size=\"128\" nr_cache_blocks=\"1100\" policy=\"smq\" hint_width=\"4\">
  <mappings>
    <mapping cache_block=\"0\" origin_block=\"100\" dirty=\"false\"/>
    <mapping cache_block=\"1\" origin_block=\"7\" dirty=\"true\"/>
    <mapping cache_block=\"2\" origin_block=\"1000\" dirty=\"false\"/>
    <mapping cache_block=\"509\" origin_block=\"5\" dirty=\"true\"/>
    <mapping cache_block=\"1099\" origin_block=\"123456\" dirty=\"false\"/>
  </mappings>
  <hints>
    <hint cache_block=\"0\" data=\"AQAAAA==\"/>
    <hint cache_block=\"1\" data=\"AgAAAA==\"/>
    <hint cache_block=\"509\" data=\"PwAAAA==\"/>
    <hint cache_block=\"1099\" data=\"BQAAAA==\"/>
  </hints>
</superblock>";

fn write(s: &Scratch, name: &str, text: &str) -> PathBuf {
    let path = s.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_worked_example_restores_as_documented_in_both_formats() {
    let s = Scratch::new("cache-example");
    let xml = write(&s, "example.xml", EXAMPLE);
    // The dump adds the zero hint of mapped cache block 2.
    let want = EXAMPLE.replace(
        "    <hint cache_block=\"509\"",
        "    <hint cache_block=\"2\" data=\"AAAAAA==\"/>\n    <hint cache_block=\"509\"",
    );
    for version in [1u32, 2] {
        let out = output(&s, &format!("v{version}.bin"), 4 << 20);
        let v = version.to_string();
        let o = run(
            "cache_restore",
            &["-i", p(&xml), "-o", p(&out), "--metadata-version", &v],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        checks_clean(&out);
        assert_eq!(String::from_utf8(dump(&out)).unwrap(), want, "v{version}");
        let sb = superblock(&out);
        assert_eq!(sb.version, version);
        assert_eq!(sb.flags, dmpd::cache::superblock::CLEAN_SHUTDOWN);
        assert_eq!(sb.policy(), b"smq");
        assert_eq!(sb.policy_hint_size, 4);
        assert_eq!(sb.policy_version, [2, 0, 0]);
        assert_eq!(sb.data_block_size, 128);
        assert_eq!(sb.metadata_block_size, 8);
        assert_eq!(sb.cache_blocks, 1100);
        // Unlike the reference (tools.md Q9), no invented read misses.
        assert_eq!(sb.stats, Default::default());
        assert_eq!((sb.discard_block_size, sb.discard_nr_blocks), (0, 0));
        assert_eq!(sb.metadata_sm_root.nr_blocks, 1024);
        // Superblock, 3 mapping blocks + index, 2 hint blocks + index,
        // (v2) a dirty word block + index, the empty discard leaf, the
        // ref-count leaf, a bitmap and the index: the reference's 12 / 14.
        let allocated = if version == 1 { 12 } else { 14 };
        assert_eq!(sb.metadata_sm_root.nr_allocated, allocated, "v{version}");
        assert_eq!(sb.dirty_root.is_some(), version == 2);
    }
}

#[test]
fn omit_clean_shutdown_leaves_the_flag_clear() {
    let s = Scratch::new("cache-unclean");
    let xml = write(&s, "example.xml", EXAMPLE);
    let out = output(&s, "out.bin", 4 << 20);
    let o = run(
        "cache_restore",
        &["-i", p(&xml), "-o", p(&out), "--omit-clean-shutdown", "-q"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(superblock(&out).flags, 0);
    checks_clean(&out);
}

/// Replaces `from` in the example by `to`.
fn example_with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from}");
    EXAMPLE.replacen(from, to, 1)
}

#[test]
fn bad_documents_are_refused_with_line_and_column_before_the_output_is_touched() {
    let s = Scratch::new("cache-bad-xml");
    let m509 = "<mapping cache_block=\"509\" origin_block=\"5\" dirty=\"true\"/>";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "cache block out of bounds",
            example_with("cache_block=\"1099\" origin", "cache_block=\"1100\" origin"),
            "line 7, column 5: array index out of bounds: <mapping> of cache block 1100, but nr_cache_blocks is 1100",
        ),
        (
            "cache blocks out of order",
            example_with(m509, "<mapping cache_block=\"2\" origin_block=\"5\" dirty=\"true\"/>"),
            "line 6, column 5: unordered array index: <mapping> of cache block 2 after cache block 2",
        ),
        (
            "origin mapped twice",
            example_with(m509, "<mapping cache_block=\"509\" origin_block=\"100\" dirty=\"true\"/>"),
            "line 6, column 5: origin block 100 is mapped twice: by cache block 0 and cache block 509",
        ),
        (
            "hint of the wrong size",
            example_with("data=\"AgAAAA==\"", "data=\"AgAAAAA=\""),
            "line 11, column 5: the hint of cache block 1 is 5 bytes, but hint_width is 4",
        ),
        (
            "hint that is not Base64",
            example_with("data=\"AgAAAA==\"", "data=\"AgA*AA==\""),
            "line 11, column 5: hint of cache block 1: data 'AgA*AA==' is not padded Base64",
        ),
        (
            "policy name too long",
            example_with("policy=\"smq\"", "policy=\"abcdefghijklmnopq\""),
            "line 1, column 1: policy name 'abcdefghijklmnopq' is 17 bytes; the superblock holds at most 16",
        ),
        (
            "mapping before the superblock",
            format!("<mapping cache_block=\"0\" origin_block=\"1\" dirty=\"false\"/>\n{EXAMPLE}"),
            "line 1, column 1: missing superblock",
        ),
        (
            "dirty neither true nor false",
            example_with("dirty=\"true\"", "dirty=\"1\""),
            "line 4, column 5: attribute 'dirty' of <mapping> must be 'true' or 'false', not '1'",
        ),
        (
            "block size not a multiple of 64",
            example_with("block_size=\"128\"", "block_size=\"100\""),
            "invalid block_size 100",
        ),
        (
            "hint width other than 4",
            example_with("hint_width=\"4\"", "hint_width=\"8\""),
            "hint_width 8 is not supported",
        ),
        (
            "no end",
            EXAMPLE.replace("</superblock>", ""),
            "incomplete source metadata",
        ),
        (
            "a second superblock",
            format!("{EXAMPLE}\n{EXAMPLE}"),
            "content after </superblock>",
        ),
        (
            "mappings nested in hints",
            example_with("  <hints>\n", "  <hints>\n  <mappings>\n  </mappings>\n"),
            "<mappings> inside <hints>",
        ),
        (
            "a second mappings section",
            example_with("  <hints>\n", "  <mappings>\n  </mappings>\n  <hints>\n"),
            "a second <mappings> section",
        ),
        (
            "discards out of order",
            example_with(
                "</superblock>",
                "<discards>\n<discard dbegin=\"10\" dend=\"20\"/>\n<discard dbegin=\"15\" dend=\"30\"/>\n</discards>\n</superblock>",
            ),
            "discard range 15..30 starts before the end of the one before it (20)",
        ),
        (
            "an XML declaration",
            format!("<?xml version=\"1.0\"?>\n{EXAMPLE}"),
            "line 1, column 1: unsupported element: XML declaration",
        ),
    ];
    for (case, text, words) in cases {
        let xml = write(&s, "bad.xml", &text);
        let out = s.path("out.bin");
        // An output that holds something, to see it is not touched.
        std::fs::write(&out, vec![0x5au8; 4 << 20]).unwrap();
        for version in ["1", "2"] {
            let o = run(
                "cache_restore",
                &["-i", p(&xml), "-o", p(&out), "--metadata-version", version],
            );
            assert_eq!(code(&o), 64, "{case}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(err.contains(words), "{case}: {err}");
            assert!(err.contains(p(&xml)), "{case}: {err}");
            assert!(
                std::fs::read(&out).unwrap() == vec![0x5au8; 4 << 20],
                "{case}: output touched"
            );
            let q = run("cache_restore", &["-q", "-i", p(&xml), "-o", p(&out)]);
            assert_eq!((code(&q), stderr(&q)), (64, String::new()), "{case} -q");
        }
    }
}

#[test]
fn an_output_too_small_is_refused_with_what_it_needs() {
    let s = Scratch::new("cache-small");
    // 2,000,000 cache blocks: 3930 mapping blocks + 16 index leaves + a
    // root, 1965 + 8 + 1 hint blocks, 62 dirty-word blocks + 1 index
    // leaf, the discard leaf, the superblock, the ref-count leaf: 5987
    // blocks, then a bitmap and the index: 5989 blocks (the reference's
    // figure for this size, bench/README).
    let xml = write(
        &s,
        "big.xml",
        &EXAMPLE.replace("nr_cache_blocks=\"1100\"", "nr_cache_blocks=\"2000000\""),
    );
    let out = output(&s, "out.bin", 5988 * 4096);
    let before = std::fs::read(&out).unwrap();
    let o = run("cache_restore", &["-i", p(&xml), "-o", p(&out)]);
    assert_eq!(code(&o), 64);
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "Output file too small (out of metadata space): '{}' holds 5988 blocks \
             (24526848 bytes); the metadata needs at least 5989 blocks (24530944 bytes)",
            out.display()
        )
    );
    assert!(std::fs::read(&out).unwrap() == before);
    let out = output(&s, "fits.bin", 5989 * 4096);
    let o = run("cache_restore", &["-i", p(&xml), "-o", p(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sb = superblock(&out);
    assert_eq!(sb.metadata_sm_root.nr_allocated, 5989);
    checks_clean(&out);
}

#[test]
fn restoring_over_cache_metadata_leaves_its_blocks_until_the_superblock() {
    let s = Scratch::new("cache-keep");
    let xml = write(&s, "example.xml", EXAMPLE);
    let out = output(&s, "out.bin", 4 << 20);
    let o = run("cache_restore", &["-i", p(&xml), "-o", p(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let old = std::fs::read(&out).unwrap();
    let old_sb = superblock(&out);
    // Blocks 1..14 hold the first transaction; the second restore (of
    // other mappings) must go elsewhere.
    let other = example_with("origin_block=\"100\"", "origin_block=\"101\"");
    let xml2 = write(&s, "other.xml", &other);
    let o = run("cache_restore", &["-i", p(&xml2), "-o", p(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let new = std::fs::read(&out).unwrap();
    let used = old_sb.metadata_sm_root.nr_allocated as usize;
    assert_eq!(used, 14);
    for b in 1..used {
        assert!(
            old[b * 4096..(b + 1) * 4096] == new[b * 4096..(b + 1) * 4096],
            "block {b} of the old transaction was overwritten"
        );
    }
    checks_clean(&out);
    assert!(String::from_utf8(dump(&out))
        .unwrap()
        .contains("origin_block=\"101\""));
}

#[test]
fn discards_are_restored_as_the_discard_bitset() {
    let s = Scratch::new("cache-discards");
    let text = example_with(
        "</superblock>",
        "  <discards>\n    <discard dbegin=\"3\" dend=\"70\"/>\n    <discard dbegin=\"200\" dend=\"201\"/>\n  </discards>\n</superblock>",
    );
    let xml = write(&s, "d.xml", &text);
    let out = output(&s, "out.bin", 4 << 20);
    let o = run("cache_restore", &["-i", p(&xml), "-o", p(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sb = superblock(&out);
    // The bitset covers the discards and every mapped origin block (the
    // checkers take it as the origin's size).
    assert_eq!((sb.discard_block_size, sb.discard_nr_blocks), (128, 123457));
    checks_clean(&out);
    let src = dmpd::io::BlockSource::open(&out, Default::default()).unwrap();
    let md = dmpd::cache::read::CacheMetadata::read(&src, &Default::default()).unwrap();
    assert_eq!(md.discarded(), vec![3..70, 200..201]);
    // The dump leaves them out, as the reference's does.
    assert!(!String::from_utf8(dump(&out)).unwrap().contains("discard"));
}

/// Array blocks of `vs`-byte values in `image` (block number, entries),
/// found by their headers.
fn array_blocks(image: &[u8], vs: u32) -> Vec<(usize, u32)> {
    let le = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    image
        .chunks(4096)
        .enumerate()
        .filter(|(b, blk)| {
            dmpd::io::checksum::matches(blk, dmpd::io::BlockKind::Array)
                && le(blk, 12) == vs
                && u64::from_le_bytes(blk[16..24].try_into().unwrap()) == *b as u64
        })
        .map(|(b, blk)| (b, le(blk, 8)))
        .collect()
}

#[test]
fn repair_loses_only_what_a_damaged_array_block_holds() {
    let s = Scratch::new("cache-repair-damage");
    // A cache of 3000 blocks, all mapped, every tenth dirty, hints 1..
    let mut text = String::from(
        "<superblock uuid=\"\" block_size=\"64\" nr_cache_blocks=\"3000\" policy=\"smq\" hint_width=\"4\">\n  <mappings>\n",
    );
    for c in 0..3000 {
        text += &format!(
            "    <mapping cache_block=\"{c}\" origin_block=\"{}\" dirty=\"{}\"/>\n",
            c * 3,
            c % 10 == 0
        );
    }
    text += "  </mappings>\n  <hints>\n";
    let hint = |c: u32| {
        let b = (c % 64).to_le_bytes();
        let mut out = String::new();
        // Base64 of 4 bytes b0 b1 b2 b3 (b1..b3 are 0 here).
        let t = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        out.push(t[(b[0] >> 2) as usize] as char);
        out.push(t[((b[0] & 3) << 4) as usize] as char);
        out += "AAAA==";
        out
    };
    for c in 0..3000u32 {
        text += &format!("    <hint cache_block=\"{c}\" data=\"{}\"/>\n", hint(c));
    }
    text += "  </hints>\n</superblock>";
    let xml = write(&s, "full.xml", &text);
    for version in ["1", "2"] {
        let image = output(&s, "image.bin", 4 << 20);
        let o = run(
            "cache_restore",
            &[
                "-i",
                p(&xml),
                "-o",
                p(&image),
                "--metadata-version",
                version,
            ],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(String::from_utf8(dump(&image)).unwrap(), text);
        let mut bytes = std::fs::read(&image).unwrap();
        // Mapping array block 1 holds cache blocks 509..1017; hint array
        // block 2 holds the hints of cache blocks 2036..2999.
        let maps = array_blocks(&bytes, 8);
        let hints = array_blocks(&bytes, 4);
        assert_eq!(hints.len(), 3, "{hints:?}");
        let (m1, _) = maps
            .iter()
            .copied()
            .filter(|(_, n)| *n == 509)
            .nth(1)
            .unwrap();
        let (h2, n2) = hints[2];
        assert_eq!(n2, 3000 - 2 * 1018);
        bytes[m1 * 4096 + 100] ^= 0xff;
        bytes[h2 * 4096 + 100] ^= 0xff;
        let damaged = write(&s, "damaged.bin", "");
        std::fs::write(&damaged, &bytes).unwrap();

        // Without --repair the dump names the damage and fails.
        let o = run("cache_dump", &[p(&damaged)]);
        assert_eq!(code(&o), 64);
        assert!(
            stderr(&o).contains(&format!(
                "mapping array: array block 1 at block {m1} (cache blocks 509..1017 lost): checksum"
            )),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("cache_dump --repair"), "{}", stderr(&o));

        let out = output(&s, "repaired.bin", 4 << 20);
        let o = run("cache_repair", &["-i", p(&damaged), "-o", p(&out)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("cache blocks 509..1017 lost)") && err.contains("mappings are dropped"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "hint array: array block 2 at block {h2} (cache blocks 2036.."
            )) && err.contains("hints are written as zero"),
            "{err}"
        );
        checks_clean(&out);
        assert_eq!(superblock(&out).version.to_string(), version);
        // Exactly the mappings of cache blocks 509..1017 are gone, and the
        // hints of 2036.. read zero; everything else is as it was.
        let want: String = text
            .lines()
            .filter(|l| {
                let c: Option<u32> = l
                    .split("cache_block=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|n| n.parse().ok());
                !(l.contains("<mapping") || l.contains("<hint"))
                    || !c.is_some_and(|c| (509..=1017).contains(&c))
            })
            .map(|l| {
                let c: Option<u32> = l
                    .split("cache_block=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|n| n.parse().ok());
                match c {
                    Some(c) if l.contains("<hint") && c >= 2036 => {
                        format!("    <hint cache_block=\"{c}\" data=\"AAAAAA==\"/>")
                    }
                    _ => l.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            String::from_utf8(dump(&out)).unwrap() == want,
            "v{version}: the repaired metadata holds other than the undamaged entries"
        );
        // cache_dump --repair writes what cache_repair restores (its hints
        // for the damaged hint block are left out, not zero).
        let o = run("cache_dump", &["--repair", p(&damaged)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let repaired_dump = String::from_utf8(o.stdout).unwrap();
        assert_eq!(repaired_dump.matches("<mapping ").count(), 3000 - 509);
        assert_eq!(repaired_dump.matches("<hint ").count(), 3000 - 509 - 964);
    }
}

#[test]
fn cache_metadata_size_figures() {
    for (args, want) in [
        // 4 MiB + 1024 x (16 + 4 + 8) bytes = 4222976 bytes.
        ("--nr-blocks 1024", "8248 sectors"),
        ("--device-size 65536 --block-size 64", "8248 sectors"),
        ("--device-size 32m --block-size 32k", "8248 sectors"),
        // Past the cap: 4161600 blocks of 4096 bytes.
        ("--nr-blocks 67108864", "3678208 sectors"),
        ("--nr-blocks 1024 -u b", "4222976 bytes"),
        // 4 MiB + 1024 x (16 + 0 + 8) bytes = 4218880 bytes.
        ("--nr-blocks 1024 --max-hint-width 0", "8240 sectors"),
        ("--nr-blocks 1024 -u m -n=short", "4.03m"),
        ("--nr-blocks 1024 -n", "8248"),
        ("--nr-blocks 1024 -u k -n=long", "4124kibibytes"),
        // 100 blocks of 64 sectors and a partial one: 101 blocks.
        ("--device-size 6401 --block-size 64 -u b", "4197132 bytes"),
    ] {
        let args: Vec<&str> = args.split_whitespace().collect();
        let o = run("cache_metadata_size", &args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{want}\n"), "{args:?}");
        assert_eq!(stderr(&o), "");
    }
    for b in ["64", "128", "192", "2097152"] {
        let o = run(
            "cache_metadata_size",
            &["--device-size", "16777216", "--block-size", b],
        );
        assert_eq!(code(&o), 0, "{b}: {}", stderr(&o));
    }
    for b in ["0", "32", "63", "2097153", "2097218", "4194304"] {
        let o = run(
            "cache_metadata_size",
            &["--device-size", "16777216", "--block-size", b],
        );
        assert_eq!(code(&o), 64, "{b}");
        assert!(stderr(&o).contains("multiple of 32 KiB"), "{}", stderr(&o));
    }
    let o = run("cache_metadata_size", &[]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("--nr-blocks"), "{}", stderr(&o));
    for args in [
        &["--device-size", "100"][..],
        &["--block-size", "64"],
        &[
            "--nr-blocks",
            "5",
            "--device-size",
            "100",
            "--block-size",
            "64",
        ],
        &["--nr-blocks", "5", "--block-size", "64"],
    ] {
        let o = run("cache_metadata_size", args);
        assert_eq!(code(&o), 2, "{args:?}");
    }
    let o = run(
        "cache_metadata_size",
        &["--device-size", "32", "--block-size", "64"],
    );
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("at least the block size"));
}
