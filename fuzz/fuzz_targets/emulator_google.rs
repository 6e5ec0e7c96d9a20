//! The emulated Google APIs (OAuth2 jwt-bearer, STS token exchange with AWS and OIDC subject tokens, IAM Credentials JSON bodies, tokeninfo, certs, control): any request gets Google's answer, never a panic or an empty 5xx.
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| idbridge_emulator::google::router(common::emulator::emulator()))
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = common::request(data, &[]) {
        common::drive(router(), req);
    }
});
