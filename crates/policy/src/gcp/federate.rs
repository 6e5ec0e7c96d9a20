//! The decision of a workload identity federation token exchange, as Google STS takes it once
//! the subject token is verified: is the pool and provider enabled, is the assertion from the
//! provider's AWS account or OIDC issuer and audience, what the attribute mapping makes of it,
//! does the attribute condition hold, and which federated principal results.
//!
//! [`federate`] checks every step even after one fails, so that a [`Trace`] shows the whole
//! picture (what `idbridge explain` prints); [`Trace::rejection`] is the first failure, the
//! one Google STS answers with ([`Rejection::error`] is its OAuth error code).

use serde_json::{Map, Value, json};

use super::{
    ConditionError, FederatedPrincipal, MappedAttributes, MappingError, PoolProvider, ProviderKind,
};

/// What Google STS knows of the caller once its subject token is verified.
#[derive(Debug, Clone, PartialEq)]
pub enum Assertion {
    /// An AWS caller: the `GetCallerIdentity` result of its signed request.
    Aws(CallerIdentity),
    /// An OIDC token's claims.
    Oidc(Map<String, Value>),
}

/// `GetCallerIdentity`'s answer, the assertion of an AWS caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` (or a user's ARN).
    pub arn: String,
    /// The 12-digit account.
    pub account: String,
    /// `AROA…:SESSION` for a role session, `AIDA…` for a user.
    pub user_id: String,
}

impl CallerIdentity {
    /// The identity of `arn` when only the ARN is known: the account is read from it and the
    /// user id is a placeholder of the right shape (`AROA…:SESSION`, `AIDA…`).
    pub fn from_arn(arn: &str) -> CallerIdentity {
        let account = arn.split(':').nth(4).unwrap_or_default().to_owned();
        let session = arn
            .split_once(":assumed-role/")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(_, session)| session);
        let user_id = match session {
            Some(s) => format!("AROA…:{s}"),
            None => "AIDA…".to_owned(),
        };
        CallerIdentity {
            arn: arn.to_owned(),
            account,
            user_id,
        }
    }
}

impl Assertion {
    /// The kind of provider that takes this assertion.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Assertion::Aws(_) => ProviderKind::Aws,
            Assertion::Oidc(_) => ProviderKind::Oidc,
        }
    }

    /// The `assertion` variable of mappings and conditions: `{"arn", "account", "userid"}`
    /// for AWS, the claims for OIDC.
    pub fn to_value(&self) -> Value {
        match self {
            Assertion::Aws(id) => {
                json!({"arn": id.arn, "account": id.account, "userid": id.user_id})
            }
            Assertion::Oidc(claims) => Value::Object(claims.clone()),
        }
    }
}

/// A mapped value: a string, or a list for `google.groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappedValue {
    /// `google.subject`, `attribute.*`.
    Text(String),
    /// `google.groups`.
    List(Vec<String>),
}

/// One step of the decision, in the order Google takes them.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The pool and provider are enabled (or not).
    State {
        /// Neither is disabled.
        enabled: bool,
    },
    /// The assertion was presented to a provider of the other kind.
    SubjectKind {
        /// What was presented.
        presented: ProviderKind,
        /// What the provider takes.
        expected: ProviderKind,
    },
    /// AWS: the caller's account against the provider's.
    Account {
        /// `assertion.account`.
        account: String,
        /// The provider's `aws.account_id`.
        expected: String,
    },
    /// OIDC: the token's `iss` against the provider's `issuer_uri`.
    Issuer {
        /// `iss` (empty when absent).
        issuer: String,
        /// The provider's `issuer_uri`.
        expected: String,
    },
    /// OIDC: the token's `aud` against the audiences the provider accepts.
    Audience {
        /// `aud`, as a list.
        audiences: Vec<String>,
        /// `allowed_audiences`, or the canonical name with and without `https:` when empty.
        expected: Vec<String>,
        /// Whether one of `audiences` is accepted.
        ok: bool,
    },
    /// A mapped target and its value.
    Mapped {
        /// `google.subject`, `google.groups`, `attribute.NAME`.
        target: String,
        /// The value.
        value: MappedValue,
        /// The CEL expression that gave it (empty when the mapping has none for it).
        expression: String,
    },
    /// The mapping is invalid or failed on this assertion.
    MappingFailed {
        /// Why.
        error: MappingError,
    },
    /// The attribute condition.
    Condition {
        /// Its source, `None` when the provider has none.
        source: Option<String>,
        /// `Ok(true)` when it holds (or there is none), `Err` when it could not be parsed or
        /// evaluated.
        result: Result<bool, ConditionError>,
    },
    /// The federated principal the mapping produced.
    Principal {
        /// The principal.
        principal: FederatedPrincipal,
    },
}

