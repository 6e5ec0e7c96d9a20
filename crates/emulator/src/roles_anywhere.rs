//! The emulated IAM Roles Anywhere data plane: `POST /sessions` (`CreateSession`).
//!
//! A workload signs the request with its certificate's private key (`AWS4-X509-RSA-SHA256` or
//! `AWS4-X509-ECDSA-SHA256`, [`idbridge_wire::x509_sigv4`]) and gets role session credentials.
//! The three ARNs are read from the query string (as the credential helper sends them) or the
//! JSON body (as AWS's documentation shows them). Checks, in this order, with the answer at each
//! step (status, `X-Amzn-ErrorType`, JSON `{"message"}`):
//!
//! | step | refused with |
//! |---|---|
//! | body ≤ 64 KiB, JSON object; `profileArn`, `roleArn`, `trustAnchorArn` present; `durationSeconds` 900–43200 | 400 `ValidationException` |
//! | `Authorization` of a certificate algorithm, credential scope service `rolesanywhere`, `X-Amz-Date` within 15 minutes and of the scope's date, `host`, `x-amz-date` and `x-amz-x509` signed | 403 `AccessDeniedException` |
//! | `X-Amz-X509` a certificate whose serial is the scope's credential; the signature verifies with its key (aws-lc-rs through rustls-webpki) | 403 `AccessDeniedException` |
//! | the trust anchor exists in the region and is enabled; the scope's region is the anchor's | 403 `AccessDeniedException` |
//! | the chain (`X-Amz-X509-Chain` intermediates) leads to a CA of the anchor's bundle, every certificate valid now, none on the anchor's enabled CRLs | 403 `AccessDeniedException` |
//! | the profile exists, is enabled, and lists the role; the role exists | 404 `ResourceNotFoundException` / 403 |
//! | the role's trust policy allows `sts:AssumeRole`, `sts:TagSession` and `sts:SetSourceIdentity` for `rolesanywhere.amazonaws.com`, with `aws:PrincipalTag/x509Subject/…`, `x509Issuer/…`, `x509SAN/DNS`, `x509SAN/URI`, `x509SAN/Name/…` (also as `aws:RequestTag/…`), `aws:SourceArn` (the anchor), `aws:SourceAccount`, `aws:SourceIdentity` and `sts:SourceIdentity` (the subject CN) in the context ([`idbridge_policy::aws`]) | 403 `AccessDeniedException` |
//! | `roleSessionName` only when the profile accepts one; the duration within the profile's and the role's maximum | 400 `ValidationException` |
//!
//! On success: 201 with `credentialSet[0]` (the session is an ordinary STS session of the
//! emulator, so GetCallerIdentity and SigV4 verification accept it), `subjectArn`. The session
//! name is the certificate serial in hex unless a `roleSessionName` was accepted; the source
//! identity is the subject CN.
//!
//! World file (`[roles_anywhere]`): `[[roles_anywhere.trust_anchor]]` with `arn`, `enabled`
//! (default true) and the CA bundle as `certificate_bundle_pem` or `certificate_bundle_file`, or
//! `spiffe_trust_domain` for the X.509 CA of the world's `[spiffe]` trust domain;
//! `[[roles_anywhere.profile]]` with `arn`, `role_arns`, `duration_seconds` (default 3600),
//! `enabled`, `accept_role_session_name`; `[[roles_anywhere.crl]]` with `trust_anchor_arn`,
//! `enabled` and `crl_pem` or `crl_file` (PEM or DER). Calls are counted as
//! `roles_anywhere.CreateSession`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{StatusCode, request};
use idbridge_core::timefmt::{parse_amz_date, rfc3339_seconds};
use idbridge_policy::aws::{
    RolesAnywhereRequest, TrustPolicy, evaluate_actions, roles_anywhere_context,
};
use idbridge_wire::x509_sigv4::{self as wire, Algorithm, Authorization};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Emulator;
use crate::sigv4::MAX_CLOCK_SKEW;

