//! `warden issuer …` and `warden trust …`: federation from CI systems, Kubernetes and other OIDC
//! issuers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use uuid::Uuid;
use warden_client::Client;
use warden_types::{
    AddIssuerRequest, AddTrustRuleRequest, CreateDelegationRequest, McpTool, PutMcpServerRequest,
};

use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum IssuerCmd {
    /// Trust an OIDC issuer (admins), e.g. GitHub Actions:
    /// `warden issuer add github --issuer https://token.actions.githubusercontent.com
    ///  --jwks-url https://token.actions.githubusercontent.com/.well-known/jwks --audience https://warden.example.com`
    Add {
        name: String,
        /// The `iss` of its tokens, exactly.
        #[arg(long)]
        issuer: String,
        /// Where its keys are (fetched, cached, refetched on an unknown kid).
        #[arg(long, conflicts_with = "jwks_file")]
        jwks_url: Option<String>,
        /// Its keys, from a file (for issuers Warden cannot reach).
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        /// An accepted `aud`; repeatable.
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// Tokens older than this many seconds are refused (default 600).
        #[arg(long)]
        max_token_age: Option<u64>,
        /// Each token may be exchanged once (its jti is remembered until it expires).
        #[arg(long)]
        single_use: bool,
    },
    List,
    /// Stop trusting an issuer (admins); revoke its trust rules first.
    Remove {
        name: String,
    },
}

