//! Access-review campaigns: every owning team attests each of its NHIs — keep, reduce or retire,
//! with a reason. An admin starts a campaign (all teams or one) with a due date; members see
//! their teams' queue and attest; `retire` retires the identity at once (through the ordinary
//! lifecycle, audited); items still unattested when the campaign is due are escalated: marked,
//! and flagged as `REVIEW-OVERDUE` findings for the owning team. Closing a campaign fixes its
//! summary.

use serde_json::json;
use uuid::Uuid;
use warden_types::{
    AttestRequest, AuditOutcome, CreateReviewRequest, Finding, FindingKind, FindingStatus,
    IdentityStatus, ReviewCampaign, ReviewItem, ReviewSummary,
};

use super::Registry;
use super::hygiene::every_identity;
use crate::actor::Actor;
use crate::error::CoreError;
use crate::lifecycle::Transition;

const DECISIONS: [&str; 3] = ["keep", "reduce", "retire"];

fn summarize(items: &[ReviewItem]) -> ReviewSummary {
    let mut s = ReviewSummary {
        items: items.len() as u64,
        ..Default::default()
    };
    for i in items {
        match i.decision.as_deref() {
            Some("keep") => s.keep += 1,
            Some("reduce") => s.reduce += 1,
            Some("retire") => s.retire += 1,
            _ => s.unattested += 1,
        }
        if i.escalated_at.is_some() {
            s.escalated += 1;
        }
    }
    s
}

