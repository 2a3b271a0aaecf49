//! Load harness for `warden serve`: durable identity creations, list/filter latency at scale, and
//! `POST /v1/keys/verify` against a hello-world axum baseline measured in the same run.
//!
//! ```text
//! cargo build --release -p warden -p warden-bench
//! target/release/warden-bench --warden target/release/warden --runs 3
//! ```
//!
//! The driver keeps one HTTP/1.1 keep-alive connection per client task (hyper's low-level client,
//! no pooling layer), so it costs little next to the server; both share this machine's cores.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// The same allocator as `warden`, so the hello-world baseline is not handicapped by glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Load harness for warden serve")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The warden binary to benchmark.
    #[arg(long, default_value = "target/release/warden", global = true)]
    warden: PathBuf,
    /// Identities to create per run.
    #[arg(long, default_value_t = 100_000)]
    identities: usize,
    /// Concurrent connections for creations and key verification.
    #[arg(long, default_value_t = 64, global = true)]
    connections: usize,
    /// Concurrent connections for list/filter queries.
    #[arg(long, default_value_t = 8)]
    list_connections: usize,
    /// Seconds per timed phase (hello, list, verify).
    #[arg(long, default_value_t = 10, global = true)]
    seconds: u64,
    #[arg(long, default_value_t = 3, global = true)]
    runs: usize,
    /// Load generator for the throughput phases (hello-world and keys/verify): `wrk` (a lean C
    /// generator, so the driver takes little of the shared cores) or `builtin`. Default: wrk when it
    /// is on PATH.
    #[arg(long)]
    driver: Option<String>,
}

