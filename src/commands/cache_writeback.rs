//! cache_writeback: copy a cache's dirty blocks from the fast device to
//! the origin, offline, and mark them clean.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, Parser};

use crate::cache::check::{check, CheckOptions};
use crate::cache::read::{CacheMetadata, ReadOptions};
use crate::cache::writeback::copy::{copy_blocks, CopyOptions, FileDevice, Geometry, IO_ALIGN};
use crate::cache::writeback::{fault, select, update};
use crate::io::input::{check_binary, check_path};
use crate::io::output::check_distinct;
use crate::io::sink::FileSink;
use crate::io::source::{BlockSource, OpenOptions};
use crate::report::Reporter;

/// Exit status when the metadata fails the check that precedes the copy.
const EXIT_CHECK_FAILED: i32 = 65;

/// Write a cache's dirty blocks back to the origin device, offline
#[derive(Parser, Debug)]
#[command(name = "cache_writeback", disable_version_flag = true)]
pub(crate) struct Cli {
    /// The cache's metadata device or file (its dirty blocks are marked
    /// clean afterwards)
    #[arg(long, value_name = "FILE", required = true)]
    metadata_device: PathBuf,

    /// The origin (slow) device the dirty blocks are written to
    #[arg(long, value_name = "FILE", required = true)]
    origin_device: PathBuf,

    /// The fast (cache) device the dirty blocks are read from
    #[arg(long, value_name = "FILE", required = true)]
    fast_device: PathBuf,

    /// Where the data starts on the origin device, in 512-byte sectors
    /// (a multiple of 8)
    #[arg(long, value_name = "SECTORS", default_value_t = 0)]
    origin_device_offset: u64,

    /// Where the data starts on the fast device, in 512-byte sectors (a
    /// multiple of 8)
    #[arg(long, value_name = "SECTORS", default_value_t = 0)]
    fast_device_offset: u64,

    /// Copy buffer, in MiB (at least one cache block is used)
    #[arg(long, value_name = "MB", default_value_t = 64)]
    buffer_size_meg: u64,

    /// Extra tries for a block whose read or write failed
    #[arg(long, value_name = "CNT", default_value_t = 0)]
    retry_count: u32,

    /// Leave the metadata as it is: the blocks stay dirty
    #[arg(long)]
    no_metadata_update: bool,

    /// List the cache and origin block of every block not written back
    #[arg(long)]
    list_failed_blocks: bool,

    /// Print nothing
    #[arg(short, long)]
    quiet: bool,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,

    #[arg(long, hide = true, value_name = "ENGINE")]
    io_engine: Option<String>,
}

pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match super::parse::<Cli>(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let quiet = cli.quiet;
    match run_cli(cli) {
        Ok(Some(code)) => code,
        Ok(None) => 0,
        Err(e) => super::finish(Err(e), quiet),
    }
}

