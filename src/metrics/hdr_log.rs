//! An HdrHistogram interval log of a running engine's latency metrics (`weft serve
//! --hdr-log FILE`), readable by `weft hist` and HdrHistogram's own tools.

use std::fs::{self, File, OpenOptions};
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
/// user-space buffer, so a crash loses at most the current interval. [`reopen`](Reopener::reopen)
/// (weft serve: SIGHUP) writes the current interval and starts the file afresh, with new
/// headers, for log rotation: move the file away, then signal.
#[derive(Debug)]
pub struct LatencyLog {
    path: PathBuf,
    /// Dropping it stops the thread; a message reopens the file.
    commands: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Asks a [`LatencyLog`] to reopen its file, from any thread.
#[derive(Debug, Clone)]
pub struct Reopener(mpsc::Sender<()>);

impl Reopener {
    /// Writes the current interval, then creates the file again at its path and goes on
    /// there (a log moved away by a rotation is left complete). Does nothing once the log
    /// has stopped.
    pub fn reopen(&self) {
        let _ = self.0.send(());
    }
}

/// What the writer does after an interval.
enum Next {
    Continue,
    Reopen,
    Stop,
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
        let (commands, received) = mpsc::channel();
        let at = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("weft-hdr-log".into())
            .spawn(move || run(out, &at, &metrics, every, &received))?;
        Ok(Self {
            path: path.to_owned(),
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// Whether [`start`](Self::start) could create `path`, without changing it: an existing
    /// file is opened for writing (not truncated), a missing one created and removed again.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or created.
    pub(crate) fn check(path: &Path) -> io::Result<()> {
        match OpenOptions::new().write(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                OpenOptions::new().write(true).create_new(true).open(path)?;
                fs::remove_file(path)
            }
            opened => opened.map(drop),
        }
    }

    /// Where the log is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that reopens the file (for log rotation).
    pub fn reopener(&self) -> Option<Reopener> {
        self.commands.clone().map(Reopener)
    }
}

impl Drop for LatencyLog {
    /// Writes the last interval and closes the file.
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut out: File, path: &Path, metrics: &MetricsHandle, every: Duration, commands: &mpsc::Receiver<()>) {
    let mut prev = MetricsSnapshot::default();
    loop {
        match write_file(out, metrics, every, commands, &mut prev) {
            Ok(true) => match File::create(path) {
                Ok(file) => {
                    tracing::info!("hdr log: reopened {}", path.display());
                    out = file;
                }
                Err(e) => {
                    tracing::warn!(
                        "hdr log: cannot reopen {}: {e}; no more intervals are written",
                        path.display()
                    );
                    return;
                }
            },
            Ok(false) => return,
            Err(e) => {
                tracing::warn!("hdr log: {e}; no more intervals are written");
                return;
            }
        }
    }
}

/// Writes a log into `out` from `prev` on; returns true when asked to reopen (after
/// writing the interval in progress), false when stopped.
fn write_file(
    mut out: File,
    metrics: &MetricsHandle,
    every: Duration,
    commands: &mpsc::Receiver<()>,
    prev: &mut MetricsSnapshot,
) -> io::Result<bool> {
    let began = Instant::now();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = log::begin(
        &mut out,
        &mut serializer,
        SystemTime::now(),
        "weft serve latency metrics",
    )
    .map_err(io::Error::other)?;
    let mut prev_at = Duration::ZERO;
    loop {
        let next = match commands.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => Next::Continue,
            Ok(()) => Next::Reopen,
            Err(RecvTimeoutError::Disconnected) => Next::Stop,
        };
        let cur = metrics.snapshot();
        let now = began.elapsed();
        // Each metric's values since the last interval, tagged with its name.
        for name in cur.latency_names() {
            if let Some(h) = cur.latency_since(prev, name) {
                log::write_interval(&mut writer, &h, prev_at, now - prev_at, Some(name))
                    .map_err(io::Error::other)?;
            }
        }
        (*prev, prev_at) = (cur, now);
        match next {
            Next::Continue => {}
            Next::Reopen => return Ok(true),
            Next::Stop => return Ok(false),
        }
    }
}
