//! Warden's store on PostgreSQL, for several `warden serve` nodes sharing one database.
//!
//! - **Ports stay synchronous.** The domain's `ReadStore`/`WriteTx` are synchronous (they fit
//!   SQLite). Here every query is a `tokio-postgres` future whose connection is driven by the
//!   store's own small I/O runtime; the calling thread waits for the answer (inside
//!   `block_in_place` on a multi-threaded runtime, so other tasks move to another worker). Every
//!   wait has a deadline ([`PgOptions::query_timeout`]); a database that is gone answers
//!   `Unavailable` (503), never a hung request.
//! - **Group commit** as on SQLite: one writer thread per node runs waiting jobs in one
//!   transaction, each in its own savepoint, commits once, then answers.
//! - **One chain for the cluster.** Every write transaction first takes a transaction-scoped
//!   advisory lock and then reads the audit chain head: write transactions of all nodes are
//!   serialised, so the chain is strictly ordered and gap-free, and a job's checks (uniqueness,
//!   leases, single-use values) see every commit before it. `audit_events.seq` is the primary key:
//!   a fork could not be stored even if the lock were bypassed.
//! - **Cross-node invalidation**: jobs name what they changed ([`WriteTx::notify_peers`]); the
//!   writer sends `NOTIFY` in the same transaction (delivered only if it commits) and every node's
//!   listener connection passes it to the registry. While a node's listener is disconnected it
//!   reports `Lost` and the registry stops trusting its caches until `Restored`.
//! - Readers come from a bounded pool of connections and see the last committed state.

mod read;
pub mod schema;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use warden_core::StoreError;
use warden_core::audit::checkpoint_mac;
use warden_core::ports::{
    BatchHook, ChainHead, JobOutput, JobReceipt, PeerEvent, PeerListener, ReadStore, Store,
    StoreStats, Topic, WriteJob,
};
use warden_crypto::KeyedHasher;

use crate::write::PgTx;

/// Most jobs committed in one transaction. Each job runs in a savepoint (a subtransaction);
/// PostgreSQL keeps up to 64 of them per transaction in shared memory and beyond that makes every
/// other session's visibility checks slower, so batches stay below it.
pub const MAX_BATCH: usize = 60;
/// Jobs that may wait for the writer before submissions are refused as overloaded.
pub const QUEUE_DEPTH: usize = 16_384;
/// Advisory-lock key held by every write transaction: the cluster's writes are serialised.
const WRITE_LOCK: i64 = 0x5741_5244_4e00_0002;
/// The channel invalidations travel on.
const CHANNEL: &str = "warden_invalidate";
/// How long the writer lets hook-only work gather before committing it without a job.
const HOOK_WINDOW: Duration = Duration::from_micros(500);

/// The password new connections log in with, when it is not in the URL: read from a file at
/// start and replaced when Warden rotates it. `Debug` shows nothing of it.
#[derive(Default)]
pub struct PasswordCell(std::sync::RwLock<zeroize::Zeroizing<String>>);

impl std::fmt::Debug for PasswordCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordCell([redacted])")
    }
}

impl PasswordCell {
    pub fn new(password: &str) -> PasswordCell {
        PasswordCell(std::sync::RwLock::new(zeroize::Zeroizing::new(
            password.to_owned(),
        )))
    }

    /// Replaces the password used by connections opened from now on.
    pub fn set(&self, password: &str) {
        if let Ok(mut p) = self.0.write() {
            *p = zeroize::Zeroizing::new(password.to_owned());
        }
    }

    fn get(&self) -> zeroize::Zeroizing<String> {
        self.0
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|_| zeroize::Zeroizing::new(String::new()))
    }
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections the readers hold open at once (the writer and the listener have one
    /// each).
    pub max_readers: usize,
    /// Deadline for connecting, for a pooled connection, and for each statement.
    pub query_timeout: Duration,
    /// PEM file of CA certificates trusted for the database's TLS certificate, in addition to the
    /// system's roots. TLS itself is chosen by `sslmode` in the URL.
    pub ca_file: Option<std::path::PathBuf>,
    /// The login password, when it is kept out of the URL (and rotated by Warden).
    pub password: Option<Arc<PasswordCell>>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_readers: 16,
            query_timeout: Duration::from_secs(5),
            ca_file: None,
            password: None,
        }
    }
}

