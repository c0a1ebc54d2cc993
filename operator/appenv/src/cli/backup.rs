//! `appenv backup now|list ENV`: ask the operator for a backup of an environment now (and
//! follow it to its end), and list the backups at the environment's destination.
//!
//! `now` sets the annotation the controller reads to the current time; the controller starts
//! the Job of that value once no other backup of the environment runs, and records it in
//! `status.backup` (`lastRequest`, `running`, then `lastSuccess` or `lastFailure`). `list`
//! reads an S3 destination itself, with the credentials Secret of the environment read with the
//! user's own Kubernetes credentials; nothing of that Secret is ever printed.

use crate::cli::agent::mib;
use anyhow::{Context as _, anyhow, bail};
use appenv_api::{AppEnvironment, BackupRun as RunStatus, BackupStatus, condition};
use appenv_backup::destination::S3Credentials;
use appenv_backup::{Catalog, Destination, Manifest};
use appenv_core::build::{REASON_ANNOTATION, backup_volume_name, requested_job_name};
use appenv_core::settings::{DnsLabel, Settings, parse_duration};
use appenv_core::validate::{self, BackupDestinationModel, Model};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt as _};
use serde_json::json;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The annotation whose new value asks for a backup.
pub const REQUEST_ANNOTATION: &str = appenv_api::names::request::BACKUP;
/// The field manager of the annotation (the operator's own, `appenv`, would claim it).
const FIELD_MANAGER: &str = "appenv-backup-now";
/// The keys of `spec.backup.destination.s3.credentialsSecret` (those the backup Jobs read:
/// operator/core/src/build/backup.rs).
const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Ask the operator for a backup of an environment now; with --wait, until it completed or
    /// failed.
    Now(NowArgs),
    /// List an environment's complete backups at its destination, oldest first.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct NowArgs {
    /// The AppEnvironment's name.
    pub environment: String,
    /// Wait until the backup completed (exit 0) or failed (exit 1), printing its progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30m.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The AppEnvironment's name.
    pub environment: String,
}

/// The value of a request made at `now`: RFC 3339 in UTC, to the millisecond.
pub fn request_value(now: Timestamp) -> String {
    format!("{now:.3}")
}

/// Settings to validate an environment with, without knowing the operator's: any preview
/// domain, and the namespaces its spec copies from allowed. What is read from the model (the
/// app, the namespace, the backup destination) is the same under every setting; the operator
/// reports its own refusals in the status, which `--wait` prints. Shared with `appenv restore`.
pub(crate) fn settings_for(env: &AppEnvironment) -> anyhow::Result<Settings> {
    let copy_from = env
        .spec
        .namespace
        .copy
        .iter()
        .filter_map(|c| DnsLabel::parse_copy_source(&c.namespace).ok())
        .collect();
    Ok(Settings {
        preview_domain: Some("preview.invalid".parse()?),
        copy_from_namespaces: copy_from,
        ..Settings::default()
    })
}

/// The validated model of an environment that has backups, or why it has none.
pub fn backup_model(env: &AppEnvironment) -> anyhow::Result<Model> {
    let name = env.name_any();
    if env.spec.backup.is_none() {
        bail!(
            "{name} has no spec.backup: the operator takes no backups of it (set \
             spec.backup.destination to s3 or volume; `kubectl explain appenvironment.spec.backup`)"
        );
    }
    let model = validate::validate(env, &settings_for(env)?).map_err(|invalid| {
        anyhow!("{name} is not a valid AppEnvironment, so the operator backs up nothing: {invalid}")
    })?;
    if model.backup.is_none() {
        bail!("{name}: spec.backup has no destination");
    }
    Ok(model)
}

/// Where a requested backup (or restore: `appenv restore` shares it) is, as the environment
/// shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Not finished; a line that says where it is.
    Waiting(String),
    Completed(RunStatus),
    Failed(RunStatus),
    /// It will not run without a change to the environment.
    Stuck(String),
}

