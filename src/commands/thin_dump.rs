//! thin_dump: write thin metadata as XML or a human-readable listing.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser, ValueEnum};

use crate::io::input::{check_binary, check_path};
use crate::io::output::write_text;
use crate::io::source::{BlockSource, OpenOptions};
use crate::thin::dump::{dump, write_devices, DumpOptions, Filter, Format};
use crate::thin::repair::{salvage, RepairOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Xml,
    #[value(name = "human_readable")]
    HumanReadable,
}

/// Dump thin-pool metadata as XML (or a human-readable listing)
#[derive(Parser, Debug)]
#[command(name = "thin_dump", disable_version_flag = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    overrides: super::OverrideArgs,

    /// Metadata device or file (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Dump only this device (repeatable)
    #[arg(long = "dev-id", value_name = "THIN_ID")]
    dev_ids: Vec<u64>,

    /// Write every device's mappings in full, without shared <def>/<ref>
    /// sections (the form thin-provisioning-tools 0.9 reads)
    #[arg(long, visible_alias = "no-shared")]
    flat: bool,

    /// Output format
    #[arg(short, long, value_enum, default_value = "xml")]
    format: OutputFormat,

    /// Dump the metadata snapshot (the optional block number is ignored:
    /// the snapshot is found through the superblock)
    #[arg(short = 'm', long, value_name = "BLOCKNR", num_args = 0..=1, require_equals = true, default_missing_value = "0", conflicts_with = "repair")]
    metadata_snap: Option<u64>,

    /// Write to this file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Print no diagnostics
    #[arg(short, long)]
    quiet: bool,

    /// Salvage what can be read from damaged metadata
    #[arg(short, long)]
    repair: bool,

    /// With --repair: bring back deleted devices whose trees survive (see
    /// thin_ls --orphans), as new devices above the highest live id
    #[arg(long, requires = "repair")]
    recover_orphans: bool,

    /// Write devices and their details only, no mappings
    #[arg(long)]
    skip_mappings: bool,

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
    let quiet = cli.quiet;
    super::finish(run_cli(cli), quiet)
}

fn run_cli(cli: Cli) -> Result<()> {
    check_path(&cli.input)?;
    let src = BlockSource::open(
        &cli.input,
        OpenOptions {
            exclusive: cli.metadata_snap.is_none(),
        },
    )?;
    check_binary(&src, false)?;
    let opts = DumpOptions {
        format: match cli.format {
            OutputFormat::Xml => Format::Xml,
            OutputFormat::HumanReadable => Format::HumanReadable,
        },
        metadata_snap: cli.metadata_snap.is_some(),
        skip_mappings: cli.skip_mappings,
        dev_ids: (!cli.dev_ids.is_empty()).then_some(cli.dev_ids.clone()),
        flat: cli.flat,
        transaction_id: cli.overrides.transaction_id,
        data_block_size: cli.overrides.data_block_size,
        nr_data_blocks: cli.overrides.nr_data_blocks,
    };
    let quiet = cli.quiet;
    let write = |out: &mut dyn std::io::Write| -> Result<()> {
        if cli.repair {
            let salvage = salvage(
                &src,
                &RepairOptions {
                    transaction_id: cli.overrides.transaction_id,
                    data_block_size: cli.overrides.data_block_size,
                    nr_data_blocks: cli.overrides.nr_data_blocks,
                    recover_orphans: cli.recover_orphans,
                },
            )?;
            if !quiet {
                for w in &salvage.warnings {
                    eprintln!("{w}");
                }
            }
            write_devices(
                &src,
                &salvage.header,
                opts.format,
                opts.flat,
                &salvage.devices,
                Filter {
                    drop_from: Some(salvage.nr_data_blocks),
                    kept: Some(&salvage.kept),
                },
                out,
            )
        } else {
            dump(&src, &opts, out)
        }
    };
    write_text(cli.output.as_deref(), &[&cli.input], write)
}
