//! Hop names: which network call (or local step) a report or an error is about.
//!
//! A [`Hop`] is a value, not a string to match by prefix: each source and exchange declares its
//! own next to its code (`pub const HOP: Hop = Hop::new("aws-sts", …)`), with the variable or
//! config field that points it at its endpoint, so `doctor` asks the hop instead of keeping a
//! table of names, and a new kind adds no line outside its own file. Two hops are equal when
//! their names are.

use std::fmt;

/// One hop: its name in reports and errors, and what points it at its endpoint.
#[derive(Clone, Copy)]
pub struct Hop {
    name: &'static str,
    endpoint_variable: &'static str,
}

/// What `doctor` names for a hop that declares no endpoint variable.
const IN_THE_ROUTE: &str = "the endpoint in the route config";

impl Hop {
    /// A hop named `name`, pointed at its endpoint by `endpoint_variable` (an environment
    /// variable or config field, as a user would set it).
    pub const fn new(name: &'static str, endpoint_variable: &'static str) -> Self {
        Self {
            name,
            endpoint_variable,
        }
    }

    /// A hop with no endpoint of its own to configure (the route, the cache, a test kind).
    pub const fn named(name: &'static str) -> Self {
        Self::new(name, IN_THE_ROUTE)
    }

    /// The name (`gce-metadata`, `aws-sts`, `google tokeninfo`, …).
    pub const fn as_str(&self) -> &'static str {
        self.name
    }

    /// The environment variable (or config field) that points this hop at its endpoint.
    pub const fn endpoint_variable(&self) -> &'static str {
        self.endpoint_variable
    }

    /// Errors about the route itself (overrides that do not apply).
    pub const ROUTE: Hop = Hop::named("route");
}

impl From<&'static str> for Hop {
    fn from(name: &'static str) -> Self {
        Hop::named(name)
    }
}

impl PartialEq for Hop {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Hop {}

impl std::hash::Hash for Hop {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialEq<str> for Hop {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for Hop {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

impl fmt::Debug for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.name, f)
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl serde::Serialize for Hop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}