/// Where the backup of `request` (Job `job`) is. Finished once the status records the Job as
/// the last success or failure and it no longer runs; the Job is named after the request, so
/// it is recognised even if a later request has replaced `lastRequest` meanwhile.
pub fn progress(env: &AppEnvironment, request: &str, job: &str) -> Progress {
    let backup = env.status.as_ref().and_then(|s| s.backup.as_ref());
    let running = backup.and_then(|b| b.running.as_ref());
    let ours = |run: Option<&RunStatus>| run.filter(|r| r.job == job).cloned();
    if running.is_none_or(|r| r.job != job) {
        if let Some(run) = ours(backup.and_then(|b| b.last_success.as_ref())) {
            return Progress::Completed(run);
        }
        if let Some(run) = ours(backup.and_then(|b| b.last_failure.as_ref())) {
            return Progress::Failed(run);
        }
    }
    if env.spec.backup.is_none() {
        return Progress::Stuck("spec.backup was removed".to_owned());
    }
    let current =
        env.status.as_ref().and_then(|s| s.observed_generation) == env.metadata.generation;
    if let Some(valid) = env
        .condition(condition::VALID)
        .filter(|c| current && c.status == "False")
    {
        return Progress::Stuck(format!("the operator refuses the spec: {}", valid.message));
    }
    let handled = backup.and_then(|b| b.last_request.as_deref()) == Some(request);
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
    Progress::Waiting(match running {
        Some(r) if r.job == job => {
            let stuck = env
                .condition(condition::BACKUPS_HEALTHY)
                .filter(|c| c.status == "False" && c.message.contains(job))
                .map(|c| format!(" ({})", c.message))
                .unwrap_or_default();
            let web = if r.web_stopped {
                "; web is stopped while it copies (DuckDB)"
            } else {
                ""
            };
            format!("running: Job {job}{web}{stuck}")
        }
        _ if handled => format!("started: waiting for Job {job} to be recorded"),
        _ if env.spec.suspend => {
            "waiting: the environment is suspended (spec.suspend): the backup starts when it resumes"
                .to_owned()
        }
        Some(other) => format!(
            "waiting: Job {} ({}) is running; this backup starts after it",
            other.job, other.reason
        ),
        None => format!("requested: waiting for the operator to start Job {job}"),
    })
}

