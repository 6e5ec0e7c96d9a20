//! The binary's one error type, [`CliError`], and the exit codes it maps to.
//!
//! Exit codes: 0 success, 1 runtime failure ([`CliError::Failed`]), 64 (EX_USAGE) bad
//! configuration or usage ([`CliError::Usage`], clap's usage errors too: see [`USAGE`]), 2 for
//! a deny from `explain` ([`DENY`]), or the child's code for `exec`.

use std::fmt;
use std::process::ExitCode;

use idbridge_broker::{BrokerError, ConfigError};

/// EX_USAGE (sysexits.h): bad configuration or command line.
pub(crate) const USAGE: u8 = 64;

/// `explain`'s answer when the policy denies.
pub(crate) const DENY: u8 = 2;

/// A command failure with its exit code.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad config or usage: EX_USAGE (64).
    Usage(String),
    /// Runtime failure: 1.
    Failed(String),
}

impl CliError {
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(USAGE),
            CliError::Failed(_) => ExitCode::FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<BrokerError> for CliError {
    fn from(e: BrokerError) -> Self {
        match e.kind {
            idbridge_broker::ErrorKind::InvalidConfiguration
            | idbridge_broker::ErrorKind::NotConfigured => CliError::Usage(e.to_string()),
            _ => CliError::Failed(e.to_string()),
        }
    }
}

/// The exit code of a command line clap refused or answered itself: 0 for `--help` and
/// `--version`, EX_USAGE for a usage error (clap's own default, 2, is `explain`'s deny).
pub(crate) fn clap_exit_code(e: &clap::Error) -> ExitCode {
    if e.use_stderr() {
        ExitCode::from(USAGE)
    } else {
        ExitCode::SUCCESS
    }
}
