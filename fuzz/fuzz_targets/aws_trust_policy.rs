//! AWS trust policies: arbitrary bytes through the IAM JSON parser, the role-trust-policy
//! validation, the lint and an evaluation against a fixed Google web-identity request.
//! Nothing may panic, whatever the input.
#![no_main]

use idbridge_policy::aws::{
    TrustPolicy, WebIdentityProvider, WebIdentityRequest, evaluate, lint, web_identity_context,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = TrustPolicy::parse(text) else {
        return;
    };
    let _ = policy.validate_as_role_trust_policy();
    let _ = lint(&policy);
    let claims = serde_json::json!({
        "iss": "https://accounts.google.com",
        "aud": "aws-trust-1",
        "azp": "100367186111111111111",
        "sub": "100367186111111111111",
        "email": "myapp@gcp-project.iam.gserviceaccount.com",
        "amr": ["a", "b"],
    });
    let Some(claims) = claims.as_object() else {
        return;
    };
    let provider = WebIdentityProvider::from_issuer("https://accounts.google.com");
    let request = WebIdentityRequest::new(
        "111122223333",
        "fuzz-session",
        time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
    );
    if let Ok(ctx) = web_identity_context(&provider, claims, &request) {
        let _ = evaluate(&policy, &ctx);
    }
});
