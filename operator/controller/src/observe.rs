//! The fetch step: what exists of an environment, read from the watches' stores (no request)
//! before anything is written; what it returns is what the gates and the status are decided
//! from.

use crate::stores::{DeploymentSnapshot, JobSnapshot, StatefulSetSnapshot, Stores};
use appenv_api::names::{ChildKind, Component, worker_component};
use appenv_core::build::{self, migration_job_name};
use appenv_core::validate::{DatabaseModel, Model};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
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
    pub postgres: Option<StatefulSetSnapshot>,
    /// Deployments by component name (`web`, `redis`, `worker-<name>`).
    pub deployments: BTreeMap<String, DeploymentSnapshot>,
    /// Why a component's Pods fail, for components that are not ready.
    pub pod_failures: BTreeMap<String, String>,
    /// Volumes that cannot bind, with the reason.
    pub volume_failures: Vec<String>,
    /// Objects of `spec.namespace.copy` that cannot be copied, with the reason.
    pub copy_failures: Vec<String>,
    /// Phase of the embedded database's volume, if it exists.
    pub data_volume_phase: Option<String>,
    /// The environment's backup, restore and seed Jobs, by name.
    pub backup_jobs: BTreeMap<String, BackupJob>,
    /// Where `spec.database.restore` reads from, or why it may not (none without it).
    pub restore_source: Option<Result<appenv_core::build::Store, String>>,
    /// The VolumeSnapshot a pending `appenv restore` request names, or why it cannot be
    /// restored from (only when backups are VolumeSnapshots and a request waits).
    pub restore_snapshot: Option<Result<String, String>>,
    /// Whether it sleeps (decided from its annotations and previous status before the model
    /// was suspended for it).
    pub sleep: crate::sleep::Decision,
}

/// A backup Job as its watch has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupJob {
    /// `backup`, `restore` or `seed`.
    pub component: Component,
    /// The states of a migration Job (never `NotConfigured` or `NotStarted`).
    pub state: Migration,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub created: Option<Timestamp>,
    /// Why its Pod cannot start (a missing credentials Secret, an unpullable image), while it
    /// runs.
    pub pod_failure: Option<String>,
    /// What the agent reported when it succeeded (its termination message: `backup ID BYTES`).
    pub result: Option<String>,
}

/// How long a claim may stay unbound before it counts as a failure (provisioning is slow on
/// some clouds, but not this slow).
const UNBOUND_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

fn observe_volumes(stores: &Stores, model: &Model, observed: &mut Observed) {
    const CLAIM: ChildKind = ChildKind::PersistentVolumeClaim;
    let ns = model.namespace.name.as_str();
    let claims = stores.of_environment::<PersistentVolumeClaim>(ns, &model.name);
    let now = Timestamp::now();
    for (name, claim) in claims {
        let phase = claim.phase.as_deref().unwrap_or_default();
        if name == build::data_volume_name(model) {
            observed.data_volume_phase = Some(phase.to_owned());
        }
        match phase {
            "Bound" => {}
            "Lost" => observed
                .volume_failures
                .push(format!("{CLAIM} {name}: Lost (its volume is gone)")),
            _ => {
                if let Some(class) = claim.class.as_deref().filter(|c| !c.is_empty())
                    && !stores.storage_class_exists(class)
                {
                    observed.volume_failures.push(format!(
                        "{CLAIM} {name}: StorageClass {class:?} does not exist"
                    ));
                    continue;
                }
                let since = claim.created.unwrap_or(now);
                if now.duration_since(since).unsigned_abs() > UNBOUND_GRACE {
                    observed.volume_failures.push(format!(
                        "{CLAIM} {name}: unbound for more than {} minutes (no volume was provisioned)",
                        UNBOUND_GRACE.as_secs() / 60
                    ));
                }
            }
        }
    }
}

