//! The JWT and X.509 messages of the SPIFFE Workload API (`workload.proto`, which has no `package`),
//! declared with `prost` so no protobuf compiler is needed. Field numbers follow the proto file.

use std::collections::HashMap;

/// The gRPC service name: `/SpiffeWorkloadAPI/<Method>`.
pub const SERVICE: &str = "SpiffeWorkloadAPI";

/// `JWTSVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidRequest {
    /// Audiences the JWT-SVIDs are for (required, one or more).
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// One SPIFFE ID to fetch; empty = every identity of the caller.
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidResponse {
    /// The JWT-SVIDs, the default identity first.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvid>,
}

/// `JWTSVID`. Its `Debug` (hand-written, not prost's) leaves out the token.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct JwtSvid {
    /// The SPIFFE ID (`sub`).
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token, JWS compact serialization.
    #[prost(string, tag = "2")]
    pub svid: String,
    /// Operator-chosen hint telling SVIDs apart.
    #[prost(string, tag = "3")]
    pub hint: String,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// `JWTBundlesRequest` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesRequest {}

/// `JWTBundlesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesResponse {
    /// Trust domain SPIFFE ID (`spiffe://example.org`) → JWKS document (JSON bytes).
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// `ValidateJWTSVIDRequest`. Its `Debug` (hand-written, not prost's) leaves out the token.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ValidateJwtSvidRequest {
    /// The audience the token must carry.
    #[prost(string, tag = "1")]
    pub audience: String,
    /// The token.
    #[prost(string, tag = "2")]
    pub svid: String,
}

impl std::fmt::Debug for ValidateJwtSvidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidateJwtSvidRequest")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// `ValidateJWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateJwtSvidResponse {
    /// The token's SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token's claims.
    #[prost(message, optional, tag = "2")]
    pub claims: Option<prost_types::Struct>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn debug_leaves_out_the_svids() {
        let response = JwtSvidResponse {
            svids: vec![JwtSvid {
                spiffe_id: "spiffe://example.org/w".into(),
                svid: "eyJhbGciOi.jwt-svid-secret.sig".into(),
                hint: "h".into(),
            }],
        };
        let request = ValidateJwtSvidRequest {
            audience: "a".into(),
            svid: "eyJhbGciOi.validated-secret.sig".into(),
        };
        let printed = format!("{response:?} {response:#?} {request:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("spiffe://example.org/w"), "{printed}");
    }

    /// The wire bytes are those of the proto definitions (tags and wire types by hand).
    #[test]
    fn field_numbers_match_workload_proto() {
        let req = JwtSvidRequest {
            audience: vec!["a".into()],
            spiffe_id: "s".into(),
        };
        assert_eq!(req.encode_to_vec(), [0x0a, 1, b'a', 0x12, 1, b's']);
        let svid = JwtSvid {
            spiffe_id: "i".into(),
            svid: "t".into(),
            hint: "h".into(),
        };
        assert_eq!(
            svid.encode_to_vec(),
            [0x0a, 1, b'i', 0x12, 1, b't', 0x1a, 1, b'h']
        );
        let v = ValidateJwtSvidRequest {
            audience: "a".into(),
            svid: "t".into(),
        };
        assert_eq!(v.encode_to_vec(), [0x0a, 1, b'a', 0x12, 1, b't']);
        let b = JwtBundlesResponse {
            bundles: HashMap::from([("k".to_owned(), b"v".to_vec())]),
        };
        // Map entry: field 1, length-delimited; key = 1, value = 2.
        assert_eq!(b.encode_to_vec(), [0x0a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
        let r = ValidateJwtSvidResponse {
            spiffe_id: "i".into(),
            claims: Some(prost_types::Struct::default()),
        };
        assert_eq!(r.encode_to_vec(), [0x0a, 1, b'i', 0x12, 0]);
    }
}

/// `X509SVIDRequest` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// The X.509-SVIDs, the default identity first.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// CRLs (DER), none here.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Federated trust domain → CA certificates (concatenated DER), none here.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`. Its `Debug` (hand-written, not prost's) leaves out the private key.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct X509Svid {
    /// The SPIFFE ID (the certificate's URI SAN).
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The certificate chain, leaf first, concatenated DER.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// The private key, PKCS#8 DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// The trust domain's CA certificates, concatenated DER.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// Operator-chosen hint telling SVIDs apart.
    #[prost(string, tag = "5")]
    pub hint: String,
}

impl std::fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("x509_svid_len", &self.x509_svid.len())
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// `X509BundlesRequest` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// CRLs (DER), none here.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// Trust domain SPIFFE ID → CA certificates (concatenated DER).
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Vec<u8>>,
}
