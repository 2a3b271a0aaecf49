//! Compact JWS (RFC 7515) the way Warden needs it, and nothing more. Pure: no I/O, no clock (the
//! caller passes `now`).
//!
//! - [`decode`] parses a compact JWS with hard size limits and an **algorithm allow-list**
//!   (`EdDSA`, `ES256`, `PS256`, `RS256`): `none`, every HMAC algorithm (so no algorithm confusion
//!   with a public key used as an HMAC secret) and anything else are refused before any key is
//!   looked at; `crit` is refused (we understand no extension).
//! - [`VerifyingKey`] is a public JWK made usable; the JWS algorithm must fit the key type (and the
//!   JWK's own `alg`, when it has one).
//! - [`SigningKey`] is one of Warden's own keys (Ed25519 or P-256), kept as zeroized PKCS#8.
//! - [`verify_dpop`] checks a DPoP proof (RFC 9449 §4.3); [`check_assertion`] the claims of a
//!   `private_key_jwt` client assertion (RFC 7523 §3); [`check_access_token`] those of an
//!   RFC 9068 access token.
//!
//! Errors say which check failed, for the audit log; the HTTP layer decides how much of that a
//! client gets to see.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use warden_crypto::jwk::{JwkError, check_public_jwk};
use zeroize::Zeroizing;

/// Longest compact JWS accepted, in bytes (an RSA-4096 DPoP proof with its JWK is under 2 KiB).
pub const MAX_JWS_LEN: usize = 16 * 1024;
/// Longest decoded protected header, in bytes.
pub const MAX_HEADER_LEN: usize = 4 * 1024;
/// Longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;

/// Why a token or proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("token is longer than {MAX_JWS_LEN} bytes")]
    TooLarge,
    #[error("not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("invalid base64url in the {0}")]
    Base64(&'static str),
    #[error("invalid JSON in the {0}")]
    Json(&'static str),
    #[error("algorithm {0:?} is not allowed")]
    AlgNotAllowed(String),
    #[error("critical header parameters are not supported")]
    Crit,
    #[error("wrong `typ` {0:?}")]
    Typ(String),
    #[error("the key does not fit the algorithm")]
    KeyMismatch,
    #[error("signature is invalid")]
    BadSignature,
    #[error("jwk: {0}")]
    Jwk(#[from] JwkError),
    #[error("claim `{0}` is missing or invalid")]
    Claim(&'static str),
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("lifetime too long")]
    TooLong,
    #[error("`iat` outside the accepted window")]
    Iat,
    #[error("wrong audience")]
    Audience,
    #[error("wrong issuer")]
    Issuer,
    #[error("`htm` does not match the request method")]
    Htm,
    #[error("`htu` does not match the request URL")]
    Htu,
    #[error("`ath` does not match the access token")]
    Ath,
    #[error("nonce missing or wrong")]
    Nonce,
    #[error("signing failed")]
    Sign,
}

/// The JWS algorithms Warden accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    EdDSA,
    ES256,
    PS256,
    RS256,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::EdDSA, Alg::ES256, Alg::PS256, Alg::RS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::PS256 => "PS256",
            Alg::RS256 => "RS256",
        }
    }

    /// The allow-list: anything not named here (`none`, `HS256`, …) is refused.
    pub fn parse(s: &str) -> Result<Alg, JoseError> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| JoseError::AlgNotAllowed(s.chars().take(32).collect()))
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protected header members Warden reads. Others are ignored; keys are never fetched from
/// `jku` or `x5u`.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub jwk: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A decoded, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    pub header: Header,
    pub alg: Alg,
    claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, JoseError> {
    // The engine refuses padding and characters outside the URL-safe alphabet.
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JoseError::Base64(what))
}

/// Parses a compact JWS whose payload is a JSON object. Checks sizes, the algorithm allow-list
/// and `crit`; verifies nothing else (see [`Jws::verify`]).
pub fn decode(token: &str) -> Result<Jws, JoseError> {
    if token.len() > MAX_JWS_LEN {
        return Err(JoseError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JoseError::Malformed);
    }
    let header_bytes = b64(h, "header")?;
    if header_bytes.len() > MAX_HEADER_LEN {
        return Err(JoseError::TooLarge);
    }
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| JoseError::Json("header"))?;
    let alg = Alg::parse(&header.alg)?;
    if header.crit.is_some() {
        return Err(JoseError::Crit);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(p, "payload")?).map_err(|_| JoseError::Json("payload"))?;
    let signature = b64(s, "signature")?;
    Ok(Jws {
        header,
        alg,
        claims,
        signing_input: token[..h.len() + 1 + p.len()].to_owned(),
        signature,
    })
}

