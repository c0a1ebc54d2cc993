//! `appenv restore ENV --backup ID|latest --yes [--wait]`: ask the operator to restore an
//! environment's database in place from one of its own backups.
//!
//! It sets the annotation the controller reads (operator/controller/src/restores.rs) to
//! `<time> <backup> into-non-empty`; the controller holds web and workers at zero replicas,
//! starts the restore Job named after that value once none of their Pods exists, starts them
//! again when it finished, and records it in `status.restore` (`lastRequest`, `running`, then
//! `last`, with the agent's error when it failed). `--wait` follows that record, as
//! `appenv backup now --wait` follows `status.backup`, with the same machinery.

use crate::cli::backup::{self, Followed, Progress};
use anyhow::{Context as _, anyhow, bail};
use appenv_api::names::{Component, label};
use appenv_api::{AppEnvironment, condition};
use appenv_core::build::requested_restore_job_name;
use appenv_core::settings::parse_duration;
use appenv_core::validate::{self, BackupDestinationModel, Model};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use std::time::Duration;

/// The annotation whose new value asks for an in-place restore.
pub const REQUEST_ANNOTATION: &str = appenv_api::names::request::RESTORE;
/// The field manager of the annotation (the operator's own, `appenv`, would claim it).
const FIELD_MANAGER: &str = "appenv-restore";
/// The option of a request that lets the agent replace a database that has tables.
const INTO_NON_EMPTY: &str = "into-non-empty";

/// The long help's end: what happens, and why there is no `--into-non-empty`.
pub const HELP: &str = "\
What happens: the operator holds web and workers at zero replicas, starts the restore Job once \
none of their Pods exists, and starts them again when it finished. A failed restore leaves the \
data as it was (PostgreSQL restores in one transaction; a SQLite or DuckDB file is replaced only \
once the backup's copy was checked). One data Job runs at a time: a running backup is waited for.

The restore always replaces what the database holds; there is no --into-non-empty flag. The \
backup agent refuses to restore into a database that has tables unless told to replace them \
(PostgreSQL, and SQLite and DuckDB files alike), and an environment restored in place has them: \
without it every in-place restore would fail after web and workers were stopped for nothing. \
Replacing the data is what this command is for, and --yes confirms it. PostgreSQL: the objects \
the backup contains are dropped and restored (pg_restore --clean --if-exists); tables it does \
not contain (created after it) stay. The migration does not run again: a backup taken before \
the last migration brings back the older schema under the current image.

Without --yes nothing changes: it says what would happen and exits 1. The backups: \
`appenv backup list ENV`.";

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The AppEnvironment's name (it must have spec.backup).
    pub environment: String,
    /// The backup to restore: `latest`, or an id as `appenv backup list` prints it
    /// (e.g. 20261201-030000-000), or, when backups are VolumeSnapshots, a snapshot's name.
    #[arg(long, value_name = "ID|latest|SNAPSHOT", value_parser = restore_ref)]
    pub backup: String,
    /// Confirm: web and workers stop, the database is replaced, data written since the backup
    /// is lost. Without it, nothing changes.
    #[arg(long)]
    pub yes: bool,
    /// Wait until the restore completed (exit 0) or failed (exit 1), printing its progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30m.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `latest` or a backup id (`YYYYMMDD-HHMMSS-mmm`), as the controller accepts in a request.
pub fn backup_ref(text: &str) -> Result<String, String> {
    if validate::backup_ref(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not `latest` or a backup id as `appenv backup list` prints it (e.g. 20261201-030000-000)"
        ))
    }
}

/// [`backup_ref`], or a VolumeSnapshot's name (which of them the environment's destination
/// takes is checked once it is read).
fn restore_ref(text: &str) -> Result<String, String> {
    if validate::backup_ref(text) || validate::is_dns_subdomain(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not `latest`, a backup id as `appenv backup list` prints it (e.g. 20261201-030000-000) or a VolumeSnapshot's name"
        ))
    }
}

/// The value of a request made at `now` for `backup`: the time (RFC 3339 in UTC, to the
/// millisecond), the backup, and `into-non-empty` (always: see [`HELP`]).
pub fn request_value(now: Timestamp, backup: &str) -> String {
    format!("{} {backup} {INTO_NON_EMPTY}", backup::request_value(now))
}

