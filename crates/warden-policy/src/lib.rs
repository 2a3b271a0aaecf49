//! Warden's decision point: "may this chain do this action on this resource?"
//!
//! Policies are [Cedar](https://www.cedarpolicy.com) statements, validated (strictly) against
//! Warden's schema before they are stored:
//!
//! - principal: `Warden::Identity::"<id>"` — the acting agent (or service), with `name`, `kind`,
//!   `environment`, member of its `Warden::Team::"<team name>"`;
//! - action: `Warden::Action::"invoke"`; the Warden scope asked for is `context.action`;
//! - resource: `Warden::Resource::"<the resource URL or object>"`, its text also as `url` (for
//!   `resource.url like "https://helpdesk/*"`);
//! - context: `delegator` (the token's `sub`: the person or identity the agent acts for, or the
//!   agent itself), `delegator_issuer`, `chain` (the actors' ids, current first), `depth`,
//!   `scopes` (the token's), `source` (the caller's address), `hour` (UTC, 0–23).
//!
//! Cedar's semantics apply: default deny, any `forbid` wins. The answer names the policies that
//! decided. Pure: no I/O, no clock.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, Policy, PolicyId,
    PolicySet, Request, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Warden's Cedar schema.
pub const SCHEMA: &str = r#"
namespace Warden {
  entity Team;
  entity Identity in [Team] = { name: String, kind: String, environment: String };
  entity Resource = { url: String };
  action invoke appliesTo {
    principal: [Identity],
    resource: [Resource],
    context: {
      action: String,
      delegator: String,
      delegator_issuer: String,
      chain: Set<String>,
      depth: Long,
      scopes: Set<String>,
      source: String,
      hour: Long
    }
  };
}
"#;

/// Longest policy document.
pub const MAX_POLICY_LEN: usize = 64 * 1024;

/// The acting identity, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub environment: String,
    pub team: String,
}

/// One question to the decision point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub agent: Agent,
    /// The Warden scope asked for, e.g. `tickets:comment`.
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub delegator: String,
    #[serde(default)]
    pub delegator_issuer: String,
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default)]
    pub depth: i64,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub hour: i64,
}

/// The answer: allowed or not, the policies that decided, and evaluation errors (a policy that
/// errors is skipped, per Cedar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub allow: bool,
    pub policies: Vec<String>,
    pub errors: Vec<String>,
}

fn schema() -> Result<Schema, String> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .map_err(|e| format!("Warden's Cedar schema: {e}"))
}

/// Parses one stored policy document (one or more statements) into policies named `name`
/// (`name`, then `name#2`, `name#3` … when it holds several).
fn parse(name: &str, text: &str) -> Result<Vec<Policy>, Vec<String>> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(vec![
            "a policy name is letters, digits, `-_.` (at most 100)".into(),
        ]);
    }
    if text.len() > MAX_POLICY_LEN {
        return Err(vec![format!("a policy is at most {MAX_POLICY_LEN} bytes")]);
    }
    let set = PolicySet::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut out = Vec::new();
    for (i, p) in set.policies().enumerate() {
        let id = if i == 0 {
            name.to_owned()
        } else {
            format!("{name}#{}", i + 1)
        };
        out.push(p.new_id(PolicyId::new(id)));
    }
    if out.is_empty() {
        return Err(vec!["the document holds no policy".into()]);
    }
    if set.templates().next().is_some() {
        return Err(vec!["templates are not supported".into()]);
    }
    Ok(out)
}

/// Checks a policy document: syntax, and strict validation against Warden's schema.
pub fn validate(name: &str, text: &str) -> Result<(), Vec<String>> {
    let mut set = PolicySet::new();
    for p in parse(name, text)? {
        set.add(p).map_err(|e| vec![e.to_string()])?;
    }
    let report =
        Validator::new(schema().map_err(|e| vec![e])?).validate(&set, ValidationMode::Strict);
    let errors: Vec<String> = report.validation_errors().map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A loaded policy set, ready to answer.
pub struct Engine {
    schema: Schema,
    policies: PolicySet,
    count: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({} policies)", self.count)
    }
}

