//! `idbridge serve`: the broker daemon (crate `idbridge-serve`) as a long-running process.
//!
//! Loads and validates the whole config before binding anything (errors exit 64; `--check`
//! stops there), binds every listener, prints their URLs, writes `--env-file` once ready, and
//! serves until Ctrl-C or SIGTERM, then drains in-flight requests.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use idbridge_broker::Context;
use idbridge_serve::config::{LogFormat, ServeConfig};
use idbridge_serve::{Broker, Frontend};

use crate::cli::ServeArgs;
use crate::commands::CliError;
use crate::signals::shutdown_signal;

/// Whether the config asks for JSON logs (read leniently, before logging is set up).
pub(crate) fn wants_json_logs(a: &ServeArgs) -> bool {
    idbridge_serve::config::log_format_hint(&a.config) == Some(LogFormat::Json)
}

pub(crate) async fn run(a: ServeArgs) -> Result<ExitCode, CliError> {
    let config = ServeConfig::load(&a.config)?;
    if a.check {
        eprintln!("{}: valid", a.config.display());
        for (section, listen) in config.listeners() {
            eprintln!("  {section:<26} {listen} (bind {})", config.bind);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !config.bind.is_loopback() {
        tracing::warn!(bind = %config.bind, "binding beyond loopback: anyone who can reach these ports gets route credentials");
    }
    if a.env_file.is_none() {
        for warning in config.frontends.iter().filter_map(|f| f.needs_env_file()) {
            tracing::warn!("{warning}");
        }
    }
    // Before binding: under systemd's default soft limit (1024) a neighbour holding idle
    // connections would otherwise exhaust the descriptors of every listener.
    if let Err(e) = idbridge_serve::conn::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot read the open-file limit");
    }
    let ctx = Context::from_process(&config.routes.endpoints)?;
    let broker = Arc::new(Broker::new(&config, ctx));
    let running = idbridge_serve::start(&config, broker)
        .await
        .map_err(|e| CliError::Failed(format!("serve: {e}")))?;
    eprintln!("idbridge serve listening:");
    for l in running.listeners() {
        let path = match l.frontend {
            Frontend::AwsImds | Frontend::GceMetadata | Frontend::Registered(_) => "",
            Frontend::Metrics => "/metrics",
        };
        eprintln!("  {:<16} {}{path}", l.frontend.title(), l.address.url());
    }
    if let Some(path) = &a.env_file {
        write_env_file(path, running.env_pairs()).map_err(|e| {
            CliError::Failed(format!(
                "serve: cannot write env file {}: {e}",
                path.display()
            ))
        })?;
        eprintln!(
            "client settings written to {} (set -a; . {}; set +a)",
            path.display(),
            path.display()
        );
    }
    shutdown_signal().await;
    eprintln!("idbridge serve: shutting down");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Writes `KEY=VALUE` lines atomically, mode 0600 (the ECS token is a secret).
fn write_env_file(
    path: &Path,
    pairs: &[(&'static str, idbridge_core::SecretString)],
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    for (k, v) in pairs {
        writeln!(f, "{k}={}", v.expose_secret())?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
