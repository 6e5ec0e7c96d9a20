//! Helpers shared by the integration tests: the examples folder and an in-process emulator on
//! loopback ports.
#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test binary uses a subset; helpers fail loudly"
)]

use std::path::{Path, PathBuf};

use idbridge_emulator::{Emulator, Ports, Running, World};

/// The repository's `examples/` folder.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// An emulator of `world` on 127.0.0.1, real clock.
pub async fn emulator_of(world: World) -> Running {
    let emu = Emulator::new(world, idbridge_core::clock::system()).unwrap();
    idbridge_emulator::serve(emu, [127, 0, 0, 1].into(), Ports::default())
        .await
        .unwrap()
}

/// An emulator of the built-in world.
pub async fn emulator() -> Running {
    emulator_of(World::builtin().unwrap()).await
}

/// A daemon whose GCE metadata frontend serves 20-second access tokens of the built-in world's
/// `myapp` account (IAM Credentials `generateAccessToken` through `impersonate`).
pub const SHORT_TOKEN_CONFIG: &str = r#"
[[route]]
name = "short"
source = { kind = "impersonate", service_account = "myapp@gcp-project.iam.gserviceaccount.com", scopes = ["https://www.googleapis.com/auth/cloud-platform"], lifetime_seconds = 20 }

[serve]
bind = "127.0.0.1"
[serve.gce_metadata]
port = 0
token_route = "short"
project_id = "gcp-project"
numeric_project_id = "271828182845"
"#;

/// An emulator of `world` and, in front of it, a daemon of [`SHORT_TOKEN_CONFIG`] (hops cut
/// at `hop_timeout` when given), both on loopback and the wall clock.
pub struct ShortTokenDaemon {
    /// The emulator's state (counters, issued tokens).
    pub emulator: std::sync::Arc<Emulator>,
    /// The emulator's listeners.
    pub running: Running,
    /// The daemon.
    pub daemon: idbridge_serve::Running,
    /// The metadata frontend's token URL.
    pub token_url: String,
}

impl ShortTokenDaemon {
    pub async fn start(world: World, hop_timeout: Option<std::time::Duration>) -> ShortTokenDaemon {
        let emulator = Emulator::new(world, idbridge_core::clock::system()).unwrap();
        let running =
            idbridge_emulator::serve(emulator.clone(), [127, 0, 0, 1].into(), Ports::default())
                .await
                .unwrap();
        let env = std::sync::Arc::new(idbridge_core::env::MapEnv(
            running.env_pairs().into_iter().collect(),
        ));
        let config = idbridge_serve::ServeConfig::parse(
            SHORT_TOKEN_CONFIG,
            "short-token.toml",
            None,
            &idbridge_serve::accounts::Accounts::system(),
        )
        .unwrap();
        let mut ctx = idbridge_broker::Context::new(
            env,
            idbridge_core::clock::system(),
            &config.routes.endpoints,
        )
        .unwrap();
        if let Some(timeout) = hop_timeout {
            ctx = ctx.with_hop_timeout(timeout).unwrap();
        }
        let broker = std::sync::Arc::new(idbridge_serve::Broker::new(&config, ctx));
        let daemon = idbridge_serve::start(&config, broker).await.unwrap();
        let addr = daemon
            .tcp_addr(idbridge_serve::Frontend::GceMetadata)
            .unwrap();
        ShortTokenDaemon {
            emulator,
            running,
            daemon,
            token_url: format!(
                "http://{addr}/computeMetadata/v1/instance/service-accounts/default/token"
            ),
        }
    }

    pub async fn shutdown(self) {
        self.daemon.shutdown().await;
        self.running.shutdown().await;
    }
}
