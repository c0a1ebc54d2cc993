//! The Jobs appenv builds, run as they are written, against real servers: the contract between
//! the builders (operator/core/src/build) and the agent. The containers' command lines and
//! environments come from the built Jobs; what a kubelet would resolve is resolved here the same
//! way (a `secretKeyRef` from the Secret's data), and only the PostgreSQL Service's address is
//! replaced by the test server's. The init container's copy of the agent is the program the
//! main container runs.
//!
//! What it shows: production's PostgreSQL (with pgvector) backed up by its backup Job to S3; a
//! preview restored by its restore Job from production's bucket with its own credentials, then
//! its seed Job (the app's command) blanking personal data: the preview has production's rows,
//! sanitised, and production is untouched; and a preview restored by its restore Job from a
//! dump at a URL that a Secret holds.

#[allow(dead_code)] // this test uses part of it
mod data;

use appenv_api::{AppEnvironment, AppEnvironmentSpec};
use appenv_core::build::{self, BackupReason, BackupRun, Inputs, RestoreRun, Store};
use appenv_core::settings::Settings;
use appenv_core::validate::{self, BackupDestinationModel, Model};
use data::{Postgres, S3, checked, serve, sha256_of};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Container;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const AWS_SECRET: &str = "sEcReT-aws-91fe";

fn model(name: &str, yaml: &str) -> Model {
    let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
    validate::validate(&AppEnvironment::new(name, spec), &Settings::default()).expect("valid")
}

fn container(job: &Job) -> (&Container, Option<&Container>) {
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    let init = pod.init_containers.as_ref().and_then(|c| c.first());
    (&pod.containers[0], init)
}

