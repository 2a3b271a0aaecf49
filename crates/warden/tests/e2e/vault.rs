//! The vault end to end: secrets with access checks and audit, no plaintext at rest or in logs,
//! the wrong master key, re-wrapping, dynamic PostgreSQL logins on leases, rotation of
//! PostgreSQL accounts with a client connecting throughout, a crash in the middle of a rotation,
//! Warden API keys and webhooks as rotation targets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_store_conformance::pg::PgServer;

use crate::harness::{Server, stderr, warden};

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// Logs in over TCP with a password and runs `sql`; the output or the error.
fn login(pg: &PgServer, user: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            user,
            "-d",
            "app",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-At", "-w", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A PostgreSQL server that checks passwords, with a database `app`, a table, and the
/// connection registered in Warden as `databases/main` (owned by `prod/db-admin`).
fn database(s: &Server, admin_password: &str) -> PgServer {
    let pg = PgServer::start_with_password(admin_password);
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2)",
    );
    s.identity(&s.admin, "db-admin", "platform", &[]);
    let roles = json!({
        "read-only": {
            "creation": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\""
            ],
            "default_ttl_secs": 3600,
            "max_ttl_secs": 7200
        }
    });
    let roles_file = s.dir.path().join("roles.json");
    std::fs::write(&roles_file, roles.to_string()).unwrap();
    let port = pg.port.to_string();
    let out = s.cli_stdin(
        &s.admin,
        &[
            "db",
            "add",
            "main",
            "--owner",
            "prod/db-admin",
            "--port",
            &port,
            "--dbname",
            "app",
            "--username",
            "warden",
            "--roles",
            roles_file.to_str().unwrap(),
            // The test server speaks plain TCP; TLS is tested in warden-targets.
            "--sslmode",
            "disable",
        ],
        &format!("{admin_password}\n"),
    );
    assert!(out.status.success(), "db add: {}", stderr(&out));
    pg
}

