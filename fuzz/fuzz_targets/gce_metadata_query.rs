//! The GCE metadata server's query rules (shared by the daemon and the emulator): any query
//! string parses to a query, never a panic.
#![no_main]

use idbridge_wire::gce_metadata::server::Query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Query::parse(Some(text));
});
