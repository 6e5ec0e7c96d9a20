//! End-to-end scenarios: token claims → context → evaluation, for the seed flows, plus a
//! deterministic mutation test that the parser, evaluator and lint never panic.

use serde_json::{Map, Value, json};
use time::macros::datetime;

use super::*;

const SA: &str = "myapp@my-project.iam.gserviceaccount.com";

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("claims must be an object"),
    }
}

/// Builds the context from the token's own `iss`, as the emulator does.
fn context_for(token: &Map<String, Value>) -> RequestContext {
    let iss = token.get("iss").and_then(Value::as_str).unwrap();
    let provider = WebIdentityProvider::from_issuer(iss);
    let request =
        WebIdentityRequest::new("111122223333", "session", datetime!(2024-05-01 12:00 UTC));
    web_identity_context(&provider, token, &request).unwrap()
}

fn google_policy(condition: &str) -> TrustPolicy {
    TrustPolicy::parse(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
        "Principal":{{"Federated":"accounts.google.com"}},
        "Action":"sts:AssumeRoleWithWebIdentity","Condition":{condition}}}]}}"#
    ))
    .unwrap()
}

fn condition<'a>(eval: &'a Evaluation, operator: &str, key: &str) -> &'a ConditionTrace {
    eval.statements[0]
        .conditions
        .iter()
        .find(|c| c.operator == operator && c.key == key)
        .unwrap()
}

fn seed_002_token() -> Map<String, Value> {
    claims(json!({
        "aud": "aws-trust-1",
        "azp": SA,
        "email": SA,
        "email_verified": true,
        "exp": 1_630_927_162,
        "iat": 1_630_923_562,
        "sub": "10036718611111111111",
        "iss": "https://accounts.google.com"
    }))
}

#[test]
fn seed_002_naive_policy_is_denied_because_aud_is_azp() {
    let policy = google_policy(
        r#"{"StringEquals":{"accounts.google.com:sub":"10036718611111111111",
                            "accounts.google.com:aud":"aws-trust-1"}}"#,
    );
    let eval = evaluate(&policy, &context_for(&seed_002_token()));
    assert_eq!(eval.decision, Decision::ImplicitDeny);
    let statement = &eval.statements[0];
    assert!(statement.principal_matched && statement.action_matched && !statement.matched);

    let sub = condition(&eval, "StringEquals", "accounts.google.com:sub");
    assert!(sub.result);
    let aud = condition(&eval, "StringEquals", "accounts.google.com:aud");
    assert!(!aud.result);
    assert_eq!(aud.context_values, Some(vec![SA.to_owned()]));
    assert_eq!(aud.policy_values, ["aws-trust-1"]);

    let warnings = lint(&policy);
    assert_eq!(
        warnings.iter().map(|w| w.code).collect::<Vec<_>>(),
        [codes::GOOGLE_AUD_IS_AZP]
    );
    assert!(warnings[0].message.contains("accounts.google.com:oaud"));
}

#[test]
fn seed_002_corrected_policy_is_allowed() {
    let policy = google_policy(&format!(
        r#"{{"StringEquals":{{"accounts.google.com:aud":"{SA}",
                              "accounts.google.com:oaud":"aws-trust-1",
                              "accounts.google.com:sub":"10036718611111111111"}}}}"#
    ));
    let eval = evaluate(&policy, &context_for(&seed_002_token()));
    assert_eq!(eval.decision, Decision::Allow);
    assert!(eval.statements[0].conditions.iter().all(|c| c.result));
    assert_eq!(lint(&policy), []);

    // Another service account's token, same audience: denied on :aud and :sub.
    let mut other = seed_002_token();
    other.insert("azp".into(), json!("intruder@evil.iam.gserviceaccount.com"));
    other.insert("sub".into(), json!("999"));
    assert_eq!(
        evaluate(&policy, &context_for(&other)).decision,
        Decision::ImplicitDeny
    );
}

fn seed_004_policy() -> TrustPolicy {
    google_policy(&format!(
        r#"{{"StringEquals":{{"accounts.google.com:oaud":"https://myservice.aud.my-corp.net",
                              "accounts.google.com:aud":"{SA}"}},
            "Null":{{"accounts.google.com:oaud":"false","accounts.google.com:aud":"false"}}}}"#
    ))
}

#[test]
fn seed_004_matching_token_is_allowed() {
    let token = claims(json!({
        "aud": "https://myservice.aud.my-corp.net",
        "iss": "https://accounts.google.com",
        "email_verified": true,
        "exp": 1_535_578_337,
        "azp": SA,
        "iat": 1_535_574_737,
        "email": SA,
        "sub": "99992499378790129023"
    }));
    let policy = seed_004_policy();
    let eval = evaluate(&policy, &context_for(&token));
    assert_eq!(eval.decision, Decision::Allow);
    assert_eq!(eval.statements[0].conditions.len(), 4);
    assert_eq!(lint(&policy), []);
}

