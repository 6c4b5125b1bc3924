//! The registration surge challenge: a proof-of-work puzzle instead of a question a bot can
//! read.
//!
//! A challenge is a random seed and a difficulty `d`; the answer is a decimal nonce such that
//! `SHA-256(seed ":" nonce)` starts with `d` zero bits. Finding one costs about `2^d` hashes
//! (the buyer's page does it in a fraction of a second at the default 16 bits; a bot
//! registering thousands of accounts pays that for every one of them), checking one costs a
//! single hash — microseconds, so verifying cannot itself be used to load the server.

use sha2::{Digest, Sha256};

/// The puzzle's name in the API, so clients can tell the scheme they must solve.
pub const ALGORITHM: &str = "sha256-leading-zero-bits";
/// Longest nonce accepted: `u64::MAX` has 20 digits; longer strings are never a real answer.
const MAX_NONCE_DIGITS: usize = 20;
/// Most difficulty a challenge may have: past it a real buyer's browser would take too long.
pub const MAX_DIFFICULTY: u8 = 28;

/// Whether `nonce` solves the puzzle (`seed`, `difficulty`).
pub fn solves(seed: &str, difficulty: u8, nonce: &str) -> bool {
    let digits_only = !nonce.is_empty() && nonce.bytes().all(|b| b.is_ascii_digit());
    digits_only
        && nonce.len() <= MAX_NONCE_DIGITS
        && leading_zero_bits(&digest(seed, nonce)) >= u32::from(difficulty)
}

/// The smallest nonce that solves the puzzle (what the page does; tests and benchmarks use it).
pub fn solve(seed: &str, difficulty: u8) -> u64 {
    (0u64..)
        .find(|n| leading_zero_bits(&digest(seed, &n.to_string())) >= u32::from(difficulty))
        .unwrap_or(u64::MAX)
}

fn digest(seed: &str, nonce: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(seed.as_bytes());
    hash.update(b":");
    hash.update(nonce.as_bytes());
    hash.finalize().into()
}

fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_found_nonce_solves_and_no_smaller_one_does() {
        let nonce = solve("c0ffee", 12);
        assert!(solves("c0ffee", 12, &nonce.to_string()));
        // Below the smallest solution nothing solves it.
        assert!((0..nonce).all(|n| !solves("c0ffee", 12, &n.to_string())));
    }

    #[test]
    fn answers_that_are_not_plain_numbers_are_refused_without_hashing_long_input() {
        assert!(!solves("s", 0, ""));
        assert!(!solves("s", 0, "-1"));
        assert!(!solves("s", 0, "1e3"));
        assert!(!solves("s", 0, &"9".repeat(21)));
        assert!(solves("s", 0, "7"), "difficulty 0 takes any number");
    }

    #[test]
    fn leading_zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0, 0, 0b0001_0000]), 19);
        assert_eq!(leading_zero_bits(&[0b1000_0000]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }
}