/// A time of the status as the commands print it, in UTC; `?` if it is not recorded.
pub(crate) fn when(t: Option<&Time>) -> String {
    t.map_or_else(
        || "?".to_owned(),
        |t| t.0.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The backups as `backup list` prints them: id, start time, reason and size.
pub fn table(backups: &[Manifest]) -> String {
    let mut out = format!("{:<20} {:<19} {:<17} SIZE\n", "ID", "TIME (UTC)", "REASON");
    for m in backups {
        let time = m.started.parse::<Timestamp>().map_or_else(
            |_| m.started.clone(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        );
        let _ = writeln!(
            out,
            "{:<20} {:<19} {:<17} {}",
            m.id,
            time,
            m.reason.as_str(),
            mib(m.size_bytes)
        );
    }
    out
}

/// What `backup list` can say of backups on a volume: the volume is mounted by the backup Jobs
/// only, so it says what the status knows and where a Job's log names its backup.
/// Backup VolumeSnapshots, oldest first: name, time, whether ready, size, reason (and a failed
/// one's error).
pub fn snapshot_table(snapshots: &[DynamicObject]) -> String {
    let mut rows: Vec<&DynamicObject> = snapshots.iter().collect();
    rows.sort_by_key(|s| s.metadata.creation_timestamp.clone());
    let mut out = format!(
        "{:<32} {:<23} {:<6} {:<10} REASON\n",
        "NAME", "TIME", "READY", "SIZE"
    );
    for s in rows {
        let status = s.data.get("status");
        let text = |key: &str| {
            status
                .and_then(|st| st.get(key))
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        };
        let _ = write!(
            out,
            "{:<32} {:<23} {:<6} {:<10} {}",
            s.name_any(),
            when(s.metadata.creation_timestamp.as_ref()),
            text("readyToUse").unwrap_or_else(|| "false".to_owned()),
            text("restoreSize").unwrap_or_else(|| "-".to_owned()),
            s.annotations()
                .get(REASON_ANNOTATION)
                .map_or("-", String::as_str),
        );
        if let Some(error) = status
            .and_then(|st| st.pointer("/error/message"))
            .and_then(|m| m.as_str())
        {
            let _ = write!(out, " (failed: {error})");
        }
        out.push('\n');
    }
    out
}

pub fn volume_report(
    name: &str,
    namespace: &str,
    volume: &str,
    status: Option<&BackupStatus>,
) -> String {
    let mut out = format!(
        "the backups of {name} are on the volume {volume} in namespace {namespace}, which only \
         its backup Jobs mount\n"
    );
    let runs = [
        ("running", status.and_then(|s| s.running.as_ref())),
        ("last success", status.and_then(|s| s.last_success.as_ref())),
        ("last failure", status.and_then(|s| s.last_failure.as_ref())),
    ];
    for (what, run) in runs {
        let Some(run) = run else { continue };
        let at = match what {
            "running" => format!("since {}", when(run.started_at.as_ref())),
            _ => when(run.finished_at.as_ref()),
        };
        let why = run
            .message
            .as_deref()
            .map(|m| format!(": {}", m.trim()))
            .unwrap_or_default();
        let _ = writeln!(out, "{what}: Job {} ({}), {at}{why}", run.job, run.reason);
    }
    let last = runs
        .iter()
        .filter_map(|(_, run)| *run)
        .max_by_key(|run| run.started_at.as_ref().map(|t| t.0));
    match last {
        Some(run) => {
            let _ = writeln!(
                out,
                "a backup Job's log names the backup it took and those it deleted: kubectl -n {namespace} logs job/{}",
                run.job
            );
        }
        None => out.push_str("no backup has run yet\n"),
    }
    out
}

pub(crate) async fn read(api: &Api<AppEnvironment>, name: &str) -> anyhow::Result<AppEnvironment> {
    api.get_opt(name)
        .await
        .with_context(|| format!("reading AppEnvironment {name}"))?
        .with_context(|| {
            format!("AppEnvironment {name} does not exist (kubectl get appenvironments)")
        })
}

/// Set `annotation` of environment `name` to `value` with a merge patch of `field_manager`'s
/// own (the operator's manager, `appenv`, would claim the field): a request to the operator.
pub(crate) async fn annotate(
    api: &Api<AppEnvironment>,
    name: &str,
    annotation: &str,
    value: &str,
    field_manager: &str,
) -> anyhow::Result<()> {
    let params = PatchParams {
        field_manager: Some(field_manager.to_owned()),
        ..PatchParams::default()
    };
    let body = json!({"metadata": {"annotations": {annotation: value}}});
    api.patch(name, &params, &Patch::Merge(&body))
        .await
        .with_context(|| format!("setting the annotation {annotation} of {name}"))?;
    Ok(())
}

/// How following a request ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Followed {
    /// Not [`Progress::Waiting`] any more.
    Settled(Progress),
    /// Still waiting at the deadline; the last line printed (empty if none).
    TimedOut(String),
}

/// Follow environment `name` through a watch (no polling) until `progress` says its request
/// is no longer waiting, printing each new waiting line to stderr with the seconds since the
/// start; `what` names the request if the environment is deleted meanwhile.
pub(crate) async fn follow(
    api: &Api<AppEnvironment>,
    name: &str,
    timeout: Duration,
    what: &str,
    progress: impl Fn(&AppEnvironment) -> Progress,
) -> anyhow::Result<Followed> {
    let started = Instant::now();
    // The condition sees every change the watch shows; it remembers the last line printed.
    let last = std::sync::Mutex::new(String::new());
    let decided = |env: Option<&AppEnvironment>| {
        let Some(env) = env else {
            return true;
        };
        let Progress::Waiting(line) = progress(env) else {
            return true;
        };
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last != line {
            eprintln!("[{:>4}s] {line}", started.elapsed().as_secs());
            *last = line;
        }
        false
    };
    let watched = tokio::time::timeout(timeout, await_condition(api.clone(), name, decided)).await;
    match watched {
        Ok(Ok(Some(env))) => Ok(Followed::Settled(progress(&env))),
        Ok(Ok(None)) => bail!("AppEnvironment {name} was deleted while waiting for {what}"),
        Ok(Err(err)) => Err(err).with_context(|| format!("watching AppEnvironment {name}")),
        Err(_) => Ok(Followed::TimedOut(
            last.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )),
    }
}

async fn now(client: &Client, args: NowArgs) -> anyhow::Result<bool> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let name = &args.environment;
    let model = backup_model(&read(&api, name).await?)?;
    let request = request_value(Timestamp::now());
    let job = requested_job_name(&model, &request);
    annotate(&api, name, REQUEST_ANNOTATION, &request, FIELD_MANAGER).await?;
    println!("backup of {name} requested (Job {job})");
    if !args.wait {
        return Ok(true);
    }
    let followed = follow(&api, name, args.timeout, &format!("Job {job}"), |env| {
        progress(env, &request, &job)
    })
    .await?;
    match followed {
        Followed::TimedOut(seen) => {
            eprintln!(
                "error: the backup of {name} (Job {job}) has not finished after {}s; last seen: {}",
                args.timeout.as_secs(),
                if seen.is_empty() { "nothing" } else { &seen }
            );
            Ok(false)
        }
        Followed::Settled(Progress::Completed(run)) => {
            println!(
                "backup {job} completed at {} (reason {})",
                when(run.finished_at.as_ref()),
                run.reason
            );
            Ok(true)
        }
        Followed::Settled(Progress::Failed(run)) => {
            eprintln!(
                "error: backup {job} failed at {}: {}",
                when(run.finished_at.as_ref()),
                run.message
                    .as_deref()
                    .unwrap_or("no reason recorded")
                    .trim()
            );
            Ok(false)
        }
        Followed::Settled(Progress::Stuck(why)) => {
            eprintln!("error: the backup of {name} (Job {job}) cannot run: {why}");
            Ok(false)
        }
        Followed::Settled(Progress::Waiting(line)) => {
            eprintln!("error: the backup of {name} (Job {job}) has not finished: {line}");
            Ok(false)
        }
    }
}

/// The two keys of the credentials Secret; an error names the Secret and the key, never a value.
async fn credentials(
    client: &Client,
    namespace: &str,
    secret: &str,
) -> anyhow::Result<S3Credentials> {
    let what =
        format!("Secret {namespace}/{secret} (spec.backup.destination.s3.credentialsSecret)");
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(secret)
        .await
        .with_context(|| format!("reading {what}"))?
        .with_context(|| format!("{what} does not exist"))?;
    let key = |key: &str| {
        let bytes = found
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .with_context(|| format!("{what} has no key {key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| anyhow!("{what}: {key} is not UTF-8 text"))
    };
    Ok(S3Credentials {
        access_key_id: key(ACCESS_KEY_ID)?,
        secret_access_key: key(SECRET_ACCESS_KEY)?,
    })
}

/// The catalog of the environment `name`'s backups in its S3 destination, read with its
/// credentials Secret (from `namespace`) and the user's own Kubernetes credentials.
pub(crate) async fn s3_catalog(
    client: &Client,
    namespace: &str,
    name: &str,
    s3: &appenv_core::validate::S3Model,
) -> anyhow::Result<Catalog> {
    let credentials = credentials(client, namespace, &s3.credentials_secret).await?;
    let destination = Destination::S3 {
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
    };
    Ok(Catalog::open(&destination, Some(&credentials), name)?)
}

async fn list(client: &Client, args: ListArgs) -> anyhow::Result<bool> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let name = &args.environment;
    let env = read(&api, name).await?;
    let model = backup_model(&env)?;
    let status = env.status.as_ref();
    let namespace = status
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| model.namespace.name.clone());
    let destination = model.backup.as_ref().map(|b| &b.destination);
    if let Some(BackupDestinationModel::VolumeSnapshot { class_name }) = destination {
        let selector = appenv_controller::backup_selector(&model);
        let snapshots = appenv_controller::volume_snapshots(client, &namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| {
                format!("listing the VolumeSnapshots of {name} in namespace {namespace}")
            })?;
        print!("{}", snapshot_table(&snapshots.items));
        if snapshots.items.is_empty() {
            println!("(no VolumeSnapshot of {name} in namespace {namespace}, class {class_name})");
        }
        return Ok(true);
    }
    let Some(BackupDestinationModel::S3(s3)) = destination else {
        let volume = backup_volume_name(&model);
        let backup = status.and_then(|s| s.backup.as_deref());
        print!("{}", volume_report(name, &namespace, &volume, backup));
        return Ok(true);
    };
    let catalog = s3_catalog(client, &namespace, name, s3).await?;
    let backups = catalog.list().await?;
    print!("{}", table(&backups));
    if backups.is_empty() {
        println!("(no complete backup of {name} in {})", catalog.location());
    }
    Ok(true)
}

pub async fn run(command: BackupCommand) -> anyhow::Result<bool> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    match command {
        BackupCommand::Now(args) => now(&client, args).await,
        BackupCommand::List(args) => list(&client, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appenv_core::build::SNAPSHOT_API_VERSION;
    use clap::Parser as _;

    #[test]
    fn snapshots_are_listed_oldest_first_with_a_failures_error() {
        let snapshot = |name: &str, created: &str, status: serde_json::Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshot",
                "metadata": {"name": name, "creationTimestamp": created,
                    "annotations": {REASON_ANNOTATION: "scheduled"}},
                "status": status,
            }))
            .expect("a snapshot")
        };
        let table = snapshot_table(&[
            snapshot(
                "dojo-backup-s202612020400",
                "2026-12-02T04:00:00Z",
                json!({"readyToUse": false, "error": {"message": "class gone"}}),
            ),
            snapshot(
                "dojo-backup-s202612010400",
                "2026-12-01T04:00:00Z",
                json!({"readyToUse": true, "restoreSize": "5Gi"}),
            ),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(
            lines[1].starts_with("dojo-backup-s202612010400 ")
                && lines[1].ends_with("2026-12-01 04:00:00 UTC true   5Gi        scheduled"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("dojo-backup-s202612020400")
                && lines[2].ends_with("scheduled (failed: class gone)"),
            "{table}"
        );
    }

    fn environment(yaml: &str) -> AppEnvironment {
        let mut env: AppEnvironment = serde_norway::from_str(yaml).expect("an AppEnvironment");
        env.metadata.generation = Some(1);
        env
    }

    const SHOP: &str = "apiVersion: appenv.dev/v1alpha1
kind: AppEnvironment
metadata: {name: shop-prod}
spec:
  app: shop
  image: 'shop:1'
  database: {embedded: {engine: SQLite, path: /data/shop.sqlite, storage: {size: 1Gi}}}
  backup: {destination: {s3: {bucket: shop-backups, prefix: prod, credentialsSecret: s3-creds}}}
";

    fn with_status(status: serde_json::Value) -> AppEnvironment {
        let mut env = environment(SHOP);
        env.status = Some(serde_json::from_value(status).expect("a status"));
        env
    }

    fn run(job: &str, reason: &str, message: Option<&str>) -> serde_json::Value {
        json!({"job": job, "reason": reason, "startedAt": "2026-12-02T10:00:00Z",
               "finishedAt": "2026-12-02T10:00:03Z", "message": message})
    }

    #[test]
    fn the_command_line_parses_with_a_30_minute_default_timeout() {
        let cli = crate::cli::Cli::try_parse_from(["appenv", "backup", "now", "shop-prod"])
            .expect("parses");
        let crate::cli::Command::Backup(BackupCommand::Now(args)) = cli.command else {
            panic!("not backup now: {:?}", cli.command);
        };
        assert_eq!(args.environment, "shop-prod");
        assert!(!args.wait);
        assert_eq!(args.timeout, Duration::from_secs(1800));
        let cli = crate::cli::Cli::try_parse_from([
            "appenv",
            "backup",
            "now",
            "shop-prod",
            "--wait",
            "--timeout",
            "90s",
        ])
        .expect("parses");
        let crate::cli::Command::Backup(BackupCommand::Now(args)) = cli.command else {
            panic!("not backup now");
        };
        assert!(args.wait);
        assert_eq!(args.timeout, Duration::from_secs(90));
        let cli = crate::cli::Cli::try_parse_from(["appenv", "backup", "list", "shop-prod"])
            .expect("parses");
        assert!(matches!(
            cli.command,
            crate::cli::Command::Backup(BackupCommand::List(ListArgs { environment })) if environment == "shop-prod"
        ));
        for bad in [
            &["appenv", "backup", "now"][..],
            &["appenv", "backup", "now", "x", "--timeout", "soon"],
            &["appenv", "backup", "list"],
        ] {
            assert!(crate::cli::Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_request_is_the_time_in_utc_to_the_millisecond() {
        let at: Timestamp = "2026-12-02T10:00:00.123456789Z".parse().expect("time");
        assert_eq!(request_value(at), "2026-12-02T10:00:00.123Z");
        let whole: Timestamp = "2026-12-02T10:00:00Z".parse().expect("time");
        assert_eq!(request_value(whole), "2026-12-02T10:00:00.000Z");
    }

    #[test]
    fn an_environment_without_backups_or_with_an_invalid_spec_is_refused_by_name() {
        let model = backup_model(&environment(SHOP)).expect("has backups");
        assert_eq!(model.app, "shop");
        let none = SHOP.replace(
            "  backup: {destination: {s3: {bucket: shop-backups, prefix: prod, credentialsSecret: s3-creds}}}\n",
            "",
        );
        let message = backup_model(&environment(&none))
            .expect_err("no backup")
            .to_string();
        assert!(
            message.starts_with("shop-prod has no spec.backup: "),
            "{message}"
        );
        let invalid = SHOP.replace("bucket: shop-backups", "bucket: Shop_Backups");
        let message = backup_model(&environment(&invalid))
            .expect_err("invalid")
            .to_string();
        assert!(
            message.starts_with("shop-prod is not a valid AppEnvironment")
                && message.contains("spec.backup.destination.s3.bucket"),
            "{message}"
        );
    }

    #[test]
    fn the_wait_ends_when_the_status_records_the_requested_job() {
        let (request, job) = ("2026-12-02T10:00:00.123Z", "shop-backup-r0123456789");
        let waiting = |status| match progress(&with_status(status), request, job) {
            Progress::Waiting(line) => line,
            other => panic!("not waiting: {other:?}"),
        };
        assert_eq!(
            waiting(json!({})),
            "requested: waiting for the operator to start Job shop-backup-r0123456789"
        );
        assert_eq!(
            waiting(
                json!({"backup": {"running": run("shop-backup-s202612020300", "scheduled", None)}})
            ),
            "waiting: Job shop-backup-s202612020300 (scheduled) is running; this backup starts after it"
        );
        // An older backup's outcome is not this one's.
        assert!(
            waiting(json!({"backup": {"lastSuccess": run("shop-backup-rffff", "manual", None)}}))
                .starts_with("requested: ")
        );
        assert_eq!(
            waiting(
                json!({"backup": {"lastRequest": request, "running": run(job, "manual", None),
                                      "lastSuccess": run("shop-backup-rffff", "manual", None)}})
            ),
            "running: Job shop-backup-r0123456789"
        );
        let done = progress(
            &with_status(
                json!({"backup": {"lastRequest": request, "lastSuccess": run(job, "manual", None)}}),
            ),
            request,
            job,
        );
        assert!(
            matches!(&done, Progress::Completed(r) if r.job == job && r.reason == "manual"),
            "{done:?}"
        );
        // Recognised by its Job even when a later request is being handled already.
        let later = progress(
            &with_status(json!({"backup": {"lastRequest": "2026-12-02T11:00:00.000Z",
                                           "running": run("shop-backup-rlater", "manual", None),
                                           "lastFailure": run(job, "manual", Some("pg_dump: no\n"))}})),
            request,
            job,
        );
        assert!(
            matches!(&later, Progress::Failed(r) if r.message.as_deref() == Some("pg_dump: no\n")),
            "{later:?}"
        );
    }

    #[test]
    fn a_spec_the_operator_refuses_or_a_removed_backup_stops_the_wait() {
        let (request, job) = ("2026-12-02T10:00:00.123Z", "shop-backup-r0123456789");
        let refused = with_status(json!({"observedGeneration": 1, "conditions": [{
            "type": "Valid", "status": "False", "reason": "Invalid",
            "message": "spec.namespace.copy[0]: not allowed", "lastTransitionTime": "2026-12-02T10:00:00Z"}]}));
        assert_eq!(
            progress(&refused, request, job),
            Progress::Stuck(
                "the operator refuses the spec: spec.namespace.copy[0]: not allowed".into()
            )
        );
        let mut older = refused.clone();
        older.metadata.generation = Some(2);
        assert!(matches!(
            progress(&older, request, job),
            Progress::Waiting(_)
        ));
        let mut replaced = with_status(json!({}));
        replaced.metadata.annotations = Some(
            [(
                REQUEST_ANNOTATION.to_owned(),
                "2026-12-02T10:05:00.000Z".to_owned(),
            )]
            .into(),
        );
        assert_eq!(
            progress(&replaced, request, job),
            Progress::Stuck(
                "a later request (2026-12-02T10:05:00.000Z) replaced it before it started".into()
            )
        );
        replaced.metadata.annotations =
            Some([(REQUEST_ANNOTATION.to_owned(), request.to_owned())].into());
        assert!(matches!(
            progress(&replaced, request, job),
            Progress::Waiting(_)
        ));
        let mut removed = with_status(json!({}));
        removed.spec.backup = None;
        assert!(matches!(
            progress(&removed, request, job),
            Progress::Stuck(_)
        ));
    }

    fn manifest(id: &str, started: &str, reason: appenv_backup::Reason, bytes: u64) -> Manifest {
        Manifest {
            format: Manifest::FORMAT,
            id: id.into(),
            environment: "shop-prod".into(),
            engine: appenv_backup::Engine::Sqlite,
            reason,
            started: started.into(),
            finished: started.into(),
            duration_seconds: 0.5,
            size_bytes: bytes,
            files: Vec::new(),
            tool: "SQLite 3.50.2".into(),
        }
    }

    #[test]
    fn the_table_has_id_time_reason_and_size() {
        let table = table(&[
            manifest(
                "20261202-041500-123",
                "2026-12-02T04:15:00.123456Z",
                appenv_backup::Reason::Scheduled,
                3 * 1024 * 1024,
            ),
            manifest(
                "20261202-050000-000",
                "2026-12-02T05:00:00Z",
                appenv_backup::Reason::BeforeMigration,
                512 * 1024,
            ),
        ]);
        assert_eq!(
            table,
            "ID                   TIME (UTC)          REASON            SIZE\n\
             20261202-041500-123  2026-12-02 04:15:00 scheduled         3.0 MiB\n\
             20261202-050000-000  2026-12-02 05:00:00 before-migration  0.5 MiB\n"
        );
    }

    #[test]
    fn a_volume_report_says_what_the_status_knows_and_where_to_look() {
        let status: BackupStatus = serde_json::from_value(json!({
            "lastSuccess": run("shop-backup-s202612020300", "scheduled", None),
            "lastFailure": {"job": "shop-backup-rabc", "reason": "manual",
                            "startedAt": "2026-12-02T11:00:00Z", "finishedAt": "2026-12-02T11:00:09Z",
                            "message": "disk full\n"},
        }))
        .expect("status");
        assert_eq!(
            volume_report("shop-prod", "shop-prod", "shop-backups", Some(&status)),
            "the backups of shop-prod are on the volume shop-backups in namespace shop-prod, which only its backup Jobs mount\n\
             last success: Job shop-backup-s202612020300 (scheduled), 2026-12-02 10:00:03 UTC\n\
             last failure: Job shop-backup-rabc (manual), 2026-12-02 11:00:09 UTC: disk full\n\
             a backup Job's log names the backup it took and those it deleted: kubectl -n shop-prod logs job/shop-backup-rabc\n"
        );
        assert!(
            volume_report("shop-prod", "shop-prod", "shop-backups", None)
                .ends_with("which only its backup Jobs mount\nno backup has run yet\n")
        );
    }
}
