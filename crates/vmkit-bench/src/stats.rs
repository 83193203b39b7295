//! Statistics over repeated runs: median, min and max, and the per-exit cost from two runs.

use std::time::Duration;

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The middle sample (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples.
    pub count: usize,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none or one is not a number.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let middle = n / 2;
        let median = if n % 2 == 1 {
            *sorted.get(middle)?
        } else {
            (*sorted.get(middle - 1)? + *sorted.get(middle)?) / 2.0
        };
        Some(Self {
            median,
            min: *sorted.first()?,
            max: *sorted.last()?,
            count: n,
        })
    }

    /// The same summary with every figure multiplied by `factor` (unit changes).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            median: self.median * factor,
            min: self.min * factor,
            max: self.max * factor,
            count: self.count,
        }
    }
}

/// Cost of one exit in ns from a run with `small` exits taking `t_small` and one with
/// `large` exits taking `t_large`: `(t_large - t_small) / (large - small)`, which removes
/// what both runs share (process start, VM creation, teardown).
///
/// `None` when `large <= small`. The result may be negative when noise exceeds the
/// difference (too few exits); callers show it as it is.
pub fn per_exit_ns(small: u64, t_small: Duration, large: u64, t_large: Duration) -> Option<f64> {
    if large <= small {
        return None;
    }
    let dt = t_large.as_nanos() as f64 - t_small.as_nanos() as f64;
    Some(dt / (large - small) as f64)
}

/// Exits per second for `exits` exits that took `elapsed` beyond a baseline.
pub fn exits_per_second(exits: u64, elapsed_ns: f64) -> Option<f64> {
    (elapsed_ns > 0.0).then(|| exits as f64 * 1e9 / elapsed_ns)
}

/// `numerator / denominator`, `None` when the denominator is not positive.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn median_min_max_of_odd_and_even_counts() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.count), (3.0, 1.0, 5.0, 3));
        let s = Summary::of(&[4.0, 1.0, 3.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.count), (3.5, 1.0, 10.0, 4));
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.0, 7.0, 7.0));
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
        let scaled = Summary::of(&[1.0, 2.0, 3.0]).unwrap().scaled(10.0);
        assert_eq!((scaled.median, scaled.min, scaled.max), (20.0, 10.0, 30.0));
    }

    #[test]
    fn per_exit_cost_removes_the_shared_part() {
        let t = Duration::from_micros;
        // 20 ms start-up plus 10 us per exit.
        let small = t(20_000 + 10);
        let large = t(20_000 + 10 * 100_001);
        assert_eq!(per_exit_ns(1, small, 100_001, large), Some(10_000.0));
        assert_eq!(per_exit_ns(5, small, 5, large), None);
        assert_eq!(per_exit_ns(6, small, 5, large), None);
        assert_eq!(per_exit_ns(1, t(30), 2, t(20)), Some(-10_000.0));
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(exits_per_second(1000, 1e9), Some(1000.0));
        assert_eq!(exits_per_second(1000, 0.0), None);
        assert_eq!(exits_per_second(1000, -5.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn summary_is_ordered_and_made_of_the_samples(
            samples in proptest::collection::vec(-1e9f64..1e9, 1..40)
        ) {
            let s = Summary::of(&samples).unwrap();
            prop_assert!(s.min <= s.median && s.median <= s.max);
            prop_assert!(samples.contains(&s.min) && samples.contains(&s.max));
            prop_assert_eq!(s.count, samples.len());
            let below = samples.iter().filter(|&&x| x < s.median).count();
            let above = samples.iter().filter(|&&x| x > s.median).count();
            prop_assert!(below <= samples.len() / 2 && above <= samples.len() / 2);
        }
    }
}