impl Jws {
    /// Verifies the signature with `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), JoseError> {
        key.verify(self.alg, self.signing_input.as_bytes(), &self.signature)
    }

    /// Requires the header's `typ` to be `want` (compared case-insensitively, with or without the
    /// `application/` prefix, as RFC 7515 §4.1.9 allows).
    pub fn require_typ(&self, want: &str) -> Result<(), JoseError> {
        let typ = self.header.typ.as_deref().unwrap_or("");
        let bare = typ
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |_| &typ[12..]);
        if bare.eq_ignore_ascii_case(want) {
            Ok(())
        } else {
            Err(JoseError::Typ(typ.chars().take(32).collect()))
        }
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// A string claim.
    pub fn str_claim(&self, name: &'static str) -> Result<&str, JoseError> {
        self.claims
            .get(name)
            .and_then(Value::as_str)
            .ok_or(JoseError::Claim(name))
    }

    /// An optional string claim; present but not a string is an error.
    pub fn opt_str_claim(&self, name: &'static str) -> Result<Option<&str>, JoseError> {
        match self.claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or(JoseError::Claim(name)),
        }
    }

    /// A NumericDate claim (seconds; a fraction is cut off).
    pub fn date_claim(&self, name: &'static str) -> Result<Option<i64>, JoseError> {
        match self.claims.get(name) {
            None => Ok(None),
            Some(v) => match (v.as_i64(), v.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(f)) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
                _ => Err(JoseError::Claim(name)),
            },
        }
    }

    /// The `aud` claim as a list (a single string or an array of strings).
    pub fn audiences(&self) -> Result<Vec<&str>, JoseError> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => Ok(vec![s.as_str()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().ok_or(JoseError::Claim("aud")))
                .collect(),
            _ => Err(JoseError::Claim("aud")),
        }
    }

    fn jti(&self) -> Result<&str, JoseError> {
        let jti = self.str_claim("jti")?;
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(JoseError::Claim("jti"));
        }
        Ok(jti)
    }
}

/// A public key able to verify signatures, made from a public JWK.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    Ed25519(Vec<u8>),
    /// Uncompressed SEC1 point (`04 || x || y`).
    P256(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyingKey::Ed25519(_) => "VerifyingKey(Ed25519)",
            VerifyingKey::P256(_) => "VerifyingKey(P-256)",
            VerifyingKey::Rsa { .. } => "VerifyingKey(RSA)",
        })
    }
}

/// A JWK and what it verifies with.
#[derive(Debug, Clone)]
pub struct JwkKey {
    pub key: VerifyingKey,
    /// RFC 7638 thumbprint.
    pub thumbprint: String,
    /// The JWK's `alg`, if it names one: then only that algorithm may be used with it.
    pub alg: Option<String>,
    pub kid: Option<String>,
}

impl VerifyingKey {
    /// From a public JWK. Refuses private or symmetric key material and unsupported key types.
    pub fn from_jwk(jwk: &Value) -> Result<JwkKey, JoseError> {
        let checked = check_public_jwk(jwk)?;
        let member = |name: &'static str| -> Result<Vec<u8>, JoseError> {
            let s = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or(JwkError::Missing(name))?;
            URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| JoseError::Jwk(JwkError::BadValue(name)))
        };
        let key = match checked.key_type.as_str() {
            "OKP/Ed25519" => VerifyingKey::Ed25519(member("x")?),
            "EC/P-256" => {
                let mut point = vec![4u8];
                point.extend(member("x")?);
                point.extend(member("y")?);
                VerifyingKey::P256(point)
            }
            "RSA" => VerifyingKey::Rsa {
                n: member("n")?,
                e: member("e")?,
            },
            other => {
                return Err(JoseError::Jwk(JwkError::Unsupported(format!(
                    "{other} keys cannot sign an allowed algorithm"
                ))));
            }
        };
        Ok(JwkKey {
            key,
            thumbprint: checked.thumbprint,
            alg: jwk.get("alg").and_then(Value::as_str).map(str::to_owned),
            kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// Verifies `sig` over `msg` with algorithm `alg`, which must fit the key type.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        let ok = match (self, alg) {
            (VerifyingKey::Ed25519(x), Alg::EdDSA) => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig)
            }
            (VerifyingKey::P256(point), Alg::ES256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig)
            }
            (VerifyingKey::Rsa { n, e }, Alg::RS256) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig),
            (VerifyingKey::Rsa { n, e }, Alg::PS256) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PSS_2048_8192_SHA256, msg, sig),
            _ => return Err(JoseError::KeyMismatch),
        };
        ok.map_err(|_| JoseError::BadSignature)
    }
}

