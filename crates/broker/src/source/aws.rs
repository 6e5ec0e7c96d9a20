//! Source `aws`: AWS credentials, through aws-config.
//!
//! * `provider = "chain"` (default): aws-config's default chain — `AWS_ACCESS_KEY_ID`/…
//!   environment, shared config/credentials files and `profile`, web identity (IRSA:
//!   `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), the ECS/EKS container endpoint, IMDSv2.
//!   It reads the process environment, exactly as the AWS SDKs would.
//! * `provider = "imds"`: the EC2 instance role through IMDSv2; the endpoint comes from
//!   `AWS_EC2_METADATA_SERVICE_ENDPOINT` in idbridge's environment (so the emulator plugs in).
//! * `provider = "ecs"`: the container endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or
//!   `…_RELATIVE_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`) — the case Google's own
//!   libraries refuse.

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use idbridge_core::{AwsCredentials, Credential};
use tokio::time::Instant;

use serde::Deserialize;

use crate::step::{CredentialSource, Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport};

/// The hop.
pub const HOP: Hop = Hop::new(
    "aws",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT (or the source's `imds_endpoint`)",
);
/// The hop of the container endpoint.
pub const HOP_ECS: Hop = Hop::new("aws ecs", "AWS_CONTAINER_CREDENTIALS_FULL_URI");

/// The providers `provider` may name.
const PROVIDERS: [&str; 4] = ["chain", "imds", "ecs", "env-or-imds"];

/// `source = { kind = "aws", … }`: `provider` `chain` (default: aws-config's chain), `imds`,
/// `ecs` or `env-or-imds`; `profile`, `region`, `imds_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aws {
    /// `chain` (default: environment, profile, web identity, ECS, IMDS — via aws-config,
    /// reading the process environment), `imds` (the EC2 instance role through IMDSv2 at
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`), `ecs` (the container endpoint at
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN`), or
    /// `env-or-imds` (environment credentials first, as Google's libraries read them).
    #[serde(default)]
    provider: Option<String>,
    /// Named profile for `chain`.
    #[serde(default)]
    profile: Option<String>,
    /// Region (used for the GetCallerIdentity URL of a Google subject token).
    #[serde(default)]
    region: Option<String>,
    /// IMDS endpoint for `imds` and `env-or-imds` (default `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    #[serde(default)]
    imds_endpoint: Option<String>,
}

impl Aws {
    /// Reads `source = { kind = "aws", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Aws = p.table(table)?;
        if let Some(provider) = &raw.provider
            && !PROVIDERS.contains(&provider.as_str())
        {
            return Err(p.invalid(
                "provider",
                format!(
                    "must be \"chain\", \"imds\", \"ecs\" or \"env-or-imds\", not {provider:?}"
                ),
            ));
        }
        Ok(Box::new(raw))
    }

    /// The provider (`chain` when none is named).
    pub fn provider(&self) -> &str {
        self.provider.as_deref().unwrap_or("chain")
    }
}

impl Step for Aws {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn yields(&self) -> Yields {
        Yields::AwsCredentials
    }

    fn describe(&self) -> String {
        format!("AWS credentials ({})", self.provider())
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            region: self.region.as_deref(),
            ..Facts::default()
        }
    }

    fn credential_source(&self, imds: &str) -> Option<CredentialSource> {
        let base = self
            .imds_endpoint
            .as_deref()
            .unwrap_or(imds)
            .trim_end_matches('/');
        Some(CredentialSource {
            credential_source: serde_json::json!({
                "environment_id": "aws1",
                "region_url": format!("{base}/latest/meta-data/placement/availability-zone"),
                "url": format!("{base}/latest/meta-data/iam/security-credentials"),
                "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
                "imdsv2_session_token_url": format!("{base}/latest/api/token"),
            }),
            aws: true,
            note: (self.provider() == "ecs").then_some(
                "Google's libraries read AWS credentials from the environment or IMDSv2, not from the ECS endpoint: on ECS, export the task's credentials or use idbridge itself",
            ),
        })
    }

    fn run<'a>(
        &'a self,
        _input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(fetch(
            ctx,
            self.provider.as_deref(),
            self.profile.as_deref(),
            self.region.as_deref(),
            self.imds_endpoint.as_deref(),
            hops,
        ))
    }
}

