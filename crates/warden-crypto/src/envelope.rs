//! Envelope encryption for the vault.
//!
//! Every secret version gets a fresh 256-bit data key; the value is sealed with it (AES-256-GCM,
//! a random nonce, the record's identity as associated data), and the data key is *wrapped* with a
//! key-encryption key derived from a master key that never enters the database. Only the wrapped
//! data key and the ciphertext are stored, next to the master key's id, so that:
//! - the wrong master key is recognised by its id before anything is decrypted;
//! - moving to a new master key re-wraps 32-byte data keys, never the values ([`rewrap`]);
//! - a KMS can take the place of the local master key by implementing [`KeyWrapper`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::ServerKey;
use crate::sealed::{SealError, Sealer};

/// Length of a master key, in bytes.
pub const MASTER_KEY_LEN: usize = 32;
const KEK_LABEL: &str = "warden.vault.kek.v1";
const KEY_ID_LABEL: &str = "warden.vault.key-id.v1";
const WRAP_AAD: &[u8] = b"warden.vault.data-key.v1|";

/// A vault master key: 32 random bytes kept in a key file (mode 0600) or an environment variable.
/// `Debug` shows only its id.
pub struct MasterKey {
    key: ServerKey,
    id: String,
    kek: Sealer,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        Self::from_key(ServerKey::generate())
    }

    /// From exactly [`MASTER_KEY_LEN`] raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<MasterKey> {
        ServerKey::from_bytes(bytes).map(Self::from_key)
    }

    /// From the text form: standard base64 of the 32 bytes, surrounding whitespace ignored.
    pub fn from_text(text: &str) -> Option<MasterKey> {
        let bytes = Zeroizing::new(STANDARD.decode(text.trim()).ok()?);
        Self::from_bytes(&bytes)
    }

    /// The text form written to key files (base64 and a newline).
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}\n", STANDARD.encode(self.key.as_bytes())))
    }

    fn from_key(key: ServerKey) -> MasterKey {
        let digest = key.hasher(KEY_ID_LABEL).hash(b"id");
        let id = format!("mk-{}", crate::hex(&digest[..8]));
        let kek = Sealer::new(&key, KEK_LABEL);
        MasterKey { key, id, kek }
    }

    /// A public name of the key (`mk-` and 16 hex digits of a keyed hash): stored beside every
    /// wrapped data key, it tells which master key opens it without revealing anything of it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Wraps and unwraps data keys. The local implementation is [`VaultKeys`]; a KMS client can
/// implement the same contract (wrap under its current key and name it; unwrap by name).
pub trait KeyWrapper: Send + Sync {
    /// The id data keys are wrapped under now.
    fn current_id(&self) -> &str;
    /// `(key id, wrapped)`: `data_key` wrapped under the current key, bound to `aad`.
    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<(String, Vec<u8>), SealError>;
    /// The data key wrapped under the key named `key_id`, if that key is known and `aad` matches.
    fn unwrap(
        &self,
        key_id: &str,
        aad: &[u8],
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError>;
    /// Whether data wrapped under `key_id` can be opened.
    fn knows(&self, key_id: &str) -> bool;
}

/// The configured master keys: the current one wraps, every one unwraps (the previous ones stay
/// configured while `warden vault rewrap` moves data keys to the current one).
#[derive(Debug)]
pub struct VaultKeys {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl VaultKeys {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> VaultKeys {
        VaultKeys { current, previous }
    }

    /// Ids of every configured key, the current one first.
    pub fn ids(&self) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.id.clone())
            .collect()
    }

    fn find(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

fn wrap_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WRAP_AAD.len() + aad.len());
    out.extend_from_slice(WRAP_AAD);
    out.extend_from_slice(aad);
    out
}

impl KeyWrapper for VaultKeys {
    fn current_id(&self) -> &str {
        &self.current.id
    }

    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<(String, Vec<u8>), SealError> {
        let wrapped = self.current.kek.seal(&wrap_aad(aad), data_key)?;
        Ok((self.current.id.clone(), wrapped))
    }

    fn unwrap(
        &self,
        key_id: &str,
        aad: &[u8],
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.find(key_id)
            .ok_or(SealError::Open)?
            .kek
            .open(&wrap_aad(aad), wrapped)
    }

    fn knows(&self, key_id: &str) -> bool {
        self.find(key_id).is_some()
    }
}

/// A sealed value as stored. Holds no plaintext; its `Debug` shows sizes only.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Id of the master key the data key is wrapped under.
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
    /// `nonce || ciphertext || tag` under the data key.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Envelope {{ key_id: {}, {} bytes }}",
            self.key_id,
            self.ciphertext.len()
        )
    }
}

fn data_sealer(data_key: &[u8]) -> Result<Sealer, SealError> {
    Sealer::from_raw(data_key).ok_or(SealError::Open)
}

