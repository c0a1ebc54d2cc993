//! The status step. `compute` and `invalid` are pure: the model, what was observed and the
//! gate decisions in, the status out. Transition times (and a preview's expiry) are kept while
//! nothing changes, so an environment at rest computes exactly the status it has, and
//! nothing is written. `write` sends a status that changed, then the Events of its
//! transitions.

use crate::Context;
use crate::backups::MigrationGate;
use crate::error::Error;
use crate::events;
use crate::observe::{self, Migration, Observed};
use crate::plan::Gates;
use crate::restores::FirstGate;
use crate::stores::DeploymentSnapshot;
use appenv_api::names::{Component, ConditionType, Reason};
use appenv_api::{AppEnvironment, AppEnvironmentStatus, ComponentStatus, Phase};
use appenv_core::build::{self, FIELD_MANAGER};
use appenv_core::validate::{DatabaseModel, Invalid, Model};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource as _, ResourceExt as _};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        backup: previous.and_then(|p| p.backup.clone()),
        restore: previous.and_then(|p| p.restore.clone()),
        sleep: previous.and_then(|p| p.sleep.clone()),
        last_sleep_request: previous.and_then(|p| p.last_sleep_request.clone()),
    }
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

/// The messages of a Deployment's conditions that say its rollout is stuck.
fn stuck(component: &str, d: &DeploymentSnapshot) -> Vec<String> {
    d.status
        .iter()
        .flat_map(|s| &s.stuck)
        .map(|why| format!("{component}: {why}"))
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
        let deployment = observed.deployments.get(&component);
        // An autoscaled worker wants what its autoscaler last set.
        let desired = match deployment.and_then(|d| d.replicas) {
            Some(set) if workload.autoscaled && !model.suspend => set,
            _ => scale(workload.replicas),
        };
        let image = workload.own_image.or_else(|| gates.workload_image.clone());
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
    match &gates.restore {
        FirstGate::Open => {}
        FirstGate::Waiting(what) => {
            return cond(
                ConditionType::DatabaseReady,
                false,
                Reason::Restoring,
                what.clone(),
            );
        }
        FirstGate::Failed(why) => {
            return cond(
                ConditionType::DatabaseReady,
                false,
                Reason::RestoreFailed,
                why.clone(),
            );
        }
    }
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
        // Suspended, PostgreSQL is scaled to 0 like everything else: that is the state asked
        // for, not one to wait for (its volume and data stay).
        Some(DatabaseModel::Postgres(_)) if model.suspend => ok(
            Reason::Suspended,
            "PostgreSQL is scaled to 0 while the environment is suspended; its data stays"
                .to_owned(),
        ),
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
    if *migration == Migration::NotStarted {
        match &gates.backup {
            MigrationGate::Open => {}
            MigrationGate::Failed { job, why } => {
                return (
                    cond(
                        type_,
                        false,
                        Reason::BackupFailed,
                        format!(
                            "the backup before migrating to {image} failed (Job {job}: {why}); the migration did not run and the previous version keeps serving; delete Job {job} to try again"
                        ),
                    ),
                    Some(format!(
                        "backup before migrating to {image}: Job {job}: {why}"
                    )),
                );
            }
            MigrationGate::Waiting { job, pod_failure } => {
                let stuck = pod_failure
                    .as_ref()
                    .map(|f| format!(": it cannot start: {f}"))
                    .unwrap_or_default();
                return (
                    cond(
                        type_,
                        false,
                        Reason::BackingUp,
                        format!("backing up before migrating to {image} (Job {job}){stuck}"),
                    ),
                    pod_failure
                        .as_ref()
                        .map(|f| format!("backup Job {job} cannot start: {f}")),
                );
            }
        }
    }
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
                    "migrations for {image} failed ({why}); the previous version keeps serving{}",
                    gates
                        .backup_before
                        .as_deref()
                        .map(|b| format!(
                            "; the data of before the migration is in {b}: `appenv backup list {env}` shows its id, `appenv restore {env} --backup ID --yes` restores it",
                            env = model.name
                        ))
                        .unwrap_or_default()
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

/// The phase. The first status is already `Progressing`: it is written after the first
/// reconcile applied the environment's objects, so a `Pending` before it would say nothing more
/// and cost every new environment one more status write (`Pending` is what a client shows
/// while an environment has no status yet).
fn phase(ready: bool, degraded: bool, suspend: bool) -> Phase {
    if degraded {
        Phase::Degraded
    } else if suspend && ready {
        Phase::Suspended
    } else if ready {
        Phase::Ready
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
    if let FirstGate::Failed(why) = &gates.restore {
        failures.push(why.clone());
    }
    failures.extend(observed.volume_failures.iter().cloned());
    failures.extend(observed.copy_failures.iter().cloned());
    let at_spec_image = gates.workload_image.as_deref() == Some(model.image.as_str());
    let ready = all_current && migrations.ok && database.ok && at_spec_image;
    let [ready_cond, progressing, degraded] = rollout_conditions(ready, &failures, progress(&list));
    let valid = cond(
        ConditionType::Valid,
        true,
        Reason::Valid,
        "the spec is valid",
    );
    let conds = vec![
        ready_cond,
        valid,
        progressing,
        degraded,
        database,
        migrations,
    ];
    AppEnvironmentStatus {
        observed_generation: generation,
        phase: Some(phase(ready, !failures.is_empty(), model.suspend)),
        url: build::url(model),
        namespace: Some(model.namespace.name.clone()),
        image: gates.workload_image.clone(),
        conditions: conditions(conds, previous, generation, now),
        components: list,
        expires_at: expires_at(model, previous, generation, now),
        backup: None,
        restore: None,
        sleep: None,
        last_sleep_request: None,
    }
}

/// The backups' record and their `BackupsHealthy` condition, added to a computed status.
pub fn add_backups(
    status: &mut AppEnvironmentStatus,
    backups: &crate::backups::Decision,
    previous: Option<&AppEnvironmentStatus>,
    now: Timestamp,
) {
    status.backup.clone_from(&backups.status);
    if let Some((ok, reason, message)) = &backups.health {
        let generation = status.observed_generation;
        let health = cond(ConditionType::BackupsHealthy, *ok, *reason, message.clone());
        status
            .conditions
            .extend(conditions(vec![health], previous, generation, now));
    }
}

/// A status whose only change is progress (ready Pods per component, a condition's message)
/// is written at most this often per environment; one that shows a transition at once.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Progress alone is also written at most this many times a second over all environments,
/// after a burst of [`PROGRESS_BURST`]: when many environments roll out at once (a batch of
/// previews, a new image everywhere), each one's progress is written less often, and the API
/// server's work goes to their objects; transitions are written at once all the same. Measured
/// (`appenv bench`, 1000 environments at once): 0.85 progress writes per environment, one
/// every 5 s of each rollout, against 2 transitions.
pub const PROGRESS_PER_SECOND: u32 = 1;
pub const PROGRESS_BURST: u32 = 5;

/// Whether `after` shows a transition a user sees (`kubectl get`, `kubectl wait`, an Event,
/// a metric): a first status, another phase, generation, URL, namespace, image, expiry or set
/// of components, or a condition with another status or reason. Otherwise it only says how
/// far a rollout got.
pub fn shows_a_transition(
    before: Option<&AppEnvironmentStatus>,
    after: &AppEnvironmentStatus,
) -> bool {
    let Some(before) = before else {
        return true;
    };
    type Outline<'a> = (
        (
            Option<i64>,
            Option<Phase>,
            &'a Option<String>,
            &'a Option<String>,
        ),
        (&'a Option<String>, &'a Option<Time>),
        // Every change of the backups' and restores' records: which Job runs and which ran.
        (
            &'a Option<Box<appenv_api::BackupStatus>>,
            &'a Option<Box<appenv_api::RestoreStatus>>,
        ),
        Vec<(&'a str, &'a str, &'a str)>,
        Vec<&'a str>,
    );
    fn outline(s: &AppEnvironmentStatus) -> Outline<'_> {
        (
            (s.observed_generation, s.phase, &s.url, &s.namespace),
            (&s.image, &s.expires_at),
            (&s.backup, &s.restore),
            s.conditions
                .iter()
                .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
                .collect(),
            s.components.iter().map(|c| c.name.as_str()).collect(),
        )
    }
    outline(before) != outline(after)
}

/// The statuses this operator wrote in the last [`PROGRESS_EVERY`], and when: progress alone is
/// written at most that often, and a reconcile that runs before the watch has brought back the
/// last write (a child's change right after it) sees that write, not the older status of its
/// store: otherwise it would compute from the old one and write again (the first status twice,
/// or an Event twice). Only this operator writes the status; an entry is for one object (uid).
#[derive(Default)]
pub struct Written {
    recent: Mutex<HashMap<String, Recent>>,
    budget: Mutex<Budget>,
}

/// The progress writes allowed over all environments: a token bucket of [`PROGRESS_BURST`]
/// tokens, refilled at [`PROGRESS_PER_SECOND`].
#[derive(Debug)]
struct Budget {
    tokens: f64,
    at: Option<Instant>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            tokens: f64::from(PROGRESS_BURST),
            at: None,
        }
    }
}

