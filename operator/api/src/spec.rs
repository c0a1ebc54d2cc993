use super::AppEnvironmentStatus;
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most items of the spec's lists, the CRD's maxItems; `validate` enforces the same bounds, so
/// `appenv render` rejects offline what an API server would.
pub const MAX_ENV: usize = 200;
pub const MAX_ENV_FROM: usize = 32;
pub const MAX_WORKERS: usize = 20;
pub const MAX_PULL_SECRETS: usize = 16;
/// Rules in `spec.namespace.egress`, and blocks or ports in one rule.
pub const MAX_EGRESS: usize = 32;
/// Objects in `spec.namespace.copy`.
pub const MAX_COPIES: usize = 32;
/// Most replicas an autoscaled worker may reach (`spec.workers[].autoscaling.maxReplicas`).
pub const MAX_AUTOSCALED_REPLICAS: i32 = 100;
/// Queues one autoscaled worker may follow.
pub const MAX_QUEUES: usize = 16;

/// One environment of an application (production, staging, or the preview of one pull
/// request). Cluster-scoped: the environment owns one namespace and everything in it, so
/// deleting the AppEnvironment removes the whole environment through garbage collection,
/// even when the operator is not running.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "appenv.dev",
    version = "v1alpha1",
    kind = "AppEnvironment",
    plural = "appenvironments",
    shortname = "appenv",
    shortname = "ae",
    category = "appenv",
    status = "AppEnvironmentStatus",
    derive = "PartialEq",
    cel,
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app"),
    printcolumn(name = "PR", type_ = "integer", json_path = ".spec.preview.pullRequest"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters"),
)]
#[x_kube(
    validation = Rule::new("!has(self.database) || !has(self.database.embedded) || !has(self.web.replicas) || self.web.replicas <= 1")
        .message("spec.web.replicas: must be 1 when spec.database.embedded is set (the embedded database allows one writer)"),
    validation = Rule::new("!has(self.database) || !has(self.database.embedded) || !has(self.migrations)")
        .message("spec.migrations: not allowed with spec.database.embedded (the web Pod is the only writer of the file; apply forward-only migrations at start-up)"),
    validation = Rule::new("!has(self.backup) || (has(self.database) && !has(self.database.external))")
        .message("spec.backup: needs spec.database.postgres or spec.database.embedded (an external database is backed up where it runs)"),
    validation = Rule::new("!has(self.backup) || !has(self.backup.destination.volumeSnapshot) || (has(self.database) && has(self.database.embedded))")
        .message("spec.backup.destination.volumeSnapshot: needs spec.database.embedded (a snapshot of the data volume; back PostgreSQL up with pg_dump to s3 or volume)"),
    validation = Rule::new("!has(self.workers) || self.workers.all(w, !has(w.autoscaling) || (has(self.redis) && (!has(self.redis.enabled) || self.redis.enabled)))")
        .message("spec.workers[].autoscaling: needs spec.redis (the queue is in the environment's Redis)"),
)]
#[serde(rename_all = "camelCase")]
// The large optional sections are boxed: the operator keeps every environment in memory, and an
// environment without a section then keeps a pointer, not the section's size (same schema).
pub struct AppEnvironmentSpec {
    /// Name of the application (a DNS label of at most 40 characters, e.g. `dojo`). Children
    /// are named after it: the web Deployment and Service are `<app>`, a worker `<app>-<worker>`.
    #[schemars(length(min = 1, max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("spec.app: must be a DNS label (lower-case letters, digits and '-', starting with a letter)"))]
    pub app: String,

    /// Container image of the application (tag or digest), used by web, workers and migrations
    /// unless a component names its own, e.g. `ghcr.io/blogle/dojo:v0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Image pull policy for the application's containers. Default: Kubernetes' own (IfNotPresent
    /// for a tag, Always for `:latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Names of Secrets (in the environment's namespace) used to pull images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PULL_SECRETS))]
    pub image_pull_secrets: Vec<String>,

