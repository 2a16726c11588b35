//! thin_metadata_pack: compress a metadata device's metadata blocks.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};

use crate::io::input::{check_binary, check_path};
use crate::io::pack;
use crate::io::source::{BlockSource, OpenOptions};
use crate::io::BLOCK_SIZE;

/// Pack the metadata blocks of a device or file into a compressed file
#[derive(Parser, Debug)]
#[command(name = "thin_metadata_pack", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Replace an output that holds metadata without asking
    #[arg(short, long)]
    force: bool,

    /// Metadata device or file to pack
    #[arg(short, long, value_name = "DEV", required = true)]
    input: PathBuf,

    /// Pack file to write
    #[arg(short, long, value_name = "FILE", required = true)]
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
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, true)?;
    crate::io::output::check_distinct(&cli.output, &[&cli.input])?;
    let image = src.block_range(0, src.nr_blocks())?;
    // Damaged metadata is worth packing (to show someone), a file with
    // no metadata block at all is not: its pack would be empty.
    let any_metadata = image
        .chunks(BLOCK_SIZE)
        .any(|b| crate::io::checksum::kind_of(b).is_some());
    if !any_metadata {
        let what = crate::io::input::what_it_holds(src.head(BLOCK_SIZE), "")
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        bail!(
            "'{}' holds no metadata blocks (none of its {} blocks carries a metadata checksum){what}",
            cli.input.display(),
            src.nr_blocks()
        );
    }
    super::overwrite::confirm(&cli.output, cli.force)?;
    crate::io::output::write_text(Some(&cli.output), &[&cli.input], |out| {
        pack::pack(image, &mut *out).context("writing the pack")
    })
}
