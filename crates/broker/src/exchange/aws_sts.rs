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

use serde::Deserialize;

pub use crate::proof::get_caller_identity;
use crate::step::{AwsRole, Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::values::{RoleArn, SessionName};
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport, Overrides};

/// The hop.
pub const HOP: Hop = Hop::new(
    "aws-sts",
    "AWS_ENDPOINT_URL_STS (or AWS_ENDPOINT_URL, or [endpoints] aws_sts in the config)",
);
/// Region used when the route names none; STS is global, the SDK still wants a region.
pub const DEFAULT_REGION: &str = "us-east-1";

/// `exchange = [{ kind = "aws-sts", … }]`: `role_arn`, `session_name` (default
/// `idbridge-<route>`), `duration_seconds` (900–43200, default 3600), `policy` (session policy
/// JSON), `region` (default `us-east-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSts {
    role_arn: RoleArn,
    session_name: Option<SessionName>,
    duration_seconds: Option<u32>,
    policy: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    role_arn: String,
    #[serde(default)]
    session_name: Option<String>,
    #[serde(default)]
    duration_seconds: Option<u32>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl AwsSts {
    /// Reads `{ kind = "aws-sts", … }` in `exchange`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Raw = p.table(table)?;
        let invalid =
            |field: &str, m: String| KindError::Invalid(format!("field `{}`: {m}", p.field(field)));
        let (role_arn, session_name) = super::role_fields(
            &invalid,
            &raw.role_arn,
            raw.session_name.as_deref(),
            raw.duration_seconds,
        )?;
        Ok(Box::new(AwsSts {
            role_arn,
            session_name,
            duration_seconds: raw.duration_seconds,
            policy: raw.policy,
            region: raw.region,
        }))
    }

    async fn assume(
        &self,
        input: Input<'_>,
        ctx: &Context,
        hops: &mut Vec<HopReport>,
    ) -> Result<Credential, BrokerError> {
        let Some(Credential::IdToken(token)) = input.credential else {
            return Err(BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                "needs an ID token from the previous hop",
            ));
        };
        let session_name = match &self.session_name {
            Some(n) => n.clone(),
            None => SessionName::derived(&format!("idbridge-{}", input.route)),
        };
        exchange(ctx, token, self, &session_name, hops).await
    }
}

impl Step for AwsSts {
    fn kind(&self) -> &'static str {
        "aws-sts"
    }

    fn takes(&self) -> &'static [Yields] {
        &[Yields::IdToken]
    }

    fn refuses(&self, _got: Yields) -> String {
        "aws-sts needs an ID token, but the previous hop yields an access token (set an audience)"
            .to_owned()
    }

    fn yields(&self) -> Yields {
        Yields::AwsCredentials
    }

    fn describe(&self) -> String {
        format!("role {}", self.role_arn)
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            aws_role: Some(AwsRole {
                arn: &self.role_arn,
                session_name: self.session_name.as_deref(),
                duration_seconds: self.duration_seconds,
                region: self.region.as_deref(),
            }),
            ..Facts::default()
        }
    }

    fn with_overrides(&self, _overrides: &Overrides) -> Option<Result<Box<dyn Step>, String>> {
        Some(Err(
            "its last hop yields AWS credentials; audience/scopes do not apply".to_owned(),
        ))
    }

    fn region(&self) -> Option<&str> {
        None
    }

    fn run<'a>(
        &'a self,
        input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.assume(input, ctx, hops))
    }
}

/// Assumes the role with `token`.
async fn exchange(
    ctx: &Context,
    token: &IdToken,
    req: &AwsSts,
    session_name: &str,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    let region = req.region.as_deref().unwrap_or(DEFAULT_REGION);
    let (client, endpoint) = sts_client(ctx, region, None);
    let out = client
        .assume_role_with_web_identity()
        .role_arn(req.role_arn.as_str())
        .role_session_name(session_name)
        .web_identity_token(token.token.expose_secret())
        .set_duration_seconds(req.duration_seconds.map(|d| d as i32))
        .set_policy(req.policy.clone())
        .send()
        .await
        .map_err(|e| map_sdk_error(ctx, &endpoint, e))?;
    let creds = out
        .credentials()
        .ok_or_else(|| BrokerError::unparsable(HOP, "the response has no Credentials"))?;
    let expiration = time::OffsetDateTime::from_unix_timestamp(creds.expiration().secs()).ok();
    let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
    let account = Some(req.role_arn.account().to_owned());
    hops.push(HopReport::new(
        HOP,
        endpoint,
        format!(
            "AWS session: {}",
            arn.as_deref().unwrap_or(req.role_arn.as_str())
        ),
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
pub(crate) fn sts_client(
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

pub(crate) fn map_sdk_error<E: ProvideErrorMetadata + std::fmt::Debug>(
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
