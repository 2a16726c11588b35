//! thin_rmap: which thin devices map given data blocks.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgAction, Parser};

use crate::io::input::{check_binary, check_path};
use crate::io::source::{BlockSource, OpenOptions};
use crate::thin::devices::{read_devices_strict, unmatched_ids};
use crate::thin::rmap::{rmap, Region};
use crate::thin::superblock::Superblock;

fn parse_region(s: &str) -> Result<Region, String> {
    let bad =
        || format!("badly formed region '{s}': expected BEGIN..END, two decimal block numbers");
    let (b, e) = s.split_once("..").ok_or_else(bad)?;
    let num = |x: &str| -> Result<u64, String> {
        if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    let (begin, end) = (num(b)?, num(e)?);
    if end <= begin {
        return Err(format!(
            "region '{s}': the end must be greater than the beginning"
        ));
    }
    Ok(Region { begin, end })
}

/// Show which thin devices and virtual blocks map given data blocks
#[derive(Parser, Debug)]
#[command(name = "thin_rmap", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata device or file (may be gzip-compressed)
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Data blocks to look up, BEGIN..END (END excluded); repeatable
    #[arg(long, value_name = "BLOCK_RANGE", required = true, value_parser = parse_region)]
    region: Vec<Region>,

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

fn run_cli(cli: Cli) -> Result<()> {
    check_path(&cli.input)?;
    let src = BlockSource::open(&cli.input, OpenOptions { exclusive: true })?;
    check_binary(&src, false)?;
    let sb = Superblock::read(&src, 0)
        .map_err(|e| anyhow::anyhow!("{}", crate::thin::superblock::bad_superblock(&src, &e)))?;
    let (roots, details) = read_devices_strict(&src, sb.mapping_root, sb.details_root)?;
    let (only_mapped, only_detailed) = unmatched_ids(&roots, &details);
    if !only_mapped.is_empty() || !only_detailed.is_empty() {
        anyhow::bail!(
            "inconsistent device ids: only mapped {only_mapped:?}, only in details {only_detailed:?}"
        );
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    rmap(&src, &roots, &cli.region, &mut |d| {
        let r = d.run;
        writeln!(
            out,
            "data {}..{} -> thin({}) {}..{}",
            r.data,
            r.data + r.len,
            d.device,
            r.virt,
            r.virt + r.len
        )?;
        Ok(())
    })?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert_eq!(
            parse_region("23..7890"),
            Ok(Region {
                begin: 23,
                end: 7890
            })
        );
        for bad in [
            "23,7890", "23..six", "89..88", "89..89", "89..", "", "89...99", "0..-1", "+1..5",
        ] {
            assert!(parse_region(bad).is_err(), "{bad}");
        }
    }
}
