//! The plan step, pure: from the validated model, what was observed, the previous status and
//! the time, decide what this reconcile does. Whether a preview expired (unless kept), whether
//! the spec is invalid (a namespace cannot change), the gates of the rollout (the database
//! before the migration, the migration before web and workers move to a new image), whether to
//! prune, the status to report and when to look again. The other steps only execute it.

use crate::observe::{Migration, Observed};
use crate::status;
use appenv_api::names::ConditionType;
use appenv_api::{AppEnvironment, AppEnvironmentStatus};
use appenv_core::build::APPLIED_HASH_ANNOTATION;
use appenv_core::validate::{DatabaseModel, FieldError, Invalid, Model};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use std::time::Duration;

/// Annotation that keeps a preview past its TTL.
pub const KEEP_ANNOTATION: &str = "appenv.dev/keep";

/// While a rollout is under way the children's watches bring its changes; this is the safety
/// net.
const ROLLING_OUT: Duration = Duration::from_secs(30);

/// What the plan is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The environment as the watch has it: its previous status, generation and annotations.
    pub env: &'a AppEnvironment,
    /// The validated model with what was observed of it, or why the spec is invalid.
    pub spec: Result<(&'a Model, &'a Observed), &'a Invalid>,
    pub now: Timestamp,
    /// The longest wait before the next reconcile.
    pub resync: Duration,
}

/// What this reconcile does.
#[derive(Debug)]
pub enum Plan<'a> {
    /// The preview's TTL ran out: delete it, and nothing else.
    Expire,
    /// The spec is invalid: report it and wait for a change (what runs keeps running).
    Invalid(Box<AppEnvironmentStatus>),
    /// Build, apply (within the gates), prune, report.
    Rollout(Box<Rollout<'a>>),
}

#[derive(Debug)]
pub struct Rollout<'a> {
    pub model: &'a Model,
    pub gates: Gates,
    /// The spec changed since the last status: delete the children it no longer has.
    pub prune: bool,
    pub status: AppEnvironmentStatus,
    /// When to reconcile again if nothing changes before.
    pub requeue: Duration,
}

/// The gates of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gates {
    /// The image web and workers run: the spec's once its migration succeeded (or there is
    /// none), else the one they ran before (`None` on a first rollout: nothing starts before
    /// the schema exists).
    pub workload_image: Option<String>,
    /// The environment's database is ready (true without a PostgreSQL of its own).
    pub database_ready: bool,
    /// The migration Job may be applied: it needs the database.
    pub run_migration: bool,
    /// The `APPLIED_HASH_ANNOTATION` of the existing PostgreSQL StatefulSet, if any.
    pub statefulset_hash: Option<String>,
}

impl Gates {
    /// Web and workers may be applied: an image for them is decided.
    pub fn apply_workloads(&self) -> bool {
        self.workload_image.is_some()
    }
}

/// Decide this reconcile.
pub fn plan<'a>(input: &Input<'a>) -> Plan<'a> {
    let Input {
        env,
        spec,
        now,
        resync,
    } = *input;
    let previous = env.status.as_ref();
    let generation = env.metadata.generation;
    if expired(env, now) {
        return Plan::Expire;
    }
    let (model, observed) = match spec {
        Ok(valid) => valid,
        Err(invalid) => {
            return Plan::Invalid(Box::new(status::invalid(
                invalid, previous, generation, now,
            )));
        }
    };
    if let Some(invalid) = namespace_change(model, previous) {
        return Plan::Invalid(Box::new(status::invalid(
            &invalid, previous, generation, now,
        )));
    }
    let gates = gates(model, observed, previous);
    let status = status::compute(model, observed, &gates, previous, generation, now);
    let requeue = requeue(&status, observed, kept(env), resync, now);
    Plan::Rollout(Box::new(Rollout {
        model,
        prune: previous.and_then(|s| s.observed_generation) != generation,
        gates,
        status,
        requeue,
    }))
}

fn kept(env: &AppEnvironment) -> bool {
    env.annotations()
        .get(KEEP_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// A preview past the expiry its status gives, and not kept.
fn expired(env: &AppEnvironment, now: Timestamp) -> bool {
    let expires = env
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| t.0);
    env.spec.preview.is_some() && !kept(env) && expires.is_some_and(|at| at <= now)
}

/// The namespace an environment owns cannot change: its data and children live there.
fn namespace_change(model: &Model, previous: Option<&AppEnvironmentStatus>) -> Option<Invalid> {
    let owned = previous?.namespace.as_deref()?;
    (owned != model.namespace.name).then(|| {
        Invalid(vec![FieldError {
            path: "spec.namespace.name".to_owned(),
            message: format!("immutable: the environment owns namespace {owned:?}"),
        }])
    })
}

fn gates(model: &Model, observed: &Observed, previous: Option<&AppEnvironmentStatus>) -> Gates {
    let migrated = matches!(
        observed.migration,
        None | Some(Migration::NotConfigured | Migration::Succeeded)
    );
    let workload_image = if migrated {
        Some(model.image.clone())
    } else {
        // The previous version keeps serving (or, on the first rollout, nothing starts before
        // the schema exists).
        previous.and_then(|s| s.image.clone())
    };
    let database_ready = match &model.database {
        Some(DatabaseModel::Postgres(_)) => observed
            .postgres
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some_and(|s| s.ready_replicas.unwrap_or(0) >= 1),
        _ => true,
    };
    Gates {
        workload_image,
        database_ready,
        run_migration: database_ready,
        statefulset_hash: observed
            .postgres
            .as_ref()
            .and_then(|s| s.annotations().get(APPLIED_HASH_ANNOTATION).cloned()),
    }
}

/// At rest (or waiting for a new image after a failed migration): resync only. Rolling out:
/// the safety net. Never past a preview's expiry, unless the preview is kept.
fn requeue(
    status: &AppEnvironmentStatus,
    observed: &Observed,
    kept: bool,
    resync: Duration,
    now: Timestamp,
) -> Duration {
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == ConditionType::Ready.as_str() && c.status == "True");
    let failed = matches!(observed.migration, Some(Migration::Failed(_)));
    let mut next = if ready || failed {
        resync
    } else {
        ROLLING_OUT.min(resync)
    };
    if let Some(at) = status.expires_at.as_ref().filter(|_| !kept) {
        let until = at.0.duration_since(now).unsigned_abs();
        next = next.min(until + Duration::from_secs(1));
    }
    next
}

/// The wait before a reconcile that failed `attempts` times in a row is retried: 1 s, 2 s,
/// 4 s ... capped at 5 minutes.
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(1, 9).saturating_sub(1))
        .min(Duration::from_secs(300))
}

/// The requeue of a plan, sooner if apply left objects to look at again.
pub fn after_apply(requeue: Duration, look_again: Option<Duration>) -> Duration {
    look_again.map_or(requeue, |wait| requeue.min(wait))
}
