//! Hygiene: an estate with one planted case per rule (and clean identities beside them); a run
//! finds exactly the planted cases, a second run only updates them, a fix resolves its finding,
//! and a stale identity is suspended once its grace period has passed.

use std::collections::BTreeMap;

use time::Duration;
use warden_core::ports::FindingFilter;
use warden_core::registry::{ClientAuth, TokenRequest};
use warden_core::{Policy, Registry};
use warden_types::{
    CreateOperatorRequest, CreateTeamRequest, CredentialKind, FindingKind, FindingStatus,
    IdentityStatus, IssueCredentialRequest, OperatorRole,
};

use crate::{Open, env_with, identity};

const DAY: u64 = 86_400;

async fn create(
    reg: &Registry,
    admin: &warden_core::Actor,
    name: &str,
    owner: &str,
    scopes: &[&str],
) {
    let mut i = identity(name);
    i.environment = "staging".into();
    i.owner = owner.into();
    i.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
    reg.create_identity(admin, i).await.unwrap();
}

async fn credential(
    reg: &Registry,
    admin: &warden_core::Actor,
    name: &str,
    kind: CredentialKind,
    ttl_days: u64,
) -> (uuid::Uuid, Option<String>) {
    let c = reg
        .issue_credential(
            admin,
            &format!("staging/{name}"),
            IssueCredentialRequest {
                kind,
                ttl_seconds: Some(ttl_days * DAY),
                description: None,
                jwk: None,
            },
        )
        .await
        .unwrap();
    (c.credential.id, c.secret)
}

/// Gets a token with a client secret from `source`, asking for `scope`.
async fn use_secret(
    reg: &Registry,
    client_id: uuid::Uuid,
    secret: &str,
    scope: &str,
    source: &str,
) {
    reg.issue_token(TokenRequest {
        grant_type: "client_credentials".into(),
        client: ClientAuth::Secret {
            client_id: client_id.to_string(),
            secret: secret.to_owned(),
            basic: true,
        },
        assertion: None,
        subject_token: None,
        subject_token_type: None,
        requested_token_type: None,
        actor_token: None,
        audience: None,
        scope: Some(scope.into()),
        resources: vec![],
        dpop: None,
        client_cert: None,
        request_id: "t".into(),
        source: source.into(),
        user_agent: None,
    })
    .await
    .unwrap();
}

