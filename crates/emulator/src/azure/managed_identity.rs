//! The managed identity endpoints of the world's `[azure_vm]`: Azure IMDS
//! (`GET /metadata/identity/oauth2/token`) and the App Service / Container Apps protocol
//! (`GET /msi/token`, the `IDENTITY_ENDPOINT`, with `X-IDENTITY-HEADER`).
//!
//! The IMDS path is served with and without a trailing `/` (msal-node asks for
//! `/metadata/identity/oauth2/token/`). The request rules and documents are
//! [`idbridge_wire::azure_imds`]'s. Then the identity:
//!
//! * no selector: the system-assigned identity; without one, the only user-assigned identity;
//!   several user-assigned and no system-assigned: 400 (the client must choose);
//! * `client_id` / `object_id` / `msi_res_id` (`mi_res_id`): the attached identity with that
//!   id, else 400 "Identity not found";
//! * the resource (a trailing `/` ignored) must be an app of the tenant or a Microsoft API,
//!   else 400 `invalid_resource` (AADSTS500011).
//!
//! The token is the Entra access token `token::issue_access_token` signs, for the
//! identity. No VM in the world: every request is 400 "Identity not found". Calls are counted
//! as `azure.imds.token` and `azure.app_service.token`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::StatusCode;
use idbridge_wire::azure_imds::{
    self as wire, AppServiceToken, ImdsToken, Refused, Selector, TokenRequest,
};

use super::{AzureVm, Principal, op};
use crate::Emulator;

/// Path of the App Service endpoint (`IDENTITY_ENDPOINT`).
pub const APP_SERVICE_PATH: &str = "/msi/token";

/// The router of both protocols.
pub fn router(state: Arc<Emulator>) -> Router {
    Router::new()
        .route(wire::IMDS_TOKEN_PATH, any(imds))
        .route(&format!("{}/", wire::IMDS_TOKEN_PATH), any(imds))
        .route(APP_SERVICE_PATH, any(app_service))
        .with_state(state)
}

fn not_found() -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        message: "Identity not found".to_owned(),
    }
}

/// The identity a request names.
fn identity<'a>(
    state: &'a Emulator,
    vm: &'a AzureVm,
    selector: &Selector,
) -> Result<Principal<'a>, Refused> {
    let attached = state
        .world
        .azure_managed_identities
        .iter()
        .filter(|m| {
            vm.user_assigned
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&m.resource_id))
        })
        .collect::<Vec<_>>();
    let found = match selector {
        Selector::Default => match (&vm.system_assigned, attached.as_slice()) {
            (Some(s), _) => Some(Principal::System(vm, s)),
            (None, [one]) => Some(Principal::Managed(one)),
            (None, []) => None,
            (None, _) => {
                return Err(Refused {
                    status: StatusCode::BAD_REQUEST,
                    error: "invalid_request",
                    message: "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request".to_owned(),
                });
            }
        },
        Selector::ClientId(id) => attached
            .iter()
            .find(|m| m.client_id.eq_ignore_ascii_case(id))
            .map(|m| Principal::Managed(m))
            .or_else(|| {
                vm.system_assigned
                    .as_ref()
                    .filter(|s| s.client_id.eq_ignore_ascii_case(id))
                    .map(|s| Principal::System(vm, s))
            }),
        Selector::ObjectId(id) => attached
            .iter()
            .find(|m| m.principal_id.eq_ignore_ascii_case(id))
            .map(|m| Principal::Managed(m))
            .or_else(|| {
                vm.system_assigned
                    .as_ref()
                    .filter(|s| s.principal_id.eq_ignore_ascii_case(id))
                    .map(|s| Principal::System(vm, s))
            }),
        Selector::ResourceId(id) => attached
            .iter()
            .find(|m| m.resource_id.eq_ignore_ascii_case(id))
            .map(|m| Principal::Managed(m)),
    };
    found.ok_or_else(not_found)
}

/// A token for an admitted request.
fn token_for<'a>(
    state: &'a Emulator,
    request: &TokenRequest,
) -> Result<(Principal<'a>, super::token::Issued), Refused> {
    let vm = state.world.azure_vm.as_ref().ok_or_else(not_found)?;
    let principal = identity(state, vm, &request.selector)?;
    let resource = state
        .world
        .entra_resource(&vm.tenant, &request.resource)
        .ok_or_else(|| Refused {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_resource",
            message: format!(
                "AADSTS500011: The resource principal named {} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                crate::short(&request.resource, 256),
                vm.tenant
            ),
        })?;
    let now = state.clock.now();
    let issued =
        super::token::issue_access_token(state, principal, &request.resource, resource, false, now)
            .map_err(|_| Refused {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                error: "unknown",
                message: "Failed to obtain a token".to_owned(),
            })?;
    Ok((principal, issued))
}

async fn imds(State(state): State<Arc<Emulator>>, req: Request) -> Response {
    state.bump(&op("imds.token"));
    let result = wire::admit_imds(req.method(), req.headers(), req.uri().query())
        .and_then(|r| token_for(&state, &r).map(|t| (r, t)));
    match result {
        Ok((request, (principal, issued))) => {
            let now = state.clock.now().unix_timestamp();
            let lifetime = (issued.expires_at - now).to_string();
            axum::Json(ImdsToken {
                access_token: issued.token,
                client_id: principal.client_id().to_owned(),
                expires_in: lifetime.clone(),
                expires_on: issued.expires_at.to_string(),
                ext_expires_in: lifetime,
                not_before: issued.not_before.to_string(),
                resource: request.resource,
                token_type: "Bearer".to_owned(),
            })
            .into_response()
        }
        Err(refused) => {
            tracing::info!(status = %refused.status, "azure imds: refused");
            (refused.status, axum::Json(refused.imds_body())).into_response()
        }
    }
}

async fn app_service(State(state): State<Arc<Emulator>>, req: Request) -> Response {
    state.bump(&op("app_service.token"));
    let secret = state
        .world
        .azure_vm
        .as_ref()
        .map(|vm| vm.identity_header.as_str())
        .unwrap_or_default();
    let result = if secret.is_empty() {
        Err(not_found())
    } else {
        wire::admit_app_service(req.method(), req.headers(), req.uri().query(), secret)
    }
    .and_then(|r| token_for(&state, &r).map(|t| (r, t)));
    match result {
        Ok((request, (principal, issued))) => axum::Json(AppServiceToken {
            access_token: issued.token,
            expires_on: issued.expires_at.to_string(),
            resource: request.resource,
            token_type: "Bearer".to_owned(),
            client_id: principal.client_id().to_owned(),
        })
        .into_response(),
        Err(refused) => {
            tracing::info!(status = %refused.status, "azure app service identity: refused");
            let correlation = uuid::Uuid::new_v4().to_string();
            (
                refused.status,
                axum::Json(refused.app_service_body(&correlation)),
            )
                .into_response()
        }
    }
}
