//! The status step, as a pure function: the model, what was observed and the gate decisions
//! in; the status out. Transition times (and a preview's expiry) are kept while nothing
//! changes, so an environment at rest computes exactly the status it has, and nothing is
//! written.

use crate::observe::{self, Migration, Observed};
use crate::stores::DeploymentSnapshot;
use appenv_api::{AppEnvironmentStatus, ComponentStatus, Phase, condition};
use appenv_core::build;
use appenv_core::validate::{DatabaseModel, Invalid, Model};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// One condition before its transition time is decided.
struct Cond {
    type_: &'static str,
    ok: bool,
    reason: String,
    message: String,
}

fn cond(type_: &'static str, ok: bool, reason: &str, message: impl Into<String>) -> Cond {
    Cond {
        type_,
        ok,
        reason: reason.to_owned(),
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
            let before =
                previous.and_then(|p| p.conditions.iter().find(|old| old.type_ == c.type_));
            let since = match before {
                Some(old) if old.status == status => old.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: c.type_.to_owned(),
                status: status.to_owned(),
                reason: c.reason,
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
                    condition::READY,
                    false,
                    "InvalidSpec",
                    "the spec is invalid; see the Valid condition",
                ),
                cond(condition::VALID, false, "InvalidSpec", message),
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

/// Gate decisions of this reconcile.
#[derive(Debug, Clone)]
pub struct Gates {
    /// The image web and workers were moved to (`None`: held until the first migration).
    pub rollout_image: Option<String>,
    pub database_ready: bool,
}

/// Whether the Deployment runs `image` in all `desired` replicas, fully rolled out.
fn rolled_out(d: &DeploymentSnapshot, image: &str, desired: i32) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    status.observed_generation >= d.meta.generation
        && d.image.as_deref() == Some(image)
        && status.updated_replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) == desired
}