pub async fn hygiene_finds_exactly_the_planted_cases_and_keeps_findings_current(open: Open) {
    let policy = Policy {
        max_ttl_api_key: Duration::days(4_000),
        hygiene: warden_core::policy::HygienePolicy {
            suspend_stale_after: Some(Duration::days(30)),
            reuse_networks: 3,
            environment_networks: vec![
                ("staging".into(), "10.1.0.0/16".into()),
                ("prod".into(), "10.2.0.0/16".into()),
            ],
            ..Default::default()
        },
        ..Default::default()
    };
    let e = env_with(open, policy).await;
    let (reg, admin) = (&e.reg, &e.admin);
    reg.set_issuer("https://warden.test");
    reg.maintain_signing_keys().await.unwrap();
    reg.create_team(
        admin,
        CreateTeamRequest {
            name: "ghosts".into(),
            description: None,
        },
    )
    .await
    .unwrap();
    reg.create_operator(
        admin,
        CreateOperatorRequest {
            name: "alice".into(),
            role: OperatorRole::Member,
            teams: vec!["payments".into()],
        },
    )
    .await
    .unwrap();

    // Day 0: identities that will be 95 days old.
    create(reg, admin, "clean", "payments", &["a:r"]).await;
    create(reg, admin, "busy", "payments", &["a:r", "a:w"]).await;
    create(reg, admin, "stale", "payments", &["a:r"]).await;
    create(reg, admin, "ghost", "ghosts", &["a:r"]).await;
    e.clock.advance(Duration::days(95));
    // Day 95: the rest, and every use.
    for n in ["longkey", "forever", "expiring", "reused", "mixed"] {
        create(reg, admin, n, "payments", &["a:r"]).await;
    }
    let id_of = |n: &str| {
        let n = format!("staging/{n}");
        async move { reg.identity(admin, &n).unwrap().id }
    };
    for (n, scope, source) in [
        ("clean", "a:r", "10.1.0.7"),
        ("busy", "a:r", "10.1.0.5"),
        ("ghost", "a:r", "10.1.0.6"),
    ] {
        let (_, s) = credential(reg, admin, n, CredentialKind::ClientSecret, 30).await;
        use_secret(reg, id_of(n).await, &s.unwrap(), scope, source).await;
    }
    let (long_id, _) = credential(reg, admin, "longkey", CredentialKind::ApiKey, 400).await;
    let (forever_id, _) = credential(reg, admin, "forever", CredentialKind::ApiKey, 3_700).await;
    let (expiring_id, _) =
        credential(reg, admin, "expiring", CredentialKind::ClientSecret, 10).await;
    let (reused_id, s) = credential(reg, admin, "reused", CredentialKind::ClientSecret, 30).await;
    let s = s.unwrap();
    for source in ["10.1.1.1", "10.1.2.1", "10.1.3.1", "10.1.4.1", "10.1.4.2"] {
        use_secret(reg, id_of("reused").await, &s, "a:r", source).await;
    }
    let (mixed_id, s) = credential(reg, admin, "mixed", CredentialKind::ClientSecret, 30).await;
    let s = s.unwrap();
    for source in ["10.1.0.9", "10.2.0.9"] {
        use_secret(reg, id_of("mixed").await, &s, "a:r", source).await;
    }

    // A member may not run the checks.
    let member = reg
        .authenticate(
            &reg.create_operator(
                admin,
                CreateOperatorRequest {
                    name: "bob".into(),
                    role: OperatorRole::Member,
                    teams: vec!["payments".into()],
                },
            )
            .await
            .unwrap()
            .token,
            "t",
            "test",
        )
        .await
        .unwrap();
    assert!(reg.run_hygiene(&member, "bob").await.is_err());

    let report = reg.run_hygiene(admin, "test").await.unwrap();
    let found: BTreeMap<String, (u64, u64)> = report
        .rules
        .iter()
        .map(|r| (r.rule.clone(), (r.found, r.opened)))
        .collect();
    for rule in warden_core::registry::hygiene::RULES {
        assert_eq!(found[rule], (1, 1), "{rule}: {report:?}");
    }
    assert_eq!(report.identities, 9);
    let findings = |status: Option<FindingStatus>| {
        e.store
            .reader()
            .unwrap()
            .list_findings(
                &FindingFilter {
                    kind: Some(FindingKind::Hygiene),
                    status,
                },
                None,
                1_000,
            )
            .unwrap()
    };
    let open = findings(Some(FindingStatus::Open));
    assert_eq!(open.len(), 8);
    let subject = |rule: &str| {
        let f = open.iter().find(|f| f.rule == rule).unwrap();
        (f.identity.clone().unwrap(), f.credential_id)
    };
    assert_eq!(subject("NHI-STALE").0, "staging/stale");
    assert_eq!(subject("NHI-ORPHAN").0, "staging/ghost");
    assert_eq!(subject("NHI-UNUSED-SCOPE").0, "staging/busy");
    assert_eq!(subject("NHI-LONG-LIVED").1, Some(long_id));
    assert_eq!(subject("NHI-NO-EXPIRY").1, Some(forever_id));
    assert_eq!(subject("NHI-EXPIRING").1, Some(expiring_id));
    assert_eq!(subject("NHI-REUSE").1, Some(reused_id));
    assert_eq!(subject("NHI-ENV-MIX").1, Some(mixed_id));
    let busy = open.iter().find(|f| f.rule == "NHI-UNUSED-SCOPE").unwrap();
    assert_eq!(busy.proposal.as_deref(), Some("reduce scopes to: a:r"));
    assert_eq!(
        busy.evidence.as_ref().unwrap()["unused"],
        serde_json::json!(["a:w"])
    );

    // Again: nothing new, every finding seen twice.
    e.clock.advance(Duration::hours(1));
    let again = reg.run_hygiene(admin, "test").await.unwrap();
    assert!(
        again.rules.iter().all(|r| r.found == 1 && r.opened == 0),
        "{again:?}"
    );
    assert_eq!(again.resolved, 0);
    assert!(findings(None).iter().all(|f| f.times_seen == 2));

    // A fix resolves its finding: the ghost team gets a member.
    reg.set_membership(admin, "ghosts", "alice", true)
        .await
        .unwrap();
    let fixed = reg.run_hygiene(admin, "test").await.unwrap();
    assert_eq!(fixed.resolved, 1);
    let orphan = findings(None)
        .into_iter()
        .find(|f| f.rule == "NHI-ORPHAN")
        .unwrap();
    assert_eq!(orphan.status, FindingStatus::Resolved);

    // Past the grace period the stale identity is suspended; nothing else is.
    e.clock.advance(Duration::days(31));
    let later = reg.run_hygiene(admin, "schedule").await.unwrap();
    assert_eq!(later.suspended, vec!["staging/stale".to_owned()]);
    let stale = reg.identity(admin, "staging/stale").unwrap();
    assert_eq!(stale.status, IdentityStatus::Suspended);
    assert_eq!(
        reg.identity(admin, "staging/clean").unwrap().status,
        IdentityStatus::Active
    );

    // The job's durable state.
    let jobs = reg.list_jobs(admin).unwrap();
    let h = jobs.iter().find(|j| j.job == "hygiene").unwrap();
    assert_eq!(h.runs, 4);
    assert_eq!(h.last_outcome.as_deref(), Some("ok"));
    assert_eq!(h.last_trigger.as_deref(), Some("schedule"));
}

