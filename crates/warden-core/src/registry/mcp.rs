//! MCP servers: identities of kind `mcp_server` with a catalogue of tools mapped to scopes, and
//! the OAuth Protected Resource Metadata (RFC 9728) Warden publishes for them, so MCP clients
//! discover where to get tokens and which scopes each tool needs.

use serde_json::{Value, json};
use uuid::Uuid;
use warden_types::{AuditOutcome, IdentityKind, McpServer, PutMcpServerRequest};

use super::{Registry, identity_target, resolve_identity};
use crate::actor::Actor;
use crate::error::CoreError;
use crate::scope;

const MAX_TOOLS: usize = 200;

impl Registry {
    /// Sets an MCP server's resource URL and tool catalogue (operators managing it, or the
    /// server itself with `warden:credentials`).
    pub async fn put_mcp_server(
        &self,
        actor: &Actor,
        reference: &str,
        req: PutMcpServerRequest,
    ) -> Result<McpServer, CoreError> {
        if !(req.resource.starts_with("https://") || req.resource.starts_with("http://"))
            || req.resource.contains('#')
            || req.resource.len() > 512
        {
            return Err(CoreError::field(
                "resource",
                "an http(s) URL without a fragment",
            ));
        }
        if req.tools.len() > MAX_TOOLS {
            return Err(CoreError::field(
                "tools",
                format!("at most {MAX_TOOLS} tools"),
            ));
        }
        for t in &req.tools {
            if t.name.is_empty()
                || t.name.len() > 128
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
            {
                return Err(CoreError::field(
                    "tools",
                    "tool names of letters, digits, `_-./` (at most 128)",
                ));
            }
            if t.description.as_ref().is_some_and(|d| d.len() > 512) {
                return Err(CoreError::field(
                    "tools",
                    "descriptions of at most 512 characters",
                ));
            }
            for s in &t.scopes {
                scope::check(s)?;
            }
        }
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.write(move |tx, job| {
            let identity = match resolve_identity(tx, &actor, &reference) {
                Ok(i) => i,
                Err(e) => return Ok(Err(e)),
            };
            let target = identity_target(identity.id);
            if !actor.can_manage_team(identity.owner_id)
                && !actor.acts_on_self(identity.id, "warden:credentials")
            {
                let e = CoreError::Forbidden(format!(
                    "you may not change the MCP server {:?}",
                    identity.name
                ));
                return Ok(Err(job.deny(tx, &actor, "mcp.update", target, e)?));
            }
            if identity.kind != IdentityKind::McpServer {
                return Ok(Err(CoreError::InvalidState(format!(
                    "{:?} is a {}, not an mcp_server",
                    identity.name, identity.kind
                ))));
            }
            let server = McpServer {
                identity_id: identity.id,
                resource: req.resource,
                tools: req.tools,
                updated_at: job.now(),
            };
            tx.put_mcp_server(&server)?;
            job.record(
                tx,
                &actor,
                "mcp.update",
                target,
                AuditOutcome::Success,
                json!({ "resource": server.resource,
                        "tools": server.tools.iter().map(|t| &t.name).collect::<Vec<_>>() }),
            )?;
            Ok(Ok(server))
        })
        .await?
    }

    pub fn mcp_server(&self, actor: &Actor, reference: &str) -> Result<McpServer, CoreError> {
        let store = self.reader()?;
        let identity = resolve_identity(&*store, actor, reference)?;
        store
            .mcp_server(identity.id)?
            .ok_or_else(|| CoreError::NotFound(format!("MCP catalogue of {reference:?}")))
    }

    /// RFC 9728 metadata of an MCP server (public: clients read it before they have a token).
    /// `None` for an unknown, retired or uncatalogued server.
    pub fn protected_resource_metadata(&self, id: Uuid) -> Result<Option<Value>, CoreError> {
        let store = self.reader()?;
        let Some(identity) = store.identity(id)? else {
            return Ok(None);
        };
        if identity.kind != IdentityKind::McpServer
            || identity.status == warden_types::IdentityStatus::Retired
        {
            return Ok(None);
        }
        let Some(server) = store.mcp_server(id)? else {
            return Ok(None);
        };
        let issuer = self.issuer().unwrap_or_default().to_owned();
        let mut scopes: Vec<&str> = server
            .tools
            .iter()
            .flat_map(|t| t.scopes.iter().map(String::as_str))
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        let tools: serde_json::Map<String, Value> = server
            .tools
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    json!({ "scopes": t.scopes, "description": t.description }),
                )
            })
            .collect();
        Ok(Some(json!({
            "resource": server.resource,
            "resource_name": identity.name,
            "authorization_servers": [issuer],
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ["EdDSA", "ES256", "PS256", "RS256"],
            "dpop_bound_access_tokens_required": identity.constraints.require_sender_constraint
                .unwrap_or(identity.environment == "prod"),
            // A Warden extension: which scopes each tool needs.
            "warden_tools": tools,
        })))
    }
}
