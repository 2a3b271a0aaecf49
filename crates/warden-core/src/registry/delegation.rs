//! Delegation to AI agents: a principal (a person known to a trusted issuer, or a Warden
//! identity) lends an agent a few of its scopes, for one resource, for a short time. The agent
//! exchanges the principal's token plus its own (RFC 8693 `subject_token` + `actor_token`) for a
//! delegated token: `sub` is the principal, `act` names the agent (nested for sub-agents,
//! RFC 8693 §4.1), `del` lists the delegations of the chain.
//!
//! Invariants (DESIGN.md §4): a delegated token's scopes ⊆ the delegator's ∩ every delegation's
//! ∩ the agent's ∩ what was asked; its expiry ≤ every parent's (the subject token, the actor
//! token, every delegation); the chain is no deeper than any of its delegations allows. Revoking
//! a delegation, or retiring any identity of the chain, makes every token derived from it
//! inactive at introspection (`active_token` re-checks the whole chain).

use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use warden_jose::decode;
use warden_types::{
    AuditOutcome, CreateDelegationRequest, Delegation, Delegator, Identity, IdentityStatus,
};

use super::{Registry, resolve_identity};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::scope;

/// Longest delegation.
pub const MAX_DELEGATION_TTL: u64 = 86_400;
/// Deepest chain any delegation may allow.
pub const MAX_DEPTH: u32 = 5;

/// The delegation ids of a delegated token (`del`), oldest hop first.
pub(crate) fn chain_ids(claims: &Map<String, Value>) -> Option<Vec<Uuid>> {
    claims
        .get("del")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .collect()
}

/// Every actor of an `act` chain (the current one first).
pub(crate) fn actors(act: &Value) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut cur = Some(act);
    while let Some(a) = cur {
        if let Some(id) = a
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
        {
            out.push(id);
        }
        cur = a.get("act");
        if out.len() > 16 {
            break;
        }
    }
    out
}

/// What a delegated exchange may issue.
pub(crate) struct Delegated {
    pub(crate) agent: Identity,
    /// The original principal (the token's `sub`) and, for an external one, its issuer.
    pub(crate) subject: String,
    pub(crate) subject_issuer: Option<String>,
    /// The new token's `act` and `del`.
    pub(crate) act: Value,
    pub(crate) chain: Vec<Uuid>,
    /// The scopes the token may carry (already the intersection).
    pub(crate) allowed: Vec<String>,
    pub(crate) audience: String,
    /// The token may not outlive this.
    pub(crate) not_after: OffsetDateTime,
    /// The agent's own token is DPoP-bound to this key: so must the delegated one be.
    pub(crate) agent_jkt: Option<String>,
    /// The subject token's `jti`, when its issuer is single-use.
    pub(crate) once: Option<([u8; 32], OffsetDateTime)>,
}

fn covered(granted: &[String], s: &str) -> bool {
    granted.iter().any(|g| scope::covers(g, s))
}

