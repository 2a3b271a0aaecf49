//! The use cases of the registry. Every mutation runs as one store job: authorisation, the change
//! and its audit event commit together or not at all.

pub mod anomaly;
mod approvals;
mod auth;
pub mod cache;
pub mod cluster;
mod credentials;
mod delegation;
pub mod federation;
pub mod findings;
pub mod hygiene;
mod identities;
mod keys;
mod leases;
mod mcp;
mod policy;
mod posture;
mod reviews;
mod rotation;
pub mod sinks;
pub mod store_credential;
mod teams;
mod token_check;
mod tokens;
pub mod vault;

use std::any::Any;
use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;
use warden_crypto::{KeyedHasher, ServerKey};
use warden_types::{AuditOutcome, AuditVerifyReport, Credential, Identity};

pub use auth::{AuthBuffer, FailureLimiter, UsageTracker};
pub use keys::SIGNING_KEY_SEAL_LABEL;
pub use tokens::{
    ClientAuth, ClientCert, JWT_BEARER_ASSERTION, JWT_BEARER_GRANT, OAuthError,
    TOKEN_EXCHANGE_GRANT, TokenRequest, in_cidr,
};

use crate::actor::Actor;
use crate::audit;
use crate::clock::Clock;
use crate::error::{CoreError, StoreError};
use crate::policy::Policy;
use crate::ports::{AuditFilter, NewAuditEvent, OperatorRecord, ReadStore, Store, WriteTx};
use cache::GenCache;

/// Purpose labels of the subkeys derived from the server key.
pub const SECRET_HASH_LABEL: &str = "warden.secret-hash.v1";
pub const CHECKPOINT_LABEL: &str = "warden.audit-checkpoint.v1";

/// The registry's use cases over a store and a clock.
pub struct Registry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: Arc<Policy>,
    secret_hasher: KeyedHasher,
    checkpoint_hasher: KeyedHasher,
    usage: UsageTracker,
    /// Usage anomaly baselines and pending alerts.
    anomaly: anomaly::AnomalyWatch,
    /// The audit sinks' delivery state, as their runners last reported it.
    sink_status: std::sync::Mutex<std::collections::BTreeMap<String, warden_types::SinkStatus>>,
    /// Operator token hash → operator.
    operators: Arc<GenCache<[u8; 32], OperatorRecord>>,
    /// API key hash → the credential and its identity.
    keys: Arc<GenCache<[u8; 32], (Credential, Identity)>>,
    /// Client id → the identity and its registered public keys (for `private_key_jwt`).
    clients: Arc<GenCache<Uuid, tokens::ClientKeys>>,
    /// Places for authentication events queued but not yet appended.
    auth_permits: Arc<tokio::sync::Semaphore>,
    auth_buffer: Arc<AuthBuffer>,
    failures: FailureLimiter,
    /// Seals the token service's signing keys at rest.
    sealer: warden_crypto::sealed::Sealer,
    keyring: std::sync::RwLock<Arc<keys::Keyring>>,
    issuer: std::sync::OnceLock<String>,
    /// DPoP proofs presented to `/v1` (replay protection).
    proofs_seen: tokens::SeenProofs,
    /// Access tokens issued and token requests refused since start (for metrics).
    tokens_issued: std::sync::atomic::AtomicU64,
    tokens_denied: std::sync::atomic::AtomicU64,
    /// Whether this node hears other nodes' changes (see [`cluster`]).
    hearing: Arc<std::sync::atomic::AtomicBool>,
    /// Set when another node changed the signing keys: the keyring is rebuilt at next use.
    keyring_stale: Arc<std::sync::atomic::AtomicBool>,
    /// The jobs lease this node holds, if any: its leader writes are fenced with it.
    fence: std::sync::Mutex<Option<cluster::Fence>>,
    /// The vault's master keys and connectors, once configured.
    vault: std::sync::OnceLock<vault::VaultParts>,
    /// Where this node keeps its store login password, when it has one to rotate.
    store_credential: std::sync::OnceLock<Arc<dyn crate::ports::StoreCredentialSink>>,
    store_credential_stale: Arc<std::sync::atomic::AtomicBool>,
    /// Secrets being rotated on this node right now.
    rotating: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Fetches trusted issuers' keys.
    fetcher: std::sync::OnceLock<Arc<dyn federation::Fetcher>>,
    /// Trusted issuers' keys as last fetched.
    jwks: Arc<federation::JwksCache>,
    /// `iss` → the trusted issuer and its active rules, parsed.
    federation: Arc<GenCache<String, federation::IssuerEntry>>,
    /// The decision point's loaded policies (one entry, key 0).
    policy_engine: Arc<GenCache<u8, warden_policy::Engine>>,
    /// SHA-256 of an access token issued here → its check, while active.
    checked_tokens: Arc<GenCache<[u8; 32], token_check::CheckedToken>>,
    /// Agent → the delegations lent to it (revoked and expired ones included).
    agent_delegations: Arc<GenCache<Uuid, Vec<warden_types::Delegation>>>,
    /// Background jobs running on this node now (one run at a time per job).
    running_jobs: std::sync::Mutex<std::collections::HashSet<&'static str>>,
}

