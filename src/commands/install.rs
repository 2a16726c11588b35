//! `dmpd install`: puts dmpd on the system as its thin-provisioning-tools.
//! The binary, a link per tool the reference installs, the manual pages
//! and bash, zsh and fish completions, all from the TOOLS table, so a tool
//! that lands is installed with nothing else to edit. The Debian package
//! is built from what this writes under a staging root (.ci/deb).
//!
//! Why a subcommand rather than a Makefile: the binary already knows its
//! tools, their manual pages (built in) and their clap definitions
//! (completions), so nothing has to be listed twice, and it installs
//! from wherever the binary is, with no source tree or make at hand.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};
use clap_complete::Shell;

use super::{dmpd_command, Install, DMPD_PAGE, TOOLS};

/// Install dmpd as the system's thin-provisioning-tools
#[derive(Parser, Debug)]
#[command(
    name = "install",
    bin_name = "dmpd install",
    disable_version_flag = true
)]
pub(crate) struct Cli {
    /// Installation prefix [default: $PREFIX, else /usr/local]
    #[arg(long, value_name = "DIR")]
    prefix: Option<PathBuf>,

    /// Staging root put before every path, for packaging [default: $DESTDIR]
    #[arg(long, value_name = "DIR")]
    destdir: Option<PathBuf>,

    /// Directory of the binary and the tools' links [default: PREFIX/sbin]
    #[arg(long, value_name = "DIR")]
    sbindir: Option<PathBuf>,

    /// Directory of manual pages and completions [default: PREFIX/share]
    #[arg(long, value_name = "DIR")]
    datadir: Option<PathBuf>,

    /// Directory of zsh completions [default: DATADIR/zsh/site-functions]
    #[arg(long, value_name = "DIR")]
    zsh_dir: Option<PathBuf>,

    /// Leave the binary out (a package builder adds it itself)
    #[arg(long)]
    no_binary: bool,

    /// Replace tools that are not dmpd's (another package's thin_check)
    #[arg(long)]
    force: bool,

