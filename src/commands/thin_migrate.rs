//! thin_migrate: copy a thin volume's contents out of its pool, either
//! from a live pool (a read-only dm thin device, through the pool's
//! metadata snapshot) or from the metadata and data devices of a pool
//! that is not active (or will not activate).

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};

use crate::io::copy::{copy_extents, CopyJob, End, Extent};
use crate::io::discard;
use crate::io::dm;
use crate::io::input::{check_binary, check_path};
use crate::io::output::{check_distinct, text_output};
use crate::io::source::{block_device_size, drop_cached_pages, BlockSource, OpenOptions};
use crate::report::Reporter;
use crate::thin::migrate::{
    delta, extents_from_data, extents_in_place, gaps, mapped_end, mappings, restrict,
    salvaged_mappings,
};
use crate::thin::repair::RepairOptions;
use crate::thin::rmap::Run;
use crate::thin::superblock::live_and_chosen;

/// Copy buffer size when none is given.
const DEFAULT_BUFFER_MEG: u64 = 64;

/// Copy a thin volume's provisioned blocks to a device or file
#[derive(Parser, Debug)]
#[command(name = "thin_migrate", disable_version_flag = true)]
pub(crate) struct Cli {
    /// The read-only device-mapper thin device to copy (live pool; its
    /// pool needs a metadata snapshot)
    #[arg(long, value_name = "DEVICE", conflicts_with_all = ["metadata_dev", "data_dev", "thin_id", "metadata_snap", "repair", "size"])]
    source_dev: Option<PathBuf>,

    /// The metadata device or file of a pool that is not active (plain,
    /// gzip or pack)
    #[arg(long, value_name = "FILE", requires_all = ["data_dev", "thin_id"])]
    metadata_dev: Option<PathBuf>,

    /// The pool's data device or image (with --metadata-dev)
    #[arg(long, value_name = "FILE", requires = "metadata_dev")]
    data_dev: Option<PathBuf>,

    /// The thin device to copy (with --metadata-dev)
    #[arg(long, value_name = "THIN_ID", requires = "metadata_dev")]
    thin_id: Option<u64>,

    /// Read the mappings from the metadata snapshot (with --metadata-dev)
    #[arg(short = 'm', long, requires = "metadata_dev")]
    metadata_snap: bool,

    /// Read the mappings through the salvage of damaged metadata (as
    /// thin_repair would keep them; with --metadata-dev)
    #[arg(long, requires = "metadata_dev", conflicts_with_all = ["metadata_snap", "delta_id"])]
    repair: bool,

    /// Size in bytes of the copy (with --metadata-dev; a multiple of 512).
    /// A file otherwise ends after the last mapped block, a device's
    /// whole size is written
    #[arg(long, value_name = "BYTES", requires = "metadata_dev")]
    size: Option<u64>,

    /// Destination block device (opened exclusively; wins over --dest-file)
    #[arg(long, value_name = "DEVICE")]
    dest_dev: Option<PathBuf>,

    /// Destination file (created if missing)
    #[arg(long, value_name = "FILE")]
    dest_file: Option<PathBuf>,

    /// Copy buffer size in MiB (two buffers of half this size are in
    /// use; at least one data block) [default: 64]
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=65536))]
    buffer_size_meg: Option<u64>,

    /// Copy only what differs from thin device THIN_ID: the destination
    /// holds a copy of THIN_ID (an earlier snapshot), and blocks THIN_ID
    /// maps but the source does not are zeroed
    #[arg(long, value_name = "THIN_ID")]
    delta_id: Option<u64>,

    /// Zero the destination's ranges the source does not map (a file
    /// gets holes punched)
    #[arg(long)]
    zero_dest: bool,

    /// Print nothing
    #[arg(short, long)]
    quiet: bool,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,
}

pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match super::parse::<Cli>(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let quiet = cli.quiet;
    super::finish(run_cli(cli), quiet)
}

fn run_cli(cli: Cli) -> Result<()> {
    let rep = Reporter::new(cli.quiet);
    let Some(dest) = cli.dest_dev.clone().or_else(|| cli.dest_file.clone()) else {
        bail!("no destination given: --dest-dev DEVICE or --dest-file FILE");
    };
    let dest_must_be_device = cli.dest_dev.is_some();
    if let Some(source) = &cli.source_dev {
        return live(&cli, source, &dest, dest_must_be_device, &rep);
    }
    match (&cli.metadata_dev, &cli.data_dev, cli.thin_id) {
        (Some(meta), Some(data), Some(id)) => {
            offline(&cli, meta, data, id, &dest, dest_must_be_device, &rep)
        }
        _ => bail!(
            "no source given: --source-dev DEVICE (a read-only thin device of a live pool), or \
             --metadata-dev, --data-dev and --thin-id (a pool that is not active)"
        ),
    }
}

