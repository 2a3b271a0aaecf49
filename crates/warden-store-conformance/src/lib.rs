//! One conformance suite for every store backend: the registry's rules and the store's
//! guarantees (group-commit isolation, after-commit effects, audit order, durable authentication
//! events, token state), written once against the `Store` port. A backend runs all of it with
//! [`conformance!`], passing a function that opens a fresh store:
//!
//! ```ignore
//! fn open(key: &ServerKey) -> Fresh { /* a new empty database */ }
//! warden_store_conformance::conformance!(open);
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test suite"
)]

pub mod delegation;
pub mod estate;
pub mod federation;
pub mod hygiene;
pub mod pg;
pub mod vault;

use std::sync::Arc;

use time::Duration;
use time::macros::datetime;
use warden_core::lifecycle::Transition;
use warden_core::ports::{NewAuditEvent, Store};
use warden_core::{Actor, Clock, CoreError, FakeClock, Policy, Registry, StoreError};
use warden_crypto::ServerKey;
use warden_types::{
    AuditOutcome, CreateIdentityRequest, CreateTeamRequest, CredentialKind, IdentityKind,
    IssueCredentialRequest, RotateCredentialRequest,
};

/// A fresh, empty store of the backend under test, and whatever keeps it alive (a temporary
/// directory, a database).
pub struct Fresh {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn std::any::Any + Send>,
}

/// How a backend opens a fresh store whose audit checkpoints are keyed from `key`.
pub type Open = fn(&ServerKey) -> Fresh;

/// A registry over a fresh store with a fake clock, a bootstrap admin and a team `payments`.
pub struct Env {
    pub _guard: Box<dyn std::any::Any + Send>,
    pub clock: Arc<FakeClock>,
    pub store: Arc<dyn Store>,
    pub reg: Registry,
    pub admin: Actor,
}

pub async fn env(open: Open) -> Env {
    env_with(open, Policy::default()).await
}

/// [`env`] under a given policy.
pub async fn env_with(open: Open, policy: Policy) -> Env {
    let key = ServerKey::generate();
    let fresh = open(&key);
    let store = fresh.store;
    let clock = Arc::new(FakeClock::new(datetime!(2026-01-01 00:00 UTC)));
    let reg = Registry::new(store.clone(), clock.clone(), policy, &key);
    let created = reg.bootstrap_admin("admin").await.unwrap();
    let admin = reg.authenticate(&created.token, "t", "test").await.unwrap();
    reg.create_team(
        &admin,
        CreateTeamRequest {
            name: "payments".into(),
            description: None,
        },
    )
    .await
    .unwrap();
    Env {
        _guard: fresh.guard,
        clock,
        store,
        reg,
        admin,
    }
}

pub fn identity(name: &str) -> CreateIdentityRequest {
    CreateIdentityRequest {
        name: name.into(),
        kind: IdentityKind::ServiceAccount,
        owner: "payments".into(),
        purpose: "Unit test identity".into(),
        environment: "prod".into(),
        scopes: vec!["ledger:write".into()],
        audiences: vec![],
        constraints: None,
        labels: Default::default(),
        parent_id: None,
        expires_at: None,
    }
}

pub fn api_key(ttl: Option<u64>) -> IssueCredentialRequest {
    IssueCredentialRequest {
        kind: CredentialKind::ApiKey,
        ttl_seconds: ttl,
        description: None,
        jwk: None,
    }
}

