//! thin_check: validate thin-pool metadata.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser, ValueEnum};

use crate::io::input::{check_binary, check_path};
use crate::io::sink::FileSink;
use crate::io::source::{BlockSource, OpenOptions};
use crate::report::{Mode, Reporter};
use crate::thin::check::{check, CheckOptions, CheckResult};
use crate::thin::leak_repair::repair_leaks;
use crate::thin::superblock::clear_needs_check;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Validate thin-pool metadata on a device or file
#[derive(Parser, Debug)]
#[command(name = "thin_check", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file to check (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Repair leaked blocks in place and clear the needs_check flag
    #[arg(long, conflicts_with_all = ["ignore_non_fatal_errors", "metadata_snap", "override_mapping_root", "override_details_root", "super_block_only", "skip_mappings"])]
    auto_repair: bool,

    /// Clear the needs_check flag if the check passes (leaked blocks are
    /// repaired in place first)
    #[arg(long, conflicts_with_all = ["metadata_snap", "override_mapping_root", "override_details_root"])]
    clear_needs_check_flag: bool,

    /// Output format of findings: text (stderr) or one JSON document (stdout)
    #[arg(long, value_enum, default_value = "text")]
    format: Format,

    /// Accept non-fatal problems (leaked blocks, stale counters)
    #[arg(long)]
    ignore_non_fatal_errors: bool,

    /// Check the metadata snapshot instead of the live metadata
    #[arg(short = 'm', long)]
    metadata_snap: bool,

    /// Use this block as the device-details tree root
    #[arg(long, value_name = "BLOCKNR")]
    override_details_root: Option<u64>,

    /// Use this block as the top-level mapping tree root
    #[arg(long, value_name = "BLOCKNR")]
    override_mapping_root: Option<u64>,

    /// Print nothing; report through the exit status only
    #[arg(short, long)]
    quiet: bool,

    /// Check the superblock, device details and top-level mapping tree only
    #[arg(long)]
    skip_mappings: bool,

    /// Check the superblock only
    #[arg(long)]
    super_block_only: bool,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,

    /// Print every damaged node, with the reference tools' node path,
    /// instead of a summary per device
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,

    #[arg(long, hide = true, value_name = "ENGINE")]
    io_engine: Option<String>,
}

pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match super::parse::<Cli>(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // In JSON mode the final error is part of the document.
    let quiet = cli.quiet || cli.format == Format::Json;
    super::finish(run_cli(cli), quiet)
}