impl Engine {
    /// Loads `(name, text)` documents (each validated). An empty set denies everything.
    pub fn new<'a>(docs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Engine, String> {
        let schema = schema()?;
        let mut policies = PolicySet::new();
        let mut count = 0;
        for (name, text) in docs {
            validate(name, text).map_err(|e| format!("policy {name}: {}", e.join("; ")))?;
            for p in parse(name, text).map_err(|e| e.join("; "))? {
                policies.add(p).map_err(|e| e.to_string())?;
                count += 1;
            }
        }
        Ok(Engine {
            schema,
            policies,
            count,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Decides one question.
    pub fn decide(&self, q: &Question) -> Answer {
        match self.try_decide(q) {
            Ok(a) => a,
            Err(e) => Answer {
                allow: false,
                policies: Vec::new(),
                errors: vec![e],
            },
        }
    }

    fn try_decide(&self, q: &Question) -> Result<Answer, String> {
        let uid = |t: &str, id: &str| {
            EntityUid::from_str(&format!("Warden::{t}::{}", json!(id)))
                .map_err(|e| format!("{t} id: {e}"))
        };
        let entities = Entities::from_json_value(
            json!([
                {"uid": {"type": "Warden::Identity", "id": q.agent.id},
                 "attrs": {"name": q.agent.name, "kind": q.agent.kind, "environment": q.agent.environment},
                 "parents": [{"type": "Warden::Team", "id": q.agent.team}]},
                {"uid": {"type": "Warden::Team", "id": q.agent.team}, "attrs": {}, "parents": []},
                {"uid": {"type": "Warden::Resource", "id": q.resource}, "attrs": {"url": q.resource}, "parents": []},
            ]),
            Some(&self.schema),
        )
        .map_err(|e| format!("entities: {e}"))?;
        let action = uid("Action", "invoke")?;
        let context = Context::from_json_value(
            json!({
                "action": q.action, "delegator": q.delegator, "delegator_issuer": q.delegator_issuer,
                "chain": q.chain, "depth": q.depth, "scopes": q.scopes, "source": q.source,
                "hour": q.hour,
            }),
            Some((&self.schema, &action)),
        )
        .map_err(|e| format!("context: {e}"))?;
        let request = Request::new(
            uid("Identity", &q.agent.id)?,
            action,
            uid("Resource", &q.resource)?,
            context,
            Some(&self.schema),
        )
        .map_err(|e| format!("request: {e}"))?;
        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        Ok(Answer {
            allow: response.decision() == CedarDecision::Allow,
            policies: response
                .diagnostics()
                .reason()
                .map(|p| p.to_string())
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        })
    }
}

/// One case of a `warden policy test` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(flatten)]
    pub question: Question,
    /// `allow` or `deny`.
    pub expect: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn q(action: &str, delegator: &str) -> Question {
        Question {
            agent: Agent {
                id: "0190-bot".into(),
                name: "support-bot".into(),
                kind: "ai_agent".into(),
                environment: "prod".into(),
                team: "support".into(),
            },
            action: action.into(),
            resource: "https://helpdesk/tickets/42".into(),
            delegator: delegator.into(),
            delegator_issuer: "corp".into(),
            chain: vec!["0190-bot".into()],
            depth: 1,
            scopes: vec![action.into()],
            source: "10.0.0.5".into(),
            hour: 14,
        }
    }

    const POLICIES: &str = r#"
        permit(principal in Warden::Team::"support", action == Warden::Action::"invoke", resource)
        when { context.action like "tickets:*" && context.delegator_issuer == "corp" };
        forbid(principal, action, resource)
        when { context.action == "tickets:delete" || context.depth > 2 || resource.url like "*/locked/*" };
    "#;

    #[test]
    fn permits_forbids_and_names_the_deciding_policies() {
        let e = Engine::new([("helpdesk", POLICIES)]).unwrap();
        assert_eq!(e.len(), 2);
        let a = e.decide(&q("tickets:comment", "alice"));
        assert!(a.allow);
        assert_eq!(a.policies, vec!["helpdesk"]);
        let a = e.decide(&q("tickets:delete", "alice"));
        assert!(!a.allow, "forbid wins");
        assert_eq!(a.policies, vec!["helpdesk#2"]);
        let a = e.decide(&q("billing:refund", "alice"));
        assert!(!a.allow && a.policies.is_empty(), "default deny");
        let mut deep = q("tickets:read", "alice");
        deep.depth = 3;
        assert!(!e.decide(&deep).allow);
        let mut locked = q("tickets:read", "alice");
        locked.resource = "https://helpdesk/locked/1".into();
        assert!(!e.decide(&locked).allow, "resource attributes");
        assert!(
            !Engine::new(std::iter::empty())
                .unwrap()
                .decide(&q("tickets:read", "a"))
                .allow
        );
    }

    #[test]
    fn policies_are_validated_against_the_schema() {
        assert!(validate("ok", POLICIES).is_ok());
        let unknown_attr =
            r#"permit(principal, action, resource) when { principal.colour == "red" };"#;
        assert!(validate("bad", unknown_attr).is_err(), "no such attribute");
        let wrong_type = r#"permit(principal, action, resource) when { context.depth == "one" };"#;
        assert!(validate("bad", wrong_type).is_err());
        assert!(
            validate("bad", "permit(principal, action, resource").is_err(),
            "syntax"
        );
        assert!(validate("bad name", "permit(principal, action, resource);").is_err());
        assert!(validate("empty", "").is_err());
        let unknown_type = r#"permit(principal == Warden::Robot::"x", action, resource);"#;
        assert!(validate("bad", unknown_type).is_err());
    }

    #[test]
    fn ids_with_quotes_are_not_injection() {
        let e = Engine::new([("helpdesk", POLICIES)]).unwrap();
        let mut x = q("tickets:read", "alice");
        x.resource = r#"a" ; Warden::Team::"support"#.into();
        x.agent.id = r#"x"::"y"#.into();
        let a = e.decide(&x);
        assert!(a.errors.is_empty(), "{:?}", a.errors);
    }
}
