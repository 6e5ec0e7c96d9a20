//! The emulated Azure side: Microsoft Entra ID (tenants, app registrations, user-assigned
//! managed identities, their federated identity credentials and app roles) and the managed
//! identity endpoints of the world's Azure VM.
//!
//! | listener | module | endpoints |
//! |---|---|---|
//! | Entra ID (HTTPS, and plain HTTP) | [`token`], [`discovery`] | `POST /{tenant}/oauth2/v2.0/token`, `POST /{tenant}/oauth2/token` (v1), `/{tenant}/v2.0/.well-known/openid-configuration`, `/{tenant}/.well-known/openid-configuration`, `/{tenant}/discovery/v2.0/keys`, `/common/discovery/keys`, `/common/discovery/instance` |
//! | Azure managed identity (HTTP) | [`managed_identity`] | Azure IMDS `GET /metadata/identity/oauth2/token`; App Service `GET /msi/token` |
//!
//! Azure SDKs refuse an authority that is not `https://`, so Entra is served over TLS with a
//! certificate from a CA the emulator generates at start-up ([`tls`]); the emulator writes the
//! CA to a file and points the SDKs at it through the env file.
//!
//! # World
//!
//! * `[[entra_tenant]]` — `id` (the tenant GUID, `tid`), optional `domain`
//!   (`contoso.onmicrosoft.com`, accepted in URLs in place of the id).
//! * `[[entra_app]]` — an app registration with its service principal: `tenant`,
//!   `display_name`, `client_id` (`appid`/`azp`), `object_id` (the service principal's object
//!   id: `oid` and `sub` of its tokens), `identifier_uris` (`api://…`, what clients name as the
//!   resource), `app_roles` (role values the app defines), `access_token_version` (1, Entra's
//!   default, or 2: which token the app *as a resource* receives), `app_role_assignments`
//!   (`{ "<resource>" = ["Role", …] }`: roles granted to this app on another app, which land in
//!   `roles`), and `[[entra_app.federated_credential]]`.
//! * `[[azure_managed_identity]]` — a user-assigned managed identity: `tenant`, `name`,
//!   `client_id`, `principal_id` (its object id), `resource_id`
//!   (`/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>`),
//!   `app_role_assignments`, and `[[azure_managed_identity.federated_credential]]`.
//! * A federated credential: `name`, `issuer`, `subject`, `audiences` (exactly one; default
//!   `api://AzureADTokenExchange`). The pair (issuer, subject) is unique per app.
//! * `[azure_vm]` — the emulated Azure VM: `tenant`, `system_assigned = { client_id,
//!   principal_id }` (optional), `user_assigned` (resource ids of attached identities),
//!   `identity_header` (the App Service endpoint's `IDENTITY_HEADER` secret).
//!
//! Entra tokens are signed by one emulator-held key; their issuers —
//! `https://sts.windows.net/{tid}/` (v1) and `https://login.microsoftonline.com/{tid}/v2.0`
//! (v2) — are added to the issuers the emulated AWS STS and Google STS trust, so an Entra token
//! can be the web identity of `AssumeRoleWithWebIdentity` or the subject token of an OIDC
//! workload identity provider.

pub mod discovery;
pub mod managed_identity;
pub mod tls;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use serde::Deserialize;

use crate::Emulator;
use crate::keys::{KeyError, SigningKey};
use crate::world::World;

pub use idbridge_policy::azure::FederatedCredential;
pub use idbridge_wire::entra::DEFAULT_FEDERATION_AUDIENCE;

/// The v1 issuer of tenant `tid`'s tokens.
pub fn v1_issuer(tid: &str) -> String {
    format!("https://sts.windows.net/{tid}/")
}

/// The v2 issuer of tenant `tid`'s tokens.
pub fn v2_issuer(tid: &str) -> String {
    format!("https://login.microsoftonline.com/{tid}/v2.0")
}

