//! Command-line definitions (each flag defined once; help is generated from here).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Run the local cloud emulator (AWS STS, Google OAuth2/IAM Credentials, GCE metadata).
    Emulate(EmulateArgs),
    /// Print a route's credential.
    Token(TokenArgs),
    /// Print a route's AWS credentials in credential_process format (for ~/.aws/config).
    CredentialProcess(RouteArgs),
    /// Run a command with a route's credentials in its environment.
    Exec(ExecArgs),
    /// Send a SigV4-signed HTTP request with a route's (or the environment's) AWS credentials.
    Request(RequestArgs),
    /// Explain whether a token may assume a role under a trust policy, condition by condition.
    Explain(ExplainArgs),
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
    #[arg(long)]
    pub(crate) token: String,
    /// The role's trust policy (IAM JSON file).
    #[arg(long)]
    pub(crate) aws_trust_policy: PathBuf,
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
pub(crate) struct DemoArgs {
    /// Print the hops as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EmulateArgs {
    /// World file (TOML); the built-in world when absent.
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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TokenFormat {
    /// JSON object.
    Json,
    /// KEY=VALUE lines (AWS_ACCESS_KEY_ID…, GOOGLE_OAUTH_ACCESS_TOKEN, IDBRIDGE_ID_TOKEN).
    Env,
    /// AWS credential_process Version 1 JSON.
    CredentialProcess,
    /// The bare token (Google access token or ID token).
    AccessToken,
    /// Google's executable-sourced credential response (for an `executable` credential source
    /// of an external_account file): an OIDC token with its expiry.
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
    #[arg(short = 'H', long = "header")]
    pub(crate) headers: Vec<String>,
    /// Request body (`@FILE` reads a file).
    #[arg(short = 'd', long = "data")]
    pub(crate) data: Option<String>,
    /// The URL.
    pub(crate) url: String,
}
