//! The vault over the `Store` port: versions, prefixes, re-wrapping, leases and their sweeper,
//! scheduled rotation and overlaps, and the settling of a rotation a crash interrupted. The
//! outside world (PostgreSQL, webhooks) is a recording fake here; the end-to-end tests use real
//! ones.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use time::Duration;
use warden_core::ports::{BoxFuture, PgLogin, VaultTargets, WebhookCall};
use warden_core::{Actor, Clock, CoreError, FakeClock, Policy, Registry};
use warden_crypto::ServerKey;
use warden_crypto::envelope::{MasterKey, VaultKeys};
use warden_types::{
    AddDatabaseRequest, PostgresCredsRequest, PutSecretRequest, RoleTemplate, RotationPolicy,
    Rotator, SecretText, SecretVersionState,
};
use zeroize::Zeroizing;

use crate::{Open, env, identity};

/// How the fake answers health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// The login is refused (an answer: the password does not work).
    Fail,
    /// The database cannot be reached (no answer).
    Down,
    /// Never answers (a process that dies in the middle).
    Hang,
}

/// Records what the vault asked of the outside world.
pub struct FakeTargets {
    pub calls: Mutex<Vec<String>>,
    /// Role drops that fail before one succeeds.
    pub failing_drops: AtomicU32,
    pub check: Mutex<Check>,
}

impl FakeTargets {
    pub fn new() -> Arc<FakeTargets> {
        Arc::new(FakeTargets {
            calls: Mutex::new(Vec::new()),
            failing_drops: AtomicU32::new(0),
            check: Mutex::new(Check::Ok),
        })
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl VaultTargets for FakeTargets {
    fn pg_execute<'a>(
        &'a self,
        _admin: &'a PgLogin,
        statements: Vec<Zeroizing<String>>,
    ) -> BoxFuture<'a, Result<(), String>> {
        for s in statements {
            self.calls.lock().unwrap().push(format!("execute {}", &*s));
        }
        Box::pin(async { Ok(()) })
    }

    fn pg_drop_role<'a>(
        &'a self,
        _admin: &'a PgLogin,
        role: &'a str,
        _revocation: Vec<String>,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.calls.lock().unwrap().push(format!("drop {role}"));
        let fail = self
            .failing_drops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move {
            if fail {
                Err("connection refused".into())
            } else {
                Ok(())
            }
        })
    }

    fn pg_check<'a>(
        &'a self,
        login: &'a PgLogin,
        _check_sql: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("check {} {}", login.username, &*login.password));
        let mode = *self.check.lock().unwrap();
        Box::pin(async move {
            match mode {
                Check::Ok => Ok(()),
                Check::Fail => {
                    Err("password authentication failed for user \"app_single\" (28P01)".into())
                }
                Check::Down => {
                    Err("connecting to 127.0.0.1:5432 failed: connection refused".into())
                }
                Check::Hang => std::future::pending().await,
            }
        })
    }

    fn webhook<'a>(&'a self, call: WebhookCall) -> BoxFuture<'a, Result<(u16, Vec<u8>), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("webhook {}", call.url));
        Box::pin(async { Ok((200, Vec::new())) })
    }
}

fn put(value: &str, owner: Option<&str>) -> PutSecretRequest {
    PutSecretRequest {
        value: SecretText(value.into()),
        owner: owner.map(str::to_owned),
        description: None,
        rotation: None,
        cas: None,
    }
}

fn keys(current: &MasterKey, previous: &[&MasterKey]) -> Arc<VaultKeys> {
    let copy = |k: &MasterKey| MasterKey::from_text(&k.to_text()).unwrap();
    Arc::new(VaultKeys::new(
        copy(current),
        previous.iter().map(|k| copy(k)).collect(),
    ))
}

