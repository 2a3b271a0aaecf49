//! `warden secret …`, `warden vault …`, `warden db …`, `warden creds …`, `warden lease …`

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use uuid::Uuid;
use warden_client::Client;
use warden_types::{
    AddDatabaseRequest, PostgresCredsRequest, PutSecretRequest, RotationPolicy, Rotator, SecretText,
};

use crate::config::parse_duration;
use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a new version. The value is read from stdin (one trailing newline dropped) unless
    /// --from-file or --value is given (--value leaves it in your shell history).
    Put(Box<PutArgs>),
    /// Print a secret's value (the current version, or --version).
    Get {
        path: String,
        #[arg(long)]
        version: Option<u32>,
        /// Take a lease on the read (e.g. 1h); revoke it with `warden lease revoke`.
        #[arg(long)]
        lease: Option<String>,
    },
    /// A secret's metadata and versions (never its value).
    Show { path: String },
    /// Secrets you may see, by path.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Soft delete (a new put restores it), or --destroy the values for good.
    Delete {
        path: String,
        #[arg(long)]
        destroy: bool,
        /// With --destroy: only this version.
        #[arg(long, requires = "destroy")]
        version: Option<u32>,
    },
    /// Rotate now, by the secret's rotation policy.
    Rotate { path: String },
}

#[derive(Debug, Args)]
pub struct PutArgs {
    path: String,
    #[arg(long, conflicts_with = "from_file")]
    value: Option<String>,
    #[arg(long)]
    from_file: Option<PathBuf>,
    /// Owning identity (required on the first put): id, ENV/NAME or NAME.
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Write only if the latest version is this one (0: only if the secret does not exist).
    #[arg(long)]
    cas: Option<u32>,
    /// Rotation: random | postgres | warden-credential | webhook.
    #[arg(long)]
    rotator: Option<String>,
    /// Rotate this often (e.g. 30d); without it, only `warden secret rotate` rotates.
    #[arg(long, requires = "rotator")]
    rotate_every: Option<String>,
    /// Or on a cron schedule in UTC (e.g. "0 3 * * 0": Sundays at 03:00).
    #[arg(long, requires = "rotator", conflicts_with = "rotate_every")]
    schedule: Option<String>,
    /// How long the replaced value stays valid (e.g. 1h).
    #[arg(long, requires = "rotator")]
    overlap: Option<String>,
    /// postgres: the database connection (databases/NAME).
    #[arg(long)]
    database: Option<String>,
    /// postgres: one account, or two (comma-separated) rotated in turn.
    #[arg(long, value_delimiter = ',')]
    accounts: Vec<String>,
    /// postgres: the health check run as the account (default SELECT 1).
    #[arg(long)]
    check_sql: Option<String>,
    /// warden-credential: the identity whose API key this secret holds.
    #[arg(long)]
    identity: Option<String>,
    /// webhook: the rotation endpoint.
    #[arg(long)]
    webhook: Option<String>,
    /// webhook: the health-check endpoint.
    #[arg(long)]
    check_url: Option<String>,
    /// random: length of the value.
    #[arg(long)]
    length: Option<u32>,
    /// Endpoints told (signed POST, no value) after each rotation.
    #[arg(long)]
    notify: Vec<String>,
}

fn secs(field: &str, v: &Option<String>) -> Result<u64> {
    Ok(match v {
        None => 0,
        Some(v) => u64::try_from(parse_duration(field, v)?.whole_seconds()).unwrap_or(0),
    })
}

fn rotation(a: &PutArgs) -> Result<Option<RotationPolicy>> {
    let Some(kind) = a.rotator.as_deref() else {
        return Ok(None);
    };
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .with_context(|| format!("--rotator {kind} needs --{flag}"))
    };
    let rotator = match kind {
        "random" => Rotator::Random {
            length: a.length.unwrap_or(40),
        },
        "postgres" => Rotator::Postgres {
            database: need(&a.database, "database")?,
            accounts: a.accounts.clone(),
            check_sql: a.check_sql.clone(),
        },
        "warden-credential" => Rotator::WardenCredential {
            identity: need(&a.identity, "identity")?,
        },
        "webhook" => Rotator::Webhook {
            url: need(&a.webhook, "webhook")?,
            check_url: a.check_url.clone(),
        },
        other => bail!("--rotator {other:?}: random, postgres, warden-credential or webhook"),
    };
    Ok(Some(RotationPolicy {
        rotator,
        every_secs: secs("--rotate-every", &a.rotate_every)?,
        schedule: a.schedule.clone(),
        overlap_secs: secs("--overlap", &a.overlap)?,
        notify: a.notify.clone(),
    }))
}

fn read_value(value: Option<String>, from_file: Option<PathBuf>) -> Result<SecretText> {
    let mut text = match (value, from_file) {
        (Some(v), _) => v,
        (None, Some(p)) => {
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, None) => {
            let mut s = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut s)
                .context("reading the value from stdin")?;
            s
        }
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        bail!("the value is empty");
    }
    Ok(SecretText(text))
}

