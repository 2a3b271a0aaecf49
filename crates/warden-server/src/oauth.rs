//! The OAuth 2.0 endpoints: token (RFC 6749 §4.4, 7523, 9449), JWKS, introspection (RFC 7662),
//! revocation (RFC 7009) and authorization server metadata (RFC 8414). Requests are
//! `application/x-www-form-urlencoded`; errors follow RFC 6749 §5.2.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use std::sync::Arc;

use warden_core::registry::{ClientAuth, ClientCert, OAuthError, TokenRequest};
use warden_core::{Actor, CoreError};
use warden_types::OAuthErrorBody;

use crate::AppState;
use crate::auth::{request_id, source};

/// Largest form body accepted at the OAuth endpoints.
pub const MAX_FORM: usize = 16 * 1024;

fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// An RFC 6749 §5.2 error response.
fn oauth_error(e: &OAuthError) -> Response {
    let status = match e {
        OAuthError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
        OAuthError::Core(CoreError::Throttled { .. }) => StatusCode::TOO_MANY_REQUESTS,
        OAuthError::Core(CoreError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::Core(CoreError::Unauthenticated(_)) => StatusCode::UNAUTHORIZED,
        OAuthError::Core(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = OAuthErrorBody {
        error: e.code().into(),
        error_description: Some(e.description()),
    };
    let mut res = no_store((status, Json(body)).into_response());
    match e {
        OAuthError::InvalidClient { basic: true } => {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"warden\""),
            );
        }
        OAuthError::Core(CoreError::Throttled { retry_after_secs }) => {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        OAuthError::UseDpopNonce(nonce) => {
            if let Ok(v) = HeaderValue::from_str(nonce) {
                res.headers_mut().insert("dpop-nonce", v);
            }
        }
        _ => {}
    }
    res
}

fn bad_request(why: &str) -> Response {
    oauth_error(&OAuthError::InvalidRequest(why.into()))
}

/// The form's parameters. RFC 6749 §3.2: none may repeat, except `resource` (RFC 8707).
struct Form {
    single: HashMap<String, String>,
    resources: Vec<String>,
}

fn invalid(why: &str) -> OAuthError {
    OAuthError::InvalidRequest(why.into())
}

fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.split(';').next().is_some_and(|m| {
        m.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) {
        return Err(invalid(
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    if body.len() > MAX_FORM {
        return Err(invalid("the request body is too large"));
    }
    let mut form = Form {
        single: HashMap::new(),
        resources: Vec::new(),
    };
    for (k, v) in form_urlencoded::parse(body) {
        if k == "resource" {
            form.resources.push(v.into_owned());
        } else if form.single.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(invalid(&format!(
                "parameter `{}` is repeated",
                k.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(form)
}

/// The client authentication of a request: HTTP Basic, or the form's `client_secret`, or a
/// client assertion. More than one method is an error (RFC 6749 §2.3).
fn client_auth(
    headers: &HeaderMap,
    form: &mut Form,
    has_cert: bool,
) -> Result<ClientAuth, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..6)
                .filter(|p| p.eq_ignore_ascii_case("basic "))
                .map(|_| &v[6..])
        });
    let secret = form.single.remove("client_secret");
    let assertion = form.single.remove("client_assertion");
    let assertion_type = form.single.remove("client_assertion_type");
    let client_id = form.single.remove("client_id");
    let methods = usize::from(basic.is_some())
        + usize::from(secret.is_some())
        + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(invalid("use exactly one client authentication method"));
    }
    if let Some(b) = basic {
        let decoded = STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or(OAuthError::InvalidClient { basic: true })?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or(OAuthError::InvalidClient { basic: true })?;
        // RFC 6749 §2.3.1: both parts are form-urlencoded before being joined.
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| OAuthError::InvalidClient { basic: true })
        };
        return Ok(ClientAuth::Secret {
            client_id: dec(id)?,
            secret: dec(secret)?,
            basic: true,
        });
    }
    if let Some(secret) = secret {
        let client_id = client_id.ok_or_else(|| invalid("client_secret needs client_id"))?;
        return Ok(ClientAuth::Secret {
            client_id,
            secret,
            basic: false,
        });
    }
    if let Some(assertion) = assertion {
        return Ok(ClientAuth::Assertion {
            client_id,
            assertion_type: assertion_type.unwrap_or_default(),
            assertion,
        });
    }
    // Only a client_id, over a connection with a client certificate: mutual TLS (RFC 8705 §2).
    match client_id {
        Some(client_id) if has_cert => Ok(ClientAuth::Tls { client_id }),
        _ => Ok(ClientAuth::None),
    }
}

/// `POST /oauth2/token`.
pub(crate) async fn token(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_FORM).await else {
        return bad_request("the request body is too large");
    };
    let mut form = match parse_form(&parts.headers, &body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    let cert = parts.extensions.get::<Arc<ClientCert>>().cloned();
    let client = match client_auth(&parts.headers, &mut form, cert.is_some()) {
        Ok(c) => c,
        Err(e) => return oauth_error(&e),
    };
    let mut dpop = parts.headers.get_all("dpop").iter();
    let proof = match (dpop.next(), dpop.next()) {
        (None, _) => None,
        (Some(v), None) => match v.to_str() {
            Ok(v) => Some(v.to_owned()),
            Err(_) => return oauth_error(&OAuthError::InvalidDpopProof),
        },
        (Some(_), Some(_)) => return bad_request("send one DPoP header"),
    };
    let request = TokenRequest {
        grant_type: form.single.remove("grant_type").unwrap_or_default(),
        client,
        assertion: form.single.remove("assertion"),
        subject_token: form.single.remove("subject_token"),
        subject_token_type: form.single.remove("subject_token_type"),
        requested_token_type: form.single.remove("requested_token_type"),
        actor_token: form.single.remove("actor_token"),
        audience: form.single.remove("audience"),
        scope: form.single.remove("scope"),
        resources: form.resources,
        dpop: proof,
        client_cert: cert,
        request_id: request_id(&parts),
        source: source(&parts),
        user_agent: parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect()),
    };
    match s.registry.issue_token(request).await {
        Ok(t) => {
            let mut res = no_store(Json(t).into_response());
            // A fresh nonce for the client's next request (RFC 9449 §8.2).
            if s.registry.dpop_nonces_required()
                && let Ok(v) = HeaderValue::from_str(&s.registry.dpop_nonce(s.registry.now()))
            {
                res.headers_mut().insert("dpop-nonce", v);
            }
            res
        }
        Err(e) => oauth_error(&e),
    }
}

/// The caller of introspection or revocation: a bearer (operator token or API key) or a client
/// authenticating as at the token endpoint.
async fn endpoint_caller(
    s: &AppState,
    parts: &axum::http::request::Parts,
    form: &mut Form,
) -> Result<Actor, OAuthError> {
    let rid = request_id(parts);
    let src = source(parts);
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim().to_owned())
        });
    let mut actor = if let Some(token) = bearer {
        s.registry
            .authenticate(&token, &rid, &src)
            .await
            .map_err(OAuthError::Core)?
    } else {
        let cert = parts.extensions.get::<Arc<ClientCert>>().cloned();
        let client = client_auth(&parts.headers, form, cert.is_some())?;
        if matches!(client, ClientAuth::None) {
            return Err(OAuthError::InvalidClient { basic: false });
        }
        s.registry
            .authenticate_endpoint_client(&client, cert.as_deref(), &rid, &src)
            .await?
    };
    actor.request_id = rid;
    actor.source = src;
    Ok(actor)
}

