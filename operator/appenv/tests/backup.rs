//! Backups orchestrated by the controller, on the real control plane with the simulated kubelet:
//! the Jobs run backup, migration, rollout in that order; a failed backup blocks the migration
//! and the old version keeps serving; a DuckDB backup starts only once no web Pod exists and web
//! comes back after it (no overlap, even with a slow Pod termination); a missing credentials
//! Secret is named and the running environment is untouched. What the agent does inside the
//! Jobs (the copies themselves, on real servers) is tested in `backup_agent.rs`.

mod common;

use appenv_api::AppEnvironment;
use appenv_localcluster::kubelet::{FAIL_ANNOTATION, TERMINATE_AFTER_ANNOTATION};
use appenv_localcluster::snapshots::{SNAPSHOT_CLASS, VolumeSnapshot};
use common::{TEST_LABEL, ready};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const REQUEST_ANNOTATION: &str = "appenv.dev/backup-requested";
const CREDENTIALS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

fn settings() -> appenv_core::settings::Settings {
    appenv_core::settings::Settings {
        agent_image: "registry.example/appenv:test".to_owned(),
        ..appenv_core::settings::Settings::default()
    }
}

fn s3_backup() -> Value {
    json!({"destination": {"s3": {
        "bucket": "shop-backups",
        "endpoint": "http://s3.example.invalid:9000",
        "credentialsSecret": "s3",
    }}})
}

/// A PostgreSQL environment with migrations and backups (before migrations by default).
fn postgres_env(name: &str, test: &str, image: &str, backup: Value) -> Value {
    json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: test}},
        "spec": {
            "app": "shop",
            "image": image,
            "web": {"replicas": 1},
            "database": {"postgres": {}},
            "migrations": {"command": ["flask", "db", "upgrade"]},
            "backup": backup,
        },
    })
}

async fn apply(client: &Client, env: &Value) {
    common::apply(client, env).await;
}

/// Ask for a backup now, as `appenv backup now` does (the request annotation).
async fn request_backup(client: &Client, name: &str, at: &str) {
    env_api(client)
        .await
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REQUEST_ANNOTATION: at}}})),
        )
        .await
        .expect("request a backup");
}

async fn env_api(client: &Client) -> Api<AppEnvironment> {
    Api::all(client.clone())
}

/// Wait until `matches` holds for the environment.
async fn wait_env(
    client: &Client,
    name: &str,
    what: &str,
    matches: impl Fn(&AppEnvironment) -> bool + Send + 'static,
) -> AppEnvironment {
    common::wait_for(
        &env_api(client).await,
        name,
        LIMIT,
        what,
        move |e: Option<&AppEnvironment>| e.is_some_and(&matches),
    )
    .await
    .expect("environment")
}

fn condition<'a>(env: &'a AppEnvironment, type_: &str) -> (&'a str, &'a str, &'a str) {
    env.condition(type_).map_or(("", "", ""), |c| {
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    })
}

fn at_image(image: &'static str) -> impl Fn(&AppEnvironment) -> bool + Send + 'static {
    move |e: &AppEnvironment| {
        ready(Some(e)) && e.status.as_ref().and_then(|s| s.image.as_deref()) == Some(image)
    }
}

fn web_image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].image.clone())
        .unwrap_or_default()
}

/// What happened in a namespace, in the order the watches saw it: `job+ NAME` (created),
/// `job= NAME` (completed), `job! NAME` (failed), `web IMAGE` (the web Deployment's image).
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<String>>>);

impl Timeline {
    fn push(&self, entry: String) {
        let mut log = self.0.lock().expect("lock");
        if !log.contains(&entry) {
            log.push(entry);
        }
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }

    fn position(&self, entry: &str) -> usize {
        let log = self.entries();
        log.iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("{entry:?} not in {log:?}"))
    }

    /// Record the namespace's Jobs and the web Deployment's image until dropped (aborted).
    fn record(client: &Client, ns: &str, web: &str) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let timeline = Self::default();
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        let log = timeline.clone();
        let job_task = tokio::spawn(async move {
            let mut events = watcher::watcher(jobs, watcher::Config::default()).boxed();
            while let Some(Ok(event)) = events.next().await {
                let (watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event else {
                    continue;
                };
                let name = job.name_any();
                log.push(format!("job+ {name}"));
                let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
                for c in conditions.iter().filter(|c| c.status == "True") {
                    match c.type_.as_str() {
                        "Complete" => log.push(format!("job= {name}")),
                        "Failed" => log.push(format!("job! {name}")),
                        _ => {}
                    }
                }
            }
        });
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={web}"));
        let log = timeline.clone();
        let web_task = tokio::spawn(async move {
            let mut events = watcher::watcher(deployments, config).boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(d) | watcher::Event::InitApply(d) = event {
                    log.push(format!("web {}", web_image(&d)));
                }
            }
        });
        (timeline, vec![job_task, web_task])
    }
}

