//! thin_restore: build binary thin metadata from XML.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{ArgAction, Parser};

use crate::io::input::check_path;
use crate::io::sink::FileSink;
use crate::io::BLOCK_SIZE;
use crate::thin::restore::{build, validate, Overrides};

/// Smallest output accepted: ten metadata blocks.
const MIN_OUTPUT_BYTES: u64 = 10 * BLOCK_SIZE as u64;

/// Build binary thin-pool metadata from XML
#[derive(Parser, Debug)]
#[command(name = "thin_restore", disable_version_flag = true)]
struct Cli {
    /// Data block size to write, in sectors (replaces the XML's)
    #[arg(long, value_name = "SECTORS")]
    data_block_size: Option<u32>,

    /// XML input
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Number of data blocks to write (if larger than the XML's)
    #[arg(long, value_name = "NUM")]
    nr_data_blocks: Option<u64>,

    /// Existing metadata device or file to write (at least 40960 bytes)
    #[arg(short, long, value_name = "FILE", required = true)]
    output: PathBuf,

    /// Print no diagnostics
    #[arg(short, long)]
    quiet: bool,

    /// Transaction id to write (if larger than the XML's)
    #[arg(long, value_name = "NUM")]
    transaction_id: Option<u64>,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,

    #[arg(short = 'v', action = ArgAction::Count, hide = true)]
    verbose: u8,

    #[arg(long, hide = true, value_name = "ENGINE")]
    io_engine: Option<String>,
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
    check_path(&cli.input)?;
    let out = &cli.output;
    let meta = match std::fs::metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("Couldn't find output file '{}'", out.display())
        }
        Err(e) => bail!("{}: {e}", out.display()),
    };
    if !meta.file_type().is_file() && !meta.file_type().is_block_device() {
        bail!("Not a block device or regular file '{}'", out.display());
    }
    let overrides = Overrides {
        transaction_id: cli.transaction_id,
        data_block_size: cli.data_block_size,
        nr_data_blocks: cli.nr_data_blocks,
    };
    // Everything is validated before the output is opened for writing.
    let plan = validate(&cli.input, &overrides)?;
    let mut sink = FileSink::open(out)?;
    let bytes = sink.len()?;
    if bytes < MIN_OUTPUT_BYTES {
        bail!(
            "Output file too small: '{}' holds {bytes} bytes, at least {MIN_OUTPUT_BYTES} are needed",
            out.display()
        );
    }
    let nr_blocks =
        (bytes / BLOCK_SIZE as u64).min(crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS);
    let needed = plan.blocks_needed(nr_blocks);
    if needed > nr_blocks {
        bail!(
            "out of metadata space: '{}' holds {nr_blocks} metadata blocks but this metadata needs {needed} \
             ({} bytes); use a larger output",
            out.display(),
            needed * BLOCK_SIZE as u64
        );
    }
    build(&cli.input, &plan, &overrides, &mut sink, nr_blocks)?;
    Ok(())
}