impl JwkKey {
    /// Verifies `jws` with this key, honouring the JWK's own `alg`.
    pub fn verify(&self, jws: &Jws) -> Result<(), JoseError> {
        if let Some(a) = &self.alg
            && a != jws.alg.as_str()
        {
            return Err(JoseError::KeyMismatch);
        }
        jws.verify(&self.key)
    }
}

/// One of Warden's signing keys. The PKCS#8 document is zeroized on drop; `Debug` shows the key
/// id only.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Pair,
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} {})", self.alg, self.kid)
    }
}

impl SigningKey {
    /// A fresh key for `alg` (`EdDSA` or `ES256`).
    pub fn generate(alg: Alg, kid: &str) -> Result<SigningKey, JoseError> {
        let rng = SystemRandom::new();
        let doc = match alg {
            Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| JoseError::Sign)?,
            Alg::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| JoseError::Sign)?
            }
            _ => return Err(JoseError::KeyMismatch),
        };
        SigningKey::from_pkcs8(alg, kid, doc.as_ref())
    }

    /// From a PKCS#8 document made by [`SigningKey::generate`].
    pub fn from_pkcs8(alg: Alg, kid: &str, der: &[u8]) -> Result<SigningKey, JoseError> {
        let pair = match alg {
            Alg::EdDSA => Pair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(|_| JoseError::Sign)?),
            Alg::ES256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &SystemRandom::new(),
                )
                .map_err(|_| JoseError::Sign)?,
            ),
            _ => return Err(JoseError::KeyMismatch),
        };
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg,
            pkcs8: Zeroizing::new(der.to_vec()),
            pair,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The PKCS#8 document, to be stored encrypted.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public JWK, with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = match &self.pair {
            Pair::Ed(p) => serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(p.public_key().as_ref()),
            }),
            Pair::Ec(p) => {
                // SEC1 uncompressed: 0x04 || x || y.
                let xy = p.public_key().as_ref().get(1..).unwrap_or_default();
                let (x, y) = xy.split_at(xy.len() / 2);
                serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        };
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), Value::String(self.kid.clone()));
            o.insert("alg".into(), Value::String(self.alg.as_str().into()));
            o.insert("use".into(), Value::String("sig".into()));
        }
        jwk
    }

    /// The verifying half.
    pub fn verifying_key(&self) -> VerifyingKey {
        match &self.pair {
            Pair::Ed(p) => VerifyingKey::Ed25519(p.public_key().as_ref().to_vec()),
            Pair::Ec(p) => VerifyingKey::P256(p.public_key().as_ref().to_vec()),
        }
    }

    /// Signs `claims` as a compact JWS with header `{alg, typ, kid}`.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, JoseError> {
        let header = serde_json::json!({ "alg": self.alg.as_str(), "typ": typ, "kid": self.kid });
        sign_compact(&self.pair, &header, claims)
    }

    #[cfg(test)]
    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, JoseError> {
        self.pair.sign(msg)
    }
}

/// A client's own key, loaded from (or generated as) a private JWK: what `warden token get` signs
/// client assertions and DPoP proofs with. `Debug` shows the key id only.
pub struct ClientKey {
    alg: Alg,
    kid: String,
    public: Value,
    pair: Pair,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({} {})", self.alg, self.kid)
    }
}