fn jobs_named<'a>(log: &'a [String], infix: &str) -> Vec<&'a str> {
    log.iter()
        .filter_map(|e| e.strip_prefix("job+ "))
        .filter(|n| n.contains(infix))
        .collect()
}

#[tokio::test]
async fn a_new_image_is_backed_up_then_migrated_then_rolled_out() {
    let client = common::client().await;
    let _operator = common::operator(&client, "backup-order", settings()).await;
    let name = "backup-order";
    let mut env = postgres_env(name, "backup-order", "example.invalid/shop:1", s3_backup());
    apply(&client, &env).await;
    common::provide_secret(&client, name, "s3", &CREDENTIALS).await;
    let first = wait_env(
        &client,
        name,
        "Ready at v1",
        at_image("example.invalid/shop:1"),
    )
    .await;
    // A first rollout has no data to keep: no backup.
    assert!(
        first
            .status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .is_none_or(|b| b.last_success.is_none() && b.running.is_none()),
        "{:?}",
        first.status
    );
    assert_eq!(
        condition(&first, "BackupsHealthy").1,
        "NoBackupYet",
        "{:?}",
        first.status
    );

    let (timeline, tasks) = Timeline::record(&client, name, "shop");
    env["spec"]["image"] = json!("example.invalid/shop:2");
    apply(&client, &env).await;
    let done = wait_env(
        &client,
        name,
        "Ready at v2",
        at_image("example.invalid/shop:2"),
    )
    .await;
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    let log = timeline.entries();
    let backups = jobs_named(&log, "-backup-");
    let migrations: Vec<&str> = jobs_named(&log, "-migrate-");
    assert_eq!(backups.len(), 1, "{log:?}");
    let (backup, migration) = (backups[0], migrations.last().expect("a migration"));
    // backup -> migration -> rollout, each after the one before completed.
    let order = [
        format!("job+ {backup}"),
        format!("job= {backup}"),
        format!("job+ {migration}"),
        format!("job= {migration}"),
        "web example.invalid/shop:2".to_owned(),
    ];
    let positions: Vec<usize> = order.iter().map(|e| timeline.position(e)).collect();
    assert!(
        positions.is_sorted(),
        "{order:?} at {positions:?} in {log:?}"
    );
    assert_eq!(
        migration.replace("-migrate-", "-backup-"),
        backup,
        "the backup is named after the migration it protects"
    );
    let status = done.status.clone().expect("status");
    let last = status
        .backup
        .and_then(|b| b.last_success)
        .expect("a last success");
    assert_eq!(
        (last.job.as_str(), last.reason.as_str()),
        (backup, "before-migration")
    );
    let (ok, reason, message) = condition(&done, "BackupsHealthy");
    assert_eq!((ok, reason), ("True", "BackupSucceeded"), "{message}");
    // The PostgreSQL Job runs the agent copied into the database's image.
    let job = Api::<Job>::namespaced(client.clone(), name)
        .get(backup)
        .await
        .expect("backup Job");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let init = pod.init_containers.expect("init container");
    assert_eq!(
        init[0].image.as_deref(),
        Some("registry.example/appenv:test")
    );
    assert_eq!(
        pod.containers[0].command.as_deref(),
        Some(&["/agent/appenv".to_owned()][..])
    );
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_failed_backup_blocks_the_migration_and_the_old_version_keeps_serving() {
    let client = common::client().await;
    let _operator = common::operator(&client, "backup-fails", settings()).await;
    let name = "backup-fails";
    let mut backup = s3_backup();
    backup["podAnnotations"] = json!({ FAIL_ANNOTATION: "true" });
    let mut env = postgres_env(name, "backup-fails", "example.invalid/shop:1", backup);
    apply(&client, &env).await;
    common::provide_secret(&client, name, "s3", &CREDENTIALS).await;
    wait_env(
        &client,
        name,
        "Ready at v1",
        at_image("example.invalid/shop:1"),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), name);

    env["spec"]["image"] = json!("example.invalid/shop:2");
    apply(&client, &env).await;
    let failed = wait_env(
        &client,
        name,
        "MigrationsSucceeded=False BackupFailed",
        // The Pod's reason follows the Job's failure (another watch).
        |e| {
            let (_, reason, message) = condition(e, "MigrationsSucceeded");
            reason == "BackupFailed" && message.contains("exit code")
        },
    )
    .await;
    let (_, _, message) = condition(&failed, "MigrationsSucceeded");
    assert!(
        message.contains("the backup before migrating to example.invalid/shop:2 failed")
            && message.contains("shop-backup-")
            && message.contains("container backup: Error (exit code 1)")
            && message.contains("previous version keeps serving"),
        "{message}"
    );
    let (ok, reason, health) = condition(&failed, "BackupsHealthy");
    assert_eq!((ok, reason), ("False", "BackupFailed"), "{health}");
    assert_eq!(condition(&failed, "Degraded").0, "True");
    // No migration for v2 ran; web still runs v1 on its old ReplicaSet, all replicas available.
    let all = jobs.list(&ListParams::default()).await.expect("jobs").items;
    let names: BTreeSet<String> = all.iter().map(|j| j.name_any()).collect();
    let backup = names
        .iter()
        .find(|n| n.contains("-backup-"))
        .unwrap_or_else(|| panic!("no backup Job: {names:?}"));
    assert!(
        !names.contains(&backup.replace("-backup-", "-migrate-")),
        "v2's migration ran: {names:?}"
    );
    let web = Api::<Deployment>::namespaced(client.clone(), name)
        .get("shop")
        .await
        .expect("web");
    assert_eq!(web_image(&web), "example.invalid/shop:1");
    assert_eq!(web.status.and_then(|s| s.available_replicas), Some(1));
    assert_eq!(
        failed.status.as_ref().and_then(|s| s.image.as_deref()),
        Some("example.invalid/shop:1")
    );
    // An Event says so.
    let events: Api<Event> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .expect("events");
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("BackupFailed") && e.type_.as_deref() == Some("Warning")
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no BackupFailed Event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
}

