//! Summaries of measured samples.

use serde::Serialize;
use std::time::Duration;

/// Nearest-rank percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// `None` without samples.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            millis(samples[index])
        };
        Some(Self {
            count: samples.len(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            max_ms: millis(samples[samples.len() - 1]),
        })
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = (1..=200).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(samples).unwrap();
        assert_eq!(p.count, 200);
        assert_eq!(p.p50_ms, 100.0);
        assert_eq!(p.p95_ms, 190.0);
        assert_eq!(p.p99_ms, 198.0);
        assert_eq!(p.max_ms, 200.0);
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_nothing() {
        let p = Percentiles::of(vec![Duration::from_micros(1500)]).unwrap();
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (1.5, 1.5, 1.5));
        assert_eq!(Percentiles::of(Vec::new()), None);
    }
}
