//! Wildcard patterns and policy variables.
//!
//! IAM wildcards are `*` (any run of characters, including none) and `?` (exactly one
//! character). A match is anchored at both ends. Policy variables (`${aws:username}`,
//! `${accounts.google.com:sub}`) are replaced by the request's value for that condition key
//! before matching, and the substituted text is literal: a `*` inside a context value is not a
//! wildcard. `${*}`, `${?}` and `${$}` stand for a literal `*`, `?` and `$`, and
//! `${key, 'default'}` supplies a value for an absent key. Variables are only recognised in
//! policies with `"Version": "2012-10-17"`; the caller decides that.

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// This exact character.
    Lit(char),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    One,
}

/// A compiled pattern: literal characters and wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Pattern(Vec<Tok>);

impl Pattern {
    /// Compiles `text`, treating `*` and `?` as wildcards.
    pub(crate) fn glob(text: &str) -> Self {
        Pattern(text.chars().map(wildcard_tok).collect())
    }

    /// Compiles `text` with every character literal.
    pub(crate) fn literal(text: &str) -> Self {
        Pattern(text.chars().map(Tok::Lit).collect())
    }

    /// Builds a pattern from tokens.
    pub(crate) fn from_tokens(tokens: Vec<Tok>) -> Self {
        Pattern(tokens)
    }

    /// The pattern's tokens.
    pub(crate) fn tokens(&self) -> &[Tok] {
        &self.0
    }

    /// The pattern written back as text, with wildcards as `*` and `?`. Equality operators compare
    /// this text, so for them a wildcard is just the character it is written as.
    pub(crate) fn text(&self) -> String {
        self.0
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => *c,
                Tok::Star => '*',
                Tok::One => '?',
            })
            .collect()
    }

    /// Whether the whole of `candidate` matches, case-sensitively.
    pub(crate) fn matches(&self, candidate: &str) -> bool {
        let chars: Vec<char> = candidate.chars().collect();
        glob_match(&self.0, &chars)
    }

    /// Whether the whole of `candidate` matches, ignoring case.
    pub(crate) fn matches_ignore_case(&self, candidate: &str) -> bool {
        let pattern: Vec<Tok> = self
            .0
            .iter()
            .flat_map(|t| match *t {
                Tok::Lit(c) => c.to_lowercase().map(Tok::Lit).collect::<Vec<_>>(),
                other => vec![other],
            })
            .collect();
        let chars: Vec<char> = candidate.to_lowercase().chars().collect();
        glob_match(&pattern, &chars)
    }

    /// Whether the pattern is a lone `*`, which matches everything.
    pub(crate) fn is_match_all(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|t| *t == Tok::Star)
    }
}

fn wildcard_tok(c: char) -> Tok {
    match c {
        '*' => Tok::Star,
        '?' => Tok::One,
        c => Tok::Lit(c),
    }
}

