//! What only the SQLite store can show: its schema version check and migrations, that no secret
//! reaches the database file (the bounded WAL is in `tests/wal.rs`). The rules every backend must keep are in
//! `warden-store-conformance`, run here by `tests/conformance.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use time::macros::datetime;
use warden_core::ports::Store;
use warden_core::registry::CHECKPOINT_LABEL;
use warden_core::{Actor, FakeClock, Policy, Registry, StoreError};
use warden_crypto::ServerKey;
use warden_store_sqlite::SqliteStore;
use warden_types::{
    CreateIdentityRequest, CreateTeamRequest, CredentialKind, IdentityKind, IssueCredentialRequest,
};

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    reg: Registry,
    admin: Actor,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let key = ServerKey::generate();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("w.db"), key.hasher(CHECKPOINT_LABEL)).unwrap(),
    );
    let clock = Arc::new(FakeClock::new(datetime!(2026-01-01 00:00 UTC)));
    let reg = Registry::new(store.clone(), clock.clone(), Policy::default(), &key);
    let created = reg.bootstrap_admin("admin").await.unwrap();
    let admin = reg.authenticate(&created.token, "t", "test").await.unwrap();
    reg.create_team(
        &admin,
        CreateTeamRequest {
            name: "payments".into(),
            description: None,
        },
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        store,
        reg,
        admin,
    }
}

fn identity(name: &str) -> CreateIdentityRequest {
    CreateIdentityRequest {
        name: name.into(),
        kind: IdentityKind::ServiceAccount,
        owner: "payments".into(),
        purpose: "Unit test identity".into(),
        environment: "prod".into(),
        scopes: vec!["ledger:write".into()],
        audiences: vec![],
        constraints: None,
        labels: Default::default(),
        parent_id: None,
        expires_at: None,
    }
}

fn api_key(ttl: Option<u64>) -> IssueCredentialRequest {
    IssueCredentialRequest {
        kind: CredentialKind::ApiKey,
        ttl_seconds: ttl,
        description: None,
        jwk: None,
    }
}

#[test]
fn a_database_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let key = ServerKey::generate();
    drop(SqliteStore::open(&path, key.hasher(CHECKPOINT_LABEL)).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    match SqliteStore::open(&path, key.hasher(CHECKPOINT_LABEL)) {
        Err(StoreError::Schema(m)) => assert!(m.contains("newer"), "{m}"),
        other => panic!("expected a schema error, got {other:?}"),
    }
    assert!(matches!(
        SqliteStore::open_read_only(&path),
        Err(StoreError::Schema(_))
    ));
}

#[test]
fn secrets_never_reach_the_database_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, secret) = rt.block_on(async {
        let e = env().await;
        e.reg
            .create_identity(&e.admin, identity("w"))
            .await
            .unwrap();
        let k = e
            .reg
            .issue_credential(&e.admin, "w", api_key(None))
            .await
            .unwrap();
        e.store.close();
        (e._dir, k.secret.unwrap())
    });
    let mut bytes = std::fs::read(dir.path().join("w.db")).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("w.db-wal")) {
        bytes.extend(wal);
    }
    let needle = &secret.as_bytes()[7..];
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "plaintext secret found in the database"
    );
}

#[test]
fn a_version_1_database_is_migrated_on_open_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .unwrap();
    conn.execute_batch(warden_store_sqlite::schema::MIGRATIONS[0])
        .unwrap();
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')", [])
        .unwrap();
    conn.execute(
        "INSERT INTO teams VALUES (x'000102030405060708090a0b0c0d0e0f', 'old-team', NULL, 0)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO identities (id, name, environment, kind, owner_id, purpose, status, scopes, privileged, \
         audiences, constraints, labels, origin, created_at, updated_at) VALUES \
         (x'0f0e0d0c0b0a09080706050403020100', 'old', 'prod', 'bot', x'000102030405060708090a0b0c0d0e0f', \
         'Suspended before the upgrade', 'suspended', '[]', 0, '[]', '{}', '{}', 'managed', 0, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let key = ServerKey::generate();
    let store = SqliteStore::open(&path, key.hasher(CHECKPOINT_LABEL)).unwrap();
    let teams = store.reader().unwrap().list_teams().unwrap();
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0].name, "old-team");
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, warden_store_sqlite::schema::latest().to_string());
    let col: i64 = conn
        .query_row("SELECT count(*) FROM pragma_table_info('identities') WHERE name = 'suspended_by_admin'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(col, 1);
    let kept: i64 = conn
        .query_row(
            "SELECT count(*) FROM teams WHERE name = 'old-team'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1, "migration keeps existing rows");
    let locked: i64 = conn
        .query_row(
            "SELECT suspended_by_admin FROM identities WHERE name = 'old'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        locked, 1,
        "a suspension from before the upgrade is lifted only by an admin"
    );
}
