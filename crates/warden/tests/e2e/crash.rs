//! `kill -9` during a burst of concurrent creations loses nothing acknowledged and leaves nothing
//! half-written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tokio::sync::{Mutex, Notify};

use crate::harness::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_burst_loses_no_acknowledged_creation() {
    let mut s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (acked, count, enough, http) =
            (acked.clone(), count.clone(), enough.clone(), http.clone());
        let (url, token) = (s.url.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let name = format!("c-{w}-{i}");
                let body = json!({"name": name, "kind": "workload", "owner": "payments",
                    "purpose": "Crash test identity", "environment": "prod", "scopes": ["x:read"],
                    "labels": {"batch": "crash"}});
                let res = http
                    .post(format!("{url}/v1/identities"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.lock().await.push(name);
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == 400 {
                            enough.notify_one();
                        }
                    }
                    Ok(r) => panic!("unexpected status {} before the crash", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    enough.notified().await;
    s.kill9();
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 400);

    s.restart();
    let c = s.client(&t);
    for name in &acked {
        let i = c
            .identity(&format!("prod/{name}"))
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"));
        assert_eq!(
            i.labels.get("batch").map(String::as_str),
            Some("crash"),
            "{name} half-written"
        );
        assert_eq!(i.scopes, vec!["x:read".to_owned()]);
    }
    // Every identity that exists is whole and has its audit event; the chain verifies.
    let all = s.json(
        &t,
        &[
            "identity",
            "list",
            "--label",
            "batch=crash",
            "--limit",
            "1000",
            "--all",
        ],
    );
    let n = all["items"].as_array().unwrap().len();
    assert!(n >= acked.len());
    let creates = s.json(
        &t,
        &[
            "audit",
            "list",
            "--action",
            "identity.create",
            "--limit",
            "1000",
        ],
    );
    let mut events = creates["items"].as_array().unwrap().len();
    let mut cursor = creates
        .get("next_cursor")
        .and_then(|c| c.as_str())
        .map(str::to_owned);
    while let Some(cur) = cursor {
        let more = s.json(
            &t,
            &[
                "audit",
                "list",
                "--action",
                "identity.create",
                "--limit",
                "1000",
                "--cursor",
                &cur,
            ],
        );
        events += more["items"].as_array().unwrap().len();
        cursor = more
            .get("next_cursor")
            .and_then(|c| c.as_str())
            .map(str::to_owned);
    }
    assert_eq!(events, n, "one identity.create event per identity");
    let report = s.json(&t, &["audit", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
}
