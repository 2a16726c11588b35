//! era_check: validate dm-era metadata.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{ArgAction, Parser, ValueEnum};

use crate::era::check::{check, CheckOptions, CheckResult};
use crate::io::input::{check_binary, check_path};
use crate::io::source::{BlockSource, OpenOptions};
use crate::report::Reporter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Validate dm-era metadata on a device or file
#[derive(Parser, Debug)]
#[command(name = "era_check", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file to check (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Output format of findings: text (stderr) or one JSON document (stdout)
    #[arg(long, value_enum, default_value = "text")]
    format: Format,

    /// Accept non-fatal problems (leaked blocks) and relax the node
    /// fill checks
    #[arg(long)]
    ignore_non_fatal_errors: bool,

    /// Print nothing; report through the exit status only
    #[arg(short, long)]
    quiet: bool,

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
    let quiet = cli.quiet || cli.format == Format::Json;
    super::finish(run_cli(cli), quiet)
}

pub(crate) fn io_engine(engine: &Option<String>) -> Result<()> {
    if let Some(engine) = engine {
        if engine != "sync" && engine != "spindle" && engine != "async" {
            bail!("unknown io engine type '{engine}'");
        }
    }
    Ok(())
}

fn run_cli(cli: Cli) -> Result<()> {
    io_engine(&cli.io_engine)?;
    let json = cli.format == Format::Json;
    let rep = Reporter::new(cli.quiet || json);
    check_path(&cli.input)?;
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, true)?;
    let opts = CheckOptions {
        super_block_only: cli.super_block_only,
        ignore_non_fatal: cli.ignore_non_fatal_errors,
    };
    let result = check(&src, &opts, &rep);
    let verdict = verdict(&result, cli.ignore_non_fatal_errors);
    if json {
        print_json(&result, &verdict);
    }
    verdict
}

fn verdict(r: &CheckResult, ignore_non_fatal: bool) -> Result<()> {
    if let Some(why) = &r.aborted {
        bail!("{why}");
    }
    let fatal = r.findings.iter().filter(|f| f.is_fatal()).count();
    if fatal > 0 {
        bail!("fatal errors in metadata: {fatal} fatal problem(s) found");
    }
    if !r.has_non_fatal() || ignore_non_fatal {
        return Ok(());
    }
    if r.metadata_leaks > 0 {
        bail!(
            "the metadata space map contains {} leaked block(s); they waste space but endanger \
             no data: --ignore-non-fatal-errors accepts them, era_repair rebuilds the map",
            r.metadata_leaks
        );
    }
    bail!("metadata check found non-fatal problems; --ignore-non-fatal-errors accepts them")
}

fn print_json(r: &CheckResult, verdict: &Result<()>) {
    let mut s = String::from("{");
    s.push_str(&format!("\"passed\":{}", verdict.is_ok()));
    if let Some(sb) = &r.superblock {
        s.push_str(&format!(
            ",\"current_era\":{},\"nr_blocks\":{},\"metadata_snap\":{}",
            sb.current_era, sb.nr_blocks, sb.metadata_snap
        ));
    }
    if let Err(e) = verdict {
        let msg = format!("{e:#}").replace('\\', "\\\\").replace('"', "\\\"");
        s.push_str(&format!(",\"error\":\"{msg}\""));
    }
    s.push_str(",\"findings\":[");
    let items: Vec<String> = r.findings.iter().map(|f| f.to_json()).collect();
    s.push_str(&items.join(","));
    s.push_str("]}");
    println!("{s}");
}