/// Resolves AWS credentials.
async fn fetch(
    ctx: &Context,
    provider: Option<&str>,
    profile: Option<&str>,
    region: Option<&str>,
    imds_endpoint: Option<&str>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let provider = provider.unwrap_or("chain");
    if provider == "env-or-imds"
        && let (Some(id), Some(secret)) = (
            ctx.env.get("AWS_ACCESS_KEY_ID"),
            ctx.env.get("AWS_SECRET_ACCESS_KEY"),
        )
    {
        hops.push(HopReport::new(
            HOP,
            "environment",
            format!("AWS credentials {id} (environment)"),
            None,
            started,
        ));
        return Ok(Credential::Aws(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret.into(),
            session_token: ctx.env.get("AWS_SESSION_TOKEN").map(Into::into),
            expiration: None,
            account_id: None,
            arn: None,
        }));
    }
    let (result, endpoint) = match provider {
        "imds" | "env-or-imds" => {
            // One attempt per call, bounded like every other hop: the cache retries.
            let mut client = aws_config::imds::Client::builder()
                .max_attempts(1)
                .connect_timeout(ctx.connect_timeout())
                .read_timeout(ctx.hop_timeout)
                .operation_attempt_timeout(ctx.hop_timeout)
                .operation_timeout(ctx.hop_timeout);
            let endpoint = imds_endpoint.map(str::to_owned).or_else(|| {
                ctx.env
                    .get(idbridge_core::env::AWS_EC2_METADATA_SERVICE_ENDPOINT)
            });
            if let Some(e) = &endpoint {
                client = client.endpoint(e).map_err(|err| {
                    BrokerError::new(
                        ErrorKind::InvalidConfiguration,
                        HOP,
                        format!("bad IMDS endpoint {e:?}: {err}"),
                    )
                })?;
            }
            let p = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
                .imds_client(client.build())
                .build();
            (
                p.provide_credentials().await,
                endpoint.unwrap_or_else(|| "IMDS http://169.254.169.254".into()),
            )
        }
        "ecs" if ctx.env.get(ECS_FULL_URI).is_some() || ctx.env.get(ECS_RELATIVE_URI).is_some() => {
            return ecs(ctx, hops, started).await;
        }
        "ecs" => {
            let p = aws_config::ecs::EcsCredentialsProvider::builder().build();
            (
                p.provide_credentials().await,
                "ECS container endpoint".to_owned(),
            )
        }
        _ => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(p) = profile {
                loader = loader.profile_name(p);
            }
            if let Some(r) = region {
                loader = loader.region(aws_config::Region::new(r.to_owned()));
            }
            let conf = loader.load().await;
            let Some(p) = conf.credentials_provider() else {
                return Err(BrokerError::new(
                    ErrorKind::NotConfigured,
                    HOP,
                    "no AWS credentials provider is configured",
                ));
            };
            (
                p.provide_credentials().await,
                "AWS default credential chain".to_owned(),
            )
        }
    };
    let creds = result.map_err(|e| {
        BrokerError::new(
            credentials_error_kind(&e),
            HOP,
            format!("{endpoint}: {}", one_line(&e)),
        )
        .with_retry_after(retry_after(&e, ctx.clock.now()))
    })?;
    let expiration = creds
        .expiry()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| {
            time::OffsetDateTime::from_unix_timestamp(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            )
            .ok()
        });
    hops.push(HopReport::new(
        HOP,
        endpoint,
        format!("AWS credentials {} ({provider})", creds.access_key_id()),
        expiration,
        started,
    ));
    Ok(Credential::Aws(AwsCredentials {
        access_key_id: creds.access_key_id().to_owned(),
        secret_access_key: creds.secret_access_key().into(),
        session_token: creds.session_token().map(Into::into),
        expiration,
        account_id: creds.account_id().map(|a| a.as_str().to_owned()),
        arn: None,
    }))
}

