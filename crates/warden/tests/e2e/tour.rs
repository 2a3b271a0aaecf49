//! The README's tour, exactly as written, through the CLI against a real server.

use crate::harness::{Server, stderr};

#[tokio::test(flavor = "multi_thread")]
async fn the_tour_works_as_written() {
    let s = Server::start();
    let t = s.admin.clone();
    let out = s.ok(&t, &["team", "create", "payments"]);
    assert!(out.contains("payments"));
    let out = s.ok(
        &t,
        &[
            "identity",
            "create",
            "--name",
            "billing-worker",
            "--kind",
            "service_account",
            "--owner",
            "payments",
            "--purpose",
            "Posts invoices to the ledger API",
            "--env",
            "prod",
            "--scope",
            "ledger:write",
        ],
    );
    assert!(out.contains("status        active"), "{out}");

    // The key is printed once, in the identifiable format, and works.
    let out = s.ok(
        &t,
        &[
            "credential",
            "issue",
            "billing-worker",
            "--type",
            "api_key",
            "--ttl",
            "30d",
        ],
    );
    let key = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("wdn_ak_"))
        .expect("key printed")
        .to_owned();
    assert!(s.key_valid(&key).await);
    let listed = s.ok(&t, &["credential", "list", "billing-worker"]);
    assert!(!listed.contains(&key), "the secret must not be shown again");

    // Widening to a privileged scope is held.
    let out = s.ok(
        &t,
        &[
            "identity",
            "update",
            "billing-worker",
            "--add-scope",
            "ledger:*",
        ],
    );
    assert!(out.contains("Held for approval"), "{out}");
    let shown = s.json(&t, &["identity", "show", "billing-worker"]);
    assert_eq!(
        shown["scopes"],
        serde_json::json!(["ledger:write"]),
        "privileged scope must not be effective yet"
    );

    let list = s.json(&t, &["approval", "list"]);
    let req = list["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["items"][0]["scopes"], serde_json::json!(["ledger:*"]));
    assert!(s.ok(&t, &["approval", "list"]).contains(&req));

    // The requester cannot approve.
    let refused = s.cli(
        &t,
        &["approval", "approve", &req, "--reason", "month-end batch"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("self_approval"),
        "{}",
        stderr(&refused)
    );

    // A second admin can.
    let second = s.operator("alice", "admin", &[]);
    let approved = s.json(
        &second,
        &["approval", "approve", &req, "--reason", "month-end batch"],
    );
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decided_by"], "operator:alice");
    let shown = s.json(&t, &["identity", "show", "prod/billing-worker"]);
    assert_eq!(
        shown["scopes"],
        serde_json::json!(["ledger:*", "ledger:write"])
    );
    assert_eq!(shown["privileged"], true);
    assert_eq!(shown["client_id"], shown["id"]);

    let out = s.ok(
        &t,
        &[
            "identity",
            "retire",
            "billing-worker",
            "--reason",
            "service decommissioned",
        ],
    );
    assert!(out.contains("retired"), "{out}");
    assert!(
        !s.key_valid(&key).await,
        "retire must revoke the key at once"
    );

    let out = s.ok(&t, &["audit", "verify"]);
    assert!(out.contains("audit chain OK"), "{out}");
    let report = s.json(&t, &["audit", "verify"]);
    assert!(report["events_checked"].as_u64().unwrap() >= 10);

    // The history names who did what.
    let audit = s.json(&t, &["audit", "list", "--action", "change.approve"]);
    let outcomes: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["denied", "success"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_pagination_and_name_resolution() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    s.ok(&t, &["team", "create", "search"]);
    for i in 0..5 {
        s.identity(&t, &format!("pay-{i}"), "payments", &["ledger:read"]);
    }
    s.identity(&t, "indexer", "search", &["docs:write"]);
    s.ok(
        &t,
        &["identity", "update", "indexer", "--set-label", "tier=gold"],
    );
    // The same name in another environment makes the bare name ambiguous.
    s.ok(
        &t,
        &[
            "identity",
            "create",
            "--name",
            "indexer",
            "--kind",
            "workload",
            "--owner",
            "search",
            "--purpose",
            "Staging copy of the indexer",
            "--env",
            "staging",
        ],
    );
    let amb = s.cli(&t, &["identity", "show", "indexer"]);
    assert_eq!(amb.status.code(), Some(2));
    assert!(stderr(&amb).contains("ambiguous"), "{}", stderr(&amb));
    assert_eq!(
        s.json(&t, &["identity", "show", "staging/indexer"])["environment"],
        "staging"
    );

    let page = s.json(
        &t,
        &["identity", "list", "--owner", "payments", "--limit", "2"],
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page2 = s.json(
        &t,
        &[
            "identity", "list", "--owner", "payments", "--limit", "2", "--cursor", &cursor,
        ],
    );
    assert_ne!(page["items"][0]["id"], page2["items"][0]["id"]);
    let all = s.json(
        &t,
        &[
            "identity", "list", "--owner", "payments", "--limit", "2", "--all",
        ],
    );
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    assert!(all.get("next_cursor").is_none());

    let gold = s.json(&t, &["identity", "list", "--label", "tier=gold"]);
    assert_eq!(gold["items"].as_array().unwrap().len(), 1);
    assert_eq!(gold["items"][0]["name"], "indexer");
    let wl = s.json(&t, &["identity", "list", "--kind", "workload"]);
    assert_eq!(wl["items"].as_array().unwrap().len(), 1);
    let staging = s.json(&t, &["identity", "list", "--env", "staging"]);
    assert_eq!(staging["items"].as_array().unwrap().len(), 1);
    let none = s.json(&t, &["identity", "list", "--privileged"]);
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let table = s.ok(&t, &["identity", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(table.lines().count(), 1 + 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_the_old_key_for_the_overlap_and_suspend_disables() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    s.identity(&t, "worker", "payments", &["ledger:write"]);
    let (old_id, old_key) = s.api_key(&t, "worker");
    let rotated = s.json(&t, &["credential", "rotate", &old_id, "--overlap", "1h"]);
    let new_key = rotated["secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated["credential"]["rotated_from"], old_id.as_str());
    assert!(
        s.key_valid(&old_key).await,
        "old key valid during the overlap"
    );
    assert!(s.key_valid(&new_key).await);
    let again = s.cli(&t, &["credential", "rotate", &old_id]);
    assert!(
        stderr(&again).contains("already rotated"),
        "{}",
        stderr(&again)
    );

    s.ok(
        &t,
        &["identity", "suspend", "worker", "--reason", "incident 42"],
    );
    assert!(
        !s.key_valid(&new_key).await,
        "suspended identity's key must fail"
    );
    s.ok(&t, &["identity", "resume", "worker"]);
    assert!(
        s.key_valid(&new_key).await,
        "resumed identity's key works again"
    );

    s.ok(
        &t,
        &["credential", "revoke", &old_id, "--reason", "moved over"],
    );
    assert!(!s.key_valid(&old_key).await);
    assert!(s.key_valid(&new_key).await);

    // An NHI can ask who it is with its own key, and cannot administer anything.
    let me = s.json(&new_key, &["whoami"]);
    assert_eq!(me["type"], "identity");
    assert_eq!(me["name"], "worker");
    let denied = s.cli(&new_key, &["team", "create", "x"]);
    assert!(stderr(&denied).contains("forbidden"), "{}", stderr(&denied));
}

/// README's first command: `quickstart` initialises a data dir, prints the URL and token once,
/// serves; a second start reuses the data dir and prints no token.
#[tokio::test(flavor = "multi_thread")]
async fn quickstart_initialises_once_and_serves() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("warden-data");
    let start = |expect_token: bool| {
        let mut child = crate::harness::warden()
            .args(["quickstart", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let url = first
            .strip_prefix("Warden is running at ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected {first:?}"))
            .to_owned();
        let second = lines.next().unwrap().unwrap();
        let token = if expect_token {
            assert!(second.contains("shown once"), "{second}");
            Some(lines.next().unwrap().unwrap().trim().to_owned())
        } else {
            assert!(second.contains("already initialised"), "{second}");
            None
        };
        (child, url, token)
    };
    let (mut first, url, token) = start(true);
    let token = token.unwrap();
    assert!(token.starts_with("wdn_op_"));
    let c = warden_client::Client::new(&url, &token).unwrap();
    assert!(matches!(
        c.whoami().await.unwrap(),
        warden_types::WhoAmI::Operator { .. }
    ));
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut again, url, _) = start(false);
    let c = warden_client::Client::new(&url, &token).unwrap();
    assert!(
        c.verify_audit().await.unwrap().ok,
        "the same data dir and token"
    );
    again.kill().unwrap();
    again.wait().unwrap();
}