/// Every test of the suite, as `#[tokio::test]` functions calling it with `$open`.
#[macro_export]
macro_rules! conformance {
    ($open:expr) => {
        $crate::conformance!(@each $open;
        keys_stop_working_when_they_expire,
        findings_are_deduplicated_and_a_leaked_key_is_revoked_in_one_transaction,
        an_identity_expiry_caps_its_credentials_and_ends_them,
        rotation_overlap_ends_and_the_sweeper_revokes,
        last_used_is_written_in_batches_not_per_authentication,
        sink_cursors_move_only_for_the_lease_holder,
        a_failing_job_in_a_batch_leaves_no_trace_and_others_commit,
        a_job_that_appends_audit_then_fails_is_rolled_back_whole,
        lifecycle_transitions_are_recorded_with_reason,
        after_commit_effects_run_even_when_the_caller_is_gone_and_never_for_failed_jobs,
        every_authentication_gets_exactly_one_event_in_order,
        durable_mode_commits_authentication_events_before_answering,
        tokens::lifetimes_take_the_lowest_cap,
        tokens::a_new_key_is_published_before_it_signs_and_the_old_one_stays_until_its_tokens_expire,
        tokens::a_key_registered_or_revoked_later_is_seen_by_the_cached_client,
        tokens::an_immediate_rotation_withdraws_the_old_key_and_its_tokens,
        tokens::signing_keys_are_sealed_at_rest_under_the_server_key,
        tokens::single_use_values_survive_a_restart,
        vault::secrets_keep_versions_list_by_prefix_and_move_to_a_new_master_key,
        vault::dynamic_logins_end_with_their_lease_and_failed_drops_are_retried,
        vault::scheduled_rotation_keeps_the_old_value_for_the_overlap,
        vault::an_interrupted_rotation_is_settled_by_asking_the_target,
        federation::issuer_keys_are_refetched_for_new_kids_and_kept_only_so_long_without_the_issuer,
        delegation::delegated_tokens_never_exceed_any_parent,
        delegation::cached_token_checks_end_with_what_they_rest_on,
        hygiene::hygiene_finds_exactly_the_planted_cases_and_keeps_findings_current,
        hygiene::a_generated_estate_yields_exactly_its_planted_findings,
        hygiene::access_reviews_are_attested_escalated_and_closed);
    };
    (@each $open:expr; $($($path:ident)::+),* $(,)?) => {
        $(
            $crate::conformance!(@one $open; $($path)::+);
        )*
    };
    (@one $open:expr; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::$name($open).await
        }
    };
    (@one $open:expr; hygiene::$name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::hygiene::$name($open).await
        }
    };
    (@one $open:expr; delegation::$name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::delegation::$name($open).await
        }
    };
    (@one $open:expr; federation::$name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::federation::$name($open).await
        }
    };
    (@one $open:expr; vault::$name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::vault::$name($open).await
        }
    };
    (@one $open:expr; tokens::$name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::tokens::$name($open).await
        }
    };
}

pub async fn findings_are_deduplicated_and_a_leaked_key_is_revoked_in_one_transaction(open: Open) {
    use warden_core::ports::FindingFilter;
    use warden_types::{FindingKind, FindingReport, FindingStatus, ReportFindingsRequest};
    let e = env(open).await;
    e.reg
        .create_identity(&e.admin, identity("leaky"))
        .await
        .unwrap();
    let key = e
        .reg
        .issue_credential(&e.admin, "leaky", api_key(None))
        .await
        .unwrap()
        .secret
        .unwrap();
    let report = |fp: &str, secret: Option<String>| FindingReport {
        fingerprint: fp.into(),
        rule: "warden-api-key".into(),
        severity: "critical".into(),
        path: "deploy/prod.env".into(),
        line: 3,
        preview: "KEY=wdn_…".into(),
        secret,
        ..FindingReport::default()
    };
    let r = e
        .reg
        .report_findings(
            &e.admin,
            ReportFindingsRequest {
                findings: vec![
                    report("aa01", Some(key.clone())),
                    report("bb02", None),
                    // A well-formed secret no one issued: unmanaged, nothing revoked.
                    report(
                        "cc03",
                        Some(
                            warden_crypto::token::generate(warden_crypto::token::TokenKind::ApiKey)
                                .expose()
                                .to_owned(),
                        ),
                    ),
                ],
            },
        )
        .await
        .unwrap();
    assert_eq!((r.created, r.updated, r.revoked), (3, 0, 1));
    assert_eq!(r.items[0].kind, FindingKind::WardenCredential);
    assert_eq!(r.items[0].identity.as_deref(), Some("leaky"));
    assert_eq!(r.items[0].action.as_deref(), Some("revoked"));
    assert_eq!(r.items[1].kind, FindingKind::Unmanaged);
    assert_eq!(r.items[2].kind, FindingKind::Unmanaged);
    assert!(!e.reg.verify_key(&e.admin, &key).await.unwrap().valid);
    e.clock.advance(Duration::minutes(5));
    let again = e
        .reg
        .report_findings(
            &e.admin,
            ReportFindingsRequest {
                findings: vec![report("aa01", Some(key.clone()))],
            },
        )
        .await
        .unwrap();
    assert_eq!((again.created, again.updated, again.revoked), (0, 1, 0));
    assert_eq!(again.items[0].times_seen, 2);
    assert_eq!(
        again.items[0].action.as_deref(),
        Some("revoked"),
        "the first action stays"
    );
    assert_eq!(again.items[0].last_seen, e.clock.now());
    let open = e
        .reg
        .list_findings(
            &e.admin,
            &FindingFilter {
                status: Some(FindingStatus::Open),
                kind: None,
            },
            None,
            10,
        )
        .unwrap();
    assert_eq!(open.len(), 3);
    // Bad input is refused whole: nothing of the report is written.
    let bad = e
        .reg
        .report_findings(
            &e.admin,
            ReportFindingsRequest {
                findings: vec![report("dd04", None), report("not hex!", None)],
            },
        )
        .await;
    assert!(bad.is_err());
    let all = e
        .reg
        .list_findings(&e.admin, &FindingFilter::default(), None, 10)
        .unwrap();
    assert_eq!(all.len(), 3);
}

