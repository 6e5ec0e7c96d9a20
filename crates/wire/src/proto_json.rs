//! Request bodies as Google's REST front ends read them: proto3 JSON (and form bodies).
//!
//! Google's JSON APIs (IAM Credentials, STS, …) are gRPC services behind a JSON transcoder, so
//! a request body is parsed as the proto message of the method, with the proto3 JSON rules
//! (protobuf.dev, "ProtoJSON format"), not as free-form JSON:
//!
//! * a field may be named by its lowerCamelCase JSON name or by its proto name
//!   (`includeEmail` ≡ `include_email`);
//! * `null` is the field's default (`[]` for a repeated field), whatever its type;
//! * a `bool` may be sent as `true`/`false` or as the strings `"true"`/`"false"` (google-auth
//!   for Python sends `"includeEmail": "true"`);
//! * an `int64` may be a number or a decimal string;
//! * a name the message does not have is refused, with a 400 `INVALID_ARGUMENT` whose message is
//!   `Invalid JSON payload received. Unknown name "x": Cannot find field.` and whose
//!   `google.rpc.BadRequest` detail lists each violation (top-level violations carry no `field`;
//!   several are joined with a newline in `message`);
//! * a value of the wrong type is refused with `Invalid value at 'proto_name' (TYPE_BOOL), "x"`;
//!   a list for a singular field with `Proto field is not repeating, cannot start list.`
//!
//! A form body (`application/x-www-form-urlencoded`, as google-auth-library-java sends
//! `generateIdToken`) is bound to the same message: every value is a string, a repeated field
//! may repeat its key, and an unknown key is refused with Google's query-binding message.
//!
//! Each request message declares its fields once ([`ProtoMessage::FIELDS`]); [`from_json`] and
//! [`from_form`] check a body against them and hand serde a canonical object (camelCase names,
//! no nulls, typed scalars), so the message's serde derive only ever sees clean input. Values
//! never appear in error messages except the offending scalar itself, cut short, as Google
//! quotes it (request messages here carry no secrets: tokens travel in headers).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::google::{RpcError, RpcStatus};

/// The type of a field, as far as the JSON mapping cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `string` (also enums sent by name; the endpoint checks their values).
    String,
    /// `google.protobuf.Duration`: a string of seconds with an `s` suffix (`"3600s"`,
    /// `"1.5s"`, up to nine fraction digits).
    Duration,
    /// `bool`: `true`, `false`, `"true"`, `"false"`.
    Bool,
    /// `int64`/`int32`: a JSON integer or a decimal string.
    Int64,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Kind::String => "TYPE_STRING",
            Kind::Duration => "type.googleapis.com/google.protobuf.Duration",
            Kind::Bool => "TYPE_BOOL",
            Kind::Int64 => "TYPE_INT64",
        }
    }
}

/// One field of a request message.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The lowerCamelCase JSON name, e.g. `includeEmail` (the proto name is derived from it).
    pub json_name: &'static str,
    /// The scalar type.
    pub kind: Kind,
    /// `repeated`.
    pub repeated: bool,
}

impl Field {
    /// A singular field.
    pub const fn one(json_name: &'static str, kind: Kind) -> Field {
        Field {
            json_name,
            kind,
            repeated: false,
        }
    }

    /// A repeated field.
    pub const fn many(json_name: &'static str, kind: Kind) -> Field {
        Field {
            json_name,
            kind,
            repeated: true,
        }
    }

    /// The proto field name: `includeEmail` → `include_email`.
    pub fn proto_name(&self) -> String {
        let mut out = String::with_capacity(self.json_name.len() + 4);
        for c in self.json_name.chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    fn answers_to(&self, name: &str) -> bool {
        name == self.json_name || name == self.proto_name()
    }
}

/// A request message with a proto3 JSON mapping: its fields, and a serde derive that reads the
/// canonical object (`#[serde(rename_all = "camelCase")]`, every field defaulted).
pub trait ProtoMessage: DeserializeOwned {
    /// Every field of the message.
    const FIELDS: &'static [Field];
}

/// Why a body was refused: Google's violations (object members in name order).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct ProtoJsonError {
    violations: Vec<Violation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    /// The proto path (`include_email`, `delegates[1]`), absent for top-level unknown names.
    field: Option<String>,
    description: String,
}

