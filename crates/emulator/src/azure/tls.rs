//! HTTPS for the emulated Entra ID: a local CA generated at start-up (rcgen, ECDSA P-256) and a
//! server certificate it issues for `localhost`, `127.0.0.1` and `::1`, served with rustls.
//!
//! Azure SDKs accept only an `https://` authority, so clients must trust the CA: the emulator
//! writes it to a file and names that file in the env file (`SSL_CERT_FILE`,
//! `REQUESTS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`). The CA lives only as long as the emulator; its
//! key is never written anywhere.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::keys::KeyError;

/// The CA's certificate and the server's certificate and key.
pub struct TlsMaterial {
    /// The CA certificate, PEM (what clients trust).
    pub ca_pem: String,
    server_cert: CertificateDer<'static>,
    ca_cert: CertificateDer<'static>,
    server_key: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

fn key_error(e: impl std::fmt::Display) -> KeyError {
    KeyError::new(e.to_string())
}

impl TlsMaterial {
    /// Generates a CA and a server certificate for the loopback names.
    pub fn generate() -> Result<Self, KeyError> {
        let ca_key = rcgen::KeyPair::generate().map_err(key_error)?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(key_error)?;
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "idbridge emulator local CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(key_error)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = rcgen::KeyPair::generate().map_err(key_error)?;
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .map_err(key_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&server_key, &issuer).map_err(key_error)?;
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            server_cert: cert.der().clone(),
            ca_cert: ca_cert.der().clone(),
            server_key: zeroize::Zeroizing::new(server_key.serialize_der()),
        })
    }

    /// A rustls server configuration (aws-lc-rs, HTTP/1.1).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, KeyError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.to_vec()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(key_error)?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone(), self.ca_cert.clone()], key)
            .map_err(key_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true; open connections are
/// dropped then.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    router: Router,
    config: rustls::ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Ok((tcp, _peer)) = accepted else {
            continue;
        };
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(router.clone()));
        // Reap finished connections so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(tls)) = handshake.await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
    connections.shutdown().await;
}
