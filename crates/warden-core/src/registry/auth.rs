//! Authentication of callers and of NHI credentials, and usage tracking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;
use warden_crypto::token::{self, TokenKind};
use warden_types::{AuditOutcome, CredentialKind, KeyVerification, WhoAmI};

use super::Registry;
use crate::actor::{Actor, Principal};
use crate::clock::Clock;
use crate::error::{CoreError, StoreError};
use crate::lifecycle::check_usable;
use crate::ports::{BatchHook, NewAuditEvent, ScopeUsage, SourceUsage, WriteTx};

/// Usage collected in memory and written in one batch (no write per authentication):
/// `last_used_at` per credential, and the aggregates the hygiene checks read — when each scope
/// was last carried by a token, and which networks each credential was used from.
#[derive(Debug, Default)]
pub struct UsageTracker(Mutex<UsageBatch>);

#[derive(Debug, Default)]
pub(crate) struct UsageBatch {
    pub(crate) last_used: HashMap<Uuid, (Uuid, OffsetDateTime)>,
    pub(crate) scopes: HashMap<(Uuid, String), OffsetDateTime>,
    /// (credential, network) → (identity, first, last, count).
    pub(crate) sources: HashMap<(Uuid, String), (Uuid, OffsetDateTime, OffsetDateTime, u64)>,
}

/// Most distinct (identity, scope) and (credential, network) pairs held between flushes; beyond
/// them, new pairs wait for the next use after a flush (usage is a hint, not an audit record —
/// the audit log has every authentication).
const MAX_USAGE_PAIRS: usize = 100_000;

/// The network a source address belongs to, as usage aggregates keep it: IPv4 /24, IPv6 /64.
pub fn source_network(source: &str) -> Option<String> {
    match source.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("{a}.{b}.{c}.0/24"))
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

impl UsageTracker {
    pub(crate) fn record(&self, credential: Uuid, identity: Uuid, at: OffsetDateTime) {
        if let Ok(mut m) = self.0.lock() {
            m.last_used.insert(credential, (identity, at));
        }
    }

    /// A token issued to `identity` with `credential` from `network` (see [`source_network`]),
    /// carrying `scopes`.
    pub fn record_use(
        &self,
        credential: Option<Uuid>,
        identity: Uuid,
        scopes: &[String],
        network: Option<&str>,
        at: OffsetDateTime,
    ) {
        let network = credential.and(network);
        let Ok(mut m) = self.0.lock() else { return };
        if let Some(c) = credential {
            m.last_used.insert(c, (identity, at));
        }
        for s in scopes {
            let key = (identity, s.clone());
            if m.scopes.len() < MAX_USAGE_PAIRS || m.scopes.contains_key(&key) {
                m.scopes.insert(key, at);
            }
        }
        if let (Some(c), Some(n)) = (credential, network) {
            let full = m.sources.len() >= MAX_USAGE_PAIRS;
            match m.sources.entry((c, n.to_owned())) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let v = e.get_mut();
                    v.2 = at;
                    v.3 += 1;
                }
                std::collections::hash_map::Entry::Vacant(e) if !full => {
                    e.insert((identity, at, at, 1));
                }
                std::collections::hash_map::Entry::Vacant(_) => {}
            }
        }
    }

    pub(crate) fn take(&self) -> UsageBatch {
        match self.0.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => UsageBatch::default(),
        }
    }
}

/// An authentication event waiting for the writer, with the time of the attempt and the place it
/// holds in the backpressure semaphore (released when the event is committed).
#[derive(Debug)]
struct Pending {
    at: OffsetDateTime,
    event: NewAuditEvent,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct BufferState {
    /// Waiting for the next transaction, in attempt order.
    queued: std::collections::VecDeque<Pending>,
    /// Appended in the transaction now running; released on commit, re-queued in front on failure.
    inflight: Vec<Pending>,
}

/// Authentication events on their way to the audit chain. The store's writer appends everything
/// queued at the start of every transaction ([`BatchHook`]); an event leaves the buffer only once
/// the transaction holding it has committed, so none is lost or written twice.
#[derive(Debug)]
pub struct AuthBuffer {
    state: Mutex<BufferState>,
    /// A transaction that will drain the buffer is queued or running.
    scheduled: AtomicBool,
    clock: Arc<dyn Clock>,
    /// Events committed through this buffer.
    pub(crate) written: AtomicU64,
}

impl AuthBuffer {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        AuthBuffer {
            state: Mutex::new(BufferState::default()),
            scheduled: AtomicBool::new(false),
            clock,
            written: AtomicU64::new(0),
        }
    }

