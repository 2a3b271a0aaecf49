//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::{federation_routes, routes, vault_routes};

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Warden API", description = "Govern non-human identities: inventory, credentials, approvals, audit."),
    paths(
        routes::whoami, routes::verify_key,
        routes::list_teams, routes::create_team, routes::get_team, routes::add_member, routes::remove_member,
        routes::list_operators, routes::create_operator,
        routes::disable_operator, routes::enable_operator, routes::rotate_operator_token,
        routes::list_identities, routes::create_identity, routes::get_identity, routes::update_identity,
        routes::suspend_identity, routes::resume_identity, routes::retire_identity,
        routes::list_credentials, routes::issue_credential, routes::get_credential,
        routes::rotate_credential, routes::revoke_credential,
        routes::list_approvals, routes::get_approval, routes::approve, routes::deny,
        routes::list_audit, routes::verify_audit, routes::audit_sinks,
        routes::list_signing_keys, routes::rotate_signing_key,
        routes::report_findings, routes::list_findings, routes::update_finding, routes::run_hygiene, routes::list_jobs, routes::posture_report, routes::create_review, routes::list_reviews, routes::review_items, routes::attest, routes::close_review,
        vault_routes::list_secrets, vault_routes::put_secret, vault_routes::read_secret,
        vault_routes::delete_secret, vault_routes::secret_metadata, vault_routes::rotate_secret,
        vault_routes::rewrap, vault_routes::add_database, vault_routes::postgres_creds,
        vault_routes::list_leases, vault_routes::renew_lease, vault_routes::revoke_lease,
        vault_routes::revoke_prefix, vault_routes::rotate_store_credential,
        federation_routes::add_issuer, federation_routes::list_issuers, federation_routes::remove_issuer,
        federation_routes::add_trust_rule, federation_routes::list_trust_rules,
        federation_routes::approve_trust_rule, federation_routes::deny_trust_rule,
        federation_routes::revoke_trust_rule, federation_routes::create_delegation,
        federation_routes::list_delegations, federation_routes::revoke_delegation,
        federation_routes::put_mcp_server, federation_routes::get_mcp_server,
        federation_routes::put_policy, federation_routes::list_policies, federation_routes::delete_policy,
        federation_routes::authorize, federation_routes::revocations,
    ),
    components(schemas(warden_types::ErrorCode, warden_types::Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
