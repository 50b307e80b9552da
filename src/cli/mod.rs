//! Command-line parsing and dispatch. Every user error is one line and an exit status:
//! 2 for bad arguments, 1 for a failure at run time; never a panic backtrace.

mod demo;
mod hist;
mod load;
mod serve;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Exit status for bad arguments.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit status for a failure at run time.
pub(crate) const EXIT_FAILURE: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "A thread-per-core, sharded TCP server engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a reference protocol on every selected core.
    Serve(Box<serve::ServeArgs>),
    /// Start an echo server on a free loopback port, load it for a few seconds, print results.
    Demo(demo::DemoArgs),
    /// Drive a TCP or HTTP service and report throughput, errors and latency percentiles.
    Load(Box<load::LoadArgs>),
    /// Read, merge and plot HdrHistogram interval logs (from `weft load --hdr-log`, `weft
    /// serve --hdr-log`, or other writers given --unit): count, percentiles, max, min, mean
    /// and stddev.
    Hist(hist::HistArgs),
}

/// A subcommand's failure.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad arguments: exit status 2.
    Usage(String),
    /// A failure at run time: exit status 1.
    Failure(String),
}

impl From<weft::ServiceError> for CliError {
    fn from(e: weft::ServiceError) -> Self {
        Self::Failure(e.to_string())
    }
}

impl From<weft::EngineError> for CliError {
    fn from(e: weft::EngineError) -> Self {
        Self::Failure(e.to_string())
    }
}

/// Parses the command line and runs it; returns the exit status.
pub(crate) fn run() -> i32 {
    weft::logging::init();
    let parsed = command()
        .try_get_matches()
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Demo(args) => demo::run(args),
        Command::Load(args) => load::run(*args),
        Command::Hist(args) => hist::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(CliError::Usage(e)) => {
            eprintln!("weft: {e} (see {})", help_command());
            EXIT_USAGE
        }
        Err(CliError::Failure(e)) => {
            eprintln!("weft: {e}");
            EXIT_FAILURE
        }
    }
}

/// The command line, where every duration flag takes a value that starts with a hyphen: `-1s`
/// reaches [`duration`], which says a duration cannot be negative, instead of clap taking it
/// for an unknown flag (`unexpected argument '-1' found`).
fn command() -> clap::Command {
    let is_duration =
        |arg: &clap::Arg| arg.get_value_parser().type_id() == std::any::TypeId::of::<std::time::Duration>();
    Cli::command().mut_subcommands(move |sub| {
        sub.mut_args(move |arg| {
            if is_duration(&arg) {
                arg.allow_hyphen_values(true)
            } else {
                arg
            }
        })
    })
}

/// Help and version print in full; any other parse error prints its first line only.
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            EXIT_USAGE
        } else {
            0
        };
    }
    let text = e.render().to_string();
    let line = first_line(&text);
    eprintln!("weft: {line} (see {})", help_command());
    EXIT_USAGE
}

/// The help that explains the command line given: `weft load --help` for `weft load ...`.
fn help_command() -> String {
    let sub = std::env::args().nth(1);
    match sub.as_deref() {
        Some(s @ ("serve" | "demo" | "load" | "hist")) => format!("weft {s} --help"),
        _ => "weft --help".into(),
    }
}

/// The message of a rendered clap error as one line: its first line, joined with the lines
/// it introduces when it ends with a colon ("required arguments were not provided:").
fn first_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if line.ends_with(':') {
        let listed: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
        line = format!("{} {}", line, listed.join(", "));
    }
    line
}

/// clap value parser for durations (`10s`, `500ms`): the one every duration flag uses (see
/// [`command`] and [`weft::config::parse_duration`]).
pub(crate) fn duration(s: &str) -> Result<std::time::Duration, String> {
    weft::config::parse_duration(s).map_err(|e| e.to_string())
}

/// clap value parser for byte sizes (`64KiB`, `4MiB`).
pub(crate) fn size(s: &str) -> Result<usize, String> {
    weft::config::parse_size(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn usage_errors_fit_one_line() {
        let missing = "error: the following required arguments were not provided:\n  --listen <LISTEN>\n  --x\n\nUsage: weft serve --listen <LISTEN>\n";
        assert_eq!(
            first_line(missing),
            "the following required arguments were not provided: --listen <LISTEN>, --x"
        );
        assert_eq!(
            first_line("error: invalid value 'x' for '--cores'\n\nUsage: ..."),
            "invalid value 'x' for '--cores'"
        );
    }
}
