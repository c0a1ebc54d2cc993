#!/usr/bin/env bash
# The chart's alerting rules and Grafana dashboard, offline: `promtool check rules` and the rules'
# unit tests (`promtool test rules`), then every PromQL query of the dashboard parsed by promtool
# too (as recording rules of a scratch file, Grafana's $variables given sample values). Needs
# promtool and jq (.ci/debian-tools.sh installs promtool). That each metric is one /metrics
# serves is tested by operator/appenv/tests/monitoring.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[check-monitoring] $*" >&2; }
rules=charts/appenv-operator/files/monitoring/prometheus-rules.yaml
dashboard=charts/appenv-operator/files/monitoring/grafana-dashboard.json

promtool check rules "$rules"
promtool test rules .ci/monitoring/prometheus-rules.test.yaml

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
jq -e '[.panels[].targets[]] | length > 0' "$dashboard" >/dev/null \
  || { say "$dashboard has no queries"; exit 1; }
# One recording rule per query; JSON is YAML, so promtool reads the file as it is.
jq '{groups: [{name: "dashboard", rules: [.panels[] | .title as $title | .targets[]
      | {record: "dashboard_query", expr: (.expr
          | gsub("\\$__rate_interval"; "5m") | gsub("\\$job"; "appenv-operator-metrics")),
         labels: {panel: $title, query: .refId}}]}]}' "$dashboard" > "$scratch/dashboard-queries.json"
say "parsing the dashboard's $(jq '.groups[0].rules | length' "$scratch/dashboard-queries.json") queries"
promtool check rules --lint-fatal "$scratch/dashboard-queries.json"
