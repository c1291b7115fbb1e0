//! The service as a quota, and what it has done: calls admitted per second up to a rate
//! (`--tps`), above which a call is refused with the error Rekognition gives a caller over its
//! transactions-per-second quota, and the counts `GET /stats` reports.
//!
//! Seconds are counted from the service's start; a call is admitted into the second it
//! arrives in, so at most `tps` calls start in any one of them. A call answered with labels is
//! counted in the second it arrived in, as a quota counts it (an answer that completes later,
//! bunched with others, does not move it), so with a rate `peak_per_second` cannot exceed it:
//! a caller over the rate shows as `throttled`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::service::ApiError;

/// What `GET /stats` reports, since the service started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Calls answered with labels.
    pub served: u64,
    /// Calls refused for the rate.
    pub throttled: u64,
    /// The most calls answered with labels that arrived in any one second.
    pub peak_per_second: u64,
    /// The most admitted calls in flight at once.
    pub peak_in_flight: u64,
    /// The rate, when there is one.
    pub tps: Option<u32>,
    /// Stub mode's latency in milliseconds, when the service runs as a stub instead of the
    /// model (the server sets it).
    pub stub_latency_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// The second `admitted` is about.
    second: u64,
    admitted: u32,
    /// Calls answered with labels, by the second they arrived in (recent seconds only).
    succeeded: BTreeMap<u64, u64>,
    in_flight: u64,
    stats: Stats,
}

/// How long a second's count of answered calls is kept: longer than any call takes.
const KEEP_SECONDS: u64 = 600;

impl State {
    fn at(&mut self, second: u64) -> &mut Self {
        if second != self.second {
            self.second = second;
            self.admitted = 0;
        }
        self
    }
}

/// The rate and the counts.
#[derive(Debug)]
pub struct Meter {
    tps: Option<u32>,
    start: Instant,
    state: Mutex<State>,
}

/// An admitted call, and the second it arrived in: in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    meter: &'a Meter,
    second: u64,
}

impl InFlight<'_> {
    /// Counts the call as answered with labels, in the second it arrived in.
    pub fn served(&self) {
        let mut s = self.meter.lock();
        let n = s.succeeded.entry(self.second).or_default();
        *n += 1;
        let n = *n;
        s.stats.served += 1;
        s.stats.peak_per_second = s.stats.peak_per_second.max(n);
        let oldest = self.second.saturating_sub(KEEP_SECONDS);
        s.succeeded = s.succeeded.split_off(&oldest);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.meter.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

impl Meter {
    /// `tps`: the most calls admitted in one second (`None` or 0: no limit).
    pub fn new(tps: Option<u32>) -> Self {
        Self {
            tps: tps.filter(|q| *q > 0),
            start: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Admits a call now, or refuses it for the rate.
    pub fn admit(&self) -> Result<InFlight<'_>, ApiError> {
        self.admit_at(self.now())
    }

    /// [`Meter::admit`] in `second` (counted from the start).
    pub fn admit_at(&self, second: u64) -> Result<InFlight<'_>, ApiError> {
        let mut guard = self.lock();
        let s = guard.at(second);
        if let Some(q) = self.tps
            && s.admitted >= q
        {
            s.stats.throttled += 1;
            return Err(ApiError::new(
                "ProvisionedThroughputExceededException",
                400,
                format!("Rate exceeded: more than {q} DetectLabels calls in one second"),
            ));
        }
        s.admitted += 1;
        s.in_flight += 1;
        s.stats.peak_in_flight = s.stats.peak_in_flight.max(s.in_flight);
        drop(guard);
        Ok(InFlight {
            meter: self,
            second,
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            tps: self.tps,
            ..self.lock().stats
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn at_most_tps_calls_start_in_one_second_and_the_rest_are_refused() {
        let m = Meter::new(Some(3));
        let admitted: Vec<_> = (0..5).map(|_| m.admit_at(7)).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_ok()).count(), 3);
        let refused = admitted.iter().find_map(|a| a.as_ref().err()).unwrap();
        assert_eq!(
            (refused.kind, refused.status),
            ("ProvisionedThroughputExceededException", 400)
        );
        drop(admitted);
        // The next second starts afresh.
        assert!(m.admit_at(8).is_ok());
        let s = m.stats();
        assert_eq!((s.throttled, s.peak_in_flight, s.tps), (2, 3, Some(3)));
    }

    #[test]
    fn peaks_are_counted_per_second_and_in_flight() {
        let m = Meter::new(None);
        let a = m.admit_at(1).unwrap();
        let b = m.admit_at(1).unwrap();
        let c = m.admit_at(2).unwrap();
        // Answered out of order and later: each counts in the second it arrived in.
        c.served();
        drop(c);
        b.served();
        a.served();
        drop((a, b));
        // Admitted but not answered with labels: not counted as served.
        drop(m.admit_at(2).unwrap());
        assert_eq!(
            m.stats(),
            Stats {
                served: 3,
                throttled: 0,
                peak_per_second: 2,
                peak_in_flight: 3,
                tps: None,
                stub_latency_ms: None,
            }
        );
        // No limit: a thousand calls in one second are all admitted.
        assert!((0..1000).all(|_| m.admit_at(3).is_ok()));
    }
}