mod cluster;
mod exchange;
mod governance;
mod scan;
mod tokens;
mod vault;

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the hello-world baseline and print its address.
    Hello {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// The token service benchmark: three client authentication cases against their ceilings.
    Tokens,
    /// The storage benchmark: durable creations and token issuances on SQLite, PostgreSQL with
    /// one node and PostgreSQL with two nodes, in the same run.
    Cluster {
        /// A PostgreSQL server (`HOST:PORT`, user `warden`, trust authentication) to create the
        /// benchmark databases on; `bench/run cluster` starts one.
        #[arg(long, env = "WARDEN_BENCH_PG")]
        pg: String,
        /// Identities created per setup.
        #[arg(long, default_value_t = 20_000)]
        creations: usize,
    },
    /// The scanner benchmark: Warden and peer scanners on the same labelled corpus.
    Scan {
        /// A corpus written by `bench/run scan` (tree/, labels.jsonl, decoys.jsonl).
        #[arg(long)]
        corpus: PathBuf,
        /// detect-secrets (PyPI), when installed.
        #[arg(long)]
        detect_secrets: Option<PathBuf>,
        /// ripsecrets (crates.io), when installed.
        #[arg(long)]
        ripsecrets: Option<PathBuf>,
    },
    /// The vault benchmark: secret reads against client_secret_basic tokens (same server, same
    /// run), and dynamic PostgreSQL login issue/revoke latency.
    Vault {
        /// Dynamic logins issued and revoked per run.
        #[arg(long, default_value_t = 200)]
        logins: usize,
    },
    /// The federation benchmark: token exchange against client_secret_basic, same run.
    Exchange {
        /// The external issuer's algorithm: RS256 (GitHub, GitLab, Kubernetes) or ES256.
        #[arg(long, default_value = "RS256")]
        alg: String,
    },
    /// The governance benchmark: hygiene run and posture report over a generated estate.
    Governance {
        #[arg(long, default_value_t = 50_000)]
        estate_identities: usize,
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
    },
    /// Serve the token ceiling (same cryptography, nothing else) and print its address.
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

/// One phase's result.
#[derive(Debug, Clone)]
struct Phase {
    requests: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

/// A request a client task sends: method, path, body. Chosen per request by the phase.
type MakeRequest = Arc<dyn Fn(usize) -> (Method, String, Option<Vec<u8>>) + Send + Sync>;

/// Drives `connections` keep-alive connections, each sending requests from `make` until `stop`
/// (a request count shared by all, or a deadline). Every response must have `expect` status.
async fn drive(
    addr: SocketAddr,
    token: &str,
    connections: usize,
    total: Option<usize>,
    seconds: Option<u64>,
    expect: u16,
    make: MakeRequest,
) -> Result<Phase> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = seconds.map(|s| start + Duration::from_secs(s));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, make, token) = (next.clone(), make.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut errors = 0u64;
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let (method, path, body) = make(i);
                let mut req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", "bench")
                    .header("authorization", format!("Bearer {token}"));
                if body.is_some() {
                    req = req.header("content-type", "application/json");
                }
                let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
                let t0 = Instant::now();
                sender.ready().await?;
                let res = sender.send_request(req).await?;
                let status = res.status().as_u16();
                let _ = res.into_body().collect().await?;
                hist.record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                if status != expect {
                    errors += 1;
                }
            }
            anyhow::Ok((hist, errors))
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        hist.add(h)?;
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Phase {
        requests: hist.len(),
        errors,
        secs,
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Runs `wrk` and reads its summary. `script` is Lua or `None` for a plain GET.
fn wrk_phase(
    addr: SocketAddr,
    path: &str,
    script: Option<&str>,
    connections: usize,
    seconds: u64,
) -> Result<Phase> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    let dir = tempfile_dir()?;
    if let Some(lua) = script {
        std::fs::create_dir_all(&dir)?;
        let f = dir.join("script.lua");
        std::fs::write(&f, lua)?;
        cmd.arg("-s").arg(f);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .context("running wrk")?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    };
    let ms = |v: &str| -> Result<f64> {
        let v = v.split_whitespace().next().unwrap_or("");
        let (num, scale) = if let Some(n) = v.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1000.0)
        } else {
            bail!("unexpected latency {v:?}")
        };
        Ok(num.parse::<f64>()? * scale)
    };
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .context("wrk printed no request count")?
        .parse()?;
    let errors: u64 = field("Non-2xx or 3xx responses:")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0)
        + field("Socket errors:").map_or(0, |_| 1);
    Ok(Phase {
        requests,
        errors,
        secs: seconds as f64,
        p50_ms: ms(&field("50%").context("no p50")?)?,
        p99_ms: ms(&field("99%").context("no p99")?)?,
    })
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a process that prints `<prefix><url>` as its first stdout line.
fn spawn_url(mut cmd: Command, prefix: &str) -> Result<(Proc, SocketAddr)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut line = String::new();
    let out = child.stdout.take().context("no stdout")?;
    BufReader::new(out).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix(prefix)
        .with_context(|| format!("unexpected line {line:?}"))?;
    let addr = url.trim_start_matches("http://").parse()?;
    Ok((Proc(child), addr))
}

