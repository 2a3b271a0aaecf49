//! The token service benchmark: `client_secret_basic`, `private_key_jwt` and `private_key_jwt` +
//! DPoP against `warden serve`, each next to its *ceiling* measured in the same run — a bare axum
//! endpoint doing only the same cryptography per request (the keyed hash of the secret, or the
//! Ed25519 verification of the assertion and the proof with the proof key's thumbprint, then one
//! Ed25519 token signature) and nothing else: no store, no audit, no policy.
//!
//! Requests are prepared before the clock starts (each assertion and proof has its own `jti`,
//! since Warden refuses replays), so the driver only sends bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use warden_jose::{Alg, ClientKey, DpopRequest, SigningKey, VerifyingKey, decode, verify_dpop};

use crate::{Phase, call, median, spawn_url, tempfile_dir};

/// One prepared request: body and extra headers.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// A prepared request to `/oauth2/token` with the real authority (a provider checks `aud` and
/// `htu` against the URL it was sent to).
fn token_request(host: &str, p: &Prepared) -> hyper::http::request::Builder {
    let mut req = Request::builder()
        .method("POST")
        .uri("/oauth2/token")
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in &p.headers {
        req = req.header(*k, v.as_str());
    }
    req
}

/// Sends prepared requests (each once, or cycling when `cycle`) for `seconds`.
pub(crate) async fn drive_prepared(
    addr: SocketAddr,
    connections: usize,
    seconds: u64,
    reqs: Arc<Vec<Prepared>>,
    cycle: bool,
) -> Result<Phase> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, reqs) = (next.clone(), reqs.clone());
        // The real authority: a provider checks `aud` and `htu` against the URL it was sent to.
        let host = addr.to_string();
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
                if (!cycle && i >= reqs.len()) || Instant::now() >= deadline {
                    break;
                }
                let p = &reqs[i % reqs.len()];
                let req = token_request(&host, p);
                let req = req.body(Full::new(p.body.clone()))?;
                let t0 = Instant::now();
                sender.ready().await?;
                let res = sender.send_request(req).await?;
                let status = res.status().as_u16();
                let body = res.into_body().collect().await?.to_bytes();
                hist.record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                if status != 200 {
                    if errors == 0 {
                        eprintln!(
                            "  first failure on this connection: {status} {}",
                            String::from_utf8_lossy(&body)
                                .chars()
                                .take(300)
                                .collect::<String>()
                        );
                    }
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
    Ok(Phase {
        requests: hist.len(),
        errors,
        secs: start.elapsed().as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Sends every prepared token request once over `connections` connections; the JSON answers, in
/// order (for setting up phases that need many distinct tokens).
pub(crate) async fn send_many(
    addr: SocketAddr,
    connections: usize,
    reqs: Arc<Vec<Prepared>>,
) -> Result<Vec<Value>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, reqs) = (next.clone(), reqs.clone());
        let host = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = reqs.get(i) else { break };
                let req = token_request(&host, p);
                sender.ready().await?;
                let res = sender
                    .send_request(req.body(Full::new(p.body.clone()))?)
                    .await?;
                let body = res.into_body().collect().await?.to_bytes();
                out.push((i, serde_json::from_slice::<Value>(&body)?));
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(reqs.len());
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, v)| v).collect())
}

/// Sends one prepared token request; the JSON answer (an error body too).
pub(crate) async fn send_one(addr: SocketAddr, p: &Prepared) -> Result<Value> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = token_request(&addr.to_string(), p);
    let res = sender
        .send_request(req.body(Full::new(p.body.clone()))?)
        .await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn jti(i: usize, case: &str) -> String {
    format!("{case}-{i}-{}", uuid::Uuid::now_v7().simple())
}

