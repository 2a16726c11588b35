//! era_restore: build binary dm-era metadata from XML.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{ArgAction, Parser};

use crate::era::restore::{build, room};
use crate::era::xml::parse_doc;
use crate::io::input::check_path;
use crate::io::output::{metadata_output, metadata_output_size};
use crate::io::xml::{locate, XmlDoc};

/// Build binary dm-era metadata from XML
#[derive(Parser, Debug)]
#[command(name = "era_restore", disable_version_flag = true)]
pub(crate) struct Cli {
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
    super::era_check::io_engine(&cli.io_engine)?;
    check_path(&cli.input)?;
    crate::io::input::check_xml(&cli.input)?;
    // Validated in full and sized before the output is opened for writing.
    let bytes = metadata_output_size(&cli.output, &[&cli.input])?;
    let doc = XmlDoc::open(&cli.input)
        .with_context(|| format!("cannot read '{}'", cli.input.display()))?;
    let model = parse_doc(&doc).map_err(|e| {
        let (line, col) = locate(&cli.input, e.offset);
        anyhow!(
            "{}: line {line}, column {col}: {}",
            cli.input.display(),
            e.message
        )
    })?;
    drop(doc);
    let usable = room(&model, &format!("'{}'", cli.output.display()), bytes)?;
    // An era transaction already there stays whole until the new
    // superblock is written (a power cut leaves the old or the new).
    let keep = crate::era::restore::blocks_in_use(&cli.output);
    let (mut sink, _) = metadata_output(&cli.output, &[&cli.input])?;
    build(&model, &mut sink, usable, keep)?;
    Ok(())
}
