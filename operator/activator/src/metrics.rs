//! What the activator did, counted: requests by outcome, requests held now, and writes of the
//! last-request annotation by reason and result. Served by `health` in the Prometheus text
//! format. No label names an environment: their number is not bounded.

use crate::decide::Reason;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, prometheus_text,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Forwarded at once to a Ready web Pod (whatever the Pod answered).
    Proxied,
    /// Held until a web Pod was Ready, then forwarded.
    HeldThenProxied,
    /// 404: no environment has the host.
    UnknownHost,
    /// 421: more than one environment claims the host.
    AmbiguousHost,
    /// 400 or 405: no usable `Host`, an absolute or authority target, `CONNECT`.
    Refused,
    /// 503 at once: the bound on held requests was reached.
    OverLimit,
    /// 503 after `--wake-timeout` without a Ready web Pod.
    WakeTimeout,
    /// 503 with the "waking up" page, after `--browser-wait`.
    BrowserPage,
    /// 502: no web Pod could be reached.
    BackendError,
}

impl Outcome {
    pub const ALL: [Self; 9] = [
        Self::Proxied,
        Self::HeldThenProxied,
        Self::UnknownHost,
        Self::AmbiguousHost,
        Self::Refused,
        Self::OverLimit,
        Self::WakeTimeout,
        Self::BrowserPage,
        Self::BackendError,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Proxied => "proxied",
            Self::HeldThenProxied => "held_then_proxied",
            Self::UnknownHost => "unknown_host",
            Self::AmbiguousHost => "ambiguous_host",
            Self::Refused => "refused",
            Self::OverLimit => "over_limit",
            Self::WakeTimeout => "wake_timeout",
            Self::BrowserPage => "browser_page",
            Self::BackendError => "backend_error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// How a write of the annotation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteResult {
    Written,
    /// 409: the object changed since the watch showed it (another replica wrote first).
    Conflict,
    Failed,
}

impl WriteResult {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for WriteResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WriteLabels {
    reason: &'static str,
    result: WriteResult,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `appenv_activator_requests_total{outcome}`.
    requests: Family<OutcomeLabels, Counter>,
    /// `appenv_activator_held_requests`.
    held: Gauge,
    /// `appenv_activator_annotation_writes_total{reason,result}`.
    writes: Family<WriteLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<OutcomeLabels, Counter>::default();
        let held = Gauge::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "appenv_activator_requests",
            "Requests answered by the activator, by outcome",
            requests.clone(),
        );
        registry.register(
            "appenv_activator_held_requests",
            "Requests held now until a web Pod of their environment is Ready",
            held.clone(),
        );
        registry.register(
            "appenv_activator_annotation_writes",
            "Writes of the appenv.dev/last-request annotation, by reason (activity, wake) and result",
            writes.clone(),
        );
        // Every series from the start, at zero: a rate over a series that appears only with its
        // first count misses that count.
        for outcome in Outcome::ALL {
            let _ = requests.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in [Reason::Activity, Reason::Wake] {
            for result in [
                WriteResult::Written,
                WriteResult::Conflict,
                WriteResult::Failed,
            ] {
                let _ = writes.get_or_create(&WriteLabels {
                    reason: reason.as_str(),
                    result,
                });
            }
        }
        Self {
            registry,
            requests,
            held,
            writes,
        }
    }
}

impl Metrics {
    pub(crate) fn answered(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn set_held(&self, held: usize) {
        self.held.set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    pub(crate) fn wrote(&self, reason: Reason, result: WriteResult) {
        let labels = WriteLabels {
            reason: reason.as_str(),
            result,
        };
        self.writes.get_or_create(&labels).inc();
    }

    /// Requests answered with `outcome` so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// Writes of the annotation for `reason` that ended with `result` so far.
    pub fn writes(&self, reason: Reason, result: WriteResult) -> u64 {
        let labels = WriteLabels {
            reason: reason.as_str(),
            result,
        };
        self.writes.get_or_create(&labels).get()
    }

    /// Requests held now.
    pub fn held(&self) -> i64 {
        self.held.get()
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_family_with_its_labels() {
        let metrics = Metrics::default();
        metrics.answered(Outcome::Proxied);
        metrics.answered(Outcome::Proxied);
        metrics.answered(Outcome::UnknownHost);
        metrics.set_held(3);
        metrics.wrote(Reason::Wake, WriteResult::Written);
        metrics.wrote(Reason::Activity, WriteResult::Conflict);
        let text = metrics.render().expect("renders");
        for line in [
            "appenv_activator_requests_total{outcome=\"proxied\"} 2",
            "appenv_activator_requests_total{outcome=\"unknown_host\"} 1",
            "appenv_activator_requests_total{outcome=\"over_limit\"} 0",
            "appenv_activator_held_requests 3",
            "appenv_activator_annotation_writes_total{reason=\"wake\",result=\"written\"} 1",
            "appenv_activator_annotation_writes_total{reason=\"activity\",result=\"conflict\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert_eq!(metrics.requests(Outcome::Proxied), 2);
        assert_eq!(metrics.writes(Reason::Wake, WriteResult::Written), 1);
    }
}
