//! Four-eyes approval of privileged changes.

use serde_json::json;
use uuid::Uuid;
use warden_types::{AuditOutcome, ChangeKind, ChangeRequest, ChangeStatus, IdentityStatus};

use super::{Registry, identity_target};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::lifecycle::{Transition, next_status};
use crate::ports::ChangeFilter;
use crate::{scope, validate};

impl Registry {
    pub fn list_changes(
        &self,
        actor: &Actor,
        status: Option<ChangeStatus>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<ChangeRequest>, Option<Uuid>), CoreError> {
        let filter = ChangeFilter {
            status,
            identity: None,
            owner_in: actor.visible_teams(),
        };
        let limit = limit.clamp(1, super::identities::MAX_PAGE);
        let mut items = self
            .reader()?
            .list_change_requests(&filter, after, limit + 1)?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|c| c.id)
        } else {
            None
        };
        Ok((items, next))
    }

    pub fn change(&self, actor: &Actor, id: Uuid) -> Result<ChangeRequest, CoreError> {
        let store = self.reader()?;
        let c = store
            .change_request(id)?
            .ok_or_else(|| CoreError::NotFound(format!("change request {id}")))?;
        match store.identity(c.identity_id)? {
            Some(i) if actor.can_read_team(i.owner_id) => Ok(c),
            _ => Err(CoreError::NotFound(format!("change request {id}"))),
        }
    }

    /// Approves (`approve = true`) or denies a pending change. Only an admin who is not the
    /// requester may decide; the decision records who and why.
    pub async fn decide(
        &self,
        actor: &Actor,
        id: Uuid,
        approve: bool,
        reason: String,
    ) -> Result<ChangeRequest, CoreError> {
        let reason = validate::reason("reason", Some(&reason), true)?;
        let extra = self.policy.extra_privileged_scopes.clone();
        let actor = actor.clone();
        let action = if approve {
            "change.approve"
        } else {
            "change.deny"
        };
        self.write_invalidating(move |tx, job| {
            let mut change = tx
                .change_request(id)?
                .ok_or_else(|| CoreError::NotFound(format!("change request {id}")))?;
            let target = format!("change:{id}");
            let Some(approver) = actor.operator_id() else {
                return Ok(Err(CoreError::Forbidden("only operators decide change requests".into())));
            };
            if approver == change.requester_id {
                let e = CoreError::SelfApproval(
                    "four-eyes rule: the requester cannot decide their own change request; another admin must".into(),
                );
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            if !actor.is_admin() {
                let e = CoreError::Forbidden("deciding a privileged change needs the admin role".into());
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            if change.status != ChangeStatus::Pending {
                return Ok(Err(CoreError::InvalidState(format!("the change request is already {}", change.status))));
            }
            let mut identity = tx
                .identity(change.identity_id)?
                .ok_or_else(|| CoreError::NotFound(format!("identity {}", change.identity_id)))?;
            let now = job.now();
            if identity.status == IdentityStatus::Retired {
                return Ok(Err(CoreError::InvalidState("the identity is retired".into())));
            }
            match (change.kind, approve) {
                (ChangeKind::Create, true) => {
                    identity.status = next_status(identity.status, Transition::Activate)?;
                    identity.status_reason = Some(format!("approved by {}", actor.label()));
                }
                (ChangeKind::Create, false) => {
                    identity.status = next_status(identity.status, Transition::Retire)?;
                    identity.status_reason = Some(format!("creation denied: {}", reason.as_deref().unwrap_or("")));
                }
                (ChangeKind::AddScopes, true) => {
                    for s in &change.scopes {
                        if !identity.scopes.contains(s) {
                            identity.scopes.push(s.clone());
                        }
                    }
                    identity.scopes.sort();
                    if identity.scopes.len() > scope::MAX_SCOPES {
                        return Ok(Err(CoreError::InvalidState("approving would exceed the scope limit".into())));
                    }
                }
                (ChangeKind::AddScopes, false) => {}
            }
            identity.privileged = !scope::privileged_among(&identity.scopes, &extra).is_empty();
            identity.updated_at = now;
            tx.update_identity(&identity)?;
            change.status = if approve { ChangeStatus::Approved } else { ChangeStatus::Denied };
            change.decided_by = Some(actor.label());
            change.decided_at = Some(now);
            change.decision_reason = reason.clone();
            tx.update_change_request(&change)?;
            if change.kind == ChangeKind::Create && !approve {
                super::identities::cancel_pending(tx, job, &actor, identity.id, "identity creation denied")?;
            }
            job.record(
                tx,
                &actor,
                action,
                target,
                AuditOutcome::Success,
                json!({ "identity": identity.id.to_string(), "kind": change.kind, "scopes": change.scopes, "reason": reason }),
            )?;
            job.record(
                tx,
                &actor,
                "identity.update",
                identity_target(identity.id),
                AuditOutcome::Success,
                json!({ "by_change": id.to_string(), "status": identity.status, "scopes": identity.scopes }),
            )?;
            Ok(Ok(change))
        })
        .await?
    }
}
