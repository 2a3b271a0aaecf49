//! The vault's connectors: what Warden changes outside itself.
//!
//! - PostgreSQL: statements run as a connection's admin role in one transaction (dynamic logins,
//!   password changes), role drops that end the role's sessions first, and health-check logins.
//! - Webhooks: signed POSTs to the user's rotation endpoints and to dependents.
//!
//! Databases are reached over TLS with the certificate verified for the host (unless a connection
//! says `sslmode = disable`). Every call has a deadline. Error messages never carry a secret: a database error that quotes
//! part of a statement has every quoted literal of the statements masked.

pub mod sinks;

use std::time::Duration;

use warden_core::ports::{BoxFuture, PgLogin, PgTls, VaultTargets, WebhookCall};
use zeroize::Zeroizing;

/// How long any one call to a target may take.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Largest webhook answer read.
pub const MAX_ANSWER: usize = 64 * 1024;

/// The connectors used by `warden serve`.
#[derive(Debug, Clone)]
pub struct Targets {
    http: reqwest::Client,
    deadline: Duration,
}

impl Targets {
    /// `http` must have a TLS provider installed (the binary installs ring).
    pub fn new(http: reqwest::Client) -> Targets {
        Targets {
            http,
            deadline: DEADLINE,
        }
    }

    /// With another deadline for each call (health checks that run a slow query).
    pub fn with_deadline(mut self, deadline: Duration) -> Targets {
        self.deadline = deadline;
        self
    }
}

fn config(login: &PgLogin) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(&login.host)
        .port(login.port)
        .dbname(&login.dbname)
        .user(&login.username)
        .password(login.password.as_bytes())
        .application_name("warden-vault")
        .connect_timeout(DEADLINE);
    c
}

/// Masks every single-quoted literal that appears in `statements` inside `message`.
fn redact(message: &str, statements: &[Zeroizing<String>]) -> String {
    let mut out = message.to_owned();
    for s in statements {
        let mut rest = s.as_str();
        while let Some(start) = rest.find('\'') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('\'') else { break };
            let literal = &after[..end];
            if literal.len() >= 4 {
                out = out.replace(literal, "***");
            }
            rest = &after[end + 1..];
        }
    }
    out
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // Connection errors name the cause, never the password.
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(e) {
                s = format!("{s}: {src}");
            }
            s
        }
    }
}

/// TLS settings for one database: the system's roots plus its own CA certificates.
fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    tls_client_config(ca_pem, "the database")
}

/// TLS client settings: the system's roots plus `ca_pem`'s certificates (of `what`).
pub(crate) fn tls_client_config(
    ca_pem: Option<&str>,
    what: &str,
) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(pem) = ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}'s CA certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what}'s CA PEM holds no certificate"));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("a CA certificate of {what}: {e}"))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn connect(login: &PgLogin) -> Result<tokio_postgres::Client, String> {
    let failed = |e: tokio_postgres::Error| {
        format!(
            "connecting to {}:{} failed: {}",
            login.host,
            login.port,
            pg_error(&e)
        )
    };
    let mut config = config(login);
    match &login.tls {
        PgTls::Disable => {
            let (client, connection) = config
                .ssl_mode(tokio_postgres::config::SslMode::Disable)
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        PgTls::VerifyFull { ca_pem } => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_pem.as_deref())?);
            let (client, connection) = config
                .ssl_mode(tokio_postgres::config::SslMode::Require)
                .connect(tls)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
    }
}

async fn within<T>(
    deadline: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what} took longer than {} s", deadline.as_secs())),
    }
}

fn quoted_role(role: &str) -> Result<String, String> {
    if role.is_empty()
        || role.len() > 63
        || !role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!("{role:?} is not a role name Warden manages"));
    }
    Ok(format!("\"{role}\""))
}

