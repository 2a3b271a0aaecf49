//! Authenticated encryption of small secrets at rest (signing keys today, vault entries later):
//! AES-256-GCM under a key derived from the server key for one purpose, a fresh random nonce per
//! seal, and associated data binding the ciphertext to the record it belongs to.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::ServerKey;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed value is malformed or was not sealed with this key and record")]
    Open,
    #[error("the system random generator failed")]
    Random,
}

/// Seals and opens values for one purpose. `Debug` shows nothing of the key.
pub struct Sealer(LessSafeKey);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// The sealer for `purpose`, keyed with `HMAC(server key, purpose)`.
    pub fn new(key: &ServerKey, purpose: &str) -> Sealer {
        let sub = Zeroizing::new(key.hasher(purpose).hash(b"aes-256-gcm key"));
        // A 32-byte key is always accepted by AES-256-GCM.
        let unbound = UnboundKey::new(&AES_256_GCM, sub.as_slice())
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes 32-byte keys"));
        Sealer(LessSafeKey::new(unbound))
    }

    /// A sealer keyed directly with 32 raw bytes (a vault data key); `None` for another length.
    pub fn from_raw(key: &[u8]) -> Option<Sealer> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).ok()?;
        (key.len() == 32).then(|| Sealer(LessSafeKey::new(unbound)))
    }

    /// `nonce || ciphertext || tag`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Open)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plaintext (zeroized on drop), if `sealed` was made by this sealer for `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Open)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn seals_open_only_with_the_same_key_purpose_and_record() {
        let key = ServerKey::generate();
        let s = Sealer::new(&key, "signing keys");
        let sealed = s.seal(b"kid-1", b"secret bytes").unwrap();
        assert_eq!(
            s.open(b"kid-1", &sealed).unwrap().as_slice(),
            b"secret bytes"
        );
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "ciphertext only"
        );
        assert_ne!(
            sealed,
            s.seal(b"kid-1", b"secret bytes").unwrap(),
            "fresh nonce"
        );
        assert_eq!(
            s.open(b"kid-2", &sealed),
            Err(SealError::Open),
            "other record"
        );
        let other_purpose = Sealer::new(&key, "vault");
        assert_eq!(other_purpose.open(b"kid-1", &sealed), Err(SealError::Open));
        let other_key = Sealer::new(&ServerKey::generate(), "signing keys");
        assert_eq!(other_key.open(b"kid-1", &sealed), Err(SealError::Open));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(s.open(b"kid-1", &flipped), Err(SealError::Open), "tampered");
        assert_eq!(
            s.open(b"kid-1", &sealed[..10]),
            Err(SealError::Open),
            "truncated"
        );
    }
}
