//! Audit sinks: the audit log streamed to a SIEM — JSON Lines files (rotated), syslog (RFC 5424
//! over TCP, octet-counted framing of RFC 6587 §3.4.1, TLS optional as in RFC 5425), and batched
//! webhooks.
//!
//! Each sink has a durable cursor (the last sequence number it delivered, in the store). Its
//! runner reads the events after the cursor, delivers them in chain order, and only then moves
//! the cursor — so across restarts and outages nothing is lost and the order holds; a batch
//! delivered just before a crash (or before the cursor write failed) is delivered again
//! (at-least-once: receivers deduplicate by `seq`). Only the jobs-lease holder delivers, and its
//! cursor writes are fenced: one node at a time. Failures are retried with exponential backoff
//! (1 s doubling to 60 s); a sink's state is reported to `GET /v1/audit/sinks`.
//!
//! Syslog over TCP acknowledges nothing: before each batch the connection is checked (a receiver
//! that closed it is noticed and a new one opened), but bytes accepted by the kernel of a
//! receiver that then crashes are lost to it. Where that matters, use the webhook or file sink.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use warden_core::Registry;
use warden_types::{AuditEvent, AuditOutcome, SinkStatus};

/// Shortest and longest wait after a failed delivery.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often an idle sink looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// How long one delivery (connect, write, answer) may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// The private enterprise number of the syslog structured data (RFC 5612's documentation
/// number, until Warden has its own).
const SD_ID: &str = "warden@32473";
/// Syslog facility 13: log audit (RFC 5424 §6.2.1).
const FACILITY_LOG_AUDIT: u8 = 13;

/// One configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Unique; names the durable cursor.
    pub name: String,
    pub kind: SinkKind,
    /// Most events per delivery.
    pub batch: usize,
    /// Actions delivered (`identity.create`, or a prefix `anomaly.*`); empty: every event.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// JSON Lines appended to `path`; at `rotate_bytes` the file moves to `path.1` (`.1` to `.2`,
    /// …), keeping `keep` rotated files.
    File {
        path: PathBuf,
        rotate_bytes: u64,
        keep: usize,
    },
    /// RFC 5424 messages to `address` (`host:port`) over TCP, or TLS when `tls` (the system's
    /// roots plus `ca_pem`).
    Syslog {
        address: String,
        tls: bool,
        ca_pem: Option<String>,
        app_name: String,
        hostname: String,
    },
    /// A POST of `{"sink", "first_seq", "last_seq", "events": [...]}` per batch, signed like the
    /// vault's webhooks (`warden-signature`, verifiable with `/oauth2/jwks`); any 2xx is success.
    Webhook { url: String },
}

impl SinkConfig {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SinkKind::File { .. } => "file",
            SinkKind::Syslog { .. } => "syslog",
            SinkKind::Webhook { .. } => "webhook",
        }
    }

    /// Where it delivers, without credentials or query.
    pub fn target(&self) -> String {
        match &self.kind {
            SinkKind::File { path, .. } => path.display().to_string(),
            SinkKind::Syslog { address, tls, .. } => {
                format!("{}://{address}", if *tls { "tls" } else { "tcp" })
            }
            SinkKind::Webhook { url } => match reqwest::Url::parse(url) {
                Ok(u) => format!(
                    "{}://{}{}",
                    u.scheme(),
                    u.authority().rsplit('@').next().unwrap_or(""),
                    u.path()
                ),
                Err(_) => "(invalid URL)".into(),
            },
        }
    }

    /// Whether `action` is delivered by this sink.
    pub fn wants(&self, action: &str) -> bool {
        self.actions.is_empty()
            || self.actions.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => action == p,
            })
    }
}

/// Starts one runner per sink.
pub fn spawn(
    registry: Arc<Registry>,
    sinks: Vec<SinkConfig>,
    http: reqwest::Client,
) -> Vec<tokio::task::JoinHandle<()>> {
    sinks
        .into_iter()
        .map(|cfg| {
            let r = Runner::new(Arc::clone(&registry), cfg, http.clone());
            tokio::spawn(r.run())
        })
        .collect()
}

