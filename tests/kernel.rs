//! The kernel tier: Debian's Linux under QEMU writes thin, cache and era
//! metadata for dmpd to read, and reads what dmpd writes. Each scenario
//! boots a throw-away VM (tests/kernel/harness.rs); the tier skips with
//! one printed line when QEMU, busybox, dmsetup or the kernel cannot be
//! had (tests/kernel/setup.sh gets them), or when DMPD_KERNEL=skip.

mod common;
#[path = "kernel/cpio.rs"]
mod cpio;
#[path = "kernel/cuts.rs"]
mod cuts;
#[path = "kernel/harness.rs"]
mod harness;
#[path = "kernel/thin.rs"]
mod thin;

use std::time::Duration;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{code, run, stderr, stdout, Scratch};
use harness::{env, sparse_copy, sparse_file, Outcome, Vm};
use thin::xml_attrs;

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
        .timeout(Duration::from_secs(120))
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

/// Sparse metadata and data disks of the given sizes in MiB.
fn pool_disks(s: &Scratch, meta_mib: u64, data_mib: u64) -> (PathBuf, PathBuf) {
    let (meta, data) = (s.path("meta"), s.path("data"));
    sparse_file(&meta, meta_mib * MIB);
    sparse_file(&data, data_mib * MIB);
    (meta, data)
}

/// The thin devices the workload leaves: dm name and thin id.
const THIN_DEVS: [(&str, u64); 5] = [("t0", 0), ("t1", 1), ("t2", 2), ("t3", 3), ("t5", 5)];

/// Runs the thin workload (tests/kernel/guest/thin_workload.sh) on a fresh
/// 8 MiB metadata and 256 MiB data disk; returns the run and the disks.
fn thin_workload(
    env: &harness::Env,
    s: &Scratch,
    hold: bool,
    seed: u32,
) -> (Outcome, PathBuf, PathBuf) {
    let (meta, data) = pool_disks(s, 8, 256);
    let out = Vm::new(&format!("thin-hold{}", hold as u8), &s.dir)
        .disk("meta", &meta)
        .disk("data", &data)
        .script(&format!("HOLD={} SEED={seed}", hold as u8))
        .script(include_str!("kernel/guest/thin_workload.sh"))
        .run(env);
    println!("thin workload (hold {hold}): {:.1?}", out.elapsed);
    out.assert_ok();
    (out, meta, data)
}

fn ok(o: &std::process::Output, what: &str) {
    assert_eq!(code(o), 0, "{what}:\n{}{}", stdout(o), stderr(o));
}

/// One copy of the workload's pool rewritten by a dmpd writer, for the
/// kernel to activate.
struct Variant {
    /// Prefix of its dm names in the guest.
    name: &'static str,
    meta: PathBuf,
    data: PathBuf,
    /// Whether every device must read exactly as the kernel left it.
    same_data: bool,
    /// thin_ls of the metadata as dmpd wrote it (before the kernel's writes).
    mapped: BTreeMap<u64, u64>,
}

