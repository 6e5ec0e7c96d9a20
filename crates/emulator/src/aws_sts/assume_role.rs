//! `AssumeRole`: role chaining with the credentials of a session this STS issued.
//!
//! Check order: SigV4 of the calling session (as for `GetCallerIdentity`); parameter
//! constraints (`ValidationError`, 400); the role exists and its trust policy allows the caller
//! (`AccessDenied`, 403, `User: <caller> is not authorized to perform: sts:AssumeRole on
//! resource: <role>`), then `sts:TagSession` when tags are passed and `sts:SetSourceIdentity`
//! when a source identity is; the session policy parses; `DurationSeconds` at most one hour
//! (every caller here holds role credentials, so every `AssumeRole` is role chaining) and at most
//! the role's maximum (`ValidationError`).
//!
//! The trust policy sees the caller as its assumed-role ARN (which a role-ARN principal
//! matches) with `aws:PrincipalArn` (the role), `aws:PrincipalAccount`, `aws:PrincipalTag/…`
//! (the caller's session tags), `aws:SourceIdentity` (the caller's), and from the request
//! `sts:ExternalId`, `sts:RoleSessionName`, `sts:SourceIdentity`, `aws:RequestTag/…`,
//! `aws:TagKeys` and `sts:TransitiveTagKeys`. The new session keeps the caller's source identity
//! (or takes the requested one) and its transitive tags, adds the request's tags, and marks the
//! request's `TransitiveTagKeys` (plus the caller's) as transitive.

use axum::body::Bytes;
use http::{StatusCode, request};
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_policy::aws::{
    AssumeRoleRequest, CallerSession, TrustPolicy, assume_role_context, evaluate_actions,
};
use idbridge_wire::aws_sts as wire;

use super::{
    DEFAULT_DURATION, MAX_DURATION, MAX_POLICY_CHARS, MIN_DURATION, Params, StsError, Violations,
    authenticate, issue_session_with, log_denial, packed_policy_size,
};
use crate::Emulator;
use crate::state::SessionContext;

/// The longest session a chained `AssumeRole` may ask for.
const CHAINED_MAX_DURATION: i64 = 3600;

/// At most this many session tags per request.
const MAX_TAGS: usize = 50;

/// AWS's message for a chained session over one hour.
const CHAINED_TOO_LONG: &str = "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.";

struct AssumeRoleParams<'a> {
    role_arn: &'a str,
    session_name: &'a str,
    duration: i64,
    external_id: Option<&'a str>,
    source_identity: Option<&'a str>,
    tags: Vec<(String, String)>,
    transitive_tag_keys: Vec<String>,
    policy: Option<&'a str>,
    policy_arns: usize,
}

fn session_chars(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

fn validate(params: &Params) -> Result<AssumeRoleParams<'_>, StsError> {
    let mut v = Violations::default();
    let role_arn = params.get("RoleArn");
    let session_name = params.get("RoleSessionName");
    let external_id = params.get("ExternalId");
    let source_identity = params.get("SourceIdentity");
    let policy = params.get("Policy");
    v.length("roleArn", role_arn, 20, 2048, false);
    v.length("roleSessionName", session_name, 2, 64, false);
    v.pattern(
        "roleSessionName",
        session_name,
        session_chars,
        r"[\w+=,.@-]*",
    );
    if external_id.is_some() {
        v.length("externalId", external_id, 2, 1224, false);
        v.pattern(
            "externalId",
            external_id,
            |c| session_chars(c) || c == ':' || c == '/',
            r"[\w+=,.@:\/-]*",
        );
    }
    if source_identity.is_some() {
        v.length("sourceIdentity", source_identity, 2, 64, false);
        v.pattern(
            "sourceIdentity",
            source_identity,
            session_chars,
            r"[\w+=,.@-]*",
        );
    }
    if let Some(p) = policy {
        v.length("policy", Some(p), 1, MAX_POLICY_CHARS, false);
    }
    let mut duration = DEFAULT_DURATION;
    if let Some(raw) = params.get("DurationSeconds") {
        match raw.trim().parse::<i64>() {
            Ok(d) if d < MIN_DURATION => v.0.push(format!(
                "Value '{raw}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {MIN_DURATION}"
            )),
            Ok(d) if d > MAX_DURATION => v.0.push(format!(
                "Value '{raw}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to {MAX_DURATION}"
            )),
            Ok(d) => duration = d,
            Err(_) => v.0.push(format!(
                "Value '{}' at 'durationSeconds' failed to satisfy constraint: Member must be an integer",
                crate::short(raw, 64)
            )),
        }
    }
    let mut tags = Vec::new();
    for n in 1..=MAX_TAGS + 1 {
        let key = params.get(&format!("Tags.member.{n}.Key"));
        let value = params.get(&format!("Tags.member.{n}.Value"));
        let Some(key) = key else { break };
        if n > MAX_TAGS {
            v.0.push(format!(
                "Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to {MAX_TAGS}"
            ));
            break;
        }
        v.length(&format!("tags.{n}.member.key"), Some(key), 1, 128, false);
        v.length(&format!("tags.{n}.member.value"), value, 0, 256, false);
        tags.push((key.to_owned(), value.unwrap_or_default().to_owned()));
    }
    let transitive_tag_keys: Vec<String> = (1..=MAX_TAGS)
        .map_while(|n| params.get(&format!("TransitiveTagKeys.member.{n}")))
        .map(str::to_owned)
        .collect();
    let policy_arns = params
        .starting_with("PolicyArns.member.")
        .filter(|(k, _)| k.ends_with(".arn"))
        .count();
    if let Some(e) = v.into_error() {
        return Err(e);
    }
    let (Some(role_arn), Some(session_name)) = (role_arn, session_name) else {
        return Err(StsError::bad_request(
            "ValidationError",
            "1 validation error detected",
        ));
    };
    Ok(AssumeRoleParams {
        role_arn,
        session_name,
        duration,
        external_id,
        source_identity,
        tags,
        transitive_tag_keys,
        policy,
        policy_arns,
    })
}

