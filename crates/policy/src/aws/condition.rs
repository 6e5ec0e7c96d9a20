//! Condition operators and how each compares a request value with the policy's values.
//!
//! A condition is `Operator: { Key: Value | [Values] }`. The operator name may carry a set prefix
//! (`ForAnyValue:` / `ForAllValues:`) and, except for `Null`, the `IfExists` suffix. Evaluation
//! rules implemented here:
//!
//! * several values for one key are OR'ed;
//! * a key absent from the request makes `…IfExists` conditions true, `ForAllValues:` true,
//!   `ForAnyValue:` false, negated operators (`StringNotEquals`, `NotIpAddress`, …) true, and
//!   every other operator false;
//! * a negated operator is true when the request value matches none of the policy values;
//! * a request value that cannot be read the operator's way (a non-number for `Numeric…`, a
//!   non-ARN for `Arn…`) satisfies neither the operator nor its negation;
//! * a policy value that cannot be read the operator's way never matches (the lint reports it);
//! * a multi-valued key used without a set prefix behaves like `ForAnyValue:` for positive
//!   operators, and like its negation for negated ones (true when no request value matches);
//! * policy variables are substituted in `String…` and `Arn…` values; a variable naming an absent
//!   key (without a default) makes the whole condition false.

use std::cmp::Ordering;
use std::net::IpAddr;

use base64::Engine as _;
use serde::Serialize;
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use super::evaluate::{ConditionTrace, ContextValue, RequestContext};
use super::pattern::{self, Pattern};
use super::policy::{Condition, PolicyVersion};

/// The base condition operator, without set prefix or `IfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum OperatorKind {
    /// Case-sensitive string equality.
    StringEquals,
    /// Negation of [`OperatorKind::StringEquals`].
    StringNotEquals,
    /// Case-insensitive string equality.
    StringEqualsIgnoreCase,
    /// Negation of [`OperatorKind::StringEqualsIgnoreCase`].
    StringNotEqualsIgnoreCase,
    /// Case-sensitive match with `*` and `?` wildcards.
    StringLike,
    /// Negation of [`OperatorKind::StringLike`].
    StringNotLike,
    /// Numeric equality.
    NumericEquals,
    /// Negation of [`OperatorKind::NumericEquals`].
    NumericNotEquals,
    /// Request value < policy value.
    NumericLessThan,
    /// Request value <= policy value.
    NumericLessThanEquals,
    /// Request value > policy value.
    NumericGreaterThan,
    /// Request value >= policy value.
    NumericGreaterThanEquals,
    /// Same instant (ISO 8601 or epoch seconds).
    DateEquals,
    /// Negation of [`OperatorKind::DateEquals`].
    DateNotEquals,
    /// Request date before the policy date.
    DateLessThan,
    /// Request date at or before the policy date.
    DateLessThanEquals,
    /// Request date after the policy date.
    DateGreaterThan,
    /// Request date at or after the policy date.
    DateGreaterThanEquals,
    /// Boolean equality (`true`/`false`, any case).
    Bool,
    /// Byte equality of base64-encoded values.
    BinaryEquals,
    /// Request IP address inside one of the policy CIDR ranges.
    IpAddress,
    /// Negation of [`OperatorKind::IpAddress`].
    NotIpAddress,
    /// ARN match, component by component, with wildcards (identical to `ArnLike` in AWS).
    ArnEquals,
    /// Negation of [`OperatorKind::ArnEquals`].
    ArnNotEquals,
    /// ARN match, component by component, with wildcards.
    ArnLike,
    /// Negation of [`OperatorKind::ArnLike`].
    ArnNotLike,
    /// Presence test: `"true"` requires the key to be absent, `"false"` present.
    Null,
}

impl OperatorKind {
    /// Every operator, in the order AWS documents them.
    pub const ALL: [OperatorKind; 27] = [
        OperatorKind::StringEquals,
        OperatorKind::StringNotEquals,
        OperatorKind::StringEqualsIgnoreCase,
        OperatorKind::StringNotEqualsIgnoreCase,
        OperatorKind::StringLike,
        OperatorKind::StringNotLike,
        OperatorKind::NumericEquals,
        OperatorKind::NumericNotEquals,
        OperatorKind::NumericLessThan,
        OperatorKind::NumericLessThanEquals,
        OperatorKind::NumericGreaterThan,
        OperatorKind::NumericGreaterThanEquals,
        OperatorKind::DateEquals,
        OperatorKind::DateNotEquals,
        OperatorKind::DateLessThan,
        OperatorKind::DateLessThanEquals,
        OperatorKind::DateGreaterThan,
        OperatorKind::DateGreaterThanEquals,
        OperatorKind::Bool,
        OperatorKind::BinaryEquals,
        OperatorKind::IpAddress,
        OperatorKind::NotIpAddress,
        OperatorKind::ArnEquals,
        OperatorKind::ArnNotEquals,
        OperatorKind::ArnLike,
        OperatorKind::ArnNotLike,
        OperatorKind::Null,
    ];

