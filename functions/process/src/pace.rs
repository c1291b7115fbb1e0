//! The pace of DetectLabels calls: a call starts only on a tick of the wall clock's grid of
//! `LABELS_INTERVAL_MS` (every instant since the epoch that is a multiple of it), and one
//! batch starts at most one call per tick. With the event source mapping's
//! `MaximumConcurrency` batches at once, no tick starts more calls than that, whichever
//! instances run them and however fast Rekognition answers: the stack derives both from the
//! account's quota (`stack::app::Pacing`).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handler_shared::{Vars, required_env};

pub const ENV_INTERVAL_MS: &str = "LABELS_INTERVAL_MS";

#[derive(Debug)]
pub struct Pace {
    interval_ms: u64,
    /// The last tick this instance took. Invocations of one instance never overlap, so this
    /// is also the last tick of the batch being processed.
    last: Mutex<Option<u64>>,
}

impl Pace {
    pub fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            last: Mutex::new(None),
        }
    }

    pub fn from_env(vars: Vars) -> Result<Self, String> {
        let raw = required_env(vars, ENV_INTERVAL_MS)?;
        match raw.parse::<u64>() {
            Ok(ms) if ms >= 1 => Ok(Self::new(ms)),
            _ => Err(format!(
                "{ENV_INTERVAL_MS} must be a whole number of milliseconds, at least 1, not `{raw}`"
            )),
        }
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// The tick the next call may start on, given the time now (ms since the epoch): the
    /// first tick from now on that is later than the last one taken. It is taken.
    pub fn take(&self, now_ms: u64) -> u64 {
        let i = self.interval_ms;
        let mut tick = now_ms.div_ceil(i) * i;
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(prev) = *last
            && tick <= prev
        {
            tick = prev + i;
        }
        *last = Some(tick);
        tick
    }

    /// Waits for this instance's next tick.
    pub async fn wait(&self) {
        let now = now_ms();
        let tick = self.take(now);
        if tick > now {
            tokio::time::sleep(Duration::from_millis(tick - now)).await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_start_on_the_grid_one_per_tick() {
        let p = Pace::new(375);
        // From 1000 ms: the next multiple of 375 is 1125.
        assert_eq!(p.take(1000), 1125);
        // A second call at once waits for the tick after.
        assert_eq!(p.take(1001), 1500);
        // Exactly on a tick that is free: no wait.
        assert_eq!(p.take(2250), 2250);
        // Later, after an idle spell: the first free tick from then on.
        assert_eq!(p.take(10_000), 10_125);
    }

    #[test]
    fn ticks_are_shared_with_every_instance_through_the_clock() {
        // Two instances that start at different moments land on the same grid, so together
        // they never start more than two calls on one tick.
        let (a, b) = (Pace::new(500), Pace::new(500));
        let ta: Vec<u64> = (0..5).map(|i| a.take(1_000 + i * 10)).collect();
        let tb: Vec<u64> = (0..5).map(|i| b.take(1_234 + i * 10)).collect();
        for t in ta.iter().chain(&tb) {
            assert_eq!(t % 500, 0, "{t} is off the grid");
        }
        let mut all: Vec<u64> = ta.into_iter().chain(tb).collect();
        all.sort_unstable();
        for w in all.windows(3) {
            assert!(w[0] != w[2], "three calls on one tick: {all:?}");
        }
    }

    #[test]
    fn a_bad_interval_is_refused_with_its_name() {
        let vars = |_: &str| Some("0".to_string());
        let err = Pace::from_env(&vars).unwrap_err();
        assert!(err.contains(ENV_INTERVAL_MS), "{err}");
    }
}
