//! Command-line definitions (each flag defined once; help is generated from here).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use idbridge_core::SecretString;

/// Parses an argument that may be a secret (a token) straight into a [`SecretString`], so that
/// the argument structs can keep their derived `Debug`.
fn secret_arg(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::new(value))
}

/// `KEY=VALUE`.
fn tag_arg(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{value:?} is not KEY=VALUE")),
    }
}

/// Cross-cloud workload identity broker: trade the identity a workload has for short-lived
/// credentials in another cloud, with no long-lived secret shared between clouds.
#[derive(Debug, Parser)]
#[command(name = "idbridge", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Log as JSON lines (stderr).
    #[arg(long, global = true)]
    pub(crate) log_json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every seed flow against the built-in emulator, hop by hop, and print a table.
    Demo(DemoArgs),
    /// Run the local cloud emulator (AWS STS, EC2 IMDSv2, ECS; Google OAuth2, STS, IAM Credentials,
    /// GCE metadata; SPIFFE Workload API).
    Emulate(EmulateArgs),
    /// Print a route's credential.
    Token(TokenArgs),
    /// Print a route's AWS credentials in credential_process format (for ~/.aws/config).
    CredentialProcess(RouteArgs),
    /// Run a command with a route's credentials in its environment.
    Exec(ExecArgs),
    /// Send a SigV4-signed HTTP request with a route's (or the environment's) AWS credentials.
    Request(RequestArgs),
    /// Explain whether a token may assume a role under a trust policy (AWS), or exchange and
    /// impersonate through a workload identity pool provider (GCP), condition by condition.
    Explain(Box<ExplainArgs>),
    /// Walk a route hop by hop against its endpoints; on a failure, name the cause and the fix.
    Doctor(DoctorArgs),
    /// Write the cloud-side configuration a route needs (trust policy, pool, provider, bindings).
    Setup(SetupArgs),
    /// Serve route credentials to unmodified SDKs as a GCE metadata server, EC2 IMDSv2, an ECS
    /// container endpoint, Azure IMDS and an Azure App Service identity endpoint (the config's
    /// `[serve]` section).
    Serve(ServeArgs),
    /// Print a shell completion script generated from these definitions (e.g.
    /// `idbridge completions bash > /etc/bash_completion.d/idbridge`).
    Completions(CompletionsArgs),
    /// Print the manual page (roff, section 1) generated from these definitions
    /// (`idbridge man | man -l -`).
    Man,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Config file (TOML): routes plus a `[serve]` section.
    #[arg(long, env = "IDBRIDGE_CONFIG")]
    pub(crate) config: PathBuf,
    /// Validate the config and exit (0 valid, 64 invalid) without binding anything.
    #[arg(long)]
    pub(crate) check: bool,
    /// Once every listener is up, write the client settings (GCE_METADATA_HOST,
    /// AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_CONTAINER_…, AZURE_POD_IDENTITY_AUTHORITY_HOST,
    /// IDENTITY_ENDPOINT, IDENTITY_HEADER) here as KEY=VALUE, mode 0600.
    #[arg(long)]
    pub(crate) env_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ExplainFormat {
    /// A readable (coloured on a terminal) table.
    Table,
    /// JSON: {"decision","statements":[…],"warnings":[…]}.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The token (a JWT), or @FILE.
    #[arg(long, required_unless_present_any = ["aws_arn", "trust_anchor", "gcp_delegation"], value_parser = secret_arg)]
    pub(crate) token: Option<SecretString>,
    /// The role's trust policy (IAM JSON file).
    #[arg(
        long,
        required_unless_present_any = ["gcp_provider", "entra", "gcp_delegation"],
        conflicts_with_all = ["gcp_provider", "entra"]
    )]
    pub(crate) aws_trust_policy: Option<PathBuf>,
    /// An Entra app registration or managed identity (or a world file) with its federated
    /// credentials (TOML or JSON; see below).
    #[arg(long, long_help = crate::explain::ENTRA_HELP, conflicts_with = "gcp_provider")]
    pub(crate) entra: Option<PathBuf>,
    /// With --entra: the client id of the app or managed identity in a world file.
    #[arg(long, requires = "entra")]
    pub(crate) client_id: Option<String>,
    /// A Google workload identity pool provider (TOML or JSON; see below).
    #[arg(long, long_help = crate::explain::GCP_PROVIDER_HELP)]
    pub(crate) gcp_provider: Option<PathBuf>,
    /// With a world file as --gcp-provider: the provider to use, POOL/PROVIDER.
    #[arg(long, requires = "gcp_provider")]
    pub(crate) provider: Option<String>,
    /// An IAM member bound to the service account (roles/iam.workloadIdentityUser), checked
    /// against the federated principal (repeatable).
    #[arg(long = "binding", requires = "gcp_provider")]
    pub(crate) bindings: Vec<String>,
    /// The service account to impersonate (for the suggested binding command).
    #[arg(long, requires = "gcp_provider")]
    pub(crate) service_account: Option<String>,
    /// Instead of --token: the AWS caller's ARN as GetCallerIdentity returns it (a role or an
    /// assumed-role session), for an AWS provider (--gcp-provider) or for `sts:AssumeRole` by
    /// that session (--aws-trust-policy, role chaining).
    #[arg(long, conflicts_with = "token")]
    pub(crate) aws_arn: Option<String>,
    /// With --aws-arn and --aws-trust-policy: the request's ExternalId.
    #[arg(long, requires = "aws_arn", requires = "aws_trust_policy")]
    pub(crate) external_id: Option<String>,
    /// With --aws-arn and --aws-trust-policy: the request's SourceIdentity.
    #[arg(long, requires = "aws_arn", requires = "aws_trust_policy")]
    pub(crate) source_identity: Option<String>,
    /// With --aws-arn and --aws-trust-policy: a session tag of the request, KEY=VALUE
    /// (repeatable).
    #[arg(long = "tag", value_parser = tag_arg, requires = "aws_arn", requires = "aws_trust_policy")]
    pub(crate) tags: Vec<(String, String)>,
    /// Instead of --token, for IAM Roles Anywhere: the trust anchor's ARN (`aws:SourceArn`);
    /// the certificate is described by --x509-uri and --x509-cn.
    #[arg(long, conflicts_with_all = ["token", "aws_arn"], requires = "aws_trust_policy")]
    pub(crate) trust_anchor: Option<String>,
    /// With --trust-anchor: the certificate's SAN URI (a SPIFFE ID), `aws:PrincipalTag/x509SAN/URI`.
    #[arg(long, requires = "trust_anchor")]
    pub(crate) x509_uri: Option<String>,
    /// With --trust-anchor: the certificate's subject CN, `aws:PrincipalTag/x509Subject/CN` and
    /// the session's source identity.
    #[arg(long, requires = "trust_anchor")]
    pub(crate) x509_cn: Option<String>,
    /// Instead of a token: the service accounts of a Google delegation chain with their IAM
    /// policies (a world file), to check each link of --caller → --delegate… → --target.
    #[arg(
        long,
        long_help = crate::explain::GCP_DELEGATION_HELP,
        conflicts_with_all = ["token", "aws_trust_policy", "gcp_provider", "entra"],
        requires_all = ["caller", "target"]
    )]
    pub(crate) gcp_delegation: Option<PathBuf>,
    /// With --gcp-delegation: the account that calls IAM Credentials (email or unique id).
    #[arg(long, requires = "gcp_delegation")]
    pub(crate) caller: Option<String>,
    /// With --gcp-delegation: an intermediate account, caller side first (repeatable).
    #[arg(long = "delegate", requires = "gcp_delegation")]
    pub(crate) delegates: Vec<String>,
    /// With --gcp-delegation: the account whose token is minted.
    #[arg(long, requires = "gcp_delegation")]
    pub(crate) target: Option<String>,
    /// Verify the signature against a JWKS file, a JWKS URL, or an issuer URL.
    #[arg(long)]
    pub(crate) verify: Option<String>,
    /// The role's account (for generic OIDC providers; read from the policy when absent).
    #[arg(long)]
    pub(crate) account: Option<String>,
    /// RoleSessionName of the request.
    #[arg(long, default_value = "idbridge-explain")]
    pub(crate) role_session_name: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: ExplainFormat,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    pub(crate) route: RouteArgs,
    /// The AWS role's trust policy (IAM JSON): on AccessDenied, evaluate the token against it.
    #[arg(long)]
    pub(crate) aws_trust_policy: Option<PathBuf>,
    /// The Google provider (as for `explain --gcp-provider`): on a refusal, evaluate against it.
    #[arg(long)]
    pub(crate) gcp_provider: Option<PathBuf>,
    /// The Entra app or world file (as for `explain --entra`): on an AADSTS refusal, compare
    /// the token with its federated credentials.
    #[arg(long)]
    pub(crate) entra: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: DoctorFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DoctorFormat {
    /// Readable text, one block per hop.
    Table,
    /// JSON: {"ok","steps":[…],"diagnosis":{…}}.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SetupFormat {
    /// The AWS role trust policy (IAM JSON).
    AwsJson,
    /// `aws iam` commands (OIDC provider, role).
    AwsCli,
    /// `gcloud` commands (org policy, pool, provider, IAM bindings).
    Gcloud,
    /// Terraform resources for both clouds.
    Terraform,
    /// Google's external_account credential file for the route (AIP-4117).
    ExternalAccount,
    /// A fragment of the emulator's world file (roles, pools, providers, bindings).
    World,
    /// `az` commands (the Entra federated identity credentials of `entra` hops).
    AzCli,
}

