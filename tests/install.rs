//! `dmpd install` into a scratch root: the binary, a link per installed
//! tool, manual pages and completions, all from the TOOLS table; refusing
//! another package's tools; uninstalling. And bin/, the checkout's links.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use dmpd::commands::{Install, DMPD_PAGE, TOOLS};

fn install(args: &[&str]) -> std::process::Output {
    dmpd().arg("install").args(args).output().unwrap()
}

fn linked() -> impl Iterator<Item = &'static dmpd::commands::Tool> {
    TOOLS.iter().filter(|t| t.install == Install::Linked)
}

/// Every file and link under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// The paths an install under prefix /usr makes, as the TOOLS table says.
fn expected_paths() -> Vec<String> {
    let mut want = vec!["usr/sbin/dmpd".to_string()];
    let mut completed = vec!["dmpd"];
    for t in linked() {
        want.push(format!("usr/sbin/{}", t.name));
        completed.push(t.name);
    }
    want.push("usr/share/man/man8/dmpd.8".into());
    for t in TOOLS.iter().filter(|t| t.install != Install::Developer) {
        want.push(format!("usr/share/man/man8/{}.8", t.name));
    }
    for name in completed {
        want.push(format!("usr/share/bash-completion/completions/{name}"));
        want.push(format!("usr/share/zsh/site-functions/_{name}"));
        want.push(format!("usr/share/fish/vendor_completions.d/{name}.fish"));
    }
    want.sort();
    want
}