/// Authentication events that may wait for their commit at once. They live in the registry's
/// buffer, not in the store's job queue, so this bounds memory (~400 bytes each) and nothing else;
/// callers beyond it wait for a place (backpressure) rather than being refused.
pub const AUTH_EVENTS_IN_FLIGHT: usize = 65_536;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: Policy,
        key: &ServerKey,
    ) -> Self {
        let anomaly_policy = policy.anomaly.clone();
        let auth_buffer = Arc::new(AuthBuffer::new(Arc::clone(&clock)));
        store.set_batch_hook(Arc::clone(&auth_buffer) as Arc<dyn crate::ports::BatchHook>);
        let operators = Arc::new(GenCache::default());
        let keys = Arc::new(GenCache::default());
        let clients = Arc::new(GenCache::default());
        let federation = Arc::new(GenCache::default());
        let policy_engine = Arc::new(GenCache::default());
        let checked_tokens = Arc::new(GenCache::with_capacity(token_check::CHECKED_TOKENS));
        let agent_delegations = Arc::new(GenCache::default());
        let hearing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let keyring_stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store_credential_stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        store.set_peer_listener(Arc::new(cluster::PeerHandler {
            operators: Arc::clone(&operators),
            keys: Arc::clone(&keys),
            clients: Arc::clone(&clients),
            federation: Arc::clone(&federation),
            policy_engine: Arc::clone(&policy_engine),
            checked_tokens: Arc::clone(&checked_tokens),
            agent_delegations: Arc::clone(&agent_delegations),
            keyring_stale: Arc::clone(&keyring_stale),
            hearing: Arc::clone(&hearing),
            store_credential_stale: Arc::clone(&store_credential_stale),
        }));
        Registry {
            store,
            clock,
            policy: Arc::new(policy),
            secret_hasher: key.hasher(SECRET_HASH_LABEL),
            checkpoint_hasher: key.hasher(CHECKPOINT_LABEL),
            usage: UsageTracker::default(),
            anomaly: anomaly::AnomalyWatch::new(anomaly_policy),
            sink_status: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            operators,
            keys,
            clients,
            auth_permits: Arc::new(tokio::sync::Semaphore::new(AUTH_EVENTS_IN_FLIGHT)),
            auth_buffer,
            failures: FailureLimiter::default(),
            sealer: warden_crypto::sealed::Sealer::new(key, SIGNING_KEY_SEAL_LABEL),
            keyring: std::sync::RwLock::new(Arc::new(keys::Keyring::default())),
            issuer: std::sync::OnceLock::new(),
            proofs_seen: tokens::SeenProofs::default(),
            tokens_issued: std::sync::atomic::AtomicU64::new(0),
            tokens_denied: std::sync::atomic::AtomicU64::new(0),
            hearing,
            keyring_stale,
            fence: std::sync::Mutex::new(None),
            vault: std::sync::OnceLock::new(),
            store_credential: std::sync::OnceLock::new(),
            store_credential_stale,
            rotating: std::sync::Mutex::new(std::collections::HashSet::new()),
            fetcher: std::sync::OnceLock::new(),
            jwks: Arc::new(federation::JwksCache::default()),
            federation,
            policy_engine,
            checked_tokens,
            agent_delegations,
            running_jobs: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Records one use of an identity (a token it obtained) in the usage aggregates, as the token
    /// endpoint does; written at the next [`Registry::flush_usage`]. For importers of usage
    /// recorded elsewhere, and the estate generator.
    pub fn record_usage(
        &self,
        credential: Option<Uuid>,
        identity: Uuid,
        scopes: &[String],
        source: &str,
        at: OffsetDateTime,
    ) {
        let network = auth::source_network(source);
        self.usage
            .record_use(credential, identity, scopes, network.as_deref(), at);
    }

    /// A token issued to `identity`, as the token endpoint sees it: recorded in the usage
    /// aggregates and scored for anomalies (alerts become findings at the next
    /// [`Registry::flush_usage`]). For importers of usage recorded elsewhere, and the estate
    /// generator.
    pub fn observe_usage(&self, u: &anomaly::Use<'_>) {
        // The source's network, worked out once for both.
        let network = auth::source_network(u.source);
        self.usage.record_use(
            u.credential,
            u.identity.id,
            u.scopes,
            network.as_deref(),
            u.at,
        );
        self.anomaly.observe(u, network.as_deref());
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Authentication events committed through the buffer (asynchronous mode) since start.
    pub fn authentication_events_written(&self) -> u64 {
        self.auth_buffer
            .written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `(issued, refused)` token requests since start.
    pub fn token_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.tokens_issued.load(Relaxed),
            self.tokens_denied.load(Relaxed),
        )
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn reader(&self) -> Result<Box<dyn ReadStore + Send + '_>, CoreError> {
        Ok(self.store.reader()?)
    }

    fn snapshot(&self) -> Result<Box<dyn ReadStore + Send + '_>, CoreError> {
        Ok(self.store.snapshot()?)
    }

    /// Runs `f` as a store job and returns its typed result after commit.
    async fn write<T, F>(&self, f: F) -> Result<T, CoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn WriteTx, &Job) -> Result<T, CoreError> + Send + 'static,
    {
        let job = Job {
            clock: Arc::clone(&self.clock),
            policy: Arc::clone(&self.policy),
        };
        let receipt = self.store.submit(Box::new(move |tx| {
            f(tx, &job).map(|v| Box::new(v) as Box<dyn Any + Send>)
        }));
        let out = receipt
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))??;
        out.downcast::<T>().map(|b| *b).map_err(|_| {
            CoreError::Store(StoreError::Internal(
                "job returned an unexpected type".into(),
            ))
        })
    }

    /// Runs a job whose commit can change an authentication answer, and makes the authentication
    /// caches stale before returning (see [`cache`]).
    async fn write_invalidating<T, F>(&self, f: F) -> Result<T, CoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn WriteTx, &Job) -> Result<T, CoreError> + Send + 'static,
    {
        let (operators, keys, clients, federation, policy_engine) = (
            Arc::clone(&self.operators),
            Arc::clone(&self.keys),
            Arc::clone(&self.clients),
            Arc::clone(&self.federation),
            Arc::clone(&self.policy_engine),
        );
        let (checked_tokens, agent_delegations) = (
            Arc::clone(&self.checked_tokens),
            Arc::clone(&self.agent_delegations),
        );
        self.write(move |tx, job| {
            let out = f(tx, job)?;
            // Every other node sharing the store drops its caches too.
            tx.notify_peers(crate::ports::Topic::Authentication);
            // On the writer, after the commit and before any answer, even if our caller is gone.
            tx.after_commit(Box::new(move || {
                operators.invalidate();
                keys.invalidate();
                clients.invalidate();
                federation.invalidate();
                policy_engine.invalidate();
                checked_tokens.invalidate();
                agent_delegations.invalidate();
            }));
            Ok(out)
        })
        .await
    }

    /// A write of a cluster-wide job. While this node holds the jobs lease, the transaction first
    /// checks that the lease is still its own (same fence, unexpired), so a node that stalled past
    /// its lease cannot act as leader afterwards.
    async fn write_as_leader<T, F>(&self, f: F) -> Result<T, CoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn WriteTx, &Job) -> Result<T, CoreError> + Send + 'static,
    {
        let fence = self.fence.lock().ok().and_then(|f| f.clone());
        self.write_invalidating(move |tx, job| {
            if let Some(fence) = &fence {
                cluster::check_fence(tx, fence, job.now())?;
            }
            f(tx, job)
        })
        .await
    }

    /// Waits until every write queued before this call is committed (the writer is FIFO), so that
    /// a read after it sees every audit event already answered for.
    pub async fn barrier(&self) -> Result<(), CoreError> {
        self.write(|_, _| Ok(())).await
    }

    /// Audit events, for admins and auditors. Call [`Registry::barrier`] first to include
    /// authentication events still in the commit queue.
    pub fn list_audit(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<warden_types::AuditEvent>, CoreError> {
        if !actor.can_read_audit() {
            return Err(CoreError::Forbidden(
                "reading the audit log needs the admin or auditor role".into(),
            ));
        }
        Ok(self.reader()?.list_audit(filter, after, limit)?)
    }

    /// Walks the audit chain, for admins and auditors.
    pub fn verify_audit(&self, actor: &Actor) -> Result<AuditVerifyReport, CoreError> {
        if !actor.can_read_audit() {
            return Err(CoreError::Forbidden(
                "verifying the audit log needs the admin or auditor role".into(),
            ));
        }
        Ok(audit::verify(&*self.reader()?, &self.checkpoint_hasher)?)
    }

    /// Walks the audit chain of a store directly (offline verification, no actor).
    pub fn verify_store(
        store: &dyn ReadStore,
        key: &ServerKey,
    ) -> Result<AuditVerifyReport, StoreError> {
        audit::verify(store, &key.hasher(CHECKPOINT_LABEL))
    }
}

