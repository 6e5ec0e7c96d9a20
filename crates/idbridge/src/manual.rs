//! `idbridge completions SHELL` and `idbridge man`: shell completion scripts and the manual
//! page, both generated from the clap definitions in [`crate::cli`] (clap_complete,
//! clap_mangen), so that `--help`, the completions and the man page list the same commands
//! and flags.

use std::io::Write as _;
use std::process::ExitCode;

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs};
use crate::error::CliError;

/// Writes the completion script for `a.shell` to stdout.
pub(crate) fn completions(a: &CompletionsArgs) -> Result<ExitCode, CliError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "idbridge", &mut out);
    write_stdout(&out)
}

/// Writes `idbridge(1)` to stdout: the top-level page with a section per subcommand.
pub(crate) fn man() -> Result<ExitCode, CliError> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    render_man(&cmd, &mut out).map_err(|e| CliError::Failed(format!("man: {e}")))?;
    write_stdout(&out)
}

/// The page of `cmd`, then a section per subcommand (this one page documents them all) with
/// its synopsis, description and options as subsections.
fn render_man(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("idbridge {}", sub.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let sub = sub.clone().bin_name(name);
        let page = clap_mangen::Man::new(sub.clone());
        let mut section = Vec::new();
        page.render_synopsis_section(&mut section)?;
        page.render_description_section(&mut section)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.render_options_section(&mut section)?;
        }
        out.extend_from_slice(demote_headings(&section).as_bytes());
    }
    man.render_version_section(out)?;
    Ok(())
}

/// Turns a rendered page's section headings (`.SH`) into subsection headings (`.SS`).
fn demote_headings(roff: &[u8]) -> String {
    String::from_utf8_lossy(roff)
        .lines()
        .map(|line| match line.strip_prefix(".SH ") {
            Some(title) => format!(".SS {title}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

fn write_stdout(bytes: &[u8]) -> Result<ExitCode, CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Failed(format!("cannot write to stdout: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_has_a_section_per_subcommand() {
        let cmd = Cli::command();
        let mut out = Vec::new();
        render_man(&cmd, &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let heading = format!(".SH \"IDBRIDGE {}\"", sub.get_name().to_uppercase());
            assert!(page.contains(&heading), "{heading} missing");
        }
    }
}
