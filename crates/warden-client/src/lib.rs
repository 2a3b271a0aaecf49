//! A typed client for the Warden HTTP API. The CLI's client subcommands go through it, so they can
//! do nothing the API would not let the same token do.

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use warden_types::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a problem.
    #[error("{} ({}): {}", .0.title, .0.code, .0.detail)]
    Api(Box<Problem>),
    /// The server could not be reached.
    #[error("cannot reach the warden server at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server answered with something that is not what the API promises.
    #[error("unexpected response from the server: {0}")]
    Decode(String),
    /// The token service refused (RFC 6749 §5.2).
    #[error("{}: {}", .0.error, .0.error_description.as_deref().unwrap_or(""))]
    OAuth(Box<OAuthErrorBody>),
    /// The token service wants a DPoP proof with this nonce (RFC 9449 §8): retry with it.
    #[error("use_dpop_nonce: retry with the server's nonce")]
    UseDpopNonce(String),
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(p) => Some(p.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Percent-encodes one path segment (identity references may contain `/`).
/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 §2.3.1 wants client ids
/// and secrets encoded so before HTTP Basic).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*') {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Filters for [`Client::list_identities`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdentityQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<IdentityKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<IdentityStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiring_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base` (`http://` or `https://`). For HTTPS the system's roots
    /// are trusted, plus the PEM certificate(s) named by `WARDEN_CA_CERT`.
    pub fn new(base: &str, token: &str) -> Result<Self> {
        // rustls needs a process-wide crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(path) = std::env::var_os("WARDEN_CA_CERT") {
            let connect = |reason: String| ClientError::Connect {
                url: base.to_owned(),
                reason,
            };
            let pem = std::fs::read(&path)
                .map_err(|e| connect(format!("reading WARDEN_CA_CERT {path:?}: {e}")))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| connect(format!("WARDEN_CA_CERT {path:?}: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::Connect {
            url: base.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let res = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Connect {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
        } else {
            match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => Err(ClientError::Api(Box::new(p))),
                Err(_) => Err(ClientError::Decode(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ))),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    async fn get_q<T: DeserializeOwned, Q: Serialize>(&self, path: &str, q: &Q) -> Result<T> {
        self.send(self.http.get(self.url(path)).query(q)).await
    }

    async fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// `POST /oauth2/token` with form parameters, an optional DPoP proof and optional HTTP Basic
    /// client credentials. Needs no operator token.
    pub async fn oauth_token(
        &self,
        form: &[(&str, &str)],
        dpop: Option<&str>,
        basic: Option<(&str, &str)>,
    ) -> Result<TokenResponse> {
        let mut req = self.http.post(self.url("/oauth2/token")).form(form);
        if let Some(p) = dpop {
            req = req.header("DPoP", p);
        }
        if let Some((id, secret)) = basic {
            req = req.basic_auth(form_encode(id), Some(form_encode(secret)));
        }
        let bytes = self.oauth_call(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends a request to an OAuth endpoint: the body on success, else the RFC 6749 error (or
    /// the nonce the server wants in the DPoP proof).
    async fn oauth_call(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>> {
        let res = req.send().await.map_err(|e| ClientError::Connect {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = res.status();
        let nonce = res
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = res
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        match (serde_json::from_slice::<OAuthErrorBody>(&bytes), nonce) {
            (Ok(e), Some(n)) if e.error == "use_dpop_nonce" => Err(ClientError::UseDpopNonce(n)),
            (Ok(e), _) => Err(ClientError::OAuth(Box::new(e))),
            (Err(_), _) => Err(ClientError::Decode(format!("status {status}"))),
        }
    }

    /// The issuer's metadata (RFC 8414) and its JWKS.
    pub async fn oauth_metadata(&self) -> Result<serde_json::Value> {
        self.get("/.well-known/oauth-authorization-server").await
    }

    pub async fn jwks(&self) -> Result<serde_json::Value> {
        self.get("/oauth2/jwks").await
    }

    /// RFC 7662 introspection, authenticated with this client's (operator) token.
    pub async fn introspect(&self, token: &str) -> Result<Introspection> {
        let bytes = self.oauth_form("/oauth2/introspect", token).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// RFC 7009 revocation, authenticated with this client's (operator) token.
    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        self.oauth_form("/oauth2/revoke", token).await.map(|_| ())
    }

    async fn oauth_form(&self, path: &str, token: &str) -> Result<Vec<u8>> {
        let req = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .form(&[("token", token)]);
        self.oauth_call(req).await
    }

    pub async fn list_signing_keys(&self) -> Result<SigningKeyList> {
        self.get("/v1/signing-keys").await
    }

    pub async fn rotate_signing_key(&self, immediately: bool) -> Result<SigningKeyInfo> {
        self.post(
            "/v1/signing-keys/rotate",
            &RotateSigningKeyRequest { immediately },
        )
        .await
    }

    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.get("/v1/whoami").await
    }

    pub async fn verify_key(&self, key: &str) -> Result<KeyVerification> {
        self.post(
            "/v1/keys/verify",
            &VerifyKeyRequest {
                key: key.to_owned(),
            },
        )
        .await
    }

    pub async fn create_team(&self, req: &CreateTeamRequest) -> Result<Team> {
        self.post("/v1/teams", req).await
    }

    pub async fn list_teams(&self) -> Result<TeamList> {
        self.get("/v1/teams").await
    }

    pub async fn team(&self, team: &str) -> Result<Team> {
        self.get(&format!("/v1/teams/{}", segment(team))).await
    }

    pub async fn add_member(&self, team: &str, operator: &str) -> Result<Team> {
        let body = TeamMemberRequest {
            operator: operator.to_owned(),
        };
        self.post(&format!("/v1/teams/{}/members", segment(team)), &body)
            .await
    }

    pub async fn remove_member(&self, team: &str, operator: &str) -> Result<Team> {
        let url = self.url(&format!(
            "/v1/teams/{}/members/{}",
            segment(team),
            segment(operator)
        ));
        self.send(self.http.delete(url)).await
    }

    pub async fn create_operator(&self, req: &CreateOperatorRequest) -> Result<CreatedOperator> {
        self.post("/v1/operators", req).await
    }

    /// `action` is `disable` or `enable`.
    pub async fn set_operator(
        &self,
        operator: &str,
        action: &str,
        reason: Option<String>,
    ) -> Result<Operator> {
        self.post(
            &format!("/v1/operators/{}/{}", segment(operator), segment(action)),
            &TransitionRequest { reason },
        )
        .await
    }

    pub async fn rotate_operator_token(&self, operator: &str) -> Result<CreatedOperator> {
        let url = self.url(&format!("/v1/operators/{}/rotate-token", segment(operator)));
        self.send(self.http.post(url)).await
    }

    pub async fn list_operators(&self) -> Result<OperatorList> {
        self.get("/v1/operators").await
    }

    pub async fn create_identity(&self, req: &CreateIdentityRequest) -> Result<IdentityChange> {
        self.post("/v1/identities", req).await
    }

    pub async fn identity(&self, reference: &str) -> Result<Identity> {
        self.get(&format!("/v1/identities/{}", segment(reference)))
            .await
    }

    pub async fn list_identities(&self, q: &IdentityQuery) -> Result<IdentityPage> {
        self.get_q("/v1/identities", q).await
    }

    pub async fn update_identity(
        &self,
        reference: &str,
        req: &UpdateIdentityRequest,
    ) -> Result<IdentityChange> {
        let url = self.url(&format!("/v1/identities/{}", segment(reference)));
        self.send(self.http.patch(url).json(req)).await
    }

    /// `action` is `suspend`, `resume` or `retire`.
    pub async fn transition(
        &self,
        reference: &str,
        action: &str,
        reason: Option<String>,
    ) -> Result<Identity> {
        self.post(
            &format!("/v1/identities/{}/{}", segment(reference), segment(action)),
            &TransitionRequest { reason },
        )
        .await
    }

    pub async fn issue_credential(
        &self,
        reference: &str,
        req: &IssueCredentialRequest,
    ) -> Result<IssuedCredential> {
        self.post(
            &format!("/v1/identities/{}/credentials", segment(reference)),
            req,
        )
        .await
    }

    pub async fn list_credentials(&self, reference: &str) -> Result<CredentialList> {
        self.get(&format!(
            "/v1/identities/{}/credentials",
            segment(reference)
        ))
        .await
    }

    pub async fn rotate_credential(
        &self,
        id: Uuid,
        req: &RotateCredentialRequest,
    ) -> Result<IssuedCredential> {
        self.post(&format!("/v1/credentials/{id}/rotate"), req)
            .await
    }

    pub async fn revoke_credential(&self, id: Uuid, reason: Option<String>) -> Result<Credential> {
        self.post(
            &format!("/v1/credentials/{id}/revoke"),
            &RevokeCredentialRequest { reason },
        )
        .await
    }

    pub async fn list_approvals(&self, status: Option<ChangeStatus>) -> Result<ChangeRequestPage> {
        #[derive(Serialize)]
        struct Q {
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<ChangeStatus>,
        }
        self.get_q("/v1/approvals", &Q { status }).await
    }

    pub async fn decide(&self, id: Uuid, approve: bool, reason: &str) -> Result<ChangeRequest> {
        let verb = if approve { "approve" } else { "deny" };
        self.post(
            &format!("/v1/approvals/{id}/{verb}"),
            &DecisionRequest {
                reason: reason.to_owned(),
            },
        )
        .await
    }

    pub async fn list_audit(&self, q: &AuditQuery) -> Result<AuditPage> {
        self.get_q("/v1/audit", q).await
    }

    pub async fn verify_audit(&self) -> Result<AuditVerifyReport> {
        self.get("/v1/audit/verify").await
    }

    /// `GET /v1/audit/sinks`.
    pub async fn audit_sinks(&self) -> Result<Vec<warden_types::SinkStatus>> {
        self.get("/v1/audit/sinks").await
    }

    /// `POST /v1/findings` (at most 1,000 per call).
    pub async fn report_findings(
        &self,
        req: &warden_types::ReportFindingsRequest,
    ) -> Result<warden_types::FindingsReported> {
        self.post("/v1/findings", req).await
    }

    /// `GET /v1/findings`, one page.
    pub async fn list_findings(
        &self,
        status: Option<warden_types::FindingStatus>,
        kind: Option<warden_types::FindingKind>,
        cursor: Option<&str>,
    ) -> Result<warden_types::FindingPage> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = status {
            q.push(("status", s.as_str().to_owned()));
        }
        if let Some(k) = kind {
            q.push(("kind", k.as_str().to_owned()));
        }
        if let Some(c) = cursor {
            q.push(("cursor", c.to_owned()));
        }
        self.get_q("/v1/findings", &q).await
    }

    /// `PATCH /v1/findings/{id}`.
    /// Runs the hygiene checks now; answers when the run is done.
    pub async fn run_hygiene(&self) -> Result<warden_types::HygieneReport> {
        self.post("/v1/hygiene/run", &serde_json::json!({})).await
    }

    /// The OWASP NHI Top 10 posture report, of the estate or one team.
    pub async fn posture_report(&self, team: Option<&str>) -> Result<warden_types::PostureReport> {
        let q: Vec<(&str, String)> = team.map(|t| ("team", t.to_owned())).into_iter().collect();
        self.get_q("/v1/reports/posture", &q).await
    }

    pub async fn create_review(
        &self,
        req: &warden_types::CreateReviewRequest,
    ) -> Result<warden_types::ReviewCampaign> {
        self.post("/v1/reviews", req).await
    }

    pub async fn list_reviews(&self) -> Result<Vec<warden_types::ReviewCampaign>> {
        self.get("/v1/reviews").await
    }

    pub async fn review_items(&self, id: &str) -> Result<Vec<warden_types::ReviewItem>> {
        self.get(&format!("/v1/reviews/{}/items", segment(id)))
            .await
    }

    pub async fn attest(
        &self,
        id: &str,
        req: &warden_types::AttestRequest,
    ) -> Result<warden_types::ReviewItem> {
        self.post(&format!("/v1/reviews/{}/attest", segment(id)), req)
            .await
    }

    pub async fn close_review(&self, id: &str) -> Result<warden_types::ReviewCampaign> {
        self.post(
            &format!("/v1/reviews/{}/close", segment(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Background jobs' durable state.
    pub async fn list_jobs(&self) -> Result<Vec<warden_types::JobState>> {
        self.get("/v1/jobs").await
    }

    pub async fn update_finding(
        &self,
        id: &str,
        req: &warden_types::UpdateFindingRequest,
    ) -> Result<warden_types::Finding> {
        self.send(
            self.http
                .patch(self.url(&format!("/v1/findings/{}", segment(id))))
                .json(req),
        )
        .await
    }

    // --- the vault. Secret paths use only `A-Za-z0-9._-/` (the server refuses anything else),
    // so they go into the URL as they are.

    pub async fn put_secret(&self, path: &str, req: &PutSecretRequest) -> Result<Secret> {
        self.send(
            self.http
                .put(self.url(&format!("/v1/secrets/{path}")))
                .json(req),
        )
        .await
    }

    pub async fn read_secret(
        &self,
        path: &str,
        version: Option<u32>,
        lease_ttl: Option<u64>,
    ) -> Result<SecretRead> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(v) = version {
            q.push(("version", v.to_string()));
        }
        if let Some(t) = lease_ttl {
            q.push(("lease_ttl", t.to_string()));
        }
        self.get_q(&format!("/v1/secrets/{path}"), &q).await
    }

    pub async fn secret_metadata(&self, path: &str) -> Result<Secret> {
        self.get(&format!("/v1/vault/metadata/{path}")).await
    }

    pub async fn list_secrets(&self, prefix: &str, cursor: Option<&str>) -> Result<SecretPage> {
        let mut q: Vec<(&str, String)> = vec![("prefix", prefix.to_owned())];
        if let Some(c) = cursor {
            q.push(("cursor", c.to_owned()));
        }
        self.get_q("/v1/secrets", &q).await
    }

    pub async fn delete_secret(
        &self,
        path: &str,
        destroy: bool,
        version: Option<u32>,
    ) -> Result<Secret> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if destroy {
            q.push(("destroy", "true".into()));
        }
        if let Some(v) = version {
            q.push(("version", v.to_string()));
        }
        self.send(
            self.http
                .delete(self.url(&format!("/v1/secrets/{path}")))
                .query(&q),
        )
        .await
    }

    pub async fn rotate_secret(&self, path: &str) -> Result<RotationOutcome> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/vault/rotate/{path}"))),
        )
        .await
    }

    pub async fn add_issuer(&self, req: &AddIssuerRequest) -> Result<TrustedIssuer> {
        self.post("/v1/issuers", req).await
    }

    pub async fn list_issuers(&self) -> Result<IssuerList> {
        self.get("/v1/issuers").await
    }

    pub async fn remove_issuer(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/issuers/{}", segment(name))).await
    }

    /// DELETE that answers 204 (or a problem).
    async fn delete(&self, path: &str) -> Result<()> {
        let res = self
            .http
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Connect {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
        if res.status().is_success() {
            return Ok(());
        }
        let bytes = res
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => Err(ClientError::Api(Box::new(p))),
            Err(e) => Err(ClientError::Decode(e.to_string())),
        }
    }

    pub async fn put_policy(&self, name: &str, text: &str) -> Result<StoredPolicy> {
        self.send(
            self.http
                .put(self.url(&format!("/v1/policies/{}", segment(name))))
                .json(&PutPolicyRequest {
                    text: text.to_owned(),
                }),
        )
        .await
    }

    pub async fn list_policies(&self) -> Result<PolicyList> {
        self.get("/v1/policies").await
    }

    pub async fn delete_policy(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/policies/{}", segment(name)))
            .await
    }

    pub async fn authorize(&self, req: &AuthorizeRequest) -> Result<AuthorizeResponse> {
        self.post("/v1/authorize", req).await
    }

    pub async fn put_mcp_server(
        &self,
        identity: &str,
        req: &PutMcpServerRequest,
    ) -> Result<McpServer> {
        self.send(
            self.http
                .put(self.url(&format!("/v1/mcp-servers/{}", segment(identity))))
                .json(req),
        )
        .await
    }

    pub async fn mcp_server(&self, identity: &str) -> Result<McpServer> {
        self.get(&format!("/v1/mcp-servers/{}", segment(identity)))
            .await
    }

    pub async fn create_delegation(&self, req: &CreateDelegationRequest) -> Result<Delegation> {
        self.post("/v1/delegations", req).await
    }

    pub async fn list_delegations(&self, agent: Option<&str>) -> Result<DelegationList> {
        let q: Vec<(&str, String)> = agent.map(|a| ("agent", a.to_owned())).into_iter().collect();
        self.get_q("/v1/delegations", &q).await
    }

    pub async fn revoke_delegation(&self, id: Uuid) -> Result<Delegation> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/delegations/{id}/revoke"))),
        )
        .await
    }

    pub async fn add_trust_rule(&self, req: &AddTrustRuleRequest) -> Result<TrustRule> {
        self.post("/v1/trust-rules", req).await
    }

    pub async fn list_trust_rules(&self, identity: Option<&str>) -> Result<TrustRuleList> {
        let q: Vec<(&str, String)> = identity
            .map(|i| ("identity", i.to_owned()))
            .into_iter()
            .collect();
        self.get_q("/v1/trust-rules", &q).await
    }

    /// `verb`: approve, deny (with a reason) or revoke.
    pub async fn decide_trust_rule(
        &self,
        id: Uuid,
        verb: &str,
        reason: Option<&str>,
    ) -> Result<TrustRule> {
        let path = format!("/v1/trust-rules/{id}/{}", segment(verb));
        match reason {
            Some(r) => {
                self.post(
                    &path,
                    &DecideTrustRuleRequest {
                        reason: r.to_owned(),
                    },
                )
                .await
            }
            None => self.send(self.http.post(self.url(&path))).await,
        }
    }

    pub async fn rotate_store_credential(&self) -> Result<RotationOutcome> {
        self.send(
            self.http
                .post(self.url("/v1/vault/store-credential/rotate")),
        )
        .await
    }

    pub async fn rewrap_vault(&self) -> Result<RewrapReport> {
        self.send(self.http.post(self.url("/v1/vault/rewrap")))
            .await
    }

    pub async fn add_database(&self, req: &AddDatabaseRequest) -> Result<Secret> {
        self.post("/v1/vault/databases", req).await
    }

    pub async fn postgres_creds(&self, req: &PostgresCredsRequest) -> Result<PostgresCreds> {
        self.post("/v1/creds/postgres", req).await
    }

    pub async fn list_leases(&self, prefix: Option<&str>, active: bool) -> Result<LeasePage> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(p) = prefix {
            q.push(("prefix", p.to_owned()));
        }
        if active {
            q.push(("active", "true".into()));
        }
        self.get_q("/v1/leases", &q).await
    }

    pub async fn renew_lease(&self, id: Uuid, ttl_secs: Option<u64>) -> Result<VaultLease> {
        self.post(
            &format!("/v1/leases/{id}/renew"),
            &RenewLeaseRequest { ttl_secs },
        )
        .await
    }

    pub async fn revoke_lease(&self, id: Uuid) -> Result<VaultLease> {
        self.send(self.http.post(self.url(&format!("/v1/leases/{id}/revoke"))))
            .await
    }

    pub async fn revoke_lease_prefix(&self, prefix: &str) -> Result<LeasesRevoked> {
        self.post(
            "/v1/leases/revoke-prefix",
            &RevokePrefixRequest {
                prefix: prefix.to_owned(),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(
            super::segment("prod/billing-worker"),
            "prod%2Fbilling-worker"
        );
        assert_eq!(super::segment("a b?#"), "a%20b%3F%23");
    }
}
