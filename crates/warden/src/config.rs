//! Server configuration: defaults < TOML file < `WARDEN_*` environment < flags, validated once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use warden_core::Policy;

/// The annotated example written by `warden init` and tested to parse.
pub const EXAMPLE: &str = include_str!("../warden.example.toml");

/// The config file as written: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    /// The base URL clients reach this server at (the OAuth issuer); default `http://<listen>`.
    pub public_url: Option<String>,
    pub log: Option<String>,
    pub credentials: Option<CredentialFile>,
    pub tokens: Option<TokenFile>,
    pub tls: Option<TlsFile>,
    pub guardrails: Option<GuardrailFile>,
    pub audit: Option<AuditFile>,
    /// `sqlite` (default) or `postgres`.
    pub storage: Option<String>,
    pub postgres: Option<PostgresFile>,
    pub cluster: Option<ClusterFile>,
    pub findings: Option<FindingsFile>,
    pub vault: Option<VaultFile>,
    pub hygiene: Option<HygieneFile>,
    pub anomaly: Option<AnomalyFile>,
}

/// `[anomaly]`: usage anomaly detection at the token endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyFile {
    pub enabled: Option<bool>,
    /// How long an identity is observed before anything it does is unusual (default 7d).
    pub learning: Option<String>,
    /// `User-Agent` prefixes of browsers and interactive API tools (replaces the default list).
    pub interactive_agents: Option<Vec<String>>,
    /// Networks (CIDR) people work from: offices, VPN.
    pub human_networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultFile {
    /// The master key file (base64, mode 0600); default DATA_DIR/vault.key.
    pub key_file: Option<PathBuf>,
    /// Keys that may still wrap stored values while `warden vault rewrap` moves them.
    pub previous_key_files: Option<Vec<PathBuf>>,
}

/// Where the vault's master keys come from. `Debug` never shows a key.
#[derive(Clone)]
pub struct VaultSettings {
    pub key_file: PathBuf,
    /// `WARDEN_VAULT_KEY` (base64), which takes the place of the key file.
    pub key_env: Option<zeroize::Zeroizing<String>>,
    pub previous_key_files: Vec<PathBuf>,
    /// The key file is the default one (created on first start of a SQLite server).
    pub default_file: bool,
}

impl std::fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSettings")
            .field("key_file", &self.key_file)
            .field("key_env", &self.key_env.as_ref().map(|_| "[redacted]"))
            .field("previous_key_files", &self.previous_key_files)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsFile {
    /// `revoke` (default) or `flag`.
    pub leaked_warden_credential: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresFile {
    pub url: Option<String>,
    /// The login password, kept out of the URL in a file (mode 0600) that Warden rewrites when it
    /// rotates the password (`warden vault rotate-db-password`).
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub node_name: Option<String>,
    pub lease_ttl: Option<String>,
}

/// Where the registry lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Storage {
    /// `DATA_DIR/warden.db`.
    Sqlite,
    /// A PostgreSQL database several nodes may share.
    Postgres {
        /// Holds the password when there is one: never printed.
        url: String,
        ca_file: Option<PathBuf>,
        max_connections: usize,
        password_file: Option<PathBuf>,
    },
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Sqlite => f.write_str("Sqlite"),
            Storage::Postgres { .. } => f.write_str("Postgres { .. }"),
        }
    }
}

/// This node's part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Names the holder of job leases; unique per node.
    pub node_name: String,
    /// What this node's saved state (anomaly baselines) is kept under: the configured node name,
    /// else the host name — stable across restarts, unlike the default `node_name`.
    pub state_name: String,
    /// How long a node keeps the jobs lease without renewing it (renewed every second).
    pub lease_ttl: time::Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    pub durable_authentication: Option<bool>,
    /// `[[audit.sinks]]`: where the audit log streams to.
    pub sinks: Option<Vec<SinkFile>>,
}