pub(crate) fn db_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let msg = format!("{}: {}", db.severity(), db.message());
        return match code {
            "23505" | "23503" | "23514" | "23502" => StoreError::Conflict(msg),
            "40001" | "40P01" | "55P03" | "57014" => StoreError::Unavailable(msg),
            c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
                StoreError::Unavailable(msg)
            }
            "3F000" | "42P01" | "42703" => StoreError::Schema(msg),
            _ => StoreError::Internal(msg),
        };
    }
    // The causes (an I/O error, a TLS alert, an untrusted certificate) are what an operator needs.
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    if msg.starts_with("error deserializing") {
        StoreError::Corrupt(msg)
    } else if msg.starts_with("error serializing") {
        StoreError::Internal(msg)
    } else {
        // Connection refused, reset or closed, TLS failures: the database is unreachable.
        StoreError::Unavailable(format!("the database is unreachable: {msg}"))
    }
}

pub(crate) fn to_us(t: OffsetDateTime) -> i64 {
    warden_core::audit::unix_micros(t)
}

pub(crate) fn opt_us(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(to_us)
}

pub(crate) fn from_us(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

pub(crate) fn opt_from_us(us: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    us.map(from_us).transpose()
}

pub(crate) fn parse_enum<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, StoreError> {
    s.parse().map_err(StoreError::Corrupt)
}

/// Runs `f` where blocking is allowed: inside `block_in_place` on a multi-threaded runtime (the
/// worker's other tasks move elsewhere), directly anywhere else.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Waits for `fut` (whose I/O the store's runtime drives) for at most `timeout`. `None` on
/// timeout.
fn wait<F: Future>(io: &Handle, timeout: Duration, fut: F) -> Option<F::Output> {
    blocking(|| {
        let _enter = io.enter();
        futures_executor::block_on(tokio::time::timeout(timeout, fut)).ok()
    })
}

fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "the database did not answer within {} ms",
        timeout.as_millis()
    ))
}

/// Who drives a connection's I/O.
enum Exec {
    /// The store's I/O runtime (reader connections, used from any thread).
    Shared(Handle),
    /// The connection's own single-threaded runtime, driven by the thread that waits for an
    /// answer (the writer's connection): no hop to another thread per round trip.
    Local(Runtime),
}

/// One database connection with its prepared statements.
pub struct Conn {
    client: Client,
    stmts: Mutex<HashMap<String, Statement>>,
    exec: Exec,
    timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

type Param<'a> = &'a (dyn ToSql + Sync);

impl Conn {
    fn run<T>(
        &self,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let out = match &self.exec {
            Exec::Shared(io) => wait(io, self.timeout, fut),
            // The timer must be created inside the runtime it belongs to.
            Exec::Local(rt) => rt
                .block_on(async { tokio::time::timeout(self.timeout, fut).await })
                .ok(),
        };
        match out {
            Some(r) => r.map_err(db_err),
            None => Err(timed_out(self.timeout)),
        }
    }

    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.lock().ok().and_then(|m| m.get(sql).cloned()) {
            return Ok(s);
        }
        let s = self.run(self.client.prepare(sql))?;
        if let Ok(mut m) = self.stmts.lock() {
            if m.len() >= 512 {
                m.clear();
            }
            m.insert(sql.to_owned(), s.clone());
        }
        Ok(s)
    }

    pub(crate) fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let s = self.statement(sql)?;
        self.run(self.client.query(&s, params))
    }

    pub(crate) fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let s = self.statement(sql)?;
        self.run(self.client.execute(&s, params))
    }

    /// Statements without parameters, in one round trip (simple query protocol).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.run(self.client.batch_execute(sql))
    }

    /// Statements without parameters in one round trip; the rows of the last one, as text.
    pub(crate) fn simple_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        use tokio_postgres::SimpleQueryMessage;
        let msgs = self.run(self.client.simple_query(sql))?;
        let mut rows = Vec::new();
        for m in msgs {
            match m {
                SimpleQueryMessage::Row(r) => {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                SimpleQueryMessage::CommandComplete(_) => {}
                SimpleQueryMessage::RowDescription(_) => rows.clear(),
                _ => {}
            }
        }
        Ok(rows)
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// How to reach the database.
#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    io: Handle,
    timeout: Duration,
    password: Option<Arc<PasswordCell>>,
}