/// Pods of the namespace by component, live from creation until gone or finished: the most
/// components `web` and `backup` live at once, and the order of their starts and ends.
#[derive(Clone, Default)]
struct Pods {
    overlap: Arc<Mutex<bool>>,
    log: Timeline,
}

impl Pods {
    fn record(client: &Client, ns: &str) -> (Self, tokio::task::JoinHandle<()>) {
        let pods = Self::default();
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let me = pods.clone();
        let task = tokio::spawn(async move {
            let mut live: std::collections::BTreeMap<String, String> = Default::default();
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(Ok(event)) = events.next().await {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        let component = pod
                            .labels()
                            .get("app.kubernetes.io/component")
                            .cloned()
                            .unwrap_or_default();
                        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                        let name = pod.name_any();
                        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                            if live.remove(&name).is_some() {
                                me.log.push(format!("{component}- {name}"));
                            }
                        } else if live.insert(name.clone(), component.clone()).is_none() {
                            me.log.push(format!("{component}+ {name}"));
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(component) = live.remove(&pod.name_any()) {
                            me.log.push(format!("{component}- {}", pod.name_any()));
                        }
                    }
                    _ => {}
                }
                let components: BTreeSet<&String> = live.values().collect();
                if components.iter().any(|c| *c == "web")
                    && components.iter().any(|c| *c == "backup")
                {
                    *me.overlap.lock().expect("lock") = true;
                }
            }
        });
        (pods, task)
    }
}

