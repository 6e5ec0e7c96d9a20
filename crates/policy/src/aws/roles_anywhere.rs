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
//! `sts:SetSourceIdentity`. [`RolesAnywhereRequest::from_certificate`] and
//! [`certificate_request`] read those attributes from a certificate, the one copy the emulated
//! `CreateSession`, `doctor` and `setup` share.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

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

    /// The request presenting `cert` under `trust_anchor_arn`: its subject's and issuer's RDNs,
    /// and its first SAN DNS name, URI and directory name, as Roles Anywhere maps them to
    /// principal tags; the subject's CN as source identity.
    pub fn from_certificate(
        trust_anchor_arn: impl Into<String>,
        cert: &X509Certificate<'_>,
    ) -> RolesAnywhereRequest {
        let mut tags = Vec::new();
        push_name(&mut tags, "x509Subject", cert.subject());
        push_name(&mut tags, "x509Issuer", cert.issuer());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            let (mut dns, mut uri, mut dir) = (false, false, false);
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) if !dns => {
                        dns = true;
                        tags.push(("x509SAN/DNS".to_owned(), (*d).to_owned()));
                    }
                    GeneralName::URI(u) if !uri => {
                        uri = true;
                        tags.push(("x509SAN/URI".to_owned(), (*u).to_owned()));
                    }
                    GeneralName::DirectoryName(n) if !dir => {
                        dir = true;
                        push_name(&mut tags, "x509SAN/Name", n);
                    }
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        RolesAnywhereRequest {
            trust_anchor_arn: trust_anchor_arn.into(),
            tags,
            common_name,
        }
    }

    /// The value of the tag `key` (`x509SAN/URI`, `x509Subject/CN`, …), when the certificate
    /// has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
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

/// The request `CreateSession` evaluates the role's trust policy for, with the leaf of
/// `chain_pem` (PEM, leaf first) presented under `trust_anchor_arn`. `None` when the PEM holds no
/// certificate.
pub fn certificate_request(
    trust_anchor_arn: &str,
    chain_pem: &str,
) -> Option<RolesAnywhereRequest> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = X509Certificate::from_der(&leaf).ok()?;
    Some(RolesAnywhereRequest::from_certificate(
        trust_anchor_arn,
        &cert,
    ))
}

/// The short name Roles Anywhere gives an RDN's attribute type, for those it maps.
fn rdn_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.11" => "OU",
        "2.5.4.10" => "O",
        "2.5.4.6" => "C",
        "2.5.4.8" => "ST",
        "2.5.4.7" => "L",
        _ => return None,
    })
}

/// Appends `name`'s mapped attributes as `prefix/SHORT` tags, the first of each type only.
fn push_name(tags: &mut Vec<(String, String)>, prefix: &str, name: &X509Name<'_>) {
    for attr in name.iter_attributes() {
        let Some(short) = rdn_name(&attr.attr_type().to_id_string()) else {
            continue;
        };
        let key = format!("{prefix}/{short}");
        if tags.iter().any(|(k, _)| *k == key) {
            continue;
        }
        if let Ok(value) = attr.as_str() {
            tags.push((key, value.to_owned()));
        }
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