/// Anchored wildcard match: linear scan that backtracks only to the most recent `*`.
fn glob_match(pattern: &[Tok], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen and the text position it is currently assumed to end at.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Tok::Star) => {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            Some(Tok::One) => {
                p += 1;
                t += 1;
                continue;
            }
            Some(Tok::Lit(c)) if *c == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((star, end)) => {
                // Let the `*` swallow one more character and retry after it.
                p = star + 1;
                t = end + 1;
                backtrack = Some((star, end + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|tok| *tok == Tok::Star)
}

/// A `${…}` reference that could not be resolved: the key is absent (or multi-valued) and no
/// default was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unresolved(pub(crate) String);

/// Compiles a policy value, substituting policy variables with `lookup` (which receives the
/// condition key as written inside `${…}`). When `wildcards` is true, `*` and `?` outside variables
/// are wildcards.
pub(crate) fn resolve(
    value: &str,
    wildcards: bool,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Pattern, Unresolved> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        push_text(&mut out, before, wildcards);
        let inner_and_more = &after[2..];
        let Some(end) = inner_and_more.find('}') else {
            // No closing brace: not a variable, keep the text as written.
            push_text(&mut out, after, wildcards);
            rest = "";
            break;
        };
        let inner = &inner_and_more[..end];
        rest = &inner_and_more[end + 1..];
        match inner.trim() {
            "*" => out.push(Tok::Lit('*')),
            "?" => out.push(Tok::Lit('?')),
            "$" => out.push(Tok::Lit('$')),
            reference => {
                let (key, default) = split_default(reference);
                let value = lookup(key).or(default).ok_or(Unresolved(key.to_owned()))?;
                out.extend(value.chars().map(Tok::Lit));
            }
        }
    }
    push_text(&mut out, rest, wildcards);
    Ok(Pattern(out))
}

fn push_text(out: &mut Vec<Tok>, text: &str, wildcards: bool) {
    if wildcards {
        out.extend(text.chars().map(wildcard_tok));
    } else {
        out.extend(text.chars().map(Tok::Lit));
    }
}

/// Splits `key, 'default'` into the key and the default value. Anything else after a comma is not
/// the documented default syntax; the whole reference is then taken as the key, which will not be
/// found.
fn split_default(reference: &str) -> (&str, Option<String>) {
    if let Some((key, default)) = reference.split_once(',') {
        let default = default.trim();
        if default.len() >= 2 && default.starts_with('\'') && default.ends_with('\'') {
            return (key.trim(), Some(default[1..default.len() - 1].to_owned()));
        }
    }
    (reference, None)
}

/// Whether `value` contains something that looks like a policy variable.
pub(crate) fn has_variable(value: &str) -> bool {
    value
        .find("${")
        .is_some_and(|start| value[start..].contains('}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything at all", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ba", false),
            ("*c", "abc", true),
            ("*c", "abcd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "abbc", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*a*a", "aaa", true),
            ("a*a*a", "aa", false),
            ("*ab", "aab", true),
            ("?", "é", true),
            ("??", "é", false),
            ("sts:AssumeRole*", "sts:AssumeRoleWithWebIdentity", true),
            (
                "system:serviceaccount:*:my-app",
                "system:serviceaccount:default:my-app",
                true,
            ),
            ("ABC", "abc", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Pattern::glob(pattern).matches(text),
                *want,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn glob_ignore_case() {
        assert!(
            Pattern::glob("sts:assumerole*").matches_ignore_case("STS:AssumeRoleWithWebIdentity")
        );
        assert!(Pattern::glob("ÄB?").matches_ignore_case("äbc"));
        assert!(!Pattern::glob("abc").matches_ignore_case("abd"));
    }

    #[test]
    fn variables_table() {
        let lookup = |key: &str| match key.to_ascii_lowercase().as_str() {
            "aws:username" => Some("alice".to_owned()),
            "x:star" => Some("a*b".to_owned()),
            _ => None,
        };
        // (value, wildcards, candidate, expected match; None = unresolved)
        let cases: &[(&str, bool, &str, Option<bool>)] = &[
            ("home/${aws:username}/*", true, "home/alice/x", Some(true)),
            ("home/${aws:username}/*", true, "home/bob/x", Some(false)),
            ("home/${ aws:UserName }", true, "home/alice", Some(true)),
            ("${x:star}", true, "a*b", Some(true)),
            ("${x:star}", true, "axxb", Some(false)),
            ("a${*}b", true, "a*b", Some(true)),
            ("a${*}b", true, "axb", Some(false)),
            ("a${?}b", true, "a?b", Some(true)),
            ("a${?}b", true, "axb", Some(false)),
            ("cost${$}", true, "cost$", Some(true)),
            ("${missing:key}", true, "", None),
            ("${missing:key, 'dflt'}", true, "dflt", Some(true)),
            ("${missing:key,'dflt'}", false, "dflt", Some(true)),
            ("${unclosed", true, "${unclosed", Some(true)),
            ("a*", false, "a*", Some(true)),
            ("a*", false, "ab", Some(false)),
        ];
        for (value, wildcards, candidate, want) in cases {
            let got = resolve(value, *wildcards, lookup)
                .ok()
                .map(|p| p.matches(candidate));
            assert_eq!(got, *want, "{value:?} vs {candidate:?}");
        }
    }

    #[test]
    fn detects_variables() {
        assert!(has_variable("${aws:username}"));
        assert!(has_variable("a/${x}/b"));
        assert!(!has_variable("${x"));
        assert!(!has_variable("plain"));
    }
}