impl Registry {
    /// Starts a campaign over every non-retired NHI (or one team's). Admins.
    pub async fn create_review(
        &self,
        actor: &Actor,
        req: CreateReviewRequest,
    ) -> Result<ReviewCampaign, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "only an admin may start an access review".into(),
            ));
        }
        let name = crate::validate::reason("name", Some(&req.name), true)?.unwrap_or_default();
        if !(1..=90).contains(&req.due_in_days) {
            return Err(CoreError::field("due_in_days", "between 1 and 90"));
        }
        let now = self.now();
        let store = self.snapshot()?;
        let team = match &req.team {
            Some(t) => Some(
                store
                    .team_named(t)?
                    .ok_or_else(|| CoreError::NotFound(format!("team {t:?}")))?,
            ),
            None => None,
        };
        let id = Uuid::now_v7();
        let items: Vec<ReviewItem> = every_identity(&*store)?
            .into_iter()
            .filter(|i| i.status != IdentityStatus::Retired)
            .filter(|i| team.as_ref().is_none_or(|t| t.id == i.owner_id))
            .map(|i| ReviewItem {
                campaign_id: id,
                identity_id: i.id,
                identity: format!("{}/{}", i.environment, i.name),
                team: i.owner.clone(),
                team_id: i.owner_id,
                scopes: i.scopes.clone(),
                decision: None,
                reason: None,
                attested_by: None,
                attested_at: None,
                escalated_at: None,
            })
            .collect();
        drop(store);
        let campaign = ReviewCampaign {
            id,
            name,
            team: req.team,
            created_by: actor.label(),
            created_at: now,
            due_at: now + time::Duration::days(i64::from(req.due_in_days)),
            status: "open".into(),
            closed_at: None,
            summary: summarize(&items),
        };
        let (actor, c) = (actor.clone(), campaign.clone());
        self.write(move |tx, job| {
            tx.put_review_campaign(&c)?;
            for i in &items {
                tx.put_review_item(i)?;
            }
            job.record(
                tx,
                &actor,
                "review.create",
                format!("review:{}", c.id),
                AuditOutcome::Success,
                json!({ "name": c.name, "team": c.team, "items": c.summary.items, "due_at": c.due_at.unix_timestamp() }),
            )
        })
        .await?;
        Ok(campaign)
    }

    pub fn list_reviews(&self, actor: &Actor) -> Result<Vec<ReviewCampaign>, CoreError> {
        if matches!(actor.principal, crate::actor::Principal::Anonymous) {
            return Err(CoreError::Unauthenticated("sign in".into()));
        }
        Ok(self.reader()?.list_review_campaigns()?)
    }

    /// A campaign's queue as the actor sees it: every item for admins and auditors, the items of
    /// the actor's teams for members. Unattested first.
    pub fn review_queue(&self, actor: &Actor, id: Uuid) -> Result<Vec<ReviewItem>, CoreError> {
        let store = self.reader()?;
        store
            .review_campaign(id)?
            .ok_or_else(|| CoreError::NotFound(format!("review {id}")))?;
        let mut items: Vec<ReviewItem> = store
            .review_items(id)?
            .into_iter()
            .filter(|i| actor.can_read_audit() || actor.can_manage_team(i.team_id))
            .collect();
        items.sort_by(|a, b| {
            (a.decision.is_some(), &a.team, &a.identity).cmp(&(
                b.decision.is_some(),
                &b.team,
                &b.identity,
            ))
        });
        Ok(items)
    }

    /// Attests one NHI of an open campaign: a member of its owning team, or an admin. `retire`
    /// retires the identity now.
    pub async fn attest(
        &self,
        actor: &Actor,
        id: Uuid,
        req: AttestRequest,
    ) -> Result<ReviewItem, CoreError> {
        if !DECISIONS.contains(&req.decision.as_str()) {
            return Err(CoreError::field("decision", "keep, reduce or retire"));
        }
        let reason =
            crate::validate::reason("reason", Some(&req.reason), true)?.unwrap_or_default();
        let identity = self.identity(actor, &req.identity)?;
        if !req.remove_scopes.is_empty() {
            if req.decision != "reduce" {
                return Err(CoreError::field(
                    "remove_scopes",
                    "only with the decision reduce",
                ));
            }
            if let Some(s) = req
                .remove_scopes
                .iter()
                .find(|s| !identity.scopes.contains(s))
            {
                return Err(CoreError::field(
                    "remove_scopes",
                    format!("{s} is not one of its scopes"),
                ));
            }
            if identity
                .scopes
                .iter()
                .all(|s| req.remove_scopes.contains(s))
            {
                return Err(CoreError::field(
                    "remove_scopes",
                    "it would hold no scope: retire it instead",
                ));
            }
        }
        let remove_scopes = req.remove_scopes.clone();
        let (actor_c, decision) = (actor.clone(), req.decision.clone());
        let reason_c = reason.clone();
        let remove_scopes_c = remove_scopes.clone();
        let item = self
            .write(move |tx, job| {
                let Some(mut c) = tx.review_campaign(id)? else {
                    return Ok(Err(CoreError::NotFound(format!("review {id}"))));
                };
                if c.status != "open" {
                    return Ok(Err(CoreError::InvalidState("the review is closed".into())));
                }
                let items = tx.review_items(id)?;
                let Some(mut item) = items.iter().find(|i| i.identity_id == identity.id).cloned()
                else {
                    return Ok(Err(CoreError::NotFound(format!(
                        "{} is not part of this review",
                        req.identity
                    ))));
                };
                let target = format!("review:{id}");
                if !actor_c.can_manage_team(item.team_id) {
                    let e = CoreError::Forbidden(format!(
                        "only team {:?} or an admin may attest {}",
                        item.team, item.identity
                    ));
                    return Ok(Err(job.deny(tx, &actor_c, "review.attest", target, e)?));
                }
                item.decision = Some(decision.clone());
                item.reason = Some(reason_c.clone());
                item.attested_by = Some(actor_c.label());
                item.attested_at = Some(job.now());
                tx.put_review_item(&item)?;
                let all: Vec<ReviewItem> = items
                    .into_iter()
                    .map(|i| {
                        if i.identity_id == item.identity_id {
                            item.clone()
                        } else {
                            i
                        }
                    })
                    .collect();
                c.summary = summarize(&all);
                tx.put_review_campaign(&c)?;
                job.record(
                    tx,
                    &actor_c,
                    "review.attest",
                    target,
                    AuditOutcome::Success,
                    json!({
                        "identity": item.identity_id,
                        "decision": decision,
                        "reason": reason_c,
                        "remove_scopes": remove_scopes_c,
                    }),
                )?;
                Ok(Ok(item))
            })
            .await??;
        if item.decision.as_deref() == Some("retire") {
            self.transition(
                actor,
                &item.identity_id.to_string(),
                Transition::Retire,
                Some(format!("access review: {reason}")),
            )
            .await?;
        }
        if item.decision.as_deref() == Some("reduce") && !remove_scopes.is_empty() {
            // Narrowing needs no approval; it goes through the ordinary update (audited, caches
            // invalidated).
            self.update_identity(
                actor,
                &item.identity_id.to_string(),
                warden_types::UpdateIdentityRequest {
                    remove_scopes,
                    ..Default::default()
                },
            )
            .await?;
        }
        Ok(item)
    }

    /// Escalates the unattested items of open campaigns past their due date: marks them and opens
    /// a `REVIEW-OVERDUE` finding per NHI for its team. Returns how many were escalated.
    pub async fn escalate_reviews(&self) -> Result<u64, CoreError> {
        let now = self.now();
        let store = self.reader()?;
        let due: Vec<ReviewCampaign> = store
            .list_review_campaigns()?
            .into_iter()
            .filter(|c| c.status == "open" && c.due_at <= now)
            .collect();
        drop(store);
        let mut total = 0;
        for c in due {
            let n = self
                .write(move |tx, job| {
                    let mut items = tx.review_items(c.id)?;
                    let mut n = 0u64;
                    for i in items
                        .iter_mut()
                        .filter(|i| i.decision.is_none() && i.escalated_at.is_none())
                    {
                        i.escalated_at = Some(job.now());
                        tx.put_review_item(i)?;
                        let fingerprint = format!("review:{}:{}", c.id, i.identity_id);
                        if tx.finding_by_fingerprint(&fingerprint)?.is_none() {
                            tx.insert_finding(&Finding {
                                id: Uuid::now_v7(),
                                fingerprint,
                                kind: FindingKind::Hygiene,
                                rule: "REVIEW-OVERDUE".into(),
                                severity: "medium".into(),
                                repository: None,
                                path: format!("identity/{}", i.identity),
                                line: 0,
                                commit: None,
                                author: None,
                                email: None,
                                preview: format!(
                                    "not attested in access review {:?} by its due date",
                                    c.name
                                ),
                                suggested_owner: Some(i.team.clone()),
                                identity_id: Some(i.identity_id),
                                identity: Some(i.identity.clone()),
                                owner: Some(i.team.clone()),
                                credential_id: None,
                                action: None,
                                status: FindingStatus::Open,
                                status_reason: None,
                                reported_by: "review".into(),
                                first_seen: job.now(),
                                last_seen: job.now(),
                                times_seen: 1,
                                evidence: Some(
                                    json!({ "review": c.id, "due_at": c.due_at.unix_timestamp() }),
                                ),
                                proposal: Some(
                                    "attest it (keep, reduce or retire) or retire it".into(),
                                ),
                            })?;
                        }
                        n += 1;
                    }
                    if n > 0 {
                        let mut c = c.clone();
                        c.summary = summarize(&items);
                        tx.put_review_campaign(&c)?;
                        job.record(
                            tx,
                            &Actor::system("review-escalation"),
                            "review.escalate",
                            format!("review:{}", c.id),
                            AuditOutcome::Success,
                            json!({ "escalated": n }),
                        )?;
                    }
                    Ok(n)
                })
                .await?;
            total += n;
        }
        Ok(total)
    }

    /// Closes a campaign (admins): its summary is final; unattested items stay unattested.
    pub async fn close_review(&self, actor: &Actor, id: Uuid) -> Result<ReviewCampaign, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "only an admin may close an access review".into(),
            ));
        }
        let actor = actor.clone();
        self.write(move |tx, job| {
            let Some(mut c) = tx.review_campaign(id)? else {
                return Ok(Err(CoreError::NotFound(format!("review {id}"))));
            };
            if c.status != "open" {
                return Ok(Err(CoreError::InvalidState(
                    "the review is already closed".into(),
                )));
            }
            c.summary = summarize(&tx.review_items(id)?);
            c.status = "closed".into();
            c.closed_at = Some(job.now());
            tx.put_review_campaign(&c)?;
            job.record(
                tx,
                &actor,
                "review.close",
                format!("review:{id}"),
                AuditOutcome::Success,
                json!({ "summary": c.summary }),
            )?;
            Ok(Ok(c))
        })
        .await?
    }
}
