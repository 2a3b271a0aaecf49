//! Public JWK validation and RFC 7638 thumbprints.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("jwk must be a JSON object")]
    NotObject,
    #[error("jwk contains private or symmetric key material (`{0}`); register the public key only")]
    PrivateMaterial(&'static str),
    #[error("jwk member `{0}` is missing or not a string")]
    Missing(&'static str),
    #[error("unsupported jwk: {0}")]
    Unsupported(String),
    #[error("jwk member `{0}` is not valid base64url or has the wrong length")]
    BadValue(&'static str),
}

/// A checked public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// `OKP/Ed25519`, `EC/P-256`, `EC/P-384` or `RSA`.
    pub key_type: String,
    /// RFC 7638 SHA-256 thumbprint, base64url.
    pub thumbprint: String,
    /// The JWK reduced to its public members (plus `kid`, `alg`, `use` when present).
    pub public: Value,
}

const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Checks that `jwk` is a usable public key and computes its thumbprint.
pub fn check_public_jwk(jwk: &Value) -> Result<PublicJwk, JwkError> {
    let obj = jwk.as_object().ok_or(JwkError::NotObject)?;
    for m in PRIVATE_MEMBERS {
        if obj.contains_key(m) {
            return Err(JwkError::PrivateMaterial(m));
        }
    }
    let s = |name: &'static str| -> Result<&str, JwkError> {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or(JwkError::Missing(name))
    };
    let b64_len = |name: &'static str, want: Option<usize>| -> Result<usize, JwkError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s(name)?)
            .map_err(|_| JwkError::BadValue(name))?;
        match want {
            Some(n) if bytes.len() != n => Err(JwkError::BadValue(name)),
            _ => Ok(bytes.len()),
        }
    };
    let kty = s("kty")?;
    // The thumbprint input: required members only, lexicographic order, no whitespace.
    let (key_type, canonical, members): (String, String, &[&str]) = match kty {
        "OKP" => {
            let crv = s("crv")?;
            if crv != "Ed25519" {
                return Err(JwkError::Unsupported(format!("OKP curve {crv:?}")));
            }
            b64_len("x", Some(32))?;
            let c = format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{}"}}"#, s("x")?);
            ("OKP/Ed25519".into(), c, &["crv", "kty", "x"])
        }
        "EC" => {
            let crv = s("crv")?;
            let len = match crv {
                "P-256" => 32,
                "P-384" => 48,
                other => return Err(JwkError::Unsupported(format!("EC curve {other:?}"))),
            };
            b64_len("x", Some(len))?;
            b64_len("y", Some(len))?;
            let c = format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                s("x")?,
                s("y")?
            );
            (format!("EC/{crv}"), c, &["crv", "kty", "x", "y"])
        }
        "RSA" => {
            let n_len = b64_len("n", None)?;
            if n_len < 256 {
                return Err(JwkError::Unsupported(
                    "RSA modulus shorter than 2048 bits".into(),
                ));
            }
            b64_len("e", None)?;
            let c = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?);
            ("RSA".into(), c, &["e", "kty", "n"])
        }
        other => return Err(JwkError::Unsupported(format!("kty {other:?}"))),
    };
    let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    let mut public = serde_json::Map::new();
    for m in members.iter().chain(["kid", "alg", "use"].iter()) {
        if let Some(v) = obj.get(*m) {
            public.insert((*m).to_owned(), v.clone());
        }
    }
    Ok(PublicJwk {
        key_type,
        thumbprint,
        public: Value::Object(public),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7638_example_thumbprint() {
        // The RSA key of RFC 7638 §3.1 and its published thumbprint.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let k = check_public_jwk(&jwk).unwrap();
        assert_eq!(k.thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_eq!(k.key_type, "RSA");
    }

    #[test]
    fn private_material_is_refused() {
        let jwk = json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"});
        assert_eq!(check_public_jwk(&jwk), Err(JwkError::PrivateMaterial("d")));
        let sym = json!({"kty":"oct","k":"c2VjcmV0"});
        assert_eq!(check_public_jwk(&sym), Err(JwkError::PrivateMaterial("k")));
    }

    #[test]
    fn ed25519_public_key_is_accepted_and_wrong_lengths_are_not() {
        let ok = json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"});
        let k = check_public_jwk(&ok).unwrap();
        assert_eq!(k.key_type, "OKP/Ed25519");
        assert_eq!(k.public["kid"], "k1");
        let short = json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"});
        assert_eq!(check_public_jwk(&short), Err(JwkError::BadValue("x")));
        let x448 = json!({"kty":"OKP","crv":"X448","x":"AAAA"});
        assert!(matches!(
            check_public_jwk(&x448),
            Err(JwkError::Unsupported(_))
        ));
        assert_eq!(check_public_jwk(&json!([1])), Err(JwkError::NotObject));
        assert_eq!(
            check_public_jwk(&json!({"crv":"P-256"})),
            Err(JwkError::Missing("kty"))
        );
    }
}