    /// The operator's name as AWS spells it.
    pub fn name(self) -> &'static str {
        match self {
            OperatorKind::StringEquals => "StringEquals",
            OperatorKind::StringNotEquals => "StringNotEquals",
            OperatorKind::StringEqualsIgnoreCase => "StringEqualsIgnoreCase",
            OperatorKind::StringNotEqualsIgnoreCase => "StringNotEqualsIgnoreCase",
            OperatorKind::StringLike => "StringLike",
            OperatorKind::StringNotLike => "StringNotLike",
            OperatorKind::NumericEquals => "NumericEquals",
            OperatorKind::NumericNotEquals => "NumericNotEquals",
            OperatorKind::NumericLessThan => "NumericLessThan",
            OperatorKind::NumericLessThanEquals => "NumericLessThanEquals",
            OperatorKind::NumericGreaterThan => "NumericGreaterThan",
            OperatorKind::NumericGreaterThanEquals => "NumericGreaterThanEquals",
            OperatorKind::DateEquals => "DateEquals",
            OperatorKind::DateNotEquals => "DateNotEquals",
            OperatorKind::DateLessThan => "DateLessThan",
            OperatorKind::DateLessThanEquals => "DateLessThanEquals",
            OperatorKind::DateGreaterThan => "DateGreaterThan",
            OperatorKind::DateGreaterThanEquals => "DateGreaterThanEquals",
            OperatorKind::Bool => "Bool",
            OperatorKind::BinaryEquals => "BinaryEquals",
            OperatorKind::IpAddress => "IpAddress",
            OperatorKind::NotIpAddress => "NotIpAddress",
            OperatorKind::ArnEquals => "ArnEquals",
            OperatorKind::ArnNotEquals => "ArnNotEquals",
            OperatorKind::ArnLike => "ArnLike",
            OperatorKind::ArnNotLike => "ArnNotLike",
            OperatorKind::Null => "Null",
        }
    }

    /// Whether this operator is the negation of another (`StringNotEquals`, `NotIpAddress`, …).
    pub fn is_negated(self) -> bool {
        self.positive() != self
    }

    /// The positive operator this one negates, or itself when it is not negated.
    pub fn positive(self) -> OperatorKind {
        match self {
            OperatorKind::StringNotEquals => OperatorKind::StringEquals,
            OperatorKind::StringNotEqualsIgnoreCase => OperatorKind::StringEqualsIgnoreCase,
            OperatorKind::StringNotLike => OperatorKind::StringLike,
            OperatorKind::NumericNotEquals => OperatorKind::NumericEquals,
            OperatorKind::DateNotEquals => OperatorKind::DateEquals,
            OperatorKind::NotIpAddress => OperatorKind::IpAddress,
            OperatorKind::ArnNotEquals => OperatorKind::ArnEquals,
            OperatorKind::ArnNotLike => OperatorKind::ArnLike,
            other => other,
        }
    }

    /// Whether policy variables are substituted in this operator's values (`String…`, `Arn…`).
    pub fn takes_variables(self) -> bool {
        matches!(
            self.positive(),
            OperatorKind::StringEquals
                | OperatorKind::StringEqualsIgnoreCase
                | OperatorKind::StringLike
                | OperatorKind::ArnEquals
                | OperatorKind::ArnLike
        )
    }

    /// Whether `*` and `?` in this operator's values are wildcards.
    fn takes_wildcards(self) -> bool {
        matches!(
            self.positive(),
            OperatorKind::StringLike | OperatorKind::ArnEquals | OperatorKind::ArnLike
        )
    }

    fn from_name(name: &str) -> Option<OperatorKind> {
        OperatorKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

/// A set operator prefix for multi-valued keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum SetOperator {
    /// `ForAnyValue:` — true when at least one request value satisfies the operator; false when
    /// the key is absent or empty.
    ForAnyValue,
    /// `ForAllValues:` — true when every request value satisfies the operator; true when the key
    /// is absent or empty.
    ForAllValues,
}

