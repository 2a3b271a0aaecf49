//! The vault benchmark: secret reads through the API (authenticated with an API key, every read
//! audited durably before the value is returned) against the token service's
//! `client_secret_basic` issuance measured on the same server in the same run; and the latency
//! of a dynamic PostgreSQL login — issued (lease recorded, role created) and revoked (sessions
//! ended, role dropped) — against a real PostgreSQL server with password authentication.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use hyper::Method;
use serde_json::json;

use crate::{Phase, call, drive, median};

struct RunResult {
    tokens: Phase,
    reads: Phase,
    issue: (f64, f64),
    revoke: (f64, f64),
}

async fn one_run(
    warden: &Path,
    connections: usize,
    seconds: u64,
    logins: usize,
) -> Result<RunResult> {
    let (dir, admin, _server, addr) = crate::start_warden(warden)?;
    let post = Method::POST;
    call(
        addr,
        &admin,
        post.clone(),
        "/v1/teams",
        json!({"name": "bench"}),
    )
    .await?;
    let id = call(
        addr,
        &admin,
        post.clone(),
        "/v1/identities",
        json!({"name": "vault-bench", "kind": "workload", "owner": "bench",
               "purpose": "Vault benchmark client", "environment": "staging",
               "scopes": ["ledger:write", "secret:read:bench/*", "creds:bench/ro"]}),
    )
    .await?;
    let client_id = id["identity"]["client_id"]
        .as_str()
        .context("no client_id")?
        .to_owned();
    let cred = |kind: &str| {
        let (admin, path) = (
            admin.clone(),
            format!("/v1/identities/{client_id}/credentials"),
        );
        let kind = kind.to_owned();
        async move {
            anyhow::Ok(
                call(addr, &admin, Method::POST, &path, json!({"kind": kind})).await?["secret"]
                    .as_str()
                    .context("no secret")?
                    .to_owned(),
            )
        }
    };
    let client_secret = cred("client_secret").await?;
    let api_key = cred("api_key").await?;
    // 100 secrets of 40 characters each.
    for i in 0..100 {
        let value = format!("{:040}", i * 7919 + 12345);
        call(
            addr,
            &admin,
            Method::PUT,
            &format!("/v1/secrets/bench/s{i}"),
            json!({"value": value, "owner": client_id}),
        )
        .await?;
    }

    // The reference: client_secret_basic token issuance on the same server, same connections.
    let endpoint = format!("http://{addr}/oauth2/token");
    let (key, _) = warden_jose::ClientKey::generate_ed25519()?;
    let reqs = Arc::new(crate::tokens::prepare(
        "client_secret_basic",
        1,
        &client_id,
        &client_secret,
        &key,
        &endpoint,
    )?);
    let tokens = crate::tokens::drive_prepared(addr, connections, seconds, reqs, true).await?;
    let reads = drive(
        addr,
        &api_key,
        connections,
        None,
        Some(seconds),
        200,
        Arc::new(|i| (Method::GET, format!("/v1/secrets/bench/s{}", i % 100), None)),
    )
    .await?;

    // Dynamic PostgreSQL logins: issue + revoke, one at a time.
    let password = "bench-admin-Pw-0123456789";
    let pg = warden_store_conformance::pg::PgServer::start_with_password(password);
    pg.psql("postgres", "CREATE DATABASE app");
    call(
        addr,
        &admin,
        post.clone(),
        "/v1/vault/databases",
        json!({"name": "bench", "owner": client_id, "host": "127.0.0.1", "port": pg.port,
               "dbname": "app", "username": "warden", "password": password, "sslmode": "disable",
               "roles": {"ro": {"creation": [
                   "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
                   "GRANT CONNECT ON DATABASE app TO \"{{name}}\""],
                   "default_ttl_secs": 3600, "max_ttl_secs": 7200}}}),
    )
    .await?;
    let (mut issue, mut revoke) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    for _ in 0..logins {
        let t0 = Instant::now();
        let c = call(
            addr,
            &api_key,
            post.clone(),
            "/v1/creds/postgres",
            json!({"role": "ro"}),
        )
        .await?;
        issue.record(u64::try_from(t0.elapsed().as_micros())?)?;
        let lease = c["lease"]["id"].as_str().context("no lease")?.to_owned();
        let t1 = Instant::now();
        let r = call(
            addr,
            &api_key,
            post.clone(),
            &format!("/v1/leases/{lease}/revoke"),
            json!({}),
        )
        .await?;
        revoke.record(u64::try_from(t1.elapsed().as_micros())?)?;
        if r.get("last_error").is_some() {
            bail!("revocation did not complete: {r}");
        }
    }
    let left = pg.psql(
        "app",
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'w\\_%'",
    );
    if left != "0" {
        bail!("{left} dynamic roles were not dropped");
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RunResult {
        tokens,
        reads,
        issue: (ms(&issue, 0.5), ms(&issue, 0.99)),
        revoke: (ms(&revoke, 0.5), ms(&revoke, 0.99)),
    })
}

pub fn main(
    warden: &Path,
    connections: usize,
    seconds: u64,
    runs: usize,
    logins: usize,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for r in 0..runs {
        eprintln!("run {}/{runs} …", r + 1);
        let res = rt.block_on(one_run(warden, connections, seconds, logins))?;
        for (name, p) in [
            ("tokens client_secret_basic", &res.tokens),
            ("secret reads", &res.reads),
        ] {
            eprintln!(
                "  {name:<28} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} errors)",
                p.rate(),
                p.p50_ms,
                p.p99_ms,
                p.errors
            );
            if p.errors > 0 {
                bail!("{name}: {} requests failed", p.errors);
            }
        }
        eprintln!(
            "  dynamic login issue  p50 {:.2} ms  p99 {:.2} ms;  revoke  p50 {:.2} ms  p99 {:.2} ms",
            res.issue.0, res.issue.1, res.revoke.0, res.revoke.1
        );
        results.push(res);
    }
    let m = |f: &dyn Fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    let summary = json!({
        "runs": runs,
        "connections": connections,
        "seconds": seconds,
        "dynamic_logins_per_run": logins,
        "token_basic_rps_median": m(&|r| r.tokens.rate()),
        "secret_read_rps_median": m(&|r| r.reads.rate()),
        "secret_read_p99_ms_median": m(&|r| r.reads.p99_ms),
        "reads_over_tokens_median": m(&|r| r.reads.rate() / r.tokens.rate()),
        "dynamic_issue_p50_ms_median": m(&|r| r.issue.0),
        "dynamic_issue_p99_ms_median": m(&|r| r.issue.1),
        "dynamic_revoke_p50_ms_median": m(&|r| r.revoke.0),
        "dynamic_revoke_p99_ms_median": m(&|r| r.revoke.1),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
