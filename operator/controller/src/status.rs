//! The status step. `compute` and `invalid` are pure: the model, what was observed and the
//! gate decisions in, the status out. Transition times (and a preview's expiry) are kept while
//! nothing changes, so an environment at rest computes exactly the status it has, and
//! nothing is written. `write` sends a status that changed, with the Events of its
//! transitions.

use crate::Context;
use crate::error::Error;
use crate::events;
use crate::observe::{self, Migration, Observed};
use crate::plan::Gates;
use appenv_api::names::{Component, ConditionType, Reason};
use appenv_api::{AppEnvironment, AppEnvironmentStatus, ComponentStatus, Phase};
use appenv_core::build::{self, FIELD_MANAGER};
use appenv_core::validate::{DatabaseModel, Invalid, Model};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource as _, ResourceExt as _};

/// One condition before its transition time is decided.
#[derive(Debug, Clone, PartialEq)]
struct Cond {
    type_: ConditionType,
    ok: bool,
    reason: Reason,
    message: String,
}

fn cond(type_: ConditionType, ok: bool, reason: Reason, message: impl Into<String>) -> Cond {
    Cond {
        type_,
        ok,
        reason,
        message: message.into(),
    }
}

/// Conditions with transition times carried over from `previous` where the status is unchanged.
fn conditions(
    conds: Vec<Cond>,
    previous: Option<&AppEnvironmentStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    conds
        .into_iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" };
            let before = previous.and_then(|p| {
                p.conditions
                    .iter()
                    .find(|old| old.type_ == c.type_.as_str())
            });
            let since = match before {
                Some(old) if old.status == status => old.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: c.type_.as_str().to_owned(),
                status: status.to_owned(),
                reason: c.reason.as_str().to_owned(),
                message: c.message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The status of an environment whose spec is invalid: nothing else is known to be true.
pub fn invalid(
    invalid: &Invalid,
    previous: Option<&AppEnvironmentStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> AppEnvironmentStatus {
    let message = invalid.to_string();
    AppEnvironmentStatus {
        observed_generation: generation,
        phase: Some(Phase::Invalid),
        conditions: conditions(
            vec![
                cond(
                    ConditionType::Ready,
                    false,
                    Reason::InvalidSpec,
                    "the spec is invalid; see the Valid condition",
                ),
                cond(ConditionType::Valid, false, Reason::InvalidSpec, message),
            ],
            previous,
            generation,
            now,
        ),
        // What was running keeps running; say where.
        namespace: previous.and_then(|p| p.namespace.clone()),
        image: previous.and_then(|p| p.image.clone()),
        url: previous.and_then(|p| p.url.clone()),
        components: previous.map(|p| p.components.clone()).unwrap_or_default(),
        expires_at: previous.and_then(|p| p.expires_at.clone()),
    }
}

fn container_image(d: &Deployment) -> Option<&str> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .as_deref()
}

/// Whether the Deployment runs `image` in all `desired` replicas, fully rolled out.
fn rolled_out(d: &Deployment, image: &str, desired: i32) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    status.observed_generation >= d.metadata.generation
        && container_image(d) == Some(image)
        && status.updated_replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) == desired
}

/// The messages of a Deployment's conditions that say its rollout is stuck.
fn stuck(component: &str, d: &Deployment) -> Vec<String> {
    let conditions = d.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .filter(|c| {
            (c.type_ == "Progressing" && c.status == "False")
                || (c.type_ == "ReplicaFailure" && c.status == "True")
        })
        .map(|c| {
            let message = c.message.clone().unwrap_or_else(|| c.type_.clone());
            format!("{component}: {message}")
        })
        .collect()
}

/// Ready and desired Pods of every component, whether every Deployment is rolled out at its
/// image, and what is failing.
#[derive(Debug, Default)]
struct Components {
    list: Vec<ComponentStatus>,
    all_current: bool,
    failures: Vec<String>,
}

