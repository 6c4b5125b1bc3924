//! Password hashing (argon2id) and ticket-buyer id-number protection (AES-256-GCM plus a keyed
//! HMAC-SHA256 fingerprint), all from well-kept RustCrypto crates.
//!
//! Id numbers are encrypted so a database dump does not expose them (DOMAIN.md); the fingerprint
//! lets the database enforce "one ticket buyer per person per user" without decrypting.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
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

/// Encrypts and fingerprints id numbers with keys derived from the configured 32-byte key.
#[derive(Clone)]
pub struct IdNumberCipher {
    cipher: Aes256Gcm,
    key: [u8; 32],
}

impl IdNumberCipher {
    /// A cipher for `key` (see `secrets.id_number_key`).
    pub fn new(key: [u8; 32]) -> Self {
        IdNumberCipher {
            cipher: Aes256Gcm::new(&key.into()),
            key,
        }
    }

    /// `nonce || ciphertext+tag`; a fresh random nonce each time.
    pub fn encrypt(&self, id_number: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encrypting a short in-memory buffer with a valid key cannot fail.
        let sealed = self
            .cipher
            .encrypt(&nonce, id_number.as_bytes())
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    /// Reverses [`encrypt`](Self::encrypt).
    pub fn decrypt(&self, sealed: &[u8]) -> Result<String, CryptoError> {
        if sealed.len() <= NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Decrypt)
    }

    /// Deterministic keyed fingerprint of an id number, for uniqueness checks.
    pub fn fingerprint(&self, id_number: &str) -> Vec<u8> {
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(b"boxoffice:id-number:");
        mac.update(id_number.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
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

    #[test]
    fn id_numbers_round_trip_and_are_not_stored_in_clear() {
        let cipher = IdNumberCipher::new([7; 32]);
        let sealed = cipher.encrypt("110101199003071234");
        assert!(!sealed.windows(4).any(|w| w == b"1234"), "no clear digits");
        assert_eq!(cipher.decrypt(&sealed).unwrap(), "110101199003071234");
        assert_ne!(
            sealed,
            cipher.encrypt("110101199003071234"),
            "fresh nonce each time"
        );
        let other = IdNumberCipher::new([8; 32]);
        assert!(other.decrypt(&sealed).is_err());
        assert_eq!(cipher.fingerprint("x"), cipher.fingerprint("x"));
        assert_ne!(cipher.fingerprint("x"), other.fingerprint("x"));
    }
}
