//! The serving side of the GCE metadata protocol, shared by idbridge's metadata frontend
//! (`idbridge-serve`) and the emulator's VM metadata server, so that both apply the same rules:
//!
//! * [`admit`]: only `GET` and `HEAD`; `/` (the clients' detection ping) needs no request
//!   header; any other request carrying `X-Forwarded-For` is refused (it was proxied), then any
//!   request without `Metadata-Flavor: Google`; data lives under `/computeMetadata/v1/`, whose
//!   path segments are percent-decoded.
//! * [`stamp`]: every response carries `Metadata-Flavor: Google` and
//!   `Server: Metadata Server for VM`.
//! * [`Query`]: the query parameters a metadata server reads.
//! * [`Node`]: the metadata tree. Directories list their entries (subdirectories with a trailing
//!   `/`); `?recursive=true` renders a directory as JSON with GCE's camelCase keys; `?alt=json`
//!   renders any node as JSON; minting leaves (`token`, `identity`) never appear in JSON and are
//!   answered by the server itself.
//!
//! Each server words its own refusals and builds its own responses.

use std::borrow::Cow;

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `Metadata-Flavor`: required on requests, sent on every response.
pub const FLAVOR_HEADER: &str = "metadata-flavor";
/// The one `Metadata-Flavor` value.
pub const FLAVOR: &str = "Google";
/// The `Server` header of GCE's metadata server.
pub const SERVER: &str = "Metadata Server for VM";
/// Content type of text values, listings and errors.
pub const TEXT: &str = "application/text";
/// Content type of JSON renderings and of the token response.
pub const JSON: &str = "application/json";

/// A request answered before any lookup in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// Neither `GET` nor `HEAD`: 405.
    MethodNotAllowed,
    /// `/`, the detection ping: 200 whatever the request headers.
    Ping,
    /// Carries `X-Forwarded-For` (a proxied request): 403.
    Proxied,
    /// Lacks `Metadata-Flavor: Google`: 403.
    NoFlavor,
    /// `/computeMetadata` or `/computeMetadata/`: 200, listing `v1/`.
    Versions,
    /// Outside `/computeMetadata/v1`, or a path segment that is not UTF-8 once decoded: 404.
    NotFound,
}

/// Applies the request rules in order and returns the percent-decoded path segments under
/// `/computeMetadata/v1/` (none for that directory itself), or what to answer instead.
pub fn admit(method: &Method, path: &str, headers: &HeaderMap) -> Result<Vec<String>, Early> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(Early::MethodNotAllowed);
    }
    if path == "/" {
        return Err(Early::Ping);
    }
    if headers.contains_key("x-forwarded-for") {
        return Err(Early::Proxied);
    }
    if headers.get(FLAVOR_HEADER).and_then(|v| v.to_str().ok()) != Some(FLAVOR) {
        return Err(Early::NoFlavor);
    }
    if path == "/computeMetadata" || path == "/computeMetadata/" {
        return Err(Early::Versions);
    }
    let rest = path
        .strip_prefix("/computeMetadata/v1")
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or(Early::NotFound)?;
    rest.split('/')
        .filter(|seg| !seg.is_empty())
        .map(|seg| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|_| Early::NotFound)
        })
        .collect()
}

/// Puts `Metadata-Flavor: Google` and `Server: Metadata Server for VM` on a response.
pub fn stamp(headers: &mut HeaderMap) {
    headers.insert(FLAVOR_HEADER, HeaderValue::from_static(FLAVOR));
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER));
}