fn components(model: &Model, observed: &Observed, gates: &Gates) -> Components {
    let scale = |n: i32| if model.suspend { 0 } else { n };
    let mut out = Components {
        all_current: true,
        ..Components::default()
    };
    for workload in observe::workloads(model) {
        let component = workload.component;
        let desired = scale(workload.replicas);
        let image = workload.own_image.or_else(|| gates.workload_image.clone());
        let deployment = observed.deployments.get(&component);
        let ready = deployment
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        out.all_current &= match (deployment, image) {
            (Some(d), Some(image)) => rolled_out(d, &image, desired),
            _ => false,
        };
        if let Some(failure) = observed.pod_failures.get(&component) {
            out.failures.push(format!("{component}: {failure}"));
        }
        out.failures
            .extend(deployment.map(|d| stuck(&component, d)).unwrap_or_default());
        out.list.push(ComponentStatus {
            name: component,
            ready,
            desired,
        });
    }
    if let Some(DatabaseModel::Postgres(_)) = &model.database {
        let ready = observed
            .postgres
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        out.list.push(ComponentStatus {
            name: Component::Postgres.as_str().to_owned(),
            ready,
            desired: scale(1),
        });
    }
    out
}

fn database(model: &Model, observed: &Observed, gates: &Gates) -> Cond {
    let ok = |reason, message: String| cond(ConditionType::DatabaseReady, true, reason, message);
    let waiting =
        |reason, message: String| cond(ConditionType::DatabaseReady, false, reason, message);
    match &model.database {
        None => ok(
            Reason::NotConfigured,
            "the environment has no database".to_owned(),
        ),
        Some(DatabaseModel::External { secret, .. }) => ok(
            Reason::External,
            format!("connection string from Secret {secret}"),
        ),
        Some(DatabaseModel::Embedded(em))
            if observed.data_volume_phase.as_deref() == Some("Bound") =>
        {
            ok(
                Reason::Embedded,
                format!("{} on volume {}", em.path, build::data_volume_name(model)),
            )
        }
        Some(DatabaseModel::Embedded(_)) => waiting(
            Reason::VolumePending,
            format!(
                "waiting for volume {} to be bound ({})",
                build::data_volume_name(model),
                observed
                    .data_volume_phase
                    .as_deref()
                    .unwrap_or("not created yet")
            ),
        ),
        Some(DatabaseModel::Postgres(_)) if gates.database_ready => {
            ok(Reason::Ready, "PostgreSQL is ready".to_owned())
        }
        Some(DatabaseModel::Postgres(_)) => waiting(
            Reason::Starting,
            "waiting for PostgreSQL to become ready".to_owned(),
        ),
    }
}

/// The MigrationsSucceeded condition, and the failure to report if the migration failed.
fn migrations(model: &Model, migration: &Migration, gates: &Gates) -> (Cond, Option<String>) {
    let type_ = ConditionType::MigrationsSucceeded;
    let image = &model.image;
    match migration {
        Migration::NotConfigured => (
            cond(
                type_,
                true,
                Reason::NotConfigured,
                "the environment has no migrations",
            ),
            None,
        ),
        Migration::Succeeded => (
            cond(
                type_,
                true,
                Reason::Succeeded,
                format!("migrations for {image} succeeded"),
            ),
            None,
        ),
        Migration::NotStarted if !gates.database_ready => (
            cond(
                type_,
                false,
                Reason::WaitingForDatabase,
                "migrations start when the database is ready",
            ),
            None,
        ),
        Migration::NotStarted | Migration::Running => (
            cond(
                type_,
                false,
                Reason::Running,
                format!("migrating to {image}"),
            ),
            None,
        ),
        Migration::Failed(why) => (
            cond(
                type_,
                false,
                Reason::Failed,
                format!(
                    "migrations for {image} failed ({why}); the previous version keeps serving"
                ),
            ),
            Some(format!("migrations for {image}: {why}")),
        ),
    }
}

/// "waiting for web 1/2, postgres 0/1", or "rolling out" when every Pod is ready.
fn progress(components: &[ComponentStatus]) -> String {
    let waiting: Vec<String> = components
        .iter()
        .filter(|c| c.ready < c.desired)
        .map(|c| format!("{} {}/{}", c.name, c.ready, c.desired))
        .collect();
    if waiting.is_empty() {
        "rolling out".to_owned()
    } else {
        format!("waiting for {}", waiting.join(", "))
    }
}

fn phase(
    ready: bool,
    degraded: bool,
    suspend: bool,
    previous: Option<&AppEnvironmentStatus>,
) -> Phase {
    if degraded {
        Phase::Degraded
    } else if suspend && ready {
        Phase::Suspended
    } else if ready {
        Phase::Ready
    } else if previous.and_then(|p| p.observed_generation).is_none() {
        Phase::Pending
    } else {
        Phase::Progressing
    }
}