pub async fn run_issuer(c: &Client, cmd: IssuerCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        IssuerCmd::Add {
            name,
            issuer,
            jwks_url,
            jwks_file,
            audiences,
            max_token_age,
            single_use,
        } => {
            let static_jwks = match jwks_file {
                None => None,
                Some(p) => Some(
                    serde_json::from_str(
                        &std::fs::read_to_string(&p)
                            .with_context(|| format!("reading {}", p.display()))?,
                    )
                    .with_context(|| format!("{} is not JSON", p.display()))?,
                ),
            };
            let i = c
                .add_issuer(&AddIssuerRequest {
                    name,
                    issuer,
                    jwks_url,
                    static_jwks,
                    audiences,
                    max_token_age_secs: max_token_age,
                    single_use,
                })
                .await?;
            output::print(json, &i, || {
                format!("issuer {} trusted ({})", i.name, i.issuer)
            })?;
        }
        IssuerCmd::List => {
            let l = c.list_issuers().await?;
            output::print(json, &l, || {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.issuer.clone(),
                            i.audiences.join(","),
                            if i.static_jwks.is_some() {
                                "static".into()
                            } else {
                                "url".into()
                            },
                            i.single_use.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "ISSUER", "AUDIENCES", "KEYS", "SINGLE USE"],
                    &rows,
                )
            })?;
        }
        IssuerCmd::Remove { name } => {
            c.remove_issuer(&name).await?;
            output::print(json, &serde_json::json!({ "removed": name }), || {
                format!("issuer {name} removed")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// A trust rule for an NHI: tokens of ISSUER whose claims satisfy CONDITION become its
    /// tokens. Waits for an admin other than you (`warden trust approve`).
    Add {
        identity: String,
        #[arg(long)]
        issuer: String,
        /// e.g. 'repository == "org/app" && ref == "refs/heads/main" && environment == "prod"'
        #[arg(long)]
        condition: String,
        /// Tokens through this rule live at most this many seconds (default 300).
        #[arg(long)]
        max_ttl: Option<u64>,
    },
    List {
        #[arg(long)]
        identity: Option<String>,
    },
    Approve {
        id: Uuid,
        #[arg(long)]
        reason: String,
    },
    Deny {
        id: Uuid,
        #[arg(long)]
        reason: String,
    },
    #[command(alias = "remove")]
    Revoke { id: Uuid },
}

pub async fn run_trust(c: &Client, cmd: TrustCmd, json: bool) -> Result<ExitCode> {
    let r = match cmd {
        TrustCmd::Add {
            identity,
            issuer,
            condition,
            max_ttl,
        } => {
            c.add_trust_rule(&AddTrustRuleRequest {
                identity,
                issuer,
                condition,
                max_ttl_secs: max_ttl,
            })
            .await?
        }
        TrustCmd::List { identity } => {
            let l = c.list_trust_rules(identity.as_deref()).await?;
            output::print(json, &l, || {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.identity_id.to_string(),
                            r.status.to_string(),
                            r.max_ttl_secs.to_string(),
                            r.condition.clone(),
                        ]
                    })
                    .collect();
                table(&["ID", "IDENTITY", "STATUS", "MAX TTL", "CONDITION"], &rows)
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        TrustCmd::Approve { id, reason } => {
            c.decide_trust_rule(id, "approve", Some(&reason)).await?
        }
        TrustCmd::Deny { id, reason } => c.decide_trust_rule(id, "deny", Some(&reason)).await?,
        TrustCmd::Revoke { id } => c.decide_trust_rule(id, "revoke", None).await?,
    };
    output::print(json, &r, || format!("trust rule {} is {}", r.id, r.status))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum DelegationCmd {
    /// Lend AGENT some authority: of an identity (--delegator), or of a person known to a
    /// trusted issuer (--issuer and --subject; admins). For one audience, a short time.
    Grant {
        agent: String,
        #[arg(long, conflicts_with_all = ["issuer", "subject"])]
        delegator: Option<String>,
        #[arg(long, requires = "subject")]
        issuer: Option<String>,
        #[arg(long, requires = "issuer")]
        subject: Option<String>,
        /// A scope lent; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The one resource the delegated tokens are for (e.g. an MCP server's URL).
        #[arg(long)]
        audience: String,
        /// e.g. 1h (at most a day).
        #[arg(long)]
        ttl: String,
        /// How many agents deep a chain may go (default 1: no sub-agents).
        #[arg(long)]
        max_depth: Option<u32>,
    },
    List {
        #[arg(long)]
        agent: Option<String>,
    },
    /// Every token derived from it stops working.
    Revoke { id: Uuid },
}

pub async fn run_delegation(c: &Client, cmd: DelegationCmd, json: bool) -> Result<ExitCode> {
    let d = match cmd {
        DelegationCmd::Grant {
            agent,
            delegator,
            issuer,
            subject,
            scopes,
            audience,
            ttl,
            max_depth,
        } => {
            let ttl = crate::config::parse_duration("--ttl", &ttl)?;
            c.create_delegation(&CreateDelegationRequest {
                delegator_identity: delegator,
                delegator_issuer: issuer,
                delegator_subject: subject,
                agent,
                scopes,
                audience,
                ttl_secs: u64::try_from(ttl.whole_seconds())?,
                max_depth,
            })
            .await?
        }
        DelegationCmd::List { agent } => {
            let l = c.list_delegations(agent.as_deref()).await?;
            output::print(json, &l, || {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.to_string(),
                            match &d.delegator {
                                warden_types::Delegator::Identity(i) => i.to_string(),
                                warden_types::Delegator::External { issuer, subject } => {
                                    format!("{issuer}:{subject}")
                                }
                            },
                            d.agent_id.to_string(),
                            d.scopes.join(" "),
                            d.audience.clone(),
                            output::time(d.expires_at),
                            if d.revoked_at.is_some() {
                                "revoked".into()
                            } else {
                                String::new()
                            },
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "DELEGATOR",
                        "AGENT",
                        "SCOPES",
                        "AUDIENCE",
                        "EXPIRES",
                        "",
                    ],
                    &rows,
                )
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        DelegationCmd::Revoke { id } => c.revoke_delegation(id).await?,
    };
    output::print(json, &d, || {
        format!(
            "delegation {} to {} until {}{}",
            d.id,
            d.agent_id,
            output::time(d.expires_at),
            if d.revoked_at.is_some() {
                " (revoked)"
            } else {
                ""
            }
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum McpCmd {
    /// Set an mcp_server identity's resource URL and tools; Warden then serves its RFC 9728
    /// metadata at /.well-known/oauth-protected-resource/mcp/<id>.
    Set {
        identity: String,
        #[arg(long)]
        resource: String,
        /// NAME=SCOPE[,SCOPE…]; repeatable.
        #[arg(long = "tool")]
        tools: Vec<String>,
    },
    Show {
        identity: String,
    },
}

pub async fn run_mcp(c: &Client, cmd: McpCmd, json: bool) -> Result<ExitCode> {
    let server = match cmd {
        McpCmd::Set {
            identity,
            resource,
            tools,
        } => {
            let tools = tools
                .iter()
                .map(|t| {
                    let (name, scopes) = t
                        .split_once('=')
                        .with_context(|| format!("--tool {t:?}: NAME=SCOPE[,SCOPE…]"))?;
                    Ok(McpTool {
                        name: name.to_owned(),
                        description: None,
                        scopes: scopes
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            c.put_mcp_server(&identity, &PutMcpServerRequest { resource, tools })
                .await?
        }
        McpCmd::Show { identity } => c.mcp_server(&identity).await?,
    };
    output::print(json, &server, || {
        let rows: Vec<Vec<String>> = server
            .tools
            .iter()
            .map(|t| vec![t.name.clone(), t.scopes.join(" ")])
            .collect();
        format!(
            "{}  metadata: /.well-known/oauth-protected-resource/mcp/{}\n{}",
            server.resource,
            server.identity_id,
            table(&["TOOL", "SCOPES"], &rows)
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Store a Cedar policy document (admins); refused unless it validates.
    Put {
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    List,
    Delete {
        name: String,
    },
    /// Check a policy file against Warden's schema (offline).
    Validate {
        file: PathBuf,
        #[arg(long, default_value = "policy")]
        name: String,
    },
    /// Evaluate a file of questions with expected decisions against policy files (offline);
    /// exits 1 if any differs.
    Test {
        /// Policy files; repeatable.
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        /// JSON array of {agent, action, resource, delegator, …, expect: "allow"|"deny"}.
        #[arg(long)]
        cases: PathBuf,
    },
    /// Print Warden's Cedar schema.
    Schema,
}

fn read(p: &PathBuf) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

pub async fn run_policy(
    c: impl FnOnce() -> Result<Client>,
    cmd: PolicyCmd,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        PolicyCmd::Put { name, file } => {
            let p = c()?.put_policy(&name, &read(&file)?).await?;
            output::print(json, &p, || {
                format!("policy {} is at version {}", p.name, p.version)
            })?;
        }
        PolicyCmd::List => {
            let l = c()?.list_policies().await?;
            output::print(json, &l, || {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.version.to_string(),
                            p.updated_by.clone(),
                            output::time(p.updated_at),
                        ]
                    })
                    .collect();
                table(&["NAME", "VERSION", "BY", "UPDATED"], &rows)
            })?;
        }
        PolicyCmd::Delete { name } => {
            c()?.delete_policy(&name).await?;
            output::print(json, &serde_json::json!({ "deleted": name }), || {
                format!("policy {name} deleted")
            })?;
        }
        PolicyCmd::Validate { file, name } => match warden_policy::validate(&name, &read(&file)?) {
            Ok(()) => output::print(json, &serde_json::json!({ "valid": true }), || {
                format!("{}: valid", file.display())
            })?,
            Err(errors) => {
                output::print(
                    json,
                    &serde_json::json!({ "valid": false, "errors": errors }),
                    || format!("{}: INVALID\n{}", file.display(), errors.join("\n")),
                )?;
                return Ok(ExitCode::from(1));
            }
        },
        PolicyCmd::Test { policies, cases } => {
            let mut docs = Vec::new();
            for p in &policies {
                let name = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("policy")
                    .to_owned();
                docs.push((name, read(p)?));
            }
            let engine =
                warden_policy::Engine::new(docs.iter().map(|(n, t)| (n.as_str(), t.as_str())))
                    .map_err(|e| anyhow::anyhow!(e))?;
            let cases: Vec<warden_policy::TestCase> = serde_json::from_str(&read(&cases)?)
                .context("the cases file is a JSON array of questions with `expect`")?;
            let mut failed = 0;
            let mut rows = Vec::new();
            for (i, case) in cases.iter().enumerate() {
                let a = engine.decide(&case.question);
                let got = if a.allow { "allow" } else { "deny" };
                let ok = got == case.expect;
                if !ok {
                    failed += 1;
                }
                rows.push(serde_json::json!({
                    "case": i, "action": case.question.action, "expect": case.expect,
                    "got": got, "policies": a.policies, "ok": ok,
                }));
            }
            output::print(json, &rows, || {
                let mut t = String::new();
                for r in &rows {
                    t.push_str(&format!(
                        "{} case {}: {} → {} (expected {}) {}\n",
                        if r["ok"] == true { "ok  " } else { "FAIL" },
                        r["case"],
                        r["action"].as_str().unwrap_or(""),
                        r["got"].as_str().unwrap_or(""),
                        r["expect"].as_str().unwrap_or(""),
                        r["policies"]
                    ));
                }
                t.push_str(&format!("{} cases, {failed} failed", rows.len()));
                t
            })?;
            if failed > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        PolicyCmd::Schema => println!("{}", warden_policy::SCHEMA.trim()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `warden authorize`: ask the decision point; exits 0 when allowed, 1 when denied.
pub async fn run_authorize(
    c: &Client,
    token: String,
    action: String,
    resource: String,
    json: bool,
) -> Result<ExitCode> {
    let r = c
        .authorize(&warden_types::AuthorizeRequest {
            token,
            action,
            resource,
        })
        .await?;
    output::print(json, &r, || {
        format!("{}: {}", r.decision, r.reasons.join("; "))
    })?;
    Ok(if r.decision == "allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
