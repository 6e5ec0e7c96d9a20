//! One emulator of the built-in world, built once (key generation is slow) and shared by every
//! input of a target.

use std::sync::{Arc, OnceLock};

use idbridge_emulator::{Emulator, World};

/// The shared emulator.
pub fn emulator() -> Arc<Emulator> {
    static EMU: OnceLock<Arc<Emulator>> = OnceLock::new();
    EMU.get_or_init(|| {
        let world = World::builtin().expect("the built-in world");
        Emulator::new(world, idbridge_core::clock::system()).expect("an emulator")
    })
    .clone()
}