impl ClientKey {
    /// A new Ed25519 key and its private JWK (`kid` = its thumbprint).
    pub fn generate_ed25519() -> Result<(ClientKey, Zeroizing<String>), JoseError> {
        use ring::rand::SecureRandom;
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(seed.as_mut())
            .map_err(|_| JoseError::Sign)?;
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|_| JoseError::Sign)?;
        let public = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        let kid = check_public_jwk(&public)?.thumbprint;
        let private = Zeroizing::new(
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": public["x"], "d": URL_SAFE_NO_PAD.encode(seed.as_ref()),
                "kid": kid, "alg": "EdDSA",
            })
            .to_string(),
        );
        Ok((
            ClientKey::from_private_jwk(
                &serde_json::from_str(&private).map_err(|_| JoseError::Sign)?,
            )?,
            private,
        ))
    }

    /// From a private JWK: OKP Ed25519 or EC P-256 (with `d`).
    pub fn from_private_jwk(jwk: &Value) -> Result<ClientKey, JoseError> {
        let member = |name: &'static str| -> Result<Zeroizing<Vec<u8>>, JoseError> {
            let s = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or(JoseError::Jwk(JwkError::Missing(name)))?;
            URL_SAFE_NO_PAD
                .decode(s)
                .map(Zeroizing::new)
                .map_err(|_| JoseError::Jwk(JwkError::BadValue(name)))
        };
        let mut public = jwk.clone();
        if let Some(o) = public.as_object_mut() {
            for m in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                o.remove(m);
            }
        }
        let checked = check_public_jwk(&public)?;
        let (alg, pair) = match checked.key_type.as_str() {
            "OKP/Ed25519" => (
                Alg::EdDSA,
                Pair::Ed(
                    Ed25519KeyPair::from_seed_and_public_key(&member("d")?, &member("x")?)
                        .map_err(|_| JoseError::KeyMismatch)?,
                ),
            ),
            "EC/P-256" => {
                let mut point = vec![4u8];
                point.extend_from_slice(&member("x")?);
                point.extend_from_slice(&member("y")?);
                (
                    Alg::ES256,
                    Pair::Ec(
                        EcdsaKeyPair::from_private_key_and_public_key(
                            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                            &member("d")?,
                            &point,
                            &SystemRandom::new(),
                        )
                        .map_err(|_| JoseError::KeyMismatch)?,
                    ),
                )
            }
            _ => return Err(JoseError::KeyMismatch),
        };
        Ok(ClientKey {
            alg,
            kid: jwk
                .get("kid")
                .and_then(Value::as_str)
                .map_or_else(|| checked.thumbprint.clone(), str::to_owned),
            public: checked.public,
            pair,
        })
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public JWK (to register with `warden credential add`).
    pub fn public_jwk(&self) -> &Value {
        &self.public
    }

    /// A client assertion (RFC 7523) for `client_id` at `audience`, valid for `lifetime_secs`.
    pub fn client_assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: i64,
        lifetime_secs: i64,
        jti: &str,
    ) -> Result<String, JoseError> {
        let header = serde_json::json!({ "alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid });
        let claims = serde_json::json!({
            "iss": client_id, "sub": client_id, "aud": audience,
            "iat": now, "exp": now + lifetime_secs, "jti": jti,
        });
        sign_compact(&self.pair, &header, &claims)
    }

    /// A DPoP proof (RFC 9449 §4.2) for `method` `url`; `access_token` adds `ath`.
    pub fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        now: i64,
        jti: &str,
        access_token: Option<&str>,
    ) -> Result<String, JoseError> {
        self.dpop_proof_with_nonce(method, url, now, jti, access_token, None)
    }

    /// [`ClientKey::dpop_proof`] carrying a server-provided `nonce`.
    pub fn dpop_proof_with_nonce(
        &self,
        method: &str,
        url: &str,
        now: i64,
        jti: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, JoseError> {
        let header =
            serde_json::json!({ "alg": self.alg.as_str(), "typ": "dpop+jwt", "jwk": self.public });
        let mut claims = serde_json::json!({ "jti": jti, "htm": method, "htu": url, "iat": now });
        if let Some(t) = access_token {
            claims["ath"] = Value::String(sha256_b64(t.as_bytes()));
        }
        if let Some(n) = nonce {
            claims["nonce"] = Value::String(n.to_owned());
        }
        sign_compact(&self.pair, &header, &claims)
    }
}

fn sign_compact(pair: &Pair, header: &Value, claims: &Value) -> Result<String, JoseError> {
    let mut out = String::with_capacity(512);
    URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut out);
    let sig = pair.sign(out.as_bytes())?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut out);
    Ok(out)
}