pub async fn keys_stop_working_when_they_expire(open: Open) {
    let e = env(open).await;
    e.reg
        .create_identity(&e.admin, identity("w"))
        .await
        .unwrap();
    let k = e
        .reg
        .issue_credential(&e.admin, "w", api_key(Some(3600)))
        .await
        .unwrap();
    let key = k.secret.unwrap();
    assert_eq!(k.credential.expires_at, e.clock.now() + Duration::hours(1));
    assert!(e.reg.verify_key(&e.admin, &key).await.unwrap().valid);
    e.clock.advance(Duration::minutes(59));
    assert!(e.reg.verify_key(&e.admin, &key).await.unwrap().valid);
    e.clock.advance(Duration::minutes(1));
    assert!(
        !e.reg.verify_key(&e.admin, &key).await.unwrap().valid,
        "expired at exactly expires_at"
    );
}

pub async fn an_identity_expiry_caps_its_credentials_and_ends_them(open: Open) {
    let e = env(open).await;
    let mut req = identity("short-lived");
    req.expires_at = Some(datetime!(2026-01-02 00:00 UTC));
    e.reg.create_identity(&e.admin, req).await.unwrap();
    let k = e
        .reg
        .issue_credential(&e.admin, "short-lived", api_key(None))
        .await
        .unwrap();
    assert_eq!(k.credential.expires_at, datetime!(2026-01-02 00:00 UTC));
    e.clock.advance(Duration::days(1));
    assert!(
        !e.reg
            .verify_key(&e.admin, &k.secret.unwrap())
            .await
            .unwrap()
            .valid
    );
    let err = e
        .reg
        .issue_credential(&e.admin, "short-lived", api_key(None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::InvalidState(ref m) if m.contains("expired")),
        "{err:?}"
    );
}

pub async fn rotation_overlap_ends_and_the_sweeper_revokes(open: Open) {
    let e = env(open).await;
    e.reg
        .create_identity(&e.admin, identity("w"))
        .await
        .unwrap();
    let old = e
        .reg
        .issue_credential(&e.admin, "w", api_key(None))
        .await
        .unwrap();
    let old_key = old.secret.clone().unwrap();
    let new = e
        .reg
        .rotate_credential(
            &e.admin,
            old.credential.id,
            RotateCredentialRequest {
                overlap_seconds: Some(3600),
                ttl_seconds: None,
            },
        )
        .await
        .unwrap();
    let new_key = new.secret.unwrap();
    e.clock.advance(Duration::minutes(30));
    assert!(
        e.reg.verify_key(&e.admin, &old_key).await.unwrap().valid,
        "inside the overlap"
    );
    assert_eq!(e.reg.end_overlaps().await.unwrap(), 0, "nothing due yet");
    e.clock.advance(Duration::minutes(31));
    assert!(
        !e.reg.verify_key(&e.admin, &old_key).await.unwrap().valid,
        "overlap over"
    );
    assert!(e.reg.verify_key(&e.admin, &new_key).await.unwrap().valid);
    assert_eq!(e.reg.end_overlaps().await.unwrap(), 1);
    assert_eq!(
        e.reg.end_overlaps().await.unwrap(),
        0,
        "sweeping is idempotent"
    );
    let c = e.reg.credential(&e.admin, old.credential.id).unwrap();
    assert_eq!(c.revoke_reason.as_deref(), Some("rotation overlap ended"));
    assert_eq!(c.replaced_by, Some(new.credential.id));
}