impl Connector {
    fn new(url: &str, options: &PgOptions, io: Handle) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Schema(format!("the PostgreSQL connection URL is invalid: {e}"))
        })?;
        if config.get_application_name().is_none() {
            config.application_name("warden");
        }
        // Custom plans for every execution: a generic plan cached while a table was small (a new
        // database, before autovacuum's first ANALYZE) kept scanning it whole as it grew, and
        // creations slowed down with the table. The statements are simple lookups; planning
        // them with their values costs microseconds.
        if config.get_options().is_none() {
            config.options("-c plan_cache_mode=force_custom_plan");
        }
        config.connect_timeout(options.query_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(tls_config(options.ca_file.as_deref())?),
            io,
            timeout: options.query_timeout,
            password: options.password.clone(),
        })
    }

    /// The connection settings, with the current password when it is kept apart.
    fn config(&self) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        if let Some(cell) = &self.password {
            config.password(cell.get().as_bytes());
        }
        config
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let (config, tls) = (self.config(), self.tls.clone());
        let task = self.io.spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "a database connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = match wait(&self.io, self.timeout + Duration::from_secs(1), task) {
            None => return Err(timed_out(self.timeout)),
            Some(Err(e)) => return Err(StoreError::Internal(format!("connecting: {e}"))),
            Some(Ok(r)) => r.map_err(db_err)?,
        };
        Ok(Conn {
            client,
            stmts: Mutex::new(HashMap::new()),
            exec: Exec::Shared(self.io.clone()),
            timeout: self.timeout,
        })
    }

    /// A connection driven by the calling thread (which must not be inside an async runtime).
    fn connect_local(&self) -> Result<Conn, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Internal(format!("a connection runtime: {e}")))?;
        let (config, tls) = (self.config(), self.tls.clone());
        let client = rt
            .block_on(async { tokio::time::timeout(self.timeout, config.connect(tls)).await })
            .map_err(|_| timed_out(self.timeout))?
            .map(|(client, connection)| {
                rt.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "the writer's database connection ended");
                    }
                });
                client
            })
            .map_err(db_err)?;
        Ok(Conn {
            client,
            stmts: Mutex::new(HashMap::new()),
            exec: Exec::Local(rt),
            timeout: self.timeout,
        })
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                StoreError::Schema(format!(
                    "reading the database CA file {}: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(StoreError::Schema(format!(
                "the database CA file {} holds no certificate",
                path.display()
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                StoreError::Schema(format!("a certificate in {}: {e}", path.display()))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Internal(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections checked out.
    out: usize,
}

/// A bounded pool of reader connections. A broken connection is dropped when it comes back; the
/// next checkout connects anew, so the pool recovers by itself when the database returns.
struct Pool {
    connector: Connector,
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
}

impl Pool {
    fn get(&self) -> Result<Conn, StoreError> {
        let deadline = std::time::Instant::now() + self.connector.timeout;
        blocking(|| {
            let mut st = self
                .state
                .lock()
                .map_err(|_| StoreError::Internal("the pool lock is poisoned".into()))?;
            loop {
                while let Some(c) = st.idle.pop() {
                    if !c.is_closed() {
                        st.out += 1;
                        return Ok(c);
                    }
                }
                if st.out < self.max {
                    st.out += 1;
                    drop(st);
                    let c = self.connector.connect();
                    if c.is_err() {
                        self.release(None);
                    }
                    return c;
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(StoreError::Unavailable(
                        "every database connection is busy; retry".into(),
                    ));
                }
                st = self
                    .freed
                    .wait_timeout(st, deadline - now)
                    .map_err(|_| StoreError::Internal("the pool lock is poisoned".into()))?
                    .0;
            }
        })
    }

    fn release(&self, c: Option<Conn>) {
        if let Ok(mut st) = self.state.lock() {
            st.out = st.out.saturating_sub(1);
            if let Some(c) = c
                && !c.is_closed()
            {
                st.idle.push(c);
            }
        }
        self.freed.notify_one();
    }
}

/// A pooled read connection; returns to the pool when dropped.
struct Reader<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
}

impl Reader<'_> {
    fn conn(&self) -> &Conn {
        // `conn` is `Some` from construction until `drop` takes it.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("reader used after drop"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        self.pool.release(self.conn.take());
    }
}