/// A condition operator as parsed from its name, e.g. `ForAnyValue:StringLikeIfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ConditionOperator {
    /// The set prefix, if any.
    pub set: Option<SetOperator>,
    /// The base operator.
    pub kind: OperatorKind,
    /// Whether the `IfExists` suffix was given.
    pub if_exists: bool,
}

impl ConditionOperator {
    /// Parses an operator name. Prefix, operator and suffix are matched without regard to case.
    /// The error says what is wrong with the name.
    pub fn parse(text: &str) -> Result<ConditionOperator, String> {
        let mut rest = text;
        let mut set = None;
        for (prefix, op) in [
            ("ForAnyValue:", SetOperator::ForAnyValue),
            ("ForAllValues:", SetOperator::ForAllValues),
        ] {
            if let Some(head) = rest.get(..prefix.len())
                && head.eq_ignore_ascii_case(prefix)
            {
                set = Some(op);
                rest = &rest[prefix.len()..];
                break;
            }
        }
        let mut if_exists = false;
        const SUFFIX: &str = "IfExists";
        if rest.len() > SUFFIX.len()
            && let Some(tail) = rest.get(rest.len() - SUFFIX.len()..)
            && tail.eq_ignore_ascii_case(SUFFIX)
        {
            if_exists = true;
            rest = &rest[..rest.len() - SUFFIX.len()];
        }
        let kind = OperatorKind::from_name(rest)
            .ok_or_else(|| format!("unknown condition operator {text:?}"))?;
        if kind == OperatorKind::Null {
            if if_exists {
                return Err("the Null operator does not take the IfExists suffix".to_owned());
            }
            if set.is_some() {
                return Err("the Null operator does not take a set operator prefix".to_owned());
            }
        }
        Ok(ConditionOperator {
            set,
            kind,
            if_exists,
        })
    }
}

/// Evaluates one condition against the request and records how it went.
pub(crate) fn evaluate(
    condition: &Condition,
    version: PolicyVersion,
    ctx: &RequestContext,
) -> ConditionTrace {
    let value = ctx.get(&condition.key);
    let context_values = value.map(|v| v.values().to_vec());
    let result = decide(condition, version, ctx, value);
    ConditionTrace {
        operator: condition.operator.clone(),
        key: condition.key.clone(),
        context_values,
        policy_values: condition.values.clone(),
        result,
    }
}

fn decide(
    condition: &Condition,
    version: PolicyVersion,
    ctx: &RequestContext,
    value: Option<&ContextValue>,
) -> bool {
    let op = condition.parsed;
    if op.kind == OperatorKind::Null {
        let present = value.is_some();
        return condition.values.iter().any(|v| match parse_bool(v) {
            Some(true) => !present,
            Some(false) => present,
            None => false,
        });
    }
    let Ok(policy) = compile_values(condition, version, ctx) else {
        return false;
    };
    let Some(value) = value else {
        return match (op.if_exists, op.set) {
            (true, _) => true,
            (false, Some(SetOperator::ForAllValues)) => true,
            (false, Some(SetOperator::ForAnyValue)) => false,
            (false, None) => op.kind.is_negated(),
        };
    };
    let negated = op.kind.is_negated();
    let positive = op.kind.positive();
    // Whether one request value satisfies the operator (negation included).
    let satisfies = |request: &str| -> bool {
        match matches_any(positive, request, &policy) {
            Some(matched) => matched != negated,
            None => false,
        }
    };
    let values = value.values();
    match op.set {
        Some(SetOperator::ForAnyValue) => values.iter().any(|v| satisfies(v)),
        Some(SetOperator::ForAllValues) => values.iter().all(|v| satisfies(v)),
        None if negated => values.iter().all(|v| satisfies(v)),
        None => values.iter().any(|v| satisfies(v)),
    }
}

/// Policy values made ready for comparison: substituted, and compiled into patterns for the
/// string and ARN operators.
enum PolicyValues {
    Patterns(Vec<Pattern>),
    Raw(Vec<String>),
}