const ECS_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
const ECS_RELATIVE_URI: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";

/// The ECS/EKS container credentials endpoint, read from idbridge's injected environment (the
/// SDK's provider only reads the process environment). Same rules as the SDKs:
/// `…_RELATIVE_URI` (appended to `http://169.254.170.2`) wins over `…_FULL_URI`; a plain-http
/// full URI must name a loopback address or one of the container hosts; the token comes from
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (wins) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
async fn ecs(
    ctx: &Context,
    hops: &mut Vec<HopReport>,
    started: Instant,
) -> Result<Credential, BrokerError> {
    let bad = |m: String| BrokerError::new(ErrorKind::InvalidConfiguration, HOP_ECS, m);
    let uri = match (ctx.env.get(ECS_RELATIVE_URI), ctx.env.get(ECS_FULL_URI)) {
        (Some(rel), _) => format!("http://169.254.170.2{rel}"),
        (None, Some(full)) => full,
        (None, None) => {
            return Err(BrokerError::new(
                ErrorKind::NotConfigured,
                HOP_ECS,
                "no container credentials URI",
            ));
        }
    };
    let parsed = url::Url::parse(&uri).map_err(|e| bad(format!("{ECS_FULL_URI} {uri:?}: {e}")))?;
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let allowed = parsed.scheme() == "https"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || [
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::23",
            "localhost",
        ]
        .contains(&host.as_str());
    if !allowed {
        return Err(bad(format!(
            "{ECS_FULL_URI}: host {host:?} is neither loopback nor a container credentials host"
        )));
    }
    let token = match ctx.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(f) => Some(tokio::fs::read_to_string(&f).await.map_err(|e| {
            bad(format!(
                "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {f}: {e}"
            ))
        })?),
        None => ctx.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    }
    .map(zeroize::Zeroizing::new);
    let mut req = ctx
        .http
        .get(parsed.as_str())
        .header("Accept", "application/json");
    if let Some(t) = &token {
        let mut v = http::HeaderValue::from_str(t.as_str()).map_err(|_| {
            bad("the container authorization token is not a legal header value".into())
        })?;
        v.set_sensitive(true);
        req = req.header("Authorization", v);
    }
    let shown = format!(
        "{}://{}{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or_default(),
        parsed.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + parsed.path();
    let body = crate::upstream::send(ctx, HOP_ECS, &shown, req, |_| {
        (
            None,
            format!("container credentials endpoint {shown} refused"),
        )
    })
    .await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Creds {
        access_key_id: String,
        secret_access_key: idbridge_core::SecretString,
        token: idbridge_core::SecretString,
        expiration: String,
        #[serde(default)]
        account_id: Option<String>,
        #[serde(default)]
        role_arn: Option<String>,
    }
    let c: Creds = serde_json::from_str(&body).map_err(|_| {
        BrokerError::unparsable(HOP_ECS, format!("unparsable credentials from {shown}"))
    })?;
    let expiration = idbridge_core::timefmt::parse_rfc3339(&c.expiration);
    hops.push(HopReport::new(
        HOP_ECS,
        shown,
        format!(
            "AWS credentials {} ({})",
            c.access_key_id,
            c.role_arn.as_deref().unwrap_or("container role")
        ),
        expiration,
        started,
    ));
    Ok(Credential::Aws(AwsCredentials {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        session_token: Some(c.token),
        expiration,
        account_id: c.account_id,
        arn: None,
    }))
}