impl Step {
    /// Whether the step passed; `None` for the principal, which is a result, not a check.
    pub fn passed(&self) -> Option<bool> {
        match self {
            Step::State { enabled } => Some(*enabled),
            Step::SubjectKind { .. } | Step::MappingFailed { .. } => Some(false),
            Step::Account { account, expected } => Some(account == expected),
            Step::Issuer { issuer, expected } => Some(
                issuer.strip_suffix('/').unwrap_or(issuer)
                    == expected.strip_suffix('/').unwrap_or(expected),
            ),
            Step::Audience { ok, .. } => Some(*ok),
            Step::Mapped { .. } => Some(true),
            Step::Condition { result, .. } => Some(matches!(result, Ok(true))),
            Step::Principal { .. } => None,
        }
    }
}

/// Why Google STS refuses the exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The pool or the provider is disabled (`invalid_target`).
    Disabled,
    /// The assertion is of the other kind of provider (`invalid_request`).
    SubjectKind {
        /// The provider's kind.
        expected: ProviderKind,
    },
    /// The AWS caller is of another account (`invalid_grant`).
    Account {
        /// The caller's account.
        account: String,
        /// The provider's.
        expected: String,
    },
    /// The token's issuer is not the provider's (`invalid_grant`).
    Issuer {
        /// `iss`.
        issuer: String,
        /// `issuer_uri`.
        expected: String,
    },
    /// No `aud` of the token is accepted (`invalid_grant`).
    Audience {
        /// `aud`.
        audiences: Vec<String>,
        /// The provider's `allowed_audiences` (empty: its canonical name is expected).
        allowed: Vec<String>,
    },
    /// The provider's mapping does not parse (`invalid_request`).
    InvalidMapping(MappingError),
    /// The mapping failed on this assertion (`invalid_request`).
    Mapping(MappingError),
    /// The provider's condition does not parse (`invalid_request`).
    InvalidCondition(ConditionError),
    /// The condition is false (`unauthorized_client`).
    ConditionFalse,
    /// The condition could not be evaluated (`unauthorized_client`).
    Condition(ConditionError),
}

impl Rejection {
    /// Google STS's OAuth error code for it.
    pub fn error(&self) -> &'static str {
        match self {
            Rejection::Disabled => "invalid_target",
            Rejection::SubjectKind { .. }
            | Rejection::InvalidMapping(_)
            | Rejection::Mapping(_)
            | Rejection::InvalidCondition(_) => "invalid_request",
            Rejection::Account { .. } | Rejection::Issuer { .. } | Rejection::Audience { .. } => {
                "invalid_grant"
            }
            Rejection::ConditionFalse | Rejection::Condition(_) => "unauthorized_client",
        }
    }
}

/// Every step of a decision and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The first failure; `None` when the exchange succeeds.
    pub rejection: Option<Rejection>,
    /// What the mapping produced (also when a later step failed).
    pub mapped: Option<MappedAttributes>,
    /// The federated principal of `mapped`.
    pub principal: Option<FederatedPrincipal>,
}

impl Trace {
    /// Whether Google STS issues a federated token.
    pub fn allowed(&self) -> bool {
        self.rejection.is_none()
    }

    fn reject(&mut self, rejection: Rejection) {
        if self.rejection.is_none() {
            self.rejection = Some(rejection);
        }
    }
}

