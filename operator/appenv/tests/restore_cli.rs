//! `appenv restore` and `appenv preview up --data-from`, run as the binary a user runs, against
//! a real API server (the CRD and the controller-manager, no appenv operator): without `--yes`
//! the restore changes nothing and says what would happen, counting the Pods of the live
//! Deployments of web and workers; with `--yes` it sets the request annotation to the time, the
//! backup and `into-non-empty`; an environment without `spec.backup` is refused by name;
//! `--wait` follows `status.restore` (written here as the controller would) to success and to
//! failure. `preview up --data-from` creates a preview whose `spec.database.restore` names the
//! source, and refuses a source that does not exist or does not list the preview, creating
//! nothing.

mod common;

use common::cli::Waiting;

use appenv_api::AppEnvironment;
use appenv_core::build::requested_restore_job_name;
use appenv_core::settings::Settings;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const REQUEST_ANNOTATION: &str = "appenv.dev/restore-requested";
const BACKUP_ID: &str = "20261201-030000-000";

/// `appenv ARGS` with the shared cluster's kubeconfig.
fn appenv(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_appenv"));
    command
        .args(args)
        .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig())
        .env_remove("GITHUB_OUTPUT");
    command
}

/// Run `appenv ARGS`; whether it succeeded, stdout and stderr.
fn run(args: &[&str]) -> (bool, String, String) {
    let output = tokio::task::block_in_place(|| appenv(args).output()).expect("run appenv");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `appenv ARGS` in the background.
fn in_background(args: &[&str]) -> Waiting {
    Waiting::start(appenv(args), LIMIT)
}

/// The CRD, a fresh namespace and an AppEnvironment named as it (which it adopts) with an
/// embedded SQLite database and `backup`, if any, as its spec.backup.
async fn environment(client: &Client, test: &str, backup: Option<Value>) -> String {
    appenv_controller::crd::install(client, "appenv-tests")
        .await
        .expect("CRD installs");
    let name = common::namespace(client, test).await;
    let mut spec = json!({
        "app": "shop",
        "image": "shop:1",
        "namespace": {"name": name},
        "workers": [{"name": "celery", "command": ["celery", "worker"], "replicas": 2}],
        "database": {"embedded": {"engine": "SQLite", "path": "/data/shop.sqlite", "storage": {"size": "1Gi"}}},
    });
    if let Some(backup) = backup {
        spec["backup"] = backup;
    }
    common::apply(
        client,
        &json!({
            "apiVersion": "appenv.dev/v1alpha1",
            "kind": "AppEnvironment",
            "metadata": {"name": name, "labels": {common::TEST_LABEL: test}},
            "spec": spec,
        }),
    )
    .await;
    name
}

async fn delete(client: &Client, name: &str) {
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    common::cleanup(client, name).await;
}

/// A Deployment of `component` with the labels appenv gives the environment's children; the
/// controller-manager makes its Pods.
async fn deployment(client: &Client, namespace: &str, component: &str, replicas: i32) {
    let labels = json!({
        "app.kubernetes.io/name": "shop",
        "app.kubernetes.io/instance": namespace,
        "app.kubernetes.io/component": component,
    });
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": format!("shop-{component}"), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
            },
        },
    }))
    .expect("a Deployment");
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");
    common::wait_for(
        &api,
        &format!("shop-{component}"),
        LIMIT,
        "with its replicas",
        move |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.replicas)
                .unwrap_or(0)
                == replicas
        },
    )
    .await;
}

/// The request annotation of the environment, if any.
async fn request_of(api: &Api<AppEnvironment>, name: &str) -> Option<String> {
    api.get(name)
        .await
        .expect("the environment")
        .annotations()
        .get(REQUEST_ANNOTATION)
        .cloned()
}

/// Wait until the request annotation is no longer `previous`; its new value and its Job.
async fn requested(
    api: &Api<AppEnvironment>,
    name: &str,
    previous: Option<String>,
) -> (String, String) {
    let env = common::wait_for(
        api,
        name,
        LIMIT,
        "requested",
        move |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.annotations().get(REQUEST_ANNOTATION).cloned()) != previous
        },
    )
    .await
    .expect("the environment");
    let request = env.annotations()[REQUEST_ANNOTATION].clone();
    let model = appenv_core::validate::validate(&env, &Settings::default()).expect("valid");
    let job = requested_restore_job_name(&model, &request);
    (request, job)
}

/// Write `status.restore` as the controller would.
async fn set_restore_status(api: &Api<AppEnvironment>, name: &str, restore: Value) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"restore": restore}})),
    )
    .await
    .expect("status written");
}