impl VaultTargets for Targets {
    fn pg_execute<'a>(
        &'a self,
        admin: &'a PgLogin,
        statements: Vec<Zeroizing<String>>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(within(self.deadline, "the database change", async move {
            let mut client = connect(admin).await?;
            let tx = client.transaction().await.map_err(|e| pg_error(&e))?;
            for s in &statements {
                tx.batch_execute(s)
                    .await
                    .map_err(|e| redact(&pg_error(&e), &statements))?;
            }
            tx.commit().await.map_err(|e| pg_error(&e))?;
            Ok(())
        }))
    }

    fn pg_drop_role<'a>(
        &'a self,
        admin: &'a PgLogin,
        role: &'a str,
        revocation: Vec<String>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(within(self.deadline, "dropping the login", async move {
            let quoted = quoted_role(role)?;
            let mut client = connect(admin).await?;
            let exists = client
                .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
                .await
                .map_err(|e| pg_error(&e))?
                .is_some();
            if !exists {
                return Ok(());
            }
            let tx = client.transaction().await.map_err(|e| pg_error(&e))?;
            // No new session from here on, then end the open ones.
            tx.batch_execute(&format!("ALTER ROLE {quoted} NOLOGIN"))
                .await
                .map_err(|e| pg_error(&e))?;
            tx.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&role],
            )
            .await
            .map_err(|e| pg_error(&e))?;
            for s in &revocation {
                tx.batch_execute(&s.replace("{{name}}", role))
                    .await
                    .map_err(|e| pg_error(&e))?;
            }
            tx.batch_execute(&format!(
                "REASSIGN OWNED BY {quoted} TO CURRENT_USER; DROP OWNED BY {quoted}; DROP ROLE {quoted}"
            ))
            .await
            .map_err(|e| pg_error(&e))?;
            tx.commit().await.map_err(|e| pg_error(&e))?;
            Ok(())
        }))
    }

    fn pg_check<'a>(
        &'a self,
        login: &'a PgLogin,
        check_sql: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(within(self.deadline, "the health check", async move {
            let client = connect(login).await?;
            client
                .simple_query(check_sql)
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(())
        }))
    }

    fn webhook<'a>(&'a self, call: WebhookCall) -> BoxFuture<'a, Result<(u16, Vec<u8>), String>> {
        Box::pin(within(self.deadline, "the webhook", async move {
            let mut resp = self
                .http
                .post(&call.url)
                .header("content-type", "application/json")
                .header("warden-signature", &call.signature)
                .body(call.body.to_vec())
                .send()
                .await
                .map_err(|e| format!("POST {} failed: {}", call.url, without_url(&e)))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| without_url(&e))? {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(format!("the answer of {} is larger than 64 KiB", call.url));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        }))
    }
}

impl warden_core::registry::federation::Fetcher for Targets {
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(u16, Vec<u8>), String>> {
        Box::pin(within(
            self.deadline,
            "fetching the issuer's keys",
            async move {
                let mut resp = self
                    .http
                    .get(url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map_err(|e| format!("GET {url} failed: {}", without_url(&e)))?;
                let status = resp.status().as_u16();
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(|e| without_url(&e))? {
                    if body.len() + chunk.len() > 256 * 1024 {
                        return Err(format!("the answer of {url} is larger than 256 KiB"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok((status, body))
            },
        ))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s = format!("{s}: {x}");
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_never_echo_quoted_literals() {
        let stmts = vec![Zeroizing::new(
            "CREATE ROLE \"w\" PASSWORD 'S3cretPassw0rd' VALID UNTIL 'x'".to_owned(),
        )];
        let msg = redact("syntax error at or near \"S3cretPassw0rd\"", &stmts);
        assert!(!msg.contains("S3cretPassw0rd"));
        assert!(msg.contains("***"));
    }

    #[test]
    fn only_managed_role_names_are_dropped() {
        assert_eq!(
            quoted_role("w_ro_abc").ok().as_deref(),
            Some("\"w_ro_abc\"")
        );
        for bad in ["", "A", "x\"; DROP DATABASE y; --", "a-b"] {
            assert!(quoted_role(bad).is_err(), "{bad}");
        }
    }
}
