//! Unverified JWT decoding (what `explain` and `doctor` show): arbitrary text must give a
//! shape error or header and claims, never a panic.
#![no_main]

use idbridge_core::jwt::UnverifiedJwt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jwt) = UnverifiedJwt::parse(text) {
        let _ = jwt.exp();
        let _ = jwt.str_claim("iss");
        let _ = jwt.int_claim("iat");
    }
});
