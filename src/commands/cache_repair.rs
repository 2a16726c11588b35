//! cache_repair: salvage damaged dm-cache metadata into a new device or
//! file.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::cache::repair::repair_to;
use crate::cache::restore::blocks_in_use;
use crate::io::input::{check_binary, check_path};
use crate::io::output::{metadata_output, metadata_output_size};
use crate::io::source::{BlockSource, OpenOptions};

/// Repair dm-cache metadata into a new metadata device or file
#[derive(Parser, Debug)]
#[command(name = "cache_repair", disable_version_flag = true)]
pub(crate) struct Cli {
    /// The damaged metadata
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Existing device or file for the repaired metadata (at least 40960 bytes)
    #[arg(short, long, value_name = "FILE", required = true)]
    output: PathBuf,

    /// Print no diagnostics
    #[arg(short, long)]
    quiet: bool,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,

    /// Accepted and ignored (older lvm2 passes an empty argument)
    #[arg(hide = true)]
    ignored: Option<String>,

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
    let bytes = metadata_output_size(out, &[&cli.input])?;
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, false)?;
    let keep = blocks_in_use(out);
    let repaired = repair_to(&src, out, bytes, keep, || {
        Ok(metadata_output(out, &[&cli.input])?.0)
    })?;
    if !cli.quiet {
        for w in &repaired.warnings {
            eprintln!("{w}");
        }
    }
    Ok(())
}