#[allow(clippy::too_many_lines)] // split into steps next (issue 13)
pub fn compute(
    model: &Model,
    observed: &Observed,
    gates: &Gates,
    previous: Option<&AppEnvironmentStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> AppEnvironmentStatus {
    let mut components = Vec::new();
    let mut all_current = true;
    let mut failures: Vec<String> = Vec::new();
    let scale = |n: i32| if model.suspend { 0 } else { n };
    for workload in observe::workloads(model) {
        let component = workload.component;
        let desired = scale(workload.replicas);
        let image = workload.own_image.or_else(|| gates.rollout_image.clone());
        let deployment = observed.deployments.get(&component);
        let ready = deployment
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let current = match (deployment, image) {
            (Some(d), Some(image)) => rolled_out(d, &image, desired),
            _ => false,
        };
        all_current &= current;
        if let Some(failure) = observed.pod_failures.get(&component) {
            failures.push(format!("{component}: {failure}"));
        }
        for why in deployment
            .and_then(|d| d.status.as_ref())
            .into_iter()
            .flat_map(|s| &s.stuck)
        {
            failures.push(format!("{component}: {why}"));
        }
        components.push(ComponentStatus {
            name: component,
            ready,
            desired,
        });
    }
    if let Some(DatabaseModel::Postgres(_)) = &model.database {
        let ready = observed
            .postgres
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        components.push(ComponentStatus {
            name: "postgres".to_owned(),
            ready,
            desired: scale(1),
        });
    }

    let database = match &model.database {
        None => cond(
            condition::DATABASE_READY,
            true,
            "NotConfigured",
            "the environment has no database",
        ),
        Some(DatabaseModel::External { secret, .. }) => cond(
            condition::DATABASE_READY,
            true,
            "External",
            format!("connection string from Secret {secret}"),
        ),
        Some(DatabaseModel::Embedded(em))
            if observed.data_volume_phase.as_deref() == Some("Bound") =>
        {
            cond(
                condition::DATABASE_READY,
                true,
                "Embedded",
                format!("{} on volume {}", em.path, build::data_volume_name(model)),
            )
        }
        Some(DatabaseModel::Embedded(_)) => cond(
            condition::DATABASE_READY,
            false,
            "VolumePending",
            format!(
                "waiting for volume {} to be bound ({})",
                build::data_volume_name(model),
                observed
                    .data_volume_phase
                    .as_deref()
                    .unwrap_or("not created yet")
            ),
        ),
        Some(DatabaseModel::Postgres(_)) if gates.database_ready => cond(
            condition::DATABASE_READY,
            true,
            "Ready",
            "PostgreSQL is ready",
        ),
        Some(DatabaseModel::Postgres(_)) => cond(
            condition::DATABASE_READY,
            false,
            "Starting",
            "waiting for PostgreSQL to become ready",
        ),
    };
    let migration_state = observed
        .migration
        .clone()
        .unwrap_or(Migration::NotConfigured);
    let migrations = match &migration_state {
        Migration::NotConfigured => cond(
            condition::MIGRATIONS_SUCCEEDED,
            true,
            "NotConfigured",
            "the environment has no migrations",
        ),
        Migration::Succeeded => cond(
            condition::MIGRATIONS_SUCCEEDED,
            true,
            "Succeeded",
            format!("migrations for {} succeeded", model.image),
        ),
        Migration::NotStarted if !gates.database_ready => cond(
            condition::MIGRATIONS_SUCCEEDED,
            false,
            "WaitingForDatabase",
            "migrations start when the database is ready",
        ),
        Migration::NotStarted | Migration::Running => cond(
            condition::MIGRATIONS_SUCCEEDED,
            false,
            "Running",
            format!("migrating to {}", model.image),
        ),
        Migration::Failed(why) => {
            failures.push(format!("migrations for {}: {why}", model.image));
            cond(
                condition::MIGRATIONS_SUCCEEDED,
                false,
                "Failed",
                format!(
                    "migrations for {} failed ({why}); the previous version keeps serving",
                    model.image
                ),
            )
        }
    };
    failures.extend(observed.volume_failures.iter().cloned());
    let migrations_ok = matches!(
        migration_state,
        Migration::NotConfigured | Migration::Succeeded
    );
    let at_spec_image = gates.rollout_image.as_deref() == Some(model.image.as_str());
    let ready = all_current && migrations_ok && database.ok && at_spec_image;
    let degraded = !failures.is_empty();
    let waiting: Vec<String> = components
        .iter()
        .filter(|c| c.ready < c.desired)
        .map(|c| format!("{} {}/{}", c.name, c.ready, c.desired))
        .collect();
    let progress_message = if waiting.is_empty() {
        "rolling out".to_owned()
    } else {
        format!("waiting for {}", waiting.join(", "))
    };
    let phase = if degraded {
        Phase::Degraded
    } else if model.suspend && ready {
        Phase::Suspended
    } else if ready {
        Phase::Ready
    } else if previous.and_then(|p| p.observed_generation).is_none() {
        Phase::Pending
    } else {
        Phase::Progressing
    };
    let expires_at = model.preview.as_ref().map(|p| {
        let unchanged = previous.is_some_and(|prev| prev.observed_generation == generation);
        match previous.and_then(|prev| prev.expires_at.clone()) {
            Some(at) if unchanged => at,
            // The TTL counts from the last spec change.
            _ => Time(now + p.ttl),
        }
    });
    AppEnvironmentStatus {
        observed_generation: generation,
        phase: Some(phase),
        url: build::url(model),
        namespace: Some(model.namespace.name.clone()),
        image: gates.rollout_image.clone(),
        conditions: conditions(
            vec![
                if ready {
                    cond(
                        condition::READY,
                        true,
                        "Ready",
                        "every component is available at the current spec and image",
                    )
                } else {
                    cond(
                        condition::READY,
                        false,
                        "NotReady",
                        progress_message.clone(),
                    )
                },
                cond(condition::VALID, true, "Valid", "the spec is valid"),
                if ready || degraded {
                    cond(
                        condition::PROGRESSING,
                        false,
                        if ready { "Done" } else { "Stalled" },
                        if ready {
                            "rollout complete"
                        } else {
                            "stalled on a failing component; see Degraded"
                        },
                    )
                } else {
                    cond(condition::PROGRESSING, true, "RollingOut", progress_message)
                },
                if degraded {
                    cond(
                        condition::DEGRADED,
                        true,
                        "ComponentFailing",
                        failures.join("; "),
                    )
                } else {
                    cond(
                        condition::DEGRADED,
                        false,
                        "Healthy",
                        "no component is failing",
                    )
                },
                database,
                migrations,
            ],
            previous,
            generation,
            now,
        ),
        components,
        expires_at,
    }
}
