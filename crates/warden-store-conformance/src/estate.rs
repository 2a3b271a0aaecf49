//! A generator of realistic estates for the governance jobs: teams (a few with nobody in them),
//! identities across two environments with three scopes each, several credentials per identity,
//! and usage events fed through the same aggregation and anomaly scoring the token endpoint uses
//! — with planted stale, orphaned, over-privileged, long-lived, never-expiring, expiring, reused
//! and cross-environment cases, and anomalous ones (a new scope, a new network, a volume spike,
//! use outside a schedule, a browser using an NHI's credential, a new audience). Everything else is clean, so the
//! hygiene checks and the anomaly scorer must find exactly the planted cases.
//!
//! Time: every identity's usage runs in order; all but its last round fall in the first 20 of
//! the last 25 days (inside the 21-day learning period of [`policy`]), the last round in the
//! last hours, where anything new is an anomaly.
//!
//! Identities and credentials are written straight through the store port in large jobs (an
//! imported estate: no audit event per record); usage goes through
//! [`Registry::observe_usage`] and [`Registry::flush_usage`].

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use time::Duration;
use uuid::Uuid;
use warden_core::policy::HygienePolicy;
use warden_core::ports::Store;
use warden_core::registry::anomaly::Use;
use warden_core::{Actor, Policy, Registry};
use warden_types::{
    Constraints, CreateOperatorRequest, CreateTeamRequest, Credential, CredentialKind, Identity,
    IdentityKind, IdentityStatus, OperatorRole, Origin,
};

/// How big an estate to make.
#[derive(Debug, Clone, Copy)]
pub struct EstateSize {
    pub teams: usize,
    /// Teams with no member (every identity they own is orphaned).
    pub orphan_teams: usize,
    pub identities: usize,
    pub credentials_per_identity: usize,
    /// Usage events; at least 8 per identity so every planted pattern shows.
    pub events: usize,
}

impl EstateSize {
    /// The size the governance benchmark uses: 50,000 NHIs across 200 teams, 200,000
    /// credentials, 10 million usage events.
    pub const BENCH: EstateSize = EstateSize {
        teams: 200,
        orphan_teams: 5,
        identities: 50_000,
        credentials_per_identity: 4,
        events: 10_000_000,
    };
}

/// What a hygiene rule is planted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Clean,
    Stale,
    UnusedScope,
    Reuse,
    EnvMix,
    LongLived,
    NoExpiry,
    Expiring,
}

/// Roles by a per-identity hash in 0..1000: about 1% stale, 2% over-privileged, 0.6% reused, …
fn role(i: usize) -> Role {
    match mix(i as u64) % 1000 {
        0..10 => Role::Stale,
        10..30 => Role::UnusedScope,
        30..36 => Role::Reuse,
        36..40 => Role::EnvMix,
        40..48 => Role::LongLived,
        48..50 => Role::NoExpiry,
        50..55 => Role::Expiring,
        _ => Role::Clean,
    }
}

/// The anomaly planted on a clean identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unusual {
    None,
    Scope,
    Network,
    Volume,
    Window,
    Interactive,
    Audience,
}

/// The anomaly rules the estate plants, with the finding rule each produces.
pub const ANOMALY_RULES: [&str; 6] = [
    "NHI-ANOMALY-SCOPE",
    "NHI-ANOMALY-AUDIENCE",
    "NHI-ANOMALY-NETWORK",
    "NHI-ANOMALY-VOLUME",
    "NHI-ANOMALY-WINDOW",
    "NHI-INTERACTIVE",
];

/// About 0.5% of clean identities each (a second hash, independent of [`role`]).
fn unusual(i: usize) -> Unusual {
    if role(i) != Role::Clean {
        return Unusual::None;
    }
    match mix(i as u64 ^ 0x5EED_0A11_0000_0000) % 1000 {
        0..5 => Unusual::Scope,
        5..10 => Unusual::Network,
        10..15 => Unusual::Volume,
        15..20 => Unusual::Window,
        20..25 => Unusual::Interactive,
        25..30 => Unusual::Audience,
        _ => Unusual::None,
    }
}

