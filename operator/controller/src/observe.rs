//! The fetch step: what exists of an environment, read from the watches' stores (no request)
//! before anything is written; what it returns is what the gates and the status are decided
//! from.

use crate::stores::Stores;
use appenv_core::build::{self, migration_job_name};
use appenv_core::validate::{DatabaseModel, Model};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use secrecy::SecretString;
use std::collections::BTreeMap;

/// The state of the migration for the spec's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// The environment has no migrations.
    NotConfigured,
    /// No Job for this image yet.
    NotStarted,
    Running,
    Succeeded,
    /// With the Job's reason and message.
    Failed(String),
}

/// What exists, as far as the next decisions need it.
#[derive(Debug, Default)]
pub struct Observed {
    /// The generated database password, if the credentials Secret has one.
    pub password: Option<SecretString>,
    pub migration: Option<Migration>,
    pub postgres: Option<StatefulSet>,
    /// Deployments by component name (`web`, `redis`, `worker-<name>`).
    pub deployments: BTreeMap<String, Deployment>,
    /// Why a component's Pods fail, for components that are not ready.
    pub pod_failures: BTreeMap<String, String>,
    /// Volumes that cannot bind, with the reason.
    pub volume_failures: Vec<String>,
    /// Phase of the embedded database's volume, if it exists.
    pub data_volume_phase: Option<String>,
}

/// How long a claim may stay unbound before it counts as a failure (provisioning is slow on
/// some clouds, but not this slow).
const UNBOUND_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

fn observe_volumes(stores: &Stores, model: &Model, observed: &mut Observed) {
    let ns = model.namespace.name.as_str();
    let claims = stores.claims_of(ns, &model.name);
    let now = Timestamp::now();
    for claim in claims {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let phase = claim
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if name == build::data_volume_name(model) {
            observed.data_volume_phase = Some(phase.clone());
        }
        match phase.as_str() {
            "Bound" => {}
            "Lost" => observed.volume_failures.push(format!(
                "PersistentVolumeClaim {name}: Lost (its volume is gone)"
            )),
            _ => {
                let class = claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.clone());
                if let Some(class) = class.filter(|c| !c.is_empty())
                    && !stores.storage_class_exists(&class)
                {
                    observed.volume_failures.push(format!(
                        "PersistentVolumeClaim {name}: StorageClass {class:?} does not exist"
                    ));
                    continue;
                }
                let since = claim
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(now);
                if now.duration_since(since).unsigned_abs() > UNBOUND_GRACE {
                    observed.volume_failures.push(format!(
                        "PersistentVolumeClaim {name}: unbound for more than {} minutes (no volume was provisioned)",
                        UNBOUND_GRACE.as_secs() / 60
                    ));
                }
            }
        }
    }
}

fn job_state(job: &Job) -> Migration {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return Migration::Succeeded,
            "Failed" => {
                let reason = c.reason.clone().unwrap_or_else(|| "Failed".to_owned());
                let message = c.message.clone().unwrap_or_default();
                return Migration::Failed(
                    format!("{reason}: {message}")
                        .trim_end_matches(": ")
                        .to_owned(),
                );
            }
            _ => {}
        }
    }
    Migration::Running
}

/// The first reason a Pod of the component is failing, if any.
pub fn pod_failure(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        status.container_statuses.iter().flatten().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            matches!(
                reason,
                "CrashLoopBackOff"
                    | "ImagePullBackOff"
                    | "ErrImagePull"
                    | "CreateContainerConfigError"
                    | "InvalidImageName"
            )
            .then(|| {
                format!(
                    "Pod {} container {}: {reason}",
                    pod.metadata.name.as_deref().unwrap_or("?"),
                    c.name
                )
            })
        })
    })
}

/// One Deployment of the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `web`, `worker-<name>`, `redis`: the name in status and in `Observed::deployments`.
    pub component: String,
    pub deployment: String,
    /// Replicas the spec asks for (before `suspend`).
    pub replicas: i32,
    /// The image it runs if it does not follow the environment's image.
    pub own_image: Option<String>,
}

/// Every Deployment the model has.
pub fn workloads(model: &Model) -> Vec<Workload> {
    let mut all = vec![Workload {
        component: "web".to_owned(),
        deployment: model.app.clone(),
        replicas: model.web.replicas,
        own_image: None,
    }];
    all.extend(model.workers.iter().map(|w| Workload {
        component: format!("worker-{}", w.name),
        deployment: format!("{}-{}", model.app, w.name),
        replicas: w.replicas,
        own_image: w.image.clone(),
    }));
    if let Some(redis) = &model.redis {
        all.push(Workload {
            component: "redis".to_owned(),
            deployment: format!("{}-redis", model.app),
            replicas: 1,
            own_image: Some(redis.image.clone()),
        });
    }
    all
}

fn deployment_ready(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.status
        .as_ref()
        .is_some_and(|s| s.ready_replicas.unwrap_or(0) >= want)
}

/// Read what exists of the environment from the watches' stores.
pub fn observe(stores: &Stores, model: &Model) -> Observed {
    let ns = model.namespace.name.as_str();
    let mut observed = Observed::default();
    if let Some(DatabaseModel::Postgres(_)) = &model.database {
        observed.password = stores
            .password(ns, &build::postgres_secret_name(model))
            .filter(|p| !p.is_empty())
            .map(SecretString::from);
        observed.postgres = stores.stateful_set(ns, &build::postgres_service_name(model));
    }
    observed.migration = Some(match &model.migrations {
        None => Migration::NotConfigured,
        Some(m) => match stores.job(ns, &migration_job_name(model, m)) {
            None => Migration::NotStarted,
            Some(job) => job_state(&job),
        },
    });
    let has_volumes = matches!(
        model.database,
        Some(DatabaseModel::Postgres(_) | DatabaseModel::Embedded(_))
    ) || model
        .redis
        .as_ref()
        .is_some_and(|r| r.persistence.is_some());
    if has_volumes {
        observe_volumes(stores, model, &mut observed);
    }
    for Workload {
        component,
        deployment: name,
        ..
    } in workloads(model)
    {
        let Some(d) = stores.deployment(ns, &name) else {
            continue;
        };
        if !deployment_ready(&d) {
            let selector = d
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref());
            if let Some(failure) = selector.and_then(|s| stores.pod_failure(ns, s)) {
                observed.pod_failures.insert(component.clone(), failure);
            }
        }
        observed.deployments.insert(component, d);
    }
    observed
}
