//! The route config file: arbitrary TOML text through parsing and validation. Relative paths
//! resolve against a directory that does not exist, so nothing is read from disk but what
//! `external_account` names, and every error must come back as a `ConfigError`.
#![no_main]

use idbridge_broker::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(
        text,
        "fuzz.toml",
        Some(std::path::Path::new("/nonexistent")),
    ) {
        for route in &config.routes {
            let _ = config.route(&route.name);
        }
    }
});
