//! Attribute mappings: which CEL expression over the `assertion` produces `google.subject`,
//! `google.groups` and each custom `attribute.NAME`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use cel::Value as CelValue;
use serde::Serialize;
use serde_json::Value;

use super::{expr, short};

/// The target key of the subject.
pub const GOOGLE_SUBJECT: &str = "google.subject";
/// The target key of the groups.
pub const GOOGLE_GROUPS: &str = "google.groups";
/// The prefix of custom attribute targets.
pub const ATTRIBUTE_PREFIX: &str = "attribute.";

/// Most custom attributes a mapping may define.
pub const MAX_CUSTOM_ATTRIBUTES: usize = 50;
/// Longest custom attribute name (after `attribute.`).
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 100;
/// Longest mapping expression, in characters.
pub const MAX_EXPRESSION_LEN: usize = 2048;
/// Longest `google.subject` value, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 127;
/// Largest total of mapped attribute names and values, in bytes.
pub const MAX_MAPPED_BYTES: usize = 8 * 1024;

/// The AWS provider's default `google.subject` expression.
const AWS_DEFAULT_SUBJECT: &str = "assertion.arn";
/// The AWS provider's default `attribute.aws_role` expression.
const AWS_DEFAULT_ROLE: &str = "assertion.arn.contains('assumed-role') ? assertion.arn.extract('{account_arn}assumed-role/') + 'assumed-role/' + assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn";

/// The kind of a workload identity pool provider, which decides the mapping rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ProviderKind {
    /// An AWS provider: an empty mapping means [`AttributeMapping::aws_default`].
    Aws,
    /// An OIDC provider: the mapping is required and must map `google.subject`.
    Oidc,
}

/// What a mapping assigns to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum MappingTarget {
    /// `google.subject`.
    Subject,
    /// `google.groups`.
    Groups,
    /// `attribute.NAME` (the name without the prefix).
    Attribute(String),
}

impl MappingTarget {
    /// Parses a target key, checking custom attribute names (`[a-z0-9_]`, at most
    /// [`MAX_ATTRIBUTE_NAME_LEN`] characters).
    pub fn parse(key: &str) -> Result<MappingTarget, MappingError> {
        match key {
            GOOGLE_SUBJECT => Ok(MappingTarget::Subject),
            GOOGLE_GROUPS => Ok(MappingTarget::Groups),
            _ => {
                let Some(name) = key.strip_prefix(ATTRIBUTE_PREFIX) else {
                    return Err(MappingError::UnknownTarget { target: short(key) });
                };
                let valid = !name.is_empty()
                    && name.len() <= MAX_ATTRIBUTE_NAME_LEN
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if valid {
                    Ok(MappingTarget::Attribute(name.to_owned()))
                } else {
                    Err(MappingError::InvalidAttributeName { target: short(key) })
                }
            }
        }
    }
}

impl fmt::Display for MappingTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingTarget::Subject => f.write_str(GOOGLE_SUBJECT),
            MappingTarget::Groups => f.write_str(GOOGLE_GROUPS),
            MappingTarget::Attribute(name) => write!(f, "{ATTRIBUTE_PREFIX}{name}"),
        }
    }
}

