//! `idbridge`: cross-cloud workload identity broker.
//!
//! `main` only parses arguments, sets up logging and dispatches; each command lives in its own
//! module; shared helpers have their own: [`error`] (the one error type and the exit codes),
//! [`signals`] (shutdown). Exit codes: 0 success, 1 runtime failure, 64 (EX_USAGE) bad
//! configuration or usage (clap's usage errors included), 2 `explain`'s deny, or the child's
//! code for `exec`.

mod azp;
mod cli;
mod commands;
mod demo;
mod doctor;
mod emulate;
mod error;
mod explain;
mod manual;
mod output;
mod serve;
mod setup;
mod signals;
mod verify;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return error::clap_exit_code(&e);
        }
    };
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("idbridge: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("idbridge: error: {e}");
            e.exit_code()
        }
    }
}

fn init_tracing(cli: &cli::Cli) {
    let default = match cli.command {
        cli::Command::Emulate(_) | cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDBRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    let serve_json = matches!(&cli.command, cli::Command::Serve(a) if serve::wants_json_logs(a));
    if cli.log_json || serve_json {
        builder.json().finish().with(no_request_dumps()).init();
    } else {
        builder.finish().with(no_request_dumps()).init();
    }
}

/// Whatever `IDBRIDGE_LOG` asks for, drops the AWS SDK orchestrator's trace events: they print
/// every request it sends with its headers, values included — the IMDS session token
/// (`x-aws-ec2-metadata-token`) and, for signed calls, the signature and session token.
fn no_request_dumps() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|m| {
        !(*m.level() == tracing::Level::TRACE
            && m.target()
                .starts_with("aws_smithy_runtime::client::orchestrator"))
    })
}
