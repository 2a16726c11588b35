//! thin_delta: the differences between two thin devices' mappings.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::{ArgAction, Parser};

use crate::io::input::{check_binary, check_path};
use crate::io::source::{BlockSource, OpenOptions};
use crate::thin::delta::{diff, DiffEntry, DiffKind};
use crate::thin::devices::{read_devices_strict, unmatched_ids};
use crate::thin::forest;
use crate::thin::superblock::live_and_chosen;

/// Print the differences between the mappings of two thin devices
#[derive(Parser, Debug)]
#[command(name = "thin_delta", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Use the metadata snapshot (usable on a live pool)
    #[arg(short = 'm', long)]
    metadata_snap: bool,

    /// The first tree, by its root block
    #[arg(long, value_name = "BLOCKNR", conflicts_with = "thin1")]
    root1: Option<u64>,

    /// The second tree, by its root block
    #[arg(long, value_name = "BLOCKNR", conflicts_with = "thin2")]
    root2: Option<u64>,

    /// The first device
    #[arg(long, visible_alias = "snap1", value_name = "DEV_ID")]
    thin1: Option<u64>,

    /// The second device
    #[arg(long, visible_alias = "snap2", value_name = "DEV_ID")]
    thin2: Option<u64>,

    /// Group the differences by kind, with data block numbers
    #[arg(long)]
    verbose: bool,

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

/// How a side was named on the command line, for the `<diff>` tag.
enum Side {
    Device(u64),
    Root(u64),
}

fn run_cli(cli: Cli) -> Result<()> {
    let left = match (cli.thin1, cli.root1) {
        (Some(id), _) => Side::Device(id),
        (None, Some(b)) => Side::Root(b),
        (None, None) => bail!("--thin1 or --root1 not specified"),
    };
    let right = match (cli.thin2, cli.root2) {
        (Some(id), _) => Side::Device(id),
        (None, Some(b)) => Side::Root(b),
        (None, None) => bail!("--thin2 or --root2 not specified"),
    };
    check_path(&cli.input)?;
    let src = BlockSource::open(
        &cli.input,
        OpenOptions {
            exclusive: !cli.metadata_snap,
        },
    )?;
    check_binary(&src, false)?;
    let (_, sb) = live_and_chosen(&src, cli.metadata_snap)?;
    let (roots, details) = read_devices_strict(&src, sb.mapping_root, sb.details_root)?;
    let (only_mapped, only_detailed) = unmatched_ids(&roots, &details);
    if !only_mapped.is_empty() || !only_detailed.is_empty() {
        bail!("inconsistent device ids: only mapped {only_mapped:?}, only in details {only_detailed:?}");
    }
    let resolve = |side: &Side, which: &str| -> Result<(String, u64)> {
        match side {
            Side::Device(id) => roots
                .get(id)
                .map(|r| (format!("device {id}"), *r))
                .ok_or_else(|| anyhow!("{which}: no thin device {id} in the pool")),
            Side::Root(b) => Ok((format!("tree at block {b}"), *b)),
        }
    };
    let l = resolve(&left, "snap1")?;
    let r = resolve(&right, "snap2")?;
    forest::validate_named(&src, &[l.clone(), r.clone()])?;

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let flags = if sb.needs_check() { " flags=\"1\"" } else { "" };
    writeln!(
        out,
        "<superblock uuid=\"\" time=\"{}\" transaction=\"{}\"{flags} data_block_size=\"{}\" nr_data_blocks=\"{}\">",
        sb.time, sb.transaction_id, sb.data_block_size, sb.data_sm_root.nr_blocks
    )?;
    let side_attr = |s: &Side, name: &str| match s {
        Side::Device(id) => format!("{name}=\"{id}\""),
        Side::Root(b) => format!("{name}_root=\"{b}\""),
    };
    writeln!(
        out,
        "  <diff {} {}>",
        side_attr(&left, "left"),
        side_attr(&right, "right")
    )?;
    let mut io_error = None;
    let mut group: Option<DiffKind> = None;
    diff(&src, l.1, r.1, |e| {
        if io_error.is_none() {
            if let Err(err) = write_entry(&mut out, &e, cli.verbose, &mut group) {
                io_error = Some(err);
            }
        }
    });
    if let Some(e) = io_error {
        return Err(e.into());
    }
    if let Some(kind) = group {
        writeln!(out, "    </{}>", kind.tag())?;
    }
    write!(out, "  </diff>\n</superblock>")?;
    out.flush()?;
    Ok(())
}

fn write_entry(
    out: &mut impl Write,
    e: &DiffEntry,
    verbose: bool,
    group: &mut Option<DiffKind>,
) -> std::io::Result<()> {
    if !verbose {
        return writeln!(
            out,
            "    <{} begin=\"{}\" length=\"{}\"/>",
            e.kind.tag(),
            e.begin,
            e.len
        );
    }
    if *group != Some(e.kind) {
        if let Some(kind) = group {
            writeln!(out, "    </{}>", kind.tag())?;
        }
        writeln!(out, "    <{}>", e.kind.tag())?;
        *group = Some(e.kind);
    }
    match e.kind {
        DiffKind::Different => writeln!(
            out,
            "      <range begin=\"{}\" left_data_begin=\"{}\" right_data_begin=\"{}\" length=\"{}\"/>",
            e.begin,
            e.left_data.unwrap_or(0),
            e.right_data.unwrap_or(0),
            e.len
        ),
        kind => {
            let data = if kind == DiffKind::RightOnly {
                e.right_data
            } else {
                e.left_data
            };
            writeln!(
                out,
                "      <range begin=\"{}\" data_begin=\"{}\" length=\"{}\"/>",
                e.begin,
                data.unwrap_or(0),
                e.len
            )
        }
    }
}