impl Registry {
    /// Lends `agent` some authority: by an admin; by a Warden identity for itself (its token
    /// carrying `warden:delegate`); or by an operator who manages that identity.
    pub async fn create_delegation(
        &self,
        actor: &Actor,
        req: CreateDelegationRequest,
    ) -> Result<Delegation, CoreError> {
        if req.scopes.is_empty() || req.scopes.len() > scope::MAX_SCOPES {
            return Err(CoreError::field("scopes", "1 to 64 scopes"));
        }
        for s in &req.scopes {
            scope::check(s)?;
        }
        if !req.audience.contains("://") || req.audience.contains('#') || req.audience.len() > 512 {
            return Err(CoreError::field(
                "audience",
                "an absolute URI (the resource)",
            ));
        }
        if req.ttl_secs == 0 || req.ttl_secs > MAX_DELEGATION_TTL {
            return Err(CoreError::field("ttl_secs", "1 second to 1 day"));
        }
        let depth = req.max_depth.unwrap_or(1);
        if !(1..=MAX_DEPTH).contains(&depth) {
            return Err(CoreError::field("max_depth", format!("1 to {MAX_DEPTH}")));
        }
        let actor = actor.clone();
        self.write_invalidating(move |tx, job| {
            let agent = match resolve_identity(tx, &Actor::system("delegation"), &req.agent) {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            if agent.status != IdentityStatus::Active {
                return Ok(Err(CoreError::InvalidState(format!(
                    "agent {:?} is {}",
                    agent.name, agent.status
                ))));
            }
            let target = format!("identity:{}", agent.id);
            let delegator = match (&req.delegator_identity, &req.delegator_issuer, &req.delegator_subject) {
                (Some(r), None, None) => {
                    let d = match resolve_identity(tx, &Actor::system("delegation"), r) {
                        Ok(d) => d,
                        Err(e) => return Ok(Err(e)),
                    };
                    let allowed = actor.is_admin()
                        || actor.can_manage_team(d.owner_id)
                        || actor.acts_on_self(d.id, "warden:delegate");
                    if !allowed {
                        let e = CoreError::Forbidden(format!(
                            "only {:?} itself, its team's operators or an admin may lend its authority",
                            d.name
                        ));
                        return Ok(Err(job.deny(tx, &actor, "delegation.create", target, e)?));
                    }
                    // Nobody lends what they do not hold.
                    if let Some(s) = req.scopes.iter().find(|s| !covered(&d.scopes, s)) {
                        return Ok(Err(CoreError::field(
                            "scopes",
                            format!("{s:?} is not held by the delegator"),
                        )));
                    }
                    if d.id == agent.id {
                        return Ok(Err(CoreError::field("agent", "an identity cannot delegate to itself")));
                    }
                    Delegator::Identity(d.id)
                }
                (None, Some(i), Some(sub)) => {
                    if !actor.is_admin() {
                        let e = CoreError::Forbidden(
                            "lending the authority of a person needs an admin".into(),
                        );
                        return Ok(Err(job.deny(tx, &actor, "delegation.create", target, e)?));
                    }
                    if tx.trusted_issuer_named(i)?.is_none() {
                        return Ok(Err(CoreError::NotFound(format!("issuer {i:?}"))));
                    }
                    if sub.is_empty() || sub.len() > 256 || sub.chars().any(char::is_control) {
                        return Ok(Err(CoreError::field("delegator_subject", "1 to 256 characters")));
                    }
                    Delegator::External {
                        issuer: i.clone(),
                        subject: sub.clone(),
                    }
                }
                _ => {
                    return Ok(Err(CoreError::field(
                        "delegator_identity",
                        "give delegator_identity, or delegator_issuer with delegator_subject",
                    )));
                }
            };
            let now = job.now();
            let d = Delegation {
                id: Uuid::now_v7(),
                delegator,
                agent_id: agent.id,
                scopes: req.scopes,
                audience: req.audience,
                expires_at: now + Duration::seconds(i64::try_from(req.ttl_secs).unwrap_or(0)),
                max_depth: depth,
                created_by: actor.label(),
                created_at: now,
                revoked_at: None,
            };
            tx.put_delegation(&d)?;
            job.record(
                tx,
                &actor,
                "delegation.create",
                target,
                AuditOutcome::Success,
                json!({ "delegation": d.id.to_string(), "delegator": d.delegator,
                        "scopes": d.scopes, "audience": d.audience,
                        "expires_at": d.expires_at.unix_timestamp(), "max_depth": d.max_depth }),
            )?;
            Ok(Ok(d))
        })
        .await?
    }

    /// Delegations the actor may see (of one agent, or all it can read).
    pub fn list_delegations(
        &self,
        actor: &Actor,
        agent: Option<&str>,
    ) -> Result<Vec<Delegation>, CoreError> {
        let store = self.reader()?;
        let id = match agent {
            Some(r) => Some(resolve_identity(&*store, actor, r)?.id),
            None => None,
        };
        let mut out = Vec::new();
        for d in store.delegations(id)? {
            if store
                .identity(d.agent_id)?
                .is_some_and(|i| actor.can_read_team(i.owner_id))
                || actor.acts_on_self(d.agent_id, "warden:read")
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Revokes a delegation: every token derived from it is inactive from the commit on.
    pub async fn revoke_delegation(
        &self,
        actor: &Actor,
        id: Uuid,
    ) -> Result<Delegation, CoreError> {
        let actor = actor.clone();
        self.write_invalidating(move |tx, job| {
            let Some(mut d) = tx.delegation(id)? else {
                return Ok(Err(CoreError::NotFound(format!("delegation {id}"))));
            };
            let target = format!("delegation:{id}");
            let agent_team = tx.identity(d.agent_id)?.map(|i| i.owner_id);
            let delegator_ok = match &d.delegator {
                Delegator::Identity(x) => {
                    actor.acts_on_self(*x, "warden:delegate")
                        || tx
                            .identity(*x)?
                            .is_some_and(|i| actor.can_manage_team(i.owner_id))
                }
                Delegator::External { .. } => false,
            };
            if !(actor.is_admin()
                || delegator_ok
                || agent_team.is_some_and(|t| actor.can_manage_team(t)))
            {
                let e = CoreError::Forbidden("you may not revoke this delegation".into());
                return Ok(Err(job.deny(tx, &actor, "delegation.revoke", target, e)?));
            }
            if d.revoked_at.is_none() {
                d.revoked_at = Some(job.now());
                tx.put_delegation(&d)?;
                job.record(
                    tx,
                    &actor,
                    "delegation.revoke",
                    target,
                    AuditOutcome::Success,
                    json!({ "agent": d.agent_id.to_string() }),
                )?;
            }
            Ok(Ok(d))
        })
        .await?
    }

    /// The delegations lent to `agent` (revoked and expired ones included), cached under the
    /// authentication generation: creating or revoking a delegation invalidates it.
    fn delegations_to(&self, agent: Uuid) -> Result<std::sync::Arc<Vec<Delegation>>, CoreError> {
        if let Some(hit) = self.agent_delegations.get(&agent) {
            return Ok(hit);
        }
        let generation = self.agent_delegations.generation();
        let list = std::sync::Arc::new(self.reader()?.delegations(Some(agent))?);
        self.agent_delegations
            .put(agent, generation, std::sync::Arc::clone(&list));
        Ok(list)
    }

    /// Checks a delegated exchange: the agent's own token (`actor_token`), the principal's
    /// (`subject_token`: a trusted issuer's token, a Warden identity's token, or a delegated
    /// token for a sub-agent), and an active delegation between them. `Err` holds the precise
    /// reason and whether it is a scope problem.
    pub(crate) async fn delegate(
        &self,
        subject_token: &str,
        actor_token: &str,
        issuer: &str,
        now: OffsetDateTime,
    ) -> Result<Delegated, (bool, String)> {
        let grant = |m: String| (false, m);
        // The agent: its own Warden token, not itself delegated.
        let actor_checked = self
            .checked_token(actor_token)
            .map_err(|e| grant(e.to_string()))?
            .ok_or_else(|| {
                grant("actor token invalid, expired, revoked or of an inactive identity".into())
            })?;
        if actor_checked.claims.contains_key("act") {
            return Err(grant(
                "the actor token is itself delegated; use the agent's own token".into(),
            ));
        }
        let (actor_at, agent) = (&actor_checked.at, actor_checked.identity.clone());
        // The principal: a token of ours (an identity's, or a delegated one) or a trusted
        // issuer's. Ours are recognised by their issuer; a token of ours that fails its check is
        // refused, never tried as an external one.
        let ours = self
            .checked_token(subject_token)
            .map_err(|e| grant(e.to_string()))?;
        let own = ours.is_some()
            || decode(subject_token)
                .ok()
                .is_some_and(|j| j.str_claim("iss").ok() == Some(issuer));
        let (
            delegator,
            subject,
            subject_issuer,
            parent_scopes,
            parent_exp,
            parent_act,
            mut links,
            claims,
        );
        let mut once = None;
        let checked;
        let external_claims;
        if own {
            checked = ours.ok_or_else(|| {
                grant("subject token invalid, expired, revoked or of an inactive chain".into())
            })?;
            let (at, identity, c) = (&checked.at, &checked.identity, &checked.claims);
            parent_exp = at.exp;
            parent_scopes = Some(at.scope.clone());
            claims = c;
            delegator = Delegator::Identity(identity.id);
            match c.get("act") {
                // A sub-agent: the parent agent lends on what it was lent.
                Some(act) => {
                    subject = at.sub.clone();
                    subject_issuer = c.get("sub_iss").and_then(Value::as_str).map(str::to_owned);
                    parent_act = Some(act.clone());
                    links = checked.chain.clone();
                }
                None => {
                    subject = identity.id.to_string();
                    subject_issuer = None;
                    parent_act = None;
                    links = Vec::new();
                }
            }
        } else {
            let ext = self
                .verify_external(subject_token, now)
                .await
                .map_err(grant)?;
            delegator = Delegator::External {
                issuer: ext.entry.issuer.name.clone(),
                subject: ext.subject.clone(),
            };
            subject = ext.subject.clone();
            subject_issuer = Some(ext.entry.issuer.name.clone());
            parent_scopes = None;
            parent_exp = ext.exp;
            parent_act = None;
            links = Vec::new();
            external_claims = ext.claims;
            claims = external_claims
                .as_object()
                .ok_or_else(|| grant("malformed subject token".into()))?;
            once = ext.once;
        }
        if agent.id.to_string() == subject && parent_act.is_none() {
            return Err(grant("an identity cannot delegate to itself".into()));
        }
        // RFC 8693 §4.4: the subject token may name who may act for it.
        if let Some(may) = claims.get("may_act")
            && may.get("sub").and_then(Value::as_str) != Some(agent.id.to_string().as_str())
        {
            return Err(grant(
                "the subject token's may_act does not name this agent".into(),
            ));
        }
        let d = self
            .delegations_to(agent.id)
            .map_err(|e| grant(e.to_string()))?
            .iter()
            .rfind(|d| d.revoked_at.is_none() && d.expires_at > now && d.delegator == delegator)
            .cloned()
            .ok_or_else(|| {
                grant("no active delegation from this principal to this agent".into())
            })?;
        // Depth: every delegation of the chain bounds it. The parent's links were checked
        // active with its token (`checked_token`); time is checked again here.
        links.push(d.clone());
        let chain: Vec<Uuid> = links.iter().map(|l| l.id).collect();
        let depth = u32::try_from(links.len()).unwrap_or(u32::MAX);
        let mut not_after = d.expires_at;
        for link in &links {
            if link.revoked_at.is_some() || link.expires_at <= now {
                return Err(grant(
                    "a delegation of the chain was revoked or has expired".into(),
                ));
            }
            if depth > link.max_depth {
                return Err(grant(format!(
                    "the chain would be {depth} agents deep; a delegation of it allows {}",
                    link.max_depth
                )));
            }
            if link.audience != d.audience {
                return Err(grant(
                    "a sub-agent's delegation must keep the audience".into(),
                ));
            }
            not_after = not_after.min(link.expires_at);
        }
        // Expiry ≤ every parent's.
        not_after = not_after
            .min(OffsetDateTime::from_unix_timestamp(parent_exp).unwrap_or(now))
            .min(OffsetDateTime::from_unix_timestamp(actor_at.exp).unwrap_or(now));
        // Scopes: the delegation's, held by the agent and by the delegator (its token's).
        let allowed: Vec<String> = d
            .scopes
            .iter()
            .filter(|s| covered(&agent.scopes, s))
            .filter(|s| parent_scopes.as_ref().is_none_or(|p| covered(p, s)))
            .cloned()
            .collect();
        if allowed.is_empty() {
            return Err((
                true,
                "the delegation leaves no scope the agent and delegator both hold".into(),
            ));
        }
        let mut act = json!({ "sub": agent.id.to_string(), "client_id": agent.id.to_string() });
        if let Some(p) = parent_act {
            act["act"] = p;
        }
        Ok(Delegated {
            agent,
            subject,
            subject_issuer,
            act,
            chain,
            allowed,
            audience: d.audience,
            not_after,
            agent_jkt: actor_at.jkt.clone(),
            once,
        })
    }
}

impl Registry {
    /// The revocation feed: delegations revoked and identities suspended or retired at or after
    /// `since` (any authenticated caller: resource servers poll it).
    pub fn revocations(
        &self,
        actor: &Actor,
        since: OffsetDateTime,
    ) -> Result<warden_types::RevocationFeed, CoreError> {
        if matches!(actor.principal, crate::actor::Principal::Anonymous) {
            return Err(CoreError::Unauthenticated(
                "authenticate to read the feed".into(),
            ));
        }
        let generated_at = self.now();
        let store = self.reader()?;
        let delegations = store
            .delegations(None)?
            .into_iter()
            .filter_map(|d| {
                d.revoked_at.filter(|r| *r >= since).map(|revoked_at| {
                    warden_types::RevokedDelegation {
                        id: d.id,
                        revoked_at,
                    }
                })
            })
            .collect();
        let mut identities = Vec::new();
        for status in [IdentityStatus::Retired, IdentityStatus::Suspended] {
            let filter = crate::ports::IdentityFilter {
                status: Some(status),
                ..Default::default()
            };
            let mut after = None;
            loop {
                let page = store.list_identities(&filter, after, 1000)?;
                let done = page.len() < 1000;
                after = page.last().map(|i| i.id);
                identities.extend(page.into_iter().filter(|i| i.updated_at >= since).map(|i| {
                    warden_types::InactiveIdentity {
                        id: i.id,
                        status: i.status,
                        since: i.updated_at,
                    }
                }));
                if done {
                    break;
                }
            }
        }
        Ok(warden_types::RevocationFeed {
            generated_at,
            delegations,
            identities,
        })
    }
}
