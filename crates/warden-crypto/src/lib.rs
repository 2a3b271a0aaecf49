//! Warden's cryptography. Pure: no I/O, no clock.
//!
//! - [`token`]: the identifiable secret format (`wdn_<tag>_<random><crc32>`), recognisable by any
//!   scanner and checkable without a database.
//! - [`keyed`]: HMAC-SHA-256 keyed hashes under a server key, the only form in which secrets are
//!   stored; constant-time comparison.
//! - [`chain`]: the canonical encoding and hash of audit events.
//! - [`jwk`]: validation and RFC 7638 thumbprints of public JWKs.
//! - [`sealed`]: AES-256-GCM sealing of secrets kept at rest (signing keys).

pub mod chain;
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
