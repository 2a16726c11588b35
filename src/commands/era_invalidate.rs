//! era_invalidate: list the origin blocks written since an era.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::era::invalidate::{write_blocks, written_since};
use crate::era::read::Side;
use crate::io::input::{check_binary, check_path};
use crate::io::output::write_text;
use crate::io::source::{BlockSource, OpenOptions};

/// List the blocks of a dm-era origin that may have been written since an era
#[derive(Parser, Debug)]
#[command(name = "era_invalidate", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Read the metadata snapshot (the device may be live)
    #[arg(long)]
    metadata_snapshot: bool,

    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// List the blocks written in this era or later
    #[arg(long, value_name = "ERA", required = true)]
    written_since: u32,

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
    super::finish(run_cli(cli), false)
}

fn run_cli(cli: Cli) -> Result<()> {
    super::era_check::io_engine(&cli.io_engine)?;
    check_path(&cli.input)?;
    let src = BlockSource::open(
        &cli.input,
        OpenOptions {
            exclusive: !cli.metadata_snapshot,
        },
    )?;
    check_binary(&src, false)?;
    let side = if cli.metadata_snapshot {
        Side::Snapshot
    } else {
        Side::Live
    };
    let runs = written_since(&src, side, cli.written_since)?;
    write_text(cli.output.as_deref(), &[&cli.input], |out| {
        write_blocks(&runs, out)
    })
}