/// One `[[audit.sinks]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFile {
    pub name: String,
    /// `file`, `syslog` or `webhook`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Most events per delivery (default 500 for files and syslog, 100 for webhooks).
    pub batch: Option<usize>,
    /// Actions delivered: exact (`identity.retire`) or a prefix (`anomaly.*`); default all.
    pub actions: Option<Vec<String>>,
    /// file: the JSON Lines file, its rotation size (bytes, default 100 MiB) and rotated copies kept (default 10).
    pub path: Option<PathBuf>,
    pub rotate_bytes: Option<u64>,
    pub keep: Option<usize>,
    /// syslog: `host:port`, TLS (default false), extra CA certificates (PEM file), APP-NAME, HOSTNAME.
    pub address: Option<String>,
    pub tls: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub app_name: Option<String>,
    pub hostname: Option<String>,
    /// webhook: the URL (https, or http to a loopback address).
    pub url: Option<String>,
}

/// Validates the `[[audit.sinks]]` entries.
fn sinks(list: Vec<SinkFile>, data_dir: &Path) -> Result<Vec<warden_targets::sinks::SinkConfig>> {
    use warden_targets::sinks::{SinkConfig, SinkKind};
    let mut out: Vec<SinkConfig> = Vec::new();
    for s in list {
        let at = format!("audit.sinks[{}]", s.name);
        if s.name.is_empty()
            || s.name.len() > 64
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!(
                "audit.sinks: name {:?}: 1 to 64 letters, digits, - or _",
                s.name
            );
        }
        if out.iter().any(|o| o.name == s.name) {
            bail!("{at}: the name is used twice (it names the sink's cursor)");
        }
        let only = |fields: &[(&str, bool)]| -> Result<()> {
            for (f, set) in fields {
                if *set {
                    bail!("{at}: {f} does not apply to a {} sink", s.kind);
                }
            }
            Ok(())
        };
        let kind = match s.kind.as_str() {
            "file" => {
                only(&[
                    ("address", s.address.is_some()),
                    ("tls", s.tls.is_some()),
                    ("ca_file", s.ca_file.is_some()),
                    ("url", s.url.is_some()),
                ])?;
                let path = s.path.clone().with_context(|| format!("{at}: set path"))?;
                let path = if path.is_relative() {
                    data_dir.join(path)
                } else {
                    path
                };
                let rotate_bytes = s.rotate_bytes.unwrap_or(100 * 1024 * 1024);
                if rotate_bytes < 4096 {
                    bail!("{at}: rotate_bytes must be at least 4096");
                }
                SinkKind::File {
                    path,
                    rotate_bytes,
                    keep: s.keep.unwrap_or(10),
                }
            }
            "syslog" => {
                only(&[
                    ("path", s.path.is_some()),
                    ("rotate_bytes", s.rotate_bytes.is_some()),
                    ("keep", s.keep.is_some()),
                    ("url", s.url.is_some()),
                ])?;
                let address = s
                    .address
                    .clone()
                    .with_context(|| format!("{at}: set address (host:port)"))?;
                match address.rsplit_once(':') {
                    Some((host, port))
                        if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                    _ => bail!("{at}: address {address:?} is not host:port"),
                }
                let ca_pem = match &s.ca_file {
                    Some(f) => Some(
                        std::fs::read_to_string(f)
                            .with_context(|| format!("{at}: reading ca_file {}", f.display()))?,
                    ),
                    None => None,
                };
                if ca_pem.is_some() && s.tls != Some(true) {
                    bail!("{at}: ca_file needs tls = true");
                }
                SinkKind::Syslog {
                    address,
                    tls: s.tls.unwrap_or(false),
                    ca_pem,
                    app_name: s.app_name.clone().unwrap_or_else(|| "warden".into()),
                    hostname: s.hostname.clone().unwrap_or_else(host_name),
                }
            }
            "webhook" => {
                only(&[
                    ("path", s.path.is_some()),
                    ("address", s.address.is_some()),
                    ("tls", s.tls.is_some()),
                    ("ca_file", s.ca_file.is_some()),
                ])?;
                let url = s.url.clone().with_context(|| format!("{at}: set url"))?;
                let u = reqwest::Url::parse(&url).map_err(|e| anyhow::anyhow!("{at}: url: {e}"))?;
                let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if !(u.scheme() == "https" || (u.scheme() == "http" && loopback)) {
                    bail!("{at}: url must be https (http only to a loopback address)");
                }
                SinkKind::Webhook { url }
            }
            other => bail!("{at}: type {other:?} is not file, syslog or webhook"),
        };
        let batch = s
            .batch
            .unwrap_or(if s.kind == "webhook" { 100 } else { 500 });
        if !(1..=10_000).contains(&batch) {
            bail!("{at}: batch must be 1 to 10000");
        }
        let actions = s.actions.unwrap_or_default();
        if let Some(a) = actions
            .iter()
            .find(|a| a.is_empty() || a.trim_end_matches('*').contains('*'))
        {
            bail!("{at}: action {a:?}: an action, or a prefix ending in *");
        }
        out.push(SinkConfig {
            name: s.name,
            kind,
            batch,
            actions,
        });
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    pub max_ttl_api_key: Option<String>,
    pub max_ttl_client_secret: Option<String>,
    pub max_ttl_public_key: Option<String>,
    pub rotation_overlap: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// HTTPS settings: the server's certificate chain and key, and the CA of client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub default_ttl: Option<String>,
    pub max_ttl: Option<String>,
    pub signing_alg: Option<String>,
    pub key_rotation_period: Option<String>,
    pub key_publish_delay: Option<String>,
    pub dpop_nonce: Option<bool>,
}

