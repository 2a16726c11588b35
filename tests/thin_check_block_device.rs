//! thin_check's in-place writers on a block device (a loop device; root
//! only): --auto-repair and --clear-needs-check-flag must write through
//! the exclusive claim the check itself holds. The kernel tier found
//! --auto-repair failing with EBUSY on a virtio disk: the repair opened
//! the device O_EXCL a second time.

mod common;

use std::process::Command;

use common::{code, run, stderr, Scratch};

/// A loop device over `file`, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &std::path::Path) -> Option<Loop> {
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| Loop(String::from_utf8_lossy(&o.stdout).trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn leaky_image(s: &Scratch, needs_check: bool) -> std::path::PathBuf {
    let img = s.path("meta");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let xml = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshots.xml");
    let p = img.to_str().unwrap();
    assert_eq!(
        code(&run(
            "thin_restore",
            &["-i", xml.to_str().unwrap(), "-o", p]
        )),
        0
    );
    let o = run("thin_generate_damage", &["--kind", "leaked-data-block", p]);
    assert_eq!(code(&o), 0);
    if needs_check {
        use std::os::unix::fs::FileExt;
        let mut sb =
            dmpd::thin::superblock::Superblock::parse(&std::fs::read(&img).unwrap()[..4096]);
        sb.flags |= 1;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&sb.to_block(), 0).unwrap();
    }
    img
}

#[test]
fn in_place_repairs_write_to_a_block_device() {
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root for a loop device");
        return;
    }
    for (flag, needs_check) in [("--auto-repair", false), ("--clear-needs-check-flag", true)] {
        let s = Scratch::new("check-loop");
        let img = leaky_image(&s, needs_check);
        let Some(dev) = Loop::attach(&img) else {
            println!("skipped: losetup could not attach a loop device");
            return;
        };
        let o = run("thin_check", &[flag, &dev.0]);
        assert_eq!(code(&o), 0, "thin_check {flag} {}: {}", dev.0, stderr(&o));
        let o = run("thin_check", &[&dev.0]);
        assert_eq!(code(&o), 0, "after {flag}: {}", stderr(&o));
        drop(dev);
        let sb = dmpd::thin::superblock::Superblock::parse(&std::fs::read(&img).unwrap()[..4096]);
        assert!(!sb.needs_check(), "{flag} left the needs_check flag");
    }
}