/// splitmix64: a deterministic, well-spread hash of an index.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The policy the estate is generated for: prod uses 10.0.0.0/10, staging 10.64.0.0/10;
/// anomalies are called after 21 days of learning.
pub fn policy() -> Policy {
    Policy {
        max_ttl_api_key: Duration::days(3_650),
        anomaly: warden_core::policy::AnomalyPolicy {
            learning: Duration::days(21),
            ..Default::default()
        },
        hygiene: HygienePolicy {
            environment_networks: vec![
                ("prod".into(), "10.0.0.0/10".into()),
                ("staging".into(), "10.64.0.0/10".into()),
            ],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An identity's own network (a /24 inside its environment's range).
fn network(env_prod: bool, i: usize, variant: usize) -> String {
    let base = if env_prod { 0 } else { 64 };
    format!(
        "10.{}.{}.{}",
        base + (i % 60),
        ((i / 60) + variant * 37) % 250,
        1 + variant % 200
    )
}

/// How many cases of each rule the estate holds (rule id → count).
pub type Planted = BTreeMap<&'static str, u64>;

async fn submit<F>(store: &Arc<dyn Store>, f: F)
where
    F: FnOnce(&mut dyn warden_core::ports::WriteTx) -> Result<(), warden_core::CoreError>
        + Send
        + 'static,
{
    store
        .submit(Box::new(move |tx| {
            f(tx).map(|()| Box::new(()) as Box<dyn Any + Send>)
        }))
        .await
        .expect("the writer answers")
        .expect("the estate's job commits");
}

/// Generates an estate of `size` at the registry's clock; returns what was planted.
pub async fn generate(
    reg: &Registry,
    store: &Arc<dyn Store>,
    admin: &Actor,
    size: EstateSize,
) -> Planted {
    let now = reg.now();
    let mut teams = Vec::new();
    for t in 0..size.teams {
        let name = format!("team-{t:03}");
        let team = reg
            .create_team(
                admin,
                CreateTeamRequest {
                    name: name.clone(),
                    description: None,
                },
            )
            .await
            .expect("team");
        if t >= size.orphan_teams {
            reg.create_operator(
                admin,
                CreateOperatorRequest {
                    name: format!("owner-{t:03}"),
                    role: OperatorRole::Member,
                    teams: vec![name.clone()],
                },
            )
            .await
            .expect("operator");
        }
        teams.push((team.id, name));
    }
    let mut planted: Planted = BTreeMap::new();
    for r in warden_core::registry::hygiene::RULES
        .into_iter()
        .chain(ANOMALY_RULES)
    {
        planted.insert(r, 0);
    }
    let rounds = size.events / size.identities.max(1);
    assert!(
        (10..=400).contains(&rounds),
        "9 usual rounds at least (8 networks of a reused credential), at most one event an hour"
    );
    let mut identities: Vec<(Identity, bool, Vec<Uuid>)> = Vec::new();
    let chunk = 5_000;
    let per = size.credentials_per_identity.max(1);
    for start in (0..size.identities).step_by(chunk) {
        let mut batch_i = Vec::new();
        let mut batch_c = Vec::new();
        for i in start..(start + chunk).min(size.identities) {
            let (team_id, team) = teams[i % teams.len()].clone();
            let prod = i % 2 == 0;
            let svc = i % 7;
            let scopes = vec![
                format!("svc{svc}:read"),
                format!("svc{svc}:write"),
                "queue:publish".to_owned(),
            ];
            let role = role(i);
            let odd = unusual(i);
            let id = Uuid::now_v7();
            // A schedule-bound identity works every hour but the one of its last use.
            let last_hour = (now - Duration::hours(2) + Duration::minutes((i % 60) as i64)).hour();
            let labels = if odd == Unusual::Window {
                [(
                    "schedule".to_owned(),
                    format!("{}-{}", (last_hour + 1) % 24, last_hour),
                )]
                .into()
            } else {
                Default::default()
            };
            let anomaly = match odd {
                Unusual::None => None,
                Unusual::Scope => Some("NHI-ANOMALY-SCOPE"),
                Unusual::Network => Some("NHI-ANOMALY-NETWORK"),
                Unusual::Volume => Some("NHI-ANOMALY-VOLUME"),
                Unusual::Window => Some("NHI-ANOMALY-WINDOW"),
                Unusual::Interactive => Some("NHI-INTERACTIVE"),
                Unusual::Audience => Some("NHI-ANOMALY-AUDIENCE"),
            };
            if let Some(r) = anomaly {
                *planted.entry(r).or_default() += 1;
            }
            let kind = if i % 10 == 0 {
                IdentityKind::CiPipeline
            } else {
                IdentityKind::ServiceAccount
            };
            batch_i.push(Identity {
                id,
                name: format!("nhi-{i:06}"),
                kind,
                owner_id: team_id,
                owner: team.clone(),
                purpose: "Generated estate identity".into(),
                environment: if prod { "prod" } else { "staging" }.into(),
                status: IdentityStatus::Active,
                status_reason: None,
                suspended_by_admin: false,
                privileged: false,
                scopes: scopes.clone(),
                audiences: if odd == Unusual::Audience {
                    vec![
                        "https://svc.example".to_owned(),
                        "https://other.example".to_owned(),
                    ]
                } else {
                    vec![]
                },
                constraints: Constraints::default(),
                labels,
                parent_id: None,
                origin: Origin::Managed,
                client_id: id.to_string(),
                created_at: now - Duration::days(365),
                updated_at: now - Duration::days(365),
                last_used_at: Some(if role == Role::Stale {
                    now - Duration::days(200)
                } else {
                    now - Duration::days(40)
                }),
                expires_at: None,
            });
            if i % teams.len() < size.orphan_teams {
                *planted.entry("NHI-ORPHAN").or_default() += 1;
            }
            let rule = match role {
                Role::Clean => None,
                Role::Stale => Some("NHI-STALE"),
                Role::UnusedScope => Some("NHI-UNUSED-SCOPE"),
                Role::Reuse => Some("NHI-REUSE"),
                Role::EnvMix => Some("NHI-ENV-MIX"),
                Role::LongLived => Some("NHI-LONG-LIVED"),
                Role::NoExpiry => Some("NHI-NO-EXPIRY"),
                Role::Expiring => Some("NHI-EXPIRING"),
            };
            if let Some(r) = rule {
                *planted.entry(r).or_default() += 1;
            }
            let mut creds = Vec::new();
            for k in 0..per {
                let cid = Uuid::now_v7();
                let (kind, created, expires) = match (role, k) {
                    (Role::LongLived, 0) => (
                        CredentialKind::ApiKey,
                        now - Duration::days(20),
                        now + Duration::days(380),
                    ),
                    (Role::NoExpiry, 0) => (
                        CredentialKind::ApiKey,
                        now - Duration::days(20),
                        now + Duration::days(7_300),
                    ),
                    (Role::Expiring, k) => (
                        CredentialKind::ClientSecret,
                        now - Duration::days(50),
                        now + Duration::days(5) - Duration::hours(k as i64),
                    ),
                    (_, k) => (
                        if k == 0 {
                            CredentialKind::ApiKey
                        } else {
                            CredentialKind::ClientSecret
                        },
                        now - Duration::days(20 + (k as i64) * 10),
                        now + Duration::days(40),
                    ),
                };
                let hash = warden_crypto::sha256(cid.as_bytes());
                batch_c.push((
                    Credential {
                        id: cid,
                        identity_id: id,
                        kind,
                        hint: "wdn_…gen".into(),
                        description: None,
                        thumbprint: None,
                        public_jwk: None,
                        created_at: created,
                        expires_at: expires,
                        last_used_at: None,
                        revoked_at: None,
                        revoke_reason: None,
                        rotated_from: None,
                        replaced_by: None,
                        created_by: "estate-generator".into(),
                    },
                    hash,
                ));
                creds.push(cid);
            }
            identities.push((batch_i[batch_i.len() - 1].clone(), prod, creds));
        }
        submit(store, move |tx| {
            for i in &batch_i {
                tx.insert_identity(i)?;
            }
            for (c, h) in &batch_c {
                tx.insert_credential(c, Some(h))?;
            }
            Ok(())
        })
        .await;
    }

    // Usage: round robin over the identities (stale ones have none), `rounds` uses each, in
    // order: rounds 0..rounds-1 within the first 20 of the last 25 days, the last round two
    // hours ago (plus up to an hour, per identity).
    let n = identities.len().max(1);
    let usual_span = Duration::days(20).whole_seconds() / (rounds as i64 - 1);
    let first = now - Duration::days(25);
    for j in 0..rounds * n {
        let i = j % n;
        let round = j / n;
        let last = round == rounds - 1;
        let (identity, prod, creds) = &identities[i];
        let scopes = &identity.scopes;
        let role = role(i);
        let odd = unusual(i);
        if role == Role::Stale {
            continue;
        }
        let scope = match (role, odd) {
            (Role::UnusedScope, _) => &scopes[0],
            (_, Unusual::Scope) if last => &scopes[2],
            (_, Unusual::Scope) => &scopes[round % 2],
            _ => &scopes[round % scopes.len()],
        };
        let (credential, source) = match (role, odd) {
            (Role::Reuse, _) => (creds[0], network(*prod, i, round % 8)),
            (Role::EnvMix, _) => (creds[0], network(round.is_multiple_of(2) == *prod, i, 0)),
            (_, Unusual::Network) if last => (creds[0], network(*prod, i, 1)),
            _ => (creds[round % creds.len()], network(*prod, i, 0)),
        };
        let at = if last {
            now - Duration::hours(2) + Duration::minutes((i % 60) as i64)
        } else {
            let mut at = first
                + Duration::seconds(round as i64 * usual_span)
                + Duration::seconds((mix(i as u64) % (usual_span as u64 / 2)) as i64);
            if odd == Unusual::Window {
                let last_hour =
                    (now - Duration::hours(2) + Duration::minutes((i % 60) as i64)).hour();
                if at.hour() == last_hour {
                    at += Duration::hours(1);
                }
            }
            at
        };
        let agent = (last && odd == Unusual::Interactive).then_some("Mozilla/5.0 (X11; Linux)");
        let repeat = if last && odd == Unusual::Volume {
            31
        } else {
            1
        };
        // An audience-planted identity addresses its first resource, then the other one.
        let audiences = match (odd, last) {
            (Unusual::Audience, false) => &identity.audiences[..1],
            (Unusual::Audience, true) => &identity.audiences[1..],
            _ => &[][..],
        };
        for _ in 0..repeat {
            reg.observe_usage(&Use {
                identity,
                credential: Some(credential),
                scopes: std::slice::from_ref(scope),
                audiences,
                source: &source,
                user_agent: agent,
                at,
            });
        }
        // Below the tracker's bound on distinct pairs held between flushes.
        if j % 50_000 == 49_999 {
            reg.flush_usage().await.expect("usage flush");
        }
    }
    reg.flush_usage().await.expect("usage flush");
    planted
}

/// Identities with an anomaly finding, by rule (what the scorer found in the estate).
pub fn anomalies_found(reg: &Registry, admin: &Actor) -> BTreeMap<String, u64> {
    let filter = warden_core::ports::FindingFilter {
        status: None,
        kind: Some(warden_types::FindingKind::Anomaly),
    };
    let mut by_rule: BTreeMap<String, std::collections::BTreeSet<Uuid>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = reg
            .list_findings(admin, &filter, after, 1_000)
            .expect("listing findings");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for f in &page {
            if let Some(id) = f.identity_id {
                by_rule.entry(f.rule.clone()).or_default().insert(id);
            }
        }
    }
    by_rule
        .into_iter()
        .map(|(r, ids)| (r, ids.len() as u64))
        .collect()
}
