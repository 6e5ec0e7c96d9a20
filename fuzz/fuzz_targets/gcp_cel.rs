//! GCP attribute mappings and conditions: the input is split at the first NUL into a
//! `google.subject` mapping expression and an attribute condition; both are parsed and, when
//! they compile, evaluated over fixed AWS and OIDC assertions. Nothing may panic.
#![no_main]

use idbridge_policy::gcp::{AttributeCondition, AttributeMapping, ProviderKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mapping, condition) = text.split_once('\0').unwrap_or((text, text));
    let assertions = [
        serde_json::json!({
            "arn": "arn:aws:sts::111122223333:assumed-role/gcp-caller/i-0a1b2c3d4e5f60718",
            "account": "111122223333",
            "userid": "AROAEXAMPLE:i-0a1b2c3d4e5f60718",
        }),
        serde_json::json!({
            "iss": "https://spire.idbridge.test",
            "sub": "spiffe://example.org/ns/prod/sa/billing",
            "aud": ["x"],
            "groups": ["admins", "devs"],
            "n": 5,
        }),
    ];
    let default = AttributeMapping::aws_default();
    for kind in [ProviderKind::Aws, ProviderKind::Oidc] {
        let parsed = AttributeMapping::parse(
            [
                ("google.subject", mapping),
                ("attribute.x", "assertion.sub"),
            ],
            kind,
        );
        let _ = AttributeMapping::parse([(mapping, "assertion.sub")], kind);
        let cond = AttributeCondition::parse(condition);
        for assertion in &assertions {
            let mapped = match &parsed {
                Ok(m) => m.apply(assertion),
                Err(_) => default.apply(assertion),
            };
            if let (Ok(mapped), Ok(c)) = (mapped, &cond) {
                let _ = c.evaluate(assertion, &mapped);
            }
        }
    }
});
