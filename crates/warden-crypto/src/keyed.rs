//! Keyed hashes: the only form in which Warden stores a secret.

use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

/// Length of the server key, in bytes.
pub const SERVER_KEY_LEN: usize = 32;

/// The server's root key. Lives in the data dir (file mode 0600), never in the database. Zeroized on
/// drop; `Debug` shows nothing of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ServerKey([u8; SERVER_KEY_LEN]);

impl ServerKey {
    pub fn generate() -> Self {
        let mut key = [0u8; SERVER_KEY_LEN];
        OsRng.fill_bytes(&mut key);
        ServerKey(key)
    }

    /// From raw bytes; `None` unless exactly [`SERVER_KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key: [u8; SERVER_KEY_LEN] = bytes.try_into().ok()?;
        Some(ServerKey(key))
    }

    pub fn as_bytes(&self) -> &[u8; SERVER_KEY_LEN] {
        &self.0
    }

    /// A hasher for one purpose, keyed with `HMAC(root, label)`, so that a hash made for one
    /// purpose (say, API keys) is useless for another (say, audit checkpoints).
    pub fn hasher(&self, label: &str) -> KeyedHasher {
        let mut sub = mac(&self.0, label.as_bytes());
        let hasher = KeyedHasher::new(sub);
        sub.zeroize();
        hasher
    }
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey([redacted])")
    }
}

/// HMAC-SHA-256 under a purpose-specific subkey. Keeps the keyed (inner/outer pad) state so that
/// each hash costs only the message's compressions.
#[derive(Clone)]
pub struct KeyedHasher {
    key: [u8; 32],
    keyed: Option<HmacSha256>,
}

impl Zeroize for KeyedHasher {
    fn zeroize(&mut self) {
        self.key.zeroize();
        // The keyed state is derived from the key; drop it rather than leave it around.
        self.keyed = None;
    }
}

impl Drop for KeyedHasher {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl KeyedHasher {
    fn new(key: [u8; 32]) -> Self {
        let keyed = HmacSha256::new_from_slice(&key).ok();
        KeyedHasher { key, keyed }
    }

    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        match &self.keyed {
            Some(k) => {
                let mut m = k.clone();
                m.update(data);
                m.finalize().into_bytes().into()
            }
            None => mac(&self.key, data),
        }
    }

    /// Whether `tag` is the keyed hash of `data`, in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        ct_eq(&self.hash(data), tag)
    }
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher([redacted])")
    }
}

fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the fallback exists only
    // to avoid a panic path.
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_key_and_label() {
        let k1 = ServerKey::generate();
        let k2 = ServerKey::generate();
        let a = k1.hasher("api_key").hash(b"secret");
        assert_eq!(a, k1.hasher("api_key").hash(b"secret"));
        assert_ne!(a, k1.hasher("audit").hash(b"secret"));
        assert_ne!(a, k2.hasher("api_key").hash(b"secret"));
        assert!(k1.hasher("api_key").verify(b"secret", &a));
        assert!(!k1.hasher("api_key").verify(b"secreT", &a));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let tag = mac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn server_key_requires_exact_length_and_hides_in_debug() {
        assert!(ServerKey::from_bytes(&[1u8; 31]).is_none());
        let k = ServerKey::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "ServerKey([redacted])");
    }

    #[test]
    fn ct_eq_compares_length_and_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
