//! Shell completions and man pages, generated from the clap definitions, cover every command.

mod common;

use std::process::Command;

use common::cli_help::all_commands;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");

#[test]
fn completions_name_every_command_for_every_shell() {
    let commands = all_commands();
    assert!(commands.len() > 25, "{commands:?}");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(BINARY)
            .args(["completions", shell])
            .output()
            .expect("run pvabridge completions");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for path in &commands {
            let name = path.last().unwrap();
            assert!(script.contains(name.as_str()), "{shell}: no {path:?}");
        }
    }
    let bad = Command::new(BINARY)
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
}

#[test]
fn man_writes_a_page_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BINARY)
        .arg("man")
        .arg(dir.path().join("man1"))
        .output()
        .expect("run pvabridge man");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages = vec![vec!["pvabridge".to_owned()]];
    pages.extend(all_commands().into_iter().map(|path| {
        let mut words = vec!["pvabridge".to_owned()];
        words.extend(path);
        words
    }));
    for words in pages {
        let page = dir
            .path()
            .join("man1")
            .join(format!("{}.1", words.join("-")));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(
            text.starts_with(".ie \\n(.g .ds Aq"),
            "{}: roff",
            page.display()
        );
        assert!(text.contains(".SH NAME"), "{}", page.display());
        assert!(text.contains(".SH OPTIONS"), "{}", page.display());
    }
}
