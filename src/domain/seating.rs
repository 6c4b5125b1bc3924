//! Best-available seat choice: a pure function over one category's seat grid.
//!
//! ## Scoring
//!
//! Candidates are blocks of `n` adjacent available seats in one row. Each block is ranked by,
//! in order of importance:
//!
//! 1. **Orphans** — how many single available seats the block would strand between taken seats
//!    (or a wall). A block that strands none always beats one that strands one, so single seats
//!    nobody can sell are created only when there is no other choice.
//! 2. **Distance score** — `ROW_COST × (row index) + |2 × block centre − 2 × row centre|`, in
//!    half-seat units: one row further from the stage (row 1 is nearest) costs as much as being
//!    [`ROW_COST`]/2 seats further off centre. Ties go to the nearer row, then the left block.
//!
//! Splitting the party across rows happens only when the caller allows it and no row can seat
//! everyone; then the largest blocks that fit are taken, best first.

/// Cost of one row further back, in half-seat units of off-centre distance (4 = two seats).
pub const ROW_COST: usize = 4;

/// A rectangular seat grid, row-major, `true` where the seat is available.
#[derive(Debug, Clone, Copy)]
pub struct Grid<'a> {
    /// Availability per seat, `rows × cols` entries, row 0 nearest the stage.
    pub available: &'a [bool],
    /// Number of rows.
    pub rows: usize,
    /// Seats per row.
    pub cols: usize,
}

/// A scored candidate block: `(orphans, distance, row, start)` orders best-first.
type Rank = (usize, usize, usize, usize);

impl Grid<'_> {
    fn row(&self, r: usize) -> &[bool] {
        &self.available[r * self.cols..(r + 1) * self.cols]
    }

    /// The best block of `n` seats in one row, if any row has room.
    fn best_block(&self, n: usize) -> Option<Rank> {
        let mut best: Option<Rank> = None;
        for r in 0..self.rows {
            // Rows only get worse further back: stop once even a perfect block here cannot win.
            if best.is_some_and(|b| b.0 == 0 && ROW_COST * r > b.1) {
                break;
            }
            for (start, len) in runs(self.row(r)).filter(|&(_, len)| len >= n) {
                for s in start..=start + len - n {
                    let rank = self.rank(r, start, len, s, n);
                    if best.is_none_or(|b| rank < b) {
                        best = Some(rank);
                    }
                }
            }
        }
        best
    }

    fn rank(&self, r: usize, run_start: usize, run_len: usize, s: usize, n: usize) -> Rank {
        let left_gap = s - run_start;
        let right_gap = run_start + run_len - (s + n);
        let orphans = usize::from(left_gap == 1) + usize::from(right_gap == 1);
        let off_centre = (2 * s + n - 1).abs_diff(self.cols - 1);
        (orphans, ROW_COST * r + off_centre, r, s)
    }
}

/// Maximal runs of available seats in a row as `(start, len)`.
fn runs(row: &[bool]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < row.len() && !row[i] {
            i += 1;
        }
        if i >= row.len() {
            return None;
        }
        let start = i;
        while i < row.len() && row[i] {
            i += 1;
        }
        Some((start, i - start))
    })
}

/// Chooses `n` seats by the rules above and returns their grid indices (`row × cols + col`),
/// or `None` when they cannot be seated (not enough seats, or no row fits and splitting is off).
pub fn best_available(grid: Grid<'_>, n: usize, allow_split: bool) -> Option<Vec<usize>> {
    if n == 0 || grid.available.len() != grid.rows * grid.cols {
        return None;
    }
    if let Some((_, _, r, s)) = grid.best_block(n) {
        return Some((s..s + n).map(|c| r * grid.cols + c).collect());
    }
    if allow_split { split(grid, n) } else { None }
}