fn audit(s: &Server, action: &str) -> Vec<Value> {
    s.json(&s.admin, &["audit", "list", "--action", action])["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn secrets_are_read_only_by_those_allowed_every_access_is_audited_and_no_plaintext_is_at_rest() {
    let mut s = Server::start();
    s.ok(&s.admin, &["team", "create", "payments"]);
    s.ok(&s.admin, &["team", "create", "billing"]);
    s.identity(
        &s.admin,
        "payments-worker",
        "payments",
        &["secret:read:payments/*"],
    );
    s.identity(
        &s.admin,
        "billing-worker",
        "billing",
        &["secret:read:billing/*"],
    );
    let (_, worker_key) = s.api_key(&s.admin, "payments-worker");
    let (_, other_key) = s.api_key(&s.admin, "billing-worker");
    let member = s.operator("bea", "member", &["billing"]);
    let auditor = s.operator("aud", "auditor", &[]);

    let v1 = unique("sk_live_FIRSTVALUE");
    let v2 = unique("sk_live_SECONDVALUE");
    let out = s.cli_stdin(
        &s.admin,
        &[
            "secret",
            "put",
            "payments/stripe-key",
            "--owner",
            "prod/payments-worker",
            "--description",
            "Stripe live key",
        ],
        &format!("{v1}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The NHI with the scope reads it; the value alone goes to stdout.
    let got = s.ok(&worker_key, &["secret", "get", "payments/stripe-key"]);
    assert_eq!(got.trim_end(), v1);
    // Another NHI, a member of another team and an auditor may not; each refusal is audited.
    for token in [&other_key, &member, &auditor] {
        let out = s.cli(token, &["secret", "get", "payments/stripe-key"]);
        assert!(!out.status.success());
        // The auditor sees that it exists and is refused; the others cannot even tell.
        let expected = if token == &auditor {
            "forbidden"
        } else {
            "not found"
        };
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("sk_live"));
    }
    // The auditor sees the metadata, never the value.
    let meta = s.json(&auditor, &["secret", "show", "payments/stripe-key"]);
    assert_eq!(meta["current_version"], 1);
    assert!(!meta.to_string().contains("sk_live"));
    // A scope never reaches across teams: a billing bot granted the payments path gets nothing.
    s.identity(
        &s.admin,
        "billing-snoop",
        "billing",
        &["secret:read:payments/*"],
    );
    let (_, snoop) = s.api_key(&s.admin, "billing-snoop");
    let out = s.cli(&snoop, &["secret", "get", "payments/stripe-key"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sk_live"));
    // A scope for one path does not reach a deeper one or a sibling prefix.
    let out = s.cli_stdin(
        &s.admin,
        &[
            "secret",
            "put",
            "payments/eu/key",
            "--owner",
            "prod/payments-worker",
        ],
        "x-value-1234\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !s.cli(&worker_key, &["secret", "get", "payments/eu/key"])
            .status
            .success()
    );
    // Nobody can pre-create (and so own) the record of Warden's own database password.
    let out = s.cli_stdin(
        &s.admin,
        &[
            "secret",
            "put",
            "warden/store-credential",
            "--owner",
            "prod/payments-worker",
        ],
        "attacker-chosen\n",
    );
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
    // The NHI cannot write with a read scope.
    let out = s.cli_stdin(
        &worker_key,
        &["secret", "put", "payments/stripe-key"],
        "nope\n",
    );
    assert!(!out.status.success());

    // A new version; old versions stay readable by number until destroyed.
    let out = s.cli_stdin(&s.admin, &["secret", "put", "payments/stripe-key"], &v2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.ok(&worker_key, &["secret", "get", "payments/stripe-key"])
            .trim_end(),
        v2
    );
    let old = s.json(
        &worker_key,
        &["secret", "get", "payments/stripe-key", "--version", "1"],
    );
    assert_eq!(old["value"], v1);
    assert_eq!(old["version"], 1);
    // Check-and-set refuses a stale writer.
    let out = s.cli_stdin(
        &s.admin,
        &["secret", "put", "payments/stripe-key", "--cas", "1"],
        "stale",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("check-and-set"), "{}", stderr(&out));

    // A leased read: listed, revocable.
    let leased = s.json(
        &worker_key,
        &["secret", "get", "payments/stripe-key", "--lease", "1h"],
    );
    let lease_id = leased["lease"]["id"].as_str().unwrap().to_owned();
    let leases = s.json(
        &s.admin,
        &["lease", "list", "--prefix", "secrets/payments/"],
    );
    assert!(
        leases["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == lease_id)
    );
    let revoked = s.json(&worker_key, &["lease", "revoke", &lease_id]);
    assert!(revoked["revoked_at"].is_string());

    // Listing shows only what the caller may see.
    let listed = s.json(&worker_key, &["secret", "list"]);
    let paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["payments/stripe-key"]);
    assert_eq!(
        s.json(&member, &["secret", "list"])
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Soft delete refuses reads; a new write restores; destroy erases a version for good.
    s.ok(&s.admin, &["secret", "delete", "payments/stripe-key"]);
    let out = s.cli(&worker_key, &["secret", "get", "payments/stripe-key"]);
    assert!(stderr(&out).contains("deleted"), "{}", stderr(&out));
    let v3 = unique("sk_live_THIRDVALUE");
    assert!(
        s.cli_stdin(&s.admin, &["secret", "put", "payments/stripe-key"], &v3)
            .status
            .success()
    );
    assert_eq!(
        s.ok(&worker_key, &["secret", "get", "payments/stripe-key"])
            .trim_end(),
        v3
    );
    s.ok(
        &s.admin,
        &[
            "secret",
            "delete",
            "payments/stripe-key",
            "--destroy",
            "--version",
            "1",
        ],
    );
    let out = s.cli(
        &worker_key,
        &["secret", "get", "payments/stripe-key", "--version", "1"],
    );
    assert!(stderr(&out).contains("destroyed"), "{}", stderr(&out));

    // Every read is in the audit chain (success and refusal), never with the value.
    let reads = audit(&s, "secret.read");
    assert!(reads.iter().filter(|e| e["outcome"] == "success").count() >= 5);
    assert!(reads.iter().filter(|e| e["outcome"] == "denied").count() >= 3);
    let all = s
        .json(&s.admin, &["audit", "list", "--limit", "1000"])
        .to_string();
    for v in [&v1, &v2, &v3] {
        assert!(!all.contains(v.as_str()), "a value is in the audit log");
    }
    assert!(
        s.json(&s.admin, &["audit", "verify"])["ok"]
            .as_bool()
            .unwrap()
    );

    // Stop the server; neither the database (file and WAL, or a dump of PostgreSQL) nor the
    // server's log holds any value.
    s.kill9();
    let dir = s.data_dir();
    let haystack = [
        ("the database", crate::harness::database_bytes(&dir)),
        (
            "the server log",
            std::fs::read(dir.join("server.log")).unwrap(),
        ),
    ];
    assert!(
        haystack[0].1.len() > 10_000,
        "the database dump is suspiciously small"
    );
    for v in [&v1, &v2, &v3] {
        for (what, bytes) in &haystack {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "{v} found in {what}"
            );
        }
    }
    // The check can fail: the path (stored in clear) is found in the same bytes.
    assert!(
        haystack[0]
            .1
            .windows(19)
            .any(|w| w == b"payments/stripe-key")
    );
}

#[test]
fn the_wrong_master_key_is_refused_at_start_and_rewrap_moves_to_a_new_one() {
    let mut s = Server::start();
    s.ok(&s.admin, &["team", "create", "payments"]);
    s.identity(&s.admin, "app", "payments", &[]);
    let value = unique("db-password-");
    assert!(
        s.cli_stdin(
            &s.admin,
            &["secret", "put", "app/db", "--owner", "prod/app"],
            &value
        )
        .status
        .success()
    );
    s.kill9();
    let dir = s.data_dir();
    // What the database holds (opening a SQLite file after a kill -9 replays its WAL, so the
    // file's bytes may move while its content may not: compare content).
    let digest = |d: &std::path::Path| {
        if crate::harness::pg_url(d).is_some() {
            return crate::harness::database_bytes(d);
        }
        let c = rusqlite::Connection::open(d.join("warden.db")).unwrap();
        let mut out = Vec::new();
        for sql in [
            "SELECT seq, hex(hash) FROM audit_events ORDER BY seq",
            "SELECT path || version || key_id || hex(wrapped_key) || hex(ciphertext) FROM secret_versions",
            "SELECT doc FROM secrets",
        ] {
            let mut st = c.prepare(sql).unwrap();
            let n = st.column_count();
            let rows = st
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            r.get::<_, rusqlite::types::Value>(i)
                                .map(|v| format!("{v:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap();
            for r in rows {
                out.push(r.unwrap().join("|"));
            }
        }
        out.join("\n").into_bytes()
    };
    // Another master key: the server refuses to start, says why, and changes nothing.
    let old_key = std::fs::read(dir.join("vault.key")).unwrap();
    std::fs::rename(dir.join("vault.key"), dir.join("vault.key.old")).unwrap();
    let out = warden()
        .args(["vault", "keygen", "--out"])
        .arg(dir.join("vault.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let before = digest(&dir);
    let out = warden()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with the wrong master key");
    let err = stderr(&out);
    assert!(err.contains("master key"), "{err}");
    assert!(err.contains("mk-"), "names the key ids: {err}");
    let after = digest(&dir);
    if after != before {
        let (b, a) = (
            String::from_utf8_lossy(&before),
            String::from_utf8_lossy(&after),
        );
        let changed: Vec<_> = a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect();
        panic!("a refused start wrote to the database: {changed:?}");
    }
    // A garbled key file is refused as well.
    std::fs::write(dir.join("vault.key.bad"), "not a key").unwrap();
    let out = warden()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("WARDEN_VAULT_KEY", "bm90IGEga2V5")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("WARDEN_VAULT_KEY"),
        "{}",
        stderr(&out)
    );

    // With the old key listed as previous, the server starts, reads, and rewrap moves every
    // value to the new key; afterwards the new key alone suffices.
    let example = std::fs::read_to_string(dir.join("warden.toml")).unwrap();
    let commented = "# previous_key_files = [\"/etc/warden/vault.key.old\"]";
    assert!(example.contains(commented));
    let config = example.replace(
        commented,
        &format!(
            "previous_key_files = [\"{}\"]",
            dir.join("vault.key.old").display()
        ),
    );
    std::fs::write(dir.join("warden.toml"), &config).unwrap();
    s.restart();
    assert_eq!(
        s.ok(&s.admin, &["secret", "get", "app/db"]).trim_end(),
        value
    );
    let r = s.json(&s.admin, &["vault", "rewrap"]);
    assert_eq!(r["rewrapped"], 1, "{r}");
    assert_eq!(r["remaining"], 0, "{r}");
    let new_id = r["key_id"].as_str().unwrap().to_owned();
    let meta = s.json(&s.admin, &["secret", "show", "app/db"]);
    assert_eq!(meta["versions"][0]["key_id"], new_id.as_str());
    s.kill9();
    std::fs::write(
        dir.join("warden.toml"),
        config.replace("previous_key_files", "# previous_key_files"),
    )
    .unwrap();
    std::fs::remove_file(dir.join("vault.key.old")).unwrap();
    s.restart();
    assert_eq!(
        s.ok(&s.admin, &["secret", "get", "app/db"]).trim_end(),
        value
    );
    assert_ne!(std::fs::read(dir.join("vault.key")).unwrap(), old_key);
    // Only admins re-wrap.
    let member = s.operator("mo", "member", &["payments"]);
    assert!(!s.cli(&member, &["vault", "rewrap"]).status.success());
}

#[test]
fn dynamic_postgres_logins_live_and_die_with_their_leases() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "platform"]);
    s.ok(&s.admin, &["team", "create", "analytics"]);
    let pg = database(&s, "admin-Pw-0123456789");
    s.identity(&s.admin, "reporting", "platform", &["creds:main/read-only"]);
    // The right scope in another team, and the database's team without the scope.
    s.identity(&s.admin, "intruder", "analytics", &["creds:main/read-only"]);
    s.identity(&s.admin, "unscoped", "platform", &["creds:other/read-only"]);
    let (_, key) = s.api_key(&s.admin, "reporting");
    let (_, intruder) = s.api_key(&s.admin, "intruder");
    let (_, unscoped) = s.api_key(&s.admin, "unscoped");

    // Refused, audited, nothing created.
    for k in [&intruder, &unscoped] {
        let out = s.cli(k, &["creds", "postgres", "read-only"]);
        assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    }
    assert_eq!(
        audit(&s, "creds.issue")
            .iter()
            .filter(|e| e["outcome"] == "denied")
            .count(),
        2
    );
    let roles_before = pg.psql(
        "app",
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'w\\_%'",
    );
    assert_eq!(roles_before, "0");

    let c = s.json(&key, &["creds", "postgres", "read-only", "--ttl", "10m"]);
    let (user, pw) = (
        c["username"].as_str().unwrap().to_owned(),
        c["password"].as_str().unwrap().to_owned(),
    );
    let lease = c["lease"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        login(&pg, &user, &pw, "SELECT count(*) FROM orders"),
        Ok("2".into())
    );
    let denied = login(&pg, &user, &pw, "INSERT INTO orders VALUES (3)");
    assert!(denied.unwrap_err().contains("permission denied"));
    assert!(
        login(&pg, &user, "wrong-password", "SELECT 1").is_err(),
        "the server checks passwords"
    );
    // The database itself ends the login at the lease's end, even without Warden.
    let until = pg.psql(
        "app",
        &format!("SELECT rolvaliduntil IS NOT NULL FROM pg_roles WHERE rolname = '{user}'"),
    );
    assert_eq!(until, "t");

    // An open session ends when the lease is revoked, and the role is gone.
    let mut session = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            &user,
            "-d",
            "app",
        ])
        .args(["-At", "-c", "SELECT pg_sleep(30)"])
        .env("PGPASSWORD", &pw)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || pg.psql(
        "app",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'")
    ) == "1"));
    let r = s.json(&key, &["lease", "revoke", &lease]);
    assert!(r["revoked_at"].is_string());
    assert!(r.get("last_error").is_none(), "{r}");
    let status = session.wait().unwrap();
    assert!(
        !status.success(),
        "the open session survived the revocation"
    );
    assert!(login(&pg, &user, &pw, "SELECT 1").is_err());
    assert_eq!(
        pg.psql(
            "app",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
        ),
        "0"
    );

    // A short lease ends by itself (the sweeper drops the role).
    let c = s.json(&key, &["creds", "postgres", "read-only", "--ttl", "2s"]);
    let user2 = c["username"].as_str().unwrap().to_owned();
    assert!(
        wait_for(Duration::from_secs(20), || pg.psql(
            "app",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user2}'")
        ) == "0"),
        "the expired login was not dropped"
    );
    assert!(!audit(&s, "lease.expire").is_empty());

    // Renewal moves VALID UNTIL and the lease, never past the maximum.
    let c = s.json(&key, &["creds", "postgres", "read-only", "--ttl", "1m"]);
    let lease3 = c["lease"]["id"].as_str().unwrap().to_owned();
    let renewed = s.json(&key, &["lease", "renew", &lease3, "--ttl", "5h"]);
    assert_eq!(
        renewed["expires_at"], c["lease"]["max_expires_at"],
        "capped at the maximum"
    );
    // A ttl above the role's maximum is refused.
    let out = s.cli(&key, &["creds", "postgres", "read-only", "--ttl", "3h"]);
    assert!(!out.status.success());

    // Retiring the identity revokes its leases and drops its logins.
    let user3 = c["username"].as_str().unwrap().to_owned();
    s.ok(
        &s.admin,
        &["identity", "retire", "reporting", "--reason", "gone"],
    );
    assert!(wait_for(Duration::from_secs(10), || pg.psql(
        "app",
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user3}'")
    ) == "0"));
    let leases = s.json(&s.admin, &["lease", "list", "--active"]);
    assert_eq!(leases["items"].as_array().unwrap().len(), 0, "{leases}");
    assert!(
        s.json(&s.admin, &["audit", "verify"])["ok"]
            .as_bool()
            .unwrap()
    );
}

