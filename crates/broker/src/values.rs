//! Values checked once, when the config is read: each type's constructor states and enforces
//! its form, so the steps holding them never re-check.

use std::fmt;
use std::ops::Deref;

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

string_value!(
    /// An IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
    RoleArn
);

impl RoleArn {
    /// Checks the form; the error is the message after the field's name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6
            || parts[0] != "arn"
            || parts[2] != "iam"
            || !parts[5].starts_with("role/")
        {
            return Err(format!(
                "{s:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The account id.
    pub fn account(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }

    /// The role's name (the last part of its path).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
}

string_value!(
    /// A Google workload identity provider, as an STS audience:
    /// `//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`
    /// (an `https:` prefix allowed).
    WorkloadProvider
);

impl WorkloadProvider {
    /// Checks the form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let a = s.strip_prefix("https:").unwrap_or(s);
        if !a.starts_with("//iam.googleapis.com/")
            || !a.contains("/workloadIdentityPools/")
            || !a.contains("/providers/")
        {
            return Err(format!(
                "{s:?} is not a workload identity provider (//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_value!(
    /// A Google service account to act as: an email or a numeric unique id.
    ServiceAccount
);

impl ServiceAccount {
    /// Checks the form: `name@domain` (one `@`, no `/` or whitespace) or a numeric unique id.
    /// The resource name `projects/-/serviceAccounts/…` is refused with a hint: idbridge writes
    /// it where Google wants it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("projects/") {
            return Err(format!(
                "{s:?}: give the account's email or unique id; idbridge writes the projects/-/serviceAccounts/ prefix itself"
            ));
        }
        let numeric = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let email = match s.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !s.contains('/')
                    && !s.chars().any(char::is_whitespace)
            }
            None => false,
        };
        if !numeric && !email {
            return Err(format!("{s:?} must be an email or a numeric unique id"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The account as IAM Credentials names it in `delegates[]` and in request paths:
    /// `projects/-/serviceAccounts/{EMAIL_OR_UNIQUEID}`.
    pub fn resource_name(&self) -> String {
        format!("projects/-/serviceAccounts/{}", self.0)
    }

    /// Whether it is an email (not a numeric id).
    pub fn is_email(&self) -> bool {
        self.0.contains('@')
    }
}

string_value!(
    /// An STS session name: 2–64 characters of `[A-Za-z0-9_+=,.@-]`.
    SessionName
);

impl SessionName {
    /// Checks the form.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() < 2
            || s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        {
            return Err(format!(
                "{s:?} must be 2–64 characters of [A-Za-z0-9_+=,.@-]"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A session name made from free text (a route's name): other characters become `-`, cut
    /// at 64.
    pub fn derived(name: &str) -> Self {
        Self(
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .take(64)
                .collect(),
        )
    }
}

/// What a Google kind mints: an ID token for an audience, or an access token with scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mint {
    /// An ID token for this (non-empty) audience.
    IdToken(String),
    /// An access token with these (non-empty, unless the kind allows its default) scopes.
    AccessToken(Vec<String>),
}

impl Mint {
    /// From a kind's `audience` and `scopes` fields: exactly one, non-empty. `audience_field`
    /// and `scopes_field` are the names messages give them (`source.target_audience`).
    pub fn exactly_one(
        audience: Option<String>,
        scopes: Option<Vec<String>>,
        audience_field: &str,
        scopes_field: &str,
    ) -> Result<Self, String> {
        match (audience, scopes) {
            (Some(a), None) if a.is_empty() => Err(format!("field `{audience_field}` is empty")),
            (Some(a), None) => Ok(Mint::IdToken(a)),
            (None, Some(s)) if s.is_empty() => Err(format!("field `{scopes_field}` is empty")),
            (None, Some(s)) => Ok(Mint::AccessToken(s)),
            (Some(_), Some(_)) => Err(format!(
                "set only one of `{audience_field}` and `{scopes_field}`"
            )),
            (None, None) => Err(format!(
                "set `{audience_field}` (for an ID token) or `{scopes_field}` (for an access token)"
            )),
        }
    }

    /// A client's per-request audience or scopes (the audience wins).
    pub fn overridden(overrides: &crate::Overrides) -> Option<Self> {
        match (&overrides.audience, &overrides.scopes) {
            (Some(a), _) => Some(Mint::IdToken(a.clone())),
            (None, Some(s)) => Some(Mint::AccessToken(s.clone())),
            (None, None) => None,
        }
    }

    /// The audience, for an ID token.
    pub fn audience(&self) -> Option<&str> {
        match self {
            Mint::IdToken(a) => Some(a),
            Mint::AccessToken(_) => None,
        }
    }

    /// The scopes, for an access token.
    pub fn scopes(&self) -> Option<&[String]> {
        match self {
            Mint::IdToken(_) => None,
            Mint::AccessToken(s) => Some(s),
        }
    }

    /// What it yields.
    pub fn yields(&self) -> crate::step::Yields {
        match self {
            Mint::IdToken(_) => crate::step::Yields::IdToken,
            Mint::AccessToken(_) => crate::step::Yields::AccessToken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_checked_and_read() {
        let r = RoleArn::parse("arn:aws:iam::111122223333:role/path/app").unwrap();
        assert_eq!((r.account(), r.name()), ("111122223333", "app"));
        assert!(RoleArn::parse("arn:aws:iam::111122223333:user/app").is_err());
        assert!(RoleArn::parse("role/app").is_err());
    }

    #[test]
    fn service_accounts_are_emails_or_ids() {
        for ok in ["sa@p.iam.gserviceaccount.com", "118273645546372819203"] {
            let sa = ServiceAccount::parse(ok).unwrap();
            assert_eq!(
                sa.resource_name(),
                format!("projects/-/serviceAccounts/{ok}")
            );
        }
        for bad in [
            "",
            "sa",
            "@p.iam.gserviceaccount.com",
            "sa@",
            "a@b@c",
            "sa @p.iam.gserviceaccount.com",
            "sa@p/x",
            "projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com",
        ] {
            assert!(ServiceAccount::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            ServiceAccount::parse("projects/-/serviceAccounts/1")
                .unwrap_err()
                .contains("prefix itself")
        );
    }

    #[test]
    fn derived_session_names_are_legal() {
        let n = SessionName::derived("my route/with spaces");
        assert_eq!(n.as_str(), "my-route-with-spaces");
        assert!(SessionName::parse(&n).is_ok());
        assert!(SessionName::parse("x").is_err());
    }
}
