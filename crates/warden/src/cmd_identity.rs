//! `warden identity …`

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;
use warden_client::{Client, IdentityQuery};
use warden_types::{
    Constraints, CreateIdentityRequest, Identity, IdentityChange, IdentityKind, IdentityStatus,
    UpdateIdentityRequest,
};

use crate::config::parse_duration;
use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Register an identity. Privileged scopes hold it for approval.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        kind: IdentityKind,
        /// Owning team (name or id).
        #[arg(long)]
        owner: String,
        /// One line, 10–200 characters: what it is for.
        #[arg(long)]
        purpose: String,
        #[arg(long = "env", alias = "environment")]
        environment: String,
        /// `resource:action`; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// `key=value`; repeat for several.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Parent identity id (for agents: who spawned it).
        #[arg(long)]
        parent: Option<Uuid>,
        /// Expire the identity after this long (e.g. 180d).
        #[arg(long)]
        expires_in: Option<String>,
        /// Refuse plain bearer tokens for it (DPoP or mTLS only).
        #[arg(long)]
        require_sender_constraint: bool,
        /// CIDR it may authenticate from; repeat for several.
        #[arg(long = "allowed-network")]
        allowed_networks: Vec<String>,
        /// For mutual TLS with certificates from the client CA: the SAN (URI such as a SPIFFE ID,
        /// or DNS name) its certificate carries.
        #[arg(long)]
        tls_client_auth_san: Option<String>,
        /// Longest lifetime of its access tokens, in seconds.
        #[arg(long)]
        max_token_ttl: Option<u64>,
    },
    /// List identities, with filters.
    List {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        kind: Option<IdentityKind>,
        #[arg(long)]
        status: Option<IdentityStatus>,
        #[arg(long = "env")]
        environment: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// `key=value`
        #[arg(long)]
        label: Option<String>,
        /// Only identities holding privileged scopes.
        #[arg(long)]
        privileged: bool,
        /// RFC 3339 time, or a duration from now (e.g. 30d).
        #[arg(long)]
        expiring_before: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow cursors to the end.
        #[arg(long)]
        all: bool,
    },
    /// Show one identity (NAME, ENV/NAME or id).
    Show { identity: String },
    /// Change an identity. Narrowing applies at once; privileged widening is held for approval.
    Update {
        identity: String,
        #[arg(long)]
        purpose: Option<String>,
        #[arg(long = "add-scope")]
        add_scopes: Vec<String>,
        #[arg(long = "remove-scope")]
        remove_scopes: Vec<String>,
        #[arg(long = "add-audience")]
        add_audiences: Vec<String>,
        #[arg(long = "remove-audience")]
        remove_audiences: Vec<String>,
        #[arg(long = "set-label")]
        set_labels: Vec<String>,
        #[arg(long = "remove-label")]
        remove_labels: Vec<String>,
    },
    /// Suspend: every credential stops working until resumed.
    Suspend {
        identity: String,
        #[arg(long)]
        reason: String,
    },
    /// Resume a suspended identity.
    Resume {
        identity: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Retire (terminal): revokes every credential at once.
    Retire {
        identity: String,
        #[arg(long)]
        reason: String,
    },
}

fn labels(list: &[String]) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("label {l:?}: expected key=value"))
        })
        .collect()
}

fn time_or_duration(v: &str) -> Result<String> {
    if OffsetDateTime::parse(v, &Rfc3339).is_ok() {
        return Ok(v.to_owned());
    }
    let d = parse_duration("expiring-before", v)?;
    Ok((OffsetDateTime::now_utc() + d).format(&Rfc3339)?)
}

pub fn detail(i: &Identity) -> String {
    let mut s = String::new();
    let mut kv = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
    kv("id", i.id.to_string());
    kv("name", format!("{}/{}", i.environment, i.name));
    kv("kind", i.kind.to_string());
    kv("owner", i.owner.clone());
    kv("purpose", i.purpose.clone());
    kv(
        "status",
        match &i.status_reason {
            Some(r) => format!("{} ({r})", i.status),
            None => i.status.to_string(),
        },
    );
    kv(
        "scopes",
        if i.scopes.is_empty() {
            "-".into()
        } else {
            i.scopes.join(" ")
        },
    );
    kv("privileged", i.privileged.to_string());
    if !i.audiences.is_empty() {
        kv("audiences", i.audiences.join(" "));
    }
    if !i.labels.is_empty() {
        kv(
            "labels",
            i.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    kv("client_id", i.client_id.clone());
    kv("created", output::time(i.created_at));
    kv("last used", output::opt_time(i.last_used_at));
    kv("expires", output::opt_time(i.expires_at));
    s
}

fn change_text(c: &IdentityChange) -> String {
    let mut s = detail(&c.identity);
    if let Some(cr) = &c.change_request {
        s.push_str(&format!(
            "\nHeld for approval: request {} adds {} (privileged: {}).\nAnother admin approves it with: warden approval approve {} --reason \"...\"\n",
            cr.id,
            cr.scopes.join(" "),
            cr.privileged_scopes.join(" "),
            cr.id
        ));
    }
    s
}

fn rows(items: &[Identity]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.environment.clone(),
                i.kind.to_string(),
                i.owner.clone(),
                i.status.to_string(),
                if i.privileged {
                    "yes".into()
                } else {
                    "".into()
                },
                i.scopes.join(" "),
            ]
        })
        .collect()
}

