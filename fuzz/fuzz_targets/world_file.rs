//! The emulator's world file (TOML): any text gives a world or an error naming the file, never a
//! panic. Inputs naming files to read are skipped (the target must not read the disk).
#![no_main]

use idbridge_emulator::World;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("_file") {
        return;
    }
    let _ = World::from_str_at(text, "fuzz.toml", None);
});
