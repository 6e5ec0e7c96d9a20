//! The emulated IAM Roles Anywhere `CreateSession`: query and JSON parameters, the
//! `AWS4-X509-*` `Authorization` header, `X-Amz-Date`, the `X-Amz-X509` certificate and its
//! chain (parsed and verified), trust anchors, profiles and the role's trust policy.
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| idbridge_emulator::roles_anywhere::router(common::emulator::emulator()))
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = common::request(data, &[]) {
        common::drive(router(), req);
    }
});
