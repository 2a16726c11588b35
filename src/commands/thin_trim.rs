//! thin_trim: discard the data blocks an inactive pool does not use.

use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};

use crate::io::discard::discard;
use crate::io::input::{check_binary, check_path};
use crate::io::source::{block_device_size, BlockSource, OpenOptions};
use crate::report::Reporter;
use crate::thin::check::{check, CheckOptions};
use crate::thin::superblock::Superblock;
use crate::thin::trim::free_data_runs;

/// Exit status when the metadata fails the check that precedes trimming.
const EXIT_CHECK_FAILED: i32 = 65;

/// Discard the unused blocks of an inactive pool's data device
#[derive(Parser, Debug)]
#[command(name = "thin_trim", disable_version_flag = true)]
pub(crate) struct Cli {
    /// The pool's data device (a regular file gets holes punched instead)
    #[arg(long, value_name = "FILE", required = true)]
    data_dev: PathBuf,

    /// The pool's metadata device or file
    #[arg(long, value_name = "FILE", required = true)]
    metadata_dev: PathBuf,

    /// Confirm that the pool is not active (devices are opened
    /// exclusively in any case)
    #[arg(long)]
    pool_inactive: bool,

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
    check_path(&cli.metadata_dev)?;
    check_path(&cli.data_dev)?;
    crate::io::output::check_distinct(&cli.data_dev, &[&cli.metadata_dev])?;
    let src = BlockSource::open(&cli.metadata_dev, OpenOptions { exclusive: true })?;
    check_binary(&src, false)?;

    let rep = Reporter::new(cli.quiet);
    let result = check(&src, &CheckOptions::default(), &rep);
    if !result.passed(false) {
        rep.line(
            result
                .aborted
                .as_deref()
                .unwrap_or("the metadata check found problems"),
        );
        rep.line("Nothing was discarded: run thin_check for the details, and thin_repair if it reports damage.");
        return Ok(Some(EXIT_CHECK_FAILED));
    }
    let sb = Superblock::read(&src, 0)
        .map_err(|e| anyhow::anyhow!("{}", crate::thin::superblock::bad_superblock(&src, &e)))?;
    let runs = free_data_runs(&src, &sb)?;

    let block_bytes = sb.data_block_size as u64 * 512;
    let wanted = sb.data_sm_root.nr_blocks * block_bytes;
    let is_block_device = std::fs::metadata(&cli.data_dev)?
        .file_type()
        .is_block_device();
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if is_block_device {
        open.custom_flags(libc::O_EXCL);
    }
    let data = open
        .open(&cli.data_dev)
        .with_context(|| format!("cannot open data device '{}'", cli.data_dev.display()))?;
    let size = if is_block_device {
        block_device_size(&data)?
    } else {
        data.metadata()?.len()
    };
    if size < wanted {
        bail!(
            "data device '{}' holds {size} bytes, but the pool's {} data blocks of {} sectors need {wanted}",
            cli.data_dev.display(),
            sb.data_sm_root.nr_blocks,
            sb.data_block_size
        );
    }
    // Discards of a large device can take a while: a bar over the blocks.
    let free: u64 = runs.iter().map(|(begin, end)| end - begin).sum();
    let progress = rep.start_progress("Discarding unused data blocks", free);
    let discarded = runs.iter().try_for_each(|&(begin, end)| {
        discard(
            &data,
            is_block_device,
            begin * block_bytes,
            (end - begin) * block_bytes,
        )
        .with_context(|| {
            format!(
                "discarding data blocks {begin}..{} of '{}'",
                end - 1,
                cli.data_dev.display()
            )
        })?;
        progress.inc(end - begin);
        anyhow::Ok(())
    });
    // The bar goes before any error is printed.
    rep.finish_progress();
    discarded?;
    data.sync_all()?;
    Ok(None)
}
