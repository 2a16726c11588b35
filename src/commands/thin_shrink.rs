//! thin_shrink: shrink a pool's data device, moving the data blocks that
//! lie beyond the new size into free space below it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{ArgAction, Parser};

use crate::io::input::{check_binary, check_path};
use crate::io::output::{check_distinct, metadata_output, metadata_output_size};
use crate::io::source::{BlockSource, OpenOptions};
use crate::thin::dump::{dump, DumpOptions, Format};
use crate::thin::restore::{keep, restore_to, validate, Overrides};
use crate::thin::shrink::{copy_data, data_block_size, shrink_xml};

/// Shrink a pool's data size, moving the data beyond it
#[derive(Parser, Debug)]
#[command(name = "thin_shrink", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Binary metadata in and out (instead of XML)
    #[arg(long)]
    binary: bool,

    /// The pool's data device or file
    #[arg(long, value_name = "FILE", required_unless_present = "no_copy")]
    data: Option<PathBuf>,

    /// Metadata to read (XML, or binary with --binary)
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Rewrite the metadata only; do not move data
    #[arg(long)]
    no_copy: bool,

    /// The new data size, in data blocks
    #[arg(long, value_name = "NUM", required = true)]
    nr_blocks: u64,

    /// Where to write the metadata (XML, created; with --binary an
    /// existing device or file)
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

/// A scratch file beside `near`, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch_beside(near: &Path, what: &str) -> Scratch {
    let dir = near
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Scratch(dir.join(format!(".thin_shrink.{}.{what}.xml", std::process::id())))
}

/// Creates a scratch file beside the output, naming the output when
/// that fails (the scratch name means nothing to the user).
fn create_scratch(scratch: &Scratch, output: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    let f = std::fs::File::create(&scratch.0).with_context(|| {
        format!(
            "cannot create a scratch file beside the output '{}'",
            output.display()
        )
    })?;
    Ok(std::io::BufWriter::new(f))
}

fn run_cli(cli: Cli) -> Result<()> {
    check_path(&cli.input)?;
    // Nothing moves until every writer target is known to be apart from
    // every input: the data device is written too.
    check_distinct(&cli.output, &[&cli.input])?;
    if let Some(data) = &cli.data {
        check_distinct(data, &[&cli.input, &cli.output])?;
    }
    if let Some(data) = &cli.data {
        if !cli.no_copy {
            check_path(data)?;
        }
    }
    let input_xml;
    let _dumped;
    if cli.binary {
        let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
        check_binary(&src, false)?;
        let scratch = scratch_beside(&cli.output, "in");
        let mut f = create_scratch(&scratch, &cli.output)?;
        let opts = DumpOptions {
            format: Format::Xml,
            metadata_snap: false,
            skip_mappings: false,
            dev_ids: None,
            flat: false,
            transaction_id: None,
            data_block_size: None,
            nr_data_blocks: None,
        };
        dump(&src, &opts, &mut f)?;
        input_xml = scratch.0.clone();
        _dumped = Some(scratch);
    } else {
        crate::io::input::check_xml(&cli.input)?;
        input_xml = cli.input.clone();
        _dumped = None;
    }

    // Validated in full (line and column on errors) before anything moves.
    validate(&input_xml, &Overrides::default())?;
    let shrunk = scratch_beside(&cli.output, "out");
    let moves = {
        let mut f = create_scratch(&shrunk, &cli.output)?;
        shrink_xml(&input_xml, cli.nr_blocks, &mut f)?
    };
    // A binary output too small for the result is refused before any
    // data moves.
    let name = format!("'{}'", cli.output.display());
    let bytes = if cli.binary {
        let bytes = metadata_output_size(&cli.output, &[&cli.input])?;
        validate(&shrunk.0, &Overrides::default())?.room(&name, bytes)?;
        Some(bytes)
    } else {
        None
    };
    // The data moves first, into blocks no mapping uses: until the new
    // metadata is written, the old stays true.
    if !cli.no_copy && !moves.is_empty() {
        let data = cli.data.as_ref().context("--data is needed to move data")?;
        copy_data(data, &moves, data_block_size(&input_xml)?)?;
    }
    if let Some(bytes) = bytes {
        let keep = keep::blocks_in_use(&cli.output);
        restore_to(&shrunk.0, &Overrides::default(), &name, bytes, keep, || {
            Ok(metadata_output(&cli.output, &[&cli.input])?.0)
        })?;
    } else {
        std::fs::copy(&shrunk.0, &cli.output)
            .with_context(|| format!("cannot write '{}'", cli.output.display()))?;
    }
    Ok(())
}
