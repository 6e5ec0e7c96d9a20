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
