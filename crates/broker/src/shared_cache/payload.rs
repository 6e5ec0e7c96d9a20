//! What a sealed entry holds: a credential or a load's error, who wrote it, and until when it
//! is fresh. JSON, built and parsed in zeroized buffers; a wire format of its own, apart from
//! the domain types, so that changing [`Credential`] cannot silently change what is stored.

use std::time::Duration;

use idbridge_core::{
    AwsCredentials, AzureAccessToken, Credential, GoogleAccessToken, IdToken, SecretString,
    X509Credential,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::{BrokerError, ErrorKind};

/// The payload format's version.
const VERSION: u8 = 1;

/// A decoded entry.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    /// The writer's id (a replica or process), so a writer can tell its own error markers.
    pub(crate) writer: String,
    /// Until when readers take the credential as it is (the start of its refresh window).
    pub(crate) fresh_until: Option<OffsetDateTime>,
    /// The credential, or the error of the load that failed.
    pub(crate) body: Result<Credential, BrokerError>,
}

#[derive(Serialize)]
struct Out<'a> {
    v: u8,
    writer: &'a str,
    fresh_until_ms: Option<i64>,
    #[serde(flatten)]
    body: OutBody<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum OutBody<'a> {
    Aws {
        access_key_id: &'a str,
        secret_access_key: &'a str,
        session_token: Option<&'a str>,
        expiration_ms: Option<i64>,
        account_id: Option<&'a str>,
        arn: Option<&'a str>,
    },
    GoogleAccessToken {
        token: &'a str,
        expires_ms: i64,
        principal: Option<&'a str>,
        scopes: &'a [String],
    },
    IdToken {
        token: &'a str,
        expires_ms: i64,
    },
    X509 {
        chain_pem: &'a str,
        key_pem: &'a str,
        expires_ms: i64,
        subject: &'a str,
    },
    AzureAccessToken {
        token: &'a str,
        expires_ms: i64,
        tenant: &'a str,
        client_id: &'a str,
        scope: &'a str,
    },
    Error {
        kind: &'a str,
        hop: &'a str,
        code: Option<&'a str>,
        message: &'a str,
        retry_after_ms: Option<u64>,
    },
}

