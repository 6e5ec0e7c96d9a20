//! Source `executable`: a program that prints Google's executable-sourced response
//! (`{"version":1,"success":true,"token_type":…,"id_token"|"saml_response":…,"expiration_time":…}`
//! or `{"version":1,"success":false,"code","message"}`).
//!
//! The program runs without a shell, with `GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE`,
//! `GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE`, `GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=0` and, when set,
//! `GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE`; a still-valid response in `output_file` is used without
//! running it, as Google's libraries do. Unlike them, idbridge needs no
//! `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES`: the route's author chose the command.

use std::path::PathBuf;
use std::time::Duration;

use idbridge_core::{Credential, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use crate::step::{CredentialSource, Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::token::id_token_hop;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport};

/// The hop.
pub const HOP: Hop = Hop::named("executable");
/// Google's default time limit for the program.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `source = { kind = "executable", … }`: `command` printing Google's executable-sourced
/// response (split on whitespace, no shell); `timeout_millis` (5000–120000, default 30 s),
/// `output_file`, `audience`, `token_type` (passed to the program).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Executable {
    command: String,
    #[serde(default)]
    timeout_millis: Option<u64>,
    #[serde(default)]
    output_file: Option<PathBuf>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
}

impl Executable {
    /// Reads `source = { kind = "executable", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: Executable = p.table(table)?;
        if raw.command.trim().is_empty() {
            return Err(p.invalid("command", "is empty"));
        }
        if let Some(t) = raw.timeout_millis
            && !(5000..=120_000).contains(&t)
        {
            return Err(p.invalid("timeout_millis", "must be 5000..=120000"));
        }
        Ok(Box::new(raw))
    }
}

impl Step for Executable {
    fn kind(&self) -> &'static str {
        "executable"
    }

    fn yields(&self) -> Yields {
        Yields::IdToken
    }

    fn describe(&self) -> String {
        format!("program {}", self.command)
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            audience: self.audience.as_deref(),
            ..Facts::default()
        }
    }

    fn credential_source(&self, _imds: &str) -> Option<CredentialSource> {
        let mut exe = serde_json::json!({"command": self.command});
        if let Some(t) = self.timeout_millis {
            exe["timeout_millis"] = serde_json::json!(t);
        }
        if let Some(f) = &self.output_file {
            exe["output_file"] = serde_json::json!(f.display().to_string());
        }
        Some(CredentialSource {
            credential_source: serde_json::json!({"executable": exe}),
            aws: false,
            note: None,
        })
    }

    fn run<'a>(
        &'a self,
        _input: Input<'a>,
        ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(fetch(ctx, self, hops))
    }
}

#[derive(Deserialize)]
struct Response {
    version: u32,
    success: bool,
    #[serde(default)]
    id_token: Option<SecretString>,
    #[serde(default)]
    expiration_time: Option<i64>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn parse(
    ctx: &Context,
    text: &str,
    what: &str,
) -> Result<Option<(SecretString, Option<i64>)>, BrokerError> {
    let r: Response = serde_json::from_str(text).map_err(|_| {
        BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            format!("{what} is not an executable-sourced response"),
        )
    })?;
    if r.version != 1 {
        return Err(BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            format!("{what}: unsupported version {}", r.version),
        ));
    }
    if !r.success {
        return Err(BrokerError::new(
            ErrorKind::Rejected,
            HOP,
            format!("{what}: {}", r.message.unwrap_or_default()),
        )
        .with_code(r.code.unwrap_or_else(|| "UNKNOWN".into())));
    }
    match (r.id_token, r.expiration_time) {
        (Some(t), Some(exp)) if exp <= ctx.clock.unix() => {
            drop(t);
            Ok(None)
        }
        (Some(t), exp) => Ok(Some((t, exp))),
        (None, _) => Err(BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            format!("{what}: no id_token (SAML responses are not supported)"),
        )),
    }
}

/// Runs the program (or reads its still-valid cached output).
async fn fetch(
    ctx: &Context,
    req: &Executable,
    hops: &mut Vec<HopReport>,
) -> Result<Credential, BrokerError> {
    let started = Instant::now();
    if let Some(path) = &req.output_file
        && let Ok(text) = tokio::fs::read_to_string(path)
            .await
            .map(zeroize::Zeroizing::new)
        && let Ok(Some((token, _))) = parse(ctx, &text, &path.display().to_string())
    {
        return id_token_hop(
            HOP,
            token.expose_secret(),
            path.display().to_string(),
            |_| "cached token".to_owned(),
            started,
            hops,
        );
    }
    let mut words = req.command.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| BrokerError::new(ErrorKind::InvalidConfiguration, HOP, "empty command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(words)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    cmd.env("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", "0");
    if let Some(a) = &req.audience {
        cmd.env("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", a);
    }
    if let Some(t) = &req.token_type {
        cmd.env("GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE", t);
    }
    if let Some(p) = &req.output_file {
        cmd.env("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", p);
    }
    let limit = req
        .timeout_millis
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TIMEOUT);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| {
            BrokerError::new(
                ErrorKind::Transient,
                HOP,
                format!("{program} did not finish within {} ms", limit.as_millis()),
            )
        })?
        .map_err(|e| {
            BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                format!("cannot run {program}: {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(BrokerError::new(
            ErrorKind::Rejected,
            HOP,
            format!("{program} exited with {}", out.status),
        ));
    }
    let stdout = zeroize::Zeroizing::new(out.stdout);
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&stdout).into_owned());
    let (token, _) = parse(ctx, &text, &format!("the output of {program}"))?.ok_or_else(|| {
        BrokerError::new(
            ErrorKind::Protocol,
            HOP,
            format!("{program} printed an expired token"),
        )
    })?;
    id_token_hop(
        HOP,
        token.expose_secret(),
        program.to_owned(),
        |_| "token".to_owned(),
        started,
        hops,
    )
}
