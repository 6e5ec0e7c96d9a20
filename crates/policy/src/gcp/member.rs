//! IAM members as written in bindings, the principals they designate, and the resource names
//! of workload identity pools and providers.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::mapping::MappedAttributes;
use super::short;

/// The IAM service host of federated principal identifiers.
pub const IAM_HOST: &str = "iam.googleapis.com";

const POOLS: &str = "/locations/global/workloadIdentityPools/";

/// A workload identity pool: `projects/NUMBER/locations/global/workloadIdentityPools/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PoolName {
    /// The project number (not the project id).
    pub project_number: String,
    /// The pool id.
    pub pool: String,
}

impl PoolName {
    /// `iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P`, the part
    /// every principal identifier of the pool starts with after its scheme.
    pub fn path(&self) -> String {
        format!(
            "{IAM_HOST}/projects/{}{POOLS}{}",
            self.project_number, self.pool
        )
    }

    /// Parses `iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/REST`
    /// into the pool and `REST`.
    fn split(text: &str) -> Option<(PoolName, &str)> {
        let rest = text.strip_prefix(IAM_HOST)?.strip_prefix("/projects/")?;
        let (number, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix(&POOLS[1..])?;
        let (pool, rest) = rest.split_once('/')?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || pool.is_empty() {
            return None;
        }
        Some((
            PoolName {
                project_number: number.to_owned(),
                pool: pool.to_owned(),
            },
            rest,
        ))
    }
}

/// A workload identity pool provider, as named in an STS `audience`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProviderName {
    /// The pool.
    pub pool: PoolName,
    /// The provider id.
    pub provider: String,
}

impl ProviderName {
    /// The provider's canonical resource name,
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/PR`.
    pub fn canonical(&self) -> String {
        format!("//{}/providers/{}", self.pool.path(), self.provider)
    }

    /// Parses an STS `audience` (or an `x-goog-cloud-target-resource` value): the canonical name
    /// with or without a leading `https:`.
    pub fn parse_audience(audience: &str) -> Option<ProviderName> {
        let rest = audience.strip_prefix("https:").unwrap_or(audience);
        let rest = rest.strip_prefix("//")?;
        let (pool, rest) = PoolName::split(rest)?;
        let provider = rest.strip_prefix("providers/")?;
        if provider.is_empty() || provider.contains('/') {
            return None;
        }
        Some(ProviderName {
            pool,
            provider: provider.to_owned(),
        })
    }

    /// Whether `audience` names this provider (with or without `https:`).
    pub fn is_audience(&self, audience: &str) -> bool {
        let canonical = self.canonical();
        audience == canonical || audience.strip_prefix("https:") == Some(canonical.as_str())
    }
}

/// An identity that calls Google with a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Principal {
    /// A service account, by email.
    ServiceAccount(String),
    /// A Google account, by email.
    User(String),
    /// A federated identity from a workload identity pool.
    Federated(FederatedPrincipal),
}

/// A federated identity: the pool it was exchanged in and its mapped attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FederatedPrincipal {
    /// The pool's project number.
    pub project_number: String,
    /// The pool id.
    pub pool: String,
    /// `google.subject`.
    pub subject: String,
    /// Custom attributes by name (without `attribute.`).
    pub attributes: BTreeMap<String, String>,
    /// `google.groups`.
    pub groups: Vec<String>,
}

impl FederatedPrincipal {
    /// The principal a mapping produced in `pool`.
    pub fn from_mapped(pool: &PoolName, mapped: &MappedAttributes) -> FederatedPrincipal {
        FederatedPrincipal {
            project_number: pool.project_number.clone(),
            pool: pool.pool.clone(),
            subject: mapped.subject.clone(),
            attributes: mapped.attributes.clone(),
            groups: mapped.groups.clone(),
        }
    }

    /// A principal read back from its identifier
    /// (`principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/S`),
    /// without attributes or groups.
    pub fn from_identifier(identifier: &str) -> Result<FederatedPrincipal, MemberError> {
        match Member::parse(identifier)? {
            Member::Subject { pool, subject } => Ok(FederatedPrincipal {
                project_number: pool.project_number,
                pool: pool.pool,
                subject,
                attributes: BTreeMap::new(),
                groups: Vec::new(),
            }),
            _ => Err(MemberError::new(
                identifier,
                "expected a principal://…/subject/… identifier",
            )),
        }
    }

    /// The pool.
    pub fn pool_name(&self) -> PoolName {
        PoolName {
            project_number: self.project_number.clone(),
            pool: self.pool.clone(),
        }
    }

    /// `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/S`.
    pub fn identifier(&self) -> String {
        format!(
            "principal://{}/subject/{}",
            self.pool_name().path(),
            self.subject
        )
    }
}

/// An IAM member that is not one this crate understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IAM member {member:?}: {reason}")]
pub struct MemberError {
    /// The member (shortened).
    pub member: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl MemberError {
    fn new(member: &str, reason: &'static str) -> MemberError {
        MemberError {
            member: short(member),
            reason,
        }
    }
}

/// An IAM binding member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Member {
    /// `serviceAccount:EMAIL`.
    ServiceAccount(String),
    /// `user:EMAIL`.
    User(String),
    /// `group:EMAIL` (Google Groups membership is not modelled: it matches nothing).
    Group(String),
    /// `principal://iam.googleapis.com/…/workloadIdentityPools/P/subject/S`: one federated
    /// identity.
    Subject {
        /// The pool.
        pool: PoolName,
        /// `google.subject`.
        subject: String,
    },
    /// `principalSet://…/workloadIdentityPools/P/group/G`: identities whose `google.groups`
    /// contains `G`.
    PoolGroup {
        /// The pool.
        pool: PoolName,
        /// The group.
        group: String,
    },
    /// `principalSet://…/workloadIdentityPools/P/attribute.NAME/VALUE`: identities whose
    /// `attribute.NAME` is `VALUE` (which may contain `/`).
    PoolAttribute {
        /// The pool.
        pool: PoolName,
        /// The attribute name, without `attribute.`.
        name: String,
        /// The value.
        value: String,
    },
    /// `principalSet://…/workloadIdentityPools/P/*`: every identity of the pool.
    AllInPool {
        /// The pool.
        pool: PoolName,
    },
}

