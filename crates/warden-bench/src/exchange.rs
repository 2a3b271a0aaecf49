//! The federation benchmark: RFC 8693 token exchange of an external OIDC token against
//! `client_secret_basic` issuance on the same server in the same run. The issuer signs with
//! RS256 (what GitHub Actions, GitLab CI and Kubernetes use; an RSA-2048 key made with `openssl`)
//! or ES256; its keys are configured statically, so no network is involved. Subject tokens are
//! minted in advance.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::{Value, json};
use warden_jose::{Alg, SigningKey};

use crate::tokens::{Prepared, drive_prepared, form, prepare};
use crate::{Phase, call, median};

const ISS: &str = "https://ci.bench";

/// The bench's stand-in for a CI issuer.
enum IssuerKey {
    Es(SigningKey),
    Rsa(ring::signature::RsaKeyPair),
}

impl IssuerKey {
    fn new(alg: &str) -> Result<IssuerKey> {
        match alg {
            "ES256" => Ok(IssuerKey::Es(SigningKey::generate(
                Alg::ES256,
                "bench-issuer",
            )?)),
            "RS256" => {
                let out = Command::new("openssl")
                    .args([
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                        "-outform",
                        "DER",
                    ])
                    .output()
                    .context("running openssl to make an RSA key")?;
                if !out.status.success() {
                    bail!("openssl genpkey failed");
                }
                // OpenSSL writes a PKCS#1 RSAPrivateKey in DER.
                let pair = ring::signature::RsaKeyPair::from_der(&out.stdout)
                    .map_err(|e| anyhow::anyhow!("the RSA key: {e}"))?;
                Ok(IssuerKey::Rsa(pair))
            }
            other => bail!("--alg {other:?}: RS256 or ES256"),
        }
    }

    fn public_jwk(&self) -> Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        match self {
            IssuerKey::Es(k) => k.public_jwk(),
            IssuerKey::Rsa(k) => {
                use ring::signature::KeyPair as _;
                let p = k.public_key();
                let der = p.as_ref();
                // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
                let (n, e) = rsa_components(der).unwrap_or_default();
                json!({"kty": "RSA", "kid": "bench-issuer", "alg": "RS256", "use": "sig",
                       "n": b64.encode(n), "e": b64.encode(e)})
            }
        }
    }

    fn sign(&self, claims: &Value) -> Result<String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        match self {
            IssuerKey::Es(k) => Ok(k.sign("JWT", claims)?),
            IssuerKey::Rsa(k) => {
                let header = json!({"alg": "RS256", "typ": "JWT", "kid": "bench-issuer"});
                let input = format!(
                    "{}.{}",
                    b64.encode(header.to_string()),
                    b64.encode(claims.to_string())
                );
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|e| anyhow::anyhow!("RSA signing: {e}"))?;
                Ok(format!("{input}.{}", b64.encode(sig)))
            }
        }
    }
}

/// The modulus and exponent of a DER `RSAPublicKey` (leading zero bytes removed).
fn rsa_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *b.first()?;
        let first = *b.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(*b.get(2 + i)?);
            }
            (len, 2 + n)
        };
        let body = b.get(header..header + len)?;
        Some((tag, body, b.get(header + len..)?))
    }
    let (_, seq, _) = tlv(der)?;
    let (_, n, rest) = tlv(seq)?;
    let (_, e, _) = tlv(rest)?;
    let strip = |x: &[u8]| {
        x.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    Some((strip(n), strip(e)))
}

/// One run's phases: client_secret_basic, federation, two-hop (cycled), two-hop (cold).
type Phases = (Phase, Phase, Phase, Phase);

