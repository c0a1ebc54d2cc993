//! The chart's Grafana dashboard and alerting rules (`charts/appenv-operator/files/monitoring/`):
//! every metric their queries name is one the operator's `/metrics` serves (or Prometheus's own
//! `up`), the dashboard shows every family served, and the chart renders both with a real Helm
//! v4 (helm-sdkpy) on the local control plane. `.ci/check-monitoring.sh` has promtool check the
//! rules, run their unit tests and parse the dashboard's queries.

mod common;

use appenv_api::Phase;
use appenv_controller::Metrics;
use appenv_controller::http::{self, Readiness};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::conditions;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const RULES: &str = "charts/appenv-operator/files/monitoring/prometheus-rules.yaml";
const DASHBOARD: &str = "charts/appenv-operator/files/monitoring/grafana-dashboard.json";
/// The job the rules file selects: the metrics Service of a release named `appenv-operator`.
const PLACEHOLDER_JOB: &str = "job=\"appenv-operator-metrics\"";
/// AppenvBackupStale's threshold in the rules file (26h), which `prometheusRule.backupStaleAfter`
/// replaces.
const PLACEHOLDER_STALE: &str = "> 26 * 3600";
/// Series Prometheus makes itself when it scrapes.
const PROMETHEUS_OWN: &[&str] = &["up"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rules() -> Value {
    serde_norway::from_str(&read(RULES)).expect("the rules file is YAML")
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// The text `/metrics` serves, from the operator's own HTTP server, once every metric it can
/// count has counted something: a family without a sample (no error yet; `appenv_leader`
/// before leader election spoke) is not served at all.
async fn scrape() -> String {
    let metrics = Arc::new(Metrics::default());
    drop(metrics.reconcile("a"));
    metrics.error(appenv_controller::Error::Missing("a".to_owned()).category());
    metrics.phase("a", Phase::Degraded);
    metrics.backup("a", Some(1_767_225_600));
    metrics.leader(true);
    let port = common::free_port();
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    let server = tokio::spawn(http::serve(addr, metrics, Arc::new(Readiness::default())));
    let mut last = None;
    for _ in 0..100 {
        let got =
            tokio::task::spawn_blocking(move || appenv_localcluster::http_get(port, "/metrics"))
                .await
                .expect("the GET ran");
        match got {
            Ok((200, text)) => {
                server.abort();
                return text;
            }
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/metrics did not answer: {last:?}")
}

/// The series names a scrape serves: each family of a `# TYPE` line (a histogram as its
/// `_bucket`, `_sum` and `_count`), and each sample's name.
fn served_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            } else {
                names.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The families of a scrape (`# TYPE` names).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Skip from `open` at `chars[i]` past its matching `close`, stepping over quoted strings.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == open => {
                depth += 1;
                i += 1;
            }
            c if c == close => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// Skip past the string that starts at `chars[i]`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    j + 1
}

/// The metric names a PromQL expression selects: identifiers that are neither a function (an
/// identifier before `(`), a keyword or aggregation, a label name (in `{...}`, or in the parentheses after
/// `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`), a number nor a duration.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Operators, and the aggregations (which may come before their modifier: `sum by (x) (..)`).
    const KEYWORDS: &[&str] = &[
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `1e3`, `0.95`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before_paren = chars.get(next) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if before_paren {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if !KEYWORDS.contains(&lower.as_str()) && !before_paren {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every PromQL query of the rules (`expr`) and of the dashboard (panel targets, and the metric
/// of a `label_values(metric, label)` variable), with where it is.
fn queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules()["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            out.push((format!("rule {}", name.unwrap_or("?")), expr));
        }
    }
    let dashboard = dashboard();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr").to_owned();
            out.push((format!("panel {title}"), expr));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("query");
        let args = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(..)"));
        if let Some((selector, _label)) = args.rsplit_once(',') {
            out.push((
                format!("variable {}", variable["name"]),
                selector.to_owned(),
            ));
        }
    }
    out
}

#[test]
fn the_metric_name_reader_finds_metrics_not_functions_labels_or_durations() {
    let expr = r#"histogram_quantile(0.95, sum by (le, "x") (rate(a_bucket{job=~"$job", b="}"}[$__rate_interval] offset 5m)))
      / ignoring (category) group_left sum without(pod) (b_total) > bool 1e3 and on(x) absent(up == 1)"#;
    assert_eq!(
        metric_names(expr),
        ["a_bucket", "b_total", "up"]
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    );
    assert!(metric_names("sum(rate(x[5m]))").contains("x"));
    assert!(metric_names("vector(1)").is_empty());
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_one_metrics_serves() {
    let text = scrape().await;
    let mut served = served_names(&text);
    served.extend(PROMETHEUS_OWN.iter().map(|n| (*n).to_owned()));
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for (place, expr) in queries() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            if !served.contains(&name) {
                unknown.push(format!("{place}: {name}"));
            }
            used.insert(name);
        }
        // A phase the operator never reports would match nothing.
        for (at, _) in expr.match_indices("phase=\"") {
            let value: String = expr[at + 7..].chars().take_while(|c| *c != '"').collect();
            assert!(
                Phase::parse(&value).is_some(),
                "{place}: phase {value:?} is no Phase"
            );
        }
    }
    assert!(
        unknown.is_empty(),
        "not served by /metrics: {unknown:?}\nserved: {served:?}\n{text}"
    );
    // The dashboard shows every family the operator serves.
    let shown: BTreeSet<String> = queries()
        .into_iter()
        .filter(|(place, _)| !place.starts_with("rule "))
        .flat_map(|(_, expr)| metric_names(&expr))
        .collect();
    let families = families(&text);
    assert!(families.len() >= 6, "{families:?}");
    for family in &families {
        assert!(
            shown.iter().any(|name| name.starts_with(family.as_str())),
            "the dashboard does not show {family}"
        );
    }
    // The alerts watch the operator's liveness, leadership, errors, environments and backups.
    for name in [
        "up",
        "appenv_leader",
        "appenv_reconcile_errors_total",
        "appenv_environments",
        "appenv_backup_last_success_timestamp_seconds",
    ] {
        assert!(used.contains(name), "no query uses {name}");
    }
}

/// Run `.ci/helm.py` (helm-sdkpy) against the local control plane in `namespace`.
fn helm(namespace: &str, args: &[&str]) -> Result<Value, String> {
    let python = std::env::var("APPENV_HELM_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            let out = Command::new("bash")
                .arg(repo().join(".ci/helm-venv.sh"))
                .output()
                .expect("run .ci/helm-venv.sh");
            assert!(out.status.success(), ".ci/helm-venv.sh failed");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        });
    let out = Command::new(python)
        .arg(repo().join(".ci/helm.py"))
        .arg("--kubeconfig")
        .arg(appenv_localcluster::shared().kubeconfig())
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("run .ci/helm.py");
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| format!("helm.py printed no JSON: {e}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A minimal `monitoring.coreos.com/v1` CRD of the Prometheus Operator's `kind` (PrometheusRule,
/// ServiceMonitor), with its schema left open.
fn monitoring_crd(kind: &str) -> CustomResourceDefinition {
    let singular = kind.to_lowercase();
    let plural = format!("{singular}s");
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": format!("{kind}List"),
                "plural": plural, "singular": singular},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .expect("a CRD")
}

#[tokio::test]
async fn the_chart_renders_the_dashboard_and_the_rules() {
    const RELEASE: &str = "monitoring";
    const NS: &str = "appenv-monitoring";
    let client = common::client().await;
    let chart = repo().join("charts/appenv-operator");
    let chart = chart.to_str().expect("path");
    let values = json!({
        "replicaCount": 0,
        "dashboard": {"enabled": true, "annotations": {"grafana_folder": "appenv"}},
        "prometheusRule": {"enabled": true, "labels": {"release": "kube-prometheus-stack"},
            "backupStaleAfter": "8d"},
        "metrics": {"serviceMonitor": {"enabled": true}},
        "activator": {"enabled": true, "replicas": 0},
    })
    .to_string();
    let install = ["install", RELEASE, chart, "--values-json", &values];
    let install = [&install[..], &["--no-wait", "--create-namespace"]].concat();

    // Without the Prometheus Operator's API the install stops, saying why.
    let refused = helm(NS, &install).expect_err("no monitoring.coreos.com/v1 yet");
    assert!(
        refused.contains("does not serve monitoring.coreos.com/v1"),
        "{refused}"
    );

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ["PrometheusRule", "ServiceMonitor"] {
        let crd = monitoring_crd(kind);
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("create the {kind} CRD: {e}"));
        common::wait_for(
            &crds,
            &crd.metadata.name.expect("a name"),
            Duration::from_secs(60),
            "established",
            conditions::is_crd_established(),
        )
        .await;
    }
    // A threshold that is no whole number of minutes, hours or days is refused, named.
    let bad = json!({"prometheusRule": {"enabled": true, "backupStaleAfter": "26 hours"}});
    let bad = bad.to_string();
    let bad = [
        "install",
        RELEASE,
        chart,
        "--values-json",
        &bad,
        "--no-wait",
    ];
    let refused = helm(NS, &bad).expect_err("backupStaleAfter 26 hours");
    assert!(refused.contains("backupStaleAfter"), "{refused}");
    let installed = helm(NS, &install).unwrap_or_else(|e| panic!("helm install: {e}"));
    assert_eq!(installed["info"]["status"], "deployed", "{installed:#}");

    // The dashboard ConfigMap: the file, with the sidecar's label.
    let map = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("monitoring-appenv-operator-dashboard")
        .await
        .expect("the dashboard ConfigMap");
    let labels = map.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("grafana_dashboard").map(String::as_str),
        Some("1")
    );
    let annotations = map.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("grafana_folder").map(String::as_str),
        Some("appenv")
    );
    let data = map.data.unwrap_or_default();
    let shipped: Value = serde_json::from_str(
        data.get("appenv-operator.json")
            .expect("appenv-operator.json"),
    )
    .expect("the shipped dashboard is JSON");
    assert_eq!(shipped, dashboard());

    // The PrometheusRule: the rules file, selecting this release's metrics job, with the
    // backups' threshold of the values.
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule");
    let rules_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk));
    let rule = rules_api
        .get("monitoring-appenv-operator")
        .await
        .expect("the PrometheusRule");
    let rule_labels = rule.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        rule_labels.get("release").map(String::as_str),
        Some("kube-prometheus-stack")
    );
    let text = read(RULES);
    assert!(text.contains(PLACEHOLDER_JOB));
    assert_eq!(text.matches(PLACEHOLDER_STALE).count(), 1, "{text}");
    let expected: Value = serde_norway::from_str(
        &text
            .replace(
                PLACEHOLDER_JOB,
                "job=\"monitoring-appenv-operator-metrics\"",
            )
            .replace(PLACEHOLDER_STALE, "> 8 * 86400"),
    )
    .expect("YAML");
    assert_eq!(rule.data["spec"], expected);
    let spec = rule.data["spec"].to_string();
    assert!(
        spec.contains(r#"job=\"monitoring-appenv-operator-metrics\""#),
        "{spec}"
    );
    assert!(
        !spec.contains(r#"job=\"appenv-operator-metrics\""#),
        "{spec}"
    );

    // A ServiceMonitor each for the operator's and the activator's metrics Services, each
    // selecting exactly the labels of its Service.
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let monitors: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk));
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), NS);
    for (monitor, service) in [
        (
            "monitoring-appenv-operator",
            "monitoring-appenv-operator-metrics",
        ),
        (
            "monitoring-appenv-operator-activator",
            "monitoring-appenv-operator-activator",
        ),
    ] {
        let monitor = monitors
            .get(monitor)
            .await
            .unwrap_or_else(|e| panic!("the ServiceMonitor {monitor}: {e}"));
        let labels = services
            .get(service)
            .await
            .unwrap_or_else(|e| panic!("the Service {service}: {e}"))
            .metadata
            .labels
            .unwrap_or_default();
        let selector = monitor.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        assert!(!selector.is_empty());
        for (key, value) in selector {
            assert_eq!(
                labels.get(key).map(String::as_str),
                value.as_str(),
                "{service} lacks {key} of the ServiceMonitor's selector"
            );
        }
        assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], "metrics");
    }

    helm(NS, &["uninstall", RELEASE]).unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    assert!(
        rules_api
            .get_opt("monitoring-appenv-operator")
            .await
            .expect("get")
            .is_none(),
        "the PrometheusRule survived helm uninstall"
    );
    common::cleanup(&client, NS).await;
}
