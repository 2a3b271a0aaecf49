//! `warden init`, `warden serve`, `warden quickstart`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::net::TcpListener;
use warden_core::ports::Store;
use warden_core::registry::CHECKPOINT_LABEL;
use warden_core::{Registry, SystemClock};
use warden_crypto::ServerKey;
use warden_crypto::envelope::{MasterKey, VaultKeys};
use warden_server::AppState;
use warden_store_postgres::{PasswordCell, PgOptions, PgStore};
use warden_store_sqlite::SqliteStore;

use crate::config::{DEFAULT_LISTEN, EXAMPLE, ServerConfig, Storage};

pub const DB_FILE: &str = "warden.db";
pub const KEY_FILE: &str = "server.key";
pub const VAULT_KEY_FILE: &str = "vault.key";
const LOCK_FILE: &str = "warden.lock";

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where Warden keeps its database, keys and config.
    #[arg(long, env = "WARDEN_DATA_DIR", default_value = "./warden-data")]
    pub data_dir: PathBuf,
    /// Name of the bootstrap admin operator.
    #[arg(long, default_value = "admin")]
    pub admin_name: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "WARDEN_DATA_DIR", default_value = "./warden-data")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 = any free port) [default: 127.0.0.1:8640]
    #[arg(long)]
    pub listen: Option<String>,
    /// Config file [default: DATA_DIR/warden.toml]
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    #[arg(long, default_value = "./warden-data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
}

#[cfg(unix)]
fn private_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn load_key(dir: &Path) -> Result<ServerKey> {
    let path = dir.join(KEY_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading the server key {} (run `warden init` first)",
            path.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            );
        }
    }
    ServerKey::from_bytes(&bytes)
        .with_context(|| format!("{} is not a 32-byte key", path.display()))
}

/// Reads a key file that must be private to the server (mode 0600 on Unix).
fn read_private(path: &Path, what: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(bytes)
}

fn master_key_from(bytes: &[u8], origin: &str) -> Result<MasterKey> {
    MasterKey::from_bytes(bytes)
        .or_else(|| {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(MasterKey::from_text)
        })
        .with_context(|| format!("{origin} is not a vault master key (32 bytes, or their base64)"))
}

/// Writes a new master key file (mode 0600, refusing to overwrite).
pub fn write_vault_key(path: &Path) -> Result<MasterKey> {
    let key = MasterKey::generate();
    let mut f = private_file(path)?;
    f.write_all(key.to_text().as_bytes())?;
    f.sync_all()?;
    Ok(key)
}

/// The vault's master keys: `WARDEN_VAULT_KEY`, else the key file (created on a SQLite server's
/// first start when it is the default one and absent), plus the previous keys.
fn load_vault_keys(cfg: &ServerConfig) -> Result<VaultKeys> {
    let v = &cfg.vault;
    let current = match &v.key_env {
        Some(text) => MasterKey::from_text(text)
            .context("WARDEN_VAULT_KEY is not a vault master key (base64 of 32 bytes)")?,
        None if !v.key_file.exists()
            && v.default_file
            && matches!(cfg.storage, Storage::Sqlite) =>
        {
            let key = write_vault_key(&v.key_file)?;
            tracing::info!(key_id = %key.id(), path = %v.key_file.display(), "created the vault master key");
            key
        }
        None => {
            let bytes = read_private(&v.key_file, "vault master key").with_context(|| {
                "every node needs the vault master key: copy vault.key from where `warden init` \
                 ran, or set WARDEN_VAULT_KEY"
            })?;
            master_key_from(&bytes, &v.key_file.display().to_string())?
        }
    };
    let mut previous = Vec::new();
    for p in &v.previous_key_files {
        let bytes = read_private(p, "previous vault master key")?;
        previous.push(master_key_from(&bytes, &p.display().to_string())?);
    }
    Ok(VaultKeys::new(current, previous))
}

/// The configured store, opened; closes it (joining its threads) when `close` is called.
struct OpenStore {
    store: Arc<dyn Store>,
    close: Box<dyn FnOnce() + Send>,
    /// SQLite: the data-dir lock that keeps a second server away.
    _lock: Option<File>,
    /// PostgreSQL with a password file: where the rotated password goes.
    password: Option<Arc<PasswordFile>>,
}