#[test]
fn rotating_two_postgres_accounts_in_turn_never_fails_a_login() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "platform"]);
    let pg = database(&s, "admin-Pw-abcdefghij");
    pg.psql(
        "app",
        "CREATE ROLE app_a LOGIN PASSWORD 'initial-a-123'; CREATE ROLE app_b LOGIN PASSWORD 'initial-b-123'; \
         GRANT SELECT ON orders TO app_a, app_b",
    );
    s.identity(&s.admin, "orders-api", "platform", &["secret:read:apps/*"]);
    let (_, key) = s.api_key(&s.admin, "orders-api");
    let out = s.cli_stdin(
        &s.admin,
        &[
            "secret",
            "put",
            "apps/orders-db",
            "--owner",
            "prod/orders-api",
            "--rotator",
            "postgres",
            "--database",
            "databases/main",
            "--accounts",
            "app_a,app_b",
            "--overlap",
            "2s",
        ],
        "initial-a-123",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A client that reads the secret and logs in, over and over, during three rotations.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (stop, ok, failed, failures) =
            (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        let (url, key, port) = (s.url.clone(), key.clone(), pg.port);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = warden()
                    .args(["--server", &url, "--token", &key, "--json"])
                    .args(["secret", "get", "apps/orders-db"])
                    .output()
                    .unwrap();
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                let (user, pw) = (v["account"].as_str().unwrap(), v["value"].as_str().unwrap());
                let r = Command::new("/usr/lib/postgresql/15/bin/psql")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-U",
                        user,
                        "-d",
                        "app",
                    ])
                    .args(["-At", "-w", "-c", "SELECT count(*) FROM orders"])
                    .env("PGPASSWORD", pw)
                    .output()
                    .unwrap();
                if r.status.success() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{user}: {}", stderr(&r)));
                }
            }
        })
    };
    let mut accounts = Vec::new();
    for _ in 0..3 {
        let r = s.json(&s.admin, &["secret", "rotate", "apps/orders-db"]);
        assert_eq!(r["result"], "rotated", "{r}");
        let meta = s.json(&s.admin, &["secret", "show", "apps/orders-db"]);
        let cur = meta["current_version"].as_u64().unwrap();
        let account = meta["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"].as_u64() == Some(cur))
            .unwrap()["account"]
            .as_str()
            .unwrap()
            .to_owned();
        accounts.push(account);
        // Rotating the other account while clients may still use it is refused...
        let early = s.cli(&s.admin, &["secret", "rotate", "apps/orders-db"]);
        assert!(stderr(&early).contains("overlap"), "{}", stderr(&early));
        // ...until the overlap ended and the old account lost its password.
        assert!(wait_for(Duration::from_secs(20), || {
            let m = s.json(&s.admin, &["secret", "show", "apps/orders-db"]);
            !m["versions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["state"] == "previous")
        }));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "failed logins: {:?}", failures.lock().unwrap());
    assert!(ok >= 20, "the client logged in only {ok} times");
    assert_eq!(accounts, vec!["app_b", "app_a", "app_b"]);
    // The retired account's old passwords no longer log in.
    assert!(login(&pg, "app_a", "initial-a-123", "SELECT 1").is_err());
    let current = s.json(&key, &["secret", "get", "apps/orders-db"]);
    assert_eq!(
        login(&pg, "app_b", current["value"].as_str().unwrap(), "SELECT 1"),
        Ok("1".into())
    );
    assert!(login(&pg, "app_a", "initial-a-123", "SELECT 1").is_err());
}

