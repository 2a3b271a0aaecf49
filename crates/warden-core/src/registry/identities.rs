//! Identities: create, read, update, lifecycle.

use serde_json::json;
use uuid::Uuid;
use warden_types::{
    AuditOutcome, ChangeKind, ChangeRequest, ChangeStatus, CreateIdentityRequest, Identity,
    IdentityChange, IdentityStatus, Origin, UpdateIdentityRequest,
};

use super::{Job, Registry, conflict_as_exists, identity_target, resolve_identity};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::lifecycle::{Transition, next_status};
use crate::ports::{ChangeFilter, IdentityFilter, WriteTx};
use crate::{scope, validate};

/// Largest page a list may return.
pub const MAX_PAGE: usize = 1_000;

fn new_change(
    job: &Job,
    actor: &Actor,
    identity: &Identity,
    kind: ChangeKind,
    scopes: Vec<String>,
    privileged: Vec<String>,
) -> Result<ChangeRequest, CoreError> {
    let requester_id = actor.operator_id().ok_or_else(|| {
        CoreError::Forbidden("only operators can request privileged changes".into())
    })?;
    Ok(ChangeRequest {
        id: Uuid::now_v7(),
        identity_id: identity.id,
        identity_name: identity.name.clone(),
        environment: identity.environment.clone(),
        kind,
        scopes,
        privileged_scopes: privileged,
        status: ChangeStatus::Pending,
        requested_by: actor.label(),
        requester_id,
        requested_at: job.now(),
        decided_by: None,
        decided_at: None,
        decision_reason: None,
    })
}

/// Cancels the pending change requests of an identity (on retire); returns how many.
pub(super) fn cancel_pending(
    tx: &mut dyn WriteTx,
    job: &Job,
    actor: &Actor,
    identity: Uuid,
    why: &str,
) -> Result<usize, CoreError> {
    let filter = ChangeFilter {
        status: Some(ChangeStatus::Pending),
        identity: Some(identity),
        owner_in: None,
    };
    let mut cancelled = 0;
    loop {
        let pending = tx.list_change_requests(&filter, None, MAX_PAGE)?;
        if pending.is_empty() {
            break;
        }
        cancelled += pending.len();
        for mut c in pending.iter().cloned() {
            c.status = ChangeStatus::Cancelled;
            c.decided_by = Some(actor.label());
            c.decided_at = Some(job.now());
            c.decision_reason = Some(why.to_owned());
            tx.update_change_request(&c)?;
            job.record(
                tx,
                actor,
                "change.cancel",
                format!("change:{}", c.id),
                AuditOutcome::Success,
                json!({ "identity": identity.to_string(), "reason": why }),
            )?;
        }
    }
    Ok(cancelled)
}