async fn call(
    addr: SocketAddr,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> Result<Value> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{path}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// `warden init` into a fresh directory and `warden serve` on a free port: the directory, the
/// admin token, the server process and its address.
fn start_warden(warden: &Path) -> Result<(PathBuf, String, Proc, SocketAddr)> {
    let dir = tempfile_dir()?;
    std::fs::create_dir_all(&dir)?;
    let init = Command::new(warden)
        .args(["init", "--json", "--data-dir"])
        .arg(&dir)
        .output()?;
    if !init.status.success() {
        bail!("warden init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let admin = serde_json::from_slice::<Value>(&init.stdout)?["admin_token"]
        .as_str()
        .context("no admin_token")?
        .to_owned();
    let mut cmd = Command::new(warden);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("WARDEN_LOG", "warn");
    let (server, addr) = spawn_url(cmd, "warden listening on ")?;
    Ok((dir, admin, server, addr))
}

struct RunResult {
    hello: Phase,
    create: Phase,
    list: Phase,
    verify: Phase,
}

const KINDS: [&str; 5] = [
    "service_account",
    "workload",
    "ci_pipeline",
    "ai_agent",
    "bot",
];

async fn one_run(a: &Args, warden: &Path) -> Result<RunResult> {
    // Baseline: hello world, same machine, same connection count.
    let me = std::env::current_exe()?;
    let mut hello_cmd = Command::new(&me);
    hello_cmd.args(["hello"]);
    let (hello_proc, hello_addr) = spawn_url(hello_cmd, "hello listening on ")?;
    let use_wrk = match a.driver.as_deref() {
        Some("wrk") => true,
        Some("builtin") => false,
        Some(other) => bail!("unknown driver {other:?}: wrk or builtin"),
        None => Command::new("wrk").arg("--version").output().is_ok(),
    };
    let hello = if use_wrk {
        wrk_phase(hello_addr, "/", None, a.connections, a.seconds)?
    } else {
        drive(
            hello_addr,
            "x",
            a.connections,
            None,
            Some(a.seconds),
            200,
            Arc::new(|_| (Method::GET, "/".to_owned(), None)),
        )
        .await?
    };
    drop(hello_proc);

    let dir = tempfile_dir()?;
    let out = Command::new(warden)
        .args(["init", "--json", "--data-dir"])
        .arg(&dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "warden init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = serde_json::from_slice::<Value>(&out.stdout)?["admin_token"]
        .as_str()
        .context("no admin_token")?
        .to_owned();
    let mut serve = Command::new(warden);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("WARDEN_LOG", "warn");
    let (server, addr) = spawn_url(serve, "warden listening on ")?;

    for t in 0..20 {
        call(
            addr,
            &token,
            Method::POST,
            "/v1/teams",
            json!({"name": format!("team-{t}")}),
        )
        .await?;
    }

    // Durable creations: each 201 means the identity and its audit event are committed.
    let create = drive(
        addr,
        &token,
        a.connections,
        Some(a.identities),
        None,
        201,
        Arc::new(|i| {
            let body = json!({
                "name": format!("nhi-{i}"),
                "kind": KINDS[i % KINDS.len()],
                "owner": format!("team-{}", i % 20),
                "purpose": "Benchmark identity created by warden-bench",
                "environment": if i % 4 == 0 { "staging" } else { "prod" },
                "scopes": [format!("svc{}:read", i % 50)],
                "labels": {"tier": format!("t{}", i % 10)},
            });
            (
                Method::POST,
                "/v1/identities".to_owned(),
                Some(body.to_string().into_bytes()),
            )
        }),
    )
    .await?;

    // List and filter at full size.
    let list = drive(
        addr,
        &token,
        a.list_connections,
        None,
        Some(a.seconds),
        200,
        Arc::new(|i| {
            let q = match i % 7 {
                0 => "/v1/identities?limit=100".to_owned(),
                1 => "/v1/identities?kind=ai_agent&limit=100".to_owned(),
                2 => format!("/v1/identities?owner=team-{}&limit=100", i % 20),
                3 => "/v1/identities?environment=staging&limit=100".to_owned(),
                4 => format!("/v1/identities?label=tier%3Dt{}&limit=100", i % 10),
                5 => "/v1/identities?status=active&kind=bot&environment=prod&limit=100".to_owned(),
                _ => format!("/v1/identities?name=nhi-{}", i % 100_000),
            };
            (Method::GET, q, None)
        }),
    )
    .await?;

    // API keys to verify: 256 identities, one key each.
    let mut keys = Vec::new();
    for i in 0..256 {
        let v = call(
            addr,
            &token,
            Method::POST,
            &format!("/v1/identities/prod%2Fnhi-{}/credentials", i * 4 + 1),
            json!({"kind": "api_key"}),
        )
        .await?;
        keys.push(v["secret"].as_str().context("no secret")?.to_owned());
    }
    let verify = if use_wrk {
        let list: Vec<String> = keys
            .iter()
            .map(|k| format!("'{{\"key\":\"{k}\"}}'"))
            .collect();
        let lua = format!(
            "local bodies = {{{}}}\nlocal reqs = {{}}\nfor n, b in ipairs(bodies) do\n  reqs[n] = wrk.format(\"POST\", \"/v1/keys/verify\", {{[\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer {token}\"}}, b)\nend\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return reqs[(i % #reqs) + 1]\nend\n",
            list.join(", ")
        );
        wrk_phase(
            addr,
            "/v1/keys/verify",
            Some(&lua),
            a.connections,
            a.seconds,
        )?
    } else {
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            keys.iter()
                .map(|k| json!({"key": k}).to_string().into_bytes())
                .collect(),
        );
        drive(
            addr,
            &token,
            a.connections,
            None,
            Some(a.seconds),
            200,
            Arc::new(move |i| {
                (
                    Method::POST,
                    "/v1/keys/verify".to_owned(),
                    Some(bodies[i % bodies.len()].clone()),
                )
            }),
        )
        .await?
    };
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RunResult {
        hello,
        create,
        list,
        verify,
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "warden-bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let mut p = base.clone();
    let mut n = 0;
    while p.exists() {
        n += 1;
        p = base.with_extension(n.to_string());
    }
    Ok(p)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn hello_server(listen: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" }));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("hello listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(Cmd::Hello { listen }) = &a.cmd {
        return hello_server(listen);
    }
    if let Some(Cmd::Ceiling { listen }) = &a.cmd {
        return tokens::ceiling_server(listen);
    }
    let warden = a.warden.canonicalize().with_context(|| {
        format!(
            "{} (build it with cargo build --release -p warden)",
            a.warden.display()
        )
    })?;
    if let Some(Cmd::Cluster { pg, creations }) = &a.cmd {
        return cluster::main(&warden, pg, *creations, a.connections, a.seconds, a.runs);
    }
    if let Some(Cmd::Scan {
        corpus,
        detect_secrets,
        ripsecrets,
    }) = &a.cmd
    {
        return scan::main(
            &warden,
            corpus,
            detect_secrets.clone(),
            ripsecrets.clone(),
            a.runs,
        );
    }
    if let Some(Cmd::Vault { logins }) = &a.cmd {
        return vault::main(&warden, a.connections, a.seconds, a.runs, *logins);
    }
    if let Some(Cmd::Governance {
        estate_identities,
        events,
    }) = &a.cmd
    {
        return governance::main(a.runs, *estate_identities, *events);
    }
    if let Some(Cmd::Exchange { alg }) = &a.cmd {
        return exchange::main(&warden, a.connections, a.seconds, a.runs, alg);
    }
    if let Some(Cmd::Tokens) = &a.cmd {
        return tokens::main(&warden, a.connections, a.seconds, a.runs);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for r in 0..a.runs {
        eprintln!("run {}/{} …", r + 1, a.runs);
        let res = rt.block_on(one_run(&a, &warden))?;
        let row = |name: &str, p: &Phase| {
            eprintln!(
                "  {name:<22} {:>10.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {} errors)",
                p.rate(),
                p.p50_ms,
                p.p99_ms,
                p.requests,
                p.errors
            )
        };
        row("hello-world baseline", &res.hello);
        row("identity creations", &res.create);
        row("list/filter", &res.list);
        row("keys/verify", &res.verify);
        for (what, p) in [
            ("creations", &res.create),
            ("list", &res.list),
            ("verify", &res.verify),
        ] {
            if p.errors > 0 {
                bail!("{what}: {} requests got an unexpected status", p.errors);
            }
        }
        results.push(res);
    }
    let m = |f: &dyn Fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    let hello = m(&|r| r.hello.rate());
    let verify = m(&|r| r.verify.rate());
    let summary = json!({
        "runs": a.runs,
        "identities": a.identities,
        "connections": a.connections,
        "hello_rps_median": hello,
        "create_per_s_median": m(&|r| r.create.rate()),
        "create_p99_ms_median": m(&|r| r.create.p99_ms),
        "list_rps_median": m(&|r| r.list.rate()),
        "list_p50_ms_median": m(&|r| r.list.p50_ms),
        "list_p99_ms_median": m(&|r| r.list.p99_ms),
        "verify_rps_median": verify,
        "verify_p99_ms_median": m(&|r| r.verify.p99_ms),
        "verify_over_hello_median": m(&|r| r.verify.rate() / r.hello.rate()),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
