//! The restores' part of the plan, pure.
//!
//! - **Initial** (`spec.database.restore`): on an environment's first rollout, its database is
//!   restored from another environment's backup (which must allow it: `spec.backup.restoreTo`),
//!   then the seed command runs; only then the migration, web and workers. A failure stops
//!   there (nothing of the app starts) and says why. Once done it never runs again.
//! - **In place** (`appenv restore`, the annotation [`REQUEST_ANNOTATION`]): web and workers are
//!   held at zero, the restore starts once none of their Pods exists, and they start again when
//!   it finished (failed or not: a failed restore leaves the data as it was).
//!
//! One data Job at a time: a restore waits for a running backup, and no backup starts while a
//! restore runs.

use crate::backups::{Finished, settle_run, time};
use crate::observe::{BackupJob, Migration, Observed};
use appenv_api::{AppEnvironmentStatus, BackupRun as RunStatus, RestoreStatus};
use appenv_core::build::{
    RestoreRun, Store, initial_restore_job_name, requested_restore_job_name, seed_job_name,
};
use appenv_core::validate::backup_ref;
use appenv_core::validate::{BackupDestinationModel, Model, RestoreFrom};
use k8s_openapi::jiff::Timestamp;

/// The annotation `appenv restore` sets: `<time> <backup id or latest> [into-non-empty]`.
pub const REQUEST_ANNOTATION: &str = appenv_api::names::request::RESTORE;

/// Whether the first rollout may go on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FirstGate {
    #[default]
    Open,
    /// Restoring or seeding: what runs.
    Waiting(String),
    /// Why it stopped.
    Failed(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub start: Option<RestoreRun>,
    /// Start the seed Job now.
    pub seed: bool,
    /// Create `start` only once no web or worker Pod exists (in place).
    pub needs_no_app_pod: bool,
    /// Hold web and workers at zero (in place).
    pub hold: bool,
    pub first: FirstGate,
    pub status: Option<Box<RestoreStatus>>,
    /// The record if `start` waits for the app's Pods to stop.
    pub deferred: Option<Box<RestoreStatus>>,
    pub keep_jobs: Vec<String>,
    pub finished: Vec<Finished>,
}

