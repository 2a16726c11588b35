//! era_restore over a device that holds era metadata writes the new
//! transaction beside the old one, which stays whole until the new
//! superblock is written: a power cut leaves the old or the new. Found by
//! the kernel tier's power cuts, where an era_restore cut near its end
//! left no valid metadata (block 0 was invalidated before the write).

mod common;

use common::{code, run, stderr, stdout, Scratch};

fn era_xml(era: u32, first: u32) -> String {
    let mut x = format!(
        "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"4096\" current_era=\"{era}\">\n  <era_array>\n"
    );
    for b in 0..4096u32 {
        x.push_str(&format!(
            "    <era block=\"{b}\" era=\"{}\"/>\n",
            (b + first) % era
        ));
    }
    x.push_str("  </era_array>\n</superblock>\n");
    x
}

fn allocated(img: &[u8]) -> usize {
    dmpd::era::superblock::Superblock::parse(&img[..4096])
        .metadata_sm_root
        .nr_allocated as usize
}

#[test]
fn restoring_over_era_metadata_leaves_its_blocks_until_the_superblock() {
    let s = Scratch::new("era-keep");
    let out = s.path("out.bin");
    std::fs::File::create(&out)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let o = out.to_str().unwrap();
    let x1 = s.path("one.xml");
    std::fs::write(&x1, era_xml(9, 0)).unwrap();
    let r = run("era_restore", &["-i", x1.to_str().unwrap(), "-o", o]);
    assert_eq!(code(&r), 0, "{}", stderr(&r));
    let old = std::fs::read(&out).unwrap();
    let used = allocated(&old);
    assert!(used > 2, "the first transaction uses {used} blocks");

    let x2 = s.path("two.xml");
    std::fs::write(&x2, era_xml(12, 5)).unwrap();
    let r = run("era_restore", &["-i", x2.to_str().unwrap(), "-o", o]);
    assert_eq!(code(&r), 0, "{}", stderr(&r));
    let new = std::fs::read(&out).unwrap();
    for b in 1..used {
        assert!(
            old[b * 4096..(b + 1) * 4096] == new[b * 4096..(b + 1) * 4096],
            "block {b} of the old transaction was overwritten"
        );
    }
    let c = run("era_check", &[o]);
    assert_eq!(code(&c), 0, "{}", stderr(&c));
    let d = run("era_dump", &[o]);
    assert_eq!(code(&d), 0);
    assert!(stdout(&d).contains("current_era=\"12\""), "{}", stdout(&d));
    assert!(stdout(&d).contains("<era block=\"0\" era=\"5\"/>"));
}
