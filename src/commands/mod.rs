//! The multi-call entry point: the tool is chosen by the name the binary
//! was invoked as (a link named `thin_check`), or by the first argument
//! (`dmpd thin_check ...`).

use std::ffi::OsString;
use std::path::Path;

use clap::Parser;

pub mod cache_check;
pub mod cache_dump;
pub mod cache_generate_damage;
pub mod cache_metadata_size;
pub mod cache_repair;
pub mod cache_restore;
pub mod cache_writeback;
pub mod era_check;
pub mod era_dump;
pub mod era_generate_damage;
pub mod era_invalidate;
pub mod era_repair;
pub mod era_restore;
mod install;
mod overwrite;
pub mod thin_check;
pub mod thin_delta;
pub mod thin_dump;
pub mod thin_generate_damage;
pub mod thin_ls;
pub mod thin_metadata_pack;
pub mod thin_metadata_size;
pub mod thin_metadata_unpack;
pub mod thin_migrate;
pub mod thin_repair;
pub mod thin_reserve_metadata_snap;
pub mod thin_restore;
pub mod thin_rmap;
pub mod thin_shrink;
pub mod thin_trim;

/// Exit status of every runtime failure, as the reference tools use it.
pub const EXIT_FAILURE: i32 = 64;

/// Exit status of a command-line error for most tools, as the reference.
pub const EXIT_USAGE: i32 = 2;

/// Exit status of a command-line error for the tools lvm2 runs to guard
/// activation and repair. lvm2 reads 2 from a checker as "not installed"
/// and activates the pool unchecked, so a mistyped option in lvm.conf
/// must not exit 2; 1 keeps it apart from damage (64).
pub const EXIT_CHECKER_USAGE: i32 = 1;

/// The tools whose command-line errors exit `EXIT_CHECKER_USAGE`.
pub const GUARD_TOOLS: &[&str] = &[
    "thin_check",
    "cache_check",
    "era_check",
    "thin_repair",
    "cache_repair",
    "era_repair",
];

/// The status a command-line error of `tool` exits with.
pub fn usage_status(tool: &str) -> i32 {
    if GUARD_TOOLS.contains(&tool) {
        EXIT_CHECKER_USAGE
    } else {
        EXIT_USAGE
    }
}

/// What installing dmpd (`dmpd install`, the Debian package, bin/) puts
/// on the system for a tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// A link named after the tool, its manual page and its completions:
    /// the names the reference tools install.
    Linked,
    /// Its manual page only: the reference installs no link for it, so it
    /// is run as `dmpd NAME`.
    Unlinked,
    /// A developer tool, run as `dmpd NAME`; nothing is installed for it.
    Developer,
}

pub struct Tool {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(Vec<OsString>) -> i32,
    /// The tool's command-line definition: completions and the test that
    /// holds its manual page to it are made from this.
    pub command: fn() -> clap::Command,
    /// The manual page, man/<name>.8 (built in, so `dmpd install` needs
    /// nothing but the binary).
    pub man: &'static str,
    pub install: Install,
}

/// One TOOLS entry: `tool!(name, Install, "about")` for a module `name`
/// with `run` and a clap `Cli`, and a manual page man/<name>.8.
macro_rules! tool {
    ($name:ident, $install:ident, $about:literal) => {
        Tool {
            name: stringify!($name),
            about: $about,
            run: $name::run,
            command: <$name::Cli as clap::CommandFactory>::command,
            man: include_str!(concat!("../../man/", stringify!($name), ".8")),
            install: Install::$install,
        }
    };
}

pub const TOOLS: &[Tool] = &[
    tool!(cache_check, Linked, "Validate dm-cache metadata"),
    tool!(cache_dump, Linked, "Dump dm-cache metadata as XML"),
    tool!(
        cache_generate_damage,
        Developer,
        "Damage healthy cache metadata in one named way (developer tool)"
    ),
    tool!(
        cache_metadata_size,
        Linked,
        "Estimate the metadata device a cache needs"
    ),
    tool!(
        cache_repair,
        Linked,
        "Salvage damaged dm-cache metadata into a new device or file"
    ),
    tool!(
        cache_restore,
        Linked,
        "Build binary cache metadata from XML"
    ),
    tool!(era_check, Linked, "Validate dm-era metadata"),
    tool!(era_dump, Linked, "Dump dm-era metadata as XML"),
    tool!(
        era_generate_damage,
        Developer,
        "Damage healthy era metadata in one named way (developer tool)"
    ),
    tool!(
        era_invalidate,
        Linked,
        "List the blocks of an era origin written since an era"
    ),
    tool!(
        era_repair,
        Unlinked,
        "Salvage damaged dm-era metadata into a new device or file"
    ),
    tool!(era_restore, Linked, "Build binary dm-era metadata from XML"),
    tool!(
        cache_writeback,
        Linked,
        "Write a cache's dirty blocks back to the origin device, offline"
    ),
    tool!(thin_check, Linked, "Validate thin-pool metadata"),
    tool!(
        thin_delta,
        Linked,
        "Print the differences between two thin devices' mappings"
    ),
    tool!(
        thin_dump,
        Linked,
        "Dump thin metadata as XML or a human-readable listing"
    ),
    tool!(
        thin_generate_damage,
        Developer,
        "Damage healthy metadata in one named way (developer tool)"
    ),
    tool!(
        thin_ls,
        Linked,
        "List thin devices with mapped, exclusive and shared blocks"
    ),
    tool!(
        thin_metadata_pack,
        Linked,
        "Pack a metadata device's metadata blocks into a compressed file"
    ),
    tool!(
        thin_metadata_size,
        Linked,
        "Estimate the metadata device a pool needs"
    ),
    tool!(
        thin_metadata_unpack,
        Linked,
        "Expand a pack file into a metadata device or file"
    ),
    tool!(
        thin_migrate,
        Linked,
        "Copy a thin volume's provisioned blocks out of its pool"
    ),
    tool!(
        thin_repair,
        Linked,
        "Salvage damaged thin metadata into a new device or file"
    ),
    tool!(
        thin_reserve_metadata_snap,
        Developer,
        "Take a metadata snapshot of offline metadata (developer tool)"
    ),
    tool!(thin_restore, Linked, "Build binary thin metadata from XML"),
    tool!(
        thin_rmap,
        Linked,
        "Show which thin devices map given data blocks"
    ),
    tool!(
        thin_shrink,
        Unlinked,
        "Shrink a pool's data size, moving the data beyond it"
    ),
    tool!(
        thin_trim,
        Linked,
        "Discard the data blocks an inactive pool does not use"
    ),
];

pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(tool) = find(&invoked) {
        return (tool.run)(args);
    }
    if invoked != "dmpd" && known_tool_name(&invoked) {
        // A link named after a tool this build lacks (an old package's
        // link left behind): name the link, not its first argument.
        eprintln!("dmpd: this build has no tool '{invoked}' (invoked through a link of that name)");
        eprint!("{}", usage());
        return EXIT_FAILURE;
    }
    // Invoked as dmpd (or under any other name): the tool is argument 1.
    // With none, or an unknown one, the status is the reference's 64.
    let Some(name) = args.get(1).map(|a| a.to_string_lossy().into_owned()) else {
        eprint!("{}", usage());
        return EXIT_FAILURE;
    };
    match name.as_str() {
        "-h" | "--help" => {
            print!("{}", usage());
            0
        }
        "-V" | "--version" => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            0
        }
        "install" => install::run(args[1..].to_vec()),
        _ => match find(&name) {
            Some(tool) => (tool.run)(args[1..].to_vec()),
            None => {
                eprintln!("dmpd: unknown tool '{name}'");
                eprint!("{}", usage());
                EXIT_FAILURE
            }
        },
    }
}

/// Names of the reference suite's tools and of dmpd's, so a link named
/// after one this build lacks is recognised as such.
fn known_tool_name(name: &str) -> bool {
    const FAMILIES: &[&str] = &["thin_", "cache_", "era_"];
    FAMILIES.iter().any(|f| name.starts_with(f))
}

fn usage() -> String {
    let mut s = String::from(
        "dmpd: tools for device-mapper thin, cache and era metadata\n\n\
         Usage: dmpd <TOOL> [ARGS]...   (or run a link named after the tool)\n\nTools:\n",
    );
    // Two spaces after the longest name, so no name runs into its text.
    let width = TOOLS.iter().map(|t| t.name.len()).max().unwrap_or(0) + 2;
    for t in TOOLS {
        s.push_str(&format!("  {:<width$}{}\n", t.name, t.about));
    }
    s.push_str(
        "\nInstalling: dmpd install [--prefix DIR] [--destdir DIR] [--uninstall] \
         (see dmpd install --help)\n",
    );
    s
}

/// The manual page of dmpd itself (and of `dmpd install`).
pub const DMPD_PAGE: &str = include_str!("../../man/dmpd.8");

/// dmpd's own command line, for completions: every tool (and install)
/// as a subcommand.
pub fn dmpd_command() -> clap::Command {
    let tools = TOOLS.iter().map(|t| (t.command)().about(t.about));
    clap::Command::new("dmpd")
        .about("Tools for device-mapper thin, cache and era metadata")
        .disable_version_flag(true)
        .arg(
            clap::Arg::new("version")
                .short('V')
                .long("version")
                .action(clap::ArgAction::SetTrue)
                .help("Print the version"),
        )
        .subcommands(tools)
        .subcommand(<install::Cli as clap::CommandFactory>::command())
}

/// Values a user supplies when the metadata does not say them, or to
/// raise what it says (thin_dump, thin_restore, thin_repair).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct OverrideArgs {
    /// Data block size in sectors (replaces the recorded one)
    #[arg(long, value_name = "SECTORS")]
    pub data_block_size: Option<u32>,

    /// Number of data blocks (at least this many)
    #[arg(long, value_name = "NUM")]
    pub nr_data_blocks: Option<u64>,

    /// Transaction id (at least this)
    #[arg(long, value_name = "NUM")]
    pub transaction_id: Option<u64>,
}

/// Parses a tool's command line. `-V`/`--version` alone prints the bare
/// version (lvm2 parses it) even when required arguments are missing.
/// On a parse error or help request, returns the exit status to use.
pub fn parse<C: Parser>(args: Vec<OsString>) -> Result<C, i32> {
    if args.len() == 2 && (args[1] == "-V" || args[1] == "--version") {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return Err(0);
    }
    let tool = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    C::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        match e.exit_code() {
            0 => 0,
            _ => usage_status(&tool),
        }
    })
}

/// Turns a tool's result into its exit status, printing the final error
/// unless the tool is quiet. A broken pipe ends the tool silently.
pub fn finish(result: anyhow::Result<()>, quiet: bool) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if !quiet && !broken_pipe {
                eprintln!("{e:#}");
            }
            EXIT_FAILURE
        }
    }
}
