//! What `pvabridge ... --help` says: the subcommands of a command and whether a command line
//! names one with options it has (for the tests of the compose file, completions and man pages).

use std::collections::BTreeSet;
use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");

/// `pvabridge WORDS... --help`, which must succeed.
pub fn help(words: &[&str]) -> String {
    let out = Command::new(BINARY)
        .args(words)
        .arg("--help")
        .output()
        .expect("run pvabridge --help");
    assert!(
        out.status.success(),
        "pvabridge {} is not a command: {}",
        words.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommand names `--help` lists under "Commands:".
pub fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path below `pvabridge` (e.g. `["dm", "get-job"]`), nested ones included.
pub fn all_commands() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        for name in subcommands(&help(&words)) {
            let mut sub = path.clone();
            sub.push(name);
            todo.push(sub.clone());
            found.push(sub);
        }
    }
    found.sort();
    found
}

/// Check that `args` (what follows `pvabridge`) names a subcommand and uses only its options.
pub fn check_command(args: &[String], context: &str) {
    assert!(!args.is_empty(), "{context}: no subcommand");
    let mut path: Vec<&str> = Vec::new();
    let mut text = help(&[]);
    for word in args {
        if subcommands(&text).contains(word.as_str()) {
            path.push(word);
            text = help(&path);
        } else {
            break;
        }
    }
    assert!(
        !path.is_empty(),
        "{context}: {:?} is not a pvabridge subcommand",
        args[0]
    );
    let short = |a: &&String| a.len() == 2 && a.starts_with('-') && a != &"--";
    for flag in args.iter().filter(|a| a.starts_with("--") || short(a)) {
        let name = flag.split('=').next().unwrap();
        assert!(
            text.split_whitespace()
                .any(|word| word.trim_end_matches(',') == name),
            "{context}: pvabridge {} has no option {name}",
            path.join(" ")
        );
    }
}
