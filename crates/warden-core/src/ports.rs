//! The ports the domain needs. Backends implement them; the domain never names a backend.
//!
//! Writes are *jobs*: closures over a [`WriteTx`] that a backend runs inside a transaction. A backend
//! may run several jobs in one transaction (group commit) as long as each job is isolated — a job
//! that fails leaves no trace, not even in the audit chain — and no job's result is delivered before
//! the transaction that holds it is durably committed.

use std::any::Any;

use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;
pub use warden_crypto::envelope::Envelope;
use warden_types::{
    AuditEvent, AuditOutcome, ChangeRequest, ChangeStatus, Credential, Delegation, Finding,
    FindingKind, FindingStatus, Identity, IdentityKind, IdentityStatus, JobState, McpServer,
    Operator, ReviewCampaign, ReviewItem, Secret, StoredPolicy, Team, TrustRule, TrustedIssuer,
    VaultLease,
};

use crate::error::{CoreError, StoreError};

/// Filters for listing identities. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct IdentityFilter {
    /// Restrict to these owning teams (set for team members; `None` = all teams).
    pub owner_in: Option<Vec<Uuid>>,
    pub owner: Option<Uuid>,
    pub kind: Option<IdentityKind>,
    pub status: Option<IdentityStatus>,
    pub environment: Option<String>,
    pub name: Option<String>,
    /// `(key, value)`; the identity must carry this label.
    pub label: Option<(String, String)>,
    pub privileged: Option<bool>,
    pub expiring_before: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub target: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub status: Option<ChangeStatus>,
    pub identity: Option<Uuid>,
    pub owner_in: Option<Vec<Uuid>>,
}

/// An identity's use of one scope: the last time a token carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeUsage {
    pub identity: Uuid,
    pub scope: String,
    pub last_used: OffsetDateTime,
}

/// A credential's use from one source network (an IPv4 /24 or IPv6 /64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUsage {
    pub credential: Uuid,
    pub identity: Uuid,
    pub network: String,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub count: u64,
}

/// Filters for listing findings.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    pub status: Option<FindingStatus>,
    pub kind: Option<FindingKind>,
}

/// Filters for listing vault leases.
#[derive(Debug, Clone, Default)]
pub struct LeaseFilter {
    /// Leases whose path starts with this.
    pub prefix: Option<String>,
    pub identity: Option<Uuid>,
    /// Only leases not yet revoked.
    pub active_only: bool,
}

/// A stored secret version's envelope, named.
#[derive(Debug, Clone)]
pub struct StoredEnvelope {
    pub path: String,
    pub version: u32,
    pub envelope: Envelope,
}

/// An operator record with what authentication needs.
#[derive(Debug, Clone)]
pub struct OperatorRecord {
    pub operator: Operator,
    pub team_ids: Vec<Uuid>,
    /// The operator that created this one (`None` for the bootstrap admin).
    pub created_by: Option<Uuid>,
}

/// The last link of the audit chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// A signed statement of the chain head, so that deleting events from the tail is detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub head: ChainHead,
    pub mac: Vec<u8>,
}

/// One of Warden's token-signing keys as stored; the private half is sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub public_jwk: serde_json::Value,
    /// PKCS#8, sealed with the server key (AES-256-GCM, the kid as associated data).
    pub sealed_key: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// Published from creation; signs from this time on.
    pub activates_at: OffsetDateTime,
    /// Stops signing at this time (its successor's activation).
    pub retires_at: Option<OffsetDateTime>,
    /// Leaves the JWKS at this time, once every token it signed has expired.
    pub expires_at: Option<OffsetDateTime>,
}

/// A lease on a cluster-wide job: one node (`holder`) runs the job until `expires_at` unless it
/// renews; `fence` grows every time the lease changes hands, so a deposed holder's late writes can
/// be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub fence: u64,
    pub expires_at: OffsetDateTime,
}

