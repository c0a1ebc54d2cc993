//! The plan step, pure: from the validated model, what was observed, the previous status and
//! the time, decide what this reconcile does. Whether a preview expired (unless kept), whether
//! the spec is invalid (a namespace cannot change), the gates of the rollout (the database
//! before the migration, the migration before web and workers move to a new image), whether to
//! prune, the status to report and when to look again. The other steps only execute it.

use crate::backups::{self, Decision, MigrationGate};
use crate::observe::{Migration, Observed};
use crate::restores::{self, FirstGate};
use crate::status;
use appenv_api::names::{Component, ConditionType};
use appenv_api::{AppEnvironment, AppEnvironmentStatus, Phase};
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
    /// Deployments whose replicas someone changed by hand, which this rollout sets back.
    pub reverts: Vec<Revert>,
    /// Workers that became autoscaled while appenv owns their replicas: see [`Handover`].
    pub handovers: Vec<Handover>,
    /// The backups of this reconcile.
    pub backups: Decision,
    /// The restores of this reconcile.
    pub restores: restores::Decision,
}

/// The replicas of a worker that became autoscaled, handed to another field manager before
/// appenv's apply leaves the field out: the API server removes a field its only manager stops
/// applying (the Deployment would fall back to one replica before the autoscaler moves it).
/// The value is the current one, within the autoscaler's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub deployment: String,
    pub replicas: i32,
}

/// The handovers this rollout does (none while suspended: appenv holds the replicas at zero).
pub fn handovers(model: &Model, observed: &Observed) -> Vec<Handover> {
    if model.suspend {
        return Vec::new();
    }
    model
        .workers
        .iter()
        .filter_map(|w| {
            let bounds = w.autoscaling.as_ref()?;
            let component = appenv_api::names::worker_component(&w.name);
            let live = observed.deployments.get(&component)?;
            let replicas = live.replicas.filter(|_| live.replicas_by_appenv)?;
            Some(Handover {
                deployment: format!("{}-{}", model.app, w.name),
                replicas: replicas.clamp(bounds.min_replicas, bounds.max_replicas),
            })
        })
        .collect()
}

/// A Deployment scaled by hand (its replicas differ from the spec's while the spec did not
/// change), which the apply sets back: an Event says so, and how to scale instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revert {
    pub component: String,
    pub deployment: String,
    /// The replicas it was scaled to.
    pub from: i32,
    /// The spec's.
    pub to: i32,
    /// How to scale it instead.
    pub how: String,
}

impl Revert {
    /// The Event's message.
    pub fn message(&self) -> String {
        format!(
            "{}: Deployment {} was scaled by hand; reverted from {} to {} replicas, as the spec says. {}",
            self.component, self.deployment, self.from, self.to, self.how
        )
    }
}

/// The Deployments whose replicas differ from the spec's although the spec did not change since
/// the last status (`spec_changed`: they are about to follow a new spec, not being reverted).
/// Autoscaled workers are left out: their replicas are their autoscaler's.
pub fn reverts(
    model: &Model,
    observed: &Observed,
    spec_changed: bool,
    gates: &Gates,
) -> Vec<Revert> {
    if spec_changed || !gates.apply_workloads() {
        return Vec::new();
    }
    crate::observe::workloads(model)
        .into_iter()
        .filter(|w| !w.autoscaled || model.suspend)
        .filter_map(|w| {
            let want = if model.suspend { 0 } else { w.replicas };
            let live = observed.deployments.get(&w.component)?.replicas?;
            (live != want).then(|| Revert {
                how: how_to_scale(model, &w.component, live),
                component: w.component,
                deployment: w.deployment,
                from: live,
                to: want,
            })
        })
        .collect()
}