#[test]
fn a_crash_between_the_password_change_and_the_commit_is_settled_from_the_target() {
    if std::env::var("WARDEN_E2E_POSTGRES").is_ok_and(|v| v == "1") {
        // On a shared store a pending rotation is settled only after SETTLE_AFTER (2 min: another
        // node may still be running it); the conformance test covers that path with a fake clock.
        return;
    }
    let mut s = Server::start();
    s.ok(&s.admin, &["team", "create", "platform"]);
    let pg = database(&s, "admin-Pw-crash12345");
    pg.psql(
        "app",
        "CREATE ROLE app_single LOGIN PASSWORD 'before-crash-1'",
    );
    s.identity(&s.admin, "svc", "platform", &[]);
    // The health check takes 4 s: the server is killed while it runs, after the password changed.
    let out = s.cli_stdin(
        &s.admin,
        &[
            "secret",
            "put",
            "apps/single",
            "--owner",
            "prod/svc",
            "--rotator",
            "postgres",
            "--database",
            "databases/main",
            "--accounts",
            "app_single",
            "--check-sql",
            "SELECT pg_sleep(4)",
        ],
        "before-crash-1",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rotating = warden()
        .args(["--server", &s.url, "--token", &s.admin])
        .args(["secret", "rotate", "apps/single"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || login(
            &pg,
            "app_single",
            "before-crash-1",
            "SELECT 1"
        )
        .is_err()),
        "the password never changed"
    );
    s.kill9();
    let mut rotating = rotating;
    let _ = rotating.wait();
    // The database has the new password; Warden's current version is still the old one.
    s.restart();
    let meta = s.json(&s.admin, &["secret", "show", "apps/single"]);
    assert!(
        meta["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["state"] == "pending"),
        "{meta}"
    );
    // The jobs leader settles it by asking the database which password works.
    // At once: it began before this process started, and no other node shares the store.
    assert!(
        wait_for(Duration::from_secs(30), || {
            let m = s.json(&s.admin, &["secret", "show", "apps/single"]);
            m["current_version"] == 2
        }),
        "the interrupted rotation was not settled"
    );
    let v = s.json(&s.admin, &["secret", "get", "apps/single"]);
    assert_eq!(v["version"], 2);
    assert_eq!(
        login(&pg, "app_single", v["value"].as_str().unwrap(), "SELECT 1"),
        Ok("1".into()),
        "the live password is the one Warden now serves"
    );
}

/// One request a [`Hook`] received: path, `Warden-Signature`, parsed body, raw body.
type Received = (String, String, Value, Vec<u8>);

/// A tiny HTTP endpoint for webhooks: records every request; answers with `status` (settable).
struct Hook {
    url: String,
    requests: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<u16>>,
}

fn hook() -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new(200u16));
    let (r, st) = (requests.clone(), status.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (mut len, mut sig) = (0usize, String::new());
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "warden-signature" => sig = v.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            r.lock().unwrap().push((path, sig, parsed, body));
            let code = *st.lock().unwrap();
            let _ = write!(
                conn,
                "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            );
        }
    });
    Hook {
        url,
        requests,
        status,
    }
}

