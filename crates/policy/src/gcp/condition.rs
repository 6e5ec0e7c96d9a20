//! Attribute conditions: a CEL expression that must be true for a credential to be exchanged.

use serde::Serialize;
use serde_json::Value;

use super::mapping::MappedAttributes;
use super::{expr, short};

/// Longest attribute condition, in characters.
pub const MAX_CONDITION_LEN: usize = 4096;

/// The variables a condition may read.
const CONDITION_VARIABLES: [&str; 3] = ["assertion", "google", "attribute"];

/// Why a condition was refused or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConditionError {
    /// An empty (or blank) condition.
    #[error("the attribute condition is empty")]
    Empty,
    /// Over [`MAX_CONDITION_LEN`] characters.
    #[error("the attribute condition is {len} characters long; at most 4096 are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not valid CEL.
    #[error("the attribute condition is not valid CEL: {message}")]
    Compile {
        /// The parser's message.
        message: String,
    },
    /// Reads a variable other than `assertion`, `google` and `attribute`.
    #[error(
        "the attribute condition reads {variable:?}; conditions can read `assertion`, `google` and `attribute`"
    )]
    UnknownVariable {
        /// The variable.
        variable: String,
    },
    /// Evaluation failed (e.g. a missing key).
    #[error("the attribute condition could not be evaluated: {message}")]
    Evaluate {
        /// The evaluator's message.
        message: String,
    },
    /// The condition produced something other than a bool.
    #[error("the attribute condition must produce a bool, not {found}")]
    NotBool {
        /// The CEL type produced.
        found: &'static str,
    },
}

/// A validated attribute condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeCondition {
    source: String,
}

impl AttributeCondition {
    /// Parses a condition: at most 4096 characters, valid CEL, reading only `assertion`,
    /// `google` and `attribute`.
    pub fn parse(expression: &str) -> Result<AttributeCondition, ConditionError> {
        if expression.trim().is_empty() {
            return Err(ConditionError::Empty);
        }
        let len = expression.chars().count();
        if len > MAX_CONDITION_LEN {
            return Err(ConditionError::TooLong { len });
        }
        let program =
            expr::compile(expression).map_err(|message| ConditionError::Compile { message })?;
        if let Some(variable) = expr::free_variables(&program)
            .into_iter()
            .find(|v| !CONDITION_VARIABLES.contains(&v.as_str()))
        {
            return Err(ConditionError::UnknownVariable { variable });
        }
        Ok(AttributeCondition {
            source: expression.to_owned(),
        })
    }