impl Pair {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, JoseError> {
        match self {
            Pair::Ed(p) => Ok(p.sign(msg).as_ref().to_vec()),
            Pair::Ec(p) => p
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JoseError::Sign),
        }
    }
}

/// base64url(SHA-256(data)), as used by `ath` and `x5t#S256`.
pub fn sha256_b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(data))
}

/// What a DPoP proof must match.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// The HTTP method of the request carrying the proof.
    pub method: &'a str,
    /// The request's URL as the server is known to clients (query and fragment are ignored).
    pub url: &'a str,
    pub now: i64,
    /// Oldest accepted `iat`, in seconds before `now`.
    pub max_age_secs: i64,
    /// Newest accepted `iat`, in seconds after `now` (clock skew).
    pub leeway_secs: i64,
    /// At a resource server: the access token the proof must be bound to (`ath`).
    pub access_token: Option<&'a str>,
    /// The nonce the server requires, if any.
    pub nonce: Option<&'a str>,
}

/// A valid DPoP proof. The caller still has to check `jti` for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    /// RFC 7638 thumbprint of the proof's key: the `cnf.jkt` of a bound token.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

/// Checks a DPoP proof as RFC 9449 §4.3 lists: one well-formed JWS; `typ` `dpop+jwt`; an allowed
/// asymmetric algorithm; a public `jwk` in the header that verifies the signature; `htm` and
/// `htu` matching the request; `iat` within the window; a `jti`; `ath` and `nonce` when required.
pub fn verify_dpop(proof: &str, req: &DpopRequest<'_>) -> Result<DpopProof, JoseError> {
    let jws = decode(proof)?;
    jws.require_typ("dpop+jwt")?;
    let jwk = jws
        .header
        .jwk
        .as_ref()
        .ok_or(JoseError::Jwk(JwkError::Missing("jwk")))?;
    let key = VerifyingKey::from_jwk(jwk)?;
    key.verify(&jws)?;
    if jws.str_claim("htm")? != req.method {
        return Err(JoseError::Htm);
    }
    let htu = jws.str_claim("htu")?;
    match (normalize_url(htu), normalize_url(req.url)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(JoseError::Htu),
    }
    let iat = jws.date_claim("iat")?.ok_or(JoseError::Claim("iat"))?;
    if iat < req.now - req.max_age_secs || iat > req.now + req.leeway_secs {
        return Err(JoseError::Iat);
    }
    let jti = jws.jti()?.to_owned();
    if let Some(token) = req.access_token
        && jws.opt_str_claim("ath")? != Some(sha256_b64(token.as_bytes()).as_str())
    {
        return Err(JoseError::Ath);
    }
    if let Some(nonce) = req.nonce
        && jws.opt_str_claim("nonce")? != Some(nonce)
    {
        return Err(JoseError::Nonce);
    }
    Ok(DpopProof {
        jkt: key.thumbprint,
        jti,
        iat,
    })
}

/// Scheme and authority lower-cased, default port dropped, path kept, query and fragment cut.
/// `None` for anything that is not an absolute http(s) URL.
pub fn normalize_url(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

/// What a `private_key_jwt` client assertion must satisfy (RFC 7523 §3, OIDC Core §9).
#[derive(Debug, Clone, Copy)]
pub struct AssertionRules<'a> {
    pub client_id: &'a str,
    /// Accepted audiences: the token endpoint URL and the issuer.
    pub audiences: &'a [&'a str],
    pub now: i64,
    /// Longest accepted `exp - now`.
    pub max_lifetime_secs: i64,
    pub leeway_secs: i64,
}

/// The parts of a valid assertion the caller needs for replay protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionClaims {
    pub jti: String,
    pub exp: i64,
}

