//! The decision point: Cedar policies stored in Warden (versioned, validated against Warden's
//! schema), evaluated over the agent, the principal it acts for, the action, the resource and the
//! context (the chain, the source, the time). Every decision is audited with the full chain.

use std::sync::Arc;

use serde_json::{Value, json};
use warden_policy::{Agent, Engine, Question};
use warden_types::{AuditOutcome, AuthorizeRequest, AuthorizeResponse, StoredPolicy};

use super::Registry;
use crate::actor::{Actor, Principal};
use crate::error::CoreError;
use crate::ports::NewAuditEvent;
use crate::scope;

impl Registry {
    /// Creates or replaces a policy document (admins). Refused unless it validates.
    pub async fn put_policy(
        &self,
        actor: &Actor,
        name: &str,
        text: String,
    ) -> Result<StoredPolicy, CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "policies are written by admins".into(),
            ));
        }
        warden_policy::validate(name, &text)
            .map_err(|errors| CoreError::field("text", errors.join("; ")))?;
        let (actor, name) = (actor.clone(), name.to_owned());
        self.write_invalidating(move |tx, job| {
            let version = tx
                .policies()?
                .into_iter()
                .find(|p| p.name == name)
                .map_or(1, |p| p.version + 1);
            let p = StoredPolicy {
                name: name.clone(),
                version,
                text,
                updated_by: actor.label(),
                updated_at: job.now(),
            };
            tx.put_policy(&p)?;
            // The audit log keeps every version's text.
            job.record(
                tx,
                &actor,
                "policy.put",
                format!("policy:{name}"),
                AuditOutcome::Success,
                json!({ "version": version, "text": p.text }),
            )?;
            Ok(p)
        })
        .await
    }

    pub async fn delete_policy(&self, actor: &Actor, name: &str) -> Result<(), CoreError> {
        if !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "policies are written by admins".into(),
            ));
        }
        let (actor, name) = (actor.clone(), name.to_owned());
        self.write_invalidating(move |tx, job| {
            if !tx.delete_policy(&name)? {
                return Ok(Err(CoreError::NotFound(format!("policy {name:?}"))));
            }
            job.record(
                tx,
                &actor,
                "policy.delete",
                format!("policy:{name}"),
                AuditOutcome::Success,
                json!({}),
            )?;
            Ok(Ok(()))
        })
        .await?
    }

    pub fn list_policies(&self, actor: &Actor) -> Result<Vec<StoredPolicy>, CoreError> {
        if !matches!(
            actor.principal,
            Principal::Operator { .. } | Principal::System
        ) {
            return Err(CoreError::Forbidden(
                "policies are read by operators".into(),
            ));
        }
        Ok(self.reader()?.policies()?)
    }

    /// The loaded policy set (cached until a policy changes here or on another node).
    fn engine(&self) -> Result<Arc<Engine>, CoreError> {
        if let Some(e) = self.policy_engine.get(&0) {
            return Ok(e);
        }
        let generation = self.policy_engine.generation();
        let docs = self.reader()?.policies()?;
        let engine = Arc::new(
            Engine::new(docs.iter().map(|p| (p.name.as_str(), p.text.as_str())))
                .map_err(|e| CoreError::InvalidState(format!("the stored policies: {e}")))?,
        );
        self.policy_engine.put(0, generation, Arc::clone(&engine));
        Ok(engine)
    }

    /// May the bearer of `req.token` do `req.action` on `req.resource`? The token's scope must
    /// cover the action, its chain must stand, and the policies must permit it. Audited.
    pub async fn authorize(
        &self,
        caller: &Actor,
        req: AuthorizeRequest,
    ) -> Result<AuthorizeResponse, CoreError> {
        if matches!(caller.principal, Principal::Anonymous) {
            return Err(CoreError::Unauthenticated("authenticate to ask".into()));
        }
        scope::check(&req.action)?;
        if req.resource.is_empty() || req.resource.len() > 1024 {
            return Err(CoreError::field("resource", "1 to 1024 characters"));
        }
        let now = self.now();
        let mut reasons = Vec::new();
        let mut details = json!({ "action": req.action, "resource": req.resource });
        let answer = match self.active_token(&req.token)? {
            None => {
                reasons.push(
                    "the token is invalid, expired, revoked, or its chain no longer stands".into(),
                );
                None
            }
            Some((at, identity)) => {
                let jws = warden_jose::decode(&req.token)
                    .map_err(|e| CoreError::InvalidState(e.to_string()))?;
                let act = jws.claims().get("act").cloned();
                let chain: Vec<String> = act
                    .as_ref()
                    .map(|a| {
                        super::delegation::actors(a)
                            .into_iter()
                            .map(|u| u.to_string())
                            .collect()
                    })
                    .unwrap_or_else(|| vec![identity.id.to_string()]);
                let depth = super::delegation::chain_ids(jws.claims()).map_or(0, |c| c.len());
                let question = Question {
                    agent: Agent {
                        id: identity.id.to_string(),
                        name: identity.name.clone(),
                        kind: identity.kind.to_string(),
                        environment: identity.environment.clone(),
                        team: identity.owner.clone(),
                    },
                    action: req.action.clone(),
                    resource: req.resource.clone(),
                    delegator: at.sub.clone(),
                    delegator_issuer: jws
                        .claims()
                        .get("sub_iss")
                        .and_then(Value::as_str)
                        .unwrap_or("warden")
                        .to_owned(),
                    chain: chain.clone(),
                    depth: i64::try_from(depth).unwrap_or(i64::MAX),
                    scopes: at.scope.clone(),
                    source: caller.source.clone(),
                    hour: i64::from(now.hour()),
                };
                details["agent"] = json!(identity.id);
                details["delegator"] = json!(at.sub);
                details["chain"] = json!(chain);
                if !at.scope.iter().any(|g| scope::covers(g, &req.action)) {
                    reasons.push(format!(
                        "the token does not carry the scope {:?}",
                        req.action
                    ));
                    None
                } else {
                    Some(self.engine()?.decide(&question))
                }
            }
        };
        let (allow, policies, errors) = match answer {
            Some(a) => {
                if a.allow {
                    reasons.push(format!("permitted by {}", a.policies.join(", ")));
                } else if a.policies.is_empty() {
                    reasons.push("no policy permits it".into());
                } else {
                    reasons.push(format!("forbidden by {}", a.policies.join(", ")));
                }
                (a.allow, a.policies, a.errors)
            }
            None => (false, Vec::new(), Vec::new()),
        };
        details["allow"] = json!(allow);
        details["policies"] = json!(policies);
        details["reasons"] = json!(reasons);
        self.record_authentication(NewAuditEvent {
            actor: caller.label(),
            action: "authz.decide",
            target: details["agent"]
                .as_str()
                .map_or_else(|| "identity:unknown".into(), |a| format!("identity:{a}")),
            outcome: if allow {
                AuditOutcome::Success
            } else {
                AuditOutcome::Denied
            },
            request_id: caller.request_id.clone(),
            source: caller.source.clone(),
            details: details.to_string(),
        })
        .await?;
        Ok(AuthorizeResponse {
            decision: if allow { "allow" } else { "deny" }.into(),
            policies,
            reasons,
            errors,
        })
    }
}