fn lock_data_dir(dir: &Path, busy: &str) -> Result<File> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .with_context(|| format!("opening the lock file in {}", dir.display()))?;
    if lock.try_lock().is_err() {
        bail!("{busy} {}", dir.display());
    }
    Ok(lock)
}

fn pg_options(
    ca_file: &Option<PathBuf>,
    max_connections: usize,
    password: Option<Arc<PasswordCell>>,
) -> PgOptions {
    PgOptions {
        max_readers: max_connections,
        ca_file: ca_file.clone(),
        password,
        ..PgOptions::default()
    }
}

fn next_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

fn read_password(file: &Path) -> Result<zeroize::Zeroizing<String>> {
    let bytes = read_private(file, "database password file")?;
    let text =
        std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8", file.display()))?;
    Ok(zeroize::Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Writes `text` to `path` atomically (a private temporary file, fsync, rename).
fn write_private_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    {
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        o.mode(0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The node's store password: its file, the `.next` copy staged during a rotation, and the cell
/// new connections read.
struct PasswordFile {
    file: PathBuf,
    cell: Arc<PasswordCell>,
}

impl warden_core::ports::StoreCredentialSink for PasswordFile {
    fn stage(&self, password: &str) -> Result<(), String> {
        write_private_atomic(&next_of(&self.file), password).map_err(|e| e.to_string())
    }

    fn commit(&self, password: &str) -> Result<(), String> {
        // Memory first: connections opened from now on must use it whatever happens to the file.
        self.cell.set(password);
        write_private_atomic(&self.file, password).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(next_of(&self.file));
        Ok(())
    }
}

fn open_store(cfg: &ServerConfig, key: &ServerKey) -> Result<OpenStore> {
    match &cfg.storage {
        Storage::Sqlite => {
            let lock = lock_data_dir(&cfg.data_dir, "another warden server is using")?;
            let store = Arc::new(SqliteStore::open(
                &cfg.data_dir.join(DB_FILE),
                key.hasher(CHECKPOINT_LABEL),
            )?);
            let closing = Arc::clone(&store);
            Ok(OpenStore {
                store,
                close: Box::new(move || closing.close()),
                _lock: Some(lock),
                password: None,
            })
        }
        Storage::Postgres {
            url,
            ca_file,
            max_connections,
            password_file,
        } => {
            let cell = match password_file {
                None => None,
                Some(f) => Some(Arc::new(PasswordCell::new(&read_password(f)?))),
            };
            let open = |cell: Option<Arc<PasswordCell>>| {
                PgStore::open(
                    url,
                    key.hasher(CHECKPOINT_LABEL),
                    pg_options(ca_file, *max_connections, cell),
                )
            };
            let store = match (open(cell.clone()), password_file, &cell) {
                (Ok(s), _, _) => s,
                // A rotation committed in the database but this node died before saving the
                // password: the staged copy is the live one.
                (Err(first), Some(f), Some(cell)) if next_of(f).exists() => {
                    let next = read_password(&next_of(f))?;
                    cell.set(&next);
                    let store = open(Some(Arc::clone(cell))).with_context(|| {
                        format!(
                            "opening the PostgreSQL store (with {} and its .next copy: {first})",
                            f.display()
                        )
                    })?;
                    write_private_atomic(f, &next)
                        .with_context(|| format!("saving the new password to {}", f.display()))?;
                    let _ = std::fs::remove_file(next_of(f));
                    tracing::warn!(file = %f.display(), "used the staged database password from an interrupted rotation");
                    store
                }
                (Err(e), _, _) => return Err(e).context("opening the PostgreSQL store"),
            };
            let store = Arc::new(store);
            let closing = Arc::clone(&store);
            Ok(OpenStore {
                store,
                close: Box::new(move || closing.close()),
                _lock: None,
                password: match (password_file, cell) {
                    (Some(file), Some(cell)) => Some(Arc::new(PasswordFile {
                        file: file.clone(),
                        cell,
                    })),
                    _ => None,
                },
            })
        }
    }
}

/// What `init` produced. Deliberately not `Debug`: it holds the admin token.
#[derive(serde::Serialize)]
pub struct InitOutput {
    pub data_dir: String,
    pub admin: String,
    pub admin_token: String,
}

async fn initialise(dir: &Path, admin: &str) -> Result<InitOutput> {
    if dir.join(KEY_FILE).exists() || dir.join(DB_FILE).exists() {
        bail!(
            "{} is already initialised; the bootstrap token was printed when it was",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let key = ServerKey::generate();
    let mut f = private_file(&dir.join(KEY_FILE))?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    if !dir.join(VAULT_KEY_FILE).exists() {
        write_vault_key(&dir.join(VAULT_KEY_FILE))?;
    }
    let config = dir.join("warden.toml");
    if !config.exists() {
        std::fs::write(&config, EXAMPLE)?;
    }
    let cfg = ServerConfig::load(dir, None, None)?;
    let opened = open_store(&cfg, &key)?;
    let registry = Registry::new(
        Arc::clone(&opened.store),
        Arc::new(SystemClock),
        cfg.policy,
        &key,
    );
    let created = registry.bootstrap_admin(admin).await;
    let close = opened.close;
    let _ = tokio::task::spawn_blocking(close).await;
    let created = created?;
    Ok(InitOutput {
        data_dir: dir.display().to_string(),
        admin: created.operator.name,
        admin_token: created.token,
    })
}

pub async fn init(a: InitArgs, json: bool) -> Result<ExitCode> {
    let out = initialise(&a.data_dir, &a.admin_name).await?;
    crate::output::print(json, &out, || {
        format!(
            "Initialised {}.\nBootstrap admin operator: {}\nAdmin token (shown once, store it safely):\n  {}\n",
            out.data_dir, out.admin, out.admin_token
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// `warden migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[arg(long, env = "WARDEN_DATA_DIR", default_value = "./warden-data")]
    pub data_dir: PathBuf,
    /// Only report the current and the target schema version.
    #[arg(long)]
    pub check: bool,
}

/// Upgrades the database schema (a server also does it at start). SQLite: refuses while a server
/// runs. PostgreSQL: nodes may keep running; migrations are applied once, under a lock.
pub async fn migrate(a: MigrateArgs, json: bool) -> Result<ExitCode> {
    let dir = &a.data_dir;
    let key = load_key(dir)?;
    let cfg = ServerConfig::load(dir, None, None)?;
    let (from, to) = match &cfg.storage {
        Storage::Sqlite => {
            let lock = lock_data_dir(dir, "a warden server is using it; stop it first:")?;
            let r = SqliteStore::migrate_file(
                &dir.join(DB_FILE),
                &key.hasher(CHECKPOINT_LABEL),
                !a.check,
            )?;
            drop(lock);
            r
        }
        Storage::Postgres {
            url,
            ca_file,
            max_connections,
            password_file,
        } => {
            let cell = match password_file {
                None => None,
                Some(f) => Some(Arc::new(PasswordCell::new(&read_password(f)?))),
            };
            let (url, options, hasher, apply) = (
                url.clone(),
                pg_options(ca_file, *max_connections, cell),
                key.hasher(CHECKPOINT_LABEL),
                !a.check,
            );
            tokio::task::spawn_blocking(move || {
                PgStore::migrate_url(&url, &hasher, &options, apply)
            })
            .await
            .context("the migration task")??
        }
    };
    let v = serde_json::json!({ "from": from, "to": to, "applied": !a.check && from != to });
    crate::output::print(json, &v, || match (a.check, from == to) {
        (_, true) => format!("schema version {to}: up to date"),
        (true, false) => format!("schema version {from}; this binary would migrate to {to}"),
        (false, false) => format!("migrated the schema from version {from} to {to}"),
    })?;
    Ok(if a.check && from != to {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_server(cfg: ServerConfig, on_bound: impl FnOnce(&str)) -> Result<ExitCode> {
    init_tracing(&cfg.log);
    let dir = &cfg.data_dir;
    let key = load_key(dir)?;
    let opened = open_store(&cfg, &key)?;
    let registry = Arc::new(Registry::new(
        Arc::clone(&opened.store),
        Arc::new(SystemClock),
        cfg.policy.clone(),
        &key,
    ));
    drop(key);
    let vault_keys = load_vault_keys(&cfg)?;
    let http = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            // A redirect would resend a new secret value somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the vault's HTTP client")?
    };
    let sink_tasks =
        warden_targets::sinks::spawn(registry.clone(), cfg.audit_sinks.clone(), http.clone());
    let targets = Arc::new(warden_targets::Targets::new(http));
    registry.set_vault(Arc::new(vault_keys), targets.clone());
    registry.set_fetcher(targets);
    registry
        .check_vault()
        .context("checking the vault's master key")?;
    if let Some(p) = &opened.password {
        registry.set_store_credential_sink(
            Arc::clone(p) as Arc<dyn warden_core::ports::StoreCredentialSink>
        );
    }
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let tls = match &cfg.tls {
        None => None,
        Some(t) => Some(
            warden_server::Tls::load(&t.cert, &t.key, t.client_ca.as_deref())
                .context("loading the TLS certificate and key")?,
        ),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    registry.set_issuer(
        cfg.public_url
            .as_deref()
            .unwrap_or(&format!("{scheme}://{addr}")),
    );
    registry
        .maintain_signing_keys()
        .await
        .context("preparing the token signing keys")?;
    tracing::info!(address = %addr, data_dir = %dir.display(), "warden listening on {scheme}://{addr}");
    on_bound(&format!("{scheme}://{addr}"));
    match registry.load_anomaly_baselines(&cfg.cluster.state_name) {
        Ok(n) => tracing::info!(baselines = n, "anomaly baselines restored"),
        Err(e) => tracing::warn!(error = %e, "restoring anomaly baselines failed"),
    }
    let jobs = warden_server::spawn_jobs(
        registry.clone(),
        warden_server::JobSettings {
            node: cfg.cluster.node_name.clone(),
            state_name: cfg.cluster.state_name.clone(),
            lease_ttl: cfg.cluster.lease_ttl,
            hygiene: cfg
                .hygiene_schedule
                .as_deref()
                .and_then(|s| warden_core::cron::Cron::parse(s).ok()),
        },
    );
    // Ctrl-C, or SIGTERM (what systemd, Docker and Kubernetes send): stop accepting, finish
    // what is in flight, write the usage counters and anomaly baselines.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    };
    match tls {
        None => warden_server::serve(listener, AppState::new(registry.clone()), shutdown).await?,
        Some(tls) => {
            let mut state = AppState::new(registry.clone());
            state.tls = true;
            warden_server::serve_tls(listener, state, tls, shutdown).await?;
        }
    }
    jobs.abort();
    for t in &sink_tasks {
        t.abort();
    }
    let _ = registry.flush_usage().await;
    if let Err(e) = registry
        .save_anomaly_baselines(&cfg.cluster.state_name)
        .await
    {
        tracing::warn!(error = %e, "saving anomaly baselines failed");
    }
    // Joining the store's threads blocks: keep it off the async workers.
    let _ = tokio::task::spawn_blocking(opened.close).await;
    Ok(ExitCode::SUCCESS)
}

pub async fn serve(a: ServeArgs) -> Result<ExitCode> {
    let cfg = ServerConfig::load(&a.data_dir, a.config.as_deref(), a.listen.as_deref())?;
    run_server(cfg, |url| say(&format!("warden listening on {url}"))).await
}

pub async fn quickstart(a: QuickstartArgs) -> Result<ExitCode> {
    let fresh = if a.data_dir.join(KEY_FILE).exists() {
        None
    } else {
        Some(initialise(&a.data_dir, "admin").await?)
    };
    let cfg = ServerConfig::load(&a.data_dir, None, Some(&a.listen))?;
    run_server(cfg, |url| {
        let mut text = format!(
            "Warden is running at {url} (data in {}).\n",
            a.data_dir.display()
        );
        match &fresh {
            Some(out) => text.push_str(&format!(
                "Bootstrap admin token (shown once, store it safely):\n  {token}\n\
                 In another shell:\n  export WARDEN_URL={url}\n  export WARDEN_TOKEN={token}\n  \
                 warden team create payments\n",
                token = out.admin_token
            )),
            None => text.push_str(&format!(
                "{} was already initialised; use the admin token printed when it was.\n",
                a.data_dir.display()
            )),
        }
        text.push_str("Press Ctrl-C to stop.");
        say(&text);
    })
    .await
}

/// Prints a start-up message. A closed or broken stdout (the launcher stopped reading) must never
/// take the server down, so write errors are ignored.
fn say(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Offline access for `warden audit verify --data-dir`.
pub fn open_offline(dir: &Path) -> Result<(warden_store_sqlite::ReadOnlyStore, ServerKey)> {
    let key = load_key(dir)?;
    let store = SqliteStore::open_read_only(&dir.join(DB_FILE))?;
    Ok((store, key))
}