async fn one_run(warden: &Path, connections: usize, seconds: u64, alg: &str) -> Result<Phases> {
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
    let issuer_key = IssuerKey::new(alg)?;
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

    // Two-hop delegation: the pipeline's identity lends to an agent (depth 2), the agent to a
    // sub-agent; each request exchanges the agent's delegated token (subject) and the
    // sub-agent's own token (actor) for the sub-agent's delegated token.
    let token_of = |secret: String, id: String| {
        let endpoint = endpoint.clone();
        async move {
            let (k, _) = warden_jose::ClientKey::generate_ed25519()?;
            let reqs = prepare("client_secret_basic", 1, &id, &secret, &k, &endpoint)?;
            let res = crate::tokens::send_one(addr, &reqs[0]).await?;
            anyhow::Ok(res["access_token"].as_str().context("no token")?.to_owned())
        }
    };
    let mut agents = Vec::new();
    for name in ["agent-one", "agent-two"] {
        let v = call(
            addr,
            &admin,
            post.clone(),
            "/v1/identities",
            json!({"name": name, "kind": "ai_agent", "owner": "bench",
                   "purpose": "Delegation benchmark agent", "environment": "staging",
                   "scopes": ["ledger:write"]}),
        )
        .await?;
        let id = v["identity"]["client_id"]
            .as_str()
            .context("no id")?
            .to_owned();
        let secret = call(
            addr,
            &admin,
            post.clone(),
            &format!("/v1/identities/{id}/credentials"),
            json!({"kind": "client_secret"}),
        )
        .await?["secret"]
            .as_str()
            .context("no secret")?
            .to_owned();
        agents.push((id, secret));
    }
    for (delegator, agent, depth) in [
        (client_id.clone(), agents[0].0.clone(), 2),
        (agents[0].0.clone(), agents[1].0.clone(), 2),
    ] {
        call(
            addr,
            &admin,
            post.clone(),
            "/v1/delegations",
            json!({"delegator_identity": delegator, "agent": agent, "scopes": ["ledger:write"],
                   "audience": "https://mcp.bench", "ttl_secs": 3600, "max_depth": depth}),
        )
        .await?;
    }
    let hop = |subject: &str, actor: &str| Prepared {
        body: form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("actor_token", actor),
        ]),
        headers: Vec::new(),
    };
    // 200 distinct chains, cycled: every request carries tokens (subject and actor) that other
    // requests do not, as when many users' agents hand work to sub-agents. Warden caches a
    // token's check (signature and state) while nothing it rests on changes, so after the first
    // pass these are checked from the cache, as an agent's own token and a parent's delegated
    // token are in practice (each is presented many times in its ten minutes).
    let mut reqs = Vec::new();
    for _ in 0..200 {
        let root = token_of(secret.clone(), client_id.clone()).await?;
        let one = token_of(agents[0].1.clone(), agents[0].0.clone()).await?;
        let two = token_of(agents[1].1.clone(), agents[1].0.clone()).await?;
        let first = crate::tokens::send_one(addr, &hop(&root, &one)).await?;
        let delegated = first["access_token"]
            .as_str()
            .with_context(|| format!("first hop refused: {first}"))?
            .to_owned();
        reqs.push(hop(&delegated, &two));
    }
    let two_hop = drive_prepared(addr, connections, seconds, Arc::new(reqs), true).await?;

    // Cold: every request of the phase carries two tokens never presented before (each sent
    // once), so every check verifies both signatures and reads the store.
    let n = usize::try_from(seconds).unwrap_or(10).max(1) * 2_000;
    let basic_of = |id: &str, secret: &str| -> Result<Prepared> {
        let (k, _) = warden_jose::ClientKey::generate_ed25519()?;
        Ok(prepare("client_secret_basic", 1, id, secret, &k, &endpoint)?.remove(0))
    };
    let tokens_of = |p: Prepared| {
        let reqs = Arc::new(vec![p; n]);
        async move {
            crate::tokens::send_many(addr, connections, reqs)
                .await?
                .into_iter()
                .map(|v| {
                    v["access_token"]
                        .as_str()
                        .map(str::to_owned)
                        .with_context(|| format!("token refused: {v}"))
                })
                .collect::<Result<Vec<_>>>()
        }
    };
    let roots = tokens_of(basic_of(&client_id, &secret)?).await?;
    let twos = tokens_of(basic_of(&agents[1].0, &agents[1].1)?).await?;
    let one = token_of(agents[0].1.clone(), agents[0].0.clone()).await?;
    let firsts: Vec<Prepared> = roots.iter().map(|r| hop(r, &one)).collect();
    let delegated = crate::tokens::send_many(addr, connections, Arc::new(firsts)).await?;
    let mut cold = Vec::with_capacity(n);
    for (d, two) in delegated.iter().zip(&twos) {
        let d = d["access_token"]
            .as_str()
            .with_context(|| format!("first hop refused: {d}"))?;
        cold.push(hop(d, two));
    }
    let two_hop_cold = drive_prepared(addr, connections, 3_600, Arc::new(cold), false).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((tokens, exchange, two_hop, two_hop_cold))
}

pub fn main(warden: &Path, connections: usize, seconds: u64, runs: usize, alg: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for r in 0..runs {
        eprintln!("run {}/{runs} …", r + 1);
        let (t, x, d, c) = rt.block_on(one_run(warden, connections, seconds, alg))?;
        for (name, p) in [
            ("client_secret_basic", &t),
            ("token exchange (federation)", &x),
            ("two-hop delegation", &d),
            ("two-hop, every token new", &c),
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
        results.push((t, x, d, c));
    }
    let m = |f: &dyn Fn(&Phases) -> f64| median(results.iter().map(f).collect());
    let summary = json!({
        "runs": runs,
        "connections": connections,
        "issuer_alg": alg,
        "token_basic_rps_median": m(&|r| r.0.rate()),
        "exchange_rps_median": m(&|r| r.1.rate()),
        "exchange_p99_ms_median": m(&|r| r.1.p99_ms),
        "exchange_over_basic_median": m(&|r| r.1.rate() / r.0.rate()),
        "two_hop_rps_median": m(&|r| r.2.rate()),
        "two_hop_p99_ms_median": m(&|r| r.2.p99_ms),
        "two_hop_over_basic_median": m(&|r| r.2.rate() / r.0.rate()),
        "two_hop_cold_rps_median": m(&|r| r.3.rate()),
        "two_hop_cold_p99_ms_median": m(&|r| r.3.p99_ms),
        "two_hop_cold_over_basic_median": m(&|r| r.3.rate() / r.0.rate()),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