/// Checks the claims of a client assertion whose signature the caller has verified: `iss` and
/// `sub` are the client id, `aud` names us, `exp` is in the future but not far, `nbf`/`iat` are
/// not in the future, and there is a `jti`.
pub fn check_assertion(
    jws: &Jws,
    rules: &AssertionRules<'_>,
) -> Result<AssertionClaims, JoseError> {
    if jws.str_claim("iss")? != rules.client_id {
        return Err(JoseError::Issuer);
    }
    if jws.str_claim("sub")? != rules.client_id {
        return Err(JoseError::Claim("sub"));
    }
    if !jws
        .audiences()?
        .iter()
        .any(|a| rules.audiences.iter().any(|b| normalize_eq(a, b)))
    {
        return Err(JoseError::Audience);
    }
    let exp = jws.date_claim("exp")?.ok_or(JoseError::Claim("exp"))?;
    if exp <= rules.now - rules.leeway_secs {
        return Err(JoseError::Expired);
    }
    if exp > rules.now + rules.max_lifetime_secs + rules.leeway_secs {
        return Err(JoseError::TooLong);
    }
    if let Some(nbf) = jws.date_claim("nbf")?
        && nbf > rules.now + rules.leeway_secs
    {
        return Err(JoseError::NotYetValid);
    }
    if let Some(iat) = jws.date_claim("iat")?
        && iat > rules.now + rules.leeway_secs
    {
        return Err(JoseError::Iat);
    }
    Ok(AssertionClaims {
        jti: jws.jti()?.to_owned(),
        exp,
    })
}

fn normalize_eq(a: &str, b: &str) -> bool {
    a == b
        || matches!((normalize_url(a), normalize_url(b)), (Some(x), Some(y)) if x.trim_end_matches('/') == y.trim_end_matches('/'))
}

/// The claims of a valid RFC 9068 access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub iss: String,
    pub sub: String,
    pub client_id: String,
    pub aud: Vec<String>,
    pub scope: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// `cnf.jkt`: the DPoP key thumbprint the token is bound to.
    pub jkt: Option<String>,
    /// `cnf.x5t#S256`: the certificate thumbprint the token is bound to.
    pub x5t_s256: Option<String>,
    /// Warden's `env` claim: the environment of the identity the token was issued to.
    pub env: Option<String>,
}

/// What an access token must satisfy at a resource server.
#[derive(Debug, Clone, Copy)]
pub struct AccessTokenRules<'a> {
    pub issuer: &'a str,
    /// The audience the resource server requires; `None` skips the check (introspection).
    pub audience: Option<&'a str>,
    pub now: i64,
    pub leeway_secs: i64,
}

/// Checks the claims of an access token whose signature the caller has verified (RFC 9068 §4).
pub fn check_access_token(
    jws: &Jws,
    rules: &AccessTokenRules<'_>,
) -> Result<AccessToken, JoseError> {
    jws.require_typ("at+jwt")?;
    let iss = jws.str_claim("iss")?;
    if iss != rules.issuer {
        return Err(JoseError::Issuer);
    }
    let aud: Vec<String> = jws.audiences()?.into_iter().map(str::to_owned).collect();
    if let Some(want) = rules.audience
        && !aud.iter().any(|a| normalize_eq(a, want))
    {
        return Err(JoseError::Audience);
    }
    let exp = jws.date_claim("exp")?.ok_or(JoseError::Claim("exp"))?;
    if exp <= rules.now - rules.leeway_secs {
        return Err(JoseError::Expired);
    }
    let iat = jws.date_claim("iat")?.ok_or(JoseError::Claim("iat"))?;
    if iat > rules.now + rules.leeway_secs {
        return Err(JoseError::Iat);
    }
    if let Some(nbf) = jws.date_claim("nbf")?
        && nbf > rules.now + rules.leeway_secs
    {
        return Err(JoseError::NotYetValid);
    }
    let cnf = jws.claims.get("cnf").and_then(Value::as_object);
    let cnf_str = |name: &str| {
        cnf.and_then(|c| c.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(AccessToken {
        iss: iss.to_owned(),
        sub: jws.str_claim("sub")?.to_owned(),
        client_id: jws.str_claim("client_id")?.to_owned(),
        aud,
        scope: jws
            .opt_str_claim("scope")?
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        exp,
        iat,
        jti: jws.jti()?.to_owned(),
        jkt: cnf_str("jkt"),
        x5t_s256: cnf_str("x5t#S256"),
        env: jws.opt_str_claim("env")?.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests;
