//! The canonical request and string to sign of IAM Roles Anywhere's certificate signatures
//! (`AWS4-X509-RSA-SHA256`, `AWS4-X509-ECDSA-SHA256`), shared by the signer (the broker) and the
//! verifier (the emulated `CreateSession`).
//!
//! The process is SigV4's with three differences: the credential in the scope is the signing
//! certificate's serial number in decimal, the service is `rolesanywhere`, and the string to sign
//! is signed with the certificate's private key (RSA PKCS#1 v1.5 or ECDSA with SHA-256, DER
//! signature, lower-case hex) instead of an HMAC chain. The certificate travels base64 (DER,
//! standard alphabet, padded) in `X-Amz-X509`, intermediates comma-separated in
//! `X-Amz-X509-Chain`, both signed.
//!
//! `aws-sigv4` keeps its canonical request private, so the canonicalisation is here, following
//! SigV4's rules as botocore applies them to a non-S3 service (a peer test checks this file's
//! output against botocore's `SigV4Auth.canonical_request`):
//!
//! ```text
//! METHOD \n
//! URI-encoded path (each byte outside A–Z a–z 0–9 - _ . ~ / as %XX) \n
//! query: pairs decoded, re-encoded, sorted by name then value, joined with & \n
//! one `name:value\n` per signed header (lower-case name; repeated values joined with `,`;
//!   values trimmed, runs of spaces squeezed) \n
//! signed header names joined with ; \n
//! hex(sha256(body))
//! ```
//!
//! and the string to sign is `ALGORITHM \n X-Amz-Date \n DATE/REGION/rolesanywhere/aws4_request
//! \n hex(sha256(canonical request))`. No signature is computed here.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The service name in the credential scope.
pub const SERVICE: &str = "rolesanywhere";

/// The header carrying the signing certificate (base64 DER).
pub const X509_HEADER: &str = "x-amz-x509";

/// The header carrying the intermediates (comma-separated base64 DER).
pub const X509_CHAIN_HEADER: &str = "x-amz-x509-chain";

/// Bytes SigV4 leaves unencoded in query names and values.
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Bytes SigV4 leaves unencoded in the path.
const PATH_SET: &AsciiSet = &QUERY_SET.remove(b'/');

/// The two signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `AWS4-X509-RSA-SHA256`: RSA PKCS#1 v1.5 over SHA-256.
    Rsa,
    /// `AWS4-X509-ECDSA-SHA256`: ECDSA over SHA-256 (whatever the curve), DER-encoded.
    Ecdsa,
}

impl Algorithm {
    /// The name in the `Authorization` header and the string to sign.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rsa => "AWS4-X509-RSA-SHA256",
            Algorithm::Ecdsa => "AWS4-X509-ECDSA-SHA256",
        }
    }

    /// The algorithm named `name` (exact, as AWS compares it).
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "AWS4-X509-RSA-SHA256" => Some(Algorithm::Rsa),
            "AWS4-X509-ECDSA-SHA256" => Some(Algorithm::Ecdsa),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `DATE/REGION/rolesanywhere/aws4_request`, `DATE` being `YYYYMMDD`.
pub fn credential_scope(date: &str, region: &str) -> String {
    format!("{date}/{region}/{SERVICE}/aws4_request")
}

/// The canonical URI of `path` (the path as sent, before any `?`).
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    utf8_percent_encode(path, PATH_SET).to_string()
}

/// The canonical query string of `query` (the raw text after `?`, without it). `+` is read as a
/// space, as form encoding has it, so `+` and `%20` canonicalise the same way.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode_query(k), encode_query(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode_query(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    let decoded = percent_decode_str(&spaced).decode_utf8_lossy();
    utf8_percent_encode(&decoded, QUERY_SET).to_string()
}

/// A header value as the canonical request has it: trimmed, runs of spaces squeezed to one.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request. `headers` are every request header (any case, repeats allowed);
/// `signed` the lower-case names to sign, in any order (they are sorted here).
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    signed: &[String],
    body: &[u8],
) -> String {
    let mut names: Vec<String> = signed.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let mut out = String::new();
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(path));
    out.push('\n');
    out.push_str(&canonical_query(query));
    out.push('\n');
    for name in &names {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_value(v))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(&hex_sha256(body));
    out
}