pub async fn secrets_keep_versions_list_by_prefix_and_move_to_a_new_master_key(open: Open) {
    let key = ServerKey::generate();
    let fresh = open(&key);
    let store = fresh.store.clone();
    let clock = Arc::new(FakeClock::new(
        time::macros::datetime!(2026-01-01 00:00 UTC),
    ));
    let reg = Registry::new(store.clone(), clock.clone(), Policy::default(), &key);
    let old = MasterKey::generate();
    reg.set_vault(keys(&old, &[]), FakeTargets::new());
    reg.check_vault().unwrap();
    let created = reg.bootstrap_admin("admin").await.unwrap();
    let admin = reg.authenticate(&created.token, "t", "test").await.unwrap();
    reg.create_team(
        &admin,
        warden_types::CreateTeamRequest {
            name: "payments".into(),
            description: None,
        },
    )
    .await
    .unwrap();
    reg.create_identity(&admin, identity("w")).await.unwrap();
    // `_` is a LIKE wildcard: the prefix `a_b/` must not list `aXb/`.
    for (path, v) in [("a_b/one", "v1"), ("aXb/two", "v2"), ("a_b/three", "v3")] {
        reg.put_secret(&admin, path, put(v, Some("w")))
            .await
            .unwrap();
    }
    reg.put_secret(&admin, "a_b/one", put("v1-second", None))
        .await
        .unwrap();
    let listed: Vec<String> = reg
        .list_secrets(&admin, "a_b/", None, 10)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(listed, vec!["a_b/one", "a_b/three"]);
    let page: Vec<String> = reg
        .list_secrets(&admin, "", Some("a_b/one"), 10)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(page, vec!["a_b/three"], "cursor order is byte order");
    let all: Vec<String> = reg
        .list_secrets(&admin, "", None, 10)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(all, vec!["aXb/two", "a_b/one", "a_b/three"]);
    let r = reg
        .read_secret(&admin, "a_b/one", None, None)
        .await
        .unwrap();
    assert_eq!((r.version, r.value.0.as_str()), (2, "v1-second"));
    let r = reg
        .read_secret(&admin, "a_b/one", Some(1), None)
        .await
        .unwrap();
    assert_eq!(r.value.0, "v1");
    assert_eq!(
        store.reader().unwrap().vault_key_ids().unwrap(),
        vec![old.id().to_owned()]
    );

    // A server started with another key refuses (nothing decrypted, nothing written).
    let stranger = Registry::new(store.clone(), clock.clone(), Policy::default(), &key);
    stranger.set_vault(keys(&MasterKey::generate(), &[]), FakeTargets::new());
    let err = stranger.check_vault().unwrap_err();
    assert!(err.to_string().contains(old.id()), "{err}");

    // New key with the old one as previous: reads work, rewrap moves every value.
    let new = MasterKey::generate();
    let both = Registry::new(store.clone(), clock.clone(), Policy::default(), &key);
    both.set_vault(keys(&new, &[&old]), FakeTargets::new());
    both.check_vault().unwrap();
    let report = both
        .rewrap_vault(&Actor::system("t"), usize::MAX)
        .await
        .unwrap();
    assert_eq!((report.rewrapped, report.remaining), (4, 0));
    let only_new = Registry::new(store.clone(), clock.clone(), Policy::default(), &key);
    only_new.set_vault(keys(&new, &[]), FakeTargets::new());
    only_new.check_vault().unwrap();
    let r = only_new
        .read_secret(&Actor::system("t"), "a_b/one", Some(1), None)
        .await
        .unwrap();
    assert_eq!(r.value.0, "v1");
    let keys_now = store.reader().unwrap().vault_key_ids().unwrap();
    assert_eq!(keys_now, vec![new.id().to_owned()]);
    drop(fresh.guard);
}