/// The service principal a role's trust policy names to be assumable through Roles Anywhere.
pub const SERVICE_PRINCIPAL: &str = idbridge_policy::aws::ROLES_ANYWHERE_PRINCIPAL;

/// Largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// At most this many intermediates are read from `X-Amz-X509-Chain` (AWS allows a chain depth
/// of five).
const MAX_INTERMEDIATES: usize = 5;

/// `durationSeconds` bounds and the profile default.
const MIN_DURATION: i64 = 900;
const MAX_DURATION: i64 = 43_200;

fn default_true() -> bool {
    true
}
fn default_duration() -> u32 {
    3600
}

/// The world's `[roles_anywhere]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesAnywhereConfig {
    /// Trust anchors.
    #[serde(default, rename = "trust_anchor")]
    pub trust_anchors: Vec<TrustAnchorConfig>,
    /// Profiles.
    #[serde(default, rename = "profile")]
    pub profiles: Vec<ProfileConfig>,
    /// Certificate revocation lists, each attached to a trust anchor.
    #[serde(default, rename = "crl")]
    pub crls: Vec<CrlConfig>,
}

/// A trust anchor of type `CERTIFICATE_BUNDLE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustAnchorConfig {
    /// `arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID`.
    pub arn: String,
    /// Whether the anchor is enabled.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The CA bundle, PEM.
    #[serde(default)]
    pub certificate_bundle_pem: Option<String>,
    /// The CA bundle file, relative to the world file.
    #[serde(default)]
    pub certificate_bundle_file: Option<PathBuf>,
    /// Trust the X.509 CA of the world's `[spiffe]` trust domain of this name instead.
    #[serde(default)]
    pub spiffe_trust_domain: Option<String>,
    /// The bundle's certificates, DER (filled when the world is loaded).
    #[serde(skip)]
    pub resolved_cas: Vec<Vec<u8>>,
}

/// A profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// `arn:aws:rolesanywhere:REGION:ACCOUNT:profile/ID`.
    pub arn: String,
    /// Roles a session may be for.
    pub role_arns: Vec<String>,
    /// Session duration (900–43200), the longest a request may ask for.
    #[serde(default = "default_duration")]
    pub duration_seconds: u32,
    /// Whether the profile is enabled.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Whether a request may name its role session.
    #[serde(default)]
    pub accept_role_session_name: bool,
}

/// A CRL imported into Roles Anywhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlConfig {
    /// The trust anchor whose certificates it revokes.
    pub trust_anchor_arn: String,
    /// Whether the CRL is in force.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The CRL, PEM.
    #[serde(default)]
    pub crl_pem: Option<String>,
    /// The CRL file (PEM or DER), relative to the world file.
    #[serde(default)]
    pub crl_file: Option<PathBuf>,
    /// The CRL, DER (filled when the world is loaded).
    #[serde(skip)]
    pub resolved_der: Vec<u8>,
}

/// The parts of a Roles Anywhere ARN.
struct RaArn<'a> {
    region: &'a str,
    account: &'a str,
}

fn parse_arn<'a>(arn: &'a str, kind: &str) -> Option<RaArn<'a>> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, _partition, service, region, account, resource] = parts[..] else {
        return None;
    };
    let (k, id) = resource.split_once('/')?;
    (prefix == "arn"
        && service == "rolesanywhere"
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && k == kind
        && !id.is_empty())
    .then_some(RaArn { region, account })
}

