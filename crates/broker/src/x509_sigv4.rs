//! Signing requests to IAM Roles Anywhere with a certificate and its private key
//! (`AWS4-X509-RSA-SHA256`, `AWS4-X509-ECDSA-SHA256`).
//!
//! The canonical request and string to sign are [`idbridge_wire::x509_sigv4`]'s; the signature
//! is aws-lc-rs's: RSA PKCS#1 v1.5 with SHA-256, or ECDSA P-256 with SHA-256 in DER. ECDSA
//! P-384 keys are refused: Roles Anywhere hashes with SHA-256 whatever the curve, and aws-lc-rs
//! offers P-384 only with SHA-384 (its digest-signing call checks the pairing).
//!
//! [`X509Signer::sign`] adds `Host` (when missing), `X-Amz-Date`, `X-Amz-X509` (the leaf,
//! base64 DER), `X-Amz-X509-Chain` (intermediates, comma-separated, when there are any) and
//! `Authorization`, and signs every header the request then has except `Authorization`,
//! `User-Agent` and `X-Amzn-Trace-Id`, as the Roles Anywhere credential helper does. The
//! credential in the scope is the leaf's serial number in decimal.
//!
//! The private key lives in aws-lc-rs's key object only; the PEM it was read from is zeroized,
//! and `Debug` prints the certificate serial and the key type, never key material.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use idbridge_core::timefmt::amz_date;
use idbridge_wire::x509_sigv4::{self as wire, Algorithm, Authorization};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Headers never signed (the credential helper leaves them out; proxies rewrite them).
const UNSIGNED_HEADERS: [&str; 3] = ["authorization", "user-agent", "x-amzn-trace-id"];

/// Why a signer could not be built or a request signed. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509SignError {
    /// The certificate PEM holds no certificate, or the first one does not parse.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The private key PEM holds no key, or a key of a type Roles Anywhere cannot use.
    #[error("private key: {0}")]
    Key(String),
    /// The private key does not belong to the certificate.
    #[error("private key does not match the certificate's public key")]
    Mismatch,
    /// The request cannot be signed (no host, a header value that is not text).
    #[error("request: {0}")]
    Request(&'static str),
    /// The crypto library refused to sign.
    #[error("signing failed")]
    Signing,
}

enum Key {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// A certificate chain and its private key, ready to sign `CreateSession` requests.
pub struct X509Signer {
    key: Key,
    leaf_der: Vec<u8>,
    intermediates_der: Vec<Vec<u8>>,
    serial: String,
}

impl fmt::Debug for X509Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Signer")
            .field("serial", &self.serial)
            .field("algorithm", &self.algorithm())
            .field("intermediates", &self.intermediates_der.len())
            .finish_non_exhaustive()
    }
}