/// Resources of Microsoft's own first-party APIs that every tenant has (compared without a
/// trailing slash); their tokens are v1.
pub const MICROSOFT_RESOURCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://vault.azure.net",
    "https://storage.azure.com",
    "https://graph.microsoft.com",
    "https://database.windows.net",
    "https://cognitiveservices.azure.com",
    "https://servicebus.azure.net",
    "https://eventhubs.azure.net",
];

/// An Entra tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraTenant {
    /// Tenant id (GUID).
    pub id: String,
    /// Verified domain, usable in URLs in place of the id.
    #[serde(default)]
    pub domain: Option<String>,
}

/// An app registration and its service principal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraApp {
    /// Tenant id.
    pub tenant: String,
    /// Display name.
    pub display_name: String,
    /// Application (client) id.
    pub client_id: String,
    /// The service principal's object id.
    pub object_id: String,
    /// Application ID URIs.
    #[serde(default)]
    pub identifier_uris: Vec<String>,
    /// App role values this app defines.
    #[serde(default)]
    pub app_roles: Vec<String>,
    /// Access token version this app receives as a resource (1 or 2).
    #[serde(default = "default_version")]
    pub access_token_version: u8,
    /// Roles granted to this app, by resource (an identifier URI or client id).
    #[serde(default)]
    pub app_role_assignments: BTreeMap<String, Vec<String>>,
    /// Federated identity credentials.
    #[serde(default, rename = "federated_credential")]
    pub federated_credentials: Vec<FederatedCredential>,
}

fn default_version() -> u8 {
    1
}

/// A user-assigned managed identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentity {
    /// Tenant id.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Client id.
    pub client_id: String,
    /// Object (principal) id.
    pub principal_id: String,
    /// ARM resource id.
    pub resource_id: String,
    /// Roles granted to the identity, by resource.
    #[serde(default)]
    pub app_role_assignments: BTreeMap<String, Vec<String>>,
    /// Federated identity credentials.
    #[serde(default, rename = "federated_credential")]
    pub federated_credentials: Vec<FederatedCredential>,
}

/// A system-assigned identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemAssigned {
    /// Client id.
    pub client_id: String,
    /// Object (principal) id.
    pub principal_id: String,
    /// Roles granted to the identity, by resource.
    #[serde(default)]
    pub app_role_assignments: BTreeMap<String, Vec<String>>,
}

/// The emulated Azure VM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureVm {
    /// Tenant id.
    pub tenant: String,
    /// The system-assigned identity, if enabled.
    #[serde(default)]
    pub system_assigned: Option<SystemAssigned>,
    /// Resource ids of the attached user-assigned identities.
    #[serde(default)]
    pub user_assigned: Vec<String>,
    /// The App Service endpoint's `IDENTITY_HEADER`.
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
}

fn default_identity_header() -> String {
    "emulator-identity-header".to_owned()
}

/// A security principal that can get tokens: an app, a managed identity, or the VM's
/// system-assigned identity.
#[derive(Debug, Clone, Copy)]
pub enum Principal<'a> {
    /// An app registration.
    App(&'a EntraApp),
    /// A user-assigned managed identity.
    Managed(&'a ManagedIdentity),
    /// The VM's system-assigned identity.
    System(&'a AzureVm, &'a SystemAssigned),
}

impl<'a> Principal<'a> {
    /// Tenant id.
    pub fn tenant(&self) -> &'a str {
        match self {
            Principal::App(a) => &a.tenant,
            Principal::Managed(m) => &m.tenant,
            Principal::System(vm, _) => &vm.tenant,
        }
    }
    /// Client id.
    pub fn client_id(&self) -> &'a str {
        match self {
            Principal::App(a) => &a.client_id,
            Principal::Managed(m) => &m.client_id,
            Principal::System(_, s) => &s.client_id,
        }
    }
    /// Object id.
    pub fn object_id(&self) -> &'a str {
        match self {
            Principal::App(a) => &a.object_id,
            Principal::Managed(m) => &m.principal_id,
            Principal::System(_, s) => &s.principal_id,
        }
    }
    /// Federated credentials.
    pub fn federated_credentials(&self) -> &'a [FederatedCredential] {
        match self {
            Principal::App(a) => &a.federated_credentials,
            Principal::Managed(m) => &m.federated_credentials,
            Principal::System(..) => &[],
        }
    }
    fn assignments(&self) -> &'a BTreeMap<String, Vec<String>> {
        match self {
            Principal::App(a) => &a.app_role_assignments,
            Principal::Managed(m) => &m.app_role_assignments,
            Principal::System(_, s) => &s.app_role_assignments,
        }
    }
}