    /// Queues an event; its time is taken under the lock, so times follow the chain's order.
    fn push(
        &self,
        event: NewAuditEvent,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), CoreError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| StoreError::Internal("the audit buffer is poisoned".into()))?;
        let at = self.clock.now();
        st.queued.push_back(Pending {
            at,
            event,
            _permit: permit,
        });
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.state
            .lock()
            .map(|st| st.queued.is_empty())
            .unwrap_or(true)
    }
}

impl BatchHook for AuthBuffer {
    fn in_transaction(&self, tx: &mut dyn WriteTx) -> Result<(), CoreError> {
        let batch: Vec<Pending> = match self.state.lock() {
            Ok(mut st) => st.queued.drain(..).collect(),
            Err(_) => {
                return Err(StoreError::Internal("the audit buffer is poisoned".into()).into());
            }
        };
        let mut result = Ok(());
        for p in &batch {
            if let Err(e) = crate::audit::append(tx, p.at, p.event.clone()) {
                result = Err(e.into());
                break;
            }
        }
        // On failure the store rolls the hook's writes back and the transaction goes on without
        // them: the events go back to the front of the queue for the next transaction. On success
        // they are in flight until `finished` reports whether the transaction committed.
        if let Ok(mut st) = self.state.lock() {
            if result.is_err() {
                for p in batch.into_iter().rev() {
                    st.queued.push_front(p);
                }
            } else {
                st.inflight = batch;
            }
        }
        result
    }

    fn finished(&self, committed: bool) -> bool {
        let (written, more) = {
            let Ok(mut st) = self.state.lock() else {
                return false;
            };
            let inflight = std::mem::take(&mut st.inflight);
            let written = if committed {
                inflight
            } else {
                for p in inflight.into_iter().rev() {
                    st.queued.push_front(p);
                }
                Vec::new()
            };
            (written, !st.queued.is_empty())
        };
        // Release the written events (and their permits) outside the lock: verifiers push into
        // the buffer under it.
        self.written
            .fetch_add(written.len() as u64, Ordering::Relaxed);
        drop(written);
        self.scheduled.store(more && committed, Ordering::Release);
        more && committed
    }
}

pub(crate) enum KeyLookup {
    Unknown,
    Orphan(Uuid),
    Found(Arc<(warden_types::Credential, warden_types::Identity)>),
}

/// Failed bearer authentications per source address, in fixed windows.
#[derive(Debug, Default)]
pub struct FailureLimiter(Mutex<HashMap<String, (OffsetDateTime, u32)>>);

/// Addresses tracked at most; beyond it, expired windows are dropped (and, failing that, all).
const MAX_TRACKED_SOURCES: usize = 100_000;

impl FailureLimiter {
    /// Seconds the source must wait, if it is over the limit in its current window.
    pub(crate) fn throttled(
        &self,
        source: &str,
        now: OffsetDateTime,
        policy: &crate::Policy,
    ) -> Option<u64> {
        let mut m = self.0.lock().ok()?;
        let (start, count) = *m.get(source)?;
        let end = start + policy.auth_failure_window;
        if now >= end {
            m.remove(source);
            return None;
        }
        (count >= policy.auth_failure_limit).then(|| {
            u64::try_from((end - now).whole_seconds())
                .unwrap_or(0)
                .max(1)
        })
    }

    /// Counts a failure; true when this one reaches the limit (throttling starts).
    pub(crate) fn fail(&self, source: &str, now: OffsetDateTime, policy: &crate::Policy) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        if m.len() >= MAX_TRACKED_SOURCES && !m.contains_key(source) {
            m.retain(|_, (start, _)| now < *start + policy.auth_failure_window);
            if m.len() >= MAX_TRACKED_SOURCES {
                m.clear();
            }
        }
        let entry = m.entry(source.to_owned()).or_insert((now, 0));
        if now >= entry.0 + policy.auth_failure_window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 == policy.auth_failure_limit
    }
}

/// The one message an unauthenticated caller gets, whatever check failed; the audit event says
/// which.
const AUTH_FAILED: &str = "invalid, expired or revoked credentials";

