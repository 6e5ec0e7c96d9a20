//! What the two Azure managed-identity frontends ([`crate::azure_imds`],
//! [`crate::azure_app_service`]) share: the `[[serve.<name>.resource]]` table mapping a
//! resource to a route that yields an Entra access token, the choice of an entry for a request
//! (resource, then identity selector), and turning the route's token or refusal into a result.
//! The request rules and the documents are the wire crate's ([`idbridge_wire::azure_imds`]),
//! the same ones the emulator's Azure VM answers with.
//!
//! A request's `resource` matches an entry's case-insensitively and ignoring a trailing `/`
//! (clients derive it from a scope by dropping `/.default`, MSAL keeps only `scheme://host` of
//! a URL scope). Among the entries for the resource, no selector picks the first; `client_id`,
//! `object_id` and `msi_res_id`/`mi_res_id` pick the entry configured with that value (a
//! `client_id` also matches an entry without one whose token turns out to be that client's).
//! No entry for the resource is 400 `invalid_resource`; none for the identity 400 "Identity not
//! found", as Azure answers.
//!
//! An entry with `resource = "*"` serves any other resource (after the named entries): its
//! route's last hop (`entra`, or an `azure-managed-identity` source) is asked for
//! `<resource>/.default`, and each resource's token is cached apart, in the route's bounded
//! cache of client-chosen keys (`max_client_keys_per_route`).

use std::sync::Arc;

use axum::http::StatusCode;
use idbridge_broker::ConfigError;
use idbridge_broker::config::Yields;
use idbridge_core::{AzureAccessToken, Credential};
use idbridge_wire::azure_imds::{Refused, Selector, TokenRequest};
use serde::Deserialize;
use toml::Spanned;

use crate::broker::{Broker, CredentialKey};
use crate::caller::Peer;
use crate::frontend::Section;

/// One `[[serve.<name>.resource]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    resource: Spanned<String>,
    route: Spanned<String>,
    #[serde(default)]
    client_id: Option<Spanned<String>>,
    #[serde(default)]
    object_id: Option<Spanned<String>>,
    #[serde(default)]
    resource_id: Option<Spanned<String>>,
}

/// One validated resource entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The resource URI (a scope's `/.default` dropped).
    pub resource: String,
    /// The route (yields an Entra access token).
    pub route: String,
    /// The identity's client id, when configured (selector `client_id`).
    pub client_id: Option<String>,
    /// The identity's object id (selector `object_id`).
    pub object_id: Option<String>,
    /// The identity's ARM resource id (selector `msi_res_id` / `mi_res_id`).
    pub resource_id: Option<String>,
}

/// The `resource` of an entry that serves any resource through its route.
pub const ANY_RESOURCE: &str = "*";

/// Whether `resource` (normalized) can be asked for as a scope: a URI, without spaces.
fn is_resource_uri(resource: &str) -> bool {
    !resource.is_empty() && !resource.contains(char::is_whitespace) && resource.contains(':')
}

/// The resource of a scope or resource URI: without `/.default` and without a trailing `/`.
fn normalize(s: &str) -> &str {
    let s = s.strip_suffix("/.default").unwrap_or(s);
    s.strip_suffix('/').unwrap_or(s)
}

/// Validates the resource entries of `section` (`table` is `[[serve.NAME.resource]]`).
pub(crate) fn resources(
    s: &Section<'_, '_>,
    section: &str,
    table: &str,
    span: std::ops::Range<usize>,
    raw: Vec<Spanned<RawResource>>,
) -> Result<Vec<Resource>, ConfigError> {
    if raw.is_empty() {
        return Err(s.err(
            span,
            format!("{section}: add at least one {table} with `resource` and `route`"),
        ));
    }
    let mut out: Vec<Resource> = Vec::new();
    for r in raw {
        let r = r.into_inner();
        let uri = r.resource.get_ref();
        let resource = normalize(uri.trim());
        let any = resource == ANY_RESOURCE;
        if !any && !is_resource_uri(resource) {
            return Err(s.err(
                r.resource.span(),
                format!(
                    "{table} field `resource`: {uri:?} is not a resource URI (such as \
                     \"https://vault.azure.net\" or \"api://my-api\") or \"*\""
                ),
            ));
        }
        let id = |f: &Option<Spanned<String>>, field: &str| match f {
            Some(v)
                if v.get_ref().trim().is_empty() || v.get_ref().contains(char::is_whitespace) =>
            {
                Err(s.err(
                    v.span(),
                    format!("{table} field `{field}`: must be a non-empty id without spaces"),
                ))
            }
            Some(v) => Ok(Some(v.get_ref().clone())),
            None => Ok(None),
        };
        let client_id = id(&r.client_id, "client_id")?;
        let object_id = id(&r.object_id, "object_id")?;
        let resource_id = id(&r.resource_id, "resource_id")?;
        let route = s.route(table, "route", &r.route, Yields::AzureAccessToken)?;
        if any {
            let probe = idbridge_broker::Overrides {
                audience: None,
                scopes: Some(vec!["api://any-resource/.default".to_owned()]),
            };
            if let Err(e) = idbridge_broker::Route::new(route.clone()).with_overrides(&probe) {
                return Err(s.err(
                    r.route.span(),
                    format!(
                        "{table} field `route`: resource \"*\" needs a route whose last hop can ask for another scope: {}",
                        e.message
                    ),
                ));
            }
        }
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (None, None) => true,
            _ => false,
        };
        if out.iter().any(|o| {
            o.resource.eq_ignore_ascii_case(resource)
                && same(&o.client_id, &client_id)
                && same(&o.object_id, &object_id)
                && same(&o.resource_id, &resource_id)
        }) {
            return Err(s.err(
                r.resource.span(),
                format!(
                    "{table} field `resource`: {resource:?} is listed twice for the same identity"
                ),
            ));
        }
        out.push(Resource {
            resource: resource.to_owned(),
            route: route.name.clone(),
            client_id,
            object_id,
            resource_id,
        });
    }
    Ok(out)
}