/// A connection to a syslog receiver.
pub enum SyslogConnection {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

use SyslogConnection as Conn;

impl SyslogConnection {
    /// Connects to `address` (`host:port`), over TLS when `tls` — the certificate verified for
    /// the host against the system's roots plus `ca_pem`.
    pub async fn open(address: &str, tls: bool, ca_pem: Option<&str>) -> Result<Self, String> {
        connect(address, tls, ca_pem).await
    }

    /// Sends events as octet-counted RFC 5424 frames.
    pub async fn send(
        &mut self,
        events: &[&AuditEvent],
        hostname: &str,
        app_name: &str,
    ) -> Result<(), String> {
        self.write_all(&frames(events, hostname, app_name))
            .await
            .map_err(|e| format!("writing to the syslog receiver: {e}"))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the receiver still holds the connection: a syslog receiver sends nothing, so
    /// anything readable (end of stream, data, an error) means it is gone.
    pub fn alive(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.tcp().try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

/// One sink's delivery loop.
pub struct Runner {
    registry: Arc<Registry>,
    cfg: SinkConfig,
    http: reqwest::Client,
    conn: Option<Conn>,
    status: SinkStatus,
}

impl Runner {
    pub fn new(registry: Arc<Registry>, cfg: SinkConfig, http: reqwest::Client) -> Runner {
        let status = SinkStatus {
            name: cfg.name.clone(),
            kind: cfg.kind_name().into(),
            target: cfg.target(),
            ..Default::default()
        };
        Runner {
            registry,
            cfg,
            http,
            conn: None,
            status,
        }
    }

    fn failed(&mut self, error: String) {
        tracing::warn!(sink = %self.cfg.name, %error, "audit sink delivery failed");
        self.status.failures += 1;
        self.status.last_error = Some(error);
        self.registry.report_sink(self.status.clone());
    }

    pub async fn run(mut self) {
        self.registry.report_sink(self.status.clone());
        let mut backoff = MIN_BACKOFF;
        // The cursor as last read or written; re-read whenever this node (re)gains the lease.
        let mut cursor: Option<u64> = None;
        loop {
            if !self.registry.is_leader() {
                cursor = None;
                self.conn = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let after = match cursor {
                Some(c) => c,
                None => match self.registry.sink_cursor(&self.cfg.name) {
                    Ok(c) => c,
                    Err(e) => {
                        self.failed(format!("reading the cursor: {e}"));
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                },
            };
            cursor = Some(after);
            let events = match self.registry.audit_after(after, self.cfg.batch) {
                Ok(v) => v,
                Err(e) => {
                    self.failed(format!("reading the audit log: {e}"));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let Some(last) = events.last().map(|e| e.seq) else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            let selected: Vec<&AuditEvent> = events
                .iter()
                .filter(|e| self.cfg.wants(&e.action))
                .collect();
            if !selected.is_empty() {
                let outcome = tokio::time::timeout(DEADLINE, self.deliver(&selected)).await;
                let error = match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("no answer within {} s", DEADLINE.as_secs())),
                };
                if let Some(e) = error {
                    self.conn = None;
                    self.failed(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            match self.registry.advance_sink(&self.cfg.name, last).await {
                Ok(()) => {
                    cursor = Some(last);
                    backoff = MIN_BACKOFF;
                    if !selected.is_empty() {
                        warden_core::registry::sinks::delivered_now(
                            &mut self.status,
                            self.registry.now(),
                        );
                    }
                    self.status.cursor = last;
                    self.registry.report_sink(self.status.clone());
                }
                Err(e) => {
                    // Lost the lease, or the store is down: read the cursor again next time.
                    cursor = None;
                    self.failed(format!("moving the cursor: {e}"));
                    tokio::time::sleep(MIN_BACKOFF).await;
                }
            }
        }
    }

    async fn deliver(&mut self, events: &[&AuditEvent]) -> Result<(), String> {
        match self.cfg.kind.clone() {
            SinkKind::File {
                path,
                rotate_bytes,
                keep,
            } => {
                let mut lines = Vec::new();
                for e in events {
                    serde_json::to_writer(&mut lines, e).map_err(|e| e.to_string())?;
                    lines.push(b'\n');
                }
                tokio::task::spawn_blocking(move || append(&path, &lines, rotate_bytes, keep))
                    .await
                    .map_err(|e| e.to_string())?
            }
            SinkKind::Syslog {
                address,
                tls,
                ca_pem,
                app_name,
                hostname,
            } => {
                let frames = frames(events, &hostname, &app_name);
                if !self.conn.as_ref().is_some_and(Conn::alive) {
                    self.conn = Some(connect(&address, tls, ca_pem.as_deref()).await?);
                }
                let Some(conn) = self.conn.as_mut() else {
                    return Err("no connection".into());
                };
                conn.write_all(&frames)
                    .await
                    .map_err(|e| format!("writing to {address}: {e}"))
            }
            SinkKind::Webhook { url } => {
                let body = json!({
                    "sink": self.cfg.name,
                    "first_seq": events.first().map(|e| e.seq),
                    "last_seq": events.last().map(|e| e.seq),
                    "events": events,
                });
                let call = self
                    .registry
                    .signed_call(&url, &body)
                    .map_err(|e| format!("signing the batch: {e}"))?;
                let resp = self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("warden-signature", &call.signature)
                    .body(call.body.to_vec())
                    .send()
                    .await
                    .map_err(|e| {
                        format!("POST {}: {}", self.status.target, super::without_url(&e))
                    })?;
                let status = resp.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("POST {} answered {status}", self.status.target))
                }
            }
        }
    }
}

async fn connect(address: &str, tls: bool, ca_pem: Option<&str>) -> Result<Conn, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Conn::Plain(tcp));
    }
    let config = super::tls_client_config(ca_pem, "the syslog receiver")?;
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {address}: {e}"))?;
    Ok(Conn::Tls(Box::new(s)))
}

/// Octet-counted frames (RFC 6587 §3.4.1): `LEN SP MSG` per event.
pub fn frames(events: &[&AuditEvent], hostname: &str, app_name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let msg = syslog_message(e, hostname, app_name);
        out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
        out.extend_from_slice(&msg);
    }
    out
}

/// Escapes an RFC 5424 PARAM-VALUE (`"`, `\` and `]`).
fn sd_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field of RFC 5424: printable US-ASCII, at most `max` characters, `-` when empty.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP - MSGID [warden@… seq= …] BOM JSON`.
pub fn syslog_message(e: &AuditEvent, hostname: &str, app_name: &str) -> Vec<u8> {
    let severity = match e.outcome {
        AuditOutcome::Success => 6,
        _ => 4,
    };
    let pri = FACILITY_LOG_AUDIT * 8 + severity;
    let ts = e
        .time
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "-".into());
    let mut m = format!(
        "<{pri}>1 {ts} {} {} - {} [{SD_ID} seq=\"{}\" outcome=\"{}\" actor=\"{}\" target=\"{}\"] ",
        header_field(hostname, 255),
        header_field(app_name, 48),
        header_field(&e.action, 32),
        e.seq,
        e.outcome,
        sd_value(&e.actor),
        sd_value(&e.target),
    )
    .into_bytes();
    m.extend_from_slice("\u{feff}".as_bytes());
    let _ = serde_json::to_writer(&mut m, e);
    m
}

/// Appends `lines` to `path` as one write and syncs it; rotates first when the file would grow
/// past `rotate_bytes`. A line left half-written by a crash is cut off before appending.
fn append(path: &Path, lines: &[u8], rotate_bytes: u64, keep: usize) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(err("reading", e)),
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| err("creating the directory of", e))?;
    }
    if size > 0 && size + lines.len() as u64 > rotate_bytes {
        rotate(path, keep).map_err(|e| err("rotating", e))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).read(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| err("opening", e))?;
    cut_torn_line(&mut f).map_err(|e| err("repairing", e))?;
    f.write_all(lines).map_err(|e| err("writing", e))?;
    f.sync_data().map_err(|e| err("syncing", e))
}

/// If the file does not end with a newline (a write cut by a crash), truncates it after its
/// last newline.
fn cut_torn_line(f: &mut std::fs::File) -> std::io::Result<()> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Walk back in 64 KiB steps to the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return f.set_len(start + i as u64 + 1);
        }
        end = start;
    }
    f.set_len(0)
}

/// `path` → `path.1`, `path.1` → `path.2`, …; the oldest beyond `keep` is removed.
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    match std::fs::remove_file(numbered(keep)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for n in (1..keep).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if keep == 0 {
        std::fs::remove_file(path)
    } else {
        std::fs::rename(path, numbered(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, action: &str, actor: &str) -> AuditEvent {
        AuditEvent {
            seq,
            time: time::macros::datetime!(2026-12-03 10:00:00.5 UTC),
            actor: actor.into(),
            action: action.into(),
            target: "team:x".into(),
            outcome: AuditOutcome::Denied,
            request_id: "r1".into(),
            source: "127.0.0.1".into(),
            details: json!({"k": "v"}),
            prev_hash: "0".repeat(64),
            hash: "1".repeat(64),
        }
    }

    #[test]
    fn syslog_messages_follow_rfc_5424() {
        let m = syslog_message(
            &event(7, "team.create", "operator:a\"b]c"),
            "host 1",
            "warden",
        );
        let s = String::from_utf8(m).unwrap();
        // facility 13 (log audit) × 8 + severity 4 (warning: not a success) = 108
        assert!(
            s.starts_with(
                "<108>1 2026-12-03T10:00:00.5Z host1 warden - team.create [warden@32473 seq=\"7\" outcome=\"denied\" actor=\"operator:a\\\"b\\]c\" target=\"team:x\"] \u{feff}{"
            ),
            "{s}"
        );
        let json_part = s.split('\u{feff}').nth(1).unwrap();
        let back: AuditEvent = serde_json::from_str(json_part).unwrap();
        assert_eq!(back.seq, 7);
    }

    #[test]
    fn filters_take_exact_actions_and_prefixes() {
        let cfg = SinkConfig {
            name: "a".into(),
            kind: SinkKind::Webhook {
                url: "https://user:pw@hooks.example/x?token=1".into(),
            },
            batch: 10,
            actions: vec!["anomaly.*".into(), "identity.retire".into()],
        };
        assert!(cfg.wants("anomaly.detected"));
        assert!(cfg.wants("identity.retire"));
        assert!(!cfg.wants("identity.create"));
        assert_eq!(
            cfg.target(),
            "https://hooks.example/x",
            "no credentials, no query"
        );
    }

    #[test]
    fn files_rotate_keep_their_count_and_lose_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        for i in 0..10 {
            append(&p, format!("{{\"n\":{i}}}\n").as_bytes(), 10, 2).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&p), "{\"n\":9}\n");
        assert_eq!(read(&dir.path().join("audit.jsonl.1")), "{\"n\":8}\n");
        assert_eq!(read(&dir.path().join("audit.jsonl.2")), "{\"n\":7}\n");
        assert!(!dir.path().join("audit.jsonl.3").exists(), "keep = 2");
        // A crash left half a line: it is cut before the next append.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"n\":1")
            .unwrap();
        append(&p, b"{\"n\":10}\n", 1_000, 2).unwrap();
        assert_eq!(read(&p), "{\"n\":9}\n{\"n\":10}\n");
    }
}