impl Decision {
    /// A restore or seed Job runs or starts.
    pub fn busy(&self) -> bool {
        self.start.is_some()
            || self.seed
            || self.status.as_ref().is_some_and(|s| s.running.is_some())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub model: &'a Model,
    pub observed: &'a Observed,
    pub previous: Option<&'a AppEnvironmentStatus>,
    /// The value of [`REQUEST_ANNOTATION`].
    pub request: Option<&'a str>,
    /// Where the initial restore reads from, or why it may not (resolved from the source
    /// AppEnvironment by the reconcile).
    pub source: Option<&'a Result<Store, String>>,
    /// The VolumeSnapshot a pending request restores from, or why none can be (resolved by the
    /// reconcile when backups are VolumeSnapshots).
    pub snapshot: Option<&'a Result<String, String>>,
    pub database_ready: bool,
    /// A backup runs: no restore starts now.
    pub backup_running: bool,
    pub now: Timestamp,
}

fn running_record(job: &str, reason: &str, now: Timestamp, stops_app: bool) -> RunStatus {
    RunStatus {
        job: job.to_owned(),
        reason: reason.to_owned(),
        started_at: Some(time(now)),
        web_stopped: stops_app,
        ..RunStatus::default()
    }
}

/// A parsed request: the backup and whether to replace what the database holds.
pub fn parse_request(request: &str, snapshots: bool) -> Result<(String, bool), String> {
    let mut words = request.split_whitespace();
    let (_at, backup) = (words.next(), words.next().unwrap_or_default());
    let into_non_empty = match words.next() {
        None => false,
        Some("into-non-empty") => true,
        Some(other) => return Err(format!("unknown option {other:?}")),
    };
    if snapshots {
        if backup != "latest" && !appenv_core::validate::is_dns_subdomain(backup) {
            return Err(format!(
                "{backup:?} is not `latest` or the name of a VolumeSnapshot"
            ));
        }
    } else if !backup_ref(backup) {
        return Err(format!(
            "{backup:?} is not `latest` or a backup id (e.g. 20261201-030000-000)"
        ));
    }
    Ok((backup.to_owned(), into_non_empty))
}

/// The initial restore and its seed, on the first rollout.
fn initial(
    input: &Input<'_>,
    restore: &appenv_core::validate::RestoreModel,
    st: &mut RestoreStatus,
    d: &mut Decision,
) {
    let model = input.model;
    let jobs = &input.observed.backup_jobs;
    let job = initial_restore_job_name(model, &restore.from);
    d.keep_jobs.push(job.clone());
    let from = restore.from.describe();
    let backup = match &restore.from {
        RestoreFrom::Environment { backup, .. } => backup.clone(),
        RestoreFrom::Url(_) => String::new(),
    };
    let state = |name: &str| jobs.get(name).map(|j: &BackupJob| j.state.clone());
    let stuck = |name: &str| {
        jobs.get(name)
            .and_then(|j| j.pod_failure.clone())
            .map(|f| format!(": it cannot start: {f}"))
            .unwrap_or_default()
    };
    d.first = match (input.source, state(&job)) {
        (Some(Err(why)), None) => FirstGate::Failed(format!(
            "spec.database.restore: cannot restore from {from}: {why}"
        )),
        (_, Some(Migration::Failed(why))) => FirstGate::Failed(format!(
            "the restore from {from} failed (Job {job}: {why}); nothing of the app started; delete Job {job} to try again"
        )),
        (Some(Ok(store)), None) => {
            if input.database_ready && st.running.is_none() && !input.backup_running {
                d.start = Some(RestoreRun {
                    job: job.clone(),
                    backup,
                    store: store.clone(),
                    into_non_empty: false,
                });
                st.running = Some(running_record(&job, "initial", input.now, false));
            }
            FirstGate::Waiting(format!("restoring from {from}: Job {job}"))
        }
        (None, None) => FirstGate::Waiting(format!("waiting to read {from}")),
        (_, Some(Migration::Succeeded)) => match &restore.seed {
            None => FirstGate::Open,
            Some(seed) => {
                let seed_job = seed_job_name(model, &seed.command, &seed.args);
                d.keep_jobs.push(seed_job.clone());
                match state(&seed_job) {
                    Some(Migration::Succeeded) => FirstGate::Open,
                    Some(Migration::Failed(why)) => FirstGate::Failed(format!(
                        "the seed command failed after the restore from {from} (Job {seed_job}: {why}); nothing of the app started; delete Job {seed_job} to run it again"
                    )),
                    None => {
                        if st.running.is_none() {
                            d.seed = true;
                            st.running = Some(running_record(&seed_job, "seed", input.now, false));
                        }
                        FirstGate::Waiting(format!(
                            "seeding after the restore from {from}: Job {seed_job}"
                        ))
                    }
                    Some(_) => FirstGate::Waiting(format!(
                        "seeding after the restore from {from}: Job {seed_job}{}",
                        stuck(&seed_job)
                    )),
                }
            }
        },
        (_, Some(_)) => {
            FirstGate::Waiting(format!("restoring from {from}: Job {job}{}", stuck(&job)))
        }
    };
    if d.first == FirstGate::Open {
        st.initialized = true;
    }
}

/// An `appenv restore` request not handled yet starts a restore (or is refused with why).
fn in_place(
    input: &Input<'_>,
    st: &mut RestoreStatus,
    d: &mut Decision,
    finished: &mut Vec<Finished>,
) {
    let model = input.model;
    if let Some(request) = input
        .request
        .filter(|r| st.last_request.as_deref() != Some(*r))
        && st.running.is_none()
        && !input.backup_running
        // Suspended, its database is down: the restore waits for it to resume.
        && !model.suspend
    {
        st.last_request = Some(request.to_owned());
        let job = requested_restore_job_name(model, request);
        let refused = match &model.backup {
            None => Err("the environment has no spec.backup: nothing to restore from".to_owned()),
            Some(b) if matches!(b.destination, BackupDestinationModel::VolumeSnapshot { .. }) => {
                match (parse_request(request, true).as_ref(), input.snapshot) {
                    (Err(why), _) | (_, Some(Err(why))) => Err(why.clone()),
                    (Ok((_, into)), Some(Ok(name))) => {
                        Ok((name.clone(), *into, Store::Snapshot(name.clone())))
                    }
                    (Ok(_), None) => Err("its VolumeSnapshots could not be listed".to_owned()),
                }
            }
            Some(_) => parse_request(request, false).map(|(b, into)| (b, into, Store::Own)),
        };
        match refused {
            Ok((backup, into_non_empty, store)) => {
                d.start = Some(RestoreRun {
                    job: job.clone(),
                    backup,
                    store,
                    into_non_empty,
                });
                d.needs_no_app_pod = true;
                st.running = Some(running_record(&job, "in-place", input.now, true));
            }
            Err(why) => {
                let mut record = running_record(&job, "in-place", input.now, false);
                record.finished_at = record.started_at.clone();
                record.message = Some(format!("the request {request:?} was refused: {why}"));
                finished.push(Finished {
                    ok: false,
                    message: record.message.clone().unwrap_or_default(),
                });
                st.last = Some(record);
            }
        }
    }
}

pub fn decide(input: &Input<'_>) -> Decision {
    let model = input.model;
    let previous = input.previous;
    let jobs = &input.observed.backup_jobs;
    let mut st = previous.and_then(|p| p.restore.clone()).unwrap_or_default();
    // Said again by this reconcile if it still holds the app for a request.
    st.holding = None;
    let mut finished = Vec::new();
    if let Some((record, done)) = settle_run(&mut st.running, jobs, input.now, "restore Job") {
        st.last = Some(record);
        finished.push(done);
    }
    let mut d = Decision::default();
    let first_rollout = previous.and_then(|p| p.image.as_ref()).is_none();
    if let Some(restore) = &model.restore
        && first_rollout
        && !st.initialized
    {
        initial(input, restore, &mut st, &mut d);
    }
    let mut deferred = st.clone();
    // In place.
    if d.first == FirstGate::Open {
        in_place(input, &mut st, &mut d, &mut finished);
    }
    if d.needs_no_app_pod {
        // Until no web or worker Pod exists: the app is held, the Job not created yet.
        deferred.holding = input.request.map(str::to_owned);
    }
    if let Some(running) = &st.running {
        d.hold = running.web_stopped;
        if !d.keep_jobs.contains(&running.job) {
            d.keep_jobs.push(running.job.clone());
        }
    }
    let any = model.restore.is_some() || *st != RestoreStatus::default();
    d.status = any.then_some(st);
    d.deferred = any.then_some(deferred);
    d.finished = finished;
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{env, model, now, observed};
    use appenv_api::names::Component;
    use appenv_core::validate::S3Model;

    const PREVIEW: &str = "{app: shop, image: 'shop:2', database: {postgres: {}, restore: {fromEnvironment: shop-prod, credentialsSecret: s3-read, seed: {command: [flask, blank]}}}, migrations: {command: [migrate]}}";
    const PROD: &str = "{app: shop, image: 'shop:2', database: {postgres: {}}, backup: {destination: {s3: {bucket: shop-backups, credentialsSecret: s3}}}}";

    fn store() -> Result<Store, String> {
        Ok(Store::Other {
            environment: "shop-prod".into(),
            s3: S3Model {
                bucket: "shop-backups".into(),
                prefix: String::new(),
                endpoint: None,
                region: None,
                credentials_secret: "s3".into(),
            },
            credentials_secret: "s3-read".into(),
        })
    }

    fn job(component: Component, state: Migration) -> BackupJob {
        BackupJob {
            component,
            state,
            started: Some(now()),
            finished: Some(now()),
            created: Some(now()),
            pod_failure: None,
            result: None,
        }
    }

    fn decide_with(
        spec: &str,
        observed: &Observed,
        previous: Option<&AppEnvironmentStatus>,
        source: Option<&Result<Store, String>>,
        request: Option<&str>,
    ) -> Decision {
        let env = env(spec);
        let model = model(&env);
        decide(&Input {
            model: &model,
            observed,
            previous,
            request,
            source,
            snapshot: None,
            database_ready: true,
            backup_running: false,
            now: now(),
        })
    }

    #[test]
    fn a_new_environment_is_restored_then_seeded_then_opened_and_never_again() {
        let m = model(&env(PREVIEW));
        let mut observed = observed(&m, "shop:2", Migration::NotStarted);
        let source = store();
        let d = decide_with(PREVIEW, &observed, None, Some(&source), None);
        let run = d.start.clone().expect("restore");
        assert_eq!(run.backup, "latest");
        assert!(
            matches!(&d.first, FirstGate::Waiting(m) if m.contains("restoring from shop-prod (backup latest)"))
        );
        assert!(!d.hold && !d.needs_no_app_pod && !d.seed);
        // Restored: the seed runs, still before anything else.
        observed.backup_jobs.insert(
            run.job.clone(),
            job(Component::Restore, Migration::Succeeded),
        );
        let status = |d: &Decision| AppEnvironmentStatus {
            restore: d.status.clone(),
            ..AppEnvironmentStatus::default()
        };
        let after = status(&d);
        let seeding = decide_with(PREVIEW, &observed, Some(&after), Some(&source), None);
        assert!(seeding.seed, "{seeding:?}");
        assert!(matches!(&seeding.first, FirstGate::Waiting(m) if m.contains("seeding")));
        let seed = seed_job_name(&m, &["flask".into(), "blank".into()], &[]);
        observed
            .backup_jobs
            .insert(seed.clone(), job(Component::Seed, Migration::Succeeded));
        let done = decide_with(
            PREVIEW,
            &observed,
            Some(&status(&seeding)),
            Some(&source),
            None,
        );
        assert_eq!(done.first, FirstGate::Open);
        assert!(done.status.as_ref().is_some_and(|s| s.initialized));
        // Even with the Jobs gone, an initialized environment is not restored again.
        observed.backup_jobs.clear();
        let later = decide_with(
            PREVIEW,
            &observed,
            Some(&status(&done)),
            Some(&source),
            None,
        );
        assert_eq!((later.first, later.start), (FirstGate::Open, None));
    }

    #[test]
    fn a_dump_url_is_restored_by_the_job_and_named_without_its_query() {
        const FROM_URL: &str = "{app: shop, image: 'shop:2', database: {postgres: {}, restore: {fromUrl: {url: 'https://dumps.example/shop.dump?X-Amz-Signature=s3cr3t'}}}}";
        let m = model(&env(FROM_URL));
        let observed = observed(&m, "shop:2", Migration::NotStarted);
        let Some(appenv_core::validate::RestoreFrom::Url(dump)) =
            m.restore.as_ref().map(|r| r.from.clone())
        else {
            panic!("a dump");
        };
        let source = Ok(Store::Dump(dump.clone()));
        let d = decide_with(FROM_URL, &observed, None, Some(&source), None);
        let run = d.start.clone().expect("restore");
        assert_eq!(run.store, Store::Dump(dump));
        let FirstGate::Waiting(message) = &d.first else {
            panic!("{:?}", d.first);
        };
        assert!(
            message.starts_with(
                "restoring from the dump at https://dumps.example/shop.dump: Job shop-restore-"
            ) && !message.contains("s3cr3t"),
            "{message}"
        );
    }

    #[test]
    fn an_in_place_restore_of_volume_snapshots_reads_the_resolved_one_or_says_why_not() {
        const SNAPSHOTS: &str = "{app: dojo, image: 'dojo:1', database: {embedded: {engine: DuckDB, path: /data/l.duckdb}}, backup: {destination: {volumeSnapshot: {className: csi}}}}";
        let env = env(SNAPSHOTS);
        let m = model(&env);
        let observed = observed(&m, "dojo:1", Migration::NotConfigured);
        let previous = AppEnvironmentStatus {
            image: Some("dojo:1".into()),
            ..AppEnvironmentStatus::default()
        };
        let request = "2026-12-02T10:00:00Z latest into-non-empty";
        let decide_for = |snapshot: &Result<String, String>| {
            decide(&Input {
                model: &m,
                observed: &observed,
                previous: Some(&previous),
                request: Some(request),
                source: None,
                snapshot: Some(snapshot),
                database_ready: true,
                backup_running: false,
                now: now(),
            })
        };
        let d = decide_for(&Ok("dojo-backup-s1".to_owned()));
        assert_eq!(
            d.start,
            Some(RestoreRun {
                job: requested_restore_job_name(&m, request),
                backup: "dojo-backup-s1".into(),
                store: Store::Snapshot("dojo-backup-s1".into()),
                into_non_empty: true,
            })
        );
        assert!(d.needs_no_app_pod, "web and workers stop first");
        let d = decide_for(&Err(
            "VolumeSnapshot dojo-backup-s2 is not ready to use yet".into(),
        ));
        assert!(d.start.is_none() && !d.needs_no_app_pod);
        let message = d
            .finished
            .first()
            .map(|f| f.message.clone())
            .unwrap_or_default();
        assert!(
            message.contains("was refused: VolumeSnapshot dojo-backup-s2 is not ready to use yet"),
            "{message}"
        );
        assert_eq!(
            parse_request("2026-12-02T10:00:00Z dojo-backup-s1", true),
            Ok(("dojo-backup-s1".to_owned(), false))
        );
        assert!(parse_request("2026-12-02T10:00:00Z dojo-backup-s1", false).is_err());
        assert!(parse_request("2026-12-02T10:00:00Z ../x", true).is_err());
    }

    #[test]
    fn a_refused_source_or_a_failed_seed_stops_the_first_rollout_with_why() {
        let m = model(&env(PREVIEW));
        let mut observed = observed(&m, "shop:2", Migration::NotStarted);
        let refused: Result<Store, String> =
            Err("its spec.backup.restoreTo does not name shop-pr-7".into());
        let d = decide_with(PREVIEW, &observed, None, Some(&refused), None);
        assert!(d.start.is_none());
        assert!(
            matches!(&d.first, FirstGate::Failed(m) if m.contains("cannot restore from shop-prod (backup latest): its spec.backup.restoreTo")),
            "{:?}",
            d.first
        );
        let restore = initial_restore_job_name(&m, &m.restore.as_ref().expect("restore").from);
        observed
            .backup_jobs
            .insert(restore, job(Component::Restore, Migration::Succeeded));
        let seed = seed_job_name(&m, &["flask".into(), "blank".into()], &[]);
        observed.backup_jobs.insert(
            seed.clone(),
            job(
                Component::Seed,
                Migration::Failed("BackoffLimitExceeded".into()),
            ),
        );
        let source = store();
        let d = decide_with(PREVIEW, &observed, None, Some(&source), None);
        assert!(
            matches!(&d.first, FirstGate::Failed(m) if m.contains("the seed command failed") && m.contains(&seed)),
            "{:?}",
            d.first
        );
    }

    #[test]
    fn an_in_place_restore_holds_the_app_until_it_finished_and_runs_once() {
        let m = model(&env(PROD));
        let mut observed = observed(&m, "shop:2", Migration::NotConfigured);
        let ran = AppEnvironmentStatus {
            image: Some("shop:2".into()),
            ..AppEnvironmentStatus::default()
        };
        let request = "2026-12-01T11:00:00.000Z 20261201-030000-000 into-non-empty";
        let d = decide_with(PROD, &observed, Some(&ran), None, Some(request));
        let run = d.start.clone().expect("restore");
        assert_eq!(
            (run.backup.as_str(), run.into_non_empty, &run.store),
            ("20261201-030000-000", true, &Store::Own)
        );
        assert!(d.hold && d.needs_no_app_pod);
        let deferred = d.deferred.clone().expect("deferred");
        assert_eq!(
            (deferred.last_request, deferred.holding.as_deref()),
            (None, Some(request))
        );
        assert_eq!(d.status.as_ref().and_then(|s| s.holding.clone()), None);
        let mut previous = ran.clone();
        previous.restore = d.status.clone();
        observed
            .backup_jobs
            .insert(run.job.clone(), job(Component::Restore, Migration::Running));
        let running = decide_with(PROD, &observed, Some(&previous), None, Some(request));
        assert!(running.hold && running.start.is_none());
        observed.backup_jobs.insert(
            run.job.clone(),
            job(Component::Restore, Migration::Succeeded),
        );
        let done = decide_with(PROD, &observed, Some(&previous), None, Some(request));
        assert!(!done.hold && done.start.is_none());
        assert!(done.finished[0].ok);
        // A malformed request is refused once, with why, and holds nothing.
        let bad = decide_with(PROD, &observed, Some(&ran), None, Some("t1 ../etc"));
        assert!(bad.start.is_none() && !bad.hold);
        let message = bad.status.and_then(|s| s.last).and_then(|l| l.message);
        assert!(message.is_some_and(|m| m.contains("is not `latest` or a backup id")));
    }
}