fn identity_not_found() -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        message: "Identity not found".to_owned(),
    }
}

/// The entry for `request`, and whether the token's client id must still be checked against
/// the request's `client_id` (an entry configured without one).
fn choose<'a>(
    resources: &'a [Resource],
    request: &'a TokenRequest,
) -> Result<(&'a Resource, Option<&'a str>), Refused> {
    let asked = normalize(&request.resource);
    let mut candidates: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.resource.eq_ignore_ascii_case(asked))
        .collect();
    if candidates.is_empty() && is_resource_uri(asked) {
        candidates = resources
            .iter()
            .filter(|r| r.resource == ANY_RESOURCE)
            .collect();
    }
    if candidates.is_empty() {
        return Err(Refused {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_resource",
            message: format!(
                "AADSTS500011: The resource principal named {} was not found for this \
                 identity endpoint",
                asked.chars().take(256).collect::<String>()
            ),
        });
    }
    let eq =
        |v: &Option<String>, id: &str| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(id));
    let found = match &request.selector {
        Selector::Default => candidates.first().map(|r| (*r, None)),
        Selector::ClientId(id) => candidates
            .iter()
            .find(|r| eq(&r.client_id, id))
            .map(|r| (*r, None))
            .or_else(|| {
                candidates
                    .iter()
                    .find(|r| r.client_id.is_none())
                    .map(|r| (*r, Some(id.as_str())))
            }),
        Selector::ObjectId(id) => candidates
            .iter()
            .find(|r| eq(&r.object_id, id))
            .map(|r| (*r, None)),
        Selector::ResourceId(id) => candidates
            .iter()
            .find(|r| eq(&r.resource_id, id))
            .map(|r| (*r, None)),
    };
    found.ok_or_else(identity_not_found)
}

/// The Entra access token for an admitted request, or the refusal to answer with.
pub(crate) async fn token(
    broker: &Arc<Broker>,
    peer: Option<&Peer>,
    resources: &[Resource],
    request: &TokenRequest,
) -> Result<AzureAccessToken, Refused> {
    let (entry, check_client) = choose(resources, request)?;
    let key = if entry.resource == ANY_RESOURCE {
        let resource = normalize(&request.resource);
        CredentialKey::scopes(&entry.route, vec![format!("{resource}/.default")])
    } else {
        CredentialKey::route(&entry.route)
    };
    match broker.credential(peer, &key).await {
        Ok(Credential::AzureAccessToken(t)) => match check_client {
            Some(id) if !t.client_id.eq_ignore_ascii_case(id) => Err(identity_not_found()),
            _ => Ok(t),
        },
        Ok(other) => Err(Refused {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "unknown",
            message: format!(
                "route {:?} yields a {} credential, not an Entra access token",
                entry.route,
                other.kind()
            ),
        }),
        Err(r) => Err(Refused {
            status: r.status(),
            error: match r.status() {
                StatusCode::FORBIDDEN => "access_denied",
                StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
                _ => "unknown",
            },
            message: r.message(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(resource: &str, route: &str, client: Option<&str>) -> Resource {
        Resource {
            resource: resource.into(),
            route: route.into(),
            client_id: client.map(Into::into),
            object_id: Some(format!("{route}-oid")),
            resource_id: None,
        }
    }

    fn req(resource: &str, selector: Selector) -> TokenRequest {
        TokenRequest {
            resource: resource.into(),
            selector,
        }
    }

    #[test]
    fn entries_are_chosen_by_resource_then_identity() {
        let all = [
            entry("api://billing", "a", Some("C1")),
            entry("api://billing", "b", None),
            entry("https://vault.azure.net", "v", None),
        ];
        let pick = |r: TokenRequest| {
            choose(&all, &r).map(|(e, c)| (e.route.clone(), c.map(str::to_owned)))
        };
        assert_eq!(
            pick(req("api://billing", Selector::Default)),
            Ok(("a".into(), None))
        );
        assert_eq!(
            pick(req("API://billing/", Selector::ClientId("c1".into()))),
            Ok(("a".into(), None))
        );
        assert_eq!(
            pick(req("api://billing", Selector::ClientId("x".into()))),
            Ok(("b".into(), Some("x".to_owned())))
        );
        assert_eq!(
            pick(req("api://billing", Selector::ObjectId("b-oid".into()))),
            Ok(("b".into(), None))
        );
        assert_eq!(
            pick(req("https://vault.azure.net/.default", Selector::Default)),
            Ok(("v".into(), None))
        );
        let e = pick(req("api://other", Selector::Default)).unwrap_err();
        assert_eq!(
            (e.status, e.error),
            (StatusCode::BAD_REQUEST, "invalid_resource")
        );
        let e = pick(req("api://billing", Selector::ResourceId("/x".into()))).unwrap_err();
        assert_eq!(e.message, "Identity not found");
    }
}
