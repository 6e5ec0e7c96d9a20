//! Secret newtypes.
//!
//! A [`SecretString`] never prints its content: `Debug` shows `** redacted **` and the length,
//! there is no `Display`, the bytes are zeroized when it is dropped, and the only way to read it
//! is [`SecretString::expose_secret`], which makes every use greppable.

use std::fmt;

use zeroize::Zeroizing;

/// A string that must never reach a log, an error message or a `Debug` print.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// Reads the secret. Call it only where the value leaves the process on purpose: an HTTP
    /// request to the cloud, a response to an authorized caller, a child's environment.
    pub fn expose_secret(&self) -> &str {
        self.0.as_str()
    }

    /// Number of bytes of the secret (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "** redacted ** (len {})", self.0.len())
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::new("hunter2-very-secret");
        let printed = format!("{s:?} {:#?}", Some(&s));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redacted"));
        assert_eq!(s.expose_secret(), "hunter2-very-secret");
    }
}