impl Member {
    /// Parses a member as written in an IAM binding.
    pub fn parse(member: &str) -> Result<Member, MemberError> {
        let err = |reason| Err(MemberError::new(member, reason));
        for (prefix, make) in [
            (
                "serviceAccount:",
                Member::ServiceAccount as fn(String) -> Member,
            ),
            ("user:", Member::User),
            ("group:", Member::Group),
        ] {
            if let Some(email) = member.strip_prefix(prefix) {
                if email.is_empty() || !email.contains('@') {
                    return err("expected an email address after the member type");
                }
                return Ok(make(email.to_owned()));
            }
        }
        if let Some(rest) = member.strip_prefix("principal://") {
            let Some((pool, rest)) = PoolName::split(rest) else {
                return err(
                    "expected principal://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/subject/SUBJECT",
                );
            };
            return match rest.strip_prefix("subject/") {
                Some(subject) if !subject.is_empty() => Ok(Member::Subject {
                    pool,
                    subject: subject.to_owned(),
                }),
                _ => err("a principal:// member names one identity: …/subject/SUBJECT"),
            };
        }
        if let Some(rest) = member.strip_prefix("principalSet://") {
            let Some((pool, selector)) = PoolName::split(rest) else {
                return err(
                    "expected principalSet://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/…",
                );
            };
            if selector == "*" {
                return Ok(Member::AllInPool { pool });
            }
            if let Some(group) = selector.strip_prefix("group/") {
                if group.is_empty() {
                    return err("the group is empty");
                }
                return Ok(Member::PoolGroup {
                    pool,
                    group: group.to_owned(),
                });
            }
            if let Some(rest) = selector.strip_prefix("attribute.") {
                let Some((name, value)) = rest.split_once('/') else {
                    return err("expected …/attribute.NAME/VALUE");
                };
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    || value.is_empty()
                {
                    return err("expected …/attribute.NAME/VALUE with NAME of [a-z0-9_]");
                }
                return Ok(Member::PoolAttribute {
                    pool,
                    name: name.to_owned(),
                    value: value.to_owned(),
                });
            }
            if selector.starts_with("subject/") {
                return err(
                    "principalSet:// takes group/, attribute.NAME/ or *; a single subject is principal://…/subject/SUBJECT",
                );
            }
            return err("principalSet:// takes …/group/GROUP, …/attribute.NAME/VALUE or …/*");
        }
        err("expected serviceAccount:, user:, group:, principal:// or principalSet://")
    }

