//! Identifiable secrets.
//!
//! A Warden secret looks like `wdn_ak_` + 43 base62 characters of randomness (≈ 256 bits) + a
//! 6-character base62 CRC32 of everything before it. The fixed prefix lets any scanner find one; the
//! checksum lets it tell a real secret from a typo or a lookalike without asking the server, and lets
//! the server reject garbage before it computes a keyed hash or touches the database.

use rand::Rng;
use rand::rngs::OsRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of randomness: 62^43 > 2^256.
pub const RANDOM_LEN: usize = 43;
/// Characters of checksum: 62^6 > 2^32.
pub const CHECKSUM_LEN: usize = 6;
const PREFIX: &str = "wdn_";
/// Total length of a Warden secret: `wdn_` + 2-letter tag + `_` + random + checksum.
pub const TOKEN_LEN: usize = PREFIX.len() + 3 + RANDOM_LEN + CHECKSUM_LEN;

/// What a secret is for; its two-letter tag is part of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An NHI's API key.
    ApiKey,
    /// An OAuth client secret.
    ClientSecret,
    /// An operator's (human's) API token.
    Operator,
}

impl TokenKind {
    pub fn tag(self) -> &'static str {
        match self {
            TokenKind::ApiKey => "ak",
            TokenKind::ClientSecret => "cs",
            TokenKind::Operator => "op",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        match tag {
            "ak" => Some(TokenKind::ApiKey),
            "cs" => Some(TokenKind::ClientSecret),
            "op" => Some(TokenKind::Operator),
            _ => None,
        }
    }
}

/// Why a string is not a well-formed Warden secret. Never carries the string itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a warden secret: missing the `wdn_` prefix")]
    Prefix,
    #[error("not a warden secret: unknown type tag")]
    Tag,
    #[error("not a warden secret: wrong length")]
    Length,
    #[error("not a warden secret: invalid character")]
    Charset,
    #[error("not a warden secret: checksum mismatch")]
    Checksum,
}

/// A secret value: zeroized on drop, redacted in `Debug`, never `Display`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: String) -> Self {
        SecretString(value)
    }

    /// The secret itself. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first characters, safe to show: `wdn_ak_AbCd…`.
    pub fn hint(&self) -> String {
        hint_of(&self.0)
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// The non-secret prefix of a token, for display: the tag and 4 random characters.
pub fn hint_of(token: &str) -> String {
    let visible: String = token.chars().take(PREFIX.len() + 3 + 4).collect();
    format!("{visible}…")
}

/// Generates a fresh secret of the given kind.
pub fn generate(kind: TokenKind) -> SecretString {
    let mut rng = OsRng;
    let mut out = String::with_capacity(TOKEN_LEN);
    out.push_str(PREFIX);
    out.push_str(kind.tag());
    out.push('_');
    for _ in 0..RANDOM_LEN {
        let i = rng.gen_range(0..ALPHABET.len());
        out.push(char::from(ALPHABET[i]));
    }
    let crc = crc32fast::hash(out.as_bytes());
    out.push_str(&base62_fixed(crc));
    SecretString(out)
}

/// Checks the shape and checksum of a candidate secret and returns its kind. Does not say whether
/// the secret was ever issued: only the server's keyed-hash lookup can.
pub fn parse(candidate: &str) -> Result<TokenKind, TokenError> {
    let rest = candidate.strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
    if candidate.len() != TOKEN_LEN {
        return Err(TokenError::Length);
    }
    let (tag, rest) = rest.split_at_checked(2).ok_or(TokenError::Length)?;
    let kind = TokenKind::from_tag(tag).ok_or(TokenError::Tag)?;
    let body = rest.strip_prefix('_').ok_or(TokenError::Tag)?;
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenError::Charset);
    }
    let split = candidate.len() - CHECKSUM_LEN;
    let (payload, checksum) = candidate.split_at(split);
    if base62_fixed(crc32fast::hash(payload.as_bytes())) != checksum {
        return Err(TokenError::Checksum);
    }
    Ok(kind)
}

fn base62_fixed(mut n: u32) -> String {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_have_the_documented_shape() {
        for kind in [
            TokenKind::ApiKey,
            TokenKind::ClientSecret,
            TokenKind::Operator,
        ] {
            let t = generate(kind);
            assert_eq!(t.expose().len(), TOKEN_LEN);
            assert!(t.expose().starts_with(&format!("wdn_{}_", kind.tag())));
            assert_eq!(parse(t.expose()), Ok(kind));
        }
    }

    #[test]
    fn tokens_are_distinct() {
        let a = generate(TokenKind::ApiKey);
        let b = generate(TokenKind::ApiKey);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let t = generate(TokenKind::ApiKey);
        let s = t.expose();
        // Change one random character (position 10) to a different alphanumeric.
        let mut bytes = s.as_bytes().to_vec();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(parse(&typo), Err(TokenError::Checksum));
    }

    #[test]
    fn malformed_candidates_are_rejected_with_the_reason() {
        let t = generate(TokenKind::ApiKey);
        let s = t.expose();
        assert_eq!(parse("ghp_abc"), Err(TokenError::Prefix));
        assert_eq!(parse(&s[..s.len() - 1]), Err(TokenError::Length));
        assert_eq!(
            parse(&s.replacen("wdn_ak", "wdn_zz", 1)),
            Err(TokenError::Tag)
        );
        let mut bad = s.to_owned();
        bad.replace_range(12..13, "-");
        assert_eq!(parse(&bad), Err(TokenError::Charset));
        assert_eq!(parse(""), Err(TokenError::Prefix));
        assert_eq!(parse("wdn_"), Err(TokenError::Length));
        // Multi-byte input of the right byte length must not panic.
        let weird = format!("wdn_ak_{}", "é".repeat((TOKEN_LEN - 7) / 2));
        assert!(parse(&weird).is_err());
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let t = generate(TokenKind::ApiKey);
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&t.expose()[7..]));
        assert!(t.hint().ends_with('…'));
        assert!(!t.hint().contains(&t.expose()[15..]));
    }
}
