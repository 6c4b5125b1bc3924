//! Plain types and pure rules: no I/O, unit-tested.

pub mod identity;
pub mod inventory;
pub mod order_no;
pub mod seating;

/// Number of low bits of an order number that equal the buyer's user id bits (the "gene").
/// Orders and tickets are partitioned by it (`migrations/V1__initial.sql` creates 2^4 = 16
/// partitions), so "by order number" and "by user" both name one partition.
pub const GENE_BITS: u32 = 4;

/// The partition gene of a user id or order number: its lowest [`GENE_BITS`] bits.
pub fn gene(id: i64) -> i16 {
    (id & ((1 << GENE_BITS) - 1)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gene_is_the_low_bits() {
        assert_eq!(gene(0), 0);
        assert_eq!(gene(17), 1);
        assert_eq!(gene(15), 15);
        assert_eq!(gene(i64::MAX), 15);
    }
}