    /// Whether this member designates `principal`.
    pub fn matches(&self, principal: &Principal) -> bool {
        match (self, principal) {
            (Member::ServiceAccount(m), Principal::ServiceAccount(email))
            | (Member::User(m), Principal::User(email)) => m.eq_ignore_ascii_case(email),
            (Member::Subject { pool, subject }, Principal::Federated(p)) => {
                in_pool(pool, p) && *subject == p.subject
            }
            (Member::PoolGroup { pool, group }, Principal::Federated(p)) => {
                in_pool(pool, p) && p.groups.iter().any(|g| g == group)
            }
            (Member::PoolAttribute { pool, name, value }, Principal::Federated(p)) => {
                in_pool(pool, p) && p.attributes.get(name) == Some(value)
            }
            (Member::AllInPool { pool }, Principal::Federated(p)) => in_pool(pool, p),
            _ => false,
        }
    }
}

fn in_pool(pool: &PoolName, p: &FederatedPrincipal) -> bool {
    pool.project_number == p.project_number && pool.pool == p.pool
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::ServiceAccount(e) => write!(f, "serviceAccount:{e}"),
            Member::User(e) => write!(f, "user:{e}"),
            Member::Group(e) => write!(f, "group:{e}"),
            Member::Subject { pool, subject } => {
                write!(f, "principal://{}/subject/{subject}", pool.path())
            }
            Member::PoolGroup { pool, group } => {
                write!(f, "principalSet://{}/group/{group}", pool.path())
            }
            Member::PoolAttribute { pool, name, value } => {
                write!(f, "principalSet://{}/attribute.{name}/{value}", pool.path())
            }
            Member::AllInPool { pool } => write!(f, "principalSet://{}/*", pool.path()),
        }
    }
}

