//! The backups' part of the plan, pure: from the model, the backup Jobs observed, the previous
//! status, the `appenv backup now` request and the time, decide which backup Job starts now,
//! whether the migration waits for one, whether web is held at zero (DuckDB: the copy starts
//! only once no web Pod exists), what the status records and which finished Jobs go.
//!
//! One backup runs at a time, in this order of precedence: the backup before the migration of
//! the spec's image, a requested one, a scheduled one. The status remembers the Job that runs
//! (`running`), the last schedule time and the last request started, so a Job deleted by hand or
//! by the history limit is never started again.

use crate::observe::{BackupJob, Migration, Observed};
use appenv_api::names::Reason;
use appenv_api::{AppEnvironmentStatus, BackupRun as RunStatus, BackupStatus};
use appenv_core::build::{
    BackupReason, BackupRun, before_migration_job_name, requested_job_name, scheduled_job_name,
};
use appenv_core::schedule::Schedule;
use appenv_core::validate::{BackupEngine, BackupModel, Model};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// The annotation `appenv backup now` sets (its value is the request: a time).
pub const REQUEST_ANNOTATION: &str = "appenv.dev/backup-requested";
/// Finished backup Jobs kept (their Pods hold the logs), besides the one a migration waits for.
pub const HISTORY: usize = 3;
/// A running backup's Job that the watch has not shown for this long was deleted.
const VANISHED_AFTER: Duration = Duration::from_secs(120);
/// Missed schedule times further back than this are not looked at (one backup makes up for all).
const LOOK_BACK: SignedDuration = SignedDuration::from_hours(24 * 31);

/// What the migration of the spec's image waits for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MigrationGate {
    /// Nothing (no backup before migrations, or it completed).
    #[default]
    Open,
    /// The backup Job of that name, not finished (or not started: the database is not ready).
    Waiting {
        job: String,
        /// Why its Pod cannot start, if it cannot.
        pod_failure: Option<String>,
    },
    /// The backup before it failed: the migration does not run.
    Failed { job: String, why: String },
}

/// A backup that finished since the last status, for its Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The backup Job to create in this reconcile.
    pub start: Option<BackupRun>,
    /// Create `start` only once no web Pod exists (DuckDB); else keep `deferred` as the status.
    pub needs_no_web_pod: bool,
    /// Hold web at zero replicas.
    pub stop_web: bool,
    pub migration: MigrationGate,
    /// The status's record once `start` is created (none without `spec.backup`).
    pub status: Option<BackupStatus>,
    /// The record if `start` waits for web to stop.
    pub deferred: Option<BackupStatus>,
    /// The `BackupsHealthy` condition: status, reason, message.
    pub health: Option<(bool, Reason, String)>,
    /// When the next scheduled backup is due.
    pub next_due: Option<Timestamp>,
    /// Backup Jobs to keep (prune deletes the environment's other Jobs) and to delete now.
    pub keep_jobs: Vec<String>,
    pub delete_jobs: Vec<String>,
    pub finished: Vec<Finished>,
}

/// What the decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub model: &'a Model,
    pub observed: &'a Observed,
    pub previous: Option<&'a AppEnvironmentStatus>,
    /// The value of [`REQUEST_ANNOTATION`].
    pub request: Option<&'a str>,
    /// The environment's creation: the first schedule time is the first after it.
    pub created: Option<Timestamp>,
    pub database_ready: bool,
    pub now: Timestamp,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// The latest time of the schedule after `after` and not after `now`.
pub fn due(schedule: &Schedule, after: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let after = after.max(now - LOOK_BACK);
    let mut slot = schedule.next_after(after).filter(|s| *s <= now)?;
    while let Some(next) = schedule.next_after(slot).filter(|s| *s <= now) {
        slot = next;
    }
    Some(slot)
}