#[derive(Deserialize)]
struct In {
    v: u8,
    writer: String,
    fresh_until_ms: Option<i64>,
    #[serde(flatten)]
    body: InBody,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum InBody {
    Aws {
        access_key_id: String,
        secret_access_key: SecretString,
        session_token: Option<SecretString>,
        expiration_ms: Option<i64>,
        account_id: Option<String>,
        arn: Option<String>,
    },
    GoogleAccessToken {
        token: SecretString,
        expires_ms: i64,
        principal: Option<String>,
        #[serde(default)]
        scopes: Vec<String>,
    },
    IdToken {
        token: SecretString,
        expires_ms: i64,
    },
    X509 {
        chain_pem: String,
        key_pem: SecretString,
        expires_ms: i64,
        subject: String,
    },
    AzureAccessToken {
        token: SecretString,
        expires_ms: i64,
        tenant: String,
        client_id: String,
        scope: String,
    },
    Error {
        kind: String,
        hop: String,
        code: Option<String>,
        message: String,
        retry_after_ms: Option<u64>,
    },
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

const KINDS: [(ErrorKind, &str); 6] = [
    (ErrorKind::NotConfigured, "not-configured"),
    (ErrorKind::InvalidConfiguration, "invalid-configuration"),
    (ErrorKind::Transient, "transient"),
    (ErrorKind::Rejected, "rejected"),
    (ErrorKind::Protocol, "protocol"),
    (ErrorKind::Io, "io"),
];

fn kind_name(kind: ErrorKind) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("transient", |(_, n)| n)
}

/// Encodes a payload (a credential's secrets end up only in the returned zeroized buffer);
/// `None` for a kind of credential this format does not know.
pub(crate) fn encode(
    writer: &str,
    fresh_until: Option<OffsetDateTime>,
    body: Result<&Credential, &BrokerError>,
) -> Option<Zeroizing<Vec<u8>>> {
    // Room for any credential up front, so the buffer is not reallocated (leaving copies): a
    // certificate chain and its key can outgrow the usual 16 KiB.
    let room = match body {
        Ok(Credential::X509(c)) => c.chain_pem.len() + c.key_pem.expose_secret().len(),
        _ => 0,
    };
    let body = match body {
        Ok(Credential::Aws(c)) => OutBody::Aws {
            access_key_id: &c.access_key_id,
            secret_access_key: c.secret_access_key.expose_secret(),
            session_token: c.session_token.as_ref().map(SecretString::expose_secret),
            expiration_ms: c.expiration.map(ms),
            account_id: c.account_id.as_deref(),
            arn: c.arn.as_deref(),
        },
        Ok(Credential::GoogleAccessToken(t)) => OutBody::GoogleAccessToken {
            token: t.token.expose_secret(),
            expires_ms: ms(t.expires_at),
            principal: t.principal.as_deref(),
            scopes: &t.scopes,
        },
        Ok(Credential::IdToken(t)) => OutBody::IdToken {
            token: t.token.expose_secret(),
            expires_ms: ms(t.expires_at),
        },
        Ok(Credential::X509(c)) => OutBody::X509 {
            chain_pem: &c.chain_pem,
            key_pem: c.key_pem.expose_secret(),
            expires_ms: ms(c.expires_at),
            subject: &c.subject,
        },
        Ok(Credential::AzureAccessToken(t)) => OutBody::AzureAccessToken {
            token: t.token.expose_secret(),
            expires_ms: ms(t.expires_at),
            tenant: &t.tenant,
            client_id: &t.client_id,
            scope: &t.scope,
        },
        Err(e) => OutBody::Error {
            kind: kind_name(e.kind),
            hop: e.hop.as_str(),
            code: e.code.as_deref(),
            message: &e.message,
            retry_after_ms: e
                .retry_after
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
        Ok(_) => return None,
    };
    let out = Out {
        v: VERSION,
        writer,
        fresh_until_ms: fresh_until.map(ms),
        body,
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(16 * 1024 + 2 * room));
    // Serializing plain structs into a Vec cannot fail.
    serde_json::to_writer(&mut *buf, &out).ok()?;
    Some(buf)
}

/// Decodes a payload; `None` for anything that is not one of this version.
pub(crate) fn decode(bytes: &[u8]) -> Option<Payload> {
    let raw: In = serde_json::from_slice(bytes).ok()?;
    if raw.v != VERSION {
        return None;
    }
    let body = match raw.body {
        InBody::Aws {
            access_key_id,
            secret_access_key,
            session_token,
            expiration_ms,
            account_id,
            arn,
        } => Ok(Credential::Aws(AwsCredentials {
            access_key_id,
            secret_access_key,
            session_token,
            expiration: match expiration_ms {
                Some(ms) => Some(from_ms(ms)?),
                None => None,
            },
            account_id,
            arn,
        })),
        InBody::GoogleAccessToken {
            token,
            expires_ms,
            principal,
            scopes,
        } => Ok(Credential::GoogleAccessToken(GoogleAccessToken {
            token,
            expires_at: from_ms(expires_ms)?,
            principal,
            scopes,
        })),
        InBody::IdToken { token, expires_ms } => Ok(Credential::IdToken(IdToken {
            token,
            expires_at: from_ms(expires_ms)?,
        })),
        InBody::X509 {
            chain_pem,
            key_pem,
            expires_ms,
            subject,
        } => Ok(Credential::X509(X509Credential {
            chain_pem,
            key_pem,
            expires_at: from_ms(expires_ms)?,
            subject,
        })),
        InBody::AzureAccessToken {
            token,
            expires_ms,
            tenant,
            client_id,
            scope,
        } => Ok(Credential::AzureAccessToken(AzureAccessToken {
            token,
            expires_at: from_ms(expires_ms)?,
            tenant,
            client_id,
            scope,
        })),
        InBody::Error {
            kind,
            hop,
            code,
            message,
            retry_after_ms,
        } => {
            let kind = KINDS
                .iter()
                .find(|(_, n)| *n == kind)
                .map_or(ErrorKind::Transient, |(k, _)| *k);
            let mut e = BrokerError::new(kind, crate::Hop::stored(&hop), message)
                .with_retry_after(retry_after_ms.map(Duration::from_millis));
            e.code = code;
            Err(e)
        }
    };
    Some(Payload {
        writer: raw.writer,
        fresh_until: match raw.fresh_until_ms {
            Some(ms) => Some(from_ms(ms)?),
            None => None,
        },
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_errors_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let creds = [
            Credential::Aws(AwsCredentials {
                access_key_id: "ASIA1".into(),
                secret_access_key: "s3cr3t".into(),
                session_token: Some("tok".into()),
                expiration: Some(t),
                account_id: Some("111122223333".into()),
                arn: None,
            }),
            Credential::GoogleAccessToken(GoogleAccessToken {
                token: "ya29".into(),
                expires_at: t,
                principal: Some("a@b".into()),
                scopes: vec!["s".into()],
            }),
            Credential::IdToken(IdToken {
                token: "eyJ".into(),
                expires_at: t,
            }),
            // Roles Anywhere and chained-role sessions: the assumed-role ARN is kept.
            Credential::Aws(AwsCredentials {
                access_key_id: "ASIA2".into(),
                secret_access_key: "ra-secret".into(),
                session_token: Some("ra-tok".into()),
                expiration: Some(t),
                account_id: Some("111122223333".into()),
                arn: Some("arn:aws:sts::111122223333:assumed-role/spiffe-billing/s".into()),
            }),
            Credential::X509(X509Credential {
                chain_pem: "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n"
                    .repeat(40),
                key_pem: "-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n".into(),
                expires_at: t + time::Duration::milliseconds(250),
                subject: "spiffe://example.org/billing".into(),
            }),
            Credential::AzureAccessToken(AzureAccessToken {
                token: "eyJ.azure".into(),
                expires_at: t,
                tenant: "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d".into(),
                client_id: "c1111111-0000-4000-8000-000000000011".into(),
                scope: "api://idbridge-billing/.default".into(),
            }),
        ];
        for c in creds {
            let bytes = encode("w", Some(t), Ok(&c)).unwrap();
            let p = decode(&bytes).unwrap();
            assert_eq!(p.body.unwrap(), c);
            assert_eq!((p.writer.as_str(), p.fresh_until), ("w", Some(t)));
        }
        let e = BrokerError::new(ErrorKind::Rejected, "aws-sts", "denied")
            .with_code("AccessDenied")
            .with_retry_after(Some(Duration::from_secs(2)));
        let p = decode(&encode("w", None, Err(&e)).unwrap()).unwrap();
        let got = p.body.unwrap_err();
        assert_eq!(
            (
                got.kind,
                got.hop.as_str(),
                got.code.as_deref(),
                got.retry_after
            ),
            (e.kind, "aws-sts", Some("AccessDenied"), e.retry_after)
        );
        assert!(decode(b"{}").is_none());
    }
}
