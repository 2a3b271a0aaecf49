//! Warden's HTTP server: the `/v1` API, caller authentication, error mapping, metrics, and the
//! background jobs. Build the router with [`app`]; run it with [`serve`].

mod auth;
pub mod error;
mod federation_routes;
mod metrics;
mod oauth;
mod openapi;
mod routes;
mod tls;
mod vault_routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use warden_core::Registry;

pub use auth::Caller;
pub use metrics::Metrics;
pub use tls::{Tls, TlsError, serve_tls};

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Served over TLS (client certificates possible): advertised in the OAuth metadata.
    pub tls: bool,
}

impl AppState {
    pub fn new(registry: Arc<Registry>) -> Self {
        AppState {
            registry,
            metrics: Arc::new(Metrics::default()),
            tls: false,
        }
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    use routes::*;
    let v1 = Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/whoami", get(whoami))
        .route("/keys/verify", post(verify_key))
        .route("/teams", get(list_teams).post(create_team))
        .route("/teams/{team}", get(get_team))
        .route("/teams/{team}/members", post(add_member))
        .route(
            "/teams/{team}/members/{operator}",
            axum::routing::delete(remove_member),
        )
        .route("/operators", get(list_operators).post(create_operator))
        .route("/operators/{operator}/disable", post(disable_operator))
        .route("/operators/{operator}/enable", post(enable_operator))
        .route(
            "/operators/{operator}/rotate-token",
            post(rotate_operator_token),
        )
        .route("/identities", get(list_identities).post(create_identity))
        .route(
            "/identities/{identity}",
            get(get_identity).patch(update_identity),
        )
        .route("/identities/{identity}/suspend", post(suspend_identity))
        .route("/identities/{identity}/resume", post(resume_identity))
        .route("/identities/{identity}/retire", post(retire_identity))
        .route(
            "/identities/{identity}/credentials",
            get(list_credentials).post(issue_credential),
        )
        .route("/credentials/{id}", get(get_credential))
        .route("/credentials/{id}/rotate", post(rotate_credential))
        .route("/credentials/{id}/revoke", post(revoke_credential))
        .route("/findings", get(list_findings).post(report_findings))
        .route("/findings/{id}", axum::routing::patch(update_finding))
        .route("/hygiene/run", post(run_hygiene))
        .route("/jobs", get(list_jobs))
        .route("/reports/posture", get(posture_report))
        .route("/reviews", get(list_reviews).post(create_review))
        .route("/reviews/{id}/items", get(review_items))
        .route("/reviews/{id}/attest", post(attest))
        .route("/reviews/{id}/close", post(close_review))
        .route("/approvals", get(list_approvals))
        .route("/approvals/{id}", get(get_approval))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
        .route("/audit", get(list_audit))
        .route("/audit/verify", get(verify_audit))
        .route("/audit/sinks", get(routes::audit_sinks))
        .route("/signing-keys", get(list_signing_keys))
        .route("/signing-keys/rotate", post(rotate_signing_key))
        .route("/secrets", get(vault_routes::list_secrets))
        .route(
            "/secrets/{*path}",
            get(vault_routes::read_secret)
                .put(vault_routes::put_secret)
                .delete(vault_routes::delete_secret),
        )
        .route(
            "/vault/metadata/{*path}",
            get(vault_routes::secret_metadata),
        )
        .route("/vault/rotate/{*path}", post(vault_routes::rotate_secret))
        .route("/vault/rewrap", post(vault_routes::rewrap))
        .route(
            "/vault/store-credential/rotate",
            post(vault_routes::rotate_store_credential),
        )
        .route("/vault/databases", post(vault_routes::add_database))
        .route("/creds/postgres", post(vault_routes::postgres_creds))
        .route("/leases", get(vault_routes::list_leases))
        .route("/leases/revoke-prefix", post(vault_routes::revoke_prefix))
        .route("/leases/{id}/renew", post(vault_routes::renew_lease))
        .route("/leases/{id}/revoke", post(vault_routes::revoke_lease))
        .route(
            "/issuers",
            get(federation_routes::list_issuers).post(federation_routes::add_issuer),
        )
        .route(
            "/issuers/{name}",
            axum::routing::delete(federation_routes::remove_issuer),
        )
        .route(
            "/trust-rules",
            get(federation_routes::list_trust_rules).post(federation_routes::add_trust_rule),
        )
        .route(
            "/trust-rules/{id}/approve",
            post(federation_routes::approve_trust_rule),
        )
        .route(
            "/trust-rules/{id}/deny",
            post(federation_routes::deny_trust_rule),
        )
        .route(
            "/trust-rules/{id}/revoke",
            post(federation_routes::revoke_trust_rule),
        )
        .route(
            "/delegations",
            get(federation_routes::list_delegations).post(federation_routes::create_delegation),
        )
        .route(
            "/delegations/{id}/revoke",
            post(federation_routes::revoke_delegation),
        )
        .route(
            "/mcp-servers/{identity}",
            get(federation_routes::get_mcp_server).put(federation_routes::put_mcp_server),
        )
        .route("/policies", get(federation_routes::list_policies))
        .route(
            "/policies/{name}",
            axum::routing::put(federation_routes::put_policy)
                .delete(federation_routes::delete_policy),
        )
        .route("/authorize", post(federation_routes::authorize))
        .route("/revocations", get(federation_routes::revocations));
    let oauth2 = Router::new()
        .route("/token", post(oauth::token))
        .route("/jwks", get(oauth::jwks))
        .route("/introspect", post(oauth::introspect))
        .route("/revoke", post(oauth::revoke));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .nest("/v1", v1)
        .nest("/oauth2", oauth2)
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp/{id}",
            get(federation_routes::protected_resource_metadata),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// How this node takes part in the cluster-wide jobs.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// This node's name as a lease holder.
    pub node: String,
    /// What this node's saved state (anomaly baselines) is kept under (stable across restarts).
    pub state_name: String,
    /// How long the jobs lease lasts without renewal (renewed every second).
    pub lease_ttl: time::Duration,
    /// When the hygiene checks run (the leader starts them); `None`: on demand only.
    pub hygiene: Option<warden_core::cron::Cron>,
}

/// Periodic work inside `warden serve`. Every node flushes its own `last_used_at` counts and
/// nudges its audit buffer; the cluster-wide jobs (ending rotation overlaps, signing-key
/// rotation, purging expired token state) run only on the node holding the jobs lease, and move
/// to another node when it stops renewing.
pub fn spawn_jobs(registry: Arc<Registry>, settings: JobSettings) -> tokio::task::JoinHandle<()> {
    use warden_core::registry::cluster::JOBS_LEASE;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Ticks since this node became the leader (the jobs run at its first tick as leader).
        let mut led: Option<u64> = None;
        // A job that never ran is first due at its first scheduled time after this start.
        let since = registry.now();
        // Ticks since start (every node saves its anomaly baselines once a minute).
        let mut saves: u64 = 0;
        loop {
            tick.tick().await;
            registry.nudge_audit();
            // Every node: another node may have rotated the database password.
            if let Err(e) = registry.refresh_store_credential().await {
                tracing::warn!(error = %e, "fetching the rotated database password failed");
            }
            if let Err(e) = registry.flush_usage().await {
                tracing::warn!(error = %e, "flushing last_used_at failed");
            }
            saves += 1;
            if saves.is_multiple_of(60)
                && let Err(e) = registry.save_anomaly_baselines(&settings.state_name).await
            {
                tracing::warn!(error = %e, "saving anomaly baselines failed");
            }
            match registry
                .hold_lease(JOBS_LEASE, &settings.node, settings.lease_ttl)
                .await
            {
                Ok(Some(f)) => {
                    if led.is_none() {
                        tracing::info!(node = %settings.node, fence = f.fence, "this node runs the cluster-wide jobs");
                    }
                }
                Ok(None) => {
                    if led.is_some() {
                        tracing::info!(node = %settings.node, "another node runs the cluster-wide jobs now");
                    }
                    led = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the jobs lease failed");
                    led = None;
                    continue;
                }
            }
            let k = *led.get_or_insert(0);
            led = Some(k + 1);
            if k.is_multiple_of(60) {
                if let Err(e) = registry.maintain_signing_keys().await {
                    tracing::warn!(error = %e, "signing key maintenance failed");
                }
                if let Err(e) = registry.purge_token_state().await {
                    tracing::warn!(error = %e, "purging expired token state failed");
                }
            }
            if k.is_multiple_of(5) {
                match registry.sweep_leases().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(leases = n, "leases ended"),
                    Err(e) => tracing::warn!(error = %e, "sweeping leases failed"),
                }
                match registry.vault_maintenance().await {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "vault maintenance failed"),
                }
            }
            if k.is_multiple_of(30)
                && let Some(cron) = &settings.hygiene
            {
                match registry.job_due(warden_core::registry::hygiene::HYGIENE_JOB, cron, since) {
                    Ok(true) => {
                        // In its own task: the lease keeps being renewed while it runs.
                        let r = Arc::clone(&registry);
                        tokio::spawn(async move {
                            let system = warden_core::Actor::system("hygiene-schedule");
                            match r.run_hygiene(&system, "schedule").await {
                                Ok(rep) => tracing::info!(
                                    ms = rep.duration_ms,
                                    resolved = rep.resolved,
                                    "hygiene run finished"
                                ),
                                Err(e) => tracing::warn!(error = %e, "hygiene run failed"),
                            }
                        });
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the hygiene job's state failed"),
                }
            }
            if k.is_multiple_of(60) {
                match registry.escalate_reviews().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(items = n, "overdue access-review items escalated"),
                    Err(e) => tracing::warn!(error = %e, "escalating access reviews failed"),
                }
            }
            if k.is_multiple_of(10) {
                match registry.end_overlaps().await {
                    Ok(0) => {}
                    Ok(k) => tracing::info!(revoked = k, "rotation overlaps ended"),
                    Err(e) => tracing::warn!(error = %e, "ending rotation overlaps failed"),
                }
            }
        }
    })
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