/// Settle the running backup from its Job: completed, failed, or vanished.
fn settle(
    st: &mut BackupStatus,
    jobs: &std::collections::BTreeMap<String, BackupJob>,
    now: Timestamp,
) -> Vec<Finished> {
    let Some(run) = st.running.take() else {
        return Vec::new();
    };
    let started = run.started_at.as_ref().map_or(now, |t| t.0);
    let (why, job) = match jobs.get(&run.job) {
        Some(job) => match &job.state {
            Migration::Succeeded => (None, Some(job)),
            Migration::Failed(why) => (Some(why.clone()), Some(job)),
            _ => {
                st.running = Some(run);
                return Vec::new();
            }
        },
        None if now.duration_since(started).unsigned_abs() < VANISHED_AFTER => {
            st.running = Some(run);
            return Vec::new();
        }
        None => (
            Some("its Job was deleted before it finished".to_owned()),
            None,
        ),
    };
    let finished_at = job.and_then(|j| j.finished).unwrap_or(now);
    let started_at = job.and_then(|j| j.started).unwrap_or(started);
    let record = RunStatus {
        started_at: Some(time(started_at)),
        finished_at: Some(time(finished_at)),
        message: why.clone(),
        web_stopped: false,
        ..run
    };
    let seconds = finished_at
        .duration_since(started_at)
        .as_secs_f64()
        .max(0.0);
    let message = match &why {
        None => format!(
            "backup Job {} ({}) completed in {seconds:.0} s",
            record.job, record.reason
        ),
        Some(why) => format!(
            "backup Job {} ({}) failed: {why}",
            record.job, record.reason
        ),
    };
    if why.is_none() {
        st.last_success = Some(record);
    } else {
        st.last_failure = Some(record);
    }
    vec![Finished {
        ok: why.is_none(),
        message,
    }]
}

fn migration_gate(model: &Model, b: &BackupModel, input: &Input<'_>) -> MigrationGate {
    let ran_before = input.previous.and_then(|p| p.image.as_ref()).is_some();
    if !b.before_migrations
        || !ran_before
        || input.observed.migration != Some(Migration::NotStarted)
    {
        return MigrationGate::Open;
    }
    let Some(job) = before_migration_job_name(model) else {
        return MigrationGate::Open;
    };
    match input.observed.backup_jobs.get(&job) {
        Some(BackupJob {
            state: Migration::Succeeded,
            ..
        }) => MigrationGate::Open,
        Some(BackupJob {
            state: Migration::Failed(why),
            ..
        }) => MigrationGate::Failed {
            job,
            why: why.clone(),
        },
        found => MigrationGate::Waiting {
            job,
            pod_failure: found.and_then(|j| j.pod_failure.clone()),
        },
    }
}

/// Decide the backups of this reconcile.
pub fn decide(input: &Input<'_>) -> Decision {
    let model = input.model;
    let Some(b) = &model.backup else {
        return Decision::default();
    };
    let now = input.now;
    let jobs = &input.observed.backup_jobs;
    let mut st = input
        .previous
        .and_then(|p| p.backup.clone())
        .unwrap_or_default();
    let finished = settle(&mut st, jobs, now);
    let migration = migration_gate(model, b, input);
    let deferred = st.clone();
    let base = input.created.unwrap_or(now);
    let start = if st.running.is_some() || model.suspend {
        None
    } else if let MigrationGate::Waiting { job, .. } = &migration
        && !jobs.contains_key(job)
        && input.database_ready
    {
        Some(BackupRun {
            job: job.clone(),
            reason: BackupReason::BeforeMigration,
        })
    } else if let Some(request) = input
        .request
        .filter(|r| st.last_request.as_deref() != Some(*r))
    {
        st.last_request = Some(request.to_owned());
        Some(BackupRun {
            job: requested_job_name(model, request),
            reason: BackupReason::Manual,
        })
    } else if let Some(slot) = b.schedule.as_ref().and_then(|s| {
        let after = st.last_scheduled.as_ref().map_or(base, |t| t.0);
        due(s, after, now)
    }) {
        st.last_scheduled = Some(time(slot));
        Some(BackupRun {
            job: scheduled_job_name(model, slot),
            reason: BackupReason::Scheduled,
        })
    } else {
        None
    };
    let duckdb = b.engine == BackupEngine::Duckdb;
    if let Some(run) = &start {
        st.running = Some(RunStatus {
            job: run.job.clone(),
            reason: run.reason.as_str().to_owned(),
            started_at: Some(time(now)),
            finished_at: None,
            message: None,
            web_stopped: duckdb,
        });
    }
    let next_due = b
        .schedule
        .as_ref()
        .and_then(|s| s.next_after(st.last_scheduled.as_ref().map_or(base, |t| t.0)));
    let (keep_jobs, delete_jobs) = history(jobs, &st, &migration, start.as_ref());
    let stuck = st.running.as_ref().and_then(|r| {
        let failure = jobs.get(&r.job)?.pod_failure.as_ref()?;
        Some((
            false,
            Reason::BackupFailed,
            format!("backup Job {} cannot start: {failure}", r.job),
        ))
    });
    Decision {
        needs_no_web_pod: duckdb && start.is_some(),
        stop_web: duckdb && st.running.is_some(),
        health: Some(stuck.unwrap_or_else(|| health(b, &st, base, now))),
        migration,
        status: Some(st),
        deferred: Some(deferred),
        next_due,
        keep_jobs,
        delete_jobs,
        finished,
        start,
    }
}