/// Whether the IAM member `member` (as written in a binding) designates `principal`. A member
/// that does not parse ([`Member::parse`]) matches nothing.
pub fn member_matches(member: &str, principal: &Principal) -> bool {
    Member::parse(member).is_ok_and(|m| m.matches(principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str =
        "iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws-pool";

    fn fed() -> Principal {
        Principal::Federated(FederatedPrincipal {
            project_number: "123456".into(),
            pool: "aws-pool".into(),
            subject: "repo:org/app:ref:refs/heads/main".into(),
            attributes: BTreeMap::from([
                ("repository".to_owned(), "org/app".to_owned()),
                ("env".to_owned(), "prod".to_owned()),
                (
                    "aws_role".to_owned(),
                    "arn:aws:sts::111122223333:assumed-role/gcp-caller".to_owned(),
                ),
            ]),
            groups: vec!["admins".into(), "devs".into()],
        })
    }

    #[test]
    fn member_matching_table() {
        let sa = Principal::ServiceAccount("x@p.iam.gserviceaccount.com".into());
        let user = Principal::User("alice@example.com".into());
        let fed = fed();
        let subject = format!("principal://{POOL}/subject/repo:org/app:ref:refs/heads/main");
        let other_pool =
            "iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/other-pool";
        let other_project =
            "iam.googleapis.com/projects/999999/locations/global/workloadIdentityPools/aws-pool";
        let cases: Vec<(String, &Principal, bool)> = vec![
            ("serviceAccount:x@p.iam.gserviceaccount.com".into(), &sa, true),
            ("serviceAccount:X@P.iam.gserviceaccount.com".into(), &sa, true),
            ("serviceAccount:y@p.iam.gserviceaccount.com".into(), &sa, false),
            ("user:x@p.iam.gserviceaccount.com".into(), &sa, false),
            ("user:alice@example.com".into(), &user, true),
            ("group:admins@example.com".into(), &user, false),
            ("serviceAccount:alice@example.com".into(), &user, false),
            (subject.clone(), &sa, false),
            (subject, &fed, true),
            (format!("principal://{POOL}/subject/repo:org/other"), &fed, false),
            (format!("principal://{POOL}/subject/REPO:org/app:ref:refs/heads/main"), &fed, false),
            (
                format!("principal://{other_pool}/subject/repo:org/app:ref:refs/heads/main"),
                &fed,
                false,
            ),
            (format!("principalSet://{POOL}/*"), &fed, true),
            (format!("principalSet://{other_pool}/*"), &fed, false),
            (format!("principalSet://{other_project}/*"), &fed, false),
            (format!("principalSet://{POOL}/attribute.repository/org/app"), &fed, true),
            (format!("principalSet://{POOL}/attribute.repository/org/other"), &fed, false),
            (format!("principalSet://{other_pool}/attribute.repository/org/app"), &fed, false),
            (format!("principalSet://{POOL}/attribute.env/prod"), &fed, true),
            (format!("principalSet://{POOL}/attribute.missing/prod"), &fed, false),
            (
                format!(
                    "principalSet://{POOL}/attribute.aws_role/arn:aws:sts::111122223333:assumed-role/gcp-caller"
                ),
                &fed,
                true,
            ),
            (
                format!(
                    "principalSet://{POOL}/attribute.aws_role/arn:aws:sts::111122223333:assumed-role/other-app"
                ),
                &fed,
                false,
            ),
            (format!("principalSet://{POOL}/group/devs"), &fed, true),
            (format!("principalSet://{POOL}/group/ops"), &fed, false),
            // The seed's principalSet…/subject/… spelling is not a valid member.
            (
                format!("principalSet://{POOL}/subject/repo:org/app:ref:refs/heads/main"),
                &fed,
                false,
            ),
            (format!("principalSet://{POOL}/"), &fed, false),
            (format!("principalSet://{POOL}/*"), &sa, false),
            ("serviceAccount:x@p.iam.gserviceaccount.com".into(), &fed, false),
            ("allUsers".into(), &fed, false),
            ("principalSet://garbage".into(), &fed, false),
            (format!("principal://{POOL}/subject/"), &fed, false),
            (
                "principal://iam.googleapis.com/projects/my-project/locations/global/workloadIdentityPools/aws-pool/subject/repo:org/app:ref:refs/heads/main".into(),
                &fed,
                false,
            ),
        ];
        for (member, principal, want) in cases {
            assert_eq!(
                member_matches(&member, principal),
                want,
                "{member} vs {principal:?}"
            );
        }
    }

    #[test]
    fn members_round_trip() {
        for text in [
            "serviceAccount:a@p.iam.gserviceaccount.com".to_owned(),
            "user:a@example.com".to_owned(),
            "group:g@example.com".to_owned(),
            format!("principal://{POOL}/subject/spiffe://example.org/ns/prod/sa/billing"),
            format!("principalSet://{POOL}/group/admins"),
            format!("principalSet://{POOL}/attribute.aws_role/arn:aws:sts::1:assumed-role/r"),
            format!("principalSet://{POOL}/*"),
        ] {
            let m = Member::parse(&text).unwrap();
            assert_eq!(m.to_string(), text);
        }
        let err = Member::parse(&format!("principalSet://{POOL}/subject/x")).unwrap_err();
        assert!(err.to_string().contains("principal://"), "{err}");
        assert!(Member::parse("serviceAccount:").is_err());
        assert!(Member::parse(&format!("principalSet://{POOL}/attribute.Bad/x")).is_err());
        assert!(Member::parse(&format!("principalSet://{POOL}/attribute.a/")).is_err());
    }

    #[test]
    fn identifiers_and_provider_names() {
        let Principal::Federated(p) = fed() else {
            unreachable!()
        };
        let id = p.identifier();
        assert_eq!(
            id,
            format!("principal://{POOL}/subject/repo:org/app:ref:refs/heads/main")
        );
        let back = FederatedPrincipal::from_identifier(&id).unwrap();
        assert_eq!(
            (back.project_number.as_str(), back.pool.as_str()),
            ("123456", "aws-pool")
        );
        assert_eq!(back.subject, p.subject);
        assert!(FederatedPrincipal::from_identifier(&format!("principalSet://{POOL}/*")).is_err());

        let canonical = format!("//{POOL}/providers/aws-test-account");
        let name = ProviderName::parse_audience(&canonical).unwrap();
        assert_eq!(name.canonical(), canonical);
        assert_eq!(name.provider, "aws-test-account");
        assert_eq!(name.pool.pool, "aws-pool");
        assert_eq!(
            ProviderName::parse_audience(&format!("https:{canonical}")),
            Some(name.clone())
        );
        assert!(name.is_audience(&canonical));
        assert!(name.is_audience(&format!("https:{canonical}")));
        assert!(!name.is_audience(&format!("https://{POOL}/providers/other")));
        for bad in [
            format!("{POOL}/providers/p"),
            format!("http:{canonical}"),
            format!("//{POOL}/providers/"),
            format!("//{POOL}/providers/a/b"),
            "//iam.googleapis.com/projects/my-project/locations/global/workloadIdentityPools/p/providers/x".to_owned(),
            "//iam.googleapis.com/projects/1/locations/us/workloadIdentityPools/p/providers/x".to_owned(),
        ] {
            assert_eq!(ProviderName::parse_audience(&bad), None, "{bad}");
        }
    }
}
