//! Rendering credentials for stdout and child environments. This is where secrets leave the
//! process on purpose, and the only place in the binary that calls `expose_secret`.

use idbridge_core::timefmt::rfc3339_seconds;
use idbridge_core::{Credential, SecretString};
use serde_json::json;

use crate::cli::TokenFormat;
use crate::commands::CliError;

/// Environment variables for a credential (`exec`, `--format env`).
pub(crate) fn env_pairs(cred: &Credential) -> Vec<(&'static str, SecretString)> {
    match cred {
        Credential::Aws(c) => {
            let mut v = vec![
                (
                    "AWS_ACCESS_KEY_ID",
                    SecretString::new(c.access_key_id.clone()),
                ),
                ("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()),
            ];
            if let Some(t) = &c.session_token {
                v.push(("AWS_SESSION_TOKEN", t.clone()));
            }
            if let Some(e) = c.expiration {
                v.push((
                    "AWS_CREDENTIAL_EXPIRATION",
                    SecretString::new(rfc3339_seconds(e)),
                ));
            }
            v
        }
        Credential::GoogleAccessToken(t) => vec![
            ("GOOGLE_OAUTH_ACCESS_TOKEN", t.token.clone()),
            ("CLOUDSDK_AUTH_ACCESS_TOKEN", t.token.clone()),
        ],
        Credential::IdToken(t) => vec![("IDBRIDGE_ID_TOKEN", t.token.clone())],
        Credential::AzureAccessToken(t) => vec![("IDBRIDGE_AZURE_ACCESS_TOKEN", t.token.clone())],
        _ => Vec::new(),
    }
}

/// Renders a credential in `format`. The text holds the secrets: it is zeroized once printed.
pub(crate) fn render(cred: &Credential, format: TokenFormat) -> Result<SecretString, CliError> {
    let mut text = match (format, cred) {
        (TokenFormat::CredentialProcess, Credential::Aws(c)) => {
            serde_json::to_string(&c.credential_process())
                .map_err(|e| CliError::Failed(e.to_string()))?
        }
        (TokenFormat::CredentialProcess, other) => {
            return Err(CliError::Usage(format!(
                "--format credential-process needs AWS credentials, but the route yields a {} credential",
                other.kind()
            )));
        }
        (TokenFormat::Env, c) => env_pairs(c)
            .iter()
            .map(|(k, v)| format!("{k}={}", v.expose_secret()))
            .collect::<Vec<_>>()
            .join("\n"),
        (TokenFormat::AccessToken, Credential::GoogleAccessToken(t)) => {
            t.token.expose_secret().to_owned()
        }
        (TokenFormat::AccessToken, Credential::IdToken(t)) => t.token.expose_secret().to_owned(),
        (TokenFormat::AccessToken, Credential::AzureAccessToken(t)) => {
            t.token.expose_secret().to_owned()
        }
        (TokenFormat::GoogleExecutable, Credential::IdToken(t)) => json!({
            "version": 1,
            "success": true,
            "token_type": idbridge_wire::google::ID_TOKEN_TYPE,
            "id_token": t.token.expose_secret(),
            "expiration_time": t.expires_at.unix_timestamp(),
        })
        .to_string(),
        (TokenFormat::GoogleExecutable, other) => {
            return Err(CliError::Usage(format!(
                "--format google-executable needs an OIDC token (the subject token for Google STS), but the route yields {} credentials",
                other.kind()
            )));
        }
        (TokenFormat::AccessToken, other) => {
            return Err(CliError::Usage(format!(
                "--format access-token needs a token, but the route yields {} credentials",
                other.kind()
            )));
        }
        (TokenFormat::Json, Credential::Aws(c)) => json!({
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key.expose_secret(),
            "SessionToken": c.session_token.as_ref().map(SecretString::expose_secret),
            "Expiration": c.expiration.map(rfc3339_seconds),
            "AccountId": c.account_id,
            "Arn": c.arn,
        })
        .to_string(),
        (TokenFormat::Json, Credential::GoogleAccessToken(t)) => json!({
            "access_token": t.token.expose_secret(),
            "token_type": "Bearer",
            "expire_time": rfc3339_seconds(t.expires_at),
            "principal": t.principal,
        })
        .to_string(),
        (TokenFormat::Json, Credential::AzureAccessToken(t)) => json!({
            "access_token": t.token.expose_secret(),
            "token_type": "Bearer",
            "expire_time": rfc3339_seconds(t.expires_at),
            "tenant": t.tenant,
            "client_id": t.client_id,
            "scope": t.scope,
        })
        .to_string(),
        (TokenFormat::Json, Credential::IdToken(t)) => json!({
            "id_token": t.token.expose_secret(),
            "expire_time": rfc3339_seconds(t.expires_at),
        })
        .to_string(),
        (_, other) => {
            return Err(CliError::Usage(format!(
                "unsupported credential kind {}",
                other.kind()
            )));
        }
    };
    text.push('\n');
    Ok(SecretString::new(text))
}

/// The `code` of a google-executable error response for a configuration or usage error.
pub(crate) const EXECUTABLE_CONFIG_ERROR: &str = "INVALID_CONFIGURATION";

/// The `code` of a google-executable error response for a failed hop: the cloud's error code
/// when it gave one (`AccessDenied`, `invalid_grant`), else what kind of failure it was.
pub(crate) fn executable_error_code(e: &idbridge_broker::BrokerError) -> String {
    use idbridge_broker::ErrorKind;
    if let Some(code) = &e.code {
        return code.clone();
    }
    match e.kind {
        ErrorKind::NotConfigured => "NOT_CONFIGURED",
        ErrorKind::InvalidConfiguration => EXECUTABLE_CONFIG_ERROR,
        ErrorKind::Transient => "UNAVAILABLE",
        ErrorKind::Rejected => "REJECTED",
        ErrorKind::Protocol => "PROTOCOL_ERROR",
        ErrorKind::Io => "IO_ERROR",
        _ => "FAILED",
    }
    .to_owned()
}

/// Google's executable-sourced error response (one line of JSON). `message` is an error's
/// one-line `Display`, which never carries a secret.
pub(crate) fn executable_error(code: &str, message: &str) -> String {
    json!({"version": 1, "success": false, "code": code, "message": message}).to_string()
}
