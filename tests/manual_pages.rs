//! Every tool's manual page and `--help` against its clap definition: an
//! option can neither be missing from them nor linger after it is gone.

mod common;
use common::*;

use std::collections::BTreeSet;

use dmpd::commands::{dmpd_command, usage_status, Install, DMPD_PAGE, TOOLS};

/// Options the reference accepts on most tools and hides from `--help`
/// (tools.md §1.2); nothing else may be hidden.
const HIDDEN: &[&str] = &["-v", "--io-engine"];

/// The spellings of one tool's options: visible ones (which the page and
/// `--help` must show) and hidden ones (which the page may show).
struct Spellings {
    visible: BTreeSet<String>,
    hidden: BTreeSet<String>,
    /// Value names of the visible positional arguments.
    positionals: Vec<String>,
}

fn spellings(mut cmd: clap::Command) -> Spellings {
    cmd.build();
    let mut s = Spellings {
        visible: BTreeSet::new(),
        hidden: BTreeSet::new(),
        positionals: Vec::new(),
    };
    for arg in cmd.get_arguments() {
        if arg.is_positional() {
            if !arg.is_hide_set() {
                let names = arg.get_value_names().unwrap_or_default();
                s.positionals.extend(names.iter().map(|n| n.to_string()));
            }
            continue;
        }
        let mut shown: Vec<String> = arg
            .get_short()
            .map(|c| format!("-{c}"))
            .into_iter()
            .collect();
        shown.extend(arg.get_long().map(|l| format!("--{l}")));
        shown.extend(
            arg.get_visible_aliases()
                .unwrap_or_default()
                .iter()
                .map(|a| format!("--{a}")),
        );
        shown.extend(
            arg.get_visible_short_aliases()
                .unwrap_or_default()
                .iter()
                .map(|c| format!("-{c}")),
        );
        // Aliases clap hides may be documented, need not be.
        let mut hidden: Vec<String> = arg
            .get_all_aliases()
            .unwrap_or_default()
            .iter()
            .map(|a| format!("--{a}"))
            .collect();
        hidden.extend(
            arg.get_all_short_aliases()
                .unwrap_or_default()
                .iter()
                .map(|c| format!("-{c}")),
        );
        hidden.retain(|h| !shown.contains(h));
        if arg.is_hide_set() {
            hidden.append(&mut shown);
        }
        s.visible.extend(shown);
        s.hidden.extend(hidden);
    }
    s
}

/// Roff text with the escapes the pages use undone: `\-` is `-`, font
/// changes and `\&` vanish.
fn plain(roff: &str) -> String {
    let mut out = String::new();
    let mut chars = roff.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('-') => out.push('-'),
            Some('f') => {
                chars.next();
            }
            Some('&') | None => {}
            Some(other) => out.push(other),
        }
    }
    out
}

/// The option spellings in a piece of text: `--word` and `-x` tokens.
fn options_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || ",[]=\"|().…".contains(c))
        .filter(|w| {
            let long = w.len() > 2
                && w.starts_with("--")
                && w[2..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            let short = w.len() == 2
                && w.starts_with('-')
                && w[1..].chars().all(|c| c.is_ascii_alphanumeric());
            long || short
        })
        .map(str::to_string)
        .collect()
}

