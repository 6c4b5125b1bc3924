//! Password hashing (argon2id) and ticket-buyer id-number protection (AES-256-GCM plus a keyed
//! HMAC-SHA256 person hash), all from well-kept RustCrypto crates.
//!
//! Id numbers are encrypted so a database dump does not expose them (DOMAIN.md); the person hash
//! lets the database enforce "one live ticket per person per program" and "one ticket buyer per
//! person per account" without decrypting. The two use separate keys derived with HKDF from
//! the one configured secret, so the hash key cannot open a ciphertext nor the reverse, and a
//! ciphertext is bound to its row (AES-GCM associated data), so one copied into another row in
//! the database does not open there.

use crate::domain::identity::canonical_id_number;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// AES-GCM nonce length in bytes; the nonce is stored in front of the ciphertext.
const NONCE_LEN: usize = 12;

/// Why a secret could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Ciphertext was tampered with, truncated, or made with another key.
    #[error("ciphertext cannot be decrypted with the configured key")]
    Decrypt,
    /// Hashing failed (argon2 parameters or RNG).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Bounds the argon2 work of the process. Each hash or check holds about 19 MiB and a core for
/// tens of milliseconds: at most `concurrent` run at once (one per core by default), and at
/// most [`WAITING_PER_SLOT`] per slot wait for their turn — a short burst of sign-ins is served,
/// a flood beyond that is refused at once (the caller answers 503) instead of queueing blocking
/// work and memory without bound.
#[derive(Clone)]
pub struct PasswordWork {
    running: std::sync::Arc<tokio::sync::Semaphore>,
    admitted: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Requests that may wait per running slot (a few hashes' time, ~0.1 s each).
pub const WAITING_PER_SLOT: usize = 4;

impl PasswordWork {
    /// At most `concurrent` hashes at once; 0 means one per core.
    pub fn new(concurrent: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = if concurrent == 0 { cores } else { concurrent };
        PasswordWork {
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(n)),
            admitted: std::sync::Arc::new(tokio::sync::Semaphore::new(n * (1 + WAITING_PER_SLOT))),
        }
    }

    /// Runs `work` on the blocking pool once a slot is free; `None` at once when as many
    /// requests already run or wait as the bound admits (or if the blocking task died).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _admitted = self.admitted.clone().try_acquire_owned().ok()?;
        let running = self.running.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _held = running;
            work()
        })
        .await
        .ok()
    }
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::Hash(e.to_string()))
}

/// True when `password` matches the PHC string `hash`; a malformed hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Which scheme sealed and hashed a stored id number (`ticket_buyers.id_key_version`).
///
/// Version 0 used the configured key itself for AES-GCM without associated data and as the HMAC
/// key of the hash (over the number as given); version 1 derives one key per purpose with HKDF
/// and binds each ciphertext to its row. Rows of version 0 are re-sealed at startup
/// (`store::ticket_buyers::rekey_legacy`); until then they still open.
pub mod key_version {
    /// The configured key used directly (before key separation and row binding).
    pub const LEGACY: i16 = 0;
    /// HKDF-derived keys, ciphertexts bound to their row, hash over the normalised number.
    pub const CURRENT: i16 = 1;
}

/// HKDF `info` of the AES-256-GCM key that seals id numbers.
const SEALING_INFO: &[u8] = b"boxoffice id-number sealing v1";
/// HKDF `info` of the HMAC key of the person hash: a different label, so the two keys are
/// independent and neither reveals the other.
const PERSON_HASH_INFO: &[u8] = b"boxoffice id-number person hash v1";
/// HKDF salt: fixed, as the input is already a uniformly random 32-byte key (RFC 5869 §3.1).
const HKDF_SALT: &[u8] = b"boxoffice key derivation";

/// The row a sealed id number belongs to, all known before its INSERT (the id comes from the
/// sequence first). A ciphertext copied into another row — another account's, another
/// document type's, another ticket buyer's — does not open there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowBinding<'a> {
    /// `ticket_buyers.id`.
    pub ticket_buyer_id: i64,
    /// The owning account.
    pub user_id: i64,
    /// The document type.
    pub id_type: &'a str,
}