/// Bytes per read buffer: half the option's size, at least a data block.
fn buffer_bytes(cli: &Cli, block_bytes: u64) -> u64 {
    let total = cli.buffer_size_meg.unwrap_or(DEFAULT_BUFFER_MEG) << 20;
    (total / 2).max(block_bytes)
}

/// What a run copies and zeroes.
struct Plan {
    extents: Vec<Extent>,
    /// Virtual block ranges to zero (begin, length).
    zero: Vec<(u64, u64)>,
    block_bytes: u64,
    /// The destination's size in bytes once written.
    end: u64,
}

/// An opened destination.
struct Dest {
    file: File,
    path: PathBuf,
    is_block_device: bool,
    /// A regular file emptied for this copy: it reads as zeros wherever
    /// it is not written.
    fresh: bool,
}

fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Opens a block device destination exclusively, for direct I/O.
fn open_dest_device(path: &Path, inputs: &[&Path]) -> Result<Dest> {
    check_distinct(path, inputs)?;
    let file = File::options()
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("cannot open destination device '{}'", path.display()))?;
    Ok(Dest {
        file,
        path: path.to_path_buf(),
        is_block_device: true,
        fresh: false,
    })
}

/// Opens a regular-file destination: emptied (`fresh`), or kept as it
/// is and created if missing.
fn open_dest_file(path: &Path, inputs: &[&Path], fresh: bool) -> Result<Dest> {
    let file = if fresh {
        text_output(path, inputs)?
    } else {
        check_distinct(path, inputs)?;
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open destination file '{}'", path.display()))?;
        // Compared again by what was opened, as text_output does.
        check_distinct(path, inputs)?;
        file
    };
    // Only an emptied regular file reads as zeros where it is not written
    // (a character device such as /dev/full does not).
    let fresh = fresh && file.metadata().is_ok_and(|m| m.is_file());
    Ok(Dest {
        file,
        path: path.to_path_buf(),
        is_block_device: false,
        fresh,
    })
}

fn dest_device_size(d: &Dest) -> Result<u64> {
    block_device_size(&d.file).with_context(|| format!("cannot size '{}'", d.path.display()))
}

/// Zeroes the plan's ranges (clipped to the destination's end), sizes a
/// file, copies the extents (of the source's first `src_bytes`, none
/// past the plan's end), and makes the result durable.
fn execute(
    plan: &Plan,
    (src, src_bytes): (End, u64),
    dest: &Dest,
    buffer: u64,
    rep: &Reporter,
) -> Result<()> {
    let bb = plan.block_bytes;
    let regular = dest.file.metadata().is_ok_and(|m| m.is_file());
    if regular {
        dest.file
            .set_len(plan.end)
            .with_context(|| format!("cannot size '{}'", dest.path.display()))?;
    }
    for &(begin, len) in &plan.zero {
        let from = begin * bb;
        let to = ((begin + len) * bb).min(plan.end);
        if from < to {
            discard::zero(&dest.file, dest.is_block_device, from, to - from).with_context(
                || {
                    format!(
                        "zeroing blocks {begin}..{} of '{}'",
                        begin + len - 1,
                        dest.path.display()
                    )
                },
            )?;
        }
    }
    let total: u64 = plan.extents.iter().map(|e| e.len).sum();
    let progress = rep.start_progress("Copying mapped blocks", total);
    let job = CopyJob {
        src,
        dst: End {
            file: &dest.file,
            path: &dest.path,
            unit_name: "block",
        },
        block_bytes: bb,
        buffer_bytes: buffer,
        skip_zeros: dest.fresh,
        src_bytes,
        dst_bytes: plan.end,
    };
    let report = copy_extents(&job, &plan.extents, &progress);
    rep.finish_progress();
    if report.failed() {
        for e in &report.errors {
            rep.line(e);
        }
        bail!(
            "{} read error(s) and {} write error(s): {} of the {total} mapped blocks to copy were copied",
            report.read_errors,
            report.write_errors,
            report.copied
        );
    }
    // A character device (a pipe-like destination) has nothing to flush.
    if regular || dest.is_block_device {
        dest.file
            .sync_all()
            .with_context(|| format!("cannot flush '{}'", dest.path.display()))?;
    }
    Ok(())
}

