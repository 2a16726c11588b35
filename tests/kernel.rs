//! The kernel tier: Debian's Linux under QEMU writes thin, cache and era
//! metadata for dmpd to read, and reads what dmpd writes. Each scenario
//! boots a throw-away VM (tests/kernel/harness.rs); the tier skips with
//! one printed line when QEMU, busybox, dmsetup or the kernel cannot be
//! had (tests/kernel/setup.sh gets them), or when DMPD_KERNEL=skip.

mod common;
#[path = "kernel/cpio.rs"]
mod cpio;
#[path = "kernel/harness.rs"]
mod harness;
#[path = "kernel/thin.rs"]
mod thin;

use std::time::Duration;

use common::Scratch;
use harness::{env, sparse_file, Vm};

const MIB: u64 = 1 << 20;

#[test]
fn boot_loads_the_dm_targets() {
    let Some(env) = env("boot_loads_the_dm_targets") else {
        return;
    };
    let s = Scratch::new("kernel-boot");
    let out = Vm::new("boot", &s.dir)
        .script("dmsetup targets | while read -r t v; do say target $t $v; done")
        .script(&std::env::var("KDBG").unwrap_or_default())
        .timeout(Duration::from_secs(60))
        .run(env);
    println!("boot: {:?}\n{}", out.elapsed, out.log);
    out.assert_ok();
    let targets: Vec<&str> = out.values("target");
    for t in ["thin-pool", "thin", "cache", "era"] {
        assert!(
            targets
                .iter()
                .any(|l| l.split_whitespace().next() == Some(t)),
            "target {t} missing: {targets:?}"
        );
    }
}

#[test]
fn thin_kernel_writes_dmpd_reads() {
    let Some(env) = env("thin_kernel_writes_dmpd_reads") else {
        return;
    };
    let s = Scratch::new("kernel-thin");
    let meta = s.path("meta");
    let data = s.path("data");
    sparse_file(&meta, 8 * MIB);
    sparse_file(&data, 256 * MIB);
    let out = Vm::new("thin", &s.dir)
        .disk("meta", &meta)
        .disk("data", &data)
        .script("HOLD=1 SEED=1")
        .script(include_str!("kernel/guest/thin_workload.sh"))
        .run(env);
    println!("thin workload: {:?}", out.elapsed);
    out.assert_ok();
    let devs = [("t0", 0), ("t1", 1), ("t2", 2), ("t3", 3), ("t5", 5)];
    thin::agree(env, &out, &meta, "pool", &devs);
}
