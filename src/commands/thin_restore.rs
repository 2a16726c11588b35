//! thin_restore: build binary thin metadata from XML.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::io::input::check_path;
use crate::io::output::{metadata_output, metadata_output_size};
use crate::thin::restore::{keep, restore_to, Overrides};

/// Build binary thin-pool metadata from XML
#[derive(Parser, Debug)]
#[command(name = "thin_restore", disable_version_flag = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    overrides: super::OverrideArgs,

    /// XML input
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
    check_path(&cli.input)?;
    crate::io::input::check_xml(&cli.input)?;
    let overrides = Overrides {
        transaction_id: cli.overrides.transaction_id,
        data_block_size: cli.overrides.data_block_size,
        nr_data_blocks: cli.overrides.nr_data_blocks,
    };
    // The whole XML is validated and sized before the output is opened
    // for writing; an output too small is refused with both sizes. A
    // transaction already there stays whole until the new superblock.
    let bytes = metadata_output_size(&cli.output, &[&cli.input])?;
    let name = format!("'{}'", cli.output.display());
    let keep = keep::blocks_in_use(&cli.output);
    restore_to(&cli.input, &overrides, &name, bytes, keep, || {
        Ok(metadata_output(&cli.output, &[&cli.input])?.0)
    })?;
    Ok(())
}
