//! The daemon's config file (routes plus `[serve]`): any text gives a config or an error with
//! file, line and field, never a panic. Inputs naming files are skipped (no disk reads).
#![no_main]

use idbridge_serve::accounts::Accounts;
use idbridge_serve::config::ServeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("_file") || text.contains("external_account") {
        return;
    }
    let accounts = Accounts::parse("root:x:0:0::/root:/bin/sh\n", "root:x:0:\n");
    let _ = ServeConfig::parse(text, "fuzz.toml", None, &accounts);
});
