//! The validate step: an `AppEnvironment` in, a fully defaulted [`Model`] out, or every
//! violation found, each naming the field path and the rule. The same invariants are CEL rules
//! in the CRD, but a server may not enforce those (1.20 ignores them), and `appenv render`
//! has no server at all: this is where they are always enforced.
//!
//! One module per section of the spec; [`validate`] runs them in the order of the spec, so
//! violations come out in that order.

mod backup;
pub use backup::{backup_ref, restore_refusal, shown_url};
mod copy;
mod database;
mod egress;
mod metadata;
mod migrations;
mod namespace;
mod preview;
mod redis;
mod rules;
mod web;
mod workers;

use crate::settings::{Quota, Settings};
pub use appenv_api::field::{FieldError, Invalid, truncate};
use appenv_api::{
    AppEnvironment, CopyKind, DeletionPolicy, EgressRule, EmbeddedEngine, IssuerKind, Profile,
    PullPolicy, QueueType, SecuritySpec,
};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
pub use preview::{MIN_SLEEP_AFTER, parse_ttl};
pub use rules::is_dns_label;
pub use rules::is_dns_subdomain;
use rules::{Errors, Reserved, check_env};
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// How long without a request before it sleeps (`spec.sleep.afterIdle`, a preview's
    /// default); `None`: never.
    pub sleep_after: Option<Duration>,
    pub web: WebModel,
    pub workers: Vec<WorkerModel>,
    pub redis: Option<RedisModel>,
    pub database: Option<DatabaseModel>,
    pub deletion_policy: DeletionPolicy,
    pub migrations: Option<MigrationsModel>,
    pub backup: Option<BackupModel>,
    /// `spec.database.restore`: what a new environment's database starts from.
    pub restore: Option<RestoreModel>,
    /// The image with the `appenv` binary (the operator's): backup and restore Jobs run the
    /// agent from it.
    pub agent_image: String,
    /// The activator's Service, for an environment that can sleep: its Ingress sends requests
    /// there.
    pub activator: Option<crate::settings::ServiceRef>,
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
    /// Secrets and ConfigMaps copied in from an allowed namespace.
    pub copies: Vec<CopyModel>,
    /// Pod Security `restricted` labels on the namespace.
    pub pod_security: bool,
}

/// One object of `spec.namespace.copy`, its source namespace allowed by the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyModel {
    /// Its place in the spec (`spec.namespace.copy[0]`), for messages.
    pub path: String,
    pub kind: CopyKind,
    /// The source namespace.
    pub namespace: String,
    /// The name in the source namespace and in the environment's.
    pub name: String,
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
    /// Replicas set by an autoscaler; `replicas` is then not applied.
    pub autoscaling: Option<AutoscalingModel>,
    pub resources: ResourceRequirements,
    pub env: Vec<EnvVar>,
    pub pod_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalingModel {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub queue_type: QueueType,
    /// Queue names, as the spec has them (not yet Redis keys).
    pub queues: Vec<String>,
    /// Jobs waiting per Pod.
    pub target_length: i32,
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

/// `spec.backup`, checked, with the defaults and the operator's agent image.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupModel {
    pub engine: BackupEngine,
    pub schedule: Option<crate::schedule::Schedule>,
    pub keep: u32,
    pub before_migrations: bool,
    pub destination: BackupDestinationModel,
    pub timeout_seconds: i64,
    pub pod_annotations: BTreeMap<String, String>,
    /// Environment name patterns allowed to restore these backups into theirs.
    pub restore_to: Vec<String>,
}

/// `spec.database.restore`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreModel {
    pub from: RestoreFrom,
    /// A command of the app's image run after the restore and before the migrations.
    pub seed: Option<SeedModel>,
}

/// Where a new environment's data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreFrom {
    /// Another environment's backup.
    Environment {
        /// The AppEnvironment whose backups are restored.
        name: String,
        /// `latest` or a backup id.
        backup: String,
        /// A Secret of this environment's namespace that can read the source's bucket.
        credentials_secret: String,
    },
    /// A dump at a URL.
    Url(DumpModel),
}