/// The string to sign for `canonical_request`, signed at `amz_date` (`YYYYMMDDTHHMMSSZ`) in
/// `region`.
pub fn string_to_sign(
    algorithm: Algorithm,
    amz_date: &str,
    region: &str,
    canonical_request: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    format!(
        "{algorithm}\n{amz_date}\n{}\n{}",
        credential_scope(date, region),
        hex_sha256(canonical_request.as_bytes())
    )
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Authorization` header of a certificate-signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The signing certificate's serial number, decimal.
    pub serial: String,
    /// `YYYYMMDD` of the scope.
    pub date: String,
    /// Region of the scope.
    pub region: String,
    /// Service of the scope (`rolesanywhere` when well-formed).
    pub service: String,
    /// Signed header names, lower-case, as listed.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizationError {
    /// The algorithm is not one of the two certificate algorithms.
    #[error("unsupported signing algorithm")]
    Algorithm,
    /// A component is missing or malformed; the text names it.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl Authorization {
    /// Parses `ALGORITHM Credential=SERIAL/DATE/REGION/SERVICE/aws4_request,
    /// SignedHeaders=a;b, Signature=HEX` (components in any order, spaces after commas optional).
    pub fn parse(header: &str) -> Result<Authorization, AuthorizationError> {
        let (alg, rest) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthorizationError::Malformed("Authorization header"))?;
        let algorithm = Algorithm::parse(alg).ok_or(AuthorizationError::Algorithm)?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or(AuthorizationError::Malformed("Authorization header"))?;
            match k {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => return Err(AuthorizationError::Malformed("Authorization header")),
            }
        }
        let credential = credential.ok_or(AuthorizationError::Malformed("Credential"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [serial, date, region, service, terminator] = scope[..] else {
            return Err(AuthorizationError::Malformed("Credential"));
        };
        if terminator != "aws4_request"
            || serial.is_empty()
            || !serial.bytes().all(|b| b.is_ascii_digit())
            || date.len() != 8
            || !date.bytes().all(|b| b.is_ascii_digit())
            || region.is_empty()
        {
            return Err(AuthorizationError::Malformed("Credential"));
        }
        let signed = signed.ok_or(AuthorizationError::Malformed("SignedHeaders"))?;
        let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
        if signed_headers.iter().any(|h| h.is_empty()) {
            return Err(AuthorizationError::Malformed("SignedHeaders"));
        }
        let signature = signature.ok_or(AuthorizationError::Malformed("Signature"))?;
        if signature.is_empty() || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthorizationError::Malformed("Signature"));
        }
        Ok(Authorization {
            algorithm,
            serial: serial.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!(
            "{} Credential={}/{}, SignedHeaders={}, Signature={}",
            self.algorithm,
            self.serial,
            credential_scope(&self.date, &self.region),
            self.signed_headers.join(";"),
            self.signature
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<(String, String)> {
        [
            ("Content-Type", "application/json"),
            ("Host", "127.0.0.1:8080"),
            ("X-Amz-Date", "20240706T113859Z"),
            ("X-Amz-X509", "MIIB"),
            ("User-Agent", "not signed"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    #[test]
    fn canonical_request_has_the_blank_line_and_sorted_parts() {
        let signed: Vec<String> = ["x-amz-x509", "host", "content-type", "x-amz-date"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let cr = canonical_request(
            "POST",
            "/sessions",
            "trustAnchorArn=arn%3Aaws%3Ax&profileArn=p+q",
            &headers(),
            &signed,
            b"{}",
        );
        let expected = "POST\n/sessions\nprofileArn=p%20q&trustAnchorArn=arn%3Aaws%3Ax\n\
            content-type:application/json\nhost:127.0.0.1:8080\nx-amz-date:20240706T113859Z\n\
            x-amz-x509:MIIB\n\ncontent-type;host;x-amz-date;x-amz-x509\n\
            44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(cr, expected);
    }

    #[test]
    fn values_are_squeezed_and_repeats_joined() {
        let headers = vec![
            ("A".to_owned(), "  x   y ".to_owned()),
            ("a".to_owned(), "z".to_owned()),
        ];
        let cr = canonical_request("post", "", "", &headers, &["a".to_owned()], b"");
        assert!(cr.starts_with("POST\n/\n\na:x y,z\n\na\n"), "{cr}");
    }

    #[test]
    fn string_to_sign_uses_the_date_of_x_amz_date() {
        let sts = string_to_sign(Algorithm::Ecdsa, "20240706T113859Z", "us-east-2", "");
        assert_eq!(
            sts,
            "AWS4-X509-ECDSA-SHA256\n20240706T113859Z\n20240706/us-east-2/rolesanywhere/aws4_request\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn authorization_round_trips_and_rejects_malformed_headers() {
        let text = "AWS4-X509-RSA-SHA256 Credential=21/20240706/us-east-2/rolesanywhere/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-x509, Signature=500d79d9";
        let auth = Authorization::parse(text).unwrap();
        assert_eq!(auth.serial, "21");
        assert_eq!(auth.region, "us-east-2");
        assert_eq!(auth.algorithm, Algorithm::Rsa);
        assert_eq!(auth.to_header(), text);
        assert_eq!(
            Authorization::parse("AWS4-HMAC-SHA256 Credential=a/b"),
            Err(AuthorizationError::Algorithm)
        );
        for bad in [
            "AWS4-X509-RSA-SHA256 Credential=ab/20240706/r/rolesanywhere/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-X509-RSA-SHA256 Credential=1/2024/r/rolesanywhere/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-X509-RSA-SHA256 Credential=1/20240706/r/rolesanywhere/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-X509-RSA-SHA256 Credential=1/20240706/r/rolesanywhere/aws4_request, Signature=00",
            "AWS4-X509-RSA-SHA256",
        ] {
            assert!(Authorization::parse(bad).is_err(), "{bad}");
        }
    }
}
