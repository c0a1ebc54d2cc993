//! `appenv backup now|list` and `appenv agent install`, run as the binary a user runs, against a
//! real API server (the CRD, no operator) and moto's S3 server: `list` reads the destination
//! with the environment's credentials Secret and prints every backup the agent made, never the
//! secret; `now` sets the request annotation and names the Job the controller will run for it;
//! `--wait` follows the status (written here as the controller would) to success, failure or its
//! timeout; an environment without `spec.backup` is refused by name. The install test copies the
//! binary as a PostgreSQL backup Job's init container does and runs the copy.

mod common;

use common::cli::Waiting;
// Only its S3 server is used here.
#[allow(dead_code)]
mod data;

use appenv_api::AppEnvironment;
use appenv_core::build::requested_job_name;
use appenv_core::settings::Settings;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const REQUEST_ANNOTATION: &str = "appenv.dev/backup-requested";
/// The credentials the Secret holds: the secret may appear in nothing `appenv` prints.
const ACCESS_KEY: &str = "appenv-cli-test";
const SECRET: &str = "sEcReT-cli-91f2";

/// `appenv ARGS` with the shared cluster's kubeconfig and no S3 credentials of its own: what
/// `backup list` uses comes from the environment's Secret.
fn appenv(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_appenv"));
    command
        .args(args)
        .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("APPENV_S3_ENDPOINT")
        .env_remove("APPENV_S3_REGION");
    command
}

/// What a finished command printed, stdout then stderr; no secret in it.
fn printed(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains(SECRET), "the secret was printed: {text}");
    text
}

/// Run `appenv ARGS`; whether it succeeded and what it printed.
fn run(args: &[&str]) -> (bool, String) {
    let output = tokio::task::block_in_place(|| appenv(args).output()).expect("run appenv");
    (output.status.success(), printed(&output))
}

/// `appenv ARGS` in the background; its end is checked for the secret.
fn in_background(args: &[&str]) -> Waiting {
    Waiting::start(appenv(args), LIMIT)
}

/// Its end, which never prints the secret.
fn finish(waiting: Waiting) -> (bool, String, String) {
    let (ok, stdout, stderr) = waiting.finish();
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "{stdout}{stderr}"
    );
    (ok, stdout, stderr)
}

/// The CRD, a fresh namespace and the AppEnvironment `spec.backup` for it (named as the
/// namespace, which it adopts), with an embedded SQLite database.
async fn environment(client: &Client, test: &str, backup: Option<Value>) -> (String, Value) {
    appenv_controller::crd::install(client, "appenv-tests")
        .await
        .expect("CRD installs");
    let name = common::namespace(client, test).await;
    let mut spec = json!({
        "app": "shop",
        "image": "shop:1",
        "namespace": {"name": name},
        "database": {"embedded": {"engine": "SQLite", "path": "/data/shop.sqlite", "storage": {"size": "1Gi"}}},
    });
    if let Some(backup) = backup {
        spec["backup"] = backup;
    }
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {common::TEST_LABEL: test}},
        "spec": spec,
    });
    common::apply(client, &env).await;
    (name, env)
}

async fn delete(client: &Client, name: &str) {
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    common::cleanup(client, name).await;
}

