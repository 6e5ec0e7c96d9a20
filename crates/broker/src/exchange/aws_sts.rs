//! Exchange `aws-sts`: `AssumeRoleWithWebIdentity` through `aws-sdk-sts`.
//!
//! The call is unsigned (the web identity token is the credential). The endpoint comes from
//! `endpoints.aws_sts`, then `AWS_ENDPOINT_URL_STS`, then `AWS_ENDPOINT_URL`, then the SDK's
//! regional default. The SDK's own retries are off: the broker's cache decides when to retry,
//! so a refused role fails fast with AWS's code (`AccessDenied`, `InvalidIdentityToken`,
//! `ExpiredTokenException`, …).

use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use idbridge_core::{AwsCredentials, Credential, IdToken};
use tokio::time::Instant;

use crate::{BrokerError, Context, ErrorKind, HopReport};

const HOP: &str = "aws-sts";
/// Region used when the route names none; STS is global, the SDK still wants a region.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Parameters of one AssumeRoleWithWebIdentity call.
#[derive(Debug)]
pub struct Request<'a> {
    /// Role ARN.
    pub role_arn: &'a str,
    /// Session name.
    pub session_name: &'a str,
    /// DurationSeconds.
    pub duration_seconds: Option<u32>,
    /// Session policy.
    pub policy: Option<&'a str>,
    /// Region.
    pub region: Option<&'a str>,
}

/// Assumes the role with `token`.
pub async fn exchange(
    ctx: &Context,
    token: &IdToken,
    req: &Request<'_>,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let region = req.region.unwrap_or(DEFAULT_REGION);
    let (client, endpoint) = sts_client(ctx, region, None);
    let out = client
        .assume_role_with_web_identity()
        .role_arn(req.role_arn)
        .role_session_name(req.session_name)
        .web_identity_token(token.token.expose_secret())
        .set_duration_seconds(req.duration_seconds.map(|d| d as i32))
        .set_policy(req.policy.map(str::to_owned))
        .send()
        .await
        .map_err(|e| map_sdk_error(&endpoint, e))?;
    let creds = out.credentials().ok_or_else(|| {
        BrokerError::new(ErrorKind::Protocol, HOP, "the response has no Credentials")
    })?;
    let expiration = time::OffsetDateTime::from_unix_timestamp(creds.expiration().secs()).ok();
    let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
    let account = req.role_arn.split(':').nth(4).map(str::to_owned);
    hops.push(HopReport::new(
        HOP,
        endpoint,
        format!("AWS session: {}", arn.as_deref().unwrap_or(req.role_arn)),
        expiration,
        started,
    ));
    Ok(Credential::Aws(AwsCredentials {
        access_key_id: creds.access_key_id().to_owned(),
        secret_access_key: creds.secret_access_key().into(),
        session_token: Some(creds.session_token().into()),
        expiration,
        account_id: account,
        arn,
    }))
}

/// An STS client for `region` (with `creds` for signed calls; none for the unsigned
/// AssumeRoleWithWebIdentity), and the endpoint it talks to, for messages.
fn sts_client(
    ctx: &Context,
    region: &str,
    creds: Option<&AwsCredentials>,
) -> (aws_sdk_sts::Client, String) {
    let endpoint = ctx
        .endpoints
        .aws_sts
        .clone()
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
    let mut conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        // One HTTP client per context, without a trust store for a plain-http endpoint.
        .http_client(ctx.http.aws_sdk(&endpoint));
    if let Some(c) = creds {
        conf = conf.credentials_provider(crate::sigv4::sdk_credentials(c));
    }
    if let Some(url) = &ctx.endpoints.aws_sts {
        conf = conf.endpoint_url(url);
    }
    (aws_sdk_sts::Client::from_conf(conf.build()), endpoint)
}

fn map_sdk_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    endpoint: &str,
    e: SdkError<E, R>,
) -> BrokerError {
    match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_owned();
            let msg = se.err().message().unwrap_or("no message").to_owned();
            let transient = matches!(
                code.as_str(),
                "IDPCommunicationError" | "Throttling" | "ServiceUnavailable" | "InternalFailure"
            );
            BrokerError::new(
                if transient {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Rejected
                },
                HOP,
                msg,
            )
            .with_code(code)
        }
        SdkError::TimeoutError(_) => {
            BrokerError::new(ErrorKind::Transient, HOP, format!("timed out: {endpoint}"))
        }
        SdkError::DispatchFailure(_) => BrokerError::new(
            ErrorKind::Transient,
            HOP,
            format!("could not connect: {endpoint}"),
        ),
        SdkError::ResponseError(_) => BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            format!("unparsable response from {endpoint}"),
        ),
        _ => BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            format!("request to {endpoint} failed"),
        ),
    }
}

/// The caller identity of `creds` (`GetCallerIdentity`, SigV4-signed by the SDK): proves the
/// credentials work and shows whose they are.
pub async fn get_caller_identity(
    ctx: &Context,
    creds: &AwsCredentials,
    region: Option<&str>,
) -> Result<HopReport, BrokerError> {
    const GCI: &str = "aws-sts GetCallerIdentity";
    let started = Instant::now();
    let (client, endpoint) = sts_client(ctx, region.unwrap_or(DEFAULT_REGION), Some(creds));
    let out = client.get_caller_identity().send().await.map_err(|e| {
        let mut b = map_sdk_error(&endpoint, e);
        b.hop = GCI.to_owned();
        b
    })?;
    Ok(HopReport::new(
        GCI,
        endpoint,
        format!("caller: {}", out.arn().unwrap_or("?")),
        creds.expiration,
        started,
    ))
}