/// Seals `plaintext` under a fresh data key, wrapped by `keys`; both bound to `aad` (the record's
/// identity, so a ciphertext moved to another record does not open).
pub fn seal(keys: &dyn KeyWrapper, aad: &[u8], plaintext: &[u8]) -> Result<Envelope, SealError> {
    let mut data_key = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(data_key.as_mut_slice())
        .map_err(|_| SealError::Random)?;
    let ciphertext = data_sealer(data_key.as_slice())?.seal(aad, plaintext)?;
    let (key_id, wrapped_key) = keys.wrap(aad, data_key.as_slice())?;
    Ok(Envelope {
        key_id,
        wrapped_key,
        ciphertext,
    })
}

/// The plaintext (zeroized on drop), if `keys` knows the envelope's master key and nothing was
/// altered or moved.
pub fn open(
    keys: &dyn KeyWrapper,
    aad: &[u8],
    envelope: &Envelope,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let data_key = keys.unwrap(&envelope.key_id, aad, &envelope.wrapped_key)?;
    data_sealer(&data_key)?.open(aad, &envelope.ciphertext)
}

/// The same value with its data key wrapped under the current master key; the ciphertext is
/// untouched. The data key is checked against the ciphertext first, so a bad envelope is never
/// re-wrapped into a good-looking one.
pub fn rewrap(
    keys: &dyn KeyWrapper,
    aad: &[u8],
    envelope: &Envelope,
) -> Result<Envelope, SealError> {
    let data_key = keys.unwrap(&envelope.key_id, aad, &envelope.wrapped_key)?;
    data_sealer(&data_key)?.open(aad, &envelope.ciphertext)?;
    let (key_id, wrapped_key) = keys.wrap(aad, &data_key)?;
    Ok(Envelope {
        key_id,
        wrapped_key,
        ciphertext: envelope.ciphertext.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn values_open_only_with_their_master_key_and_record() {
        let keys = VaultKeys::new(MasterKey::generate(), vec![]);
        let env = seal(&keys, b"payments/stripe|1", b"sk_live_value").unwrap();
        assert_eq!(env.key_id, keys.current_id());
        assert!(!env.ciphertext.windows(7).any(|w| w == b"sk_live"));
        assert_eq!(
            open(&keys, b"payments/stripe|1", &env).unwrap().as_slice(),
            b"sk_live_value"
        );
        assert_eq!(
            open(&keys, b"payments/stripe|2", &env),
            Err(SealError::Open),
            "moved to another record"
        );
        let other = VaultKeys::new(MasterKey::generate(), vec![]);
        assert_eq!(
            open(&other, b"payments/stripe|1", &env),
            Err(SealError::Open)
        );
        assert!(!other.knows(&env.key_id));
        let mut tampered = env.clone();
        tampered.wrapped_key[20] ^= 1;
        assert_eq!(
            open(&keys, b"payments/stripe|1", &tampered),
            Err(SealError::Open)
        );
        let mut tampered = env.clone();
        let n = tampered.ciphertext.len() - 1;
        tampered.ciphertext[n] ^= 1;
        assert_eq!(
            open(&keys, b"payments/stripe|1", &tampered),
            Err(SealError::Open)
        );
        assert!(!format!("{env:?}").contains("sk_live"));
    }

    #[test]
    fn rewrap_moves_data_keys_to_the_new_master_key() {
        let old = MasterKey::generate();
        let old_text = old.to_text();
        let before = VaultKeys::new(old, vec![]);
        let env = seal(&before, b"a|1", b"value").unwrap();
        let new = MasterKey::generate();
        let new_id = new.id().to_owned();
        let both = VaultKeys::new(new, vec![MasterKey::from_text(&old_text).unwrap()]);
        assert_eq!(open(&both, b"a|1", &env).unwrap().as_slice(), b"value");
        let moved = rewrap(&both, b"a|1", &env).unwrap();
        assert_eq!(moved.key_id, new_id);
        assert_eq!(
            moved.ciphertext, env.ciphertext,
            "values are not re-encrypted"
        );
        // Once the old key is gone, only the re-wrapped envelope opens.
        let new_only = VaultKeys::new(
            MasterKey::from_bytes(both.current.key.as_bytes()).unwrap(),
            vec![],
        );
        assert_eq!(
            open(&new_only, b"a|1", &moved).unwrap().as_slice(),
            b"value"
        );
        assert_eq!(open(&new_only, b"a|1", &env), Err(SealError::Open));
        // A corrupted ciphertext is not re-wrapped.
        let mut bad = env.clone();
        bad.ciphertext[15] ^= 1;
        assert_eq!(rewrap(&both, b"a|1", &bad), Err(SealError::Open));
    }

    #[test]
    fn master_key_text_form_round_trips_and_ids_differ() {
        let k = MasterKey::generate();
        let again = MasterKey::from_text(&k.to_text()).unwrap();
        assert_eq!(k.id(), again.id());
        assert_ne!(k.id(), MasterKey::generate().id());
        assert!(MasterKey::from_text("not base64!").is_none());
        assert!(MasterKey::from_text("c2hvcnQ=").is_none(), "too short");
        assert_eq!(format!("{k:?}"), format!("MasterKey({})", k.id()));
    }
}