#[tokio::test]
async fn a_duckdb_backup_runs_only_once_the_web_pod_is_gone_and_web_comes_back_after_it() {
    let client = common::client().await;
    let _operator = common::operator(&client, "backup-duckdb", settings()).await;
    let name = "backup-duckdb";
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: "backup-duckdb"}},
        "spec": {
            "app": "dojo",
            "image": "example.invalid/dojo:1",
            // A web Pod takes 1.5 s to terminate: the copy must wait for it, not for replicas 0.
            "web": {"podAnnotations": {TERMINATE_AFTER_ANNOTATION: "1500"}},
            "database": {"embedded": {"engine": "DuckDB", "path": "/data/ledger.duckdb"}},
            "backup": {"destination": {"volume": {"size": "1Gi"}}},
        },
    });
    apply(&client, &env).await;
    wait_env(&client, name, "Ready", |e| ready(Some(e))).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), name);
    let data_uid = claims.get("dojo-data").await.expect("data volume").uid();

    let (pods, task) = Pods::record(&client, name);
    // The watch lists what exists first: the running web Pod.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !pods.log.entries().iter().any(|e| e.starts_with("web+ ")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the web Pod was never seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request = "2026-12-02T10:00:00.000Z";
    request_backup(&client, name, request).await;
    let done = wait_env(&client, name, "backed up and Ready again", move |e| {
        let backup = e.status.as_ref().and_then(|s| s.backup.as_ref());
        ready(Some(e))
            && backup.is_some_and(|b| {
                b.running.is_none()
                    && b.last_request.as_deref() == Some(request)
                    && b.last_success.is_some()
            })
    })
    .await;
    task.abort();
    let log = pods.log.entries();
    assert!(
        !*pods.overlap.lock().expect("lock"),
        "web and backup Pods overlapped: {log:?}"
    );
    let start = |prefix: &str| log.iter().position(|e| e.starts_with(prefix));
    let backup_started = start("backup+ ").unwrap_or_else(|| panic!("no backup Pod: {log:?}"));
    let backup_ended = start("backup- ").unwrap_or_else(|| panic!("backup never ended: {log:?}"));
    let web_gone = start("web- ").unwrap_or_else(|| panic!("web never stopped: {log:?}"));
    let web_back = log
        .iter()
        .enumerate()
        .filter(|(_, e)| e.starts_with("web+ "))
        .map(|(i, _)| i)
        .next_back()
        .unwrap_or_else(|| panic!("web never came back: {log:?}"));
    assert!(
        web_gone < backup_started && backup_ended < web_back,
        "order: {log:?}"
    );
    let last = done
        .status
        .and_then(|s| s.backup)
        .and_then(|b| b.last_success)
        .expect("last success");
    assert_eq!(last.reason, "manual");
    assert!(
        !last.web_stopped,
        "the record of a finished backup holds no stop"
    );
    // The data volume is the same one; the backup volume exists beside it.
    assert_eq!(claims.get("dojo-data").await.expect("data").uid(), data_uid);
    claims.get("dojo-backups").await.expect("backup volume");
    // The DuckDB Job mounts the data volume and runs the agent image itself.
    let job = Api::<Job>::namespaced(client.clone(), name)
        .get(&last.job)
        .await
        .expect("job");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example/appenv:test")
    );
    let args = pod.containers[0].args.clone().unwrap_or_default().join(" ");
    assert!(
        args.contains("--engine duckdb") && args.contains("--file /data/ledger.duckdb"),
        "{args}"
    );
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_duckdb_backup_as_a_volume_snapshot_is_taken_once_web_is_gone_and_a_failure_is_named() {
    let client = common::client().await;
    let test = "backup-snapshot";
    let _operator = common::operator(&client, test, settings()).await;
    let name = "backup-snapshot";
    let mut env = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: test}},
        "spec": {
            "app": "dojo",
            "image": "example.invalid/dojo:1",
            "web": {"podAnnotations": {TERMINATE_AFTER_ANNOTATION: "1500"}},
            "database": {"embedded": {"engine": "DuckDB", "path": "/data/ledger.duckdb"}},
            "backup": {"destination": {"volumeSnapshot": {"className": SNAPSHOT_CLASS}}},
        },
    });
    apply(&client, &env).await;
    wait_env(&client, name, "Ready", |e| ready(Some(e))).await;
    // When a snapshot first shows, how many web Pods the API server lists.
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
    let seen = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let recorder = {
        let (snapshots, seen) = (snapshots.clone(), seen.clone());
        tokio::spawn(async move {
            let mut events = watcher::watcher(snapshots, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event else {
                    continue;
                };
                let name = s.name_any();
                if seen.lock().expect("lock").iter().any(|(n, _)| *n == name) {
                    continue;
                }
                let web = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/component=web"))
                    .await
                    .map_or(usize::MAX, |l| l.items.len());
                seen.lock().expect("lock").push((name, web));
            }
        })
    };
    request_backup(&client, name, "2026-12-02T10:00:00.000Z").await;
    let done = wait_env(&client, name, "snapshot taken and Ready again", |e| {
        let backup = e.status.as_ref().and_then(|s| s.backup.as_ref());
        ready(Some(e)) && backup.is_some_and(|b| b.running.is_none() && b.last_success.is_some())
    })
    .await;
    let last = done
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_success.clone())
        .expect("last success");
    let snapshot = snapshots.get(&last.job).await.expect("the snapshot");
    assert_eq!(
        snapshot.spec.source.persistent_volume_claim_name.as_deref(),
        Some("dojo-data")
    );
    assert!(
        last.backup_id
            .as_deref()
            .is_some_and(appenv_core::validate::backup_ref),
        "{last:?}"
    );
    assert_eq!(condition(&done, "BackupsHealthy").0, "True");
    assert_eq!(
        seen.lock()
            .expect("lock")
            .first()
            .map(|(n, web)| (n.clone(), *web)),
        Some((last.job.clone(), 0)),
        "the snapshot was created only once no web Pod existed"
    );
    // No Job: a snapshot is the backup.
    let jobs = Api::<Job>::namespaced(client.clone(), name)
        .list(&ListParams::default())
        .await
        .expect("jobs");
    assert!(jobs.items.is_empty(), "{:?}", jobs.items.len());
    restore_in_place_from_a_snapshot(&client, name, &last.job).await;

    // A class that does not exist: the snapshot controller's error, named; web is back.
    env["spec"]["backup"]["destination"]["volumeSnapshot"]["className"] = json!("missing-class");
    apply(&client, &env).await;
    request_backup(&client, name, "2026-12-02T10:00:01.000Z").await;
    let failed = wait_env(
        &client,
        name,
        "BackupsHealthy=False BackupFailed, Ready",
        |e| condition(e, "BackupsHealthy").1 == "BackupFailed" && ready(Some(e)),
    )
    .await;
    let (_, _, message) = condition(&failed, "BackupsHealthy");
    assert!(
        message.contains("Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"missing-class\" not found"),
        "{message}"
    );
    recorder.abort();
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
}