fn job_state(job: &JobSnapshot) -> Migration {
    for c in &job.conditions {
        if &*c.status != "True" {
            continue;
        }
        match &*c.type_ {
            "Complete" => return Migration::Succeeded,
            "Failed" => {
                let reason = c.reason.as_deref().unwrap_or("Failed");
                let message = c.message.as_deref().unwrap_or_default();
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

fn observe_backups(stores: &Stores, model: &Model, observed: &mut Observed) {
    let ns = model.namespace.name.as_str();
    for (name, job) in stores.of_environment::<Job>(ns, &model.name) {
        let Some(component) = job.meta.component.as_deref().and_then(Component::parse) else {
            continue;
        };
        if !matches!(
            component,
            Component::Backup | Component::Restore | Component::Seed
        ) {
            continue;
        }
        let mut state = job_state(&job);
        let selector = vec![("job-name".into(), name.as_str().into())];
        let result = (state == Migration::Succeeded)
            .then(|| stores.pod_result(ns, &selector))
            .flatten();
        let pod_failure = matches!(state, Migration::Running | Migration::Failed(_))
            .then(|| stores.pod_failure(ns, &selector))
            .flatten();
        // A failed Job says only that it failed; its Pod says why (the agent's message).
        let pod_failure = match (&mut state, pod_failure) {
            (Migration::Failed(why), Some(pod)) => {
                *why = format!("{why}; {pod}");
                None
            }
            (_, pod) => pod,
        };
        observed.backup_jobs.insert(
            name,
            BackupJob {
                component,
                state,
                started: job.started,
                finished: job.finished,
                created: job.created,
                pod_failure,
                result,
            },
        );
    }
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
    /// Its replicas are an autoscaler's (`replicas` is then the minimum).
    pub autoscaled: bool,
}

/// Every Deployment the model has.
pub fn workloads(model: &Model) -> Vec<Workload> {
    let mut all = vec![Workload {
        component: Component::Web.as_str().to_owned(),
        deployment: model.app.clone(),
        replicas: model.web.replicas,
        own_image: None,
        autoscaled: false,
    }];
    all.extend(model.workers.iter().map(|w| Workload {
        component: worker_component(&w.name),
        deployment: format!("{}-{}", model.app, w.name),
        replicas: w.replicas,
        own_image: w.image.clone(),
        autoscaled: w.autoscaling.is_some(),
    }));
    if let Some(redis) = &model.redis {
        all.push(Workload {
            component: Component::Redis.as_str().to_owned(),
            deployment: format!("{}-redis", model.app),
            replicas: 1,
            own_image: Some(redis.image.clone()),
            autoscaled: false,
        });
    }
    all
}

fn deployment_ready(d: &DeploymentSnapshot) -> bool {
    let want = d.replicas.unwrap_or(1);
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
            .get::<Secret>(ns, &build::postgres_secret_name(model))
            .and_then(|s| s.password);
        observed.postgres = stores.get::<StatefulSet>(ns, &build::postgres_service_name(model));
    }
    observed.migration = Some(match &model.migrations {
        None => Migration::NotConfigured,
        Some(m) => match stores.get::<Job>(ns, &migration_job_name(model, m)) {
            None => Migration::NotStarted,
            Some(job) => job_state(&job),
        },
    });
    if model.backup.is_some() || model.restore.is_some() {
        observe_backups(stores, model, &mut observed);
    }
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
        let Some(d) = stores.get::<Deployment>(ns, &name) else {
            continue;
        };
        if !deployment_ready(&d) {
            let selector = d.selector.as_ref();
            if let Some(failure) = selector.and_then(|s| stores.pod_failure(ns, s)) {
                observed.pod_failures.insert(component.clone(), failure);
            }
        }
        observed.deployments.insert(component, d);
    }
    observed
}

/// Whether the environment may have the namespace it names, by what the namespace says of
/// itself: one environment per namespace (an existing namespace carrying another environment's
/// label is refused, owned or adopted); an existing namespace that is no environment's is
/// taken only by adoption, and adopted only when it opts in (its `appenv.dev/adoptable: "true"`
/// label, which only its editors can set) or the operator lists it. The namespace's own
/// objects and labels are left untouched by a refusal: nothing is applied.
pub fn adoption(
    stores: &Stores,
    model: &Model,
    settings: &appenv_core::settings::Settings,
) -> Result<(), appenv_api::field::Invalid> {
    use appenv_api::field::{FieldError, Invalid};
    use k8s_openapi::api::core::v1::Namespace;
    let ns = model.namespace.name.as_str();
    let refuse = |path: &str, message: String| {
        Err(Invalid(vec![FieldError {
            path: path.to_owned(),
            message,
        }]))
    };
    let listed = settings.adoptable_namespaces.iter().any(|a| **a == *ns);
    let Some(existing) = stores.meta::<Namespace>("", ns) else {
        if !model.namespace.owned && !listed {
            return refuse(
                "spec.namespace.adopt",
                format!(
                    "namespace {ns:?} does not exist: adopt only an existing namespace that opts \
                     in (or drop adopt to have appenv create and own it)"
                ),
            );
        }
        return Ok(());
    };
    match existing.environment.as_deref() {
        Some(own) if own == model.name => Ok(()),
        Some(other) => refuse(
            "spec.namespace.name",
            format!(
                "namespace {ns:?} belongs to environment {other:?}: one environment per namespace"
            ),
        ),
        None if model.namespace.owned => refuse(
            "spec.namespace.name",
            format!(
                "namespace {ns:?} exists and is no environment's: name another (appenv creates \
                 it), or adopt it (spec.namespace.adopt) if it opts in"
            ),
        ),
        None if existing.adoptable || listed => Ok(()),
        None => refuse(
            "spec.namespace.adopt",
            format!(
                "namespace {ns:?} does not let environments adopt it: whoever may edit it labels \
                 it {}=true, or the operator lists it (--adoptable-namespace)",
                appenv_core::settings::ADOPTABLE_LABEL
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appenv_api::names::label;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec};
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PersistentVolumeClaimSpec,
        PersistentVolumeClaimStatus, Pod, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn model() -> Model {
        let spec: AppEnvironmentSpec = serde_norway::from_str(
            "{app: shop, image: 'shop:2', workers: [{name: w}], \
             redis: {persistence: {size: 1Gi, storageClassName: missing}}}",
        )
        .expect("spec");
        let env = AppEnvironment::new("shop-prod", spec);
        appenv_core::validate::validate(&env, &Default::default()).expect("valid")
    }

    fn meta(model: &Model, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        let env = [(label::ENVIRONMENT, model.name.as_str())];
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(model.namespace.name.clone()),
            labels: Some(
                env.iter()
                    .chain(labels)
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn deployment(model: &Model, name: &str, replicas: i32, ready: i32) -> Deployment {
        Deployment {
            metadata: meta(model, name, &[]),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".to_owned(), name.to_owned())].into()),
                    ..LabelSelector::default()
                },
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                ready_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn crashing_pod(model: &Model, name: &str, app: &str) -> Pod {
        let waiting = ContainerStateWaiting {
            reason: Some("CrashLoopBackOff".to_owned()),
            message: None,
        };
        Pod {
            metadata: meta(model, name, &[("app", app)]),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".to_owned(),
                    state: Some(ContainerState {
                        waiting: Some(waiting),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn observe_names_deployments_by_component_and_why_the_unready_ones_fail() {
        let model = model();
        let stores = Stores::empty();
        stores.insert::<Deployment>(deployment(&model, "shop", 2, 1));
        stores.insert::<Deployment>(deployment(&model, "shop-w", 1, 1));
        stores.insert::<Pod>(crashing_pod(&model, "shop-1", "shop"));
        // The worker is ready: its crashing Pod (an old one) is not reported.
        stores.insert::<Pod>(crashing_pod(&model, "shop-w-1", "shop-w"));
        stores.insert::<PersistentVolumeClaim>(PersistentVolumeClaim {
            metadata: meta(&model, "shop-redis", &[]),
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("missing".to_owned()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Pending".to_owned()),
                ..PersistentVolumeClaimStatus::default()
            }),
        });

        let observed = observe(&stores, &model);
        let components: Vec<&str> = observed.deployments.keys().map(String::as_str).collect();
        assert_eq!(
            components,
            ["web", "worker-w"],
            "redis has no Deployment yet"
        );
        assert_eq!(
            observed.deployments["web"]
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas),
            Some(1)
        );
        assert_eq!(
            observed.pod_failures,
            BTreeMap::from([(
                "web".to_owned(),
                "Pod shop-1 container main: CrashLoopBackOff".to_owned()
            )])
        );
        assert_eq!(
            observed.volume_failures,
            ["PersistentVolumeClaim shop-redis: StorageClass \"missing\" does not exist"]
        );
        assert_eq!(observed.migration, Some(Migration::NotConfigured));
        assert!(observed.password.is_none());
        assert_eq!(observed.postgres, None);
    }

    /// The message of `model`'s adoption verdict with a namespace labelled `labels` (none:
    /// no such namespace), the operator listing `listed`.
    fn adoption_of(yaml: &str, labels: Option<&[(&str, &str)]>, listed: &[&str]) -> String {
        use k8s_openapi::api::core::v1::Namespace;
        let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
        let model = appenv_core::validate::validate(
            &AppEnvironment::new("shop-prod", spec),
            &Default::default(),
        )
        .expect("valid");
        let stores = Stores::empty();
        if let Some(labels) = labels {
            stores.insert::<Namespace>(kube::core::PartialObjectMeta::<Namespace> {
                metadata: ObjectMeta {
                    name: Some(model.namespace.name.clone()),
                    labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                    ),
                    ..ObjectMeta::default()
                },
                ..kube::core::PartialObjectMeta::default()
            });
        }
        let settings = appenv_core::settings::Settings {
            adoptable_namespaces: listed
                .iter()
                .map(|n| appenv_core::settings::DnsLabel::parse(n).expect("label"))
                .collect(),
            ..Default::default()
        };
        match adoption(&stores, &model, &settings) {
            Ok(()) => "ok".to_owned(),
            Err(invalid) => invalid.to_string(),
        }
    }

    #[test]
    fn a_namespace_is_adopted_only_when_it_opts_in_and_is_no_other_environments() {
        let adopt = "{app: shop, image: 'shop:1', namespace: {name: payments, adopt: true}}";
        let own = "{app: shop, image: 'shop:1', namespace: {name: payments}}";
        let opted_in = [(appenv_core::settings::ADOPTABLE_LABEL, "true")];
        let other = [(label::ENVIRONMENT, "payments-prod")];
        let mine = [(label::ENVIRONMENT, "shop-prod")];
        assert_eq!(adoption_of(adopt, Some(&opted_in), &[]), "ok");
        assert_eq!(adoption_of(adopt, Some(&[]), &["payments"]), "ok");
        assert_eq!(adoption_of(adopt, Some(&mine), &[]), "ok", "adopted before");
        assert_eq!(adoption_of(own, None, &[]), "ok", "created and owned");
        assert_eq!(adoption_of(own, Some(&mine), &[]), "ok", "owned before");
        let unlabelled = adoption_of(adopt, Some(&[]), &[]);
        assert!(
            unlabelled.starts_with("spec.namespace.adopt: namespace \"payments\" does not let environments adopt it: whoever may edit it labels it appenv.dev/adoptable=true"),
            "{unlabelled}"
        );
        let false_label = adoption_of(
            adopt,
            Some(&[(appenv_core::settings::ADOPTABLE_LABEL, "yes")]),
            &[],
        );
        assert!(
            false_label.contains("does not let environments adopt it"),
            "{false_label}"
        );
        for (yaml, labels) in [(adopt, &other), (own, &other)] {
            let taken = adoption_of(yaml, Some(labels), &["payments"]);
            assert_eq!(
                taken,
                "spec.namespace.name: namespace \"payments\" belongs to environment \"payments-prod\": one environment per namespace"
            );
        }
        let exists = adoption_of(own, Some(&[]), &[]);
        assert!(
            exists.contains("exists and is no environment's"),
            "{exists}"
        );
        let missing = adoption_of(adopt, None, &[]);
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