/// What a committed change made stale in the memory of the nodes sharing the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Operators, credentials, identities, client keys: the authentication caches.
    Authentication,
    /// The token-signing keys (the keyring and the JWKS).
    SigningKeys,
    /// The password Warden logs in to the store with was rotated.
    StoreCredential,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Authentication => "authentication",
            Topic::SigningKeys => "signing_keys",
            Topic::StoreCredential => "store_credential",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authentication" => Some(Topic::Authentication),
            "signing_keys" => Some(Topic::SigningKeys),
            "store_credential" => Some(Topic::StoreCredential),
            _ => None,
        }
    }
}

/// News from the other nodes sharing a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// A committed transaction (of any node, this one included) changed `Topic`.
    Changed(Topic),
    /// This node can no longer hear the others: nothing cached may be trusted until `Restored`.
    Lost,
    /// Listening again (or for the first time): anything cached before is stale.
    Restored,
}

/// Receives [`PeerEvent`]s; installed by the registry.
pub trait PeerListener: Send + Sync {
    fn peer_event(&self, event: PeerEvent);
}

/// An audit event before the chain assigns it a place.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub outcome: AuditOutcome,
    pub request_id: String,
    pub source: String,
    /// Details as JSON text.
    pub details: String,
}

/// An audit event exactly as stored: what the chain hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    /// Unix time in microseconds.
    pub time_us: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: String,
    pub source: String,
    /// JSON text.
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Reads. Implementations answer from the latest committed state (or, inside a [`WriteTx`], from
/// the transaction's own state).
pub trait ReadStore {
    fn identity(&self, id: Uuid) -> Result<Option<Identity>, StoreError>;
    fn identities_named(
        &self,
        name: &str,
        environment: Option<&str>,
    ) -> Result<Vec<Identity>, StoreError>;
    /// Identities ordered by id, after `after`, at most `limit`.
    fn list_identities(
        &self,
        filter: &IdentityFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Identity>, StoreError>;

    fn team(&self, id: Uuid) -> Result<Option<Team>, StoreError>;
    fn team_named(&self, name: &str) -> Result<Option<Team>, StoreError>;
    fn list_teams(&self) -> Result<Vec<Team>, StoreError>;

    fn operator(&self, id: Uuid) -> Result<Option<OperatorRecord>, StoreError>;
    fn operator_named(&self, name: &str) -> Result<Option<OperatorRecord>, StoreError>;
    fn operator_by_token_hash(&self, hash: &[u8]) -> Result<Option<OperatorRecord>, StoreError>;
    fn list_operators(&self) -> Result<Vec<Operator>, StoreError>;

    fn credential(&self, id: Uuid) -> Result<Option<Credential>, StoreError>;
    fn credentials_of(&self, identity: Uuid) -> Result<Vec<Credential>, StoreError>;
    fn credential_by_secret_hash(&self, hash: &[u8]) -> Result<Option<Credential>, StoreError>;
    /// Rotated-out credentials whose overlap ended at or before `now` and are not yet revoked.
    fn overlaps_ended(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Credential>, StoreError>;

    fn change_request(&self, id: Uuid) -> Result<Option<ChangeRequest>, StoreError>;
    fn list_change_requests(
        &self,
        filter: &ChangeFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChangeRequest>, StoreError>;

    /// Audit events matching `filter` with `seq > after`, ascending, at most `limit`.
    fn list_audit(
        &self,
        filter: &AuditFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Raw audit records with `seq > after`, ascending, at most `limit`, exactly as stored (for
    /// verification).
    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    fn audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Every signing key, oldest first.
    fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Whether an access token was revoked (and has not expired since).
    fn token_revoked(&self, jti: &str) -> Result<bool, StoreError>;

    fn finding(&self, id: Uuid) -> Result<Option<Finding>, StoreError>;
    fn finding_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Finding>, StoreError>;
    /// Findings ordered by id, after `after`, at most `limit`.
    fn list_findings(
        &self,
        filter: &FindingFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Finding>, StoreError>;

    /// Every credential (revoked ones included), ordered by id, after `after`, at most `limit`.
    fn list_credentials(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Credential>, StoreError>;
    /// When each identity last obtained a token carrying each scope.
    fn scope_usage(&self) -> Result<Vec<ScopeUsage>, StoreError>;
    /// Which networks each credential was used from, last seen at or after `since`.
    fn source_usage(&self, since: OffsetDateTime) -> Result<Vec<SourceUsage>, StoreError>;
    /// A background job's durable state.
    fn job_state(&self, job: &str) -> Result<Option<JobState>, StoreError>;
    /// The anomaly baselines `node` saved: (identity, saved form).
    fn anomaly_baselines(&self, node: &str) -> Result<Vec<(Uuid, Vec<u8>)>, StoreError>;
    /// The last audit sequence number delivered to an audit sink.
    fn sink_cursor(&self, sink: &str) -> Result<Option<u64>, StoreError>;
    fn list_job_states(&self) -> Result<Vec<JobState>, StoreError>;
    fn review_campaign(&self, id: Uuid) -> Result<Option<ReviewCampaign>, StoreError>;
    fn list_review_campaigns(&self) -> Result<Vec<ReviewCampaign>, StoreError>;
    /// A campaign's items, by identity id.
    fn review_items(&self, campaign: Uuid) -> Result<Vec<ReviewItem>, StoreError>;

    /// A secret's metadata by path (deleted ones included).
    fn secret(&self, path: &str) -> Result<Option<Secret>, StoreError>;
    /// Secrets whose path starts with `prefix`, ordered by path, after `after`, at most `limit`.
    fn list_secrets(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Secret>, StoreError>;
    /// Secrets with work due by `now` ([`Secret::due_at`]: a rotation, an overlap to end, a
    /// pending version to settle), soonest first.
    fn secrets_due(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<Secret>, StoreError>;
    /// The sealed value of one version, if it was not destroyed.
    fn secret_envelope(&self, path: &str, version: u32) -> Result<Option<Envelope>, StoreError>;
    /// Ids of the master keys any stored value is wrapped under.
    fn vault_key_ids(&self) -> Result<Vec<String>, StoreError>;
    /// Stored values wrapped under a master key other than `key_id`, at most `limit`.
    fn envelopes_not_under(
        &self,
        key_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError>;

    fn vault_lease(&self, id: Uuid) -> Result<Option<VaultLease>, StoreError>;
    /// Leases matching `filter`, oldest first, at most `limit`.
    fn list_vault_leases(
        &self,
        filter: &LeaseFilter,
        limit: usize,
    ) -> Result<Vec<VaultLease>, StoreError>;
    /// Leases whose target work is due by `now` ([`VaultLease::due_at`]): expired, or revoked
    /// with the target not yet cleaned up.
    fn vault_leases_due(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<VaultLease>, StoreError>;

    fn trusted_issuer_named(&self, name: &str) -> Result<Option<TrustedIssuer>, StoreError>;
    /// The trusted issuer whose tokens carry exactly this `iss`.
    fn trusted_issuer_by_iss(&self, iss: &str) -> Result<Option<TrustedIssuer>, StoreError>;
    fn list_trusted_issuers(&self) -> Result<Vec<TrustedIssuer>, StoreError>;
    fn trust_rule(&self, id: Uuid) -> Result<Option<TrustRule>, StoreError>;
    fn delegation(&self, id: Uuid) -> Result<Option<Delegation>, StoreError>;
    /// Delegations to `agent` (or all), oldest first.
    fn delegations(&self, agent: Option<Uuid>) -> Result<Vec<Delegation>, StoreError>;
    fn mcp_server(&self, identity: Uuid) -> Result<Option<McpServer>, StoreError>;
    /// Every decision-point policy, by name.
    fn policies(&self) -> Result<Vec<StoredPolicy>, StoreError>;
    /// Trust rules of an issuer and/or an identity (both `None`: all), oldest first.
    fn trust_rules(
        &self,
        issuer: Option<Uuid>,
        identity: Option<Uuid>,
    ) -> Result<Vec<TrustRule>, StoreError>;
}

/// Writes inside one transaction. Reads through a `WriteTx` see its own writes.
pub trait WriteTx: ReadStore {
    fn insert_team(&mut self, team: &Team) -> Result<(), StoreError>;
    fn add_member(&mut self, team: Uuid, operator: Uuid) -> Result<(), StoreError>;
    fn remove_member(&mut self, team: Uuid, operator: Uuid) -> Result<bool, StoreError>;
    fn insert_operator(
        &mut self,
        operator: &Operator,
        token_hash: &[u8],
        created_by: Option<Uuid>,
    ) -> Result<(), StoreError>;
    /// Sets `disabled_at` and, when given, replaces the token hash.
    fn update_operator(
        &mut self,
        operator: &Operator,
        token_hash: Option<&[u8]>,
    ) -> Result<(), StoreError>;

    fn insert_identity(&mut self, identity: &Identity) -> Result<(), StoreError>;
    fn update_identity(&mut self, identity: &Identity) -> Result<(), StoreError>;

    fn insert_credential(
        &mut self,
        credential: &Credential,
        secret_hash: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    fn update_credential(&mut self, credential: &Credential) -> Result<(), StoreError>;
    fn touch_last_used(
        &mut self,
        credential: Uuid,
        identity: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    fn insert_change_request(&mut self, change: &ChangeRequest) -> Result<(), StoreError>;

    fn insert_signing_key(&mut self, key: &SigningKeyRecord) -> Result<(), StoreError>;
    /// Sets when a key stops signing and when it leaves the JWKS.
    fn schedule_signing_key(
        &mut self,
        kid: &str,
        retires_at: Option<OffsetDateTime>,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError>;
    /// Records a single-use value; `false` if it was already used. `expires_at` must derive from
    /// the value itself (its `exp` or `iat`), so that a replay presents the same pair.
    fn use_once(&mut self, hash: &[u8; 32], expires_at: OffsetDateTime)
    -> Result<bool, StoreError>;
    fn revoke_token(
        &mut self,
        jti: &str,
        identity: Uuid,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Forgets single-use values and token revocations that expired by `now`. Returns how many.
    fn purge_expired_token_state(&mut self, now: OffsetDateTime) -> Result<usize, StoreError>;
    fn update_change_request(&mut self, change: &ChangeRequest) -> Result<(), StoreError>;

    fn insert_finding(&mut self, finding: &Finding) -> Result<(), StoreError>;
    /// Updates what can change: where it was last seen, how often, status, action.
    fn update_finding(&mut self, finding: &Finding) -> Result<(), StoreError>;
    /// Folds usage into the aggregates: a scope's `last_used` and a source's `last_seen` only
    /// move forward, `first_seen` only back; counts add up.
    fn record_usage(
        &mut self,
        scopes: &[ScopeUsage],
        sources: &[SourceUsage],
    ) -> Result<(), StoreError>;
    fn put_job_state(&mut self, state: &JobState) -> Result<(), StoreError>;
    /// Creates or replaces anomaly baselines of `node`.
    fn put_anomaly_baselines(
        &mut self,
        node: &str,
        rows: &[(Uuid, Vec<u8>)],
    ) -> Result<(), StoreError>;
    /// Moves an audit sink's cursor (the last sequence number it delivered).
    fn put_sink_cursor(
        &mut self,
        sink: &str,
        seq: u64,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Creates or replaces a campaign (by id) / an item (by campaign and identity).
    fn put_review_campaign(&mut self, campaign: &ReviewCampaign) -> Result<(), StoreError>;
    fn put_review_item(&mut self, item: &ReviewItem) -> Result<(), StoreError>;

    /// Creates or replaces a secret's metadata (by path).
    fn put_secret(&mut self, secret: &Secret) -> Result<(), StoreError>;
    /// Stores a version's sealed value, or erases it (`None`).
    fn put_secret_envelope(
        &mut self,
        path: &str,
        version: u32,
        envelope: Option<&Envelope>,
    ) -> Result<(), StoreError>;
    /// Creates or replaces a vault lease.
    fn put_vault_lease(&mut self, lease: &VaultLease) -> Result<(), StoreError>;

    /// Creates or replaces a trusted issuer (name and `iss` are unique: `Conflict`).
    fn put_trusted_issuer(&mut self, issuer: &TrustedIssuer) -> Result<(), StoreError>;
    fn delete_trusted_issuer(&mut self, id: Uuid) -> Result<bool, StoreError>;
    fn put_trust_rule(&mut self, rule: &TrustRule) -> Result<(), StoreError>;
    fn put_delegation(&mut self, delegation: &Delegation) -> Result<(), StoreError>;
    fn put_mcp_server(&mut self, server: &McpServer) -> Result<(), StoreError>;
    fn put_policy(&mut self, policy: &StoredPolicy) -> Result<(), StoreError>;
    fn delete_policy(&mut self, name: &str) -> Result<bool, StoreError>;

    /// The lease named `name`, if one was ever taken.
    fn lease(&mut self, name: &str) -> Result<Option<Lease>, StoreError>;
    /// Creates or replaces a lease.
    fn put_lease(&mut self, lease: &Lease) -> Result<(), StoreError>;
    /// Tells every node sharing the store, if this transaction commits, that `topic` changed. A
    /// single-node store has nobody to tell (its after-commit effects cover this node).
    fn notify_peers(&mut self, topic: Topic) {
        let _ = topic;
    }

    /// Changes the password of the role this store logs in as, inside this transaction (so it
    /// takes effect exactly when the job's other writes do). `verifier` is the password's
    /// SCRAM-SHA-256 verifier. Stores without a login refuse.
    fn set_own_password(&mut self, verifier: &str) -> Result<(), StoreError> {
        let _ = verifier;
        Err(StoreError::Internal(
            "this store has no login password to rotate".into(),
        ))
    }

    /// The head of the audit chain as this transaction sees it.
    fn audit_head(&mut self) -> Result<ChainHead, StoreError>;
    /// Appends a fully formed event; `record.seq` must be `head.seq + 1`. The store keeps the
    /// fields byte for byte and updates its head.
    fn insert_audit_record(&mut self, record: &AuditRecord) -> Result<(), StoreError>;

    /// Runs `effect` after the transaction holding this job has committed, on the writer, before
    /// any job of the transaction is answered. Dropped unrun if the job fails or the commit does.
    /// It runs even if the job's caller has gone away.
    fn after_commit(&mut self, effect: AfterCommit);
}

/// An effect to run once a job's transaction has committed.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// Work the store does in every write transaction on behalf of the domain (today: appending the
/// buffered authentication events).
pub trait BatchHook: Send + Sync {
    /// Runs inside every write transaction, before its jobs, in its own savepoint: an error rolls
    /// back the hook's writes only.
    fn in_transaction(&self, tx: &mut dyn WriteTx) -> Result<(), CoreError>;
    /// Runs after that transaction ended, committed or not. Returns whether the hook has more
    /// work, so that the store runs another transaction soon even if no job arrives.
    fn finished(&self, committed: bool) -> bool;
}

/// What a write job returns, type-erased so that [`Store`] stays object-safe.
pub type JobOutput = Result<Box<dyn Any + Send>, CoreError>;
/// A unit of work the store runs in a transaction.
pub type WriteJob = Box<dyn FnOnce(&mut dyn WriteTx) -> JobOutput + Send>;
/// Where a job's result arrives, after commit.
pub type JobReceipt = oneshot::Receiver<JobOutput>;

/// A storage backend.
pub trait Store: Send + Sync {
    /// A reader over the latest committed state.
    fn reader(&self) -> Result<Box<dyn ReadStore + Send + '_>, StoreError>;
    /// A reader whose reads all see one committed state (one read transaction), for a check
    /// that makes several reads. By default, [`Store::reader`].
    fn snapshot(&self) -> Result<Box<dyn ReadStore + Send + '_>, StoreError> {
        self.reader()
    }
    /// Queues a write job. The receipt yields the job's result once its transaction is durably
    /// committed, or the error that prevented it.
    fn submit(&self, job: WriteJob) -> JobReceipt;
    /// Whether the store is ready to serve (for `/readyz`).
    fn ready(&self) -> Result<(), StoreError>;
    /// Whether other nodes may share this store: state kept only in one node's memory (such as a
    /// replay cache) must then also be kept in the store.
    fn shared(&self) -> bool {
        false
    }
    /// Installs the hook run in every write transaction (replacing any earlier one).
    fn set_batch_hook(&self, hook: std::sync::Arc<dyn BatchHook>);
    /// Installs who hears about other nodes' changes. A store that no other node can share has
    /// nothing to report.
    fn set_peer_listener(&self, listener: std::sync::Arc<dyn PeerListener>) {
        let _ = listener;
    }
    /// Counters of the write path, for metrics.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// Counters of a store's write path since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Write jobs committed.
    pub jobs: u64,
    /// Write jobs that failed (and were rolled back alone).
    pub failed_jobs: u64,
    /// Transactions that failed to begin or commit.
    pub failed_commits: u64,
}

/// A future the vault's targets return (boxed, so that [`VaultTargets`] stays object-safe).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where the vault connects to a PostgreSQL server: as the connection's admin role, or as a
/// rotated or dynamic login (for a health check). `Debug` hides the password.
#[derive(Clone)]
pub struct PgLogin {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
    pub tls: PgTls,
}

/// How the vault reaches a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP (a trusted network or a local proxy).
    Disable,
    /// TLS, the certificate verified for the host against the system's roots and these PEM CAs.
    VerifyFull { ca_pem: Option<String> },
}

impl PgTls {
    pub fn of(conn: &warden_types::DatabaseConnection) -> PgTls {
        if conn.sslmode == "disable" {
            PgTls::Disable
        } else {
            PgTls::VerifyFull {
                ca_pem: conn.ca_pem.clone(),
            }
        }
    }
}

impl std::fmt::Debug for PgLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PgLogin({}@{}:{}/{})",
            self.username, self.host, self.port, self.dbname
        )
    }
}

/// A signed request the vault sends to a user's endpoint (rotation webhooks, notifications).
#[derive(Clone)]
pub struct WebhookCall {
    pub url: String,
    /// JSON body (may hold a new secret value: never logged).
    pub body: zeroize::Zeroizing<Vec<u8>>,
    /// `Warden-Signature` header: a JWS over the body's digest, signed with the token service's
    /// key (verifiable with `/oauth2/jwks`).
    pub signature: String,
}

impl std::fmt::Debug for WebhookCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookCall({})", self.url)
    }
}

/// What the vault does outside Warden: PostgreSQL role management and webhooks. Errors are
/// human-readable and must never contain a secret.
pub trait VaultTargets: Send + Sync {
    /// Runs `statements` in one transaction as `admin`.
    fn pg_execute<'a>(
        &'a self,
        admin: &'a PgLogin,
        statements: Vec<zeroize::Zeroizing<String>>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Ends `role`'s sessions, runs `revocation`, drops what it owns and drops it (a role that
    /// no longer exists is success).
    fn pg_drop_role<'a>(
        &'a self,
        admin: &'a PgLogin,
        role: &'a str,
        revocation: Vec<String>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Logs in as `login` and runs `check_sql` (the health check).
    fn pg_check<'a>(
        &'a self,
        login: &'a PgLogin,
        check_sql: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// POSTs a call; `(status, body)` of the answer (body at most 64 KiB).
    fn webhook<'a>(&'a self, call: WebhookCall) -> BoxFuture<'a, Result<(u16, Vec<u8>), String>>;
}

/// Where a node keeps the password it logs in to the store with (a file beside its config, and the
/// connector's memory). Implemented by the binary.
pub trait StoreCredentialSink: Send + Sync {
    /// Keeps `password` as the *next* password (durably), before the database changes.
    fn stage(&self, password: &str) -> Result<(), String>;
    /// Makes `password` the one new connections use (durably), once the database has it.
    fn commit(&self, password: &str) -> Result<(), String>;
}