impl Budget {
    /// Take a token at `now`; without one, how long until the environment should look again:
    /// a period ([`PROGRESS_EVERY`]), so that the environments refused do not all come back
    /// together for the next token.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = self
            .at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.at = Some(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(PROGRESS_PER_SECOND))
            .min(f64::from(PROGRESS_BURST));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(PROGRESS_EVERY)
        }
    }
}

struct Recent {
    at: Instant,
    uid: Option<String>,
    status: AppEnvironmentStatus,
}

impl Written {
    /// `env` with the status this operator last wrote to it, where the store may not have it yet.
    pub fn current<'a>(&self, env: &'a AppEnvironment) -> Cow<'a, AppEnvironment> {
        let Ok(mut recent) = self.recent.lock() else {
            return Cow::Borrowed(env);
        };
        // By then the watch has brought it back (or the store is as stale as a resync).
        Self::forget_older(&mut recent, Instant::now());
        match recent.get(&env.name_any()) {
            Some(r) if r.uid == env.metadata.uid && env.status.as_ref() != Some(&r.status) => {
                let mut newer = env.clone();
                newer.status = Some(r.status.clone());
                Cow::Owned(newer)
            }
            _ => Cow::Borrowed(env),
        }
    }

    /// Whether a status of `environment` may be written at `now`; if not, how long until it
    /// may. A transition always may; progress alone once a period per environment, within
    /// the budget of all environments ([`PROGRESS_PER_SECOND`]).
    pub fn admit(&self, environment: &str, transition: bool, now: Instant) -> Result<(), Duration> {
        if transition {
            return Ok(());
        }
        if let Ok(recent) = self.recent.lock()
            && let Some(r) = recent.get(environment)
            && let Some(wait) = PROGRESS_EVERY.checked_sub(now.saturating_duration_since(r.at))
            && !wait.is_zero()
        {
            return Err(wait);
        }
        self.budget
            .lock()
            .map_or(Ok(()), |mut budget| budget.take(now))
    }

    /// Forget the writes older than a period at `now`.
    fn forget_older(recent: &mut HashMap<String, Recent>, now: Instant) {
        recent.retain(|_, r| now.saturating_duration_since(r.at) < PROGRESS_EVERY);
    }

    /// Remember a status written to `env` at `now`; forget what is older than a period.
    pub fn record(&self, env: &AppEnvironment, status: AppEnvironmentStatus, now: Instant) {
        if let Ok(mut recent) = self.recent.lock() {
            Self::forget_older(&mut recent, now);
            recent.insert(
                env.name_any(),
                Recent {
                    at: now,
                    uid: env.metadata.uid.clone(),
                    status,
                },
            );
        }
    }
}

