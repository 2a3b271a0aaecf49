//! Guardrail settings the domain enforces, validated once from config.

use time::Duration;
use warden_types::CredentialKind;

#[derive(Debug, Clone)]
pub struct Policy {
    pub max_ttl_api_key: Duration,
    pub max_ttl_client_secret: Duration,
    pub max_ttl_public_key: Duration,
    /// How long a rotated-out credential stays valid by default.
    pub default_rotation_overlap: Duration,
    /// Scopes privileged beyond the built-in ones (`*`, `admin`, `*:*`, `res:*`).
    pub extra_privileged_scopes: Vec<String>,
    /// Answer authentications only after their audit event is committed (instead of once it is
    /// queued, in order, for the next group commit).
    pub durable_authentication_events: bool,
    /// Failed bearer authentications one source address may make per window before it is
    /// refused (429) for the rest of the window.
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    /// The token service's settings.
    pub tokens: TokenPolicy,
    /// What happens when `warden scan --report-to` reports a live Warden credential: revoke it at
    /// once (default) or only flag it.
    pub revoke_leaked_credentials: bool,
    /// The hygiene checks' thresholds.
    pub hygiene: HygienePolicy,
    /// Usage anomaly detection (`[anomaly]`).
    pub anomaly: AnomalyPolicy,
}

/// Usage anomaly detection at the token endpoint (`[anomaly]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyPolicy {
    /// Score usage at all.
    pub enabled: bool,
    /// How long an identity is observed before anything it does is called unusual.
    pub learning: Duration,
    /// `User-Agent` prefixes that mean a person at a browser or an interactive API tool
    /// (`NHI-INTERACTIVE`).
    pub interactive_agents: Vec<String>,
    /// Networks (CIDR) people work from — offices, VPN; an NHI's token requested from one is
    /// `NHI-INTERACTIVE`.
    pub human_networks: Vec<String>,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        AnomalyPolicy {
            enabled: true,
            learning: Duration::days(7),
            interactive_agents: ["Mozilla/", "PostmanRuntime/", "insomnia/", "HTTPie/"]
                .map(String::from)
                .to_vec(),
            human_networks: Vec::new(),
        }
    }
}

/// Thresholds of the hygiene checks (`[hygiene]` in the config). Each check has a rule id.
#[derive(Debug, Clone, PartialEq)]
pub struct HygienePolicy {
    /// `NHI-STALE`: an active identity not used for this long (never used: since it was created).
    pub stale_after: Duration,
    /// Suspend an identity whose `NHI-STALE` finding stayed open this long (`None`: never).
    pub suspend_stale_after: Option<Duration>,
    /// `NHI-UNUSED-SCOPE`: a granted scope no token carried for this long.
    pub unused_scope_after: Duration,
    /// `NHI-LONG-LIVED`: a credential whose lifetime (issue to expiry) exceeds this.
    pub long_lived: Duration,
    /// `NHI-EXPIRING`: a credential that expires within this, with no newer one beside it.
    pub expiring_within: Duration,
    /// `NHI-NO-EXPIRY`: a credential whose lifetime is at least this (imported credentials that
    /// never expire carry a far-future expiry).
    pub never_expires: Duration,
    /// `NHI-REUSE`: one credential used from more than this many source networks.
    pub reuse_networks: usize,
    /// `NHI-ENV-MIX`: networks of each environment; a credential used from the networks of an
    /// environment other than its identity's is flagged.
    pub environment_networks: Vec<(String, String)>,
    /// Only usage seen within this window counts for `NHI-REUSE` and `NHI-ENV-MIX`.
    pub usage_window: Duration,
}

impl Default for HygienePolicy {
    fn default() -> Self {
        HygienePolicy {
            stale_after: Duration::days(90),
            suspend_stale_after: None,
            unused_scope_after: Duration::days(90),
            long_lived: Duration::days(90),
            expiring_within: Duration::days(14),
            never_expires: Duration::days(3650),
            reuse_networks: 5,
            environment_networks: Vec::new(),
            usage_window: Duration::days(30),
        }
    }
}

/// How the token service issues and signs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPolicy {
    /// Lifetime of an access token when nothing lowers it.
    pub default_ttl: Duration,
    /// No access token lives longer, whatever an identity asks.
    pub max_ttl: Duration,
    /// `EdDSA` or `ES256`.
    pub signing_alg: String,
    /// A signing key signs this long before it is replaced.
    pub key_rotation_period: Duration,
    /// A new key is published this long before it signs (so resource servers' JWKS caches have it).
    pub key_publish_delay: Duration,
    /// Longest accepted lifetime of a client assertion (`exp - now`).
    pub assertion_max_lifetime: Duration,
    /// Oldest accepted DPoP proof (`now - iat`).
    pub dpop_max_age: Duration,
    /// Clock skew tolerated on `iat`, `nbf` and `exp`.
    pub clock_leeway: Duration,
    /// Require server-provided nonces in DPoP proofs at the token endpoint (RFC 9449 §8).
    pub dpop_nonce: bool,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            default_ttl: Duration::minutes(10),
            max_ttl: Duration::hours(1),
            signing_alg: "EdDSA".into(),
            key_rotation_period: Duration::days(30),
            key_publish_delay: Duration::minutes(10),
            assertion_max_lifetime: Duration::minutes(5),
            dpop_max_age: Duration::seconds(60),
            clock_leeway: Duration::seconds(10),
            dpop_nonce: false,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_ttl_api_key: Duration::days(90),
            max_ttl_client_secret: Duration::days(90),
            max_ttl_public_key: Duration::days(365),
            default_rotation_overlap: Duration::hours(24),
            extra_privileged_scopes: Vec::new(),
            durable_authentication_events: false,
            auth_failure_limit: 100,
            auth_failure_window: Duration::seconds(10),
            tokens: TokenPolicy::default(),
            revoke_leaked_credentials: true,
            hygiene: HygienePolicy::default(),
            anomaly: AnomalyPolicy::default(),
        }
    }
}

impl Policy {
    pub fn max_ttl(&self, kind: CredentialKind) -> Duration {
        match kind {
            CredentialKind::ApiKey => self.max_ttl_api_key,
            CredentialKind::ClientSecret => self.max_ttl_client_secret,
            CredentialKind::PublicKey => self.max_ttl_public_key,
        }
    }
}