/// What a kubelet would give the container: its `env`, each `secretKeyRef` read from
/// `secrets` (a missing one fails the test, as it would fail the Pod).
fn resolved_env(c: &Container, secrets: &BTreeMap<(&str, &str), String>) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let value = match e
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            {
                Some(r) => secrets
                    .get(&(r.name.as_str(), r.key.as_str()))
                    .unwrap_or_else(|| panic!("Secret {}/{} is not provided", r.name, r.key))
                    .clone(),
                None => e.value.clone().unwrap_or_default(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// Run a built Job's container: the init container's `agent install` into `dir` first (the
/// copy is the program), with the environment resolved and the database's address the test
/// server's.
fn run(job: &Job, secrets: &BTreeMap<(&str, &str), String>, pg: &Postgres, dir: &Path) -> String {
    let (main, init) = container(job);
    let program = match init {
        Some(init) => {
            let args = init.args.clone().unwrap_or_default();
            assert_eq!(
                args[..2],
                ["agent".to_owned(), "install".to_owned()],
                "{args:?}"
            );
            let installed = dir.join("appenv");
            checked(
                Command::new(env!("CARGO_BIN_EXE_appenv"))
                    .args(["agent", "install"])
                    .arg(&installed),
            );
            installed
        }
        None => env!("CARGO_BIN_EXE_appenv").into(),
    };
    let mut env = resolved_env(main, secrets);
    for (name, value) in pg.env() {
        if matches!(name, "PGHOST" | "PGPORT") {
            env.retain(|(n, _)| n != name);
            env.push((name.to_owned(), value));
        }
    }
    // The kubelet's termination log: the agent reports its result there.
    let termination = dir.join("termination-log");
    std::fs::write(&termination, "").expect("termination log");
    let output = checked(
        Command::new(program)
            .args(main.args.clone().unwrap_or_default())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", pg.bin().display()))
            .env("APPENV_TERMINATION_LOG", &termination)
            .envs(env),
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !printed.contains(AWS_SECRET),
        "a secret was printed: {printed}"
    );
    let reported = std::fs::read_to_string(&termination).expect("termination log");
    format!("{printed}\nterminated: {reported}")
}

#[test]
fn production_is_backed_up_and_a_preview_restored_and_seeded_by_the_jobs_appenv_builds() {
    let (pg, s3) = (Postgres::start(), S3::start());
    s3.create_bucket("shop-backups");
    pg.sql("CREATE DATABASE shop_prod");
    pg.sql("CREATE DATABASE shop_preview");
    let in_db = |db: &str, sql: &str| {
        checked(
            Command::new(pg.bin().join("psql"))
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    db,
                    "-c",
                    sql,
                ])
                .envs(pg.env().into_iter().filter(|(k, _)| *k != "PGDATABASE")),
        )
        .stdout
    };
    in_db(
        "shop_prod",
        "CREATE EXTENSION vector;
         CREATE TABLE users (id int PRIMARY KEY, email text, embedding vector(3));
         INSERT INTO users SELECT i, 'user' || i || '@example.com', ARRAY[i, 0, 0]::vector
           FROM generate_series(1, 500) AS i;",
    );
    let endpoint = s3.endpoint();
    let prod = model(
        "shop-prod",
        &format!(
            "{{app: shop, image: 'shop:1', database: {{postgres: {{}}}}, backup: {{keep: 2, restoreTo: ['shop-pr-*'], destination: {{s3: {{bucket: shop-backups, prefix: appenv, endpoint: '{endpoint}', credentialsSecret: s3}}}}}}}}"
        ),
    );
    let dir = tempfile::tempdir().expect("dir");
    let credentials = |db: &str| {
        BTreeMap::from([
            (("s3", "AWS_ACCESS_KEY_ID"), "appenv-test".to_owned()),
            (("s3", "AWS_SECRET_ACCESS_KEY"), AWS_SECRET.to_owned()),
            (("s3-read", "AWS_ACCESS_KEY_ID"), "appenv-read".to_owned()),
            (("s3-read", "AWS_SECRET_ACCESS_KEY"), AWS_SECRET.to_owned()),
            (
                ("shop-postgres-credentials", "username"),
                "postgres".to_owned(),
            ),
            (("shop-postgres-credentials", "password"), String::new()),
            (("shop-postgres-credentials", "database"), db.to_owned()),
            (
                ("shop-postgres-credentials", "url"),
                format!("postgresql://postgres@127.0.0.1:{}/{db}", pg.env()[1].1),
            ),
        ])
    };

    // Production's backup Job.
    let children = build::build(
        &prod,
        &Inputs {
            backup: Some(BackupRun {
                job: "shop-backup-s202612020300".into(),
                reason: BackupReason::Scheduled,
                started: "2026-12-02T03:00:00Z".parse().expect("a time"),
            }),
            ..Inputs::default()
        },
    );
    let backup = children.backup.expect("a backup Job");
    let out = run(&backup, &credentials("shop_prod"), &pg, dir.path());
    assert!(out.contains("complete"), "{out}");
    // What the operator reads back: the backup's id and size.
    let reported = out.rsplit("terminated: ").next().unwrap_or_default();
    let words: Vec<&str> = reported.split_whitespace().collect();
    assert!(
        matches!(words.as_slice(), ["backup", id, bytes] if validate::backup_ref(id) && bytes.parse::<u64>().is_ok_and(|b| b > 0)),
        "{reported:?}"
    );

    // The preview's restore Job reads production's bucket with its own Secret.
    let preview = model(
        "shop-pr-7",
        "{app: shop, image: 'shop:2', profile: Preview, database: {postgres: {}, restore: {fromEnvironment: shop-prod, credentialsSecret: s3-read, seed: {command: [sh, -c, \"psql \\\"$DATABASE_URL\\\" -c \\\"UPDATE users SET email = 'user' || id || '@blanked.invalid'\\\"\"]}}}}",
    );
    let Some(BackupDestinationModel::S3(source)) = prod.backup.as_ref().map(|b| &b.destination)
    else {
        panic!("production backs up to S3");
    };
    let restore_name =
        build::initial_restore_job_name(&preview, &preview.restore.as_ref().expect("restore").from);
    let children = build::build(
        &preview,
        &Inputs {
            restore: Some(RestoreRun {
                job: restore_name,
                backup: "latest".into(),
                store: Store::Other {
                    environment: "shop-prod".into(),
                    s3: source.clone(),
                    credentials_secret: "s3-read".into(),
                },
                into_non_empty: false,
            }),
            seed: true,
            ..Inputs::default()
        },
    );
    let out = run(
        children.restore.as_ref().expect("a restore Job"),
        &credentials("shop_preview"),
        &pg,
        dir.path(),
    );
    assert!(out.contains("restored backup"), "{out}");
    // The seed Job: the app's image runs its command with the app's environment.
    let seed = children.seed.as_ref().expect("a seed Job");
    let (main, _) = container(seed);
    assert_eq!(main.image.as_deref(), Some("shop:2"));
    let env = resolved_env(main, &credentials("shop_preview"));
    let command = main.command.clone().expect("command");
    checked(
        Command::new(&command[0])
            .args(&command[1..])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", pg.bin().display()))
            .envs(env),
    );
    let rows = |db: &str, sql: &str| String::from_utf8_lossy(&in_db(db, sql)).trim().to_owned();
    let count = "SELECT count(*) FROM users";
    assert_eq!(rows("shop_preview", count), "500", "production's rows");
    assert_eq!(
        rows(
            "shop_preview",
            "SELECT count(*) FROM users WHERE email LIKE '%@blanked.invalid'"
        ),
        "500",
        "every email blanked by the seed"
    );
    let nearest = "SELECT id FROM users ORDER BY embedding <-> '[42.2, 0, 0]' LIMIT 1";
    assert_eq!(rows("shop_preview", nearest), "42");
    assert_eq!(
        rows(
            "shop_prod",
            "SELECT count(*) FROM users WHERE email LIKE '%@example.com'"
        ),
        "500",
        "production untouched"
    );

    // A preview started from a dump at a URL that a Secret holds (a presigned URL, its
    // signature in the query): the restore Job downloads it, checks its checksum, restores it.
    in_db("postgres", "CREATE DATABASE shop_pr8");
    let dump = checked(
        Command::new(pg.bin().join("pg_dump"))
            .args(["--format=custom", "--no-password", "-d", "shop_prod"])
            .envs(pg.env().into_iter().filter(|(k, _)| *k != "PGDATABASE")),
    )
    .stdout;
    let sha = sha256_of(&dump);
    let url = format!(
        "{}/shop.dump?X-Amz-Signature={AWS_SECRET}",
        serve(vec![("/shop.dump", dump)])
    );
    let preview = model(
        "shop-pr-8",
        &format!(
            "{{app: shop, image: 'shop:2', profile: Preview, database: {{postgres: {{}}, restore: {{fromUrl: {{urlSecret: dump-url, sha256: '{sha}'}}}}}}}}"
        ),
    );
    let from = &preview.restore.as_ref().expect("restore").from;
    let validate::RestoreFrom::Url(dump_model) = from else {
        panic!("a dump: {from:?}");
    };
    let children = build::build(
        &preview,
        &Inputs {
            restore: Some(RestoreRun {
                job: build::initial_restore_job_name(&preview, from),
                backup: String::new(),
                store: Store::Dump(dump_model.clone()),
                into_non_empty: false,
            }),
            ..Inputs::default()
        },
    );
    let mut secrets = credentials("shop_pr8");
    secrets.insert(("dump-url", "url"), url);
    let out = run(
        children.restore.as_ref().expect("a restore Job"),
        &secrets,
        &pg,
        dir.path(),
    );
    assert!(
        out.contains("restored the dump at http://127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("terminated: restored sha256:{}", &sha[..12]))
            || out.contains(&format!("terminated: restored sha256:{} ", &sha[..12])),
        "{out}"
    );
    assert_eq!(
        rows("shop_pr8", count),
        "500",
        "production's rows, from the dump"
    );
    assert_eq!(rows("shop_pr8", nearest), "42");
}
