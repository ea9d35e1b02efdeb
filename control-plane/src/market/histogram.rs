//! Latency histograms with fixed buckets: merged across windows, stored as a JSON array of
//! counts, and read as percentiles; pure, no I/O.

/// Upper bounds of the finite buckets, in µs; a last bucket takes everything slower.
pub const BOUNDS_US: [u64; 15] =
    [250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000];
/// Number of buckets: the finite ones and the one above them.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Counts of calls per latency bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram([u64; BUCKETS]);

impl Histogram {
    /// Counts one call that took `latency_us`.
    pub fn record(&mut self, latency_us: u64) {
        let i = BOUNDS_US.partition_point(|&bound| bound < latency_us);
        self.0[i] = self.0[i].saturating_add(1);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }

    /// How many calls it counts.
    pub fn count(&self) -> u64 {
        self.0.iter().fold(0u64, |n, c| n.saturating_add(*c))
    }

    /// The `percent`-th percentile in ms, by nearest rank, reported as the upper bound of
    /// the bucket that holds that rank: an upper estimate, never below the true value except
    /// in the last bucket, which reports the largest finite bound (10 s). 0 when empty.
    pub fn percentile_ms(&self, percent: u8) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        // Nearest rank: the smallest r with r >= n * p / 100, at least 1.
        let rank = (u128::from(n) * u128::from(percent.min(100))).div_ceil(100).max(1);
        let mut seen: u128 = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += u128::from(*c);
            if seen >= rank {
                let bound = BOUNDS_US.get(i).or(BOUNDS_US.last()).copied().unwrap_or(0);
                return bound as f64 / 1000.0;
            }
        }
        0.0
    }

    /// The stored form: a JSON array of the counts.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0.to_vec()).unwrap_or_else(|_| "[]".into())
    }

    /// Reads the stored form; missing trailing buckets count 0, and extra ones (from a
    /// finer future layout) are folded into the last.
    pub fn from_json(s: &str) -> Option<Histogram> {
        let counts: Vec<u64> = serde_json::from_str(s).ok()?;
        let mut h = Histogram::default();
        for (i, c) in counts.into_iter().enumerate() {
            let i = i.min(BUCKETS - 1);
            h.0[i] = h.0[i].saturating_add(c);
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = Histogram::default();
        for us in [0, 250, 251, 1_000, 10_000_000, 10_000_001, u64::MAX] {
            h.record(us);
        }
        assert_eq!(h.0[0], 2);
        assert_eq!(h.0[1], 1);
        assert_eq!(h.0[2], 1);
        assert_eq!(h.0[14], 1);
        assert_eq!(h.0[15], 2);
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn percentiles_report_the_bucket_upper_bound_by_nearest_rank() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile_ms(50), 0.0);
        // 90 fast calls (≤ 1 ms) and 10 slow ones (≤ 100 ms).
        for _ in 0..90 {
            h.record(800);
        }
        for _ in 0..10 {
            h.record(70_000);
        }
        assert_eq!(h.percentile_ms(50), 1.0);
        assert_eq!(h.percentile_ms(90), 1.0);
        assert_eq!(h.percentile_ms(95), 100.0);
        assert_eq!(h.percentile_ms(100), 100.0);
        let mut one = Histogram::default();
        one.record(20_000_000);
        assert_eq!(one.percentile_ms(50), 10_000.0, "the open bucket reports the largest finite bound");
    }

    #[test]
    fn merging_adds_and_json_round_trips() {
        let mut a = Histogram::default();
        a.record(100);
        let mut b = Histogram::default();
        b.record(100);
        b.record(3_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let json = a.to_json();
        assert_eq!(json, "[2,0,0,0,1,0,0,0,0,0,0,0,0,0,0,0]");
        assert_eq!(Histogram::from_json(&json), Some(a));
        assert_eq!(Histogram::from_json("[1]").map(|h| h.count()), Some(1));
        assert_eq!(Histogram::from_json(&format!("[{}]", vec!["1"; 20].join(","))).map(|h| h.0[15]), Some(5));
        assert_eq!(Histogram::from_json("nope"), None);
    }
}
