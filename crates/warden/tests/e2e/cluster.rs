//! Several real `warden serve` processes on one real PostgreSQL server.

use std::time::{Duration, Instant};

use serde_json::Value;
use warden_store_conformance::pg;

use crate::harness::{Server, init_with, spawn_with, stderr, warden};

/// What every node of a test cluster shares: one database, one public URL (the load balancer's),
/// short leases so that a dead leader is replaced within seconds.
struct Cluster {
    url: String,
    nodes: Vec<Server>,
}

const PUBLIC_URL: &str = "http://warden.cluster.test";

impl Cluster {
    fn env<'a>(&'a self, node: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("WARDEN_DATABASE_URL", self.url.as_str()),
            ("WARDEN_NODE_NAME", node),
            ("WARDEN_LEASE_TTL", "3s"),
            ("WARDEN_PUBLIC_URL", PUBLIC_URL),
        ]
    }

    /// `n` nodes on the database at `url`: the first runs `warden init` (server key, bootstrap
    /// admin in the database); the others get a copy of its server key and vault key, as an operator would.
    fn start(url: String, n: usize) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut c = Cluster {
            url,
            nodes: Vec::new(),
        };
        let first = tempfile::tempdir().unwrap();
        let admin = init_with(first.path(), &c.env("node-0"));
        // The server key and the vault's master key: every node needs both.
        let keys: Vec<(&str, Vec<u8>)> = ["server.key", "vault.key"]
            .into_iter()
            .map(|k| (k, std::fs::read(first.path().join(k)).unwrap()))
            .collect();
        let mut dirs = vec![first];
        for _ in 1..n {
            let d = tempfile::tempdir().unwrap();
            for (name, bytes) in &keys {
                let path = d.path().join(name);
                std::fs::write(&path, bytes).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            dirs.push(d);
        }
        for (i, dir) in dirs.into_iter().enumerate() {
            let name = format!("node-{i}");
            let (child, url) = spawn_with(dir.path(), &c.env(&name));
            c.nodes
                .push(Server::from_parts(dir, url, admin.clone(), child));
        }
        c
    }
}

