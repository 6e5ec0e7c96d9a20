//! The emulated EC2 IMDSv2: token PUTs with their TTL header, metadata paths, token headers.
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| idbridge_emulator::aws_instance::imds_router(common::emulator::emulator()))
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = common::request(data, &[]) {
        common::drive(router(), req);
    }
});
