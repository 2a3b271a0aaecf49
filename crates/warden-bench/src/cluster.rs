//! The storage benchmark (`warden-bench cluster --pg HOST:PORT`): durable identity creations/s
//! and token issuances/s on SQLite (one node), PostgreSQL with one node, and PostgreSQL with two
//! nodes sharing the database, measured in the same run. Each setup starts from an empty
//! database; with two nodes the load is split evenly between them (as a load balancer would).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::{Value, json};
use warden_jose::ClientKey;

use crate::tokens::{Prepared, drive_prepared, prepare};
use crate::{Phase, Proc, call, drive, median, spawn_url, tempfile_dir};

/// The URL every node is known by (a load balancer's): tokens and assertions name it.
const PUBLIC_URL: &str = "http://warden.bench";

/// One storage setup's results.
struct SetupResult {
    create: Phase,
    basic: Phase,
    pkjwt: Phase,
}

struct Node {
    _proc: Proc,
    addr: SocketAddr,
}

/// Starts `nodes` servers on one store: SQLite when `database` is `None`.
fn start(warden: &Path, database: Option<&str>, nodes: usize) -> Result<(Vec<Node>, String)> {
    let env = |cmd: &mut Command, name: &str| {
        cmd.env("WARDEN_LOG", "warn")
            .env("WARDEN_PUBLIC_URL", PUBLIC_URL)
            .env("WARDEN_NODE_NAME", name);
        if let Some(url) = database {
            cmd.env("WARDEN_DATABASE_URL", url);
        }
    };
    let first = tempfile_dir()?;
    let mut init = Command::new(warden);
    init.args(["init", "--json", "--data-dir"]).arg(&first);
    env(&mut init, "node-0");
    let out = init.output()?;
    if !out.status.success() {
        bail!("warden init: {}", String::from_utf8_lossy(&out.stderr));
    }
    let token = serde_json::from_slice::<Value>(&out.stdout)?["admin_token"]
        .as_str()
        .context("no admin_token")?
        .to_owned();
    let key = std::fs::read(first.join("server.key"))?;
    let mut dirs = vec![first];
    for _ in 1..nodes {
        let d = tempfile_dir()?;
        std::fs::create_dir_all(&d)?;
        let p = d.join("server.key");
        std::fs::write(&p, &key)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        dirs.push(d);
    }
    let mut out = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let mut serve = Command::new(warden);
        serve
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(d);
        env(&mut serve, &format!("node-{i}"));
        let (proc, addr) = spawn_url(serve, "warden listening on ")?;
        out.push(Node { _proc: proc, addr });
    }
    Ok((out, token))
}

/// Runs one phase on every node at once (each with its share of the connections) and merges
/// the results: requests add up, latencies are the worst node's.
async fn on_all<F, Fut>(nodes: &[Node], f: F) -> Result<Phase>
where
    F: Fn(usize, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<Phase>> + Send + 'static,
{
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| tokio::spawn(f(k, n.addr)))
        .collect();
    let mut merged = Phase {
        requests: 0,
        errors: 0,
        secs: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
    };
    for t in tasks {
        let p = t.await??;
        merged.requests += p.requests;
        merged.errors += p.errors;
        merged.secs = merged.secs.max(p.secs);
        merged.p50_ms = merged.p50_ms.max(p.p50_ms);
        merged.p99_ms = merged.p99_ms.max(p.p99_ms);
    }
    Ok(merged)
}

