//! The command line itself: exit codes of refused command lines, and the shell completions and
//! man page generated from the clap definitions.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::process::{Command, Output};

fn idbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(args)
        .env_remove("IDBRIDGE_CONFIG")
        .env_remove("IDBRIDGE_ROUTE")
        .output()
        .unwrap()
}

/// Every subcommand `idbridge --help` lists.
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(idbridge(&["--help"]).stdout).unwrap();
    let commands = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap()
        .to_owned();
    let names: Vec<String> = commands
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 12, "{help}");
    names
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        &["no-such-command"][..],
        &["token", "--no-such-flag"],
        &["explain", "--format", "yaml"],
        &[],
    ] {
        let out = idbridge(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    for args in [&["--help"][..], &["--version"], &["explain", "--help"]] {
        let out = idbridge(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn bash_completion_script_is_valid_bash_and_knows_every_subcommand() {
    let out = idbridge(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idbridge.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    for sub in subcommands() {
        assert!(script.contains(&sub), "{sub} missing from the completions");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = idbridge(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn man_page_has_every_subcommand() {
    let out = idbridge(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH idbridge 1"), "{page}");
    for sub in subcommands() {
        let heading = format!(".SH \"IDBRIDGE {}\"", sub.to_uppercase());
        assert!(page.contains(&heading), "{heading} missing");
    }
    // A flag of a subcommand is documented under it.
    assert!(page.contains("aws\\-trust\\-policy"), "explain's flags");
}
