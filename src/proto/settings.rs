//! How a setting is refused: [`ConfigError`], and the checks that the engine's, the
//! listeners' and the protocols' settings share. I/O-free.

use std::fmt;
use std::time::Duration;

/// A setting whose value would make a service that serves nothing, or that the kernel would
/// refuse on every connection: what [`EngineConfig::validate`](crate::EngineConfig::validate) (and
/// [`EngineBuilder::start`](crate::EngineBuilder::start)) refuses.
///
/// Its message names the setting by its field (`connection.idle_timeout`), says what the
/// value would do and what to give instead; [`with_name`](Self::with_name) renames the
/// setting, as a command line does with its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {value} {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting, by its field path (`accept.max_conns_per_shard`), or the name given by
    /// [`with_name`](Self::with_name).
    pub setting: std::borrow::Cow<'static, str>,
    /// Its value, as a command line writes it (`0`, `0s`).
    pub value: String,
    /// What the value would do, and what to give instead.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, value: impl fmt::Display, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    /// The same error, naming the setting `name` (a command-line flag, say).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.setting = std::borrow::Cow::Owned(name.into());
        self
    }
}

/// A duration as a command line writes it: `0s`, `1.5s`, `250ms`.
pub(crate) fn seconds(d: Duration) -> String {
    if d.is_zero() || d.subsec_nanos() == 0 || d >= Duration::from_secs(1) {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_secs_f64() * 1e3)
    }
}

/// Refuses a zero duration for `setting`: `effect` says what it would do, `example` what to
/// give instead (`10s`). For settings outside [`EngineConfig`](crate::EngineConfig) that share its wording (a
/// protocol's timeout, say).
///
/// # Errors
///
/// A [`ConfigError`] for a zero `d`.
pub fn require_positive(
    setting: &'static str,
    d: Duration,
    effect: &str,
    example: &str,
) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(
            setting,
            seconds(d),
            format!("{effect}: give a positive time, such as {example}"),
        ));
    }
    Ok(())
}