/// How many Pods of web and workers stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pods {
    /// Counted on the live Deployments.
    Live(u32),
    /// From the spec (the Deployments could not be read): autoscaled workers between bounds.
    Spec { min: u32, max: u32 },
}

impl std::fmt::Display for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pods = |n: u32| if n == 1 { "Pod" } else { "Pods" };
        match *self {
            Self::Live(n) => write!(f, "{n} {}", pods(n)),
            Self::Spec { min, max } if min == max => write!(f, "{min} {} by its spec", pods(min)),
            Self::Spec { min, max } => write!(f, "{min} to {max} Pods by its spec"),
        }
    }
}

/// The Pods of web and workers the spec asks for (none while suspended).
pub fn spec_pods(model: &Model) -> Pods {
    if model.suspend {
        return Pods::Spec { min: 0, max: 0 };
    }
    let count = |n: i32| u32::try_from(n).unwrap_or(0);
    let (mut min, mut max) = (count(model.web.replicas), count(model.web.replicas));
    for worker in &model.workers {
        let (low, high) = match &worker.autoscaling {
            Some(a) => (a.min_replicas, a.max_replicas),
            None => (worker.replicas, worker.replicas),
        };
        min += count(low);
        max += count(high);
    }
    Pods::Spec { min, max }
}

/// The Pods of web and workers that exist now: the replicas their Deployments have (among
/// `deployments`, the environment's).
pub fn live_pods(deployments: &[Deployment]) -> Pods {
    let app = |d: &&Deployment| {
        d.labels()
            .get(label::COMPONENT)
            .is_some_and(|c| c == Component::Web.as_str() || c.starts_with("worker-"))
    };
    let pods = deployments
        .iter()
        .filter(app)
        .filter_map(|d| d.status.as_ref().and_then(|s| s.replicas))
        .map(|n| u32::try_from(n).unwrap_or(0))
        .sum();
    Pods::Live(pods)
}

/// The backup as the messages name it.
fn backup_named(backup: &str) -> String {
    if backup == "latest" {
        "the latest backup".to_owned()
    } else {
        format!("backup {backup}")
    }
}

/// What a restore does, said before it is confirmed (and refused without `--yes`).
pub fn warning(name: &str, pods: Pods, backup: &str) -> String {
    format!(
        "web and workers of {name} stop ({pods}), the database is replaced by {}, then they \
         start again; data written since that backup is lost. Run again with --yes.",
        backup_named(backup)
    )
}

/// The validated model of an environment that can be restored in place, or why not.
pub fn restore_model(env: &AppEnvironment) -> anyhow::Result<Model> {
    let name = env.name_any();
    if env.spec.backup.is_none() {
        bail!(
            "{name} has no spec.backup: it has no backups to restore from (set \
             spec.backup.destination to s3 or volume; `kubectl explain appenvironment.spec.backup`)"
        );
    }
    let model = validate::validate(env, &backup::settings_for(env)?).map_err(|invalid| {
        anyhow!("{name} is not a valid AppEnvironment, so the operator restores nothing: {invalid}")
    })?;
    if model.backup.is_none() {
        bail!("{name}: spec.backup has no destination");
    }
    Ok(model)
}

