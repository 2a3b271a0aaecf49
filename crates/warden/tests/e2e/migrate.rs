//! `warden migrate`: upgrades an older schema, reports with `--check`, refuses a newer schema and
//! a database a server is using.

use serde_json::Value;

use crate::harness::{Server, init, stderr, warden};

fn migrate(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    warden()
        .args(["migrate", "--json", "--data-dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn migrate_upgrades_reports_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let db = dir.path().join("warden.db");
    let latest: u32 = {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
        .parse()
        .unwrap()
    };
    let out = migrate(dir.path(), &["--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["from"].as_u64(), v["to"].as_u64()),
        (Some(u64::from(latest)), Some(u64::from(latest)))
    );

    // Make it look like a database from before the token service and the leases (schema v2).
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP TABLE signing_keys; DROP TABLE token_once; DROP TABLE revoked_tokens; DROP TABLE leases; DROP TABLE findings;
             DROP TABLE secrets; DROP TABLE secret_versions; DROP TABLE vault_leases;
             DROP TABLE trusted_issuers; DROP TABLE trust_rules; DROP TABLE delegations; DROP TABLE mcp_servers; DROP TABLE policies;
             DROP TABLE usage_scopes; DROP TABLE usage_sources; DROP TABLE job_states; DROP TABLE review_campaigns; DROP TABLE review_items; DROP TABLE anomaly_baselines; DROP TABLE sink_cursors;
             UPDATE meta SET value = '2' WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let out = migrate(dir.path(), &["--check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check reports pending work with exit 1"
    );
    let out = migrate(dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["from"].as_u64(), v["applied"].as_bool()),
        (Some(2), Some(true))
    );
    let tables: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('signing_keys','token_once','revoked_tokens','token_jtis')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        tables, 3,
        "the v3 tables are back, and v4 replaced token_jtis with token_once"
    );

    // A schema from the future is refused, by migrate and by serve.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    let out = migrate(dir.path(), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("newer than this binary"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn migrate_refuses_while_a_server_uses_the_data_dir() {
    let s = Server::start();
    let out = migrate(&s.data_dir(), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stop it first"), "{}", stderr(&out));
}
