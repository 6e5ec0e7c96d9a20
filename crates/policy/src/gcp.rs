//! GCP workload identity federation: attribute mappings, attribute conditions and IAM members.
//!
//! This module answers "what does Google make of this external credential, and may it act as
//! this service account?" the way Google's STS and IAM decide it, without any I/O:
//!
//! 1. [`AttributeMapping::parse`] reads a provider's mapping (target → CEL expression) with
//!    Google's rules ([`MappingError`] names the rule broken); [`AttributeMapping::aws_default`]
//!    is the mapping AWS providers get when none is set. [`AttributeMapping::apply`] evaluates
//!    it over the *assertion* — the `GetCallerIdentity` result for AWS
//!    (`{"arn","account","userid"}`), the token's claims for OIDC — into
//!    [`MappedAttributes`] (`google.subject`, `google.groups`, `attribute.*`).
//! 2. [`AttributeCondition::parse`] / [`AttributeCondition::evaluate`]: the provider's
//!    condition, a CEL expression over `assertion`, `google` and `attribute` that must be
//!    `true` (anything but a bool is an error).
//! 3. [`Member::parse`] / [`member_matches`]: the IAM binding members that grant a federated
//!    identity (`principal://…/subject/S`, `principalSet://…/group/G`,
//!    `principalSet://…/attribute.NAME/VALUE`, `principalSet://…/*`) or a Google identity
//!    (`serviceAccount:`, `user:`), matched against a [`Principal`].
//! 4. [`WorkloadIdentityPool`] / [`WorkloadIdentityProvider`]: the pool and provider schema
//!    (as a world file or `explain --gcp-provider` declares them) and Google's rules for it
//!    ([`WorkloadIdentityProvider::validate`]); [`federate`] takes the whole decision of a
//!    token exchange at a [`PoolProvider`] for a verified [`Assertion`] — provider state,
//!    account or issuer and audience, mapping, condition, resulting principal — and returns a
//!    [`Trace`] of every step with the first [`Rejection`]. The emulator's STS answers with it
//!    and `idbridge explain` prints it.
//!
//! CEL comes from the `cel` crate (its standard definitions, with `matches`); Google's
//! `string.extract(template)` is registered on top ([`extract()`]).
//!
//! ```
//! use idbridge_policy::gcp::{
//!     AttributeCondition, AttributeMapping, FederatedPrincipal, PoolName, Principal,
//!     member_matches,
//! };
//!
//! let assertion = serde_json::json!({
//!     "arn": "arn:aws:sts::111122223333:assumed-role/gcp-caller/i-0a1b2c3d4e5f60718",
//!     "account": "111122223333",
//!     "userid": "AROAEXAMPLE:i-0a1b2c3d4e5f60718",
//! });
//! let mapped = AttributeMapping::aws_default().apply(&assertion)?;
//! assert_eq!(
//!     mapped.attributes["aws_role"],
//!     "arn:aws:sts::111122223333:assumed-role/gcp-caller"
//! );
//! let condition = AttributeCondition::parse(
//!     "attribute.aws_role == 'arn:aws:sts::111122223333:assumed-role/gcp-caller'",
//! )?;
//! assert!(condition.evaluate(&assertion, &mapped)?);
//!
//! let pool = PoolName { project_number: "836192731250".into(), pool: "aws-pool".into() };
//! let caller = Principal::Federated(FederatedPrincipal::from_mapped(&pool, &mapped));
//! assert!(member_matches(
//!     "principalSet://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/aws-pool/attribute.aws_role/arn:aws:sts::111122223333:assumed-role/gcp-caller",
//!     &caller,
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not modelled: SAML and X.509 providers, workforce pools, Google Groups membership of
//! `group:` members, IAM Conditions on bindings, and CEL type-checking beyond the variables an
//! expression reads (a wrong field is found when the expression is evaluated, as a
//! [`MappingError::Evaluate`] or [`ConditionError::Evaluate`]).
//!
//! Google documentation: "Workload Identity Federation" (attribute mappings and conditions,
//! principal identifiers) and the IAM v1 `WorkloadIdentityPoolProvider` reference.

mod condition;
mod delegation;
mod expr;
mod extract;
mod federate;
mod mapping;
mod member;
mod provider;

