//! Federation end to end: local OIDC issuers (their own keys, their JWKS served on loopback) mint
//! tokens with the claim sets of GitHub Actions, GitLab CI and Kubernetes projected
//! service-account tokens; the CLI exchanges them for Warden tokens through trust rules, with and
//! without DPoP; every refusal the issue names is checked.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Value, json};
use warden_jose::{Alg, SigningKey};

use crate::harness::{Server, stderr};

/// A local OIDC issuer: signs tokens; serves `/jwks` with the keys it publishes.
struct Issuer {
    url: String,
    key: SigningKey,
    published: Arc<Mutex<Value>>,
}

fn issuer() -> Issuer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let key = SigningKey::generate(Alg::ES256, "issuer-key-1").unwrap();
    let published = Arc::new(Mutex::new(json!({ "keys": [key.public_jwk()] })));
    let p = published.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let body = p.lock().unwrap().to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Issuer {
        url,
        key,
        published,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

const AUD: &str = "https://warden.test";

/// The claim set GitHub Actions puts in a job's OIDC token.
fn github_claims(iss: &str, git_ref: &str) -> Value {
    let t = now();
    json!({
        "iss": iss, "aud": AUD, "iat": t, "nbf": t, "exp": t + 300,
        "jti": uuid::Uuid::now_v7().to_string(),
        "sub": "repo:org/app:environment:prod",
        "repository": "org/app", "repository_owner": "org", "ref": git_ref, "ref_type": "branch",
        "environment": "prod", "event_name": "push", "actor": "octocat",
        "workflow": "deploy", "job_workflow_ref": format!("org/app/.github/workflows/deploy.yml@{git_ref}"),
        "run_id": "123456", "run_attempt": "1", "runner_environment": "github-hosted",
    })
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn exchange(s: &Server, subject: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["token", "exchange", "--json", "--subject-token", subject];
    args.extend_from_slice(extra);
    s.cli("", &args)
}

#[test]
fn ci_and_kubernetes_tokens_become_short_warden_tokens_through_approved_trust_rules() {
    let s = Server::start();
    let admin2 = s.operator("second-admin", "admin", &[]);
    s.ok(&s.admin, &["team", "create", "platform"]);
    let member = s.operator("pat", "member", &["platform"]);
    // A prod identity (sender-constrained by default) and a staging one.
    let prod = s.identity(&s.admin, "deploy-app-prod", "platform", &["deploy:write"]);
    let prod_id = prod["identity"]["id"].as_str().unwrap().to_owned();
    s.ok(
        &s.admin,
        &[
            "identity",
            "create",
            "--name",
            "build-cache",
            "--kind",
            "ci_pipeline",
            "--owner",
            "platform",
            "--purpose",
            "Writes the CI build cache",
            "--env",
            "staging",
            "--scope",
            "cache:write",
        ],
    );

    let gh = issuer();
    let out = s.cli(
        &member,
        &[
            "issuer",
            "add",
            "github",
            "--issuer",
            &gh.url,
            "--jwks-url",
            &format!("{}/jwks", gh.url),
            "--audience",
            AUD,
        ],
    );
    assert!(!out.status.success(), "only admins trust issuers");
    s.ok(
        &s.admin,
        &[
            "issuer",
            "add",
            "github",
            "--issuer",
            &gh.url,
            "--jwks-url",
            &format!("{}/jwks", gh.url),
            "--audience",
            AUD,
            "--single-use",
        ],
    );

    // The rule belongs to the NHI; it waits for an admin other than its author.
    let rule = s.json(
        &member,
        &[
            "trust",
            "add",
            "prod/deploy-app-prod",
            "--issuer",
            "github",
            "--condition",
            r#"repository == "org/app" && ref == "refs/heads/main" && environment == "prod""#,
        ],
    );
    assert_eq!(rule["status"], "pending_approval");
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let main = gh
        .key
        .sign("JWT", &github_claims(&gh.url, "refs/heads/main"))
        .unwrap();
    let out = exchange(&s, &main, &[]);
    assert!(
        stderr(&out).contains("invalid_grant"),
        "a pending rule grants nothing: {}",
        stderr(&out)
    );
    let out = s.cli(&member, &["trust", "approve", &rule_id, "--reason", "mine"]);
    assert!(!out.status.success(), "a member cannot approve");
    s.ok(
        &admin2,
        &[
            "trust",
            "approve",
            &rule_id,
            "--reason",
            "deploys from main only",
        ],
    );

    // A prod identity must bind its tokens: bearer refused, DPoP accepted.
    let main = gh
        .key
        .sign("JWT", &github_claims(&gh.url, "refs/heads/main"))
        .unwrap();
    let out = exchange(&s, &main, &[]);
    assert!(stderr(&out).contains("invalid_request"), "{}", stderr(&out));
    let keyfile = s.dir.path().join("ci.jwk");
    s.ok("", &["token", "keygen", "--out", keyfile.to_str().unwrap()]);
    let main = gh
        .key
        .sign("JWT", &github_claims(&gh.url, "refs/heads/main"))
        .unwrap();
    let out = exchange(&s, &main, &["--dpop-key", keyfile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(
        t["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert!(t["expires_in"].as_u64().unwrap() <= 300, "{t}");
    let claims = payload(t["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], prod_id.as_str());
    assert_eq!(claims["scope"], "deploy:write");
    assert_eq!(claims["fed"]["iss"], gh.url.as_str());
    assert_eq!(claims["fed"]["sub"], "repo:org/app:environment:prod");
    assert!(claims["cnf"]["jkt"].is_string());
    // Single use: the same subject token again is a replay.
    let out = exchange(&s, &main, &["--dpop-key", keyfile.to_str().unwrap()]);
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));

    // Refusals: a feature branch, another audience, expired, a key the issuer never published,
    // an issuer nobody trusts, and a token too old.
    let dpop = ["--dpop-key", keyfile.to_str().unwrap()];
    let refused = |claims: Value, key: &SigningKey, why: &str| {
        let tok = key.sign("JWT", &claims).unwrap();
        let out = exchange(&s, &tok, &dpop);
        assert!(!out.status.success(), "{why}: accepted");
        assert!(
            stderr(&out).contains("invalid_grant"),
            "{why}: {}",
            stderr(&out)
        );
    };
    refused(
        github_claims(&gh.url, "refs/heads/feature"),
        &gh.key,
        "claims fail the rule",
    );
    let mut c = github_claims(&gh.url, "refs/heads/main");
    c["aud"] = json!("https://someone-else.test");
    refused(c, &gh.key, "wrong audience");
    let mut c = github_claims(&gh.url, "refs/heads/main");
    c["exp"] = json!(now() - 120);
    c["iat"] = json!(now() - 400);
    refused(c, &gh.key, "expired");
    let stranger = SigningKey::generate(Alg::ES256, "not-published").unwrap();
    refused(
        github_claims(&gh.url, "refs/heads/main"),
        &stranger,
        "kid not in the JWKS",
    );
    let rogue = issuer();
    refused(
        github_claims(&rogue.url, "refs/heads/main"),
        &rogue.key,
        "unknown issuer",
    );
    let mut c = github_claims(&gh.url, "refs/heads/main");
    c["iat"] = json!(now() - 3600);
    refused(c, &gh.key, "older than the issuer's max token age");
    // After all those refusals, a good token still works (nothing was spent by them).
    let fresh = gh
        .key
        .sign("JWT", &github_claims(&gh.url, "refs/heads/main"))
        .unwrap();
    assert!(exchange(&s, &fresh, &dpop).status.success());

    // The jwt-bearer grant (RFC 7523 §2.1) works the same way.
    let tok = gh
        .key
        .sign("JWT", &github_claims(&gh.url, "refs/heads/main"))
        .unwrap();
    let out = exchange(
        &s,
        &tok,
        &[
            "--grant",
            "jwt-bearer",
            "--dpop-key",
            keyfile.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // GitLab CI: another issuer, a glob on the project path, bearer tokens for staging.
    let gl = issuer();
    s.ok(
        &s.admin,
        &[
            "issuer",
            "add",
            "gitlab",
            "--issuer",
            &gl.url,
            "--jwks-url",
            &format!("{}/jwks", gl.url),
            "--audience",
            AUD,
        ],
    );
    let r = s.json(
        &s.admin,
        &[
            "trust",
            "add",
            "staging/build-cache",
            "--issuer",
            "gitlab",
            "--condition",
            r#"project_path =~ "acme/*" && ref_type == "branch" && ref in ["main", "develop"]"#,
            "--max-ttl",
            "120",
        ],
    );
    // Four eyes: its author, even an admin, cannot approve it.
    let rid = r["id"].as_str().unwrap();
    let own = s.cli(&s.admin, &["trust", "approve", rid, "--reason", "mine"]);
    assert!(stderr(&own).contains("self_approval"), "{}", stderr(&own));
    s.ok(&admin2, &["trust", "approve", rid, "--reason", "ok"]);
    let t = now();
    let gitlab = json!({"iss": gl.url, "aud": AUD, "iat": t, "nbf": t, "exp": t + 300,
        "sub": "project_path:acme/web:ref_type:branch:ref:develop", "namespace_path": "acme",
        "project_path": "acme/web", "ref": "develop", "ref_type": "branch", "pipeline_source": "push",
        "user_login": "dev", "ci_config_ref_uri": "gitlab.com/acme/web//.gitlab-ci.yml@refs/heads/develop"});
    let out = exchange(&s, &gl.key.sign("JWT", &gitlab).unwrap(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert!(
        t["expires_in"].as_u64().unwrap() <= 120,
        "the rule caps the lifetime"
    );

    // Kubernetes, air-gapped: static keys, nested claims.
    let k8s = issuer();
    let jwks = s.dir.path().join("k8s-jwks.json");
    std::fs::write(&jwks, k8s.published.lock().unwrap().to_string()).unwrap();
    s.ok(
        &s.admin,
        &[
            "issuer",
            "add",
            "k8s-prod",
            "--issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--jwks-file",
            jwks.to_str().unwrap(),
            "--audience",
            AUD,
        ],
    );
    let r = s.json(
        &s.admin,
        &[
            "trust",
            "add",
            "staging/build-cache",
            "--issuer",
            "k8s-prod",
            "--condition",
            r#"kubernetes.io/namespace == "ci" && kubernetes.io/serviceaccount/name == "builder""#,
        ],
    );
    s.ok(
        &admin2,
        &[
            "trust",
            "approve",
            r["id"].as_str().unwrap(),
            "--reason",
            "ok",
        ],
    );
    let t = now();
    let sa = json!({"iss": "https://kubernetes.default.svc.cluster.local", "aud": [AUD], "iat": t,
        "nbf": t, "exp": t + 600, "sub": "system:serviceaccount:ci:builder",
        "kubernetes.io": {"namespace": "ci", "pod": {"name": "builder-7d9", "uid": "u1"},
                          "serviceaccount": {"name": "builder", "uid": "u2"}}});
    let out = exchange(&s, &k8s.key.sign("JWT", &sa).unwrap(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut other_ns = sa.clone();
    other_ns["kubernetes.io"]["namespace"] = json!("default");
    let out = exchange(&s, &k8s.key.sign("JWT", &other_ns).unwrap(), &[]);
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));

    // A revoked rule grants nothing more; the issuer can then be removed.
    s.ok(&member, &["trust", "revoke", &rule_id]);
    let tok = gh
        .key
        .sign("JWT", &github_claims(&gh.url, "refs/heads/main"))
        .unwrap();
    let out = exchange(&s, &tok, &dpop);
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));
    s.ok(&s.admin, &["issuer", "remove", "github"]);

    // Every exchange and refusal is audited with the reason; the chain verifies.
    let issued = s.json(&s.admin, &["audit", "list", "--action", "token.issued"]);
    let fed: Vec<&Value> = issued["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["method"] == "federation")
        .collect();
    assert!(fed.len() >= 5, "{}", fed.len());
    assert_eq!(fed[0]["details"]["federation"]["issuer"], "github");
    let denied = s.json(
        &s.admin,
        &[
            "audit",
            "list",
            "--action",
            "token.denied",
            "--limit",
            "500",
        ],
    );
    let reasons: Vec<String> = denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    for needle in [
        "no active trust rule",
        "another audience",
        "expired",
        "not in the issuer's JWKS",
        "not trusted",
        "replayed",
        "too old",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no refusal for {needle:?}: {reasons:?}"
        );
    }
    assert!(
        s.json(&s.admin, &["audit", "verify"])["ok"]
            .as_bool()
            .unwrap()
    );
}

fn set_of(scope: &Value) -> std::collections::BTreeSet<String> {
    scope
        .as_str()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An agent's own token (client secret, client_credentials).
fn agent_token(s: &Server, name: &str) -> String {
    let id = s.json(&s.admin, &["identity", "show", name])["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = s.json(
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
    )["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    s.ok(
        "",
        &["token", "get", "--identity", &id, "--secret", &secret],
    )
    .trim()
    .to_owned()
}

fn introspect(s: &Server, token: &str) -> Value {
    // Exits 1 for an inactive token; the JSON answer is printed either way.
    let out = s.cli(&s.admin, &["token", "introspect", token, "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("introspection failed: {}", stderr(&out)))
}

#[test]
fn agents_act_for_a_person_through_narrow_delegations_that_end_when_revoked() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "support"]);
    let agent = |name: &str, scopes: &[&str]| {
        let mut args = vec![
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            "ai_agent",
            "--owner",
            "support",
            "--purpose",
            "Answers helpdesk tickets",
            "--env",
            "staging",
        ];
        for sc in scopes {
            args.extend(["--scope", sc]);
        }
        s.json(&s.admin, &args)["identity"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let bot = agent(
        "support-bot",
        &["tickets:read", "tickets:comment", "tickets:close"],
    );
    let triage = agent("triage-bot", &["tickets:read", "tickets:comment"]);
    let third = agent("third-bot", &["tickets:read"]);
    // The company's IdP, where alice signs in.
    let idp = issuer();
    let jwks = s.dir.path().join("idp.json");
    std::fs::write(&jwks, idp.published.lock().unwrap().to_string()).unwrap();
    s.ok(
        &s.admin,
        &[
            "issuer",
            "add",
            "corp",
            "--issuer",
            &idp.url,
            "--jwks-file",
            jwks.to_str().unwrap(),
            "--audience",
            AUD,
        ],
    );
    let alice = || {
        let t = now();
        idp.key
            .sign(
                "JWT",
                &json!({"iss": idp.url, "aud": AUD, "sub": "alice@example.com", "iat": t, "exp": t + 900}),
            )
            .unwrap()
    };
    const MCP: &str = "https://helpdesk-mcp.test";
    // On behalf of alice: read and comment (and delete, which the agent does not hold), for the
    // MCP server, for an hour; sub-agents allowed one level down.
    let d1 = s.json(
        &s.admin,
        &[
            "delegation",
            "grant",
            "support-bot",
            "--issuer",
            "corp",
            "--subject",
            "alice@example.com",
            "--scope",
            "tickets:read",
            "--scope",
            "tickets:comment",
            "--scope",
            "tickets:delete",
            "--audience",
            MCP,
            "--ttl",
            "1h",
            "--max-depth",
            "2",
        ],
    );
    let d1_id = d1["id"].as_str().unwrap().to_owned();
    let bot_token = agent_token(&s, "support-bot");
    let out = s.cli(
        "",
        &[
            "token",
            "exchange",
            "--json",
            "--subject-token",
            &alice(),
            "--actor-token",
            &bot_token,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let t1: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t1_token = t1["access_token"].as_str().unwrap().to_owned();
    let c = payload(&t1_token);
    assert_eq!(c["sub"], "alice@example.com");
    assert_eq!(c["sub_iss"], "corp");
    assert_eq!(c["act"]["sub"], bot.as_str());
    assert_eq!(c["client_id"], bot.as_str());
    assert_eq!(c["aud"], MCP);
    assert_eq!(c["del"], json!([d1_id]));
    // scope = delegation ∩ agent: delete is lent but not held; close is held but not lent.
    assert_eq!(
        set_of(&c["scope"]),
        ["tickets:comment", "tickets:read"]
            .map(str::to_owned)
            .into()
    );
    // Asking for more than the intersection is invalid_scope.
    let out = s.cli(
        "",
        &[
            "token",
            "exchange",
            "--subject-token",
            &alice(),
            "--actor-token",
            &bot_token,
            "--scope",
            "tickets:close",
        ],
    );
    assert!(stderr(&out).contains("invalid_scope"), "{}", stderr(&out));
    // Another audience is refused.
    let out = s.cli(
        "",
        &[
            "token",
            "exchange",
            "--subject-token",
            &alice(),
            "--actor-token",
            &bot_token,
            "--resource",
            "https://other.test",
        ],
    );
    assert!(stderr(&out).contains("invalid_target"), "{}", stderr(&out));
    // No delegation from bob.
    let t = now();
    let bob = idp
        .key
        .sign("JWT", &json!({"iss": idp.url, "aud": AUD, "sub": "bob@example.com", "iat": t, "exp": t + 900}))
        .unwrap();
    let out = s.cli(
        "",
        &[
            "token",
            "exchange",
            "--subject-token",
            &bob,
            "--actor-token",
            &bot_token,
        ],
    );
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));
    let i = introspect(&s, &t1_token);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["act"]["sub"], bot.as_str());

    // A sub-agent: the bot lends on, narrower; the chain nests.
    let d2 = s.json(
        &s.admin,
        &[
            "delegation",
            "grant",
            "triage-bot",
            "--delegator",
            "staging/support-bot",
            "--scope",
            "tickets:read",
            "--audience",
            MCP,
            "--ttl",
            "30m",
            "--max-depth",
            "3",
        ],
    );
    let triage_token = agent_token(&s, "triage-bot");
    let sub_exchange = |subject: &str, actor: &str, extra: &[&str]| {
        let mut args = vec![
            "token",
            "exchange",
            "--json",
            "--subject-token",
            subject,
            "--subject-token-type",
            "access_token",
            "--actor-token",
            actor,
        ];
        args.extend_from_slice(extra);
        s.cli("", &args)
    };
    let out = sub_exchange(&t1_token, &triage_token, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t2_token = serde_json::from_slice::<Value>(&out.stdout).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let c2 = payload(&t2_token);
    assert_eq!(c2["sub"], "alice@example.com");
    assert_eq!(c2["act"]["sub"], triage.as_str());
    assert_eq!(c2["act"]["act"]["sub"], bot.as_str());
    assert_eq!(c2["del"], json!([d1_id, d2["id"]]));
    assert_eq!(c2["scope"], "tickets:read");
    assert!(
        c2["exp"].as_i64() <= c["exp"].as_i64(),
        "never outlives its parent"
    );
    // A sub-agent cannot widen: comment was not lent to it.
    let out = sub_exchange(&t1_token, &triage_token, &["--scope", "tickets:comment"]);
    assert!(stderr(&out).contains("invalid_scope"), "{}", stderr(&out));
    // Depth: d1 allows 2 agents; a third is refused whatever its own delegation says.
    s.ok(
        &s.admin,
        &[
            "delegation",
            "grant",
            "third-bot",
            "--delegator",
            "staging/triage-bot",
            "--scope",
            "tickets:read",
            "--audience",
            MCP,
            "--ttl",
            "10m",
            "--max-depth",
            "5",
        ],
    );
    let third_token = agent_token(&s, "third-bot");
    let out = sub_exchange(&t2_token, &third_token, &[]);
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));
    let _ = third;

    // Revoking the first delegation ends every token derived from it.
    s.ok(&s.admin, &["delegation", "revoke", &d1_id]);
    assert_eq!(introspect(&s, &t1_token)["active"], false);
    assert_eq!(introspect(&s, &t2_token)["active"], false);
    let out = s.cli(
        "",
        &[
            "token",
            "exchange",
            "--subject-token",
            &alice(),
            "--actor-token",
            &bot_token,
        ],
    );
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));

    // A new delegation; then the agent in the middle of the chain retires: the sub-agent's
    // token dies with it.
    s.ok(
        &s.admin,
        &[
            "delegation",
            "grant",
            "support-bot",
            "--issuer",
            "corp",
            "--subject",
            "alice@example.com",
            "--scope",
            "tickets:read",
            "--audience",
            MCP,
            "--ttl",
            "1h",
            "--max-depth",
            "2",
        ],
    );
    let out = s.cli(
        "",
        &[
            "token",
            "exchange",
            "--json",
            "--subject-token",
            &alice(),
            "--actor-token",
            &bot_token,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let t1b = serde_json::from_slice::<Value>(&out.stdout).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = sub_exchange(&t1b, &triage_token, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t2b = serde_json::from_slice::<Value>(&out.stdout).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(introspect(&s, &t2b)["active"], true);
    s.ok(
        &s.admin,
        &[
            "identity",
            "retire",
            "staging/support-bot",
            "--reason",
            "replaced",
        ],
    );
    assert_eq!(
        introspect(&s, &t2b)["active"],
        false,
        "a retired agent mid-chain"
    );
    assert_eq!(introspect(&s, &t1b)["active"], false);
    // The revocation feed tells resource servers that verify locally: the revoked delegation
    // (named in the tokens' `del`) and the retired agent (named in their `act` chain).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let feed_since = |since: Option<&str>| -> Value {
        rt.block_on(async {
            let mut r = reqwest::Client::new().get(format!("{}/v1/revocations", s.url));
            if let Some(t) = since {
                r = r.query(&[("since", t)]);
            }
            r.bearer_auth(&s.admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    let feed = feed_since(None);
    assert!(
        feed["delegations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == d1_id.as_str()),
        "{feed}"
    );
    assert!(
        feed["identities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == bot.as_str() && i["status"] == "retired"),
        "{feed}"
    );
    let later = feed_since(feed["generated_at"].as_str());
    assert_eq!(
        later["delegations"].as_array().unwrap().len(),
        0,
        "nothing new: {later}"
    );

    let events = s.json(&s.admin, &["audit", "list", "--action", "token.issued"]);
    let chains: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["method"] == "delegation")
        .collect();
    assert!(chains.len() >= 4);
    assert!(
        chains
            .iter()
            .any(|e| e["details"]["delegation"]["act"]["act"]["sub"] == bot.as_str())
    );
    assert!(
        s.json(&s.admin, &["audit", "verify"])["ok"]
            .as_bool()
            .unwrap()
    );
}

#[test]
fn mcp_servers_publish_their_protected_resource_metadata() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "support"]);
    s.ok(&s.admin, &["team", "create", "other"]);
    let id = s.json(
        &s.admin,
        &[
            "identity",
            "create",
            "--name",
            "helpdesk-mcp",
            "--kind",
            "mcp_server",
            "--owner",
            "support",
            "--purpose",
            "Helpdesk tools for agents",
            "--env",
            "prod",
        ],
    )["identity"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outsider = s.operator("oscar", "member", &["other"]);
    let args = [
        "mcp",
        "set",
        "prod/helpdesk-mcp",
        "--resource",
        "https://helpdesk-mcp.example.com/mcp",
        "--tool",
        "list_tickets=tickets:read",
        "--tool",
        "comment=tickets:read,tickets:comment",
    ];
    assert!(
        !s.cli(&outsider, &args).status.success(),
        "another team's member"
    );
    let set = s.json(&s.admin, &args);
    assert_eq!(set["tools"].as_array().unwrap().len(), 2);
    // Not an MCP server: refused.
    s.identity(&s.admin, "plain", "support", &[]);
    let out = s.cli(
        &s.admin,
        &[
            "mcp",
            "set",
            "prod/plain",
            "--resource",
            "https://x.test",
            "--tool",
            "a=b:c",
        ],
    );
    assert!(
        stderr(&out).contains("not an mcp_server"),
        "{}",
        stderr(&out)
    );

    // Public: an MCP client reads it without a token (RFC 9728).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |path: String| {
        rt.block_on(async {
            let r = reqwest::get(format!("{}{path}", s.url)).await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    let (status, doc) = get(format!("/.well-known/oauth-protected-resource/mcp/{id}"));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["resource"], "https://helpdesk-mcp.example.com/mcp");
    assert_eq!(doc["authorization_servers"], json!([s.url]));
    assert_eq!(
        doc["scopes_supported"],
        json!(["tickets:comment", "tickets:read"])
    );
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(doc["dpop_bound_access_tokens_required"], true, "prod");
    assert_eq!(
        doc["warden_tools"]["comment"]["scopes"],
        json!(["tickets:read", "tickets:comment"])
    );
    // The authorization server it names publishes its own metadata (RFC 8414).
    let (status, as_meta) = get("/.well-known/oauth-authorization-server".into());
    assert_eq!(status, 200);
    assert_eq!(as_meta["issuer"], s.url.as_str());
    // Unknown, malformed or retired: 404.
    assert_eq!(
        get(format!(
            "/.well-known/oauth-protected-resource/mcp/{}",
            uuid::Uuid::now_v7()
        ))
        .0,
        404
    );
    assert_eq!(
        get("/.well-known/oauth-protected-resource/mcp/not-a-uuid".into()).0,
        404
    );
    s.ok(
        &s.admin,
        &[
            "identity",
            "retire",
            "prod/helpdesk-mcp",
            "--reason",
            "gone",
        ],
    );
    assert_eq!(
        get(format!("/.well-known/oauth-protected-resource/mcp/{id}")).0,
        404
    );
}

#[test]
fn the_decision_point_answers_with_the_policies_that_decided_and_audits_the_chain() {
    let s = Server::start();
    s.ok(&s.admin, &["team", "create", "support"]);
    let bot = s.json(
        &s.admin,
        &[
            "identity",
            "create",
            "--name",
            "support-bot",
            "--kind",
            "ai_agent",
            "--owner",
            "support",
            "--purpose",
            "Answers helpdesk tickets",
            "--env",
            "staging",
            "--scope",
            "tickets:read",
            "--scope",
            "tickets:comment",
        ],
    )["identity"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let idp = issuer();
    let jwks = s.dir.path().join("idp.json");
    std::fs::write(&jwks, idp.published.lock().unwrap().to_string()).unwrap();
    s.ok(
        &s.admin,
        &[
            "issuer",
            "add",
            "corp",
            "--issuer",
            &idp.url,
            "--jwks-file",
            jwks.to_str().unwrap(),
            "--audience",
            AUD,
        ],
    );
    const MCP: &str = "https://helpdesk-mcp.test";
    let d = s.json(
        &s.admin,
        &[
            "delegation",
            "grant",
            "support-bot",
            "--issuer",
            "corp",
            "--subject",
            "alice@example.com",
            "--scope",
            "tickets:read",
            "--scope",
            "tickets:comment",
            "--audience",
            MCP,
            "--ttl",
            "1h",
        ],
    );
    let t = now();
    let alice = idp
        .key
        .sign("JWT", &json!({"iss": idp.url, "aud": AUD, "sub": "alice@example.com", "iat": t, "exp": t + 900}))
        .unwrap();
    let bot_token = agent_token(&s, "support-bot");
    let out = s.cli(
        "",
        &[
            "token",
            "exchange",
            "--subject-token",
            &alice,
            "--actor-token",
            &bot_token,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let delegated = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    // Policies: validated against Warden's schema before they are stored.
    let policy = s.dir.path().join("helpdesk.cedar");
    std::fs::write(
        &policy,
        r#"permit(principal in Warden::Team::"support", action == Warden::Action::"invoke", resource)
           when { context.action == "tickets:comment" && context.delegator_issuer == "corp" && context.depth <= 1 };
           forbid(principal, action, resource) when { resource.url like "*/locked/*" };"#,
    )
    .unwrap();
    let bad = s.dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        r#"permit(principal, action, resource) when { principal.colour == "red" };"#,
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    assert!(s.cli("", &["policy", "validate", p]).status.success());
    let out = s.cli("", &["policy", "validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let out = s.cli(
        &s.admin,
        &["policy", "put", "bad", "--file", bad.to_str().unwrap()],
    );
    assert!(stderr(&out).contains("invalid_field"), "{}", stderr(&out));
    let stored = s.json(&s.admin, &["policy", "put", "helpdesk", "--file", p]);
    assert_eq!(stored["version"], 1);
    assert_eq!(
        s.json(&s.admin, &["policy", "put", "helpdesk", "--file", p])["version"],
        2,
        "versioned"
    );

    let ask = |action: &str, resource: &str| {
        let out = s.cli(
            &s.admin,
            &[
                "authorize",
                "--json",
                "--subject",
                &delegated,
                "--action",
                action,
                "--resource",
                resource,
            ],
        );
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("authorize: {}", stderr(&out)));
        assert_eq!(out.status.success(), v["decision"] == "allow");
        v
    };
    let a = ask("tickets:comment", "https://helpdesk/tickets/42");
    assert_eq!(a["decision"], "allow", "{a}");
    assert_eq!(a["policies"], json!(["helpdesk"]));
    let a = ask("tickets:read", "https://helpdesk/tickets/42");
    assert_eq!(a["decision"], "deny");
    assert!(
        a["reasons"].to_string().contains("no policy permits"),
        "{a}"
    );
    let a = ask("tickets:comment", "https://helpdesk/locked/7");
    assert_eq!(a["decision"], "deny");
    assert_eq!(
        a["policies"],
        json!(["helpdesk#2"]),
        "forbid wins and is named"
    );
    let a = ask("tickets:close", "https://helpdesk/tickets/42");
    assert_eq!(a["decision"], "deny");
    assert!(a["reasons"].to_string().contains("scope"), "{a}");

    // Offline: a file of questions with expected decisions.
    let cases = s.dir.path().join("cases.json");
    let agent = json!({"id": bot, "name": "support-bot", "kind": "ai_agent", "environment": "staging", "team": "support"});
    let case = |action: &str, resource: &str, depth: i64, expect: &str| {
        json!({"agent": agent, "action": action, "resource": resource, "delegator": "alice@example.com",
               "delegator_issuer": "corp", "depth": depth, "expect": expect})
    };
    std::fs::write(
        &cases,
        json!([
            case("tickets:comment", "https://helpdesk/tickets/1", 1, "allow"),
            case("tickets:comment", "https://helpdesk/tickets/1", 2, "deny"),
            case("tickets:comment", "https://helpdesk/locked/1", 1, "deny"),
        ])
        .to_string(),
    )
    .unwrap();
    let out = s.cli(
        "",
        &[
            "policy",
            "test",
            "--policy",
            p,
            "--cases",
            cases.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(
        &cases,
        json!([case(
            "tickets:comment",
            "https://helpdesk/locked/1",
            1,
            "allow"
        )])
        .to_string(),
    )
    .unwrap();
    let out = s.cli(
        "",
        &[
            "policy",
            "test",
            "--policy",
            p,
            "--cases",
            cases.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a wrong expectation fails the test"
    );

    // Revoking the delegation: the same question is now denied.
    s.ok(
        &s.admin,
        &["delegation", "revoke", d["id"].as_str().unwrap()],
    );
    let a = ask("tickets:comment", "https://helpdesk/tickets/42");
    assert_eq!(a["decision"], "deny");
    // Every decision is audited with the chain.
    let ev = s.json(&s.admin, &["audit", "list", "--action", "authz.decide"]);
    let items = ev["items"].as_array().unwrap();
    assert!(items.len() >= 5, "{}", items.len());
    assert!(items.iter().any(|e| e["details"]["chain"] == json!([bot])
        && e["details"]["delegator"] == "alice@example.com"
        && e["details"]["allow"] == true));
}