/// What a job closure gets besides the transaction.
pub struct Job {
    clock: Arc<dyn Clock>,
    policy: Arc<Policy>,
}

impl Job {
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Appends an audit event for `actor` inside the job's transaction.
    fn record(
        &self,
        tx: &mut dyn WriteTx,
        actor: &Actor,
        action: &'static str,
        target: String,
        outcome: AuditOutcome,
        details: Value,
    ) -> Result<(), CoreError> {
        audit::append(
            tx,
            self.clock.now(),
            NewAuditEvent {
                actor: actor.label(),
                action,
                target,
                outcome,
                request_id: actor.request_id.clone(),
                source: actor.source.clone(),
                details: details.to_string(),
            },
        )?;
        Ok(())
    }

    /// Records a refused action and returns the error to give the caller. The job must return
    /// `Ok(Err(..))` with it so that the refusal's audit event commits.
    fn deny(
        &self,
        tx: &mut dyn WriteTx,
        actor: &Actor,
        action: &'static str,
        target: String,
        error: CoreError,
    ) -> Result<CoreError, CoreError> {
        self.record(
            tx,
            actor,
            action,
            target,
            AuditOutcome::Denied,
            serde_json::json!({ "reason": error.to_string() }),
        )?;
        Ok(error)
    }
}