/// An audit sink's cursor moves only by the jobs-lease holder, and only forward in what it is
/// told: a node without the lease (or that lost it) is refused, so it cannot move the cursor of
/// the node that now delivers.
pub async fn sink_cursors_move_only_for_the_lease_holder(open: Open) {
    use warden_core::registry::cluster::JOBS_LEASE;
    let e = env(open).await;
    assert_eq!(e.reg.sink_cursor("siem").unwrap(), 0);
    assert!(
        e.reg.advance_sink("siem", 5).await.is_err(),
        "no lease held: refused"
    );
    assert_eq!(e.reg.sink_cursor("siem").unwrap(), 0, "nothing written");
    e.reg
        .hold_lease(JOBS_LEASE, "node-a", time::Duration::seconds(30))
        .await
        .unwrap()
        .expect("the lease is free");
    e.reg.advance_sink("siem", 5).await.unwrap();
    assert_eq!(e.reg.sink_cursor("siem").unwrap(), 5);
    assert_eq!(
        e.reg.sink_cursor("other").unwrap(),
        0,
        "one cursor per sink"
    );
    // The lease runs out without renewal (another node may hold it now): refused again.
    e.clock.advance(time::Duration::seconds(31));
    assert!(
        e.reg.advance_sink("siem", 9).await.is_err(),
        "lost the lease"
    );
    assert_eq!(e.reg.sink_cursor("siem").unwrap(), 5);
}

pub async fn last_used_is_written_in_batches_not_per_authentication(open: Open) {
    let e = env(open).await;
    e.reg
        .create_identity(&e.admin, identity("w"))
        .await
        .unwrap();
    let k = e
        .reg
        .issue_credential(&e.admin, "w", api_key(None))
        .await
        .unwrap();
    let key = k.secret.unwrap();
    for _ in 0..5 {
        e.clock.advance(Duration::seconds(1));
        assert!(e.reg.verify_key(&e.admin, &key).await.unwrap().valid);
    }
    let before = e.reg.credential(&e.admin, k.credential.id).unwrap();
    assert_eq!(before.last_used_at, None, "not written synchronously");
    assert_eq!(
        e.reg.flush_usage().await.unwrap(),
        1,
        "five uses, one update"
    );
    let after = e.reg.credential(&e.admin, k.credential.id).unwrap();
    assert_eq!(after.last_used_at, Some(e.clock.now()));
    assert_eq!(
        e.reg.identity(&e.admin, "w").unwrap().last_used_at,
        Some(e.clock.now())
    );
}

pub async fn a_failing_job_in_a_batch_leaves_no_trace_and_others_commit(open: Open) {
    let e = env(open).await;
    // Many concurrent creations, every third one a duplicate name that must fail alone.
    let mut tasks = Vec::new();
    let reg = Arc::new(e.reg);
    for i in 0..150 {
        let (reg, admin) = (reg.clone(), e.admin.clone());
        tasks.push(tokio::spawn(async move {
            let name = if i % 3 == 0 {
                "dup".to_owned()
            } else {
                format!("w-{i}")
            };
            reg.create_identity(&admin, identity(&name)).await
        }));
    }
    let mut ok = 0;
    let mut dup = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CoreError::AlreadyExists(_)) => dup += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 101, "100 unique names plus the first `dup`");
    assert_eq!(dup, 49);
    let report = reg.verify_audit(&e.admin).unwrap();
    assert!(report.ok, "{report:?}");
    // 1 operator + 1 team + 101 identities: no audit event from a rolled-back job.
    assert_eq!(report.events_checked, 103);
    let stats = e.store.stats();
    assert!(stats.commits >= 1);
    assert!(stats.failed_jobs >= 49, "{stats:?}");
}

pub async fn a_job_that_appends_audit_then_fails_is_rolled_back_whole(open: Open) {
    let e = env(open).await;
    let receipt = e
        .store
        .submit(Box::new(|tx: &mut dyn warden_core::ports::WriteTx| {
            warden_core::audit::append(
                tx,
                time::OffsetDateTime::UNIX_EPOCH,
                NewAuditEvent {
                    actor: "system".into(),
                    action: "test.event",
                    target: "x".into(),
                    outcome: AuditOutcome::Success,
                    request_id: "r".into(),
                    source: "s".into(),
                    details: "{}".into(),
                },
            )?;
            Err(CoreError::InvalidState("changed my mind".into()))
        }));
    assert!(matches!(
        receipt.await.unwrap(),
        Err(CoreError::InvalidState(_))
    ));
    // The next event takes the place the failed one would have had: the chain has no gap.
    e.reg
        .create_identity(&e.admin, identity("after"))
        .await
        .unwrap();
    let report = e.reg.verify_audit(&e.admin).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 3);
}

