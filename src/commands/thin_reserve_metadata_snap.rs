//! thin_reserve_metadata_snap (developer tool): take a metadata snapshot
//! of offline metadata as the kernel's `reserve_metadata_snap` message
//! does, for building test images.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};

use crate::io::input::{check_binary, check_path};
use crate::io::sink::FileSink;
use crate::io::source::{BlockSource, OpenOptions};
use crate::report::{Mode, Reporter};
use crate::thin::check::{check, CheckOptions};
use crate::thin::leak_repair::reserve_metadata_snap;

/// Take a metadata snapshot of offline thin metadata (developer tool)
#[derive(Parser, Debug)]
#[command(name = "thin_reserve_metadata_snap", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata file or device (must check clean)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,
}

pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match super::parse::<Cli>(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    super::finish(run_cli(cli), false)
}

fn run_cli(cli: Cli) -> Result<()> {
    check_path(&cli.input)?;
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, true)?;
    if src.is_decompressed() {
        bail!("cannot write to a compressed image");
    }
    let mut result = check(
        &src,
        &CheckOptions::default(),
        &Reporter::with_mode(Mode::Quiet),
    );
    if result.has_fatal() {
        bail!("the metadata does not check clean; run thin_check for details");
    }
    let counts = result
        .counts
        .take()
        .context("the space maps were not read")?;
    let mut sink = FileSink::open(&cli.input)?;
    let held = reserve_metadata_snap(&src, &counts, &mut sink)?;
    println!("metadata snapshot held at block {held}");
    Ok(())
}
