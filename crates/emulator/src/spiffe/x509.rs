//! The X.509 profile of the emulated Workload API: the trust domain's CA, `FetchX509SVID` and
//! `FetchX509Bundles`.
//!
//! The CA (ECDSA P-256, generated at start-up, URI SAN `spiffe://<trust domain>`) signs one leaf
//! per workload and fetch: URI SAN = the SPIFFE ID, subject `C=US, O=SPIFFE`, `CA:false`, key usage
//! digital signature / key encipherment / key agreement, extended key usage server and client
//! auth, valid from 10 seconds before issue for `x509_svid_ttl_seconds`, with a fresh P-256 key
//! (sent PKCS#8 DER, never logged).
//!
//! Both methods stream. `FetchX509SVID` sends the caller's SVIDs at once (the uid selectors as
//! for JWT-SVIDs; none → `PermissionDenied`), then fresh ones every half lifetime, as a SPIRE
//! agent rotates before expiry, until the client leaves or the emulator stops.
//! `FetchX509Bundles` sends `{spiffe://<trust domain>: CA DER}` once and holds the stream open.
//! Roles Anywhere can trust the CA (`spiffe_trust_domain` on a trust anchor).

use std::fmt;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};
use zeroize::Zeroizing;

use super::proto::{
    X509BundlesRequest, X509BundlesResponse, X509Svid, X509SvidRequest, X509SvidResponse,
};
use super::{SpiffeWorkload, WorkloadApi, caller_uid, check_security_header};
use crate::keys::KeyError;

/// How far before the issue time a leaf's validity starts (clock skew between peers), as SPIRE
/// backdates its SVIDs.
const BACKDATE: time::Duration = time::Duration::seconds(10);

/// The CA's lifetime from start-up.
const CA_LIFETIME: time::Duration = time::Duration::days(365);

/// A trust domain's X.509 CA.
pub struct SpiffeCa {
    key: KeyPair,
    params: CertificateParams,
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl fmt::Debug for SpiffeCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeCa")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// A leaf certificate and its private key.
pub struct IssuedSvid {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

fn key_error(e: rcgen::Error) -> KeyError {
    KeyError::new(format!("X.509 CA: {e}"))
}

impl SpiffeCa {
    /// A fresh CA for `trust_domain`, valid from `now`.
    pub fn generate(trust_domain: &str, now: OffsetDateTime) -> Result<SpiffeCa, KeyError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(key_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(key_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "SPIFFE");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}")
                .try_into()
                .map_err(key_error)?,
        )];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        let cert = params.self_signed(&key).map_err(key_error)?;
        Ok(SpiffeCa {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key,
            params,
        })
    }

    /// A leaf for `spiffe_id`, valid from `now - 10 s` for `ttl`.
    pub fn issue(
        &self,
        spiffe_id: &str,
        now: OffsetDateTime,
        ttl: time::Duration,
    ) -> Result<IssuedSvid, KeyError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(key_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(key_error)?;
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "SPIFFE");
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().map_err(key_error)?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(key_error)?;
        Ok(IssuedSvid {
            cert_der: cert.der().to_vec(),
            key_der: Zeroizing::new(key.serialize_der()),
        })
    }
}

type SvidStream = ReceiverStream<Result<X509SvidResponse, Status>>;
type BundleStream = ReceiverStream<Result<X509BundlesResponse, Status>>;

impl WorkloadApi {
    fn x509_ca(&self) -> Result<&SpiffeCa, Status> {
        self.state
            .spiffe_ca
            .as_ref()
            .ok_or_else(|| Status::permission_denied("no identity issued"))
    }

    fn x509_response(&self, workloads: &[SpiffeWorkload]) -> Result<X509SvidResponse, Status> {
        let cfg = self.config()?;
        let ca = self.x509_ca()?;
        let now = self.state.clock.now();
        let ttl = time::Duration::seconds(cfg.x509_svid_ttl_seconds);
        let svids = workloads
            .iter()
            .map(|w| {
                let issued = ca
                    .issue(&w.spiffe_id, now, ttl)
                    .map_err(|_| Status::internal("issuing the X.509-SVID failed"))?;
                Ok(X509Svid {
                    spiffe_id: w.spiffe_id.clone(),
                    x509_svid: issued.cert_der,
                    x509_svid_key: issued.key_der.to_vec(),
                    bundle: ca.cert_der.clone(),
                    hint: String::new(),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(X509SvidResponse {
            svids,
            ..Default::default()
        })
    }

    pub(super) fn fetch_x509_svid(
        &self,
        req: Request<X509SvidRequest>,
    ) -> Result<SvidStream, Status> {
        self.state.bump("spiffe.FetchX509SVID");
        check_security_header(&req)?;
        let uid = caller_uid(&req);
        let cfg = self.config()?;
        let workloads: Vec<SpiffeWorkload> = cfg.workloads_for(uid).cloned().collect();
        if workloads.is_empty() {
            tracing::info!(?uid, "FetchX509SVID: no identity for the caller");
            return Err(Status::permission_denied("no identity issued"));
        }
        let first = self.x509_response(&workloads)?;
        let rotate_every = Duration::from_secs(
            u64::try_from(cfg.x509_svid_ttl_seconds / 2)
                .unwrap_or(1)
                .max(1),
        );
        let (tx, rx) = mpsc::channel(1);
        let mut stop = self.shutdown.clone();
        let api = self.clone();
        tokio::spawn(async move {
            let mut next = Ok(first);
            loop {
                if tx.send(next).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(rotate_every) => {}
                }
                tracing::info!(?uid, "FetchX509SVID: rotating X.509-SVIDs");
                next = api.x509_response(&workloads);
            }
        });
        tracing::info!(?uid, "FetchX509SVID: issued X.509-SVIDs");
        Ok(ReceiverStream::new(rx))
    }

    pub(super) fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<BundleStream, Status> {
        self.state.bump("spiffe.FetchX509Bundles");
        check_security_header(&req)?;
        let cfg = self.config()?;
        let ca = self.x509_ca()?;
        let message = X509BundlesResponse {
            bundles: [(cfg.trust_domain_id(), ca.cert_der.clone())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(1);
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
            tokio::select! {
                () = tx.closed() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}