/// The lines of section `name` (`.SH NAME` up to the next `.SH`).
fn section<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
    page.lines()
        .skip_while(|l| l.trim() != format!(".SH {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with(".SH "))
        .collect()
}

/// The options a page's OPTIONS section lists: the tag line after each `.TP`.
fn page_options(page: &str) -> BTreeSet<String> {
    let lines = section(page, "OPTIONS");
    let mut found = BTreeSet::new();
    for pair in lines.windows(2) {
        if pair[0].trim() == ".TP" {
            found.extend(options_in(&plain(pair[1])));
        }
    }
    found
}

/// What is wrong with the manual page of `name` against its command.
fn page_problems(name: &str, cmd: clap::Command, page: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let want = spellings(cmd);
    let listed = page_options(page);
    if listed.is_empty() {
        problems.push(format!("man/{name}.8 has no OPTIONS section"));
        return problems;
    }
    for o in want.visible.difference(&listed) {
        problems.push(format!("man/{name}.8 does not list {o}"));
    }
    for o in listed.difference(&want.visible) {
        if !want.hidden.contains(o) {
            problems.push(format!(
                "man/{name}.8 lists {o}, which {name} does not have"
            ));
        }
    }
    let synopsis = plain(&section(page, "SYNOPSIS").join(" "));
    for p in &want.positionals {
        if !synopsis.contains(p.as_str()) {
            problems.push(format!(
                "man/{name}.8's SYNOPSIS does not name the argument {p}"
            ));
        }
    }
    let title = format!(".TH {} 8", name.to_uppercase());
    if !page.starts_with(&title) {
        problems.push(format!("man/{name}.8 does not start with {title}"));
    }
    problems
}

#[test]
fn every_manual_page_lists_exactly_its_tools_options() {
    let mut problems = Vec::new();
    for tool in TOOLS {
        problems.extend(page_problems(tool.name, (tool.command)(), tool.man));
    }
    // dmpd's own page documents `dmpd install`.
    let install = dmpd_command().find_subcommand("install").unwrap().clone();
    problems.extend(page_problems("dmpd", install, DMPD_PAGE));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_manual_page_gives_the_status_of_a_command_line_error() {
    let pages = TOOLS
        .iter()
        .map(|t| (t.name, t.man))
        .chain([("install", DMPD_PAGE)]);
    for (name, page) in pages {
        let text: Vec<String> = section(page, "EXIT STATUS")
            .iter()
            .filter(|l| !matches!(l.trim(), ".TP" | ".PP"))
            .map(|l| plain(l.trim_start_matches(".B ")).to_lowercase())
            .collect();
        let text = text.join(" ");
        let want = format!("{} for a command-line error", usage_status(name));
        assert!(text.contains(&want), "{name}: '{want}' not in: {text}");
    }
}

#[test]
fn the_page_parser_finds_tags_and_skips_prose() {
    let page = ".TH X 8\n.SH OPTIONS\n.TP\n.BI \\-f \", \" \\-\\-format \" xml|human\"\n\
                text naming \\-\\-other\n.TP\n.BR \\-m \", \" \\-\\-metadata\\-snap [ =\\fIBLOCKNR\\fR ]\n\
                .SH EXIT STATUS\n.TP\n.B \\-\\-not\\-an\\-option\n";
    let want: BTreeSet<String> = ["-f", "--format", "-m", "--metadata-snap"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(page_options(page), want);
}

#[test]
fn help_of_every_tool_lists_every_option_it_does_not_hide_for_compatibility() {
    let mut problems = Vec::new();
    for tool in TOOLS {
        let want = spellings((tool.command)());
        for o in &want.hidden {
            if !HIDDEN.contains(&o.as_str()) {
                problems.push(format!("{} hides {o} from --help", tool.name));
            }
        }
        let o = run(tool.name, &["--help"]);
        assert_eq!(code(&o), 0, "{} --help: {}", tool.name, stderr(&o));
        let shown = options_in(&stdout(&o));
        for opt in want.visible.difference(&shown) {
            problems.push(format!("{} --help does not show {opt}", tool.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_tool_that_installs_a_page_has_one_in_man() {
    // The built-in page is the file in man/, which `dmpd install` and the
    // Debian package install.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for tool in TOOLS {
        let file = std::fs::read_to_string(dir.join(format!("{}.8", tool.name))).unwrap();
        assert_eq!(file, tool.man, "{}", tool.name);
    }
    assert!(TOOLS.iter().any(|t| t.install == Install::Linked));
}

#[test]
fn every_manual_page_formats_without_warnings() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    if std::process::Command::new("groff")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: groff is not installed");
        return;
    }
    for name in TOOLS.iter().map(|t| t.name).chain(["dmpd"]) {
        let o = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(format!("{name}.8")))
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "man/{name}.8: {}",
            stderr(&o)
        );
    }
}