read::impl_read_store!(Reader<'_>);

/// Counters the server exports as metrics.
#[derive(Debug, Default)]
struct WriterStats {
    batches: AtomicU64,
    jobs: AtomicU64,
    failed_jobs: AtomicU64,
    failed_commits: AtomicU64,
}

type Message = (WriteJob, oneshot::Sender<JobOutput>);
type HookSlot = Arc<Mutex<Option<Arc<dyn BatchHook>>>>;

/// Who hears about other nodes' changes, and whether the listener is connected.
#[derive(Default)]
struct Peers {
    listener: Mutex<Option<Arc<dyn PeerListener>>>,
    connected: AtomicBool,
}

impl Peers {
    fn tell(&self, event: PeerEvent) {
        let l = self.listener.lock().ok().and_then(|l| l.clone());
        if let Some(l) = l {
            l.peer_event(event);
        }
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Arc<Pool>,
    sender: Mutex<Option<SyncSender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    hook: HookSlot,
    stats: Arc<WriterStats>,
    peers: Arc<Peers>,
    stop: Arc<tokio::sync::Notify>,
    runtime: Mutex<Option<IoRuntime>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The store's I/O runtime. Dropping it never blocks (it may be dropped inside an async
/// context, where waiting for its threads is not allowed).
struct IoRuntime(Option<Runtime>);

impl IoRuntime {
    fn handle(&self) -> Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the I/O runtime is only taken by drop"),
        }
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn io_runtime() -> Result<IoRuntime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("warden-pg-io")
        .enable_all()
        .build()
        .map(|rt| IoRuntime(Some(rt)))
        .map_err(|e| StoreError::Internal(format!("starting the database I/O runtime: {e}")))
}

impl PgStore {
    /// Connects, checks the audit chain against its signed checkpoint, applies migrations (once
    /// across nodes starting together), and starts the writer and the invalidation listener.
    /// Refuses a schema newer than this binary.
    pub fn open(
        url: &str,
        checkpoint_key: KeyedHasher,
        options: PgOptions,
    ) -> Result<Self, StoreError> {
        let runtime = io_runtime()?;
        let connector = Connector::new(url, &options, runtime.handle())?;
        let conn = connector.connect()?;
        if schema::version(&conn)? >= 1 {
            check_head(&conn, &checkpoint_key)?;
        }
        schema::migrate(&conn)?;
        check_head(&conn, &checkpoint_key)?;

        let peers = Arc::new(Peers::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        runtime.handle().spawn(listen(
            connector.clone(),
            Arc::clone(&peers),
            Arc::clone(&stop),
        ));
        let (sender, receiver) = sync_channel::<Message>(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let hook: HookSlot = Arc::new(Mutex::new(None));
        drop(conn);
        let writer = Writer {
            conn: None,
            connector: connector.clone(),
            checkpoint_key,
            hook: Arc::clone(&hook),
            stats: Arc::clone(&stats),
            peers: Arc::clone(&peers),
        };
        let handle = std::thread::Builder::new()
            .name("warden-pg-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Internal(format!("starting the writer thread: {e}")))?;
        Ok(PgStore {
            pool: Arc::new(Pool {
                connector,
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    out: 0,
                }),
                freed: Condvar::new(),
                max: options.max_readers.max(1),
            }),
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            hook,
            stats,
            peers,
            stop,
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// `warden migrate`: checks the audit chain, then brings the schema to this binary's version
    /// (or, with `apply` false, only reports). Returns `(from, to)`; refuses a newer schema.
    pub fn migrate_url(
        url: &str,
        checkpoint_key: &KeyedHasher,
        options: &PgOptions,
        apply: bool,
    ) -> Result<(u32, u32), StoreError> {
        let runtime = io_runtime()?;
        let out = (|| {
            let conn = Connector::new(url, options, runtime.handle())?.connect()?;
            let (from, to) = schema::check(&conn)?;
            if from >= 1 {
                check_head(&conn, checkpoint_key)?;
            }
            if !apply {
                return Ok((from, to));
            }
            schema::migrate(&conn)
        })();
        drop(runtime);
        out
    }

    /// Whether this node's invalidation listener is connected.
    pub fn listening(&self) -> bool {
        self.peers.connected.load(Ordering::Acquire)
    }

    /// Stops the writer after the jobs already queued, and the listener; later submissions fail
    /// as unavailable.
    pub fn close(&self) {
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
        self.stop.notify_waiters();
        drop(self.runtime.lock().ok().and_then(|mut r| r.take()));
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for PgStore {
    fn reader(&self) -> Result<Box<dyn ReadStore + Send + '_>, StoreError> {
        Ok(Box::new(Reader {
            conn: Some(self.pool.get()?),
            pool: &self.pool,
        }))
    }

    fn submit(&self, job: WriteJob) -> JobReceipt {
        let (tx, rx) = oneshot::channel();
        let sender = self.sender.lock().ok().and_then(|s| s.clone());
        let Some(sender) = sender else {
            let _ = tx.send(Err(
                StoreError::Unavailable("the store is closed".into()).into()
            ));
            return rx;
        };
        match sender.try_send((job, tx)) {
            Ok(()) => {}
            Err(TrySendError::Full((_, tx))) => {
                let _ = tx.send(Err(StoreError::Unavailable(
                    "the store is overloaded; retry".into(),
                )
                .into()));
            }
            Err(TrySendError::Disconnected((_, tx))) => {
                let _ = tx.send(Err(StoreError::Unavailable(
                    "the store's writer stopped".into(),
                )
                .into()));
            }
        }
        rx
    }

    fn ready(&self) -> Result<(), StoreError> {
        let r = Reader {
            conn: Some(self.pool.get()?),
            pool: &self.pool,
        };
        r.conn().batch("SELECT 1")?;
        if self.sender.lock().map(|s| s.is_none()).unwrap_or(true) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    fn set_batch_hook(&self, hook: Arc<dyn BatchHook>) {
        if let Ok(mut slot) = self.hook.lock() {
            *slot = Some(hook);
        }
    }

    fn set_peer_listener(&self, listener: Arc<dyn PeerListener>) {
        // Until the listener connection is up, other nodes' changes cannot be heard.
        if !self.peers.connected.load(Ordering::Acquire) {
            listener.peer_event(PeerEvent::Lost);
        }
        if let Ok(mut slot) = self.peers.listener.lock() {
            *slot = Some(listener);
        }
        if self.peers.connected.load(Ordering::Acquire) {
            self.peers.tell(PeerEvent::Restored);
        }
    }

    fn stats(&self) -> StoreStats {
        let s = &self.stats;
        StoreStats {
            commits: s.batches.load(Ordering::Relaxed),
            jobs: s.jobs.load(Ordering::Relaxed),
            failed_jobs: s.failed_jobs.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
        }
    }
}

/// The chain head from `SELECT seq, encode(hash, 'hex')` rows (none: the empty chain).
fn head_of(rows: &[Vec<Option<String>>]) -> Result<ChainHead, StoreError> {
    let Some(row) = rows.last() else {
        return Ok(ChainHead::default());
    };
    let bad = || StoreError::Corrupt("the audit chain head is malformed".into());
    let seq = row
        .first()
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(bad)?;
    let hex = row.get(1).and_then(|v| v.as_deref()).ok_or_else(bad)?;
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(ChainHead { seq, hash })
}

/// Refuses to extend a chain whose head is not the one the last commit signed.
fn check_head(conn: &Conn, key: &KeyedHasher) -> Result<(), StoreError> {
    let refuse = |why: &str| {
        Err(StoreError::Corrupt(format!(
            "the audit chain {why}; it was changed outside Warden. \
             Run `warden audit verify` to find the first bad event"
        )))
    };
    let head = read::audit_head(conn)?;
    match read::audit_checkpoint(conn)? {
        None if head.seq == 0 => Ok(()),
        None => refuse("has events but no signed checkpoint"),
        Some(c) => {
            if !warden_crypto::ct_eq(&checkpoint_mac(key, &c.head), &c.mac) {
                return refuse("checkpoint signature is invalid");
            }
            if c.head != head {
                return refuse("head does not match the signed checkpoint");
            }
            Ok(())
        }
    }
}

/// Listens for other nodes' invalidations; reconnects when the connection drops, reporting
/// `Lost` at once and `Restored` once listening again.
async fn listen(connector: Connector, peers: Arc<Peers>, stop: Arc<tokio::sync::Notify>) {
    use tokio_postgres::AsyncMessage;
    loop {
        let attempt = async {
            let (client, mut connection) =
                connector.config().connect(connector.tls.clone()).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let driver = tokio::spawn(async move {
                while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    match m {
                        Ok(AsyncMessage::Notification(n)) => {
                            if tx.send(n.payload().to_owned()).is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
            if listening.is_ok() {
                peers.connected.store(true, Ordering::Release);
                peers.tell(PeerEvent::Restored);
                while let Some(payload) = rx.recv().await {
                    match Topic::parse(&payload) {
                        Some(t) => peers.tell(PeerEvent::Changed(t)),
                        None => peers.tell(PeerEvent::Restored),
                    }
                }
            }
            driver.abort();
            drop(client);
            listening
        };
        let outcome = tokio::select! {
            r = attempt => Some(r),
            () = stop.notified() => None,
        };
        if peers.connected.swap(false, Ordering::AcqRel) {
            peers.tell(PeerEvent::Lost);
        }
        match outcome {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "the invalidation listener is disconnected"),
            Some(Ok(())) => tracing::warn!("the invalidation listener lost its connection"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = stop.notified() => return,
        }
    }
}

struct Writer {
    conn: Option<Conn>,
    connector: Connector,
    checkpoint_key: KeyedHasher,
    hook: HookSlot,
    stats: Arc<WriterStats>,
    peers: Arc<Peers>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        let mut more = false;
        loop {
            let first = if more {
                match receiver.recv_timeout(HOOK_WINDOW) {
                    Ok(m) => Some(m),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match receiver.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            batch.extend(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            more = self.run_batch(batch);
        }
        if self.hook.lock().ok().and_then(|h| h.clone()).is_some() {
            let _ = self.run_batch(Vec::new());
        }
    }

    /// Fails every job of a batch that could not start, or whose commit failed.
    fn fail(&mut self, batch: Vec<oneshot::Sender<JobOutput>>, e: &StoreError) {
        self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
        for reply in batch {
            let _ = reply.send(Err(e.clone().into()));
        }
        if matches!(e, StoreError::Unavailable(_)) {
            // The connection may be broken: connect anew for the next batch.
            self.conn = None;
        }
    }

    /// Runs the hook and one batch of jobs in one transaction. Returns whether the hook wants
    /// another transaction soon.
    fn run_batch(&mut self, batch: Vec<Message>) -> bool {
        let hook = self.hook.lock().ok().and_then(|h| h.clone());
        if self.conn.as_ref().is_none_or(Conn::is_closed) {
            match self.connector.connect_local() {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    if let Some(h) = &hook {
                        h.finished(false);
                    }
                    let replies = batch.into_iter().map(|(_, r)| r).collect();
                    self.fail(replies, &e);
                    return false;
                }
            }
        }
        let Some(conn) = self.conn.take() else {
            return false;
        };
        let (replies, result, more) = self.transaction(&conn, batch, hook.as_deref());
        self.conn = Some(conn);
        match result {
            Ok(done) => {
                for (reply, out) in replies.into_iter().zip(done) {
                    let _ = reply.send(out);
                }
                more
            }
            Err(e) => {
                if let Some(c) = &self.conn {
                    let _ = c.batch("ROLLBACK");
                }
                // The commit's outcome may be unknown (connection lost during COMMIT): what this
                // node has cached may be stale either way.
                self.peers.tell(PeerEvent::Changed(Topic::Authentication));
                self.peers.tell(PeerEvent::Changed(Topic::SigningKeys));
                self.fail(replies, &e);
                false
            }
        }
    }

    /// The transaction itself: returns the reply channels, each job's output (or the error that
    /// failed the whole transaction), and whether the hook has more work.
    #[allow(clippy::type_complexity, reason = "one private call site")]
    fn transaction(
        &self,
        conn: &Conn,
        batch: Vec<Message>,
        hook: Option<&dyn BatchHook>,
    ) -> (
        Vec<oneshot::Sender<JobOutput>>,
        Result<Vec<JobOutput>, StoreError>,
        bool,
    ) {
        let mut replies = Vec::with_capacity(batch.len());
        let mut jobs = Vec::with_capacity(batch.len());
        for (job, reply) in batch {
            replies.push(reply);
            jobs.push(job);
        }
        // Serialise with every other node's writer, then read the head they left: one round
        // trip.
        let begun = conn
            .simple_rows(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}); \
                 SELECT seq, encode(hash, 'hex') FROM audit_events ORDER BY seq DESC LIMIT 1"
            ))
            .and_then(|rows| head_of(&rows));
        let start = match begun {
            Ok(h) => h,
            Err(e) => {
                if let Some(h) = hook {
                    h.finished(false);
                }
                return (replies, Err(e), false);
            }
        };
        let mut tx = PgTx {
            conn,
            head: start,
            effects: Vec::new(),
            topics: Vec::new(),
        };
        // Each job (and the hook) runs in a savepoint. A successful job's savepoint is released
        // together with the next one's creation (or by COMMIT): one round trip per job.
        let mut open = false;
        let savepoint = |open: &mut bool| {
            let r = conn.batch(if *open {
                "RELEASE SAVEPOINT job; SAVEPOINT job"
            } else {
                "SAVEPOINT job"
            });
            *open = r.is_ok();
            r
        };
        if let Some(h) = hook
            && savepoint(&mut open).is_ok()
        {
            let before = tx.head;
            let ok = matches!(
                catch_unwind(AssertUnwindSafe(|| h.in_transaction(&mut tx))),
                Ok(Ok(()))
            );
            if !ok {
                tx.head = before;
                tx.effects.clear();
                tx.topics.clear();
                open = false;
                let _ = conn.batch("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job");
            }
        }
        let mut done = Vec::with_capacity(jobs.len());
        for job in jobs {
            let out = match savepoint(&mut open) {
                Err(e) => Err(e.into()),
                Ok(()) => {
                    let (before, effects, topics) = (tx.head, tx.effects.len(), tx.topics.len());
                    let out = match catch_unwind(AssertUnwindSafe(|| job(&mut tx))) {
                        Ok(out) => out,
                        Err(_) => Err(StoreError::Internal("a write job panicked".into()).into()),
                    };
                    if out.is_err() {
                        tx.head = before;
                        tx.effects.truncate(effects);
                        tx.topics.truncate(topics);
                        self.stats.failed_jobs.fetch_add(1, Ordering::Relaxed);
                        open = false;
                        match conn.batch("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job") {
                            Ok(()) => out,
                            Err(e) => Err(e.into()),
                        }
                    } else {
                        out
                    }
                }
            };
            done.push(out);
        }
        let PgTx {
            head,
            effects,
            mut topics,
            ..
        } = tx;
        // The signed checkpoint, the notifications and COMMIT in one round trip (the values are
        // our own: numbers, hex and fixed topic names).
        let mut sql = String::new();
        if head != start {
            let mac = checkpoint_mac(&self.checkpoint_key, &head);
            sql.push_str(&format!(
                "INSERT INTO audit_checkpoint (id, seq, hash, mac) VALUES (1, {}, '\\x{}'::bytea, '\\x{}'::bytea) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac; ",
                head.seq,
                warden_crypto::hex(&head.hash),
                warden_crypto::hex(&mac)
            ));
        }
        topics.sort_unstable();
        topics.dedup();
        for t in &topics {
            sql.push_str(&format!(
                "SELECT pg_notify('{CHANNEL}', '{}'); ",
                t.as_str()
            ));
        }
        sql.push_str("COMMIT");
        let committed = conn.batch(&sql);
        match committed {
            Ok(()) => {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .jobs
                    .fetch_add(done.len() as u64, Ordering::Relaxed);
                for effect in effects {
                    effect();
                }
                let more = hook.is_some_and(|h| h.finished(true));
                (replies, Ok(done), more)
            }
            Err(e) => {
                drop(effects);
                if let Some(h) = hook {
                    h.finished(false);
                }
                (replies, Err(e), false)
            }
        }
    }
}
