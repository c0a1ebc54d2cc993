use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed, at `observedGeneration`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppEnvironmentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Where the web component is served, if it has an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The namespace the environment owns or adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The image web and workers run (moved only after migrations succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Ready, Valid, Progressing, Degraded, DatabaseReady, MigrationsSucceeded, BackupsHealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Ready and desired Pods per component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<ComponentStatus>,
    /// When a preview will be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The environment's backups, when `spec.backup` is set.
    // Boxed, as `restore`: most environments have neither, and the operator keeps every
    // environment in memory (552 and 392 bytes inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<BackupStatus>>,
    /// Restores of the environment's database: the initial one (`spec.database.restore`) and
    /// those asked with `appenv restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<RestoreStatus>>,
    /// Set while the environment sleeps (every component at zero replicas, volumes kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepStatus>,
    /// The last `appenv preview sleep` request handled (the annotation's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sleep_request: Option<String>,
}

/// A sleeping environment: since when, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SleepStatus {
    /// When it went to sleep. A request (annotation `appenv.dev/last-request`) newer than this
    /// wakes it.
    pub since: Time,
    /// `idle` (no request for `spec.sleep.afterIdle`) or `requested` (`appenv preview sleep`).
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The restore (or seed) Job running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<BackupRun>,
    /// The last restore that finished (a failed one with its message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<BackupRun>,
    /// The initial restore (and its seed) completed: it never runs again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initialized: bool,
    /// The last `appenv restore` request handled (the annotation's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    /// The request whose restore waits for the web and worker Pods to stop (they are held at
    /// zero replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<String>,
}

/// What appenv knows of an environment's backups (the backups themselves are listed by
/// `appenv backup list`, from the destination).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The backup Job running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<BackupRun>,
    /// The last backup that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<BackupRun>,
    /// The last backup that failed, with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<BackupRun>,
    /// The time of the last scheduled backup started (a time of `spec.backup.schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled: Option<Time>,
    /// The last request of `appenv backup now` handled (the annotation's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
}

/// One backup Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRun {
    /// The Job's name (in the environment's namespace).
    pub job: String,
    /// `scheduled`, `manual` or `before-migration` (a backup); `initial`, `seed` or
    /// `in-place` (a restore).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why it failed (a failed run only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The backup's id (as `appenv backup list` prints it), when the agent reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The backup's size, when the agent reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// The web component was stopped for it (DuckDB: one process may open the file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub web_stopped: bool,
}

crate::names::names! {
    /// The summary of an environment's conditions (also a metric label); serialized as written.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub enum Phase {
        Pending => "Pending",
        Progressing => "Progressing",
        Ready => "Ready",
        Degraded => "Degraded",
        Invalid => "Invalid",
        Suspended => "Suspended",
        Sleeping => "Sleeping",
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `web`, `worker-<name>`, `redis`, `postgres`, `migrations`.
    pub name: String,
    pub ready: i32,
    pub desired: i32,
}

impl super::AppEnvironment {
    /// The status condition of this type, if the operator has reported it.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

/// Condition types as strings (from [`ConditionType`](crate::names::ConditionType)).
pub mod condition {
    use crate::names::ConditionType;

    pub const READY: &str = ConditionType::Ready.as_str();
    pub const VALID: &str = ConditionType::Valid.as_str();
    pub const PROGRESSING: &str = ConditionType::Progressing.as_str();
    pub const DEGRADED: &str = ConditionType::Degraded.as_str();
    pub const DATABASE_READY: &str = ConditionType::DatabaseReady.as_str();
    pub const MIGRATIONS_SUCCEEDED: &str = ConditionType::MigrationsSucceeded.as_str();
    pub const BACKUPS_HEALTHY: &str = ConditionType::BackupsHealthy.as_str();
}