/// The authenticated caller of an introspection or revocation request and the `token` it names.
async fn token_request(
    s: &AppState,
    req: axum::extract::Request,
) -> Result<(Actor, String), OAuthError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| invalid("the request body is too large"))?;
    let mut form = parse_form(&parts.headers, &body)?;
    let caller = endpoint_caller(s, &parts, &mut form).await?;
    let token = form
        .single
        .remove("token")
        .ok_or_else(|| invalid("missing `token`"))?;
    Ok((caller, token))
}

/// `POST /oauth2/introspect`.
pub(crate) async fn introspect(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    let (caller, token) = match token_request(&s, req).await {
        Ok(r) => r,
        Err(e) => return oauth_error(&e),
    };
    match s.registry.introspect(&caller, &token) {
        Ok(i) => no_store(Json(i).into_response()),
        Err(e) => oauth_error(&OAuthError::Core(e)),
    }
}

/// `POST /oauth2/revoke`.
pub(crate) async fn revoke(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    let (caller, token) = match token_request(&s, req).await {
        Ok(r) => r,
        Err(e) => return oauth_error(&e),
    };
    match s.registry.revoke_access_token(&caller, &token).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => oauth_error(&e),
    }
}

/// `GET /oauth2/jwks`.
pub(crate) async fn jwks(State(s): State<AppState>) -> Response {
    let mut res = Json(s.registry.jwks()).into_response();
    // Shorter than the publish delay, so caches see a new key before it signs.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub(crate) async fn metadata(State(s): State<AppState>) -> Response {
    let Some(issuer) = s.registry.issuer() else {
        return oauth_error(&OAuthError::Core(CoreError::InvalidState(
            "issuer not set".into(),
        )));
    };
    let algs = ["EdDSA", "ES256", "PS256", "RS256"];
    let mut methods = vec![
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    if s.tls {
        methods.extend(["tls_client_auth", "self_signed_tls_client_auth"]);
    }
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/oauth2/jwks"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "grant_types_supported": [
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": methods,
        "tls_client_certificate_bound_access_tokens": s.tls,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "bearer"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "bearer"],
        "dpop_signing_alg_values_supported": algs,
        "authorization_response_iss_parameter_supported": false,
    }))
    .into_response()
}