/// The estate generator at a small size: the hygiene run finds exactly what was planted (per
/// rule), and the posture report counts the same.
pub async fn a_generated_estate_yields_exactly_its_planted_findings(open: Open) {
    use crate::estate::{ANOMALY_RULES, EstateSize, anomalies_found, generate, policy};
    let e = env_with(open, policy()).await;
    let size = EstateSize {
        teams: 20,
        orphan_teams: 2,
        identities: 3_000,
        credentials_per_identity: 4,
        events: 30_000,
    };
    let planted = generate(&e.reg, &e.store, &e.admin, size).await;
    assert!(
        planted.values().all(|n| *n > 0),
        "every rule planted: {planted:?}"
    );
    let report = e.reg.run_hygiene(&e.admin, "test").await.unwrap();
    let mut found: BTreeMap<String, u64> = report
        .rules
        .iter()
        .map(|r| (r.rule.clone(), r.found))
        .collect();
    let anomalies = anomalies_found(&e.reg, &e.admin);
    assert!(
        anomalies
            .keys()
            .all(|r| ANOMALY_RULES.contains(&r.as_str())),
        "only planted kinds of anomaly: {anomalies:?}"
    );
    for r in ANOMALY_RULES {
        found.insert(r.to_owned(), anomalies.get(r).copied().unwrap_or(0));
    }
    for (rule, n) in &planted {
        assert_eq!(
            found[*rule], *n,
            "{rule}: planted {n}, found {}",
            found[*rule]
        );
    }
    assert_eq!(report.identities, 3_000);
    assert_eq!(report.credentials, 12_000);
    let posture = e.reg.posture_report(&e.admin, None).unwrap();
    let check = |risk: &str, id: &str| {
        posture
            .risks
            .iter()
            .find(|r| r.id == risk)
            .and_then(|r| r.checks.iter().find(|c| c.id == id))
            .map(|c| c.count)
            .unwrap()
    };
    assert_eq!(check("NHI1", "NHI-STALE"), planted["NHI-STALE"]);
    assert_eq!(check("NHI1", "NHI-ORPHAN"), planted["NHI-ORPHAN"]);
    assert_eq!(
        check("NHI5", "NHI-UNUSED-SCOPE"),
        planted["NHI-UNUSED-SCOPE"]
    );
    assert_eq!(check("NHI7", "NHI-LONG-LIVED"), planted["NHI-LONG-LIVED"]);
    assert_eq!(check("NHI8", "NHI-ENV-MIX"), planted["NHI-ENV-MIX"]);
    assert_eq!(check("NHI9", "NHI-REUSE"), planted["NHI-REUSE"]);
    assert_eq!(
        check("NHI2", "NHI-ANOMALY-NETWORK"),
        planted["NHI-ANOMALY-NETWORK"]
    );
    assert_eq!(
        check("NHI10", "NHI-INTERACTIVE"),
        planted["NHI-INTERACTIVE"]
    );
    assert_eq!(
        check("NHI10", "NHI-ANOMALY-WINDOW"),
        planted["NHI-ANOMALY-WINDOW"]
    );
    assert_eq!(posture.identities, 3_000);
}