pub(crate) fn form(pairs: &[(&str, &str)]) -> Bytes {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    Bytes::from(s.finish())
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `n` requests of `case` for `client_id` at `endpoint`.
pub(crate) fn prepare(
    case: &str,
    n: usize,
    client_id: &str,
    secret: &str,
    key: &ClientKey,
    endpoint: &str,
) -> Result<Vec<Prepared>> {
    let now = unix_now();
    let basic = format!("Basic {}", STANDARD.encode(format!("{client_id}:{secret}")));
    (0..n)
        .map(|i| {
            Ok(match case {
                "client_secret_basic" => Prepared {
                    body: form(&[
                        ("grant_type", "client_credentials"),
                        ("scope", "ledger:write"),
                    ]),
                    headers: vec![("authorization", basic.clone())],
                },
                _ => {
                    let a = key.client_assertion(client_id, endpoint, now, 300, &jti(i, "a"))?;
                    let body = form(&[
                        ("grant_type", "client_credentials"),
                        ("scope", "ledger:write"),
                        ("client_id", client_id),
                        ("client_assertion_type", ASSERTION_TYPE),
                        ("client_assertion", &a),
                    ]);
                    let headers = if case == "private_key_jwt+dpop" {
                        vec![(
                            "dpop",
                            key.dpop_proof("POST", endpoint, now, &jti(i, "p"), None)?,
                        )]
                    } else {
                        Vec::new()
                    };
                    Prepared { body, headers }
                }
            })
        })
        .collect()
}

/// The ceiling: only the cryptography of each case, then one EdDSA token signature.
pub fn ceiling_server(listen: &str) -> Result<()> {
    let client_jwk: Value = serde_json::from_str(
        &std::env::var("WARDEN_BENCH_CLIENT_JWK").context("WARDEN_BENCH_CLIENT_JWK")?,
    )?;
    let client_key = VerifyingKey::from_jwk(&client_jwk)?;
    let secret = std::env::var("WARDEN_BENCH_SECRET").context("WARDEN_BENCH_SECRET")?;
    let hasher = warden_crypto::ServerKey::generate().hasher("bench");
    let secret_hash = hasher.hash(secret.as_bytes());
    let signer = SigningKey::generate(Alg::EdDSA, "ceiling")?;
    let state = Arc::new((client_key, hasher, secret_hash, signer));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/oauth2/token",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let state = state.clone();
                    async move { ceiling(&state, &headers, &body) }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("ceiling listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

type CeilingState = (
    warden_jose::JwkKey,
    warden_crypto::KeyedHasher,
    [u8; 32],
    SigningKey,
);

fn ceiling(
    state: &CeilingState,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (axum::http::StatusCode, String) {
    let (client_key, hasher, secret_hash, signer) = state;
    let bad = (axum::http::StatusCode::UNAUTHORIZED, String::new());
    let now = unix_now();
    if let Some(b) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let Some(pair) = STANDARD
            .decode(b)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
        else {
            return bad;
        };
        let Some((_, secret)) = pair.split_once(':') else {
            return bad;
        };
        if !hasher.verify(secret.as_bytes(), secret_hash) {
            return bad;
        }
    } else {
        let Some(assertion) = form_urlencoded::parse(body)
            .find(|(k, _)| k == "client_assertion")
            .map(|(_, v)| v.into_owned())
        else {
            return bad;
        };
        let Ok(jws) = decode(&assertion) else {
            return bad;
        };
        if client_key.verify(&jws).is_err() {
            return bad;
        }
        if let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) {
            let url = jws
                .audiences()
                .ok()
                .and_then(|a| a.first().map(|s| (*s).to_owned()));
            let Some(url) = url else { return bad };
            let ok = verify_dpop(
                proof,
                &DpopRequest {
                    method: "POST",
                    url: &url,
                    now,
                    max_age_secs: 600,
                    leeway_secs: 600,
                    access_token: None,
                    nonce: None,
                },
            );
            if ok.is_err() {
                return bad;
            }
        }
    }
    let claims = json!({
        "iss": "https://ceiling", "sub": "c", "client_id": "c", "aud": "https://ceiling",
        "exp": now + 600, "iat": now, "jti": uuid::Uuid::now_v7().to_string(), "scope": "ledger:write",
    });
    match signer.sign("at+jwt", &claims) {
        Ok(t) => (
            axum::http::StatusCode::OK,
            json!({"access_token": t, "token_type": "Bearer", "expires_in": 600}).to_string(),
        ),
        Err(_) => bad,
    }
}

/// One case's results: Warden, the ceiling, and the peer (when Node.js and the peer are there).
pub struct CaseResult {
    case: String,
    warden: Phase,
    ceiling: Phase,
    peer: Option<Phase>,
}

/// Starts the oidc-provider peer (bench/peer, `npm ci` done by bench/run), if it is there.
fn spawn_peer(key: &ClientKey, secret: &str) -> Result<Option<(crate::Proc, SocketAddr)>> {
    let dir = std::env::var("WARDEN_BENCH_PEER_DIR").unwrap_or_else(|_| "bench/peer".into());
    let dir = Path::new(&dir);
    if !dir.join("node_modules/oidc-provider").exists() {
        eprintln!("  (no peer: run `npm ci --prefix bench/peer` for oidc-provider)");
        return Ok(None);
    }
    let mut cmd = Command::new("node");
    cmd.arg("server.js")
        .current_dir(dir)
        .env("PEER_CLIENT_JWK", key.public_jwk().to_string())
        .env("PEER_SECRET", secret);
    Ok(Some(spawn_url(cmd, "peer listening on ")?))
}

/// One run of the three cases against Warden, the ceiling and the peer.
pub async fn run(
    warden: &Path,
    bench_exe: &Path,
    connections: usize,
    seconds: u64,
) -> Result<Vec<CaseResult>> {
    let dir = tempfile_dir()?;
    std::fs::create_dir_all(&dir)?;
    let init = Command::new(warden)
        .args(["init", "--json", "--data-dir"])
        .arg(&dir)
        .output()?;
    if !init.status.success() {
        bail!("warden init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let token = serde_json::from_slice::<Value>(&init.stdout)?["admin_token"]
        .as_str()
        .context("no admin_token")?
        .to_owned();
    let mut cmd = Command::new(warden);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir);
    let (_server, addr) = spawn_url(cmd, "warden listening on ")?;
    let m = Method::POST;
    call(
        addr,
        &token,
        m.clone(),
        "/v1/teams",
        json!({"name": "bench"}),
    )
    .await?;
    let id = call(
        addr,
        &token,
        m.clone(),
        "/v1/identities",
        json!({"name": "token-bench", "kind": "workload", "owner": "bench",
               "purpose": "Token endpoint benchmark client", "environment": "staging",
               "scopes": ["ledger:write"]}),
    )
    .await?;
    let client_id = id["identity"]["client_id"]
        .as_str()
        .context("no client_id")?
        .to_owned();
    let secret = call(
        addr,
        &token,
        m.clone(),
        &format!("/v1/identities/{client_id}/credentials"),
        json!({"kind": "client_secret"}),
    )
    .await?["secret"]
        .as_str()
        .context("no secret")?
        .to_owned();
    let (key, _) = ClientKey::generate_ed25519()?;
    call(
        addr,
        &token,
        m,
        &format!("/v1/identities/{client_id}/credentials"),
        json!({"kind": "public_key", "jwk": key.public_jwk()}),
    )
    .await?;
    let mut ceiling_cmd = Command::new(bench_exe);
    ceiling_cmd
        .args(["ceiling", "--listen", "127.0.0.1:0"])
        .env("WARDEN_BENCH_CLIENT_JWK", key.public_jwk().to_string())
        .env("WARDEN_BENCH_SECRET", &secret);
    let (_ceiling, ceiling_addr) = spawn_url(ceiling_cmd, "ceiling listening on ")?;
    let peer = spawn_peer(&key, &secret)?;

    let endpoint = format!("http://{addr}/oauth2/token");
    let mut out = Vec::new();
    for case in [
        "client_secret_basic",
        "private_key_jwt",
        "private_key_jwt+dpop",
    ] {
        // Enough single-use requests for the phase at well above the expected rate.
        let n = if case == "client_secret_basic" {
            1
        } else {
            25_000 * seconds as usize
        };
        let cycle = case == "client_secret_basic";
        let reqs = Arc::new(prepare(case, n, &client_id, &secret, &key, &endpoint)?);
        let w = drive_prepared(addr, connections, seconds, reqs.clone(), cycle).await?;
        let c = drive_prepared(ceiling_addr, connections, seconds, reqs, cycle).await?;
        if !cycle && (w.requests as usize >= n || c.requests as usize >= n) {
            bail!("{case}: ran out of prepared requests; raise the count");
        }
        let p = match &peer {
            None => None,
            Some((_, peer_addr)) => {
                // The peer's own client ids, audience and htu; far fewer requests are needed.
                let peer_id = if case == "client_secret_basic" {
                    "basic"
                } else {
                    "pkjwt"
                };
                let peer_endpoint = format!("http://{peer_addr}/oauth2/token");
                let reqs = Arc::new(prepare(
                    case,
                    n / 4 + 1,
                    peer_id,
                    &secret,
                    &key,
                    &peer_endpoint,
                )?);
                Some(drive_prepared(*peer_addr, connections, seconds, reqs, cycle).await?)
            }
        };
        out.push(CaseResult {
            case: case.to_owned(),
            warden: w,
            ceiling: c,
            peer: p,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// Runs the token benchmark `runs` times and prints medians.
pub fn main(warden: &Path, connections: usize, seconds: u64, runs: usize) -> Result<()> {
    let exe = std::env::current_exe()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut all: Vec<Vec<CaseResult>> = Vec::new();
    for r in 0..runs {
        eprintln!("token run {}/{runs} …", r + 1);
        let res = rt.block_on(run(warden, &exe, connections, seconds))?;
        for c in &res {
            let peer = c.peer.as_ref().map_or_else(String::new, |p| {
                format!(
                    " | peer {:>7.0} req/s p99 {:>6.2} ms ({} errors) | {:>5.1}x peer",
                    p.rate(),
                    p.p99_ms,
                    p.errors,
                    c.warden.rate() / p.rate()
                )
            });
            eprintln!(
                "  {:<22} warden {:>7.0} req/s p99 {:>6.2} ms | ceiling {:>7.0} req/s p99 {:>6.2} ms | {:>5.1}% of ceiling{peer}",
                c.case,
                c.warden.rate(),
                c.warden.p99_ms,
                c.ceiling.rate(),
                c.ceiling.p99_ms,
                100.0 * c.warden.rate() / c.ceiling.rate()
            );
            let peer_errors = c.peer.as_ref().map_or(0, |p| p.errors);
            if c.warden.errors > 0 || c.ceiling.errors > 0 || peer_errors > 0 {
                bail!(
                    "{}: requests failed (warden {}, ceiling {}, peer {peer_errors})",
                    c.case,
                    c.warden.errors,
                    c.ceiling.errors
                );
            }
        }
        all.push(res);
    }
    let mut summary = serde_json::Map::new();
    summary.insert("runs".into(), json!(runs));
    summary.insert("connections".into(), json!(connections));
    for (i, case) in [
        "client_secret_basic",
        "private_key_jwt",
        "private_key_jwt+dpop",
    ]
    .iter()
    .enumerate()
    {
        let pick = |f: &dyn Fn(&CaseResult) -> f64| median(all.iter().map(|r| f(&r[i])).collect());
        let mut v = json!({
            "warden_rps_median": pick(&|c| c.warden.rate()),
            "warden_p99_ms_median": pick(&|c| c.warden.p99_ms),
            "ceiling_rps_median": pick(&|c| c.ceiling.rate()),
            "of_ceiling_median": pick(&|c| c.warden.rate() / c.ceiling.rate()),
        });
        if all.iter().all(|r| r[i].peer.is_some()) {
            let rate = |c: &CaseResult| c.peer.as_ref().map_or(f64::NAN, Phase::rate);
            v["peer_rps_median"] = json!(pick(&rate));
            v["over_peer_median"] = json!(pick(&|c| c.warden.rate() / rate(c)));
        }
        summary.insert((*case).into(), v);
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(summary))?);
    Ok(())
}