impl RestoreFrom {
    /// How status messages name it: `shop-prod (backup latest)`, or the URL without its query
    /// (a presigned URL's signature is never shown), or the Secret that holds it.
    pub fn describe(&self) -> String {
        match self {
            Self::Environment { name, backup, .. } => format!("{name} (backup {backup})"),
            Self::Url(dump) => dump.describe(),
        }
    }
}

/// `spec.database.restore.fromUrl`.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpModel {
    pub url: DumpUrl,
    /// Lower-case hex.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DumpUrl {
    /// In the spec.
    Literal(String),
    /// In the key `url` of this Secret of the environment's namespace.
    Secret(String),
}

impl DumpModel {
    pub fn describe(&self) -> String {
        match &self.url {
            DumpUrl::Literal(url) => format!("the dump at {}", backup::shown_url(url)),
            DumpUrl::Secret(name) => format!("the dump at the URL of Secret {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeedModel {
    pub command: Vec<String>,
    pub args: Vec<String>,
}

/// What a backup copies: the engine names the agent's `--engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupEngine {
    Postgres,
    Sqlite,
    Duckdb,
}

impl BackupEngine {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::Duckdb => "duckdb",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackupDestinationModel {
    S3(S3Model),
    Volume(StorageModel),
    /// A CSI VolumeSnapshot of the embedded database's volume, of this class.
    VolumeSnapshot {
        class_name: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct S3Model {
    pub bucket: String,
    /// Without leading or trailing `/`; empty: the bucket's root.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub credentials_secret: String,
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
/// Validate an AppEnvironment against every rule and apply the defaults.
pub fn validate(env: &AppEnvironment, settings: &Settings) -> Result<Model, Invalid> {
    let mut errors = Errors::default();
    let spec = &env.spec;
    let name = env.metadata.name.clone().unwrap_or_default();

    metadata::check(spec, &name, &mut errors);
    let preview = preview::preview(spec, settings, &mut errors);
    let namespace = namespace::namespace(spec, &name, preview.as_ref(), settings, &mut errors);
    let database = database::database(spec, &mut errors);
    let embedded = database::embedded_engine(spec);
    let deletion_policy = database::deletion_policy(spec);
    let redis = redis::redis(spec, &mut errors);
    let reserved = reserved(redis.as_ref(), database.as_ref());
    check_env("spec.env", &spec.env, &reserved, &mut errors);
    let web = web::web(
        spec,
        &web::Around {
            settings,
            preview: preview.as_ref(),
            embedded,
            recreate: matches!(database, Some(DatabaseModel::Embedded(_))),
            reserved: &reserved,
        },
        &mut errors,
    );
    let workers = workers::workers(spec, &reserved, &mut errors);
    let migrations = migrations::migrations(spec, embedded, &web.resources, &mut errors);
    let backup = backup::backup(spec, database.as_ref(), &mut errors);
    let restore = backup::restore(spec, &name, database.as_ref(), &mut errors);
    let is_preview = preview.is_some() || spec.profile == Profile::Preview;
    if is_preview {
        preview::images(spec, settings, &mut errors);
    }
    let sleep_after = preview::sleep_after(spec, is_preview, settings, &mut errors);
    errors.finish()?;

    Ok(Model {
        name,
        app: spec.app.clone(),
        profile: spec.profile,
        namespace,
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
        sleep_after,
        web,
        workers,
        redis,
        database,
        deletion_policy,
        migrations,
        backup,
        restore,
        agent_image: settings.agent_image.clone(),
        activator: settings
            .activator_service
            .clone()
            .filter(|_| sleep_after.is_some()),
        guardrails: is_preview.then(|| settings.preview_quota.clone()),
        preview,
        ingress_namespace: settings.ingress_namespace.to_string(),
    })
}

/// Variables appenv sets itself, and where from: users may not set them too.
fn reserved(redis: Option<&RedisModel>, database: Option<&DatabaseModel>) -> Reserved {
    let mut reserved = Reserved::new();
    for var in redis.iter().flat_map(|r| r.url_env.iter()) {
        reserved.insert(var.clone(), "spec.redis");
    }
    match database {
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
    reserved
}

#[cfg(test)]
mod tests;
