//! Intake first: under a storm of new alerts, the engine holds off starting new incidents.
//!
//! Accepting an alert durably matters more than diagnosing it a few seconds sooner: Alertmanager
//! waits for the answer, and a slow answer is retried and piles up. So while the webhook opens
//! incidents faster than [`STORM_RATE`] a second, the engine starts no new incident (the ones in
//! flight go on, and a plan woken by an approval is not held). The hold is bounded: after
//! [`MAX_HOLD`] the engine fills its window once and may hold again, and it stops holding within
//! one [`TICK`] of the storm passing. Nothing waits in memory meanwhile: the incidents are in the
//! store, and the engine's sweep pages them in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// New incidents a second above which intake counts as a storm.
pub const STORM_RATE: f64 = 50.0;

/// The longest the engine holds off in one go.
pub const MAX_HOLD: Duration = Duration::from_secs(3);

/// How often the engine looks at intake's pace.
pub const TICK: Duration = Duration::from_millis(200);

/// Incidents opened by intake so far (intake counts, the engine reads).
#[derive(Debug, Default)]
pub struct Pace {
    opened: AtomicU64,
}

impl Pace {
    /// Counts one incident opened by the webhook.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// The engine's view of intake's pace: whether to hold off starting new incidents now.
#[derive(Debug)]
pub struct StormWatch {
    pace: Arc<Pace>,
    last: (u64, Instant),
    storming: bool,
    held_since: Option<Instant>,
}

impl StormWatch {
    pub fn new(pace: Arc<Pace>) -> Self {
        let now = Instant::now();
        Self {
            last: (pace.total(), now),
            pace,
            storming: false,
            held_since: None,
        }
    }

    /// Samples the pace (call every [`TICK`]).
    pub fn sample(&mut self) {
        let now = Instant::now();
        let total = self.pace.total();
        let secs = now.duration_since(self.last.1).as_secs_f64();
        if secs > 0.0 {
            let rate = total.saturating_sub(self.last.0) as f64 / secs;
            self.storming = rate > STORM_RATE;
            self.last = (total, now);
        }
    }

    /// Whether the engine should hold off starting new incidents now. After [`MAX_HOLD`] of
    /// holding it answers `false` once (the engine fills its window), then holds again.
    pub fn hold(&mut self) -> bool {
        if !self.storming {
            self.held_since = None;
            return false;
        }
        let now = Instant::now();
        match self.held_since {
            None => {
                self.held_since = Some(now);
                true
            }
            Some(t) if now.duration_since(t) < MAX_HOLD => true,
            Some(_) => {
                self.held_since = Some(now);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_storm_holds_the_engine_for_a_bounded_time_and_its_end_releases_it_within_a_tick() {
        let pace = Arc::new(Pace::default());
        let mut watch = StormWatch::new(pace.clone());
        // Calm: 5 incidents in a tick is 25 a second.
        for _ in 0..5 {
            pace.opened();
        }
        tokio::time::advance(TICK).await;
        watch.sample();
        assert!(!watch.hold(), "25 a second is no storm");

        // A storm: 100 in each tick (500 a second), for longer than MAX_HOLD.
        let mut held = Duration::ZERO;
        let mut released_during_storm = 0;
        let ticks = (2 * MAX_HOLD.as_millis() / TICK.as_millis()) as usize + 2;
        for _ in 0..ticks {
            for _ in 0..100 {
                pace.opened();
            }
            tokio::time::advance(TICK).await;
            watch.sample();
            if watch.hold() {
                held += TICK;
            } else {
                released_during_storm += 1;
            }
        }
        assert!(held >= MAX_HOLD, "held {held:?}");
        assert!(
            released_during_storm >= 1,
            "the engine must get a turn at least every MAX_HOLD, even in an endless storm"
        );

        // The storm passes: released at the next sample.
        tokio::time::advance(TICK).await;
        watch.sample();
        assert!(!watch.hold());
    }
}
