//! thin_repair: salvage damaged thin metadata into a fresh, valid copy.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgAction, Parser};

use crate::io::input::{check_binary, check_path};
use crate::io::output::{metadata_output, metadata_output_size};
use crate::io::source::{BlockSource, OpenOptions};
use crate::io::BLOCK_SIZE;
use crate::report::phases;
use crate::thin::dump::{emit_devices, Filter};
use crate::thin::repair::{salvage, RepairOptions};
use crate::thin::restore::xml::{Emitter, ItemsAhead};
use crate::thin::restore::{build_items_keeping, keep, validate_items, Overrides};

/// Repair thin-pool metadata into a new metadata device or file
#[derive(Parser, Debug)]
#[command(name = "thin_repair", disable_version_flag = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    overrides: super::OverrideArgs,

    /// The damaged metadata
    #[arg(short, long, value_name = "FILE", required = true)]
    input: PathBuf,

    /// Existing device or file for the repaired metadata (at least 40960 bytes)
    #[arg(short, long, value_name = "FILE", required = true)]
    output: PathBuf,

    /// Print no diagnostics
    #[arg(short, long)]
    quiet: bool,

    /// Bring back deleted devices whose trees survive (see thin_ls
    /// --orphans), as new devices above the highest live id
    #[arg(long)]
    recover_orphans: bool,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,

    /// Accepted and ignored (older lvm2 passes an empty argument)
    #[arg(hide = true)]
    ignored: Option<String>,

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
    let out = &cli.output;
    let bytes = metadata_output_size(out, &[&cli.input])?;
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, false)?;
    let found = salvage(
        &src,
        &RepairOptions {
            transaction_id: cli.overrides.transaction_id,
            data_block_size: cli.overrides.data_block_size,
            nr_data_blocks: cli.overrides.nr_data_blocks,
            recover_orphans: cli.recover_orphans,
        },
    )
    .map_err(|e| unsalvageable(&src, e))?;
    phases::phase("repair: salvaged");
    if !cli.quiet {
        for w in &found.warnings {
            eprintln!("{w}");
        }
    }
    // The salvaged metadata goes through the restore engine as items:
    // validated and sized first, then built.
    let overrides = Overrides::default();
    let produce = |out: &mut Emitter| {
        emit_devices(
            &src,
            &found.header,
            &found.devices,
            Filter {
                drop_from: Some(found.nr_data_blocks),
                kept: Some(&found.kept),
            },
            out,
        )
    };
    let plan = std::thread::scope(|scope| {
        validate_items(&mut ItemsAhead::spawn(scope, produce), &overrides)
    })
    .map_err(|e| anyhow::anyhow!("item {}: {}", e.offset, e.message))
    .context("the salvaged metadata is not consistent")?;
    phases::phase("repair: salvaged metadata validated");
    // Nothing is written to an output too small for what was salvaged.
    let nr = plan.room(&format!("'{}'", out.display()), bytes)?;
    let (mut sink, _) = metadata_output(out, &[&cli.input]).context("output error")?;
    let place = |at: u64| format!("salvaged item {at}");
    // A transaction already on the output stays whole until the new
    // superblock is written.
    let keep = keep::blocks_in_use(out);
    match plan.replay() {
        Some(mut items) => {
            build_items_keeping(&mut items, &place, &plan, &overrides, &mut sink, nr, keep)
        }
        None => std::thread::scope(|scope| {
            let mut items = ItemsAhead::spawn(scope, produce);
            build_items_keeping(&mut items, &place, &plan, &overrides, &mut sink, nr, keep)
        }),
    }
    .context("output error")?;
    Ok(())
}

/// Names the input and, where it can be told, what it holds instead of
/// thin metadata (text, XML, another target's), when nothing could be
/// salvaged from it.
fn unsalvageable(src: &BlockSource, e: anyhow::Error) -> anyhow::Error {
    let what = crate::thin::superblock::truncation(src)
        .or_else(|| crate::io::input::what_it_holds(src.head(BLOCK_SIZE), "thin"))
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    e.context(format!(
        "nothing could be salvaged from '{}'{what}",
        src.path().display()
    ))
}