/// `[hygiene]`: when the checks run and their thresholds (durations like `90d`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HygieneFile {
    /// Cron schedule (UTC) of the nightly run; `off` to run only on demand.
    pub schedule: Option<String>,
    pub stale_after: Option<String>,
    pub suspend_stale_after: Option<String>,
    pub unused_scope_after: Option<String>,
    pub long_lived: Option<String>,
    pub expiring_within: Option<String>,
    pub never_expires: Option<String>,
    pub reuse_networks: Option<usize>,
    pub usage_window: Option<String>,
    /// Environment → its networks (CIDR), for `NHI-ENV-MIX`.
    pub environment_networks: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailFile {
    pub privileged_scopes: Option<Vec<String>>,
    pub auth_failure_limit: Option<u32>,
    pub auth_failure_window: Option<String>,
}

/// The validated, immutable server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    pub public_url: Option<String>,
    pub tls: Option<TlsPaths>,
    pub log: String,
    pub policy: Policy,
    pub storage: Storage,
    pub cluster: Cluster,
    pub vault: VaultSettings,
    /// Cron schedule of the hygiene run (`None`: on demand only).
    pub hygiene_schedule: Option<String>,
    /// Where the audit log streams to.
    pub audit_sinks: Vec<warden_targets::sinks::SinkConfig>,
}

/// The hygiene run's default schedule: every night at 03:00 UTC.
pub const DEFAULT_HYGIENE_SCHEDULE: &str = "0 3 * * *";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8640";

pub fn parse_duration(field: &str, v: &str) -> Result<time::Duration> {
    let d = humantime::parse_duration(v)
        .with_context(|| format!("{field}: {v:?} is not a duration like 30d, 12h or 90m"))?;
    let d = time::Duration::try_from(d).with_context(|| format!("{field}: {v:?} is too long"))?;
    if d <= time::Duration::ZERO {
        bail!("{field}: must be greater than zero");
    }
    if d > time::Duration::days(3650) {
        bail!("{field}: at most 3650d");
    }
    Ok(d)
}