impl Registry {
    pub async fn create_identity(
        &self,
        actor: &Actor,
        req: CreateIdentityRequest,
    ) -> Result<IdentityChange, CoreError> {
        validate::dns_label("name", &req.name)?;
        validate::dns_label("environment", &req.environment)?;
        if req.owner.trim().is_empty() {
            return Err(CoreError::field(
                "owner",
                "required: every identity has exactly one owning team (name or id)",
            ));
        }
        let purpose = validate::purpose(&req.purpose)?;
        let scopes = scope::normalise(&req.scopes)?;
        let audiences = validate::audiences(&req.audiences)?;
        validate::labels(&req.labels)?;
        let constraints = req.constraints.clone().unwrap_or_default();
        validate::constraints(&constraints)?;
        let now = self.now();
        if req.expires_at.is_some_and(|e| e <= now) {
            return Err(CoreError::field("expires_at", "must be in the future"));
        }
        let privileged = scope::privileged_among(&scopes, &self.policy.extra_privileged_scopes);
        let actor = actor.clone();
        self.write(move |tx, job| {
            let team = super::teams::find_team_in(tx, &req.owner)?;
            if !actor.can_manage_team(team.id) {
                let e = CoreError::Forbidden(format!(
                    "you may not create identities owned by team {:?}",
                    team.name
                ));
                return Ok(Err(job.deny(tx, &actor, "identity.create", format!("team:{}", team.id), e)?));
            }
            if let Some(parent) = req.parent_id {
                match tx.identity(parent)? {
                    // An identity the actor cannot see is reported as absent.
                    Some(p) if !actor.can_read_team(p.owner_id) => {
                        return Err(CoreError::field("parent_id", "no identity has this id"));
                    }
                    Some(p) if p.status != IdentityStatus::Retired => {}
                    Some(_) => return Err(CoreError::field("parent_id", "the parent identity is retired")),
                    None => return Err(CoreError::field("parent_id", "no identity has this id")),
                }
            }
            let exists = || format!("identity {:?} already exists in environment {:?}", req.name, req.environment);
            if !tx.identities_named(&req.name, Some(&req.environment))?.is_empty() {
                return Err(CoreError::AlreadyExists(exists()));
            }
            let now = job.now();
            let id = Uuid::now_v7();
            let held = !privileged.is_empty();
            let identity = Identity {
                id,
                name: req.name.clone(),
                kind: req.kind,
                owner_id: team.id,
                owner: team.name.clone(),
                purpose,
                environment: req.environment.clone(),
                status: if held { IdentityStatus::PendingApproval } else { IdentityStatus::Active },
                status_reason: held.then(|| "privileged scopes await approval".to_owned()),
                suspended_by_admin: false,
                privileged: held,
                scopes: scopes.clone(),
                audiences,
                constraints,
                labels: req.labels.clone(),
                parent_id: req.parent_id,
                origin: Origin::Managed,
                client_id: id.to_string(),
                created_at: now,
                updated_at: now,
                last_used_at: None,
                expires_at: req.expires_at,
            };
            tx.insert_identity(&identity).map_err(|e| conflict_as_exists(e, exists))?;
            job.record(
                tx,
                &actor,
                "identity.create",
                identity_target(id),
                AuditOutcome::Success,
                json!({
                    "name": identity.name, "environment": identity.environment,
                    "kind": identity.kind, "owner": identity.owner, "scopes": identity.scopes,
                    "status": identity.status,
                }),
            )?;
            let change = if held {
                let c = new_change(job, &actor, &identity, ChangeKind::Create, scopes, privileged)?;
                tx.insert_change_request(&c)?;
                job.record(
                    tx,
                    &actor,
                    "change.request",
                    format!("change:{}", c.id),
                    AuditOutcome::Success,
                    json!({ "identity": id.to_string(), "kind": c.kind, "privileged_scopes": c.privileged_scopes }),
                )?;
                Some(c)
            } else {
                None
            };
            Ok(Ok(IdentityChange { identity, change_request: change }))
        })
        .await?
    }

    pub fn identity(&self, actor: &Actor, reference: &str) -> Result<Identity, CoreError> {
        resolve_identity(&*self.reader()?, actor, reference)
    }