pub async fn lifecycle_transitions_are_recorded_with_reason(open: Open) {
    let e = env(open).await;
    e.reg
        .create_identity(&e.admin, identity("w"))
        .await
        .unwrap();
    let err = e
        .reg
        .transition(&e.admin, "w", Transition::Suspend, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::InvalidField { ref field, .. } if field == "reason"),
        "{err:?}"
    );
    let i = e
        .reg
        .transition(&e.admin, "w", Transition::Suspend, Some("incident".into()))
        .await
        .unwrap();
    assert_eq!(i.status_reason.as_deref(), Some("incident"));
    let err = e
        .reg
        .transition(&e.admin, "w", Transition::Suspend, Some("again".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::InvalidState(_)));
}

pub async fn after_commit_effects_run_even_when_the_caller_is_gone_and_never_for_failed_jobs(
    open: Open,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = env(open).await;
    let ran = Arc::new(AtomicBool::new(false));
    let failed_ran = Arc::new(AtomicBool::new(false));
    let (r1, r2) = (ran.clone(), failed_ran.clone());
    // The receipt is dropped at once, as when an HTTP client disconnects mid-request.
    drop(
        e.store
            .submit(Box::new(move |tx: &mut dyn warden_core::ports::WriteTx| {
                tx.after_commit(Box::new(move || r1.store(true, Ordering::SeqCst)));
                Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
            })),
    );
    drop(
        e.store
            .submit(Box::new(move |tx: &mut dyn warden_core::ports::WriteTx| {
                tx.after_commit(Box::new(move || r2.store(true, Ordering::SeqCst)));
                Err(CoreError::InvalidState("no".into()))
            })),
    );
    e.reg.barrier().await.unwrap();
    assert!(ran.load(Ordering::SeqCst), "effect of a committed job ran");
    assert!(
        !failed_ran.load(Ordering::SeqCst),
        "effect of a failed job never runs"
    );
}

pub async fn every_authentication_gets_exactly_one_event_in_order(open: Open) {
    let e = env(open).await;
    e.reg
        .create_identity(&e.admin, identity("w"))
        .await
        .unwrap();
    let key = e
        .reg
        .issue_credential(&e.admin, "w", api_key(None))
        .await
        .unwrap()
        .secret
        .unwrap();
    let before = e.reg.verify_audit(&e.admin).unwrap().events_checked;
    let reg = Arc::new(e.reg);
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (reg, admin) = (reg.clone(), e.admin.clone());
        let k = if i % 4 == 0 {
            "wdn_ak_bogus".to_owned()
        } else {
            key.clone()
        };
        tasks.push(tokio::spawn(async move {
            reg.verify_key(&admin, &k).await.unwrap().valid
        }));
    }
    let mut valid = 0;
    for t in tasks {
        valid += usize::from(t.await.unwrap());
    }
    assert_eq!(valid, 300);
    reg.barrier().await.unwrap();
    let report = reg.verify_audit(&e.admin).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        report.events_checked - before,
        400,
        "one event per attempt, none twice"
    );
    let filter = warden_core::ports::AuditFilter {
        action: Some("credential.authenticate".into()),
        ..Default::default()
    };
    let events = reg.list_audit(&e.admin, &filter, 0, 1000).unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|ev| ev.outcome == AuditOutcome::Failure)
            .count(),
        100
    );
    assert!(
        events.windows(2).all(|w| w[0].time <= w[1].time),
        "times follow the chain's order"
    );
}

pub async fn durable_mode_commits_authentication_events_before_answering(open: Open) {
    let key = ServerKey::generate();
    let fresh = open(&key);
    let store = Arc::clone(&fresh.store);
    let clock = Arc::new(FakeClock::new(datetime!(2026-01-01 00:00 UTC)));
    let policy = Policy {
        durable_authentication_events: true,
        ..Policy::default()
    };
    let reg = Registry::new(store.clone(), clock, policy, &key);
    let created = reg.bootstrap_admin("admin").await.unwrap();
    let admin = reg.authenticate(&created.token, "t", "test").await.unwrap();
    for i in 0..3 {
        assert!(!reg.verify_key(&admin, "wdn_ak_nope").await.unwrap().valid);
        // No barrier: the event is already committed when the answer arrives.
        let filter = warden_core::ports::AuditFilter {
            action: Some("credential.authenticate".into()),
            ..Default::default()
        };
        assert_eq!(
            reg.list_audit(&admin, &filter, 0, 100).unwrap().len(),
            i + 1
        );
    }
    let filter = warden_core::ports::AuditFilter {
        action: Some("credential.authenticate".into()),
        ..Default::default()
    };
    assert_eq!(reg.list_audit(&admin, &filter, 0, 100).unwrap().len(), 3);
}

