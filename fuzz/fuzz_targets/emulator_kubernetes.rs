//! The emulated Kubernetes API server: paths, field and label selectors, resource versions,
//! bearer tokens, TokenRequest bodies, the control path's pod entries. Watches are left out:
//! they stream until their timeout by design.
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| idbridge_emulator::kubernetes::router(common::emulator::emulator()))
}

fuzz_target!(|data: &[u8]| {
    // A watch answers with a stream that stays open until timeoutSeconds; not a hang to report.
    if data.windows(5).any(|w| w.eq_ignore_ascii_case(b"watch")) {
        return;
    }
    if let Some(req) = common::request(
        data,
        &[("authorization", "Bearer emulator-kubernetes-token")],
    ) {
        common::drive(router(), req);
    }
});
