//! The bounded WAL under continuous writes. In its own test binary, so that no other test
//! competes for the two cores while it measures how large the log grows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use warden_core::ports::{NewAuditEvent, Store};
use warden_core::registry::CHECKPOINT_LABEL;
use warden_crypto::ServerKey;
use warden_store_sqlite::SqliteStore;
use warden_types::AuditOutcome;

/// Appends `n` audit events while keeping thousands queued, so the writer never idles, and
/// returns the largest WAL file size seen meanwhile.
async fn continuous_appends(store: &SqliteStore, wal: &std::path::Path, n: usize) -> u64 {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, wal) = (Arc::clone(&stop), wal.to_owned());
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            max
        })
    };
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let event = NewAuditEvent {
            actor: format!("identity:{}", i % 97),
            action: "credential.authenticate",
            target: format!("credential:{}", i % 251),
            outcome: AuditOutcome::Success,
            request_id: format!("req-{i}"),
            source: "127.0.0.1".into(),
            details: r#"{"verifier":"operator:admin"}"#.into(),
        };
        pending.push_back(store.submit(Box::new(move |tx| {
            warden_core::audit::append(tx, time::OffsetDateTime::now_utc(), event)?;
            Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
        })));
        if pending.len() > 4_000 {
            pending.pop_front().unwrap().await.unwrap().unwrap();
        }
    }
    for r in pending {
        r.await.unwrap().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap()
}

#[tokio::test]
async fn the_wal_stays_bounded_under_continuous_writes() {
    use warden_store_sqlite::WalOptions;
    const MB: u64 = 1 << 20;
    let small = WalOptions {
        checkpoint_every: std::time::Duration::from_millis(10),
        restart_frames: 256,
        size_limit_bytes: MB as i64,
    };
    let run = |options: WalOptions| async move {
        let dir = tempfile::tempdir().unwrap();
        let key = ServerKey::generate();
        let path = dir.path().join("w.db");
        let store = SqliteStore::open_with(&path, key.hasher(CHECKPOINT_LABEL), options).unwrap();
        let max = continuous_appends(&store, &dir.path().join("w.db-wal"), 80_000).await;
        let r = store.reader().unwrap();
        assert_eq!(
            r.audit_checkpoint().unwrap().map(|c| c.head.seq),
            Some(80_000),
            "every append committed"
        );
        drop(r);
        store.close();
        max
    };
    // Without the writer's help (never asked to rewind), the log only grows under this load;
    // this shows the load is heavy enough for the bound below to mean something.
    let unbounded = run(WalOptions {
        restart_frames: i64::MAX,
        ..small
    })
    .await;
    assert!(
        unbounded > 64 * MB,
        "the WAL grew to {unbounded} bytes without rewinding"
    );
    let bounded = run(small).await;
    // Typically 10–30 MB against ~250 MB; the margin is for a shared, noisy machine, where the
    // checkpointer (every 10 ms) is sometimes descheduled for a while.
    assert!(
        bounded < 64 * MB && bounded < unbounded / 4,
        "the WAL reached {bounded} bytes (it grew to {unbounded} without rewinding)"
    );
}
