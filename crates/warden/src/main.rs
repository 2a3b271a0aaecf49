//! `warden`: the one binary. `serve`, `init` and `quickstart` run the server; every other
//! subcommand is a client of its HTTP API (through `warden-client`).

mod cmd_approval;
mod cmd_audit;
mod cmd_credential;
mod cmd_federation;
mod cmd_governance;
mod cmd_identity;
mod cmd_scan;
mod cmd_server;
mod cmd_team;
mod cmd_token;
mod cmd_vault;
mod config;
mod output;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use warden_client::{Client, ClientError};

/// mimalloc instead of glibc malloc: the request path allocates many small short-lived strings,
/// and glibc's free lists showed up as ~10% of server CPU under load. (A C dependency, built by `cc`
/// from the crate's vendored source; no system library needed.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Govern non-human identities: inventory, credentials, approvals, audit."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How client subcommands reach the server: flags, else environment, else the client config file.
#[derive(Debug, Args)]
struct Global {
    /// Server URL [env: WARDEN_URL]
    #[arg(long, global = true)]
    server: Option<String>,
    /// Operator token or API key [env: WARDEN_TOKEN]
    #[arg(long, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Initialise ./warden-data if absent and serve on 127.0.0.1:8640.
    Quickstart(cmd_server::QuickstartArgs),
    /// Create a data dir: server key, database, bootstrap admin token (printed once).
    Init(cmd_server::InitArgs),
    /// Run the server.
    Serve(cmd_server::ServeArgs),
    /// Upgrade the database schema to this binary's version (`--check` only reports).
    Migrate(cmd_server::MigrateArgs),
    /// Non-human identities.
    #[command(subcommand)]
    Identity(cmd_identity::IdentityCmd),
    /// Credentials of identities.
    #[command(subcommand)]
    Credential(cmd_credential::CredentialCmd),
    /// Changes held for four-eyes approval.
    #[command(subcommand)]
    Approval(cmd_approval::ApprovalCmd),
    /// Teams that own identities.
    #[command(subcommand)]
    Team(cmd_team::TeamCmd),
    /// Operators (humans using Warden).
    #[command(subcommand)]
    Operator(cmd_team::OperatorCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(cmd_audit::AuditCmd),
    /// API keys.
    #[command(subcommand)]
    Key(cmd_credential::KeyCmd),
    /// Access tokens: get one (as a machine), verify one, make a key pair.
    #[command(subcommand)]
    Token(cmd_token::TokenCmd),
    /// The token service's signing keys.
    #[command(subcommand)]
    Keys(cmd_token::KeysCmd),
    /// Show who the token belongs to.
    Whoami,
    /// Find secrets in a working tree and its git history (offline); `scan rules check` proves
    /// the rules.
    Scan(cmd_scan::ScanArgs),
    /// Findings reported by `warden scan --report-to`.
    #[command(subcommand)]
    Finding(cmd_scan::FindingCmd),
    /// Hygiene checks: stale, orphaned, over-privileged, long-lived, reused NHIs.
    #[command(subcommand)]
    Hygiene(cmd_governance::HygieneCmd),
    /// Access reviews: owning teams attest their NHIs (keep, reduce, retire).
    #[command(subcommand)]
    Review(cmd_governance::ReviewCmd),
    /// Reports: the OWASP NHI Top 10 posture.
    #[command(subcommand)]
    Report(cmd_governance::ReportCmd),
    /// The vault: secrets that must still exist, encrypted, versioned, rotated.
    #[command(subcommand)]
    Secret(cmd_vault::SecretCmd),
    /// The vault's master keys.
    #[command(subcommand)]
    Vault(cmd_vault::VaultCmd),
    /// PostgreSQL connections for dynamic credentials and rotation.
    #[command(subcommand)]
    Db(cmd_vault::DbCmd),
    /// Dynamic credentials, created per request, on a lease.
    #[command(subcommand)]
    Creds(cmd_vault::CredsCmd),
    /// Leases of dynamic credentials and leased reads.
    #[command(subcommand)]
    Lease(cmd_vault::LeaseCmd),
    /// OIDC issuers whose tokens may be exchanged for Warden tokens (federation).
    #[command(subcommand)]
    Issuer(cmd_federation::IssuerCmd),
    /// Trust rules: which external tokens become which NHI.
    #[command(subcommand)]
    Trust(cmd_federation::TrustCmd),
    /// Delegations: narrow, short, revocable authority lent to AI agents.
    #[command(subcommand)]
    Delegation(cmd_federation::DelegationCmd),
    /// MCP servers: tool catalogues and their RFC 9728 metadata.
    #[command(subcommand)]
    Mcp(cmd_federation::McpCmd),
    /// Cedar policies of the decision point.
    #[command(subcommand)]
    Policy(cmd_federation::PolicyCmd),
    /// Ask the decision point: may the bearer of TOKEN do ACTION on RESOURCE? Exit 0 allow, 1 deny.
    Authorize {
        /// The agent's (possibly delegated) access token (better: WARDEN_SUBJECT_TOKEN).
        #[arg(long, env = "WARDEN_SUBJECT_TOKEN", hide_env_values = true)]
        subject: String,
        /// A Warden scope, e.g. tickets:comment.
        #[arg(long)]
        action: String,
        #[arg(long)]
        resource: String,
    },
}

/// The client config file: `$WARDEN_CLIENT_CONFIG`, else `~/.config/warden/client.toml`.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub server: Option<String>,
    pub token: Option<String>,
}