pub(crate) fn identity_target(id: Uuid) -> String {
    format!("identity:{id}")
}

/// Resolves `reference` — an id, `ENV/NAME`, or a `NAME` unique across the environments the actor
/// can see — to an identity the actor may read. Invisible identities are reported as not found.
pub fn resolve_identity(
    store: &dyn ReadStore,
    actor: &Actor,
    reference: &str,
) -> Result<Identity, CoreError> {
    let not_found = || CoreError::NotFound(format!("identity {reference:?}"));
    let candidates = if let Ok(id) = Uuid::parse_str(reference) {
        store.identity(id)?.into_iter().collect::<Vec<_>>()
    } else if let Some((env, name)) = reference.split_once('/') {
        store.identities_named(name, Some(env))?
    } else {
        store.identities_named(reference, None)?
    };
    let mut visible: Vec<Identity> = candidates
        .into_iter()
        .filter(|i| {
            actor.can_read_team(i.owner_id)
                || actor.acts_on_self(i.id, "warden:read")
                || actor.acts_on_self(i.id, "warden:credentials")
        })
        .collect();
    match visible.len() {
        0 => Err(not_found()),
        1 => Ok(visible.remove(0)),
        _ => {
            let envs: Vec<String> = visible.iter().map(|i| i.environment.clone()).collect();
            Err(CoreError::Ambiguous(format!(
                "identity {reference:?} exists in several environments ({}); use ENV/NAME or the id",
                envs.join(", ")
            )))
        }
    }
}

/// Maps a uniqueness conflict from the store to the domain's `AlreadyExists`.
fn conflict_as_exists(e: StoreError, what: impl FnOnce() -> String) -> CoreError {
    match e {
        StoreError::Conflict(_) => CoreError::AlreadyExists(what()),
        other => CoreError::Store(other),
    }
}