/// Takes the largest block that fits, best first, until the party is seated.
fn split(grid: Grid<'_>, n: usize) -> Option<Vec<usize>> {
    if grid.available.iter().filter(|a| **a).count() < n {
        return None;
    }
    let mut available = grid.available.to_vec();
    let mut chosen = Vec::with_capacity(n);
    while chosen.len() < n {
        let view = Grid {
            available: &available,
            ..grid
        };
        let want = n - chosen.len();
        let (size, (_, _, r, s)) = (1..=want)
            .rev()
            .find_map(|k| view.best_block(k).map(|b| (k, b)))?;
        for c in s..s + size {
            available[r * grid.cols + c] = false;
            chosen.push(r * grid.cols + c);
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses rows like `"..xx."` where `.` is available and `x` taken; first line is row 0.
    fn grid(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let cols = rows[0].len();
        let available = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '.'))
            .collect();
        (available, rows.len(), cols)
    }

    fn pick(rows: &[&str], n: usize, split: bool) -> Option<Vec<(usize, usize)>> {
        let (available, r, c) = grid(rows);
        best_available(
            Grid {
                available: &available,
                rows: r,
                cols: c,
            },
            n,
            split,
        )
        .map(|v| v.into_iter().map(|i| (i / c, i % c)).collect())
    }

    #[test]
    fn empty_hall_seats_a_pair_in_the_centre_of_the_front_row() {
        assert_eq!(
            pick(&["......", "......"], 2, false),
            Some(vec![(0, 2), (0, 3)])
        );
        assert_eq!(
            pick(&[".......", "......."], 3, false),
            Some(vec![(0, 2), (0, 3), (0, 4)])
        );
        // Centring 3 in 5 would strand a seat at each wall: keep the two spare seats together.
        assert_eq!(
            pick(&[".....", "....."], 3, false),
            Some(vec![(0, 0), (0, 1), (0, 2)])
        );
    }

    #[test]
    fn party_stays_together_in_a_further_row_rather_than_split() {
        let rows = ["x.x.x.x", "......."];
        assert_eq!(pick(&rows, 2, false), Some(vec![(1, 2), (1, 3)]));
    }

    #[test]
    fn off_centre_front_beats_centre_far_back_within_row_cost() {
        // Front row has room only 1 seat off centre; a perfect centre block is 3 rows back.
        let rows = ["xxxx..x", "xxxxxxx", "xxxxxxx", "......."];
        assert_eq!(pick(&rows, 2, false), Some(vec![(0, 4), (0, 5)]));
    }

    #[test]
    fn never_strands_a_single_seat_when_another_choice_exists() {
        // Row 0 has a run of 3: seating 2 there strands one. Row 1 has a run of 2 exactly.
        let rows = ["xx...xx", "x..xxxx"];
        assert_eq!(pick(&rows, 2, false), Some(vec![(1, 1), (1, 2)]));
    }

    #[test]
    fn strands_a_seat_only_when_nothing_else_fits() {
        let rows = ["xx...xx"];
        let got = pick(&rows, 2, false).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|&(r, c)| r == 0 && (2..5).contains(&c)));
    }

    #[test]
    fn splits_only_when_allowed() {
        let rows = ["x.x.x", ".x.x."];
        assert_eq!(pick(&rows, 3, false), None);
        let got = pick(&rows, 3, true).unwrap();
        assert_eq!(got.len(), 3);
        let (available, _, c) = grid(&rows);
        assert!(got.iter().all(|&(r, col)| available[r * c + col]));
    }

    #[test]
    fn not_enough_seats_is_none_even_with_split() {
        assert_eq!(pick(&["x.x", "xxx"], 2, true), None);
        assert_eq!(pick(&["..."], 0, true), None);
    }

    #[test]
    fn chosen_seats_are_always_available_adjacent_and_in_one_row() {
        use rand::{Rng, SeedableRng};
        let seed = 0xB0C5;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..500 {
            let (rows, cols) = (rng.gen_range(1..8), rng.gen_range(1..12));
            let available: Vec<bool> = (0..rows * cols).map(|_| rng.gen_bool(0.6)).collect();
            let n = rng.gen_range(1..5);
            let g = Grid {
                available: &available,
                rows,
                cols,
            };
            match best_available(g, n, false) {
                Some(seats) => {
                    assert_eq!(seats.len(), n, "seed {seed}");
                    assert!(seats.iter().all(|&i| available[i]), "seed {seed}");
                    assert!(
                        seats
                            .windows(2)
                            .all(|w| w[1] == w[0] + 1 && w[1] / cols == w[0] / cols),
                        "seed {seed}"
                    );
                }
                None => {
                    let fits = (0..rows)
                        .any(|r| runs(&available[r * cols..(r + 1) * cols]).any(|(_, l)| l >= n));
                    assert!(!fits, "a row had room but nothing was chosen (seed {seed})");
                }
            }
        }
    }
}