fn run_cli(cli: Cli) -> Result<()> {
    if let Some(engine) = &cli.io_engine {
        if engine != "sync" && engine != "spindle" && engine != "async" {
            bail!("unknown io engine type '{engine}'");
        }
    }
    let json = cli.format == Format::Json;
    let rep = Reporter::new(cli.quiet || json);
    check_path(&cli.input)?;
    let src = BlockSource::open(
        &cli.input,
        OpenOptions {
            exclusive: !cli.metadata_snap,
        },
    )?;
    check_binary(&src, true)?;

    let opts = CheckOptions {
        super_block_only: cli.super_block_only,
        skip_mappings: cli.skip_mappings,
        ignore_non_fatal: cli.ignore_non_fatal_errors,
        metadata_snap: cli.metadata_snap,
        override_mapping_root: cli.override_mapping_root,
        override_details_root: cli.override_details_root,
        verbose: cli.verbose > 0,
    };
    let mut result = check(&src, &opts, &rep);
    let repairing = cli.clear_needs_check_flag || cli.auto_repair;
    let verdict = verdict(&cli, &result, repairing);
    let needs_check = result
        .superblock
        .as_ref()
        .is_some_and(|sb| sb.needs_check());
    let leaks = result.metadata_leaks + result.data_leaks;
    let counters = result
        .findings
        .iter()
        .filter(|f| f.kind == "space_map_counter")
        .count();
    let mut cleared = false;
    if verdict.is_ok() && repairing && (leaks > 0 || counters > 0 || needs_check) {
        if src.is_decompressed() {
            bail!("cannot write to a compressed image");
        }
        if leaks > 0 || counters > 0 {
            let counts = result
                .counts
                .take()
                .context("the space maps need repair but were not read")?;
            rep.line(&format!(
                "repairing the space maps: {} leaked metadata block(s), {} leaked data block(s), \
                 {counters} stale counter(s)",
                result.metadata_leaks, result.data_leaks
            ));
            // `src` holds the device exclusively until the repair is done.
            let mut sink = FileSink::open_held(&cli.input)?;
            let done = repair_leaks(&src, &counts, true, &mut sink)
                .context("in-place space-map repair failed; the metadata was left as it was")?;
            drop(counts);
            drop(src);
            cleared = needs_check;
            let again = check(
                &BlockSource::open(&cli.input, OpenOptions { exclusive: true })?,
                &CheckOptions::default(),
                &Reporter::with_mode(Mode::Quiet),
            );
            if !again.passed(false) {
                bail!(
                    "the metadata does not check clean after the space-map repair; run thin_repair"
                );
            }
            rep.line(&format!(
                "space maps repaired: {} space-map blocks written, then the superblock",
                done.blocks_written
            ));
        } else {
            drop(src);
            cleared = clear_needs_check(&cli.input)?;
        }
        if cleared {
            rep.line("needs_check flag cleared");
        }
    }
    if json {
        print_json(&result, &verdict, cleared);
    }
    verdict
}

/// Findings an in-place repair removes: leaks, and space-map summaries
/// that disagree with the bitmaps (rebuilt from them).
fn repairable(kind: &str) -> bool {
    matches!(
        kind,
        "leaked_blocks" | "over_counted_blocks" | "space_map_counter"
    )
}

/// The tool's success or final error, from what the check found.
fn verdict(cli: &Cli, r: &CheckResult, repairing: bool) -> Result<()> {
    if let Some(why) = &r.aborted {
        bail!("{why}");
    }
    let fatal = r.findings.iter().filter(|f| f.is_fatal()).count();
    if fatal > 0 {
        bail!("metadata check failed: {fatal} fatal problem(s) found");
    }
    if !r.has_non_fatal() || cli.ignore_non_fatal_errors {
        return Ok(());
    }
    let only_leaks = r
        .findings
        .iter()
        .filter(|f| f.is_non_fatal())
        .all(|f| repairable(f.kind));
    if repairing && only_leaks {
        return Ok(());
    }
    if r.metadata_leaks + r.data_leaks > 0 {
        bail!(
            "the space maps contain leaked blocks ({} metadata, {} data); they waste space but \
             endanger no data: --auto-repair repairs them, --ignore-non-fatal-errors accepts them",
            r.metadata_leaks,
            r.data_leaks
        );
    }
    bail!("metadata check found non-fatal problems; --ignore-non-fatal-errors accepts them")
}

fn print_json(r: &CheckResult, verdict: &Result<()>, cleared: bool) {
    let mut s = String::from("{");
    s.push_str(&format!("\"passed\":{}", verdict.is_ok()));
    if let Some(f) = &r.facts {
        s.push_str(&format!(
            ",\"transaction_id\":{},\"metadata_free_blocks\":{}",
            f.transaction_id, f.metadata_free_blocks
        ));
    }
    if let Err(e) = verdict {
        let msg = format!("{e:#}").replace('\\', "\\\\").replace('"', "\\\"");
        s.push_str(&format!(",\"error\":\"{msg}\""));
    }
    s.push_str(&format!(
        ",\"needs_check_cleared\":{cleared},\"findings\":["
    ));
    let items: Vec<String> = r.findings.iter().map(|f| f.to_json()).collect();
    s.push_str(&items.join(","));
    s.push_str("]}");
    println!("{s}");
}
