//! Warden's store on SQLite.
//!
//! - One file in WAL mode with `synchronous = FULL` and foreign keys on; migrations embedded and the
//!   schema version checked at open ([`schema`]).
//! - **Group commit**: one writer thread owns the only write connection. It takes every job that is
//!   waiting (up to [`MAX_BATCH`]), runs each inside its own `SAVEPOINT` — a failing job is rolled
//!   back alone, including its audit events — then commits the batch once and only then hands each
//!   job its result. One fsync is shared by the whole batch; nothing is acknowledged before it.
//! - Readers come from a small pool of read-only connections and see the last committed state.

mod read;
pub mod schema;
mod write;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use warden_core::StoreError;
use warden_core::audit::checkpoint_mac;
use warden_core::ports::{
    BatchHook, ChainHead, JobOutput, JobReceipt, ReadStore, Store, StoreStats, WriteJob,
};
use warden_crypto::KeyedHasher;

use crate::write::SqliteTx;

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Jobs that may wait for the writer before submissions are refused as overloaded.
pub const QUEUE_DEPTH: usize = 16_384;
const IDLE_READERS: usize = 16;
/// How long the writer lets hook-only work gather before committing it without a job.
const HOOK_WINDOW: std::time::Duration = std::time::Duration::from_micros(500);

pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory => StoreError::Unavailable(e.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
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

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(db_err)
}

/// Counters the server exports as metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub failed_jobs: AtomicU64,
    pub failed_commits: AtomicU64,
}

type Message = (WriteJob, oneshot::Sender<JobOutput>);

struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn get(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
            .map_err(db_err)?;
        c.set_prepared_statement_cache_capacity(64);
        Ok(c)
    }

    fn put(&self, c: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < IDLE_READERS
        {
            v.push(c);
        }
    }
}

/// A pooled read connection; returns to the pool when dropped.
struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a Pool,
    /// Reads share one read transaction (a snapshot), ended on drop.
    snapshot: bool,
}

impl Reader<'_> {
    fn conn(&self) -> &Connection {
        // `conn` is `Some` from construction until `drop` takes it.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("reader used after drop"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if self.snapshot {
                let ended = c
                    .prepare_cached("COMMIT")
                    .and_then(|mut s| s.execute([]))
                    .is_ok();
                if !ended && !c.is_autocommit() {
                    // Still inside the transaction: never hand it to another reader.
                    return;
                }
            }
            self.pool.put(c);
        }
    }
}