#[test]
fn webhook_rotation_is_signed_checked_notified_and_rolled_back_with_a_finding() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "platform"]);
    s.identity(&s.admin, "hooks", "platform", &["secret:read:hooks/*"]);
    let target = hook();
    let dependent = hook();
    let out = s.cli_stdin(
        &s.admin,
        &[
            "secret",
            "put",
            "hooks/signing",
            "--owner",
            "prod/hooks",
            "--rotator",
            "webhook",
            "--webhook",
            &format!("{}/rotate", target.url),
            "--check-url",
            &format!("{}/check", target.url),
            "--notify",
            &format!("{}/rotated", dependent.url),
        ],
        "first-signing-secret",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s.json(&s.admin, &["secret", "rotate", "hooks/signing"]);
    assert_eq!(r["result"], "rotated", "{r}");
    let reqs = target.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "rotate then check: {reqs:?}");
    assert_eq!(reqs[0].0, "/rotate");
    assert_eq!(reqs[1].0, "/check");
    let new_value = reqs[0].2["value"].as_str().unwrap().to_owned();
    assert_eq!(reqs[1].2["value"], new_value.as_str());
    // Signed: a JWS over the body's digest that the JWKS verifies.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let jwks = rt.block_on(s.client(&s.admin).jwks()).unwrap();
    for (_, sig, _, raw) in &reqs {
        verify_signature(sig, raw, &jwks);
    }
    assert_eq!(
        s.json(&s.admin, &["secret", "get", "hooks/signing"])["value"],
        new_value.as_str()
    );
    // The dependent heard about it, without the value.
    let told = dependent.requests.lock().unwrap().clone();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].2["event"], "secret.rotated");
    assert!(!told[0].2.to_string().contains(&new_value));

    // A failing health check rolls back: the current value stays, a finding is raised.
    *target.status.lock().unwrap() = 500;
    let out = s.cli(&s.admin, &["secret", "rotate", "hooks/signing"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        s.json(&s.admin, &["secret", "get", "hooks/signing"])["value"],
        new_value.as_str()
    );
    let findings = s.json(&s.admin, &["finding", "list"]);
    let f = findings
        .as_array()
        .or_else(|| findings["items"].as_array())
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "rotation_failed")
        .cloned()
        .unwrap_or_else(|| panic!("no rotation finding: {findings}"));
    assert_eq!(f["path"], "hooks/signing");
    assert_eq!(f["identity"], "hooks");
}

