//! `warden credential …` and `warden key verify`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use uuid::Uuid;
use warden_client::Client;
use warden_types::{
    Credential, CredentialKind, IssueCredentialRequest, IssuedCredential, RotateCredentialRequest,
};

use crate::config::parse_duration;
use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    /// Issue a credential; a secret is printed once and never again.
    Issue {
        identity: String,
        #[arg(long = "type")]
        kind: CredentialKind,
        /// Lifetime (e.g. 30d); at most the kind's configured maximum, which is also the default.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// For `public_key`: a file with the public JWK.
        #[arg(long)]
        jwk: Option<std::path::PathBuf>,
    },
    /// Register a public key (same as `issue --type public_key`).
    Add {
        identity: String,
        #[arg(long = "type", default_value = "public_key")]
        kind: CredentialKind,
        #[arg(long)]
        jwk: std::path::PathBuf,
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List an identity's credentials.
    List { identity: String },
    /// Issue a successor; the old one keeps working for the overlap, then is revoked.
    Rotate {
        credential: Uuid,
        /// How long the old credential keeps working (default from config, 24h).
        #[arg(long)]
        overlap: Option<String>,
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Revoke a credential now.
    Revoke {
        credential: Uuid,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Check an API key as a resource server would (`POST /v1/keys/verify`). Pass `-` to read the
    /// key from standard input and keep it out of the process list and shell history.
    Verify { key: String },
}

fn seconds(field: &str, v: Option<String>) -> Result<Option<u64>> {
    v.map(|v| {
        let d = parse_duration(field, &v)?;
        u64::try_from(d.whole_seconds()).context("duration out of range")
    })
    .transpose()
}

fn state(c: &Credential) -> String {
    if c.revoked_at.is_some() {
        "revoked".into()
    } else if c.expires_at <= time::OffsetDateTime::now_utc() {
        "expired".into()
    } else if c.replaced_by.is_some() {
        "rotating-out".into()
    } else {
        "active".into()
    }
}

fn issued_text(out: &IssuedCredential) -> String {
    let c = &out.credential;
    let mut s = format!(
        "credential {}\nkind          {}\nidentity      {}\nexpires       {}\n",
        c.id,
        c.kind,
        c.identity_id,
        output::time(c.expires_at)
    );
    match &out.secret {
        Some(secret) => s.push_str(&format!(
            "\n{secret}\n\nThis secret is shown once. Warden keeps only a keyed hash of it.\n"
        )),
        None => s.push_str(&format!(
            "thumbprint    {}\n",
            c.thumbprint.as_deref().unwrap_or("-")
        )),
    }
    s
}

async fn issue(
    c: &Client,
    identity: &str,
    kind: CredentialKind,
    ttl: Option<String>,
    description: Option<String>,
    jwk: Option<std::path::PathBuf>,
    json: bool,
) -> Result<()> {
    let jwk = match jwk {
        None => None,
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", p.display()))?,
            )
        }
    };
    let req = IssueCredentialRequest {
        kind,
        ttl_seconds: seconds("ttl", ttl)?,
        description,
        jwk,
    };
    let out = c.issue_credential(identity, &req).await?;
    output::print(json, &out, || issued_text(&out))
}

pub async fn run(c: &Client, cmd: CredentialCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        CredentialCmd::Issue {
            identity,
            kind,
            ttl,
            description,
            jwk,
        } => {
            issue(c, &identity, kind, ttl, description, jwk, json).await?;
        }
        CredentialCmd::Add {
            identity,
            kind,
            jwk,
            ttl,
            description,
        } => {
            if kind != CredentialKind::PublicKey {
                bail!("`credential add` registers public keys; use `credential issue` for {kind}");
            }
            issue(c, &identity, kind, ttl, description, Some(jwk), json).await?;
        }
        CredentialCmd::List { identity } => {
            let list = c.list_credentials(&identity).await?;
            output::print(json, &list, || {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            c.kind.to_string(),
                            c.hint.clone(),
                            state(c),
                            output::time(c.expires_at),
                            output::opt_time(c.last_used_at),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "KIND", "HINT", "STATE", "EXPIRES", "LAST USED"],
                    &rows,
                )
            })?;
        }
        CredentialCmd::Rotate {
            credential,
            overlap,
            ttl,
        } => {
            let req = RotateCredentialRequest {
                overlap_seconds: seconds("overlap", overlap)?,
                ttl_seconds: seconds("ttl", ttl)?,
            };
            let out = c.rotate_credential(credential, &req).await?;
            output::print(json, &out, || {
                format!(
                    "{}The old credential {credential} keeps working until its overlap ends.\n",
                    issued_text(&out)
                )
            })?;
        }
        CredentialCmd::Revoke { credential, reason } => {
            let out = c.revoke_credential(credential, reason).await?;
            output::print(json, &out, || format!("credential {} revoked", out.id))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_key(c: &Client, cmd: KeyCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        KeyCmd::Verify { key } => {
            let key = if key == "-" {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim().to_owned()
            } else {
                key
            };
            let v = c.verify_key(&key).await?;
            output::print(json, &v, || {
                if v.valid {
                    format!(
                        "valid: {} ({}), owner {}, scopes {}",
                        v.identity.as_deref().unwrap_or("-"),
                        v.environment.as_deref().unwrap_or("-"),
                        v.owner.as_deref().unwrap_or("-"),
                        v.scopes.as_ref().map(|s| s.join(" ")).unwrap_or_default()
                    )
                } else {
                    "invalid".into()
                }
            })?;
            Ok(if v.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