/// The backup Jobs to keep (running, the one a migration waits for, the newest finished ones)
/// and the finished ones past the history to delete.
fn history(
    jobs: &std::collections::BTreeMap<String, BackupJob>,
    st: &BackupStatus,
    migration: &MigrationGate,
    start: Option<&BackupRun>,
) -> (Vec<String>, Vec<String>) {
    let pinned = |name: &str| {
        st.running.as_ref().is_some_and(|r| r.job == name)
            || matches!(migration, MigrationGate::Waiting { job, .. } | MigrationGate::Failed { job, .. } if job == name)
    };
    let mut finished: Vec<(&String, &BackupJob)> = jobs
        .iter()
        .filter(|(name, job)| {
            matches!(job.state, Migration::Succeeded | Migration::Failed(_)) && !pinned(name)
        })
        .collect();
    // Newest first.
    finished.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(b.0.cmp(a.0)));
    let delete: Vec<String> = finished
        .iter()
        .skip(HISTORY)
        .map(|(name, _)| (*name).clone())
        .collect();
    let keep = jobs
        .keys()
        .filter(|name| !delete.contains(name))
        .cloned()
        .chain(start.map(|s| s.job.clone()))
        .collect();
    (keep, delete)
}

fn when(t: Option<&Time>) -> String {
    t.map_or_else(
        || "?".to_owned(),
        |t| t.0.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// `BackupsHealthy`: False when the last backup failed (or cannot start), or when none
/// completed for two schedule intervals (the timeout's grace after the second); True otherwise.
fn health(
    b: &BackupModel,
    st: &BackupStatus,
    created: Timestamp,
    now: Timestamp,
) -> (bool, Reason, String) {
    let at = |r: &RunStatus| r.finished_at.as_ref().map(|t| t.0);
    let success = st.last_success.as_ref();
    let failure = st.last_failure.as_ref();
    if let Some(f) = failure
        && success.is_none_or(|s| at(s) < at(f))
    {
        return (
            false,
            Reason::BackupFailed,
            format!(
                "the last backup failed: Job {} ({}) at {}: {}",
                f.job,
                f.reason,
                when(f.finished_at.as_ref()),
                f.message.as_deref().unwrap_or("failed")
            ),
        );
    }
    if let Some(schedule) = &b.schedule {
        let since = success.and_then(at).unwrap_or(created);
        let second = schedule
            .next_after(since)
            .and_then(|first| schedule.next_after(first));
        let grace = SignedDuration::from_secs(b.timeout_seconds);
        if second.is_some_and(|t| t + grace <= now) {
            let last = success.map_or_else(
                || "no backup has completed since the environment was created".to_owned(),
                |s| {
                    format!(
                        "the last backup completed at {}",
                        when(s.finished_at.as_ref())
                    )
                },
            );
            return (
                false,
                Reason::BackupStale,
                format!("{last}: two scheduled backups were missed"),
            );
        }
    }
    match (success, &st.running) {
        (Some(s), _) => (
            true,
            Reason::BackupSucceeded,
            format!(
                "the last backup completed at {}: Job {} ({})",
                when(s.finished_at.as_ref()),
                s.job,
                s.reason
            ),
        ),
        (None, Some(r)) => (
            true,
            Reason::BackingUp,
            format!("the first backup is running: Job {}", r.job),
        ),
        (None, None) => (
            true,
            Reason::NoBackupYet,
            match &b.schedule {
                Some(_) => "no backup yet: the first is taken at the schedule's next time".to_owned(),
                None => "no backup yet (no schedule: backups are taken before migrations and by `appenv backup now`)".to_owned(),
            },
        ),
    }
}