impl RowBinding<'_> {
    /// The AES-GCM associated data: a label, then fixed-width ids, then the type (last, so no
    /// two bindings encode alike).
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"boxoffice:ticket-buyer:v1:".to_vec();
        aad.extend_from_slice(&self.ticket_buyer_id.to_be_bytes());
        aad.extend_from_slice(&self.user_id.to_be_bytes());
        aad.extend_from_slice(self.id_type.as_bytes());
        aad
    }
}

/// Seals id numbers and computes the person hash, each with its own key derived from the
/// configured secret (`secrets.id_number_key`); also opens rows sealed by the legacy scheme.
#[derive(Clone)]
pub struct IdNumberCipher {
    sealing: Aes256Gcm,
    person_hash: Hmac<Sha256>,
    legacy: Aes256Gcm,
}

impl IdNumberCipher {
    /// A cipher for `secret` (see `secrets.id_number_key`).
    pub fn new(secret: [u8; 32]) -> Self {
        IdNumberCipher {
            sealing: Aes256Gcm::new(&derive::<32>(&secret, SEALING_INFO).into()),
            // A key of HMAC-SHA256's block size: `new` takes it as is and cannot fail.
            person_hash: <Hmac<Sha256> as KeyInit>::new(
                &derive::<64>(&secret, PERSON_HASH_INFO).into(),
            ),
            legacy: Aes256Gcm::new(&secret.into()),
        }
    }

    /// `nonce || ciphertext+tag` under the current scheme, bound to `row`; a fresh random
    /// nonce each time.
    pub fn seal(&self, id_number: &str, row: RowBinding<'_>) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: id_number.as_bytes(),
            aad: &row.associated_data(),
        };
        // Encrypting a short in-memory buffer with a valid key cannot fail.
        let sealed = self.sealing.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Reverses [`seal`](Self::seal) for a row of `version` (see [`key_version`]); fails for a
    /// ciphertext sealed for another row, tampered with, or under another key.
    pub fn open(
        &self,
        sealed: &[u8],
        row: RowBinding<'_>,
        version: i16,
    ) -> Result<String, CryptoError> {
        match version {
            key_version::CURRENT => open_with(&self.sealing, sealed, &row.associated_data()),
            key_version::LEGACY => open_with(&self.legacy, sealed, &[]),
            _ => Err(CryptoError::Decrypt),
        }
    }