#[test]
fn seed_004_token_without_azp_fails_the_null_check() {
    // Without azp, :aud is the token's aud and there is no :oaud at all.
    let token = claims(json!({
        "aud": SA,
        "iss": "https://accounts.google.com",
        "sub": "99992499378790129023"
    }));
    let eval = evaluate(&seed_004_policy(), &context_for(&token));
    assert_eq!(eval.decision, Decision::ImplicitDeny);
    let null = condition(&eval, "Null", "accounts.google.com:oaud");
    assert_eq!(null.context_values, None);
    assert!(!null.result);
    assert!(condition(&eval, "Null", "accounts.google.com:aud").result);
    assert!(condition(&eval, "StringEquals", "accounts.google.com:aud").result);
}

#[test]
fn seed_000_numeric_unique_id_audience() {
    let policy = google_policy(
        r#"{"StringEquals":{"accounts.google.com:aud":"12345678901234567890123456789"}}"#,
    );
    assert_eq!(lint(&policy), []);
    let token = |azp: &str| {
        claims(json!({
            "iss": "https://accounts.google.com",
            "aud": "https://worklytics.example/tenant",
            "azp": azp,
            "sub": azp
        }))
    };
    let allowed = evaluate(
        &policy,
        &context_for(&token("12345678901234567890123456789")),
    );
    assert_eq!(allowed.decision, Decision::Allow);
    let denied = evaluate(
        &policy,
        &context_for(&token("98765432109876543210987654321")),
    );
    assert_eq!(denied.decision, Decision::ImplicitDeny);
    assert_eq!(
        condition(&denied, "StringEquals", "accounts.google.com:aud").context_values,
        Some(vec!["98765432109876543210987654321".to_owned()])
    );
}

#[test]
fn generic_oidc_eks_service_account() {
    let name = "oidc.eks.us-east-1.amazonaws.com/id/ABC";
    let policy = TrustPolicy::parse(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
        "Principal":{{"Federated":"arn:aws:iam::111122223333:oidc-provider/{name}"}},
        "Action":"sts:AssumeRoleWithWebIdentity",
        "Condition":{{"StringEquals":{{"{name}:sub":"system:serviceaccount:default:my-app",
                                       "{name}:aud":"sts.amazonaws.com"}}}}}}]}}"#
    ))
    .unwrap();
    assert_eq!(lint(&policy), []);
    let token = |sub: &str| {
        claims(json!({
            "iss": format!("https://{name}"),
            "aud": ["sts.amazonaws.com"],
            "sub": sub
        }))
    };
    let ctx = context_for(&token("system:serviceaccount:default:my-app"));
    assert_eq!(
        ctx.principal,
        Principal::Federated(format!("arn:aws:iam::111122223333:oidc-provider/{name}"))
    );
    assert_eq!(evaluate(&policy, &ctx).decision, Decision::Allow);

    let other_sa = context_for(&token("system:serviceaccount:default:other"));
    assert_eq!(
        evaluate(&policy, &other_sa).decision,
        Decision::ImplicitDeny
    );

    // The same token presented against another account's provider ARN: principal mismatch.
    let provider = WebIdentityProvider::from_issuer(&format!("https://{name}"));
    let request = WebIdentityRequest::new("444455556666", "s", datetime!(2024-05-01 12:00 UTC));
    let foreign = web_identity_context(
        &provider,
        &token("system:serviceaccount:default:my-app"),
        &request,
    )
    .unwrap();
    let eval = evaluate(&policy, &foreign);
    assert_eq!(eval.decision, Decision::ImplicitDeny);
    assert!(!eval.statements[0].principal_matched);
    assert!(eval.statements[0].conditions.iter().all(|c| c.result));
}

#[test]
fn session_tags_require_tag_session() {
    let policy = TrustPolicy::parse(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Principal":{"Federated":"accounts.google.com"},
        "Action":["sts:AssumeRoleWithWebIdentity","sts:TagSession"],
        "Condition":{"StringEquals":{"accounts.google.com:sub":"1","aws:RequestTag/team":"blue"},
                     "ForAllValues:StringEquals":{"aws:TagKeys":["team"]}}}]}"#,
    )
    .unwrap();
    let token = claims(json!({
        "iss": "https://accounts.google.com",
        "aud": "a",
        "sub": "1",
        "https://aws.amazon.com/tags": {"principal_tags": {"team": ["blue"]}}
    }));
    let ctx = context_for(&token);
    assert!(evaluate(&policy, &ctx).is_allowed());
    assert!(evaluate(&policy, &ctx.with_action("sts:TagSession")).is_allowed());
}