/// The backup ids in the agent's `backup complete` lines.
fn backup_id(agent_output: &str) -> String {
    agent_output
        .split_whitespace()
        .nth(1)
        .expect("backup ID of ... complete")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_list_reads_an_s3_destination_with_the_environments_secret() {
    let s3 = data::S3::start();
    s3.create_bucket("shop-backups");
    let client = common::client().await;
    let endpoint = s3.endpoint();
    let backup = json!({"destination": {"s3": {
        "bucket": "shop-backups", "prefix": "appenv", "endpoint": endpoint, "credentialsSecret": "s3-creds"}}});
    let (name, _) = environment(&client, "backup-list", Some(backup)).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-creds", "namespace": name},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "OTHER": "x"},
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("credentials Secret");

    let (ok, out) = run(&["backup", "list", &name]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!(
            "ID                   TIME (UTC)          REASON            SIZE\n\
             (no complete backup of {name} in s3://shop-backups/appenv/{name} at {endpoint})\n"
        )
    );

    // Two backups by the agent, as the backup Jobs run it.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("shop.sqlite");
    let db = rusqlite::Connection::open(&file).expect("open");
    db.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY); INSERT INTO orders VALUES (1), (2);",
    )
    .expect("rows");
    drop(db);
    let file = file.to_string_lossy().into_owned();
    let mut ids = Vec::new();
    for reason in ["manual", "scheduled"] {
        let output = data::checked(
            Command::new(env!("CARGO_BIN_EXE_appenv"))
                .args(["agent", "backup", "--engine", "sqlite", "--file", &file])
                .args(["--environment", &name, "--reason", reason])
                .args(["--destination", "s3://shop-backups/appenv"])
                .env("APPENV_S3_ENDPOINT", &endpoint)
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET),
        );
        ids.push(backup_id(&printed(&output)));
    }
    let (ok, out) = run(&["backup", "list", &name]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("TIME (UTC)"),
        "{out}"
    );
    for (line, (id, reason)) in lines[1..]
        .iter()
        .zip(ids.iter().zip(["manual", "scheduled"]))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], id, "{out}");
        assert_eq!(fields[3], reason, "{out}");
        assert!(line.ends_with(" MiB"), "{out}");
    }
    assert!(!out.contains(ACCESS_KEY), "{out}");

    // A restore of a backup that does not exist is refused before anything stops; one that
    // exists is requested.
    let (ok, out) = run(&["restore", &name, "--backup", "20200101-000000-000", "--yes"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("20200101-000000-000 does not exist") && out.contains("nothing was stopped"),
        "{out}"
    );
    let envs: Api<AppEnvironment> = Api::all(client.clone());
    let annotated = |env: &AppEnvironment| {
        env.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("appenv.dev/restore-requested").cloned())
    };
    assert_eq!(annotated(&envs.get(&name).await.expect("env")), None);
    let (ok, out) = run(&["restore", &name, "--backup", &ids[0], "--yes"]);
    assert!(ok, "{out}");
    let request = annotated(&envs.get(&name).await.expect("env")).expect("requested");
    assert!(request.contains(&ids[0]), "{request}");

    // Credentials that are not there are named, Secret and key.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &name);
    secrets
        .patch(
            "s3-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"AWS_SECRET_ACCESS_KEY": null}})),
        )
        .await
        .expect("remove a key");
    let (ok, out) = run(&["backup", "list", &name]);
    assert!(!ok, "{out}");
    assert_eq!(
        out,
        format!(
            "error: Secret {name}/s3-creds (spec.backup.destination.s3.credentialsSecret) has no key AWS_SECRET_ACCESS_KEY\n"
        )
    );
    secrets
        .delete("s3-creds", &DeleteParams::default())
        .await
        .expect("delete the Secret");
    let (ok, out) = run(&["backup", "list", &name]);
    assert!(
        !ok && out.contains("s3-creds") && out.contains("does not exist"),
        "{out}"
    );
    delete(&client, &name).await;
}

/// Write `status.backup` as the controller would.
async fn set_backup_status(api: &Api<AppEnvironment>, name: &str, backup: Value) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"backup": backup}})),
    )
    .await
    .expect("status written");
}

/// Wait until the request annotation is no longer `previous`; the Job of its new value.
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
    let job = requested_job_name(&model, &request);
    (request, job)
}