read::impl_read_store!(Reader<'_>);

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    pool: Pool,
    sender: Mutex<Option<SyncSender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    hook: HookSlot,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.pool.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations, and starts the
    /// writer. `checkpoint_key` signs the audit chain head at every commit.
    pub fn open(path: &Path, checkpoint_key: KeyedHasher) -> Result<Self, StoreError> {
        Self::open_with(path, checkpoint_key, WalOptions::default())
    }

    /// [`SqliteStore::open`] with explicit WAL limits (tests use small ones).
    pub fn open_with(
        path: &Path,
        checkpoint_key: KeyedHasher,
        wal: WalOptions,
    ) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(db_err)?;
        configure(&conn)?;
        // An existing chain is checked against its checkpoint before anything is changed, so a
        // tampered database is refused without being upgraded.
        if schema::version(&conn)? >= 1 {
            check_head(&conn, read::audit_head(&conn)?, &checkpoint_key)?;
        }
        schema::migrate(&mut conn)?;
        conn.set_prepared_statement_cache_capacity(128);
        let head = read::audit_head(&conn)?;
        check_head(&conn, head, &checkpoint_key)?;
        // Checkpoints happen on their own thread, so the writer never stalls copying WAL pages.
        // Savepoint journals stay in memory. (A larger page cache than SQLite's default was
        // tried: no measurable gain, and commits then spend time truncating it.)
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = {};
             PRAGMA temp_store = MEMORY;",
            wal.size_limit_bytes
        ))
        .map_err(db_err)?;

        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let wal_long = Arc::new(AtomicBool::new(false));
        let checkpointer = spawn_checkpointer(path, stop_rx, Arc::clone(&wal_long), wal)?;
        let (sender, receiver) = sync_channel::<Message>(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let writer_stats = Arc::clone(&stats);
        let hook: HookSlot = Arc::new(Mutex::new(None));
        let writer_hook = Arc::clone(&hook);
        let handle = std::thread::Builder::new()
            .name("warden-sqlite-writer".into())
            .spawn(move || {
                run_writer(
                    conn,
                    receiver,
                    checkpoint_key,
                    head,
                    writer_hook,
                    &writer_stats,
                    &wal_long,
                )
            })
            .map_err(|e| StoreError::Internal(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            pool: Pool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            },
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some((stop_tx, checkpointer))),
            hook,
            stats,
        })
    }

    /// `warden migrate`: checks the audit chain, then brings the schema of an existing database to
    /// this binary's version (or, with `apply` false, only reports). Returns `(from, to)`;
    /// refuses a schema newer than this binary knows.
    pub fn migrate_file(
        path: &Path,
        checkpoint_key: &KeyedHasher,
        apply: bool,
    ) -> Result<(u32, u32), StoreError> {
        if !path.exists() {
            return Err(StoreError::Unavailable(format!(
                "no database at {}",
                path.display()
            )));
        }
        let mut conn = Connection::open(path).map_err(db_err)?;
        configure(&conn)?;
        let from = schema::version(&conn)?;
        if from > schema::latest() {
            return Err(StoreError::Schema(format!(
                "the database has schema version {from}, newer than this binary knows ({}); upgrade warden",
                schema::latest()
            )));
        }
        if from >= 1 {
            check_head(&conn, read::audit_head(&conn)?, checkpoint_key)?;
        }
        if !apply {
            return Ok((from, schema::latest()));
        }
        schema::migrate(&mut conn)
    }

    /// Opens an existing database read-only for offline inspection (no writer, no migration);
    /// refuses a schema this binary does not know.
    pub fn open_read_only(path: &Path) -> Result<ReadOnlyStore, StoreError> {
        if !path.exists() {
            return Err(StoreError::Unavailable(format!(
                "no database at {}",
                path.display()
            )));
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_err)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(db_err)?;
        let v = schema::version(&conn)?;
        if v != schema::latest() {
            return Err(StoreError::Schema(format!(
                "the database has schema version {v}; this binary reads version {}",
                schema::latest()
            )));
        }
        Ok(ReadOnlyStore(conn))
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Stops the writer after the jobs already queued; later submissions fail as unavailable.
    pub fn close(&self) {
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
        if let Some((stop, h)) = self.checkpointer.lock().ok().and_then(|mut c| c.take()) {
            drop(stop);
            let _ = h.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// A read-only view of a database file, for `warden audit verify --data-dir`.
pub struct ReadOnlyStore(Connection);

impl ReadOnlyStore {
    fn conn(&self) -> &Connection {
        &self.0
    }
}

read::impl_read_store!(ReadOnlyStore);

impl Store for SqliteStore {
    fn reader(&self) -> Result<Box<dyn ReadStore + Send + '_>, StoreError> {
        Ok(Box::new(Reader {
            conn: Some(self.pool.get()?),
            pool: &self.pool,
            snapshot: false,
        }))
    }

    fn snapshot(&self) -> Result<Box<dyn ReadStore + Send + '_>, StoreError> {
        let conn = self.pool.get()?;
        // A deferred transaction: its first read takes the WAL snapshot every later read sees.
        conn.prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]))
            .map_err(|e| StoreError::Internal(format!("begin a read transaction: {e}")))?;
        Ok(Box::new(Reader {
            conn: Some(conn),
            pool: &self.pool,
            snapshot: true,
        }))
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
            snapshot: false,
        };
        r.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(db_err)?;
        if self.sender.lock().map(|s| s.is_none()).unwrap_or(true) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        Ok(())
    }

    fn set_batch_hook(&self, hook: Arc<dyn BatchHook>) {
        if let Ok(mut slot) = self.hook.lock() {
            *slot = Some(hook);
        }
    }
}