#[test]
fn install_puts_binary_links_pages_and_completions_under_destdir() {
    let s = Scratch::new("install");
    let root = s.path("root");
    let o = install(&["--prefix", "/usr", "--destdir", root.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(tree(&root), expected_paths());

    let sbin = root.join("usr/sbin");
    let binary = std::fs::read(sbin.join("dmpd")).unwrap();
    assert!(binary == std::fs::read(env!("CARGO_BIN_EXE_dmpd")).unwrap());
    for t in linked() {
        let link = sbin.join(t.name);
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("dmpd"));
        let o = Command::new(&link).arg("-V").output().unwrap();
        assert_eq!(
            stdout(&o),
            format!("{}\n", env!("CARGO_PKG_VERSION")),
            "{}",
            t.name
        );
        assert_eq!(code(&o), 0);
    }
    // Only the tools reachable as `dmpd NAME` are run that way.
    for t in TOOLS.iter().filter(|t| t.install != Install::Linked) {
        assert!(!sbin.join(t.name).exists(), "{}", t.name);
    }
    let man8 = root.join("usr/share/man/man8");
    assert_eq!(
        std::fs::read_to_string(man8.join("dmpd.8")).unwrap(),
        DMPD_PAGE
    );
    for t in TOOLS.iter().filter(|t| t.install != Install::Developer) {
        let page = std::fs::read_to_string(man8.join(format!("{}.8", t.name))).unwrap();
        assert_eq!(page, t.man, "{}", t.name);
    }
    // What it printed is what it wrote, one line each.
    assert_eq!(stdout(&o).lines().count(), expected_paths().len());

    // Installing again replaces everything in place.
    let again = install(&["--prefix", "/usr", "--destdir", root.to_str().unwrap()]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(tree(&root), expected_paths());
}

#[test]
fn install_honours_prefix_and_destdir_from_the_environment_and_directory_options() {
    let s = Scratch::new("install-env");
    let root = s.path("root");
    let o = dmpd()
        .arg("install")
        .env("PREFIX", "/opt/dm")
        .env("DESTDIR", &root)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let want: Vec<String> = expected_paths()
        .iter()
        .map(|p| p.replacen("usr/", "opt/dm/", 1))
        .collect();
    assert_eq!(tree(&root), want);

    let other = s.path("other");
    let o = install(&[
        "--destdir",
        other.to_str().unwrap(),
        "--prefix",
        "/usr",
        "--sbindir",
        "/sbin",
        "--zsh-dir",
        "/usr/share/zsh/vendor-completions",
        "--no-binary",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = tree(&other);
    assert!(got.contains(&"sbin/thin_check".to_string()), "{got:?}");
    assert!(!got.contains(&"sbin/dmpd".to_string()), "{got:?}");
    assert!(got.contains(&"usr/share/zsh/vendor-completions/_thin_check".to_string()));
    assert_eq!(got.len(), expected_paths().len() - 1);
}

#[test]
fn install_refuses_another_packages_tools_and_writes_nothing() {
    let s = Scratch::new("install-foreign");
    let root = s.path("root");
    let sbin = root.join("usr/sbin");
    std::fs::create_dir_all(&sbin).unwrap();
    // As Debian's thin-provisioning-tools installs them.
    std::fs::write(sbin.join("pdata_tools"), b"not dmpd").unwrap();
    std::os::unix::fs::symlink("pdata_tools", sbin.join("thin_check")).unwrap();
    let before = tree(&root);
    let o = install(&["--prefix", "/usr", "--destdir", root.to_str().unwrap()]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("thin_check"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(tree(&root), before);

    // A compressed page of another package is refused the same way.
    let man8 = s.path("man/usr/share/man/man8");
    std::fs::create_dir_all(&man8).unwrap();
    std::fs::write(man8.join("thin_dump.8.gz"), b"page").unwrap();
    let o = install(&[
        "--prefix",
        "/usr",
        "--destdir",
        s.path("man").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("thin_dump.8.gz"), "{}", stderr(&o));

    let o = install(&[
        "--prefix",
        "/usr",
        "--destdir",
        root.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_link(sbin.join("thin_check")).unwrap(),
        PathBuf::from("dmpd")
    );
}

#[test]
fn uninstall_removes_what_install_wrote_and_leaves_others_alone() {
    let s = Scratch::new("uninstall");
    let root = s.path("root");
    let dest = root.to_str().unwrap();
    let o = install(&["--prefix", "/usr", "--destdir", dest]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // A link someone else made since is kept.
    let sbin = root.join("usr/sbin");
    std::fs::remove_file(sbin.join("thin_ls")).unwrap();
    std::os::unix::fs::symlink("elsewhere", sbin.join("thin_ls")).unwrap();
    std::fs::write(sbin.join("unrelated"), b"x").unwrap();
    let o = install(&["--prefix", "/usr", "--destdir", dest, "--uninstall"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(tree(&root), vec!["usr/sbin/thin_ls", "usr/sbin/unrelated"]);
    // The binary goes last, after every link to it.
    assert!(stdout(&o)
        .lines()
        .last()
        .unwrap()
        .ends_with("usr/sbin/dmpd"));
}

#[test]
fn bash_completion_completes_options_and_tools() {
    if Command::new("bash").arg("--version").output().is_err() {
        println!("skipped: bash is not installed");
        return;
    }
    let s = Scratch::new("install-bash");
    let root = s.path("root");
    let o = install(&[
        "--prefix",
        "/usr",
        "--destdir",
        root.to_str().unwrap(),
        "--no-binary",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let dir = root.join("usr/share/bash-completion/completions");
    let complete = |file: &str, words: &str| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _{file} \"${{COMP_WORDS[0]}}\" \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            dir.join(file).display()
        );
        let o = Command::new("bash").arg("-c").arg(script).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_string()
    };
    assert_eq!(
        complete("thin_check", "thin_check --clear"),
        "--clear-needs-check-flag"
    );
    assert_eq!(complete("thin_dump", "thin_dump --fl"), "--flat");
    assert_eq!(complete("dmpd", "dmpd thin_sh"), "thin_shrink");
    assert_eq!(
        complete("dmpd", "dmpd thin_check --skip"),
        "--skip-mappings"
    );
}

#[test]
fn zsh_and_fish_completions_parse() {
    let s = Scratch::new("install-shells");
    let root = s.path("root");
    let o = install(&[
        "--prefix",
        "/usr",
        "--destdir",
        root.to_str().unwrap(),
        "--no-binary",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for (shell, dir, file) in [
        ("zsh", "usr/share/zsh/site-functions", "_{}"),
        ("fish", "usr/share/fish/vendor_completions.d", "{}.fish"),
    ] {
        if Command::new(shell).arg("--version").output().is_err() {
            println!("skipped: {shell} is not installed");
            continue;
        }
        for name in std::iter::once("dmpd").chain(linked().map(|t| t.name)) {
            let path = root.join(dir).join(file.replace("{}", name));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(name), "{}", path.display());
            let o = Command::new(shell).arg("-n").arg(&path).output().unwrap();
            assert!(
                o.status.success(),
                "{shell} -n {}: {}",
                path.display(),
                stderr(&o)
            );
        }
    }
}

#[test]
fn bin_holds_a_link_for_every_installed_tool_and_no_other() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("bin");
    let mut want: Vec<String> = std::iter::once("dmpd")
        .chain(linked().map(|t| t.name))
        .map(String::from)
        .collect();
    want.sort();
    assert_eq!(tree(&bin), want);
    for name in &want {
        let target = std::fs::read_link(bin.join(name)).unwrap();
        assert_eq!(
            target,
            PathBuf::from("../target/release/dmpd"),
            "bin/{name}"
        );
    }
}

#[test]
fn dmpd_page_names_every_tool_as_it_is_installed() {
    let text = DMPD_PAGE.replace('\n', " ");
    let paragraph = |start: &str, end: &str| -> Vec<String> {
        let from = text.find(start).unwrap_or_else(|| panic!("{start}")) + start.len();
        let to = from + text[from..].find(end).unwrap();
        let mut names: Vec<String> = text[from..to]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.contains('_'))
            .map(String::from)
            .collect();
        names.sort();
        names
    };
    let of = |kind: Install| -> Vec<String> {
        let mut v: Vec<String> = TOOLS
            .iter()
            .filter(|t| t.install == kind)
            .map(|t| t.name.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        paragraph("as the reference tools install them:", ".PP"),
        of(Install::Linked)
    );
    assert_eq!(
        paragraph("as with the reference):", "Developer tools"),
        of(Install::Unlinked)
    );
    assert_eq!(
        paragraph("Developer tools, also run that way:", ".PP"),
        of(Install::Developer)
    );
}

#[test]
fn readme_names_every_tool_as_it_is_run() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // The first column of the tool table: `name` for a linked tool,
    // `dmpd name` for one run through dmpd.
    let mut listed = Vec::new();
    for row in readme.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        for name in first.split(',').map(|n| n.trim().trim_matches('`')) {
            listed.push(name.to_string());
        }
    }
    for t in TOOLS {
        let (want, other) = match t.install {
            Install::Linked => (t.name.to_string(), format!("dmpd {}", t.name)),
            _ => (format!("dmpd {}", t.name), t.name.to_string()),
        };
        if t.install == Install::Developer {
            assert!(
                readme.contains(&format!("`{want}`")),
                "README does not name `{want}`"
            );
        } else {
            assert!(
                listed.contains(&want),
                "README's tool table lacks `{want}`: {listed:?}"
            );
        }
        assert!(!listed.contains(&other), "README's table lists `{other}`");
    }
    for name in &listed {
        let bare = name.trim_start_matches("dmpd ");
        assert!(
            TOOLS.iter().any(|t| t.name == bare),
            "README lists `{name}`, not a tool"
        );
    }
}
