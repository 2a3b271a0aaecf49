//! Bad input gets a clear 4xx problem response: never a 500, never a panic, nothing half-written.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::harness::Server;

async fn send(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value, String) {
    let http = reqwest::Client::new();
    let mut req = http.request(method.parse().unwrap(), format!("{}{}", s.url, path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((ct, b)) = body {
        req = req.header(CONTENT_TYPE, ct).body(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = res.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ct,
    )
}

/// (what, method, path, token, body, status, code, field)
type Case<'a> = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'a str>,
    Option<(&'static str, Vec<u8>)>,
    u16,
    &'static str,
    Option<&'static str>,
);

fn json_body(v: &Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", serde_json::to_vec(v).unwrap()))
}

fn valid_identity() -> Value {
    json!({"name": "ok-name", "kind": "bot", "owner": "payments", "purpose": "A perfectly good purpose", "environment": "prod"})
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_is_a_problem_with_a_stable_code() {
    let s = Server::start();
    let t = s.admin.as_str();
    s.ok(t, &["team", "create", "payments"]);

    let mut cases: Vec<Case> = vec![
        (
            "malformed json",
            "POST",
            "/v1/identities",
            Some(t),
            Some(("application/json", b"{\"name\": ".to_vec())),
            400,
            "malformed_request",
            None,
        ),
        (
            "not an object",
            "POST",
            "/v1/identities",
            Some(t),
            Some(("application/json", b"[1,2]".to_vec())),
            400,
            "malformed_request",
            None,
        ),
        (
            "wrong content type",
            "POST",
            "/v1/identities",
            Some(t),
            Some(("text/plain", b"{}".to_vec())),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "oversized body",
            "POST",
            "/v1/identities",
            Some(t),
            Some(("application/json", vec![b' '; 200 * 1024])),
            413,
            "payload_too_large",
            None,
        ),
        (
            "no token",
            "GET",
            "/v1/identities",
            None,
            None,
            401,
            "unauthenticated",
            None,
        ),
        (
            "malformed token",
            "GET",
            "/v1/identities",
            Some("not-a-token"),
            None,
            401,
            "unauthenticated",
            None,
        ),
        (
            "forged token",
            "GET",
            "/v1/identities",
            Some("wdn_op_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
            401,
            "unauthenticated",
            None,
        ),
        (
            "unknown route",
            "GET",
            "/v1/nothing-here",
            Some(t),
            None,
            404,
            "route_not_found",
            None,
        ),
        (
            "wrong method",
            "DELETE",
            "/v1/identities",
            Some(t),
            None,
            405,
            "method_not_allowed",
            None,
        ),
        (
            "bad uuid in path",
            "GET",
            "/v1/credentials/not-a-uuid",
            Some(t),
            None,
            400,
            "invalid_field",
            None,
        ),
        (
            "bad query value",
            "GET",
            "/v1/identities?kind=spaceship",
            Some(t),
            None,
            400,
            "malformed_request",
            None,
        ),
        (
            "unknown query field",
            "GET",
            "/v1/identities?colour=red",
            Some(t),
            None,
            400,
            "malformed_request",
            None,
        ),
        (
            "bad cursor",
            "GET",
            "/v1/identities?cursor=xyz",
            Some(t),
            None,
            400,
            "invalid_field",
            Some("cursor"),
        ),
        (
            "unknown identity",
            "GET",
            "/v1/identities/nobody",
            Some(t),
            None,
            404,
            "not_found",
            None,
        ),
    ];
    let mut add =
        |what: &'static str, patch: Value, code: &'static str, field: Option<&'static str>| {
            let mut v = valid_identity();
            for (k, val) in patch.as_object().unwrap() {
                if val.is_null() {
                    v.as_object_mut().unwrap().remove(k);
                } else {
                    v[k] = val.clone();
                }
            }
            cases.push((
                what,
                "POST",
                "/v1/identities",
                Some(t),
                json_body(&v),
                400,
                code,
                field,
            ));
        };
    add(
        "unknown field",
        json!({"colour": "red"}),
        "malformed_request",
        None,
    );
    add(
        "unknown kind",
        json!({"kind": "spaceship"}),
        "malformed_request",
        None,
    );
    add(
        "missing owner",
        json!({"owner": null}),
        "invalid_field",
        Some("owner"),
    );
    add(
        "missing purpose",
        json!({"purpose": null}),
        "invalid_field",
        Some("purpose"),
    );
    add(
        "missing kind",
        json!({"kind": null}),
        "malformed_request",
        None,
    );
    add(
        "empty owner",
        json!({"owner": ""}),
        "invalid_field",
        Some("owner"),
    );
    add(
        "empty purpose",
        json!({"purpose": "  "}),
        "invalid_field",
        Some("purpose"),
    );
    add(
        "short purpose",
        json!({"purpose": "short"}),
        "invalid_field",
        Some("purpose"),
    );
    add(
        "multi-line purpose",
        json!({"purpose": "line one\nline two here"}),
        "invalid_field",
        Some("purpose"),
    );
    add(
        "invalid name",
        json!({"name": "Billing_Worker"}),
        "invalid_field",
        Some("name"),
    );
    add(
        "invalid environment",
        json!({"environment": "PROD!"}),
        "invalid_field",
        Some("environment"),
    );
    add(
        "invalid scope",
        json!({"scopes": ["ledger"]}),
        "invalid_field",
        Some("scopes"),
    );
    add(
        "invalid cidr",
        json!({"constraints": {"allowed_networks": ["10.0.0.0/99"]}}),
        "invalid_field",
        Some("constraints.allowed_networks"),
    );
    add(
        "past expiry",
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        "invalid_field",
        Some("expires_at"),
    );

    for (what, method, path, token, body, status, code, field) in cases {
        let (got, problem, ct) = send(&s, method, path, token, body).await;
        assert_eq!(got, status, "{what}: {problem}");
        assert_eq!(ct, "application/problem+json", "{what}");
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert_eq!(problem["status"], status, "{what}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
        if let Some(f) = field {
            assert_eq!(problem["field"], f, "{what}: {problem}");
        }
    }
    // The owner error says which field and why.
    let (_, p, _) = send(
        &s,
        "POST",
        "/v1/identities",
        Some(t),
        json_body(&{
            let mut v = valid_identity();
            v["owner"] = json!(" ");
            v
        }),
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("owning team"), "{p}");

    // Nothing was half-written: no identity exists, the audit chain is intact.
    let list = s.json(t, &["identity", "list"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    assert!(s.json(t, &["audit", "verify"])["ok"].as_bool().unwrap());
    // Failed authentications were recorded.
    let failures = s.json(t, &["audit", "list", "--action", "operator.authenticate"]);
    assert!(failures["items"].as_array().unwrap().len() >= 2);

    // The server still answers and reports healthy.
    let (st, _, _) = send(&s, "GET", "/healthz", None, None).await;
    assert_eq!(st, 200);
    let metrics = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warden_http_responses_5xx_total 0"),
        "{metrics}"
    );
    // The write path is visible too: commits happened, the failed authentications' events went
    // through the asynchronous audit buffer.
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(value("warden_store_commits_total ") > 0);
    assert!(value("warden_store_jobs_total ") > 0);
    assert!(value("warden_audit_authentication_events_total ") >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_health_and_readiness() {
    let s = Server::start();
    let (st, doc, _) = send(&s, "GET", "/v1/openapi.json", Some(&s.admin), None).await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/identities",
        "/v1/identities/{identity}",
        "/v1/identities/{identity}/retire",
        "/v1/identities/{identity}/credentials",
        "/v1/credentials/{id}/rotate",
        "/v1/approvals/{id}/approve",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/keys/verify",
        "/v1/whoami",
        "/v1/teams",
        "/v1/operators",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let (st, _, _) = send(&s, "GET", "/readyz", None, None).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_keeps_failing_authentication_is_throttled() {
    let s = Server::start();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/whoami", s.url);
    for i in 0..100 {
        let r = http
            .get(&url)
            .bearer_auth(format!("wrong-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "attempt {i} is within the limit");
    }
    let r = http
        .get(&url)
        .bearer_auth("wrong-again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["code"], "too_many_requests");
    // The address is refused whatever it sends, until the window ends.
    let r = http.get(&url).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    // Another address is not affected; through it (the API's audit reads include every event
    // answered before them) every failure up to the limit was audited, then one throttling event.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let count = |action: &'static str| {
        let other = other.clone();
        let (base, token) = (s.url.clone(), s.admin.clone());
        async move {
            let r = other
                .get(format!("{base}/v1/audit?action={action}&limit=1000"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let page: Value = r.json().await.unwrap();
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("operator.authenticate").await, 100);
    assert_eq!(count("auth.throttled").await, 1);
}
