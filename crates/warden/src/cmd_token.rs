//! `warden token get|verify|keygen` (a machine's side of the token service) and
//! `warden keys list|rotate` (the operator's side).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use uuid::Uuid;
use warden_client::Client;
use warden_jose::{ClientKey, decode};
use warden_types::SigningKeyInfo;

use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Get an access token (client_credentials): with a private key file (private_key_jwt), or
    /// a client secret (client_secret_basic). Prints the token, or the whole response with --json.
    Get {
        /// The identity: its client_id, or a name (resolved with your operator token).
        #[arg(long)]
        identity: String,
        /// A private JWK file (made by `warden token keygen`): sign a client assertion with it.
        #[arg(long, conflicts_with = "secret")]
        key: Option<PathBuf>,
        /// A client secret (better: the WARDEN_CLIENT_SECRET environment variable).
        #[arg(long, env = "WARDEN_CLIENT_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Bind the token to the key with a DPoP proof (needs --key).
        #[arg(long, requires = "key")]
        dpop: bool,
        /// Space-separated scopes; default: everything the identity holds.
        #[arg(long)]
        scope: Option<String>,
        /// Audience (RFC 8707 resource); repeatable; default: the identity's audiences.
        #[arg(long)]
        resource: Vec<String>,
    },
    /// Exchange a token your platform gave you (a GitHub Actions or GitLab CI ID token, a
    /// Kubernetes service-account token) for a short Warden token of the NHI a trust rule names.
    /// No secret: the subject token is the credential. Prints the token (or --json).
    Exchange {
        /// The external token (better: WARDEN_SUBJECT_TOKEN).
        #[arg(long, env = "WARDEN_SUBJECT_TOKEN", hide_env_values = true)]
        subject_token: String,
        /// RFC 8693 token exchange (default) or the RFC 7523 jwt-bearer grant.
        #[arg(long, default_value = "token-exchange")]
        grant: String,
        /// Bind the token to a key with DPoP: a private JWK file (`warden token keygen`).
        #[arg(long)]
        dpop_key: Option<PathBuf>,
        /// Delegation: the agent's own Warden access token (better: WARDEN_ACTOR_TOKEN); the
        /// subject token is then the principal's.
        #[arg(long, env = "WARDEN_ACTOR_TOKEN", hide_env_values = true)]
        actor_token: Option<String>,
        /// What the subject token is: jwt (default), id_token or access_token.
        #[arg(long, default_value = "jwt")]
        subject_token_type: String,
        #[arg(long)]
        scope: Option<String>,
        /// Audience (RFC 8707 resource); repeatable.
        #[arg(long)]
        resource: Vec<String>,
    },
    /// Verify an access token against the server's published keys (signature, issuer, expiry,
    /// audience). Exits 1 if it is not valid.
    Verify {
        #[arg(value_name = "TOKEN")]
        access_token: String,
        /// The audience the token must carry (default: the issuer).
        #[arg(long)]
        audience: Option<String>,
        /// A scope the token must carry; repeatable.
        #[arg(long)]
        scope: Vec<String>,
        /// The environment the token's identity must be in.
        #[arg(long)]
        env: Option<String>,
        /// The DPoP proof sent with the token, to check the binding too.
        #[arg(long)]
        dpop: Option<String>,
        /// The request's method and URL the proof must match.
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        url: Option<String>,
    },
    /// Ask Warden whether a token is active, and about what (RFC 7662; needs an operator token).
    Introspect {
        #[arg(value_name = "TOKEN")]
        access_token: String,
    },
    /// Revoke an access token now (RFC 7009; needs an operator token that manages its owner).
    Revoke {
        #[arg(value_name = "TOKEN")]
        access_token: String,
    },
    /// Make an Ed25519 key pair: writes FILE (private JWK, mode 0600) and FILE with `.pub.jwk`
    /// in place of `.jwk` (the public JWK, for `warden credential add`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// The token signing keys and their status.
    List,
    /// Start signing with a new key. By default it is published first and signs after the
    /// publish delay; the old key stays published until its tokens have expired.
    Rotate {
        /// Switch now and withdraw the old key (its tokens stop verifying): for a leaked key.
        #[arg(long)]
        immediately: bool,
    },
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The token endpoint and issuer, from the server's metadata.
async fn endpoints(client: &Client) -> Result<(String, String)> {
    let meta = client.oauth_metadata().await?;
    let issuer = meta["issuer"]
        .as_str()
        .context("the server's metadata has no issuer")?
        .to_owned();
    let token = meta["token_endpoint"]
        .as_str()
        .context("the server's metadata has no token_endpoint")?
        .to_owned();
    Ok((issuer, token))
}