pub mod tokens {
    //! Token lifetimes and signing-key rotation, with a fake clock.

    use serde_json::Value;
    use warden_core::registry::{ClientAuth, JWT_BEARER_ASSERTION, TokenRequest};
    use warden_jose::ClientKey;
    use warden_types::{Constraints, TokenResponse};

    use super::*;

    const ISSUER: &str = "https://warden.test";

    struct Client {
        id: String,
        key: ClientKey,
    }

    /// An identity in `staging` (no sender constraint) with a registered key.
    async fn client(
        e: &Env,
        name: &str,
        constraints: Option<Constraints>,
        key_ttl: Option<u64>,
    ) -> Client {
        e.reg.set_issuer(ISSUER);
        e.reg.maintain_signing_keys().await.unwrap();
        let mut req = identity(name);
        req.environment = "staging".into();
        req.constraints = constraints;
        let id = e
            .reg
            .create_identity(&e.admin, req)
            .await
            .unwrap()
            .identity
            .id;
        let (key, _) = ClientKey::generate_ed25519().unwrap();
        e.reg
            .issue_credential(
                &e.admin,
                name,
                IssueCredentialRequest {
                    kind: CredentialKind::PublicKey,
                    ttl_seconds: key_ttl,
                    description: None,
                    jwk: Some(key.public_jwk().clone()),
                },
            )
            .await
            .unwrap();
        Client {
            id: id.to_string(),
            key,
        }
    }

    async fn token(
        e: &Env,
        c: &Client,
    ) -> Result<TokenResponse, warden_core::registry::OAuthError> {
        let now = e.clock.now().unix_timestamp();
        let assertion = c
            .key
            .client_assertion(
                &c.id,
                &format!("{ISSUER}/oauth2/token"),
                now,
                60,
                &uuid::Uuid::now_v7().to_string(),
            )
            .unwrap();
        token_with(&e.reg, assertion, None).await
    }

    async fn token_with(
        reg: &Registry,
        assertion: String,
        dpop: Option<String>,
    ) -> Result<TokenResponse, warden_core::registry::OAuthError> {
        reg.issue_token(TokenRequest {
            grant_type: "client_credentials".into(),
            client: ClientAuth::Assertion {
                client_id: None,
                assertion_type: JWT_BEARER_ASSERTION.into(),
                assertion,
            },
            assertion: None,
            subject_token: None,
            subject_token_type: None,
            requested_token_type: None,
            actor_token: None,
            audience: None,
            scope: None,
            resources: vec![],
            dpop,
            client_cert: None,
            request_id: "t".into(),
            source: "127.0.0.1".into(),
            user_agent: None,
        })
        .await
    }

