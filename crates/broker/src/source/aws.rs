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

use crate::{BrokerError, Context, ErrorKind, HopReport};

const HOP: &str = "aws";

/// Resolves AWS credentials.
pub async fn fetch(
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
        && let (Some(id), Some(secret)) = (ctx.env.get("AWS_ACCESS_KEY_ID"), ctx.env.get("AWS_SECRET_ACCESS_KEY"))
    {
        hops.push(HopReport::new(HOP, "environment", format!("AWS credentials {id} (environment)"), None, started));
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
            let mut client = aws_config::imds::Client::builder();
            let endpoint = imds_endpoint
                .map(str::to_owned)
                .or_else(|| ctx.env.get(idbridge_core::env::AWS_EC2_METADATA_SERVICE_ENDPOINT));
            if let Some(e) = &endpoint {
                client = client
                    .endpoint(e)
                    .map_err(|err| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, format!("bad IMDS endpoint {e:?}: {err}")))?;
            }
            let p = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
                .imds_client(client.build())
                .build();
            (p.provide_credentials().await, endpoint.unwrap_or_else(|| "IMDS http://169.254.169.254".into()))
        }
        "ecs" => {
            let p = aws_config::ecs::EcsCredentialsProvider::builder().build();
            (p.provide_credentials().await, "ECS container endpoint".to_owned())
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
                return Err(BrokerError::new(ErrorKind::NotConfigured, HOP, "no AWS credentials provider is configured"));
            };
            (p.provide_credentials().await, "AWS default credential chain".to_owned())
        }
    };
    let creds = result.map_err(|e| {
        use aws_credential_types::provider::error::CredentialsError as E;
        let kind = match &e {
            E::CredentialsNotLoaded(_) => ErrorKind::NotConfigured,
            E::ProviderTimedOut(_) => ErrorKind::Transient,
            E::InvalidConfiguration(_) => ErrorKind::InvalidConfiguration,
            E::ProviderError(_) => ErrorKind::Rejected,
            _ => ErrorKind::Protocol,
        };
        BrokerError::new(kind, HOP, format!("{endpoint}: {}", one_line(&e)))
    })?;
    let expiration = creds
        .expiry()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| time::OffsetDateTime::from_unix_timestamp(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).ok());
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

/// The error and its sources on one line (aws-config errors nest their cause).
fn one_line(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ").replace('\n', " ")
}
