mod common;
use common::*;

#[test]
fn unknown_tool_is_refused_with_the_list() {
    let o = dmpd().arg("thin_frobnicate").output().unwrap();
    assert_eq!(code(&o), 64);
    assert!(stderr(&o).contains("unknown tool 'thin_frobnicate'"));
    assert!(stderr(&o).contains("thin_check"));
}

#[test]
fn help_lists_the_tools() {
    let o = dmpd().arg("--help").output().unwrap();
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("thin_check"));
}

#[test]
fn help_aligns_every_description_after_the_longest_name() {
    let o = dmpd().arg("--help").output().unwrap();
    let text = stdout(&o);
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Tools:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    let names: Vec<&str> = dmpd::commands::TOOLS.iter().map(|t| t.name).collect();
    assert_eq!(listed.len(), names.len(), "{text}");
    let longest = names.iter().map(|n| n.len()).max().unwrap();
    for (line, tool) in listed.iter().zip(dmpd::commands::TOOLS) {
        let (name, about) = line[2..].split_at(longest + 2);
        assert_eq!(name.trim_end(), tool.name, "{line}");
        assert!(name.ends_with("  "), "name runs into its text: {line}");
        assert_eq!(about, tool.about, "{line}");
    }
}