/// Which endpoint URLs `setup --format external-account` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SetupEndpoints {
    /// Google's and AWS's production URLs (the route's own `token_url`, `endpoint` and
    /// `imds_endpoint` still win).
    Production,
    /// The endpoints in effect for idbridge: the route's, else `IDBRIDGE_GOOGLE_STS_URL`,
    /// `IDBRIDGE_GOOGLE_IAMCREDENTIALS_URL` (or `[endpoints]`) and
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else production. After `set -a; . ./emulator.env`,
    /// the file works against the emulator as it is.
    Effective,
}

#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    #[command(flatten)]
    pub(crate) route: RouteArgs,
    /// What to write.
    #[arg(long, value_enum)]
    pub(crate) format: SetupFormat,
    /// Endpoint URLs in an external-account file: production, or the ones in effect here.
    #[arg(long, value_enum, default_value = "production")]
    pub(crate) endpoints: SetupEndpoints,
    /// The numeric unique id of the Google service account AWS sees (`azp`/`sub` of its ID
    /// tokens); read from a token of the route's source when absent.
    #[arg(long)]
    pub(crate) sa_unique_id: Option<String>,
    /// The Google organization id (for the AWS-accounts org policy).
    #[arg(long)]
    pub(crate) organization: Option<String>,
    /// The pool's project id (default: the impersonated service account's project).
    #[arg(long)]
    pub(crate) project_id: Option<String>,
    /// The AWS caller, as an ARN (`arn:aws:iam::ACCOUNT:role/NAME` or an assumed-role ARN);
    /// read with GetCallerIdentity from the route's AWS source when absent.
    #[arg(long)]
    pub(crate) aws_caller_arn: Option<String>,
    /// OIDC issuer of the source's tokens (read from a token when absent).
    #[arg(long)]
    pub(crate) issuer: Option<String>,
    /// OIDC subject of the source's tokens (read from a token when absent).
    #[arg(long)]
    pub(crate) subject: Option<String>,
    /// OIDC audience of the source's tokens (read from a token when absent).
    #[arg(long)]
    pub(crate) audience: Option<String>,
    /// For an `entra` hop: the ARM id of the user-assigned managed identity that has the
    /// client id (the credential is written for an app registration otherwise).
    #[arg(long)]
    pub(crate) managed_identity: Option<String>,
    /// IAM Roles Anywhere: the CA bundle (PEM) of the trust anchor, the CA that issues the
    /// route's certificates.
    #[arg(long)]
    pub(crate) ca_bundle: Option<PathBuf>,
    /// IAM Roles Anywhere: the certificate's SAN URI (a SPIFFE ID) the role's trust policy
    /// matches (read from the route's certificate when absent).
    #[arg(long)]
    pub(crate) x509_uri: Option<String>,
    /// IAM Roles Anywhere: the certificate's subject CN the role's trust policy matches (when it
    /// has no SAN URI; read from the route's certificate when absent).
    #[arg(long)]
    pub(crate) x509_cn: Option<String>,
    /// Do not call any endpoint: everything comes from the config and the flags.
    #[arg(long)]
    pub(crate) offline: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Print the hops as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EmulateArgs {
    /// World file (TOML); the built-in world when absent. Its `[chaos]` section injects faults
    /// (errors, throttling, hangs, resets, truncated and garbage answers, latency, outages),
    /// also settable at run time with `PUT /_emulator/chaos`.
    #[arg(long)]
    pub(crate) world: Option<PathBuf>,
    /// Address to bind. Loopback by default; anything else exposes test credentials.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind: IpAddr,
    /// Port of the AWS STS listener (0 = any).
    #[arg(long, default_value_t = 0)]
    pub(crate) aws_sts_port: u16,
    /// Port of the Google APIs listener (0 = any).
    #[arg(long, default_value_t = 0)]
    pub(crate) google_port: u16,
    /// Port of the GCE metadata listener (0 = any).
    #[arg(long, default_value_t = 0)]
    pub(crate) metadata_port: u16,
    /// Port of the Entra ID HTTPS listener (0 = any).
    #[arg(long, default_value_t = 0)]
    pub(crate) entra_port: u16,
    /// Port of the Azure managed identity listener (IMDS, App Service) (0 = any).
    #[arg(long, default_value_t = 0)]
    pub(crate) azure_identity_port: u16,
    /// Once every listener is up, write KEY=VALUE endpoint overrides here
    /// (`set -a; . PATH` points the SDKs and idbridge at the emulator).
    #[arg(long)]
    pub(crate) env_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct RouteArgs {
    /// Route config file (TOML).
    #[arg(long, env = "IDBRIDGE_CONFIG")]
    pub(crate) config: PathBuf,
    /// Route name.
    #[arg(long, env = "IDBRIDGE_ROUTE")]
    pub(crate) route: String,
    /// Skip the credential cache shared between calls (the per-user file cache, or the
    /// config's `[cache] redis_url`): exchange on every call. Also `IDBRIDGE_NO_CACHE=1`.
    #[arg(long)]
    pub(crate) no_cache: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TokenFormat {
    /// JSON object.
    Json,
    /// KEY=VALUE lines (AWS_ACCESS_KEY_ID…, GOOGLE_OAUTH_ACCESS_TOKEN, IDBRIDGE_ID_TOKEN,
    /// IDBRIDGE_AZURE_ACCESS_TOKEN).
    Env,
    /// AWS credential_process Version 1 JSON.
    CredentialProcess,
    /// The bare token (Google or Azure access token, or ID token).
    AccessToken,
    /// Google's executable-sourced credential response (for an `executable` credential source
    /// of an external_account file): an OIDC token with its expiry, or on failure the error
    /// response `{"version":1,"success":false,"code","message"}` (and a non-zero exit).
    GoogleExecutable,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    pub(crate) route: RouteArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub(crate) format: TokenFormat,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    pub(crate) route: RouteArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// Route config file; without it, credentials come from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
    #[arg(long, env = "IDBRIDGE_CONFIG", requires = "route")]
    pub(crate) config: Option<PathBuf>,
    /// Route name.
    #[arg(long, env = "IDBRIDGE_ROUTE", requires = "config")]
    pub(crate) route: Option<String>,
    /// SigV4 service name (`lambda`, `s3`, `sts`, …); guessed from the host when absent.
    #[arg(long)]
    pub(crate) service: Option<String>,
    /// SigV4 region; guessed from the host, else AWS_REGION, else us-east-1.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// HTTP method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub(crate) method: String,
    /// Extra header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_parser = secret_arg)]
    pub(crate) headers: Vec<SecretString>,
    /// Request body (`@FILE` reads a file).
    #[arg(short = 'd', long = "data")]
    pub(crate) data: Option<String>,
    /// The URL.
    pub(crate) url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_arguments_shows_no_token_or_header_value() {
        let explain = Cli::try_parse_from([
            "idbridge",
            "explain",
            "--token",
            "eyJhbGciOi.cli-token-secret.sig",
            "--aws-trust-policy",
            "p.json",
        ])
        .unwrap();
        let request = Cli::try_parse_from([
            "idbridge",
            "request",
            "-H",
            "Authorization: Bearer cli-header-secret",
            "https://example.com/",
        ])
        .unwrap();
        let printed = format!("{explain:?} {request:#?}");
        assert!(!printed.contains("cli-token-secret"), "{printed}");
        assert!(!printed.contains("cli-header-secret"), "{printed}");
        let Command::Explain(a) = explain.command else {
            panic!("not explain");
        };
        assert_eq!(
            a.token.as_ref().map(SecretString::expose_secret),
            Some("eyJhbGciOi.cli-token-secret.sig")
        );
    }
}