    /// A page of identities the actor may see, and the cursor of the next page.
    pub fn list_identities(
        &self,
        actor: &Actor,
        mut filter: IdentityFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<Identity>, Option<Uuid>), CoreError> {
        filter.owner_in = actor.visible_teams();
        let limit = limit.clamp(1, MAX_PAGE);
        let mut items = self.reader()?.list_identities(&filter, after, limit + 1)?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|i| i.id)
        } else {
            None
        };
        Ok((items, next))
    }

    pub async fn update_identity(
        &self,
        actor: &Actor,
        reference: &str,
        req: UpdateIdentityRequest,
    ) -> Result<IdentityChange, CoreError> {
        let purpose = req.purpose.as_deref().map(validate::purpose).transpose()?;
        let add = scope::normalise(&req.add_scopes)?;
        let remove = scope::normalise(&req.remove_scopes)?;
        let add_aud = validate::audiences(&req.add_audiences)?;
        validate::labels(&req.set_labels)?;
        if let Some(c) = &req.constraints {
            validate::constraints(c)?;
        }
        let extra = self.policy.extra_privileged_scopes.clone();
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.write_invalidating(move |tx, job| {
            let mut identity = resolve_identity(tx, &actor, &reference)?;
            let target = identity_target(identity.id);
            if !actor.can_manage_team(identity.owner_id) {
                let e = CoreError::Forbidden(format!("you may not change identities of team {:?}", identity.owner));
                return Ok(Err(job.deny(tx, &actor, "identity.update", target, e)?));
            }
            if identity.status == IdentityStatus::Retired {
                return Ok(Err(CoreError::InvalidState("a retired identity cannot change".into())));
            }
            if let Some(p) = purpose {
                identity.purpose = p;
            }
            // Narrowing applies at once.
            identity.scopes.retain(|s| !remove.contains(s));
            identity.audiences.retain(|a| !req.remove_audiences.contains(a));
            for a in add_aud {
                if !identity.audiences.contains(&a) {
                    identity.audiences.push(a);
                }
            }
            identity.audiences.sort();
            if identity.audiences.len() > validate::MAX_AUDIENCES {
                return Err(CoreError::field("audiences", "too many audiences"));
            }
            for k in &req.remove_labels {
                identity.labels.remove(k);
            }
            identity.labels.extend(req.set_labels.clone());
            validate::labels(&identity.labels)?;
            if let Some(c) = req.constraints.clone() {
                identity.constraints = c;
            }
            // Widening: held as one change when any added scope is privileged.
            let new: Vec<String> = add.into_iter().filter(|s| !identity.scopes.contains(s)).collect();
            let privileged = scope::privileged_among(&new, &extra);
            let mut change = None;
            if privileged.is_empty() {
                identity.scopes.extend(new.iter().cloned());
                identity.scopes.sort();
            } else {
                let pending = ChangeFilter {
                    status: Some(ChangeStatus::Pending),
                    identity: Some(identity.id),
                    owner_in: None,
                };
                if let Some(same) = tx
                    .list_change_requests(&pending, None, MAX_PAGE)?
                    .into_iter()
                    .find(|c| c.kind == ChangeKind::AddScopes && c.scopes == new)
                {
                    return Ok(Err(CoreError::AlreadyExists(format!(
                        "an identical change request is already pending: {}",
                        same.id
                    ))));
                }
                change = Some(new_change(job, &actor, &identity, ChangeKind::AddScopes, new.clone(), privileged)?);
            }
            if identity.scopes.len() > scope::MAX_SCOPES {
                return Err(CoreError::field("scopes", format!("at most {} scopes", scope::MAX_SCOPES)));
            }
            identity.privileged = !scope::privileged_among(&identity.scopes, &extra).is_empty();
            identity.updated_at = job.now();
            tx.update_identity(&identity)?;
            job.record(
                tx,
                &actor,
                "identity.update",
                target,
                AuditOutcome::Success,
                json!({
                    "purpose": req.purpose, "removed_scopes": remove,
                    "added_scopes": if change.is_none() { new.clone() } else { Vec::new() },
                    "held_scopes": if change.is_some() { new } else { Vec::new() },
                    "set_labels": req.set_labels, "removed_labels": req.remove_labels,
                    "audiences": identity.audiences,
                }),
            )?;
            if let Some(c) = &change {
                tx.insert_change_request(c)?;
                job.record(
                    tx,
                    &actor,
                    "change.request",
                    format!("change:{}", c.id),
                    AuditOutcome::Success,
                    json!({ "identity": identity.id.to_string(), "kind": c.kind, "privileged_scopes": c.privileged_scopes }),
                )?;
            }
            Ok(Ok(IdentityChange { identity, change_request: change }))
        })
        .await?
    }

    /// Suspends, resumes or retires an identity. Retire revokes every credential and cancels every
    /// pending change in the same transaction; suspend disables every credential by the identity's
    /// status, checked at each authentication.
    pub async fn transition(
        &self,
        actor: &Actor,
        reference: &str,
        t: Transition,
        reason: Option<String>,
    ) -> Result<Identity, CoreError> {
        let required = matches!(t, Transition::Suspend | Transition::Retire);
        let reason = validate::reason("reason", reason.as_deref(), required)?;
        let (actor, reference) = (actor.clone(), reference.to_owned());
        let action = match t {
            Transition::Activate => "identity.activate",
            Transition::Suspend => "identity.suspend",
            Transition::Resume => "identity.resume",
            Transition::Retire => "identity.retire",
        };
        let identity = self.write_invalidating(move |tx, job| {
            let mut identity = resolve_identity(tx, &actor, &reference)?;
            let target = identity_target(identity.id);
            if !actor.can_manage_team(identity.owner_id) {
                let e = CoreError::Forbidden(format!(
                    "you may not {} identities of team {:?}",
                    t.verb(),
                    identity.owner
                ));
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            let from = identity.status;
            if t == Transition::Resume && identity.suspended_by_admin && !actor.is_admin() {
                let e = CoreError::Forbidden(
                    "an admin suspended this identity; only an admin can resume it".into(),
                );
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            // An admin may lock a suspension a member started (suspend again), so that only an
            // admin can lift it.
            if t == Transition::Suspend
                && from == IdentityStatus::Suspended
                && actor.is_admin()
                && !identity.suspended_by_admin
            {
                identity.suspended_by_admin = true;
                identity.status_reason = reason.clone();
                identity.updated_at = job.now();
                tx.update_identity(&identity)?;
                job.record(
                    tx,
                    &actor,
                    action,
                    target,
                    AuditOutcome::Success,
                    json!({ "from": from, "to": from, "reason": reason, "locked_by_admin": true }),
                )?;
                return Ok(Ok(identity));
            }
            let to = match next_status(from, t) {
                Ok(to) => to,
                Err(e) => return Ok(Err(e)),
            };
            let now = job.now();
            identity.status = to;
            identity.status_reason = reason.clone();
            identity.suspended_by_admin = to == IdentityStatus::Suspended && actor.is_admin();
            identity.updated_at = now;
            tx.update_identity(&identity)?;
            let mut revoked = Vec::new();
            let mut cancelled = 0;
            if to == IdentityStatus::Retired {
                let why = format!("identity retired: {}", reason.as_deref().unwrap_or(""));
                for mut c in tx.credentials_of(identity.id)? {
                    if c.revoked_at.is_none() {
                        c.revoked_at = Some(now);
                        c.revoke_reason = Some(why.clone());
                        tx.update_credential(&c)?;
                        job.record(
                            tx,
                            &actor,
                            "credential.revoke",
                            format!("credential:{}", c.id),
                            AuditOutcome::Success,
                            json!({ "identity": identity.id.to_string(), "reason": why }),
                        )?;
                        revoked.push(c.id.to_string());
                    }
                }
                cancelled = cancel_pending(tx, job, &actor, identity.id, "identity retired")?;
                let filter = crate::ports::LeaseFilter {
                    prefix: None,
                    identity: Some(identity.id),
                    active_only: true,
                };
                for mut l in tx.list_vault_leases(&filter, 100_000)? {
                    super::leases::mark_revoked(&mut l, now);
                    tx.put_vault_lease(&l)?;
                    job.record(
                        tx,
                        &actor,
                        "lease.revoke",
                        format!("lease:{}", l.id),
                        AuditOutcome::Success,
                        json!({ "path": l.path, "reason": "identity retired" }),
                    )?;
                }
            }
            job.record(
                tx,
                &actor,
                action,
                target,
                AuditOutcome::Success,
                json!({ "from": from, "to": to, "reason": reason, "revoked_credentials": revoked, "cancelled_changes": cancelled }),
            )?;
            Ok(Ok(identity))
        })
        .await??;
        if identity.status == IdentityStatus::Retired {
            // Dynamic logins go now rather than at the sweeper's next pass.
            self.clean_up_leases_of(identity.id).await;
        }
        Ok(identity)
    }
}
