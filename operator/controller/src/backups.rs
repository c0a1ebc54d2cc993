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
use appenv_api::names::{Component, Reason};
use appenv_api::{AppEnvironmentStatus, BackupRun as RunStatus, BackupStatus};
use appenv_core::build::{
    BackupReason, BackupRun, before_migration_job_name, requested_job_name, scheduled_job_name,
};
use appenv_core::schedule::Schedule;
use appenv_core::validate::{BackupDestinationModel, BackupEngine, BackupModel, Model};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// The annotation `appenv backup now` sets (its value is the request: a time).
pub const REQUEST_ANNOTATION: &str = appenv_api::names::request::BACKUP;
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
    pub status: Option<Box<BackupStatus>>,
    /// The record if `start` waits for web to stop.
    pub deferred: Option<Box<BackupStatus>>,
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
    /// A restore runs or starts: no backup starts now.
    pub busy: bool,
    pub now: Timestamp,
}

/// How often a backup VolumeSnapshot being taken is read again.
pub const SNAPSHOT_POLL: SignedDuration = SignedDuration::from_secs(2);

pub fn time(t: Timestamp) -> Time {
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
    what: &str,
) -> Vec<Finished> {
    let Some((record, finished)) = settle_run(&mut st.running, jobs, now, what) else {
        return Vec::new();
    };
    if finished.ok {
        st.last_success = Some(record);
    } else {
        st.last_failure = Some(record);
    }
    vec![finished]
}