impl ProtoJsonError {
    fn one(field: Option<String>, description: String) -> Self {
        ProtoJsonError {
            violations: vec![Violation { field, description }],
        }
    }

    /// The `message` of the error: every violation, joined by newlines.
    pub fn message(&self) -> String {
        self.violations
            .iter()
            .map(|v| v.description.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Google's 400 body: `INVALID_ARGUMENT` with a `google.rpc.BadRequest` detail.
    pub fn to_status(&self) -> RpcError {
        let violations: Vec<Value> = self
            .violations
            .iter()
            .map(|v| match &v.field {
                Some(f) => json!({"field": f, "description": v.description}),
                None => json!({"description": v.description}),
            })
            .collect();
        RpcError {
            error: RpcStatus {
                code: 400,
                message: self.message(),
                status: "INVALID_ARGUMENT".to_owned(),
                details: vec![json!({
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": violations,
                })],
            },
        }
    }
}

const INVALID_PAYLOAD: &str = "Invalid JSON payload received.";

/// Longest quoted value in a message.
const MAX_QUOTED: usize = 64;

/// Parses a JSON body as message `T`. An empty (or all-whitespace) body is the empty message.
pub fn from_json<T: ProtoMessage>(body: &[u8]) -> Result<T, ProtoJsonError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return finish(Map::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() {
            "Unexpected end of string."
        } else {
            "Unexpected token."
        };
        ProtoJsonError::one(None, format!("{INVALID_PAYLOAD} {what}"))
    })?;
    let Value::Object(object) = value else {
        return Err(ProtoJsonError::one(
            None,
            format!("{INVALID_PAYLOAD} Unknown name \"\": Root element must be a message."),
        ));
    };
    finish(canonical_json::<T>(object)?)
}

/// Binds a form body (`a=1&b=x&b=y`) to message `T`, as Google binds query parameters.
pub fn from_form<T: ProtoMessage>(body: &[u8]) -> Result<T, ProtoJsonError> {
    let mut out = Map::new();
    let mut violations = Vec::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        let Some(field) = T::FIELDS.iter().find(|f| f.answers_to(&name)) else {
            violations.push(Violation {
                field: None,
                description: format!(
                    "{INVALID_PAYLOAD} Unknown name \"{}\": Cannot bind query parameter. Field '{}' could not be found in request message.",
                    quoted(&name),
                    quoted(&name)
                ),
            });
            continue;
        };
        let at = field.proto_name();
        match scalar(field.kind, &Value::String(value.into_owned()), &at) {
            Ok(v) if field.repeated => {
                let slot = out
                    .entry(field.json_name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = slot {
                    items.push(v);
                }
            }
            Ok(v) => {
                out.insert(field.json_name.to_owned(), v);
            }
            Err(v) => violations.push(v),
        }
    }
    if !violations.is_empty() {
        return Err(ProtoJsonError { violations });
    }
    finish(out)
}

