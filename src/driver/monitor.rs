//! Each shard's metrics task: the reactor-lag probe and the periodic report.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::shard::ShardCtx;
use crate::config::MetricsConfig;
use crate::metrics::{REACTOR_LAG, ShardLink, StallLog};

/// One stall log line per shard at most this often.
const STALL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a stopped shard waits for room for its final report.
const LAST_REPORT_WAIT: Duration = Duration::from_secs(1);
/// The shortest lag-probe tick.
const MIN_TICK: Duration = Duration::from_millis(1);

/// A shard's metrics reporter.
pub(crate) struct Monitor {
    shard: Rc<ShardCtx>,
    link: ShardLink,
    interval: Duration,
    tick: Duration,
    stalls: RefCell<StallLog>,
}

impl Monitor {
    pub(crate) fn new(shard: Rc<ShardCtx>, link: ShardLink, config: &MetricsConfig) -> Rc<Self> {
        Rc::new(Self {
            shard,
            link,
            interval: config.interval,
            tick: config.lag_tick.clamp(MIN_TICK, config.interval.max(MIN_TICK)),
            stalls: RefCell::new(StallLog::new(config.stall_threshold, STALL_LOG_INTERVAL)),
        })
    }

    /// Every tick, measures how late the reactor woke this task; every interval, reports.
    /// Runs until its task is dropped.
    pub(crate) async fn run(self: Rc<Self>) {
        let mut next_report = Instant::now() + self.interval;
        loop {
            let asleep = Instant::now();
            glommio::timer::sleep(self.tick).await;
            let now = Instant::now();
            let late = now.saturating_duration_since(asleep).saturating_sub(self.tick);
            REACTOR_LAG.record(late);
            let line = self.stalls.borrow_mut().observe(late, now);
            if let Some(line) = line {
                let info = &self.shard.info;
                tracing::warn!(shard = info.index, core = info.core, "{line}");
            }
            if now >= next_report {
                self.report(now);
                next_report = now + self.interval;
            }
        }
    }

    /// Sends the shard's counters and the latencies recorded since the last report.
    fn report(&self, now: Instant) {
        let stalls = self.stalls.borrow().stalls();
        self.link.send(self.shard.snapshot(), stalls, now);
    }

    /// Sends the final report of a shard that stopped serving, waiting a little for room.
    pub(crate) fn report_last(&self) {
        let stalls = self.stalls.borrow().stalls();
        let stats = self.shard.snapshot();
        self.link
            .send_last(stats, stalls, Instant::now(), LAST_REPORT_WAIT);
    }
}