/// How the WAL is kept bounded. Under continuous writes a checkpoint on another thread never ends
/// between two transactions, and SQLite only rewinds the log when a transaction starts on a fully
/// copied one: without help the WAL grows without bound (and every commit extends the file, which
/// the kernel zero-fills at a high CPU cost).
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// How often the checkpointer copies committed WAL pages into the database file.
    pub checkpoint_every: std::time::Duration,
    /// WAL frames beyond which the log is brought back to its start.
    pub restart_frames: i64,
    /// The WAL file is trimmed to this size when the log restarts (`journal_size_limit`).
    pub size_limit_bytes: i64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            checkpoint_every: std::time::Duration::from_millis(200),
            restart_frames: 16_384,
            size_limit_bytes: 64 << 20,
        }
    }
}

/// Copies committed WAL pages into the database file on its own thread (`PASSIVE`: never waits
/// for, nor blocks, the writer or readers). When the log is longer than
/// [`WalOptions::restart_frames`] it raises `wal_long`: the writer then copies the few frames left
/// between two transactions, and its next transaction rewrites the log from the start. Stops
/// when `stop` is dropped, after a last full checkpoint.
fn spawn_checkpointer(
    path: &Path,
    stop: std::sync::mpsc::Receiver<()>,
    wal_long: Arc<AtomicBool>,
    options: WalOptions,
) -> Result<JoinHandle<()>, StoreError> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(db_err)?;
    std::thread::Builder::new()
        .name("warden-sqlite-checkpoint".into())
        .spawn(move || {
            use std::sync::mpsc::RecvTimeoutError;
            loop {
                match stop.recv_timeout(options.checkpoint_every) {
                    Err(RecvTimeoutError::Timeout) => {
                        match conn
                            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
                        {
                            Ok(frames) if frames > options.restart_frames => {
                                wal_long.store(true, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                        }
                    }
                    _ => {
                        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                        return;
                    }
                }
            }
        })
        .map_err(|e| StoreError::Internal(format!("starting the checkpoint thread: {e}")))
}

/// Refuses to extend a chain whose head is not the one the last commit signed: a database whose
/// tail was cut or rewritten while the server was down must not be re-signed by the next commit.
fn check_head(conn: &Connection, head: ChainHead, key: &KeyedHasher) -> Result<(), StoreError> {
    let refuse = |why: &str| {
        Err(StoreError::Corrupt(format!(
            "the audit chain {why}; it was changed while the server was down. \
             Run `warden audit verify --data-dir DIR` to find the first bad event"
        )))
    };
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

/// Runs one statement through the statement cache (the writer runs these per job).
fn stmt(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(db_err)
}

/// The hook slot shared between the store and its writer thread.
type HookSlot = Arc<Mutex<Option<Arc<dyn BatchHook>>>>;

fn run_writer(
    conn: Connection,
    receiver: Receiver<Message>,
    checkpoint_key: KeyedHasher,
    head: ChainHead,
    hook: HookSlot,
    stats: &WriterStats,
    wal_long: &AtomicBool,
) {
    let mut head = Some(head);
    // Whether the hook asked for another transaction even without a job.
    let mut more = false;
    loop {
        let first = if more {
            // The hook has work but no job is waiting: give the hook's work a moment to gather
            // (a group-commit window) instead of committing a sliver of it at once.
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
        let mut batch = Vec::with_capacity(64);
        batch.extend(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let h = hook.lock().ok().and_then(|h| h.clone());
        (head, more) = run_batch(&conn, batch, &checkpoint_key, head, h.as_deref(), stats);
        if wal_long.swap(false, Ordering::Relaxed) {
            // Between two transactions: copy the frames the checkpointer has not reached yet, so
            // the next transaction starts on a fully copied log and rewrites it from its start.
            // Busy (the checkpointer is at work) or not complete: try again after the next one.
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            }) {
                Ok((0, log, copied)) if log == copied => {}
                Ok(_) => wal_long.store(true, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint on the writer failed"),
            }
        }
    }
    // Closing: one last transaction so that the hook's buffered work is not left behind.
    let h = hook.lock().ok().and_then(|h| h.clone());
    if h.is_some() {
        let _ = run_batch(
            &conn,
            Vec::new(),
            &checkpoint_key,
            head,
            h.as_deref(),
            stats,
        );
    }
}

/// Runs the hook and one batch of jobs in one transaction. Returns the chain head after it
/// (`None` = unknown, re-read it) and whether the hook wants another transaction soon.
fn run_batch(
    conn: &Connection,
    batch: Vec<Message>,
    checkpoint_key: &KeyedHasher,
    head: Option<ChainHead>,
    hook: Option<&dyn BatchHook>,
    stats: &WriterStats,
) -> (Option<ChainHead>, bool) {
    // BEGIN, COMMIT and the checkpoint upsert go through the statement cache: parsing them anew
    // for every group commit cost measurable writer time at high commit rates.
    if let Err(e) = stmt(conn, "BEGIN IMMEDIATE") {
        for (_, reply) in batch {
            let _ = reply.send(Err(e.clone().into()));
        }
        stats.failed_commits.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = hook {
            h.finished(false);
        }
        return (None, false);
    }
    let start = head;
    let mut tx = SqliteTx {
        conn,
        head,
        effects: Vec::new(),
    };
    if let Some(h) = hook {
        // The hook's writes are isolated like a job's: a failure undoes them alone.
        if stmt(conn, "SAVEPOINT hook").is_ok() {
            let before = tx.head;
            let ok = matches!(
                catch_unwind(AssertUnwindSafe(|| h.in_transaction(&mut tx))),
                Ok(Ok(()))
            );
            if ok {
                let _ = stmt(conn, "RELEASE hook");
            } else {
                tx.head = before;
                tx.effects.clear();
                let _ = stmt(conn, "ROLLBACK TO hook").and_then(|()| stmt(conn, "RELEASE hook"));
            }
        }
    }
    let mut done = Vec::with_capacity(batch.len());
    for (job, reply) in batch {
        let out = match stmt(conn, "SAVEPOINT job") {
            Err(e) => Err(e.into()),
            Ok(()) => {
                let before = tx.head;
                let effects_before = tx.effects.len();
                let out = match catch_unwind(AssertUnwindSafe(|| job(&mut tx))) {
                    Ok(out) => out,
                    Err(_) => Err(StoreError::Internal("a write job panicked".into()).into()),
                };
                let end = if out.is_ok() {
                    stmt(conn, "RELEASE job")
                } else {
                    tx.head = before;
                    tx.effects.truncate(effects_before);
                    stats.failed_jobs.fetch_add(1, Ordering::Relaxed);
                    stmt(conn, "ROLLBACK TO job").and_then(|()| stmt(conn, "RELEASE job"))
                };
                match end {
                    Ok(()) => out,
                    Err(e) => Err(e.into()),
                }
            }
        };
        done.push((reply, out));
    }
    let mut result = Ok(());
    if tx.head != start
        && let Some(h) = tx.head
    {
        result = conn
            .prepare_cached(
                "INSERT INTO audit_checkpoint (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
            )
            .and_then(|mut s| {
                s.execute(params![
                    i64::try_from(h.seq).unwrap_or(i64::MAX),
                    h.hash.as_slice(),
                    checkpoint_mac(checkpoint_key, &h)
                ])
            })
            .map(|_| ())
            .map_err(db_err);
    }
    let committed = result.and_then(|()| stmt(conn, "COMMIT"));
    let SqliteTx {
        head: new_head,
        effects,
        ..
    } = tx;
    match committed {
        Ok(()) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.jobs.fetch_add(done.len() as u64, Ordering::Relaxed);
            // Effects (cache invalidations) before any answer, so an acknowledged change is
            // never contradicted by a cached state.
            for effect in effects {
                effect();
            }
            let more = hook.is_some_and(|h| h.finished(true));
            for (reply, out) in done {
                let _ = reply.send(out);
            }
            (new_head, more)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            drop(effects);
            if let Some(h) = hook {
                h.finished(false);
            }
            for (reply, _) in done {
                let _ = reply.send(Err(e.clone().into()));
            }
            (None, false)
        }
    }
}
