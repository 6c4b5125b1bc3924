//! Order numbers (ARCHITECTURE.md, "Order numbers and sharding"): snowflake-style 63-bit ids
//! whose lowest [`GENE_BITS`] bits are the buyer's gene, so `order_no & 15 == user_id & 15` and
//! both "by order number" and "by user" name one partition.
//!
//! Layout, high to low: 41 bits of milliseconds since 2026-01-01 UTC (about 69 years), 6 bits of
//! worker id (64 processes), 12 bits of sequence (4,096 per millisecond per worker), 4 bits of
//! gene. Numbers from one generator strictly increase.

use super::{GENE_BITS, gene};
use std::sync::Mutex;

const SEQ_BITS: u32 = 12;
const WORKER_BITS: u32 = 6;
const TIME_SHIFT: u32 = GENE_BITS + SEQ_BITS + WORKER_BITS;
/// 2026-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: i64 = 1_767_225_600_000;

/// Hands out order numbers for one process (`worker` distinguishes processes).
#[derive(Debug)]
pub struct OrderNoGenerator {
    worker: i64,
    // A std mutex: held for a few arithmetic operations, never across an await.
    state: Mutex<(i64, i64)>,
}

impl OrderNoGenerator {
    /// A generator for worker `worker` (0..64; higher bits are dropped).
    pub fn new(worker: u16) -> Self {
        OrderNoGenerator {
            worker: i64::from(worker) & ((1 << WORKER_BITS) - 1),
            state: Mutex::new((0, 0)),
        }
    }

    /// The next number for `user_id`, at wall time `now_ms` (Unix milliseconds). A clock that
    /// steps back is treated as standing still, so numbers never repeat or decrease.
    pub fn next(&self, user_id: i64, now_ms: i64) -> i64 {
        let (ms, seq) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (last_ms, last_seq) = *state;
            let mut ms = (now_ms - EPOCH_MS).max(last_ms);
            let mut seq = if ms == last_ms { last_seq + 1 } else { 0 };
            if seq >= 1 << SEQ_BITS {
                // 4,096 in one millisecond: borrow the next millisecond rather than wait.
                ms += 1;
                seq = 0;
            }
            *state = (ms, seq);
            (ms, seq)
        };
        (ms << TIME_SHIFT)
            | (self.worker << (GENE_BITS + SEQ_BITS))
            | (seq << GENE_BITS)
            | i64::from(gene(user_id))
    }
}

/// When an order number was issued (Unix milliseconds).
pub fn issued_at_ms(order_no: i64) -> i64 {
    (order_no >> TIME_SHIFT) + EPOCH_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_795_000_000_000;

    #[test]
    fn numbers_carry_the_gene_and_the_time() {
        let g = OrderNoGenerator::new(5);
        for user in [1i64, 16, 17, 1_000_003] {
            let n = g.next(user, NOW);
            assert!(n > 0);
            assert_eq!(gene(n), gene(user));
            assert_eq!(issued_at_ms(n), NOW);
        }
    }

    #[test]
    fn a_burst_in_one_millisecond_stays_unique_and_increasing() {
        let g = OrderNoGenerator::new(1);
        let numbers: Vec<i64> = (0..10_000).map(|i| g.next(i, NOW)).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_clock_stepping_back_never_repeats_a_number() {
        let g = OrderNoGenerator::new(1);
        let a = g.next(3, NOW);
        let b = g.next(3, NOW - 5_000);
        assert!(b > a);
    }

    #[test]
    fn workers_never_collide() {
        let (a, b) = (OrderNoGenerator::new(1), OrderNoGenerator::new(2));
        assert_ne!(a.next(7, NOW), b.next(7, NOW));
    }

    proptest! {
        #[test]
        fn gene_always_matches_the_user(user in 1i64..i64::MAX / 2, offset in 0i64..1_000_000_000_000) {
            let n = OrderNoGenerator::new(0).next(user, EPOCH_MS + offset);
            prop_assert!(n > 0);
            prop_assert_eq!(gene(n), gene(user));
        }
    }
}
