//! Governance end to end: the hygiene checks run on demand through the CLI against a real server,
//! their findings are listed, the job's durable state and audit event are there, and only admins
//! may start a run.

use serde_json::Value;

use crate::harness::{Server, stderr};

#[test]
fn hygiene_runs_from_the_cli_and_its_findings_are_listed() {
    let s = Server::start();
    let a = s.admin.clone();
    s.ok(&a, &["team", "create", "ghosts"]);
    s.ok(&a, &["team", "create", "payments"]);
    let member = s.operator("mia", "member", &["payments"]);
    // An identity whose team has nobody in it (orphaned), one whose team is staffed.
    s.identity(&a, "forgotten", "ghosts", &["ledger:read"]);
    s.identity(&a, "kept", "payments", &["ledger:read"]);

    let refused = s.cli(&member, &["hygiene", "run"]);
    assert!(!refused.status.success(), "a member ran the hygiene checks");
    assert!(stderr(&refused).contains("admin"), "{}", stderr(&refused));

    let report = s.json(&a, &["hygiene", "run"]);
    let rule = |r: &Value, id: &str| {
        r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["rule"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(rule(&report, "NHI-ORPHAN")["found"], 1, "{report}");
    assert_eq!(rule(&report, "NHI-ORPHAN")["opened"], 1);
    assert_eq!(
        rule(&report, "NHI-STALE")["found"],
        0,
        "new identities are not stale"
    );
    assert_eq!(report["identities"], 2);

    let listed = s.json(&a, &["finding", "list", "--kind", "hygiene"]);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["rule"], "NHI-ORPHAN");
    assert_eq!(items[0]["identity"], "prod/forgotten");
    assert_eq!(items[0]["owner"], "ghosts");
    assert_eq!(items[0]["status"], "open");
    assert!(items[0]["proposal"].as_str().is_some_and(|p| !p.is_empty()));

    // The human form names the rules; a second run finds the same and opens nothing.
    let human = s.ok(&a, &["hygiene", "run"]);
    assert!(human.contains("NHI-ORPHAN"), "{human}");
    let listed = s.json(&a, &["finding", "list", "--kind", "hygiene"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["times_seen"], 2);

    let jobs = s.json(&a, &["hygiene", "jobs"]);
    let h = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "hygiene")
        .cloned()
        .unwrap();
    assert_eq!(h["runs"], 2);
    assert_eq!(h["last_outcome"], "ok");
    assert_eq!(h["last_trigger"], "operator:admin");

    let audited = s.json(&a, &["audit", "list", "--action", "hygiene.run"]);
    assert_eq!(
        audited["items"].as_array().map(Vec::len),
        Some(2),
        "{audited}"
    );
}

#[test]
fn the_posture_report_maps_findings_to_the_owasp_top_10_in_three_formats() {
    let s = Server::start();
    let a = s.admin.clone();
    s.ok(&a, &["team", "create", "ghosts"]);
    s.ok(&a, &["team", "create", "payments"]);
    let member = s.operator("mia", "member", &["payments"]);
    s.identity(&a, "forgotten", "ghosts", &["ledger:read"]);
    s.identity(&a, "kept", "payments", &["ledger:read"]);
    // A pipeline holding a static secret (NHI4, NHI6); an identity named to test escaping.
    s.ok(
        &a,
        &[
            "identity",
            "create",
            "--name",
            "deploy",
            "--kind",
            "ci_pipeline",
            "--owner",
            "payments",
            "--purpose",
            "Deploys <b>app</b> & friends",
            "--env",
            "staging",
        ],
    );
    s.api_key(&a, "staging/deploy");
    s.ok(&a, &["hygiene", "run"]);

    let r = s.json(&a, &["report", "posture", "--format", "json"]);
    let risks = r["risks"].as_array().unwrap();
    assert_eq!(risks.len(), 10);
    let ids: Vec<&str> = risks.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "NHI1", "NHI2", "NHI3", "NHI4", "NHI5", "NHI6", "NHI7", "NHI8", "NHI9", "NHI10"
        ]
    );
    let risk = |id: &str| risks.iter().find(|k| k["id"] == id).unwrap().clone();
    let check = |k: &Value, id: &str| {
        k["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["count"]
            .as_u64()
            .unwrap()
    };
    let nhi1 = risk("NHI1");
    assert_eq!(check(&nhi1, "NHI-ORPHAN"), 1);
    assert_eq!(nhi1["affected"][0]["identity"], "prod/forgotten");
    assert_eq!(nhi1["affected"][0]["owner"], "ghosts");
    assert_eq!(nhi1["affected_count"], 1);
    assert_eq!(nhi1["population"], 3);
    assert_eq!(nhi1["score"], 66, "100 × 2 clean of 3");
    assert_eq!(nhi1["level"], "high");
    assert_eq!(check(&risk("NHI4"), "POSTURE-STATIC-SECRET"), 1);
    let nhi6 = risk("NHI6");
    assert_eq!(check(&nhi6, "POSTURE-CI-STATIC-SECRET"), 1);
    assert_eq!(
        (nhi6["population"].as_u64(), nhi6["score"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(r["identities"], 3);
    assert!(r["hygiene_run_at"].is_string());
    assert_eq!(
        r["credential_age"][0]["value"], 1,
        "one credential, under a week old"
    );

    let md = s.ok(&a, &["report", "posture", "--format", "md"]);
    assert!(md.contains("## NHI1 Improper Offboarding"), "{md}");
    assert!(
        md.contains("| prod/forgotten | ghosts | NHI-ORPHAN |"),
        "{md}"
    );

    // HTML: one self-contained file, written whole.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("posture.html");
    let f = file.to_str().unwrap();
    s.ok(
        &a,
        &["report", "posture", "--format", "html", "--output", f],
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    for external in ["<script", "src=", "href=\"http", "@import"] {
        assert!(!html.contains(external), "the report loads {external}");
    }
    assert!(html.contains("prod/forgotten"));
    // A bad format is refused and the file is left as it was.
    let bad = s.cli(&a, &["report", "posture", "--format", "pdf", "--output", f]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("html, md or json"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), html);

    // A member sees their team's posture only.
    let mine = s.json(
        &member,
        &[
            "report", "posture", "--team", "payments", "--format", "json",
        ],
    );
    assert_eq!(mine["team"], "payments");
    assert_eq!(mine["identities"], 2);
    for args in [
        &["report", "posture"][..],
        &["report", "posture", "--team", "ghosts"][..],
    ] {
        let o = s.cli(&member, args);
        assert!(!o.status.success(), "a member read {args:?}");
    }
    screenshot(&file);
}

/// Renders the HTML report in headless Chromium (Debian's `chromium`), fails on any console error,
/// and leaves a screenshot in the test output (`target/posture-report.png`). Skipped only when
/// `WARDEN_TEST_CHROMIUM` is unset and no chromium is installed (`.ci/run` installs it and sets it).
fn screenshot(file: &std::path::Path) {
    let chromium = match std::env::var("WARDEN_TEST_CHROMIUM") {
        Ok(c) => c,
        Err(_) if std::path::Path::new("/usr/bin/chromium").exists() => "/usr/bin/chromium".into(),
        Err(_) => {
            eprintln!("no chromium: the HTML report was not rendered (.ci/run installs it)");
            return;
        }
    };
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/posture-report.png");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", file.display());
    let run = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(&url)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console errors: {console:?}");
    let png = std::fs::read(&out).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no screenshot"
    );
    eprintln!("posture report screenshot: {}", out.display());
}

#[test]
fn audit_export_writes_json_lines_in_chain_order_and_resumes_after_a_sequence() {
    let s = Server::start();
    let a = s.admin.clone();
    s.ok(&a, &["team", "create", "payments"]);
    s.identity(&a, "exported", "payments", &["ledger:read"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let f = file.to_str().unwrap();
    let out = s.cli(&a, &["audit", "export", "--since", "1h", "--output", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 3, "{text}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in chain order, none missing: {seqs:?}"
    );
    assert!(events.iter().any(|e| e["action"] == "identity.create"));
    let last = *seqs.last().unwrap();
    assert!(
        stderr(&out).contains(&format!("--after-seq {last}")),
        "{}",
        stderr(&out)
    );

    // More events; an export after the last sequence has exactly those.
    s.identity(&a, "later", "payments", &["ledger:read"]);
    let more = s.cli(&a, &["audit", "export", "--after-seq", &last.to_string()]);
    assert!(more.status.success(), "{}", stderr(&more));
    let next: Vec<Value> = String::from_utf8(more.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!next.is_empty());
    assert_eq!(next[0]["seq"].as_u64(), Some(last + 1));
    assert!(
        next.iter()
            .any(|e| e["action"] == "identity.create" && e["details"]["name"] == "later")
    );

    // Bad input: refused, and the earlier file is left as it was.
    let bad = s.cli(
        &a,
        &["audit", "export", "--since", "yesterday-ish", "--output", f],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--since"), "{}", stderr(&bad));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // Members may not read the audit log, so may not export it.
    let member = s.operator("mia", "member", &["payments"]);
    assert!(!s.cli(&member, &["audit", "export"]).status.success());
}

#[test]
fn an_access_review_runs_through_the_cli() {
    let s = Server::start();
    let a = s.admin.clone();
    s.ok(&a, &["team", "create", "payments"]);
    s.ok(&a, &["team", "create", "search"]);
    let mia = s.operator("mia", "member", &["payments"]);
    s.identity(&a, "payouts", "payments", &["ledger:write", "ledger:read"]);
    s.identity(&a, "old-batch", "payments", &["ledger:read"]);
    s.identity(&a, "indexer", "search", &["docs:read"]);

    assert!(!s.cli(&mia, &["review", "start", "Q1"]).status.success());
    let c = s.json(
        &a,
        &["review", "start", "Q1 access review", "--due-days", "14"],
    );
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["summary"]["items"], 3);

    let queue = s.json(&mia, &["review", "queue", &id]);
    let names: Vec<&str> = queue
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["identity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod/old-batch", "prod/payouts"], "her team's only");

    s.ok(
        &mia,
        &[
            "review",
            "attest",
            &id,
            "prod/payouts",
            "--decision",
            "reduce",
            "--remove-scope",
            "ledger:write",
            "--reason",
            "only reads the ledger now",
        ],
    );
    let reduced = s.json(&a, &["identity", "show", "prod/payouts"]);
    assert_eq!(
        reduced["scopes"],
        serde_json::json!(["ledger:read"]),
        "{reduced}"
    );
    s.ok(
        &mia,
        &[
            "review",
            "attest",
            &id,
            "prod/old-batch",
            "--decision",
            "retire",
            "--reason",
            "unused since the migration",
        ],
    );
    let refused = s.cli(
        &mia,
        &[
            "review",
            "attest",
            &id,
            "prod/indexer",
            "--decision",
            "keep",
            "--reason",
            "x",
        ],
    );
    assert!(!refused.status.success(), "attested another team's NHI");
    // Another team's NHIs are invisible to her, as everywhere in the API.
    assert!(
        stderr(&refused).contains("not found"),
        "{}",
        stderr(&refused)
    );
    let retired = s.json(&a, &["identity", "show", "prod/old-batch"]);
    assert_eq!(retired["status"], "retired");

    let closed = s.json(&a, &["review", "close", &id]);
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["summary"]["reduce"], 1);
    assert_eq!(closed["summary"]["retire"], 1);
    assert_eq!(closed["summary"]["unattested"], 1);
    let listed = s.ok(&a, &["review", "list"]);
    assert!(
        listed.contains("Q1 access review") && listed.contains("closed"),
        "{listed}"
    );
    let audited = s.json(&a, &["audit", "list", "--action", "review.attest"]);
    assert_eq!(audited["items"].as_array().map(Vec::len), Some(2));
}

/// Usage anomalies end to end: tokens requested over HTTP are scored; a scope used for the first
/// time after learning, a browser's `User-Agent` and use outside a `schedule` label become
/// findings and `anomaly.detected` audit events; the baseline survives a graceful restart (a new
/// scope right after it is still called new — a fresh baseline would be learning).
#[tokio::test(flavor = "multi_thread")]
async fn token_requests_are_scored_and_unusual_ones_become_findings() {
    let mut s = Server::start();
    let a = s.admin.clone();
    let config = s.data_dir().join("warden.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[anomaly]\nlearning = \"1s\"\n");
    std::fs::write(&config, text).unwrap();
    s.restart();
    s.ok(&a, &["team", "create", "payments"]);
    // Works every hour but this one and the next (UTC).
    let hour = time::OffsetDateTime::now_utc().hour();
    let schedule = format!("schedule={}-{hour}", (hour + 2) % 24);
    let made = |name: &str, label: Option<&str>| {
        let mut args = vec![
            "identity",
            "create",
            "--name",
            name,
            "--kind",
            "service_account",
            "--owner",
            "payments",
            "--purpose",
            "Posts invoices",
            "--env",
            "staging",
            "--scope",
            "ledger:read",
            "--scope",
            "ledger:write",
            "--scope",
            "reports:read",
        ];
        if let Some(l) = label {
            args.extend(["--label", l]);
        }
        let id = s.json(&a, &args)["identity"]["client_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let issued = s.json(
            &a,
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
        (id, issued["secret"].as_str().unwrap().to_owned())
    };
    let (worker, worker_secret) = made("invoicer", None);
    let (nightly, nightly_secret) = made("nightly-export", Some(&schedule));
    let token = |url: String,
                 id: String,
                 secret: String,
                 scope: &'static str,
                 agent: &'static str| async move {
        let res = reqwest::Client::new()
            .post(format!("{url}/oauth2/token"))
            .basic_auth(id, Some(secret))
            .header("user-agent", agent)
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    };
    let get = |scope, agent| {
        token(
            s.url.clone(),
            worker.clone(),
            worker_secret.clone(),
            scope,
            agent,
        )
    };
    get("ledger:read", "billing/2.1").await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // Learned: the same again is usual; a new scope is not; a browser is not.
    get("ledger:read", "billing/2.1").await;
    get("ledger:write", "billing/2.1").await;
    get("ledger:read", "Mozilla/5.0 (X11; Linux x86_64)").await;
    token(
        s.url.clone(),
        nightly.clone(),
        nightly_secret.clone(),
        "ledger:read",
        "export/1.0",
    )
    .await;

    let findings = |s: &Server| {
        s.json(&a, &["finding", "list", "--kind", "anomaly"])["items"]
            .as_array()
            .unwrap()
            .clone()
    };
    let mut items = Vec::new();
    for _ in 0..50 {
        items = findings(&s);
        if items.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut rules: Vec<(String, String)> = items
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                f["identity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            ("NHI-ANOMALY-SCOPE".into(), "staging/invoicer".into()),
            ("NHI-ANOMALY-WINDOW".into(), "staging/nightly-export".into()),
            ("NHI-INTERACTIVE".into(), "staging/invoicer".into()),
        ],
        "{items:?}"
    );
    let scope = items
        .iter()
        .find(|f| f["rule"] == "NHI-ANOMALY-SCOPE")
        .unwrap();
    assert_eq!(scope["evidence"]["scope"], "ledger:write");
    assert_eq!(scope["owner"], "payments");
    assert_eq!(scope["kind"], "anomaly");
    let interactive = items
        .iter()
        .find(|f| f["rule"] == "NHI-INTERACTIVE")
        .unwrap();
    assert_eq!(interactive["severity"], "high");
    assert!(
        interactive["evidence"]["user_agent"]
            .as_str()
            .is_some_and(|u| u.starts_with("Mozilla/")),
        "{interactive}"
    );
    let audited = s.json(&a, &["audit", "list", "--action", "anomaly.detected"]);
    assert_eq!(
        audited["items"].as_array().map(Vec::len),
        Some(3),
        "{audited}"
    );

    // A graceful stop saves the baselines; the next start restores them.
    assert!(s.stop().success());
    s.start_again();
    get_again(&s, &worker, &worker_secret, "ledger:write").await;
    get_again(&s, &worker, &worker_secret, "reports:read").await;
    let mut n = 0;
    for _ in 0..50 {
        n = findings(&s)
            .iter()
            .filter(|f| f["rule"] == "NHI-ANOMALY-SCOPE")
            .count();
        if n >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        n,
        2,
        "reports:read is new to the restored baseline; the server's log:\n{}",
        std::fs::read_to_string(s.data_dir().join("server.log")).unwrap_or_default()
    );
    let after = findings(&s);
    let write = after
        .iter()
        .find(|f| f["rule"] == "NHI-ANOMALY-SCOPE" && f["evidence"]["scope"] == "ledger:write")
        .unwrap();
    assert_eq!(
        write["times_seen"], 1,
        "ledger:write is known after the restart"
    );
    // The posture report counts them under NHI2 and NHI10.
    let posture = s.json(&a, &["report", "posture", "--format", "json"]);
    let count = |risk: &str, check: &str| {
        posture["risks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == risk)
            .and_then(|r| {
                r["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["id"] == check)
            })
            .map(|c| c["count"].clone())
            .unwrap()
    };
    assert_eq!(count("NHI10", "NHI-INTERACTIVE"), 1, "{posture}");
    assert_eq!(count("NHI10", "NHI-ANOMALY-WINDOW"), 1);
    assert_eq!(count("NHI2", "NHI-ANOMALY-SCOPE"), 1, "one identity");
}

async fn get_again(s: &Server, id: &str, secret: &str, scope: &str) {
    let res = reqwest::Client::new()
        .post(format!("{}/oauth2/token", s.url))
        .basic_auth(id, Some(secret))
        .header("user-agent", "billing/2.1")
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