pub async fn run(
    client: &Client,
    operator: Option<&Client>,
    cmd: TokenCmd,
    json_out: bool,
) -> Result<ExitCode> {
    match cmd {
        TokenCmd::Get {
            identity,
            key,
            secret,
            dpop,
            scope,
            resource,
        } => {
            let client_id = match Uuid::parse_str(&identity) {
                Ok(id) => id.to_string(),
                Err(_) => {
                    let Some(op) = operator else {
                        bail!(
                            "pass the identity's client_id (a name needs an operator token to resolve)"
                        );
                    };
                    op.identity(&identity).await?.client_id
                }
            };
            let (_, endpoint) = endpoints(client).await?;
            let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".into())];
            if let Some(s) = &scope {
                form.push(("scope", s.clone()));
            }
            for r in &resource {
                form.push(("resource", r.clone()));
            }
            let mut proof = None;
            let mut basic = None;
            match (&key, &secret) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let jwk: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a JWK", path.display()))?;
                    let k = ClientKey::from_private_jwk(&jwk).with_context(|| {
                        format!("{} is not a usable private JWK", path.display())
                    })?;
                    let now = unix_now();
                    let assertion = k.client_assertion(
                        &client_id,
                        &endpoint,
                        now,
                        60,
                        &Uuid::now_v7().to_string(),
                    )?;
                    form.push(("client_id", client_id.clone()));
                    form.push((
                        "client_assertion_type",
                        warden_core::registry::JWT_BEARER_ASSERTION.into(),
                    ));
                    form.push(("client_assertion", assertion));
                    if dpop {
                        proof = Some(k.dpop_proof(
                            "POST",
                            &endpoint,
                            now,
                            &Uuid::now_v7().to_string(),
                            None,
                        )?);
                    }
                }
                (None, Some(s)) => basic = Some((client_id.clone(), s.clone())),
                (None, None) => bail!(
                    "pass --key FILE (private_key_jwt) or a client secret (WARDEN_CLIENT_SECRET)"
                ),
            }
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let basic = basic.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            let t = match client.oauth_token(&pairs, proof.as_deref(), basic).await {
                // The server wants a nonce in the proof: one retry with it (and a fresh assertion,
                // since the first one's jti is spent only if it was accepted).
                Err(warden_client::ClientError::UseDpopNonce(nonce)) if dpop => {
                    let path = key.as_ref().context("--dpop needs --key")?;
                    let jwk: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
                    let k = ClientKey::from_private_jwk(&jwk)?;
                    let now = unix_now();
                    let assertion = k.client_assertion(
                        &client_id,
                        &endpoint,
                        now,
                        60,
                        &Uuid::now_v7().to_string(),
                    )?;
                    let proof = k.dpop_proof_with_nonce(
                        "POST",
                        &endpoint,
                        now,
                        &Uuid::now_v7().to_string(),
                        None,
                        Some(&nonce),
                    )?;
                    let pairs: Vec<(&str, &str)> = pairs
                        .iter()
                        .map(|(a, b)| {
                            if *a == "client_assertion" {
                                (*a, assertion.as_str())
                            } else {
                                (*a, *b)
                            }
                        })
                        .collect();
                    client.oauth_token(&pairs, Some(&proof), basic).await?
                }
                other => other?,
            };
            output::print(json_out, &t, || t.access_token.clone())?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::Exchange {
            subject_token,
            grant,
            dpop_key,
            actor_token,
            subject_token_type,
            scope,
            resource,
        } => {
            let (_, endpoint) = endpoints(client).await?;
            let mut form: Vec<(&str, String)> = match grant.as_str() {
                "token-exchange" => vec![
                    (
                        "grant_type",
                        warden_core::registry::TOKEN_EXCHANGE_GRANT.into(),
                    ),
                    ("subject_token", subject_token.clone()),
                    (
                        "subject_token_type",
                        format!("urn:ietf:params:oauth:token-type:{subject_token_type}"),
                    ),
                ],
                "jwt-bearer" => vec![
                    ("grant_type", warden_core::registry::JWT_BEARER_GRANT.into()),
                    ("assertion", subject_token.clone()),
                ],
                other => bail!("--grant {other:?}: token-exchange or jwt-bearer"),
            };
            if let Some(s) = &scope {
                form.push(("scope", s.clone()));
            }
            for r in &resource {
                form.push(("resource", r.clone()));
            }
            if let Some(a) = &actor_token {
                form.push(("actor_token", a.clone()));
                form.push((
                    "actor_token_type",
                    "urn:ietf:params:oauth:token-type:access_token".into(),
                ));
            }
            let key = match &dpop_key {
                None => None,
                Some(path) => {
                    let jwk: Value = serde_json::from_str(
                        &std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )
                    .with_context(|| format!("{} is not a JWK", path.display()))?;
                    Some(ClientKey::from_private_jwk(&jwk).with_context(|| {
                        format!("{} is not a usable private JWK", path.display())
                    })?)
                }
            };
            let proof = |nonce: Option<&str>| -> Result<Option<String>> {
                Ok(match &key {
                    None => None,
                    Some(k) => Some(k.dpop_proof_with_nonce(
                        "POST",
                        &endpoint,
                        unix_now(),
                        &Uuid::now_v7().to_string(),
                        None,
                        nonce,
                    )?),
                })
            };
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = match client
                .oauth_token(&pairs, proof(None)?.as_deref(), None)
                .await
            {
                Err(warden_client::ClientError::UseDpopNonce(n)) if key.is_some() => {
                    client
                        .oauth_token(&pairs, proof(Some(&n))?.as_deref(), None)
                        .await?
                }
                other => other?,
            };
            output::print(json_out, &t, || t.access_token.clone())?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::Verify {
            access_token: token,
            audience,
            scope,
            env,
            dpop,
            method,
            url,
        } => {
            let (issuer, _) = endpoints(client).await?;
            // Through the resource servers' library: the JWKS is fetched from the issuer.
            let verifier = warden_verify::Verifier::new(&issuer, None)?;
            let bound = decode(&token)
                .ok()
                .is_some_and(|j| j.claims().get("cnf").is_some());
            let authorization = if bound {
                format!("DPoP {token}")
            } else {
                format!("Bearer {token}")
            };
            let scopes: Vec<&str> = scope.iter().map(String::as_str).collect();
            let audience = audience.unwrap_or_else(|| issuer.clone());
            let required = warden_verify::Requirements {
                audience: &audience,
                scopes: &scopes,
                environment: env.as_deref(),
            };
            let verdict = match &dpop {
                // With the proof: exactly what a resource server does.
                Some(proof) => {
                    verifier
                        .verify(
                            &warden_verify::Presented {
                                authorization: &authorization,
                                dpop: Some(proof),
                                method: &method,
                                url: url.as_deref().unwrap_or(&audience),
                                client_certificate: None,
                            },
                            &required,
                        )
                        .await
                }
                // Without one, everything but the binding.
                None => {
                    verifier.refresh().await?;
                    verifier.verify_claims_only(&token, &required, unix_now())
                }
            };
            match verdict {
                Ok(at) => {
                    let v = json!({
                        "valid": true, "sub": at.sub, "client_id": at.client_id, "aud": at.aud,
                        "scope": at.scope.join(" "), "exp": at.exp, "jti": at.jti,
                        "cnf": at.jkt.map(|j| json!({"jkt": j})),
                        "binding_checked": dpop.is_some(),
                    });
                    output::print(json_out, &v, || {
                        format!(
                            "valid: sub {} scope {:?} expires in {}s{}",
                            at.sub,
                            at.scope.join(" "),
                            at.exp - unix_now(),
                            match (v["cnf"].is_null(), dpop.is_some()) {
                                (true, _) => "",
                                (false, true) => " (DPoP-bound; proof checked)",
                                (false, false) =>
                                    " (DPoP-bound; pass --dpop PROOF to check the binding)",
                            }
                        )
                    })?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let v = json!({ "valid": false, "error": e.code(), "reason": e.to_string() });
                    output::print(json_out, &v, || format!("invalid: {e}"))?;
                    Ok(ExitCode::from(1))
                }
            }
        }
        TokenCmd::Introspect {
            access_token: token,
        } => {
            let op = operator
                .context("introspection needs an operator token (--token or WARDEN_TOKEN)")?;
            let i = op.introspect(&token).await?;
            output::print(json_out, &i, || {
                if i.active {
                    format!(
                        "active: {} ({}) scope {:?} expires at {}",
                        i.username.clone().unwrap_or_default(),
                        i.sub.clone().unwrap_or_default(),
                        i.scope.clone().unwrap_or_default(),
                        i.exp.unwrap_or_default()
                    )
                } else {
                    "inactive".to_owned()
                }
            })?;
            Ok(if i.active {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        TokenCmd::Revoke {
            access_token: token,
        } => {
            let op =
                operator.context("revocation needs an operator token (--token or WARDEN_TOKEN)")?;
            op.revoke_token(&token).await?;
            output::print(json_out, &json!({"revoked": true}), || "revoked".to_owned())?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::Keygen { out } => {
            let (key, private) = ClientKey::generate_ed25519()?;
            let name = out.to_string_lossy();
            let public_path = PathBuf::from(match name.strip_suffix(".jwk") {
                Some(stem) => format!("{stem}.pub.jwk"),
                None => format!("{name}.pub.jwk"),
            });
            write_private(&out, private.as_bytes())?;
            std::fs::write(
                &public_path,
                serde_json::to_string_pretty(key.public_jwk())?,
            )
            .with_context(|| format!("writing {}", public_path.display()))?;
            let v = json!({ "private": out, "public": public_path, "jwk": key.public_jwk() });
            output::print(json_out, &v, || {
                format!(
                    "private key: {} (keep it secret)\npublic key:  {} (register it: warden credential add IDENTITY --jwk {})",
                    out.display(),
                    public_path.display(),
                    public_path.display()
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub async fn run_keys(client: &Client, cmd: KeysCmd, json_out: bool) -> Result<ExitCode> {
    let row = |k: &SigningKeyInfo| {
        vec![
            k.kid.clone(),
            k.alg.clone(),
            k.status.clone(),
            crate::output::time(k.activates_at),
            k.expires_at.map(crate::output::time).unwrap_or_default(),
        ]
    };
    match cmd {
        KeysCmd::List => {
            let list = client.list_signing_keys().await?;
            output::print(json_out, &list, || {
                table(
                    &["KID", "ALG", "STATUS", "SIGNS FROM", "UNPUBLISHED AT"],
                    &list.items.iter().map(row).collect::<Vec<_>>(),
                )
            })?;
        }
        KeysCmd::Rotate { immediately } => {
            let k = client.rotate_signing_key(immediately).await?;
            output::print(json_out, &k, || {
                format!(
                    "new signing key {} ({}), signs from {}",
                    k.kid,
                    k.status,
                    crate::output::time(k.activates_at)
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
