//! The chaos generator's random numbers: SplitMix64, written out here rather than
//! taken from `rand`. A seed must name the same scenario on every machine and
//! with every future build, so a failing seed replays exactly; `rand` documents
//! that `StdRng` and its range sampling may change between versions, while these
//! dozen lines (Steele, Lea and Flood's published constants) never do.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by widening multiplication (no modulo bias
    /// worth the name for the small ranges used here).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value to return");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_splitmix64() {
        // SplitMix64 from seed 1234567 (the reference implementation's output).
        let mut r = Rng::new(1234567);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(first, [6457827717110365317, 3203168211198807973, 9817491932198370423]);
    }

    #[test]
    fn ranges_stay_inside_and_reach_both_ends() {
        let mut r = Rng::new(7);
        let seen: Vec<u64> = (0..1000).map(|_| r.range(3, 6)).collect();
        assert!(seen.iter().all(|v| (3..=6).contains(v)));
        assert!(seen.contains(&3) && seen.contains(&6));
    }
}