fn variant(
    s: &Scratch,
    name: &'static str,
    meta: &Path,
    data: &Path,
    write: impl FnOnce(&Path, &Path, &Path),
) -> Variant {
    let vmeta = s.path(&format!("{name}.meta"));
    let vdata = s.path(&format!("{name}.data"));
    sparse_file(&vmeta, 8 * MIB);
    sparse_copy(data, &vdata);
    write(meta, &vmeta, &vdata);
    let mapped = thin::ls_mapped(&vmeta, &[]);
    Variant {
        name,
        meta: vmeta,
        data: vdata,
        same_data: true,
        mapped,
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A damaged copy of `meta` (thin_generate_damage KIND).
fn damaged(s: &Scratch, meta: &Path, kind: &str) -> PathBuf {
    let copy = s.path(&format!("damaged-{kind}"));
    std::fs::copy(meta, &copy).unwrap();
    ok(
        &run("thin_generate_damage", &["--kind", kind, p(&copy)]),
        kind,
    );
    copy
}

/// Kernel writes, dmpd reads; then dmpd writes (thin_restore, thin_repair
/// of healthy and damaged copies, thin_check --auto-repair, thin_shrink)
/// and the kernel reads: every device's sha256 as the kernel left it, the
/// kernel's status as dmpd's metadata says, and after the kernel's own
/// writes (provision, snapshot, delete) dmpd's check and status agreement.
#[test]
fn thin_kernel_writes_dmpd_reads_and_back() {
    let Some(env) = env("thin_kernel_writes_dmpd_reads_and_back") else {
        return;
    };
    let s = Scratch::new("kernel-thin");
    let (out, meta, data) = thin_workload(env, &s, true, 1);
    thin::agree(&out, "status", &meta, "pool", &THIN_DEVS);
    out.save_fixture("tmeta_tier_snaps_held", &meta);
    let origin = thin::shas(&out);
    let st = thin::pool_status(&out, "status", "pool");
    let out0 = &out;

    let xml = s.path("pool.xml");
    ok(&run("thin_dump", &[p(&meta), "-o", p(&xml)]), "thin_dump");
    let shrunk_blocks = st.data_used + 100;
    let mut variants = vec![
        variant(&s, "rs", &meta, &data, |_, m, _| {
            ok(
                &run("thin_restore", &["-i", p(&xml), "-o", p(m)]),
                "thin_restore",
            )
        }),
        variant(&s, "rp", &meta, &data, |i, m, _| {
            ok(
                &run("thin_repair", &["-i", p(i), "-o", p(m)]),
                "thin_repair",
            )
        }),
        variant(&s, "rb", &meta, &data, |i, m, _| {
            let d = damaged(&s, i, "bitmap-checksum");
            ok(
                &run("thin_repair", &["-i", p(&d), "-o", p(m)]),
                "thin_repair of bitmap-checksum",
            )
        }),
        variant(&s, "ar", &meta, &data, |i, m, _| {
            let d = damaged(&s, i, "leaked-data-block");
            ok(
                &run("thin_check", &["--auto-repair", p(&d)]),
                "thin_check --auto-repair",
            );
            std::fs::copy(&d, m).unwrap();
        }),
        variant(&s, "sh", &meta, &data, |i, m, d| {
            let n = shrunk_blocks.to_string();
            let o = run(
                "thin_shrink",
                &[
                    "--binary",
                    "-i",
                    p(i),
                    "-o",
                    p(m),
                    "--data",
                    p(d),
                    "--nr-blocks",
                    &n,
                ],
            );
            ok(&o, "thin_shrink");
            std::fs::OpenOptions::new()
                .write(true)
                .open(d)
                .unwrap()
                .set_len(shrunk_blocks * 64 * 1024)
                .unwrap();
        }),
    ];
    let mut lossy = variant(&s, "rn", &meta, &data, |i, m, _| {
        let d = damaged(&s, i, "node-checksum");
        ok(
            &run("thin_repair", &["-i", p(&d), "-o", p(m)]),
            "thin_repair of node-checksum",
        )
    });
    lossy.same_data = false;
    variants.push(lossy);
    for v in &variants {
        thin::check_clean(&v.meta, &[]);
        // Kept for reading after a failure (the kernel writes to v.meta).
        let _ = std::fs::copy(&v.meta, env.work.join(format!("{}.meta", v.name)));
    }
    let _ = std::fs::copy(&meta, env.work.join("thin-hold1.meta"));

    // Two VMs, three pools each; each activates the devices dmpd's
    // metadata holds (a lossy repair may have dropped some).
    let runs: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = variants
            .chunks(3)
            .enumerate()
            .map(|(n, chunk)| {
                let mut vm = Vm::new(&format!("thin-back{n}"), &s.dir).script("SZ=32768");
                for v in chunk {
                    vm = vm
                        .disk(&format!("{}m", v.name), &v.meta)
                        .disk(&format!("{}d", v.name), &v.data);
                    let ids: Vec<String> = v.mapped.keys().map(u64::to_string).collect();
                    vm = vm.script(&format!(
                        "verify_pool {0} $D_{0}m $D_{0}d {1}",
                        v.name,
                        ids.join(" ")
                    ));
                }
                scope.spawn(move || vm.timeout(Duration::from_secs(600)).run(env))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (chunk, out) in variants.chunks(3).zip(&runs) {
        println!("{}: {:.1?}", out.name, out.elapsed);
        out.assert_ok();
        let shas = thin::shas(out);
        for v in chunk {
            let pool = format!("{}-pool", v.name);
            // The kernel's view of dmpd's metadata: mapped blocks per device.
            let kernel: BTreeMap<u64, u64> = v
                .mapped
                .keys()
                .map(|id| {
                    (
                        *id,
                        thin::mapped_sectors(out, "before", &format!("{}-t{id}", v.name)) / 128,
                    )
                })
                .collect();
            assert_eq!(
                kernel, v.mapped,
                "{}: kernel's mapped blocks vs dmpd's",
                v.name
            );
            // Every device must read as the kernel left it; after a lossy
            // repair, those that kept all their mappings.
            for (dev, id) in THIN_DEVS {
                let kept = v.mapped.get(&id).copied()
                    == Some(thin::mapped_sectors(out0, "status", dev) / 128);
                if v.same_data || kept {
                    assert_eq!(
                        shas[&format!("{}-t{id}", v.name)],
                        origin[dev],
                        "{}: thin {id} reads differently",
                        v.name
                    );
                }
            }
            // After the kernel's own writes: checks pass, dmpd agrees.
            // The kernel deleted the last device and made 100 and 101.
            let last = *v.mapped.keys().next_back().unwrap();
            let devs: Vec<(String, u64)> = v
                .mapped
                .keys()
                .filter(|id| **id != last)
                .chain(&[100, 101])
                .map(|id| (format!("{}-t{id}", v.name), *id))
                .collect();
            let devs: Vec<(&str, u64)> = devs.iter().map(|(n, id)| (n.as_str(), *id)).collect();
            thin::agree(out, "after", &v.meta, &pool, &devs);
        }
    }
}

/// Kernel writes: a pool grown while in use (data and metadata, both
/// across a space-map bitmap boundary; the metadata through the kernel's
/// bootstrap-mode extension). dmpd's checkers and listings agree with
/// the kernel's status.
#[test]
fn thin_pool_resized_by_the_kernel() {
    let Some(env) = env("thin_pool_resized_by_the_kernel") else {
        return;
    };
    let s = Scratch::new("kernel-resize");
    let (meta, data) = pool_disks(&s, 80, 1100);
    let out = Vm::new("thin-resize", &s.dir)
        .disk("meta", &meta)
        .disk("data", &data)
        .script(include_str!("kernel/guest/thin_resize.sh"))
        .run(env);
    println!("thin resize: {:.1?}", out.elapsed);
    out.assert_ok();
    let st = thin::pool_status(&out, "status", "pool");
    assert_eq!((st.meta_total, st.data_total), (18432, 17600), "{st:?}");
    thin::agree(&out, "status", &meta, "pool", &[("t0", 0), ("t1", 1)]);
    out.save_fixture("tmeta_tier_resized", &meta);
}

/// Live tools: every dmpd tool refuses the metadata device of an active
/// pool with a clear message; the -m readers read a reserved metadata
/// snapshot of the pool in use.
#[test]
fn thin_live_pool_is_refused_but_snapshot_readable() {
    let Some(env) = env("thin_live_pool_is_refused_but_snapshot_readable") else {
        return;
    };
    let s = Scratch::new("kernel-live");
    let (meta, data) = pool_disks(&s, 8, 128);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let pack = s.path("snap.pack");
    let img = s.path("snap.bin");
    sparse_file(&img, 8 * MIB);
    let xml = fixture.join("snapshots.xml");
    ok(
        &run("thin_restore", &["-i", p(&xml), "-o", p(&img)]),
        "thin_restore",
    );
    ok(
        &run("thin_metadata_pack", &["-i", p(&img), "-o", p(&pack)]),
        "thin_metadata_pack",
    );
    let out = Vm::new("thin-live", &s.dir)
        .disk("meta", &meta)
        .disk("data", &data)
        .file("/data/snap.xml", std::fs::read(&xml).unwrap())
        .file("/data/snap.pack", std::fs::read(&pack).unwrap())
        .script(include_str!("kernel/guest/thin_live.sh"))
        .run(env);
    println!(
        "thin live: {:.1?}\n{}",
        out.elapsed,
        out.values("refused").join("\n")
    );
    out.assert_ok();
    assert_refused(&out, 14);
    assert_eq!(out.values("live-ok").len(), 4);
    // The kernel's pool is intact after all that.
    thin::check_clean(&meta, &[]);
}

/// lvm2 in the loop, with dmpd as its thin_check, thin_repair and
/// thin_dump: activation checks pass on healthy metadata and fail on
/// damaged metadata; lvconvert --repair mends it and the volume reads as
/// written.
#[test]
fn lvm2_runs_dmpd_for_thin_pools() {
    let Some(env) = env("lvm2_runs_dmpd_for_thin_pools") else {
        return;
    };
    if !env.lvm {
        harness::skipped(
            "lvm2_runs_dmpd_for_thin_pools",
            "kernel tier: no lvm on the host (install lvm2)",
        );
        return;
    }
    let s = Scratch::new("kernel-lvm");
    let pv = s.path("pv");
    sparse_file(&pv, 512 * MIB);
    let out = Vm::new("lvm-thin", &s.dir)
        .disk("pv", &pv)
        .script("DAMAGE=bitmap-checksum")
        .script(include_str!("kernel/guest/lvm.sh"))
        .timeout(Duration::from_secs(300))
        .run(env);
    println!(
        "lvm2 thin: {:.1?}\n{}",
        out.elapsed,
        out.values("lvm-log").join("\n")
    );
    out.assert_ok();
    let shas = thin::shas(&out);
    assert_eq!(shas["created"], shas["activated"]);
    assert_eq!(shas["created"], shas["repaired"]);
    assert_eq!(out.values("lvm-refused").len(), 1);
    let log = out.values("lvm-log").join("\n");
    for tool in ["/sbin/thin_check", "/sbin/thin_repair", "/sbin/thin_dump"] {
        assert!(log.contains(tool), "lvm2 did not run {tool}:\n{log}");
    }
}

/// Prints what each writer's cuts found; returns the cuts that saw
/// neither transaction whole.
fn report_cuts(reports: &[cuts::Report]) -> Vec<String> {
    let mut failures = Vec::new();
    for r in reports {
        let count = |v: &str| {
            r.cuts
                .iter()
                .filter(|(_, x, _)| x.as_deref() == Ok(v))
                .count()
        };
        let after = r.cuts.iter().filter(|(_, _, ended)| *ended).count();
        // Past the capture, so every run's log shows what the cuts saw.
        let line = format!(
            "power cuts, {}: write {:.2?}, {} cuts ({} after the writer ended): {} old, {} new\n",
            r.name,
            r.write_time,
            r.cuts.len(),
            after,
            count("old"),
            count("new")
        );
        use std::io::Write;
        let _ = std::io::stderr().write_all(line.as_bytes());
        for (at, v, _) in &r.cuts {
            if let Err(e) = v {
                failures.push(format!("{} cut {at:.3?} into the write: {e}", r.name));
            }
        }
    }
    failures
}

/// Power cuts during dmpd's thin writers: thin_restore over old
/// metadata, thin_repair onto a device holding old metadata, thin_check
/// --auto-repair of leaks and --clear-needs-check-flag, each killed at
/// DMPD_KERNEL_CUTS (default 20) moments spread over its write.
#[test]
fn thin_writers_survive_power_cuts() {
    let Some(env) = env("thin_writers_survive_power_cuts") else {
        return;
    };
    let n: usize = std::env::var("DMPD_KERNEL_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let s = Scratch::new("kernel-cuts");
    let restored = |name: &str, xml: &str| {
        let x = s.path(&format!("{name}.xml"));
        std::fs::write(&x, xml).unwrap();
        let m = s.path(&format!("{name}.meta"));
        sparse_file(&m, 16 * MIB);
        ok(
            &run("thin_restore", &["-i", p(&x), "-o", p(&m)]),
            "thin_restore",
        );
        (x, m)
    };
    // Sized so that the restores take about as long as the in-place
    // writers' check of the same pool (all four run side by side).
    let (_, old) = restored("old", &cuts::pool_xml(1, 8000));
    let (new_xml, new) = restored("new", &cuts::pool_xml(2, 8000));
    let seen = |m: &Path| cuts::seen(m).unwrap();
    // The new state each writer should leave, made on the host.
    let host = |name: &str, from: &Path, args: &[&str]| {
        let c = s.path(&format!("{name}.host"));
        std::fs::copy(from, &c).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.replace("@", p(&c))).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&run(args[0], &args[1..]), name);
        seen(&c)
    };
    let leaky = s.path("leaky.meta");
    std::fs::copy(&old, &leaky).unwrap();
    ok(
        &run(
            "thin_generate_damage",
            &["--kind", "leaked-metadata-block", p(&leaky)],
        ),
        "damage",
    );
    let flagged = s.path("flagged.meta");
    std::fs::copy(&leaky, &flagged).unwrap();
    {
        let mut sb = thin::superblock(&flagged);
        sb.flags |= 1;
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&flagged)
            .unwrap();
        f.write_all_at(&sb.to_block(), 0).unwrap();
    }
    let writers = [
        {
            let host = s.path("restore.host");
            std::fs::copy(&old, &host).unwrap();
            ok(
                &run("thin_restore", &["-i", p(&new_xml), "-o", p(&host)]),
                "thin_restore",
            );
            cuts::Writer::restore_over(cuts::Kind::Thin, &old, &new_xml, &host)
        },
        cuts::Writer {
            kind: cuts::Kind::Thin,
            name: "thin_repair".into(),
            disks: vec![("src".into(), new.clone()), ("meta".into(), old.clone())],
            judged: "meta".into(),
            files: vec![],
            command: "thin_repair -i $D_src -o $D_meta".into(),
            old: seen(&old),
            new: host("repair", &old, &["thin_repair", "-i", p(&new), "-o", "@"]),
        },
        cuts::Writer {
            kind: cuts::Kind::Thin,
            name: "auto_repair".into(),
            disks: vec![("meta".into(), leaky.clone())],
            judged: "meta".into(),
            files: vec![],
            command: "thin_check --auto-repair $D_meta".into(),
            old: seen(&leaky),
            new: host("auto", &leaky, &["thin_check", "--auto-repair", "@"]),
        },
        cuts::Writer {
            kind: cuts::Kind::Thin,
            name: "clear_needs_check".into(),
            disks: vec![("meta".into(), flagged.clone())],
            judged: "meta".into(),
            files: vec![],
            command: "thin_check --clear-needs-check-flag $D_meta".into(),
            old: seen(&flagged),
            new: host(
                "clear",
                &flagged,
                &["thin_check", "--clear-needs-check-flag", "@"],
            ),
        },
    ];
    for w in &writers {
        assert_ne!(w.old, w.new, "{}: nothing to write", w.name);
    }
    let failures = report_cuts(&cuts::power_cuts(env, &s.dir, &writers, n, 0x5eed));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The guest's `@@refused TOOL MESSAGE` lines: `n` of them, each saying
/// the device is in use.
fn assert_refused(out: &Outcome, n: usize) {
    let refused = out.values("refused");
    assert_eq!(refused.len(), n, "{refused:?}");
    for r in &refused {
        assert!(
            r.contains("busy") || r.contains("in use"),
            "refusal does not say the device is in use: {r}"
        );
    }
}

/// Whether this build has `tool` (the cache and era tools land from
/// other branches); prints one line naming the scenario skipped if not.
fn have_tools(scenario: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| dmpd::commands::find(t).is_none())
        .collect();
    if !missing.is_empty() {
        harness::skipped(
            scenario,
            &format!("kernel tier: this build has no {}", missing.join(", ")),
        );
    }
    missing.is_empty()
}

/// Kernel writes dm-cache metadata (v1 and v2, writeback, blocks still
/// dirty at shutdown); cache_check passes and cache_dump's mappings and
/// dirty flags agree with the kernel's status. Then dmpd writes
/// (cache_restore of the dump, cache_repair) and the kernel activates
/// each copy with the same residency and dirty count.
#[test]
fn cache_kernel_writes_dmpd_reads_and_back() {
    let Some(env) = env("cache_kernel_writes_dmpd_reads_and_back") else {
        return;
    };
    let tools = ["cache_check", "cache_dump", "cache_restore", "cache_repair"];
    if !have_tools("cache_kernel_writes_dmpd_reads_and_back", &tools) {
        return;
    }
    for meta2 in [0, 1] {
        let s = Scratch::new("kernel-cache");
        let (meta, cache, origin) = (s.path("meta"), s.path("cache"), s.path("origin"));
        sparse_file(&meta, 8 * MIB);
        sparse_file(&cache, 128 * MIB);
        sparse_file(&origin, 256 * MIB);
        let out = Vm::new(&format!("cache-v{}", meta2 + 1), &s.dir)
            .disk("meta", &meta)
            .disk("cache", &cache)
            .disk("origin", &origin)
            .script(&format!("META2={meta2} SEED={}", meta2 + 1))
            .script(include_str!("kernel/guest/cache_workload.sh"))
            .run(env);
        println!("cache v{}: {:.1?}", meta2 + 1, out.elapsed);
        out.assert_ok();
        // cache_check, cache_dump, cache_repair, and cache_writeback once
        // the build has it.
        let writeback = dmpd::commands::find("cache_writeback").is_some();
        assert_refused(&out, 3 + writeback as usize);
        let w = thin::status_words(&out, "status", "cache", "cache");
        let used: u64 = w[3].split('/').next().unwrap().parse().unwrap();
        let dirty: u64 = w[10].parse().unwrap();
        ok(&run("cache_check", &[p(&meta)]), "cache_check");
        let dump = run("cache_dump", &[p(&meta)]);
        ok(&dump, "cache_dump");
        let xml = stdout(&dump);
        let dirty_flags = xml_attrs(&xml, "mapping", "dirty");
        assert_eq!(
            dirty_flags.len() as u64,
            used,
            "mappings vs the kernel's residency"
        );
        let dumped_dirty = dirty_flags.iter().filter(|d| *d == "true").count() as u64;
        assert_eq!(
            dumped_dirty, dirty,
            "dirty mappings vs the kernel's dirty count"
        );
        out.save_fixture(&format!("cmeta_tier_v{}", meta2 + 1), &meta);
        let written = thin::shas(&out)["cache"].clone();

        // dmpd writes, the kernel reads.
        let x = s.path("cache.xml");
        std::fs::write(&x, &xml).unwrap();
        let restored = s.path("restored");
        sparse_file(&restored, 8 * MIB);
        ok(
            &run("cache_restore", &["-i", p(&x), "-o", p(&restored)]),
            "cache_restore",
        );
        let repaired = s.path("repaired");
        sparse_file(&repaired, 8 * MIB);
        ok(
            &run("cache_repair", &["-i", p(&meta), "-o", p(&repaired)]),
            "cache_repair",
        );
        for (name, m) in [("restored", &restored), ("repaired", &repaired)] {
            let feat = if meta2 == 1 {
                "2 writeback metadata2"
            } else {
                "1 writeback"
            };
            let out = Vm::new(&format!("cache-v{}-{name}", meta2 + 1), &s.dir)
                .disk("meta", m)
                .disk("cache", &cache)
                .disk("origin", &origin)
                .script(&format!(
                    "run dmsetup create cache --table \"0 $(sectors $D_origin) cache $D_meta $D_cache $D_origin 64 {feat} smq 2 migration_threshold 0\"\n\
                     say before \"$(dmsetup status cache)\"\nsha cache /dev/mapper/cache\nremove cache"
                ))
                .run(env);
            out.assert_ok();
            let st = out.values("before").join(" ");
            let w: Vec<&str> = st.split_whitespace().collect();
            assert_eq!(
                w[6].split('/').next().unwrap().parse::<u64>().unwrap(),
                used,
                "{name}: {st}"
            );
            assert_eq!(w[13].parse::<u64>().unwrap(), dirty, "{name}: {st}");
            assert_eq!(
                thin::shas(&out)["cache"],
                written,
                "{name}: the cache reads differently"
            );
            ok(&run("cache_check", &[p(m)]), "cache_check after the kernel");
        }
    }
}

/// Kernel writes dm-era metadata: checkpoints and a held metadata
/// snapshot; era_check passes and era_dump's current era agrees with the
/// kernel's status. era_restore's copy is activated by the kernel.
#[test]
fn era_kernel_writes_dmpd_reads_and_back() {
    let Some(env) = env("era_kernel_writes_dmpd_reads_and_back") else {
        return;
    };
    if !have_tools(
        "era_kernel_writes_dmpd_reads_and_back",
        &["era_check", "era_dump", "era_restore"],
    ) {
        return;
    }
    let s = Scratch::new("kernel-era");
    let (meta, origin) = (s.path("meta"), s.path("origin"));
    sparse_file(&meta, 8 * MIB);
    sparse_file(&origin, 128 * MIB);
    let out = Vm::new("era", &s.dir)
        .disk("meta", &meta)
        .disk("origin", &origin)
        .script("NERAS=5 HOLD=1 SEED=1")
        .script(include_str!("kernel/guest/era_workload.sh"))
        .run(env);
    println!("era: {:.1?}", out.elapsed);
    out.assert_ok();
    assert_refused(&out, 3);
    let w = thin::status_words(&out, "status", "era", "era");
    let era = w[2].clone();
    ok(&run("era_check", &[p(&meta)]), "era_check");
    let dump = run("era_dump", &[p(&meta)]);
    ok(&dump, "era_dump");
    let xml = stdout(&dump);
    assert_eq!(
        xml_attrs(&xml, "superblock", "current_era"),
        vec![era.clone()]
    );
    out.save_fixture("emeta_tier_snap_held", &meta);
    let x = s.path("era.xml");
    std::fs::write(&x, &xml).unwrap();
    let restored = s.path("restored");
    sparse_file(&restored, 8 * MIB);
    ok(
        &run("era_restore", &["-i", p(&x), "-o", p(&restored)]),
        "era_restore",
    );
    let out = Vm::new("era-restored", &s.dir)
        .disk("meta", &restored)
        .disk("origin", &origin)
        .script("run dmsetup create era --table \"0 $(sectors $D_origin) era $D_meta $D_origin 128\"\nstatus_all\nremove era")
        .run(env);
    out.assert_ok();
    let w = thin::status_words(&out, "status", "era", "era");
    // Every resume is a rollover: the kernel opens the era after the one
    // era_restore wrote.
    let next = (era.parse::<u64>().unwrap() + 1).to_string();
    assert_eq!(w[2], next, "the kernel's era on era_restore's metadata");
    ok(
        &run("era_check", &[p(&restored)]),
        "era_check after the kernel",
    );
}

/// thin_migrate copies a read-only thin device of a live pool (with a
/// reserved metadata snapshot) to a file that reads as the device.
#[test]
fn thin_migrate_copies_a_live_thin_device() {
    let Some(env) = env("thin_migrate_copies_a_live_thin_device") else {
        return;
    };
    if !have_tools("thin_migrate_copies_a_live_thin_device", &["thin_migrate"]) {
        return;
    }
    let s = Scratch::new("kernel-migrate");
    let (meta, data) = pool_disks(&s, 8, 128);
    let out = Vm::new("thin-migrate", &s.dir)
        .disk("meta", &meta)
        .disk("data", &data)
        .script(include_str!("kernel/guest/thin_migrate.sh"))
        .run(env);
    out.assert_ok();
    let shas = thin::shas(&out);
    assert_eq!(shas["copy"], shas["device"]);
    assert_eq!(
        shas["short_copy"], shas["short_device"],
        "a device ending inside a pool block"
    );
    assert_eq!(out.values("short_bytes"), ["16748544"], "its copy's length");
    // --delta-id 1 brought the copy of snapshot 1 up to date, writing
    // exactly the blocks changed since.
    assert_eq!(shas["copy2"], shas["device2"], "--delta-id");
    let written = out.values("delta_bytes");
    assert_eq!(written.len(), 1, "delta_bytes");
    assert_eq!(
        written,
        out.values("delta_expected"),
        "bytes a delta into an empty file wrote"
    );
    // Refused: a writable source, a pool without a metadata snapshot, a
    // device that is not a thin device.
    let refused = out.values("refused").join("\n");
    for words in [
        "writable '/dev/mapper/t0' is not read-only",
        "nosnap no current metadata snap",
        "notthin '/dev/mapper/pool' has an unexpected table type",
    ] {
        assert!(refused.contains(words), "{words:?} in:\n{refused}");
    }
}

/// cache_writeback of a cache the kernel left dirty: the origin alone
/// then reads as the cache did, and the kernel finds nothing dirty.
#[test]
fn cache_writeback_of_a_dirty_cache() {
    let Some(env) = env("cache_writeback_of_a_dirty_cache") else {
        return;
    };
    if !have_tools("cache_writeback_of_a_dirty_cache", &["cache_writeback"]) {
        return;
    }
    let s = Scratch::new("kernel-writeback");
    let (meta, cache, origin) = (s.path("meta"), s.path("cache"), s.path("origin"));
    sparse_file(&meta, 8 * MIB);
    sparse_file(&cache, 128 * MIB);
    sparse_file(&origin, 256 * MIB);
    let out = Vm::new("cache-writeback", &s.dir)
        .disk("meta", &meta)
        .disk("cache", &cache)
        .disk("origin", &origin)
        .script("META2=1 SEED=3")
        .script(include_str!("kernel/guest/cache_workload.sh"))
        .script(include_str!("kernel/guest/cache_writeback.sh"))
        .run(env);
    out.assert_ok();
    let shas = thin::shas(&out);
    assert_eq!(
        shas["origin"], shas["cache"],
        "the origin after cache_writeback"
    );
    let after = out.values("after").join(" ");
    let w: Vec<&str> = after.split_whitespace().collect();
    assert_eq!(
        w.get(13),
        Some(&"0"),
        "dirty blocks after cache_writeback: {after}"
    );
}

/// Power cuts during the cache and era writers: cache_restore and
/// era_restore over old metadata, cache_writeback's metadata update.
#[test]
fn cache_era_writers_survive_power_cuts() {
    let Some(env) = env("cache_era_writers_survive_power_cuts") else {
        return;
    };
    let tools = ["cache_check", "cache_dump", "cache_restore"];
    let era_tools = ["era_check", "era_dump", "era_restore"];
    let cache_ok = have_tools("cache power cuts", &tools);
    let writeback_ok = cache_ok && have_tools("cache_writeback power cuts", &["cache_writeback"]);
    let era_ok = have_tools("era power cuts", &era_tools);
    let n: usize = std::env::var("DMPD_KERNEL_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let s = Scratch::new("kernel-cuts-ce");
    let restored = |kind: cuts::Kind, name: &str, xml: &str| {
        let x = s.path(&format!("{name}.xml"));
        std::fs::write(&x, xml).unwrap();
        let m = s.path(&format!("{name}.meta"));
        sparse_file(&m, 8 * MIB);
        let tool = if kind == cuts::Kind::Cache {
            "cache_restore"
        } else {
            "era_restore"
        };
        ok(&run(tool, &["-i", p(&x), "-o", p(&m)]), tool);
        (x, m)
    };
    let mut writers = Vec::new();
    if cache_ok {
        let (_, old) = restored(cuts::Kind::Cache, "cold", &cuts::cache_xml(1, 4096, 3000));
        let (x, _) = restored(cuts::Kind::Cache, "cnew", &cuts::cache_xml(2, 4096, 3000));
        let host = s.path("chost");
        std::fs::copy(&old, &host).unwrap();
        ok(
            &run("cache_restore", &["-i", p(&x), "-o", p(&host)]),
            "cache_restore",
        );
        writers.push(cuts::Writer::restore_over(
            cuts::Kind::Cache,
            &old,
            &x,
            &host,
        ));
    }
    if writeback_ok {
        let old = s.path("cold.meta");
        // cache_writeback: the dirty blocks of `old` to an origin, then
        // their dirty flags cleared in the metadata.
        let fast = s.path("fast");
        let origin = s.path("origin");
        sparse_file(&fast, 4096 * 32 * 1024);
        sparse_file(&origin, 2 * 4096 * 32 * 1024);
        let wb = s.path("wbhost");
        std::fs::copy(&old, &wb).unwrap();
        let o = run(
            "cache_writeback",
            &[
                "--metadata-device",
                p(&wb),
                "--origin-device",
                p(&origin),
                "--fast-device",
                p(&fast),
            ],
        );
        ok(&o, "cache_writeback");
        writers.push(cuts::Writer {
            kind: cuts::Kind::Cache,
            name: "cache_writeback".into(),
            disks: vec![
                ("meta".into(), old.clone()),
                ("fast".into(), fast.clone()),
                ("origin".into(), origin.clone()),
            ],
            judged: "meta".into(),
            files: vec![],
            command: "cache_writeback --metadata-device $D_meta --origin-device $D_origin --fast-device $D_fast".into(),
            old: cuts::seen_as(cuts::Kind::Cache, &old).unwrap(),
            new: cuts::seen_as(cuts::Kind::Cache, &wb).unwrap(),
        });
    }
    if era_ok {
        let (_, old) = restored(cuts::Kind::Era, "eold", &cuts::era_xml(1, 60000, 9));
        let (x, _) = restored(cuts::Kind::Era, "enew", &cuts::era_xml(2, 60000, 12));
        let host = s.path("ehost");
        std::fs::copy(&old, &host).unwrap();
        ok(
            &run("era_restore", &["-i", p(&x), "-o", p(&host)]),
            "era_restore",
        );
        writers.push(cuts::Writer::restore_over(cuts::Kind::Era, &old, &x, &host));
    }
    if writers.is_empty() {
        return;
    }
    let failures = report_cuts(&cuts::power_cuts(env, &s.dir, &writers, n, 0xcafe));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// lvm2 with a cached LV, with dmpd as its cache_check and
/// cache_repair: activation checks pass on healthy metadata and fail on
/// damaged metadata; lvconvert --repair mends it and the LV reads as
/// written.
#[test]
fn lvm2_runs_dmpd_for_caches() {
    let Some(env) = env("lvm2_runs_dmpd_for_caches") else {
        return;
    };
    if !env.lvm {
        harness::skipped(
            "lvm2_runs_dmpd_for_caches",
            "kernel tier: no lvm on the host",
        );
        return;
    }
    if !have_tools(
        "lvm2_runs_dmpd_for_caches",
        &["cache_check", "cache_repair", "cache_dump"],
    ) {
        return;
    }
    let s = Scratch::new("kernel-lvm-cache");
    let pv = s.path("pv");
    sparse_file(&pv, 512 * MIB);
    let out = Vm::new("lvm-cache", &s.dir)
        .disk("pv", &pv)
        .script("DAMAGE=100")
        .script(include_str!("kernel/guest/lvm_cache.sh"))
        .timeout(Duration::from_secs(400))
        .run(env);
    println!(
        "lvm2 cache: {:.1?}\n{}",
        out.elapsed,
        out.values("lvm-log").join("\n")
    );
    out.assert_ok();
    let shas = thin::shas(&out);
    assert_eq!(shas["created"], shas["activated"]);
    assert_eq!(shas["created"], shas["repaired"]);
    assert_eq!(out.values("lvm-refused").len(), 1);
    let log = out.values("lvm-log").join("\n");
    for tool in ["/sbin/cache_check", "/sbin/cache_repair"] {
        assert!(log.contains(tool), "lvm2 did not run {tool}:\n{log}");
    }
}