/// A resource a token can be asked for.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// An app of the tenant.
    App(&'a EntraApp),
    /// One of [`MICROSOFT_RESOURCES`].
    Microsoft(&'static str),
}

fn trim_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

impl World {
    /// A tenant by id or domain.
    pub fn entra_tenant(&self, id_or_domain: &str) -> Option<&EntraTenant> {
        self.entra_tenants.iter().find(|t| {
            t.id.eq_ignore_ascii_case(id_or_domain)
                || t.domain
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(id_or_domain))
        })
    }

    /// An app or user-assigned managed identity of `tenant` by client id.
    pub fn entra_principal(&self, tenant: &str, client_id: &str) -> Option<Principal<'_>> {
        self.entra_apps
            .iter()
            .find(|a| a.tenant == tenant && a.client_id.eq_ignore_ascii_case(client_id))
            .map(Principal::App)
            .or_else(|| {
                self.azure_managed_identities
                    .iter()
                    .find(|m| m.tenant == tenant && m.client_id.eq_ignore_ascii_case(client_id))
                    .map(Principal::Managed)
            })
    }

    /// A resource of `tenant` as a client names it (identifier URI, `api://{client_id}`,
    /// client id, or a Microsoft API).
    pub fn entra_resource(&self, tenant: &str, name: &str) -> Option<Resource<'_>> {
        let wanted = trim_slash(name);
        self.entra_apps
            .iter()
            .filter(|a| a.tenant == tenant)
            .find(|a| {
                a.identifier_uris.iter().any(|u| trim_slash(u) == wanted)
                    || a.client_id.eq_ignore_ascii_case(wanted)
                    || wanted
                        .strip_prefix("api://")
                        .is_some_and(|id| a.client_id.eq_ignore_ascii_case(id))
            })
            .map(Resource::App)
            .or_else(|| {
                MICROSOFT_RESOURCES
                    .iter()
                    .find(|r| **r == wanted)
                    .map(|r| Resource::Microsoft(r))
            })
    }

    /// The roles `principal` holds on `resource`.
    pub fn entra_roles(&self, principal: Principal<'_>, resource: Resource<'_>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (target, roles) in principal.assignments() {
            let same = match (self.entra_resource(principal.tenant(), target), resource) {
                (Some(Resource::App(a)), Resource::App(b)) => a.client_id == b.client_id,
                (Some(Resource::Microsoft(a)), Resource::Microsoft(b)) => a == b,
                _ => false,
            };
            if same {
                out.extend(roles.iter().cloned());
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Checks the Azure sections of `world`; the message names the object and field.
pub(crate) fn validate_world(world: &World) -> Result<(), String> {
    let guid = |s: &str| uuid::Uuid::parse_str(s).is_ok() && s.len() == 36;
    for (i, t) in world.entra_tenants.iter().enumerate() {
        if !guid(&t.id) {
            return Err(format!(
                "entra_tenant[{i}]: field `id`: {:?} is not a GUID",
                t.id
            ));
        }
    }
    let tenant_known = |t: &str| world.entra_tenants.iter().any(|x| x.id == t);
    let check_fics = |at: &str, fics: &[FederatedCredential]| -> Result<(), String> {
        idbridge_policy::azure::validate(fics).map_err(|e| {
            format!(
                "{at}.federated_credential[{}] ({}): {}",
                e.index, e.name, e.rule
            )
        })
    };
    let mut client_ids: Vec<&str> = Vec::new();
    for (i, a) in world.entra_apps.iter().enumerate() {
        let at = format!("entra_app[{i}] ({})", a.display_name);
        if !tenant_known(&a.tenant) {
            return Err(format!(
                "{at}: field `tenant`: unknown entra_tenant {:?}",
                a.tenant
            ));
        }
        for (field, v) in [("client_id", &a.client_id), ("object_id", &a.object_id)] {
            if !guid(v) {
                return Err(format!("{at}: field `{field}`: {v:?} is not a GUID"));
            }
        }
        if !matches!(a.access_token_version, 1 | 2) {
            return Err(format!("{at}: field `access_token_version` must be 1 or 2"));
        }
        check_fics(&at, &a.federated_credentials)?;
        client_ids.push(&a.client_id);
    }
    for (i, m) in world.azure_managed_identities.iter().enumerate() {
        let at = format!("azure_managed_identity[{i}] ({})", m.name);
        if !tenant_known(&m.tenant) {
            return Err(format!(
                "{at}: field `tenant`: unknown entra_tenant {:?}",
                m.tenant
            ));
        }
        for (field, v) in [
            ("client_id", &m.client_id),
            ("principal_id", &m.principal_id),
        ] {
            if !guid(v) {
                return Err(format!("{at}: field `{field}`: {v:?} is not a GUID"));
            }
        }
        if !m.resource_id.starts_with("/subscriptions/") {
            return Err(format!(
                "{at}: field `resource_id`: {:?} is not an ARM resource id (/subscriptions/…)",
                m.resource_id
            ));
        }
        check_fics(&at, &m.federated_credentials)?;
        client_ids.push(&m.client_id);
    }
    let mut sorted = client_ids.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("client id {:?} is declared twice", w[0]));
    }
    let assignments = world
        .entra_apps
        .iter()
        .map(|a| {
            (
                format!("entra_app ({})", a.display_name),
                &a.tenant,
                &a.app_role_assignments,
            )
        })
        .chain(world.azure_managed_identities.iter().map(|m| {
            (
                format!("azure_managed_identity ({})", m.name),
                &m.tenant,
                &m.app_role_assignments,
            )
        }))
        .chain(world.azure_vm.iter().filter_map(|vm| {
            vm.system_assigned.as_ref().map(|s| {
                (
                    "azure_vm.system_assigned".to_owned(),
                    &vm.tenant,
                    &s.app_role_assignments,
                )
            })
        }));
    for (at, tenant, map) in assignments {
        for (resource, roles) in map {
            match world.entra_resource(tenant, resource) {
                None => {
                    return Err(format!(
                        "{at}: field `app_role_assignments`: unknown resource {resource:?}"
                    ));
                }
                Some(Resource::App(app)) => {
                    if let Some(r) = roles.iter().find(|r| !app.app_roles.contains(r)) {
                        return Err(format!(
                            "{at}: field `app_role_assignments`: {} defines no app role {r:?}",
                            app.display_name
                        ));
                    }
                }
                Some(Resource::Microsoft(_)) => {}
            }
        }
    }
    if let Some(vm) = &world.azure_vm {
        if !tenant_known(&vm.tenant) {
            return Err(format!(
                "azure_vm: field `tenant`: unknown entra_tenant {:?}",
                vm.tenant
            ));
        }
        if let Some(s) = &vm.system_assigned
            && (!guid(&s.client_id) || !guid(&s.principal_id))
        {
            return Err(
                "azure_vm: field `system_assigned`: client_id and principal_id must be GUIDs"
                    .to_owned(),
            );
        }
        for (i, r) in vm.user_assigned.iter().enumerate() {
            if !world
                .azure_managed_identities
                .iter()
                .any(|m| m.resource_id.eq_ignore_ascii_case(r) && m.tenant == vm.tenant)
            {
                return Err(format!(
                    "azure_vm: field `user_assigned[{i}]`: no azure_managed_identity of the VM's tenant has resource_id {r:?}"
                ));
            }
        }
        if vm.identity_header.is_empty() {
            return Err("azure_vm: field `identity_header` must not be empty".to_owned());
        }
    }
    Ok(())
}

/// Entra's keys and TLS material, generated at start-up when the world has a tenant.
#[derive(Debug)]
pub struct AzureState {
    /// Entra's token signing key.
    pub key: SigningKey,
    /// The local CA and the server certificate it issued.
    pub tls: tls::TlsMaterial,
}

impl AzureState {
    /// Generates the keys.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(AzureState {
            key: SigningKey::generate_rsa("login.microsoftonline.com")?,
            tls: tls::TlsMaterial::generate()?,
        })
    }
}