/// How the agent names a restored dump: `sha256:` and the first 12 hex digits of its checksum.
fn dump_ref(id: &str) -> bool {
    id.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Settle a running Job (or backup VolumeSnapshot: `what` is "backup Job", "restore Job",
/// "backup VolumeSnapshot") from what its watch shows: the record of a finished run (`running`
/// is then empty) and its Event, or nothing while it runs. One not seen for [`VANISHED_AFTER`]
/// was deleted: a failure.
pub fn settle_run(
    running: &mut Option<RunStatus>,
    jobs: &std::collections::BTreeMap<String, BackupJob>,
    now: Timestamp,
    what: &str,
) -> Option<(RunStatus, Finished)> {
    let run = running.take()?;
    let started = run.started_at.as_ref().map_or(now, |t| t.0);
    let (why, job) = match jobs.get(&run.job) {
        Some(job) => match &job.state {
            Migration::Succeeded => (None, Some(job)),
            Migration::Failed(why) => (Some(why.clone()), Some(job)),
            _ => {
                *running = Some(run);
                return None;
            }
        },
        None if now.duration_since(started).unsigned_abs() < VANISHED_AFTER => {
            *running = Some(run);
            return None;
        }
        None => (Some("it was deleted before it finished".to_owned()), None),
    };
    let finished_at = job.and_then(|j| j.finished).unwrap_or(now);
    let started_at = job.and_then(|j| j.started).unwrap_or(started);
    // The agent's report: `backup|restored ID BYTES`.
    let reported: Vec<&str> = job
        .and_then(|j| j.result.as_deref())
        .map(|r| r.split_whitespace().collect())
        .unwrap_or_default();
    let (backup_id, size_bytes) = match reported.as_slice() {
        // A dump restored is named by its checksum (`sha256:` and 12 hex digits).
        [_, id, bytes, ..] if appenv_core::validate::backup_ref(id) || dump_ref(id) => {
            (Some((*id).to_owned()), bytes.parse().ok())
        }
        _ => (None, None),
    };
    let record = RunStatus {
        started_at: Some(time(started_at)),
        finished_at: Some(time(finished_at)),
        message: why.clone(),
        web_stopped: false,
        backup_id,
        size_bytes,
        ..run
    };
    let seconds = finished_at
        .duration_since(started_at)
        .as_secs_f64()
        .max(0.0);
    let of = match (&record.backup_id, record.size_bytes) {
        (Some(id), bytes) => {
            let what = if dump_ref(id) { "the dump" } else { "backup" };
            let size = bytes.map_or_else(String::new, |b| {
                format!(" ({:.1} MiB)", b as f64 / 1024.0 / 1024.0)
            });
            format!(" of {what} {id}{size}")
        }
        _ => String::new(),
    };
    let message = match &why {
        None => format!(
            "{what} {} ({}) completed in {seconds:.0} s{of}",
            record.job, record.reason
        ),
        Some(why) => format!("{what} {} ({}) failed: {why}", record.job, record.reason),
    };
    let finished = Finished {
        ok: why.is_none(),
        message,
    };
    Some((record, finished))
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

/// The backup taken before the migration of the spec's image, if it completed: "the backup of
/// Job X (completed at T)".
pub fn before_migration(model: &Model, st: Option<&BackupStatus>) -> Option<String> {
    let job = before_migration_job_name(model)?;
    let last = st?.last_success.as_ref().filter(|s| s.job == job)?;
    let id = last
        .backup_id
        .as_deref()
        .map(|id| format!("backup {id}, "))
        .unwrap_or_default();
    Some(format!(
        "the backup of Job {job} ({id}completed at {})",
        when(last.finished_at.as_ref())
    ))
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
    // A snapshot is the backup itself, not a Job's copy; it is not watched.
    let snapshot = matches!(b.destination, BackupDestinationModel::VolumeSnapshot { .. });
    let what = if snapshot {
        "backup VolumeSnapshot"
    } else {
        "backup Job"
    };
    let finished = settle(&mut st, jobs, now, what);
    let migration = migration_gate(model, b, input);
    let deferred = st.clone();
    let base = input.created.unwrap_or(now);
    // PostgreSQL must be up for pg_dump (an embedded database is always "ready").
    let start = if st.running.is_some() || model.suspend || input.busy || !input.database_ready {
        None
    } else if let MigrationGate::Waiting { job, .. } = &migration
        && !jobs.contains_key(job)
        && input.database_ready
    {
        Some((job.clone(), BackupReason::BeforeMigration))
    } else if let Some(request) = input
        .request
        .filter(|r| st.last_request.as_deref() != Some(*r))
    {
        st.last_request = Some(request.to_owned());
        Some((requested_job_name(model, request), BackupReason::Manual))
    } else if let Some(slot) = b.schedule.as_ref().and_then(|s| {
        let after = st.last_scheduled.as_ref().map_or(base, |t| t.0);
        due(s, after, now)
    }) {
        st.last_scheduled = Some(time(slot));
        Some((scheduled_job_name(model, slot), BackupReason::Scheduled))
    } else {
        None
    }
    .map(|(job, reason)| BackupRun {
        job,
        reason,
        started: now,
    });
    let duckdb = b.engine == BackupEngine::Duckdb;
    if let Some(run) = &start {
        st.running = Some(RunStatus {
            job: run.job.clone(),
            reason: run.reason.as_str().to_owned(),
            started_at: Some(time(now)),
            web_stopped: duckdb,
            ..RunStatus::default()
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
    // A snapshot being taken is read again soon.
    let next_due = match (snapshot, &st.running) {
        (true, Some(_)) => Some(now + SNAPSHOT_POLL),
        _ => next_due,
    };
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
            job.component == Component::Backup
                && matches!(job.state, Migration::Succeeded | Migration::Failed(_))
                && !pinned(name)
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
        .iter()
        .filter(|(name, job)| job.component == Component::Backup && !delete.contains(name))
        .map(|(name, _)| name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{env, model, now, observed};
    use appenv_api::AppEnvironment;

    const PG: &str = "{app: shop, image: 'shop:2', database: {postgres: {}}, migrations: {command: [migrate]}, backup: {schedule: '0 3 * * *', destination: {s3: {bucket: shop-backups, credentialsSecret: s3}}}}";
    const DUCKDB: &str = "{app: shop, image: 'shop:2', database: {embedded: {engine: DuckDB, path: /data/a.duckdb}}, backup: {destination: {volume: {size: 1Gi}}}}";

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn job(state: Migration, created: &str) -> BackupJob {
        BackupJob {
            state,
            started: Some(at(created)),
            finished: Some(at(created) + SignedDuration::from_secs(30)),
            created: Some(at(created)),
            pod_failure: None,
            result: None,
            component: Component::Backup,
        }
    }

    /// The status of an environment that ran `image`, with `backup`.
    fn previous(image: &str, backup: Option<impl Into<Box<BackupStatus>>>) -> AppEnvironmentStatus {
        AppEnvironmentStatus {
            image: Some(image.to_owned()),
            backup: backup.map(Into::into),
            ..AppEnvironmentStatus::default()
        }
    }

    struct Case<'a> {
        env: AppEnvironment,
        observed: Observed,
        previous: Option<AppEnvironmentStatus>,
        request: Option<&'a str>,
        now: Timestamp,
    }

    impl<'a> Case<'a> {
        fn new(spec: &str, migration: Migration) -> Self {
            let env = env(spec);
            let observed = observed(&model(&env), "shop:1", migration);
            // The schedule's last time is taken.
            let backup = BackupStatus {
                last_scheduled: Some(Time(at("2026-12-01T03:00:00Z"))),
                ..BackupStatus::default()
            };
            Self {
                env,
                observed,
                previous: Some(previous("shop:1", Some(backup))),
                request: None,
                now: now(),
            }
        }

        fn decide(&self) -> Decision {
            let model = model(&self.env);
            decide(&Input {
                model: &model,
                observed: &self.observed,
                previous: self.previous.as_ref(),
                request: self.request,
                created: Some(at("2026-11-30T12:00:00Z")),
                database_ready: true,
                busy: false,
                now: self.now,
            })
        }
    }

    #[test]
    fn a_snapshot_being_taken_is_read_again_soon_and_its_record_names_the_snapshot() {
        const SNAPSHOT: &str = "{app: shop, image: 'shop:2', database: {embedded: {engine: DuckDB, path: /data/a.duckdb}}, backup: {destination: {volumeSnapshot: {className: csi}}}}";
        let mut case = Case::new(SNAPSHOT, Migration::NotConfigured);
        case.request = Some("2026-12-02T10:00:00Z");
        let d = case.decide();
        let run = d.start.clone().expect("a snapshot starts");
        assert!(d.needs_no_web_pod && d.stop_web);
        assert_eq!(d.next_due, Some(case.now + SNAPSHOT_POLL));
        // Taken: settled like a Job, in the snapshot's words.
        case.previous = Some(previous("shop:2", d.status.clone()));
        let mut taken = job(Migration::Succeeded, "2026-12-02T10:00:00Z");
        taken.result = Some("backup 20261202-100000-000 1073741824".into());
        case.observed.backup_jobs.insert(run.job.clone(), taken);
        let done = case.decide();
        let message = &done.finished.first().expect("finished").message;
        assert!(
            message.starts_with(&format!(
                "backup VolumeSnapshot {} (manual) completed",
                run.job
            )) && message.ends_with("of backup 20261202-100000-000 (1024.0 MiB)"),
            "{message}"
        );
        assert!(!done.stop_web, "web comes back");
        assert_ne!(done.next_due, Some(case.now + SNAPSHOT_POLL));
    }

    #[test]
    fn a_new_image_is_backed_up_before_its_migration_and_a_failed_backup_blocks_it() {
        let mut case = Case::new(PG, Migration::NotStarted);
        let d = case.decide();
        let name = before_migration_job_name(&model(&case.env)).expect("migrations");
        assert_eq!(
            d.start,
            Some(BackupRun {
                job: name.clone(),
                reason: BackupReason::BeforeMigration,
                started: case.now,
            })
        );
        assert!(matches!(&d.migration, MigrationGate::Waiting { job, .. } if *job == name));
        let running = d
            .status
            .as_ref()
            .and_then(|s| s.running.clone())
            .expect("running");
        assert_eq!(
            (running.job.as_str(), running.reason.as_str()),
            (name.as_str(), "before-migration")
        );
        // It completed: the migration may run, and the Event says so.
        case.previous = Some(previous("shop:1", d.status.clone()));
        let mut completed = job(Migration::Succeeded, "2026-12-01T12:00:00Z");
        completed.result = Some("backup 20261201-120000-001 3145728".into());
        case.observed.backup_jobs.insert(name.clone(), completed);
        let done = case.decide();
        assert_eq!(done.migration, MigrationGate::Open);
        assert_eq!(done.start, None);
        let st = done.status.expect("status");
        assert!(st.running.is_none());
        let success = st.last_success.expect("success");
        assert_eq!(success.job, name);
        assert_eq!(
            (success.backup_id.as_deref(), success.size_bytes),
            (Some("20261201-120000-001"), Some(3_145_728))
        );
        assert!(
            done.finished[0].ok
                && done.finished[0]
                    .message
                    .ends_with("completed in 30 s of backup 20261201-120000-001 (3.0 MiB)"),
            "{:?}",
            done.finished
        );
        // It failed instead: the migration waits, nothing starts again.
        case.observed.backup_jobs.insert(
            name.clone(),
            job(
                Migration::Failed(
                    "BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
                ),
                "2026-12-01T12:00:00Z",
            ),
        );
        let failed = case.decide();
        assert!(
            matches!(&failed.migration, MigrationGate::Failed { job, why } if *job == name && why.contains("BackoffLimitExceeded"))
        );
        assert_eq!(failed.start, None);
        let (ok, reason, message) = failed.health.expect("health");
        assert!(
            !ok && reason == Reason::BackupFailed && message.contains(&name),
            "{message}"
        );
    }

    #[test]
    fn a_first_rollout_and_a_started_migration_need_no_backup() {
        let mut case = Case::new(PG, Migration::NotStarted);
        case.previous = None;
        case.now = at("2026-11-30T13:00:00Z");
        let d = case.decide();
        assert_eq!((d.start, d.migration), (None, MigrationGate::Open));
        let case = Case::new(PG, Migration::Running);
        assert_eq!(case.decide().migration, MigrationGate::Open);
    }

    #[test]
    fn the_latest_missed_schedule_time_runs_once_and_the_next_one_is_awaited() {
        let mut case = Case::new(PG, Migration::Succeeded);
        case.previous = Some(previous("shop:2", None::<BackupStatus>));
        // Created 2026-11-30 12:00, now 2026-12-01 12:00: 03:00 on 12-01 is the latest time.
        let d = case.decide();
        let run = d.start.expect("a scheduled backup");
        assert_eq!(run.job, "shop-backup-s202612010300");
        assert_eq!(run.reason, BackupReason::Scheduled);
        let st = d.status.expect("status");
        assert_eq!(
            st.last_scheduled.as_ref().map(|t| t.0),
            Some(at("2026-12-01T03:00:00Z"))
        );
        assert_eq!(d.next_due, Some(at("2026-12-02T03:00:00Z")));
        // Finished, the same day: nothing more until the next time.
        let mut st = st;
        st.running = None;
        case.previous = Some(previous("shop:2", Some(st)));
        let later = case.decide();
        assert_eq!(later.start, None);
        assert_eq!(later.next_due, Some(at("2026-12-02T03:00:00Z")));
    }

    #[test]
    fn a_request_runs_once_and_waits_for_the_running_backup() {
        let mut case = Case::new(PG, Migration::Succeeded);
        case.request = Some("2026-12-01T11:59:00.000Z");
        let d = case.decide();
        let run = d.start.clone().expect("requested");
        assert_eq!(run.reason, BackupReason::Manual);
        assert_eq!(
            run.job,
            requested_job_name(&model(&case.env), "2026-12-01T11:59:00.000Z")
        );
        // While it runs, the same request starts nothing; once it finished, neither.
        case.previous = Some(previous("shop:2", d.status.clone()));
        case.observed.backup_jobs.insert(
            run.job.clone(),
            job(Migration::Running, "2026-12-01T12:00:00Z"),
        );
        assert_eq!(case.decide().start, None);
        case.observed.backup_jobs.insert(
            run.job.clone(),
            job(Migration::Succeeded, "2026-12-01T12:00:00Z"),
        );
        let done = case.decide();
        assert_eq!(done.start, None);
        assert_eq!(
            done.status.and_then(|s| s.last_request),
            Some("2026-12-01T11:59:00.000Z".to_owned())
        );
    }

    #[test]
    fn a_duckdb_backup_holds_web_at_zero_until_it_finished_and_starts_only_without_web_pods() {
        let mut case = Case::new(DUCKDB, Migration::NotConfigured);
        case.request = Some("r1");
        let d = case.decide();
        assert!(d.needs_no_web_pod && d.stop_web);
        let run = d.start.clone().expect("requested");
        // Deferred (a web Pod still exists): the record is as before, so it is tried again.
        let deferred = d.deferred.clone().expect("deferred");
        assert!(deferred.running.is_none() && deferred.last_request.is_none());
        let started = d.status.clone().expect("status");
        assert!(started.running.as_ref().is_some_and(|r| r.web_stopped));
        case.previous = Some(previous("shop:2", Some(started)));
        case.observed.backup_jobs.insert(
            run.job.clone(),
            job(Migration::Running, "2026-12-01T12:00:00Z"),
        );
        let running = case.decide();
        assert!(running.stop_web && running.start.is_none());
        case.observed
            .backup_jobs
            .insert(run.job, job(Migration::Succeeded, "2026-12-01T12:00:00Z"));
        let done = case.decide();
        assert!(!done.stop_web && done.start.is_none());
    }

    #[test]
    fn a_running_backup_whose_job_vanished_fails_after_a_grace() {
        let mut case = Case::new(PG, Migration::Succeeded);
        let running = BackupStatus {
            running: Some(RunStatus {
                job: "shop-backup-rx".into(),
                reason: "manual".into(),
                started_at: Some(Time(at("2026-12-01T11:59:30Z"))),
                ..RunStatus::default()
            }),
            last_scheduled: Some(Time(at("2026-12-01T03:00:00Z"))),
            ..BackupStatus::default()
        };
        case.previous = Some(previous("shop:2", Some(running)));
        // 30 s: the watch may not have it yet.
        assert!(case.decide().status.expect("status").running.is_some());
        case.now = at("2026-12-01T12:05:00Z");
        let d = case.decide();
        let st = d.status.expect("status");
        let failure = st.last_failure.expect("failure");
        assert!(
            failure
                .message
                .expect("why")
                .contains("deleted before it finished")
        );
        assert!(!d.finished[0].ok);
    }

    #[test]
    fn backups_are_stale_after_two_missed_times_and_the_timeout() {
        let mut case = Case::new(PG, Migration::Succeeded);
        let success = |t: &str| BackupStatus {
            last_success: Some(RunStatus {
                job: "shop-backup-s1".into(),
                reason: "scheduled".into(),
                finished_at: Some(Time(at(t))),
                ..RunStatus::default()
            }),
            last_scheduled: Some(Time(at("2026-12-01T03:00:00Z"))),
            ..BackupStatus::default()
        };
        case.previous = Some(previous("shop:2", Some(success("2026-11-30T03:01:00Z"))));
        let (ok, reason, _) = case.decide().health.expect("health");
        assert!(ok && reason == Reason::BackupSucceeded);
        // Last success 11-28: 11-29 and 11-30 03:00 passed (plus the hour's timeout).
        case.previous = Some(previous("shop:2", Some(success("2026-11-28T03:01:00Z"))));
        let (ok, reason, message) = case.decide().health.expect("health");
        assert!(!ok && reason == Reason::BackupStale, "{message}");
        assert!(message.contains("2026-11-28 03:01:00 UTC"), "{message}");
    }

    #[test]
    fn finished_jobs_past_the_history_are_deleted_and_the_running_one_is_kept() {
        let mut case = Case::new(PG, Migration::Succeeded);
        for day in 1..=5 {
            case.observed.backup_jobs.insert(
                format!("shop-backup-s2026110{day}0300"),
                job(Migration::Succeeded, &format!("2026-11-0{day}T03:00:00Z")),
            );
        }
        case.observed.backup_jobs.insert(
            "shop-backup-rnow".into(),
            job(Migration::Running, "2026-10-01T00:00:00Z"),
        );
        case.previous = Some(previous(
            "shop:2",
            Some(BackupStatus {
                running: Some(RunStatus {
                    job: "shop-backup-rnow".into(),
                    reason: "manual".into(),
                    ..RunStatus::default()
                }),
                ..BackupStatus::default()
            }),
        ));
        let mut d = case.decide();
        d.delete_jobs.sort();
        assert_eq!(
            d.delete_jobs,
            ["shop-backup-s202611010300", "shop-backup-s202611020300"]
        );
        assert!(d.keep_jobs.contains(&"shop-backup-rnow".to_owned()));
        assert_eq!(d.keep_jobs.len(), 4);
    }
}