pub(super) fn assume_role(
    state: &Emulator,
    parts: &request::Parts,
    body: &Bytes,
    params: &Params,
    request_id: &str,
) -> Result<String, StsError> {
    let caller = authenticate(state, parts, body, "AssumeRole")?;
    let p = validate(params)?;
    let caller_arn = caller.assumed_role_arn();
    let denied = |action: &str| {
        StsError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {caller_arn} is not authorized to perform: {action} on resource: {}",
                crate::short(p.role_arn, 2048)
            ),
        )
    };
    let Some(role) = state.world.role(p.role_arn) else {
        tracing::info!(role = %p.role_arn, "AssumeRole: no such role");
        return Err(denied("sts:AssumeRole"));
    };

    // What passes on from the caller, then what the request adds.
    let inherited: Vec<(String, String)> = caller
        .context
        .tags
        .iter()
        .filter(|(k, _)| {
            caller
                .context
                .transitive_tag_keys
                .iter()
                .any(|t| t.eq_ignore_ascii_case(k))
        })
        .cloned()
        .collect();
    let request = AssumeRoleRequest {
        caller: CallerSession {
            assumed_role_arn: caller_arn.clone(),
            role_arn: caller.role_arn.clone(),
            account: caller.account().to_owned(),
            tags: caller.context.tags.clone(),
            source_identity: caller.context.source_identity.clone(),
        },
        session_name: p.session_name.to_owned(),
        external_id: p.external_id.map(str::to_owned),
        source_identity: p.source_identity.map(str::to_owned),
        tags: p.tags.clone(),
        transitive_tag_keys: p.transitive_tag_keys.clone(),
    };
    let ctx = assume_role_context(&request);
    let policy = TrustPolicy::parse(&role.trust_policy).map_err(|e| {
        tracing::warn!(role = %role.arn, error = %e, "AssumeRole: the role's trust policy does not parse");
        denied("sts:AssumeRole")
    })?;
    if let Some((action, evaluation)) = evaluate_actions(&policy, &ctx, &request.actions())
        .into_iter()
        .find(|(_, e)| !e.is_allowed())
    {
        log_denial(role, action, &evaluation);
        return Err(denied(action));
    }
    let packed_policy_size = match p.policy {
        Some(text) => Some(packed_policy_size(text)?),
        None if p.policy_arns > 0 || !p.tags.is_empty() => Some(0),
        None => None,
    };
    if p.duration > CHAINED_MAX_DURATION {
        return Err(StsError::bad_request("ValidationError", CHAINED_TOO_LONG));
    }
    if p.duration > i64::from(role.max_session_duration) {
        return Err(StsError::bad_request(
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }

    let mut tags = inherited;
    tags.extend(p.tags.iter().cloned());
    let mut transitive = caller.context.transitive_tag_keys.clone();
    transitive.extend(p.transitive_tag_keys.iter().cloned());
    let context = SessionContext {
        source_identity: caller
            .context
            .source_identity
            .or_else(|| p.source_identity.map(str::to_owned)),
        tags,
        transitive_tag_keys: transitive,
        chained: true,
    };
    let now = state.clock.now();
    let session = issue_session_with(
        state,
        &role.arn,
        p.session_name,
        now + time::Duration::seconds(p.duration),
        context,
    );
    tracing::info!(
        role = %role.arn,
        caller = %caller_arn,
        session = %session.session_name,
        access_key_id = %session.access_key_id,
        "AssumeRole: issued session"
    );
    let doc = wire::AssumeRoleResponse {
        xmlns: wire::XMLNS,
        assume_role_result: wire::AssumeRoleResult {
            assumed_role_user: wire::AssumedRoleUser {
                assumed_role_id: format!("{}:{}", session.role_id, session.session_name),
                arn: session.assumed_role_arn(),
            },
            credentials: wire::Credentials {
                access_key_id: session.access_key_id.clone(),
                secret_access_key: session.secret_access_key.expose_secret().to_owned(),
                session_token: session.session_token.expose_secret().to_owned(),
                expiration: rfc3339_seconds(session.expires_at),
            },
            packed_policy_size,
            source_identity: session.context.source_identity.clone(),
        },
        response_metadata: wire::ResponseMetadata {
            request_id: request_id.to_owned(),
        },
    };
    wire::to_xml(&doc).map_err(|_| {
        StsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
        )
    })
}