impl Registry {
    /// Authenticates a bearer token on `/v1`: an operator token, or an NHI's API key.
    pub async fn authenticate(
        &self,
        bearer: &str,
        request_id: &str,
        source: &str,
    ) -> Result<Actor, CoreError> {
        let anonymous = Actor {
            principal: Principal::Anonymous,
            request_id: request_id.to_owned(),
            source: source.to_owned(),
        };
        let now = self.now();
        if let Some(retry_after_secs) = self.failures.throttled(source, now, &self.policy) {
            return Err(CoreError::Throttled { retry_after_secs });
        }
        let result = self.authenticate_bearer(bearer, &anonymous).await;
        if matches!(result, Err(CoreError::Unauthenticated(_)))
            && self.failures.fail(source, now, &self.policy)
        {
            self.record_authentication(NewAuditEvent {
                actor: anonymous.label(),
                action: "auth.throttled",
                target: format!("source:{source}"),
                outcome: AuditOutcome::Denied,
                request_id: anonymous.request_id.clone(),
                source: anonymous.source.clone(),
                details: json!({
                    "failures": self.policy.auth_failure_limit,
                    "window_seconds": self.policy.auth_failure_window.whole_seconds(),
                })
                .to_string(),
            })
            .await?;
        }
        result
    }

    async fn authenticate_bearer(
        &self,
        bearer: &str,
        anonymous: &Actor,
    ) -> Result<Actor, CoreError> {
        let (request_id, source) = (anonymous.request_id.as_str(), anonymous.source.as_str());
        match token::parse(bearer) {
            Ok(TokenKind::Operator) => {
                let hash = self.secret_hasher.hash(bearer.as_bytes());
                let found = match self.operators.get(&hash) {
                    Some(hit) => Some(hit),
                    None => {
                        let generation = self.operators.generation();
                        let read = self.reader()?.operator_by_token_hash(&hash)?.map(Arc::new);
                        if let Some(r) = &read {
                            self.operators.put(hash, generation, Arc::clone(r));
                        }
                        read
                    }
                };
                match found.as_deref() {
                    Some(r) if r.operator.disabled_at.is_none() => Ok(Actor {
                        principal: Principal::Operator {
                            id: r.operator.id,
                            name: r.operator.name.clone(),
                            role: r.operator.role,
                            teams: r.team_ids.clone(),
                        },
                        request_id: request_id.to_owned(),
                        source: source.to_owned(),
                    }),
                    Some(r) => {
                        self.auth_failure(
                            anonymous,
                            "operator.authenticate",
                            format!("operator:{}", r.operator.id),
                            "operator disabled",
                        )
                        .await?;
                        Err(CoreError::Unauthenticated(AUTH_FAILED.into()))
                    }
                    None => {
                        self.auth_failure(
                            anonymous,
                            "operator.authenticate",
                            "operator:unknown".into(),
                            "unknown token",
                        )
                        .await?;
                        Err(CoreError::Unauthenticated(AUTH_FAILED.into()))
                    }
                }
            }
            Ok(TokenKind::ApiKey) => {
                let v = self.verify_key(anonymous, bearer).await?;
                match (v.valid, v.identity_id, v.credential_id, v.identity) {
                    (true, Some(id), Some(credential_id), Some(name)) => Ok(Actor {
                        principal: Principal::Identity {
                            id,
                            name,
                            credential_id: Some(credential_id),
                            token_scopes: None,
                        },
                        request_id: request_id.to_owned(),
                        source: source.to_owned(),
                    }),
                    _ => Err(CoreError::Unauthenticated(AUTH_FAILED.into())),
                }
            }
            Ok(TokenKind::ClientSecret) => {
                self.auth_failure(
                    anonymous,
                    "operator.authenticate",
                    "credential:unknown".into(),
                    "client secret used as a bearer token",
                )
                .await?;
                Err(CoreError::Unauthenticated(
                    "a client secret is not a bearer token: use it at the token endpoint".into(),
                ))
            }
            Err(e) => {
                self.auth_failure(
                    anonymous,
                    "operator.authenticate",
                    "operator:unknown".into(),
                    &e.to_string(),
                )
                .await?;
                Err(CoreError::Unauthenticated(AUTH_FAILED.into()))
            }
        }
    }

    async fn auth_failure(
        &self,
        actor: &Actor,
        action: &'static str,
        target: String,
        why: &str,
    ) -> Result<(), CoreError> {
        let event = NewAuditEvent {
            actor: actor.label(),
            action,
            target,
            outcome: AuditOutcome::Failure,
            request_id: actor.request_id.clone(),
            source: actor.source.clone(),
            details: json!({ "reason": why }).to_string(),
        };
        self.record_authentication(event).await
    }