/// Loads the section's files and checks it against the rest of the world.
pub(crate) fn resolve_world(world: &mut crate::World, base: Option<&Path>) -> Result<(), String> {
    let read = |p: &Path| -> Result<Vec<u8>, String> {
        let full = base.map(|b| b.join(p)).unwrap_or_else(|| p.to_owned());
        std::fs::read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
    };
    let roles: Vec<String> = world.aws_roles.iter().map(|r| r.arn.clone()).collect();
    let spiffe_td = world.spiffe.as_ref().map(|s| s.trust_domain.clone());
    let ra = &mut world.roles_anywhere;
    for (i, anchor) in ra.trust_anchors.iter_mut().enumerate() {
        let at = format!("roles_anywhere.trust_anchor[{i}] ({})", anchor.arn);
        if parse_arn(&anchor.arn, "trust-anchor").is_none() {
            return Err(format!(
                "{at}: field `arn`: not a Roles Anywhere trust anchor ARN"
            ));
        }
        let pem = match (
            &anchor.certificate_bundle_pem,
            &anchor.certificate_bundle_file,
            &anchor.spiffe_trust_domain,
        ) {
            (Some(pem), None, None) => pem.as_bytes().to_vec(),
            (None, Some(file), None) => read(file).map_err(|e| format!("{at}: {e}"))?,
            (None, None, Some(td)) if spiffe_td.as_ref() == Some(td) => continue,
            (None, None, Some(td)) => {
                return Err(format!(
                    "{at}: field `spiffe_trust_domain`: {td:?} is not the world's [spiffe] trust domain"
                ));
            }
            _ => {
                return Err(format!(
                    "{at}: set exactly one of `certificate_bundle_pem`, `certificate_bundle_file`, `spiffe_trust_domain`"
                ));
            }
        };
        let cas: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{at}: the CA bundle is not PEM"))?;
        if cas.is_empty() {
            return Err(format!("{at}: the CA bundle holds no certificate"));
        }
        for ca in &cas {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(ca.as_slice()))
                .map_err(|e| format!("{at}: a CA certificate does not parse: {e}"))?;
        }
        anchor.resolved_cas = cas;
    }
    for (i, profile) in ra.profiles.iter().enumerate() {
        let at = format!("roles_anywhere.profile[{i}] ({})", profile.arn);
        if parse_arn(&profile.arn, "profile").is_none() {
            return Err(format!(
                "{at}: field `arn`: not a Roles Anywhere profile ARN"
            ));
        }
        if !(900..=43_200).contains(&profile.duration_seconds) {
            return Err(format!(
                "{at}: field `duration_seconds` must be 900..=43200"
            ));
        }
        if let Some(r) = profile.role_arns.iter().find(|r| !roles.contains(r)) {
            return Err(format!("{at}: field `role_arns`: unknown aws_role {r:?}"));
        }
    }
    let anchors: Vec<String> = ra.trust_anchors.iter().map(|a| a.arn.clone()).collect();
    for (i, crl) in ra.crls.iter_mut().enumerate() {
        let at = format!("roles_anywhere.crl[{i}]");
        if !anchors.contains(&crl.trust_anchor_arn) {
            return Err(format!(
                "{at}: field `trust_anchor_arn`: unknown trust anchor {:?}",
                crl.trust_anchor_arn
            ));
        }
        let bytes = match (&crl.crl_pem, &crl.crl_file) {
            (Some(pem), None) => pem.as_bytes().to_vec(),
            (None, Some(file)) => read(file).map_err(|e| format!("{at}: {e}"))?,
            _ => return Err(format!("{at}: set exactly one of `crl_pem`, `crl_file`")),
        };
        let der = match CertificateRevocationListDer::from_pem_slice(&bytes) {
            Ok(der) => der.to_vec(),
            Err(_) => bytes,
        };
        OwnedCertRevocationList::from_der(&der)
            .map_err(|e| format!("{at}: not a certificate revocation list: {e}"))?;
        crl.resolved_der = der;
    }
    Ok(())
}

/// The router serving `POST /sessions`.
pub fn router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/sessions", post(handle))
        .with_state(state)
}

/// A Roles Anywhere error: status, `X-Amzn-ErrorType`, message.
#[derive(Debug)]
struct RaError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl RaError {
    fn validation(message: impl Into<String>) -> Self {
        RaError {
            status: StatusCode::BAD_REQUEST,
            code: "ValidationException",
            message: message.into(),
        }
    }