/// Why a mapping was refused, or could not be applied to an assertion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// A custom mapping (or any OIDC mapping) without `google.subject`.
    #[error("the attribute mapping must map google.subject")]
    MissingSubject,
    /// A key that is neither `google.subject`, `google.groups` nor `attribute.NAME`.
    #[error(
        "{target:?} is not a mapping target: use google.subject, google.groups or attribute.NAME"
    )]
    UnknownTarget {
        /// The key.
        target: String,
    },
    /// A custom attribute name with characters other than `[a-z0-9_]`, empty or too long.
    #[error(
        "invalid attribute name {target:?}: names are 1 to 100 characters of lower-case letters, digits and '_'"
    )]
    InvalidAttributeName {
        /// The key.
        target: String,
    },
    /// The same target twice.
    #[error("{target} is mapped more than once")]
    DuplicateTarget {
        /// The target.
        target: String,
    },
    /// More than [`MAX_CUSTOM_ATTRIBUTES`] custom attributes.
    #[error("{count} custom attributes are mapped; at most 50 are allowed")]
    TooManyAttributes {
        /// How many.
        count: usize,
    },
    /// An expression over [`MAX_EXPRESSION_LEN`] characters.
    #[error("the expression for {target} is {len} characters long; at most 2048 are allowed")]
    ExpressionTooLong {
        /// The target.
        target: String,
        /// Its length.
        len: usize,
    },
    /// An expression that does not compile.
    #[error("the expression for {target} is not valid CEL: {message}")]
    Compile {
        /// The target.
        target: String,
        /// The parser's message.
        message: String,
    },
    /// An expression that reads a variable other than `assertion`.
    #[error(
        "the expression for {target} reads {variable:?}; mapping expressions can only read `assertion`"
    )]
    UnknownVariable {
        /// The target.
        target: String,
        /// The variable.
        variable: String,
    },
    /// Evaluation failed.
    #[error("the expression for {target} could not be evaluated: {message}")]
    Evaluate {
        /// The target.
        target: String,
        /// The evaluator's message.
        message: String,
    },
    /// The expression produced a value of the wrong type.
    #[error("the expression for {target} must produce {expected}, not {found}")]
    WrongType {
        /// The target.
        target: String,
        /// What was expected.
        expected: &'static str,
        /// The CEL type found.
        found: &'static str,
    },
    /// `google.subject` evaluated to the empty string.
    #[error("the mapped google.subject is empty")]
    EmptySubject,
    /// `google.subject` is longer than [`MAX_SUBJECT_BYTES`].
    #[error(
        "the mapped attribute google.subject is {len} bytes long, over the 127-byte limit: change the attribute mapping or the incoming assertion"
    )]
    SubjectTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The mapped attributes are over [`MAX_MAPPED_BYTES`].
    #[error("the mapped attributes total {size} bytes, over the 8 KB limit")]
    TooLarge {
        /// Their size in bytes.
        size: usize,
    },
}

/// A validated attribute mapping: target → CEL expression over `assertion`.
///
/// Expressions are compiled when the mapping is parsed (so errors surface at configuration
/// time) and again when it is applied; the mapping itself holds only their text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeMapping {
    entries: BTreeMap<MappingTarget, String>,
}