/// When a preview is deleted: its TTL counts from the last spec change.
fn expires_at(
    model: &Model,
    previous: Option<&AppEnvironmentStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<Time> {
    let preview = model.preview.as_ref()?;
    let unchanged = previous.is_some_and(|prev| prev.observed_generation == generation);
    Some(match previous.and_then(|prev| prev.expires_at.clone()) {
        Some(at) if unchanged => at,
        _ => Time(now + preview.ttl),
    })
}

/// Ready, Progressing and Degraded, from the rollout's state.
fn rollout_conditions(ready: bool, failures: &[String], progress: String) -> [Cond; 3] {
    let degraded = !failures.is_empty();
    let ready_cond = if ready {
        cond(
            ConditionType::Ready,
            true,
            Reason::Ready,
            "every component is available at the current spec and image",
        )
    } else {
        cond(
            ConditionType::Ready,
            false,
            Reason::NotReady,
            progress.clone(),
        )
    };
    let progressing = match (ready, degraded) {
        (true, _) => cond(
            ConditionType::Progressing,
            false,
            Reason::Done,
            "rollout complete",
        ),
        (false, true) => cond(
            ConditionType::Progressing,
            false,
            Reason::Stalled,
            "stalled on a failing component; see Degraded",
        ),
        (false, false) => cond(
            ConditionType::Progressing,
            true,
            Reason::RollingOut,
            progress,
        ),
    };
    let degraded_cond = if degraded {
        cond(
            ConditionType::Degraded,
            true,
            Reason::ComponentFailing,
            failures.join("; "),
        )
    } else {
        cond(
            ConditionType::Degraded,
            false,
            Reason::Healthy,
            "no component is failing",
        )
    };
    [ready_cond, progressing, degraded_cond]
}

/// The status of a valid environment.
pub fn compute(
    model: &Model,
    observed: &Observed,
    gates: &Gates,
    previous: Option<&AppEnvironmentStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> AppEnvironmentStatus {
    let Components {
        list,
        all_current,
        mut failures,
    } = components(model, observed, gates);
    let database = database(model, observed, gates);
    let migration = observed
        .migration
        .clone()
        .unwrap_or(Migration::NotConfigured);
    let (migrations, migration_failure) = migrations(model, &migration, gates);
    failures.extend(migration_failure);
    failures.extend(observed.volume_failures.iter().cloned());
    let at_spec_image = gates.workload_image.as_deref() == Some(model.image.as_str());
    let ready = all_current && migrations.ok && database.ok && at_spec_image;
    let [ready_cond, progressing, degraded] = rollout_conditions(ready, &failures, progress(&list));
    let valid = cond(
        ConditionType::Valid,
        true,
        Reason::Valid,
        "the spec is valid",
    );
    AppEnvironmentStatus {
        observed_generation: generation,
        phase: Some(phase(ready, !failures.is_empty(), model.suspend, previous)),
        url: build::url(model),
        namespace: Some(model.namespace.name.clone()),
        image: gates.workload_image.clone(),
        conditions: conditions(
            vec![
                ready_cond,
                valid,
                progressing,
                degraded,
                database,
                migrations,
            ],
            previous,
            generation,
            now,
        ),
        components: list,
        expires_at: expires_at(model, previous, generation, now),
    }
}

/// Write the status if it differs from what the object has, with the Events of its
/// transitions; count the phase either way.
pub async fn write(
    ctx: &Context,
    env: &AppEnvironment,
    status: AppEnvironmentStatus,
) -> Result<(), Error> {
    if let Some(phase) = status.phase {
        ctx.metrics.phase(&env.name_any(), phase.as_str());
    }
    if env.status.as_ref() == Some(&status) {
        return Ok(());
    }
    for note in events::transitions(env.status.as_ref(), &status) {
        ctx.events
            .publish(
                &env.object_ref(&()),
                note.kind,
                note.reason.as_str(),
                note.action.as_str(),
                &note.message,
            )
            .await;
    }
    let api: Api<AppEnvironment> = Api::all(ctx.client.clone());
    let body = serde_json::json!({
        "apiVersion": AppEnvironment::api_version(&()),
        "kind": AppEnvironment::kind(&()),
        "status": status,
    });
    api.patch_status(
        &env.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(Error::Status)
}