fn run_status(job: &str, finished: bool, message: Option<&str>) -> Value {
    let mut run = json!({"job": job, "reason": "in-place", "startedAt": "2026-12-02T10:00:00Z"});
    if finished {
        run["finishedAt"] = json!("2026-12-02T10:00:04Z");
    } else {
        run["webStopped"] = json!(true);
    }
    if let Some(message) = message {
        run["message"] = json!(message);
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_says_what_happens_without_yes_and_requests_it_with_yes() {
    let client = common::client().await;
    let backup = json!({"destination": {"volume": {"size": "2Gi"}}});
    let name = environment(&client, "restore-yes", Some(backup)).await;
    let api: Api<AppEnvironment> = Api::all(client.clone());
    // Web's Pod and the worker's two stop; Redis (another component) does not.
    deployment(&client, &name, "web", 1).await;
    deployment(&client, &name, "worker-celery", 2).await;
    deployment(&client, &name, "redis", 1).await;

    let (ok, stdout, stderr) = run(&["restore", &name, "--backup", BACKUP_ID]);
    assert!(!ok, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "web and workers of {name} stop (3 Pods), the database is replaced by backup \
             {BACKUP_ID}, then they start again; data written since that backup is lost. Run \
             again with --yes.\n"
        )
    );
    assert_eq!(request_of(&api, &name).await, None, "nothing was requested");

    let (ok, stdout, stderr) = run(&["restore", &name, "--backup", BACKUP_ID, "--yes"]);
    assert!(ok, "{stdout}{stderr}");
    let (request, job) = requested(&api, &name, None).await;
    let (at, rest) = request.split_once(' ').expect("time, then the backup");
    assert_eq!(rest, format!("{BACKUP_ID} into-non-empty"));
    let at: jiff::Timestamp = at.parse().expect("RFC 3339");
    assert!(
        jiff::Timestamp::now().duration_since(at).as_secs() < 60,
        "{request}"
    );
    assert_eq!(
        stdout,
        format!(
            "restore of {name} from backup {BACKUP_ID} requested (Job {job}): web and workers \
             stop (3 Pods) until it finished\n"
        )
    );
    let managers: Vec<String> = api
        .get(&name)
        .await
        .expect("the environment")
        .managed_fields()
        .iter()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "appenv-restore"),
        "{managers:?}"
    );

    // An id that is no backup id is refused before anything is asked.
    let (ok, _, stderr) = run(&["restore", &name, "--backup", "../etc", "--yes"]);
    assert!(
        !ok && stderr.contains("is not `latest`, a backup id") && stderr.contains("--backup"),
        "{stderr}"
    );
    assert_eq!(request_of(&api, &name).await, Some(request));
    delete(&client, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_an_environment_without_backups_naming_spec_backup() {
    let client = common::client().await;
    let name = environment(&client, "restore-none", None).await;
    for args in [
        &["restore", &name, "--backup", "latest"][..],
        &["restore", &name, "--backup", "latest", "--yes", "--wait"],
    ] {
        let (ok, stdout, stderr) = run(args);
        assert!(!ok, "{stdout}{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "error: {name} has no spec.backup: it has no backups to restore from (set spec.backup.destination"
            )),
            "{stderr}"
        );
    }
    let api: Api<AppEnvironment> = Api::all(client.clone());
    assert_eq!(request_of(&api, &name).await, None, "nothing was requested");
    let (ok, _, stderr) = run(&["restore", "no-such-environment-here", "--backup", "latest"]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: AppEnvironment no-such-environment-here does not exist (kubectl get appenvironments)\n"
    );
    delete(&client, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_wait_follows_the_status_to_success_and_to_failure() {
    let client = common::client().await;
    let backup = json!({"destination": {"volume": {"size": "2Gi"}}});
    let name = environment(&client, "restore-wait", Some(backup)).await;
    let api: Api<AppEnvironment> = Api::all(client.clone());

    // Success: held, running, recorded as the last restore without a message.
    let mut waiting = in_background(&[
        "restore",
        &name,
        "--backup",
        "latest",
        "--yes",
        "--wait",
        "--timeout",
        "60s",
    ]);
    let (request, job) = requested(&api, &name, None).await;
    assert!(request.ends_with(" latest into-non-empty"), "{request}");
    waiting.line_with("requested: waiting for the operator to take it");
    set_restore_status(&api, &name, json!({"holding": request})).await;
    let line = waiting.line_with("holding web and workers");
    assert!(
        line.ends_with(&format!(
            "] holding web and workers: Job {job} starts once none of their Pods exists"
        )),
        "{line}"
    );
    set_restore_status(
        &api,
        &name,
        json!({"lastRequest": request, "holding": null, "running": run_status(&job, false, None)}),
    )
    .await;
    let line = waiting.line_with("running: ");
    assert!(
        line.ends_with(&format!(
            "] running: Job {job} (web and workers are stopped)"
        )),
        "{line}"
    );
    set_restore_status(
        &api,
        &name,
        json!({"running": null, "last": run_status(&job, true, None)}),
    )
    .await;
    let (ok, stdout, stderr) = waiting.finish();
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "restore of {name} from the latest backup requested (Job {job}): web and workers \
             stop (0 Pods) until it finished\n\
             restore {job} completed at 2026-12-02 10:00:04 UTC: web and workers start again\n"
        )
    );

    // Failure: the agent's error, and exit 1.
    let waiting = in_background(&["restore", &name, "--backup", BACKUP_ID, "--yes", "--wait"]);
    let (request, job) = requested(&api, &name, Some(request)).await;
    set_restore_status(
        &api,
        &name,
        json!({"lastRequest": request,
               "last": run_status(&job, true, Some("backup 20261201-030000-000 of restore-wait not found\n"))}),
    )
    .await;
    let (ok, stdout, stderr) = waiting.finish();
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "error: restore {job} failed at 2026-12-02 10:00:04 UTC: backup 20261201-030000-000 of restore-wait not found"
        )),
        "{stderr}"
    );

    // Nobody handles the request: the timeout says what was seen last.
    let (ok, _, stderr) = run(&[
        "restore",
        &name,
        "--backup",
        "latest",
        "--yes",
        "--wait",
        "--timeout",
        "2s",
    ]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(
            "has not finished after 2s; last seen: requested: waiting for the operator to take it (Job"
        ),
        "{stderr}"
    );
    delete(&client, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_up_data_from_creates_a_preview_that_restores_from_the_source() {
    let client = common::client().await;
    // The source lists this process's previews of app `rcli`.
    let backup = json!({"destination": {"s3": {"bucket": "shop-backups", "credentialsSecret": "s3-creds"}},
                        "restoreTo": ["rcli-pr-*"]});
    let source = environment(&client, "restore-source", Some(backup)).await;
    let pr = std::process::id().to_string();
    let preview = format!("rcli-pr-{pr}");
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("rcli.yaml");
    std::fs::write(
        &base,
        "apiVersion: appenv.dev/v1alpha1\nkind: AppEnvironment\nmetadata: {name: rcli}\n\
         spec:\n  app: rcli\n  image: 'rcli:1'\n  database:\n    embedded: {engine: SQLite, path: /data/rcli.sqlite}\n",
    )
    .expect("base file");
    let base = base.to_string_lossy().into_owned();
    let up = |from: &str| {
        run(&[
            "preview",
            "up",
            "--app",
            "rcli",
            "--pr",
            &pr,
            "--image",
            "rcli:2",
            "--file",
            &base,
            "--data-from",
            from,
            "--seed",
            "flask",
            "--seed",
            "blank-personal-data",
        ])
    };
    let api: Api<AppEnvironment> = Api::all(client.clone());

    // A source that does not exist, or that does not list the preview: nothing is created.
    let (ok, _, stderr) = up("no-such-environment-here");
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: --data-from no-such-environment-here: AppEnvironment no-such-environment-here does not exist (kubectl get appenvironments)\n"
    );
    let unlisted = environment(
        &client,
        "restore-unlisted",
        Some(json!({"destination": {"s3": {"bucket": "shop-backups", "credentialsSecret": "s3-creds"}}})),
    )
    .await;
    let (ok, _, stderr) = up(&unlisted);
    assert!(!ok);
    assert!(
        stderr.starts_with(&format!(
            "error: --data-from {unlisted}: {unlisted}'s spec.backup.restoreTo does not name {preview}"
        )),
        "{stderr}"
    );
    assert!(
        api.get_opt(&preview).await.expect("get").is_none(),
        "no preview was created"
    );

    let (ok, stdout, stderr) = up(&source);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stderr.starts_with(
            "note: spec.namespace.copy copies no Secret appenv-restore-credentials into the preview's namespace"
        ) && stderr.contains(&format!("created preview {preview} (image rcli:2, generation 1)")),
        "{stderr}"
    );
    let created = api.get(&preview).await.expect("the preview");
    let restore = created
        .spec
        .database
        .as_ref()
        .and_then(|d| d.restore.as_ref())
        .expect("spec.database.restore");
    assert_eq!(restore.from_environment.as_deref(), Some(source.as_str()));
    assert_eq!(restore.backup.as_deref(), Some("latest"));
    assert_eq!(
        restore.credentials_secret.as_deref(),
        Some("appenv-restore-credentials")
    );
    let seed = restore.seed.as_ref().expect("seed");
    assert_eq!(seed.command, ["flask", "blank-personal-data"]);
    assert!(seed.args.is_empty());

    let _ = api.delete(&preview, &DeleteParams::default()).await;
    delete(&client, &unlisted).await;
    delete(&client, &source).await;
}
