//! Google's `extract(template)` CEL extension for strings.
//!
//! A template is literal text with exactly one `{name}` placeholder, e.g. `'/ns/{ns}/'` or
//! `'{account_arn}assumed-role/'`. Matching finds the first occurrence of the literal text
//! before the placeholder (the *prefix*; an empty prefix matches at the start), then the first
//! occurrence of the literal text after it (the *suffix*; an empty suffix matches at the end)
//! further on. The placeholder's value is what lies between. When the prefix or the suffix does
//! not occur, the result is the empty string: a mapping can then test for `''`.
//!
//! | text | template | result |
//! |---|---|---|
//! | `arn:aws:sts::1:assumed-role/r/s` | `assumed-role/{role}/` | `r` |
//! | `arn:aws:sts::1:assumed-role/r/s` | `{account_arn}assumed-role/` | `arn:aws:sts::1:` |
//! | `spiffe://example.org/ns/prod/sa/x` | `/ns/{ns}/` | `prod` |
//! | `a/b/c` | `a/{rest}` | `b/c` |
//! | `abc` | `x{v}` | `` (no match) |

/// A template `extract` cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No `{name}` placeholder.
    #[error("the template has no {{name}} placeholder")]
    NoPlaceholder,
    /// More than one placeholder, or a stray brace.
    #[error("the template must contain exactly one {{name}} placeholder and no other braces")]
    Braces,
    /// The placeholder's name is empty or not made of letters, digits and `_`.
    #[error("the placeholder name must be letters, digits or '_'")]
    PlaceholderName,
}

/// A parsed template: the literal text around its placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Template<'t> {
    prefix: &'t str,
    suffix: &'t str,
}

impl<'t> Template<'t> {
    fn parse(template: &'t str) -> Result<Self, TemplateError> {
        let open = template.find('{').ok_or_else(|| {
            if template.contains('}') {
                TemplateError::Braces
            } else {
                TemplateError::NoPlaceholder
            }
        })?;
        let (prefix, rest) = template.split_at(open);
        let close = rest.find('}').ok_or(TemplateError::Braces)?;
        let name = &rest[1..close];
        let suffix = &rest[close + 1..];
        if prefix.contains('}') || name.contains('{') || suffix.contains(['{', '}']) {
            return Err(TemplateError::Braces);
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError::PlaceholderName);
        }
        Ok(Template { prefix, suffix })
    }

    fn apply<'s>(&self, text: &'s str) -> &'s str {
        let start = if self.prefix.is_empty() {
            0
        } else {
            match text.find(self.prefix) {
                Some(i) => i + self.prefix.len(),
                None => return "",
            }
        };
        let rest = &text[start..];
        if self.suffix.is_empty() {
            return rest;
        }
        match rest.find(self.suffix) {
            Some(end) => &rest[..end],
            None => "",
        }
    }
}

/// Extracts the placeholder's value from `text` (see the module documentation). Returns the
/// empty string when the template does not match, and an error when the template is not one
/// `extract` accepts.
pub fn extract<'s>(text: &'s str, template: &str) -> Result<&'s str, TemplateError> {
    Ok(Template::parse(template)?.apply(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_table() {
        let arn = "arn:aws:sts::111122223333:assumed-role/gcp-caller/i-0a1b2c3d4e5f60718";
        let cases: &[(&str, &str, &str)] = &[
            (arn, "assumed-role/{role_name}/", "gcp-caller"),
            (
                arn,
                "{account_arn}assumed-role/",
                "arn:aws:sts::111122223333:",
            ),
            (arn, "{all}", arn),
            (arn, "assumed-role/{rest}", "gcp-caller/i-0a1b2c3d4e5f60718"),
            (arn, "arn:aws:{service}:", "sts"),
            (arn, "user/{name}/", ""),
            (arn, "{x}not-there", ""),
            (
                "spiffe://example.org/ns/prod/sa/billing",
                "/ns/{ns}/",
                "prod",
            ),
            (
                "spiffe://example.org/ns/prod/sa/billing",
                "/sa/{sa}",
                "billing",
            ),
            ("spiffe://example.org/ns/prod", "/ns/{ns}/", ""),
            // The first occurrence of each literal wins (non-greedy).
            ("a/b/c/d", "a/{x}/", "b"),
            ("x-a-x-b-x", "x-{v}-x", "a"),
            // The suffix is searched after the prefix, not before.
            ("/b/a/c/", "a/{v}/", "c"),
            ("", "{v}", ""),
            ("", "a{v}", ""),
            ("abc", "abc{v}", ""),
            ("abc", "{v}abc", ""),
            ("ünïcödé/x/", "ünïcödé/{v}/", "x"),
        ];
        for (text, template, want) in cases {
            assert_eq!(
                extract(text, template),
                Ok(*want),
                "{text:?} / {template:?}"
            );
        }
    }

    #[test]
    fn bad_templates() {
        assert_eq!(extract("a", "abc"), Err(TemplateError::NoPlaceholder));
        assert_eq!(extract("a", ""), Err(TemplateError::NoPlaceholder));
        assert_eq!(extract("a", "{}"), Err(TemplateError::PlaceholderName));
        assert_eq!(extract("a", "{a b}"), Err(TemplateError::PlaceholderName));
        assert_eq!(extract("a", "{a}{b}"), Err(TemplateError::Braces));
        assert_eq!(extract("a", "{a"), Err(TemplateError::Braces));
        assert_eq!(extract("a", "a}"), Err(TemplateError::Braces));
        assert_eq!(extract("a", "}{a}"), Err(TemplateError::Braces));
        assert_eq!(extract("a", "{{a}}"), Err(TemplateError::Braces));
    }
}