    /// Single-use values are durable: a replay is refused by a registry started afresh over the
    /// same store (a restart, or — with a shared database — another node).
    pub async fn single_use_values_survive_a_restart(open: Open) {
        let key = ServerKey::generate();
        let fresh = open(&key);
        let clock = Arc::new(FakeClock::new(datetime!(2026-01-01 00:00 UTC)));
        let start = || {
            let reg = Registry::new(
                Arc::clone(&fresh.store),
                clock.clone(),
                Policy::default(),
                &key,
            );
            reg.set_issuer(ISSUER);
            reg
        };
        let reg = start();
        let created = reg.bootstrap_admin("admin").await.unwrap();
        let admin = reg.authenticate(&created.token, "t", "test").await.unwrap();
        reg.maintain_signing_keys().await.unwrap();
        reg.create_team(
            &admin,
            CreateTeamRequest {
                name: "payments".into(),
                description: None,
            },
        )
        .await
        .unwrap();
        let mut req = identity("replayer");
        req.environment = "staging".into();
        let id = reg
            .create_identity(&admin, req)
            .await
            .unwrap()
            .identity
            .id
            .to_string();
        let (key_pair, _) = ClientKey::generate_ed25519().unwrap();
        reg.issue_credential(
            &admin,
            "replayer",
            IssueCredentialRequest {
                kind: CredentialKind::PublicKey,
                ttl_seconds: None,
                description: None,
                jwk: Some(key_pair.public_jwk().clone()),
            },
        )
        .await
        .unwrap();
        let now = clock.now().unix_timestamp();
        let endpoint = format!("{ISSUER}/oauth2/token");
        let assertion = key_pair
            .client_assertion(&id, &endpoint, now, 120, "a-1")
            .unwrap();
        let proof = key_pair
            .dpop_proof("POST", &endpoint, now, "p-1", None)
            .unwrap();
        token_with(&reg, assertion.clone(), Some(proof.clone()))
            .await
            .unwrap();
        drop(reg);
        // Later, still inside both windows: the keys of single-use values derive from the values
        // (exp, iat), not from the time they are seen, or this replay would slip through.
        clock.advance(Duration::seconds(5));
        let again = start();
        again.maintain_signing_keys().await.unwrap();
        assert!(
            token_with(&again, assertion, None).await.is_err(),
            "the assertion was used before the restart"
        );
        let fresh_assertion = key_pair
            .client_assertion(&id, &endpoint, now, 120, "a-2")
            .unwrap();
        assert!(
            matches!(
                token_with(&again, fresh_assertion, Some(proof)).await,
                Err(warden_core::registry::OAuthError::InvalidDpopProof)
            ),
            "the proof was used before the restart"
        );
        // Purged only once they could no longer be accepted.
        clock.advance(Duration::minutes(10));
        let gone = again.purge_token_state().await.unwrap();
        assert!(gone >= 2, "{gone}");
    }

    fn kid(token: &str) -> String {
        warden_jose::decode(token).unwrap().header.kid.unwrap()
    }

    fn published(e: &Env) -> Vec<String> {
        e.reg.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    fn active(e: &Env, token: &str) -> bool {
        e.reg.introspect(&e.admin, token).unwrap().active
    }

    pub async fn lifetimes_take_the_lowest_cap(open: Open) {
        let e = env(open).await;
        let plain = client(&e, "plain", None, None).await;
        assert_eq!(
            token(&e, &plain).await.unwrap().expires_in,
            600,
            "the default"
        );
        let capped = client(
            &e,
            "capped",
            Some(Constraints {
                max_token_ttl_seconds: Some(120),
                ..Default::default()
            }),
            None,
        )
        .await;
        assert_eq!(
            token(&e, &capped).await.unwrap().expires_in,
            120,
            "the identity's cap"
        );
        let short_key = client(&e, "short-key", None, Some(90)).await;
        let t = token(&e, &short_key).await.unwrap();
        assert_eq!(
            t.expires_in, 90,
            "never outlives the key it was obtained with"
        );
        assert!(active(&e, &t.access_token));
        e.clock.advance(Duration::seconds(90));
        assert!(!active(&e, &t.access_token), "expired at exp");
        assert!(token(&e, &short_key).await.is_err(), "the key expired too");
    }

    pub async fn a_new_key_is_published_before_it_signs_and_the_old_one_stays_until_its_tokens_expire(
        open: Open,
    ) {
        let e = env(open).await;
        let c = client(&e, "rotating", None, None).await;
        let t1 = token(&e, &c).await.unwrap().access_token;
        let k1 = kid(&t1);
        assert_eq!(published(&e), vec![k1.clone()]);

        let next = e.reg.rotate_signing_key(&e.admin, false).await.unwrap();
        assert_eq!(next.status, "next");
        assert_eq!(
            published(&e),
            vec![k1.clone(), next.kid.clone()],
            "published at once"
        );
        assert_eq!(
            kid(&token(&e, &c).await.unwrap().access_token),
            k1,
            "but not signing yet"
        );
        let again = e.reg.rotate_signing_key(&e.admin, false).await.unwrap_err();
        assert!(
            matches!(again, CoreError::InvalidState(_)),
            "one pending key at a time"
        );

        e.clock.advance(Duration::minutes(9));
        let last_old = token(&e, &c).await.unwrap().access_token;
        assert_eq!(kid(&last_old), k1);
        e.clock.advance(Duration::minutes(1));
        let t2 = token(&e, &c).await.unwrap().access_token;
        assert_eq!(kid(&t2), next.kid, "signs after the publish delay");
        assert!(active(&e, &last_old), "tokens of the old key still verify");
        assert!(!active(&e, &t1), "(the first one has expired by now)");
        assert!(published(&e).contains(&k1));

        // The old key leaves the JWKS once every token it signed has expired (max TTL + leeway).
        e.clock.advance(Duration::hours(1) + Duration::seconds(11));
        assert_eq!(published(&e), vec![next.kid.clone()]);
        let keys = e.reg.list_signing_keys(&e.admin).unwrap();
        let status: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k.kid.as_str(), k.status.as_str()))
            .collect();
        assert_eq!(
            status,
            vec![(k1.as_str(), "expired"), (next.kid.as_str(), "active")]
        );

