//! era_dump: write dm-era metadata as XML.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::era::dump::{dump, DumpOptions};
use crate::io::input::{check_binary, check_path};
use crate::io::output::write_text;
use crate::io::source::{BlockSource, OpenOptions};

/// Dump dm-era metadata as XML
#[derive(Parser, Debug)]
#[command(name = "era_dump", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Fold the writesets into the era array: each block marked in a
    /// writeset gets the newest such era; no writesets are written
    #[arg(long)]
    logical: bool,

    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Salvage what can be read from damaged metadata
    #[arg(short, long)]
    repair: bool,

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
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, false)?;
    let opts = DumpOptions {
        logical: cli.logical,
        repair: cli.repair,
    };
    let write = |out: &mut dyn Write| -> Result<()> {
        for w in dump(&src, &opts, out)? {
            eprintln!("{w}");
        }
        Ok(())
    };
    write_text(cli.output.as_deref(), &[&cli.input], write)
}
