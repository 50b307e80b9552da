//! The result of one load-client run, written as JSON in the layout of `weft load --json`
//! (`requests`, `rps`, `errors`, `latency_us.{p50,p90,p99,p999,max}`) plus named extras, so
//! that `bench/report.py` reads every client alike.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::Latency;
use crate::client::Errors;

/// Totals, latency and extra figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Completed requests (or connections) in the measured window.
    pub requests: u64,
    /// Requests per second over the measured window.
    pub rps: f64,
    /// Failed attempts (connect refused, reset, short read...).
    pub errors: u64,
    /// Latency of the completed requests; `None` where the client measures none.
    pub latency: Option<Latency>,
    /// Further named figures (e.g. `rss_per_conn_bytes`).
    pub extra: Vec<(String, f64)>,
}

impl Summary {
    /// Adds a named figure.
    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.extra.push((name.to_string(), value));
        self
    }

    /// Adds the failures by kind (`errors_connect`, `errors_io`, `errors_timeout`).
    pub fn with_errors(self, e: &Errors) -> Self {
        self.with("errors_connect", e.connect as f64)
            .with("errors_io", e.io as f64)
            .with("errors_timeout", e.timeout as f64)
    }

    /// The latency percentiles in microseconds, as `(key, value)` in the `weft load` layout.
    fn percentiles(&self) -> Vec<(&'static str, f64)> {
        let Some(l) = &self.latency else {
            return Vec::new();
        };
        let q = |q| l.quantile_us(q);
        vec![
            ("p50", q(0.5)),
            ("p90", q(0.9)),
            ("p99", q(0.99)),
            ("p999", q(0.999)),
            ("max", l.max_us()),
        ]
    }

    /// The JSON text (one object).
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"requests\": {}, \"rps\": {:.1}, \"errors\": {}",
            self.requests, self.rps, self.errors
        );
        let percentiles = self.percentiles();
        if !percentiles.is_empty() {
            let fields: Vec<String> = percentiles
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v:.1}"))
                .collect();
            let _ = write!(s, ", \"latency_us\": {{{}}}", fields.join(", "));
        }
        for (name, value) in &self.extra {
            let _ = write!(s, ", \"{name}\": {}", json_number(*value));
        }
        s.push('}');
        s
    }

    /// One line for a person: rate, errors, p50/p99/max and the extras.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} requests, {:.0}/s, {} errors",
            self.requests, self.rps, self.errors
        );
        for (k, v) in self
            .percentiles()
            .iter()
            .filter(|(k, _)| matches!(*k, "p50" | "p99" | "max"))
        {
            let _ = write!(s, ", {k} {v:.0} us");
        }
        for (name, value) in &self.extra {
            let _ = write!(s, ", {name} {value:.1}");
        }
        s
    }

    /// Prints the line and, when `json` is given, writes the JSON there.
    ///
    /// # Errors
    ///
    /// The JSON file could not be written.
    pub fn emit(&self, json: Option<&Path>) -> io::Result<()> {
        println!("{}", self.line());
        match json {
            Some(path) => std::fs::write(path, self.to_json() + "\n"),
            None => Ok(()),
        }
    }
}

/// JSON has no NaN or infinity: they become null.
fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn json_has_weft_load_keys() {
        let mut l = Latency::new();
        l.record(Duration::from_micros(40));
        let s = Summary {
            requests: 10,
            rps: 5.0,
            errors: 1,
            latency: Some(l),
            extra: Vec::new(),
        }
        .with("rss_per_conn_bytes", 1234.0)
        .with("bad", f64::NAN);
        let j = s.to_json();
        assert!(
            j.starts_with("{\"requests\": 10, \"rps\": 5.0, \"errors\": 1, \"latency_us\": {\"p50\": 40.0")
        );
        assert!(j.ends_with("\"rss_per_conn_bytes\": 1234.0, \"bad\": null}"));
        assert!(s.line().contains("p99 40 us"));
    }
}