async fn one_setup(
    warden: &Path,
    database: Option<&str>,
    nodes: usize,
    creations: usize,
    connections: usize,
    seconds: u64,
) -> Result<SetupResult> {
    let (nodes, token) = start(warden, database, nodes)?;
    let first = nodes[0].addr;
    for t in 0..20 {
        call(
            first,
            &token,
            Method::POST,
            "/v1/teams",
            json!({"name": format!("team-{t}")}),
        )
        .await?;
    }
    let per_node = connections / nodes.len();
    let share = creations / nodes.len();
    let t = token.clone();
    let create = on_all(&nodes, move |k, addr| {
        let t = t.clone();
        async move {
            drive(
                addr,
                &t,
                per_node,
                Some(share),
                None,
                201,
                Arc::new(move |i| {
                    let body = json!({
                        "name": format!("n{k}-{i}"),
                        "kind": "service_account",
                        "owner": format!("team-{}", i % 20),
                        "purpose": "Benchmark identity created by warden-bench",
                        "environment": "prod",
                        "scopes": [format!("svc{}:read", i % 50)],
                    });
                    (
                        Method::POST,
                        "/v1/identities".to_owned(),
                        Some(body.to_string().into_bytes()),
                    )
                }),
            )
            .await
        }
    })
    .await?;

    // A token client with a secret and a registered key.
    let id = call(
        first,
        &token,
        Method::POST,
        "/v1/identities",
        json!({"name": "token-bench", "kind": "workload", "owner": "team-0",
               "purpose": "Token endpoint benchmark client", "environment": "staging",
               "scopes": ["ledger:write"]}),
    )
    .await?;
    let client_id = id["identity"]["client_id"]
        .as_str()
        .context("no client_id")?
        .to_owned();
    let secret = call(
        first,
        &token,
        Method::POST,
        &format!("/v1/identities/{client_id}/credentials"),
        json!({"kind": "client_secret"}),
    )
    .await?["secret"]
        .as_str()
        .context("no secret")?
        .to_owned();
    let (key, _) = ClientKey::generate_ed25519()?;
    call(
        first,
        &token,
        Method::POST,
        &format!("/v1/identities/{client_id}/credentials"),
        json!({"kind": "public_key", "jwk": key.public_jwk()}),
    )
    .await?;
    let endpoint = format!("{PUBLIC_URL}/oauth2/token");
    let mut phases = Vec::new();
    for case in ["client_secret_basic", "private_key_jwt"] {
        let cycle = case == "client_secret_basic";
        // Single-use assertions: each node gets its own, enough for the phase.
        let n = if cycle { 1 } else { 20_000 * seconds as usize };
        let sets: Vec<Arc<Vec<Prepared>>> = (0..nodes.len())
            .map(|_| prepare(case, n, &client_id, &secret, &key, &endpoint).map(Arc::new))
            .collect::<Result<_>>()?;
        let sets = Arc::new(sets);
        let p = on_all(&nodes, move |k, addr| {
            let reqs = Arc::clone(&sets[k]);
            async move { drive_prepared(addr, per_node, seconds, reqs, cycle).await }
        })
        .await?;
        if !cycle && p.requests as usize >= n {
            bail!("{case}: ran out of prepared requests; raise the count");
        }
        phases.push(p);
    }
    let pkjwt = phases.pop().context("pkjwt phase")?;
    let basic = phases.pop().context("basic phase")?;
    Ok(SetupResult {
        create,
        basic,
        pkjwt,
    })
}

fn create_database(pg: &str) -> Result<String> {
    let (host, port) = pg.rsplit_once(':').context("--pg is HOST:PORT")?;
    let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let out = Command::new("createdb")
        .args(["-h", host, "-p", port, "-U", "warden", &name])
        .output()
        .context("running createdb (PostgreSQL client tools)")?;
    if !out.status.success() {
        bail!("createdb: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(format!("postgres://warden@{pg}/{name}?sslmode=disable"))
}

/// Runs the storage benchmark `runs` times and prints medians.
pub fn main(
    warden: &Path,
    pg: &str,
    creations: usize,
    connections: usize,
    seconds: u64,
    runs: usize,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let setups = ["sqlite, 1 node", "postgres, 1 node", "postgres, 2 nodes"];
    let mut results: Vec<Vec<SetupResult>> = setups.iter().map(|_| Vec::new()).collect();
    for r in 0..runs {
        eprintln!("run {}/{runs} …", r + 1);
        for (s, name) in setups.iter().enumerate() {
            let (db, nodes) = match s {
                0 => (None, 1),
                1 => (Some(create_database(pg)?), 1),
                _ => (Some(create_database(pg)?), 2),
            };
            let res = rt.block_on(one_setup(
                warden,
                db.as_deref(),
                nodes,
                creations,
                connections,
                seconds,
            ))?;
            for (what, p) in [
                ("creations", &res.create),
                ("basic tokens", &res.basic),
                ("private_key_jwt tokens", &res.pkjwt),
            ] {
                eprintln!(
                    "  {name:<18} {what:<24} {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {} errors)",
                    p.rate(),
                    p.p50_ms,
                    p.p99_ms,
                    p.requests,
                    p.errors
                );
                if p.errors > 0 {
                    bail!("{name}: {what}: {} requests failed", p.errors);
                }
            }
            results[s].push(res);
        }
    }
    let mut rows = Vec::new();
    for (s, name) in setups.iter().enumerate() {
        let rs = &results[s];
        let m = |f: &dyn Fn(&SetupResult) -> f64| median(rs.iter().map(f).collect());
        rows.push(json!({
            "setup": name,
            "creations_per_s": m(&|r| r.create.rate()),
            "creations_p99_ms": m(&|r| r.create.p99_ms),
            "basic_tokens_per_s": m(&|r| r.basic.rate()),
            "basic_tokens_p99_ms": m(&|r| r.basic.p99_ms),
            "pkjwt_tokens_per_s": m(&|r| r.pkjwt.rate()),
            "pkjwt_tokens_p99_ms": m(&|r| r.pkjwt.p99_ms),
        }));
    }
    let summary = json!({
        "runs": runs,
        "creations": creations,
        "connections": connections,
        "seconds": seconds,
        "medians": rows,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