    /// The condition's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition with `assertion` (the raw assertion), `google`
    /// (`{subject, groups}`) and `attribute` (the custom attributes by name) bound. A non-bool
    /// result is an error, not a refusal.
    pub fn evaluate(
        &self,
        assertion: &Value,
        mapped: &MappedAttributes,
    ) -> Result<bool, ConditionError> {
        let program =
            expr::compile(&self.source).map_err(|message| ConditionError::Compile { message })?;
        let value = expr::evaluate(
            &program,
            vec![
                ("assertion", expr::from_json(assertion)),
                ("google", mapped.google_value()),
                ("attribute", mapped.attribute_value()),
            ],
        )
        .map_err(|message| ConditionError::Evaluate {
            message: short(&message),
        })?;
        match value {
            cel::Value::Bool(b) => Ok(b),
            other => Err(ConditionError::NotBool {
                found: expr::type_name(&other),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::gcp::AttributeMapping;

    const SEED001: &str =
        "attribute.aws_role == 'arn:aws:sts::111122223333:assumed-role/gcp-caller'";

    fn aws(role: &str) -> (Value, MappedAttributes) {
        let assertion = json!({
            "arn": format!("arn:aws:sts::111122223333:assumed-role/{role}/i-0a1b2c3d4e5f60718"),
            "account": "111122223333",
            "userid": "AROAEXAMPLE:i-0a1b2c3d4e5f60718",
        });
        let mapped = AttributeMapping::aws_default().apply(&assertion).unwrap();
        (assertion, mapped)
    }

    #[test]
    fn seed001_condition() {
        let c = AttributeCondition::parse(SEED001).unwrap();
        assert_eq!(c.source(), SEED001);
        let (a, m) = aws("gcp-caller");
        assert_eq!(c.evaluate(&a, &m), Ok(true));
        let (a, m) = aws("other-app");
        assert_eq!(c.evaluate(&a, &m), Ok(false));
        // The seed's own spelling, constant first.
        let c = AttributeCondition::parse(
            "'arn:aws:sts::111122223333:assumed-role/gcp-caller' == attribute.aws_role",
        )
        .unwrap();
        let (a, m) = aws("gcp-caller");
        assert_eq!(c.evaluate(&a, &m), Ok(true));
    }

    #[test]
    fn condition_table() {
        let assertion = json!({
            "sub": "spiffe://example.org/ns/prod/sa/billing",
            "iat": 1_700_000_000,
            "groups": ["admins"],
        });
        let mapped = MappedAttributes {
            subject: "spiffe://example.org/ns/prod/sa/billing".into(),
            groups: vec!["admins".into(), "devs".into()],
            attributes: BTreeMap::from([("ns".to_owned(), "prod".to_owned())]),
        };
        let cases: &[(&str, Result<bool, &str>)] = &[
            ("true", Ok(true)),
            ("false", Ok(false)),
            ("'admins' in google.groups", Ok(true)),
            ("'ops' in google.groups", Ok(false)),
            (
                "google.subject.startsWith('spiffe://example.org/')",
                Ok(true),
            ),
            ("attribute.ns == 'prod' && assertion.iat > 0", Ok(true)),
            ("assertion.sub.extract('/sa/{sa}') == 'billing'", Ok(true)),
            ("assertion.groups.exists(g, g == 'admins')", Ok(true)),
            ("has(assertion.email)", Ok(false)),
            (
                "assertion.sub.matches('^spiffe://example\\\\.org/ns/[a-z]+/')",
                Ok(true),
            ),
            ("'x'", Err("not-bool")),
            ("1 + 1", Err("not-bool")),
            ("assertion.groups", Err("not-bool")),
            ("attribute.missing == 'x'", Err("evaluate")),
            ("assertion.email == 'x'", Err("evaluate")),
            ("1 / 0 == 1", Err("evaluate")),
            ("'abc'.extract('no-placeholder') == ''", Err("evaluate")),
        ];
        for (source, want) in cases {
            let c = AttributeCondition::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            let got = c.evaluate(&assertion, &mapped);
            match (want, &got) {
                (Ok(b), Ok(g)) => assert_eq!(b, g, "{source}"),
                (Err("not-bool"), Err(ConditionError::NotBool { .. }))
                | (Err("evaluate"), Err(ConditionError::Evaluate { .. })) => {}
                _ => panic!("{source}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn parse_errors() {
        assert_eq!(AttributeCondition::parse(""), Err(ConditionError::Empty));
        assert_eq!(
            AttributeCondition::parse("  \n"),
            Err(ConditionError::Empty)
        );
        assert!(matches!(
            AttributeCondition::parse("attribute.aws_role =="),
            Err(ConditionError::Compile { .. })
        ));
        assert!(matches!(
            AttributeCondition::parse("attribute.aws_role == 'x"),
            Err(ConditionError::Compile { .. })
        ));
        assert_eq!(
            AttributeCondition::parse("atribute.aws_role == 'x'"),
            Err(ConditionError::UnknownVariable {
                variable: "atribute".into()
            })
        );
        let long = format!("'{}' == ''", "x".repeat(4090));
        assert_eq!(
            AttributeCondition::parse(&long),
            Err(ConditionError::TooLong { len: 4098 })
        );
    }
}