async fn metric(s: &Server, name: &str) -> Option<u64> {
    let text = reqwest::get(format!("{}/metrics", s.url))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

async fn post_form(url: &str, form: &[(&str, &str)], auth: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(url)
        .form(form)
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns how long it took.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_does_every_node_sees_and_a_retirement_stops_everything_within_a_second() {
    let c = Cluster::start(pg::fresh_database(), 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.ok(&a.admin, &["team", "create", "payments"]);
    a.json(
        &a.admin,
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
            "staging",
            "--scope",
            "ledger:write",
        ],
    );
    // Created on A, visible on B at once.
    let seen = b.json(&b.admin, &["identity", "show", "billing-worker"]);
    assert_eq!(seen["name"], "billing-worker");
    assert_eq!(seen["status"], "active");

    // A credential issued on B works on A; a token issued on A is active at A.
    let (_, api_key) = b.api_key(&b.admin, "billing-worker");
    let cs = b.json(
        &b.admin,
        &[
            "credential",
            "issue",
            "billing-worker",
            "--type",
            "client_secret",
            "--ttl",
            "1d",
        ],
    );
    let secret = cs["secret"].as_str().unwrap().to_owned();
    let client_id = seen["client_id"].as_str().unwrap().to_owned();
    let (st, t) = post_form(
        &format!("{}/oauth2/token", a.url),
        &[("grant_type", "client_credentials")],
        &basic(&client_id, &secret),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    let token = t["access_token"].as_str().unwrap().to_owned();
    let admin_auth = format!("Bearer {}", a.admin);
    let introspect = |node: &Server| format!("{}/oauth2/introspect", node.url);
    let (_, i) = post_form(&introspect(a), &[("token", &token)], &admin_auth).await;
    assert_eq!(i["active"], true, "{i}");
    // Warm A's caches: the key and the token's identity have been looked up there.
    assert!(a.key_valid(&api_key).await);
    assert!(a.key_valid(&api_key).await);

    // Retire on B; on A the key, the token and the client secret stop working within 1 s.
    b.ok(
        &b.admin,
        &[
            "identity",
            "retire",
            "billing-worker",
            "--reason",
            "decommissioned",
        ],
    );
    let took = within(Duration::from_secs(1), || async {
        !a.key_valid(&api_key).await
    })
    .await;
    assert!(
        took.is_some(),
        "A still accepts the retired identity's API key after 1 s"
    );
    let (_, i) = post_form(&introspect(a), &[("token", &token)], &admin_auth).await;
    assert_eq!(i["active"], false, "{i}");
    let (st, e) = post_form(
        &format!("{}/oauth2/token", a.url),
        &[("grant_type", "client_credentials")],
        &basic(&client_id, &secret),
    )
    .await;
    assert_eq!(st, 401, "{e}");
    assert_eq!(e["error"], "invalid_client");
    // Both nodes report that they hear each other.
    assert_eq!(metric(a, "warden_cluster_peers_heard").await, Some(1));
    assert_eq!(metric(b, "warden_cluster_peers_heard").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_run_once_and_move_when_the_leader_is_killed() {
    let mut c = Cluster::start(pg::fresh_database(), 2);
    // Exactly one leader.
    let leaders = within(Duration::from_secs(10), || async {
        let (x, y) = (
            metric(&c.nodes[0], "warden_cluster_jobs_leader").await,
            metric(&c.nodes[1], "warden_cluster_jobs_leader").await,
        );
        matches!((x, y), (Some(1), Some(0)) | (Some(0), Some(1)))
    })
    .await;
    assert!(leaders.is_some(), "no single leader emerged");
    let leader = if metric(&c.nodes[0], "warden_cluster_jobs_leader").await == Some(1) {
        0
    } else {
        1
    };
    let other = 1 - leader;
    // Work for the jobs: a rotation whose overlap ends in 2 s; its revocation is a job.
    let o = &c.nodes[other];
    o.ok(&o.admin, &["team", "create", "payments"]);
    o.identity(&o.admin, "rotating", "payments", &["ledger:read"]);
    let (old_id, old_key) = o.api_key(&o.admin, "rotating");
    o.json(
        &o.admin,
        &["credential", "rotate", &old_id, "--overlap", "2s"],
    );
    c.nodes[leader].kill9();
    let o = &c.nodes[other];
    // The survivor takes the lease once it lapses (3 s) and ends the overlap.
    let took = within(Duration::from_secs(20), || async {
        metric(o, "warden_cluster_jobs_leader").await == Some(1) && !o.key_valid(&old_key).await
    })
    .await;
    assert!(
        took.is_some(),
        "the surviving node did not take over the jobs"
    );
    let events = o.json(
        &o.admin,
        &["audit", "list", "--action", "cluster.lease_taken"],
    );
    let events = events["items"].as_array().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["details"]["holder"], format!("node-{other}"));
    assert_eq!(last["details"]["previous"], format!("node-{leader}"));
    let revoked = o.json(
        &o.admin,
        &["audit", "list", "--action", "credential.revoke"],
    );
    let by_sweep: Vec<_> = revoked["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == format!("credential:{old_id}"))
        .collect();
    assert_eq!(by_sweep.len(), 1, "revoked exactly once: {by_sweep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_on_two_nodes_make_one_gap_free_chain() {
    let c = Cluster::start(pg::fresh_database(), 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.ok(&a.admin, &["team", "create", "payments"]);
    let mut tasks = Vec::new();
    for (n, node) in [a, b].into_iter().enumerate() {
        for w in 0..4 {
            let client = node.client(&node.admin);
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let req: warden_types::CreateIdentityRequest =
                        serde_json::from_value(serde_json::json!({
                            "name": format!("n{n}-w{w}-i{i}"),
                            "kind": "service_account",
                            "owner": "payments",
                            "purpose": "Concurrency test identity",
                            "environment": "dev",
                        }))
                        .unwrap();
                    client.create_identity(&req).await.unwrap();
                    // Authentication events go through the same chain.
                    let _ = client.verify_key("wdn_ak_not-a-real-key").await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for node in [a, b] {
        let v = node.json(&node.admin, &["audit", "verify"]);
        assert_eq!(v["ok"], true, "{v}");
    }
    // Every event, in order, numbered 1..=N without a gap, each linked to the one before.
    let mut after = 0u64;
    let mut prev_hash = String::new();
    let mut creates = 0;
    loop {
        let page = a.json(
            &a.admin,
            &[
                "audit",
                "list",
                "--cursor",
                &after.to_string(),
                "--limit",
                "500",
            ],
        );
        let page = page["items"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        for e in page {
            let seq = e["seq"].as_u64().unwrap();
            assert_eq!(seq, after + 1, "a gap or a reordering at {seq}");
            if after > 0 {
                assert_eq!(
                    e["prev_hash"].as_str().unwrap(),
                    prev_hash,
                    "a fork at {seq}"
                );
            }
            if e["action"] == "identity.create" {
                creates += 1;
            }
            after = seq;
            prev_hash = e["hash"].as_str().unwrap().to_owned();
        }
    }
    assert_eq!(creates, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_gone_requests_fail_with_503_and_the_node_recovers_by_itself() {
    let server = pg::PgServer::start();
    let c = Cluster::start(server.create_database(), 1);
    let a = &c.nodes[0];
    a.ok(&a.admin, &["team", "create", "payments"]);
    a.identity(&a.admin, "before", "payments", &["ledger:read"]);
    server.stop();
    let client = a.client(&a.admin);
    let e = client.identity("before").await.unwrap_err().to_string();
    assert!(e.contains("503") || e.contains("unavailable"), "{e}");
    let out = a.cli(&a.admin, &["team", "create", "during"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
    let ready = reqwest::get(format!("{}/readyz", a.url)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    server.resume();
    let back = within(Duration::from_secs(15), || async {
        a.cli(&a.admin, &["team", "create", "after"])
            .status
            .success()
    })
    .await;
    assert!(back.is_some(), "the node did not recover without a restart");
    let v = a.json(&a.admin, &["identity", "show", "before"]);
    assert_eq!(
        v["name"], "before",
        "acknowledged before the outage: still there"
    );
    let teams = a.json(&a.admin, &["team", "list"]);
    let names: Vec<_> = teams["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"after".to_owned()));
    assert!(
        !names.contains(&"during".to_owned()),
        "a refused write left nothing"
    );
    let v = a.json(&a.admin, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let ready = reqwest::get(format!("{}/readyz", a.url)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_reports_the_schema_and_a_node_refuses_a_newer_one() {
    let url = pg::fresh_database();
    let c = Cluster::start(url.clone(), 1);
    let dir = c.nodes[0].data_dir();
    let env = c.env("migrator");
    let out = warden()
        .args(["migrate", "--check", "--json", "--data-dir"])
        .arg(&dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["from"], v["to"], "{v}");
    // A newer binary migrated the database: this one must not start on it.
    psql(
        &url,
        "UPDATE warden_meta SET value = '99' WHERE key = 'schema_version'",
    );
    let out = warden()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("schema version 99, newer than this binary knows"),
        "{}",
        stderr(&out)
    );
    let out = warden()
        .args(["migrate", "--data-dir"])
        .arg(&dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("newer than this binary"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_used_on_one_node_is_refused_on_the_other() {
    use warden_jose::ClientKey;
    let c = Cluster::start(pg::fresh_database(), 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.ok(&a.admin, &["team", "create", "payments"]);
    let id = a.json(
        &a.admin,
        &[
            "identity",
            "create",
            "--name",
            "agent",
            "--kind",
            "workload",
            "--owner",
            "payments",
            "--purpose",
            "Reads its own record",
            "--env",
            "staging",
            "--scope",
            "warden:read",
        ],
    );
    let client_id = id["identity"]["client_id"].as_str().unwrap().to_owned();
    let (key, _) = ClientKey::generate_ed25519().unwrap();
    let jwk = a.data_dir().join("agent.pub.jwk");
    std::fs::write(&jwk, key.public_jwk().to_string()).unwrap();
    a.ok(
        &a.admin,
        &["credential", "add", "agent", "--jwk", jwk.to_str().unwrap()],
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let jti = || uuid::Uuid::now_v7().to_string();
    let endpoint = format!("{PUBLIC_URL}/oauth2/token");
    let assertion = key
        .client_assertion(&client_id, PUBLIC_URL, now, 60, &jti())
        .unwrap();
    let proof = key
        .dpop_proof("POST", &endpoint, now, &jti(), None)
        .unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/oauth2/token", a.url))
        .header("DPoP", proof)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", "warden:read"),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let t: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    let token = t["access_token"].as_str().unwrap();
    let proof = key
        .dpop_proof(
            "GET",
            &format!("{PUBLIC_URL}/v1/whoami"),
            now,
            &jti(),
            Some(token),
        )
        .unwrap();
    let whoami = |node: &Server| {
        reqwest::Client::new()
            .get(format!("{}/v1/whoami", node.url))
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof.clone())
            .send()
    };
    let first = whoami(a).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let replayed = whoami(b).await.unwrap();
    assert_eq!(
        replayed.status().as_u16(),
        401,
        "the same proof presented to another node is a replay"
    );
}

/// `psql -c SQL` on the database of `url` (a test URL: `postgres://warden@HOST:PORT/DB?...`).
fn psql(url: &str, sql: &str) {
    let (addr, db) = url
        .trim_start_matches("postgres://warden@")
        .split_once('/')
        .unwrap();
    let db = db.split('?').next().unwrap();
    let (host, port) = addr.split_once(':').unwrap();
    let out = std::process::Command::new("psql")
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            host,
            "-p",
            port,
            "-U",
            "warden",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_audit_rows_in_postgresql_is_found() {
    let url = pg::fresh_database();
    let mut c = Cluster::start(url.clone(), 1);
    let a = &c.nodes[0];
    a.ok(&a.admin, &["team", "create", "payments"]);
    a.identity(&a.admin, "audited", "payments", &["ledger:read"]);
    let v = a.json(&a.admin, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    // An edit made with database access, behind Warden's back: named by seq.
    psql(
        &url,
        "UPDATE audit_events SET actor = 'operator:mallory' WHERE seq = 2",
    );
    let out = a.cli(&a.admin, &["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad_seq"], 2, "{v}");
    // A tail cut while the node is down: it refuses to start rather than re-sign the chain.
    c.nodes[0].kill9();
    psql(
        &url,
        "DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)",
    );
    let dir = c.nodes[0].data_dir();
    let env = c.env("node-0");
    let out = warden()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("head does not match the signed checkpoint"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_withdrawn_on_one_node_leaves_every_node_within_a_second() {
    let c = Cluster::start(pg::fresh_database(), 2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let jwks = |node: &Server| {
        let url = format!("{}/oauth2/jwks", node.url);
        async move {
            let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let before = jwks(a).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(jwks(b).await, before, "both nodes publish the same key");
    // A leaked key: withdrawn at once on B.
    let rotated = b.json(&b.admin, &["keys", "rotate", "--immediately"]);
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    let took = within(Duration::from_secs(1), || async {
        jwks(a).await == vec![new_kid.clone()]
    })
    .await;
    assert!(
        took.is_some(),
        "A still publishes the withdrawn key after 1 s"
    );
    // And A signs with the new key.
    a.ok(&a.admin, &["team", "create", "payments"]);
    a.json(
        &a.admin,
        &[
            "identity",
            "create",
            "--name",
            "signer",
            "--kind",
            "workload",
            "--owner",
            "payments",
            "--purpose",
            "Gets a token",
            "--env",
            "staging",
            "--scope",
            "ledger:read",
        ],
    );
    let cs = a.json(
        &a.admin,
        &[
            "credential",
            "issue",
            "signer",
            "--type",
            "client_secret",
            "--ttl",
            "1d",
        ],
    );
    let id = a.json(&a.admin, &["identity", "show", "signer"]);
    let (st, t) = post_form(
        &format!("{}/oauth2/token", a.url),
        &[("grant_type", "client_credentials")],
        &basic(
            id["client_id"].as_str().unwrap(),
            cs["secret"].as_str().unwrap(),
        ),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    let token = t["access_token"].as_str().unwrap();
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
}
