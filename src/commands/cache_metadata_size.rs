//! cache_metadata_size: estimate the metadata device a cache needs.

use std::ffi::OsString;

use anyhow::{bail, Result};
use clap::{ArgAction, Parser};

use super::thin_metadata_size::{parse_size, parse_unit, render, Numeric, Unit};
use crate::cache::metadata_size::metadata_bytes;

/// Estimate the size of a dm-cache metadata device
#[derive(Parser, Debug)]
#[command(name = "cache_metadata_size", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Cache block size, with an optional unit (default: sectors)
    #[arg(long, value_name = "SIZE[UNIT]", requires = "device_size", conflicts_with = "nr_blocks", value_parser = parse_size)]
    block_size: Option<u128>,

    /// Size of the fast (cache) device, with an optional unit (default: sectors)
    #[arg(long, value_name = "SIZE[UNIT]", requires = "block_size", conflicts_with = "nr_blocks", value_parser = parse_size)]
    device_size: Option<u128>,

    /// Largest hint a policy stores, in bytes
    #[arg(long, value_name = "BYTES", default_value = "4")]
    max_hint_width: u32,

    /// Number of cache blocks (instead of --device-size and --block-size)
    #[arg(long, value_name = "NUM")]
    nr_blocks: Option<u64>,

    /// Print the number only (=short adds the unit letter, =long the unit name)
    #[arg(short = 'n', long, value_name = "short|long", num_args = 0..=1, require_equals = true, default_missing_value = None)]
    numeric_only: Option<Option<Numeric>>,

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

fn answer(cli: &Cli) -> Result<String> {
    const MIN_BLOCK: u128 = 32 * 1024;
    const MAX_BLOCK: u128 = 1 << 30;
    let nr_blocks = match (cli.nr_blocks, cli.device_size, cli.block_size) {
        (Some(n), _, _) => n,
        (None, Some(device), Some(block)) => {
            if block == 0 || !block.is_multiple_of(MIN_BLOCK) || block > MAX_BLOCK {
                bail!(
                    "block size must be a non-zero multiple of 32 KiB, at most 1 GiB \
                     ({block} bytes given)"
                );
            }
            if device < block {
                bail!(
                    "device size ({device} bytes) must be at least the block size ({block} bytes)"
                );
            }
            u64::try_from(device.div_ceil(block))?
        }
        _ => bail!(
            "give the cache's size as --device-size and --block-size, or its number of blocks \
             as --nr-blocks"
        ),
    };
    Ok(render(
        metadata_bytes(nr_blocks, cli.max_hint_width),
        cli.unit,
        cli.numeric_only,
    ))
}
