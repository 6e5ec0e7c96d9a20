//! The emulated GCE metadata server: paths, query strings (recursive, alt, audience, format, wait_for_change), headers.
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
    if let Some(req) = common::request(data, &[("metadata-flavor", "Google")]) {
        common::drive(router(), req);
    }
});
