//! `idbridge serve`: the broker daemon. It serves route credentials to unmodified SDKs through
//! the endpoints they already know — a GCE metadata server, EC2 IMDSv2, an ECS container
//! endpoint, Azure IMDS and the Azure App Service identity endpoint — from one credential
//! cache, and tells local workloads apart.
//!
//! | frontend | module | clients | settings a client needs |
//! |---|---|---|---|
//! | GCE metadata | [`gce_metadata`] | google-auth `default()`, compute and ID-token credentials; Go `compute/metadata`; curl | `GCE_METADATA_HOST`, `GCE_METADATA_IP` |
//! | EC2 IMDSv2 | [`aws_imds`] | botocore/boto3, the AWS CLI, aws-config, google-auth's AWS source | `AWS_EC2_METADATA_SERVICE_ENDPOINT` |
//! | ECS container credentials | [`aws_ecs`] | botocore/boto3, the AWS CLI, aws-config | `AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_AUTHORIZATION_TOKEN` |
//! | Azure IMDS | [`azure_imds`] | azure-identity `ManagedIdentityCredential`, `DefaultAzureCredential` (Python, JavaScript); MSAL; go-autorest adal (custom MSI endpoint) | `AZURE_POD_IDENTITY_AUTHORITY_HOST` |
//! | Azure App Service / Container Apps | [`azure_app_service`] | the same, and azidentity (Go) | `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` |
//! | metrics | [`metrics`] | Prometheus, health checks | — |
//!
//! `idbridge serve --env-file PATH` writes those settings once every listener is up. Every
//! frontend, and the metrics listener, sits behind the [`frontend`] seam: each is one file
//! implementing [`frontend::Kind`] (its section, validation, listeners, router and client
//! settings) and one line in [`frontend::KINDS`]; [`config`] and [`server`] name none of them.
//!
//! # Configuration
//!
//! The daemon reads one TOML file: the same `[[route]]`s and `[endpoints]` as `idbridge token`
//! (a file holds its own routes; other commands ignore `[serve]`), plus a `[serve]` section.
//! Everything is validated before any socket is bound; an error names the file, the line and
//! the field, and `idbridge serve` exits with 64 (`--check` validates and exits 0 or 64).
//!
//! ```toml
//! [serve]
//! bind = "127.0.0.1"            # every TCP listener; loopback by default (anything else logs a warning)
//! log_format = "text"           # or "json" (as --log-json)
//! max_cached_credentials = 256  # cache bound on the routes' own credentials
//! max_client_keys_per_route = 64  # per route: client-chosen audiences / scope sets (LRU)
//!
//! [serve.connections]           # every listener (crate::conn)
//! max_per_listener = 1024       # open connections; one over gets 503 and is closed
//! max_per_caller = 256          # open connections of one caller uid, per listener
//! header_read_timeout_ms = 10000  # from a request head's first byte to its end
//! idle_timeout_ms = 30000       # no request in flight and nothing received
//!
//! [serve.gce_metadata]          # each frontend is optional; at least one is required
//! port = 0                      # 0 = any free port; or `socket = "/run/idbridge/gce.sock"`
//! token_route = "myapp-gcp"     # must yield a Google access token
//! identity_route = "myapp-gcp"  # its last hop must mint ID tokens for the client's ?audience=
//! service_account_email = "…"   # default: the account the token route impersonates
//! project_id = "gcp-project"    # project/project-id (404 when unset)
//! numeric_project_id = "271828182845"
//! scopes = ["https://www.googleapis.com/auth/cloud-platform"]  # default: the token route's
//! universe_domain = "googleapis.com"
//! instance_name = "idbridge"    # instance/name (default idbridge)
//! zone = "us-central1-a"        # instance/zone is projects/NUMERIC_PROJECT_ID/zones/ZONE
//! instance_id = "…"             # default: a number derived from name, zone and project
//! hostname = "…"                # default: NAME.ZONE.c.PROJECT_ID.internal
//! attributes = { env = "dev" }  # instance/attributes/ (none by default)
//!
//! [serve.aws_imds]
//! port = 0
//! route = "tenant-to-aws"       # must yield AWS credentials
//! role_name = "…"               # default: the route's role name (last part of its role ARN)
//! require_token = true          # IMDSv2 only (default)
//! ipv6 = false                  # also listen on [::1] at the same port
//! availability_zone = "us-east-1a"  # default: the route's region + "a"
//! region = "us-east-1"          # default: the zone without its letter
//! instance_id = "i-00000000000000000"
//! account_id = "111122223333"   # identity document; default: the route role's account
//! instance_type = "t3.micro"
//! image_id = "ami-00000000000000000"
//! private_ip = "127.0.0.1"      # local-ipv4 and privateIp
//! hostname = "…"                # default: ip-127-0-0-1.ec2.internal (EC2's form for the IP)
//!
//! [serve.aws_ecs]
//! port = 0
//! authorization_token_file = "ecs.token"  # or authorization_token = "…"; neither: generated
//! [[serve.aws_ecs.role]]
//! path = "/role/tenant"
//! route = "tenant-to-aws"       # must yield AWS credentials
//!
//! [serve.azure_imds]            # fields: crate::azure_imds
//! port = 0
//! [[serve.azure_imds.resource]]
//! resource = "api://my-api"     # or a scope "api://my-api/.default"
//! route = "gcp-to-azure"        # must yield an Entra access token (exchange `entra`)
//! client_id = "…"               # optional selectors: client_id, object_id, resource_id
//!
//! [serve.azure_app_service]     # fields: crate::azure_app_service
//! port = 0
//! identity_header_file = "id.secret"  # or identity_header = "…"; neither: generated
//! [[serve.azure_app_service.resource]]
//! resource = "https://vault.azure.net"
//! route = "gcp-to-azure"
//!
//! [serve.metrics]               # /metrics, /healthz, /readyz
//! port = 0
//!
//! [[serve.caller]]              # no rules: every local caller may use every route
//! uid = 1000                    # or user = "alice" (/etc/passwd), or group = "ci" (/etc/group)
//! routes = ["tenant-to-aws"]    # or ["*"]
//! ```
//!
//! Paths are relative to the config file. The frontends' routes must exist and fit: IMDS and
//! ECS need routes that end in AWS credentials, the GCE token route one that ends in an access
//! token, and the GCE identity route one whose last hop accepts an audience
//! ([`idbridge_broker::Route::with_overrides`]): an `impersonate` exchange, or a
//! `gce-metadata`, `service-account-key`, `impersonate` or `spiffe` source without exchanges.
//! Two listeners may not share a port or a socket.
//!
//! # One cache
//!
//! Every frontend asks one [`Broker`], keyed by [`CredentialKey`] (route name plus the client's
//! audience or scopes) over [`idbridge_broker::cache::Cache`]: single-flight loads, refresh
//! ahead of expiry with jitter, retries, the last good value on failed refreshes, negative
//! caching of permanent errors, per-attempt timeouts, backoff across failed loads (honouring
//! `Retry-After`) and bounded caller waits. A thousand clients asking for a cold route cause one
//! upstream exchange; a client polling a short-lived credential never gets an expired one;
//! during an outage clients get the last error at once while each key costs a few upstream
//! attempts per backoff period. [`health`] turns the cache's state into per-route health for
//! `/readyz` and `/metrics`.
//!
//! # Per-workload identity
//!
//! Each connection is attributed to a local uid once, when it is accepted — for TCP from the
//! owner of the client's socket, asked of the kernel by exact address pair ([`sock_diag`];
//! `/proc/net/tcp{,6}` only where netlink is unavailable), for unix sockets from `SO_PEERCRED`
//! ([`caller`]). With `[[serve.caller]]` rules a caller not granted the route gets 403 with a body naming
//! its uid and the route (logged at info). A caller that cannot be identified (a remote host,
//! when bound beyond loopback) is granted nothing. Non-secret metadata (project id, email,
//! role name) is served to any caller.
//!
//! # Security defaults
//!
//! * Loopback only unless `bind` says otherwise; the metadata protocols have no authentication
//!   of their own, so a wider bind hands credentials to the network (a warning is logged).
//! * IMDSv2 is enforced: a session token must be fetched with a PUT, which a browser or a
//!   server-side request forgery through a GET cannot do, and PUTs carrying `X-Forwarded-For`
//!   are refused. The GCE frontend likewise refuses proxied requests and requires
//!   `Metadata-Flavor: Google`.
//! * The ECS token is compared in constant time, checked before the path; a generated token is
//!   32 random bytes and is only written to `--env-file` (mode 0600).
//! * Request heads over [`http::MAX_HEADER_BYTES`] are refused with 431 before any handler runs.
//! * No local user can starve the others ([`conn`]): connection caps per listener and per
//!   caller uid, header-read and idle timeouts, the open-file limit raised at start-up; client
//!   audiences are validated ([`audience`]) and cached per route in a bounded LRU set; IMDS
//!   session tokens are budgeted per caller ([`imds_tokens`]).
//! * No credential is ever logged; error bodies carry the route's one-line error, which never
//!   holds a token ([`idbridge_broker::error`]). Credentials go only to callers allowed the route.
#![warn(missing_docs, unreachable_pub)]

