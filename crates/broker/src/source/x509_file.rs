//! Source `x509-file`: a certificate chain and its private key from PEM files (a workload
//! certificate from an on-premises CA, cert-manager, a SPIRE agent's disk output). Both files are
//! re-read on every fetch, so a certificate rotated in place is picked up at the next refresh.
//! The key must belong to the leaf (checked when read, with the Roles Anywhere signer that will
//! use it).

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use idbridge_core::{Credential, SecretString, X509Credential};
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::step::{Facts, Input, KindError, Parse, Step, StepFuture, Yields};
use crate::x509_sigv4::X509Signer;
use crate::{BrokerError, Context, ErrorKind, Hop, HopReport};

/// The hop.
pub const HOP: Hop = Hop::named("x509-file");

/// The largest certificate or key file read.
const MAX_BYTES: u64 = 256 * 1024;

/// `source = { kind = "x509-file", … }`: `certificate` (PEM file: the leaf, then any
/// intermediates) and `private_key` (PEM file: PKCS#8, PKCS#1 RSA or SEC1 EC), relative to the
/// config file; re-read on every refresh.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509File {
    certificate: PathBuf,
    private_key: PathBuf,
}

impl X509File {
    /// Reads `source = { kind = "x509-file", … }`.
    pub fn parse(table: toml::Value, p: &Parse<'_>) -> Result<Box<dyn Step>, KindError> {
        let raw: X509File = p.table(table)?;
        Ok(Box::new(X509File {
            certificate: p.path(raw.certificate),
            private_key: p.path(raw.private_key),
        }))
    }

    async fn fetch(&self, hops: &mut Vec<HopReport>) -> Result<Credential, BrokerError> {
        let started = Instant::now();
        let read = |path: PathBuf| async move {
            tokio::task::spawn_blocking(move || {
                idbridge_core::file::read_text_file(&path, MAX_BYTES)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            })
            .await
            .map_err(|_| "the file reader stopped".to_owned())?
        };
        let io = |m: String| BrokerError::new(ErrorKind::Io, HOP, m);
        let chain = read(self.certificate.clone()).await.map_err(io)?;
        let key = Zeroizing::new(read(self.private_key.clone()).await.map_err(io)?);
        let cred = credential_from_pem(chain, &key).map_err(|m| {
            BrokerError::new(
                ErrorKind::InvalidConfiguration,
                HOP,
                format!(
                    "{} / {}: {m}",
                    self.certificate.display(),
                    self.private_key.display()
                ),
            )
        })?;
        hops.push(HopReport::new(
            HOP,
            self.certificate.display().to_string(),
            format!("certificate: {}", cred.subject),
            Some(cred.expires_at),
            started,
        ));
        Ok(Credential::X509(cred))
    }
}

impl Step for X509File {
    fn kind(&self) -> &'static str {
        "x509-file"
    }

    fn yields(&self) -> Yields {
        Yields::X509
    }

    fn describe(&self) -> String {
        format!(
            "certificate {} (key {})",
            self.certificate.display(),
            self.private_key.display()
        )
    }

    fn facts(&self) -> Facts<'_> {
        Facts::default()
    }

    fn run<'a>(
        &'a self,
        _input: Input<'a>,
        _ctx: &'a Context,
        hops: &'a mut Vec<HopReport>,
    ) -> StepFuture<'a> {
        Box::pin(self.fetch(hops))
    }
}

/// A credential from a PEM chain (leaf first) and key: checks that the key signs for the leaf,
/// and reads the leaf's expiry and identity (its first URI SAN, such as a SPIFFE ID, else its
/// subject). The message never quotes the key.
pub(crate) fn credential_from_pem(
    chain_pem: String,
    key_pem: &str,
) -> Result<X509Credential, String> {
    X509Signer::from_pem(&chain_pem, key_pem).map_err(|e| e.to_string())?;
    let leaf = rustls_pki_types::CertificateDer::from_pem_slice(chain_pem.as_bytes())
        .map_err(|_| "certificate: no CERTIFICATE block".to_owned())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|_| "certificate: not an X.509 certificate".to_owned())?;
    let expires_at =
        time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
            .map_err(|_| "certificate: notAfter out of range".to_owned())?;
    let uri = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
        });
    let subject = uri.unwrap_or_else(|| cert.subject().to_string());
    Ok(X509Credential {
        chain_pem,
        key_pem: SecretString::new(key_pem),
        expires_at,
        subject,
    })
}

/// DER as one PEM block (`label` is `CERTIFICATE`, `PRIVATE KEY`). The text of a key block is
/// as secret as the key: wrap it in [`Zeroizing`] or a [`SecretString`].
pub(crate) fn pem_block(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}