/// Web and workers' components that still have ready Pods, as `web 1, worker-celery 2`.
fn still_ready(env: &AppEnvironment) -> String {
    env.status
        .iter()
        .flat_map(|s| &s.components)
        .filter(|c| c.name == Component::Web.as_str() || c.name.starts_with("worker-"))
        .filter(|c| c.ready > 0)
        .map(|c| format!("{} {}", c.name, c.ready))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the restore of `request` (Job `job`) is. Finished once `status.restore.last` records
/// the Job and it no longer runs (a refused request is recorded there too, with why); the Job
/// is named after the request, so it is recognised after a later request replaced
/// `lastRequest`.
pub fn progress(env: &AppEnvironment, request: &str, job: &str) -> Progress {
    let status = env.status.as_ref();
    let restore = status.and_then(|s| s.restore.as_ref());
    let running = restore.and_then(|r| r.running.as_ref());
    if running.is_none_or(|r| r.job != job)
        && let Some(last) = restore
            .and_then(|r| r.last.as_ref())
            .filter(|l| l.job == job)
    {
        return match last.message {
            None => Progress::Completed(last.clone()),
            Some(_) => Progress::Failed(last.clone()),
        };
    }
    let current = status.and_then(|s| s.observed_generation) == env.metadata.generation;
    if let Some(valid) = env
        .condition(condition::VALID)
        .filter(|c| current && c.status == "False")
    {
        return Progress::Stuck(format!("the operator refuses the spec: {}", valid.message));
    }
    let handled = restore.and_then(|r| r.last_request.as_deref()) == Some(request);
    // One annotation holds one request: a newer value replaces this one before it started.
    if let Some(newer) = env
        .annotations()
        .get(REQUEST_ANNOTATION)
        .filter(|v| !handled && v.as_str() != request)
    {
        return Progress::Stuck(format!(
            "a later request ({newer}) replaced it before it started"
        ));
    }
    let backup = status
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.running.as_ref());
    Progress::Waiting(match (running, backup) {
        (Some(r), _) if r.job == job => {
            format!("running: Job {job} (web and workers are stopped)")
        }
        _ if handled => format!("started: waiting for Job {job} to be recorded"),
        (Some(other), _) => format!(
            "waiting: Job {} ({}) is running; this restore starts after it",
            other.job, other.reason
        ),
        (None, Some(b)) => format!(
            "waiting: backup Job {} ({}) is running; this restore starts after it",
            b.job, b.reason
        ),
        (None, None) if restore.and_then(|r| r.holding.as_deref()) != Some(request) => {
            format!("requested: waiting for the operator to take it (Job {job})")
        }
        (None, None) => {
            let ready = still_ready(env);
            let ready = if ready.is_empty() {
                String::new()
            } else {
                format!(" (ready: {ready})")
            };
            format!(
                "holding web and workers: Job {job} starts once none of their Pods exists{ready}"
            )
        }
    })
}

/// The Pods that stop: counted on the live Deployments, or from the spec if they cannot be
/// listed (a user who may not read Deployments there).
async fn pods(client: &Client, env: &AppEnvironment, model: &Model) -> Pods {
    let namespace = env
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| model.namespace.name.clone());
    let selector = format!(
        "{}={},{}={}",
        label::NAME,
        model.app,
        label::INSTANCE,
        model.name
    );
    match Api::<Deployment>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => live_pods(&list.items),
        Err(err) => {
            tracing::debug!(%err, "listing Deployments; counting the spec's replicas");
            spec_pods(model)
        }
    }
}

/// Before anything stops: the backup exists, where that can be read from here (an S3
/// destination whose Secret the user may read, the environment's VolumeSnapshots). Otherwise a
/// note, and the Job will say.
async fn check_backup(
    client: &Client,
    env: &AppEnvironment,
    model: &Model,
    backup: &str,
) -> anyhow::Result<()> {
    let name = env.metadata.name.as_deref().unwrap_or_default();
    let namespace = env
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| model.namespace.name.clone());
    let s3 = match model.backup.as_ref().map(|b| &b.destination) {
        Some(BackupDestinationModel::S3(s3)) => s3,
        Some(BackupDestinationModel::VolumeSnapshot { .. }) => {
            let snapshots = appenv_controller::volume_snapshots(client, &namespace)
                .list(&ListParams::default().labels(&appenv_controller::backup_selector(model)))
                .await
                .with_context(|| format!("listing the VolumeSnapshots of {name}"))?;
            return appenv_controller::choose_snapshot(&snapshots.items, backup)
                .map(|_| ())
                .map_err(|why| anyhow!("{name}: {why}"));
        }
        _ if !validate::backup_ref(backup) => bail!(
            "{name}: {backup:?} is not `latest` or a backup id as `appenv backup list` prints it (e.g. 20261201-030000-000)"
        ),
        _ => return Ok(()),
    };
    let catalog = match backup::s3_catalog(client, &namespace, name, s3).await {
        Ok(catalog) => catalog,
        Err(e) => {
            eprintln!(
                "note: cannot check that backup {backup} exists ({e:#}); the restore Job will say if it does not"
            );
            return Ok(());
        }
    };
    let found = match backup {
        "latest" => catalog.latest().await,
        id => match appenv_backup::BackupId::parse(id) {
            Ok(id) => catalog.find(&id).await,
            Err(e) => Err(e),
        },
    };
    found.map(|_| ()).map_err(|e| anyhow!("{name}: {e}"))
}

