//! What one recorded value of a histogram means: weft records nanoseconds, other writers
//! (wrk2, memtier, many Java services) microseconds or milliseconds. An interval log does not
//! say, so its reader is told (`weft hist --unit`).

use std::fmt;
use std::str::FromStr;

/// The time one recorded value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    /// Nanoseconds: weft's own logs, HdrHistogram's log tools' assumption.
    #[default]
    Ns,
    /// Microseconds (wrk2, memtier_benchmark).
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

/// A `--unit` that is none of ns, us, ms and s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad unit {0:?}: give ns, us, ms or s (what one recorded value means)")]
pub struct BadUnit(String);

impl Unit {
    /// Nanoseconds per recorded value.
    pub fn ns(self) -> f64 {
        match self {
            Self::Ns => 1.0,
            Self::Us => 1e3,
            Self::Ms => 1e6,
            Self::S => 1e9,
        }
    }

    /// Its name, as `--unit` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ns => "ns",
            Self::Us => "us",
            Self::Ms => "ms",
            Self::S => "s",
        }
    }

    /// The unit a writer's `MaxValueDivisor` suggests: HdrHistogram's writers choose the
    /// divisor that prints the max column in milliseconds, so 1e6 for values in ns (weft's),
    /// 1000 for µs, 1 for ms; `None` for any other.
    pub fn suggested_by(divisor: f64) -> Option<Unit> {
        [(1e6, Unit::Ns), (1e3, Unit::Us), (1.0, Unit::Ms)]
            .into_iter()
            .find(|(d, _)| *d == divisor)
            .map(|(_, unit)| unit)
    }
}

impl FromStr for Unit {
    type Err = BadUnit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ns" => Ok(Self::Ns),
            "us" | "µs" => Ok(Self::Us),
            "ms" => Ok(Self::Ms),
            "s" => Ok(Self::S),
            other => Err(BadUnit(other.to_owned())),
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_scale() {
        for u in [Unit::Ns, Unit::Us, Unit::Ms, Unit::S] {
            assert_eq!(u.name().parse::<Unit>(), Ok(u));
        }
        assert_eq!("µs".parse::<Unit>(), Ok(Unit::Us));
        assert_eq!(Unit::Us.ns(), 1e3);
        assert_eq!(Unit::default(), Unit::Ns);
        assert!(
            "min"
                .parse::<Unit>()
                .unwrap_err()
                .to_string()
                .contains("ns, us, ms or s")
        );
        assert_eq!(Unit::suggested_by(1000.0), Some(Unit::Us));
        assert_eq!(Unit::suggested_by(1e6), Some(Unit::Ns));
        assert_eq!(Unit::suggested_by(7.0), None);
    }
}
