//! The one-shot commands: token, credential-process, exec, request.

use std::process::ExitCode;

use idbridge_broker::shared_cache::{self, CacheSettings};
use idbridge_broker::{BrokerError, Config, ConfigError, Context, Route};
use idbridge_core::Credential;

use crate::cli::{Cli, Command, RequestArgs, RouteArgs, TokenFormat};
use crate::output;

pub(crate) use crate::error::CliError;

pub(crate) async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Demo(a) => crate::demo::run(a).await,
        Command::Emulate(a) => crate::emulate::run(a).await,
        Command::Token(a) if matches!(a.format, TokenFormat::GoogleExecutable) => {
            google_executable(&a.route).await
        }
        Command::Token(a) => {
            let cred = fetch(&a.route).await?;
            print!("{}", output::render(&cred, a.format)?.expose_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::CredentialProcess(a) => {
            let cred = fetch(&a).await?;
            print!(
                "{}",
                output::render(&cred, TokenFormat::CredentialProcess)?.expose_secret()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec(a) => {
            let cred = fetch(&a.route).await?;
            exec(&cred, &a.command).await
        }
        Command::Request(a) => request(a).await,
        Command::Explain(a) => crate::explain::run(*a).await,
        Command::Doctor(a) => crate::doctor::run(a).await,
        Command::Setup(a) => crate::setup::run(a).await,
        Command::Serve(a) => crate::serve::run(a).await,
        Command::Completions(a) => crate::manual::completions(&a),
        Command::Man => crate::manual::man(),
    }
}

/// Why a route could not be run: its configuration, or a hop.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The config file or the route in it.
    Config(ConfigError),
    /// A hop (or the environment it needs).
    Broker(BrokerError),
}

impl From<FetchError> for CliError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Config(e) => e.into(),
            FetchError::Broker(e) => e.into(),
        }
    }
}

/// Loads the config, runs the route once.
pub(crate) async fn fetch(args: &RouteArgs) -> Result<Credential, CliError> {
    Ok(fetch_detailed(args).await?)
}

/// `token --format google-executable`: Google's executable-sourced response on stdout, for
/// success and for failure alike (`{"version":1,"success":false,"code","message"}`; the
/// client libraries require both fields and put them in the error they raise). A failure still
/// exits non-zero, with the usual one-line error on stderr.
async fn google_executable(args: &RouteArgs) -> Result<ExitCode, CliError> {
    let failure = match fetch_detailed(args).await {
        Ok(cred) => match output::render(&cred, TokenFormat::GoogleExecutable) {
            Ok(text) => {
                print!("{}", text.expose_secret());
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => (output::EXECUTABLE_CONFIG_ERROR.to_owned(), e),
        },
        Err(FetchError::Config(e)) => (output::EXECUTABLE_CONFIG_ERROR.to_owned(), e.into()),
        Err(FetchError::Broker(e)) => (output::executable_error_code(&e), e.into()),
    };
    let (code, error) = failure;
    println!("{}", output::executable_error(&code, &error.to_string()));
    Err(error)
}

/// [`fetch`], keeping the error's detail.
pub(crate) async fn fetch_detailed(args: &RouteArgs) -> Result<Credential, FetchError> {
    let config = Config::load(&args.config).map_err(FetchError::Config)?;
    let route = Route::new(
        config
            .route(&args.route)
            .map_err(FetchError::Config)?
            .clone(),
    );
    let ctx = Context::from_process(&config.endpoints).map_err(FetchError::Broker)?;
    let cache = CacheSettings::load(&args.config, &*ctx.env).map_err(FetchError::Config)?;
    let run = || async {
        match route.run(&ctx).await {
            Ok(out) => {
                for h in &out.hops {
                    tracing::info!(hop = %h.hop, endpoint = %h.endpoint, identity = %h.identity, elapsed_ms = h.elapsed.as_millis() as u64, "hop ok");
                }
                Ok(out.credential)
            }
            Err((e, _)) => Err(e),
        }
    };
    shared_cache::one_shot(&cache, &args.route, args.no_cache, &ctx, run)
        .await
        .map_err(FetchError::Broker)
}

async fn exec(cred: &Credential, command: &[String]) -> Result<ExitCode, CliError> {
    let Some((program, args)) = command.split_first() else {
        return Err(CliError::Usage("exec: no command given".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for (k, v) in output::env_pairs(cred) {
        cmd.env(k, v.expose_secret());
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| CliError::Failed(format!("exec: cannot run {program:?}: {e}")))?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(128 + signal_of(&status)),
    })
}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    status
        .signal()
        .and_then(|s| u8::try_from(s).ok())
        .unwrap_or(1)
}

#[cfg(not(unix))]
fn signal_of(_: &std::process::ExitStatus) -> u8 {
    1
}

/// Guesses (service, region) from an AWS hostname.
pub(crate) fn guess_service_region(host: &str) -> (Option<String>, Option<String>) {
    let labels: Vec<&str> = host.split('.').collect();
    // <id>.lambda-url.<region>.on.aws
    if let Some(i) = labels.iter().position(|l| *l == "lambda-url") {
        return (
            Some("lambda".into()),
            labels.get(i + 1).map(|s| (*s).to_owned()),
        );
    }
    if host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
        // service.region.amazonaws.com, bucket.s3.region.amazonaws.com, s3.amazonaws.com
        let idx = labels.iter().position(|l| *l == "amazonaws").unwrap_or(0);
        let before: Vec<&str> = labels[..idx].to_vec();
        let (service, region) = match before.as_slice() {
            [.., svc, region]
                if region.contains('-') && region.chars().any(|c| c.is_ascii_digit()) =>
            {
                (svc.to_string(), Some(region.to_string()))
            }
            [.., svc] => (svc.to_string(), None),
            [] => return (None, None),
        };
        let service = if service.starts_with("s3") {
            "s3".to_owned()
        } else {
            service
        };
        return (Some(service), region);
    }
    (None, None)
}

