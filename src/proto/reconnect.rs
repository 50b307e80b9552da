//! Reconnecting with exponential back-off and jitter (Twisted's `ReconnectingClientFactory`),
//! without I/O: the policy, the back-off state, and the jitter source. The connector's driver
//! owns the timer.

use std::time::Duration;

/// When a connector retries a failed attempt or a lost connection; set it in
/// [`ConnectOptions::reconnect`](crate::ConnectOptions::reconnect).
///
/// Retry `n` (from 1) waits `min(initial_delay × factorⁿ⁻¹, max_delay)`, moved by a normal
/// jitter whose standard deviation is `jitter` × that delay, then kept within
/// `0..=max_delay`. A successful connection starts the sequence again. A cancelled attempt
/// ([`Connector::stop_connecting`](crate::Connector::stop_connecting)), a connection lost to
/// the engine's shutdown, [`Connector::stop_trying`](crate::Connector::stop_trying) and
/// [`Connector::disconnect`](crate::Connector::disconnect) end the retries.
///
/// The defaults are Twisted's, with two differences: the first retry waits `initial_delay`
/// (Twisted waits `initial_delay × factor`, 2.7 s), and `max_delay` is a ceiling that jitter
/// does not cross.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay before the first retry. Default: 1 s.
    pub initial_delay: Duration,
    /// Growth of the delay from one retry to the next. Default: e (2.718…).
    pub factor: f64,
    /// Longest delay. Default: 3600 s.
    pub max_delay: Duration,
    /// Standard deviation of the jitter, as a fraction of the delay. Default: 0.1196…
    /// (Twisted's); 0 for none.
    pub jitter: f64,
    /// Retries after which the connector gives up; the count starts again after each
    /// successful connection. Default: none (retry forever).
    pub max_retries: Option<u32>,
}

impl ReconnectPolicy {
    /// Sets [`initial_delay`](Self::initial_delay).
    #[must_use]
    pub fn with_initial_delay(mut self, initial_delay: Duration) -> Self {
        self.initial_delay = initial_delay;
        self
    }

    /// Sets [`factor`](Self::factor).
    #[must_use]
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets [`max_delay`](Self::max_delay).
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`max_retries`](Self::max_retries).
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: Option<u32>) -> Self {
        self.max_retries = max_retries;
        self
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            factor: std::f64::consts::E,
            max_delay: Duration::from_secs(3600),
            jitter: 0.119_626_565_582,
            max_retries: None,
        }
    }
}

/// One connector's progress through its policy.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: ReconnectPolicy,
    /// Retries since the last success.
    retries: u32,
    /// The delay of the last retry before jitter, in seconds.
    base: f64,
}

impl Backoff {
    pub(crate) fn new(policy: ReconnectPolicy) -> Self {
        Self {
            policy,
            retries: 0,
            base: 0.0,
        }
    }

    /// The delay before the next retry, or `None` once `max_retries` are spent. `normal` is a
    /// sample of the standard normal distribution (see [`Jitter`]), so that the sequence is
    /// deterministic under test.
    pub(crate) fn next_delay(&mut self, normal: f64) -> Option<Duration> {
        let p = &self.policy;
        if p.max_retries.is_some_and(|max| self.retries >= max) {
            return None;
        }
        self.retries = self.retries.saturating_add(1);
        let max = p.max_delay.as_secs_f64();
        self.base = if self.retries == 1 {
            p.initial_delay.as_secs_f64()
        } else {
            self.base * p.factor
        }
        .min(max);
        let delay = (self.base + self.base * p.jitter * normal).clamp(0.0, max);
        // A NaN (from a NaN factor or jitter) falls back to the longest delay.
        Some(Duration::try_from_secs_f64(delay).unwrap_or(p.max_delay))
    }

    /// A connection succeeded: the next failure starts from `initial_delay` again.
    pub(crate) fn reset(&mut self) {
        self.retries = 0;
        self.base = 0.0;
    }
}

/// A small, seedable source of normal samples for the jitter (SplitMix64 and Box–Muller):
/// jitter needs no cryptographic quality, and the seed makes tests repeatable.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A sample of the standard normal distribution.
    pub(crate) fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Option<Duration>) -> f64 {
        d.expect("a delay").as_secs_f64()
    }

    #[test]
    fn grows_by_factor_up_to_the_ceiling() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_millis(500),
            jitter: 0.0,
            max_retries: None,
        };
        let mut b = Backoff::new(policy);
        let got: Vec<f64> = (0..6).map(|_| secs(b.next_delay(1.0))).collect();
        let want = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn twisted_defaults() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.initial_delay, Duration::from_secs(1));
        assert_eq!(p.max_delay, Duration::from_secs(3600));
        assert_eq!(p.factor, std::f64::consts::E);
        assert!((p.jitter - 0.119_626_565_582).abs() < 1e-12);
        assert_eq!(p.max_retries, None);
        let mut b = Backoff::new(p);
        assert!((secs(b.next_delay(0.0)) - 1.0).abs() < 1e-9);
        assert!((secs(b.next_delay(0.0)) - std::f64::consts::E).abs() < 1e-9);
    }

    #[test]
    fn jitter_moves_the_delay_within_bounds() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(4),
            jitter: 0.5,
            max_retries: None,
        };
        let mut b = Backoff::new(policy.clone());
        assert!((secs(b.next_delay(1.0)) - 1.5).abs() < 1e-9, "one sigma up");
        assert!(
            (secs(b.next_delay(-1.0)) - 1.0).abs() < 1e-9,
            "one sigma down from 2"
        );
        assert_eq!(secs(b.next_delay(10.0)), 4.0, "never above max_delay");
        assert_eq!(secs(b.next_delay(-10.0)), 0.0, "never negative");
        let mut nan = Backoff::new(ReconnectPolicy {
            factor: f64::NAN,
            ..policy
        });
        nan.next_delay(0.0);
        assert_eq!(nan.next_delay(0.0), Some(Duration::from_secs(4)));
    }

    #[test]
    fn gives_up_after_max_retries_and_reset_starts_again() {
        let mut b = Backoff::new(ReconnectPolicy {
            initial_delay: Duration::from_millis(10),
            factor: 3.0,
            max_retries: Some(2),
            jitter: 0.0,
            ..Default::default()
        });
        assert!(b.next_delay(0.0).is_some());
        assert!(b.next_delay(0.0).is_some());
        assert_eq!(b.next_delay(0.0), None);
        assert_eq!(b.next_delay(0.0), None);
        b.reset();
        assert_eq!(b.next_delay(0.0), Some(Duration::from_millis(10)));
        let none = Backoff::new(ReconnectPolicy {
            max_retries: Some(0),
            ..Default::default()
        })
        .next_delay(0.0);
        assert_eq!(none, None);
    }

    #[test]
    fn jitter_samples_are_standard_normal_and_seeded() {
        let mut j = Jitter::new(42);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| j.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert!(xs.iter().all(|x| x.is_finite()));
        let again: Vec<f64> = {
            let mut k = Jitter::new(42);
            (0..5).map(|_| k.normal()).collect()
        };
        assert_eq!(&xs[..5], &again[..]);
    }
}
