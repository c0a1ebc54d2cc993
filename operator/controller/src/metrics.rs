//! What the controller did, counted: reconciles, errors by category, reconcile durations,
//! environments by phase, API requests and, with leader election, leadership. Kept in
//! `prometheus-client` metrics and served by `http` in the Prometheus text format. What is
//! counted per environment (its phase, its reconciles) is forgotten with the environment.

use crate::error::Category;
use crate::requests::Recorder;
use appenv_api::Phase;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric as _, LabelValueEncoder,
    prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the reconcile-duration histogram buckets; `+Inf` follows them.
pub const DURATION_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// The `Content-Type` of [`Metrics::render`]'s text: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `appenv_reconciles_total`.
    reconciles: Counter,
    /// `appenv_reconcile_errors_total{category}`.
    errors: Family<ErrorLabels, Counter>,
    /// `appenv_reconcile_duration_seconds`.
    durations: Histogram,
    /// `appenv_environments{phase}`: how many of `per_environment.phases` are in each phase,
    /// without the phases none is in.
    environments: Family<PhaseLabels, Gauge>,
    /// `appenv_backup_last_success_timestamp_seconds{environment}`: environments with backups
    /// that completed one.
    backups: Family<EnvironmentLabels, Gauge>,
    /// `appenv_leader`.
    leader: Arc<Leader>,
    per_environment: Mutex<PerEnvironment>,
    /// Every API request of the operator's client (see [`Recorder::client`]), served as
    /// `appenv_api_requests_total{verb,group,resource}`.
    pub requests: Recorder,
}

/// What is counted per environment that still exists.
#[derive(Debug, Default)]
struct PerEnvironment {
    phases: BTreeMap<String, Phase>,
    reconciles: BTreeMap<String, u64>,
    /// The last successful backup's time (Unix seconds), as in `Metrics::backups`.
    backups: BTreeMap<String, i64>,
}

/// A copy of what [`Metrics`] counted, for tests and diagnostics.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Every reconcile since start (the `appenv_reconciles_total` counter).
    pub reconciles_total: u64,
    /// Reconciles per environment that still exists (forgotten with it).
    pub reconciles: BTreeMap<String, u64>,
    /// Failed reconciles by category (only the categories that happened).
    pub errors: BTreeMap<Category, u64>,
    /// The last phase of each environment that still exists.
    pub phases: BTreeMap<String, Phase>,
    /// With leader election: whether this replica holds the Lease.
    pub leader: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    category: Category,
}