impl ServerConfig {
    /// Loads the config for `data_dir`: `config` if given, else `DATA_DIR/warden.toml` if present;
    /// then the environment; then `listen_flag`.
    pub fn load(data_dir: &Path, config: Option<&Path>, listen_flag: Option<&str>) -> Result<Self> {
        let path = config
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join("warden.toml"));
        let file: FileConfig = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        } else if config.is_some() {
            bail!("config file {} does not exist", path.display());
        } else {
            FileConfig::default()
        };
        Self::from_parts(data_dir, file, |k| std::env::var(k).ok(), listen_flag)
    }

    pub fn from_parts(
        data_dir: &Path,
        file: FileConfig,
        env: impl Fn(&str) -> Option<String>,
        listen_flag: Option<&str>,
    ) -> Result<Self> {
        let mut policy = Policy::default();
        let creds = file.credentials.unwrap_or_default();
        let pick = |file_v: Option<String>, env_key: &str| env(env_key).or(file_v);
        if let Some(v) = pick(creds.max_ttl_api_key, "WARDEN_MAX_TTL_API_KEY") {
            policy.max_ttl_api_key = parse_duration("credentials.max_ttl_api_key", &v)?;
        }
        if let Some(v) = pick(creds.max_ttl_client_secret, "WARDEN_MAX_TTL_CLIENT_SECRET") {
            policy.max_ttl_client_secret = parse_duration("credentials.max_ttl_client_secret", &v)?;
        }
        if let Some(v) = pick(creds.max_ttl_public_key, "WARDEN_MAX_TTL_PUBLIC_KEY") {
            policy.max_ttl_public_key = parse_duration("credentials.max_ttl_public_key", &v)?;
        }
        if let Some(v) = pick(creds.rotation_overlap, "WARDEN_ROTATION_OVERLAP") {
            policy.default_rotation_overlap = parse_duration("credentials.rotation_overlap", &v)?;
        }
        let guardrails = file.guardrails.unwrap_or_default();
        if let Some(n) = guardrails.auth_failure_limit {
            if n == 0 {
                bail!("guardrails.auth_failure_limit: must be at least 1");
            }
            policy.auth_failure_limit = n;
        }
        if let Some(w) = &guardrails.auth_failure_window {
            policy.auth_failure_window = parse_duration("guardrails.auth_failure_window", w)?;
        }
        let mut privileged = guardrails.privileged_scopes.unwrap_or_default();
        if let Some(v) = env("WARDEN_PRIVILEGED_SCOPES") {
            privileged = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        for s in &privileged {
            warden_core::scope::check(s)
                .map_err(|e| anyhow::anyhow!("guardrails.privileged_scopes: {e}"))?;
        }
        policy.extra_privileged_scopes = privileged;
        let audit_file = file.audit.unwrap_or_default();
        let durable = audit_file.durable_authentication;
        let audit_sinks = sinks(audit_file.sinks.unwrap_or_default(), data_dir)?;
        policy.durable_authentication_events = match env("WARDEN_DURABLE_AUTHENTICATION").as_deref()
        {
            None => durable.unwrap_or(false),
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => bail!("WARDEN_DURABLE_AUTHENTICATION: {other:?} is not true or false"),
        };
        let tokens = file.tokens.unwrap_or_default();
        let t = &mut policy.tokens;
        if let Some(v) = pick(tokens.default_ttl, "WARDEN_TOKEN_TTL") {
            t.default_ttl = parse_duration("tokens.default_ttl", &v)?;
        }
        if let Some(v) = tokens.max_ttl {
            t.max_ttl = parse_duration("tokens.max_ttl", &v)?;
        }
        if let Some(v) = tokens.key_rotation_period {
            t.key_rotation_period = parse_duration("tokens.key_rotation_period", &v)?;
        }
        if let Some(v) = tokens.key_publish_delay {
            t.key_publish_delay = parse_duration("tokens.key_publish_delay", &v)?;
        }
        if let Some(v) = pick(tokens.signing_alg, "WARDEN_TOKEN_SIGNING_ALG") {
            if v != "EdDSA" && v != "ES256" {
                bail!("tokens.signing_alg: {v:?} is not EdDSA or ES256");
            }
            t.signing_alg = v;
        }
        t.dpop_nonce = match env("WARDEN_DPOP_NONCE").as_deref() {
            None => tokens.dpop_nonce.unwrap_or(false),
            Some("true") => true,
            Some("false") => false,
            Some(other) => bail!("WARDEN_DPOP_NONCE: {other:?} is not true or false"),
        };
        if t.default_ttl > t.max_ttl {
            bail!("tokens.default_ttl is longer than tokens.max_ttl");
        }
        let findings = file.findings.unwrap_or_default();
        policy.revoke_leaked_credentials = match env("WARDEN_LEAKED_CREDENTIAL")
            .or(findings.leaked_warden_credential)
            .as_deref()
        {
            None | Some("revoke") => true,
            Some("flag") => false,
            Some(other) => {
                bail!("findings.leaked_warden_credential: {other:?} is not revoke or flag")
            }
        };
        let hy = file.hygiene.unwrap_or_default();
        let h = &mut policy.hygiene;
        for (v, field, slot) in [
            (hy.stale_after, "hygiene.stale_after", &mut h.stale_after),
            (
                hy.unused_scope_after,
                "hygiene.unused_scope_after",
                &mut h.unused_scope_after,
            ),
            (hy.long_lived, "hygiene.long_lived", &mut h.long_lived),
            (
                hy.expiring_within,
                "hygiene.expiring_within",
                &mut h.expiring_within,
            ),
            (
                hy.never_expires,
                "hygiene.never_expires",
                &mut h.never_expires,
            ),
            (hy.usage_window, "hygiene.usage_window", &mut h.usage_window),
        ] {
            if let Some(v) = v {
                *slot = parse_duration(field, &v)?;
            }
        }
        if let Some(v) = hy.suspend_stale_after {
            h.suspend_stale_after = Some(parse_duration("hygiene.suspend_stale_after", &v)?);
        }
        if let Some(n) = hy.reuse_networks {
            if n == 0 {
                bail!("hygiene.reuse_networks: must be at least 1");
            }
            h.reuse_networks = n;
        }
        for (environment, cidrs) in hy.environment_networks.unwrap_or_default() {
            for c in cidrs {
                warden_core::validate::cidr(&c)
                    .map_err(|e| anyhow::anyhow!("hygiene.environment_networks: {e}"))?;
                h.environment_networks.push((environment.clone(), c));
            }
        }
        let an = file.anomaly.unwrap_or_default();
        let a = &mut policy.anomaly;
        if let Some(v) = an.enabled {
            a.enabled = v;
        }
        if let Some(v) = an.learning {
            a.learning = parse_duration("anomaly.learning", &v)?;
        }
        if let Some(v) = an.interactive_agents {
            if v.iter().any(|p| p.trim().is_empty()) {
                bail!("anomaly.interactive_agents: an empty prefix would match every client");
            }
            a.interactive_agents = v;
        }
        for c in an.human_networks.unwrap_or_default() {
            warden_core::validate::cidr(&c)
                .map_err(|e| anyhow::anyhow!("anomaly.human_networks: {e}"))?;
            a.human_networks.push(c);
        }
        let hygiene_schedule = match hy.schedule.as_deref() {
            Some("off") => None,
            Some(spec) => {
                warden_core::cron::Cron::parse(spec)
                    .map_err(|e| anyhow::anyhow!("hygiene.schedule: {e}"))?;
                Some(spec.to_owned())
            }
            None => Some(DEFAULT_HYGIENE_SCHEDULE.to_owned()),
        };
        let tls_file = file.tls.unwrap_or_default();
        let path = |v: Option<PathBuf>, key: &str| env(key).map(PathBuf::from).or(v);
        let tls = match (
            path(tls_file.cert, "WARDEN_TLS_CERT"),
            path(tls_file.key, "WARDEN_TLS_KEY"),
            path(tls_file.client_ca, "WARDEN_TLS_CLIENT_CA"),
        ) {
            (Some(cert), Some(key), client_ca) => Some(TlsPaths {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => None,
            _ => bail!("tls: set both cert and key (and client_ca only with them)"),
        };
        let public_url = env("WARDEN_PUBLIC_URL").or(file.public_url);
        if let Some(u) = &public_url
            && warden_jose::normalize_url(u).is_none()
        {
            bail!("public_url: {u:?} is not an http(s) URL");
        }
        let listen = listen_flag
            .map(str::to_owned)
            .or_else(|| env("WARDEN_LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("listen: {listen:?} is not an address like 127.0.0.1:8640"))?;
        let log = env("WARDEN_LOG")
            .or(file.log)
            .unwrap_or_else(|| "info".to_owned());
        let pg = file.postgres.unwrap_or_default();
        let url = env("WARDEN_DATABASE_URL").or(pg.url);
        let storage = match (env("WARDEN_STORAGE").or(file.storage).as_deref(), url) {
            (None | Some("sqlite"), None) => Storage::Sqlite,
            (Some("sqlite"), Some(_)) => {
                bail!("storage is \"sqlite\" but a PostgreSQL URL is set; choose one")
            }
            (None | Some("postgres"), Some(url)) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    bail!("postgres.url: must start with postgres:// or postgresql://");
                }
                let max_connections = pg.max_connections.unwrap_or(16);
                if max_connections == 0 {
                    bail!("postgres.max_connections: must be at least 1");
                }
                Storage::Postgres {
                    url,
                    ca_file: env("WARDEN_DATABASE_CA").map(PathBuf::from).or(pg.ca_file),
                    max_connections,
                    password_file: env("WARDEN_DATABASE_PASSWORD_FILE")
                        .map(PathBuf::from)
                        .or(pg.password_file),
                }
            }
            (Some("postgres"), None) => {
                bail!("storage is \"postgres\": set postgres.url or WARDEN_DATABASE_URL")
            }
            (Some(other), _) => bail!("storage: {other:?} is not sqlite or postgres"),
        };
        let cluster_file = file.cluster.unwrap_or_default();
        let configured = env("WARDEN_NODE_NAME").or(cluster_file.node_name);
        let state_name = configured.clone().unwrap_or_else(host_name);
        let node_name = configured.unwrap_or_else(default_node_name);
        if node_name.is_empty() || node_name.len() > 128 || node_name.chars().any(char::is_control)
        {
            bail!("cluster.node_name: 1 to 128 characters, no control characters");
        }
        let lease_ttl = match env("WARDEN_LEASE_TTL").or(cluster_file.lease_ttl) {
            Some(v) => parse_duration("cluster.lease_ttl", &v)?,
            None => time::Duration::seconds(10),
        };
        if lease_ttl < time::Duration::seconds(2) {
            bail!("cluster.lease_ttl: at least 2s (the lease is renewed every second)");
        }
        let vault_file = file.vault.unwrap_or_default();
        let explicit = env("WARDEN_VAULT_KEY_FILE")
            .map(PathBuf::from)
            .or(vault_file.key_file);
        let vault = VaultSettings {
            default_file: explicit.is_none(),
            key_file: explicit.unwrap_or_else(|| data_dir.join("vault.key")),
            key_env: env("WARDEN_VAULT_KEY").map(zeroize::Zeroizing::new),
            previous_key_files: vault_file.previous_key_files.unwrap_or_default(),
        };
        Ok(ServerConfig {
            vault,
            hygiene_schedule,
            audit_sinks,
            data_dir: data_dir.to_owned(),
            listen,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            tls,
            log,
            policy,
            storage,
            cluster: Cluster {
                node_name,
                state_name,
                lease_ttl,
            },
        })
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "warden".to_owned())
}

/// `hostname-pid`: unique per running node.
fn default_node_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_validates() {
        let file: FileConfig = toml::from_str(EXAMPLE).unwrap();
        let c = ServerConfig::from_parts(Path::new("/tmp/x"), file, |_| None, None).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.policy.max_ttl_api_key, time::Duration::days(90));
        assert_eq!(
            c.policy.extra_privileged_scopes,
            vec!["billing:refund".to_owned()]
        );
    }

    #[test]
    fn audit_sinks_are_read() {
        let file: FileConfig = toml::from_str(
            "[[audit.sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"audit/a.jsonl\"\n\
             [[audit.sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"siem.example:6514\"\ntls = true\n\
             [[audit.sinks]]\nname = \"alerts\"\ntype = \"webhook\"\nurl = \"https://hooks.example/w\"\nactions = [\"anomaly.*\"]",
        )
        .expect("toml");
        let c = ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).expect("valid");
        use warden_targets::sinks::SinkKind;
        let s = &c.audit_sinks;
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].kind,
            SinkKind::File {
                path: "/d/audit/a.jsonl".into(),
                rotate_bytes: 100 * 1024 * 1024,
                keep: 10
            }
        );
        assert!(
            matches!(&s[1].kind, SinkKind::Syslog { tls: true, app_name, .. } if app_name == "warden")
        );
        assert_eq!((s[1].batch, s[2].batch), (500, 100));
        assert!(s[2].wants("anomaly.detected") && !s[2].wants("team.create"));
    }

    #[test]
    fn anomaly_settings_are_read() {
        let parse = |t: &str| {
            let file: FileConfig = toml::from_str(t).expect("toml");
            ServerConfig::from_parts(Path::new("/d"), file, |_| None, None)
        };
        let c = parse(
            "[anomaly]\nlearning = \"3d\"\ninteractive_agents = [\"curl/\"]\n\
             human_networks = [\"10.8.0.0/16\"]",
        )
        .expect("valid");
        let a = &c.policy.anomaly;
        assert!(a.enabled);
        assert_eq!(a.learning, time::Duration::days(3));
        assert_eq!(a.interactive_agents, ["curl/"]);
        assert_eq!(a.human_networks, ["10.8.0.0/16"]);
        let default = parse("").expect("valid");
        assert!(
            default
                .policy
                .anomaly
                .interactive_agents
                .contains(&"Mozilla/".to_owned())
        );
        assert!(
            !parse("[anomaly]\nenabled = false")
                .expect("valid")
                .policy
                .anomaly
                .enabled
        );
    }

    #[test]
    fn hygiene_thresholds_and_schedule_are_read_and_checked() {
        let parse = |t: &str| {
            let file: FileConfig = toml::from_str(t).unwrap();
            ServerConfig::from_parts(Path::new("/d"), file, |_| None, None)
        };
        let c = parse(
            "[hygiene]\nschedule = \"30 2 * * 1\"\nstale_after = \"60d\"\nsuspend_stale_after = \"7d\"\n\
             reuse_networks = 3\n[hygiene.environment_networks]\nprod = [\"10.1.0.0/16\"]",
        )
        .unwrap();
        assert_eq!(c.hygiene_schedule.as_deref(), Some("30 2 * * 1"));
        let h = &c.policy.hygiene;
        assert_eq!(h.stale_after, time::Duration::days(60));
        assert_eq!(h.suspend_stale_after, Some(time::Duration::days(7)));
        assert_eq!(h.reuse_networks, 3);
        assert_eq!(
            h.environment_networks,
            vec![("prod".to_owned(), "10.1.0.0/16".to_owned())]
        );
        let default = parse("").unwrap();
        assert_eq!(
            default.hygiene_schedule.as_deref(),
            Some(DEFAULT_HYGIENE_SCHEDULE)
        );
        assert_eq!(
            parse("[hygiene]\nschedule = \"off\"")
                .unwrap()
                .hygiene_schedule,
            None
        );
        for bad in [
            "[hygiene]\nschedule = \"every night\"",
            "[hygiene]\nstale_after = \"soon\"",
            "[hygiene]\nreuse_networks = 0",
            "[hygiene.environment_networks]\nprod = [\"10.1.0.0/99\"]",
            "[hygiene]\nunknown = 1",
            "[anomaly]\nlearning = \"a week\"",
            "[anomaly]\nhuman_networks = [\"10.8.0.0/40\"]",
            "[anomaly]\ninteractive_agents = [\"\"]",
            "[anomaly]\nthreshold = 3",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"kafka\"",
            "[[audit.sinks]]\nname = \"a b\"\ntype = \"file\"\npath = \"x\"",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"file\"",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\nrotate_bytes = 10",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\nurl = \"https://h/\"",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"syslog\"\naddress = \"siem\"",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"http://hooks.example/x\"",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"https://h/\"\nbatch = 0",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"https://h/\"\nactions = [\"a*b\"]",
            "[[audit.sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\n[[audit.sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"y\"",
        ] {
            let file: Result<FileConfig, _> = toml::from_str(bad);
            let refused = match file {
                Err(_) => true,
                Ok(f) => ServerConfig::from_parts(Path::new("/d"), f, |_| None, None).is_err(),
            };
            assert!(refused, "accepted {bad:?}");
        }
    }

    #[test]
    fn precedence_is_file_then_env_then_flag() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:1\"\n[credentials]\nmax_ttl_api_key = \"10d\"")
                .unwrap();
        let env = |k: &str| match k {
            "WARDEN_LISTEN" => Some("127.0.0.1:2".to_owned()),
            "WARDEN_MAX_TTL_API_KEY" => Some("5d".to_owned()),
            _ => None,
        };
        let c = ServerConfig::from_parts(Path::new("/d"), file, env, Some("127.0.0.1:3")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3");
        assert_eq!(c.policy.max_ttl_api_key, time::Duration::days(5));
    }

    #[test]
    fn storage_is_sqlite_unless_a_postgres_url_is_given() {
        let c = ServerConfig::from_parts(Path::new("/d"), FileConfig::default(), |_| None, None)
            .unwrap();
        assert_eq!(c.storage, Storage::Sqlite);
        let env = |k: &str| match k {
            "WARDEN_DATABASE_URL" => Some("postgres://w:hunter2pass@db/warden".to_owned()),
            _ => None,
        };
        let c =
            ServerConfig::from_parts(Path::new("/d"), FileConfig::default(), env, None).unwrap();
        assert!(
            matches!(&c.storage, Storage::Postgres { url, max_connections: 16, .. } if url.contains("@db/"))
        );
        assert!(
            !format!("{c:?}").contains("hunter2pass"),
            "the URL's password is never printed"
        );
        let file: FileConfig = toml::from_str("storage = \"postgres\"").unwrap();
        assert!(ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).is_err());
        let file: FileConfig = toml::from_str("storage = \"mysql\"").unwrap();
        assert!(ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).is_err());
        let file: FileConfig = toml::from_str("[postgres]\nurl = \"mysql://x\"").unwrap();
        assert!(ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).is_err());
        let file: FileConfig = toml::from_str("[cluster]\nlease_ttl = \"1s\"").unwrap();
        assert!(ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).is_err());
        let file: FileConfig =
            toml::from_str("[findings]\nleaked_warden_credential = \"flag\"").unwrap();
        let c = ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).unwrap();
        assert!(!c.policy.revoke_leaked_credentials);
        let file: FileConfig =
            toml::from_str("[findings]\nleaked_warden_credential = \"ignore\"").unwrap();
        assert!(ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        let file: FileConfig = toml::from_str("[credentials]\nmax_ttl_api_key = \"soon\"").unwrap();
        let err = ServerConfig::from_parts(Path::new("/d"), file, |_| None, None).unwrap_err();
        assert!(format!("{err:#}").contains("max_ttl_api_key"));
        let file = FileConfig::default();
        assert!(
            ServerConfig::from_parts(Path::new("/d"), file, |_| None, Some("nowhere")).is_err()
        );
    }
}