async fn request(a: RequestArgs) -> Result<ExitCode, CliError> {
    let creds = match (&a.config, &a.route) {
        (Some(config), Some(route)) => match fetch(&RouteArgs {
            config: config.clone(),
            route: route.clone(),
            no_cache: false,
        })
        .await?
        {
            Credential::Aws(c) => c,
            other => {
                return Err(CliError::Usage(format!(
                    "request: route {route:?} yields a {} credential; SigV4 needs AWS credentials",
                    other.kind()
                )));
            }
        },
        _ => env_aws_credentials()?,
    };
    let url = url::Url::parse(&a.url)
        .map_err(|e| CliError::Usage(format!("request: bad URL {:?}: {e}", a.url)))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let (g_service, g_region) = guess_service_region(&host);
    let service = a.service.clone().or(g_service).ok_or_else(|| {
        CliError::Usage(format!(
            "request: cannot tell the AWS service from host {host:?}; pass --service"
        ))
    })?;
    let region = a
        .region
        .clone()
        .or(g_region)
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned());
    let body = match &a.data {
        Some(d) if d.starts_with('@') => std::fs::read(&d[1..])
            .map_err(|e| CliError::Usage(format!("request: cannot read {}: {e}", &d[1..])))?,
        Some(d) => d.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let mut headers = Vec::new();
    for (i, h) in a.headers.iter().enumerate() {
        // The value may be a credential: an error names the argument, never repeats it.
        let Some((k, v)) = h.expose_secret().split_once(':') else {
            return Err(CliError::Usage(format!(
                "request: header argument {} is not `Name: value`",
                i + 1
            )));
        };
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let method = a.method.to_ascii_uppercase();
    let unsigned = idbridge_broker::sigv4::UnsignedRequest {
        method: &method,
        url: url.as_str(),
        headers: headers.clone(),
        body: &body,
    };
    #[expect(clippy::disallowed_methods, reason = "signing time is the real time")]
    let now = std::time::SystemTime::now();
    let signed = idbridge_broker::sigv4::sign_request(&creds, &unsigned, &service, &region, now)?;
    let client = reqwest::Client::new();
    let m = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| CliError::Usage(format!("request: bad method {method:?}")))?;
    let mut req = client.request(m, url.as_str()).body(body);
    for (k, v) in headers.iter().chain(signed.iter()) {
        req = sensitive_header(req, k, v);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("request: {}: {e}", url.as_str())))?;
    let status = resp.status();
    eprintln!("HTTP {}", status);
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| CliError::Failed(format!("request: reading body: {e}")))?;
    use std::io::Write;
    let _ = std::io::stdout().write_all(&bytes);
    if !bytes.ends_with(b"\n") && !bytes.is_empty() {
        println!();
    }
    Ok(if status.is_success() || status.is_redirection() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(22)
    })
}

/// Adds a header with its value marked sensitive: the signed headers carry the signature and
/// the session token, and a caller's own (`-H`) may carry a credential. A value that is not a
/// legal header value is left to reqwest, which reports it when sending, as before.
fn sensitive_header(
    req: reqwest::RequestBuilder,
    name: &str,
    value: &str,
) -> reqwest::RequestBuilder {
    match reqwest::header::HeaderValue::from_str(value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            req.header(name, v)
        }
        Err(_) => req.header(name, value),
    }
}

fn env_aws_credentials() -> Result<idbridge_core::AwsCredentials, CliError> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(id), Some(secret)) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) else {
        return Err(CliError::Usage(
            "request: give --config and --route, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
        ));
    };
    Ok(idbridge_core::AwsCredentials {
        access_key_id: id,
        secret_access_key: secret.into(),
        session_token: get("AWS_SESSION_TOKEN").map(Into::into),
        expiration: None,
        account_id: None,
        arn: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_services() {
        assert_eq!(
            guess_service_region("abcdef.lambda-url.eu-west-1.on.aws"),
            (Some("lambda".into()), Some("eu-west-1".into()))
        );
        assert_eq!(
            guess_service_region("bucket.s3.us-east-2.amazonaws.com"),
            (Some("s3".into()), Some("us-east-2".into()))
        );
        assert_eq!(
            guess_service_region("sts.amazonaws.com"),
            (Some("sts".into()), None)
        );
        assert_eq!(guess_service_region("127.0.0.1"), (None, None));
    }
}
