//! The EC2 instance metadata service (IMDSv2), serving side: the request rules, the metadata
//! tree and the JSON documents, shared by idbridge's IMDS frontend (`idbridge-serve`) and the
//! emulator's instance, so both answer the SDKs alike.
//!
//! * [`admit`]: `PUT /latest/api/token` is the only PUT (other methods there are 405); a token
//!   PUT carrying `X-Forwarded-For` is 403 (tokens are not handed through proxies); its
//!   `x-aws-ec2-metadata-token-ttl-seconds` must be 1..=21600 in plain digits (else 400) and is
//!   echoed on the answer (aws-config fails without it). Every other request is a `GET` or
//!   `HEAD` (else 405) whose `x-aws-ec2-metadata-token`, when present, the server checks
//!   against its own token table (401 when not live).
//! * [`Node`]: the tree under `/`. Directories list their entries one per line with **no
//!   trailing newline** (subdirectories end with `/`, except in `/` and `/latest`) and answer with or without their
//!   trailing slash; values only without. [`Instance::tree`] builds the instance's tree, so
//!   `placement/availability-zone` (no trailing newline: clients cut its last character to get
//!   the region), `placement/region` and the identity document's `region` always agree.
//! * Documents: [`RoleCredentials`] (`iam/security-credentials/ROLE`), [`RoleFailure`] (EC2's
//!   failure form of it, HTTP 200 without keys), [`IamInfo`] (`iam/info`) and
//!   [`IdentityDocument`] (`dynamic/instance-identity/document`), all `text/plain` as EC2
//!   serves them, pretty-printed, with `YYYY-MM-DDTHH:MM:SSZ` times.
//!
//! Who reads what: aws-sdk-go (v1 and v2) and the Java SDKs take the region from the identity
//! document only; aws-config (Rust) from `placement/region`; botocore and google-auth from
//! `placement/availability-zone`. `iam/security-credentials-extended/` is not served (404) so
//! newer SDKs fall back to the legacy path.

use http::Method;
use http::header::HeaderMap;
use serde::Serialize;

/// Path of the session-token endpoint.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Request header carrying a session token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Request header with the wanted token lifetime; echoed on the response.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Longest token lifetime EC2 grants (six hours).
pub const MAX_TOKEN_TTL: u32 = 21_600;
/// The `Server` header of EC2's metadata service.
pub const SERVER: &str = "EC2ws";
/// Content type of every value, listing and document.
pub const TEXT: &str = "text/plain";
/// `version` of the identity document EC2 serves today.
pub const IDENTITY_DOCUMENT_VERSION: &str = "2017-09-30";

/// What a request is, once the request rules are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// A token PUT with a valid TTL: issue a token of this many seconds and echo the TTL.
    TokenPut(u32),
    /// A metadata read: check the token header (if any) against the token table, then look
    /// the path up.
    Read,
}

/// A request refused by the request rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A method the path does not take: 405.
    MethodNotAllowed,
    /// A token PUT carrying `X-Forwarded-For`: 403.
    Proxied,
    /// A token PUT without a TTL in 1..=21600: 400.
    BadTtl,
}

