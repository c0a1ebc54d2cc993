//! The validate step: an `AppEnvironment` in, a fully defaulted [`Model`] out, or every
//! violation found, each naming the field path and the rule. The same invariants are CEL rules
//! in the CRD, but a server may not enforce those (1.20 ignores them), and `appenv render`
//! has no server at all: this is where they are always enforced.

use crate::quantity;
pub use appenv_api::field::{FieldError, Invalid, truncate};
use appenv_api::{
    AppEnvironment, DeletionPolicy, EgressRule, EmbeddedEngine, HttpProbe, IssuerKind, MAX_EGRESS,
    MAX_ENV, MAX_ENV_FROM, MAX_PULL_SECRETS, MAX_WORKERS, Profile, PullPolicy, SecuritySpec,
    StorageSpec,
};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Operator-wide settings that validation and the builders depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Domain under which previews get a host: `<app>-pr-<n>.<domain>`.
    pub preview_domain: Option<String>,
    /// IngressClass for Ingresses that name none.
    pub ingress_class: Option<String>,
    /// Namespace of the ingress controller (allowed in by previews' NetworkPolicy).
    pub ingress_namespace: String,
    /// TTL of previews that set none.
    pub preview_ttl: Duration,
    /// ResourceQuota of preview namespaces.
    pub preview_quota: Quota,
    /// A wildcard certificate (`namespace/name` of a TLS Secret) copied into every preview
    /// namespace under the same name and used by previews' Ingresses that set no TLS.
    pub wildcard_tls: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    pub storage: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            preview_domain: None,
            ingress_class: None,
            ingress_namespace: "ingress-nginx".to_owned(),
            preview_ttl: Duration::from_secs(72 * 3600),
            preview_quota: Quota {
                cpu: "4".into(),
                memory: "8Gi".into(),
                pods: "40".into(),
                storage: "20Gi".into(),
            },
            wildcard_tls: None,
        }
    }
}