    /// `Preview` (one pull request: one replica each, small resources, guardrails, data deleted
    /// with the environment, TTL) or `Production` (more replicas and resources, data retained).
    /// Explicit fields always win over a profile's defaults.
    #[serde(default)]
    pub profile: Profile,

    /// The namespace this environment owns (or adopts).
    #[serde(default)]
    pub namespace: NamespaceSpec,

    /// Environment variables for every component (web, workers, migrations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV))]
    pub env: Vec<EnvVar>,

    /// Secrets and ConfigMaps whose keys become environment variables of every component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV_FROM))]
    pub env_from: Vec<EnvFromSource>,

    /// The web component: the HTTP server (gunicorn, uvicorn, ...).
    #[serde(default)]
    pub web: WebSpec,

    /// Background workers (RQ, Celery, Celery beat, ...), each its own Deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WORKERS))]
    pub workers: Vec<WorkerSpec>,

    /// A Redis for queues and caches, private to this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<Box<RedisSpec>>,

    /// The application's database: exactly one of `postgres`, `embedded` or `external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Box<DatabaseSpec>>,

    /// A command run as a Job with the new image before web and workers move to it
    /// (e.g. `alembic upgrade head`). A failed migration leaves the previous version serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<Box<MigrationsSpec>>,

    /// The pull request this environment previews. A Preview-profile environment without it is
    /// a permanent preview (no pull request, no TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Box<PreviewSpec>>,

    /// Backups of the environment's database (PostgreSQL or an embedded DuckDB/SQLite file):
    /// on a schedule, before each migration, and on request (`appenv backup now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<BackupSpec>>,

    /// Scale every component to zero; data is kept.
    #[serde(default)]
    pub suspend: bool,

    /// Sleep when idle: web, workers, Redis and PostgreSQL at zero replicas (every volume
    /// kept) after no HTTP request to the host for `afterIdle`; the next request wakes it,
    /// through the activator. Default for a preview: the operator's preview sleep setting;
    /// other profiles never sleep unless this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepSpec>,

    /// User and group the application's containers run as (Pod Security "restricted").
    #[serde(default)]
    pub security: SecuritySpec,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Profile {
    Preview,
    #[default]
    Production,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Name of the namespace. Default: the AppEnvironment's name; for a preview
    /// `<app>-pr-<number>`. Immutable: an environment never moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.namespace.name: immutable (the environment owns its namespace)"))]
    pub name: Option<String>,

    /// Extra labels for the namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations for the namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Adopt an existing namespace instead of owning one: appenv manages what it creates in it
    /// but never deletes the namespace. Only a namespace that opts in (label
    /// `appenv.dev/adoptable: "true"`, set by whoever may edit it) or that the operator lists
    /// (`--adoptable-namespace`); never the operator's own, never one another environment owns
    /// or has adopted, never by a preview.
    #[serde(default)]
    pub adopt: bool,

    /// Pod Security `restricted` labels on the namespace. Always on a namespace the environment
    /// owns; on an adopted namespace only when set to `true`, as they bind every Pod in it, not
    /// only the environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<bool>,

    /// Where a preview's Pods may connect outside their namespace. A preview namespace is
    /// isolated by a NetworkPolicy that lets out only traffic to the namespace itself and DNS;
    /// an external database or API needs a rule here, e.g. MongoDB Atlas:
    /// `[{cidr: 0.0.0.0/0, except: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16], ports: [27017]}]`.
    /// Production namespaces are not isolated by appenv; there this list has no effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EGRESS))]
    pub egress: Vec<EgressRule>,

    /// Secrets and ConfigMaps copied into the namespace, under the same name, from a namespace
    /// the operator copies from (its `--copy-from-namespace` flag, the chart's
    /// `copyFromNamespaces`), and kept current: a new namespace (a preview's) gets the
    /// credentials a secret manager keeps in one place, e.g.
    /// `[{kind: Secret, namespace: preview-secrets, name: doppler-secrets}]`.
    /// A copy whose source disappears is kept as last copied, and the environment is Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COPIES))]
    pub copy: Vec<CopySpec>,
}

/// One object copied into the environment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopySpec {
    /// `Secret` (default) or `ConfigMap`.
    #[serde(default)]
    pub kind: CopyKind,
    /// The source namespace: one the operator is configured to copy from.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The object's name, in the source namespace and in the environment's.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum CopyKind {
    #[default]
    Secret,
    ConfigMap,
}