    /// Checks an NHI API key for a resource server. Every attempt, valid or not, is audited before
    /// the answer is returned; `last_used_at` is updated in the background.
    pub async fn verify_key(
        &self,
        caller: &Actor,
        key: &str,
    ) -> Result<KeyVerification, CoreError> {
        let invalid = KeyVerification {
            valid: false,
            identity_id: None,
            identity: None,
            environment: None,
            owner: None,
            scopes: None,
            credential_id: None,
            expires_at: None,
        };
        let (answer, target, why) = match token::parse(key) {
            Ok(TokenKind::ApiKey) => {
                let hash = self.secret_hasher.hash(key.as_bytes());
                let now = self.now();
                match self.key_lookup(&hash)? {
                    KeyLookup::Unknown => (invalid, "credential:unknown".to_owned(), "unknown key"),
                    KeyLookup::Orphan(c) => {
                        (invalid, format!("credential:{c}"), "identity missing")
                    }
                    KeyLookup::Found(pair) => {
                        let (c, i) = &*pair;
                        let target = format!("credential:{}", c.id);
                        if c.kind != CredentialKind::ApiKey {
                            (invalid, target, "not an api key")
                        } else {
                            match check_usable(c, i, now) {
                                Err(why) => (invalid, target, why),
                                Ok(()) => {
                                    self.usage.record(c.id, i.id, now);
                                    (
                                        KeyVerification {
                                            valid: true,
                                            identity_id: Some(i.id),
                                            identity: Some(i.name.clone()),
                                            environment: Some(i.environment.clone()),
                                            owner: Some(i.owner.clone()),
                                            scopes: Some(i.scopes.clone()),
                                            credential_id: Some(c.id),
                                            expires_at: Some(c.expires_at),
                                        },
                                        target,
                                        "",
                                    )
                                }
                            }
                        }
                    }
                }
            }
            Ok(_) => (invalid, "credential:unknown".to_owned(), "not an api key"),
            Err(e) => (
                invalid,
                "credential:unknown".to_owned(),
                match e {
                    token::TokenError::Checksum => "checksum mismatch",
                    _ => "malformed key",
                },
            ),
        };
        let event = NewAuditEvent {
            actor: match answer.identity_id {
                Some(id) => format!("identity:{id}"),
                None => "anonymous".into(),
            },
            action: "credential.authenticate",
            target,
            outcome: if answer.valid {
                AuditOutcome::Success
            } else {
                AuditOutcome::Failure
            },
            request_id: caller.request_id.clone(),
            source: caller.source.clone(),
            details: if answer.valid {
                json!({ "verifier": caller.label() }).to_string()
            } else {
                json!({ "verifier": caller.label(), "reason": why }).to_string()
            },
        };
        self.record_authentication(event).await?;
        Ok(answer)
    }