/// xorshift64*: a tiny deterministic generator, enough to mutate inputs reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        // `n` is small; the modulo bias is irrelevant here.
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

const ALPHABET: &[char] = &[
    '{', '}', '[', ']', '"', ':', ',', '*', '?', '$', '\\', ' ', '0', '9', '-', '.', 'a', 'Z', 'é',
    '/', 't', 'e', 'n', 'u', 'l',
];

const FRAGMENTS: &[&str] = &[
    "\"Statement\"",
    "\"Condition\"",
    "{\"StringLike\":{\"a:b\":\"*\"}}",
    "\"ForAllValues:NumericLessThanIfExists\"",
    "\"Null\"",
    "${a:b}",
    "${*}",
    "\"arn:aws:iam::111122223333:role/r\"",
    "\"10.0.0.0/8\"",
    "[]",
    "{}",
    "null",
    "1e999",
    "\"\\u0000\"",
];

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(6) {
            0 if !chars.is_empty() => {
                let at = at.min(chars.len() - 1);
                chars[at] = ALPHABET[rng.below(ALPHABET.len())];
            }
            1 => chars.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            2 if at < chars.len() => {
                let end = (at + 1 + rng.below(8)).min(chars.len());
                chars.drain(at..end);
            }
            3 => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                chars.splice(at..at, fragment.chars());
            }
            4 if at < chars.len() => {
                let end = (at + 1 + rng.below(40)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
            _ => chars.truncate(at),
        }
    }
    chars.into_iter().collect()
}

#[test]
fn parser_evaluator_and_lint_never_panic_on_mutated_input() {
    let seeds: Vec<String> = vec![
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"G","Effect":"Allow","Principal":{"Federated":"accounts.google.com"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"accounts.google.com:aud":"aws-trust-1","accounts.google.com:sub":["1","2"]},"Null":{"accounts.google.com:oaud":"false"}}}]}"#.to_owned(),
        r#"{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":["111122223333","arn:aws:iam::111122223333:role/r"]},"NotAction":"sts:TagSession","Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"a*"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"},"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"},"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/${aws:username}"}}}}"#.to_owned(),
        r#"{"Version":"2008-10-17","Id":"x","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"NumericLessThanEquals":{"a:n":[1,2.5]},"Bool":{"aws:SecureTransport":true},"BinaryEquals":{"a:b":"QUJD"}}}]}"#.to_owned(),
    ];
    let contexts = [
        RequestContext::new(
            Principal::Federated("accounts.google.com".into()),
            "sts:AssumeRoleWithWebIdentity",
        )
        .with_key("accounts.google.com:aud", "aws-trust-1")
        .with_key("accounts.google.com:sub", "1")
        .with_key("aws:username", "al*ce")
        .with_key("aws:SourceIp", "10.1.2.3")
        .with_key("aws:CurrentTime", "2024-01-01T00:00:00Z")
        .with_multi_key("aws:TagKeys", ["ab", "c"]),
        RequestContext::new(
            Principal::Aws("arn:aws:sts::111122223333:assumed-role/r/s".into()),
            "sts:TagSession",
        )
        .with_key("a:n", "not a number")
        .with_key("a:b", "%%%")
        .with_key("aws:PrincipalArn", "arn:aws:iam::1:role/x"),
        RequestContext::new(Principal::Anonymous, ""),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut parsed, mut rejected) = (0, 0);
    for round in 0..600 {
        let seed = &seeds[round % seeds.len()];
        let input = mutate(&mut rng, seed);
        match TrustPolicy::parse(&input) {
            Ok(policy) => {
                parsed += 1;
                for ctx in &contexts {
                    let eval = evaluate(&policy, ctx);
                    assert_eq!(eval.statements.len(), policy.statements.len());
                }
                let _ = lint(&policy);
                let _ = policy.validate_as_role_trust_policy();
            }
            Err(err) => {
                rejected += 1;
                assert!(!err.to_string().is_empty());
            }
        }
    }
    // The mutations must exercise both paths to be worth anything.
    assert!(parsed > 20, "only {parsed} mutated inputs parsed");
    assert!(
        rejected > 100,
        "only {rejected} mutated inputs were rejected"
    );
}

#[test]
fn parser_never_panics_on_random_bytes() {
    let mut rng = Rng(42);
    for _ in 0..300 {
        let len = rng.below(64);
        let text: String = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        let _ = TrustPolicy::parse(&text);
    }
}
