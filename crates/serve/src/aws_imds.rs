//! The EC2 instance metadata (IMDSv2) frontend: one route's AWS credentials as an instance role.
//!
//! Point botocore, the AWS CLI and the other SDKs at it with
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT/`; google-auth's AWS source with
//! `credential_source.url`/`region_url`/`imdsv2_session_token_url`. Wire behaviour:
//!
//! * `PUT /latest/api/token` with `x-aws-ec2-metadata-token-ttl-seconds: 1..=21600` answers a
//!   session token and **echoes the TTL header** (aws-config fails without it). A missing or
//!   invalid TTL is 400; a PUT carrying `X-Forwarded-For` is 403 (tokens are not handed through
//!   proxies); other methods are 405.
//! * With `require_token = true` (the default: IMDSv2 only) every `GET` needs a live
//!   `x-aws-ec2-metadata-token`; missing, unknown or expired is 401 (clients then fetch a new
//!   token). With `require_token = false` a GET without the header is served (IMDSv1), but a
//!   header that is present must still be live.
//! * `/latest/meta-data/iam/security-credentials/` (with or without the slash) lists the role
//!   name, with no trailing newline (google-auth uses the body verbatim);
//!   `…/security-credentials/ROLE` answers `{"Code":"Success","LastUpdated","Type":"AWS-HMAC",
//!   "AccessKeyId","SecretAccessKey","Token","Expiration"}` with `YYYY-MM-DDTHH:MM:SSZ` times;
//!   another role is 404. `…/security-credentials-extended/` is 404 so newer SDKs fall back.
//! * `placement/availability-zone` (no trailing newline: clients cut the last character to get
//!   the region), `placement/region`, `instance-id`, `instance-type`, `ami-id`, `hostname`,
//!   `local-ipv4`, `iam/info` (the instance profile named after the role), `services/`,
//!   `/latest/dynamic/instance-identity/document` (region, zone, instance and account ids:
//!   aws-sdk-go v1 and v2 read the region only from it), and directory listings. The tree, the
//!   request rules and the documents are [`idbridge_wire::aws_imds`]'s, shared with the
//!   emulator's instance.
//! * Data is `text/plain` as EC2 serves it, with `Server: EC2ws`.
//!
//! A caller not allowed to use the route gets 403 `{"Code":"AccessDenied","Message"}` naming its
//! uid and the route. A route failing transiently is 503; a permanent failure is EC2's own form,
//! HTTP 200 with `{"Code":"<error code>","Message","LastUpdated"}` and no keys.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use idbridge_core::Credential;
use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_wire::aws_imds::{
    self as imds_wire, Admitted, Found, IamInfo, Instance, Refused, RoleCredentials, RoleFailure,
};
use sha2::{Digest, Sha256};

use crate::Frontend;
use crate::broker::{Broker, CredentialKey, Refusal};
use crate::caller::Peer;
use crate::imds_tokens::TokenStore;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use idbridge_broker::ConfigError;
use idbridge_broker::config::{RouteConfig, Yields};
use idbridge_core::SecretString;
use idbridge_core::env;
use serde::Deserialize;
use toml::Spanned;

use crate::ServeConfig;
use crate::config::{Listen, route_role};
use crate::frontend::{Configured, Kind, Section};

/// The kind, registered in [`crate::frontend::KINDS`].
pub static KIND: AwsImds = AwsImds;

/// `[serve.aws_imds]`.
#[derive(Debug)]
pub struct AwsImds;

impl Kind for AwsImds {
    fn name(&self) -> &'static str {
        "aws_imds"
    }

    fn section(&self) -> &'static str {
        "[serve.aws_imds]"
    }

    fn title(&self) -> &'static str {
        "EC2 IMDSv2"
    }

    fn frontend(&self) -> Frontend {
        Frontend::AwsImds
    }

    fn listener_name(&self) -> String {
        "the IMDS frontend".to_owned()
    }

    fn parse(&self, s: Section<'_, '_>) -> Result<Arc<dyn Configured>, ConfigError> {
        let raw = s.deserialize_as_file::<RawImds>()?;
        Ok(Arc::new(parse_imds(&s, raw)?))
    }
}