fn compile_values(
    condition: &Condition,
    version: PolicyVersion,
    ctx: &RequestContext,
) -> Result<PolicyValues, pattern::Unresolved> {
    let kind = condition.parsed.kind;
    if !(kind.takes_variables() || kind.takes_wildcards()) {
        return Ok(PolicyValues::Raw(condition.values.clone()));
    }
    let wildcards = kind.takes_wildcards();
    let patterns = condition
        .values
        .iter()
        .map(|v| {
            if kind.takes_variables() && version == PolicyVersion::V2012_10_17 {
                pattern::resolve(v, wildcards, |key| match ctx.get(key)? {
                    ContextValue::Single(s) => Some(s.clone()),
                    // AWS does not substitute multi-valued keys.
                    ContextValue::Multi(_) => None,
                })
            } else if wildcards {
                Ok(Pattern::glob(v))
            } else {
                Ok(Pattern::literal(v))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PolicyValues::Patterns(patterns))
}

/// Whether the request value matches at least one policy value under a positive operator.
/// `None` when the request value cannot be read the way the operator needs.
fn matches_any(kind: OperatorKind, request: &str, policy: &PolicyValues) -> Option<bool> {
    match (kind, policy) {
        (OperatorKind::StringEquals, PolicyValues::Patterns(p)) => {
            Some(p.iter().any(|p| p.text() == request))
        }
        (OperatorKind::StringEqualsIgnoreCase, PolicyValues::Patterns(p)) => {
            let request = request.to_lowercase();
            Some(p.iter().any(|p| p.text().to_lowercase() == request))
        }
        (OperatorKind::StringLike, PolicyValues::Patterns(p)) => {
            Some(p.iter().any(|p| p.matches(request)))
        }
        (OperatorKind::ArnEquals | OperatorKind::ArnLike, PolicyValues::Patterns(p)) => {
            let parts = split_arn(request)?;
            Some(p.iter().any(|p| arn_matches(p, &parts)))
        }
        (
            OperatorKind::NumericEquals
            | OperatorKind::NumericLessThan
            | OperatorKind::NumericLessThanEquals
            | OperatorKind::NumericGreaterThan
            | OperatorKind::NumericGreaterThanEquals,
            PolicyValues::Raw(values),
        ) => {
            let request = parse_number(request)?;
            Some(values.iter().filter_map(|v| parse_number(v)).any(|v| {
                request
                    .partial_cmp(&v)
                    .is_some_and(|ord| ordering_satisfies(kind, ord))
            }))
        }
        (
            OperatorKind::DateEquals
            | OperatorKind::DateLessThan
            | OperatorKind::DateLessThanEquals
            | OperatorKind::DateGreaterThan
            | OperatorKind::DateGreaterThanEquals,
            PolicyValues::Raw(values),
        ) => {
            let request = parse_date(request)?;
            Some(
                values
                    .iter()
                    .filter_map(|v| parse_date(v))
                    .any(|v| ordering_satisfies(kind, request.cmp(&v))),
            )
        }
        (OperatorKind::Bool, PolicyValues::Raw(values)) => {
            let request = parse_bool(request)?;
            Some(values.iter().any(|v| parse_bool(v) == Some(request)))
        }
        (OperatorKind::BinaryEquals, PolicyValues::Raw(values)) => {
            let request = parse_base64(request)?;
            Some(
                values
                    .iter()
                    .any(|v| parse_base64(v) == Some(request.clone())),
            )
        }
        (OperatorKind::IpAddress, PolicyValues::Raw(values)) => {
            let request: IpAddr = request.trim().parse().ok()?;
            Some(
                values
                    .iter()
                    .filter_map(|v| Cidr::parse(v))
                    .any(|cidr| cidr.contains(request)),
            )
        }
        // Negated operators are evaluated through their positive twin, `Null` separately, and
        // every operator gets the value shape `compile_values` builds for it.
        _ => None,
    }
}

fn ordering_satisfies(kind: OperatorKind, ord: Ordering) -> bool {
    match kind {
        OperatorKind::NumericEquals | OperatorKind::DateEquals => ord == Ordering::Equal,
        OperatorKind::NumericLessThan | OperatorKind::DateLessThan => ord == Ordering::Less,
        OperatorKind::NumericLessThanEquals | OperatorKind::DateLessThanEquals => {
            ord != Ordering::Greater
        }
        OperatorKind::NumericGreaterThan | OperatorKind::DateGreaterThan => {
            ord == Ordering::Greater
        }
        OperatorKind::NumericGreaterThanEquals | OperatorKind::DateGreaterThanEquals => {
            ord != Ordering::Less
        }
        _ => false,
    }
}

/// Whether `value` can be read the way `kind` compares values. Used by the lint.
pub(crate) fn value_is_well_formed(kind: OperatorKind, value: &str) -> bool {
    match kind.positive() {
        OperatorKind::NumericEquals
        | OperatorKind::NumericLessThan
        | OperatorKind::NumericLessThanEquals
        | OperatorKind::NumericGreaterThan
        | OperatorKind::NumericGreaterThanEquals => parse_number(value).is_some(),
        OperatorKind::DateEquals
        | OperatorKind::DateLessThan
        | OperatorKind::DateLessThanEquals
        | OperatorKind::DateGreaterThan
        | OperatorKind::DateGreaterThanEquals => parse_date(value).is_some(),
        OperatorKind::Bool | OperatorKind::Null => parse_bool(value).is_some(),
        OperatorKind::BinaryEquals => parse_base64(value).is_some(),
        OperatorKind::IpAddress => Cidr::parse(value).is_some(),
        OperatorKind::ArnEquals | OperatorKind::ArnLike => {
            value == "*" || pattern::has_variable(value) || value.splitn(6, ':').count() == 6
        }
        _ => true,
    }
}

/// A decimal number: optional sign, digits, optional fraction, optional exponent. Rejects the
/// words Rust's float parser accepts (`inf`, `NaN`).
fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    let plausible = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !plausible {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A date as nanoseconds since the Unix epoch. Accepts epoch seconds (an integer), RFC 3339,
/// other ISO 8601 date-times (a missing offset means UTC) and a bare `YYYY-MM-DD` (midnight UTC).
fn parse_date(text: &str) -> Option<i128> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: i64 = text.parse().ok()?;
        return Some(i128::from(seconds) * 1_000_000_000);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at.unix_timestamp_nanos());
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(at.unix_timestamp_nanos());
    }
    if let Ok(at) = PrimitiveDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(at.assume_utc().unix_timestamp_nanos());
    }
    if let Ok(day) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Some(day.midnight().assume_utc().unix_timestamp_nanos());
    }
    None
}