/// The `ETag` of a metadata value: the first 8 bytes of the body's SHA-256, in hex.
pub fn etag(body: &str) -> String {
    Sha256::digest(body.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The query parameters a metadata server reads (others are ignored; a repeated one's last
/// value wins).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    /// `recursive=true` (any case).
    pub recursive: bool,
    /// `alt=json`.
    pub alt_json: bool,
    /// `audience=` of an identity request.
    pub audience: Option<String>,
    /// `format=` of an identity request.
    pub format: Option<String>,
    /// `licenses=true` (any case) of an identity request.
    pub licenses: bool,
    /// `scopes=a,b` of a token request.
    pub scopes: Option<String>,
    /// `wait_for_change=true` (any case): a hanging GET ([`super::watch`]).
    pub wait_for_change: bool,
    /// `last_etag=` of a hanging GET.
    pub last_etag: Option<String>,
    /// `timeout_sec=` of a hanging GET, as sent.
    pub timeout_sec: Option<String>,
}

impl Query {
    /// Reads a request's query string.
    pub fn parse(query: Option<&str>) -> Query {
        let mut out = Query::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*k {
                "recursive" => out.recursive = v.eq_ignore_ascii_case("true"),
                "alt" => out.alt_json = v == "json",
                "audience" => out.audience = Some(v.into_owned()),
                "format" => out.format = Some(v.into_owned()),
                "licenses" => out.licenses = v.eq_ignore_ascii_case("true"),
                "scopes" => out.scopes = Some(v.into_owned()),
                "wait_for_change" => out.wait_for_change = v.eq_ignore_ascii_case("true"),
                "last_etag" => out.last_etag = Some(v.into_owned()),
                "timeout_sec" => out.timeout_sec = Some(v.into_owned()),
                _ => {}
            }
        }
        out
    }

    /// The hanging GET asked for, if any; a bad `timeout_sec` is an error (400).
    pub fn wait(&self) -> Result<Option<super::watch::Wait>, super::watch::BadTimeout> {
        if !self.wait_for_change {
            return Ok(None);
        }
        super::watch::Wait::new(self.last_etag.clone(), self.timeout_sec.as_deref()).map(Some)
    }

    /// The requested scopes: `scopes` split at commas, trimmed, empty ones left out.
    pub fn scope_list(&self) -> Vec<String> {
        self.scopes
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A node of a metadata tree; `M` is what a minting leaf (`token`, `identity`) carries.
#[derive(Debug)]
pub enum Node<M> {
    /// A directory.
    Dir(Vec<Entry<M>>),
    /// A text value (a JSON string).
    Text(String),
    /// A numeric value: text as is, a JSON number when it parses as one.
    Number(String),
    /// Newline-terminated lines (a JSON array).
    Lines(Vec<String>),
    /// A leaf the server answers itself (`token`, `identity`).
    Mint(M),
}

/// One entry of a metadata directory.
#[derive(Debug)]
pub struct Entry<M> {
    /// Its name in paths.
    pub name: String,
    /// Its key in recursive JSON.
    pub key: String,
    /// What it holds.
    pub node: Node<M>,
}

impl<M> Entry<M> {
    /// An entry keyed in camelCase in JSON, as GCE does (`numeric-project-id` →
    /// `numericProjectId`).
    pub fn new(name: &str, node: Node<M>) -> Self {
        Entry {
            name: name.to_owned(),
            key: camel(name),
            node,
        }
    }

    /// An entry keyed by its name as is (a service account's email).
    pub fn verbatim(name: &str, node: Node<M>) -> Self {
        Entry {
            name: name.to_owned(),
            key: name.to_owned(),
            node,
        }
    }

    /// Its line in a listing: subdirectories end with `/`.
    fn listing_name(&self) -> String {
        match self.node {
            Node::Dir(_) => format!("{}/", self.name),
            _ => self.name.clone(),
        }
    }
}

/// A rendered node.
#[derive(Debug)]
pub enum Rendered<'a, M> {
    /// A value to send (with an [`etag`]).
    Data {
        /// [`TEXT`] or [`JSON`].
        content_type: &'static str,
        /// The body.
        body: String,
    },
    /// A minting leaf, for the server to answer.
    Mint(&'a M),
}

impl<M> Node<M> {
    /// The node at `segments` below this one.
    pub fn find(&self, segments: &[String]) -> Option<&Node<M>> {
        let mut node = self;
        for seg in segments {
            let Node::Dir(entries) = node else {
                return None;
            };
            node = &entries.iter().find(|e| e.name == *seg)?.node;
        }
        Some(node)
    }

    /// The node as `query` asks for it.
    pub fn render(&self, query: &Query) -> Rendered<'_, M> {
        let text = |body| Rendered::Data {
            content_type: TEXT,
            body,
        };
        let json = |v: Value| Rendered::Data {
            content_type: JSON,
            body: v.to_string(),
        };
        match self {
            Node::Mint(m) => Rendered::Mint(m),
            Node::Dir(_) if query.recursive => json(self.to_json()),
            Node::Dir(entries) if query.alt_json => json(Value::from(
                entries.iter().map(Entry::listing_name).collect::<Vec<_>>(),
            )),
            Node::Dir(entries) => text(
                entries
                    .iter()
                    .map(|e| format!("{}\n", e.listing_name()))
                    .collect(),
            ),
            leaf if query.alt_json => json(leaf.to_json()),
            Node::Text(v) | Node::Number(v) => text(v.clone()),
            Node::Lines(lines) => text(lines.iter().map(|l| format!("{l}\n")).collect()),
        }
    }

    /// The recursive JSON of the node; minting leaves are left out of directories.
    fn to_json(&self) -> Value {
        match self {
            Node::Dir(entries) => Value::Object(
                entries
                    .iter()
                    .filter(|e| !matches!(e.node, Node::Mint(_)))
                    .map(|e| (e.key.clone(), e.node.to_json()))
                    .collect::<Map<_, _>>(),
            ),
            Node::Text(s) => Value::String(s.clone()),
            Node::Number(n) => number_json(n),
            Node::Lines(lines) => Value::from(lines.clone()),
            Node::Mint(_) => Value::Null,
        }
    }
}

/// A numeric value as JSON: a number when it is an unsigned integer, else the text.
pub fn number_json(n: &str) -> Value {
    n.parse::<u64>()
        .map_or_else(|_| Value::String(n.to_owned()), Value::from)
}

/// `numeric-project-id` → `numericProjectId`.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn camel_case_keys() {
        assert_eq!(camel("numeric-project-id"), "numericProjectId");
        assert_eq!(camel("service-accounts"), "serviceAccounts");
        assert_eq!(camel("email"), "email");
    }

    #[test]
    fn request_rules_in_order() {
        let flavored = headers(&[("metadata-flavor", "Google")]);
        let path = "/computeMetadata/v1/project/project-id";
        assert_eq!(
            admit(&Method::POST, "/", &flavored),
            Err(Early::MethodNotAllowed)
        );
        assert_eq!(
            admit(&Method::GET, "/", &HeaderMap::new()),
            Err(Early::Ping)
        );
        assert_eq!(
            admit(&Method::GET, path, &HeaderMap::new()),
            Err(Early::NoFlavor)
        );
        assert_eq!(
            admit(
                &Method::GET,
                path,
                &headers(&[("metadata-flavor", "google")])
            ),
            Err(Early::NoFlavor)
        );
        let proxied = headers(&[("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(admit(&Method::GET, path, &proxied), Err(Early::Proxied));
        assert_eq!(
            admit(&Method::HEAD, "/computeMetadata/", &flavored),
            Err(Early::Versions)
        );
        for outside in ["/computeMetadata/v2/", "/computeMetadata/v10", "/latest/"] {
            assert_eq!(
                admit(&Method::GET, outside, &flavored),
                Err(Early::NotFound),
                "{outside}"
            );
        }
        assert_eq!(
            admit(&Method::GET, "/computeMetadata/v1/a%40b//c/", &flavored),
            Ok(vec!["a@b".to_owned(), "c".to_owned()])
        );
        assert_eq!(
            admit(&Method::GET, "/computeMetadata/v1/%ff", &flavored),
            Err(Early::NotFound)
        );
        assert_eq!(
            admit(&Method::GET, "/computeMetadata/v1", &flavored),
            Ok(Vec::new())
        );
    }

    #[test]
    fn query_and_scopes() {
        let q = Query::parse(Some("recursive=TRUE&alt=json&scopes=a,%20b,,&licenses=x"));
        assert!(q.recursive && q.alt_json && !q.licenses);
        assert_eq!(q.wait(), Ok(None));
        let w = Query::parse(Some("wait_for_change=true&last_etag=ab%2Bc&timeout_sec=5"))
            .wait()
            .unwrap()
            .unwrap();
        assert_eq!(w.last_etag.as_deref(), Some("ab+c"));
        assert_eq!(w.timeout, std::time::Duration::from_secs(5));
        assert!(
            Query::parse(Some("wait_for_change=true&timeout_sec=x"))
                .wait()
                .is_err()
        );
        assert_eq!(q.scope_list(), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(Query::parse(None), Query::default());
        assert!(Query::parse(None).scope_list().is_empty());
    }

    #[test]
    fn tree_rendering() {
        let tree: Node<()> = Node::Dir(vec![
            Entry::new(
                "numeric-project-id",
                Node::Number("314159265358".to_owned()),
            ),
            Entry::new(
                "service-accounts",
                Node::Dir(vec![Entry::verbatim(
                    "a-b@x",
                    Node::Dir(vec![
                        Entry::new(
                            "scopes",
                            Node::Lines(vec!["s1".to_owned(), "s2".to_owned()]),
                        ),
                        Entry::new("token", Node::Mint(())),
                    ]),
                )]),
            ),
        ]);
        let body = |r: Rendered<'_, ()>| match r {
            Rendered::Data { content_type, body } => (content_type, body),
            Rendered::Mint(()) => panic!("minted"),
        };
        let plain = Query::default();
        let recursive = Query::parse(Some("recursive=true"));
        let alt = Query::parse(Some("alt=json"));
        assert_eq!(
            body(tree.render(&plain)),
            (TEXT, "numeric-project-id\nservice-accounts/\n".to_owned())
        );
        assert_eq!(
            body(tree.render(&recursive)),
            (
                JSON,
                r#"{"numericProjectId":314159265358,"serviceAccounts":{"a-b@x":{"scopes":["s1","s2"]}}}"#
                    .to_owned()
            )
        );
        assert_eq!(
            body(tree.render(&alt)),
            (
                JSON,
                r#"["numeric-project-id","service-accounts/"]"#.to_owned()
            )
        );
        let account = ["service-accounts".to_owned(), "a-b@x".to_owned()];
        let scopes = [account[0].clone(), account[1].clone(), "scopes".to_owned()];
        assert_eq!(
            body(tree.find(&scopes).unwrap().render(&plain)),
            (TEXT, "s1\ns2\n".to_owned())
        );
        assert_eq!(
            body(tree.find(&scopes).unwrap().render(&alt)),
            (JSON, r#"["s1","s2"]"#.to_owned())
        );
        let token = [account[0].clone(), account[1].clone(), "token".to_owned()];
        assert!(matches!(
            tree.find(&token).unwrap().render(&recursive),
            Rendered::Mint(())
        ));
        assert!(
            tree.find(&[account[0].clone(), "nobody".to_owned()])
                .is_none()
        );
        assert!(
            tree.find(&[
                scopes[0].clone(),
                account[1].clone(),
                "scopes".to_owned(),
                "x".to_owned()
            ])
            .is_none()
        );
        assert_eq!(number_json("12"), Value::from(12u64));
        assert_eq!(number_json("x1"), Value::from("x1"));
        assert_eq!(etag("abc"), "ba7816bf8f01cfea");
    }
}