fn offline(
    cli: &Cli,
    meta: &Path,
    data: &Path,
    id: u64,
    dest_path: &Path,
    dest_must_be_device: bool,
    rep: &Reporter,
) -> Result<()> {
    check_path(meta)?;
    check_path(data)?;
    if let Some(s) = cli.size {
        if s % 512 != 0 {
            bail!("--size {s} is not a multiple of 512 bytes");
        }
    }
    let dest_is_device = is_block_device(dest_path);
    if dest_must_be_device && !dest_is_device {
        bail!(
            "'{}' is not a block device (--dest-file writes a file)",
            dest_path.display()
        );
    }
    // Nothing is opened for writing before the destination is known to
    // be none of the inputs.
    check_distinct(dest_path, &[meta, data])?;

    // A live pool's devices are in use: -m reads them shared.
    let exclusive = !cli.metadata_snap;
    let src = BlockSource::open(meta, OpenOptions { exclusive })?;
    check_binary(&src, false)?;
    // The device's mappings, and those to copy (all, or with --delta-id
    // what differs from the other device, with what to zero).
    let (full, block_sectors, delta_plan) = if cli.repair {
        let (runs, header, warnings) = salvaged_mappings(&src, &RepairOptions::default(), id)?;
        for w in &warnings {
            rep.line(w);
        }
        (runs, header.data_block_size, None)
    } else {
        let (live_sb, sb) = live_and_chosen(&src, cli.metadata_snap)?;
        let runs = mappings(&src, &sb, id, live_sb.data_sm_root.nr_blocks)?;
        let d = match cli.delta_id {
            Some(base) => Some(delta(&src, &sb, base, id)?),
            None => None,
        };
        (runs, sb.data_block_size, d)
    };
    let (runs, zero) = match &delta_plan {
        Some(d) => (restrict(&full, &d.copy), d.zero.clone()),
        None => (full.clone(), Vec::new()),
    };
    if block_sectors == 0 {
        bail!("the metadata records a data block size of 0 sectors");
    }
    let bb = block_sectors as u64 * 512;
    let needed = mapped_end(&full) * bb;
    if let Some(s) = cli.size {
        if s < needed {
            bail!(
                "--size {s} ends before device {id}'s last mapped block (its mappings reach byte {needed})"
            );
        }
    }

    let data_is_device = is_block_device(data);
    let mut open = File::options();
    open.read(true);
    if data_is_device && exclusive {
        open.custom_flags(libc::O_EXCL);
    }
    let data_file = open
        .open(data)
        .with_context(|| format!("cannot open data device '{}'", data.display()))?;
    if data_is_device {
        // The kernel writes data past the page cache.
        drop_cached_pages(&data_file);
    }

    let incremental = cli.delta_id.is_some();
    let dest = if dest_is_device {
        open_dest_device(dest_path, &[meta, data])?
    } else {
        open_dest_file(dest_path, &[meta, data], !incremental)?
    };
    let end = if dest.is_block_device {
        let have = dest_device_size(&dest)?;
        let end = cli.size.unwrap_or(have);
        if end > have || needed > have {
            bail!(
                "destination device '{}' holds {have} bytes, but the copy needs {}",
                dest.path.display(),
                end.max(needed)
            );
        }
        end
    } else {
        // An incremental copy ends where a full one would.
        cli.size.unwrap_or(needed)
    };
    // A device (or, with --zero-dest, a file copied into) is zeroed
    // wherever the thin device does not map; a fresh file has holes there.
    let mut zero = zero;
    if (dest.is_block_device && !incremental) || cli.zero_dest {
        zero = gaps(&full, end.div_ceil(bb));
    }
    let plan = Plan {
        extents: extents_from_data(&runs),
        zero,
        block_bytes: bb,
        end,
    };
    let src_end = End {
        file: &data_file,
        path: data,
        unit_name: "data block",
    };
    execute(
        &plan,
        (src_end, u64::MAX),
        &dest,
        buffer_bytes(cli, bb),
        rep,
    )
}