pub mod accounts;
pub mod audience;
pub mod aws_ecs;
pub mod aws_imds;
pub mod azure;
pub mod azure_app_service;
pub mod azure_imds;
pub mod broker;
pub mod caller;
pub mod config;
pub mod conn;
pub mod frontend;
pub mod gce_metadata;
pub mod health;
pub mod http;
pub mod imds_tokens;
pub mod metrics;
pub mod pods;
pub mod server;
pub mod sock_diag;

#[cfg(test)]
mod tests;

pub use broker::{Broker, CredentialKey, Refusal};
pub use config::ServeConfig;
pub use server::{Address, BoundListener, Running, StartError, start};

/// A kind of listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Frontend {
    /// The GCE metadata server.
    GceMetadata,
    /// EC2 IMDSv2.
    AwsImds,
    /// `/metrics`, `/healthz`, `/readyz`.
    Metrics,
    /// Any other kind, by its [`frontend::Kind::name`] (`aws_ecs`, `azure_imds`,
    /// `azure_app_service`).
    Registered(&'static str),
}

impl Frontend {
    /// The metric label: `gce_metadata`, `aws_imds`, `aws_ecs`, `metrics`, or a registered
    /// kind's name (`azure_imds`, `azure_app_service`).
    pub fn as_str(self) -> &'static str {
        match self {
            Frontend::GceMetadata => "gce_metadata",
            Frontend::AwsImds => "aws_imds",
            Frontend::Metrics => "metrics",
            Frontend::Registered(name) => name,
        }
    }

    /// A title for people.
    pub fn title(self) -> &'static str {
        match self {
            Frontend::GceMetadata => "GCE metadata",
            Frontend::AwsImds => "EC2 IMDSv2",
            Frontend::Metrics => "metrics",
            Frontend::Registered(name) => frontend::kind(name).map_or(name, |k| k.title()),
        }
    }
}
