//! Teams and operators.

use serde_json::json;
use uuid::Uuid;
use warden_crypto::token::{self, TokenKind};
use warden_types::{
    AuditOutcome, CreateOperatorRequest, CreateTeamRequest, CreatedOperator, Operator,
    OperatorRole, Team,
};

use super::{Registry, conflict_as_exists};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::ports::{OperatorRecord, ReadStore};
use crate::validate;

fn find_team(store: &dyn ReadStore, reference: &str) -> Result<Team, CoreError> {
    let found = match Uuid::parse_str(reference) {
        Ok(id) => store.team(id)?,
        Err(_) => store.team_named(reference)?,
    };
    found.ok_or_else(|| CoreError::NotFound(format!("team {reference:?}")))
}

pub(crate) fn find_team_in(store: &dyn ReadStore, reference: &str) -> Result<Team, CoreError> {
    find_team(store, reference)
}

fn find_operator(store: &dyn ReadStore, reference: &str) -> Result<OperatorRecord, CoreError> {
    let found = match Uuid::parse_str(reference) {
        Ok(id) => store.operator(id)?,
        Err(_) => store.operator_named(reference)?,
    };
    found.ok_or_else(|| CoreError::NotFound(format!("operator {reference:?}")))
}

fn admin_only(actor: &Actor, what: &str) -> Result<(), CoreError> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(CoreError::Forbidden(format!("{what} needs the admin role")))
    }
}

impl Registry {
    pub async fn create_team(
        &self,
        actor: &Actor,
        req: CreateTeamRequest,
    ) -> Result<Team, CoreError> {
        validate::dns_label("name", &req.name)?;
        let description = validate::description(req.description.as_deref())?;
        let actor = actor.clone();
        self.write(move |tx, job| {
            if let Err(e) = admin_only(&actor, "creating a team") {
                return Ok(Err(job.deny(
                    tx,
                    &actor,
                    "team.create",
                    format!("team:{}", req.name),
                    e,
                )?));
            }
            let team = Team {
                id: Uuid::now_v7(),
                name: req.name.clone(),
                description,
                members: Vec::new(),
                created_at: job.now(),
            };
            tx.insert_team(&team).map_err(|e| {
                conflict_as_exists(e, || format!("team {:?} already exists", req.name))
            })?;
            job.record(
                tx,
                &actor,
                "team.create",
                format!("team:{}", team.id),
                AuditOutcome::Success,
                json!({ "name": team.name }),
            )?;
            Ok(Ok(team))
        })
        .await?
    }

    pub fn list_teams(&self, actor: &Actor) -> Result<Vec<Team>, CoreError> {
        if matches!(
            actor.principal,
            crate::Principal::Operator { .. } | crate::Principal::System
        ) {
            Ok(self.reader()?.list_teams()?)
        } else {
            Err(CoreError::Forbidden(
                "listing teams needs an operator".into(),
            ))
        }
    }

    pub fn team(&self, actor: &Actor, reference: &str) -> Result<Team, CoreError> {
        let _ = self.list_teams(actor)?;
        find_team(&*self.reader()?, reference)
    }

    /// Adds (`add = true`) or removes an operator from a team.
    pub async fn set_membership(
        &self,
        actor: &Actor,
        team: &str,
        operator: &str,
        add: bool,
    ) -> Result<Team, CoreError> {
        let (actor, team, operator) = (actor.clone(), team.to_owned(), operator.to_owned());
        let action = if add {
            "team.member_add"
        } else {
            "team.member_remove"
        };
        self.write_invalidating(move |tx, job| {
            let t = find_team(tx, &team)?;
            if let Err(e) = admin_only(&actor, "changing team membership") {
                return Ok(Err(job.deny(
                    tx,
                    &actor,
                    action,
                    format!("team:{}", t.id),
                    e,
                )?));
            }
            let op = find_operator(tx, &operator)?;
            if add {
                tx.add_member(t.id, op.operator.id)?;
            } else if !tx.remove_member(t.id, op.operator.id)? {
                return Ok(Err(CoreError::NotFound(format!(
                    "operator {:?} in team {:?}",
                    op.operator.name, t.name
                ))));
            }
            job.record(
                tx,
                &actor,
                action,
                format!("team:{}", t.id),
                AuditOutcome::Success,
                json!({ "operator": op.operator.name }),
            )?;
            Ok(find_team(tx, &t.id.to_string()))
        })
        .await?
    }

