//! Tampering with the audit rows in the SQLite file is found, and the first bad event is named.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::harness::{Server, warden};

/// Builds a server with some history, stops it, and returns it with the number of events.
fn history() -> (Server, u64) {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    for i in 0..6 {
        s.identity(&t, &format!("w-{i}"), "payments", &["ledger:read"]);
    }
    s.api_key(&t, "w-0");
    s.ok(&t, &["identity", "suspend", "w-1", "--reason", "paused"]);
    let n = s.json(&t, &["audit", "verify"])["events_checked"]
        .as_u64()
        .unwrap();
    assert!(n >= 10, "need a chain to tamper with, got {n}");
    (s, n)
}

fn copy_dir(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    let p = to.path().to_owned();
    (to, p)
}

fn offline_verify(dir: &Path) -> (i32, Value) {
    let out = warden()
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

fn tampered(dir: &Path, sql: impl FnOnce(&Connection)) -> (i32, Value) {
    let (_keep, copy) = copy_dir(dir);
    {
        let conn = Connection::open(copy.join("warden.db")).unwrap();
        sql(&conn);
    }
    offline_verify(&copy)
}

const COLS: &str =
    "time_us, actor, action, target, outcome, request_id, source, details, prev_hash, hash";

#[test]
fn edits_deletions_swaps_and_truncations_are_named() {
    let (mut s, n) = history();
    s.kill9();
    let dir = s.data_dir();

    let (code, clean) = offline_verify(&dir);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["events_checked"].as_u64().unwrap(), n);

    // Edit one field of event 5.
    let (code, r) = tampered(&dir, |c| {
        c.execute(
            "UPDATE audit_events SET details = '{\"reason\":\"nothing to see\"}' WHERE seq = 5",
            [],
        )
        .unwrap();
    });
    assert_eq!((code, r["first_bad_seq"].as_u64()), (1, Some(5)), "{r}");
    assert!(r["problem"].as_str().unwrap().contains("edited"));

    // Edit the actor of event 2.
    let (code, r) = tampered(&dir, |c| {
        c.execute(
            "UPDATE audit_events SET actor = 'operator:someone-else' WHERE seq = 2",
            [],
        )
        .unwrap();
    });
    assert_eq!((code, r["first_bad_seq"].as_u64()), (1, Some(2)), "{r}");

    // Delete event 3.
    let (code, r) = tampered(&dir, |c| {
        c.execute("DELETE FROM audit_events WHERE seq = 3", [])
            .unwrap();
    });
    assert_eq!((code, r["first_bad_seq"].as_u64()), (1, Some(3)), "{r}");
    assert!(r["problem"].as_str().unwrap().contains("missing"));

    // Swap events 4 and 6 (contents moved, sequence numbers kept).
    let (code, r) = tampered(&dir, |c| {
        let row = |seq: i64| -> Vec<rusqlite::types::Value> {
            c.query_row(
                &format!("SELECT {COLS} FROM audit_events WHERE seq = ?1"),
                [seq],
                |r| (0..10).map(|i| r.get(i)).collect(),
            )
            .unwrap()
        };
        let (a, b) = (row(4), row(6));
        let set = "UPDATE audit_events SET time_us=?1, actor=?2, action=?3, target=?4, outcome=?5, request_id=?6, source=?7, details=?8, prev_hash=?9, hash=?10 WHERE seq=?11";
        c.execute(
            set,
            rusqlite::params_from_iter(b.into_iter().chain([4i64.into()])),
        )
        .unwrap();
        c.execute(
            set,
            rusqlite::params_from_iter(a.into_iter().chain([6i64.into()])),
        )
        .unwrap();
    });
    assert_eq!((code, r["first_bad_seq"].as_u64()), (1, Some(4)), "{r}");

    // Cut the last three events off the tail: the signed checkpoint still covers them.
    let keep = n - 3;
    let (code, r) = tampered(&dir, |c| {
        c.execute(
            "DELETE FROM audit_events WHERE seq > ?1",
            params![keep as i64],
        )
        .unwrap();
    });
    assert_eq!(
        (code, r["first_bad_seq"].as_u64()),
        (1, Some(keep + 1)),
        "{r}"
    );

    // Rewrite an event and recompute every hash after it (as an attacker without the server key
    // can): the chain is self-consistent, but no longer matches the signed checkpoint.
    let (code, r) = tampered(&dir, |c| {
        c.execute(
            "UPDATE audit_events SET details = '{\"forged\":true}' WHERE seq = 5",
            [],
        )
        .unwrap();
        rechain(c);
    });
    assert_eq!(code, 1, "{r}");
    assert!(r["problem"].as_str().unwrap().contains("checkpoint"), "{r}");

    // Forge an event onto the tail, correctly chained, without the server key.
    let (code, r) = tampered(&dir, |c| {
        let (seq, hash): (i64, Vec<u8>) = c
            .query_row(
                "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let prev: [u8; 32] = hash.try_into().unwrap();
        let fields = warden_crypto::chain::EventFields {
            seq: seq as u64 + 1,
            time_us: 1,
            actor: "operator:admin",
            action: "identity.create",
            target: "identity:forged",
            outcome: "success",
            request_id: "r",
            source: "s",
            details: "{}",
        };
        let h = warden_crypto::chain::event_hash(&prev, &fields);
        c.execute(
            "INSERT INTO audit_events VALUES (?1, 1, 'operator:admin', 'identity.create', 'identity:forged', 'success', 'r', 's', '{}', ?2, ?3)",
            params![seq + 1, prev.as_slice(), h.as_slice()],
        )
        .unwrap();
    });
    assert_eq!((code, r["first_bad_seq"].as_u64()), (1, Some(n + 1)), "{r}");
    assert!(
        r["problem"].as_str().unwrap().contains("not covered"),
        "{r}"
    );

    // Remove the checkpoint itself.
    let (code, r) = tampered(&dir, |c| {
        c.execute("DELETE FROM audit_checkpoint", []).unwrap();
    });
    assert_eq!(code, 1, "{r}");
}

/// Recomputes prev_hash/hash for the whole chain with the public algorithm.
fn rechain(c: &Connection) {
    let mut stmt = c
        .prepare("SELECT seq, time_us, actor, action, target, outcome, request_id, source, details FROM audit_events ORDER BY seq")
        .unwrap();
    let rows: Vec<(i64, i64, [String; 7])> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                [
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ],
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = warden_crypto::chain::GENESIS;
    for (seq, time_us, f) in rows {
        let fields = warden_crypto::chain::EventFields {
            seq: seq as u64,
            time_us,
            actor: &f[0],
            action: &f[1],
            target: &f[2],
            outcome: &f[3],
            request_id: &f[4],
            source: &f[5],
            details: &f[6],
        };
        let h = warden_crypto::chain::event_hash(&prev, &fields);
        c.execute(
            "UPDATE audit_events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![prev.as_slice(), h.as_slice(), seq],
        )
        .unwrap();
        prev = h;
    }
}

#[test]
fn a_running_server_reports_tampering_through_the_api() {
    let (s, _) = history();
    let conn = Connection::open(s.data_dir().join("warden.db")).unwrap();
    conn.execute(
        "UPDATE audit_events SET outcome = 'denied' WHERE seq = 7",
        [],
    )
    .unwrap();
    let out = s.cli(&s.admin, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("first bad event seq 7"), "{text}");
}

#[test]
fn a_server_refuses_to_start_on_a_chain_cut_while_it_was_down() {
    let (mut s, n) = history();
    s.kill9();
    let (_keep, copy) = copy_dir(&s.data_dir());
    let conn = Connection::open(copy.join("warden.db")).unwrap();
    conn.execute(
        "DELETE FROM audit_events WHERE seq > ?1",
        params![(n - 2) as i64],
    )
    .unwrap();
    drop(conn);
    // It must exit with an error on its own; a server that starts would run until killed.
    let mut child = warden()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&copy)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a tampered chain");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match the signed checkpoint"),
        "{err}"
    );
    // The untouched original still starts.
    s.restart();
    assert!(
        s.json(&s.admin, &["audit", "verify"])["ok"]
            .as_bool()
            .unwrap()
    );
}