impl EncodeLabelValue for Category {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EnvironmentLabels {
    environment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

impl PhaseLabels {
    fn of(phase: Phase) -> Self {
        Self {
            phase: phase.as_str(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Histogram::new(DURATION_BUCKETS);
        let environments = Family::<PhaseLabels, Gauge>::default();
        let leader = Arc::new(Leader::default());
        let backups = Family::<EnvironmentLabels, Gauge>::default();
        let requests = Recorder::default();
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "appenv_reconciles",
            "Reconciles of AppEnvironments",
            reconciles.clone(),
        );
        registry.register(
            "appenv_reconcile_errors",
            "Failed reconciles by error category",
            errors.clone(),
        );
        registry.register(
            "appenv_reconcile_duration_seconds",
            "Time a reconcile took",
            durations.clone(),
        );
        registry.register(
            "appenv_environments",
            "AppEnvironments by phase",
            environments.clone(),
        );
        registry.register(
            "appenv_backup_last_success_timestamp_seconds",
            "When the last backup of an environment completed (Unix time)",
            backups.clone(),
        );
        registry.register_collector(Box::new(leader.clone()));
        registry.register_collector(Box::new(ApiRequests(requests.clone())));
        Self {
            registry,
            reconciles,
            errors,
            durations,
            environments,
            backups,
            leader,
            per_environment: Mutex::default(),
            requests,
        }
    }
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

    fn reconciled(&self, environment: String, took: Duration) {
        self.reconciles.inc();
        self.durations.observe(took.as_secs_f64());
        if let Ok(mut per) = self.per_environment.lock() {
            *per.reconciles.entry(environment).or_default() += 1;
        }
    }

    pub fn error(&self, category: Category) {
        self.errors.get_or_create(&ErrorLabels { category }).inc();
    }

    pub fn phase(&self, environment: &str, phase: Phase) {
        if let Ok(mut per) = self.per_environment.lock()
            && per.phases.insert(environment.to_owned(), phase) != Some(phase)
        {
            self.count_phases(&per);
        }
    }

    /// The time of an environment's last successful backup (Unix seconds), if it has one.
    pub fn backup(&self, environment: &str, last_success: Option<i64>) {
        let Ok(mut per) = self.per_environment.lock() else {
            return;
        };
        let labels = EnvironmentLabels {
            environment: environment.to_owned(),
        };
        match last_success {
            Some(at) if per.backups.get(environment) != Some(&at) => {
                per.backups.insert(environment.to_owned(), at);
                self.backups.get_or_create(&labels).set(at);
            }
            None if per.backups.remove(environment).is_some() => {
                self.backups.remove(&labels);
            }
            _ => {}
        }
    }

    pub fn leader(&self, leading: bool) {
        if let Ok(mut leader) = self.leader.0.lock() {
            *leader = Some(leading);
        }
    }

    pub fn forget(&self, environment: &str) {
        self.retain(|name| name != environment);
    }

    /// Keep what is counted per environment only for the environments `keep` says exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut per) = self.per_environment.lock() {
            per.phases.retain(|name, _| keep(name));
            per.reconciles.retain(|name, _| keep(name));
            let gone: Vec<String> = per.backups.keys().filter(|n| !keep(n)).cloned().collect();
            for environment in gone {
                per.backups.remove(&environment);
                self.backups.remove(&EnvironmentLabels { environment });
            }
            self.count_phases(&per);
        }
    }

    /// Set the phase gauge from `per` (whose lock the caller holds, so that two changes cannot
    /// interleave): a phase no environment is in has no series.
    fn count_phases(&self, per: &PerEnvironment) {
        for &phase in Phase::ALL {
            let labels = PhaseLabels::of(phase);
            let count = per.phases.values().filter(|p| **p == phase).count();
            match i64::try_from(count) {
                Ok(count) if count > 0 => {
                    self.environments.get_or_create(&labels).set(count);
                }
                _ => {
                    self.environments.remove(&labels);
                }
            }
        }
    }

    pub fn snapshot(&self) -> Counts {
        let (phases, reconciles) = self
            .per_environment
            .lock()
            .map(|per| (per.phases.clone(), per.reconciles.clone()))
            .unwrap_or_default();
        let errors = Category::ALL
            .iter()
            .filter_map(|&category| {
                let counter = self.errors.get(&ErrorLabels { category })?;
                Some((category, counter.get()))
            })
            .collect();
        Counts {
            reconciles_total: self.reconciles.get(),
            reconciles,
            errors,
            phases,
            leader: self.leader.0.lock().ok().and_then(|leader| *leader),
        }
    }

    /// Reconciles of one environment so far.
    pub fn reconciles_of(&self, environment: &str) -> u64 {
        self.per_environment
            .lock()
            .ok()
            .and_then(|per| per.reconciles.get(environment).copied())
            .unwrap_or(0)
    }

    /// The metrics in the Prometheus text format (version 0.0.4, see [`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
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
        self.metrics.reconciled(
            std::mem::take(&mut self.environment),
            self.started.elapsed(),
        );
    }
}

/// `appenv_leader`: served only once leader election said something, so a replica without
/// it has no such series.
#[derive(Debug, Default)]
struct Leader(Mutex<Option<bool>>);