fn how_to_scale(model: &Model, component: &str, replicas: i32) -> String {
    let env = &model.name;
    if model.suspend {
        return "The environment is suspended (spec.suspend): resume it to run Pods.".to_owned();
    }
    if component == appenv_api::names::Component::Web.as_str() {
        return format!(
            "To scale it, run `appenv scale {env} web={replicas}` or set spec.web.replicas."
        );
    }
    match model
        .workers
        .iter()
        .position(|w| appenv_api::names::worker_component(&w.name) == component)
    {
        Some(i) => format!(
            "To scale it, run `appenv scale {env} {}={replicas}` or set spec.workers[{i}].replicas (or spec.workers[{i}].autoscaling to follow its queue).",
            model.workers[i].name
        ),
        None => "It runs exactly one replica.".to_owned(),
    }
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
    /// The migration Job may be applied: it needs the database (and the backup before it).
    pub run_migration: bool,
    /// The backup the migration waits for.
    pub backup: MigrationGate,
    /// Web is held at zero replicas while a DuckDB backup copies the file or a restore runs.
    pub stop_web: bool,
    /// Workers are held at zero replicas while a restore runs in place.
    pub stop_workers: bool,
    /// The first rollout waits for the initial restore and its seed.
    pub restore: FirstGate,
    /// The backup taken before the migration of the spec's image ("Job X, completed at T"),
    /// named when that migration fails.
    pub backup_before: Option<String>,
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
    let mut gates = gates(model, observed, previous);
    let annotation = |key: &str| env.annotations().get(key).map(String::as_str);
    let restores = restores::decide(&restores::Input {
        model,
        observed,
        previous,
        request: annotation(restores::REQUEST_ANNOTATION),
        source: observed.restore_source.as_ref(),
        snapshot: observed.restore_snapshot.as_ref(),
        database_ready: gates.database_ready,
        backup_running: previous
            .and_then(|p| p.backup.as_ref())
            .is_some_and(|b| b.running.is_some()),
        now,
    });
    let backups = backups::decide(&backups::Input {
        model,
        observed,
        previous,
        request: annotation(backups::REQUEST_ANNOTATION),
        created: env.metadata.creation_timestamp.as_ref().map(|t| t.0),
        database_ready: gates.database_ready,
        busy: restores.busy(),
        now,
    });
    gates.run_migration &=
        backups.migration == MigrationGate::Open && restores.first == FirstGate::Open;
    if restores.first != FirstGate::Open {
        // Nothing of the app starts before its data is restored and seeded.
        gates.workload_image = None;
    }
    gates.stop_web = backups.stop_web || restores.hold;
    gates.stop_workers = restores.hold;
    if waking(model, observed) && !(gates.database_ready && redis_ready(model, observed)) {
        // Back from zero (a wake, a resume): the database and Redis first, as on a first start.
        gates.stop_web = true;
        gates.stop_workers = true;
    }
    gates.backup = backups.migration.clone();
    gates.backup_before = backups::before_migration(model, backups.status.as_deref());
    gates.restore = restores.first.clone();
    let mut status = status::compute(model, observed, &gates, previous, generation, now);
    status::add_backups(&mut status, &backups, previous, now);
    status.restore.clone_from(&restores.status);
    status.sleep.clone_from(&observed.sleep.status);
    status
        .last_sleep_request
        .clone_from(&observed.sleep.handled_request);
    if status.sleep.is_some() && status.phase == Some(Phase::Suspended) {
        status.phase = Some(Phase::Sleeping);
    }
    let mut requeue = requeue(&status, observed, kept(env), resync, now);
    if let Some(due) = observed.sleep.due {
        let until = due.duration_since(now).as_secs_f64().max(0.0);
        requeue = requeue.min(Duration::from_secs_f64(until) + Duration::from_secs(1));
    }
    if let Some(due) = backups.next_due {
        let until = due.duration_since(now).as_secs_f64().max(0.0);
        requeue = requeue.min(Duration::from_secs_f64(until) + Duration::from_secs(1));
    }
    let spec_changed = previous.and_then(|s| s.observed_generation) != generation;
    // Web (and workers) scaled to zero for a DuckDB backup or a restore (now, or one that
    // just finished) are no reverts.
    let held = |run: Option<&appenv_api::BackupRun>| run.is_some_and(|r| r.web_stopped);
    let was_held = previous.is_some_and(|p| {
        held(p.backup.as_ref().and_then(|b| b.running.as_ref()))
            || held(p.restore.as_ref().and_then(|r| r.running.as_ref()))
    });
    let mut reverts = reverts(model, observed, spec_changed, &gates);
    if gates.stop_web || gates.stop_workers || was_held {
        reverts.clear();
    }
    Plan::Rollout(Box::new(Rollout {
        model,
        prune: spec_changed,
        reverts,
        handovers: if gates.stop_workers {
            Vec::new()
        } else {
            handovers(model, observed)
        },
        gates,
        status,
        requeue,
        backups,
        restores,
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
            .is_some_and(|s| s.ready_replicas.unwrap_or(0) >= 1),
        _ => true,
    };
    Gates {
        workload_image,
        database_ready,
        run_migration: database_ready,
        backup: MigrationGate::Open,
        stop_web: false,
        stop_workers: false,
        restore: FirstGate::Open,
        backup_before: None,
        statefulset_hash: observed
            .postgres
            .as_ref()
            .and_then(|s| s.applied_hash.as_deref().map(str::to_owned)),
    }
}

/// Web comes back from zero replicas (a wake, a resume): its Deployment exists at zero while the
/// model wants Pods.
fn waking(model: &Model, observed: &Observed) -> bool {
    !model.suspend
        && model.web.replicas > 0
        && observed
            .deployments
            .get(Component::Web.as_str())
            .is_some_and(|d| d.replicas == Some(0))
}

/// Redis (if the environment has one) has a ready Pod.
fn redis_ready(model: &Model, observed: &Observed) -> bool {
    model.redis.is_none()
        || observed
            .deployments
            .get(Component::Redis.as_str())
            .and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.ready_replicas.unwrap_or(0) >= 1)
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

/// Environments, models and observed states for the tests of the pure steps.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::observe::{self, Migration, Observed};
    use crate::stores::{DeploymentSnapshot, StatefulSetSnapshot};
    use appenv_api::names::ConditionType;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec, AppEnvironmentStatus};
    use appenv_core::settings::Settings;
    use appenv_core::validate::{self, DatabaseModel, Model};
    use k8s_openapi::api::apps::v1::{
        Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetStatus,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
    use k8s_openapi::jiff::Timestamp;

    /// PostgreSQL, migrations, a worker: every gate.
    pub const FULL: &str = "{app: shop, image: 'shop:2', workers: [{name: w, replicas: 1}], database: {postgres: {}}, migrations: {command: [migrate]}}";
    pub const PREVIEW: &str =
        "{app: shop, image: 'shop:2', profile: Preview, preview: {pullRequest: 7, ttl: 1h}}";

    pub fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().expect("timestamp")
    }

    /// An environment at generation 1 with no status yet.
    pub fn env(yaml: &str) -> AppEnvironment {
        let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
        let mut env = AppEnvironment::new("shop-env", spec);
        env.metadata.generation = Some(1);
        env
    }

    pub fn model(env: &AppEnvironment) -> Model {
        validate::validate(env, &Settings::default()).expect("valid")
    }

    /// A Deployment fully rolled out at `image` with `replicas` Pods, as its watch keeps it.
    pub fn deployment(image: &str, replicas: i32) -> DeploymentSnapshot {
        DeploymentSnapshot::from(&deployment_object(image, replicas))
    }

    /// A Deployment fully rolled out at `image` with `replicas` Pods.
    pub fn deployment_object(image: &str, replicas: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "app".into(),
                            image: Some(image.into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(replicas),
                updated_replicas: Some(replicas),
                available_replicas: Some(replicas),
                ready_replicas: Some(replicas),
                ..DeploymentStatus::default()
            }),
        }
    }

    /// The PostgreSQL StatefulSet with `ready` Pods, as its watch keeps it.
    pub fn postgres(ready: i32) -> StatefulSetSnapshot {
        StatefulSetSnapshot::from(&postgres_object(ready))
    }

    pub fn postgres_object(ready: i32) -> StatefulSet {
        StatefulSet {
            status: Some(StatefulSetStatus {
                ready_replicas: Some(ready),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        }
    }

    /// Every Deployment rolled out at `image` (or its own), the database ready, the migration
    /// in `migration` (if the model has migrations).
    pub fn observed(model: &Model, image: &str, migration: Migration) -> Observed {
        let mut observed = Observed {
            migration: Some(match model.migrations {
                Some(_) => migration,
                None => Migration::NotConfigured,
            }),
            ..Observed::default()
        };
        if let Some(DatabaseModel::Postgres(_)) = model.database {
            observed.postgres = Some(postgres(if model.suspend { 0 } else { 1 }));
        }
        for workload in observe::workloads(model) {
            let replicas = if model.suspend { 0 } else { workload.replicas };
            let image = workload.own_image.as_deref().unwrap_or(image);
            observed
                .deployments
                .insert(workload.component, deployment(image, replicas));
        }
        observed
    }

    pub fn condition(status: &AppEnvironmentStatus, type_: ConditionType) -> &Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_.as_str())
            .expect("condition")
    }

    /// `(status, reason)` of a condition.
    pub fn state(status: &AppEnvironmentStatus, type_: ConditionType) -> (String, String) {
        let c = condition(status, type_);
        (c.status.clone(), c.reason.clone())
    }

    pub fn is(status: &str, reason: appenv_api::names::Reason) -> (String, String) {
        (status.to_owned(), reason.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{self, FULL, PREVIEW, deployment, env, is, now, observed, state};
    use super::*;
    use appenv_api::Phase;
    use appenv_api::names::Reason;
    use appenv_core::build::APPLIED_HASH_ANNOTATION;
    use appenv_core::validate::Invalid;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const RESYNC: Duration = Duration::from_secs(300);

    /// The environment after a reconcile of generation `observed` that ran `image`.
    fn with_status(mut env: AppEnvironment, generation: i64, image: &str) -> AppEnvironment {
        let model = fixtures::model(&env);
        env.status = Some(AppEnvironmentStatus {
            observed_generation: Some(generation),
            namespace: Some(model.namespace.name.clone()),
            image: Some(image.to_owned()),
            ..AppEnvironmentStatus::default()
        });
        env
    }

    fn plan_of<'a>(env: &'a AppEnvironment, model: &'a Model, observed: &'a Observed) -> Plan<'a> {
        plan(&Input {
            env,
            spec: Ok((model, observed)),
            now: now(),
            resync: RESYNC,
        })
    }

    fn rollout<'a>(plan: Plan<'a>) -> Rollout<'a> {
        match plan {
            Plan::Rollout(rollout) => *rollout,
            other => panic!("expected a rollout, got {other:?}"),
        }
    }

    /// What a rollout decided, without the borrowed model.
    struct Decided {
        gates: Gates,
        prune: bool,
        status: AppEnvironmentStatus,
        requeue: Duration,
    }

    fn rollout_of(env: &AppEnvironment, observed: &Observed) -> Decided {
        let model = fixtures::model(env);
        let r = rollout(plan_of(env, &model, observed));
        Decided {
            gates: r.gates,
            prune: r.prune,
            status: r.status,
            requeue: r.requeue,
        }
    }

    #[test]
    fn a_first_rollout_waits_for_the_database_before_the_migration_and_the_workloads() {
        let env = env(FULL);
        let observed = Observed {
            migration: Some(Migration::NotStarted),
            ..Observed::default()
        };
        let r = rollout_of(&env, &observed);
        assert!(!r.gates.database_ready);
        assert!(
            !r.gates.run_migration,
            "the migration waits for the database"
        );
        assert_eq!(r.gates.workload_image, None);
        assert!(
            !r.gates.apply_workloads(),
            "nothing starts before the schema"
        );
        assert_eq!(
            state(&r.status, ConditionType::DatabaseReady),
            is("False", Reason::Starting)
        );
        assert_eq!(
            state(&r.status, ConditionType::MigrationsSucceeded),
            is("False", Reason::WaitingForDatabase)
        );
        assert_eq!(r.status.phase, Some(Phase::Progressing));
        assert_eq!(r.requeue, ROLLING_OUT);
    }

    #[test]
    fn a_ready_database_lets_the_migration_run_and_still_holds_the_workloads() {
        let env = env(FULL);
        let mut observed = Observed {
            migration: Some(Migration::NotStarted),
            ..Observed::default()
        };
        observed.postgres = Some(fixtures::postgres(1));
        let r = rollout_of(&env, &observed);
        assert!(r.gates.database_ready && r.gates.run_migration);
        assert_eq!(r.gates.workload_image, None);
        let migrations = fixtures::condition(&r.status, ConditionType::MigrationsSucceeded);
        assert_eq!(migrations.reason, Reason::Running.as_str());
        assert_eq!(migrations.message, "migrating to shop:2");
    }

    #[test]
    fn a_running_migration_keeps_the_previous_image_serving() {
        let mut env = with_status(env(FULL), 1, "shop:1");
        env.metadata.generation = Some(2);
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:1", Migration::Running);
        let r = rollout_of(&env, &observed);
        assert_eq!(r.gates.workload_image.as_deref(), Some("shop:1"));
        assert!(r.gates.apply_workloads() && r.gates.run_migration);
        assert_eq!(r.status.image.as_deref(), Some("shop:1"));
        assert_eq!(
            state(&r.status, ConditionType::Ready),
            is("False", Reason::NotReady)
        );
        assert_eq!(r.status.phase, Some(Phase::Progressing));
        assert_eq!(r.requeue, ROLLING_OUT);
    }

    #[test]
    fn a_failed_migration_degrades_keeps_the_previous_image_and_rests_until_resync() {
        let env = with_status(env(FULL), 1, "shop:1");
        let model = fixtures::model(&env);
        let failed = Migration::Failed("BackoffLimitExceeded: too many retries".into());
        let observed = observed(&model, "shop:1", failed);
        let r = rollout_of(&env, &observed);
        assert_eq!(r.gates.workload_image.as_deref(), Some("shop:1"));
        let migrations = fixtures::condition(&r.status, ConditionType::MigrationsSucceeded);
        assert_eq!(migrations.reason, Reason::Failed.as_str());
        assert!(
            migrations
                .message
                .contains("previous version keeps serving")
        );
        let degraded = fixtures::condition(&r.status, ConditionType::Degraded);
        assert_eq!(degraded.status, "True");
        assert!(
            degraded
                .message
                .contains("migrations for shop:2: BackoffLimitExceeded"),
            "{}",
            degraded.message
        );
        assert_eq!(r.status.phase, Some(Phase::Degraded));
        assert_eq!(
            state(&r.status, ConditionType::Progressing),
            is("False", Reason::Stalled)
        );
        assert_eq!(
            r.requeue, RESYNC,
            "a new image is a spec change: no polling"
        );
    }

    #[test]
    fn a_succeeded_migration_moves_web_and_workers_to_the_new_image() {
        let env = with_status(env(FULL), 1, "shop:1");
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:1", Migration::Succeeded);
        let r = rollout_of(&env, &observed);
        assert_eq!(r.gates.workload_image.as_deref(), Some("shop:2"));
        assert_eq!(r.status.image.as_deref(), Some("shop:2"));
        // The Deployments still run shop:1: not ready until they roll.
        assert_eq!(
            state(&r.status, ConditionType::Ready),
            is("False", Reason::NotReady)
        );
        assert_eq!(
            state(&r.status, ConditionType::MigrationsSucceeded),
            is("True", Reason::Succeeded)
        );
        assert_eq!(r.requeue, ROLLING_OUT);
    }

    #[test]
    fn fully_rolled_out_at_the_spec_image_is_ready_and_rests_until_resync() {
        let env = with_status(env(FULL), 1, "shop:2");
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::Succeeded);
        let r = rollout_of(&env, &observed);
        assert_eq!(
            state(&r.status, ConditionType::Ready),
            is("True", Reason::Ready)
        );
        assert_eq!(
            state(&r.status, ConditionType::Progressing),
            is("False", Reason::Done)
        );
        assert_eq!(r.status.phase, Some(Phase::Ready));
        assert_eq!(r.requeue, RESYNC);
        assert!(!r.prune, "the generation was seen: nothing to prune");
    }

    #[test]
    fn without_migrations_the_spec_image_rolls_out_at_once() {
        let env = with_status(env("{app: shop, image: 'shop:2'}"), 1, "shop:1");
        let r = rollout_of(&env, &Observed::default());
        assert_eq!(r.gates.workload_image.as_deref(), Some("shop:2"));
        assert!(r.gates.database_ready && r.gates.run_migration);
        assert_eq!(
            state(&r.status, ConditionType::MigrationsSucceeded),
            is("True", Reason::NotConfigured)
        );
        assert_eq!(
            state(&r.status, ConditionType::DatabaseReady),
            is("True", Reason::NotConfigured)
        );
    }

    #[test]
    fn an_image_change_is_not_ready_while_the_old_image_serves() {
        let mut env = with_status(env(FULL), 1, "shop:1");
        env.metadata.generation = Some(2);
        let model = fixtures::model(&env);
        // Every Deployment is fully rolled out, at the previous image.
        let observed = observed(&model, "shop:1", Migration::NotStarted);
        let r = rollout_of(&env, &observed);
        assert_eq!(r.gates.workload_image.as_deref(), Some("shop:1"));
        assert_eq!(
            state(&r.status, ConditionType::Ready),
            is("False", Reason::NotReady)
        );
        assert_eq!(r.status.phase, Some(Phase::Progressing));
        assert!(r.prune, "a new generation prunes");
    }

    #[test]
    fn a_spec_change_without_an_image_change_prunes_and_keeps_serving_the_image() {
        let mut env = with_status(env(FULL), 1, "shop:2");
        env.metadata.generation = Some(2);
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::Succeeded);
        let r = rollout_of(&env, &observed);
        assert!(r.prune);
        assert_eq!(r.gates.workload_image.as_deref(), Some("shop:2"));
        assert_eq!(r.status.observed_generation, Some(2));
        assert_eq!(
            state(&r.status, ConditionType::Ready),
            is("True", Reason::Ready)
        );
    }

    #[test]
    fn a_suspended_environment_scales_to_zero_and_says_so() {
        let yaml = "{app: shop, image: 'shop:2', suspend: true, workers: [{name: w}], redis: {}}";
        let env = with_status(env(yaml), 1, "shop:2");
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::NotConfigured);
        let r = rollout_of(&env, &observed);
        assert!(r.status.components.iter().all(|c| c.desired == 0));
        assert_eq!(r.status.components.len(), 3, "web, the worker, redis");
        assert_eq!(r.status.phase, Some(Phase::Suspended));
        assert_eq!(r.requeue, RESYNC);
    }

    #[test]
    fn a_suspended_environment_with_its_own_postgres_reaches_suspended() {
        let yaml = "{app: shop, image: 'shop:2', suspend: true, database: {postgres: {}}}";
        let env = with_status(env(yaml), 1, "shop:2");
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::NotConfigured);
        assert_eq!(
            observed.postgres.as_ref().and_then(|p| p.ready_replicas),
            Some(0)
        );
        let r = rollout_of(&env, &observed);
        assert_eq!(r.status.phase, Some(Phase::Suspended));
        assert_eq!(
            state(&r.status, ConditionType::DatabaseReady),
            is("True", Reason::Suspended)
        );
        assert!(
            !r.gates.run_migration,
            "no migration against a stopped database"
        );
        assert_eq!(r.requeue, RESYNC);
    }

    fn expiring(at: Timestamp, keep: Option<&str>) -> AppEnvironment {
        let mut env = with_status(env(PREVIEW), 1, "shop:2");
        if let Some(status) = env.status.as_mut() {
            status.expires_at = Some(Time(at));
        }
        if let Some(keep) = keep {
            env.metadata.annotations = Some([(KEEP_ANNOTATION.to_owned(), keep.to_owned())].into());
        }
        env
    }

    fn past() -> Timestamp {
        now() - Duration::from_secs(1)
    }

    #[test]
    fn a_preview_past_its_expiry_is_deleted() {
        let env = expiring(past(), None);
        let model = fixtures::model(&env);
        assert!(matches!(
            plan_of(&env, &model, &Observed::default()),
            Plan::Expire
        ));
    }

    #[test]
    fn a_preview_expires_at_the_exact_time_but_not_before() {
        let env = expiring(now(), None);
        let model = fixtures::model(&env);
        assert!(matches!(
            plan_of(&env, &model, &Observed::default()),
            Plan::Expire
        ));
        let env = expiring(now() + Duration::from_secs(1), None);
        assert!(matches!(
            plan_of(&env, &model, &Observed::default()),
            Plan::Rollout(_)
        ));
    }

    #[test]
    fn the_keep_annotation_keeps_an_expired_preview_and_its_expiry_sets_no_requeue() {
        let env = expiring(past(), Some("true"));
        let r = rollout_of(&env, &Observed::default());
        assert_eq!(r.status.expires_at, Some(Time(past())), "the expiry stays");
        assert_eq!(
            r.requeue, ROLLING_OUT,
            "not 1 s: the expiry is not waited for"
        );
    }

    #[test]
    fn only_keep_true_keeps_a_preview() {
        let env = expiring(past(), Some("yes"));
        let model = fixtures::model(&env);
        assert!(matches!(
            plan_of(&env, &model, &Observed::default()),
            Plan::Expire
        ));
    }

    #[test]
    fn an_expired_preview_is_deleted_even_with_an_invalid_spec() {
        let env = expiring(past(), None);
        let invalid = Invalid(vec![]);
        let plan = plan(&Input {
            env: &env,
            spec: Err(&invalid),
            now: now(),
            resync: RESYNC,
        });
        assert!(matches!(plan, Plan::Expire));
    }

    #[test]
    fn an_environment_that_is_not_a_preview_never_expires() {
        let mut env = with_status(env("{app: shop, image: 'shop:2'}"), 1, "shop:2");
        if let Some(status) = env.status.as_mut() {
            status.expires_at = Some(Time(past()));
        }
        let r = rollout_of(&env, &Observed::default());
        assert_eq!(r.status.expires_at, None);
    }

    #[test]
    fn a_preview_is_looked_at_again_when_it_expires() {
        let env = expiring(now() + Duration::from_secs(10), None);
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::NotConfigured);
        let r = rollout_of(&env, &observed);
        assert_eq!(
            state(&r.status, ConditionType::Ready),
            is("True", Reason::Ready)
        );
        assert_eq!(r.requeue, Duration::from_secs(11));
    }

    #[test]
    fn an_invalid_spec_is_reported_and_what_runs_keeps_running() {
        let env = with_status(env(FULL), 1, "shop:1");
        let invalid = Invalid(vec![FieldError {
            path: "spec.web.port".into(),
            message: "must be between 1 and 65535".into(),
        }]);
        let plan = plan(&Input {
            env: &env,
            spec: Err(&invalid),
            now: now(),
            resync: RESYNC,
        });
        let Plan::Invalid(status) = plan else {
            panic!("expected Invalid, got {plan:?}");
        };
        assert_eq!(status.phase, Some(Phase::Invalid));
        let valid = fixtures::condition(&status, ConditionType::Valid);
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(valid.message.contains("spec.web.port"), "{}", valid.message);
        assert_eq!(status.image.as_deref(), Some("shop:1"));
        assert_eq!(
            status.namespace,
            env.status.as_ref().and_then(|s| s.namespace.clone())
        );
    }

    #[test]
    fn the_namespace_an_environment_owns_cannot_change() {
        let mut env = with_status(env(FULL), 1, "shop:2");
        if let Some(status) = env.status.as_mut() {
            status.namespace = Some("elsewhere".into());
        }
        let model = fixtures::model(&env);
        let observed = Observed::default();
        let plan = plan_of(&env, &model, &observed);
        let Plan::Invalid(status) = plan else {
            panic!("expected Invalid, got {plan:?}");
        };
        let valid = fixtures::condition(&status, ConditionType::Valid);
        assert!(valid.message.contains("immutable"), "{}", valid.message);
        assert!(valid.message.contains("elsewhere"), "{}", valid.message);
        assert_eq!(status.namespace.as_deref(), Some("elsewhere"));
    }

    #[test]
    fn a_crash_looping_component_degrades_the_environment() {
        let env = with_status(env(FULL), 1, "shop:2");
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::Succeeded);
        observed.pod_failures.insert(
            "web".into(),
            "Pod shop-1 container web: CrashLoopBackOff".into(),
        );
        let r = rollout_of(&env, &observed);
        let degraded = fixtures::condition(&r.status, ConditionType::Degraded);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ComponentFailing")
        );
        assert_eq!(
            degraded.message,
            "web: Pod shop-1 container web: CrashLoopBackOff"
        );
        assert_eq!(r.status.phase, Some(Phase::Degraded));
        assert_eq!(
            r.requeue, RESYNC,
            "ready: the failure is watched, not polled"
        );
    }

    #[test]
    fn a_rollout_is_looked_at_again_within_the_resync() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let observed = Observed::default();
        let short = Duration::from_secs(10);
        let plan = plan(&Input {
            env: &env,
            spec: Ok((&model, &observed)),
            now: now(),
            resync: short,
        });
        assert_eq!(rollout(plan).requeue, short);
    }

    #[test]
    fn retries_double_from_a_second_and_stop_growing() {
        let delays: Vec<u64> = [0, 1, 2, 3, 9, 10, 1000]
            .map(|n| retry_delay(n).as_secs())
            .to_vec();
        assert_eq!(delays, [1, 1, 2, 4, 256, 256, 256]);
    }

    #[test]
    fn objects_in_flight_bring_the_next_look_forward() {
        let in_flight = Some(Duration::from_secs(30));
        assert_eq!(
            after_apply(Duration::from_secs(300), in_flight),
            Duration::from_secs(30)
        );
        assert_eq!(
            after_apply(Duration::from_secs(5), in_flight),
            Duration::from_secs(5)
        );
        assert_eq!(
            after_apply(Duration::from_secs(300), None),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn the_statefulset_hash_goes_to_apply() {
        let env = env(FULL);
        let mut observed = Observed::default();
        let mut statefulset = fixtures::postgres_object(1);
        statefulset.metadata.annotations =
            Some([(APPLIED_HASH_ANNOTATION.to_owned(), "abc".to_owned())].into());
        observed.postgres = Some((&statefulset).into());
        let r = rollout_of(&env, &observed);
        assert_eq!(r.gates.statefulset_hash.as_deref(), Some("abc"));
        let r = rollout_of(&env, &Observed::default());
        assert_eq!(r.gates.statefulset_hash, None);
    }

    #[test]
    fn a_deployment_at_its_own_image_counts_as_current() {
        let yaml = "{app: shop, image: 'shop:2', workers: [{name: side, image: 'sidecar:9'}]}";
        let env = with_status(env(yaml), 1, "shop:2");
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::NotConfigured);
        assert_eq!(
            state(&rollout_of(&env, &observed).status, ConditionType::Ready),
            is("True", Reason::Ready)
        );
        // The worker at the environment's image is not at its own.
        let replicas = observed.deployments["worker-side"].replicas.unwrap_or(1);
        observed
            .deployments
            .insert("worker-side".into(), deployment("shop:2", replicas));
        assert_eq!(
            state(&rollout_of(&env, &observed).status, ConditionType::Ready),
            is("False", Reason::NotReady)
        );
    }
    #[test]
    fn a_deployment_scaled_by_hand_is_reverted_once_the_spec_is_unchanged_and_says_how_to_scale() {
        let yaml = "{app: shop, image: 'shop:2', redis: {}, workers: [{name: rq, replicas: 2}, \
                    {name: auto, autoscaling: {minReplicas: 1, maxReplicas: 5, queue: {type: RQ, names: [default]}}}]}";
        let env = with_status(env(yaml), 1, "shop:2");
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::NotConfigured);
        let r = rollout(plan_of(&env, &model, &observed));
        assert_eq!(r.reverts, [], "as the spec says");
        observed
            .deployments
            .insert("worker-rq".to_owned(), deployment("shop:2", 5));
        observed
            .deployments
            .insert("worker-auto".to_owned(), deployment("shop:2", 4));
        observed
            .deployments
            .insert("web".to_owned(), deployment("shop:2", 7));
        let r = rollout(plan_of(&env, &model, &observed));
        let reverted: Vec<(&str, i32, i32)> = r
            .reverts
            .iter()
            .map(|v| (v.component.as_str(), v.from, v.to))
            .collect();
        assert_eq!(
            reverted,
            [("web", 7, 2), ("worker-rq", 5, 2)],
            "not the autoscaled worker: its replicas are its autoscaler's"
        );
        assert_eq!(
            r.reverts[1].message(),
            "worker-rq: Deployment shop-rq was scaled by hand; reverted from 5 to 2 replicas, as the spec says. \
             To scale it, run `appenv scale shop-env rq=5` or set spec.workers[0].replicas (or spec.workers[0].autoscaling to follow its queue)."
        );
        assert!(
            r.reverts[0]
                .message()
                .contains("`appenv scale shop-env web=7` or set spec.web.replicas")
        );
        // A new generation: the Deployments follow the new spec, nothing was changed by hand.
        let mut changed = env.clone();
        changed.metadata.generation = Some(2);
        let r = rollout(plan_of(&changed, &model, &observed));
        assert_eq!(r.reverts, []);
    }
    #[test]
    fn a_newly_autoscaled_worker_hands_its_replicas_over_within_its_bounds() {
        let yaml = "{app: shop, image: 'shop:2', redis: {}, workers: [\
                    {name: a, autoscaling: {minReplicas: 2, maxReplicas: 5, queue: {type: RQ, names: [q]}}}, \
                    {name: b, autoscaling: {minReplicas: 1, maxReplicas: 3, queue: {type: RQ, names: [q]}}}, \
                    {name: c, replicas: 4}]}";
        let env = env(yaml);
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::NotConfigured);
        let mut owned = |component: &str, replicas: i32, by_appenv: bool| {
            let mut d = deployment("shop:2", replicas);
            d.replicas_by_appenv = by_appenv;
            observed.deployments.insert(component.to_owned(), d);
        };
        owned("worker-a", 1, true);
        owned("worker-b", 9, true);
        owned("worker-c", 4, true);
        let found = handovers(&model, &observed);
        assert_eq!(
            found,
            [
                Handover {
                    deployment: "shop-a".into(),
                    replicas: 2
                },
                Handover {
                    deployment: "shop-b".into(),
                    replicas: 3
                },
            ],
            "clamped into the bounds; never a worker appenv scales"
        );
        // Once appenv no longer owns the field, nothing to hand over.
        let mut observed = observed_again(&model);
        for d in observed.deployments.values_mut() {
            d.replicas_by_appenv = false;
        }
        assert_eq!(handovers(&model, &observed), []);
    }

    fn observed_again(model: &Model) -> Observed {
        observed(model, "shop:2", Migration::NotConfigured)
    }
}