    pub async fn create_operator(
        &self,
        actor: &Actor,
        req: CreateOperatorRequest,
    ) -> Result<CreatedOperator, CoreError> {
        validate::dns_label("name", &req.name)?;
        let secret = token::generate(TokenKind::Operator);
        let hash = self.secret_hasher.hash(secret.expose().as_bytes());
        let actor = actor.clone();
        let operator = self
            .write(move |tx, job| {
                if let Err(e) = admin_only(&actor, "creating an operator") {
                    return Ok(Err(job.deny(
                        tx,
                        &actor,
                        "operator.create",
                        format!("operator:{}", req.name),
                        e,
                    )?));
                }
                let mut team_ids = Vec::with_capacity(req.teams.len());
                for t in &req.teams {
                    team_ids.push(find_team(tx, t)?);
                }
                // Four eyes on admins: once another active admin exists, a new admin starts
                // disabled and only an admin other than its creator can enable it. (With a single
                // admin — bootstrap — the first additional admin is trusted at once.)
                let creator = actor.operator_id();
                let held = req.role == OperatorRole::Admin
                    && tx.list_operators()?.iter().any(|o| {
                        o.role == OperatorRole::Admin
                            && o.disabled_at.is_none()
                            && Some(o.id) != creator
                    });
                let now = job.now();
                let op = Operator {
                    id: Uuid::now_v7(),
                    name: req.name.clone(),
                    role: req.role,
                    teams: team_ids.iter().map(|t| t.name.clone()).collect(),
                    created_at: now,
                    disabled_at: held.then_some(now),
                };
                tx.insert_operator(&op, &hash, creator).map_err(|e| {
                    conflict_as_exists(e, || format!("operator {:?} already exists", req.name))
                })?;
                for t in &team_ids {
                    tx.add_member(t.id, op.id)?;
                }
                job.record(
                    tx,
                    &actor,
                    "operator.create",
                    format!("operator:{}", op.id),
                    AuditOutcome::Success,
                    json!({ "name": op.name, "role": op.role, "teams": op.teams, "awaits_enabling": held }),
                )?;
                Ok(Ok(op))
            })
            .await??;
        Ok(CreatedOperator {
            operator,
            token: secret.expose().to_owned(),
        })
    }

    pub fn list_operators(&self, actor: &Actor) -> Result<Vec<Operator>, CoreError> {
        if !actor.can_read_audit() {
            return Err(CoreError::Forbidden(
                "listing operators needs the admin or auditor role".into(),
            ));
        }
        Ok(self.reader()?.list_operators()?)
    }

    /// Disables (`disable = true`) or re-enables an operator: a disabled operator's token stops
    /// authenticating at once. Admins only; nobody disables themselves.
    pub async fn set_operator_disabled(
        &self,
        actor: &Actor,
        operator: &str,
        disable: bool,
        reason: Option<String>,
    ) -> Result<Operator, CoreError> {
        let reason = validate::reason("reason", reason.as_deref(), disable)?;
        let (actor, operator) = (actor.clone(), operator.to_owned());
        let action = if disable {
            "operator.disable"
        } else {
            "operator.enable"
        };
        self.write_invalidating(move |tx, job| {
            let record = find_operator(tx, &operator)?;
            let mut op = record.operator;
            let target = format!("operator:{}", op.id);
            if let Err(e) = admin_only(&actor, "disabling or enabling an operator") {
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            if !disable
                && op.role == OperatorRole::Admin
                && record.created_by.is_some()
                && record.created_by == actor.operator_id()
            {
                let e = CoreError::SelfApproval(
                    "four-eyes rule: an admin cannot enable an admin it created; another admin must".into(),
                );
                return Ok(Err(job.deny(tx, &actor, action, target, e)?));
            }
            if disable && actor.operator_id() == Some(op.id) {
                return Ok(Err(CoreError::InvalidState(
                    "you cannot disable yourself; ask another admin".into(),
                )));
            }
            if disable == op.disabled_at.is_some() {
                let state = if disable { "disabled" } else { "enabled" };
                return Ok(Err(CoreError::InvalidState(format!(
                    "the operator is already {state}"
                ))));
            }
            op.disabled_at = disable.then(|| job.now());
            tx.update_operator(&op, None)?;
            job.record(
                tx,
                &actor,
                action,
                target,
                AuditOutcome::Success,
                json!({ "name": op.name, "reason": reason }),
            )?;
            Ok(Ok(op))
        })
        .await?
    }

    /// Replaces an operator's token; the old one stops authenticating at once. Operators rotate
    /// their own token; admins anyone's. The new token is returned once.
    pub async fn rotate_operator_token(
        &self,
        actor: &Actor,
        operator: &str,
    ) -> Result<CreatedOperator, CoreError> {
        let secret = token::generate(TokenKind::Operator);
        let hash = self.secret_hasher.hash(secret.expose().as_bytes());
        let (actor, operator) = (actor.clone(), operator.to_owned());
        let op = self
            .write_invalidating(move |tx, job| {
                let op = find_operator(tx, &operator)?.operator;
                let target = format!("operator:{}", op.id);
                if actor.operator_id() != Some(op.id) && !actor.is_admin() {
                    let e =
                        CoreError::Forbidden("only admins rotate other operators' tokens".into());
                    return Ok(Err(job.deny(
                        tx,
                        &actor,
                        "operator.rotate_token",
                        target,
                        e,
                    )?));
                }
                if op.disabled_at.is_some() {
                    return Ok(Err(CoreError::InvalidState(
                        "the operator is disabled; enable it first".into(),
                    )));
                }
                tx.update_operator(&op, Some(&hash))?;
                job.record(
                    tx,
                    &actor,
                    "operator.rotate_token",
                    target,
                    AuditOutcome::Success,
                    json!({ "name": op.name }),
                )?;
                Ok(Ok(op))
            })
            .await??;
        Ok(CreatedOperator {
            operator: op,
            token: secret.expose().to_owned(),
        })
    }

    /// Creates the first admin operator. Refused once any operator exists.
    pub async fn bootstrap_admin(&self, name: &str) -> Result<CreatedOperator, CoreError> {
        validate::dns_label("name", name)?;
        if !self.reader()?.list_operators()?.is_empty() {
            return Err(CoreError::AlreadyExists(
                "this data dir is already initialised: an operator exists".into(),
            ));
        }
        let req = CreateOperatorRequest {
            name: name.to_owned(),
            role: OperatorRole::Admin,
            teams: Vec::new(),
        };
        self.create_operator(&Actor::system("bootstrap"), req).await
    }
}