/// The webhook's `Warden-Signature` verifies with the server's JWKS and covers this body.
fn verify_signature(sig: &str, body: &[u8], jwks: &Value) {
    let jws = warden_jose::decode(sig).unwrap();
    jws.require_typ("warden-webhook+jwt").unwrap();
    let kid = jws.header.kid.clone().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    warden_jose::VerifyingKey::from_jwk(jwk)
        .unwrap()
        .verify(&jws)
        .expect("the webhook signature verifies with the JWKS");
    use sha2::Digest as _;
    let digest = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        sha2::Sha256::digest(body),
    );
    assert_eq!(jws.str_claim("body_sha256").unwrap(), digest);
}

#[test]
fn a_warden_api_key_in_the_vault_rotates_with_an_overlap() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "platform"]);
    s.identity(&s.admin, "mailer", "platform", &["secret:read:keys/*"]);
    let (_, key) = s.api_key(&s.admin, "mailer");
    let out = s.cli_stdin(
        &s.admin,
        &[
            "secret",
            "put",
            "keys/mailer",
            "--owner",
            "prod/mailer",
            "--rotator",
            "warden-credential",
            "--identity",
            "prod/mailer",
            "--overlap",
            "3s",
        ],
        &key,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s.json(&s.admin, &["secret", "rotate", "keys/mailer"]);
    assert_eq!(r["result"], "rotated", "{r}");
    let new_key = s.json(&key, &["secret", "get", "keys/mailer"])["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_key, key);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(s.key_valid(&new_key)));
    assert!(
        rt.block_on(s.key_valid(&key)),
        "the old key works during the overlap"
    );
    assert!(
        wait_for(Duration::from_secs(25), || !rt.block_on(s.key_valid(&key))),
        "the old key outlived its overlap"
    );
    assert!(rt.block_on(s.key_valid(&new_key)));
}

fn password_node(pg: &PgServer, dir: &std::path::Path, password: &str) {
    use std::os::unix::fs::PermissionsExt;
    let example = include_str!("../../warden.example.toml");
    let file = dir.join("db.password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.join("warden.toml"),
        format!(
            "{example}\n[postgres]\nurl = \"postgres://warden@127.0.0.1:{}/wardendb?sslmode=disable\"\npassword_file = \"{}\"\n",
            pg.port,
            file.display()
        ),
    )
    .unwrap();
}

fn wardendb_login(pg: &PgServer, password: &str) -> Result<String, String> {
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "warden",
            "-d",
            "wardendb",
        ])
        .args(["-At", "-w", "-c", "SELECT 1"])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(stderr(&out))
    }
}