impl CopyKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
        }
    }
}

impl std::fmt::Display for CopyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One destination outside the namespace: an IP block, optionally only some TCP ports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// IPv4 or IPv6 block in CIDR notation, e.g. `0.0.0.0/0` (anywhere) or `203.0.113.0/24`.
    #[schemars(length(min = 1, max = 64))]
    pub cidr: String,
    /// Blocks inside `cidr` that stay closed, e.g. the cluster's private ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EGRESS))]
    pub except: Vec<String>,
    /// TCP ports allowed (all ports when empty), e.g. `[5432]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EGRESS))]
    pub ports: Vec<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSpec {
    /// Replace the image's entrypoint, e.g. `["gunicorn"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments, e.g. `["--bind", "0.0.0.0:8000", "app:create_app()"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Port the server listens on. Default 8000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Number of web Pods. Default: 1 for previews and embedded databases, 2 in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Readiness probe (HTTP GET). Default: `/healthz`, 5 s initial delay, every 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<HttpProbe>,
    /// Liveness probe (HTTP GET). Default: `/healthz`, 30 s initial delay, every 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<HttpProbe>,
    /// CPU and memory. Default by profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Environment variables for the web container only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// The ClusterIP Service in front of the web Pods.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Expose the web component outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Annotations for the Pods (e.g. for metrics scraping or a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// Set false to run without this probe.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// HTTP path. Default `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: Option<i32>,
}