        // On schedule: after the rotation period, maintenance publishes the next key.
        e.clock.advance(Duration::days(30));
        e.reg.maintain_signing_keys().await.unwrap();
        let keys = e.reg.list_signing_keys(&e.admin).unwrap();
        assert_eq!(keys.last().unwrap().status, "next");
        // Members may not rotate.
        let member = e
            .reg
            .authenticate(
                &e.reg
                    .create_operator(
                        &e.admin,
                        warden_types::CreateOperatorRequest {
                            name: "m".into(),
                            role: warden_types::OperatorRole::Member,
                            teams: vec![],
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
        assert!(matches!(
            e.reg.rotate_signing_key(&member, true).await,
            Err(CoreError::Forbidden(_))
        ));
    }

    pub async fn a_key_registered_or_revoked_later_is_seen_by_the_cached_client(open: Open) {
        let e = env(open).await;
        let mut c = client(&e, "cached", None, None).await;
        token(&e, &c).await.unwrap();
        // A second key, registered after the client's keys were cached, works at once.
        let (second, _) = ClientKey::generate_ed25519().unwrap();
        let added = e
            .reg
            .issue_credential(
                &e.admin,
                "cached",
                IssueCredentialRequest {
                    kind: CredentialKind::PublicKey,
                    ttl_seconds: None,
                    description: None,
                    jwk: Some(second.public_jwk().clone()),
                },
            )
            .await
            .unwrap();
        c.key = second;
        token(&e, &c).await.unwrap();
        // And stops working the moment it is revoked.
        e.reg
            .revoke_credential(&e.admin, added.credential.id, Some("test".into()))
            .await
            .unwrap();
        assert!(token(&e, &c).await.is_err());
    }

    pub async fn an_immediate_rotation_withdraws_the_old_key_and_its_tokens(open: Open) {
        let e = env(open).await;
        let c = client(&e, "compromised", None, None).await;
        let t1 = token(&e, &c).await.unwrap().access_token;
        let new = e.reg.rotate_signing_key(&e.admin, true).await.unwrap();
        assert_eq!(new.status, "active");
        assert_eq!(published(&e), vec![new.kid.clone()]);
        assert!(
            !active(&e, &t1),
            "tokens of a withdrawn key are dead at once"
        );
        assert_eq!(kid(&token(&e, &c).await.unwrap().access_token), new.kid);
    }

    pub async fn signing_keys_are_sealed_at_rest_under_the_server_key(open: Open) {
        let e = env(open).await;
        let c = client(&e, "restart", None, None).await;
        let t = token(&e, &c).await.unwrap().access_token;
        let stored = e.store.reader().unwrap().signing_keys().unwrap();
        let (sealed, jwk): (&[u8], &Value) = (&stored[0].sealed_key, &stored[0].public_jwk);
        assert!(jwk.get("d").is_none(), "only the public half is in clear");
        assert!(sealed.len() > 48);
        let pkcs8_marker = [0x30u8, 0x2e, 0x02, 0x01, 0x00];
        assert!(
            !sealed.windows(5).any(|w| w == pkcs8_marker),
            "no clear PKCS#8 in the stored bytes"
        );
        // Rebuilt from the store (as at start), the keyring still verifies the token.
        e.reg.load_keyring().unwrap();
        assert!(active(&e, &t));
        // Under another server key the sealed key does not open: refused, not misused.
        let other = Registry::new(
            e.store.clone(),
            e.clock.clone(),
            Policy::default(),
            &ServerKey::generate(),
        );
        let err = other.load_keyring().unwrap_err();
        assert!(
            matches!(err, CoreError::Store(StoreError::Corrupt(_))),
            "{err:?}"
        );
    }
}