#[test]
fn warden_rotates_its_own_database_password_and_every_node_follows() {
    if std::env::var("WARDEN_E2E_POSTGRES").is_ok_and(|v| v == "1") {
        // Runs its own PostgreSQL server in either mode; once is enough.
        return;
    }
    use crate::harness::{init, spawn_with};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pg = PgServer::start_with_password("initial-Pw-1");
    pg.psql("postgres", "CREATE DATABASE wardendb");
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    password_node(&pg, a_dir.path(), "initial-Pw-1");
    let admin = init(a_dir.path());
    // The second node: the same server and vault keys, its own password file.
    password_node(&pg, b_dir.path(), "initial-Pw-1");
    for k in ["server.key", "vault.key"] {
        std::fs::copy(a_dir.path().join(k), b_dir.path().join(k)).unwrap();
    }
    let (a_child, a_url) = spawn_with(a_dir.path(), &[("WARDEN_NODE_NAME", "node-a")]);
    let (b_child, b_url) = spawn_with(b_dir.path(), &[("WARDEN_NODE_NAME", "node-b")]);
    let a = Server::from_parts(a_dir, a_url, admin.clone(), a_child);
    let mut b = Server::from_parts(b_dir, b_url, admin.clone(), b_child);

    // Only admins.
    a.ok(&admin, &["team", "create", "ops"]);
    let member = a.operator("mo", "member", &["ops"]);
    assert!(
        !a.cli(&member, &["vault", "rotate-db-password"])
            .status
            .success()
    );

    let r = a.json(&admin, &["vault", "rotate-db-password"]);
    assert_eq!(r["result"], "rotated", "{r}");
    let read = |d: &std::path::Path| {
        std::fs::read_to_string(d.join("db.password"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let new = read(a.dir.path());
    assert_ne!(new, "initial-Pw-1");
    assert!(!a.dir.path().join("db.password.next").exists());
    assert_eq!(wardendb_login(&pg, &new), Ok("1".into()));
    assert!(
        wardendb_login(&pg, "initial-Pw-1").is_err(),
        "the old password still logs in"
    );
    // The other node heard of it and saved the new password itself.
    assert!(
        wait_for(Duration::from_secs(10), || read(b.dir.path()) == new),
        "node b did not pick up the new password"
    );
    // Both keep serving; a restarted node logs in with the new password.
    b.restart();
    a.ok(&admin, &["team", "create", "after-rotation"]);
    assert!(b.ok(&admin, &["team", "list"]).contains("after-rotation"));
    // No password in the audit chain or the logs.
    let events = a.json(
        &admin,
        &["audit", "list", "--action", "vault.store_credential_rotate"],
    );
    assert_eq!(events["items"].as_array().unwrap().len(), 1);
    let all = a
        .json(&admin, &["audit", "list", "--limit", "1000"])
        .to_string();
    assert!(!all.contains(&new));
    for d in [a.dir.path(), b.dir.path()] {
        let log = std::fs::read_to_string(d.join("server.log")).unwrap_or_default();
        assert!(!log.contains(&new), "the password is in a log");
    }

    // A node that died after the database changed but before it saved the password: the staged
    // copy is used at start and saved.
    let mut a = a;
    a.kill9();
    let staged = a.dir.path().join("db.password.next");
    std::fs::write(&staged, "staged-Pw-2\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    pg.psql("postgres", "ALTER ROLE warden PASSWORD 'staged-Pw-2'");
    a.restart();
    assert_eq!(read(a.dir.path()), "staged-Pw-2");
    assert!(!a.dir.path().join("db.password.next").exists());
    assert!(a.ok(&admin, &["team", "list"]).contains("after-rotation"));
}