fn versions_table(s: &warden_types::Secret) -> String {
    let rows: Vec<Vec<String>> = s
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                v.state.to_string(),
                output::time(v.created_at),
                v.created_by.clone(),
                v.account.clone().unwrap_or_default(),
                v.retire_at.map(output::time).unwrap_or_default(),
                v.key_id.clone(),
            ]
        })
        .collect();
    format!(
        "{}  owner {}  current version {}{}{}\n{}",
        s.path,
        s.owner_id,
        s.current_version,
        s.deleted_at.map(|_| "  (deleted)").unwrap_or_default(),
        s.next_rotation_at
            .map(|t| format!("  next rotation {}", output::time(t)))
            .unwrap_or_default(),
        table(
            &[
                "VERSION", "STATE", "CREATED", "BY", "ACCOUNT", "RETIRES", "KEY"
            ],
            &rows
        )
    )
}

pub async fn run_secret(c: &Client, cmd: SecretCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        SecretCmd::Put(a) => {
            let a = *a;
            let rotation = rotation(&a)?;
            let req = PutSecretRequest {
                value: read_value(a.value, a.from_file)?,
                owner: a.owner,
                description: a.description,
                rotation,
                cas: a.cas,
            };
            let s = c.put_secret(&a.path, &req).await?;
            output::print(json, &s, || {
                format!("{}: version {} stored", s.path, s.current_version)
            })?;
        }
        SecretCmd::Get {
            path,
            version,
            lease,
        } => {
            let lease = match lease {
                None => None,
                Some(l) => Some(u64::try_from(
                    parse_duration("--lease", &l)?.whole_seconds(),
                )?),
            };
            let r = c.read_secret(&path, version, lease).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                // The value alone, for `$(warden secret get …)`; the lease on stderr.
                println!("{}", r.value.0);
                if let Some(l) = &r.lease {
                    eprintln!("lease {} until {}", l.id, output::time(l.expires_at));
                }
            }
        }
        SecretCmd::Show { path } => {
            let s = c.secret_metadata(&path).await?;
            output::print(json, &s, || versions_table(&s))?;
        }
        SecretCmd::List { prefix } => {
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = c.list_secrets(&prefix, cursor.as_deref()).await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            output::print(json, &items, || {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|s| {
                        vec![
                            s.path.clone(),
                            s.current_version.to_string(),
                            s.rotation
                                .as_ref()
                                .map(|r| rotator_name(&r.rotator).to_owned())
                                .unwrap_or_else(|| "-".into()),
                            s.next_rotation_at.map(output::time).unwrap_or_default(),
                            if s.deleted_at.is_some() {
                                "deleted".into()
                            } else {
                                String::new()
                            },
                        ]
                    })
                    .collect();
                table(&["PATH", "VERSION", "ROTATOR", "NEXT ROTATION", ""], &rows)
            })?;
        }
        SecretCmd::Delete {
            path,
            destroy,
            version,
        } => {
            let s = c.delete_secret(&path, destroy, version).await?;
            output::print(json, &s, || {
                if destroy {
                    format!("{path}: values destroyed")
                } else {
                    format!("{path}: deleted (a new put restores it)")
                }
            })?;
        }
        SecretCmd::Rotate { path } => {
            let o = c.rotate_secret(&path).await?;
            output::print(json, &o, || match &o.reason {
                None => format!("{}: rotated to version {}", o.path, o.version),
                Some(r) => format!(
                    "{}: rotation ROLLED BACK (version {} failed): {r}",
                    o.path, o.version
                ),
            })?;
            if o.result != "rotated" {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rotator_name(r: &Rotator) -> &'static str {
    match r {
        Rotator::Random { .. } => "random",
        Rotator::Postgres { .. } => "postgres",
        Rotator::WardenCredential { .. } => "warden-credential",
        Rotator::Webhook { .. } => "webhook",
    }
}

#[derive(Debug, Subcommand)]
pub enum VaultCmd {
    /// Write a new master key file (mode 0600) to switch to.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Move every data key to the server's current master key (admins).
    Rewrap,
    /// Rotate the password Warden logs in to PostgreSQL with (admins; needs
    /// [postgres] password_file). Every node picks the new one up.
    RotateDbPassword,
}

pub async fn run_vault(
    c: impl FnOnce() -> Result<Client>,
    cmd: VaultCmd,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        VaultCmd::Keygen { out } => {
            let key = crate::cmd_server::write_vault_key(&out)?;
            let v = serde_json::json!({ "path": out.display().to_string(), "key_id": key.id() });
            output::print(json, &v, || {
                format!("wrote {} (key id {})", out.display(), key.id())
            })?;
        }
        VaultCmd::RotateDbPassword => {
            let r = c()?.rotate_store_credential().await?;
            output::print(json, &r, || {
                format!("database password rotated (version {})", r.version)
            })?;
        }
        VaultCmd::Rewrap => {
            let r = c()?.rewrap_vault().await?;
            output::print(json, &r, || {
                format!(
                    "{} values re-wrapped under {}; {} left under other keys",
                    r.rewrapped, r.key_id, r.remaining
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Register a PostgreSQL connection (its password is read from stdin) with role templates.
    Add {
        name: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 5432)]
        port: u16,
        #[arg(long)]
        dbname: String,
        /// A role with CREATEROLE that Warden logs in as.
        #[arg(long)]
        username: String,
        /// JSON object: role name → {creation: [SQL], revocation: [SQL], default_ttl_secs, max_ttl_secs}.
        #[arg(long)]
        roles: Option<PathBuf>,
        #[arg(long)]
        description: Option<String>,
        /// TLS to the database: verify-full (the certificate checked for --host) or disable.
        #[arg(long, default_value = "verify-full")]
        sslmode: String,
        /// PEM CA certificates to trust for it, besides the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

pub async fn run_db(c: &Client, cmd: DbCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        DbCmd::Add {
            name,
            owner,
            host,
            port,
            dbname,
            username,
            roles,
            description,
            sslmode,
            ca_file,
        } => {
            let ca_pem = match ca_file {
                None => None,
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                ),
            };
            let roles = match roles {
                None => Default::default(),
                Some(p) => serde_json::from_str(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("parsing the role templates in {}", p.display()))?,
            };
            let req = AddDatabaseRequest {
                name,
                owner,
                host,
                port,
                dbname,
                username,
                password: read_value(None, None)?,
                sslmode,
                ca_pem,
                description,
                roles,
            };
            let s = c.add_database(&req).await?;
            output::print(json, &s, || format!("{}: connection stored", s.path))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum CredsCmd {
    /// A PostgreSQL login created for you now, dropped when its lease ends.
    Postgres {
        role: String,
        /// The database (databases/NAME); needed when several have the role.
        #[arg(long)]
        db: Option<String>,
        #[arg(long)]
        ttl: Option<String>,
    },
}

pub async fn run_creds(c: &Client, cmd: CredsCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        CredsCmd::Postgres { role, db, ttl } => {
            let ttl_secs = match ttl {
                None => None,
                Some(t) => Some(u64::try_from(parse_duration("--ttl", &t)?.whole_seconds())?),
            };
            let r = c
                .postgres_creds(&PostgresCredsRequest {
                    role,
                    database: db,
                    ttl_secs,
                })
                .await?;
            output::print(json, &r, || {
                format!(
                    "username  {}\npassword  {}\nhost      {}:{}\ndbname    {}\nlease     {} (until {})",
                    r.username,
                    r.password.0,
                    r.host,
                    r.port,
                    r.dbname,
                    r.lease.id,
                    output::time(r.lease.expires_at)
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    List {
        #[arg(long)]
        prefix: Option<String>,
        /// Only leases not yet revoked.
        #[arg(long)]
        active: bool,
    },
    /// Extend a lease (by its original length, or --ttl from now; never past its maximum).
    Renew {
        id: Uuid,
        #[arg(long)]
        ttl: Option<String>,
    },
    Revoke {
        id: Uuid,
    },
    /// Revoke every active lease whose path starts with PREFIX (admins).
    RevokePrefix {
        prefix: String,
    },
}

pub async fn run_lease(c: &Client, cmd: LeaseCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        LeaseCmd::List { prefix, active } => {
            let page = c.list_leases(prefix.as_deref(), active).await?;
            output::print(json, &page, || {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|l| {
                        vec![
                            l.id.to_string(),
                            l.kind.to_string(),
                            l.path.clone(),
                            l.username.clone().unwrap_or_default(),
                            output::time(l.expires_at),
                            l.revoked_at.map(output::time).unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "KIND", "PATH", "USERNAME", "EXPIRES", "REVOKED"],
                    &rows,
                )
            })?;
        }
        LeaseCmd::Renew { id, ttl } => {
            let ttl = match ttl {
                None => None,
                Some(t) => Some(u64::try_from(parse_duration("--ttl", &t)?.whole_seconds())?),
            };
            let l = c.renew_lease(id, ttl).await?;
            output::print(json, &l, || {
                format!("lease {} until {}", l.id, output::time(l.expires_at))
            })?;
        }
        LeaseCmd::Revoke { id } => {
            let l = c.revoke_lease(id).await?;
            output::print(json, &l, || match &l.last_error {
                None => format!("lease {} revoked", l.id),
                Some(e) => format!(
                    "lease {} revoked; its target is not cleaned up yet ({e}); retried automatically",
                    l.id
                ),
            })?;
        }
        LeaseCmd::RevokePrefix { prefix } => {
            let r = c.revoke_lease_prefix(&prefix).await?;
            output::print(json, &r, || {
                format!(
                    "{} leases revoked ({} with target cleanup pending)",
                    r.revoked + r.failed,
                    r.failed
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
