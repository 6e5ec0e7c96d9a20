//! The emulated Microsoft Entra ID: the v2 and v1 token endpoints (client-credentials forms,
//! federated client assertions, scopes and resources), the OpenID discovery documents, JWKS and
//! instance discovery: any request gets Entra's answer, never a panic or an empty 5xx.
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| idbridge_emulator::azure::entra_router(common::emulator::emulator(), true))
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = common::request(data, &[]) {
        common::drive(router(), req);
    }
});
