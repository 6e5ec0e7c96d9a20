//! Exchange `aws-sts`: `AssumeRoleWithWebIdentity` through `aws-sdk-sts`.
//!
//! The call is unsigned (the web identity token is the credential). The endpoint comes from
//! `endpoints.aws_sts`, then `AWS_ENDPOINT_URL_STS`, then `AWS_ENDPOINT_URL`, then the SDK's
//! regional default. The SDK's own retries are off: the broker's cache decides when to retry,
//! so a refused role fails fast with AWS's code (`AccessDenied`, `InvalidIdentityToken`,
//! `ExpiredTokenException`, …).
//!
//! Each call is bounded by the context's hop timeout (the SDK's operation and attempt
//! timeouts; it has none by default), and its failure is classified like every other hop's
//! ([`crate::error`]): by HTTP status first — a 5xx, 429 or 408 is transient whether or not a
//! load balancer put an AWS error document in it — then by AWS's code (`Throttling`,
//! `IDPCommunicationError` … are transient), and an answer the SDK cannot parse (truncated,
//! garbage, a 200 without `Credentials`) is transient too.

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
        .map_err(|e| map_sdk_error(ctx, &endpoint, e))?;
    let creds = out
        .credentials()
        .ok_or_else(|| BrokerError::unparsable(HOP, "the response has no Credentials"))?;
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
    let timeouts = aws_sdk_sts::config::timeout::TimeoutConfig::builder()
        .connect_timeout(ctx.connect_timeout())
        .operation_attempt_timeout(ctx.hop_timeout)
        .operation_timeout(ctx.hop_timeout)
        .build();
    let mut conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .timeout_config(timeouts)
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

/// AWS error codes that mean "ask again later" even in a 400 (STS throttles with a 400).
const TRANSIENT_CODES: &[&str] = &[
    "IDPCommunicationError",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
];

fn map_sdk_error<E: ProvideErrorMetadata + std::fmt::Debug>(
    ctx: &Context,
    endpoint: &str,
    e: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> BrokerError {
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            if status < 300 {
                // A 200 the SDK could not read as the operation's answer (garbage, a portal).
                return BrokerError::unparsable(
                    HOP,
                    format!("unparsable response from {endpoint}"),
                );
            }
            let code = se.err().code();
            let transient = crate::error::status_is_transient(status)
                || code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
            let error = match code {
                // An AWS error document: AWS's code and message.
                Some(code) => BrokerError::new(
                    ErrorKind::Rejected,
                    HOP,
                    se.err().message().unwrap_or("no message").to_owned(),
                )
                .with_code(code),
                // No AWS error document (a load balancer's or proxy's page): the status only;
                // the body is never repeated.
                None => BrokerError::new(
                    ErrorKind::Rejected,
                    HOP,
                    format!("HTTP {status} without an AWS error document from {endpoint}"),
                ),
            };
            if transient {
                let retry_after = se
                    .raw()
                    .headers()
                    .get("retry-after")
                    .and_then(|v| crate::error::parse_retry_after(v, ctx.clock.now()));
                BrokerError {
                    kind: ErrorKind::Transient,
                    ..error
                }
                .with_retry_after(retry_after)
            } else {
                error
            }
        }
        SdkError::TimeoutError(_) => {
            BrokerError::new(ErrorKind::Transient, HOP, format!("timed out: {endpoint}"))
        }
        SdkError::DispatchFailure(_) => BrokerError::new(
            ErrorKind::Transient,
            HOP,
            format!("could not connect: {endpoint}"),
        ),
        // Truncated, garbage, or a document that is not AWS's: the next answer may be fine.
        SdkError::ResponseError(_) => {
            BrokerError::unparsable(HOP, format!("unparsable response from {endpoint}"))
        }
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
        let mut b = map_sdk_error(ctx, &endpoint, e);
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
