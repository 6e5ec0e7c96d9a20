//! The two forms of `azp` in a Google service account's ID token, and what they mean for AWS.
//!
//! AWS compares `accounts.google.com:aud` with a Google token's `azp` when it has one. Google
//! puts the account's numeric unique id there (equal to `sub`), unless the token came from IAM
//! Credentials `generateIdToken` with `useEmailAzp: true`: then `azp` is the account's email.
//! Which one a workload gets depends on its client: google-auth-library for Node sends
//! `useEmailAzp` (= `includeEmail`, default true) and so does google-auth for Python on its IAM
//! ID-token path, while idbridge, the metadata server, the OAuth2 jwt-bearer grant and the Go
//! and Java libraries' impersonation get the numeric id. A trust policy written for one form
//! refuses the other; one that lists both under `accounts.google.com:aud` admits both.

use idbridge_core::jwt::UnverifiedJwt;

/// What a Google ID token's `azp` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Azp {
    /// The numeric unique id (today's default).
    UniqueId(String),
    /// The service account's email (`generateIdToken` with `useEmailAzp`).
    Email(String),
}

impl Azp {
    /// The token's `azp`, classified; `None` without one.
    pub(crate) fn of(jwt: &UnverifiedJwt) -> Option<Azp> {
        let azp = jwt.str_claim("azp")?;
        Some(if azp.contains('@') {
            Azp::Email(azp.to_owned())
        } else {
            Azp::UniqueId(azp.to_owned())
        })
    }
}

/// Both forms of `azp` for the token's account, when the token says both (`sub` is the unique
/// id; the email is `azp` itself or the `email` claim): `(unique_id, email)`.
pub(crate) fn both_forms(jwt: &UnverifiedJwt) -> Option<(String, String)> {
    let sub = jwt.str_claim("sub")?.to_owned();
    match Azp::of(jwt)? {
        Azp::Email(email) => Some((sub, email)),
        Azp::UniqueId(_) => jwt
            .str_claim("email")
            .filter(|e| e.contains('@'))
            .map(|e| (sub, e.to_owned())),
    }
}

/// Where clients differ, for a token whose `azp` is `form`: one line naming the other form and
/// the `accounts.google.com:aud` values that admit both.
pub(crate) fn clients_differ(form: &Azp, unique_id: &str, email: &str) -> String {
    let both = format!("\"accounts.google.com:aud\": [\"{unique_id}\", \"{email}\"]");
    match form {
        Azp::Email(_) => format!(
            "this token's azp is the service account's email ({email}): IAM Credentials generateIdToken with useEmailAzp, which google-auth-library for Node sends by default; the same account's tokens from idbridge, the metadata server, gcloud or Go carry azp = its numeric id ({unique_id}); to admit both write {both}"
        ),
        Azp::UniqueId(_) => format!(
            "this token's azp is the service account's numeric id ({unique_id}); the same account's tokens from generateIdToken with useEmailAzp (google-auth-library for Node by default, google-auth for Python's IAM ID-token path) carry azp = its email ({email}); to admit both write {both}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> UnverifiedJwt {
        let serde_json::Value::Object(claims) = claims else {
            panic!("claims must be an object")
        };
        UnverifiedJwt {
            header: serde_json::Map::new(),
            claims,
        }
    }

    #[test]
    fn both_forms_from_either_token() {
        let email = jwt(serde_json::json!({"sub": "123", "azp": "a@p.iam.gserviceaccount.com"}));
        assert_eq!(
            Azp::of(&email),
            Some(Azp::Email("a@p.iam.gserviceaccount.com".into()))
        );
        assert_eq!(
            both_forms(&email),
            Some(("123".into(), "a@p.iam.gserviceaccount.com".into()))
        );
        let numeric = jwt(serde_json::json!({"sub": "123", "azp": "123"}));
        assert_eq!(both_forms(&numeric), None, "no email claim: unknown");
        let numeric = jwt(
            serde_json::json!({"sub": "123", "azp": "123", "email": "a@p.iam.gserviceaccount.com"}),
        );
        let (id, mail) = both_forms(&numeric).unwrap();
        let line = clients_differ(&Azp::of(&numeric).unwrap(), &id, &mail);
        assert!(
            line.contains("[\"123\", \"a@p.iam.gserviceaccount.com\"]"),
            "{line}"
        );
    }
}
