//! cache_check: validate dm-cache metadata.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser, ValueEnum};

use crate::cache::check::{check, CheckOptions, CheckResult, Counts};
use crate::cache::superblock::{clear_needs_check, Superblock, NEEDS_CHECK};
use crate::io::checksum::{seal, BlockKind};
use crate::io::input::{check_binary, check_path};
use crate::io::sink::FileSink;
use crate::io::source::{BlockSource, OpenOptions};
use crate::pdata::space_map::leak_repair::{commit, Extra, MapCounts, Maps};
use crate::report::{Mode, Reporter};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Validate dm-cache metadata on a device or file
#[derive(Parser, Debug)]
#[command(name = "cache_check", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file to check (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Repair leaked blocks in place and clear the needs_check flag
    #[arg(long)]
    auto_repair: bool,

    /// Clear the needs_check flag if the check passes (leaked blocks are
    /// repaired in place first)
    #[arg(long)]
    clear_needs_check_flag: bool,

    /// Output format of findings: text (stderr) or one JSON document (stdout)
    #[arg(long, value_enum, default_value = "text")]
    format: Format,

    /// Accept non-fatal problems (leaked blocks, a hint array of another length)
    #[arg(long)]
    ignore_non_fatal_errors: bool,

    /// Print nothing; report through the exit status only
    #[arg(short, long)]
    quiet: bool,

    /// Do not check the discard bitset
    #[arg(long)]
    skip_discards: bool,

    /// Do not check the hint array
    #[arg(long)]
    skip_hints: bool,

    /// Do not check the mapping array and the dirty bitset
    #[arg(long)]
    skip_mappings: bool,

    /// Check the superblock only
    #[arg(long)]
    super_block_only: bool,

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
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, true)?;

    let opts = CheckOptions {
        super_block_only: cli.super_block_only,
        skip_mappings: cli.skip_mappings,
        skip_hints: cli.skip_hints,
        skip_discards: cli.skip_discards,
        ignore_non_fatal: cli.ignore_non_fatal_errors,
    };
    let mut result = check(&src, &opts, &rep);
    // As the reference: --super-block-only and the --skip options check
    // too little to vouch for the metadata, so nothing is written.
    let repairing =
        (cli.clear_needs_check_flag || cli.auto_repair) && !opts.super_block_only && !opts.skips();
    let verdict = verdict(&cli, &result, repairing);
    let needs_check = result
        .superblock
        .as_ref()
        .is_some_and(|sb| sb.needs_check());
    let leaks = result.metadata_leaks;
    let counters = result
        .findings
        .iter()
        .filter(|f| f.kind == "space_map_counter")
        .count();
    let mut cleared = false;
    let mut repaired = false;
    if verdict.is_ok() && repairing && (leaks > 0 || counters > 0 || needs_check) {
        if src.is_decompressed() {
            bail!("cannot write to a compressed image");
        }
        if leaks > 0 || counters > 0 {
            let counts = result
                .counts
                .take()
                .context("the space map needs repair but was not read")?;
            rep.line(&format!(
                "repairing the metadata space map: {leaks} leaked block(s), {counters} stale counter(s)"
            ));
            // `src` holds the device exclusively until the repair is done.
            let mut sink = FileSink::open_held(&cli.input)?;
            let written = repair_leaks(&src, &counts, &mut sink)
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
                    "the metadata does not check clean after the space-map repair; run cache_repair"
                );
            }
            rep.line(&format!(
                "metadata space map repaired: {written} space-map blocks written, then the superblock"
            ));
            repaired = true;
        } else {
            drop(src);
            cleared = clear_needs_check(&cli.input)?;
        }
        if cleared {
            rep.line("needs_check flag cleared");
        }
    }
    if json {
        print_json(&result, &verdict, cleared, repaired);
    }
    verdict
}

/// Repairs the metadata space map's leaks in place (and clears
/// needs_check in the same superblock write); blocks written.
fn repair_leaks(src: &BlockSource, counts: &Counts, sink: &mut FileSink) -> Result<u64> {
    let current = src.block(0)?;
    let maps = Maps {
        metadata: MapCounts {
            refs: &counts.metadata_refs,
            sm: &counts.metadata_sm,
        },
        data: None,
        repair_tool: "cache_repair",
    };
    let done = commit(
        src,
        maps,
        Extra::default(),
        |roots, _| {
            let mut sb = Superblock::parse(current);
            sb.metadata_sm_root = roots.metadata;
            sb.flags &= !NEEDS_CHECK;
            let mut block = current.to_vec();
            // Only the fields; the rest of the block stays byte for byte.
            sb.write_fields(&mut block);
            seal(&mut block, BlockKind::CacheSuperblock);
            block
        },
        sink,
    )?;
    Ok(done.blocks_written)
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
    let fatal = r.findings.iter().filter(|f| f.is_fatal()).count();
    match (&r.aborted, fatal) {
        (Some(why), 0) => bail!("{why}"),
        (Some(why), n) => bail!("{why}: {n} fatal problem(s) found"),
        // A superblock field found fatal under --super-block-only.
        (None, n) if n > 0 => bail!("metadata contains errors: {n} fatal problem(s) found"),
        _ => {}
    }
    if !r.has_non_fatal() || cli.ignore_non_fatal_errors {
        return Ok(());
    }
    let only_repairable = r
        .findings
        .iter()
        .filter(|f| f.is_non_fatal())
        .all(|f| repairable(f.kind));
    if repairing && only_repairable {
        return Ok(());
    }
    if r.metadata_leaks > 0 && only_repairable {
        bail!(
            "the metadata space map contains {} leaked block(s); they waste space but endanger \
             no data: --auto-repair repairs them, --ignore-non-fatal-errors accepts them",
            r.metadata_leaks
        );
    }
    bail!("metadata check found non-fatal problems; --ignore-non-fatal-errors accepts them")
}

fn print_json(r: &CheckResult, verdict: &Result<()>, cleared: bool, repaired: bool) {
    let mut s = String::from("{");
    s.push_str(&format!("\"passed\":{}", verdict.is_ok()));
    if let Some(sb) = &r.superblock {
        s.push_str(&format!(
            ",\"version\":{},\"cache_blocks\":{},\"metadata_free_blocks\":{}",
            sb.version,
            sb.cache_blocks,
            sb.metadata_sm_root.nr_free()
        ));
    }
    if let Err(e) = verdict {
        let msg = format!("{e:#}").replace('\\', "\\\\").replace('"', "\\\"");
        s.push_str(&format!(",\"error\":\"{msg}\""));
    }
    s.push_str(&format!(
        ",\"leaks_repaired\":{repaired},\"needs_check_cleared\":{cleared},\"findings\":["
    ));
    let items: Vec<String> = r.findings.iter().map(|f| f.to_json()).collect();
    s.push_str(&items.join(","));
    s.push_str("]}");
    println!("{s}");
}
