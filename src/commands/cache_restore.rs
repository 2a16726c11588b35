//! cache_restore: build binary cache metadata from XML.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::cache::restore::{blocks_in_use, restore_to, RestoreOptions};
use crate::io::input::{check_path, check_xml};
use crate::io::output::{metadata_output, metadata_output_size};

/// Build binary dm-cache metadata from XML
#[derive(Parser, Debug)]
#[command(name = "cache_restore", disable_version_flag = true)]
pub(crate) struct Cli {
    /// XML input
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Existing metadata device or file to write (at least 40960 bytes)
    #[arg(short, long, value_name = "FILE", required = true)]
    output: PathBuf,

    /// Metadata format to write: 2 keeps dirty bits in a bitset, 1 in the mappings
    #[arg(long, value_name = "1|2", default_value = "2", value_parser = clap::value_parser!(u32).range(1..=2), visible_alias = "debug-override-metadata-version")]
    metadata_version: u32,

    /// Leave the clean-shutdown flag clear (the kernel then treats every
    /// mapped block as dirty and ignores hints)
    #[arg(long)]
    omit_clean_shutdown: bool,

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
    check_xml(&cli.input)?;
    let opts = RestoreOptions {
        metadata_version: cli.metadata_version,
        clean_shutdown: !cli.omit_clean_shutdown,
    };
    // The whole XML is validated and sized before the output is opened
    // for writing; a cache transaction already there stays whole until
    // the new superblock is written.
    let bytes = metadata_output_size(&cli.output, &[&cli.input])?;
    let name = format!("'{}'", cli.output.display());
    let keep = blocks_in_use(&cli.output);
    restore_to(&cli.input, &opts, &name, bytes, keep, || {
        Ok(metadata_output(&cli.output, &[&cli.input])?.0)
    })?;
    Ok(())
}
