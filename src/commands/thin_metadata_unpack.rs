//! thin_metadata_unpack: expand a pack file back into a metadata image.

use std::ffi::OsString;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{ArgAction, Parser};

use crate::io::input::check_path;
use crate::io::{pack, BLOCK_SIZE};

/// Expand a pack file into a metadata device or file
#[derive(Parser, Debug)]
#[command(name = "thin_metadata_unpack", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Replace an output that holds metadata without asking
    #[arg(short, long)]
    force: bool,

    /// Pack file to read
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Device or file to write (created if missing)
    #[arg(short, long, value_name = "DEV", required = true)]
    output: PathBuf,

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
    crate::io::output::check_distinct(&cli.output, &[&cli.input])?;
    super::overwrite::confirm(&cli.output, cli.force)?;
    let bytes = std::fs::read(&cli.input)
        .with_context(|| format!("cannot read '{}'", cli.input.display()))?;
    // A file that is not a whole pack is refused before the output is
    // touched: every chunk is decoded once without writing.
    let not_a_pack = |e: &dyn std::fmt::Display| anyhow!("'{}': {e}", cli.input.display());
    let nr_blocks = pack::read_header(&bytes).map_err(|e| not_a_pack(&e))?;
    pack::unpack_each(&bytes, |_, _| Ok(())).map_err(|e| not_a_pack(&e))?;
    let file = crate::io::output::text_output(&cli.output, &[&cli.input])?;
    if nr_blocks > 0 {
        file.write_all_at(&[0u8; BLOCK_SIZE], (nr_blocks - 1) * BLOCK_SIZE as u64)?;
    }
    drop(file);
    // The output was just truncated: until block 0 is written last, after
    // everything else is flushed, it holds no valid superblock.
    let mut sink = crate::io::sink::FileSink::open(&cli.output)?;
    pack::unpack_to_sink(&bytes, &mut sink)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("unpacking '{}'", cli.input.display()))?;
    Ok(())
}
