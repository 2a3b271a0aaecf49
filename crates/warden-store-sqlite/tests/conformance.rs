//! The store conformance suite (`warden-store-conformance`) on SQLite: a fresh database file in a
//! temporary directory per test.
#![allow(clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use warden_core::registry::CHECKPOINT_LABEL;
use warden_crypto::ServerKey;
use warden_store_conformance::Fresh;
use warden_store_sqlite::SqliteStore;

fn open(key: &ServerKey) -> Fresh {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("w.db"), key.hasher(CHECKPOINT_LABEL))
        .expect("a fresh SQLite store");
    Fresh {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

warden_store_conformance::conformance!(open);