impl Configured for ImdsConfig {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }

    fn listen(&self) -> &Listen {
        &self.listen
    }

    fn routes(&self) -> Vec<String> {
        vec![self.route.clone()]
    }

    fn router(&self, broker: Arc<Broker>) -> Router {
        router(broker, self.clone())
    }

    /// With `ipv6 = true`, `[::1]` at the IPv4 listener's port.
    fn more_listeners(&self, first: Option<SocketAddr>) -> Vec<(SocketAddr, String)> {
        match (self.ipv6, first) {
            (true, Some(a)) => vec![(
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port()),
                "the IMDS frontend (IPv6)".to_owned(),
            )],
            _ => Vec::new(),
        }
    }

    fn env(&self, base: &str) -> Vec<(&'static str, SecretString)> {
        vec![(
            env::AWS_EC2_METADATA_SERVICE_ENDPOINT,
            SecretString::new(format!("{base}/")),
        )]
    }
}

impl ServeConfig {
    /// The IMDSv2 frontend, when configured.
    pub fn aws_imds(&self) -> Option<&ImdsConfig> {
        self.frontend()
    }
}

/// The instance id IMDS shows when none is configured: obviously not a real instance.
pub const DEFAULT_INSTANCE_ID: &str = "i-00000000000000000";
/// The region IMDS shows when neither the config nor the route names one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The identity document's `accountId` when the route names no role.
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";
/// `instance-type` when none is configured.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";
/// `ami-id` when none is configured: obviously not a real image.
pub const DEFAULT_IMAGE_ID: &str = "ami-00000000000000000";