/// Ask for an in-place restore, as `appenv restore` does (the request annotation).
async fn request_restore(client: &Client, name: &str, request: &str) {
    env_api(client)
        .await
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"appenv.dev/restore-requested": request}}}),
            ),
        )
        .await
        .expect("request a restore");
}

/// What [`record_restores`] saw: `(name, what)`.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Record, until aborted, the restore claims of a namespace with the snapshot each was made
/// from, and the restore Jobs with their arguments: `(name, what)`.
fn record_restores(client: &Client, ns: &str) -> (Seen, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = || watcher::Config::default().labels("app.kubernetes.io/component=restore");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let log = seen.clone();
    let claim_task = tokio::spawn(async move {
        let mut events = watcher::watcher(claims, config()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) = event {
                let source = c.spec.and_then(|s| s.data_source).map(|d| d.name);
                let entry = (
                    c.metadata.name.unwrap_or_default(),
                    format!("claim from {}", source.unwrap_or_default()),
                );
                log.lock().expect("lock").push(entry);
            }
        }
    });
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let log = seen.clone();
    let job_task = tokio::spawn(async move {
        let mut events = watcher::watcher(jobs, config()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) = event {
                let args = j
                    .spec
                    .and_then(|s| s.template.spec)
                    .and_then(|p| p.containers[0].args.clone());
                let entry = (
                    j.metadata.name.unwrap_or_default(),
                    args.unwrap_or_default().join(" "),
                );
                log.lock().expect("lock").push(entry);
            }
        }
    });
    (seen, vec![claim_task, job_task])
}

/// `appenv restore` of a VolumeSnapshot backup: a name that is none of the environment's
/// snapshots is refused with why; `latest` restores from a claim made from the newest one
/// (`snapshot`), read by the restore Job; both are deleted once it finished.
async fn restore_in_place_from_a_snapshot(client: &Client, name: &str, snapshot: &str) {
    let (seen, tasks) = record_restores(client, name);
    let refused = "2026-12-02T10:00:00.500Z not-a-backup into-non-empty";
    request_restore(client, name, refused).await;
    let done = wait_env(client, name, "the request refused", move |e| {
        let restore = e.status.as_ref().and_then(|s| s.restore.as_ref());
        restore.is_some_and(|r| {
            r.last_request.as_deref() == Some(refused)
                && r.last.as_ref().is_some_and(|l| l.message.is_some())
        })
    })
    .await;
    let message = done
        .status
        .and_then(|s| s.restore)
        .and_then(|r| r.last)
        .and_then(|l| l.message)
        .unwrap_or_default();
    assert!(
        message.contains("VolumeSnapshot not-a-backup is not one of the environment's backups"),
        "{message}"
    );
    let request = "2026-12-02T10:00:00.600Z latest into-non-empty";
    request_restore(client, name, request).await;
    let done = wait_env(
        client,
        name,
        "restored from the snapshot, Ready",
        move |e| {
            let restore = e.status.as_ref().and_then(|s| s.restore.as_ref());
            ready(Some(e))
                && restore.is_some_and(|r| {
                    r.running.is_none()
                        && r.last_request.as_deref() == Some(request)
                        && r.last.as_ref().is_some_and(|l| l.reason == "in-place")
                })
        },
    )
    .await;
    let last = done
        .status
        .and_then(|s| s.restore)
        .and_then(|r| r.last)
        .expect("last restore");
    assert!(last.message.is_none(), "{:?}", last.message);
    let log = seen.lock().expect("lock").clone();
    assert!(
        log.contains(&(last.job.clone(), format!("claim from {snapshot}"))),
        "the Job's claim is made from {snapshot}: {log:?}"
    );
    assert!(
        log.iter().any(|(job, args)| *job == last.job
            && args.starts_with("agent restore --url file:///snapshot/ledger.duckdb --into-non-empty --engine duckdb")),
        "{log:?}"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), name);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while claims.get_opt(&last.job).await.expect("claims").is_some()
        || jobs.get_opt(&last.job).await.expect("jobs").is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restore's claim and Job were not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