/// Write the status if it differs from what the object has, then the Events of its
/// transitions; count the phase either way. A change that is progress alone waits for its turn
/// ([`Written`]): then nothing is written, and the returned delay says when to look again.
pub async fn write(
    ctx: &Context,
    env: &AppEnvironment,
    status: AppEnvironmentStatus,
) -> Result<Option<Duration>, Error> {
    if let Some(phase) = status.phase {
        ctx.metrics.phase(&env.name_any(), phase);
    }
    let last_backup = status.backup.as_ref().and_then(|b| {
        let at = b.last_success.as_ref()?.finished_at.as_ref()?;
        Some(at.0.as_second())
    });
    ctx.metrics.backup(&env.name_any(), last_backup);
    if env.status.as_ref() == Some(&status) {
        return Ok(None);
    }
    let transition = shows_a_transition(env.status.as_ref(), &status);
    if let Err(wait) = ctx
        .written
        .admit(&env.name_any(), transition, Instant::now())
    {
        return Ok(Some(wait));
    }
    let notes = events::transitions(env.status.as_ref(), &status);
    let api: Api<AppEnvironment> = Api::all(ctx.client.clone());
    let body = serde_json::json!({
        "apiVersion": AppEnvironment::api_version(&()),
        "kind": AppEnvironment::kind(&()),
        "status": &status,
    });
    api.patch_status(
        &env.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Status)?;
    ctx.written.record(env, status, Instant::now());
    // After the write: the status a watcher waits for (`kubectl wait`, a CI job) is not held
    // back by a round trip for the Event, and a write that fails publishes nothing (the
    // reconcile that retries it publishes the Events once, with the status it writes).
    for note in notes {
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
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{self, FULL, PREVIEW, deployment, env, is, now, observed, state};
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    use std::time::Duration;

    fn gates(image: Option<&str>, database_ready: bool) -> Gates {
        Gates {
            backup: MigrationGate::Open,
            stop_web: false,
            stop_workers: false,
            restore: FirstGate::Open,
            backup_before: None,
            workload_image: image.map(str::to_owned),
            database_ready,
            run_migration: database_ready,
            statefulset_hash: None,
        }
    }

    /// The first status of an environment at generation 1 (no previous status).
    fn first_status(model: &Model, observed: &Observed, gates: &Gates) -> AppEnvironmentStatus {
        compute(model, observed, gates, None, Some(1), now())
    }

    fn later() -> Timestamp {
        now() + Duration::from_secs(60)
    }

    #[test]
    fn an_environment_at_rest_computes_exactly_the_status_it_has() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::Succeeded);
        let gates = gates(Some("shop:2"), true);
        let first = first_status(&model, &observed, &gates);
        let again = compute(&model, &observed, &gates, Some(&first), Some(1), later());
        assert_eq!(again, first, "nothing to write");
    }

    #[test]
    fn a_transition_time_moves_only_when_its_condition_changes() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let rolling = observed(&model, "shop:1", Migration::Succeeded);
        let gates = gates(Some("shop:2"), true);
        let first = first_status(&model, &rolling, &gates);
        let done = observed(&model, "shop:2", Migration::Succeeded);
        let second = compute(&model, &done, &gates, Some(&first), Some(1), later());
        let time = |status: &AppEnvironmentStatus, type_| {
            fixtures::condition(status, type_).last_transition_time.0
        };
        assert_eq!(time(&second, ConditionType::Ready), later(), "became ready");
        assert_eq!(time(&second, ConditionType::Valid), now(), "still valid");
        assert_eq!(time(&second, ConditionType::DatabaseReady), now());
    }

    #[test]
    fn progress_alone_is_no_transition_but_a_condition_or_phase_change_is() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let gates = gates(Some("shop:2"), true);
        let rolling = observed(&model, "shop:1", Migration::Succeeded);
        let first = first_status(&model, &rolling, &gates);
        assert!(shows_a_transition(None, &first), "a first status");
        let mut more_pods = first.clone();
        more_pods.components[0].ready += 1;
        if let Some(ready) = more_pods.conditions.iter_mut().find(|c| c.type_ == "Ready") {
            ready.message = "waiting for web 1/2".into();
        }
        assert!(!shows_a_transition(Some(&first), &more_pods), "progress");
        let mut second = first.clone();
        second.phase = Some(Phase::Degraded);
        assert!(shows_a_transition(Some(&first), &second), "a new phase");
        let done = observed(&model, "shop:2", Migration::Succeeded);
        let ready = compute(&model, &done, &gates, Some(&first), Some(1), later());
        assert!(shows_a_transition(Some(&first), &ready), "Ready");
        let mut newer = ready.clone();
        newer.observed_generation = Some(2);
        assert!(shows_a_transition(Some(&ready), &newer), "a new generation");
    }

    #[test]
    fn progress_is_written_at_most_every_period_and_transitions_at_once() {
        let written = Written::default();
        let a = env(FULL);
        let mut b = env(FULL);
        b.metadata.name = Some("other".into());
        let status = AppEnvironmentStatus::default();
        let start = Instant::now();
        assert_eq!(
            written.admit("shop-env", false, start),
            Ok(()),
            "nothing written yet"
        );
        written.record(&a, status.clone(), start);
        let soon = start + Duration::from_secs(1);
        assert_eq!(
            written.admit("shop-env", false, soon),
            Err(PROGRESS_EVERY - Duration::from_secs(1)),
            "progress waits for its turn"
        );
        assert_eq!(
            written.admit("other", false, soon),
            Ok(()),
            "per environment"
        );
        written.record(&b, status.clone(), soon);
        assert_eq!(
            written.admit("shop-env", true, soon),
            Ok(()),
            "a transition goes at once"
        );
        let later = start + PROGRESS_EVERY;
        assert_eq!(
            written.admit("shop-env", false, later),
            Ok(()),
            "its turn came"
        );
        written.record(&a, status, later);
        let kept = written.recent.lock().map(|w| w.len()).unwrap_or_default();
        assert_eq!(kept, 2, "other's write is within a period of the last one");
        written.record(&a, AppEnvironmentStatus::default(), later + PROGRESS_EVERY);
        let kept = written.recent.lock().map(|w| w.len()).unwrap_or_default();
        assert_eq!(kept, 1, "older than a period: forgotten");
    }

    #[test]
    fn progress_over_all_environments_is_written_within_a_budget_and_transitions_at_once() {
        let written = Written::default();
        let start = Instant::now();
        let admitted = |at: Instant, from: usize| {
            (from..from + 100)
                .filter(|i| written.admit(&format!("env-{i}"), false, at).is_ok())
                .count()
        };
        assert_eq!(
            admitted(start, 0),
            PROGRESS_BURST as usize,
            "a burst of environments that have written nothing yet"
        );
        assert_eq!(
            written.admit("env-x", false, start),
            Err(PROGRESS_EVERY),
            "the budget is spent: look again in a period"
        );
        assert_eq!(
            written.admit("env-x", true, start),
            Ok(()),
            "a transition goes at once"
        );
        let later = start + Duration::from_secs(3);
        assert_eq!(
            admitted(later, 100),
            3 * PROGRESS_PER_SECOND as usize,
            "refilled at its rate"
        );
        let idle = later + Duration::from_secs(3600);
        assert_eq!(
            admitted(idle, 200),
            PROGRESS_BURST as usize,
            "never more than a burst"
        );
    }

    #[test]
    fn a_reconcile_sees_the_status_just_written_until_its_store_has_it() {
        let written = Written::default();
        let mut stale = env(FULL);
        stale.metadata.uid = Some("u1".into());
        let status = AppEnvironmentStatus {
            phase: Some(Phase::Progressing),
            observed_generation: Some(1),
            ..AppEnvironmentStatus::default()
        };
        written.record(&stale, status.clone(), Instant::now());
        assert_eq!(
            written.current(&stale).status.as_ref(),
            Some(&status),
            "newer than the store"
        );
        let mut current = stale.clone();
        current.status = Some(status.clone());
        assert!(
            matches!(written.current(&current), Cow::Borrowed(_)),
            "store caught up"
        );
        let mut recreated = stale.clone();
        recreated.metadata.uid = Some("u2".into());
        assert_eq!(
            written.current(&recreated).status,
            None,
            "another object of that name"
        );
    }

    #[test]
    fn the_first_status_is_progressing_and_the_next_one_the_same_unless_something_changed() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let gates = gates(None, false);
        let first = first_status(&model, &Observed::default(), &gates);
        assert_eq!(first.phase, Some(Phase::Progressing));
        let second = compute(
            &model,
            &Observed::default(),
            &gates,
            Some(&first),
            Some(1),
            later(),
        );
        assert_eq!(second, first, "nothing changed: nothing to write");
    }

    #[test]
    fn a_previews_expiry_counts_from_the_last_spec_change() {
        let env = env(PREVIEW);
        let model = fixtures::model(&env);
        let gates = gates(Some("shop:2"), true);
        let observed = Observed::default();
        let first = first_status(&model, &observed, &gates);
        let hour = Duration::from_secs(3600);
        assert_eq!(first.expires_at, Some(Time(now() + hour)));
        let same = compute(&model, &observed, &gates, Some(&first), Some(1), later());
        assert_eq!(same.expires_at, first.expires_at, "kept while unchanged");
        let changed = compute(&model, &observed, &gates, Some(&first), Some(2), later());
        assert_eq!(changed.expires_at, Some(Time(later() + hour)), "restarted");
    }

    #[test]
    fn the_progress_message_names_what_is_not_ready() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::Succeeded);
        observed.postgres = Some(fixtures::postgres(0));
        observed
            .deployments
            .insert("web".into(), deployment("shop:2", 0));
        let status = first_status(&model, &observed, &gates(Some("shop:2"), false));
        let ready = fixtures::condition(&status, ConditionType::Ready);
        let web = model.web.replicas;
        assert_eq!(
            ready.message,
            format!("waiting for web 0/{web}, postgres 0/1")
        );
        let progressing = fixtures::condition(&status, ConditionType::Progressing);
        assert_eq!(progressing.reason, Reason::RollingOut.as_str());
        assert_eq!(progressing.message, ready.message);
    }

    #[test]
    fn components_report_ready_and_desired_pods() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::Succeeded);
        let status = first_status(&model, &observed, &gates(Some("shop:2"), true));
        let names: Vec<&str> = status.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["web", "worker-w", "postgres"]);
        assert!(status.components.iter().all(|c| c.ready == c.desired));
    }

    #[test]
    fn a_stuck_deployment_degrades_with_its_message() {
        let env = env("{app: shop, image: 'shop:2'}");
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::NotConfigured);
        let mut web = fixtures::deployment_object("shop:2", 1);
        if let Some(status) = web.status.as_mut() {
            status.conditions = Some(vec![DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                message: Some("exceeded quota".into()),
                ..DeploymentCondition::default()
            }]);
        }
        observed.deployments.insert("web".into(), (&web).into());
        let status = first_status(&model, &observed, &gates(Some("shop:2"), true));
        let degraded = fixtures::condition(&status, ConditionType::Degraded);
        assert_eq!(degraded.message, "web: exceeded quota");
        assert_eq!(status.phase, Some(Phase::Degraded));
    }

    #[test]
    fn a_pod_that_cannot_start_degrades_with_the_component_and_the_kubelets_message() {
        let env = env("{app: shop, image: 'shop:2'}");
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::NotConfigured);
        observed
            .deployments
            .insert("web".into(), deployment("shop:2", 0));
        let why = "Pod shop-1 container app: CreateContainerConfigError: secret \"shop-secrets\" not found";
        observed.pod_failures.insert("web".into(), why.into());
        let status = first_status(&model, &observed, &gates(Some("shop:2"), true));
        let degraded = fixtures::condition(&status, ConditionType::Degraded);
        assert_eq!(degraded.message, format!("web: {why}"));
        assert_eq!(degraded.reason, Reason::ComponentFailing.as_str());
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert_eq!(
            state(&status, ConditionType::Progressing),
            is("False", Reason::Stalled)
        );
    }

    #[test]
    fn a_pod_refused_by_admission_degrades_with_the_replica_sets_reason_and_message() {
        let env = env("{app: shop, image: 'shop:2'}");
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::NotConfigured);
        let mut web = fixtures::deployment_object("shop:2", 0);
        let refused = "pods \"shop-1\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true";
        if let Some(status) = web.status.as_mut() {
            status.conditions = Some(vec![DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(refused.into()),
                ..DeploymentCondition::default()
            }]);
        }
        observed.deployments.insert("web".into(), (&web).into());
        let status = first_status(&model, &observed, &gates(Some("shop:2"), true));
        let degraded = fixtures::condition(&status, ConditionType::Degraded);
        assert_eq!(degraded.message, format!("web: FailedCreate: {refused}"));
        assert_eq!(status.phase, Some(Phase::Degraded));
    }

    #[test]
    fn an_unbindable_volume_degrades() {
        let env = env(FULL);
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::Succeeded);
        observed
            .volume_failures
            .push("PersistentVolumeClaim data: StorageClass \"x\" does not exist".into());
        let status = first_status(&model, &observed, &gates(Some("shop:2"), true));
        assert_eq!(
            state(&status, ConditionType::Degraded),
            is("True", Reason::ComponentFailing)
        );
        assert_eq!(
            state(&status, ConditionType::Ready),
            is("True", Reason::Ready),
            "ready and degraded at once"
        );
        assert_eq!(status.phase, Some(Phase::Degraded));
    }

    #[test]
    fn an_embedded_database_is_ready_once_its_volume_is_bound() {
        let env = env(
            "{app: shop, image: 'shop:2', database: {embedded: {engine: SQLite, path: /data/shop.db}}}",
        );
        let model = fixtures::model(&env);
        let mut observed = observed(&model, "shop:2", Migration::NotConfigured);
        let gates = gates(Some("shop:2"), true);
        let status = first_status(&model, &observed, &gates);
        let database = fixtures::condition(&status, ConditionType::DatabaseReady);
        assert_eq!(database.reason, Reason::VolumePending.as_str());
        assert!(
            database.message.contains("not created yet"),
            "{}",
            database.message
        );
        assert_eq!(
            state(&status, ConditionType::Ready),
            is("False", Reason::NotReady)
        );
        observed.data_volume_phase = Some("Bound".into());
        let status = first_status(&model, &observed, &gates);
        assert_eq!(
            state(&status, ConditionType::DatabaseReady),
            is("True", Reason::Embedded)
        );
        assert_eq!(status.phase, Some(Phase::Ready));
    }

    #[test]
    fn an_external_database_is_ready_from_its_secret() {
        let env = env(
            "{app: shop, image: 'shop:2', database: {external: {secretRef: {name: db, key: url}}}}",
        );
        let model = fixtures::model(&env);
        let observed = observed(&model, "shop:2", Migration::NotConfigured);
        let status = first_status(&model, &observed, &gates(Some("shop:2"), true));
        let database = fixtures::condition(&status, ConditionType::DatabaseReady);
        assert_eq!(database.reason, Reason::External.as_str());
        assert!(
            database.message.contains("Secret db"),
            "{}",
            database.message
        );
    }

    #[test]
    fn an_invalid_status_keeps_where_the_environment_runs() {
        let previous = AppEnvironmentStatus {
            observed_generation: Some(1),
            namespace: Some("shop".into()),
            image: Some("shop:1".into()),
            url: Some("https://shop.example.com".into()),
            ..AppEnvironmentStatus::default()
        };
        let invalid = Invalid(vec![]);
        let status = super::invalid(&invalid, Some(&previous), Some(2), now());
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.phase, Some(Phase::Invalid));
        assert_eq!(
            (&status.namespace, &status.image, &status.url),
            (&previous.namespace, &previous.image, &previous.url)
        );
        assert_eq!(
            state(&status, ConditionType::Ready),
            is("False", Reason::InvalidSpec)
        );
    }
}
