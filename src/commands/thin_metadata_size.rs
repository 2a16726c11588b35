//! thin_metadata_size: estimate the metadata device a pool needs.

use std::ffi::OsString;

use anyhow::{bail, Result};
use clap::{ArgAction, Parser, ValueEnum};

use crate::thin::metadata_size::metadata_bytes;

/// A unit: its size in bytes, long name and short letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unit {
    bytes: u128,
    long: &'static str,
    short: &'static str,
}

const fn unit(bytes: u128, long: &'static str, short: &'static str) -> Unit {
    Unit { bytes, long, short }
}

const KI: u128 = 1024;
const K: u128 = 1000;

/// Every spelling accepted, and what it means.
const UNITS: &[(&[&str], Unit)] = &[
    (&["b", "byte", "bytes"], unit(1, "byte", "b")),
    (&["s", "sector", "sectors"], unit(512, "sector", "s")),
    (
        &["k", "KiB", "kibibyte", "kibibytes"],
        unit(KI, "kibibyte", "k"),
    ),
    (
        &["m", "MiB", "mebibyte", "mebibytes"],
        unit(KI.pow(2), "mebibyte", "m"),
    ),
    (
        &["g", "GiB", "gibibyte", "gibibytes"],
        unit(KI.pow(3), "gibibyte", "g"),
    ),
    // The reference names tebibytes "terabytes"; lvm2-era scripts parse it.
    (
        &["t", "TiB", "tebibyte", "tebibytes"],
        unit(KI.pow(4), "terabyte", "t"),
    ),
    (
        &["p", "PiB", "pebibyte", "pebibytes"],
        unit(KI.pow(5), "pebibyte", "p"),
    ),
    (
        &["e", "EiB", "exbibyte", "exbibytes"],
        unit(KI.pow(6), "exbibyte", "e"),
    ),
    (
        &["K", "kB", "kilobyte", "kilobytes"],
        unit(K, "kilobyte", "K"),
    ),
    (
        &["M", "MB", "megabyte", "megabytes"],
        unit(K.pow(2), "megabyte", "M"),
    ),
    (
        &["G", "GB", "gigabyte", "gigabytes"],
        unit(K.pow(3), "gigabyte", "G"),
    ),
    (
        &["T", "TB", "terabyte", "terabytes"],
        unit(K.pow(4), "terabyte", "T"),
    ),
    (
        &["P", "PB", "petabyte", "petabytes"],
        unit(K.pow(5), "petabyte", "P"),
    ),
    (
        &["E", "EB", "exabyte", "exabytes"],
        unit(K.pow(6), "exabyte", "E"),
    ),
];

pub(crate) fn parse_unit(s: &str) -> Result<Unit, String> {
    UNITS
        .iter()
        .find(|(names, _)| names.contains(&s))
        .map(|(_, u)| *u)
        .ok_or_else(|| format!("unknown unit '{s}'"))
}

/// Digits and an optional unit (sectors when none), in bytes.
pub(crate) fn parse_size(s: &str) -> Result<u128, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{s}' is not a size: digits, then an optional unit"
        ));
    }
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is too large"))?;
    let unit = if suffix.is_empty() {
        parse_unit("s")?
    } else {
        parse_unit(suffix)?
    };
    let bytes = n as u128 * unit.bytes;
    if bytes > u64::MAX as u128 {
        return Err(format!("'{s}' is too large"));
    }
    Ok(bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Numeric {
    Short,
    Long,
}

/// Estimate the size of a thin pool's metadata device
#[derive(Parser, Debug)]
#[command(name = "thin_metadata_size", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Data block size, with an optional unit (default: sectors)
    #[arg(short = 'b', long, value_name = "SIZE[UNIT]", required = true, value_parser = parse_size)]
    block_size: u128,

    /// Maximum number of thin devices and snapshots
    #[arg(short = 'm', long, value_name = "NUM", required = true)]
    max_thins: u64,

    /// Print the number only (=short adds the unit letter, =long the unit name)
    #[arg(short = 'n', long, value_name = "short|long", num_args = 0..=1, require_equals = true, default_missing_value = None)]
    numeric_only: Option<Option<Numeric>>,

    /// Pool data size, with an optional unit (default: sectors)
    #[arg(short = 's', long, value_name = "SIZE[UNIT]", required = true, value_parser = parse_size)]
    pool_size: u128,

    /// Unit of the answer
    #[arg(short = 'u', long, value_name = "UNIT", default_value = "sector", value_parser = parse_unit)]
    unit: Unit,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,
}

pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match super::parse::<Cli>(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match answer(&cli) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => super::finish(Err(e), false),
    }
}

/// Integral values and values below one in shortest form, others with two
/// decimals.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as u128)
    } else if v < 1.0 {
        format!("{v}")
    } else {
        format!("{v:.2}")
    }
}

fn answer(cli: &Cli) -> Result<String> {
    const MIN_BLOCK: u128 = 64 * 1024;
    const MAX_BLOCK: u128 = 1 << 30;
    let block = cli.block_size;
    if block == 0 || !block.is_multiple_of(MIN_BLOCK) || block > MAX_BLOCK {
        bail!(
            "block size must be a non-zero multiple of 64 KiB, at most 1 GiB ({block} bytes given)"
        );
    }
    if cli.pool_size < block {
        bail!(
            "pool size ({} bytes) must be at least the block size ({block} bytes)",
            cli.pool_size
        );
    }
    let bytes = metadata_bytes(cli.pool_size, block, cli.max_thins);
    Ok(render(bytes, cli.unit, cli.numeric_only))
}

/// The answer line of the size estimators: `bytes` in `unit`, in the
/// form `-n` asks for (the cache estimator prints the same way).
pub(crate) fn render(bytes: u128, unit: Unit, numeric: Option<Option<Numeric>>) -> String {
    let value = format_value(bytes as f64 / unit.bytes as f64);
    match numeric {
        None => format!("{value} {}s", unit.long),
        Some(None) => value,
        Some(Some(Numeric::Short)) => format!("{value}{}", unit.short),
        Some(Some(Numeric::Long)) => format!("{value}{}s", unit.long),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_units() {
        assert_eq!(parse_size("128"), Ok(128 * 512));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
        assert!(parse_size("12q").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000000000000E").is_err());
        assert_eq!(format_value(1064.0), "1064");
        assert_eq!(format_value(0.549494784), "0.549494784");
        assert_eq!(format_value(524.0390625), "524.04");
    }
}