    fn denied(message: impl Into<String>) -> Self {
        RaError {
            status: StatusCode::FORBIDDEN,
            code: "AccessDeniedException",
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        RaError {
            status: StatusCode::NOT_FOUND,
            code: "ResourceNotFoundException",
            message: message.into(),
        }
    }
}

fn json_response(
    status: StatusCode,
    request_id: &str,
    error_type: Option<&'static str>,
    body: serde_json::Value,
) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    if let Some(t) = error_type {
        headers.insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(t),
        );
    }
    response
}

async fn handle(State(state): State<Arc<Emulator>>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    state.bump("roles_anywhere.CreateSession");
    let (parts, body) = req.into_parts();
    let result = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => create_session(&state, &parts, &body),
        Err(_) => Err(RaError::validation("Request body too large")),
    };
    match result {
        Ok(doc) => json_response(StatusCode::CREATED, &request_id, None, doc),
        Err(e) => {
            tracing::info!(code = e.code, message = %e.message, "CreateSession refused");
            json_response(
                e.status,
                &request_id,
                Some(e.code),
                serde_json::json!({ "message": e.message }),
            )
        }
    }
}

/// The request body's members.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    profile_arn: Option<String>,
    role_arn: Option<String>,
    trust_anchor_arn: Option<String>,
    duration_seconds: Option<i64>,
    role_session_name: Option<String>,
    #[serde(rename = "sessionName")]
    _session_name: Option<String>,
    #[serde(rename = "instanceProperties")]
    _instance_properties: Option<serde_json::Map<String, serde_json::Value>>,
}

fn header<'h>(parts: &'h request::Parts, name: &str) -> Option<&'h str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

fn decode_cert(b64: &str) -> Option<Vec<u8>> {
    STANDARD.decode(b64.trim()).ok()
}