pub(crate) fn default_true() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Port of the Service; traffic goes to the web container's port. Default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.tls) && has(self.tls.secretName) && has(self.tls.issuer))").message("spec.web.ingress.tls: set secretName or issuer, not both"))]
pub struct IngressSpec {
    /// Host name. Default for a preview: `<app>-pr-<number>.<preview domain>` (operator setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("spec.web.ingress.host: must be a DNS name"))]
    pub host: Option<String>,
    /// IngressClass. Default: the operator's default ingress class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Path prefix routed to the web Service. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// TLS for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Extra annotations for the Ingress (e.g. for the ingress controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// An existing TLS Secret in the namespace (for previews, the operator can copy a wildcard
    /// certificate there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A cert-manager issuer that issues the certificate into `<app>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `ClusterIssuer` (default) or `Issuer`.
    #[serde(default)]
    pub kind: IssuerKind,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    #[default]
    ClusterIssuer,
    Issuer,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.singleton || !has(self.replicas) || self.replicas <= 1").message("spec.workers[].replicas: must be at most 1 for a singleton worker"))]
#[x_kube(validation = Rule::new("!self.singleton || !has(self.autoscaling)").message("spec.workers[].autoscaling: not allowed for a singleton worker (it must never run twice)"))]
#[x_kube(validation = Rule::new("!has(self.replicas) || !has(self.autoscaling)").message("spec.workers[].autoscaling: set replicas or autoscaling, not both (the autoscaler sets the replicas)"))]
pub struct WorkerSpec {
    /// Name (a DNS label), unique among the workers, e.g. `celery` or `beat`.
    #[schemars(length(min = 1, max = 30))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("spec.workers[].name: must be a DNS label"))]
    pub name: String,
    /// Image for this worker. Default: `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replace the image's entrypoint, e.g. `["python", "-m", "rqworker"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Number of Pods. Default: 1 (preview) or 2 (production); always at most 1 for a singleton.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Concurrency within one Pod, passed to the process in the variable `concurrencyEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: Option<i32>,
    /// Variable that carries `concurrency`. Default `WORKER_CONCURRENCY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_env: Option<String>,
    /// At most one Pod ever (e.g. Celery beat): one replica and the Recreate strategy.
    #[serde(default)]
    pub singleton: bool,
    /// CPU and memory. Default by profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Environment variables for this worker only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Annotations for the Pods (e.g. for metrics scraping or a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Follow the queue: between `minReplicas` and `maxReplicas` Pods, set by KEDA on the
    /// queue's length when KEDA is installed, else by a HorizontalPodAutoscaler on CPU. appenv
    /// then no longer sets the Deployment's replicas. Not with `replicas`, not for a singleton.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// A worker's replicas, set by an autoscaler between two bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("spec.workers[].autoscaling.maxReplicas: must be at least minReplicas"))]
pub struct AutoscalingSpec {
    /// Fewest Pods (at least 1).
    #[schemars(range(min = 1, max = MAX_AUTOSCALED_REPLICAS))]
    pub min_replicas: i32,
    /// Most Pods (at least `minReplicas`, at most 100).
    #[schemars(range(min = 1, max = MAX_AUTOSCALED_REPLICAS))]
    pub max_replicas: i32,
    /// The Redis queue(s) the worker consumes (needs `spec.redis`). KEDA scales on their
    /// length; without KEDA the HorizontalPodAutoscaler scales on CPU and ignores it.
    pub queue: QueueSpec,
}

/// Redis queues of one kind of worker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// `RQ` (a queue's jobs are the list `rq:queue:<name>`) or `Celery` (the list `<name>`).
    #[serde(rename = "type")]
    pub type_: QueueType,
    /// Queue names, e.g. `["default"]` (RQ) or `["celery"]` (Celery).
    #[schemars(length(min = 1, max = MAX_QUEUES))]
    pub names: Vec<String>,
    /// Jobs waiting per Pod that the autoscaler aims at (KEDA's `listLength`). Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_length: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum QueueType {
    #[default]
    #[serde(rename = "RQ")]
    Rq,
    Celery,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Set false to remove Redis (its Deployment and Service are deleted).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Redis image. Default `redis:7.4-alpine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory. Default by profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Keep Redis data on a volume (append-only file). Default: in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<StorageSpec>,
    /// More variables that receive the Redis URL besides `REDIS_URL`, e.g.
    /// `CELERY_BROKER_URL` and `CELERY_RESULT_BACKEND`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub url_env: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the volume, e.g. `5Gi`.
    pub size: Quantity,
    /// StorageClass. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.postgres), has(self.embedded), has(self.external)].filter(x, x).size() == 1").message("spec.database: set exactly one of postgres, embedded or external"))]
pub struct DatabaseSpec {
    /// PostgreSQL (with pgvector) run by appenv as a StatefulSet, credentials generated once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
    /// A single-file database (DuckDB or SQLite) on a ReadWriteOnce volume mounted into the
    /// web container only. Forces one web replica and the Recreate strategy: one writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedSpec>,
    /// A database run elsewhere; its connection string comes from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
    /// What happens to the data volume when the environment is deleted. Default: Delete for
    /// previews, Retain for production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Start from another environment's backup (e.g. a preview from production's latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    Retain,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// Image. Default `pgvector/pgvector:pg16` (PostgreSQL 16 with pgvector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extensions created in the database on first start. Default `["vector"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<String>>,
    /// Database name. Default: the app name with `-` as `_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Data volume. Default 10Gi (production) or 1Gi (preview) in the default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// CPU and memory. Default by profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Variable that carries the connection URL. Default `DATABASE_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedSpec {
    /// `DuckDB` or `SQLite`.
    pub engine: EmbeddedEngine,
    /// Absolute path of the database file, e.g. `/data/ledger.duckdb`. Its directory is the
    /// volume's mount point.
    #[schemars(length(min = 2, max = 256))]
    pub path: String,
    /// Variable that carries the path, e.g. `DOJO_DB_PATH`. Default `DATABASE_PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_env: Option<String>,
    /// The ReadWriteOnce volume. Default 5Gi in the default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EmbeddedEngine {
    #[default]
    DuckDB,
    SQLite,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSpec {
    /// The Secret key holding the connection string.
    pub secret_ref: SecretKeyRef,
    /// Variable it is injected as, e.g. `MONGODB_URI`. Default `DATABASE_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret in the environment's namespace.
    pub name: String,
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationsSpec {
    /// The command, e.g. `["alembic", "upgrade", "head"]`.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Give up after this long. Default 600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub timeout_seconds: Option<i64>,
    /// CPU and memory. Default: the web component's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Annotations for the Pods (e.g. for metrics scraping or a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewSpec {
    /// Pull request number.
    #[schemars(range(min = 1))]
    pub pull_request: i64,
    /// Repository, e.g. `jalantechnologies/flask-react-template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit the image was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// Delete the environment this long after its last spec change, e.g. `72h`, `30m`, `7d`.
    /// Default: the operator's preview TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]*[1-9][0-9]*(s|m|h|d)$')").message("spec.preview.ttl: must be a positive number followed by s, m, h or d, e.g. 72h"))]
    #[schemars(length(max = 16))]
    pub ttl: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SleepSpec {
    /// How long without a request before it sleeps, e.g. `30m`, `2h`, `1d` (at least `2m`:
    /// the activator reports requests once a minute), or `never`.
    #[x_kube(validation = Rule::new("self == 'never' || self.matches('^[0-9]*[1-9][0-9]*(s|m|h|d)$')").message("spec.sleep.afterIdle: must be `never` or a positive number followed by s, m, h or d, e.g. 30m"))]
    #[schemars(length(min = 1, max = 16))]
    pub after_idle: String,
}

/// Most patterns in `spec.backup.restoreTo`.
pub const MAX_RESTORE_TO: usize = 16;
/// Most backups `spec.backup.keep` may ask for.
pub const MAX_BACKUPS_KEPT: i32 = 1000;

/// Backups of the environment's database. Each backup is complete or invisible: it is listed,
/// counted for retention and used as "latest" only once its manifest (size, SHA-256) is written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take one: five cron fields in UTC (`0 3 * * *`: daily at 03:00) or `@hourly`,
    /// `@daily`, `@weekly`, `@monthly`. Without it, backups are taken only before migrations and
    /// on request (`appenv backup now`). A DuckDB backup stops the web Pod while it copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub schedule: Option<String>,
    /// Complete backups to keep; older ones are deleted after each new one. Default 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_BACKUPS_KEPT))]
    pub keep: Option<i32>,
    /// Take a backup before each migration (PostgreSQL): the Jobs run backup, migration,
    /// rollout, and a failed backup blocks the migration. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_migrations: Option<bool>,
    /// Where backups are written: exactly one of `s3`, `volume` or `volumeSnapshot`.
    pub destination: BackupDestination,
    /// Give up on a backup after this long. Default 3600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 86400))]
    pub timeout_seconds: Option<i64>,
    /// Annotations for the backup Jobs' Pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// AppEnvironments that may start from these backups (`spec.database.restore` of theirs),
    /// by name, `*` standing for any characters, e.g. `shop-pr-*`. Empty: none. Whoever may
    /// create an environment of a listed name can read this environment's data: list previews
    /// only if their seed command makes the data fit for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RESTORE_TO))]
    pub restore_to: Vec<String>,
}

/// A new environment's database restored before its first migration (and before anything of
/// the app starts): from another environment's backup, or from a dump at a URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.fromEnvironment) != has(self.fromUrl)").message("spec.database.restore: set exactly one of fromEnvironment or fromUrl"))]
#[x_kube(validation = Rule::new("!has(self.fromEnvironment) || has(self.credentialsSecret)").message("spec.database.restore.credentialsSecret: required with fromEnvironment"))]
pub struct RestoreSpec {
    /// The AppEnvironment whose backups to restore (an `s3` destination). Its
    /// `spec.backup.restoreTo` must name this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub from_environment: Option<String>,
    /// With `fromEnvironment`: `latest` (default) or a backup id as `appenv backup list` prints
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub backup: Option<String>,
    /// With `fromEnvironment`: a Secret in this environment's namespace with
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` that can read the source's bucket (e.g. a
    /// read-only key copied in with `spec.namespace.copy`): the source's own credentials never
    /// leave its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// A dump to download: for PostgreSQL a `pg_dump --format=custom` archive, for an embedded
    /// database the SQLite or DuckDB file itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_url: Option<DumpSpec>,
    /// A command run with the app's image after the restore and before the migrations, e.g. one
    /// that blanks personal data. The environment starts only if it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSpec>,
}

/// Where a dump is. The restore Job downloads it (the operator never does), checks it, and only
/// then replaces anything.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlSecret)").message("spec.database.restore.fromUrl: set exactly one of url or urlSecret"))]
pub struct DumpSpec {
    /// An `https://` URL (or `http://` with `sha256`), without credentials in it: a URL that
    /// carries a signature (a presigned S3 URL) belongs in `urlSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// A Secret in this environment's namespace whose key `url` holds the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub url_secret: Option<String>,
    /// The dump's SHA-256 (64 hex digits): a dump that differs is refused before anything is
    /// restored. Required for an `http://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 64, max = 64))]
    pub sha256: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedSpec {
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.s3), has(self.volume), has(self.volumeSnapshot)].filter(x, x).size() == 1").message("spec.backup.destination: set exactly one of s3, volume or volumeSnapshot"))]
pub struct BackupDestination {
    /// An S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...). Backups are written under
    /// `<prefix>/<environment name>/<backup id>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// A ReadWriteOnce volume in the environment's namespace (`<app>-backups`, mounted by the
    /// backup Jobs only). It is deleted with the environment unless
    /// `spec.database.deletionPolicy` retains data: use `s3` for backups that outlive a lost
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<StorageSpec>,
    /// A CSI `VolumeSnapshot` of the embedded database's volume (`spec.database.embedded`), of
    /// this VolumeSnapshotClass, instead of a copy of the file: for DuckDB the web component is
    /// stopped until the snapshot is taken (not until it is uploaded: that is the driver's).
    /// Snapshots stay in the environment's namespace (they are deleted with it unless
    /// `spec.database.deletionPolicy` retains data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<VolumeSnapshotDestination>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotDestination {
    /// The VolumeSnapshotClass (`kubectl get volumesnapshotclasses`).
    #[schemars(length(min = 1, max = 253))]
    pub class_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// The bucket (3 to 63 lower-case letters, digits, `-` or `.`).
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// A path inside the bucket, e.g. `appenv/shop`. Default: the bucket's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub prefix: Option<String>,
    /// The S3 API's URL, e.g. `https://s3.eu-central-1.amazonaws.com` or
    /// `http://minio.backups:9000`. Default: AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub endpoint: Option<String>,
    /// The bucket's region. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// A Secret in the environment's namespace with the keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (only those two keys reach the backup Jobs).
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// UID of the application's containers. Default 1000; root (0) is not allowed.
    #[serde(default = "default_id")]
    #[schemars(range(min = 1))]
    pub run_as_user: i64,
    /// GID of the application's containers. Default 1000.
    #[serde(default = "default_id")]
    #[schemars(range(min = 1))]
    pub run_as_group: i64,
    /// Group that owns mounted volumes. Default 1000.
    #[serde(default = "default_id")]
    #[schemars(range(min = 1))]
    pub fs_group: i64,
}

fn default_id() -> i64 {
    1000
}

impl Default for SecuritySpec {
    fn default() -> Self {
        Self {
            run_as_user: default_id(),
            run_as_group: default_id(),
            fs_group: default_id(),
        }
    }
}