fn database_request(ttl: u64) -> AddDatabaseRequest {
    AddDatabaseRequest {
        name: "main".into(),
        owner: "w".into(),
        host: "127.0.0.1".into(),
        port: 5432,
        dbname: "app".into(),
        username: "vault_admin".into(),
        password: SecretText("admin-password".into()),
        sslmode: "disable".into(),
        ca_pem: None,
        description: None,
        roles: [(
            "ro".to_owned(),
            RoleTemplate {
                creation: vec![
                    "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"
                        .into(),
                ],
                revocation: vec![],
                default_ttl_secs: ttl,
                max_ttl_secs: ttl * 2,
            },
        )]
        .into_iter()
        .collect(),
    }
}

pub async fn dynamic_logins_end_with_their_lease_and_failed_drops_are_retried(open: Open) {
    let e = env(open).await;
    let fake = FakeTargets::new();
    e.reg
        .set_vault(keys(&MasterKey::generate(), &[]), fake.clone());
    e.reg
        .create_identity(&e.admin, identity("w"))
        .await
        .unwrap();
    e.reg
        .add_database(&e.admin, database_request(3600))
        .await
        .unwrap();
    let creds = e
        .reg
        .issue_postgres_creds(
            &e.admin,
            PostgresCredsRequest {
                role: "ro".into(),
                database: None,
                ttl_secs: Some(60),
            },
        )
        .await
        .unwrap();
    let created = fake.calls();
    let create = created
        .iter()
        .find(|c| c.starts_with("execute CREATE ROLE"))
        .unwrap();
    assert!(create.contains(&creds.username));
    assert!(create.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "{create}");
    assert!(
        !create.contains(&creds.password.0),
        "the password itself never leaves Warden"
    );
    assert!(
        create.contains("VALID UNTIL '2026-01-01T00:01:00Z'"),
        "{create}"
    );
    // Nothing is due before the end; at the end the drop fails once and is retried.
    assert_eq!(e.reg.sweep_leases().await.unwrap(), 0);
    fake.failing_drops.store(1, Ordering::SeqCst);
    e.clock.advance(Duration::seconds(61));
    assert_eq!(e.reg.sweep_leases().await.unwrap(), 1);
    let lease = e
        .store
        .reader()
        .unwrap()
        .vault_lease(creds.lease.id)
        .unwrap()
        .unwrap();
    assert!(lease.revoked_at.is_some());
    assert_eq!(lease.last_error.as_deref(), Some("connection refused"));
    assert_eq!(
        e.reg.sweep_leases().await.unwrap(),
        0,
        "a failing target is not retried at once (it would starve the others)"
    );
    e.clock.advance(Duration::seconds(61));
    assert_eq!(e.reg.sweep_leases().await.unwrap(), 1, "retried");
    let lease = e
        .store
        .reader()
        .unwrap()
        .vault_lease(creds.lease.id)
        .unwrap()
        .unwrap();
    assert_eq!(lease.last_error, None);
    assert_eq!(e.reg.sweep_leases().await.unwrap(), 0, "done");
    let drops = fake
        .calls()
        .iter()
        .filter(|c| *c == &format!("drop {}", creds.username))
        .count();
    assert_eq!(drops, 2);
    // The audit chain never holds the generated password.
    let events = e
        .reg
        .list_audit(&e.admin, &Default::default(), 0, 10_000)
        .unwrap();
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&creds.password.0));
    assert!(!text.contains("admin-password"));
    // A ttl above the role's maximum is refused before anything is created.
    let err = e
        .reg
        .issue_postgres_creds(
            &e.admin,
            PostgresCredsRequest {
                role: "ro".into(),
                database: Some("main".into()),
                ttl_secs: Some(100_000),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::TtlTooLong(_)), "{err:?}");
}