fn parse_bool(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn parse_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

/// An address range: an IP address and how many leading bits of it are significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x:y::z/n`, or a bare address (a range of one).
    fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().ok()?;
        let max = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    fn contains(&self, addr: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket still belongs to IPv4 ranges.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => same_prefix(
                u128::from(u32::from(net)),
                u128::from(u32::from(addr)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                same_prefix(u128::from(net), u128::from(addr), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of the `width` low bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(width - prefix);
    (a >> shift) == (b >> shift)
}

/// The six colon-separated parts of an ARN; the last part keeps any further colons.
fn split_arn(text: &str) -> Option<[&str; 6]> {
    let mut parts = text.splitn(6, ':');
    let arn = [
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    ];
    (arn[0] == "arn").then_some(arn)
}

/// ARN matching: each of the six components is matched separately, so a wildcard never spans a
/// colon that separates components. A lone `*` matches any ARN; any other policy value with fewer
/// than six components matches nothing (the lint reports it).
fn arn_matches(pattern: &Pattern, request: &[&str; 6]) -> bool {
    if pattern.is_match_all() {
        return true;
    }
    // A colon that came from a substituted variable splits components too: a variable holding a
    // whole ARN is then compared component by component, as it should be.
    match split_pattern(pattern) {
        Some(parts) => parts.iter().zip(request).all(|(p, r)| p.matches(r)),
        None => false,
    }
}

fn split_pattern(pattern: &Pattern) -> Option<[Pattern; 6]> {
    let mut parts: Vec<Pattern> = Vec::with_capacity(6);
    let mut current = Vec::new();
    for tok in pattern.tokens() {
        if *tok == pattern::Tok::Lit(':') && parts.len() < 5 {
            parts.push(Pattern::from_tokens(std::mem::take(&mut current)));
        } else {
            current.push(*tok);
        }
    }
    parts.push(Pattern::from_tokens(current));
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_parse() {
        type Parsed = (Option<SetOperator>, OperatorKind, bool);
        let cases: &[(&str, Option<Parsed>)] = &[
            (
                "StringEquals",
                Some((None, OperatorKind::StringEquals, false)),
            ),
            (
                "stringequals",
                Some((None, OperatorKind::StringEquals, false)),
            ),
            (
                "StringLikeIfExists",
                Some((None, OperatorKind::StringLike, true)),
            ),
            (
                "ForAnyValue:StringLike",
                Some((
                    Some(SetOperator::ForAnyValue),
                    OperatorKind::StringLike,
                    false,
                )),
            ),
            (
                "ForAllValues:StringNotEqualsIfExists",
                Some((
                    Some(SetOperator::ForAllValues),
                    OperatorKind::StringNotEquals,
                    true,
                )),
            ),
            ("Null", Some((None, OperatorKind::Null, false))),
            ("NullIfExists", None),
            ("ForAnyValue:Null", None),
            ("IfExists", None),
            ("StringEqual", None),
            ("ForSomeValues:StringEquals", None),
            ("", None),
            ("ForAnyValue:", None),
        ];
        for (text, want) in cases {
            let got = ConditionOperator::parse(text)
                .ok()
                .map(|op| (op.set, op.kind, op.if_exists));
            assert_eq!(got, *want, "{text}");
        }
        for kind in OperatorKind::ALL {
            assert_eq!(ConditionOperator::parse(kind.name()).unwrap().kind, kind);
        }
    }

    #[test]
    fn negation_pairs() {
        let negated: Vec<_> = OperatorKind::ALL
            .into_iter()
            .filter(|k| k.is_negated())
            .map(OperatorKind::name)
            .collect();
        assert_eq!(
            negated,
            [
                "StringNotEquals",
                "StringNotEqualsIgnoreCase",
                "StringNotLike",
                "NumericNotEquals",
                "DateNotEquals",
                "NotIpAddress",
                "ArnNotEquals",
                "ArnNotLike"
            ]
        );
    }

    #[test]
    fn numbers() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("-1.5", Some(-1.5)),
            (" 3600 ", Some(3600.0)),
            ("1e3", Some(1000.0)),
            ("inf", None),
            ("NaN", None),
            ("", None),
            ("0x10", None),
            ("1e999", None),
            ("--1", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_number(text), *want, "{text:?}");
        }
    }

    #[test]
    fn dates() {
        let at = |s: &str| parse_date(s);
        let midnight = Some(1_704_067_200_i128 * 1_000_000_000); // 2024-01-01T00:00:00Z
        assert_eq!(at("2024-01-01T00:00:00Z"), midnight);
        assert_eq!(at("2024-01-01T01:00:00+01:00"), midnight);
        assert_eq!(at("2024-01-01T00:00:00.000Z"), midnight);
        assert_eq!(at("2024-01-01"), midnight);
        assert_eq!(at("2024-01-01T00:00:00"), midnight);
        assert_eq!(at("1704067200"), midnight);
        assert_eq!(at("-1"), Some(-1_000_000_000));
        assert_eq!(at("yesterday"), None);
        assert_eq!(at("2024-13-01"), None);
        assert_eq!(at(""), None);
    }

    #[test]
    fn cidrs() {
        let cases: &[(&str, &str, bool)] = &[
            ("203.0.113.0/24", "203.0.113.7", true),
            ("203.0.113.0/24", "203.0.114.7", false),
            ("203.0.113.7", "203.0.113.7", true),
            ("203.0.113.7/32", "203.0.113.8", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("10.0.0.0/8", "10.255.255.255", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("2001:db8::/32", "2001:db8:1::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "2001:db9::1", true),
            ("2001:db8::/32", "10.0.0.1", false),
            ("10.0.0.0/8", "2001:db8::1", false),
        ];
        for (cidr, addr, want) in cases {
            let cidr = Cidr::parse(cidr).unwrap();
            assert_eq!(
                cidr.contains(addr.parse().unwrap()),
                *want,
                "{cidr:?} {addr}"
            );
        }
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "x",
            "10.0.0.0/-1",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn arn_components() {
        let request = split_arn("arn:aws:sns:us-east-1:123456789012:topic:sub").unwrap();
        assert_eq!(request[5], "topic:sub");
        let cases: &[(&str, bool)] = &[
            ("arn:aws:sns:us-east-1:123456789012:topic:sub", true),
            ("arn:aws:sns:*:123456789012:*", true),
            ("arn:aws:sns:us-east-?:123456789012:topic:*", true),
            ("arn:aws:*:*:*:*", true),
            ("*", true),
            // A wildcard cannot stand for several components.
            ("arn:aws:sns:*:topic:sub", false),
            ("arn:aws:sns:*", false),
            ("arn:aws:SNS:us-east-1:123456789012:topic:sub", false),
        ];
        for (pattern, want) in cases {
            assert_eq!(
                arn_matches(&Pattern::glob(pattern), &request),
                *want,
                "{pattern}"
            );
        }
        assert_eq!(split_arn("not:an:arn:at:all:x"), None);
        assert_eq!(split_arn("arn:aws:iam"), None);
    }
}