/// A validated `[serve.aws_imds]`.
#[derive(Debug, Clone)]
pub struct ImdsConfig {
    /// Where it listens.
    pub listen: Listen,
    /// Also listen on `[::1]` at the same port.
    pub ipv6: bool,
    /// The route (must yield AWS credentials).
    pub route: String,
    /// The role name listed at `security-credentials/`.
    pub role_name: String,
    /// IMDSv2 only: every GET needs a session token.
    pub require_token: bool,
    /// `placement/availability-zone`.
    pub availability_zone: String,
    /// `placement/region`.
    pub region: String,
    /// `instance-id`.
    pub instance_id: String,
    /// The identity document's `accountId`.
    pub account_id: String,
    /// `instance-type`.
    pub instance_type: String,
    /// `ami-id` (the document's `imageId`).
    pub image_id: String,
    /// `local-ipv4` (the document's `privateIp`).
    pub private_ip: String,
    /// `hostname` and `local-hostname`.
    pub hostname: String,
    /// The document's `architecture`.
    pub architecture: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImds {
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    socket: Option<Spanned<PathBuf>>,
    #[serde(default)]
    ipv6: Option<Spanned<bool>>,
    route: Spanned<String>,
    #[serde(default)]
    role_name: Option<Spanned<String>>,
    #[serde(default)]
    require_token: Option<bool>,
    #[serde(default)]
    availability_zone: Option<Spanned<String>>,
    #[serde(default)]
    region: Option<Spanned<String>>,
    #[serde(default)]
    instance_id: Option<Spanned<String>>,
    #[serde(default)]
    account_id: Option<Spanned<String>>,
    #[serde(default)]
    instance_type: Option<Spanned<String>>,
    #[serde(default)]
    image_id: Option<Spanned<String>>,
    #[serde(default)]
    private_ip: Option<Spanned<String>>,
    #[serde(default)]
    hostname: Option<Spanned<String>>,
}

/// The identity-document fields of `[serve.aws_imds]`, validated.
struct ImdsDocument {
    account_id: String,
    instance_type: String,
    image_id: String,
    private_ip: String,
    hostname: Option<String>,
    architecture: String,
}

fn parse_imds(s: &Section<'_, '_>, raw: Spanned<RawImds>) -> Result<ImdsConfig, ConfigError> {
    const S: &str = "[serve.aws_imds]";
    let span = raw.span();
    let i = raw.into_inner();
    let ipv6_span = i.ipv6.as_ref().map(Spanned::span);
    let ipv6 = i.ipv6.as_ref().is_some_and(|b| *b.get_ref());
    let listen = s.listen(i.port.clone(), i.socket.clone())?;
    if ipv6 && matches!(listen, Listen::Socket(_)) {
        return Err(s.err(
            ipv6_span.unwrap_or(span),
            format!("{S} field `ipv6`: only for a TCP `port`, not a `socket`"),
        ));
    }
    let route = s.route(S, "route", &i.route, Yields::AwsCredentials)?;
    let (arn_role, route_region) = match route_role(route) {
        Some(role) => (
            Some(role.arn.name().to_owned()),
            role.region.map(str::to_owned),
        ),
        None => (None, None),
    };
    let role_name = match &i.role_name {
        Some(r) => {
            let name = r.get_ref();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
            {
                return Err(s.err(
                    r.span(),
                    format!(
                        "{S} field `role_name`: {name:?} must be 1–64 characters of \
                             [A-Za-z0-9+=,.@_-]"
                    ),
                ));
            }
            name.clone()
        }
        None => arn_role.unwrap_or_else(|| "idbridge".to_owned()),
    };
    let region_of = |az: &str| {
        az.strip_suffix(|c: char| c.is_ascii_lowercase())
            .map(str::to_owned)
    };
    let (availability_zone, region) = match (&i.availability_zone, &i.region) {
        (Some(az), region) => {
            let Some(from_az) = region_of(az.get_ref()).filter(|r| !r.is_empty()) else {
                return Err(s.err(
                    az.span(),
                    format!(
                        "{S} field `availability_zone`: {:?} must end in a zone letter \
                             (us-east-1a); clients cut it off to get the region",
                        az.get_ref()
                    ),
                ));
            };
            let region = region.as_ref().map_or(from_az, |r| r.get_ref().clone());
            (az.get_ref().clone(), region)
        }
        (None, Some(r)) => (format!("{}a", r.get_ref()), r.get_ref().clone()),
        (None, None) => {
            let r = route_region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
            (format!("{r}a"), r)
        }
    };
    let instance_id = match &i.instance_id {
        Some(id) => {
            let hex = id.get_ref().strip_prefix("i-").unwrap_or_default();
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(s.err(
                    id.span(),
                    format!(
                        "{S} field `instance_id`: {:?} is not an instance id (i-<hex>)",
                        id.get_ref()
                    ),
                ));
            }
            id.get_ref().clone()
        }
        None => DEFAULT_INSTANCE_ID.to_owned(),
    };
    let doc = imds_document(s, &i, route)?;
    let hostname = doc
        .hostname
        .unwrap_or_else(|| Instance::default_hostname(&doc.private_ip, &region));
    Ok(ImdsConfig {
        listen,
        ipv6,
        route: i.route.into_inner(),
        role_name,
        require_token: i.require_token.unwrap_or(true),
        availability_zone,
        region,
        instance_id,
        account_id: doc.account_id,
        instance_type: doc.instance_type,
        image_id: doc.image_id,
        private_ip: doc.private_ip,
        hostname,
        architecture: doc.architecture,
    })
}

