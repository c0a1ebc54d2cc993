//! What the controller did, counted: reconciles per environment, errors by category, reconcile
//! durations and environments by phase. Shared with whoever serves or asserts on them.

use crate::requests::Recorder;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the reconcile-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Counts>,
    /// Every API request of the operator's client (see [`Recorder::client`]).
    pub requests: Recorder,
}

#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Every reconcile since start (the `appenv_reconciles_total` counter).
    pub reconciles_total: u64,
    /// Reconciles per environment that still exists (forgotten with it).
    pub reconciles: BTreeMap<String, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    /// Count per bucket of `DURATION_BUCKETS` (cumulative counts are derived when served).
    pub duration_buckets: [u64; 8],
    pub duration_sum: Duration,
    pub phases: BTreeMap<String, String>,
    /// With leader election: whether this replica holds the Lease.
    pub leader: Option<bool>,
}

impl Metrics {
    /// Start timing one reconcile of `environment`; counted when the guard drops.
    pub fn reconcile(&self, environment: &str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            environment: environment.to_owned(),
            started: Instant::now(),
        }
    }

    pub fn error(&self, category: &'static str) {
        if let Ok(mut counts) = self.inner.lock() {
            *counts.errors.entry(category).or_default() += 1;
        }
    }

    pub fn phase(&self, environment: &str, phase: &str) {
        if let Ok(mut counts) = self.inner.lock() {
            counts
                .phases
                .insert(environment.to_owned(), phase.to_owned());
        }
    }

    pub fn leader(&self, leading: bool) {
        if let Ok(mut counts) = self.inner.lock() {
            counts.leader = Some(leading);
        }
    }

    pub fn forget(&self, environment: &str) {
        self.retain(|name| name != environment);
    }

    /// Keep what is counted per environment only for the environments `keep` says exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut counts) = self.inner.lock() {
            counts.phases.retain(|name, _| keep(name));
            counts.reconciles.retain(|name, _| keep(name));
        }
    }

    pub fn snapshot(&self) -> Counts {
        self.inner.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Reconciles of one environment so far.
    pub fn reconciles_of(&self, environment: &str) -> u64 {
        self.snapshot()
            .reconciles
            .get(environment)
            .copied()
            .unwrap_or(0)
    }
}

/// Counts a reconcile and its duration when dropped, however the reconcile ended.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    environment: String,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        if let Ok(mut counts) = self.metrics.inner.lock() {
            counts.reconciles_total += 1;
            *counts
                .reconciles
                .entry(std::mem::take(&mut self.environment))
                .or_default() += 1;
            let bucket = DURATION_BUCKETS
                .iter()
                .position(|bound| took.as_secs_f64() <= *bound)
                .unwrap_or(DURATION_BUCKETS.len() - 1);
            counts.duration_buckets[bucket] += 1;
            counts.duration_sum += took;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_errors_and_phases() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("a"));
        drop(metrics.reconcile("a"));
        drop(metrics.reconcile("b"));
        metrics.error("ApplyFailed");
        metrics.phase("a", "Ready");
        let counts = metrics.snapshot();
        assert_eq!(metrics.reconciles_of("a"), 2);
        assert_eq!(metrics.reconciles_of("b"), 1);
        assert_eq!(counts.errors.get("ApplyFailed"), Some(&1));
        assert_eq!(counts.duration_buckets.iter().sum::<u64>(), 3);
        assert_eq!(counts.phases.get("a").map(String::as_str), Some("Ready"));
        assert_eq!(counts.reconciles_total, 3);
    }

    #[test]
    fn a_forgotten_environment_leaves_its_series_not_the_total() {
        let metrics = Metrics::default();
        for name in ["a", "b", "c"] {
            drop(metrics.reconcile(name));
            metrics.phase(name, "Ready");
        }
        metrics.forget("a");
        metrics.retain(|name| name != "c");
        let counts = metrics.snapshot();
        assert_eq!(counts.phases.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(counts.reconciles.keys().collect::<Vec<_>>(), ["b"]);
        // A counter never goes down.
        assert_eq!(counts.reconciles_total, 3);
    }
}