pub async fn scheduled_rotation_keeps_the_old_value_for_the_overlap(open: Open) {
    let e = env(open).await;
    e.reg
        .set_vault(keys(&MasterKey::generate(), &[]), FakeTargets::new());
    e.reg
        .create_identity(&e.admin, identity("w"))
        .await
        .unwrap();
    let mut req = put("initial", Some("w"));
    req.rotation = Some(RotationPolicy {
        rotator: Rotator::Random { length: 32 },
        every_secs: 3600,
        schedule: None,
        overlap_secs: 600,
        notify: vec![],
    });
    e.reg.put_secret(&e.admin, "app/token", req).await.unwrap();
    // A cron schedule (UTC) sets the next rotation the same way.
    let mut cron = put("nightly", Some("w"));
    cron.rotation = Some(RotationPolicy {
        rotator: Rotator::Random { length: 32 },
        every_secs: 0,
        schedule: Some("30 3 * * *".into()),
        overlap_secs: 0,
        notify: vec![],
    });
    let s = e
        .reg
        .put_secret(&e.admin, "app/nightly", cron)
        .await
        .unwrap();
    assert_eq!(
        s.next_rotation_at,
        Some(time::macros::datetime!(2026-01-01 03:30 UTC))
    );
    let mut bad = put("x", Some("w"));
    bad.rotation = Some(RotationPolicy {
        rotator: Rotator::Random { length: 32 },
        every_secs: 0,
        schedule: Some("61 * * * *".into()),
        overlap_secs: 0,
        notify: vec![],
    });
    assert!(e.reg.put_secret(&e.admin, "app/bad", bad).await.is_err());
    assert_eq!(e.reg.vault_maintenance().await.unwrap(), 0, "nothing due");
    e.clock.advance(Duration::seconds(3601));
    // Both are due now (the nightly one at 03:30, an hour and a bit in).
    assert_eq!(e.reg.vault_maintenance().await.unwrap(), 1);
    let nightly = e.reg.secret_metadata(&e.admin, "app/nightly").unwrap();
    assert_eq!(nightly.current_version, 1, "not yet 03:30");
    let s = e.reg.secret_metadata(&e.admin, "app/token").unwrap();
    assert_eq!(s.current_version, 2);
    let v1 = s.version(1).unwrap();
    assert_eq!(v1.state, SecretVersionState::Previous);
    assert_eq!(v1.retire_at, Some(e.clock.now() + Duration::seconds(600)));
    assert_eq!(
        s.next_rotation_at,
        Some(e.clock.now() + Duration::seconds(3600))
    );
    let r = e
        .reg
        .read_secret(&e.admin, "app/token", None, None)
        .await
        .unwrap();
    assert_eq!(r.value.0.len(), 32);
    assert_ne!(r.value.0, "initial");
    e.clock.advance(Duration::seconds(601));
    e.reg.vault_maintenance().await.unwrap();
    let s = e.reg.secret_metadata(&e.admin, "app/token").unwrap();
    assert_eq!(s.version(1).unwrap().state, SecretVersionState::Retired);
}