/// The identity-document fields of `[serve.aws_imds]`: `account_id` (default: the route
/// role's account), `instance_type` (`t3.micro`), `image_id`
/// ([`DEFAULT_IMAGE_ID`]), `private_ip` (`127.0.0.1`: where clients reach the daemon),
/// `hostname` (EC2's form for the private IP), and the architecture of this host.
fn imds_document(
    s: &Section<'_, '_>,
    i: &RawImds,
    route: &RouteConfig,
) -> Result<ImdsDocument, ConfigError> {
    const S: &str = "[serve.aws_imds]";
    let check = |v: &Option<Spanned<String>>,
                 field: &str,
                 ok: &dyn Fn(&str) -> bool,
                 what: &str,
                 default: String|
     -> Result<String, ConfigError> {
        match v {
            Some(x) if !ok(x.get_ref()) => Err(s.err(
                x.span(),
                format!("{S} field `{field}`: {:?} is not {what}", x.get_ref()),
            )),
            Some(x) => Ok(x.get_ref().clone()),
            None => Ok(default),
        }
    };
    let role_account = route_role(route).map(|role| role.arn.account().to_owned());
    let account_id = check(
        &i.account_id,
        "account_id",
        &|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()),
        "an AWS account id (12 digits)",
        role_account.unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned()),
    )?;
    let instance_type = check(
        &i.instance_type,
        "instance_type",
        &|t| {
            t.split_once('.')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        },
        "an instance type like t3.micro",
        DEFAULT_INSTANCE_TYPE.to_owned(),
    )?;
    let image_id = check(
        &i.image_id,
        "image_id",
        &|a| {
            a.strip_prefix("ami-")
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        },
        "an image id (ami-<hex>)",
        DEFAULT_IMAGE_ID.to_owned(),
    )?;
    let private_ip = check(
        &i.private_ip,
        "private_ip",
        &|a| a.parse::<IpAddr>().is_ok(),
        "an IP address",
        Ipv4Addr::LOCALHOST.to_string(),
    )?;
    let hostname = match &i.hostname {
        Some(h) => Some(check(
            &i.hostname,
            "hostname",
            &|h| {
                !h.is_empty()
                    && h.len() <= 253
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            },
            "a host name",
            h.get_ref().clone(),
        )?),
        None => None,
    };
    let architecture = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "i386",
        _ => "x86_64",
    }
    .to_owned();
    Ok(ImdsDocument {
        account_id,
        instance_type,
        image_id,
        private_ip,
        hostname,
        architecture,
    })
}

/// Live session tokens kept at most (and per caller: [`crate::imds_tokens`]).
pub use crate::imds_tokens::{MAX_LIVE_TOKENS, MAX_TOKENS_PER_CALLER};
pub use idbridge_wire::aws_imds::{MAX_TOKEN_TTL, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER};

#[derive(Debug)]
struct ImdsState {
    broker: Arc<Broker>,
    config: ImdsConfig,
    /// The instance the tree describes (its launch time is the daemon's start).
    instance: Instance,
    /// The live session tokens, with a budget per caller.
    tokens: TokenStore,
}

/// The IMDSv2 router for `config`, backed by `broker`.
pub fn router(broker: Arc<Broker>, config: ImdsConfig) -> Router {
    let instance = instance(&config, broker.clock().now());
    let state = Arc::new(ImdsState {
        broker: Arc::clone(&broker),
        instance,
        config,
        tokens: TokenStore::default(),
    });
    let r = Router::new()
        .fallback(handle)
        .with_state(state)
        .layer(middleware::from_fn(crate::http::limit_headers))
        .layer(middleware::map_response(decorate));
    crate::http::observe(r, Frontend::AwsImds, broker)
}

/// The instance of `config`, launched at `started`.
fn instance(c: &ImdsConfig, started: time::OffsetDateTime) -> Instance {
    Instance {
        instance_id: c.instance_id.clone(),
        account_id: c.account_id.clone(),
        availability_zone: c.availability_zone.clone(),
        region: c.region.clone(),
        instance_type: c.instance_type.clone(),
        image_id: c.image_id.clone(),
        private_ip: c.private_ip.clone(),
        hostname: c.hostname.clone(),
        architecture: c.architecture.clone(),
        pending_time: rfc3339_seconds(started),
        role_name: c.role_name.clone(),
    }
}

/// `iam/info`: the instance profile named after the role, with an id derived from its ARN.
fn iam_info(s: &ImdsState) -> String {
    let arn = format!(
        "arn:aws:iam::{}:instance-profile/{}",
        s.instance.account_id, s.instance.role_name
    );
    let digest = Sha256::digest(arn.as_bytes());
    let id: String = digest
        .iter()
        .take(17)
        .map(|b| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[usize::from(b % 32)]))
        .collect();
    imds_wire::pretty(&IamInfo {
        code: "Success".to_owned(),
        last_updated: s.instance.pending_time.clone(),
        instance_profile_arn: arn,
        instance_profile_id: format!("AIPA{id}"),
    })
}