impl Refused {
    /// The HTTP status EC2 answers.
    pub fn status(self) -> http::StatusCode {
        match self {
            Refused::MethodNotAllowed => http::StatusCode::METHOD_NOT_ALLOWED,
            Refused::Proxied => http::StatusCode::FORBIDDEN,
            Refused::BadTtl => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Applies the request rules to a request's method, path and headers.
pub fn admit(method: &Method, path: &str, headers: &HeaderMap) -> Result<Admitted, Refused> {
    if path == TOKEN_PATH {
        if *method != Method::PUT {
            return Err(Refused::MethodNotAllowed);
        }
        if headers.contains_key("x-forwarded-for") {
            return Err(Refused::Proxied);
        }
        return token_ttl(headers)
            .map(Admitted::TokenPut)
            .ok_or(Refused::BadTtl);
    }
    if *method != Method::GET && *method != Method::HEAD {
        return Err(Refused::MethodNotAllowed);
    }
    Ok(Admitted::Read)
}

/// The TTL of a token PUT: 1 to 5 plain digits, within 1..=[`MAX_TOKEN_TTL`].
pub fn token_ttl(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|ttl| (1..=MAX_TOKEN_TTL).contains(ttl))
}

/// A node of the metadata tree; `M` is what a leaf the server answers itself carries.
#[derive(Debug)]
pub enum Node<M> {
    /// A directory: its entries by name, subdirectories listed with a trailing `/`.
    Dir(Vec<(String, Node<M>)>),
    /// A directory whose listing names its entries without a slash, as EC2 lists `/` (the
    /// versions) and `/latest`.
    Index(Vec<(String, Node<M>)>),
    /// A text value, served as is.
    Value(String),
    /// A leaf the server answers itself (the role's credentials).
    Own(M),
}

/// The node a path leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a, M> {
    /// A value or a listing to send.
    Text(String),
    /// A leaf for the server.
    Own(&'a M),
}

impl<M> Node<M> {
    fn dir(entries: Vec<(&str, Node<M>)>) -> Self {
        Node::Dir(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// What `path` (from the root, `/latest/…`) answers, or `None` (404). Directories answer
    /// with or without their trailing slash, values and own leaves only without.
    pub fn lookup(&self, path: &str) -> Option<Found<'_, M>> {
        let (trimmed, slash) = match path.strip_suffix('/') {
            Some(p) => (p, true),
            None => (path, false),
        };
        let mut node = self;
        for seg in trimmed.split('/').filter(|s| !s.is_empty()) {
            let (Node::Dir(entries) | Node::Index(entries)) = node else {
                return None;
            };
            node = &entries.iter().find(|(name, _)| name == seg)?.1;
        }
        match node {
            Node::Index(entries) => Some(Found::Text(
                entries
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            Node::Dir(entries) => Some(Found::Text(
                entries
                    .iter()
                    .map(|(name, n)| match n {
                        Node::Dir(_) | Node::Index(_) => format!("{name}/"),
                        _ => name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            Node::Value(v) if !slash => Some(Found::Text(v.clone())),
            Node::Own(m) if !slash => Some(Found::Own(m)),
            _ => None,
        }
    }
}

/// The instance a metadata service describes. Both servers fill one in and take its
/// [`tree`](Self::tree), so their listings and values agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `instance-id`, `i-` and hex digits.
    pub instance_id: String,
    /// The account of the instance role (`accountId`).
    pub account_id: String,
    /// `placement/availability-zone`, e.g. `us-east-1a`.
    pub availability_zone: String,
    /// `placement/region`, e.g. `us-east-1`.
    pub region: String,
    /// `instance-type`.
    pub instance_type: String,
    /// `ami-id` (`imageId`).
    pub image_id: String,
    /// `local-ipv4` (`privateIp`).
    pub private_ip: String,
    /// `hostname` and `local-hostname`.
    pub hostname: String,
    /// `x86_64`, `arm64` or `i386`.
    pub architecture: String,
    /// When the instance was launched (`pendingTime`), as `YYYY-MM-DDTHH:MM:SSZ`.
    pub pending_time: String,
    /// The instance role's name, listed at `iam/security-credentials/`.
    pub role_name: String,
}

impl Instance {
    /// `ip-a-b-c-d.ec2.internal` in us-east-1, `ip-a-b-c-d.REGION.compute.internal` elsewhere.
    pub fn default_hostname(private_ip: &str, region: &str) -> String {
        let ip = private_ip.replace('.', "-");
        match region {
            "us-east-1" => format!("ip-{ip}.ec2.internal"),
            region => format!("ip-{ip}.{region}.compute.internal"),
        }
    }

    /// The instance's identity document.
    pub fn identity_document(&self) -> IdentityDocument {
        IdentityDocument {
            account_id: self.account_id.clone(),
            architecture: self.architecture.clone(),
            availability_zone: self.availability_zone.clone(),
            billing_products: None,
            devpay_product_codes: None,
            marketplace_product_codes: None,
            image_id: self.image_id.clone(),
            instance_id: self.instance_id.clone(),
            instance_type: self.instance_type.clone(),
            kernel_id: None,
            pending_time: self.pending_time.clone(),
            private_ip: self.private_ip.clone(),
            ramdisk_id: None,
            region: self.region.clone(),
            version: IDENTITY_DOCUMENT_VERSION.to_owned(),
        }
    }

    /// The metadata tree: `iam/info` is `info` (the server's rendering of [`IamInfo`]) and
    /// the role's credentials are `credentials`, a leaf the server answers.
    pub fn tree<M>(&self, info: String, credentials: M) -> Node<M> {
        let v = |s: &str| Node::Value(s.to_owned());
        let meta = Node::dir(vec![
            ("ami-id", v(&self.image_id)),
            ("hostname", v(&self.hostname)),
            (
                "iam",
                Node::dir(vec![
                    ("info", Node::Value(info)),
                    (
                        "security-credentials",
                        Node::dir(vec![(&self.role_name, Node::Own(credentials))]),
                    ),
                ]),
            ),
            ("instance-id", v(&self.instance_id)),
            ("instance-type", v(&self.instance_type)),
            ("local-hostname", v(&self.hostname)),
            ("local-ipv4", v(&self.private_ip)),
            (
                "placement",
                Node::dir(vec![
                    ("availability-zone", v(&self.availability_zone)),
                    ("region", v(&self.region)),
                ]),
            ),
            (
                "services",
                Node::dir(vec![
                    ("domain", v("amazonaws.com")),
                    ("partition", v("aws")),
                ]),
            ),
        ]);
        let dynamic = Node::dir(vec![(
            "instance-identity",
            Node::dir(vec![(
                "document",
                Node::Value(pretty(&self.identity_document())),
            )]),
        )]);
        let latest = vec![
            ("dynamic".to_owned(), dynamic),
            ("meta-data".to_owned(), meta),
        ];
        Node::Index(vec![("latest".to_owned(), Node::Index(latest))])
    }
}

/// A document as EC2 prints it (pretty JSON).
pub fn pretty<T: Serialize>(doc: &T) -> String {
    serde_json::to_string_pretty(doc).unwrap_or_default()
}

/// `iam/security-credentials/ROLE`. Borrows the secrets so that they are copied only into the
/// response; its `Debug` leaves them out.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoleCredentials<'a> {
    /// `Success`.
    pub code: &'a str,
    /// When the credentials were issued.
    pub last_updated: String,
    /// `AWS-HMAC`.
    #[serde(rename = "Type")]
    pub kind: &'a str,
    /// Access key id.
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret_access_key: &'a str,
    /// Session token (absent for long-term keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    /// Expiry.
    pub expiration: String,
}

impl std::fmt::Debug for RoleCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// EC2's failure form of the role document (HTTP 200, no keys).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoleFailure<'a> {
    /// The error code.
    pub code: &'a str,
    /// One line.
    pub message: String,
    /// When.
    pub last_updated: String,
}

/// `iam/info`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IamInfo {
    /// `Success`.
    pub code: String,
    /// When.
    pub last_updated: String,
    /// `arn:aws:iam::ACCOUNT:instance-profile/NAME`.
    pub instance_profile_arn: String,
    /// `AIPA…`.
    pub instance_profile_id: String,
}

/// `dynamic/instance-identity/document`, fields in EC2's order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDocument {
    /// The instance's account.
    pub account_id: String,
    /// `x86_64`, `arm64` or `i386`.
    pub architecture: String,
    /// E.g. `us-east-1a`.
    pub availability_zone: String,
    /// Null unless billed through a product.
    pub billing_products: Option<Vec<String>>,
    /// Deprecated, null.
    pub devpay_product_codes: Option<Vec<String>>,
    /// Null unless from the marketplace.
    pub marketplace_product_codes: Option<Vec<String>>,
    /// `ami-…`.
    pub image_id: String,
    /// `i-…`.
    pub instance_id: String,
    /// E.g. `t3.micro`.
    pub instance_type: String,
    /// Null on current instance types.
    pub kernel_id: Option<String>,
    /// Launch time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub pending_time: String,
    /// The private IPv4 address.
    pub private_ip: String,
    /// Null on current instance types.
    pub ramdisk_id: Option<String>,
    /// E.g. `us-east-1`.
    pub region: String,
    /// [`IDENTITY_DOCUMENT_VERSION`].
    pub version: String,
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn instance() -> Instance {
        Instance {
            instance_id: "i-0a1b2c3d4e5f60718".to_owned(),
            account_id: "111122223333".to_owned(),
            availability_zone: "eu-west-3c".to_owned(),
            region: "eu-west-3".to_owned(),
            instance_type: "t3.micro".to_owned(),
            image_id: "ami-1".to_owned(),
            private_ip: "10.0.0.7".to_owned(),
            hostname: Instance::default_hostname("10.0.0.7", "eu-west-3"),
            architecture: "x86_64".to_owned(),
            pending_time: "2023-11-14T22:13:20Z".to_owned(),
            role_name: "r".to_owned(),
        }
    }

    #[test]
    fn request_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(
            admit(&Method::GET, TOKEN_PATH, &h),
            Err(Refused::MethodNotAllowed)
        );
        assert_eq!(admit(&Method::PUT, TOKEN_PATH, &h), Err(Refused::BadTtl));
        for bad in ["", "0", "21601", "+5", " 5", "-1", "abc", "000001"] {
            h.insert(TTL_HEADER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                admit(&Method::PUT, TOKEN_PATH, &h),
                Err(Refused::BadTtl),
                "{bad:?}"
            );
        }
        h.insert(TTL_HEADER, HeaderValue::from_static("21600"));
        assert_eq!(
            admit(&Method::PUT, TOKEN_PATH, &h),
            Ok(Admitted::TokenPut(21600))
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        assert_eq!(admit(&Method::PUT, TOKEN_PATH, &h), Err(Refused::Proxied));
        assert_eq!(Refused::Proxied.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(
            admit(&Method::POST, "/latest/meta-data/", &h),
            Err(Refused::MethodNotAllowed)
        );
        assert_eq!(
            admit(&Method::HEAD, "/latest/meta-data/", &h),
            Ok(Admitted::Read)
        );
    }

    #[test]
    fn tree_listings_values_and_documents() {
        let i = instance();
        let tree = i.tree("{}".to_owned(), "creds");
        let text = |p: &str| match tree.lookup(p) {
            Some(Found::Text(t)) => t,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(text("/"), "latest");
        assert_eq!(text("/latest"), "dynamic\nmeta-data");
        assert_eq!(text("/latest/dynamic/"), "instance-identity/");
        assert_eq!(text("/latest/dynamic/instance-identity/"), "document");
        assert_eq!(
            text("/latest/meta-data/placement/availability-zone"),
            "eu-west-3c"
        );
        assert_eq!(text("/latest/meta-data/placement/region"), "eu-west-3");
        assert_eq!(
            text("/latest/meta-data/iam/"),
            "info\nsecurity-credentials/"
        );
        assert_eq!(text("/latest/meta-data/iam/security-credentials"), "r");
        assert_eq!(
            text("/latest/meta-data/hostname"),
            "ip-10-0-0-7.eu-west-3.compute.internal"
        );
        assert_eq!(
            tree.lookup("/latest/meta-data/iam/security-credentials/r"),
            Some(Found::Own(&"creds"))
        );
        for missing in [
            "/latest/meta-data/iam/security-credentials/r/",
            "/latest/meta-data/iam/security-credentials/other",
            "/latest/meta-data/iam/security-credentials-extended/",
            "/latest/meta-data/instance-id/",
            "/latest/meta-data/instance-id/x",
            "/2009-04-04/meta-data/",
        ] {
            assert_eq!(tree.lookup(missing), None, "{missing}");
        }
        let doc: serde_json::Value =
            serde_json::from_str(&text("/latest/dynamic/instance-identity/document")).unwrap();
        assert_eq!(doc["region"], "eu-west-3");
        assert_eq!(doc["availabilityZone"], "eu-west-3c");
        assert_eq!(doc["accountId"], "111122223333");
        assert_eq!(doc["instanceId"], "i-0a1b2c3d4e5f60718");
        assert_eq!(doc["version"], IDENTITY_DOCUMENT_VERSION);
        assert!(doc["kernelId"].is_null() && doc["billingProducts"].is_null());
        assert_eq!(doc.as_object().unwrap().len(), 15);
    }

    #[test]
    fn credentials_debug_leaves_out_the_secrets() {
        let c = RoleCredentials {
            code: "Success",
            last_updated: String::new(),
            kind: "AWS-HMAC",
            access_key_id: "ASIA1",
            secret_access_key: "imds-secret",
            token: Some("imds-session"),
            expiration: String::new(),
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("imds-secret") && !printed.contains("imds-session"));
        let body = pretty(&c);
        assert!(
            body.contains("\"SecretAccessKey\": \"imds-secret\""),
            "{body}"
        );
    }
}