fn live(
    cli: &Cli,
    source: &Path,
    dest_path: &Path,
    dest_must_be_device: bool,
    rep: &Reporter,
) -> Result<()> {
    let meta = std::fs::metadata(source)
        .with_context(|| format!("cannot open source device '{}'", source.display()))?;
    if !meta.file_type().is_block_device() {
        bail!(
            "'{}' is not a block device (the source is a device-mapper thin device)",
            source.display()
        );
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    let table = dm::table(major, minor)
        .with_context(|| format!("'{}' cannot be migrated", source.display()))?;
    let thin = match &table.targets[..] {
        [t] if t.target_type == "thin" => dm::parse_thin(&t.params).with_context(|| {
            format!(
                "'{}': unreadable thin table '{}'",
                source.display(),
                t.params
            )
        })?,
        targets => bail!(
            "'{}' has an unexpected table type: one thin target is needed, it has [{}]",
            source.display(),
            targets
                .iter()
                .map(|t| t.target_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if !table.read_only() {
        bail!(
            "'{}' is not read-only: its contents could change during the copy \
             (make it read-only first, e.g. lvchange --permission r, or a \
             dmsetup table loaded with --readonly)",
            source.display()
        );
    }
    if let Some(origin) = &thin.external_origin {
        bail!(
            "'{}' has an external origin ({origin}): its unprovisioned blocks are not zeros, \
             so copying its mappings would not copy it",
            source.display()
        );
    }
    let (pmaj, pmin) = thin.pool;
    let pool_table =
        dm::table(pmaj, pmin).with_context(|| format!("the pool {pmaj}:{pmin} of the source"))?;
    let pool = match &pool_table.targets[..] {
        [t] if t.target_type == "thin-pool" => dm::parse_pool(&t.params)
            .with_context(|| format!("pool {pmaj}:{pmin}: unreadable table '{}'", t.params))?,
        targets => bail!(
            "the source's pool {pmaj}:{pmin} has an unexpected table type: one thin-pool \
             target is needed, it has [{}]",
            targets
                .iter()
                .map(|t| t.target_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let meta_path = dm::device_path(pool.metadata.0, pool.metadata.1)?;
    let data_path = dm::device_path(pool.data.0, pool.data.1)?;

    let src = BlockSource::open(&meta_path, OpenOptions { exclusive: false })?;
    check_binary(&src, false)?;
    let (live_sb, sb) = live_and_chosen(&src, true).map_err(|e| {
        anyhow::anyhow!(
            "{e}: the pool's metadata '{}' has no snapshot to read the mappings from \
             (reserve one first: dmsetup message POOL 0 reserve_metadata_snap)",
            meta_path.display()
        )
    })?;
    if sb.data_block_size as u64 != pool.block_sectors || pool.block_sectors == 0 {
        bail!(
            "the pool's table gives a data block size of {} sectors, its metadata snapshot {}",
            pool.block_sectors,
            sb.data_block_size
        );
    }
    let bb = pool.block_sectors * 512;
    let id = thin.dev_id;
    let runs = mappings(&src, &sb, id, live_sb.data_sm_root.nr_blocks)?;

    let source_file = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(source)
        .with_context(|| format!("cannot open source device '{}'", source.display()))?;
    let size = block_device_size(&source_file)?;
    // A device need not end on a block boundary; its last block is
    // copied as far as the device reaches.
    let size_blocks = size.div_ceil(bb);

    let inputs: [&Path; 3] = [source, &meta_path, &data_path];
    let dest = if dest_must_be_device || is_block_device(dest_path) {
        if !is_block_device(dest_path) {
            bail!(
                "'{}' is not a block device (--dest-file writes a file)",
                dest_path.display()
            );
        }
        let d = open_dest_device(dest_path, &inputs)?;
        let have = dest_device_size(&d)?;
        if have != size {
            bail!(
                "destination device '{}' holds {have} bytes, the source '{}' {size}: \
                 they must be the same size",
                d.path.display(),
                source.display()
            );
        }
        d
    } else {
        open_dest_file(dest_path, &inputs, false)?
    };

    // Blocks past the device's end (a device since made smaller) stay.
    let clip = |r: &(u64, u64)| -> Option<(u64, u64)> {
        (r.0 < size_blocks).then(|| (r.0, r.1.min(size_blocks - r.0)))
    };
    let all: Vec<(u64, u64)> = runs.iter().map(|r: &Run| (r.virt, r.len)).collect();
    let (copy, mut zero) = match cli.delta_id {
        Some(base) => {
            let d = delta(&src, &sb, base, id)?;
            (d.copy, d.zero)
        }
        None => (all, Vec::new()),
    };
    if cli.zero_dest {
        zero = gaps(&runs, size.div_ceil(bb));
    }
    let plan = Plan {
        extents: extents_in_place(copy.iter().filter_map(clip)),
        zero,
        block_bytes: bb,
        end: size,
    };
    let src_end = End {
        file: &source_file,
        path: source,
        unit_name: "block",
    };
    execute(&plan, (src_end, size), &dest, buffer_bytes(cli, bb), rep)
}
