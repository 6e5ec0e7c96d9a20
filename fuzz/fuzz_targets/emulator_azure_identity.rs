//! The emulated Azure managed identity endpoints of the world's VM: Azure IMDS
//! (`/metadata/identity/oauth2/token`, the `Metadata` header, `api-version`, `resource`, the
//! identity selectors) and App Service (`/msi/token` with `X-IDENTITY-HEADER`).
#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use libfuzzer_sys::fuzz_target;

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| {
        idbridge_emulator::azure::managed_identity::router(common::emulator::emulator())
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = common::request(data, &[]) {
        common::drive(router(), req);
    }
});