/// Parses by content type: a form for `application/x-www-form-urlencoded`, JSON otherwise.
pub fn from_body<T: ProtoMessage>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ProtoJsonError> {
    let is_form = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| {
            c.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if is_form {
        from_form(body)
    } else {
        from_json(body)
    }
}

fn finish<T: ProtoMessage>(object: Map<String, Value>) -> Result<T, ProtoJsonError> {
    // The canonical object matches the declared fields, so this fails only if a message's serde
    // derive disagrees with its FIELDS: a bug, reported without quoting anything.
    serde_json::from_value(Value::Object(object)).map_err(|_| {
        ProtoJsonError::one(
            None,
            format!("{INVALID_PAYLOAD} The request does not fit the method's message."),
        )
    })
}

fn canonical_json<T: ProtoMessage>(
    object: Map<String, Value>,
) -> Result<Map<String, Value>, ProtoJsonError> {
    let mut out = Map::new();
    let mut violations = Vec::new();
    for (name, value) in object {
        let Some(field) = T::FIELDS.iter().find(|f| f.answers_to(&name)) else {
            violations.push(Violation {
                field: None,
                description: format!(
                    "{INVALID_PAYLOAD} Unknown name \"{}\": Cannot find field.",
                    quoted(&name)
                ),
            });
            continue;
        };
        let at = field.proto_name();
        let converted = match (&value, field.repeated) {
            (Value::Null, _) => continue,
            (Value::Array(items), true) => {
                let mut converted = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match scalar(field.kind, item, &format!("{at}[{i}]")) {
                        Ok(v) => converted.push(v),
                        Err(v) => violations.push(v),
                    }
                }
                Value::Array(converted)
            }
            (Value::Array(_), false) => {
                violations.push(Violation {
                    field: Some(at),
                    description: format!(
                        "{INVALID_PAYLOAD} Proto field is not repeating, cannot start list."
                    ),
                });
                continue;
            }
            (_, true) => {
                // Google's own wording for this case is not known; this one says what is wrong.
                violations.push(Violation {
                    field: Some(at.clone()),
                    description: format!(
                        "{INVALID_PAYLOAD} Field '{at}' is repeated: its value must be a list."
                    ),
                });
                continue;
            }
            (_, false) => match scalar(field.kind, &value, &at) {
                Ok(v) => v,
                Err(v) => {
                    violations.push(v);
                    continue;
                }
            },
        };
        out.insert(field.json_name.to_owned(), converted);
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(ProtoJsonError { violations })
    }
}

