//! Warden's cryptography. Pure: no I/O, no clock.
//!
//! - [`token`]: the identifiable secret format (`wdn_<tag>_<random><crc32>`), recognisable by any
//!   scanner and checkable without a database.
//! - [`keyed`]: HMAC-SHA-256 keyed hashes under a server key, the only form in which secrets are
//!   stored; constant-time comparison.
//! - [`chain`]: the canonical encoding and hash of audit events.
//! - [`jwk`]: validation and RFC 7638 thumbprints of public JWKs.
//! - [`sealed`]: AES-256-GCM sealing of secrets kept at rest (signing keys).
//! - [`envelope`]: the vault's envelope encryption (a data key per value, wrapped by a master key).

pub mod chain;
pub mod envelope;
pub mod jwk;
pub mod keyed;
pub mod sealed;
pub mod token;

pub use keyed::{KeyedHasher, ServerKey, ct_eq};
pub use token::{SecretString, TokenError, TokenKind};

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Parses lowercase or uppercase hex; `None` if not hex or odd length.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// SHA-256 of `data`, base64url without padding (as JOSE writes digests).
pub fn sha256_b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data))
}

/// `len` characters drawn uniformly from `alphabet` with the OS generator (generated passwords
/// and role names). Zeroized on drop.
pub fn random_text(len: usize, alphabet: &[u8]) -> zeroize::Zeroizing<String> {
    use rand::Rng as _;
    let mut rng = rand::rngs::OsRng;
    let mut out = zeroize::Zeroizing::new(String::with_capacity(len));
    for _ in 0..len {
        let i = rng.gen_range(0..alphabet.len().max(1));
        out.push(char::from(alphabet.get(i).copied().unwrap_or(b'x')));
    }
    out
}

/// Letters and digits: generated passwords need no quoting in SQL or URLs.
pub const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Lowercase letters and digits: generated role names.
pub const LOWER_ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, 4096 iterations,
/// a random 16-byte salt): `ALTER ROLE … PASSWORD '<verifier>'` sets the password without the
/// password itself reaching the database server or its logs. Warden's generated passwords are
/// ASCII letters and digits, which SASLprep leaves unchanged.
pub fn scram_sha256_verifier(password: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    use rand::RngCore as _;
    use sha2::Digest as _;
    const ITERATIONS: u32 = 4096;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::MIN.saturating_add(ITERATIONS - 1),
        &salt,
        password.as_bytes(),
        salted.as_mut_slice(),
    );
    let hmac = |key: &[u8], msg: &[u8]| -> [u8; 32] {
        let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(msg);
        m.finalize().into_bytes().into()
    };
    let client_key = zeroize::Zeroizing::new(hmac(salted.as_slice(), b"Client Key"));
    let stored_key = sha2::Sha256::digest(client_key.as_slice());
    let server_key = hmac(salted.as_slice(), b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::hex(&bytes), "0001abff");
        assert_eq!(super::unhex("0001ABff"), Some(bytes.to_vec()));
        assert_eq!(super::unhex("0g"), None);
        assert_eq!(super::unhex("abc"), None);
    }
}
