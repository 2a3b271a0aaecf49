//! The federation benchmark: RFC 8693 token exchange of an external OIDC token (ES256, the
//! issuer's keys configured statically so no network is involved) against `client_secret_basic`
//! issuance on the same server in the same run. Subject tokens are minted in advance.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::{Value, json};
use warden_jose::{Alg, SigningKey};

use crate::tokens::{Prepared, drive_prepared, form, prepare};
use crate::{Phase, call, median, spawn_url, tempfile_dir};

const ISS: &str = "https://ci.bench";

async fn one_run(warden: &Path, connections: usize, seconds: u64) -> Result<(Phase, Phase)> {
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
    let (_server, addr) = spawn_url(cmd, "warden listening on ")?;
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
        json!({"name": "exchange-bench", "kind": "ci_pipeline", "owner": "bench",
               "purpose": "Federation benchmark", "environment": "staging",
               "scopes": ["ledger:write"]}),
    )
    .await?;
    let client_id = id["identity"]["client_id"]
        .as_str()
        .context("no client_id")?
        .to_owned();
    let secret = call(
        addr,
        &admin,
        post.clone(),
        &format!("/v1/identities/{client_id}/credentials"),
        json!({"kind": "client_secret"}),
    )
    .await?["secret"]
        .as_str()
        .context("no secret")?
        .to_owned();
    let issuer_key = SigningKey::generate(Alg::ES256, "bench-issuer")?;
    let endpoint = format!("http://{addr}/oauth2/token");
    call(
        addr,
        &admin,
        post.clone(),
        "/v1/issuers",
        json!({"name": "ci", "issuer": ISS, "static_jwks": {"keys": [issuer_key.public_jwk()]},
               "audiences": [endpoint]}),
    )
    .await?;
    let rule = call(
        addr,
        &admin,
        post.clone(),
        "/v1/trust-rules",
        json!({"identity": client_id, "issuer": "ci",
               "condition": "repository == \"org/app\" && ref == \"refs/heads/main\""}),
    )
    .await?;
    let second = call(
        addr,
        &admin,
        post.clone(),
        "/v1/operators",
        json!({"name": "admin-two", "role": "admin"}),
    )
    .await?["token"]
        .as_str()
        .context("no operator token")?
        .to_owned();
    call(
        addr,
        &second,
        post.clone(),
        &format!(
            "/v1/trust-rules/{}/approve",
            rule["id"].as_str().context("no rule id")?
        ),
        json!({"reason": "benchmark"}),
    )
    .await?;

    // Reference: client_secret_basic on the same server.
    let (client_key, _) = warden_jose::ClientKey::generate_ed25519()?;
    let basic = Arc::new(prepare(
        "client_secret_basic",
        1,
        &client_id,
        &secret,
        &client_key,
        &endpoint,
    )?);
    let tokens = drive_prepared(addr, connections, seconds, basic, true).await?;

    // Federation: 2,000 distinct subject tokens, cycled (the issuer is not single-use).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut reqs = Vec::new();
    for i in 0..2_000 {
        let subject = issuer_key.sign(
            "JWT",
            &json!({"iss": ISS, "aud": endpoint, "iat": now, "nbf": now, "exp": now + 600,
                    "jti": format!("bench-{i}"), "sub": "repo:org/app:ref:refs/heads/main",
                    "repository": "org/app", "ref": "refs/heads/main"}),
        )?;
        reqs.push(Prepared {
            body: form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", &subject),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ]),
            headers: Vec::new(),
        });
    }
    let exchange = drive_prepared(addr, connections, seconds, Arc::new(reqs), true).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((tokens, exchange))
}

pub fn main(warden: &Path, connections: usize, seconds: u64, runs: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for r in 0..runs {
        eprintln!("run {}/{runs} …", r + 1);
        let (t, x) = rt.block_on(one_run(warden, connections, seconds))?;
        for (name, p) in [
            ("client_secret_basic", &t),
            ("token exchange (federation)", &x),
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
        results.push((t, x));
    }
    let m = |f: &dyn Fn(&(Phase, Phase)) -> f64| median(results.iter().map(f).collect());
    let summary = json!({
        "runs": runs,
        "connections": connections,
        "token_basic_rps_median": m(&|r| r.0.rate()),
        "exchange_rps_median": m(&|r| r.1.rate()),
        "exchange_p99_ms_median": m(&|r| r.1.p99_ms),
        "exchange_over_basic_median": m(&|r| r.1.rate() / r.0.rate()),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
