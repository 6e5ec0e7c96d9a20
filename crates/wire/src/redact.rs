//! `Debug` stand-ins for secrets that the wire types must hold as plain `String`s (serde
//! reads and writes them verbatim). The hand-written `Debug` impls of those types print one of
//! these instead of the value: the length only, as `idbridge_core::SecretString` does.

use std::fmt;

/// Prints `** redacted ** (len N)`.
pub(crate) struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "** redacted ** (len {})", self.0)
    }
}

/// The stand-in for `secret`.
pub(crate) fn redacted(secret: &str) -> Redacted {
    Redacted(secret.len())
}

/// The stand-in for an optional secret (`None` stays visible).
pub(crate) fn redacted_opt(secret: Option<&String>) -> Option<Redacted> {
    secret.map(|s| redacted(s))
}
