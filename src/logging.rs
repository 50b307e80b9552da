//! Logs to stderr, as `weft serve` writes them, for programs built on the library.
//!
//! weft reports through [`tracing`]: a bind that fails, a drain that begins, a reactor stall,
//! a certificate that cannot be reloaded. Nothing shows until the program installs a
//! subscriber; [`init`] installs the one the command line uses.

use std::io::IsTerminal;

/// Logs weft's events, and the program's own `tracing` events, to stderr at the level the
/// `WEFT_LOG` environment variable names (`error`, `warn`, `info` (the default), `debug`,
/// `trace`; another value is warned about), in colour only when stderr is a terminal (not
/// in a file, a pipe or the journal). Returns false, and changes nothing, where the program
/// installed a subscriber already.
pub fn init() -> bool {
    let asked = std::env::var("WEFT_LOG").ok();
    let level = asked.as_deref().map(level);
    let installed = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level.flatten().unwrap_or(tracing::Level::INFO))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init()
        .is_ok();
    if installed && let (Some(asked), Some(None)) = (&asked, level) {
        tracing::warn!(
            "WEFT_LOG={asked:?} is not a level (error, warn, info, debug, trace): logging at info"
        );
    }
    installed
}

/// The level `name` names, in any case; `None` for anything else.
fn level(name: &str) -> Option<tracing::Level> {
    match name.to_ascii_lowercase().as_str() {
        "trace" => Some(tracing::Level::TRACE),
        "debug" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warn" => Some(tracing::Level::WARN),
        "error" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weft_log_names_the_level_in_any_case() {
        assert_eq!(level("debug"), Some(tracing::Level::DEBUG));
        assert_eq!(level("WARN"), Some(tracing::Level::WARN));
        assert_eq!(level("error"), Some(tracing::Level::ERROR));
        assert_eq!(level("trace"), Some(tracing::Level::TRACE));
        assert_eq!(level("Info"), Some(tracing::Level::INFO));
        assert_eq!(level("loud"), None);
    }
}
