//! Logs to stderr, as `weft serve` writes them, for programs built on the library.
//!
//! weft reports through [`tracing`]: a bind that fails, a drain that begins, a reactor stall,
//! a certificate that cannot be reloaded. Nothing shows until the program installs a
//! subscriber; [`init`] installs the one the command line uses.

/// Logs weft's events, and the program's own `tracing` events, to stderr at the level the
/// `WEFT_LOG` environment variable names (`error`, `warn`, `info` (the default), `debug`,
/// `trace`). Returns false, and changes nothing, where the program installed a subscriber
/// already.
pub fn init() -> bool {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level(std::env::var("WEFT_LOG").ok().as_deref()))
        .with_target(false)
        .try_init()
        .is_ok()
}

/// The level `WEFT_LOG` names; `info` for anything else.
fn level(name: Option<&str>) -> tracing::Level {
    match name.map(str::to_ascii_lowercase).as_deref() {
        Some("trace") => tracing::Level::TRACE,
        Some("debug") => tracing::Level::DEBUG,
        Some("warn") => tracing::Level::WARN,
        Some("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weft_log_names_the_level_and_anything_else_is_info() {
        assert_eq!(level(Some("debug")), tracing::Level::DEBUG);
        assert_eq!(level(Some("WARN")), tracing::Level::WARN);
        assert_eq!(level(Some("error")), tracing::Level::ERROR);
        assert_eq!(level(Some("trace")), tracing::Level::TRACE);
        assert_eq!(level(Some("loud")), tracing::Level::INFO);
        assert_eq!(level(None), tracing::Level::INFO);
    }
}