pub async fn an_interrupted_rotation_is_settled_by_asking_the_target(open: Open) {
    for (answer, expect_current) in [(Check::Ok, 2), (Check::Fail, 1), (Check::Down, 2)] {
        let key = ServerKey::generate();
        let fresh = open(&key);
        let store = fresh.store.clone();
        let clock = Arc::new(FakeClock::new(
            time::macros::datetime!(2026-01-01 00:00 UTC),
        ));
        let master = MasterKey::generate();
        let reg = Arc::new(Registry::new(
            store.clone(),
            clock.clone(),
            Policy::default(),
            &key,
        ));
        let fake = FakeTargets::new();
        reg.set_vault(keys(&master, &[]), fake.clone());
        reg.maintain_signing_keys().await.unwrap();
        let admin = Actor::system("t");
        let created = reg.bootstrap_admin("admin").await.unwrap();
        let op = reg.authenticate(&created.token, "t", "test").await.unwrap();
        reg.create_team(
            &op,
            warden_types::CreateTeamRequest {
                name: "payments".into(),
                description: None,
            },
        )
        .await
        .unwrap();
        reg.create_identity(&op, identity("w")).await.unwrap();
        reg.add_database(&op, database_request(3600)).await.unwrap();
        let mut req = put("old-password", Some("w"));
        req.rotation = Some(RotationPolicy {
            rotator: Rotator::Postgres {
                database: "databases/main".into(),
                accounts: vec!["app_single".into()],
                check_sql: None,
            },
            every_secs: 0,
            schedule: None,
            overlap_secs: 0,
            notify: vec![],
        });
        reg.put_secret(&op, "apps/db", req).await.unwrap();
        // The process "dies" while the health check runs, after the password changed.
        *fake.check.lock().unwrap() = Check::Hang;
        let running = {
            let reg = reg.clone();
            let admin = admin.clone();
            tokio::spawn(async move { reg.rotate_secret(&admin, "apps/db").await })
        };
        for _ in 0..200 {
            if fake
                .calls()
                .iter()
                .any(|c| c.starts_with("check app_single"))
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        running.abort();
        let _ = running.await;
        let new_password = fake
            .calls()
            .iter()
            .find_map(|c| c.strip_prefix("check app_single ").map(str::to_owned))
            .unwrap();
        // The database was sent the password's SCRAM verifier, never the password.
        let alter = fake
            .calls()
            .into_iter()
            .find(|c| c.starts_with("execute ALTER ROLE \"app_single\""))
            .unwrap();
        assert!(alter.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "{alter}");
        assert!(!alter.contains(&new_password));
        drop(reg);
        clock.advance(Duration::seconds(1));
        // Restart: a new registry over the same store; the target answers for the new password.
        let restarted = Registry::new(store.clone(), clock.clone(), Policy::default(), &key);
        let fake2 = FakeTargets::new();
        *fake2.check.lock().unwrap() = answer;
        restarted.set_vault(keys(&master, &[]), fake2.clone());
        restarted.maintain_signing_keys().await.unwrap();
        let s = restarted.secret_metadata(&admin, "apps/db").unwrap();
        assert_eq!(s.version(2).unwrap().state, SecretVersionState::Pending);
        let read = restarted
            .read_secret(&admin, "apps/db", None, None)
            .await
            .unwrap();
        assert_eq!(read.version, 1, "a pending value is never served");
        if store.shared() {
            // Another node could still be running it: settled once no rotation can be.
            assert_eq!(restarted.vault_maintenance().await.unwrap(), 0, "too early");
            clock.advance(Duration::seconds(120));
        }
        // (Otherwise it began before this process started and nobody else shares the store:
        // settled at once.)
        assert_eq!(restarted.vault_maintenance().await.unwrap(), 1);
        if answer == Check::Down {
            // No answer decides nothing: still pending, asked again a minute later.
            let s = restarted.secret_metadata(&admin, "apps/db").unwrap();
            assert_eq!(s.version(2).unwrap().state, SecretVersionState::Pending);
            assert_eq!(restarted.vault_maintenance().await.unwrap(), 0, "not yet");
            *fake2.check.lock().unwrap() = Check::Ok;
            clock.advance(Duration::seconds(61));
            assert_eq!(restarted.vault_maintenance().await.unwrap(), 1);
        }
        assert!(
            fake2
                .calls()
                .contains(&format!("check app_single {new_password}")),
            "asked the target about the pending password: {:?}",
            fake2.calls()
        );
        let s = restarted.secret_metadata(&admin, "apps/db").unwrap();
        assert_eq!(s.current_version, expect_current, "{answer:?}");
        let read = restarted
            .read_secret(&admin, "apps/db", None, None)
            .await
            .unwrap();
        if answer != Check::Fail {
            assert_eq!(read.value.0, new_password);
        } else {
            assert_eq!(read.value.0, "old-password");
            assert_eq!(s.version(2).unwrap().state, SecretVersionState::Failed);
            let findings = restarted
                .list_findings(&admin, &Default::default(), None, 10)
                .unwrap();
            assert_eq!(findings.len(), 1);
            assert_eq!(findings[0].path, "apps/db");
        }
        drop(fresh.guard);
    }
}
