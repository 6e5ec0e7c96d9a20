//! The request context IAM Roles Anywhere `CreateSession` assumes a role in, and the actions
//! it is evaluated for.
//!
//! The caller is the service principal `rolesanywhere.amazonaws.com`. The certificate's
//! attributes become principal tags (`aws:PrincipalTag/x509Subject/CN`,
//! `aws:PrincipalTag/x509Issuer/O`, `aws:PrincipalTag/x509SAN/DNS`,
//! `aws:PrincipalTag/x509SAN/URI`, `aws:PrincipalTag/x509SAN/Name/…`; also as
//! `aws:RequestTag/…`, their keys in `aws:TagKeys`); the trust anchor is `aws:SourceArn` and
//! its account `aws:SourceAccount`; the subject's CN is the source identity
//! (`aws:SourceIdentity`, `sts:SourceIdentity`). The role's trust policy must allow
//! `sts:AssumeRole`, `sts:TagSession` and, when the certificate has a CN,
//! `sts:SetSourceIdentity`. Reading the certificate is the caller's business: this module takes
//! its attributes.

use super::assume_role::{ASSUME_ROLE, SET_SOURCE_IDENTITY, TAG_SESSION};
use super::evaluate::{Principal, RequestContext};

/// The service principal a role's trust policy names to be assumable through Roles Anywhere.
pub const ROLES_ANYWHERE_PRINCIPAL: &str = "rolesanywhere.amazonaws.com";

/// What a `CreateSession` request presents: the trust anchor and the certificate's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolesAnywhereRequest {
    /// `arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID`.
    pub trust_anchor_arn: String,
    /// The certificate's attributes as tag keys without the `aws:PrincipalTag/` prefix
    /// (`x509Subject/CN`, `x509SAN/URI`, …) and their values, in certificate order.
    pub tags: Vec<(String, String)>,
    /// The subject's common name (the session's source identity).
    pub common_name: Option<String>,
}

impl RolesAnywhereRequest {
    /// A request whose certificate has the SAN URI `uri` (a SPIFFE ID, say) and subject CN
    /// `cn`, as far as they are given.
    pub fn with_certificate(
        trust_anchor_arn: impl Into<String>,
        uri: Option<&str>,
        cn: Option<&str>,
    ) -> RolesAnywhereRequest {
        let mut tags = Vec::new();
        if let Some(cn) = cn {
            tags.push(("x509Subject/CN".to_owned(), cn.to_owned()));
        }
        if let Some(uri) = uri {
            tags.push(("x509SAN/URI".to_owned(), uri.to_owned()));
        }
        RolesAnywhereRequest {
            trust_anchor_arn: trust_anchor_arn.into(),
            tags,
            common_name: cn.map(str::to_owned),
        }
    }

    /// The trust anchor's account, when its ARN has one.
    pub fn account(&self) -> Option<&str> {
        self.trust_anchor_arn
            .split(':')
            .nth(4)
            .filter(|a| !a.is_empty())
    }

    /// The actions the role's trust policy must allow, in order.
    pub fn actions(&self) -> Vec<&'static str> {
        let mut actions = vec![ASSUME_ROLE, TAG_SESSION];
        if self.common_name.is_some() {
            actions.push(SET_SOURCE_IDENTITY);
        }
        actions
    }
}

/// The context Roles Anywhere evaluates a role's trust policy in (action `sts:AssumeRole`; see
/// [`RequestContext::with_action`] for the others).
pub fn roles_anywhere_context(request: &RolesAnywhereRequest) -> RequestContext {
    let mut ctx = RequestContext::new(
        Principal::Service(ROLES_ANYWHERE_PRINCIPAL.to_owned()),
        ASSUME_ROLE,
    )
    .with_key("aws:SourceArn", request.trust_anchor_arn.clone())
    .with_multi_key("aws:TagKeys", request.tags.iter().map(|(k, _)| k.clone()));
    if let Some(account) = request.account() {
        ctx = ctx.with_key("aws:SourceAccount", account);
    }
    for (k, v) in &request.tags {
        ctx = ctx
            .with_key(&format!("aws:PrincipalTag/{k}"), v.clone())
            .with_key(&format!("aws:RequestTag/{k}"), v.clone());
    }
    if let Some(cn) = &request.common_name {
        ctx = ctx
            .with_key("aws:SourceIdentity", cn.clone())
            .with_key("sts:SourceIdentity", cn.clone());
    }
    ctx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::aws::{Decision, TrustPolicy, evaluate_actions};

    const ANCHOR: &str = "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/ta-1";

    fn policy(uri_pattern: &str) -> TrustPolicy {
        TrustPolicy::parse(&format!(
            r#"{{
              "Version": "2012-10-17",
              "Statement": [{{
                "Effect": "Allow",
                "Principal": {{"Service": "rolesanywhere.amazonaws.com"}},
                "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
                "Condition": {{
                  "StringLike": {{"aws:PrincipalTag/x509SAN/URI": "{uri_pattern}"}},
                  "ArnEquals": {{"aws:SourceArn": "{ANCHOR}"}}
                }}
              }}]
            }}"#
        ))
        .unwrap()
    }

    #[test]
    fn spiffe_id_and_anchor_decide() {
        let req = RolesAnywhereRequest::with_certificate(
            ANCHOR,
            Some("spiffe://example.org/ns/prod/sa/web"),
            Some("web"),
        );
        let ctx = roles_anywhere_context(&req);
        assert_eq!(
            ctx.get("aws:SourceAccount").unwrap().values(),
            ["111122223333"]
        );
        let trace = evaluate_actions(
            &policy("spiffe://example.org/ns/prod/*"),
            &ctx,
            &req.actions(),
        );
        assert_eq!(trace.len(), 3);
        assert!(trace.iter().all(|(_, e)| e.is_allowed()));

        let trace = evaluate_actions(
            &policy("spiffe://example.org/ns/dev/*"),
            &ctx,
            &req.actions(),
        );
        assert_eq!(trace.len(), 1);
        assert_eq!(trace[0].1.decision, Decision::ImplicitDeny);

        let other = RolesAnywhereRequest::with_certificate(
            "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/ta-2",
            Some("spiffe://example.org/ns/prod/sa/web"),
            None,
        );
        assert_eq!(other.actions(), [ASSUME_ROLE, TAG_SESSION]);
        let trace = evaluate_actions(
            &policy("spiffe://example.org/ns/prod/*"),
            &roles_anywhere_context(&other),
            &other.actions(),
        );
        assert!(!trace[0].1.is_allowed());
    }
}