impl Collector for Leader {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(leading) = self.0.lock().ok().and_then(|leader| *leader) else {
            return Ok(());
        };
        let gauge = ConstGauge::new(i64::from(leading));
        let metric = encoder.encode_descriptor(
            "appenv_leader",
            "Whether this replica holds the leader-election Lease.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// `appenv_api_requests_total`, read from the client's [`Recorder`] at each scrape (which
/// keeps the counts for the RBAC and standby tests too).
#[derive(Debug)]
struct ApiRequests(Recorder);

impl Collector for ApiRequests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "appenv_api_requests",
            "Requests to the Kubernetes API by verb and resource.",
            None,
            MetricType::Counter,
        )?;
        for (request, n) in self.0.snapshot() {
            ConstCounter::new(n).encode(family.encode_family(&request)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{HistogramCount, Scrape, Value};

    fn parse(metrics: &Metrics) -> Scrape {
        let text = metrics.render().expect("renders");
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
    }

    #[test]
    fn counts_reconciles_errors_and_phases() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("a"));
        drop(metrics.reconcile("a"));
        drop(metrics.reconcile("b"));
        metrics.error(Category::Apply);
        metrics.phase("a", Phase::Ready);
        let counts = metrics.snapshot();
        assert_eq!(metrics.reconciles_of("a"), 2);
        assert_eq!(metrics.reconciles_of("b"), 1);
        assert_eq!(
            counts.errors.into_iter().collect::<Vec<_>>(),
            [(Category::Apply, 1)]
        );
        assert_eq!(counts.phases.get("a"), Some(&Phase::Ready));
        assert_eq!(counts.reconciles_total, 3);
        assert_eq!(counts.leader, None);
    }

    #[test]
    fn a_forgotten_environment_leaves_its_series_not_the_total() {
        let metrics = Metrics::default();
        for name in ["a", "b", "c"] {
            drop(metrics.reconcile(name));
            metrics.phase(name, Phase::Ready);
        }
        metrics.phase("c", Phase::Degraded);
        metrics.forget("a");
        metrics.retain(|name| name != "c");
        let counts = metrics.snapshot();
        assert_eq!(counts.phases.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(counts.reconciles.keys().collect::<Vec<_>>(), ["b"]);
        // A counter never goes down.
        assert_eq!(counts.reconciles_total, 3);
        // The gauge counts what is left, and a phase nobody is in has no series.
        let text = metrics.render().expect("renders");
        assert!(
            text.contains("appenv_environments{phase=\"Ready\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("phase=\"Degraded\""), "{text}");
    }

    #[test]
    fn a_phase_change_moves_the_environment_between_series() {
        let metrics = Metrics::default();
        metrics.phase("a", Phase::Progressing);
        metrics.phase("b", Phase::Progressing);
        metrics.phase("a", Phase::Ready);
        let text = metrics.render().expect("renders");
        assert!(
            text.contains("appenv_environments{phase=\"Progressing\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("appenv_environments{phase=\"Ready\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_reconcile_longer_than_the_last_bound_is_counted_in_inf_only() {
        let metrics = Metrics::default();
        metrics.reconciled("slow".to_owned(), Duration::from_secs(45));
        metrics.reconciled("quick".to_owned(), Duration::from_millis(200));
        let scrape = parse(&metrics);
        let buckets = scrape
            .samples
            .iter()
            .find_map(|s| match &s.value {
                Value::Histogram(buckets) if s.metric == "appenv_reconcile_duration_seconds" => {
                    Some(buckets.clone())
                }
                _ => None,
            })
            .expect("the duration histogram");
        let count = |bound: f64| {
            buckets
                .iter()
                .find(|b: &&HistogramCount| b.less_than == bound)
                .map(|b| b.count)
        };
        assert_eq!(count(0.1), Some(0.0), "{buckets:?}");
        assert_eq!(count(0.25), Some(1.0), "{buckets:?}");
        assert_eq!(
            count(30.0),
            Some(1.0),
            "45 s is not within 30 s: {buckets:?}"
        );
        assert_eq!(count(f64::INFINITY), Some(2.0), "{buckets:?}");
        let untyped = |name: &str| {
            scrape.samples.iter().find_map(|s| match s.value {
                Value::Untyped(v) if s.metric == name => Some(v),
                _ => None,
            })
        };
        assert_eq!(
            untyped("appenv_reconcile_duration_seconds_count"),
            Some(2.0)
        );
        let sum = untyped("appenv_reconcile_duration_seconds_sum").expect("sum");
        assert!((sum - 45.2).abs() < 1e-9, "{sum}");
    }
}