/// Access reviews: a campaign's queue per team, attestations by the owning team only (retire
/// retires), escalation of what is unattested at the due date (once, as a finding the hygiene run
/// leaves alone), and a closed campaign's final summary.
pub async fn access_reviews_are_attested_escalated_and_closed(open: Open) {
    use warden_types::CreateReviewRequest;
    let e = env_with(open, Policy::default()).await;
    let (reg, admin) = (&e.reg, &e.admin);
    reg.create_team(
        admin,
        CreateTeamRequest {
            name: "ghosts".into(),
            description: None,
        },
    )
    .await
    .unwrap();
    let member = |name: &'static str, team: &'static str| async move {
        let t = reg
            .create_operator(
                admin,
                CreateOperatorRequest {
                    name: name.into(),
                    role: OperatorRole::Member,
                    teams: vec![team.into()],
                },
            )
            .await
            .unwrap()
            .token;
        reg.authenticate(&t, "t", "test").await.unwrap()
    };
    let alice = member("alice", "payments").await;
    let gus = member("gus", "ghosts").await;
    create(reg, admin, "a", "payments", &["a:r"]).await;
    create(reg, admin, "b", "payments", &["a:r"]).await;
    create(reg, admin, "c", "ghosts", &["a:r"]).await;
    create(reg, admin, "d", "payments", &["a:r", "a:w"]).await;
    let req = || CreateReviewRequest {
        name: "Q1 review".into(),
        due_in_days: 7,
        team: None,
    };
    assert!(
        reg.create_review(&alice, req()).await.is_err(),
        "members may not start one"
    );
    let c = reg.create_review(admin, req()).await.unwrap();
    assert_eq!((c.summary.items, c.summary.unattested), (4, 4));
    let names = |items: Vec<warden_types::ReviewItem>| {
        items.into_iter().map(|i| i.identity).collect::<Vec<_>>()
    };
    assert_eq!(
        names(reg.review_queue(&alice, c.id).unwrap()),
        ["staging/a", "staging/b", "staging/d"]
    );
    assert_eq!(names(reg.review_queue(&gus, c.id).unwrap()), ["staging/c"]);
    assert!(
        attest_as(reg, c.id, &alice, "staging/c", "keep", "not ours")
            .await
            .is_err(),
        "another team's NHI"
    );
    assert!(
        attest_as(reg, c.id, &alice, "staging/a", "delete", "x")
            .await
            .is_err(),
        "unknown decision"
    );
    assert!(
        attest_as(reg, c.id, &alice, "staging/a", "keep", "")
            .await
            .is_err(),
        "a reason is required"
    );
    attest_as(reg, c.id, &alice, "staging/a", "keep", "still runs payouts")
        .await
        .unwrap();
    attest_as(reg, c.id, &alice, "staging/b", "retire", "replaced by a")
        .await
        .unwrap();
    assert_eq!(
        reg.identity(admin, "staging/b").unwrap().status,
        IdentityStatus::Retired
    );
    // Reduce, taking a scope away now; what it does not hold, or all it holds, is refused.
    let reduce = |remove: &[&str]| warden_types::AttestRequest {
        identity: "staging/d".into(),
        decision: "reduce".into(),
        reason: "never writes".into(),
        remove_scopes: remove.iter().map(|s| (*s).to_owned()).collect(),
    };
    for bad in [&["b:w"][..], &["a:r", "a:w"][..]] {
        assert!(
            reg.attest(&alice, c.id, reduce(bad)).await.is_err(),
            "{bad:?}"
        );
    }
    let mut keep_with_scopes = reduce(&["a:w"]);
    keep_with_scopes.decision = "keep".into();
    assert!(reg.attest(&alice, c.id, keep_with_scopes).await.is_err());
    assert_eq!(
        reg.identity(admin, "staging/d").unwrap().scopes,
        ["a:r", "a:w"]
    );
    reg.attest(&alice, c.id, reduce(&["a:w"])).await.unwrap();
    assert_eq!(reg.identity(admin, "staging/d").unwrap().scopes, ["a:r"]);

    // Not yet due: nothing escalates. Past due: the one unattested item, once.
    assert_eq!(reg.escalate_reviews().await.unwrap(), 0);
    e.clock.advance(Duration::days(8));
    assert_eq!(reg.escalate_reviews().await.unwrap(), 1);
    assert_eq!(reg.escalate_reviews().await.unwrap(), 0);
    reg.run_hygiene(admin, "test").await.unwrap();
    let overdue: Vec<_> = e
        .store
        .reader()
        .unwrap()
        .list_findings(&FindingFilter::default(), None, 100)
        .unwrap()
        .into_iter()
        .filter(|f| f.rule == "REVIEW-OVERDUE")
        .collect();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].identity.as_deref(), Some("staging/c"));
    assert_eq!(overdue[0].owner.as_deref(), Some("ghosts"));
    assert_eq!(
        overdue[0].status,
        FindingStatus::Open,
        "the hygiene run leaves it alone"
    );

    assert!(reg.close_review(&alice, c.id).await.is_err());
    let closed = reg.close_review(admin, c.id).await.unwrap();
    assert_eq!(closed.status, "closed");
    let s = closed.summary;
    assert_eq!(
        (
            s.items,
            s.keep,
            s.reduce,
            s.retire,
            s.unattested,
            s.escalated
        ),
        (4, 1, 1, 1, 1, 1)
    );
    assert!(
        attest_as(reg, c.id, &gus, "staging/c", "keep", "late")
            .await
            .is_err(),
        "closed"
    );
}

async fn attest_as(
    reg: &Registry,
    id: uuid::Uuid,
    who: &warden_core::Actor,
    identity: &str,
    decision: &str,
    reason: &str,
) -> Result<warden_types::ReviewItem, warden_core::CoreError> {
    reg.attest(
        who,
        id,
        warden_types::AttestRequest {
            identity: identity.into(),
            decision: decision.into(),
            reason: reason.into(),
            remove_scopes: Vec::new(),
        },
    )
    .await
}