fn create_session(
    state: &Emulator,
    parts: &request::Parts,
    body: &[u8],
) -> Result<serde_json::Value, RaError> {
    // 1. Parameters.
    let parsed: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|_| RaError::validation("The request body is not a valid JSON object"))?
    };
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let param = |name: &str, from_body: &Option<String>| -> Result<String, RaError> {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| from_body.clone())
            .ok_or_else(|| RaError::validation(format!("1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null")))
    };
    let profile_arn = param("profileArn", &parsed.profile_arn)?;
    let role_arn = param("roleArn", &parsed.role_arn)?;
    let anchor_arn = param("trustAnchorArn", &parsed.trust_anchor_arn)?;
    if let Some(d) = parsed.duration_seconds
        && !(MIN_DURATION..=MAX_DURATION).contains(&d)
    {
        return Err(RaError::validation(format!(
            "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value between {MIN_DURATION} and {MAX_DURATION}"
        )));
    }

    // 2. The signature's shape.
    let auth = header(parts, "authorization")
        .ok_or_else(|| RaError::denied("Missing Authentication Token"))?;
    let auth = Authorization::parse(auth)
        .map_err(|e| RaError::denied(format!("Authorization header is invalid: {e}")))?;
    if auth.service != wire::SERVICE {
        return Err(RaError::denied(format!(
            "Credential should be scoped to correct service: '{}'.",
            wire::SERVICE
        )));
    }
    for required in ["host", "x-amz-date", wire::X509_HEADER] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(RaError::denied(format!(
                "Header '{required}' must be signed"
            )));
        }
    }
    let amz_date =
        header(parts, "x-amz-date").ok_or_else(|| RaError::denied("Missing X-Amz-Date header"))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| RaError::denied("X-Amz-Date is not in the form YYYYMMDD'T'HHMMSS'Z'"))?;
    let now = state.clock.now();
    if (now - signed_at).abs() > MAX_CLOCK_SKEW {
        return Err(RaError::denied(
            "Signature expired or not yet valid (15 min. skew)",
        ));
    }
    if amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(RaError::denied(
            "Credential scope date does not match X-Amz-Date",
        ));
    }

    // 3. The signing certificate and the signature.
    let leaf_der = header(parts, wire::X509_HEADER)
        .and_then(decode_cert)
        .ok_or_else(|| RaError::denied("Invalid X-Amz-X509 certificate"))?;
    let (_, leaf) = X509Certificate::from_der(&leaf_der)
        .map_err(|_| RaError::denied("Invalid X-Amz-X509 certificate"))?;
    if leaf.tbs_certificate.serial.to_string() != auth.serial {
        return Err(RaError::denied(
            "The credential does not match the signing certificate's serial number",
        ));
    }
    let intermediates: Vec<CertificateDer<'static>> = match header(parts, wire::X509_CHAIN_HEADER) {
        None => Vec::new(),
        Some(chain) => {
            let items: Vec<&str> = chain.split(',').collect();
            if items.len() > MAX_INTERMEDIATES {
                return Err(RaError::denied("Certificate chain is too long"));
            }
            items
                .into_iter()
                .map(|c| decode_cert(c).map(CertificateDer::from))
                .collect::<Option<_>>()
                .ok_or_else(|| RaError::denied("Invalid X-Amz-X509-Chain certificate"))?
        }
    };
    let leaf_cert_der = CertificateDer::from(leaf_der.as_slice());
    let end_entity = EndEntityCert::try_from(&leaf_cert_der)
        .map_err(|_| RaError::denied("Invalid X-Amz-X509 certificate"))?;
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let canonical = wire::canonical_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &headers,
        &auth.signed_headers,
        body,
    );
    let to_sign = wire::string_to_sign(auth.algorithm, amz_date, &auth.region, &canonical);
    let signature =
        hex::decode(&auth.signature).map_err(|_| RaError::denied("Signature is invalid"))?;
    let algorithms: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = match auth.algorithm
    {
        Algorithm::Rsa => &[webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256],
        Algorithm::Ecdsa => &[
            webpki::aws_lc_rs::ECDSA_P256_SHA256,
            webpki::aws_lc_rs::ECDSA_P384_SHA256,
        ],
    };
    if !algorithms.iter().any(|alg| {
        end_entity
            .verify_signature(*alg, to_sign.as_bytes(), &signature)
            .is_ok()
    }) {
        return Err(RaError::denied(
            "The request signature we calculated does not match the signature you provided.",
        ));
    }

    // 4. The trust anchor.
    let ra = &state.world.roles_anywhere;
    let anchor = ra
        .trust_anchors
        .iter()
        .find(|a| a.arn == anchor_arn)
        .filter(|a| a.enabled)
        .ok_or_else(|| RaError::denied("Untrusted signing certificate"))?;
    let anchor_parts = parse_arn(&anchor.arn, "trust-anchor")
        .ok_or_else(|| RaError::denied("Untrusted signing certificate"))?;
    if anchor_parts.region != auth.region {
        return Err(RaError::denied(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            crate::short(&auth.region, 32)
        )));
    }

    // 5. The chain, validity and revocation.
    let spiffe_ca = anchor
        .spiffe_trust_domain
        .as_ref()
        .and(state.spiffe_ca.as_ref())
        .map(|ca| &ca.cert_der);
    let ca_ders: Vec<CertificateDer<'_>> = anchor
        .resolved_cas
        .iter()
        .chain(spiffe_ca)
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let anchors: Vec<TrustAnchor<'_>> = ca_ders
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let crls: Vec<CertRevocationList<'_>> = ra
        .crls
        .iter()
        .filter(|c| c.enabled && c.trust_anchor_arn == anchor.arn)
        .filter_map(|c| OwnedCertRevocationList::from_der(&c.resolved_der).ok())
        .map(CertRevocationList::from)
        .collect();
    let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
    let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
        b.with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Allow)
            .with_expiration_policy(ExpirationPolicy::Ignore)
            .build()
    });
    let unix_now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            unix_now,
            webpki::KeyUsage::client_auth(),
            revocation,
            None,
        )
        .map_err(|e| {
            tracing::info!(error = %e, trust_anchor = %anchor.arn, "CreateSession: certificate chain rejected");
            RaError::denied(match e {
                webpki::Error::CertExpired { .. } => "Certificate is expired",
                webpki::Error::CertNotValidYet { .. } => "Certificate is not yet valid",
                webpki::Error::CertRevoked => "Certificate is revoked",
                _ => "Untrusted signing certificate",
            })
        })?;

    // 6. The profile and the role.
    let profile = ra
        .profiles
        .iter()
        .find(|p| p.arn == profile_arn && p.enabled)
        .ok_or_else(|| RaError::not_found("Profile not found"))?;
    if parse_arn(&profile.arn, "profile").is_some_and(|p| p.account != anchor_parts.account) {
        return Err(RaError::denied(
            "Profile and trust anchor are in different accounts",
        ));
    }
    if !profile.role_arns.contains(&role_arn) {
        return Err(RaError::denied(
            "Role is not in the profile's list of roles",
        ));
    }
    let role = state
        .world
        .role(&role_arn)
        .ok_or_else(|| RaError::not_found("Role not found"))?;

    // 7. The role's trust policy.
    let request = RolesAnywhereRequest::from_certificate(&anchor.arn, &leaf);
    let ctx = roles_anywhere_context(&request);
    let policy = TrustPolicy::parse(&role.trust_policy)
        .map_err(|_| RaError::denied("Unable to assume role"))?;
    if let Some((action, _)) = evaluate_actions(&policy, &ctx, &request.actions())
        .into_iter()
        .find(|(_, e)| !e.is_allowed())
    {
        tracing::info!(role = %role.arn, action, "CreateSession: the role's trust policy does not allow it");
        return Err(RaError::denied(format!(
            "Unable to assume role for arn {}: not authorized to perform {action}",
            role.arn
        )));
    }

    // 8. Session name and duration.
    let serial_hex = leaf.tbs_certificate.serial.to_str_radix(16);
    let session_name = match &parsed.role_session_name {
        Some(_) if !profile.accept_role_session_name => {
            return Err(RaError::validation(
                "The profile does not accept a role session name",
            ));
        }
        Some(name) => {
            let ok = (2..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=,.@-_".contains(&b));
            if !ok {
                return Err(RaError::validation("Invalid roleSessionName"));
            }
            name.clone()
        }
        None => serial_hex,
    };
    let duration = parsed
        .duration_seconds
        .unwrap_or(i64::from(profile.duration_seconds));
    if duration > i64::from(profile.duration_seconds)
        || duration > i64::from(role.max_session_duration)
    {
        return Err(RaError::validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }

    let context = crate::state::SessionContext {
        source_identity: request.common_name.clone(),
        tags: request.tags.clone(),
        ..Default::default()
    };
    let session = crate::aws_sts::issue_session_with(
        state,
        &role.arn,
        &session_name,
        now + time::Duration::seconds(duration),
        context,
    );
    tracing::info!(role = %role.arn, session = %session.session_name, access_key_id = %session.access_key_id, "CreateSession: issued session");
    Ok(serde_json::json!({
        "credentialSet": [{
            "assumedRoleUser": {
                "arn": session.assumed_role_arn(),
                "assumedRoleId": format!("{}:{}", session.role_id, session.session_name),
            },
            "credentials": {
                "accessKeyId": session.access_key_id,
                "secretAccessKey": session.secret_access_key.expose_secret(),
                "sessionToken": session.session_token.expose_secret(),
                "expiration": rfc3339_seconds(session.expires_at),
            },
            "packedPolicySize": 0,
            "roleArn": role.arn,
            "sourceIdentity": request.common_name.unwrap_or_default(),
        }],
        "subjectArn": format!(
            "arn:aws:rolesanywhere:{}:{}:subject/{}",
            anchor_parts.region,
            anchor_parts.account,
            subject_id(&leaf_der)
        ),
    }))
}

/// A stable subject id per certificate, UUID-shaped like AWS's.
fn subject_id(leaf_der: &[u8]) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(leaf_der);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests;