/// Entra ID's router (served over both HTTPS and HTTP); `https` says which, for the URLs the
/// discovery documents give.
pub fn entra_router(state: Arc<Emulator>, https: bool) -> Router {
    token::router(state.clone()).merge(discovery::router(state, https))
}

/// The token the world's Azure VM's system-assigned identity gets from IMDS for `resource`
/// (tests of the STSes that take Entra tokens).
#[cfg(test)]
pub(crate) fn vm_token(state: &Emulator, resource: &str) -> String {
    let vm = state.world.azure_vm.as_ref().expect("an azure_vm");
    let system = vm
        .system_assigned
        .as_ref()
        .expect("a system-assigned identity");
    let found = state
        .world
        .entra_resource(&vm.tenant, resource)
        .expect("a resource of the tenant");
    token::issue_access_token(
        state,
        Principal::System(vm, system),
        resource,
        found,
        false,
        state.clock.now(),
    )
    .expect("an Entra key")
    .token
}

/// Counter name of an Entra or managed-identity operation.
pub(crate) fn op(name: &str) -> String {
    format!("azure.{name}")
}

#[cfg(test)]
mod tests {
    use crate::World;

    fn load(extra: &str) -> String {
        let base = r#"
[[entra_tenant]]
id = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"

[[entra_app]]
tenant = "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
display_name = "api"
client_id = "b1111111-0000-4000-8000-000000000001"
object_id = "b1111111-0000-4000-8000-0000000000a1"
identifier_uris = ["api://x"]
app_roles = ["R"]
"#;
        World::from_str_at(&format!("{base}{extra}"), "w.toml", None)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn builtin_world_has_the_azure_flows() {
        let w = World::builtin().unwrap();
        assert!(w.azure_vm.is_some());
        assert!(
            w.entra_principal(
                "7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d",
                "c1111111-0000-4000-8000-000000000011"
            )
            .is_some()
        );
    }

    #[test]
    fn errors_name_the_object_and_field() {
        assert_eq!(load(""), "");
        for (extra, needle) in [
            (
                "[[entra_app]]\ntenant = \"nope\"\ndisplay_name = \"a\"\nclient_id = \"c\"\nobject_id = \"o\"\n",
                "entra_app[1] (a): field `tenant`",
            ),
            (
                "[[entra_app]]\ntenant = \"7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d\"\ndisplay_name = \"a\"\nclient_id = \"c1111111-0000-4000-8000-000000000011\"\nobject_id = \"c1111111-0000-4000-8000-0000000000b1\"\napp_role_assignments = { \"api://x\" = [\"Nope\"] }\n",
                "defines no app role \"Nope\"",
            ),
            (
                "[[entra_app]]\ntenant = \"7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d\"\ndisplay_name = \"a\"\nclient_id = \"c1111111-0000-4000-8000-000000000011\"\nobject_id = \"c1111111-0000-4000-8000-0000000000b1\"\n[[entra_app.federated_credential]]\nname = \"f\"\nissuer = \"https://i\"\nsubject = \"s\"\naudiences = [\"a\", \"b\"]\n",
                "federated_credential[0] (f): field `audiences` must hold exactly one value",
            ),
            (
                "[azure_vm]\ntenant = \"7a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d\"\nuser_assigned = [\"/subscriptions/x\"]\n",
                "azure_vm: field `user_assigned[0]`",
            ),
            ("[[entra_app]]\ncolour = 1\n", "line "),
        ] {
            let err = load(extra);
            assert!(err.contains("w.toml"), "{err}");
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }
}