/// Ok(Some(code)) when the embedded check failed.
fn run_cli(cli: Cli) -> Result<Option<i32>> {
    if let Some(engine) = &cli.io_engine {
        if engine != "sync" && engine != "spindle" && engine != "async" {
            bail!("unknown io engine type '{engine}'");
        }
    }
    check_path(&cli.metadata_device)?;
    check_path(&cli.origin_device)?;
    check_path(&cli.fast_device)?;
    // The origin and the metadata are written: neither may be, or
    // overlap, another of the three.
    check_distinct(
        &cli.origin_device,
        &[&cli.fast_device, &cli.metadata_device],
    )?;
    check_distinct(&cli.metadata_device, &[&cli.fast_device])?;

    let rep = Reporter::new(cli.quiet);
    let src = BlockSource::open(&cli.metadata_device, OpenOptions { exclusive: true })?;
    check_binary(&src, true)?;
    if src.is_decompressed() {
        bail!("cannot write back from a compressed metadata image");
    }
    // Unlike the reference, non-fatal findings (leaked blocks, a hint
    // array of another length) do not stop the writeback: they endanger
    // no data, and the new transaction's space map drops the leaks.
    let mut result = check(&src, &CheckOptions::default(), &rep);
    if !result.passed(true) {
        rep.line(
            result
                .aborted
                .as_deref()
                .unwrap_or("the metadata check found problems"),
        );
        rep.line(
            "Nothing was copied: run cache_check for the details, and cache_repair if it \
             reports damage.",
        );
        return Ok(Some(EXIT_CHECK_FAILED));
    }

    let sector = 512u64;
    for (name, sectors) in [
        ("--origin-device-offset", cli.origin_device_offset),
        ("--fast-device-offset", cli.fast_device_offset),
    ] {
        if !sectors
            .saturating_mul(sector)
            .is_multiple_of(IO_ALIGN as u64)
        {
            bail!(
                "{name} {sectors} is not page aligned: the offsets must be multiples of {} sectors",
                IO_ALIGN as u64 / sector
            );
        }
    }
    let md = CacheMetadata::read(
        &src,
        &ReadOptions {
            hints: false,
            discards: false,
        },
    )
    .map_err(|e| anyhow!("{e}"))?;
    let block_bytes = md.sb.data_block_size as u64 * sector;
    if block_bytes == 0 || !block_bytes.is_multiple_of(IO_ALIGN as u64) {
        bail!(
            "the cache block size of {} sectors is not a multiple of {} sectors",
            md.sb.data_block_size,
            IO_ALIGN as u64 / sector
        );
    }
    let jobs = select(&md).context("metadata corruption found; nothing was copied")?;
    drop(md);
    let selected = jobs.len() as u64;

    let fast = fault::wrap(FileDevice::open(&cli.fast_device, false)?, "fast")?;
    let origin = fault::wrap(FileDevice::open(&cli.origin_device, true)?, "origin")?;
    let geo = Geometry {
        block_bytes,
        fast_offset: cli.fast_device_offset * sector,
        origin_offset: cli.origin_device_offset * sector,
    };
    let opts = CopyOptions {
        buffer_bytes: cli.buffer_size_meg.saturating_mul(1 << 20),
        retry_count: cli.retry_count,
    };
    rep.line("Copying cache blocks");
    let progress = rep.start_progress("Copying cache blocks", selected);
    let outcome = copy_blocks(&*fast, &*origin, jobs, geo, opts, &progress);
    rep.finish_progress();
    drop(fast);
    drop(origin);

    let copied = outcome.copied.len() as u64;
    rep.fact(&format!("{copied}/{selected} blocks copied successfully."));
    if cli.list_failed_blocks && !cli.quiet {
        for f in &outcome.failed {
            println!("failed: {f}");
        }
    }
    if let Some(e) = &outcome.flush_error {
        bail!("{e}; the metadata was not updated");
    }
    let failed = outcome.failed.len();
    if failed > 0 {
        rep.line(&format!(
            "{failed} block(s) could not be written back and stay dirty{}",
            if cli.list_failed_blocks {
                ""
            } else {
                " (--list-failed-blocks lists them)"
            }
        ));
    }

    if !cli.no_metadata_update && copied > 0 {
        rep.line("Updating metadata");
        let counts = result
            .counts
            .take()
            .context("the metadata's reference counts were not computed")?;
        let keep = update::in_use(&counts.metadata_refs);
        drop(counts);
        // `src` holds the device exclusively until the update is done.
        let mut sink = FileSink::open_held(&cli.metadata_device)?;
        update::mark_clean(&src, keep, &outcome.copied, &mut sink).context(
            "marking the written-back blocks clean failed; the metadata was left as it was \
             (they stay dirty, which is safe: they are written back again)",
        )?;
    }
    if failed > 0 {
        bail!("incomplete writeback: {failed} of {selected} block(s) were not written back");
    }
    Ok(None)
}