pub async fn run(c: &Client, cmd: IdentityCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        IdentityCmd::Create {
            name,
            kind,
            owner,
            purpose,
            environment,
            scopes,
            audiences,
            labels: l,
            parent,
            expires_in,
            require_sender_constraint,
            allowed_networks,
            tls_client_auth_san,
            max_token_ttl,
        } => {
            let expires_at = expires_in
                .map(|d| parse_duration("expires-in", &d).map(|d| OffsetDateTime::now_utc() + d))
                .transpose()?;
            let req = CreateIdentityRequest {
                name,
                kind,
                owner,
                purpose,
                environment,
                scopes,
                audiences,
                constraints: Some(Constraints {
                    require_sender_constraint: require_sender_constraint.then_some(true),
                    allowed_networks,
                    max_token_ttl_seconds: max_token_ttl,
                    tls_client_auth_san,
                }),
                labels: labels(&l)?,
                parent_id: parent,
                expires_at,
            };
            let out = c.create_identity(&req).await?;
            output::print(json, &out, || change_text(&out))?;
        }
        IdentityCmd::List {
            owner,
            kind,
            status,
            environment,
            name,
            label,
            privileged,
            expiring_before,
            limit,
            cursor,
            all,
        } => {
            let mut q = IdentityQuery {
                owner,
                kind,
                status,
                environment,
                name,
                label,
                privileged: privileged.then_some(true),
                expiring_before: expiring_before
                    .as_deref()
                    .map(time_or_duration)
                    .transpose()?,
                cursor,
                limit: Some(limit),
            };
            let mut page = c.list_identities(&q).await?;
            if all {
                while let Some(next) = page.next_cursor.take() {
                    q.cursor = Some(next);
                    let more = c.list_identities(&q).await?;
                    page.items.extend(more.items);
                    page.next_cursor = more.next_cursor;
                }
            }
            output::print(json, &page, || {
                let mut t = table(
                    &["NAME", "ENV", "KIND", "OWNER", "STATUS", "PRIV", "SCOPES"],
                    &rows(&page.items),
                );
                if let Some(n) = &page.next_cursor {
                    t.push_str(&format!("more: --cursor {n}\n"));
                }
                t
            })?;
        }
        IdentityCmd::Show { identity } => {
            let i = c.identity(&identity).await?;
            output::print(json, &i, || detail(&i))?;
        }
        IdentityCmd::Update {
            identity,
            purpose,
            add_scopes,
            remove_scopes,
            add_audiences,
            remove_audiences,
            set_labels,
            remove_labels,
        } => {
            let req = UpdateIdentityRequest {
                purpose,
                add_scopes,
                remove_scopes,
                add_audiences,
                remove_audiences,
                set_labels: labels(&set_labels)?,
                remove_labels,
                constraints: None,
            };
            if req.purpose.is_none()
                && req.add_scopes.is_empty()
                && req.remove_scopes.is_empty()
                && req.add_audiences.is_empty()
                && req.remove_audiences.is_empty()
                && req.set_labels.is_empty()
                && req.remove_labels.is_empty()
            {
                bail!(
                    "nothing to change: pass --purpose, --add-scope, --remove-scope, … (see --help)"
                );
            }
            let out = c.update_identity(&identity, &req).await?;
            output::print(json, &out, || change_text(&out))?;
        }
        IdentityCmd::Suspend { identity, reason } => {
            let i = c.transition(&identity, "suspend", Some(reason)).await?;
            output::print(json, &i, || detail(&i))?;
        }
        IdentityCmd::Resume { identity, reason } => {
            let i = c.transition(&identity, "resume", reason).await?;
            output::print(json, &i, || detail(&i))?;
        }
        IdentityCmd::Retire { identity, reason } => {
            let i = c.transition(&identity, "retire", Some(reason)).await?;
            output::print(json, &i, || {
                format!(
                    "{}\nRetired; every credential of it is revoked.",
                    detail(&i)
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