async fn a_missing_credentials_secret_is_named_and_the_environment_keeps_running() {
    let client = common::client().await;
    let _operator = common::operator(&client, "backup-creds", settings()).await;
    let name = "backup-creds";
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: "backup-creds"}},
        "spec": {
            "app": "notes",
            "image": "example.invalid/notes:1",
            "database": {"embedded": {"engine": "SQLite", "path": "/data/notes.db"}},
            "backup": s3_backup(),
        },
    });
    apply(&client, &env).await;
    wait_env(&client, name, "Ready", |e| ready(Some(e))).await;
    request_backup(&client, name, "one").await;
    let stuck = wait_env(
        &client,
        name,
        "BackupsHealthy=False naming the Secret",
        |e| {
            let (ok, _, message) = condition(e, "BackupsHealthy");
            ok == "False" && message.contains("secret \"s3\" not found")
        },
    )
    .await;
    let (_, reason, message) = condition(&stuck, "BackupsHealthy");
    assert_eq!(reason, "BackupFailed", "{message}");
    assert!(message.contains("cannot start"), "{message}");
    // SQLite copies beside the running app: web was never stopped.
    let web = Api::<Deployment>::namespaced(client.clone(), name)
        .get("notes")
        .await
        .expect("web");
    assert_eq!(web.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(condition(&stuck, "Ready").0, "True");
    // The Secret appears: the same Job starts and completes.
    common::provide_secret(&client, name, "s3", &CREDENTIALS).await;
    let done = wait_env(&client, name, "backed up", |e| {
        e.status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .is_some_and(|b| b.last_success.is_some())
    })
    .await;
    assert_eq!(condition(&done, "BackupsHealthy").0, "True");
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
}

/// A production environment whose backups previews named `<prefix>-pr-*` may start from.
fn production(name: &str, test: &str) -> Value {
    let mut backup = s3_backup();
    backup["restoreTo"] = json!([format!("{name}-pr-*")]);
    postgres_env(name, test, "example.invalid/shop:1", backup)
}

/// A preview restored from `from`, seeded, migrated.
fn preview(name: &str, test: &str, from: &str) -> Value {
    json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: test}},
        "spec": {
            "app": "shop",
            "image": "example.invalid/shop:1",
            "profile": "Preview",
            "database": {"postgres": {}, "restore": {
                "fromEnvironment": from,
                "credentialsSecret": "s3-read",
                "seed": {"command": ["flask", "blank-personal-data"]},
            }},
            "migrations": {"command": ["flask", "db", "upgrade"]},
        },
    })
}