impl X509Signer {
    /// A signer from PEM text: `chain_pem` holds the leaf first, then any intermediates;
    /// `key_pem` one private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<X509Signer, X509SignError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| X509SignError::Certificate("not PEM".to_owned()))?;
        let Some((leaf, intermediates)) = certs.split_first() else {
            return Err(X509SignError::Certificate(
                "no CERTIFICATE block".to_owned(),
            ));
        };
        let key_pem = Zeroizing::new(key_pem.as_bytes().to_vec());
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| X509SignError::Key("no private key block".to_owned()))?;
        Self::from_der(
            leaf.to_vec(),
            intermediates.iter().map(|c| c.to_vec()).collect(),
            &key,
        )
    }

    /// A signer from DER: the leaf, its intermediates, and the private key.
    pub fn from_der(
        leaf_der: Vec<u8>,
        intermediates_der: Vec<Vec<u8>>,
        key: &PrivateKeyDer<'_>,
    ) -> Result<X509Signer, X509SignError> {
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf_der)
            .map_err(|_| X509SignError::Certificate("not an X.509 certificate".to_owned()))?;
        let serial = cert.tbs_certificate.serial.to_string();
        let spki = cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .to_vec();
        let key = match key {
            PrivateKeyDer::Pkcs1(k) => Key::Rsa(
                RsaKeyPair::from_der(k.secret_pkcs1_der())
                    .map_err(|e| X509SignError::Key(format!("RSA key rejected: {e}")))?,
            ),
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                if let Ok(rsa) = RsaKeyPair::from_pkcs8(der) {
                    Key::Rsa(rsa)
                } else {
                    Key::Ecdsa(ecdsa_key(der)?)
                }
            }
            PrivateKeyDer::Sec1(k) => Key::Ecdsa(ecdsa_key(k.secret_sec1_der())?),
            _ => return Err(X509SignError::Key("unsupported key format".to_owned())),
        };
        let public = match &key {
            Key::Rsa(k) => k.public_key().as_ref().to_vec(),
            Key::Ecdsa(k) => k.public_key().as_ref().to_vec(),
        };
        if public != spki {
            return Err(X509SignError::Mismatch);
        }
        Ok(X509Signer {
            key,
            leaf_der,
            intermediates_der,
            serial,
        })
    }

    /// The algorithm this signer's key gives.
    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            Key::Rsa(_) => Algorithm::Rsa,
            Key::Ecdsa(_) => Algorithm::Ecdsa,
        }
    }

    /// The leaf certificate's serial number, decimal (the credential in the scope).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Signs `request` for `region` at time `at`: adds the certificate headers, `X-Amz-Date`
    /// and `Authorization` (see the module doc).
    pub fn sign(
        &self,
        request: &mut http::Request<Vec<u8>>,
        region: &str,
        at: OffsetDateTime,
    ) -> Result<(), X509SignError> {
        let date = amz_date(at);
        let value =
            |s: String| HeaderValue::try_from(s).map_err(|_| X509SignError::Request("header"));
        if !request.headers().contains_key(http::header::HOST) {
            let host = request
                .uri()
                .authority()
                .ok_or(X509SignError::Request("no host in the URI"))?
                .to_string();
            request
                .headers_mut()
                .insert(http::header::HOST, value(host)?);
        }
        let headers = request.headers_mut();
        headers.insert("x-amz-date", value(date.clone())?);
        headers.insert(wire::X509_HEADER, value(STANDARD.encode(&self.leaf_der))?);
        if !self.intermediates_der.is_empty() {
            let chain: Vec<String> = self
                .intermediates_der
                .iter()
                .map(|c| STANDARD.encode(c))
                .collect();
            headers.insert(wire::X509_CHAIN_HEADER, value(chain.join(","))?);
        }
        headers.remove(http::header::AUTHORIZATION);

        let mut all = Vec::new();
        for (name, v) in request.headers() {
            let v = v
                .to_str()
                .map_err(|_| X509SignError::Request("a header value is not text"))?;
            all.push((name.as_str().to_owned(), v.to_owned()));
        }
        let mut signed: Vec<String> = all
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !UNSIGNED_HEADERS.contains(&n.as_str()))
            .collect();
        signed.sort();
        signed.dedup();
        let uri = request.uri();
        let canonical = wire::canonical_request(
            request.method().as_str(),
            uri.path(),
            uri.query().unwrap_or(""),
            &all,
            &signed,
            request.body(),
        );
        let algorithm = self.algorithm();
        let to_sign = wire::string_to_sign(algorithm, &date, region, &canonical);
        let signature = self.sign_bytes(to_sign.as_bytes())?;
        let auth = Authorization {
            algorithm,
            serial: self.serial.clone(),
            date: date.get(..8).unwrap_or_default().to_owned(),
            region: region.to_owned(),
            service: wire::SERVICE.to_owned(),
            signed_headers: signed,
            signature: hex::encode(signature),
        };
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value(auth.to_header())?);
        Ok(())
    }

    /// The raw signature of `message` (the string to sign).
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, X509SignError> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| X509SignError::Signing)?;
                Ok(out)
            }
            Key::Ecdsa(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| X509SignError::Signing),
        }
    }
}

fn ecdsa_key(der: &[u8]) -> Result<EcdsaKeyPair, X509SignError> {
    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, der).map_err(|_| {
        X509SignError::Key(
            "not an RSA or ECDSA P-256 key (P-384 cannot sign with SHA-256 here)".to_owned(),
        )
    })
}

#[cfg(test)]
mod tests;
