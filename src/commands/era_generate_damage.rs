//! era_generate_damage (developer tool): damage healthy era metadata in
//! one precise, named way, for tests and for trying the other tools.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, Parser};

use crate::era::check::{check, CheckOptions};
use crate::era::damage::EraDamage;
use crate::io::source::{BlockSource, OpenOptions};
use crate::report::{Mode, Reporter};

/// Damage healthy era metadata in one named way (developer tool)
#[derive(Parser, Debug)]
#[command(name = "era_generate_damage", disable_version_flag = true)]
pub(crate) struct Cli {
    /// Metadata file to damage in place (must check clean first)
    #[arg(value_name = "INPUT", required_unless_present = "list")]
    input: Option<PathBuf>,

    /// The damage to make (see --list)
    #[arg(long, value_name = "NAME", required_unless_present = "list")]
    kind: Option<String>,

    /// List the kinds of damage
    #[arg(long)]
    list: bool,

    /// Print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue, exclusive = true)]
    version: bool,
}

pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match super::parse::<Cli>(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    super::finish(run_cli(cli), false)
}

fn run_cli(cli: Cli) -> Result<()> {
    if cli.list {
        for d in EraDamage::ALL {
            println!("{}", d.name());
        }
        return Ok(());
    }
    let path = cli.input.context("no input given")?;
    let name = cli.kind.context("no --kind given")?;
    let damage = EraDamage::from_name(&name)
        .ok_or_else(|| anyhow!("unknown damage '{name}' (see --list)"))?;
    {
        let src = BlockSource::open(&path, OpenOptions { exclusive: true })?;
        if src.is_decompressed() {
            bail!("cannot damage a compressed image in place");
        }
        let r = check(
            &src,
            &CheckOptions::default(),
            &Reporter::with_mode(Mode::Quiet),
        );
        if !r.passed(false) {
            bail!(
                "'{}' does not check clean; damage only healthy metadata",
                path.display()
            );
        }
    }
    let mut image = std::fs::read(&path)?;
    let block = damage.apply(&mut image).map_err(|e| anyhow!(e))?;
    std::fs::write(&path, &image)?;
    println!("{} at block {block}", damage.name());
    Ok(())
}