pub fn client_file_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WARDEN_CLIENT_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("warden").join("client.toml"))
}

fn client(g: &Global) -> Result<Client> {
    client_with_token(g, "\0")
}

/// A client with the configured server; `token` `"\0"` means the configured operator token.
fn client_with_token(g: &Global, token: &str) -> Result<Client> {
    let file: ClientFile = match client_file_path() {
        Some(p) if p.exists() => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        _ => ClientFile::default(),
    };
    let server = g
        .server
        .clone()
        .or_else(|| std::env::var("WARDEN_URL").ok())
        .or(file.server)
        .unwrap_or_else(|| format!("http://{}", config::DEFAULT_LISTEN));
    if token != "\0" {
        return Ok(Client::new(&server, token)?);
    }
    let Some(token) = g
        .token
        .clone()
        .or_else(|| std::env::var("WARDEN_TOKEN").ok())
        .or(file.token)
    else {
        bail!(
            "no token: pass --token, set WARDEN_TOKEN, or run `warden quickstart` (it prints one)"
        );
    };
    Ok(Client::new(&server, &token)?)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.global.json;
    match cli.cmd {
        Cmd::Quickstart(a) => cmd_server::quickstart(a).await,
        Cmd::Init(a) => cmd_server::init(a, json).await,
        Cmd::Serve(a) => cmd_server::serve(a).await,
        Cmd::Migrate(a) => cmd_server::migrate(a, json).await,
        Cmd::Identity(c) => cmd_identity::run(&client(&cli.global)?, c, json).await,
        Cmd::Credential(c) => cmd_credential::run(&client(&cli.global)?, c, json).await,
        Cmd::Key(c) => cmd_credential::run_key(&client(&cli.global)?, c, json).await,
        Cmd::Token(c) => {
            // A machine getting a token has no operator token; names need one to resolve.
            let operator = client(&cli.global).ok();
            let anonymous = client_with_token(&cli.global, "")?;
            cmd_token::run(&anonymous, operator.as_ref(), c, json).await
        }
        Cmd::Keys(c) => cmd_token::run_keys(&client(&cli.global)?, c, json).await,
        Cmd::Approval(c) => cmd_approval::run(&client(&cli.global)?, c, json).await,
        Cmd::Team(c) => cmd_team::run_team(&client(&cli.global)?, c, json).await,
        Cmd::Operator(c) => cmd_team::run_operator(&client(&cli.global)?, c, json).await,
        Cmd::Audit(c) => cmd_audit::run(&cli.global, c, json).await,
        Cmd::Scan(a) => {
            let reporter = match &a.report_to {
                Some(url) => Some(client(&Global {
                    server: Some(url.clone()),
                    token: cli.global.token.clone(),
                    json,
                })?),
                None => None,
            };
            tokio::task::spawn_blocking(move || cmd_scan::run(a, json, reporter)).await?
        }
        Cmd::Finding(c) => cmd_scan::run_finding(&client(&cli.global)?, c, json).await,
        Cmd::Hygiene(c) => cmd_governance::run(&client(&cli.global)?, c, json).await,
        Cmd::Review(c) => cmd_governance::run_review(&client(&cli.global)?, c, json).await,
        Cmd::Report(c) => cmd_governance::run_report(&client(&cli.global)?, c, json).await,
        Cmd::Secret(c) => cmd_vault::run_secret(&client(&cli.global)?, c, json).await,
        Cmd::Vault(c) => cmd_vault::run_vault(|| client(&cli.global), c, json).await,
        Cmd::Db(c) => cmd_vault::run_db(&client(&cli.global)?, c, json).await,
        Cmd::Creds(c) => cmd_vault::run_creds(&client(&cli.global)?, c, json).await,
        Cmd::Lease(c) => cmd_vault::run_lease(&client(&cli.global)?, c, json).await,
        Cmd::Issuer(c) => cmd_federation::run_issuer(&client(&cli.global)?, c, json).await,
        Cmd::Trust(c) => cmd_federation::run_trust(&client(&cli.global)?, c, json).await,
        Cmd::Delegation(c) => cmd_federation::run_delegation(&client(&cli.global)?, c, json).await,
        Cmd::Mcp(c) => cmd_federation::run_mcp(&client(&cli.global)?, c, json).await,
        Cmd::Policy(c) => cmd_federation::run_policy(|| client(&cli.global), c, json).await,
        Cmd::Authorize {
            subject,
            action,
            resource,
        } => {
            cmd_federation::run_authorize(&client(&cli.global)?, subject, action, resource, json)
                .await
        }
        Cmd::Whoami => {
            let w = client(&cli.global)?.whoami().await?;
            output::print(json, &w, || format!("{w:?}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Api(p)) => {
                    eprintln!("error: {} ({}): {}", p.title, p.code, p.detail);
                }
                _ => eprintln!("error: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}