impl AttributeMapping {
    /// Parses a mapping given as `target → expression` pairs, with Google's rules for
    /// `provider`:
    ///
    /// * targets are `google.subject`, `google.groups` or `attribute.NAME` with `NAME` of
    ///   `[a-z0-9_]`, at most 100 characters; at most 50 custom attributes;
    /// * each expression is at most 2048 characters, compiles, and reads no variable but
    ///   `assertion`;
    /// * a non-empty mapping must map `google.subject`; an empty one is the AWS default for AWS
    ///   providers and an error for OIDC providers.
    pub fn parse<K, V>(
        entries: impl IntoIterator<Item = (K, V)>,
        provider: ProviderKind,
    ) -> Result<AttributeMapping, MappingError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut parsed = BTreeMap::new();
        for (key, expression) in entries {
            let target = MappingTarget::parse(key.as_ref())?;
            let expression = expression.as_ref();
            let len = expression.chars().count();
            if len > MAX_EXPRESSION_LEN {
                return Err(MappingError::ExpressionTooLong {
                    target: target.to_string(),
                    len,
                });
            }
            let program = expr::compile(expression).map_err(|message| MappingError::Compile {
                target: target.to_string(),
                message,
            })?;
            if let Some(variable) = expr::free_variables(&program)
                .into_iter()
                .find(|v| v != "assertion")
            {
                return Err(MappingError::UnknownVariable {
                    target: target.to_string(),
                    variable,
                });
            }
            if parsed.contains_key(&target) {
                return Err(MappingError::DuplicateTarget {
                    target: target.to_string(),
                });
            }
            parsed.insert(target, expression.to_owned());
        }
        if parsed.is_empty() && provider == ProviderKind::Aws {
            return Ok(AttributeMapping::aws_default());
        }
        if !parsed.contains_key(&MappingTarget::Subject) {
            return Err(MappingError::MissingSubject);
        }
        let custom = parsed
            .keys()
            .filter(|t| matches!(t, MappingTarget::Attribute(_)))
            .count();
        if custom > MAX_CUSTOM_ATTRIBUTES {
            return Err(MappingError::TooManyAttributes { count: custom });
        }
        Ok(AttributeMapping { entries: parsed })
    }

    /// Google's default mapping for AWS providers: `google.subject` = `assertion.arn`, and
    /// `attribute.aws_role` = the role's assumed-role ARN without the session name
    /// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE`) for role sessions, the ARN itself otherwise.
    pub fn aws_default() -> AttributeMapping {
        AttributeMapping {
            entries: BTreeMap::from([
                (MappingTarget::Subject, AWS_DEFAULT_SUBJECT.to_owned()),
                (
                    MappingTarget::Attribute("aws_role".to_owned()),
                    AWS_DEFAULT_ROLE.to_owned(),
                ),
            ]),
        }
    }

    /// The mapping as `target key → expression`.
    pub fn entries(&self) -> impl Iterator<Item = (String, &str)> + '_ {
        self.entries
            .iter()
            .map(|(target, expression)| (target.to_string(), expression.as_str()))
    }

    /// Evaluates every expression over `assertion` (the AWS `GetCallerIdentity` result or the
    /// OIDC token's claims) and checks the results: `google.subject` a non-empty string of at
    /// most 127 bytes, `google.groups` a list of strings, custom attributes strings, everything
    /// together at most 8 KB. A custom attribute or `google.groups` whose expression yields
    /// `null` is left unset.
    pub fn apply(&self, assertion: &Value) -> Result<MappedAttributes, MappingError> {
        let assertion = expr::from_json(assertion);
        let mut mapped = MappedAttributes::default();
        for (target, expression) in &self.entries {
            let name = || target.to_string();
            let program = expr::compile(expression).map_err(|message| MappingError::Compile {
                target: name(),
                message,
            })?;
            let value = expr::evaluate(&program, vec![("assertion", assertion.clone())]).map_err(
                |message| MappingError::Evaluate {
                    target: name(),
                    message: short(&message),
                },
            )?;
            let wrong = |expected: &'static str, found: &CelValue| MappingError::WrongType {
                target: name(),
                expected,
                found: expr::type_name(found),
            };
            match (target, value) {
                (MappingTarget::Subject, CelValue::String(s)) => mapped.subject = s.to_string(),
                (MappingTarget::Subject, other) => return Err(wrong("a string", &other)),
                (_, CelValue::Null) => {}
                (MappingTarget::Groups, CelValue::List(items)) => {
                    for item in items.iter() {
                        match item {
                            CelValue::String(s) => mapped.groups.push(s.to_string()),
                            other => return Err(wrong("a list of strings", other)),
                        }
                    }
                }
                (MappingTarget::Groups, other) => return Err(wrong("a list of strings", &other)),
                (MappingTarget::Attribute(attr), CelValue::String(s)) => {
                    mapped.attributes.insert(attr.clone(), s.to_string());
                }
                (MappingTarget::Attribute(_), other) => return Err(wrong("a string", &other)),
            }
        }
        if mapped.subject.is_empty() {
            return Err(MappingError::EmptySubject);
        }
        if mapped.subject.len() > MAX_SUBJECT_BYTES {
            return Err(MappingError::SubjectTooLong {
                len: mapped.subject.len(),
            });
        }
        let size = mapped.size_bytes();
        if size > MAX_MAPPED_BYTES {
            return Err(MappingError::TooLarge { size });
        }
        Ok(mapped)
    }
}

/// The result of applying a mapping: what conditions and IAM members see of a federated
/// identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MappedAttributes {
    /// `google.subject`.
    pub subject: String,
    /// `google.groups` (empty when not mapped).
    pub groups: Vec<String>,
    /// Custom attributes by name, without the `attribute.` prefix.
    pub attributes: BTreeMap<String, String>,
}

impl MappedAttributes {
    /// The size counted against the 8 KB limit: every mapped target's key and value, in bytes.
    pub fn size_bytes(&self) -> usize {
        let subject = GOOGLE_SUBJECT.len() + self.subject.len();
        let groups = if self.groups.is_empty() {
            0
        } else {
            GOOGLE_GROUPS.len() + self.groups.iter().map(String::len).sum::<usize>()
        };
        let custom: usize = self
            .attributes
            .iter()
            .map(|(k, v)| ATTRIBUTE_PREFIX.len() + k.len() + v.len())
            .sum();
        subject + groups + custom
    }

    /// The `google` variable of conditions: `{subject, groups}`.
    pub(crate) fn google_value(&self) -> CelValue {
        expr::string_map([
            (
                "subject".to_owned(),
                CelValue::String(Arc::new(self.subject.clone())),
            ),
            ("groups".to_owned(), expr::string_list(&self.groups)),
        ])
    }

