//! The emulated AWS STS (query protocol forms, GET queries, SigV4 headers and presigned URLs, web-identity JWTs, trust policies): any request gets an AWS answer, never a panic or an empty 5xx.
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| idbridge_emulator::aws_sts::router(common::emulator::emulator()))
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = common::request(data, &[]) {
        common::drive(router(), req);
    }
});
