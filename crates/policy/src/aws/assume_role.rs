//! The request context of `sts:AssumeRole` called with role session credentials (role
//! chaining), and the actions it is evaluated for.
//!
//! The caller is its assumed-role session (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`),
//! which a trust policy's role-ARN principal matches. The context carries `aws:PrincipalArn`
//! (the caller's role), `aws:PrincipalAccount`, `aws:PrincipalTag/…` (the caller's session
//! tags), `aws:SourceIdentity` (the caller's), and from the request `sts:RoleSessionName`,
//! `sts:ExternalId`, `sts:SourceIdentity`, `aws:RequestTag/…`, `aws:TagKeys` and
//! `sts:TransitiveTagKeys`. AWS evaluates `sts:AssumeRole`, then `sts:TagSession` when the
//! request passes tags and `sts:SetSourceIdentity` when it passes a source identity; each must
//! be allowed.

use super::evaluate::{Evaluation, Principal, RequestContext, evaluate};
use super::policy::TrustPolicy;

/// `sts:AssumeRole`.
pub const ASSUME_ROLE: &str = "sts:AssumeRole";
/// `sts:TagSession`: evaluated when a request passes session tags.
pub const TAG_SESSION: &str = "sts:TagSession";
/// `sts:SetSourceIdentity`: evaluated when a request passes a source identity.
pub const SET_SOURCE_IDENTITY: &str = "sts:SetSourceIdentity";

/// The session calling `AssumeRole`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerSession {
    /// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`.
    pub assumed_role_arn: String,
    /// `arn:aws:iam::ACCOUNT:role/NAME` (`aws:PrincipalArn`).
    pub role_arn: String,
    /// The caller's account (`aws:PrincipalAccount`).
    pub account: String,
    /// The caller's session tags (`aws:PrincipalTag/…`).
    pub tags: Vec<(String, String)>,
    /// The caller's source identity (`aws:SourceIdentity`).
    pub source_identity: Option<String>,
}

impl CallerSession {
    /// The caller from an ARN as GetCallerIdentity or IAM writes it: an assumed-role session
    /// (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`) or a role
    /// (`arn:aws:iam::ACCOUNT:role/PATH/NAME`, whose session is then `session`). `None` for
    /// anything else.
    pub fn from_arn(arn: &str, session: &str) -> Option<CallerSession> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let ["arn", partition, service, _region, account, resource] = parts[..] else {
            return None;
        };
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (name, session) = match service {
            "sts" => {
                let rest = resource.strip_prefix("assumed-role/")?;
                let (name, session) = rest.split_once('/')?;
                (name.to_owned(), session.to_owned())
            }
            "iam" => {
                let path_name = resource.strip_prefix("role/")?;
                let name = path_name.rsplit('/').next().unwrap_or(path_name);
                (name.to_owned(), session.to_owned())
            }
            _ => return None,
        };
        if name.is_empty() || session.is_empty() {
            return None;
        }
        let role_arn = match service {
            "iam" => arn.to_owned(),
            _ => format!("arn:{partition}:iam::{account}:role/{name}"),
        };
        Some(CallerSession {
            assumed_role_arn: format!(
                "arn:{partition}:sts::{account}:assumed-role/{name}/{session}"
            ),
            role_arn,
            account: account.to_owned(),
            tags: Vec::new(),
            source_identity: None,
        })
    }
}

/// What an `AssumeRole` request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// The calling session.
    pub caller: CallerSession,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `ExternalId`.
    pub external_id: Option<String>,
    /// `SourceIdentity`.
    pub source_identity: Option<String>,
    /// `Tags`.
    pub tags: Vec<(String, String)>,
    /// `TransitiveTagKeys`.
    pub transitive_tag_keys: Vec<String>,
}

impl AssumeRoleRequest {
    /// The actions AWS evaluates for this request, in order.
    pub fn actions(&self) -> Vec<&'static str> {
        let mut actions = vec![ASSUME_ROLE];
        if !self.tags.is_empty() || !self.transitive_tag_keys.is_empty() {
            actions.push(TAG_SESSION);
        }
        if self.source_identity.is_some() {
            actions.push(SET_SOURCE_IDENTITY);
        }
        actions
    }
}

