//! thin_ls: list the thin devices of a pool with per-device statistics.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{ArgAction, Parser};

use crate::io::input::{check_binary, check_path};
use crate::io::source::{BlockSource, OpenOptions};
use crate::report::Reporter;
use crate::thin::device_details::DeviceDetails;
use crate::thin::devices::{read_devices_strict, unmatched_ids};
use crate::thin::ls::{count_devices_with, DeviceCounts};
use crate::thin::superblock::live_and_chosen;

const DEFAULT_FIELDS: &str = "DEV,MAPPED,CREATE_TIME,SNAP_TIME";

/// The columns thin_ls can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Dev,
    Transaction,
    CreateTime,
    SnapTime,
    MappedBlocks,
    ExclusiveBlocks,
    SharedBlocks,
    HighestBlock,
    MappedSectors,
    ExclusiveSectors,
    SharedSectors,
    HighestSector,
    MappedBytes,
    ExclusiveBytes,
    SharedBytes,
    HighestByte,
    Mapped,
    Exclusive,
    Shared,
    HighestMapped,
}

const FIELDS: &[(&str, Field)] = &[
    ("DEV", Field::Dev),
    ("TRANSACTION", Field::Transaction),
    ("CREATE_TIME", Field::CreateTime),
    ("SNAP_TIME", Field::SnapTime),
    ("MAPPED_BLOCKS", Field::MappedBlocks),
    ("EXCLUSIVE_BLOCKS", Field::ExclusiveBlocks),
    ("SHARED_BLOCKS", Field::SharedBlocks),
    ("HIGHEST_BLOCK", Field::HighestBlock),
    ("MAPPED_SECTORS", Field::MappedSectors),
    ("EXCLUSIVE_SECTORS", Field::ExclusiveSectors),
    ("SHARED_SECTORS", Field::SharedSectors),
    ("HIGHEST_SECTOR", Field::HighestSector),
    ("MAPPED_BYTES", Field::MappedBytes),
    ("EXCLUSIVE_BYTES", Field::ExclusiveBytes),
    ("SHARED_BYTES", Field::SharedBytes),
    ("HIGHEST_BYTE", Field::HighestByte),
    ("MAPPED", Field::Mapped),
    ("EXCLUSIVE", Field::Exclusive),
    ("SHARED", Field::Shared),
    ("HIGHEST_MAPPED", Field::HighestMapped),
];

impl Field {
    fn name(self) -> &'static str {
        FIELDS.iter().find(|(_, f)| *f == self).unwrap().0
    }

    /// Whether the field needs each data block's use count (exclusive
    /// and shared figures), not just the walk.
    fn needs_exclusive(self) -> bool {
        matches!(
            self,
            Field::ExclusiveBlocks
                | Field::SharedBlocks
                | Field::ExclusiveSectors
                | Field::SharedSectors
                | Field::ExclusiveBytes
                | Field::SharedBytes
                | Field::Exclusive
                | Field::Shared
        )
    }

    /// Whether the field needs the mapping trees walked.
    fn needs_counts(self) -> bool {
        !matches!(
            self,
            Field::Dev | Field::Transaction | Field::CreateTime | Field::SnapTime
        )
    }
}

fn parse_fields(s: &str) -> Result<Vec<Field>, String> {
    s.split(',')
        .map(|name| {
            FIELDS
                .iter()
                .find(|(n, _)| *n == name.trim())
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                    format!("unknown field '{name}' (known: {})", known.join(", "))
                })
        })
        .collect()
}

/// List the thin devices of a pool with per-device statistics
#[derive(Parser, Debug)]
#[command(name = "thin_ls", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Comma-separated columns to print
    #[arg(short = 'o', long = "format", value_name = "FIELDS", default_value = DEFAULT_FIELDS, value_parser = parse_fields)]
    fields: std::vec::Vec<Field>,

    /// List the devices of the metadata snapshot
    #[arg(short = 'm', long)]
    metadata_snap: bool,

    /// Do not print the header row
    #[arg(long)]
    no_headers: bool,

    /// List the orphaned device trees a repair with --recover-orphans
    /// would bring back (deleted devices whose blocks were not yet
    /// reused), instead of the devices; reads the metadata as thin_repair
    /// does, damaged or not, and writes nothing
    #[arg(long, conflicts_with_all = ["metadata_snap", "fields"])]
    orphans: bool,

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

struct Row {
    id: u64,
    details: DeviceDetails,
    counts: DeviceCounts,
}

