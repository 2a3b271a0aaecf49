//! The store conformance suite (`warden-store-conformance`) on PostgreSQL: a new database per test
//! on the run's throwaway server (`WARDEN_TEST_PG`, started by `./.ci/run`, or one started here).
#![allow(clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use warden_core::registry::CHECKPOINT_LABEL;
use warden_crypto::ServerKey;
use warden_store_conformance::{Fresh, pg};
use warden_store_postgres::{PgOptions, PgStore};

fn open(key: &ServerKey) -> Fresh {
    let url = pg::fresh_database();
    let store = PgStore::open(&url, key.hasher(CHECKPOINT_LABEL), PgOptions::default())
        .expect("a fresh PostgreSQL store");
    Fresh {
        store: Arc::new(store),
        guard: Box::new(()),
    }
}

warden_store_conformance::conformance!(open);