/// The role's credentials leaf.
#[derive(Debug)]
struct RoleLeaf;

async fn decorate(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("EC2ws"));
    resp
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn status_only(status: StatusCode) -> Response {
    plain(
        status,
        format!(
            "{} - {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        ),
    )
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl ImdsState {
    fn put_token(&self, headers: &HeaderMap, owner: Option<u32>) -> Response {
        if headers.contains_key("x-forwarded-for") {
            tracing::info!("refused: IMDS token request carrying X-Forwarded-For");
            return status_only(StatusCode::FORBIDDEN);
        }
        let Some(ttl) = imds_wire::token_ttl(headers) else {
            return status_only(StatusCode::BAD_REQUEST);
        };
        let token = self
            .tokens
            .issue(owner, Duration::from_secs(u64::from(ttl)));
        let mut resp = plain(StatusCode::OK, token);
        resp.headers_mut()
            .insert(TTL_HEADER, HeaderValue::from(ttl));
        resp
    }

    fn token_is_live(&self, token: &HeaderValue) -> bool {
        self.tokens.is_live(token.as_bytes())
    }
}

async fn handle(State(s): State<Arc<ImdsState>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    match imds_wire::admit(&parts.method, path, &parts.headers) {
        Ok(Admitted::Read) => {}
        // The token rules (X-Forwarded-For, TTL) are applied again by put_token.
        Ok(Admitted::TokenPut(_)) | Err(Refused::Proxied | Refused::BadTtl) => {
            return s.put_token(
                &parts.headers,
                Peer::of(&parts.extensions).and_then(Peer::uid),
            );
        }
        Err(Refused::MethodNotAllowed) => return status_only(StatusCode::METHOD_NOT_ALLOWED),
    }
    let authorized = match parts.headers.get(TOKEN_HEADER) {
        Some(token) => s.token_is_live(token),
        None => !s.config.require_token,
    };
    if !authorized {
        return status_only(StatusCode::UNAUTHORIZED);
    }
    let tree = s.instance.tree(iam_info(&s), RoleLeaf);
    match tree.lookup(path) {
        Some(Found::Text(body)) => plain(StatusCode::OK, body),
        Some(Found::Own(RoleLeaf)) => {
            let peer = Peer::of(&parts.extensions);
            credentials(&s, peer).await
        }
        None => status_only(StatusCode::NOT_FOUND),
    }
}

async fn credentials(s: &ImdsState, peer: Option<&Peer>) -> Response {
    let route = &s.config.route;
    let now = s.broker.clock().now();
    match s
        .broker
        .credential(peer, &CredentialKey::route(route))
        .await
    {
        Ok(Credential::Aws(c)) => {
            // Credentials without an expiry (static keys) still need one on this wire: an
            // hour, after which the client simply asks again.
            let expiration = c.expiration.unwrap_or(now + time::Duration::hours(1));
            let doc = RoleCredentials {
                code: "Success",
                last_updated: rfc3339_seconds(now),
                kind: "AWS-HMAC",
                access_key_id: &c.access_key_id,
                secret_access_key: c.secret_access_key.expose_secret(),
                token: c.session_token.as_ref().map(|t| t.expose_secret()),
                expiration: rfc3339_seconds(expiration),
            };
            plain(StatusCode::OK, imds_wire::pretty(&doc))
        }
        Ok(other) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "route {route:?} yields a {} credential, not AWS credentials\n",
                other.kind()
            ),
        ),
        Err(r @ Refusal::Denied { .. }) => json_response(
            StatusCode::FORBIDDEN,
            serde_json::json!({ "Code": "AccessDenied", "Message": r.message() }).to_string(),
        ),
        Err(r) if r.is_transient() => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", r.message()),
        ),
        Err(r) => {
            let doc = RoleFailure {
                code: r.failure_code().unwrap_or("Failure"),
                message: r.message(),
                last_updated: rfc3339_seconds(now),
            };
            plain(StatusCode::OK, imds_wire::pretty(&doc))
        }
    }
}
