//! An HdrHistogram interval log of a running engine's latency metrics (`weft serve
//! --hdr-log FILE`), readable by `weft hist` and HdrHistogram's own tools.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;

use super::{MetricsHandle, MetricsSnapshot};
use crate::proto::hdr::log;

/// Writes one interval per latency metric (tagged with the metric's name, e.g.
/// `Tag=http_request_duration`) every interval, until dropped. The file is written without a
/// user-space buffer, so a crash loses at most the current interval.
#[derive(Debug)]
pub struct LatencyLog {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LatencyLog {
    /// Creates `path` and starts logging `metrics` every `every`.
    ///
    /// # Errors
    ///
    /// The file cannot be created, or its header cannot be written.
    pub fn start(path: &Path, metrics: MetricsHandle, every: Duration) -> io::Result<Self> {
        // Created here, so that a bad path fails at start.
        let out = File::create(path)?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("weft-hdr-log".into())
            .spawn(move || run(out, &metrics, every, &stopped))?;
        Ok(Self {
            path: path.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where the log is written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LatencyLog {
    /// Writes the last interval and closes the file.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(out: File, metrics: &MetricsHandle, every: Duration, stop: &mpsc::Receiver<()>) {
    if let Err(e) = write_log(out, metrics, every, stop) {
        tracing::warn!("hdr log: {e}; no more intervals are written");
    }
}

fn write_log(
    mut out: File,
    metrics: &MetricsHandle,
    every: Duration,
    stop: &mpsc::Receiver<()>,
) -> io::Result<()> {
    let began = Instant::now();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = log::begin(
        &mut out,
        &mut serializer,
        SystemTime::now(),
        "weft serve latency metrics",
    )
    .map_err(io::Error::other)?;
    let mut prev = MetricsSnapshot::default();
    let mut prev_at = Duration::ZERO;
    loop {
        let done = !matches!(stop.recv_timeout(every), Err(RecvTimeoutError::Timeout));
        let cur = metrics.snapshot();
        let now = began.elapsed();
        // Each metric's values since the last interval, tagged with its name.
        for name in cur.latency_names() {
            if let Some(h) = cur.latency_since(&prev, name) {
                log::write_interval(&mut writer, &h, prev_at, now - prev_at, Some(name))
                    .map_err(io::Error::other)?;
            }
        }
        if done {
            return Ok(());
        }
        (prev, prev_at) = (cur, now);
    }
}
