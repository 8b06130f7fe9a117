//! The retry policy of stage jobs: exponential backoff with jitter, capped. Pure.
//!
//! apalis-postgres re-fetches a failed job as soon as its `run_at` has passed and never moves
//! `run_at` itself, so the delay computed here is written into `run_at` by the pipeline.

use std::time::Duration;

/// How retries of one stage are spaced and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The delay before the second attempt (before jitter).
    pub base: Duration,
    /// No delay exceeds this.
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt after `attempts_done` failed ones: base × 2^(n-1),
    /// capped, times a jitter factor in [0.5, 1.5) drawn from `jitter` (a value in [0, 1)).
    pub fn backoff(&self, attempts_done: u32, jitter: f64) -> Duration {
        let exp = attempts_done.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let factor = 0.5 + jitter.clamp(0.0, 0.999_999);
        raw.mul_f64(factor).min(self.max)
    }

    /// Whether another attempt is allowed after `attempts_done`.
    pub fn allows_another(&self, attempts_done: u32) -> bool {
        attempts_done < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        // jitter 0.5 gives factor 1.0
        assert_eq!(p.backoff(1, 0.5), Duration::from_secs(2));
        assert_eq!(p.backoff(2, 0.5), Duration::from_secs(4));
        assert_eq!(p.backoff(3, 0.5), Duration::from_secs(8));
        assert_eq!(p.backoff(20, 0.5), Duration::from_secs(60));
    }

    #[test]
    fn jitter_spreads_between_half_and_one_and_a_half() {
        let p = policy();
        assert_eq!(p.backoff(2, 0.0), Duration::from_secs(2));
        assert!(p.backoff(2, 0.99) > Duration::from_millis(5900));
        assert!(p.backoff(2, 0.99) < Duration::from_secs(6));
    }

    #[test]
    fn attempts_are_bounded() {
        let p = policy();
        assert!(p.allows_another(4));
        assert!(!p.allows_another(5));
    }
}
