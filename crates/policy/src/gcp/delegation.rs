//! IAM Credentials delegation chains: who may mint a token of an account through which
//! intermediate accounts.
//!
//! A request by a caller for a target with `delegates = [d1, d2, …]` passes when the caller
//! holds `iam.serviceAccounts.implicitDelegation` on `d1`, each delegate on the next, and the
//! last account of the chain the minting permission on the target. Of the roles that carry
//! those permissions, `roles/iam.serviceAccountTokenCreator` is the one Google documents for
//! every link; on the target, `roles/iam.workloadIdentityUser` also carries it for a service
//! account, and is the only one a federated principal can hold. [`check_chain`] checks every
//! link in order; the emulator's IAM Credentials answers with its first missing link, and
//! `idbridge explain` prints them all.

use serde::Serialize;

use super::{Principal, member_matches};

/// The role checked at every link.
pub const TOKEN_CREATOR: &str = "roles/iam.serviceAccountTokenCreator";
/// The role that also grants minting on the target.
pub const WORKLOAD_IDENTITY_USER: &str = "roles/iam.workloadIdentityUser";

/// The IAM policy of one service account, as far as delegation reads it.
#[derive(Debug, Clone, Copy)]
pub struct AccountPolicy<'a> {
    /// The account's email.
    pub email: &'a str,
    /// Members holding `roles/iam.serviceAccountTokenCreator` on it.
    pub token_creators: &'a [String],
    /// Members holding `roles/iam.workloadIdentityUser` on it.
    pub workload_identity_users: &'a [String],
}

/// One link of a chain: whether `caller` holds what it needs on `account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Who acts at this link: the caller, then each delegate (its `serviceAccount:` member).
    pub caller: String,
    /// The account acted on: each delegate, then the target.
    pub account: String,
    /// Whether the account is the target (else an intermediate delegate).
    pub target: bool,
    /// The role that grants it, when one does.
    pub granted_by: Option<&'static str>,
}

impl Link {
    /// Whether the link holds.
    pub fn granted(&self) -> bool {
        self.granted_by.is_some()
    }
}

/// The outcome of [`check_chain`]: every link, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    /// caller → `delegates[0]`, …, last delegate (or the caller) → target.
    pub links: Vec<Link>,
}

impl ChainCheck {
    /// The first link that does not hold (Google refuses the whole request there).
    pub fn first_missing(&self) -> Option<&Link> {
        self.links.iter().find(|l| !l.granted())
    }

    /// Whether every link holds.
    pub fn allowed(&self) -> bool {
        self.first_missing().is_none()
    }
}

fn describe(p: &Principal) -> String {
    match p {
        Principal::ServiceAccount(e) => format!("serviceAccount:{e}"),
        Principal::User(e) => format!("user:{e}"),
        Principal::Federated(f) => f.identifier(),
    }
}

/// Checks caller → `delegates`… → `target`: each delegate must list the previous principal
/// among its token creators; the target, among its token creators or (for any caller) its
/// workload identity users — only the latter for a federated caller. Every link is checked
/// (not only up to the first missing one), each as the account the chain reached.
pub fn check_chain(
    caller: &Principal,
    delegates: &[AccountPolicy<'_>],
    target: &AccountPolicy<'_>,
) -> ChainCheck {
    let mut links = Vec::with_capacity(delegates.len() + 1);
    let mut principal = caller.clone();
    for d in delegates {
        let granted = d
            .token_creators
            .iter()
            .any(|m| member_matches(m, &principal));
        links.push(Link {
            caller: describe(&principal),
            account: d.email.to_owned(),
            target: false,
            granted_by: granted.then_some(TOKEN_CREATOR),
        });
        principal = Principal::ServiceAccount(d.email.to_owned());
    }
    let matches = |members: &[String]| members.iter().any(|m| member_matches(m, &principal));
    let granted_by = match &principal {
        Principal::Federated(_) => {
            matches(target.workload_identity_users).then_some(WORKLOAD_IDENTITY_USER)
        }
        _ => {
            if matches(target.token_creators) {
                Some(TOKEN_CREATOR)
            } else if matches(target.workload_identity_users) {
                Some(WORKLOAD_IDENTITY_USER)
            } else {
                None
            }
        }
    };
    links.push(Link {
        caller: describe(&principal),
        account: target.email.to_owned(),
        target: true,
        granted_by,
    });
    ChainCheck { links }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa<'a>(email: &'a str, creators: &'a [String]) -> AccountPolicy<'a> {
        AccountPolicy {
            email,
            token_creators: creators,
            workload_identity_users: &[],
        }
    }

    #[test]
    fn every_link_is_checked_and_the_first_missing_named() {
        let hop_creators = vec!["serviceAccount:vm@p.iam.gserviceaccount.com".to_owned()];
        let target_creators = vec!["serviceAccount:vm@p.iam.gserviceaccount.com".to_owned()];
        let vm = Principal::ServiceAccount("vm@p.iam.gserviceaccount.com".into());
        let hop = sa("hop@p.iam.gserviceaccount.com", &hop_creators);
        let target = sa("t@p.iam.gserviceaccount.com", &target_creators);
        let direct = check_chain(&vm, &[], &target);
        assert!(direct.allowed());
        let chained = check_chain(&vm, &[hop], &target);
        assert_eq!(chained.links.len(), 2);
        assert!(chained.links[0].granted());
        let missing = chained.first_missing().unwrap();
        assert_eq!(
            (
                missing.caller.as_str(),
                missing.account.as_str(),
                missing.target
            ),
            (
                "serviceAccount:hop@p.iam.gserviceaccount.com",
                "t@p.iam.gserviceaccount.com",
                true
            )
        );
    }
}
