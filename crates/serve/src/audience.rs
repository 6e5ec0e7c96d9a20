//! The `?audience=` of a GCE identity request, checked before it becomes a cache key and an
//! upstream mint.
//!
//! An audience is a client-chosen string that ends up in a cache key, a log line and the `aud`
//! claim of a signed token, so it is held to what real audiences look like (URLs, client ids,
//! names): at most [`MAX_AUDIENCE_BYTES`] bytes of valid UTF-8 without control characters
//! (NUL, the C0 and C1 ranges, DEL). It is read from the raw query string, so invalid UTF-8
//! is refused rather than silently turned into replacement characters. Every refusal is a 400
//! with a one-line text body, as the metadata server answers a bad identity request; the body
//! never quotes the audience.

use std::fmt;

/// Longest audience accepted, in bytes. Real audiences (a service URL, an OAuth client id, an
/// STS audience such as `//iam.googleapis.com/projects/…/providers/…`) are well under 300
/// bytes; 2 KiB leaves room for long URLs while a client cannot make a key, a log line or a
/// token claim of kilobytes.
pub const MAX_AUDIENCE_BYTES: usize = 2048;

/// Why an audience is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceError {
    /// No `audience` parameter, or an empty one.
    Missing,
    /// Longer than [`MAX_AUDIENCE_BYTES`].
    TooLong,
    /// Not valid UTF-8 once percent-decoded.
    NotUtf8,
    /// Holds a control character (NUL included).
    ControlCharacter,
}

impl fmt::Display for AudienceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudienceError::Missing => f.write_str("non-empty audience parameter required"),
            AudienceError::TooLong => write!(
                f,
                "audience parameter too long (at most {MAX_AUDIENCE_BYTES} bytes)"
            ),
            AudienceError::NotUtf8 => f.write_str("audience parameter is not valid UTF-8"),
            AudienceError::ControlCharacter => {
                f.write_str("audience parameter must not contain control characters")
            }
        }
    }
}

/// The audience of a raw query string (the last `audience=` wins, as for every metadata
/// parameter), or why it is refused.
pub fn from_query(query: Option<&str>) -> Result<String, AudienceError> {
    let raw = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k).as_deref() == Some(b"audience".as_slice())).then_some(v)
        })
        .next_back()
        .ok_or(AudienceError::Missing)?;
    // Percent-encoding triples the length at most: refuse before decoding anything huge.
    if raw.len() > 3 * MAX_AUDIENCE_BYTES {
        return Err(AudienceError::TooLong);
    }
    let bytes = decode(raw).unwrap_or_default();
    if bytes.is_empty() {
        return Err(AudienceError::Missing);
    }
    if bytes.len() > MAX_AUDIENCE_BYTES {
        return Err(AudienceError::TooLong);
    }
    let text = String::from_utf8(bytes).map_err(|_| AudienceError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(AudienceError::ControlCharacter);
    }
    Ok(text)
}

/// Form decoding: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> Option<Vec<u8>> {
    let spaced = s.replace('+', " ");
    Some(percent_encoding::percent_decode_str(&spaced).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_checked_like_cloud_input() {
        let q = |s: &str| from_query(Some(s));
        assert_eq!(
            q("audience=https%3A%2F%2Fx.example").unwrap(),
            "https://x.example"
        );
        assert_eq!(q("format=full&audience=a+b").unwrap(), "a b");
        assert_eq!(q("audience=first&audience=last").unwrap(), "last");
        assert_eq!(q("aud%69ence=x").unwrap(), "x");
        assert_eq!(q("audience=%C3%A9t%C3%A9").unwrap(), "été");
        assert_eq!(from_query(None), Err(AudienceError::Missing));
        assert_eq!(q("audience="), Err(AudienceError::Missing));
        assert_eq!(q("audience"), Err(AudienceError::Missing));
        assert_eq!(q("format=full"), Err(AudienceError::Missing));
        assert_eq!(q("audience=a%00b"), Err(AudienceError::ControlCharacter));
        assert_eq!(q("audience=a%0Ab"), Err(AudienceError::ControlCharacter));
        assert_eq!(q("audience=a%7F"), Err(AudienceError::ControlCharacter));
        assert_eq!(q("audience=%C2%85"), Err(AudienceError::ControlCharacter));
        assert_eq!(q("audience=%FF%FE"), Err(AudienceError::NotUtf8));
        assert_eq!(q("audience=%C3"), Err(AudienceError::NotUtf8));
        let long = "a".repeat(MAX_AUDIENCE_BYTES);
        assert_eq!(q(&format!("audience={long}")).unwrap(), long);
        assert_eq!(q(&format!("audience={long}b")), Err(AudienceError::TooLong));
        assert_eq!(
            q(&format!(
                "audience={}",
                "%41".repeat(MAX_AUDIENCE_BYTES + 1)
            )),
            Err(AudienceError::TooLong)
        );
    }
}