/// What an aws-config credentials error means for the next attempt, by the same rules as every
/// other hop: an IMDS answer by its status, a connection or token failure transient, a
/// credentials document that does not parse transient, the instance's own error document
/// (`{"Code": …}` in a 200) a refusal.
fn credentials_error_kind(
    e: &aws_credential_types::provider::error::CredentialsError,
) -> ErrorKind {
    use aws_config::imds::client::error::ImdsError;
    use aws_credential_types::provider::error::CredentialsError as E;
    type TokenFailure = aws_smithy_runtime_api::client::result::SdkError<
        aws_config::imds::client::error::TokenError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >;
    let mut chain: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut unreachable = false;
    while let Some(err) = chain {
        unreachable |= err.downcast_ref::<TokenFailure>().is_some();
        chain = err.source();
    }
    match e {
        // "Not loaded" because IMDS could not be reached for a session token: transient.
        E::CredentialsNotLoaded(_) if unreachable => ErrorKind::Transient,
        E::CredentialsNotLoaded(_) => ErrorKind::NotConfigured,
        E::ProviderTimedOut(_) => ErrorKind::Transient,
        E::InvalidConfiguration(_) => ErrorKind::InvalidConfiguration,
        E::ProviderError(_) => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(err) = cur {
                match err.downcast_ref::<ImdsError>() {
                    Some(ImdsError::ErrorResponse(r)) => {
                        let status = r.response().status().as_u16();
                        return if crate::error::status_is_transient(status) {
                            ErrorKind::Transient
                        } else {
                            ErrorKind::Rejected
                        };
                    }
                    Some(_) => return ErrorKind::Transient,
                    None => cur = err.source(),
                }
            }
            ErrorKind::Rejected
        }
        _ => ErrorKind::Transient,
    }
}

/// The `Retry-After` of an IMDS answer somewhere in an aws-config error's chain.
fn retry_after(
    e: &(dyn std::error::Error + 'static),
    now: time::OffsetDateTime,
) -> Option<std::time::Duration> {
    use aws_config::imds::client::error::{ImdsError, TokenError};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::SdkError;
    let mut chain = Some(e);
    while let Some(err) = chain {
        let header = match (
            err.downcast_ref::<ImdsError>(),
            err.downcast_ref::<SdkError<TokenError, HttpResponse>>(),
        ) {
            (Some(ImdsError::ErrorResponse(r)), _) => r.response().headers().get("retry-after"),
            (_, Some(SdkError::ServiceError(se))) => se.raw().headers().get("retry-after"),
            _ => None,
        };
        if let Some(value) = header {
            return crate::error::parse_retry_after(value, now);
        }
        chain = err.source();
    }
    None
}

/// The error and its sources on one line (aws-config errors nest their cause).
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![describe(e)];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = describe(s);
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// One error of a chain. aws-config's IMDS error for a non-success answer prints the whole raw
/// response with `{:?}`, body included, and a body is never repeated: only its status is kept.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    use aws_config::imds::client::error::ImdsError;
    match e.downcast_ref::<ImdsError>() {
        Some(ImdsError::ErrorResponse(r)) => format!(
            "error response from IMDS (code: {})",
            r.response().status().as_u16()
        ),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use idbridge_core::env::MapEnv;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An IMDS that hands out a session token, then refuses the credentials listing with a
    /// body that reflects a secret (as a misbehaving proxy might).
    async fn reflecting_imds() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let reply = if head.starts_with("PUT /latest/api/token") {
                        "HTTP/1.1 200 OK\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\ncontent-length: 14\r\nconnection: close\r\n\r\nimds-session-1".to_owned()
                    } else {
                        let body = "denied; you sent reflected-secret-value";
                        format!(
                            "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn imds_error_bodies_are_not_repeated() {
        let endpoint = reflecting_imds().await;
        let ctx = Context::new(
            Arc::new(MapEnv::from_pairs([(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                endpoint.as_str(),
            )])),
            idbridge_core::clock::system(),
            &Default::default(),
        )
        .unwrap();
        let mut hops = Vec::new();
        let err = fetch(&ctx, Some("imds"), None, None, None, &mut hops)
            .await
            .unwrap_err();
        let line = err.to_string();
        assert!(!line.contains("reflected-secret-value"), "{line}");
        assert!(!line.contains("imds-session-1"), "{line}");
        assert!(line.contains("403"), "{line}");
    }
}
