//! The token service end to end: the tour, introspection, revocation, retirement, and one
//! negative test per check at the token endpoint; plus an independent Python client.

use serde_json::{Value, json};
use warden_jose::ClientKey;

use crate::harness::{Server, stderr};

const ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn jti() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn post_form(
    url: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().post(url).form(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let h = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        h,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// A team, an identity in `env` with ledger scopes and an audience, and a registered key.
fn setup(s: &Server, name: &str, env: &str) -> (String, ClientKey) {
    s.ok(&s.admin, &["team", "create", "payments"]);
    let id = s.json(
        &s.admin,
        &[
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            "service_account",
            "--owner",
            "payments",
            "--purpose",
            "Posts invoices to the ledger API",
            "--env",
            env,
            "--scope",
            "ledger:write",
            "--scope",
            "ledger:read",
            "--audience",
            "https://ledger.example",
        ],
    );
    let dir = s.data_dir();
    let key_path = dir.join(format!("{name}.jwk"));
    s.ok(
        &s.admin,
        &["token", "keygen", "--out", key_path.to_str().unwrap()],
    );
    let pub_path = dir.join(format!("{name}.pub.jwk"));
    s.ok(
        &s.admin,
        &[
            "credential",
            "add",
            name,
            "--type",
            "public_key",
            "--jwk",
            pub_path.to_str().unwrap(),
        ],
    );
    let private: Value =
        serde_json::from_str(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    (
        id["identity"]["client_id"].as_str().unwrap().to_owned(),
        ClientKey::from_private_jwk(&private).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tour_introspection_revocation_and_retirement() {
    let s = Server::start();
    let (client_id, _) = setup(&s, "billing-worker", "prod");
    let key = s.data_dir().join("billing-worker.jwk");
    let key = key.to_str().unwrap();
    // The tour: a DPoP-bound token, verified on the CLI against the published keys.
    let t = s.json(
        &s.admin,
        &[
            "token",
            "get",
            "--identity",
            "billing-worker",
            "--key",
            key,
            "--dpop",
            "--scope",
            "ledger:write",
        ],
    );
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(t["scope"], "ledger:write");
    assert_eq!(t["expires_in"], 600);
    let token = t["access_token"].as_str().unwrap().to_owned();
    let v = s.json(
        &s.admin,
        &[
            "token",
            "verify",
            &token,
            "--audience",
            "https://ledger.example",
            "--env",
            "prod",
        ],
    );
    assert_eq!(v["valid"], true);
    let staging = s.cli(
        &s.admin,
        &[
            "token",
            "verify",
            &token,
            "--audience",
            "https://ledger.example",
            "--env",
            "staging",
        ],
    );
    assert_eq!(
        staging.status.code(),
        Some(1),
        "a prod identity's token is not a staging one"
    );
    assert_eq!(v["sub"], client_id.as_str());
    assert!(v["cnf"]["jkt"].is_string());
    // Wrong audience: refused, exit 1.
    let wrong = s.cli(
        &s.admin,
        &[
            "token",
            "verify",
            &token,
            "--audience",
            "https://other.example",
        ],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    // Scope superset: invalid_scope.
    let superset = s.cli(
        &s.admin,
        &[
            "token",
            "get",
            "--identity",
            "billing-worker",
            "--key",
            key,
            "--dpop",
            "--scope",
            "ledger:delete",
        ],
    );
    assert!(!superset.status.success());
    assert!(
        stderr(&superset).contains("invalid_scope"),
        "{}",
        stderr(&superset)
    );
    // The identity is in prod: a token without DPoP is refused.
    let bearer = s.cli(
        &s.admin,
        &["token", "get", "--identity", "billing-worker", "--key", key],
    );
    assert!(
        stderr(&bearer).contains("invalid_request"),
        "{}",
        stderr(&bearer)
    );

    // Introspection needs authentication, then tells the truth.
    let introspect = format!("{}/oauth2/introspect", s.url);
    let (st, _, _) = post_form(&introspect, &[("token", &token)], &[]).await;
    assert_eq!(st, 401, "introspection is not anonymous");
    let bearer_admin = format!("Bearer {}", s.admin);
    let auth = [("Authorization", bearer_admin.as_str())];
    let (st, _, i) = post_form(&introspect, &[("token", &token)], &auth).await;
    assert_eq!(st, 200);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["client_id"], client_id.as_str());
    assert_eq!(i["username"], "billing-worker");
    assert!(i["cnf"]["jkt"].is_string());
    let (_, _, i) = post_form(&introspect, &[("token", "garbage")], &auth).await;
    assert_eq!(i, json!({"active": false}));
    // A client with a wrong secret may not introspect, and the attempt is audited.
    let (st, _, body) = post_form(
        &introspect,
        &[
            ("token", &token),
            ("client_id", &client_id),
            ("client_secret", "wdn_cs_notarealsecret"),
        ],
        &[],
    )
    .await;
    assert_eq!((st, body["error"].as_str()), (401, Some("invalid_client")));
    let failed = s.json(
        &s.admin,
        &["audit", "list", "--action", "client.authenticate"],
    );
    assert_eq!(failed["items"].as_array().unwrap().len(), 1, "{failed}");

    // Revocation: inactive at once.
    let (st, _, _) = post_form(
        &format!("{}/oauth2/revoke", s.url),
        &[("token", &token)],
        &auth,
    )
    .await;
    assert_eq!(st, 200);
    let (_, _, i) = post_form(&introspect, &[("token", &token)], &auth).await;
    assert_eq!(i["active"], false, "revoked");

    // Retirement: every token of the identity goes inactive, and no new one is issued.
    let t2 = s.json(
        &s.admin,
        &[
            "token",
            "get",
            "--identity",
            client_id.as_str(),
            "--key",
            key,
            "--dpop",
        ],
    );
    let token2 = t2["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        t2["scope"], "ledger:read ledger:write",
        "no scope asked: all granted"
    );
    let (_, _, i) = post_form(&introspect, &[("token", &token2)], &auth).await;
    assert_eq!(i["active"], true);
    s.ok(
        &s.admin,
        &[
            "identity",
            "retire",
            "billing-worker",
            "--reason",
            "decommissioned",
        ],
    );
    let (_, _, i) = post_form(&introspect, &[("token", &token2)], &auth).await;
    assert_eq!(i["active"], false, "retired identity");
    let after = s.cli(
        &s.admin,
        &[
            "token",
            "get",
            "--identity",
            client_id.as_str(),
            "--key",
            key,
            "--dpop",
        ],
    );
    assert!(
        stderr(&after).contains("invalid_client"),
        "{}",
        stderr(&after)
    );

    // Every issuance and refusal is in the audit chain, which verifies.
    let issued = s.json(&s.admin, &["audit", "list", "--action", "token.issued"]);
    assert_eq!(issued["items"].as_array().unwrap().len(), 2);
    let denied = s.json(&s.admin, &["audit", "list", "--action", "token.denied"]);
    let reasons: Vec<String> = denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not granted")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("sender constraint")),
        "{reasons:?}"
    );
    // Retiring revoked the key, so the assertion matches no usable key.
    assert!(
        reasons.iter().any(|r| r.contains("matches no key")),
        "{reasons:?}"
    );
    assert_eq!(s.json(&s.admin, &["audit", "verify"])["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secrets_work_over_basic_and_post_and_fail_closed() {
    let s = Server::start();
    let (client_id, _) = setup(&s, "batch-job", "staging");
    let issued = s.json(
        &s.admin,
        &[
            "credential",
            "issue",
            "batch-job",
            "--type",
            "client_secret",
            "--ttl",
            "1d",
        ],
    );
    let secret = issued["secret"].as_str().unwrap().to_owned();
    let token_url = format!("{}/oauth2/token", s.url);
    let basic = |id: &str, secret: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let grant = [("grant_type", "client_credentials")];
    let (st, h, body) = post_form(
        &token_url,
        &grant,
        &[("Authorization", &basic(&client_id, &secret))],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(h["cache-control"], "no-store");
    // The CLI introspects and revokes it.
    let t = body["access_token"].as_str().unwrap();
    let i = s.json(&s.admin, &["token", "introspect", t]);
    assert_eq!(
        (i["active"].as_bool(), i["username"].as_str()),
        (Some(true), Some("batch-job"))
    );
    s.ok(&s.admin, &["token", "revoke", t]);
    let after = s.cli(&s.admin, &["token", "introspect", t]);
    assert_eq!(after.status.code(), Some(1), "inactive after revocation");
    let metrics = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warden_tokens_issued_total 1\n"),
        "{metrics}"
    );
    let (st, _, body) = post_form(
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ],
        &[],
    )
    .await;
    assert_eq!(st, 200, "client_secret_post: {body}");
    // Wrong secret (valid format, other value): 401 with a Basic challenge, nothing more said.
    let other = s.json(
        &s.admin,
        &[
            "credential",
            "issue",
            "batch-job",
            "--type",
            "api_key",
            "--ttl",
            "1d",
        ],
    );
    let (st, h, body) = post_form(
        &token_url,
        &grant,
        &[(
            "Authorization",
            &basic(&client_id, other["secret"].as_str().unwrap()),
        )],
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_description"], "client authentication failed");
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    // Two methods at once, a repeated parameter, another grant type, a resource not allowed.
    let (st, _, body) = post_form(
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ],
        &[("Authorization", &basic(&client_id, &secret))],
    )
    .await;
    assert_eq!((st, body["error"].as_str()), (400, Some("invalid_request")));
    let (_, _, body) = post_form(
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
        &[("Authorization", &basic(&client_id, &secret))],
    )
    .await;
    assert_eq!(body["error"], "invalid_request");
    let (_, _, body) = post_form(
        &token_url,
        &[("grant_type", "password")],
        &[("Authorization", &basic(&client_id, &secret))],
    )
    .await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let (_, _, body) = post_form(
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("resource", "https://elsewhere.example"),
        ],
        &[("Authorization", &basic(&client_id, &secret))],
    )
    .await;
    assert_eq!(body["error"], "invalid_target");
    let (st, _, body) = post_form(
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("resource", "https://ledger.example"),
        ],
        &[("Authorization", &basic(&client_id, &secret))],
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_assertion_and_dpop_check_refuses_on_its_own() {
    let s = Server::start();
    let (client_id, key) = setup(&s, "signer", "staging");
    let (_, other_key) = {
        s.ok(
            &s.admin,
            &[
                "identity",
                "create",
                "--name",
                "other",
                "--kind",
                "workload",
                "--owner",
                "payments",
                "--purpose",
                "Another client of the ledger",
                "--env",
                "staging",
                "--scope",
                "ledger:read",
            ],
        );
        let dir = s.data_dir();
        let p = dir.join("other.jwk");
        s.ok(&s.admin, &["token", "keygen", "--out", p.to_str().unwrap()]);
        s.ok(
            &s.admin,
            &[
                "credential",
                "add",
                "other",
                "--jwk",
                dir.join("other.pub.jwk").to_str().unwrap(),
            ],
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        ((), ClientKey::from_private_jwk(&v).unwrap())
    };
    let token_url = format!("{}/oauth2/token", s.url);
    let form = |assertion: &str| {
        vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_assertion_type".to_owned(), ASSERTION.to_owned()),
            ("client_assertion".to_owned(), assertion.to_owned()),
        ]
    };
    let send = |assertion: String, dpop: Option<String>| {
        let url = token_url.clone();
        async move {
            let f = form(&assertion);
            let pairs: Vec<(&str, &str)> =
                f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let h: Vec<(&str, &str)> = dpop.iter().map(|d| ("DPoP", d.as_str())).collect();
            let (st, _, body) = post_form(&url, &pairs, &h).await;
            (st, body["error"].as_str().unwrap_or("").to_owned())
        }
    };
    let good = || {
        key.client_assertion(&client_id, &token_url, now(), 60, &jti())
            .unwrap()
    };
    let proof =
        |htm: &str, htu: &str, iat: i64| key.dpop_proof(htm, htu, iat, &jti(), None).unwrap();

    assert_eq!(send(good(), None).await.0, 200, "the baseline works");
    assert_eq!(
        send(good(), Some(proof("POST", &token_url, now()))).await.0,
        200
    );
    // Replayed assertion.
    let a = good();
    assert_eq!(send(a.clone(), None).await.0, 200);
    assert_eq!(
        send(a, None).await,
        (401, "invalid_client".into()),
        "replayed jti"
    );
    // Signed by another client's key (that key is registered, to `other`).
    let forged = other_key
        .client_assertion(&client_id, &token_url, now(), 60, &jti())
        .unwrap();
    assert_eq!(
        send(forged, None).await,
        (401, "invalid_client".into()),
        "other client's key"
    );
    // Expired, too long, wrong audience.
    let expired = key
        .client_assertion(&client_id, &token_url, now() - 120, 60, &jti())
        .unwrap();
    assert_eq!(send(expired, None).await.1, "invalid_client", "expired");
    let long = key
        .client_assertion(&client_id, &token_url, now(), 3600, &jti())
        .unwrap();
    assert_eq!(
        send(long, None).await.1,
        "invalid_client",
        "lifetime too long"
    );
    let aud = key
        .client_assertion(
            &client_id,
            "https://elsewhere.example/token",
            now(),
            60,
            &jti(),
        )
        .unwrap();
    assert_eq!(send(aud, None).await.1, "invalid_client", "wrong aud");
    // alg none, and HS256 keyed with the public JWK (algorithm confusion).
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({"iss": client_id, "sub": client_id, "aud": token_url, "exp": now() + 60, "jti": jti()});
    let none = format!("{}.{}.AA", b64(&json!({"alg": "none"})), b64(&claims));
    assert_eq!(send(none, None).await.1, "invalid_client", "alg none");
    let input = format!("{}.{}", b64(&json!({"alg": "HS256"})), b64(&claims));
    let mac = ring_hmac(key.public_jwk().to_string().as_bytes(), input.as_bytes());
    let hs = format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    );
    assert_eq!(send(hs, None).await.1, "invalid_client", "HS256 confusion");

    // DPoP: wrong method, wrong URL, stale, future, replayed, private key in the jwk.
    let bad = |p: String| send(good(), Some(p));
    assert_eq!(
        bad(proof("GET", &token_url, now())).await.1,
        "invalid_dpop_proof",
        "htm"
    );
    assert_eq!(
        bad(proof("POST", "https://evil.example/oauth2/token", now()))
            .await
            .1,
        "invalid_dpop_proof",
        "htu"
    );
    assert_eq!(
        bad(proof("POST", &token_url, now() - 300)).await.1,
        "invalid_dpop_proof",
        "stale iat"
    );
    assert_eq!(
        bad(proof("POST", &token_url, now() + 300)).await.1,
        "invalid_dpop_proof",
        "future iat"
    );
    let p = proof("POST", &token_url, now());
    assert_eq!(bad(p.clone()).await.0, 200);
    assert_eq!(bad(p).await.1, "invalid_dpop_proof", "replayed proof");
    let private: Value =
        serde_json::from_str(&std::fs::read_to_string(s.data_dir().join("signer.jwk")).unwrap())
            .unwrap();
    let p = proof("POST", &token_url, now());
    let parts: Vec<&str> = p.split('.').collect();
    let mut header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    header["jwk"] = private;
    let leaked = format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    assert_eq!(
        bad(leaked).await.1,
        "invalid_dpop_proof",
        "private key in jwk"
    );

    // The audit log names each reason, and the chain verifies.
    let denied = s.json(
        &s.admin,
        &[
            "audit",
            "list",
            "--action",
            "token.denied",
            "--limit",
            "100",
        ],
    );
    let reasons: String = denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap_or("").to_owned() + "\n")
        .collect();
    for needle in [
        "replayed",
        "matches no key",
        "expired",
        "lifetime too long",
        "wrong audience",
        "\"none\"",
        "\"HS256\"",
        "htm",
        "htu",
        "iat",
        "private",
    ] {
        assert!(
            reasons.contains(needle),
            "no denial mentions {needle:?}:\n{reasons}"
        );
    }
    assert_eq!(s.json(&s.admin, &["audit", "verify"])["ok"], true);
}

fn ring_hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// The Python interpreter with PyJWT, cryptography and requests (`.ci/run` makes a venv and sets
/// WARDEN_TEST_PYTHON).
fn python() -> String {
    let py = std::env::var("WARDEN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import jwt, cryptography, requests"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} lacks PyJWT/cryptography/requests: run ./.ci/run, which installs them into a venv"
    );
    py
}

#[tokio::test(flavor = "multi_thread")]
async fn an_independent_python_client_gets_and_verifies_tokens() {
    let py = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/interop.py");
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "payments"]);
    let id = s.json(
        &s.admin,
        &[
            "identity",
            "create",
            "--name",
            "py-client",
            "--kind",
            "workload",
            "--owner",
            "payments",
            "--purpose",
            "Python interoperability client",
            "--env",
            "staging",
            "--scope",
            "ledger:write",
            "--audience",
            "https://ledger.example",
        ],
    );
    let dir = s.data_dir();
    let (pem, jwk) = (dir.join("py.pem"), dir.join("py.pub.jwk"));
    let out = std::process::Command::new(&py)
        .args([
            script,
            "keygen",
            pem.to_str().unwrap(),
            jwk.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    s.ok(
        &s.admin,
        &[
            "credential",
            "add",
            "py-client",
            "--jwk",
            jwk.to_str().unwrap(),
        ],
    );
    let out = std::process::Command::new(&py)
        .args([
            script,
            "run",
            &s.url,
            id["identity"]["client_id"].as_str().unwrap(),
            pem.to_str().unwrap(),
            "https://ledger.example",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dpop"]["token_type"], "DPoP");
    assert_eq!(report["private_key_jwt"]["token_type"], "Bearer");
    assert_eq!(report["dpop"]["alg"], "EdDSA");
    assert_eq!(report["replay"], "invalid_client");
}

/// A request to Warden's own API with an access token (and a DPoP proof for `key`, if given).
async fn api(
    s: &Server,
    method: &str,
    path: &str,
    token: &str,
    key: Option<&ClientKey>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", s.url);
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(m, &url);
    match key {
        Some(k) => {
            let proof = k
                .dpop_proof(method, &url, now(), &jti(), Some(token))
                .unwrap();
            req = req
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", proof);
        }
        None => req = req.header("Authorization", format!("Bearer {token}")),
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let st = res.status().as_u16();
    (st, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn machines_manage_their_own_credentials_with_warden_scoped_tokens() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "payments"]);
    let mk = |name: &str, scopes: &[&str]| {
        let mut args = vec![
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            "workload",
            "--owner",
            "payments",
            "--purpose",
            "Rotates its own credentials",
            "--env",
            "prod",
        ];
        for sc in scopes {
            args.extend(["--scope", sc]);
        }
        let id = s.json(&s.admin, &args);
        let dir = s.data_dir();
        let p = dir.join(format!("{name}.jwk"));
        s.ok(&s.admin, &["token", "keygen", "--out", p.to_str().unwrap()]);
        s.ok(
            &s.admin,
            &[
                "credential",
                "add",
                name,
                "--jwk",
                dir.join(format!("{name}.pub.jwk")).to_str().unwrap(),
            ],
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        (
            id["identity"]["id"].as_str().unwrap().to_owned(),
            p,
            ClientKey::from_private_jwk(&v).unwrap(),
        )
    };
    let (me, my_key_path, my_key) = mk("self-manager", &["warden:credentials", "ledger:read"]);
    let (other, _, _) = mk("neighbour", &["ledger:read"]);
    let get = |scope: &str| {
        s.json(
            &s.admin,
            &[
                "token",
                "get",
                "--identity",
                &me,
                "--key",
                my_key_path.to_str().unwrap(),
                "--dpop",
                "--scope",
                scope,
            ],
        )["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let token = get("warden:credentials");

    // whoami with the token and its proof.
    let (st, who) = api(&s, "GET", "/v1/whoami", &token, Some(&my_key), None).await;
    assert_eq!(st, 200, "{who}");
    assert_eq!(who["id"], me.as_str());
    assert_eq!(who["token_scopes"], json!(["warden:credentials"]));
    // Its own credentials: list them, issue itself a new key.
    let (st, list) = api(
        &s,
        "GET",
        &format!("/v1/identities/{me}/credentials"),
        &token,
        Some(&my_key),
        None,
    )
    .await;
    assert_eq!(st, 200, "{list}");
    let (st, issued) = api(
        &s,
        "POST",
        &format!("/v1/identities/{me}/credentials"),
        &token,
        Some(&my_key),
        Some(json!({"kind": "api_key", "ttl_seconds": 3600})),
    )
    .await;
    assert_eq!(st, 201, "{issued}");
    assert!(issued["secret"].as_str().unwrap().starts_with("wdn_ak_"));

    // Not its neighbour's, and not without the proof, and not as a bearer token.
    let (st, _) = api(
        &s,
        "POST",
        &format!("/v1/identities/{other}/credentials"),
        &token,
        Some(&my_key),
        Some(json!({"kind": "api_key"})),
    )
    .await;
    assert!(
        st == 404 || st == 403,
        "another identity's credentials: {st}"
    );
    let (st, _) = api(&s, "GET", "/v1/whoami", &token, None, None).await;
    assert_eq!(st, 401, "a DPoP-bound token as a bearer token");
    let url = format!("{}/v1/whoami", s.url);
    let res = reqwest::Client::new()
        .get(&url)
        .header("Authorization", format!("DPoP {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "no proof");
    // The stolen token with the thief's own key and a proof of their own.
    let (thief, _) = ClientKey::generate_ed25519().unwrap();
    let (st, _) = api(&s, "GET", "/v1/whoami", &token, Some(&thief), None).await;
    assert_eq!(st, 401, "a proof signed by another key");
    // A proof for another URL, or replayed.
    let proof = my_key
        .dpop_proof(
            "GET",
            &format!("{}/v1/teams", s.url),
            now(),
            &jti(),
            Some(&token),
        )
        .unwrap();
    let res = reqwest::Client::new()
        .get(&url)
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", &proof)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "proof for another URL");
    let proof = my_key
        .dpop_proof("GET", &url, now(), &jti(), Some(&token))
        .unwrap();
    for expected in [200, 401] {
        let res = reqwest::Client::new()
            .get(&url)
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", &proof)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), expected, "first use, then replay");
    }
    // A token without the warden scope reads nothing and issues nothing.
    let narrow = get("ledger:read");
    let (st, _) = api(
        &s,
        "GET",
        &format!("/v1/identities/{me}/credentials"),
        &narrow,
        Some(&my_key),
        None,
    )
    .await;
    assert_eq!(st, 404, "no warden:* scope, nothing visible");
    // Suspending the identity kills the token for the API at once.
    s.ok(
        &s.admin,
        &["identity", "suspend", "self-manager", "--reason", "test"],
    );
    let (st, _) = api(&s, "GET", "/v1/whoami", &token, Some(&my_key), None).await;
    assert_eq!(st, 401, "suspended");
    let denied = s.json(
        &s.admin,
        &["audit", "list", "--action", "token.authenticate"],
    );
    assert!(denied["items"].as_array().unwrap().len() >= 5, "{denied}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dpop_nonces_when_the_server_requires_them_and_es256_signing() {
    let s = Server::start_with(&[
        ("WARDEN_DPOP_NONCE", "true"),
        ("WARDEN_TOKEN_SIGNING_ALG", "ES256"),
    ]);
    let (client_id, key) = setup(&s, "nonce-client", "prod");
    // The CLI follows the use_dpop_nonce dance by itself.
    let p = s.data_dir().join("nonce-client.jwk");
    let t = s.json(
        &s.admin,
        &[
            "token",
            "get",
            "--identity",
            &client_id,
            "--key",
            p.to_str().unwrap(),
            "--dpop",
        ],
    );
    assert_eq!(t["token_type"], "DPoP");
    // Signed with ES256 as configured, under a P-256 key in the JWKS, and it verifies.
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(
        warden_jose::decode(token).unwrap().alg,
        warden_jose::Alg::ES256
    );
    let jwks: Value = reqwest::get(format!("{}/oauth2/jwks", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    let v = s.json(
        &s.admin,
        &[
            "token",
            "verify",
            token,
            "--audience",
            "https://ledger.example",
        ],
    );
    assert_eq!(v["valid"], true);

    let token_url = format!("{}/oauth2/token", s.url);
    let send = |proof: String| {
        let assertion = key
            .client_assertion(&client_id, &token_url, now(), 60, &jti())
            .unwrap();
        let url = token_url.clone();
        async move {
            let res = reqwest::Client::new()
                .post(&url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION),
                    ("client_assertion", assertion.as_str()),
                ])
                .header("DPoP", proof)
                .send()
                .await
                .unwrap();
            let nonce = res
                .headers()
                .get("dpop-nonce")
                .map(|v| v.to_str().unwrap().to_owned());
            let st = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (st, body["error"].as_str().unwrap_or("").to_owned(), nonce)
        }
    };
    let proof = |nonce: Option<&str>| {
        key.dpop_proof_with_nonce("POST", &token_url, now(), &jti(), None, nonce)
            .unwrap()
    };
    let (st, err, nonce) = send(proof(None)).await;
    assert_eq!((st, err.as_str()), (400, "use_dpop_nonce"));
    let nonce = nonce.expect("a DPoP-Nonce header");
    let (_, err, _) = send(proof(Some("made-up"))).await;
    assert_eq!(err, "use_dpop_nonce", "a nonce the server never gave");
    let (st, err, next) = send(proof(Some(&nonce))).await;
    assert_eq!((st, err.as_str()), (200, ""));
    assert!(
        next.is_some(),
        "successful responses carry the nonce to use next"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_authenticates_clients_and_binds_tokens_to_their_certificates() {
    let py = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/mtls.py");
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path().to_str().unwrap().to_owned();
    let out = std::process::Command::new(&py)
        .args([script, "certs", &d])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (cert, key, ca) = (
        format!("{d}/server.pem"),
        format!("{d}/server.key"),
        format!("{d}/ca.pem"),
    );
    let mut s = Server::start_with(&[
        ("WARDEN_TLS_CERT", cert.as_str()),
        ("WARDEN_TLS_KEY", key.as_str()),
        ("WARDEN_TLS_CLIENT_CA", ca.as_str()),
    ]);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    s.client_env.push(("WARDEN_CA_CERT".into(), ca.clone()));
    // The CLI talks HTTPS, trusting the CA given to it.
    s.ok(&s.admin, &["team", "create", "payments"]);
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            "workload",
            "--owner",
            "payments",
            "--purpose",
            "Mutual TLS client for the ledger",
            "--env",
            "prod",
            "--scope",
            "ledger:write",
        ];
        args.extend_from_slice(extra);
        s.json(&s.admin, &args)["identity"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let self_signed = create("self-signed", &[]);
    s.ok(
        &s.admin,
        &[
            "credential",
            "add",
            "self-signed",
            "--jwk",
            &format!("{d}/b.pub.jwk"),
        ],
    );
    let pki = create(
        "pki",
        &["--tls-client-auth-san", "spiffe://example.org/billing"],
    );
    let out = std::process::Command::new(&py)
        .args([script, "run", &d, &s.url, &self_signed, &pki])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mTLS client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["other SAN"], "invalid_client");
    assert_eq!(report["unregistered key"], "invalid_client");
    assert_eq!(report["no certificate"], "invalid_client");
    assert_eq!(report["bound"], "ok");
    let issued = s.json(&s.admin, &["audit", "list", "--action", "token.issued"]);
    let methods: Vec<String> = issued["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["method"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        methods.contains(&"self_signed_tls_client_auth".to_owned()),
        "{methods:?}"
    );
    assert!(
        methods.contains(&"tls_client_auth".to_owned()),
        "{methods:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_is_scoped_single_use_and_follows_credentials() {
    let s = Server::start();
    let (client_id, key) = setup(&s, "signer", "staging");
    let token_url = format!("{}/oauth2/token", s.url);
    let introspect = format!("{}/oauth2/introspect", s.url);
    let assertion = || {
        key.client_assertion(&client_id, &token_url, now(), 60, &jti())
            .unwrap()
    };
    let a = assertion();
    let (st, _, t) = post_form(
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION),
            ("client_assertion", &a),
        ],
        &[],
    )
    .await;
    assert_eq!(st, 200, "{t}");
    let token = t["access_token"].as_str().unwrap().to_owned();
    // Two other machines: a resource server allowed to introspect, and a nosy one.
    let secret_of = |name: &str, scope: &str| {
        s.ok(
            &s.admin,
            &[
                "identity",
                "create",
                "--name",
                name,
                "--kind",
                "workload",
                "--owner",
                "payments",
                "--purpose",
                "Another machine of the payments team",
                "--env",
                "staging",
                "--scope",
                scope,
            ],
        );
        let v = s.json(
            &s.admin,
            &[
                "credential",
                "issue",
                name,
                "--type",
                "client_secret",
                "--ttl",
                "1d",
            ],
        );
        (
            v["credential"]["identity_id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    };
    let (rs_id, rs_secret) = secret_of("ledger-api", "warden:introspect");
    let (nosy_id, nosy_secret) = secret_of("nosy", "ledger:read");
    let ask = |id: &str, secret: &str| {
        let (id, secret, token, url) = (
            id.to_owned(),
            secret.to_owned(),
            token.clone(),
            introspect.clone(),
        );
        async move {
            post_form(
                &url,
                &[
                    ("token", &token),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ],
                &[],
            )
            .await
        }
    };
    let (st, _, i) = ask(&nosy_id, &nosy_secret).await;
    assert_eq!(
        (st, &i),
        (200, &json!({"active": false})),
        "not the nosy machine's business"
    );
    let (_, _, i) = ask(&rs_id, &rs_secret).await;
    assert_eq!(
        i["active"], true,
        "a resource server granted warden:introspect"
    );
    // A resource server bound to another network may not introspect from here.
    s.ok(
        &s.admin,
        &[
            "identity",
            "create",
            "--name",
            "far-api",
            "--kind",
            "workload",
            "--owner",
            "payments",
            "--purpose",
            "Resource server in another network",
            "--env",
            "staging",
            "--scope",
            "warden:introspect",
            "--allowed-network",
            "10.0.0.0/8",
        ],
    );
    let far = s.json(
        &s.admin,
        &[
            "credential",
            "issue",
            "far-api",
            "--type",
            "client_secret",
            "--ttl",
            "1d",
        ],
    );
    let (st, _, e) = ask(
        far["credential"]["identity_id"].as_str().unwrap(),
        far["secret"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{e}"
    );
    // A client assertion used to authenticate at the introspection endpoint is single-use too.
    let b = assertion();
    let form = [
        ("token", token.as_str()),
        ("client_assertion_type", ASSERTION),
        ("client_assertion", b.as_str()),
    ];
    let (st, _, i) = post_form(&introspect, &form, &[]).await;
    assert_eq!(
        (st, i["active"].as_bool()),
        (200, Some(true)),
        "its own token"
    );
    let (st, _, e) = post_form(&introspect, &form, &[]).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed assertion"
    );
    // Revoking the key the token was obtained with ends the token.
    let creds = s.json(&s.admin, &["credential", "list", "signer"]);
    let key_id = creds["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "public_key")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.ok(
        &s.admin,
        &["credential", "revoke", &key_id, "--reason", "leaked"],
    );
    let (_, _, i) = ask(&rs_id, &rs_secret).await;
    assert_eq!(i["active"], false, "obtained with a revoked credential");
}
