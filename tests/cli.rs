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