    /// The `attribute` variable of conditions: `{name: value}`.
    pub(crate) fn attribute_value(&self) -> CelValue {
        expr::string_map(
            self.attributes
                .iter()
                .map(|(k, v)| (k.clone(), CelValue::String(Arc::new(v.clone())))),
        )
    }

    /// The target keys that are set, e.g. `google.subject`, `attribute.aws_role`.
    pub fn targets(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::from([GOOGLE_SUBJECT.to_owned()]);
        if !self.groups.is_empty() {
            out.insert(GOOGLE_GROUPS.to_owned());
        }
        out.extend(
            self.attributes
                .keys()
                .map(|k| format!("{ATTRIBUTE_PREFIX}{k}")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn aws(arn: &str) -> Value {
        json!({"arn": arn, "account": "111122223333", "userid": "AROAEXAMPLE:session"})
    }

    #[test]
    fn aws_default_mapping_table() {
        let m = AttributeMapping::aws_default();
        let cases = [
            (
                "arn:aws:sts::111122223333:assumed-role/gcp-caller/i-0a1b2c3d4e5f60718",
                "arn:aws:sts::111122223333:assumed-role/gcp-caller",
            ),
            (
                "arn:aws:sts::111122223333:assumed-role/other-app/3f2a",
                "arn:aws:sts::111122223333:assumed-role/other-app",
            ),
            (
                "arn:aws:iam::111122223333:user/Alice",
                "arn:aws:iam::111122223333:user/Alice",
            ),
            (
                "arn:aws:sts::111122223333:federated-user/bob",
                "arn:aws:sts::111122223333:federated-user/bob",
            ),
        ];
        for (arn, role) in cases {
            let mapped = m.apply(&aws(arn)).unwrap();
            assert_eq!(mapped.subject, arn);
            assert_eq!(
                mapped.attributes,
                BTreeMap::from([("aws_role".to_owned(), role.to_owned())]),
                "{arn}"
            );
            assert!(mapped.groups.is_empty());
        }
        // An empty AWS mapping is the default.
        let empty: [(&str, &str); 0] = [];
        assert_eq!(AttributeMapping::parse(empty, ProviderKind::Aws), Ok(m));
    }

    #[test]
    fn oidc_mapping_with_extract() {
        let m = AttributeMapping::parse(
            [
                ("google.subject", "assertion.sub"),
                ("attribute.ns", "assertion.sub.extract('/ns/{ns}/')"),
                ("google.groups", "assertion.groups"),
            ],
            ProviderKind::Oidc,
        )
        .unwrap();
        let mapped = m
            .apply(&json!({
                "sub": "spiffe://example.org/ns/prod/sa/billing",
                "groups": ["billing", "prod"],
            }))
            .unwrap();
        assert_eq!(mapped.subject, "spiffe://example.org/ns/prod/sa/billing");
        assert_eq!(mapped.attributes["ns"], "prod");
        assert_eq!(mapped.groups, ["billing", "prod"]);
        assert_eq!(
            mapped.targets().into_iter().collect::<Vec<_>>(),
            ["attribute.ns", "google.groups", "google.subject"]
        );
        // No /ns/ segment: the attribute is the empty string.
        let mapped = m
            .apply(&json!({"sub": "spiffe://example.org/sa/x", "groups": null}))
            .unwrap();
        assert_eq!(mapped.attributes["ns"], "");
        assert!(mapped.groups.is_empty());
    }

    #[test]
    fn validation_errors() {
        let oidc = |entries: &[(&str, &str)]| {
            AttributeMapping::parse(entries.iter().copied(), ProviderKind::Oidc)
        };
        assert_eq!(oidc(&[]), Err(MappingError::MissingSubject));
        assert_eq!(
            AttributeMapping::parse([("attribute.a", "assertion.a")], ProviderKind::Aws),
            Err(MappingError::MissingSubject)
        );
        assert!(matches!(
            oidc(&[("google.subject", "assertion.sub"), ("google.email", "x")]),
            Err(MappingError::UnknownTarget { .. })
        ));
        assert!(matches!(
            oidc(&[("google.subject", "assertion.sub"), ("subject", "x")]),
            Err(MappingError::UnknownTarget { .. })
        ));
        for bad in [
            "attribute.Role",
            "attribute.",
            "attribute.a-b",
            "attribute.é",
        ] {
            assert!(
                matches!(
                    oidc(&[("google.subject", "assertion.sub"), (bad, "assertion.x")]),
                    Err(MappingError::InvalidAttributeName { .. })
                ),
                "{bad}"
            );
        }
        let long_name = format!("attribute.{}", "a".repeat(101));
        assert!(matches!(
            oidc(&[
                ("google.subject", "assertion.sub"),
                (&long_name, "assertion.x")
            ]),
            Err(MappingError::InvalidAttributeName { .. })
        ));
        let ok_name = format!("attribute.{}", "a".repeat(100));
        assert!(
            oidc(&[
                ("google.subject", "assertion.sub"),
                (&ok_name, "assertion.x")
            ])
            .is_ok()
        );
        let long_expr = format!("'{}'", "x".repeat(2047));
        assert_eq!(
            oidc(&[("google.subject", &long_expr)]),
            Err(MappingError::ExpressionTooLong {
                target: "google.subject".into(),
                len: 2049
            })
        );
        assert!(matches!(
            oidc(&[("google.subject", "assertion.sub ==")]),
            Err(MappingError::Compile { .. })
        ));
        assert_eq!(
            oidc(&[("google.subject", "claims.sub")]),
            Err(MappingError::UnknownVariable {
                target: "google.subject".into(),
                variable: "claims".into()
            })
        );
        let mut many: Vec<(String, String)> = (0..51)
            .map(|i| (format!("attribute.a{i}"), "assertion.sub".to_owned()))
            .collect();
        many.push(("google.subject".into(), "assertion.sub".into()));
        assert_eq!(
            AttributeMapping::parse(many.clone(), ProviderKind::Oidc),
            Err(MappingError::TooManyAttributes { count: 51 })
        );
        many.remove(0);
        assert!(AttributeMapping::parse(many, ProviderKind::Oidc).is_ok());
        assert_eq!(
            oidc(&[
                ("google.subject", "assertion.a"),
                ("google.subject", "assertion.b")
            ]),
            Err(MappingError::DuplicateTarget {
                target: "google.subject".into()
            })
        );
    }

    #[test]
    fn evaluation_errors() {
        let m = AttributeMapping::parse([("google.subject", "assertion.sub")], ProviderKind::Oidc)
            .unwrap();
        assert!(matches!(
            m.apply(&json!({"aud": "x"})),
            Err(MappingError::Evaluate { .. })
        ));
        assert_eq!(
            m.apply(&json!({"sub": 5})),
            Err(MappingError::WrongType {
                target: "google.subject".into(),
                expected: "a string",
                found: "int"
            })
        );
        assert_eq!(
            m.apply(&json!({"sub": ""})),
            Err(MappingError::EmptySubject)
        );
        assert_eq!(
            m.apply(&json!({"sub": "s".repeat(128)})),
            Err(MappingError::SubjectTooLong { len: 128 })
        );
        assert!(m.apply(&json!({"sub": "s".repeat(127)})).is_ok());
        // Bytes, not characters.
        assert_eq!(
            m.apply(&json!({"sub": "é".repeat(64)})),
            Err(MappingError::SubjectTooLong { len: 128 })
        );
        let m = AttributeMapping::parse(
            [
                ("google.subject", "assertion.sub"),
                ("google.groups", "assertion.g"),
                ("attribute.a", "assertion.a"),
            ],
            ProviderKind::Oidc,
        )
        .unwrap();
        assert!(matches!(
            m.apply(&json!({"sub": "s", "g": "admins", "a": "x"})),
            Err(MappingError::WrongType {
                expected: "a list of strings",
                ..
            })
        ));
        assert!(matches!(
            m.apply(&json!({"sub": "s", "g": [1], "a": "x"})),
            Err(MappingError::WrongType {
                expected: "a list of strings",
                ..
            })
        ));
        assert!(matches!(
            m.apply(&json!({"sub": "s", "g": [], "a": ["x"]})),
            Err(MappingError::WrongType {
                expected: "a string",
                ..
            })
        ));
        assert_eq!(
            m.apply(&json!({"sub": "s", "g": [], "a": "x".repeat(9000)})),
            Err(MappingError::TooLarge {
                size: 15 + 11 + 9000
            })
        );
    }
}
