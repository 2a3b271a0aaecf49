//! How many audit appends per second the group-commit writer sustains on its own.
//! `cargo run --release -p warden-store-sqlite --example writer`
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "measurement tool")]

use std::time::Instant;

use warden_core::ports::{NewAuditEvent, Store};
use warden_crypto::ServerKey;
use warden_types::AuditOutcome;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let key = ServerKey::generate();
    let store =
        warden_store_sqlite::SqliteStore::open(&dir.path().join("w.db"), key.hasher("x")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for round in 0..3 {
        let n = 200_000;
        let start = Instant::now();
        let mut receipts = Vec::with_capacity(n);
        for i in 0..n {
            let event = NewAuditEvent {
                actor: "identity:0190e1b2-7c5e-7d3a-9f00-0123456789ab".into(),
                action: "credential.authenticate",
                target: format!("credential:{i}"),
                outcome: AuditOutcome::Success,
                request_id: "0190e1b2-7c5e-7d3a-9f00-0123456789ab".into(),
                source: "127.0.0.1".into(),
                details: r#"{"verifier":"operator:admin"}"#.into(),
            };
            receipts.push(store.submit(Box::new(move |tx| {
                warden_core::audit::append(tx, time::OffsetDateTime::now_utc(), event)?;
                Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
            })));
            if receipts.len() == 10_000 {
                for r in receipts.drain(..) {
                    rt.block_on(r).unwrap().unwrap();
                }
            }
        }
        for r in receipts.drain(..) {
            rt.block_on(r).unwrap().unwrap();
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "round {round}: {:.0} appends/s ({n} in {s:.2}s)",
            n as f64 / s
        );
    }
}