async fn restore(client: &Client, args: RestoreArgs) -> anyhow::Result<bool> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let name = &args.environment;
    let env = backup::read(&api, name).await?;
    let model = restore_model(&env)?;
    if let Err(missing) = check_backup(client, &env, &model, &args.backup).await {
        eprintln!("error: {missing:#}; nothing was stopped");
        return Ok(false);
    }
    let pods = pods(client, &env, &model).await;
    if !args.yes {
        eprintln!("{}", warning(name, pods, &args.backup));
        return Ok(false);
    }
    let request = request_value(Timestamp::now(), &args.backup);
    let job = requested_restore_job_name(&model, &request);
    backup::annotate(&api, name, REQUEST_ANNOTATION, &request, FIELD_MANAGER).await?;
    println!(
        "restore of {name} from {} requested (Job {job}): web and workers stop ({pods}) until it finished",
        backup_named(&args.backup)
    );
    if !args.wait {
        return Ok(true);
    }
    let followed = backup::follow(&api, name, args.timeout, &format!("Job {job}"), |env| {
        progress(env, &request, &job)
    })
    .await?;
    match followed {
        Followed::Settled(Progress::Completed(run)) => {
            println!(
                "restore {job} completed at {}: web and workers start again",
                backup::when(run.finished_at.as_ref())
            );
            Ok(true)
        }
        Followed::Settled(Progress::Failed(run)) => {
            eprintln!(
                "error: restore {job} failed at {}: {}",
                backup::when(run.finished_at.as_ref()),
                run.message
                    .as_deref()
                    .unwrap_or("no reason recorded")
                    .trim()
            );
            Ok(false)
        }
        Followed::Settled(Progress::Stuck(why)) => {
            eprintln!("error: the restore of {name} (Job {job}) cannot run: {why}");
            Ok(false)
        }
        Followed::Settled(Progress::Waiting(line)) => {
            eprintln!("error: the restore of {name} (Job {job}) has not finished: {line}");
            Ok(false)
        }
        Followed::TimedOut(seen) => {
            eprintln!(
                "error: the restore of {name} (Job {job}) has not finished after {}s; last seen: {}",
                args.timeout.as_secs(),
                if seen.is_empty() { "nothing" } else { &seen }
            );
            Ok(false)
        }
    }
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<bool> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    restore(&client, args).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use serde_json::json;

    const SHOP: &str = "apiVersion: appenv.dev/v1alpha1
kind: AppEnvironment
metadata: {name: shop-prod}
spec:
  app: shop
  image: 'shop:1'
  web: {replicas: 2}
  workers:
  - {name: celery, replicas: 3}
  - {name: reports, autoscaling: {minReplicas: 1, maxReplicas: 4, queue: {type: RQ, names: [reports]}}}
  redis: {}
  database: {postgres: {}}
  backup: {destination: {s3: {bucket: shop-backups, prefix: prod, credentialsSecret: s3-creds}}}