fn run_status(job: &str, finished: bool, message: Option<&str>) -> Value {
    let mut run = json!({"job": job, "reason": "manual", "startedAt": "2026-12-02T10:00:00Z"});
    if finished {
        run["finishedAt"] = json!("2026-12-02T10:00:04Z");
    }
    if let Some(message) = message {
        run["message"] = json!(message);
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_requests_a_backup_and_wait_follows_the_status() {
    let client = common::client().await;
    let backup = json!({"destination": {"volume": {"size": "2Gi"}}});
    let (name, _) = environment(&client, "backup-now", Some(backup)).await;
    let api: Api<AppEnvironment> = Api::all(client.clone());

    // Without --wait: the annotation is set, to the time in milliseconds, and the Job named.
    let (ok, out) = run(&["backup", "now", &name]);
    assert!(ok, "{out}");
    let (request, job) = requested(&api, &name, None).await;
    assert_eq!(out, format!("backup of {name} requested (Job {job})\n"));
    let at: jiff::Timestamp = request.parse().expect("RFC 3339");
    assert!(
        request.ends_with('Z') && request.len() == "2026-12-02T10:00:00.000Z".len(),
        "{request}"
    );
    assert!(
        jiff::Timestamp::now().duration_since(at).as_secs() < 60,
        "{request}"
    );

    // --wait until the controller (this test) records a success.
    let mut waiting = in_background(&["backup", "now", &name, "--wait", "--timeout", "60s"]);
    let (request, job) = requested(&api, &name, Some(request)).await;
    waiting.line_with("requested: waiting for the operator to start Job");
    set_backup_status(
        &api,
        &name,
        json!({"lastRequest": request, "running": run_status(&job, false, None)}),
    )
    .await;
    let line = waiting.line_with("running: ");
    assert!(line.ends_with(&format!("] running: Job {job}")), "{line}");
    set_backup_status(
        &api,
        &name,
        json!({"running": null, "lastSuccess": run_status(&job, true, None)}),
    )
    .await;
    let (ok, stdout, stderr) = finish(waiting);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "backup of {name} requested (Job {job})\n\
             backup {job} completed at 2026-12-02 10:00:04 UTC (reason manual)\n"
        )
    );

    // --wait until a failure: its message, and exit 1.
    let waiting = in_background(&["backup", "now", &name, "--wait"]);
    let (request, job) = requested(&api, &name, Some(request)).await;
    set_backup_status(
        &api,
        &name,
        json!({"lastRequest": request, "lastFailure": run_status(&job, true, Some("disk full"))}),
    )
    .await;
    let (ok, stdout, stderr) = finish(waiting);
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "error: backup {job} failed at 2026-12-02 10:00:04 UTC: disk full"
        )),
        "{stderr}"
    );

    // Nobody handles the request: the timeout says what was seen last.
    let (ok, out) = run(&["backup", "now", &name, "--wait", "--timeout", "2s"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "has not finished after 2s; last seen: requested: waiting for the operator to start Job"
        ),
        "{out}"
    );

    // A volume: what the status knows, and where a Job's log names its backup.
    let (ok, out) = run(&["backup", "list", &name]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with(&format!(
            "the backups of {name} are on the volume shop-backups in namespace {name}, which only its backup Jobs mount\n"
        )) && out.contains(&format!("last failure: Job {job} (manual), 2026-12-02 10:00:04 UTC: disk full\n"))
            && out.contains(&format!("kubectl -n {name} logs job/")),
        "{out}"
    );
    delete(&client, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_refuses_an_environment_without_backups() {
    let client = common::client().await;
    let (name, _) = environment(&client, "backup-none", None).await;
    let (ok, out) = run(&["backup", "now", &name]);
    assert!(!ok, "{out}");
    assert!(
        out.starts_with(&format!("error: {name} has no spec.backup: ")),
        "{out}"
    );
    let env = Api::<AppEnvironment>::all(client.clone())
        .get(&name)
        .await
        .expect("the environment");
    assert!(
        !env.annotations().contains_key(REQUEST_ANNOTATION),
        "nothing was requested"
    );
    let (ok, out) = run(&["backup", "list", &name]);
    assert!(!ok && out.contains("has no spec.backup"), "{out}");
    let (ok, out) = run(&["backup", "now", "no-such-environment-here"]);
    assert!(!ok, "{out}");
    assert_eq!(
        out,
        "error: AppEnvironment no-such-environment-here does not exist (kubectl get appenvironments)\n"
    );
    delete(&client, &name).await;
}

#[test]
fn agent_install_copies_the_running_binary_and_the_copy_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("appenv");
    let output = data::checked(
        Command::new(env!("CARGO_BIN_EXE_appenv"))
            .args(["agent", "install"])
            .arg(&target),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    let size = std::fs::metadata(env!("CARGO_BIN_EXE_appenv"))
        .expect("the binary")
        .len();
    assert_eq!(
        out,
        format!(
            "installed the appenv agent at {} ({:.1} MiB)\n",
            target.display(),
            size as f64 / 1024.0 / 1024.0
        )
    );
    let metadata = std::fs::metadata(&target).expect("installed");
    assert_eq!(metadata.len(), size);
    assert_eq!(metadata.permissions().mode() & 0o777, 0o755);
    let entries = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(entries, 1, "no temporary file is left");
    let version = data::checked(Command::new(&target).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("appenv {}\n", env!("CARGO_PKG_VERSION"))
    );

    // A directory that does not exist: the path is named, in the output and in the termination
    // message the operator reads.
    let missing = dir.path().join("missing").join("appenv");
    let log = dir.path().join("termination-log");
    std::fs::write(&log, "").expect("log");
    let output = Command::new(env!("CARGO_BIN_EXE_appenv"))
        .args(["agent", "install"])
        .arg(&missing)
        .env("APPENV_TERMINATION_LOG", &log)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named = format!(
        "installing the appenv agent at {}: creating",
        missing.display()
    );
    assert!(stderr.starts_with(&format!("error: {named}")), "{stderr}");
    let message = std::fs::read_to_string(&log).expect("termination log");
    assert!(message.starts_with(&named), "{message}");
    assert!(!Path::new(&missing).exists());
}
