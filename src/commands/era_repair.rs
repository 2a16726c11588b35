//! era_repair: salvage damaged dm-era metadata into a new device or file.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::era::repair::salvage;
use crate::era::restore::{build, room};
use crate::io::input::{check_binary, check_path};
use crate::io::output::{metadata_output, metadata_output_size};
use crate::io::source::{BlockSource, OpenOptions};

/// Salvage damaged dm-era metadata into a new device or file
#[derive(Parser, Debug)]
#[command(name = "era_repair", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Damaged metadata device or file (may be gzip-compressed)
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Existing metadata device or file to write (at least 40960 bytes)
    #[arg(short, long, value_name = "FILE", required = true)]
    output: PathBuf,

    /// Print no diagnostics
    #[arg(short, long)]
    quiet: bool,

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
    super::era_check::io_engine(&cli.io_engine)?;
    check_path(&cli.input)?;
    let bytes = metadata_output_size(&cli.output, &[&cli.input])?;
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, false)?;
    let s = salvage(&src)?;
    if !cli.quiet {
        for w in &s.warnings {
            eprintln!("{w}");
        }
    }
    let usable = room(&s.model, &format!("'{}'", cli.output.display()), bytes)?;
    let (mut sink, _) = metadata_output(&cli.output, &[&cli.input])?;
    build(&s.model, &mut sink, usable, None)?;
    Ok(())
}
