//! Several nodes on one store: hearing other nodes' changes, and running cluster-wide jobs on
//! one node at a time.
//!
//! - **Invalidation.** Jobs that change what the caches hold name it ([`Topic`]) with
//!   `WriteTx::notify_peers`; a shared store tells every node once the transaction commits and the
//!   [`PeerHandler`] makes the matching caches stale. While a node cannot hear the others
//!   ([`PeerEvent::Lost`]) its authentication caches are switched off — every authentication reads
//!   the database — so a revocation made elsewhere is never answered from memory (fail closed).
//! - **Leases.** A cluster-wide job runs on the node that holds its lease. Taking or renewing a
//!   lease is a write job, and write transactions are serialised across nodes, so two nodes never
//!   hold one at once. The lease's `fence` grows at every change of holder; the leader's own writes
//!   check, inside their transaction, that the lease is still theirs under the same fence and not
//!   expired — a node that stalled past its lease cannot write as leader afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use time::Duration;
use warden_types::{AuditOutcome, Credential, Identity};

use super::Registry;
use super::cache::GenCache;
use super::tokens::ClientKeys;
use crate::actor::Actor;
use crate::error::CoreError;
use crate::ports::{Lease, OperatorRecord, PeerEvent, PeerListener, Topic, WriteTx};

/// The lease of the periodic jobs (expiry sweeps, key rotation, purges).
pub const JOBS_LEASE: &str = "jobs";

/// Makes this node's caches stale when another node changed what they hold.
pub(crate) struct PeerHandler {
    pub(crate) operators: Arc<GenCache<[u8; 32], OperatorRecord>>,
    pub(crate) keys: Arc<GenCache<[u8; 32], (Credential, Identity)>>,
    pub(crate) clients: Arc<GenCache<uuid::Uuid, ClientKeys>>,
    pub(crate) federation: Arc<GenCache<String, super::federation::IssuerEntry>>,
    pub(crate) policy_engine: Arc<GenCache<u8, warden_policy::Engine>>,
    pub(crate) checked_tokens: Arc<GenCache<[u8; 32], super::token_check::CheckedToken>>,
    pub(crate) agent_delegations: Arc<GenCache<uuid::Uuid, Vec<warden_types::Delegation>>>,
    pub(crate) keyring_stale: Arc<AtomicBool>,
    pub(crate) hearing: Arc<AtomicBool>,
    /// Another node rotated the store's login password: fetch it at the next job tick.
    pub(crate) store_credential_stale: Arc<AtomicBool>,
}

impl PeerHandler {
    fn caches(&self, enabled: bool) {
        self.operators.set_enabled(enabled);
        self.keys.set_enabled(enabled);
        self.clients.set_enabled(enabled);
        self.federation.set_enabled(enabled);
        self.policy_engine.set_enabled(enabled);
        self.checked_tokens.set_enabled(enabled);
        self.agent_delegations.set_enabled(enabled);
    }
}

impl PeerListener for PeerHandler {
    fn peer_event(&self, event: PeerEvent) {
        match event {
            PeerEvent::Changed(Topic::Authentication) => {
                self.operators.invalidate();
                self.keys.invalidate();
                self.clients.invalidate();
                self.federation.invalidate();
                self.policy_engine.invalidate();
                self.checked_tokens.invalidate();
                self.agent_delegations.invalidate();
            }
            PeerEvent::Changed(Topic::SigningKeys) => {
                self.keyring_stale.store(true, Ordering::Release);
            }
            PeerEvent::Changed(Topic::StoreCredential) => {
                self.store_credential_stale.store(true, Ordering::Release);
            }
            PeerEvent::Lost => {
                self.hearing.store(false, Ordering::Release);
                self.caches(false);
                self.keyring_stale.store(true, Ordering::Release);
            }
            PeerEvent::Restored => {
                self.hearing.store(true, Ordering::Release);
                self.caches(true);
                self.keyring_stale.store(true, Ordering::Release);
            }
        }
    }
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub fence: u64,
}

impl Registry {
    /// Whether this node hears the other nodes' changes (always, on a store no other node
    /// shares).
    pub fn hearing_peers(&self) -> bool {
        self.hearing.load(Ordering::Acquire)
    }

    /// Whether this node held the jobs lease at its last attempt.
    pub fn is_leader(&self) -> bool {
        self.fence.lock().map(|f| f.is_some()).unwrap_or(false)
    }

    /// Takes or renews the lease `name` for `holder` until `ttl` from now. Returns the fence when
    /// `holder` holds it, `None` when another node does. A change of holder is audited.
    pub async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, CoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let fence = self
            .write(move |tx, job| {
                let now = job.now();
                let current = tx.lease(&name)?;
                let fence = match &current {
                    Some(l) if l.holder == holder => l.fence,
                    Some(l) if l.expires_at > now => return Ok(None),
                    Some(l) => l.fence + 1,
                    None => 1,
                };
                tx.put_lease(&Lease {
                    name: name.clone(),
                    holder: holder.clone(),
                    fence,
                    expires_at: now + ttl,
                })?;
                if current.as_ref().is_none_or(|l| l.holder != holder) {
                    job.record(
                        tx,
                        &Actor::system("cluster"),
                        "cluster.lease_taken",
                        format!("lease:{name}"),
                        AuditOutcome::Success,
                        json!({
                            "holder": holder,
                            "fence": fence,
                            "previous": current.as_ref().map(|l| l.holder.clone()),
                        }),
                    )?;
                }
                Ok(Some(Fence {
                    name,
                    holder,
                    fence,
                }))
            })
            .await;
        // Not knowing (an error) counts as not holding.
        if let Ok(mut slot) = self.fence.lock() {
            *slot = fence.as_ref().ok().cloned().flatten();
        }
        fence
    }
}

/// Inside a leader's write: refuses unless `fence` still holds its lease, unexpired.
pub(crate) fn check_fence(
    tx: &mut dyn WriteTx,
    fence: &Fence,
    now: time::OffsetDateTime,
) -> Result<(), CoreError> {
    match tx.lease(&fence.name)? {
        Some(l) if l.holder == fence.holder && l.fence == fence.fence && l.expires_at > now => {
            Ok(())
        }
        _ => Err(CoreError::InvalidState(format!(
            "this node no longer holds the {:?} lease (fence {})",
            fence.name, fence.fence
        ))),
    }
}
