//! `idbridge emulate`: the cloud emulator as a long-running process.

use std::process::ExitCode;

use idbridge_emulator::{Emulator, Ports, World};

use crate::cli::EmulateArgs;
use crate::commands::CliError;
use crate::signals::shutdown_signal;

pub(crate) async fn run(a: EmulateArgs) -> Result<ExitCode, CliError> {
    let world = match &a.world {
        Some(p) => World::load(p),
        None => World::builtin(),
    }
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let emulator = Emulator::new(world, idbridge_core::clock::system())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if !a.bind.is_loopback() {
        tracing::warn!(bind = %a.bind, "the emulator hands out working test credentials; binding beyond loopback exposes them");
    }
    let running = idbridge_emulator::serve(
        emulator,
        a.bind,
        Ports {
            aws_sts: a.aws_sts_port,
            google: a.google_port,
            metadata: a.metadata_port,
            ..Ports::default()
        },
    )
    .await
    .map_err(|e| CliError::Failed(format!("emulate: cannot bind {}: {e}", a.bind)))?;
    eprintln!("idbridge emulator listening:");
    eprintln!("  AWS STS        http://{}", running.aws_sts);
    eprintln!("  Google APIs    http://{}", running.google);
    eprintln!("  GCE metadata   http://{}", running.metadata);
    eprintln!("  EC2 IMDSv2     http://{}", running.imds);
    eprintln!("  ECS endpoint   http://{}", running.ecs);
    eprintln!("  SPIFFE OIDC    http://{}", running.spiffe_oidc);
    eprintln!("  Roles Anywhere http://{}", running.roles_anywhere);
    eprintln!("  AWS IAM        http://{}", running.aws_iam);
    eprintln!("  Kubernetes API http://{}", running.kubernetes);
    if let Some(p) = &running.spiffe_socket {
        eprintln!("  SPIFFE         unix://{}", p.display());
    }
    let lines: String = running
        .env_pairs()
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    match &a.env_file {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &lines)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| {
                    CliError::Failed(format!(
                        "emulate: cannot write env file {}: {e}",
                        path.display()
                    ))
                })?;
            eprintln!(
                "endpoint overrides written to {} (set -a; . {}; set +a)",
                path.display(),
                path.display()
            );
        }
        None => eprint!("{lines}"),
    }
    shutdown_signal().await;
    eprintln!("idbridge emulator: shutting down");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