    /// Remove what install puts there instead
    #[arg(long)]
    uninstall: bool,

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

/// What one installed path holds.
enum Content {
    /// A copy of the running binary.
    Binary,
    /// A symbolic link to dmpd, beside it.
    Link,
    /// A data file (manual page, completion script).
    Data(Vec<u8>),
}

struct Entry {
    /// The path on the installed system (without DESTDIR).
    path: PathBuf,
    content: Content,
}

/// The directories everything goes to, as seen on the installed system.
struct Layout {
    sbin: PathBuf,
    man8: PathBuf,
    bash: PathBuf,
    zsh: PathBuf,
    fish: PathBuf,
}

impl Layout {
    fn new(cli: &Cli) -> Layout {
        let prefix = cli
            .prefix
            .clone()
            .or_else(|| std::env::var_os("PREFIX").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/usr/local"));
        let data = cli.datadir.clone().unwrap_or_else(|| prefix.join("share"));
        Layout {
            sbin: cli.sbindir.clone().unwrap_or_else(|| prefix.join("sbin")),
            man8: data.join("man/man8"),
            bash: data.join("bash-completion/completions"),
            zsh: cli
                .zsh_dir
                .clone()
                .unwrap_or_else(|| data.join("zsh/site-functions")),
            fish: data.join("fish/vendor_completions.d"),
        }
    }
}

/// A completion script for the command `cmd`, run by the name `name`.
fn completion(shell: Shell, mut cmd: clap::Command, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// Everything install writes, in the order it writes it.
fn plan(layout: &Layout, binary: bool) -> Vec<Entry> {
    let mut entries = Vec::new();
    if binary {
        entries.push(Entry {
            path: layout.sbin.join("dmpd"),
            content: Content::Binary,
        });
    }
    let linked = TOOLS.iter().filter(|t| t.install == Install::Linked);
    for t in linked.clone() {
        entries.push(Entry {
            path: layout.sbin.join(t.name),
            content: Content::Link,
        });
    }
    let pages = TOOLS
        .iter()
        .filter(|t| t.install != Install::Developer)
        .map(|t| (t.name, t.man));
    for (name, page) in std::iter::once(("dmpd", DMPD_PAGE)).chain(pages) {
        entries.push(Entry {
            path: layout.man8.join(format!("{name}.8")),
            content: Content::Data(page.as_bytes().to_vec()),
        });
    }
    let commands =
        std::iter::once(("dmpd", dmpd_command())).chain(linked.map(|t| (t.name, (t.command)())));
    for (name, cmd) in commands {
        for (shell, path) in [
            (Shell::Bash, layout.bash.join(name)),
            (Shell::Zsh, layout.zsh.join(format!("_{name}"))),
            (Shell::Fish, layout.fish.join(format!("{name}.fish"))),
        ] {
            entries.push(Entry {
                path,
                content: Content::Data(completion(shell, cmd.clone(), name)),
            });
        }
    }
    entries
}

/// `root` + `path`, however absolute `path` is.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Whether `path` is a link to dmpd (what install makes).
fn is_our_link(path: &Path) -> bool {
    std::fs::read_link(path).is_ok_and(|t| t.file_name().is_some_and(|n| n == "dmpd"))
}

/// Paths install must not overwrite: tools that are not links to dmpd,
/// manual pages another package installed compressed.
fn foreign(entries: &[Entry], root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in entries {
        let at = under(root, &e.path);
        match e.content {
            Content::Link if std::fs::symlink_metadata(&at).is_ok() && !is_our_link(&at) => {
                found.push(at);
            }
            Content::Data(_) if e.path.extension().is_some_and(|x| x == "8") => {
                let mut gz = at.into_os_string();
                gz.push(".gz");
                if Path::new(&gz).exists() {
                    found.push(gz.into());
                }
            }
            _ => {}
        }
    }
    found
}

/// Writes one entry next to its place, then renames it there, so a
/// running binary or an interrupted install never leaves half a file.
fn put(e: &Entry, at: &Path, exe: &Path) -> Result<()> {
    let dir = at.parent().context("an installed path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = at.file_name().context("an installed path has a name")?;
    let tmp = dir.join(format!(".{}.dmpd-install", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    match &e.content {
        Content::Link => std::os::unix::fs::symlink("dmpd", &tmp)?,
        Content::Binary => {
            std::fs::copy(exe, &tmp)
                .with_context(|| format!("cannot copy {} to {}", exe.display(), tmp.display()))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::fs::File::open(&tmp)?.sync_all()?;
        }
        Content::Data(bytes) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, at).with_context(|| format!("cannot put {} in place", at.display()))?;
    Ok(())
}

fn run_cli(cli: Cli) -> Result<()> {
    let layout = Layout::new(&cli);
    let root = cli
        .destdir
        .clone()
        .or_else(|| std::env::var_os("DESTDIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    if cli.uninstall {
        return uninstall(&plan(&layout, true), &root);
    }
    let exe = std::env::current_exe().context("cannot find the running binary")?;
    let entries = plan(&layout, !cli.no_binary);
    let clash = foreign(&entries, &root);
    if !clash.is_empty() && !cli.force {
        let list: Vec<String> = clash.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "not installing: {} belong to another package (a distribution's \
             thin-provisioning-tools?); remove it first, choose another --prefix, or \
             pass --force to replace them",
            list.join(", ")
        );
    }
    for e in &entries {
        let at = under(&root, &e.path);
        put(e, &at, &exe)?;
        match e.content {
            Content::Link => say(&format!("{} -> dmpd", at.display()))?,
            _ => say(&at.display().to_string())?,
        }
    }
    Ok(())
}

/// One line of the list of what was done (a closed pipe ends it quietly).
fn say(line: &str) -> Result<()> {
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// Removes what install wrote, the binary last; links are removed only
/// if they lead to dmpd.
fn uninstall(entries: &[Entry], root: &Path) -> Result<()> {
    for e in entries.iter().rev() {
        let at = under(root, &e.path);
        let present = std::fs::symlink_metadata(&at).is_ok();
        let ours = match e.content {
            Content::Link => is_our_link(&at),
            _ => present,
        };
        if present && ours {
            std::fs::remove_file(&at).with_context(|| format!("cannot remove {}", at.display()))?;
            say(&format!("removed {}", at.display()))?;
        }
    }
    Ok(())
}
