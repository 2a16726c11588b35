//! cache_dump: write dm-cache metadata as XML.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::cache::dump::{dump, DumpOptions};
use crate::io::input::{check_binary, check_path};
use crate::io::output::write_text;
use crate::io::source::{BlockSource, OpenOptions};

/// Dump dm-cache metadata as XML
#[derive(Parser, Debug)]
#[command(name = "cache_dump", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Salvage what can be read from damaged metadata (what is lost is
    /// said on standard error)
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
    check_path(&cli.input)?;
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, false)?;
    let opts = DumpOptions { repair: cli.repair };
    let mut warn = |w: &str| eprintln!("{w}");
    // A dump that fails part way leaves an earlier file as it was.
    write_text(cli.output.as_deref(), &[&cli.input], |out| {
        dump(&src, &opts, out, &mut warn)
    })
}