    /// Deterministic keyed hash of an id number, naming a person together with the id type:
    /// the same for every spelling [`canonical_id_number`] folds together, and computed with a
    /// key of its own, so the database can hold "one live ticket per person per program"
    /// without ever seeing the number.
    pub fn person_hash(&self, id_number: &str) -> Vec<u8> {
        let mut mac = self.person_hash.clone();
        mac.update(b"boxoffice:person:v1:");
        mac.update(canonical_id_number(id_number).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// `N` bytes of HKDF-SHA256 output for `info`.
fn derive<const N: usize>(secret: &[u8; 32], info: &[u8]) -> [u8; N] {
    let mut key = [0u8; N];
    // N is at most 64, far below HKDF-SHA256's 8160-byte limit, so expansion cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret).expand(info, &mut key);
    key
}

fn open_with(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<String, CryptoError> {
    if sealed.len() <= NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, msg) = sealed.split_at(NONCE_LEN);
    let plain = cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .map_err(|_| CryptoError::Decrypt)?;
    String::from_utf8(plain).map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    const SECRET: [u8; 32] = [7; 32];

    fn row(ticket_buyer_id: i64, user_id: i64, id_type: &str) -> RowBinding<'_> {
        RowBinding {
            ticket_buyer_id,
            user_id,
            id_type,
        }
    }

    /// A ciphertext as the legacy scheme made it: the configured key itself, no associated data.
    fn legacy_seal(secret: [u8; 32], id_number: &str) -> Vec<u8> {
        let cipher = Aes256Gcm::new(&secret.into());
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(cipher.encrypt(&nonce, id_number.as_bytes()).unwrap());
        out
    }

    fn hmac_with(key: &[u8], id_number: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(b"boxoffice:person:v1:");
        mac.update(id_number.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn id_numbers_round_trip_and_are_not_stored_in_clear() {
        let cipher = IdNumberCipher::new(SECRET);
        let at = row(5, 9, "id_card");
        let sealed = cipher.seal("110101199003071234", at);
        assert!(!sealed.windows(4).any(|w| w == b"1234"), "no clear digits");
        let opened = cipher.open(&sealed, at, key_version::CURRENT).unwrap();
        assert_eq!(opened, "110101199003071234");
        assert_ne!(
            sealed,
            cipher.seal("110101199003071234", at),
            "fresh nonce each time"
        );
        let other = IdNumberCipher::new([8; 32]);
        assert!(other.open(&sealed, at, key_version::CURRENT).is_err());
        assert_eq!(cipher.person_hash("x"), cipher.person_hash("x"));
        assert_ne!(cipher.person_hash("x"), other.person_hash("x"));
    }

    #[test]
    fn the_hash_key_is_neither_the_sealing_key_nor_the_configured_one() {
        let cipher = IdNumberCipher::new(SECRET);
        let sealing_key: [u8; 32] = derive(&SECRET, SEALING_INFO);
        let hash_key: [u8; 64] = derive(&SECRET, PERSON_HASH_INFO);
        assert_ne!(
            sealing_key[..],
            hash_key[..32],
            "distinct labels, distinct keys"
        );
        let hash = cipher.person_hash("E12345678");
        assert_eq!(
            hash,
            hmac_with(&hash_key, "E12345678"),
            "the hash uses its own key"
        );
        assert_ne!(hash, hmac_with(&sealing_key, "E12345678"));
        assert_ne!(hash, hmac_with(&SECRET, "E12345678"), "nor the legacy one");
        // And the sealing key is not the configured secret: a legacy-style ciphertext made
        // with the secret does not open as a current one.
        let legacy = legacy_seal(SECRET, "E12345678");
        let at = row(1, 1, "passport");
        assert!(cipher.open(&legacy, at, key_version::CURRENT).is_err());
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let cipher = IdNumberCipher::new(SECRET);
        let home = row(5, 9, "passport");
        let sealed = cipher.seal("E12345678", home);
        assert!(cipher.open(&sealed, home, key_version::CURRENT).is_ok());
        for elsewhere in [
            row(6, 9, "passport"),
            row(5, 10, "passport"),
            row(5, 9, "id_card"),
        ] {
            assert!(
                cipher
                    .open(&sealed, elsewhere, key_version::CURRENT)
                    .is_err(),
                "{elsewhere:?}"
            );
        }
    }

    #[test]
    fn legacy_rows_still_open_and_only_as_legacy() {
        let cipher = IdNumberCipher::new(SECRET);
        let legacy = legacy_seal(SECRET, "E12345678");
        let at = row(5, 9, "passport");
        let opened = cipher.open(&legacy, at, key_version::LEGACY).unwrap();
        assert_eq!(opened, "E12345678");
        let current = cipher.seal("E12345678", at);
        assert!(cipher.open(&current, at, key_version::LEGACY).is_err());
        assert!(
            cipher.open(&current, at, 7).is_err(),
            "unknown versions never open"
        );
        assert!(
            cipher
                .open(&current[..NONCE_LEN], at, key_version::CURRENT)
                .is_err()
        );
    }

    #[test]
    fn the_person_hash_folds_spacing_and_case() {
        let cipher = IdNumberCipher::new(SECRET);
        let one = cipher.person_hash("A1234567");
        assert_eq!(one, cipher.person_hash(" a1234567"));
        assert_eq!(one, cipher.person_hash("a123 4567\t"));
        assert_ne!(one, cipher.person_hash("A1234568"));
        assert_eq!(
            canonical_id_number(" 11010119900307123x "),
            "11010119900307123X"
        );
    }
}