/// A validated AppEnvironment with every default applied: what the builders consume.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// `metadata.name` of the AppEnvironment.
    pub name: String,
    pub app: String,
    pub profile: Profile,
    pub namespace: NamespaceModel,
    pub image: String,
    pub pull_policy: Option<String>,
    pub pull_secrets: Vec<String>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub security: SecuritySpec,
    pub suspend: bool,
    pub web: WebModel,
    pub workers: Vec<WorkerModel>,
    pub redis: Option<RedisModel>,
    pub database: Option<DatabaseModel>,
    pub deletion_policy: DeletionPolicy,
    pub migrations: Option<MigrationsModel>,
    pub preview: Option<PreviewModel>,
    pub guardrails: Option<Quota>,
    pub ingress_namespace: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceModel {
    pub name: String,
    pub owned: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Destinations a preview's Pods may reach outside the namespace (validated).
    pub egress: Vec<EgressRule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebModel {
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub port: i32,
    pub replicas: i32,
    /// One writer (embedded database): Recreate strategy, never two Pods.
    pub recreate: bool,
    pub readiness: Option<ProbeModel>,
    pub liveness: Option<ProbeModel>,
    pub resources: ResourceRequirements,
    pub env: Vec<EnvVar>,
    pub service_port: i32,
    pub ingress: Option<IngressModel>,
    pub pod_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeModel {
    pub path: String,
    pub initial_delay_seconds: i32,
    pub period_seconds: i32,
    pub timeout_seconds: i32,
    pub failure_threshold: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngressModel {
    pub host: String,
    pub class_name: Option<String>,
    pub path: String,
    pub tls: Option<TlsModel>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TlsModel {
    Secret(String),
    Issuer { name: String, kind: IssuerKind },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerModel {
    pub name: String,
    /// The worker's own image; `None` runs the environment's image (and follows its rollout).
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub replicas: i32,
    /// (variable, value)
    pub concurrency: Option<(String, i32)>,
    pub singleton: bool,
    pub resources: ResourceRequirements,
    pub env: Vec<EnvVar>,
    pub pod_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisModel {
    pub image: String,
    pub resources: ResourceRequirements,
    pub persistence: Option<StorageModel>,
    /// `REDIS_URL` first, then the user's extra names.
    pub url_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageModel {
    pub size: Quantity,
    pub storage_class_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DatabaseModel {
    Postgres(PostgresModel),
    Embedded(EmbeddedModel),
    External {
        secret: String,
        key: String,
        url_env: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresModel {
    pub image: String,
    pub extensions: Vec<String>,
    pub database: String,
    pub storage: StorageModel,
    pub resources: ResourceRequirements,
    pub url_env: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedModel {
    pub engine: EmbeddedEngine,
    pub path: String,
    /// The directory of `path`: the volume's mount point.
    pub mount_path: String,
    pub path_env: String,
    pub storage: StorageModel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MigrationsModel {
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub timeout_seconds: i64,
    pub resources: ResourceRequirements,
    pub pod_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreviewModel {
    pub pull_request: i64,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub ttl: Duration,
}

pub const DEFAULT_POSTGRES_IMAGE: &str = "pgvector/pgvector:pg16";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.4-alpine";
pub const REDIS_URL_ENV: &str = "REDIS_URL";
const RESERVED_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "default"];

/// Resources a profile gives a component that sets none: (requests cpu, memory, limits cpu, memory).
fn profile_resources(profile: Profile, component: &str) -> ResourceRequirements {
    let (rc, rm, lc, lm) = match (profile, component) {
        (Profile::Preview, "web") => ("50m", "128Mi", "500m", "512Mi"),
        (Profile::Preview, "worker") => ("100m", "256Mi", "500m", "512Mi"),
        (Profile::Preview, "redis") => ("50m", "128Mi", "200m", "256Mi"),
        (Profile::Preview, _) => ("100m", "256Mi", "1", "1Gi"),
        (Profile::Production, "web") => ("250m", "512Mi", "1", "1Gi"),
        (Profile::Production, "worker") => ("250m", "512Mi", "1", "1Gi"),
        (Profile::Production, "redis") => ("100m", "256Mi", "500m", "512Mi"),
        (Profile::Production, _) => ("250m", "512Mi", "2", "2Gi"),
    };
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(rc, rm)),
        limits: Some(pair(lc, lm)),
        ..ResourceRequirements::default()
    }
}

/// An IP block `address/prefix` as the API server reads it (Go's `net.ParseCIDR`): the address,
/// the prefix length and the address width (32 or 128 bits).
fn parse_cidr(text: &str) -> Option<(u128, u32, u32)> {
    let (address, prefix) = text.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let prefix: u32 = prefix.parse().ok()?;
    let (bits, width) = match address.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        std::net::IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    (prefix <= width).then_some((bits, prefix, width))
}

/// The network part of `bits` under a `prefix` of `width` bits.
fn network(bits: u128, prefix: u32, width: u32) -> u128 {
    if prefix == 0 {
        return 0;
    }
    // 1 <= prefix <= width <= 128: the shift is below 128.
    let mask = u128::MAX << (width - prefix);
    bits & mask
}

fn check_egress(path: &str, rule: &EgressRule, errors: &mut Errors) {
    const CIDR: &str = "must be an IP block in CIDR notation, e.g. 0.0.0.0/0 or 203.0.113.0/24";
    for (field, len) in [("except", rule.except.len()), ("ports", rule.ports.len())] {
        errors.at_most(&format!("{path}.{field}"), len, MAX_EGRESS);
    }
    let block = parse_cidr(&rule.cidr);
    if block.is_none() {
        errors.add(
            format!("{path}.cidr"),
            format!("{:?} {CIDR}", truncate(&rule.cidr)),
        );
    }
    for (i, except) in rule.except.iter().enumerate() {
        let at = format!("{path}.except[{i}]");
        match (parse_cidr(except), block) {
            (None, _) => errors.add(at, format!("{:?} {CIDR}", truncate(except))),
            (Some((bits, prefix, width)), Some((net, net_prefix, net_width)))
                if width != net_width
                    || prefix <= net_prefix
                    || network(bits, net_prefix, width) != network(net, net_prefix, width) =>
            {
                errors.add(
                    at,
                    format!(
                        "{:?} must be a smaller block inside cidr {:?}",
                        truncate(except),
                        truncate(&rule.cidr)
                    ),
                );
            }
            _ => {}
        }
    }
    for (i, port) in rule.ports.iter().enumerate() {
        if !(1..=65535).contains(port) {
            errors.add(
                format!("{path}.ports[{i}]"),
                format!("{port} must be a TCP port between 1 and 65535"),
            );
        }
    }
}

/// Collects violations while the model is built, so one pass reports them all.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A list longer than the CRD's maxItems (which a server enforces, `appenv render` not).
    fn at_most(&mut self, path: &str, len: usize, max: usize) {
        if len > max {
            self.add(
                path,
                format!("at most {max} items (as the CRD says), not {len}"),
            );
        }
    }

    fn dns_label(&mut self, path: &str, value: &str, max: usize) {
        if !is_dns_label(value, max) {
            self.add(
                path,
                format!(
                    "{:?} must be a DNS label: at most {max} lower-case letters, digits and '-', \
                     starting with a letter and ending with a letter or digit",
                    truncate(value)
                ),
            );
        }
    }

    fn env_name(&mut self, path: &str, value: &str) {
        if !is_env_name(value) {
            self.add(
                path,
                format!(
                    "{:?} is not a valid environment variable name (letters, digits, '_', '-', \
                     '.', not starting with a digit)",
                    truncate(value)
                ),
            );
        }
    }

    fn resources(&mut self, path: &str, resources: &ResourceRequirements) {
        let maps = [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ];
        for (kind, map) in maps {
            for (name, value) in map.iter().flatten() {
                if quantity::parse(&value.0).is_none() {
                    self.add(
                        format!("{path}.{kind}.{name}"),
                        format!(
                            "{:?} is not a Kubernetes quantity (e.g. 100m, 1, 256Mi, 5Gi)",
                            truncate(&value.0)
                        ),
                    );
                }
            }
        }
        for name in ["cpu", "memory"] {
            let get = |m: &Option<BTreeMap<String, Quantity>>| {
                m.as_ref()
                    .and_then(|m| m.get(name))
                    .and_then(|q| quantity::parse(&q.0))
            };
            if let (Some(request), Some(limit)) = (get(&resources.requests), get(&resources.limits))
                && request > limit
            {
                self.add(
                    format!("{path}.requests.{name}"),
                    format!("must not exceed limits.{name}"),
                );
            }
        }
    }

    fn storage(&mut self, path: &str, storage: &StorageSpec) -> StorageModel {
        if quantity::parse(&storage.size.0).is_none_or(|v| v <= 0.0) {
            self.add(
                format!("{path}.size"),
                format!(
                    "{:?} must be a positive quantity, e.g. 5Gi",
                    truncate(&storage.size.0)
                ),
            );
        }
        if let Some(class) = &storage.storage_class_name
            && !is_dns_subdomain(class)
        {
            self.add(
                format!("{path}.storageClassName"),
                "must be a DNS subdomain name",
            );
        }
        StorageModel {
            size: storage.size.clone(),
            storage_class_name: storage.storage_class_name.clone(),
        }
    }
}

pub fn is_dns_label(value: &str, max: usize) -> bool {
    let bytes = value.as_bytes();
    !value.is_empty()
        && value.len() <= max
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !value.ends_with('-')
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|part| {
            let bytes = part.as_bytes();
            !part.is_empty()
                && part.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_env_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.as_bytes()[0].is_ascii_digit()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && is_label_value(name) && !name.is_empty()
}

fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.is_empty()
        || (value.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// `72h`, `30m`, `45s`, `7d`.
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    (value > 0).then(|| Duration::from_secs(value * unit))
}

fn probe(
    path: &str,
    spec: Option<&HttpProbe>,
    delay: i32,
    period: i32,
    errors: &mut Errors,
) -> Option<ProbeModel> {
    if spec.is_some_and(|p| !p.enabled) {
        return None;
    }
    let http_path = spec
        .and_then(|p| p.path.clone())
        .unwrap_or_else(|| "/healthz".to_owned());
    if !http_path.starts_with('/')
        || http_path.chars().any(char::is_whitespace)
        || http_path.len() > 256
    {
        errors.add(
            format!("{path}.path"),
            "must start with '/', contain no spaces and be at most 256 characters",
        );
    }
    let model = ProbeModel {
        path: http_path,
        initial_delay_seconds: spec.and_then(|p| p.initial_delay_seconds).unwrap_or(delay),
        period_seconds: spec.and_then(|p| p.period_seconds).unwrap_or(period),
        timeout_seconds: spec.and_then(|p| p.timeout_seconds).unwrap_or(1),
        failure_threshold: spec.and_then(|p| p.failure_threshold).unwrap_or(3),
    };
    for (field, value, min, max) in [
        ("initialDelaySeconds", model.initial_delay_seconds, 0, 3600),
        ("periodSeconds", model.period_seconds, 1, 3600),
        ("timeoutSeconds", model.timeout_seconds, 1, 3600),
        ("failureThreshold", model.failure_threshold, 1, 100),
    ] {
        if !(min..=max).contains(&value) {
            errors.add(
                format!("{path}.{field}"),
                format!("must be between {min} and {max}"),
            );
        }
    }
    Some(model)
}

fn check_annotations(path: &str, annotations: &BTreeMap<String, String>, errors: &mut Errors) {
    for key in annotations.keys() {
        if !is_label_key(key) {
            errors.add(
                format!("{path}[{}]", truncate(key)),
                "must be a valid annotation key",
            );
        }
    }
}

fn check_env(path: &str, env: &[EnvVar], reserved: &BTreeMap<String, &str>, errors: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        let at = format!("{path}[{i}].name");
        errors.env_name(&at, &var.name);
        if let Some(owner) = reserved.get(&var.name) {
            errors.add(
                &at,
                format!(
                    "{} is set by appenv from {owner}; remove it here",
                    truncate(&var.name)
                ),
            );
        }
        if !seen.insert(var.name.as_str()) {
            errors.add(&at, format!("{} is listed twice", truncate(&var.name)));
        }
    }
}

/// Validate an AppEnvironment against every rule and apply the defaults.
#[allow(clippy::too_many_lines)] // split by spec section next (issue 13)
pub fn validate(env: &AppEnvironment, settings: &Settings) -> Result<Model, Invalid> {
    let mut errors = Errors::default();
    let spec = &env.spec;
    let name = env.metadata.name.clone().unwrap_or_default();

    errors.dns_label("spec.app", &spec.app, 40);
    if name.is_empty() {
        errors.add("metadata.name", "is required");
    } else if !is_dns_subdomain(&name) || name.len() > 63 {
        errors.add(
            "metadata.name",
            "must be a DNS name of at most 63 characters",
        );
    }
    if spec.image.trim().is_empty()
        || spec.image.chars().any(char::is_whitespace)
        || spec.image.len() > 512
    {
        errors.add(
            "spec.image",
            "must be an image reference without spaces, e.g. ghcr.io/org/app:v1.2.3",
        );
    }
    errors.at_most("spec.env", spec.env.len(), MAX_ENV);
    errors.at_most("spec.envFrom", spec.env_from.len(), MAX_ENV_FROM);
    errors.at_most(
        "spec.imagePullSecrets",
        spec.image_pull_secrets.len(),
        MAX_PULL_SECRETS,
    );
    errors.at_most("spec.workers", spec.workers.len(), MAX_WORKERS);
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if !is_dns_subdomain(secret) {
            errors.add(
                format!("spec.imagePullSecrets[{i}]"),
                "must be a Secret name (DNS subdomain)",
            );
        }
    }
    for (field, id) in [
        ("runAsUser", spec.security.run_as_user),
        ("runAsGroup", spec.security.run_as_group),
        ("fsGroup", spec.security.fs_group),
    ] {
        if !(1..=i64::from(i32::MAX)).contains(&id) {
            errors.add(
                format!("spec.security.{field}"),
                "must be a non-root id from 1 to 2147483647",
            );
        }
    }

    // Preview.
    let preview = spec.preview.as_ref().map(|p| {
        if p.pull_request < 1 {
            errors.add(
                "spec.preview.pullRequest",
                "must be a positive pull request number",
            );
        }
        let ttl = match &p.ttl {
            None => settings.preview_ttl,
            Some(text) => parse_ttl(text).unwrap_or_else(|| {
                errors.add(
                    "spec.preview.ttl",
                    format!(
                        "{:?} must be a positive number followed by s, m, h or d, e.g. 72h",
                        truncate(text)
                    ),
                );
                settings.preview_ttl
            }),
        };
        PreviewModel {
            pull_request: p.pull_request,
            repository: p.repository.clone(),
            branch: p.branch.clone(),
            sha: p.sha.clone(),
            ttl,
        }
    });

    // Namespace.
    let ns_name = match (&spec.namespace.name, &preview) {
        (Some(ns), _) => ns.clone(),
        (None, Some(p)) => format!("{}-pr-{}", spec.app, p.pull_request),
        (None, None) => name.clone(),
    };
    if spec.namespace.name.is_some() {
        errors.dns_label("spec.namespace.name", &ns_name, 63);
    } else if !is_dns_label(&ns_name, 63) {
        errors.add(
            "spec.namespace.name",
            format!(
                "the default namespace name {:?} is not a DNS label; set spec.namespace.name",
                truncate(&ns_name)
            ),
        );
    }
    if RESERVED_NAMESPACES.contains(&ns_name.as_str())
        && !(spec.namespace.adopt && ns_name == "default")
    {
        errors.add(
            "spec.namespace.name",
            format!("{ns_name:?} is a system namespace; appenv cannot own it"),
        );
    }
    for (key, value) in &spec.namespace.labels {
        if !is_label_key(key) || !is_label_value(value) {
            errors.add(
                format!("spec.namespace.labels[{}]", truncate(key)),
                "must be a valid label key and value",
            );
        }
    }
    for key in spec.namespace.annotations.keys() {
        if !is_label_key(key) {
            errors.add(
                format!("spec.namespace.annotations[{}]", truncate(key)),
                "must be a valid annotation key",
            );
        }
    }

    errors.at_most(
        "spec.namespace.egress",
        spec.namespace.egress.len(),
        MAX_EGRESS,
    );
    for (i, rule) in spec.namespace.egress.iter().enumerate() {
        check_egress(&format!("spec.namespace.egress[{i}]"), rule, &mut errors);
    }

    // Database.
    let engine_name = |e: EmbeddedEngine| match e {
        EmbeddedEngine::DuckDB => "DuckDB",
        EmbeddedEngine::SQLite => "SQLite",
    };
    let mut database = None;
    if let Some(db) = &spec.database {
        let kinds = [
            db.postgres.is_some(),
            db.embedded.is_some(),
            db.external.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            errors.add(
                "spec.database",
                "set exactly one of postgres, embedded or external",
            );
        }
        if let Some(pg) = &db.postgres {
            let extensions = pg
                .extensions
                .clone()
                .unwrap_or_else(|| vec!["vector".to_owned()]);
            for (i, ext) in extensions.iter().enumerate() {
                // Interpolated into SQL: only plain identifiers.
                let ok = !ext.is_empty()
                    && ext.len() <= 63
                    && ext
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    errors.add(
                        format!("spec.database.postgres.extensions[{i}]"),
                        "must be an extension name (lower-case letters, digits, '_')",
                    );
                }
            }
            let database_name = pg
                .database
                .clone()
                .unwrap_or_else(|| spec.app.replace('-', "_"));
            let ok = !database_name.is_empty()
                && database_name.len() <= 63
                && database_name.as_bytes()[0].is_ascii_lowercase()
                && database_name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                errors.add(
                    "spec.database.postgres.database",
                    "must be lower-case letters, digits and '_', starting with a letter",
                );
            }
            let url_env = pg
                .url_env
                .clone()
                .unwrap_or_else(|| "DATABASE_URL".to_owned());
            errors.env_name("spec.database.postgres.urlEnv", &url_env);
            let default_size = if spec.profile == Profile::Preview {
                "1Gi"
            } else {
                "10Gi"
            };
            let storage = pg.storage.clone().unwrap_or(StorageSpec {
                size: Quantity(default_size.into()),
                storage_class_name: None,
            });
            let resources = pg
                .resources
                .clone()
                .unwrap_or_else(|| profile_resources(spec.profile, "postgres"));
            errors.resources("spec.database.postgres.resources", &resources);
            database = Some(DatabaseModel::Postgres(PostgresModel {
                image: pg
                    .image
                    .clone()
                    .unwrap_or_else(|| DEFAULT_POSTGRES_IMAGE.to_owned()),
                extensions,
                database: database_name,
                storage: errors.storage("spec.database.postgres.storage", &storage),
                resources,
                url_env,
            }));
        } else if let Some(em) = &db.embedded {
            let path = em.path.clone();
            let mount_path = path
                .rsplit_once('/')
                .map(|(dir, _)| dir.to_owned())
                .unwrap_or_default();
            let file = path.rsplit_once('/').map(|(_, f)| f).unwrap_or_default();
            if !path.starts_with('/')
                || mount_path.is_empty()
                || file.is_empty()
                || path.split('/').any(|p| p == ".." || p == ".")
                || path.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                errors.add(
                    "spec.database.embedded.path",
                    format!(
                        "{:?} must be an absolute file path inside a directory, e.g. /data/ledger.duckdb (the directory becomes the volume)",
                        truncate(&path)
                    ),
                );
            }
            if mount_path == "/tmp" {
                errors.add(
                    "spec.database.embedded.path",
                    "must not be under /tmp (an ephemeral directory)",
                );
            }
            let path_env = em
                .path_env
                .clone()
                .unwrap_or_else(|| "DATABASE_PATH".to_owned());
            errors.env_name("spec.database.embedded.pathEnv", &path_env);
            let storage = em.storage.clone().unwrap_or(StorageSpec {
                size: Quantity("5Gi".into()),
                storage_class_name: None,
            });
            database = Some(DatabaseModel::Embedded(EmbeddedModel {
                engine: em.engine,
                path,
                mount_path,
                path_env,
                storage: errors.storage("spec.database.embedded.storage", &storage),
            }));
        } else if let Some(ext) = &db.external {
            if !is_dns_subdomain(&ext.secret_ref.name) {
                errors.add(
                    "spec.database.external.secretRef.name",
                    "must be a Secret name (DNS subdomain)",
                );
            }
            let key_ok = !ext.secret_ref.key.is_empty()
                && ext.secret_ref.key.len() <= 253
                && ext
                    .secret_ref
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !key_ok {
                errors.add(
                    "spec.database.external.secretRef.key",
                    "must be a Secret key (letters, digits, '-', '_', '.')",
                );
            }
            let url_env = ext
                .url_env
                .clone()
                .unwrap_or_else(|| "DATABASE_URL".to_owned());
            errors.env_name("spec.database.external.urlEnv", &url_env);
            database = Some(DatabaseModel::External {
                secret: ext.secret_ref.name.clone(),
                key: ext.secret_ref.key.clone(),
                url_env,
            });
        }
    }
    // From the spec, not the model: with two databases set (already an error) the rules that
    // protect an embedded file's single writer must still be checked.
    let embedded = spec
        .database
        .as_ref()
        .and_then(|d| d.embedded.as_ref())
        .map(|e| e.engine);
    let deletion_policy = spec
        .database
        .as_ref()
        .and_then(|d| d.deletion_policy)
        .unwrap_or(match spec.profile {
            Profile::Preview => DeletionPolicy::Delete,
            Profile::Production => DeletionPolicy::Retain,
        });

    // Redis.
    let redis = spec.redis.as_ref().filter(|r| r.enabled).map(|r| {
        let mut url_env = vec![REDIS_URL_ENV.to_owned()];
        for (i, extra) in r.url_env.iter().enumerate() {
            errors.env_name(&format!("spec.redis.urlEnv[{i}]"), extra);
            if url_env.contains(extra) {
                errors.add(
                    format!("spec.redis.urlEnv[{i}]"),
                    format!("{} is listed twice", truncate(extra)),
                );
            }
            url_env.push(extra.clone());
        }
        let resources = r
            .resources
            .clone()
            .unwrap_or_else(|| profile_resources(spec.profile, "redis"));
        errors.resources("spec.redis.resources", &resources);
        RedisModel {
            image: r
                .image
                .clone()
                .unwrap_or_else(|| DEFAULT_REDIS_IMAGE.to_owned()),
            resources,
            persistence: r
                .persistence
                .as_ref()
                .map(|p| errors.storage("spec.redis.persistence", p)),
            url_env,
        }
    });

    // Variables appenv sets itself, and where from: users may not set them too.
    let mut reserved: BTreeMap<String, &str> = BTreeMap::new();
    for var in redis.iter().flat_map(|r| r.url_env.iter()) {
        reserved.insert(var.clone(), "spec.redis");
    }
    match &database {
        Some(DatabaseModel::Postgres(pg)) => {
            reserved.insert(pg.url_env.clone(), "spec.database.postgres");
        }
        Some(DatabaseModel::Embedded(em)) => {
            reserved.insert(em.path_env.clone(), "spec.database.embedded");
        }
        Some(DatabaseModel::External { url_env, .. }) => {
            reserved.insert(url_env.clone(), "spec.database.external");
        }
        None => {}
    }
    check_env("spec.env", &spec.env, &reserved, &mut errors);

    // Web.
    let web_spec = &spec.web;
    let default_replicas = if embedded.is_some() || spec.profile == Profile::Preview {
        1
    } else {
        2
    };
    let web_replicas = web_spec.replicas.unwrap_or(default_replicas);
    if !(0..=100).contains(&web_replicas) {
        errors.add("spec.web.replicas", "must be between 0 and 100");
    }
    if let Some(engine) = embedded
        && web_replicas > 1
    {
        errors.add(
            "spec.web.replicas",
            format!(
                "must be 1 when spec.database.embedded is set ({} allows one writer)",
                engine_name(engine)
            ),
        );
    }
    let port = web_spec.port.unwrap_or(8000);
    if !(1..=65535).contains(&port) {
        errors.add("spec.web.port", "must be between 1 and 65535");
    }
    let service_port = web_spec.service.port.unwrap_or(80);
    if !(1..=65535).contains(&service_port) {
        errors.add("spec.web.service.port", "must be between 1 and 65535");
    }
    let web_resources = web_spec
        .resources
        .clone()
        .unwrap_or_else(|| profile_resources(spec.profile, "web"));
    errors.resources("spec.web.resources", &web_resources);
    check_env("spec.web.env", &web_spec.env, &reserved, &mut errors);
    let ingress = web_spec.ingress.as_ref().map(|ing| {
        let host = match (&ing.host, &preview, &settings.preview_domain) {
            (Some(host), _, _) => Some(host.clone()),
            (None, Some(p), Some(domain)) => {
                Some(format!("{}-pr-{}.{domain}", spec.app, p.pull_request))
            }
            (None, _, _) => {
                errors.add(
                    "spec.web.ingress.host",
                    "is required (only previews get a default host, and only when the operator has a preview domain)",
                );
                None
            }
        };
        if let Some(host) = host.as_deref().filter(|host| !is_dns_subdomain(host)) {
            errors.add("spec.web.ingress.host", format!("{:?} must be a DNS name", truncate(host)));
        }
        let host = host.unwrap_or_default();
        let path = ing.path.clone().unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') {
            errors.add("spec.web.ingress.path", "must start with '/'");
        }
        let tls = match &ing.tls {
            // Previews share the operator's wildcard certificate, copied into their namespace.
            None if preview.is_some() => settings.wildcard_tls.as_ref().map(|(_, name)| TlsModel::Secret(name.clone())),
            None => None,
            Some(tls) => match (&tls.secret_name, &tls.issuer) {
                (Some(_), Some(_)) => {
                    errors.add("spec.web.ingress.tls", "set secretName or issuer, not both");
                    None
                }
                (Some(secret), None) => {
                    if !is_dns_subdomain(secret) {
                        errors.add("spec.web.ingress.tls.secretName", "must be a Secret name (DNS subdomain)");
                    }
                    Some(TlsModel::Secret(secret.clone()))
                }
                (None, Some(issuer)) => Some(TlsModel::Issuer {
                    name: issuer.name.clone(),
                    kind: issuer.kind,
                }),
                (None, None) => {
                    errors.add("spec.web.ingress.tls", "set secretName or issuer");
                    None
                }
            },
        };
        IngressModel {
            host,
            class_name: ing.class_name.clone().or_else(|| settings.ingress_class.clone()),
            path,
            tls,
            annotations: ing.annotations.clone(),
        }
    });
    let web = WebModel {
        command: web_spec.command.clone(),
        args: web_spec.args.clone(),
        port,
        replicas: web_replicas,
        recreate: matches!(database, Some(DatabaseModel::Embedded(_))),
        readiness: probe(
            "spec.web.readinessProbe",
            web_spec.readiness_probe.as_ref(),
            5,
            10,
            &mut errors,
        ),
        liveness: probe(
            "spec.web.livenessProbe",
            web_spec.liveness_probe.as_ref(),
            30,
            30,
            &mut errors,
        ),
        resources: web_resources.clone(),
        env: web_spec.env.clone(),
        service_port,
        ingress,
        pod_annotations: web_spec.pod_annotations.clone(),
    };
    check_annotations("spec.web.podAnnotations", &web.pod_annotations, &mut errors);

    // Workers.
    let mut names = BTreeSet::new();
    let workers = spec
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let at = |field: &str| format!("spec.workers[{i}].{field}");
            errors.dns_label(&at("name"), &w.name, 30);
            if !names.insert(w.name.as_str()) {
                errors.add(
                    at("name"),
                    format!("{:?} is used by another worker", truncate(&w.name)),
                );
            }
            if spec.app.len() + 1 + w.name.len() > 63 {
                errors.add(
                    at("name"),
                    "with the app name it must fit in 63 characters (<app>-<worker>)",
                );
            }
            let replicas = w.replicas.unwrap_or(match (w.singleton, spec.profile) {
                (true, _) | (false, Profile::Preview) => 1,
                (false, Profile::Production) => 2,
            });
            if !(0..=100).contains(&replicas) {
                errors.add(at("replicas"), "must be between 0 and 100");
            }
            if w.singleton && replicas > 1 {
                errors.add(
                    at("replicas"),
                    "must be at most 1 for a singleton worker (it must never run twice)",
                );
            }
            let concurrency = w.concurrency.map(|c| {
                if !(1..=1024).contains(&c) {
                    errors.add(at("concurrency"), "must be between 1 and 1024");
                }
                let var = w
                    .concurrency_env
                    .clone()
                    .unwrap_or_else(|| "WORKER_CONCURRENCY".to_owned());
                errors.env_name(&at("concurrencyEnv"), &var);
                (var, c)
            });
            if let Some(image) = &w.image
                && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
            {
                errors.add(at("image"), "must be an image reference without spaces");
            }
            let resources = w
                .resources
                .clone()
                .unwrap_or_else(|| profile_resources(spec.profile, "worker"));
            errors.resources(&at("resources"), &resources);
            check_env(&at("env"), &w.env, &reserved, &mut errors);
            check_annotations(&at("podAnnotations"), &w.pod_annotations, &mut errors);
            WorkerModel {
                name: w.name.clone(),
                image: w.image.clone(),
                command: w.command.clone(),
                args: w.args.clone(),
                replicas,
                concurrency,
                singleton: w.singleton,
                resources,
                env: w.env.clone(),
                pod_annotations: w.pod_annotations.clone(),
            }
        })
        .collect();

    // Migrations.
    let migrations = spec.migrations.as_ref().map(|m| {
        if let Some(engine) = embedded {
            errors.add(
                "spec.migrations",
                format!(
                    "not allowed with spec.database.embedded ({} allows one writer, the web Pod; apply forward-only migrations at start-up)",
                    engine_name(engine)
                ),
            );
        }
        if m.command.is_empty() || m.command.iter().any(String::is_empty) {
            errors.add("spec.migrations.command", "must be a non-empty command, e.g. [alembic, upgrade, head]");
        }
        let timeout_seconds = m.timeout_seconds.unwrap_or(600);
        if !(10..=86_400).contains(&timeout_seconds) {
            errors.add("spec.migrations.timeoutSeconds", "must be between 10 and 86400");
        }
        let resources = m.resources.clone().unwrap_or_else(|| web_resources.clone());
        errors.resources("spec.migrations.resources", &resources);
        check_annotations("spec.migrations.podAnnotations", &m.pod_annotations, &mut errors);
        MigrationsModel {
            command: m.command.clone(),
            args: m.args.clone(),
            timeout_seconds,
            resources,
            pod_annotations: m.pod_annotations.clone(),
        }
    });

    if !errors.0.is_empty() {
        return Err(Invalid(errors.0));
    }
    Ok(Model {
        name,
        app: spec.app.clone(),
        profile: spec.profile,
        namespace: NamespaceModel {
            name: ns_name,
            owned: !spec.namespace.adopt,
            labels: spec.namespace.labels.clone(),
            annotations: spec.namespace.annotations.clone(),
            egress: spec.namespace.egress.clone(),
        },
        image: spec.image.clone(),
        pull_policy: spec.image_pull_policy.map(|p| {
            match p {
                PullPolicy::Always => "Always",
                PullPolicy::IfNotPresent => "IfNotPresent",
                PullPolicy::Never => "Never",
            }
            .to_owned()
        }),
        pull_secrets: spec.image_pull_secrets.clone(),
        env: spec.env.clone(),
        env_from: spec.env_from.clone(),
        security: spec.security.clone(),
        suspend: spec.suspend,
        web,
        workers,
        redis,
        database,
        deletion_policy,
        migrations,
        guardrails: preview
            .is_some()
            .then(|| settings.preview_quota.clone())
            .or_else(|| (spec.profile == Profile::Preview).then(|| settings.preview_quota.clone())),
        preview,
        ingress_namespace: settings.ingress_namespace.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use appenv_api::AppEnvironmentSpec;

    fn env(yaml: &str) -> AppEnvironment {
        let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
        AppEnvironment::new("shop-prod", spec)
    }

    fn messages(yaml: &str) -> Vec<String> {
        match validate(&env(yaml), &Settings::default()) {
            Ok(_) => Vec::new(),
            Err(Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn request(r: &ResourceRequirements, name: &str) -> String {
        r.requests
            .as_ref()
            .and_then(|m| m.get(name))
            .map(|q| q.0.clone())
            .unwrap_or_default()
    }

    #[test]
    fn profiles_set_defaults_and_explicit_fields_win() {
        let prod = validate(
            &env("{app: shop, image: 'shop:1', workers: [{name: w}], redis: {}}"),
            &Settings::default(),
        )
        .expect("valid");
        assert_eq!((prod.web.replicas, prod.workers[0].replicas), (2, 2));
        assert_eq!(prod.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(
            request(&prod.redis.as_ref().expect("redis").resources, "cpu"),
            "100m"
        );
        assert!(prod.guardrails.is_none());

        let preview = validate(
            &env("{app: shop, image: 'shop:1', profile: Preview, preview: {pullRequest: 9}, workers: [{name: w}], redis: {}}"),
            &Settings::default(),
        )
        .expect("valid");
        assert_eq!((preview.web.replicas, preview.workers[0].replicas), (1, 1));
        assert_eq!(preview.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(
            request(&preview.redis.as_ref().expect("redis").resources, "cpu"),
            "50m"
        );
        assert_eq!(preview.namespace.name, "shop-pr-9");
        assert_eq!(
            preview.preview.as_ref().map(|p| p.ttl),
            Some(Duration::from_secs(72 * 3600))
        );
        assert!(preview.guardrails.is_some());

        let explicit = validate(
            &env("{app: shop, image: 'shop:1', profile: Preview, web: {replicas: 3}, database: {postgres: {}, deletionPolicy: Retain}}"),
            &Settings::default(),
        )
        .expect("valid");
        assert_eq!(explicit.web.replicas, 3);
        assert_eq!(explicit.deletion_policy, DeletionPolicy::Retain);
    }

    #[test]
    fn an_embedded_database_means_one_recreated_web_pod() {
        let model = validate(
            &env("{app: dojo, image: 'd:1', database: {embedded: {engine: SQLite, path: /var/lib/app/app.db}}}"),
            &Settings::default(),
        )
        .expect("valid");
        assert_eq!((model.web.replicas, model.web.recreate), (1, true));
        let Some(DatabaseModel::Embedded(em)) = model.database else {
            panic!("embedded")
        };
        assert_eq!(em.mount_path, "/var/lib/app");
        assert_eq!(
            messages(
                "{app: dojo, image: 'd:1', web: {replicas: 2}, database: {embedded: {engine: SQLite, path: /d/a.db}}}"
            ),
            vec![
                "spec.web.replicas: must be 1 when spec.database.embedded is set (SQLite allows one writer)"
            ]
        );
    }

    #[test]
    fn previews_get_a_host_under_the_preview_domain_or_must_name_one() {
        let yaml = "{app: shop, image: 's:1', profile: Preview, preview: {pullRequest: 42}, web: {ingress: {}}}";
        let settings = Settings {
            preview_domain: Some("preview.example.com".into()),
            ..Settings::default()
        };
        let model = validate(&env(yaml), &settings).expect("valid");
        assert_eq!(
            model.web.ingress.map(|i| i.host),
            Some("shop-pr-42.preview.example.com".into())
        );
        assert_eq!(messages(yaml).len(), 1);
        assert!(messages(yaml)[0].starts_with("spec.web.ingress.host: is required"));
    }

    #[test]
    fn hostile_input_is_reported_not_panicked_on() {
        let long = "x".repeat(5000);
        let yaml = format!(
            "{{app: 'ünïcødé-{long}', image: ' ', namespace: {{name: ''}}, preview: {{pullRequest: -1, ttl: '99999999999999999999d'}}, \
             web: {{port: -5, replicas: -2147483648, resources: {{requests: {{cpu: '1e999'}}}}}}, \
             database: {{embedded: {{engine: DuckDB, path: '/'}}, postgres: {{extensions: ['x; DROP TABLE users']}}}}}}"
        );
        let all = messages(&yaml);
        for path in [
            "spec.app",
            "spec.image",
            "spec.namespace.name",
            "spec.preview.pullRequest",
            "spec.preview.ttl",
            "spec.web.port",
            "spec.web.replicas",
            "spec.web.resources.requests.cpu",
            "spec.database",
        ] {
            assert!(
                all.iter().any(|m| m.starts_with(path)),
                "no error for {path}: {all:#?}"
            );
        }
        // Quoted input is cut short in messages.
        assert!(all.iter().all(|m| m.len() < 400), "{all:#?}");
    }

    #[test]
    fn quoted_unusual_characters_stay_short_once_escaped() {
        // Each of these characters is written as `\u{3347a}` by `{:?}`: ten for one.
        let odd = "\u{3347a}".repeat(100);
        let all = messages(&format!(
            "{{app: a, image: b, redis: {{resources: {{requests: {{cpu: '{odd}'}}}}}}}}"
        ));
        let cpu = all
            .iter()
            .find(|m| m.starts_with("spec.redis.resources.requests.cpu"))
            .expect("the quantity is rejected");
        assert!(cpu.chars().count() < 200, "{cpu}");
    }

    #[test]
    fn ttl_parses_units_and_rejects_the_rest() {
        assert_eq!(parse_ttl("72h"), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("30m"), Some(Duration::from_secs(1800)));
        for bad in ["", "h", "0h", "3 days", "1w", "-1h", "١h"] {
            assert_eq!(parse_ttl(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ip_blocks_parse_as_the_api_server_reads_them() {
        assert_eq!(parse_cidr("0.0.0.0/0"), Some((0, 0, 32)));
        assert_eq!(parse_cidr("10.0.0.0/8"), Some((10 << 24, 8, 32)));
        assert_eq!(
            parse_cidr("2001:db8::/32").map(|(_, p, w)| (p, w)),
            Some((32, 128))
        );
        assert_eq!(parse_cidr("::/0"), Some((0, 0, 128)));
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "example.com/8",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad:?}");
        }
        // The network part: 10.1.2.3 lies in 10.0.0.0/8, not in 10.2.0.0/16.
        let (bits, _, width) = parse_cidr("10.1.2.3/32").expect("address");
        assert_eq!(network(bits, 8, width), 10 << 24);
        assert_ne!(network(bits, 16, width), (10 << 24) | (2 << 16));
        assert_eq!(network(u128::MAX, 128, 128), u128::MAX);
        assert_eq!(network(u128::MAX, 0, 128), 0);
    }

    fn at_in(found: &[String], prefix: &str) -> usize {
        found.iter().filter(|m| m.starts_with(prefix)).count()
    }

    #[test]
    fn egress_rules_name_the_rule_and_the_field() {
        let found = messages(
            "app: shop\nimage: i\nnamespace:\n  egress:\n  - cidr: 0.0.0.0/0\n    except: [10.0.0.0/8, 172.16.0.0/12]\n    ports: [27017, 5432]\n  - cidr: 2001:db8::/32\n    except: [2001:db8:1::/48]\n",
        );
        assert!(found.is_empty(), "{found:?}");
        let found = messages(
            "app: shop\nimage: i\nnamespace:\n  egress:\n  - cidr: 10.0.0.0/8\n    except: [10.0.0.0/8, 11.0.0.0/16, '::/64', nonsense]\n    ports: [65536, -1]\n  - cidr: 300.0.0.0/8\n    except: [10.0.0.0/16]\n",
        );
        let at = |path: &str| at_in(&found, path);
        // Equal, outside, of the other family, unreadable.
        for i in 0..4 {
            assert_eq!(
                at(&format!("spec.namespace.egress[0].except[{i}]: ")),
                1,
                "{found:?}"
            );
        }
        assert_eq!(
            at("spec.namespace.egress[0].ports[0]: 65536 "),
            1,
            "{found:?}"
        );
        assert_eq!(at("spec.namespace.egress[0].ports[1]: -1 "), 1, "{found:?}");
        assert_eq!(
            at("spec.namespace.egress[1].cidr: \"300.0.0.0/8\" "),
            1,
            "{found:?}"
        );
        // An except of an unreadable block is not judged twice.
        assert_eq!(at("spec.namespace.egress[1].except"), 0, "{found:?}");
        assert_eq!(found.len(), 7, "{found:?}");

        let many = format!(
            "app: shop\nimage: i\nnamespace:\n  egress:\n{}",
            "  - cidr: 10.0.0.0/8\n    ports: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33]\n"
                .repeat(33)
        );
        let found = messages(&many);
        assert_eq!(
            at_in(&found, "spec.namespace.egress: at most 32"),
            1,
            "{found:?}"
        );
        assert_eq!(
            at_in(&found, "spec.namespace.egress[32].ports: at most 32"),
            1,
            "{found:?}"
        );
        assert_eq!(found.len(), 34, "{found:?}");
    }
}