pub use condition::{AttributeCondition, ConditionError, MAX_CONDITION_LEN};
pub use delegation::{
    AccountPolicy, ChainCheck, Link, TOKEN_CREATOR, WORKLOAD_IDENTITY_USER, check_chain,
};
pub use extract::{TemplateError, extract};
pub use federate::{Assertion, CallerIdentity, MappedValue, Rejection, Step, Trace, federate};
pub use mapping::{
    ATTRIBUTE_PREFIX, AttributeMapping, GOOGLE_GROUPS, GOOGLE_SUBJECT, MAX_ATTRIBUTE_NAME_LEN,
    MAX_CUSTOM_ATTRIBUTES, MAX_EXPRESSION_LEN, MAX_MAPPED_BYTES, MAX_SUBJECT_BYTES,
    MappedAttributes, MappingError, MappingTarget, ProviderKind,
};
pub use member::{
    FederatedPrincipal, IAM_HOST, Member, MemberError, PoolName, Principal, ProviderName,
    member_matches,
};
pub use provider::{
    AwsProviderConfig, OidcProviderConfig, PoolProvider, WorkloadIdentityPool,
    WorkloadIdentityProvider,
};

/// Text errors quote — user-supplied names and members, evaluator messages that may quote
/// assertion values — kept short: at most 200 characters, then `…`.
fn short(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A small deterministic generator (xorshift), so the inputs are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// Pseudo-random strings mixing CEL tokens, identifiers and stray characters.
    fn inputs(count: usize) -> Vec<String> {
        const TOKENS: &[&str] = &[
            "assertion",
            "attribute",
            "google",
            ".",
            "arn",
            "sub",
            "groups",
            "subject",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            "'",
            "\"",
            "'''",
            "==",
            "!=",
            "&&",
            "||",
            "!",
            "?",
            ":",
            "+",
            "-",
            "*",
            "/",
            "%",
            "<",
            ">=",
            "in",
            "has",
            "size",
            "extract",
            "contains",
            "startsWith",
            "matches",
            "exists",
            "all",
            "map",
            "filter",
            "x",
            ",",
            " ",
            "1",
            "0",
            "-9223372036854775808",
            "18446744073709551615u",
            "1.5e308",
            "true",
            "false",
            "null",
            "\\",
            "\\u",
            "\\x",
            "b'",
            "r'",
            "{ns}",
            "'{a}b'",
            "é",
            "\u{1F600}",
            "\n",
            "\0",
            "@",
            "#",
            "$",
            ";",
            "..",
            ".?",
            "int",
            "string",
            "type",
            "dyn",
            "1 / 0",
            "'a' * 3",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        (0..count)
            .map(|_| {
                let len = (rng.next() % 24) as usize;
                (0..len).map(|_| rng.pick(TOKENS)).collect::<String>()
            })
            .collect()
    }

    #[test]
    fn parsing_and_evaluating_arbitrary_text_never_panics() {
        let assertion = json!({
            "arn": "arn:aws:sts::1:assumed-role/r/s",
            "sub": "spiffe://example.org/ns/prod",
            "groups": ["a", "b"],
            "n": 5,
        });
        let mapped = MappedAttributes {
            subject: "s".into(),
            groups: vec!["a".into()],
            attributes: [("x".to_owned(), "y".to_owned())].into(),
        };
        let mut compiled = 0;
        for input in inputs(400) {
            if let Ok(c) = AttributeCondition::parse(&input) {
                compiled += 1;
                let _ = c.evaluate(&assertion, &mapped);
            }
            for kind in [ProviderKind::Aws, ProviderKind::Oidc] {
                let entries = [
                    ("google.subject", input.as_str()),
                    ("attribute.x", "assertion.arn"),
                ];
                if let Ok(m) = AttributeMapping::parse(entries, kind) {
                    let _ = m.apply(&assertion);
                }
                let _ = AttributeMapping::parse([(input.as_str(), "assertion.sub")], kind);
            }
            let _ = extract("arn:aws:sts::1:assumed-role/r/s", &input);
            let _ = Member::parse(&input);
            let _ = ProviderName::parse_audience(&input);
        }
        // Some inputs are valid CEL, so evaluation was exercised too.
        assert!(compiled > 0);
    }
}