/// The context AWS evaluates a role's trust policy in for `request` (action `sts:AssumeRole`;
/// see [`RequestContext::with_action`] for the others).
pub fn assume_role_context(request: &AssumeRoleRequest) -> RequestContext {
    let caller = &request.caller;
    let mut ctx = RequestContext::new(Principal::Aws(caller.assumed_role_arn.clone()), ASSUME_ROLE)
        .with_key("aws:PrincipalArn", caller.role_arn.clone())
        .with_key("aws:PrincipalAccount", caller.account.clone())
        .with_key("sts:RoleSessionName", request.session_name.clone());
    for (k, v) in &caller.tags {
        ctx = ctx.with_key(&format!("aws:PrincipalTag/{k}"), v.clone());
    }
    if let Some(si) = &caller.source_identity {
        ctx = ctx.with_key("aws:SourceIdentity", si.clone());
    }
    if let Some(e) = &request.external_id {
        ctx = ctx.with_key("sts:ExternalId", e.clone());
    }
    if let Some(si) = &request.source_identity {
        ctx = ctx.with_key("sts:SourceIdentity", si.clone());
    }
    if !request.tags.is_empty() {
        for (k, v) in &request.tags {
            ctx = ctx.with_key(&format!("aws:RequestTag/{k}"), v.clone());
        }
        ctx = ctx.with_multi_key("aws:TagKeys", request.tags.iter().map(|(k, _)| k.clone()));
    }
    if !request.transitive_tag_keys.is_empty() {
        ctx = ctx.with_multi_key("sts:TransitiveTagKeys", request.transitive_tag_keys.clone());
    }
    ctx
}

/// Evaluates `policy` for each action of a request in `ctx`, in order, stopping at the first
/// action it does not allow: `(action, evaluation)` pairs, the last one the decisive one.
pub fn evaluate_actions(
    policy: &TrustPolicy,
    ctx: &RequestContext,
    actions: &[&'static str],
) -> Vec<(&'static str, Evaluation)> {
    let mut out = Vec::new();
    for action in actions {
        let evaluation = evaluate(policy, &ctx.clone().with_action(*action));
        let allowed = evaluation.is_allowed();
        out.push((*action, evaluation));
        if !allowed {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::aws::Decision;

    const TRUST: &str = r#"{
      "Version": "2012-10-17",
      "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:role/first"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"sts:ExternalId": "ext-1"}}
      }]
    }"#;

    fn request(external_id: Option<&str>) -> AssumeRoleRequest {
        AssumeRoleRequest {
            caller: CallerSession::from_arn("arn:aws:iam::111122223333:role/first", "s1").unwrap(),
            session_name: "s2".into(),
            external_id: external_id.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn caller_from_role_and_session_arns() {
        let c = CallerSession::from_arn("arn:aws:iam::111122223333:role/ci/first", "s").unwrap();
        assert_eq!(
            c.assumed_role_arn,
            "arn:aws:sts::111122223333:assumed-role/first/s"
        );
        assert_eq!(c.role_arn, "arn:aws:iam::111122223333:role/ci/first");
        let c = CallerSession::from_arn(
            "arn:aws:sts::111122223333:assumed-role/first/run-1",
            "ignored",
        )
        .unwrap();
        assert_eq!(c.role_arn, "arn:aws:iam::111122223333:role/first");
        assert_eq!(
            c.assumed_role_arn,
            "arn:aws:sts::111122223333:assumed-role/first/run-1"
        );
        assert_eq!(c.account, "111122223333");
        assert!(CallerSession::from_arn("arn:aws:iam::111122223333:user/u", "s").is_none());
        assert!(CallerSession::from_arn("not an arn", "s").is_none());
    }

    #[test]
    fn external_id_and_tags_decide() {
        let policy = TrustPolicy::parse(TRUST).unwrap();
        let ok = request(Some("ext-1"));
        let ctx = assume_role_context(&ok);
        let trace = evaluate_actions(&policy, &ctx, &ok.actions());
        assert_eq!(trace.len(), 1);
        assert_eq!(trace[0].1.decision, Decision::Allow);

        let missing = request(None);
        let trace = evaluate_actions(&policy, &assume_role_context(&missing), &missing.actions());
        assert_eq!(trace[0].1.decision, Decision::ImplicitDeny);

        // Source identity without sts:SetSourceIdentity in the policy.
        let mut si = request(Some("ext-1"));
        si.source_identity = Some("alice".into());
        si.tags = vec![("team".into(), "a".into())];
        let trace = evaluate_actions(&policy, &assume_role_context(&si), &si.actions());
        let actions: Vec<&str> = trace.iter().map(|(a, _)| *a).collect();
        assert_eq!(actions, [ASSUME_ROLE, TAG_SESSION, SET_SOURCE_IDENTITY]);
        assert!(!trace[2].1.is_allowed());
    }

    #[test]
    fn another_role_is_not_the_first_role() {
        let policy = TrustPolicy::parse(TRUST).unwrap();
        let mut r = request(Some("ext-1"));
        r.caller = CallerSession::from_arn("arn:aws:iam::111122223333:role/other", "s").unwrap();
        let trace = evaluate_actions(&policy, &assume_role_context(&r), &r.actions());
        assert!(!trace[0].1.statements[0].principal_matched);
    }
}