";

    fn environment(yaml: &str) -> AppEnvironment {
        let mut env: AppEnvironment = serde_norway::from_str(yaml).expect("an AppEnvironment");
        env.metadata.generation = Some(1);
        env
    }

    fn with_status(status: serde_json::Value) -> AppEnvironment {
        let mut env = environment(SHOP);
        env.status = Some(serde_json::from_value(status).expect("a status"));
        env
    }

    fn parse(args: &[&str]) -> Result<RestoreArgs, clap::Error> {
        let cli = crate::cli::Cli::try_parse_from([&["appenv", "restore"], args].concat())?;
        match cli.command {
            crate::cli::Command::Restore(args) => Ok(args),
            other => panic!("not restore: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_needs_a_backup_and_has_no_into_non_empty_flag() {
        let args = parse(&["shop-prod", "--backup", "latest"]).expect("parses");
        assert_eq!(
            (args.environment.as_str(), args.backup.as_str()),
            ("shop-prod", "latest")
        );
        assert!(!args.yes && !args.wait);
        assert_eq!(args.timeout, Duration::from_secs(1800));
        let args = parse(&[
            "shop-prod",
            "--backup",
            "20261201-030000-000",
            "--yes",
            "--wait",
            "--timeout",
            "90s",
        ])
        .expect("parses");
        assert!(args.yes && args.wait);
        assert_eq!(args.backup, "20261201-030000-000");
        assert_eq!(args.timeout, Duration::from_secs(90));
        for bad in [
            &["shop-prod"][..],
            &["--backup", "latest"],
            &["shop-prod", "--backup", "Yesterday"],
            &["shop-prod", "--backup", "20261201_030000"],
            &["shop-prod", "--backup", "latest into-non-empty"],
            &["shop-prod", "--backup", "latest", "--into-non-empty"],
            &["shop-prod", "--backup", "latest", "--timeout", "soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let err = parse(&["shop-prod", "--backup", "../x"]).expect_err("a path");
        assert!(
            err.to_string()
                .contains("\"../x\" is not `latest`, a backup id"),
            "{err}"
        );
    }

    #[test]
    fn a_request_is_the_time_the_backup_and_into_non_empty() {
        let at: Timestamp = "2026-12-02T10:00:00.123456Z".parse().expect("time");
        assert_eq!(
            request_value(at, "latest"),
            "2026-12-02T10:00:00.123Z latest into-non-empty"
        );
        assert_eq!(
            request_value(at, "20261201-030000-000"),
            "2026-12-02T10:00:00.123Z 20261201-030000-000 into-non-empty"
        );
    }

    #[test]
    fn the_warning_says_what_stops_what_is_replaced_and_what_is_lost() {
        assert_eq!(
            warning("shop-prod", Pods::Live(6), "20261201-030000-000"),
            "web and workers of shop-prod stop (6 Pods), the database is replaced by backup \
             20261201-030000-000, then they start again; data written since that backup is lost. \
             Run again with --yes."
        );
        assert_eq!(
            warning("blog", Pods::Live(1), "latest"),
            "web and workers of blog stop (1 Pod), the database is replaced by the latest \
             backup, then they start again; data written since that backup is lost. Run again \
             with --yes."
        );
        assert!(
            warning("shop-prod", Pods::Spec { min: 6, max: 9 }, "latest")
                .contains(" stop (6 to 9 Pods by its spec), ")
        );
        assert_eq!(
            Pods::Spec { min: 3, max: 3 }.to_string(),
            "3 Pods by its spec"
        );
    }

    #[test]
    fn the_pods_are_counted_on_the_deployments_of_web_and_workers_or_from_the_spec() {
        let model = restore_model(&environment(SHOP)).expect("restorable");
        assert_eq!(spec_pods(&model), Pods::Spec { min: 6, max: 9 });
        let mut suspended = model.clone();
        suspended.suspend = true;
        assert_eq!(spec_pods(&suspended), Pods::Spec { min: 0, max: 0 });
        let deployment = |component: &str, replicas: Option<i32>| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": format!("shop-{component}"), "labels": {label::COMPONENT: component}},
                "status": {"replicas": replicas},
            }))
            .expect("a Deployment")
        };
        let live = [
            deployment("web", Some(2)),
            deployment("worker-celery", Some(3)),
            // Autoscaled: what it runs now.
            deployment("worker-reports", Some(2)),
            // Not web or a worker: it does not stop.
            deployment("redis", Some(1)),
            // Held at zero already.
            deployment("worker-beat", None),
        ];
        assert_eq!(live_pods(&live), Pods::Live(7));
        assert_eq!(live_pods(&[]), Pods::Live(0));
    }

    #[test]
    fn an_environment_without_backups_is_refused_naming_spec_backup() {
        let none = SHOP.replace(
            "  backup: {destination: {s3: {bucket: shop-backups, prefix: prod, credentialsSecret: s3-creds}}}\n",
            "",
        );
        let message = restore_model(&environment(&none))
            .expect_err("no backup")
            .to_string();
        assert!(
            message.starts_with("shop-prod has no spec.backup: it has no backups to restore from"),
            "{message}"
        );
        let invalid = SHOP.replace("bucket: shop-backups", "bucket: Shop_Backups");
        let message = restore_model(&environment(&invalid))
            .expect_err("invalid")
            .to_string();
        assert!(
            message.starts_with("shop-prod is not a valid AppEnvironment")
                && message.contains("spec.backup.destination.s3.bucket"),
            "{message}"
        );
    }

    fn run(job: &str, reason: &str, finished: bool, message: Option<&str>) -> serde_json::Value {
        let mut run = json!({"job": job, "reason": reason, "startedAt": "2026-12-02T10:00:00Z"});
        if finished {
            run["finishedAt"] = json!("2026-12-02T10:00:03Z");
        } else {
            run["webStopped"] = json!(true);
        }
        if let Some(message) = message {
            run["message"] = json!(message);
        }
        run
    }

    #[test]
    fn the_wait_holds_then_runs_then_ends_with_the_record_of_the_job() {
        let request = "2026-12-02T10:00:00.123Z latest into-non-empty";
        let job = "shop-restore-r0123456789";
        let waiting = |status| match progress(&with_status(status), request, job) {
            Progress::Waiting(line) => line,
            other => panic!("not waiting: {other:?}"),
        };
        assert_eq!(
            waiting(json!({})),
            "requested: waiting for the operator to take it (Job shop-restore-r0123456789)"
        );
        assert_eq!(
            waiting(json!({"restore": {"holding": request}})),
            "holding web and workers: Job shop-restore-r0123456789 starts once none of their Pods exists"
        );
        assert_eq!(
            waiting(json!({"restore": {"holding": request}, "components": [
                {"name": "web", "ready": 1, "desired": 2},
                {"name": "worker-celery", "ready": 0, "desired": 3},
                {"name": "postgres", "ready": 1, "desired": 1}]})),
            "holding web and workers: Job shop-restore-r0123456789 starts once none of their Pods exists (ready: web 1)"
        );
        assert_eq!(
            waiting(
                json!({"backup": {"running": run("shop-backup-s202612020300", "scheduled", false, None)}})
            ),
            "waiting: backup Job shop-backup-s202612020300 (scheduled) is running; this restore starts after it"
        );
        // An older restore's outcome is not this one's.
        assert!(
            waiting(
                json!({"restore": {"last": run("shop-restore-rffff", "in-place", true, None)}})
            )
            .starts_with("requested: ")
        );
        assert_eq!(
            waiting(
                json!({"restore": {"lastRequest": request, "running": run(job, "in-place", false, None)}})
            ),
            "running: Job shop-restore-r0123456789 (web and workers are stopped)"
        );
        let done = progress(
            &with_status(
                json!({"restore": {"lastRequest": request, "last": run(job, "in-place", true, None)}}),
            ),
            request,
            job,
        );
        assert!(
            matches!(&done, Progress::Completed(r) if r.job == job),
            "{done:?}"
        );
        let failed = progress(
            &with_status(json!({"restore": {"lastRequest": request,
                "last": run(job, "in-place", true, Some("pg_restore: relation \"orders\" does not exist\n"))}})),
            request,
            job,
        );
        assert!(
            matches!(&failed, Progress::Failed(r) if r.message.as_deref().is_some_and(|m| m.starts_with("pg_restore: "))),
            "{failed:?}"
        );
        // A refused request is recorded as the last restore of its Job, with why.
        let refused = progress(
            &with_status(json!({"restore": {"lastRequest": request,
                "last": run(job, "in-place", true, Some("the request was refused: the environment has no spec.backup"))}})),
            request,
            job,
        );
        assert!(matches!(refused, Progress::Failed(_)), "{refused:?}");
    }

    #[test]
    fn a_spec_the_operator_refuses_or_a_later_request_stops_the_wait() {
        let request = "2026-12-02T10:00:00.123Z latest into-non-empty";
        let job = "shop-restore-r0123456789";
        let refused = with_status(json!({"observedGeneration": 1, "conditions": [{
            "type": "Valid", "status": "False", "reason": "InvalidSpec",
            "message": "spec.namespace.copy[0]: not allowed", "lastTransitionTime": "2026-12-02T10:00:00Z"}]}));
        assert_eq!(
            progress(&refused, request, job),
            Progress::Stuck(
                "the operator refuses the spec: spec.namespace.copy[0]: not allowed".into()
            )
        );
        let mut replaced = with_status(json!({}));
        let later = "2026-12-02T10:05:00.000Z 20261201-030000-000 into-non-empty";
        replaced.metadata.annotations =
            Some([(REQUEST_ANNOTATION.to_owned(), later.to_owned())].into());
        assert_eq!(
            progress(&replaced, request, job),
            Progress::Stuck(format!(
                "a later request ({later}) replaced it before it started"
            ))
        );
        replaced.metadata.annotations =
            Some([(REQUEST_ANNOTATION.to_owned(), request.to_owned())].into());
        assert!(matches!(
            progress(&replaced, request, job),
            Progress::Waiting(_)
        ));
    }

    #[test]
    fn the_help_says_why_the_data_is_always_replaced() {
        use clap::CommandFactory as _;
        let mut command = crate::cli::Cli::command();
        let help = command
            .find_subcommand_mut("restore")
            .expect("restore")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("there is no --into-non-empty flag") && help.contains("--yes"),
            "{help}"
        );
    }
}
