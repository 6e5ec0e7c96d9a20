//! The emulated GCE metadata server: paths, query strings (recursive, alt, audience, format),
//! headers. Hanging GETs (`wait_for_change`) are left out: they wait by design.
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| idbridge_emulator::gce_metadata::router(common::emulator::emulator()))
}

fuzz_target!(|data: &[u8]| {
    // A hanging GET waits for a change by design (up to its timeout_sec); not a hang to report.
    if data.windows(15).any(|w| w.eq_ignore_ascii_case(b"wait_for_change")) {
        return;
    }
    if let Some(req) = common::request(data, &[("metadata-flavor", "Google")]) {
        common::drive(router(), req);
    }
});