fn run_cli(cli: Cli) -> Result<()> {
    check_path(&cli.input)?;
    let src = BlockSource::open(
        &cli.input,
        OpenOptions {
            exclusive: !cli.metadata_snap,
        },
    )?;
    check_binary(&src, false)?;
    if cli.orphans {
        return list_orphans(&src, !cli.no_headers);
    }
    let (live, sb) = live_and_chosen(&src, cli.metadata_snap)?;
    let (roots, details) = read_devices_strict(&src, sb.mapping_root, sb.details_root)?;
    let (only_mapped, only_detailed) = unmatched_ids(&roots, &details);
    if !only_mapped.is_empty() || !only_detailed.is_empty() {
        bail!(
            "inconsistent device ids: the mapping tree (root {}) and the details tree (root {}) \
             disagree: only mapped {only_mapped:?}, only in details {only_detailed:?}",
            sb.mapping_root,
            sb.details_root
        );
    }
    live.data_size_plausible(src.nr_blocks())
        .map_err(|e| anyhow::anyhow!(e))?;
    let counts = if cli.fields.iter().any(|f| f.needs_counts()) {
        Reporter::new(false).line("Scanning data mappings");
        let exclusive = cli.fields.iter().any(|f| f.needs_exclusive());
        count_devices_with(&src, &roots, live.data_sm_root.nr_blocks, exclusive)?
    } else {
        BTreeMap::new()
    };
    let rows: Vec<Row> = details
        .iter()
        .map(|(id, d)| Row {
            id: *id,
            details: *d,
            counts: counts.get(id).copied().unwrap_or_default(),
        })
        .collect();
    let table = render(
        &cli.fields,
        &rows,
        sb.data_block_size as u64,
        !cli.no_headers,
    );
    let mut out = std::io::stdout().lock();
    out.write_all(table.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// One row per orphan: where its tree is, the id it had (when a stale
/// top-level tree still says), its mappings, their newest time, how many
/// of its data blocks live devices map now, and the id a repair with
/// --recover-orphans gives it.
fn list_orphans(src: &BlockSource, headers: bool) -> Result<()> {
    let mut grid: Vec<Vec<String>> = Vec::new();
    if headers {
        grid.push(
            [
                "ROOT",
                "OLD_DEV",
                "MAPPED_BLOCKS",
                "NEWEST_TIME",
                "REUSED_BLOCKS",
                "NEW_DEV",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    for (new_id, o) in crate::thin::repair::orphans::list(src)? {
        grid.push(vec![
            o.root.to_string(),
            o.old_id.map_or("-".to_string(), |id| id.to_string()),
            o.mappings.to_string(),
            o.newest_time.to_string(),
            o.reused.to_string(),
            new_id.to_string(),
        ]);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(align(grid).as_bytes())?;
    out.flush()?;
    Ok(())
}

fn cell(field: Field, row: &Row, block_sectors: u64) -> String {
    let c = &row.counts;
    let sectors = |blocks: u64| blocks * block_sectors;
    let bytes = |blocks: u64| blocks * block_sectors * 512;
    let highest = c.highest;
    match field {
        Field::Dev => row.id.to_string(),
        Field::Transaction => row.details.transaction_id.to_string(),
        Field::CreateTime => row.details.creation_time.to_string(),
        Field::SnapTime => row.details.snapshotted_time.to_string(),
        Field::MappedBlocks => c.mapped.to_string(),
        Field::ExclusiveBlocks => c.exclusive.to_string(),
        Field::SharedBlocks => c.shared().to_string(),
        Field::HighestBlock => highest.unwrap_or(0).to_string(),
        Field::MappedSectors => sectors(c.mapped).to_string(),
        Field::ExclusiveSectors => sectors(c.exclusive).to_string(),
        Field::SharedSectors => sectors(c.shared()).to_string(),
        Field::HighestSector => highest.map_or(0, |h| sectors(h + 1) - 1).to_string(),
        Field::MappedBytes => bytes(c.mapped).to_string(),
        Field::ExclusiveBytes => bytes(c.exclusive).to_string(),
        Field::SharedBytes => bytes(c.shared()).to_string(),
        Field::HighestByte => highest.map_or(0, |h| bytes(h + 1) - 1).to_string(),
        Field::Mapped => compact(bytes(c.mapped)),
        Field::Exclusive => compact(bytes(c.exclusive)),
        Field::Shared => compact(bytes(c.shared())),
        Field::HighestMapped => compact(highest.map_or(0, |h| bytes(h + 1) - 1)),
    }
}

/// Bytes in the largest binary unit that keeps the figure at most 8192.
pub fn compact(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["b", "KiB", "MiB", "GiB", "Tib", "PiB", "EiB"];
    if bytes == 0 {
        return "0b".into();
    }
    let mut unit = ((bytes.ilog2() / 10) as usize).saturating_sub(1);
    let mut value = bytes >> (10 * unit);
    if value > 8192 {
        value = (value + 512) / 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

fn render(fields: &[Field], rows: &[Row], block_sectors: u64, headers: bool) -> String {
    let mut grid: Vec<Vec<String>> = Vec::new();
    if headers {
        grid.push(fields.iter().map(|f| f.name().to_string()).collect());
    }
    for row in rows {
        grid.push(
            fields
                .iter()
                .map(|f| cell(*f, row, block_sectors))
                .collect(),
        );
    }
    align(grid)
}

/// Right-aligned columns, each as wide as its widest cell.
fn align(grid: Vec<Vec<String>>) -> String {
    let columns = grid.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..columns)
        .map(|i| grid.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in grid {
        for (c, w) in r.iter().zip(&widths) {
            out.push_str(&format!("{c:>w$} "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_units() {
        assert_eq!(compact(0), "0b");
        assert_eq!(compact(702087168), "670MiB");
        assert_eq!(compact(4194304), "4096KiB");
        assert_eq!(compact(512), "512b");
        assert_eq!(compact(8192), "8192b");
        assert_eq!(compact(8192 * 1024), "8192KiB");
        assert_eq!(compact(8193 * 1024), "8MiB");
        assert_eq!(compact(1 << 40), "1024GiB");
    }
}