#[cfg(test)]
mod backup_tests {
    use super::fixtures::{self, env, now, observed, state};
    use super::*;
    use appenv_api::names::Reason;
    use appenv_api::{BackupRun, BackupStatus};
    use appenv_core::build::before_migration_job_name;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const SPEC: &str = "{app: shop, image: 'shop:2', database: {postgres: {}}, migrations: {command: [migrate]}, backup: {destination: {volume: {size: 1Gi}}}}";

    #[test]
    fn a_failed_migration_names_the_backup_taken_before_it_and_how_to_restore_it() {
        let mut env = env(SPEC);
        let model = fixtures::model(&env);
        let job = before_migration_job_name(&model).expect("migrations");
        env.status = Some(AppEnvironmentStatus {
            observed_generation: Some(1),
            namespace: Some(model.namespace.name.clone()),
            image: Some("shop:1".into()),
            backup: Some(Box::new(BackupStatus {
                last_success: Some(BackupRun {
                    job: job.clone(),
                    reason: "before-migration".into(),
                    finished_at: Some(Time("2026-12-01T11:58:00Z".parse().expect("time"))),
                    ..BackupRun::default()
                }),
                ..BackupStatus::default()
            })),
            ..AppEnvironmentStatus::default()
        });
        let observed = observed(
            &model,
            "shop:1",
            Migration::Failed("BackoffLimitExceeded".into()),
        );
        let Plan::Rollout(rollout) = plan(&Input {
            env: &env,
            spec: Ok((&model, &observed)),
            now: now(),
            resync: Duration::from_secs(300),
        }) else {
            panic!("a rollout");
        };
        assert_eq!(
            state(&rollout.status, ConditionType::MigrationsSucceeded),
            ("False".to_owned(), Reason::Failed.as_str().to_owned())
        );
        let message =
            &fixtures::condition(&rollout.status, ConditionType::MigrationsSucceeded).message;
        assert!(
            message.contains(&format!(
                "the backup of Job {job} (completed at 2026-12-01 11:58:00 UTC)"
            )) && message.contains("appenv restore shop-env --backup ID --yes"),
            "{message}"
        );
        // Web stays on the old image; the failed migration blocks nothing else.
        assert_eq!(rollout.gates.workload_image.as_deref(), Some("shop:1"));
    }
}