#[tokio::test]
async fn a_preview_starts_from_productions_backup_then_its_seed_then_its_migration() {
    let client = common::client().await;
    let test = "restore-preview";
    let _operator = common::operator(&client, test, settings()).await;
    let prod = "rp-prod";
    apply(&client, &production(prod, test)).await;
    common::provide_secret(&client, prod, "s3", &CREDENTIALS).await;
    wait_env(&client, prod, "production Ready", |e| ready(Some(e))).await;

    let name = "rp-prod-pr-7";
    // The watches start before the preview exists (a namespace's watch may start before it).
    let (timeline, tasks) = Timeline::record(&client, name, "shop");
    apply(&client, &preview(name, test, prod)).await;
    let env = wait_env(&client, name, "DatabaseReady=False Restoring", |e| {
        condition(e, "DatabaseReady").1 == "Restoring"
    })
    .await;
    let (_, _, message) = condition(&env, "DatabaseReady");
    // Its Job cannot start before the preview's own read-only credentials exist: it says so.
    assert!(
        message.contains("restoring from rp-prod (backup latest)"),
        "{message}"
    );
    common::provide_secret(&client, name, "s3-read", &CREDENTIALS).await;
    let done = wait_env(&client, name, "Ready", |e| ready(Some(e))).await;
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    let log = timeline.entries();
    let restore = jobs_named(&log, "-restore-");
    let seed = jobs_named(&log, "-seed-");
    let migration = jobs_named(&log, "-migrate-");
    assert_eq!(
        (restore.len(), seed.len(), migration.len()),
        (1, 1, 1),
        "{log:?}"
    );
    let order = [
        format!("job+ {}", restore[0]),
        format!("job= {}", restore[0]),
        format!("job+ {}", seed[0]),
        format!("job= {}", seed[0]),
        format!("job+ {}", migration[0]),
        format!("job= {}", migration[0]),
        "web example.invalid/shop:1".to_owned(),
    ];
    let positions: Vec<usize> = order.iter().map(|e| timeline.position(e)).collect();
    assert!(
        positions.is_sorted(),
        "{order:?} at {positions:?} in {log:?}"
    );
    assert!(
        done.status
            .as_ref()
            .and_then(|s| s.restore.as_ref())
            .is_some_and(|r| r.initialized),
        "{:?}",
        done.status
    );
    // The restore reads production's bucket with the preview's own Secret, as production's
    // backups are named (its environment), in the database's image.
    let job = Api::<Job>::namespaced(client.clone(), name)
        .get(restore[0])
        .await
        .expect("restore Job");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert!(
        args.starts_with("agent restore --backup latest --engine postgres --environment rp-prod --destination s3://shop-backups"),
        "{args}"
    );
    let secrets: BTreeSet<String> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some(e.value_from.as_ref()?.secret_key_ref.as_ref()?.name.clone()))
        .collect();
    assert_eq!(
        secrets,
        BTreeSet::from(["s3-read".to_owned(), "shop-postgres-credentials".to_owned()]),
        "only the preview's own Secrets"
    );
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
    let _ = env_api(&client)
        .await
        .delete(prod, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_preview_starts_from_a_dump_whose_url_a_secret_holds() {
    let client = common::client().await;
    let test = "restore-dump";
    let _operator = common::operator(&client, test, settings()).await;
    let name = "rd-pr-3";
    let sha = "ab".repeat(32);
    let mut env = preview(name, test, "unused");
    env["spec"]["database"]["restore"] = json!({
        "fromUrl": {"urlSecret": "dump-url", "sha256": sha},
        "seed": {"command": ["flask", "blank-personal-data"]},
    });
    apply(&client, &env).await;
    // Its Job cannot start before the Secret with the URL exists: the condition says so, and
    // names the dump by its Secret, not by a URL.
    let waiting = wait_env(
        &client,
        name,
        "Restoring, the Job waiting for its Secret",
        |e| {
            let (_, reason, message) = condition(e, "DatabaseReady");
            reason == "Restoring" && message.contains("it cannot start")
        },
    )
    .await;
    let (_, _, message) = condition(&waiting, "DatabaseReady");
    assert!(
        message
            .contains("restoring from the dump at the URL of Secret dump-url: Job shop-restore-")
            && message.contains("dump-url"),
        "{message}"
    );
    common::provide_secret(&client, name, "dump-url", &["url"]).await;
    let done = wait_env(&client, name, "Ready", |e| ready(Some(e))).await;
    assert!(
        done.status
            .as_ref()
            .and_then(|s| s.restore.as_ref())
            .is_some_and(|r| r.initialized),
        "{:?}",
        done.status
    );
    let jobs = Api::<Job>::namespaced(client.clone(), name)
        .list(&ListParams::default())
        .await
        .expect("jobs");
    let restore = jobs
        .items
        .iter()
        .find(|j| j.name_any().starts_with("shop-restore-"))
        .expect("the restore Job");
    let pod = restore
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert_eq!(
        args,
        format!("agent restore --sha256 {sha} --engine postgres")
    );
    let url = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "APPENV_RESTORE_URL")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .expect("the URL from the Secret");
    assert_eq!((url.name.as_str(), url.key.as_str()), ("dump-url", "url"));
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_preview_may_not_start_from_an_environment_that_does_not_allow_it() {
    let client = common::client().await;
    let test = "restore-refused";
    let _operator = common::operator(&client, test, settings()).await;
    let prod = "rr-prod";
    // Production allows previews of another name only.
    apply(&client, &production(prod, test)).await;
    common::provide_secret(&client, prod, "s3", &CREDENTIALS).await;
    wait_env(&client, prod, "production Ready", |e| ready(Some(e))).await;
    let name = "rr-attacker";
    apply(&client, &preview(name, test, prod)).await;
    common::provide_secret(&client, name, "s3-read", &CREDENTIALS).await;
    let refused = wait_env(&client, name, "DatabaseReady=False RestoreFailed", |e| {
        condition(e, "DatabaseReady").1 == "RestoreFailed"
    })
    .await;
    let (_, _, message) = condition(&refused, "DatabaseReady");
    assert!(
        message.contains(
            "cannot restore from rr-prod (backup latest): rr-prod's spec.backup.restoreTo does not name rr-attacker"
        ),
        "{message}"
    );
    assert_eq!(condition(&refused, "Degraded").0, "True");
    // Nothing ran: no restore, seed or migration Job, no web Deployment.
    let jobs = Api::<Job>::namespaced(client.clone(), name)
        .list(&ListParams::default())
        .await
        .expect("jobs");
    assert!(
        jobs.items.is_empty(),
        "{:?}",
        jobs.items.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );
    let web = Api::<Deployment>::namespaced(client.clone(), name)
        .get_opt("shop")
        .await
        .expect("read");
    assert!(web.is_none(), "nothing of the app starts");
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
    let _ = env_api(&client)
        .await
        .delete(prod, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn an_in_place_restore_stops_web_and_workers_first_and_starts_them_after() {
    let client = common::client().await;
    let test = "restore-in-place";
    let _operator = common::operator(&client, test, settings()).await;
    let name = "restore-in-place";
    let mut env = postgres_env(name, test, "example.invalid/shop:1", s3_backup());
    env["spec"]["web"]["podAnnotations"] = json!({ TERMINATE_AFTER_ANNOTATION: "1000" });
    env["spec"]["workers"] = json!([{"name": "rq", "replicas": 2}]);
    apply(&client, &env).await;
    common::provide_secret(&client, name, "s3", &CREDENTIALS).await;
    wait_env(&client, name, "Ready", |e| ready(Some(e))).await;
    let (pods, task) = Pods::record(&client, name);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while pods
        .log
        .entries()
        .iter()
        .filter(|e| e.starts_with("web+ ") || e.starts_with("worker+ "))
        .count()
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app's Pods were never seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request = "2026-12-02T11:00:00.000Z 20261202-030000-000 into-non-empty";
    env_api(&client)
        .await
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"appenv.dev/restore-requested": request}}}),
            ),
        )
        .await
        .expect("request a restore");
    let done = wait_env(&client, name, "restored and Ready again", move |e| {
        let restore = e.status.as_ref().and_then(|s| s.restore.as_ref());
        ready(Some(e))
            && restore.is_some_and(|r| {
                r.running.is_none()
                    && r.last_request.as_deref() == Some(request)
                    && r.last.is_some()
            })
    })
    .await;
    task.abort();
    let log = pods.log.entries();
    let restore_started = log
        .iter()
        .position(|e| e.starts_with("restore+ "))
        .unwrap_or_else(|| panic!("no restore Pod: {log:?}"));
    let restore_ended = log
        .iter()
        .position(|e| e.starts_with("restore- "))
        .unwrap_or_else(|| panic!("the restore never ended: {log:?}"));
    // Every web and worker Pod that existed before the restore was gone before it started, and
    // the app's Pods after it started only once it ended.
    let mut live = BTreeSet::new();
    for (i, entry) in log.iter().enumerate() {
        if let Some(pod) = entry
            .strip_prefix("web+ ")
            .or_else(|| entry.strip_prefix("worker+ "))
        {
            assert!(
                !(restore_started..restore_ended).contains(&i),
                "{pod} started during the restore: {log:?}"
            );
            live.insert(pod);
        }
        if let Some(pod) = entry
            .strip_prefix("web- ")
            .or_else(|| entry.strip_prefix("worker- "))
        {
            live.remove(pod);
        }
        if i == restore_started {
            assert!(
                live.is_empty(),
                "{live:?} alive when the restore started: {log:?}"
            );
        }
    }
    let last = done
        .status
        .and_then(|s| s.restore)
        .and_then(|r| r.last)
        .expect("last restore");
    assert_eq!(last.reason, "in-place");
    assert!(last.message.is_none(), "{:?}", last.message);
    let job = Api::<Job>::namespaced(client.clone(), name)
        .get(&last.job)
        .await
        .expect("restore Job");
    let args = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default().join(" "))
        .unwrap_or_default();
    assert!(
        args.starts_with("agent restore --backup 20261202-030000-000 --into-non-empty --engine postgres --environment restore-in-place"),
        "{args}"
    );
    let _ = env_api(&client)
        .await
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn the_preview_example_starts_from_the_t7e_examples_backup() {
    let client = common::client().await;
    let test = "restore-examples";
    let _operator = common::operator(&client, test, settings()).await;
    // The examples under their own names: the preview names its source, which names it.
    let (prod, preview) = ("t7e-prod", "t7e-pr-42");
    let mut source = common::example("t7e.yaml", prod, test);
    source["spec"]["image"] = json!("example.invalid/t7e:v1");
    let mut target = common::example("t7e-preview-from-prod.yaml", preview, test);
    target["spec"]["image"] = json!("example.invalid/t7e:pr-42");
    apply(&client, &source).await;
    common::provide_example_secrets(&client, "t7e.yaml", prod).await;
    wait_env(&client, prod, "production Ready", |e| ready(Some(e))).await;
    apply(&client, &target).await;
    common::provide_secret(&client, preview, "t7e-backups-read", &CREDENTIALS).await;
    let done = wait_env(&client, preview, "the preview Ready", |e| ready(Some(e))).await;
    let restore = done.status.and_then(|s| s.restore).expect("restore status");
    assert!(restore.initialized, "{restore:?}");
    let last = restore.last.expect("the last run");
    assert_eq!(last.reason, "seed", "the seed ran last: {last:?}");
    let _ = env_api(&client)
        .await
        .delete(preview, &DeleteParams::default())
        .await;
    let _ = env_api(&client)
        .await
        .delete(prod, &DeleteParams::default())
        .await;
}
