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