/// Decides a token exchange at `provider` for a verified `assertion` (see the module docs).
pub fn federate(provider: &PoolProvider, assertion: &Assertion) -> Trace {
    let mut trace = Trace {
        steps: Vec::new(),
        rejection: None,
        mapped: None,
        principal: None,
    };
    let enabled = provider.enabled();
    trace.steps.push(Step::State { enabled });
    if !enabled {
        trace.reject(Rejection::Disabled);
    }
    let p = &provider.provider;
    match (assertion, &p.aws, &p.oidc) {
        (Assertion::Aws(id), Some(aws), _) => {
            trace.steps.push(Step::Account {
                account: id.account.clone(),
                expected: aws.account_id.clone(),
            });
            if id.account != aws.account_id {
                trace.reject(Rejection::Account {
                    account: id.account.clone(),
                    expected: aws.account_id.clone(),
                });
            }
        }
        (Assertion::Oidc(claims), None, Some(oidc)) => {
            let issuer = claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            trace.steps.push(Step::Issuer {
                issuer: issuer.clone(),
                expected: oidc.issuer_uri.clone(),
            });
            if !oidc.issuer_matches(&issuer) {
                trace.reject(Rejection::Issuer {
                    issuer,
                    expected: oidc.issuer_uri.clone(),
                });
            }
            let audiences: Vec<String> = match claims.get("aud") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let (ok, expected) = if oidc.allowed_audiences.is_empty() {
                let canonical = provider.name.canonical();
                (
                    audiences.iter().any(|a| provider.name.is_audience(a)),
                    vec![canonical.clone(), format!("https:{canonical}")],
                )
            } else {
                (
                    audiences.iter().any(|a| oidc.allowed_audiences.contains(a)),
                    oidc.allowed_audiences.clone(),
                )
            };
            trace.steps.push(Step::Audience {
                audiences: audiences.clone(),
                expected,
                ok,
            });
            if !ok {
                trace.reject(Rejection::Audience {
                    audiences,
                    allowed: oidc.allowed_audiences.clone(),
                });
            }
        }
        _ => {
            let expected = p.kind();
            trace.steps.push(Step::SubjectKind {
                presented: assertion.kind(),
                expected,
            });
            trace.reject(Rejection::SubjectKind { expected });
            return trace;
        }
    }
    let mapping = match p.mapping() {
        Ok(m) => m,
        Err(e) => {
            trace.steps.push(Step::MappingFailed { error: e.clone() });
            trace.reject(Rejection::InvalidMapping(e));
            return trace;
        }
    };
    let value = assertion.to_value();
    let mapped = match mapping.apply(&value) {
        Ok(m) => m,
        Err(e) => {
            trace.steps.push(Step::MappingFailed { error: e.clone() });
            trace.reject(Rejection::Mapping(e));
            return trace;
        }
    };
    let expression_of = |target: &str| {
        mapping
            .entries()
            .find(|(t, _)| t == target)
            .map(|(_, e)| e.to_owned())
            .unwrap_or_default()
    };
    let mut shown = vec![(
        super::GOOGLE_SUBJECT.to_owned(),
        MappedValue::Text(mapped.subject.clone()),
    )];
    if !mapped.groups.is_empty() {
        shown.push((
            super::GOOGLE_GROUPS.to_owned(),
            MappedValue::List(mapped.groups.clone()),
        ));
    }
    for (k, v) in &mapped.attributes {
        shown.push((
            format!("{}{k}", super::ATTRIBUTE_PREFIX),
            MappedValue::Text(v.clone()),
        ));
    }
    for (target, value) in shown {
        let expression = expression_of(&target);
        trace.steps.push(Step::Mapped {
            target,
            value,
            expression,
        });
    }
    match p.condition() {
        Ok(Some(c)) => {
            let result = c.evaluate(&value, &mapped);
            match &result {
                Ok(true) => {}
                Ok(false) => trace.reject(Rejection::ConditionFalse),
                Err(e) => trace.reject(Rejection::Condition(e.clone())),
            }
            trace.steps.push(Step::Condition {
                source: Some(c.source().to_owned()),
                result,
            });
        }
        Ok(None) => trace.steps.push(Step::Condition {
            source: None,
            result: Ok(true),
        }),
        Err(e) => {
            trace.steps.push(Step::Condition {
                source: None,
                result: Err(e.clone()),
            });
            trace.reject(Rejection::InvalidCondition(e));
        }
    }
    let principal = FederatedPrincipal::from_mapped(&provider.name.pool, &mapped);
    trace.steps.push(Step::Principal {
        principal: principal.clone(),
    });
    trace.principal = Some(principal);
    trace.mapped = Some(mapped);
    trace
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::gcp::{
        AwsProviderConfig, OidcProviderConfig, PoolName, ProviderName, WorkloadIdentityProvider,
    };

    const ROLE: &str = "arn:aws:sts::111122223333:assumed-role/gcp-caller";

    fn provider(aws: bool, condition: Option<&str>) -> PoolProvider {
        PoolProvider {
            name: ProviderName {
                pool: PoolName {
                    project_number: "836192731250".into(),
                    pool: "the-pool".into(),
                },
                provider: "the-provider".into(),
            },
            pool_disabled: false,
            provider: WorkloadIdentityProvider {
                id: "the-provider".into(),
                disabled: false,
                aws: aws.then(|| AwsProviderConfig {
                    account_id: "111122223333".into(),
                }),
                oidc: (!aws).then(|| OidcProviderConfig {
                    issuer_uri: "https://issuer.example".into(),
                    allowed_audiences: Vec::new(),
                    jwks_json: None,
                }),
                attribute_mapping: (!aws).then(|| {
                    BTreeMap::from([("google.subject".to_owned(), "assertion.sub".to_owned())])
                }),
                attribute_condition: condition.map(str::to_owned),
            },
        }
    }

    fn caller(arn: &str) -> Assertion {
        Assertion::Aws(CallerIdentity::from_arn(arn))
    }

    fn claims(value: Value) -> Assertion {
        let Value::Object(map) = value else {
            panic!("claims are an object")
        };
        Assertion::Oidc(map)
    }

    #[test]
    fn an_aws_caller_of_the_role_is_federated_with_the_default_mapping() {
        let condition = format!("attribute.aws_role == '{ROLE}'");
        let p = provider(true, Some(&condition));
        let trace = federate(&p, &caller(&format!("{ROLE}/i-1")));
        assert!(trace.allowed(), "{trace:?}");
        let principal = trace.principal.unwrap();
        assert_eq!(
            principal.identifier(),
            format!(
                "principal://iam.googleapis.com/projects/836192731250/locations/global/workloadIdentityPools/the-pool/subject/{ROLE}/i-1"
            )
        );
        assert_eq!(trace.mapped.unwrap().attributes["aws_role"], ROLE);
        assert!(trace.steps.iter().all(|s| s.passed() != Some(false)));
    }

    #[test]
    fn the_first_failure_is_the_rejection_and_later_steps_are_still_traced() {
        let mut p = provider(true, Some("attribute.aws_role == 'nobody'"));
        p.pool_disabled = true;
        let trace = federate(&p, &caller("arn:aws:sts::999999999999:assumed-role/r/s"));
        assert_eq!(trace.rejection, Some(Rejection::Disabled));
        assert_eq!(
            trace.rejection.as_ref().map(Rejection::error),
            Some("invalid_target")
        );
        let failed: Vec<_> = trace
            .steps
            .iter()
            .filter(|s| s.passed() == Some(false))
            .collect();
        assert_eq!(failed.len(), 3, "state, account, condition: {failed:?}");
        assert!(trace.principal.is_some());

        p.pool_disabled = false;
        let trace = federate(&p, &caller(&format!("{ROLE}/s")));
        assert_eq!(trace.rejection, Some(Rejection::ConditionFalse));
        assert_eq!(
            trace.rejection.as_ref().map(Rejection::error),
            Some("unauthorized_client")
        );
    }

    #[test]
    fn oidc_issuer_and_audience_are_checked() {
        let p = provider(false, None);
        let canonical = p.name.canonical();
        let ok = federate(
            &p,
            &claims(
                json!({"iss": "https://issuer.example", "aud": [format!("https:{canonical}")], "sub": "w"}),
            ),
        );
        assert!(ok.allowed(), "{ok:?}");
        assert!(matches!(
            ok.steps
                .iter()
                .find(|s| matches!(s, Step::Condition { .. })),
            Some(Step::Condition {
                source: None,
                result: Ok(true)
            })
        ));

        // One trailing slash on either side does not matter (Entra's v1 `iss` has one).
        let slashed = federate(
            &p,
            &claims(
                json!({"iss": "https://issuer.example/", "aud": [format!("https:{canonical}")], "sub": "w"}),
            ),
        );
        assert!(slashed.allowed(), "{slashed:?}");
        for iss in ["https://issuer.example//", "https://issuer.example/x", ""] {
            let other = federate(
                &p,
                &claims(json!({"iss": iss, "aud": canonical, "sub": "w"})),
            );
            assert!(
                matches!(other.rejection, Some(Rejection::Issuer { .. })),
                "{iss}: {other:?}"
            );
        }

        let bad = federate(
            &p,
            &claims(json!({"iss": "https://other.example", "aud": "x", "sub": "w"})),
        );
        assert!(matches!(bad.rejection, Some(Rejection::Issuer { .. })));
        assert!(
            bad.steps
                .iter()
                .any(|s| matches!(s, Step::Audience { ok: false, .. }))
        );

        let no_sub = federate(
            &p,
            &claims(json!({"iss": "https://issuer.example", "aud": canonical})),
        );
        assert!(
            matches!(no_sub.rejection, Some(Rejection::Mapping(_))),
            "{no_sub:?}"
        );
        assert_eq!(
            no_sub.rejection.as_ref().map(Rejection::error),
            Some("invalid_request")
        );
    }

    #[test]
    fn an_assertion_of_the_other_kind_is_refused_before_mapping() {
        let trace = federate(&provider(false, None), &caller(&format!("{ROLE}/s")));
        assert_eq!(
            trace.rejection,
            Some(Rejection::SubjectKind {
                expected: ProviderKind::Oidc
            })
        );
        assert_eq!(trace.steps.len(), 2);
        assert!(trace.mapped.is_none());
    }
}