/// Converts one scalar to its canonical JSON form.
fn scalar(kind: Kind, value: &Value, at: &str) -> Result<Value, Violation> {
    let ok = match (kind, value) {
        (Kind::String, Value::String(_)) => Some(value.clone()),
        (Kind::Duration, Value::String(s)) if is_duration(s) => Some(value.clone()),
        (Kind::Bool, Value::Bool(_)) => Some(value.clone()),
        (Kind::Bool, Value::String(s)) if s == "true" => Some(Value::Bool(true)),
        (Kind::Bool, Value::String(s)) if s == "false" => Some(Value::Bool(false)),
        (Kind::Int64, Value::Number(n)) if n.is_i64() => Some(value.clone()),
        (Kind::Int64, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
        _ => None,
    };
    ok.ok_or_else(|| {
        let shown = match value {
            Value::String(s) => format!("\"{}\"", quoted(s)),
            Value::Object(_) => "{...}".to_owned(),
            Value::Array(_) => "[...]".to_owned(),
            other => quoted(&other.to_string()),
        };
        Violation {
            field: Some(at.to_owned()),
            description: format!("Invalid value at '{at}' ({}), {shown}", kind.type_name()),
        }
    })
}

/// `-?DIGITS(.DIGITS{1,9})?s`, the proto3 JSON form of a Duration.
fn is_duration(s: &str) -> bool {
    let Some(num) = s.strip_suffix('s') else {
        return false;
    };
    let num = num.strip_prefix('-').unwrap_or(num);
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (num, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && frac.is_none_or(|f| digits(f) && f.len() <= 9)
}

fn quoted(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX_QUOTED).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(rename_all = "camelCase", default)]
    struct Req {
        audience: String,
        delegates: Vec<String>,
        include_email: Option<bool>,
        lifetime_seconds: Option<i64>,
    }

    impl ProtoMessage for Req {
        const FIELDS: &'static [Field] = &[
            Field::one("audience", Kind::String),
            Field::many("delegates", Kind::String),
            Field::one("includeEmail", Kind::Bool),
            Field::one("lifetimeSeconds", Kind::Int64),
        ];
    }

    fn parse(body: &str) -> Result<Req, ProtoJsonError> {
        from_json(body.as_bytes())
    }

    #[test]
    fn proto3_json_rules() {
        let want = Req {
            audience: "a".into(),
            delegates: vec![],
            include_email: Some(true),
            lifetime_seconds: Some(5),
        };
        for body in [
            r#"{"audience":"a","includeEmail":true,"lifetimeSeconds":5}"#,
            r#"{"audience":"a","include_email":"true","lifetime_seconds":"5","delegates":null}"#,
            r#"{"audience":"a","includeEmail":"true","lifetimeSeconds":5,"delegates":[]}"#,
        ] {
            assert_eq!(parse(body).unwrap(), want, "{body}");
        }
        assert_eq!(parse("").unwrap(), Req::default());
        assert_eq!(
            parse(r#"{"audience":null,"includeEmail":null}"#).unwrap(),
            Req::default()
        );
        let e = parse(r#"{"delegates":"x"}"#).unwrap_err();
        assert!(e.message().contains("must be a list"), "{e}");
    }

    #[test]
    fn unknown_names_get_googles_body() {
        let e = parse(r#"{"audience":"a","thinking":1,"include_Email":true}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "Invalid JSON payload received. Unknown name \"include_Email\": Cannot find field.\nInvalid JSON payload received. Unknown name \"thinking\": Cannot find field."
        );
        let status = serde_json::to_value(e.to_status()).unwrap();
        assert_eq!(status["error"]["code"], 400);
        assert_eq!(status["error"]["status"], "INVALID_ARGUMENT");
        let detail = &status["error"]["details"][0];
        assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.BadRequest");
        assert!(detail["fieldViolations"][0].get("field").is_none());
        assert_eq!(
            detail["fieldViolations"][1]["description"],
            "Invalid JSON payload received. Unknown name \"thinking\": Cannot find field."
        );
    }

    #[test]
    fn wrong_types_name_the_proto_field() {
        let e = parse(r#"{"includeEmail":"yes"}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "Invalid value at 'include_email' (TYPE_BOOL), \"yes\""
        );
        let status = serde_json::to_value(e.to_status()).unwrap();
        assert_eq!(
            status["error"]["details"][0]["fieldViolations"][0]["field"],
            "include_email"
        );
        let e = parse(r#"{"delegates":["a",5]}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "Invalid value at 'delegates[1]' (TYPE_STRING), 5"
        );
        let e = parse(r#"{"audience":["a"]}"#).unwrap_err();
        assert!(e.message().contains("not repeating"), "{e}");
        for bad in ["[1]", "\"x\"", "{not json", "{\"a\":"] {
            assert!(
                parse(bad)
                    .unwrap_err()
                    .message()
                    .starts_with(INVALID_PAYLOAD),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_are_strings_with_an_s_suffix() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        #[derive(Default)]
        struct Lifetime {
            lifetime: Option<String>,
        }
        impl ProtoMessage for Lifetime {
            const FIELDS: &'static [Field] = &[Field::one("lifetime", Kind::Duration)];
        }
        for ok in ["3600s", "1.5s", "0s", "-2s", "1.000000001s"] {
            let body = format!(r#"{{"lifetime":"{ok}"}}"#);
            assert_eq!(
                from_json::<Lifetime>(body.as_bytes())
                    .unwrap()
                    .lifetime
                    .as_deref(),
                Some(ok)
            );
        }
        for bad in [
            r#""3600""#,
            "3600",
            r#""s""#,
            r#""1.s""#,
            r#""1.0000000001s""#,
        ] {
            let body = format!(r#"{{"lifetime":{bad}}}"#);
            let e = from_json::<Lifetime>(body.as_bytes()).unwrap_err();
            assert!(
                e.message().starts_with(
                    "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), "
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn form_bodies_bind_like_query_parameters() {
        let r: Req = from_body(
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"audience=a&includeEmail=true&delegates=x&delegates=y",
        )
        .unwrap();
        assert_eq!(r.delegates, vec!["x".to_owned(), "y".to_owned()]);
        assert_eq!(r.include_email, Some(true));
        let e = from_form::<Req>(b"audience=a&bogus=1").unwrap_err();
        assert!(
            e.message()
                .starts_with("Invalid JSON payload received. Unknown name \"bogus\": Cannot bind query parameter."),
            "{e}"
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let e = parse(&format!(r#"{{"includeEmail":"{long}"}}"#)).unwrap_err();
        assert!(e.message().len() < 200, "{e}");
    }
}