    /// Records an authentication attempt. With `durable_authentication_events` the answer waits
    /// for the commit; otherwise it waits only until the event has its place in the writer's
    /// ordered queue (committed with the next group commit, within milliseconds). A full queue
    /// fails the request: no authentication is answered without its event.
    pub(crate) async fn record_authentication(
        &self,
        event: NewAuditEvent,
    ) -> Result<(), CoreError> {
        if self.policy.durable_authentication_events {
            return self
                .write(move |tx, job| Ok(crate::audit::append(tx, job.now(), event)?))
                .await
                .map(|_| ());
        }
        // Backpressure: at most AUTH_EVENTS_IN_FLIGHT events wait for the writer; further callers
        // wait for a place instead of being refused (refusals would burn the CPU the writer needs).
        let permit = Arc::clone(&self.auth_permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the audit queue is closed".into()))?;
        self.auth_buffer.push(event, permit)?;
        // Make sure a transaction will come to drain it: any write does; if none is pending, queue
        // an empty job. Refused at the door (overloaded or closed): fail closed — the event stays
        // queued and is written with the next transaction.
        if !self.auth_buffer.scheduled.swap(true, Ordering::AcqRel) {
            let mut receipt = self.store.submit(Box::new(|_tx| {
                Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
            }));
            if let Ok(Err(e)) = receipt.try_recv() {
                self.auth_buffer.scheduled.store(false, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Queues a transaction if authentication events are waiting (a periodic safety net; the
    /// writer drains the buffer in every transaction anyway).
    pub fn nudge_audit(&self) {
        if !self.auth_buffer.is_empty() && !self.auth_buffer.scheduled.swap(true, Ordering::AcqRel)
        {
            let mut receipt = self.store.submit(Box::new(|_tx| {
                Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
            }));
            if let Ok(Err(_)) = receipt.try_recv() {
                self.auth_buffer.scheduled.store(false, Ordering::Release);
            }
        }
    }

    /// The credential a secret hash belongs to, and its identity: from the cache when the entry is
    /// current, else from the store (and then cached).
    pub(crate) fn key_lookup(&self, hash: &[u8; 32]) -> Result<KeyLookup, CoreError> {
        if let Some(hit) = self.keys.get(hash) {
            return Ok(KeyLookup::Found(hit));
        }
        let generation = self.keys.generation();
        let store = self.reader()?;
        let Some(c) = store.credential_by_secret_hash(hash)? else {
            return Ok(KeyLookup::Unknown);
        };
        let Some(i) = store.identity(c.identity_id)? else {
            return Ok(KeyLookup::Orphan(c.id));
        };
        let pair = Arc::new((c, i));
        self.keys.put(*hash, generation, Arc::clone(&pair));
        Ok(KeyLookup::Found(pair))
    }

    pub fn whoami(&self, actor: &Actor) -> Result<WhoAmI, CoreError> {
        match &actor.principal {
            Principal::Operator { id, name, role, .. } => {
                let teams = self
                    .reader()?
                    .operator(*id)?
                    .map(|r| r.operator.teams)
                    .unwrap_or_default();
                Ok(WhoAmI::Operator {
                    id: *id,
                    name: name.clone(),
                    role: *role,
                    teams,
                })
            }
            Principal::Identity {
                id,
                credential_id,
                token_scopes,
                ..
            } => {
                let i = self
                    .reader()?
                    .identity(*id)?
                    .ok_or_else(|| CoreError::Unauthenticated(AUTH_FAILED.into()))?;
                Ok(WhoAmI::Identity {
                    id: i.id,
                    name: i.name,
                    environment: i.environment,
                    owner: i.owner,
                    scopes: i.scopes,
                    credential_id: *credential_id,
                    token_scopes: token_scopes.clone(),
                })
            }
            _ => Err(CoreError::Unauthenticated(AUTH_FAILED.into())),
        }
    }

    /// Writes the collected usage (`last_used_at`, scope and source aggregates) in one job.
    /// Returns how many credentials were touched.
    pub async fn flush_usage(&self) -> Result<usize, CoreError> {
        let batch = self.usage.take();
        let (alerts, dropped) = self.anomaly.take_alerts();
        if dropped > 0 {
            tracing::warn!(dropped, "anomaly alerts dropped: too many in one second");
        }
        if batch.last_used.is_empty()
            && batch.scopes.is_empty()
            && batch.sources.is_empty()
            && alerts.is_empty()
        {
            return Ok(0);
        }
        let n = batch.last_used.len();
        let scopes: Vec<ScopeUsage> = batch
            .scopes
            .into_iter()
            .map(|((identity, scope), last_used)| ScopeUsage {
                identity,
                scope,
                last_used,
            })
            .collect();
        let sources: Vec<SourceUsage> = batch
            .sources
            .into_iter()
            .map(
                |((credential, network), (identity, first_seen, last_seen, count))| SourceUsage {
                    credential,
                    identity,
                    network,
                    first_seen,
                    last_seen,
                    count,
                },
            )
            .collect();
        let last_used = batch.last_used;
        self.write(move |tx, job| {
            for (credential, (identity, at)) in last_used {
                tx.touch_last_used(credential, identity, at)?;
            }
            tx.record_usage(&scopes, &sources)?;
            super::anomaly::write_alerts(tx, job, &alerts)?;
            Ok(n)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_source_is_throttled_after_the_limit_until_its_window_ends() {
        let policy = crate::Policy {
            auth_failure_limit: 3,
            auth_failure_window: Duration::seconds(10),
            ..Default::default()
        };
        let l = FailureLimiter::default();
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        assert!(!l.fail("a", t0, &policy));
        assert!(!l.fail("a", t0, &policy));
        assert_eq!(l.throttled("a", t0, &policy), None, "below the limit");
        assert!(
            l.fail("a", t0 + Duration::seconds(1), &policy),
            "the third failure starts throttling"
        );
        assert_eq!(
            l.throttled("a", t0 + Duration::seconds(2), &policy),
            Some(8)
        );
        assert_eq!(
            l.throttled("b", t0 + Duration::seconds(2), &policy),
            None,
            "other sources are not affected"
        );
        assert_eq!(
            l.throttled("a", t0 + Duration::seconds(10), &policy),
            None,
            "the window ended"
        );
        assert!(
            !l.fail("a", t0 + Duration::seconds(11), &policy),
            "a new window starts at one"
        );
    }
}
