//! Backup and restore Jobs (the agent's) and the backup volume. The controller decides when one
//! runs and names its Job ([`BackupRun`], [`RestoreRun`]); this builds it, for each engine:
//! - PostgreSQL: the database's own image (so `pg_dump` is the server's major version), the
//!   agent binary copied in by an init container from the agent image;
//! - SQLite: the agent image with the data volume, on the web Pod's node (a ReadWriteOnce volume
//!   is attached to one node): SQLite's backup API copies while the app writes;
//! - DuckDB: the agent image with the data volume, started only once no web Pod exists (the
//!   controller holds web at zero replicas): one process may open the file.
//!
//! A restore reads this environment's own destination ([`Store::Own`], in place) or another
//! environment's bucket with a Secret of this namespace ([`Store::Other`], a new environment
//! starting from it). Credentials reach the Job as two keys of the named Secret, never as
//! values in the spec.

use crate::build::Inputs;
use crate::build::meta::{labels, object_meta, selector};
use crate::build::migrations::migration_job_name;
use crate::build::pod::{
    app_pod_spec, claim_volume, empty_dir, mount, restricted_container, secret_env,
};
use crate::build::web::{embedded_data, pvc};
use crate::build::{hash_json, postgres_service_name};
use crate::validate::{
    BackupDestinationModel, BackupEngine, DatabaseModel, DumpModel, DumpUrl, Model, RestoreFrom,
    S3Model,
};
use appenv_api::DeletionPolicy;
use appenv_api::names::Component;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, PersistentVolumeClaim, PodAffinity, PodAffinityTerm,
    PodTemplateSpec, TypedLocalObjectReference, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

pub const COMPONENT: &str = Component::Backup.as_str();
/// Where the agent binary is, in the agent image.
pub const AGENT_BINARY: &str = "/usr/local/bin/appenv";
/// Where the init container copies it to, in a PostgreSQL backup Job.
const COPIED_AGENT: &str = "/agent/appenv";
/// Where a volume destination is mounted.
pub const BACKUP_MOUNT: &str = "/backups";
/// How long a restore without `spec.backup` (its timeout) may take.
const DEFAULT_TIMEOUT_SECONDS: i64 = 3600;
/// The keys of `spec.backup.destination.s3.credentialsSecret` the Jobs read.
pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// Why a backup runs: the agent's `--reason` and the status's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupReason {
    Scheduled,
    Manual,
    BeforeMigration,
}

impl BackupReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
            Self::BeforeMigration => "before-migration",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Scheduled, Self::Manual, Self::BeforeMigration]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// A backup the controller starts in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRun {
    /// The Job's name (see the `*_job_name` functions).
    pub job: String,
    pub reason: BackupReason,
    /// When the controller started it: on a snapshot, the order of backups taken within one
    /// second (a `creationTimestamp` has whole seconds).
    pub started: Timestamp,
}

/// The backup taken before the migration of the spec's image: named after that migration Job.
pub fn before_migration_job_name(model: &Model) -> Option<String> {
    let migrations = model.migrations.as_ref()?;
    let name = migration_job_name(model, migrations);
    Some(name.replacen("-migrate-", "-backup-", 1))
}

/// The backup of one time of the schedule.
pub fn scheduled_job_name(model: &Model, at: Timestamp) -> String {
    format!("{}-backup-s{}", model.app, at.strftime("%Y%m%d%H%M"))
}

/// The backup of one `appenv backup now` request (the annotation's value).
pub fn requested_job_name(model: &Model, request: &str) -> String {
    format!("{}-backup-r{}", model.app, &hash_json(&request)[..10])
}

pub fn backup_volume_name(model: &Model) -> String {
    format!("{}-backups", model.app)
}

/// The backup volume (`spec.backup.destination.volume`), kept with the data when the data is.
pub fn backup_volume(model: &Model, inputs: &Inputs) -> Option<PersistentVolumeClaim> {
    let BackupDestinationModel::Volume(storage) = &model.backup.as_ref()?.destination else {
        return None;
    };
    let mut meta = object_meta(model, inputs, &backup_volume_name(model), COMPONENT);
    if model.deletion_policy == DeletionPolicy::Retain {
        meta.owner_references = None;
        if let Some(labels) = meta.labels.as_mut() {
            labels.insert(crate::build::RETAINED_LABEL.to_owned(), "true".to_owned());
        }
    }
    Some(pvc(meta, storage))
}

/// The API of CSI snapshots.
pub const SNAPSHOT_API_VERSION: &str = "snapshot.storage.k8s.io/v1";

/// The `VolumeSnapshot` of the embedded database's volume that `run` takes, if backups go to
/// snapshots (`spec.backup.destination.volumeSnapshot`). Named as the run's Job would be; kept
/// with the data when the data is.
pub fn snapshot(model: &Model, inputs: &Inputs, run: &BackupRun) -> Option<serde_json::Value> {
    let BackupDestinationModel::VolumeSnapshot { class_name } = &model.backup.as_ref()?.destination
    else {
        return None;
    };
    let Some(DatabaseModel::Embedded(_)) = &model.database else {
        return None;
    };
    let mut meta = object_meta(model, inputs, &run.job, COMPONENT);
    if model.deletion_policy == DeletionPolicy::Retain {
        meta.owner_references = None;
        if let Some(labels) = meta.labels.as_mut() {
            labels.insert(crate::build::RETAINED_LABEL.to_owned(), "true".to_owned());
        }
    }
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(REASON_ANNOTATION.to_owned(), run.reason.as_str().to_owned());
    annotations.insert(STARTED_ANNOTATION.to_owned(), run.started.to_string());
    meta.annotations = Some(annotations);
    Some(serde_json::json!({
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": meta,
        "spec": {
            "volumeSnapshotClassName": class_name,
            "source": {"persistentVolumeClaimName": crate::build::web::data_volume_name(model)},
        },
    }))
}

/// Why a snapshot was taken (`scheduled`, `manual`), on the snapshot.
pub const REASON_ANNOTATION: &str = "appenv.dev/backup-reason";

/// When the controller started a snapshot's backup (RFC 3339, to the nanosecond): retention and
/// `latest` order snapshots by it, so two taken in the same second keep their order.
pub const STARTED_ANNOTATION: &str = "appenv.dev/backup-started-at";

/// The agent's `--destination` and environment for S3 (the two keys of `credentials`).
fn s3_store(s3: &S3Model, credentials: &str) -> (String, Vec<EnvVar>) {
    let mut env = vec![
        secret_env(ACCESS_KEY_ID, credentials, ACCESS_KEY_ID),
        secret_env(SECRET_ACCESS_KEY, credentials, SECRET_ACCESS_KEY),
    ];
    for (name, value) in [
        ("APPENV_S3_ENDPOINT", &s3.endpoint),
        ("APPENV_S3_REGION", &s3.region),
    ] {
        if let Some(value) = value {
            env.push(plain_env(name, value));
        }
    }
    let url = if s3.prefix.is_empty() {
        format!("s3://{}", s3.bucket)
    } else {
        format!("s3://{}/{}", s3.bucket, s3.prefix)
    };
    (url, env)
}

fn dump_url_env(url: &DumpUrl) -> EnvVar {
    match url {
        DumpUrl::Literal(url) => plain_env(DUMP_URL_ENV, url),
        DumpUrl::Secret(name) => secret_env(DUMP_URL_ENV, name, DUMP_URL_KEY),
    }
}

/// Where an agent Job reads or writes backups.
#[derive(Debug, Clone, PartialEq)]
pub enum Store {
    /// This environment's own destination (`spec.backup.destination`).
    Own,
    /// Another environment's bucket, read with a Secret of this environment's namespace
    /// (`spec.database.restore`): the source's credentials never leave its namespace.
    Other {
        environment: String,
        s3: S3Model,
        credentials_secret: String,
    },
    /// A dump at a URL (`spec.database.restore.fromUrl`), which the Job downloads.
    Dump(DumpModel),
    /// A VolumeSnapshot of this environment's data volume (`spec.backup.destination.
    /// volumeSnapshot`), by name: the Job reads the file from a claim made from it
    /// ([`restore_claim`], named like the Job), mounted read-only at [`SNAPSHOT_MOUNT`].
    Snapshot(String),
}

/// Where a restore Job mounts the claim made from a VolumeSnapshot.
pub const SNAPSHOT_MOUNT: &str = "/snapshot";

/// The variable that carries a dump's URL to the agent (from the spec, or from the key `url` of
/// a Secret): the URL is never an argument, so a presigned URL's signature stays out of the
/// Pod's command line.
pub const DUMP_URL_ENV: &str = "APPENV_RESTORE_URL";
/// The key of `fromUrl.urlSecret` that holds the URL.
pub const DUMP_URL_KEY: &str = "url";

/// A restore the controller starts in this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreRun {
    pub job: String,
    /// `latest` or a backup id.
    pub backup: String,
    pub store: Store,
    /// Replace what the database holds (an in-place restore asked so).
    pub into_non_empty: bool,
}

/// The initial restore's Job: named after where it restores from.
pub fn initial_restore_job_name(model: &Model, from: &RestoreFrom) -> String {
    let hash = match from {
        RestoreFrom::Environment { name, backup, .. } => hash_json(&(name, backup)),
        RestoreFrom::Url(dump) => {
            let url = match &dump.url {
                DumpUrl::Literal(url) => ("url", url),
                DumpUrl::Secret(name) => ("urlSecret", name),
            };
            hash_json(&(url, &dump.sha256))
        }
    };
    format!("{}-restore-{}", model.app, &hash[..10])
}

/// An in-place restore's Job (`appenv restore`): named after the request.
pub fn requested_restore_job_name(model: &Model, request: &str) -> String {
    format!("{}-restore-r{}", model.app, &hash_json(&request)[..10])
}

/// The seed Job: named after its command and image.
pub fn seed_job_name(model: &Model, command: &[String], args: &[String]) -> String {
    format!(
        "{}-seed-{}",
        model.app,
        &hash_json(&(&model.image, command, args))[..10]
    )
}

/// The backup Job of `run`, if the model has backups.
pub fn job(model: &Model, inputs: &Inputs, run: &BackupRun) -> Option<Job> {
    let backup = model.backup.as_ref()?;
    let args = vec![
        "backup".to_owned(),
        "--reason".to_owned(),
        run.reason.as_str().to_owned(),
        "--keep".to_owned(),
        backup.keep.to_string(),
    ];
    agent_job(model, inputs, &run.job, COMPONENT, args, &Store::Own)
}

/// The restore Job of `run`.
pub fn restore_job(model: &Model, inputs: &Inputs, run: &RestoreRun) -> Option<Job> {
    let mut args = vec!["restore".to_owned()];
    match &run.store {
        Store::Dump(dump) => {
            if let Some(sha256) = &dump.sha256 {
                args.extend(["--sha256".to_owned(), sha256.clone()]);
            }
        }
        Store::Own | Store::Other { .. } => {
            args.extend(["--backup".to_owned(), run.backup.clone()]);
        }
        // The snapshot's copy of the file, at the same name under the mount; the agent takes
        // its WAL beside it too.
        Store::Snapshot(_) => {
            let Some(DatabaseModel::Embedded(em)) = &model.database else {
                return None;
            };
            let file = em.path.rsplit('/').next().unwrap_or_default();
            args.extend([
                "--url".to_owned(),
                format!("file://{SNAPSHOT_MOUNT}/{file}"),
            ]);
        }
    }
    if run.into_non_empty {
        args.push("--into-non-empty".to_owned());
    }
    agent_job(
        model,
        inputs,
        &run.job,
        Component::Restore.as_str(),
        args,
        &run.store,
    )
}

/// A Job of the agent: `agent <task...> --engine E --environment ENV --destination D`, with the
/// database and the store wired in.
fn agent_job(
    model: &Model,
    inputs: &Inputs,
    name: &str,
    component: &str,
    task: Vec<String>,
    store: &Store,
) -> Option<Job> {
    let engine = match &model.database {
        Some(DatabaseModel::Postgres(_)) => BackupEngine::Postgres,
        Some(DatabaseModel::Embedded(em)) => match em.engine {
            appenv_api::EmbeddedEngine::DuckDB => BackupEngine::Duckdb,
            appenv_api::EmbeddedEngine::SQLite => BackupEngine::Sqlite,
        },
        _ => return None,
    };
    let backup = model.backup.as_ref();
    let agent_image = model.agent_image.as_str();
    let (environment, (destination, mut env), volume) = match store {
        Store::Own => match &backup?.destination {
            BackupDestinationModel::Volume(_) => (
                model.name.clone(),
                (BACKUP_MOUNT.to_owned(), Vec::new()),
                true,
            ),
            BackupDestinationModel::S3(s3) => (
                model.name.clone(),
                s3_store(s3, &s3.credentials_secret),
                false,
            ),
            // A snapshot, not a Job ([`snapshot`]).
            BackupDestinationModel::VolumeSnapshot { .. } => return None,
        },
        Store::Other {
            environment,
            s3,
            credentials_secret,
        } => (environment.clone(), s3_store(s3, credentials_secret), false),
        Store::Dump(dump) => (
            String::new(),
            (String::new(), vec![dump_url_env(&dump.url)]),
            false,
        ),
        Store::Snapshot(_) => (String::new(), (String::new(), Vec::new()), false),
    };
    let mut args = vec!["agent".to_owned()];
    args.extend(task);
    args.extend(["--engine".to_owned(), engine.as_str().to_owned()]);
    if !destination.is_empty() {
        args.extend([
            "--environment".to_owned(),
            environment,
            "--destination".to_owned(),
            destination,
        ]);
    }
    let (mut volumes, mut mounts) = store_volumes(model, name, store, volume);
    let mut init = Vec::new();
    let (image, command) = match &model.database {
        Some(DatabaseModel::Postgres(pg)) => {
            let secret = crate::build::postgres_secret_name(model);
            env.extend([
                plain_env("PGHOST", &postgres_service_name(model)),
                plain_env("PGPORT", "5432"),
                secret_env("PGUSER", &secret, "username"),
                secret_env("PGPASSWORD", &secret, "password"),
                secret_env("PGDATABASE", &secret, "database"),
            ]);
            volumes.push(empty_dir("agent"));
            mounts.push(mount("agent", "/agent"));
            init.push(agent_installer(agent_image));
            (pg.image.clone(), COPIED_AGENT)
        }
        Some(DatabaseModel::Embedded(em)) => {
            args.extend(["--file".to_owned(), em.path.clone()]);
            let (volume, mount) = embedded_data(model)?;
            volumes.push(volume);
            mounts.push(mount);
            (agent_image.to_owned(), AGENT_BINARY)
        }
        _ => return None,
    };
    let mut pod = app_pod_spec(model, volumes);
    pod.restart_policy = Some("Never".to_owned());
    pod.init_containers = (!init.is_empty()).then_some(init);
    if engine == BackupEngine::Sqlite && !inputs.stop_web && component == COMPONENT {
        // The data volume is ReadWriteOnce: attached to the web Pod's node, where the copy runs
        // beside the writer.
        pod.affinity = Some(beside_web(model));
    }
    pod.containers = vec![Container {
        name: component.to_owned(),
        image: Some(image),
        command: Some(vec![command.to_owned()]),
        args: Some(args),
        env: Some(env),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        // The agent writes why it failed to the termination log; its log is the fallback.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }];
    let annotations = backup
        .map(|b| b.pod_annotations.clone())
        .unwrap_or_default();
    Some(Job {
        metadata: object_meta(model, inputs, name, component),
        spec: Some(JobSpec {
            // A failed backup or restore is reported, not retried: the next schedule time, a new
            // image, `appenv backup now` or a new request tries again.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                backup.map_or(DEFAULT_TIMEOUT_SECONDS, |b| b.timeout_seconds),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, component)),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// The claim a restore from a VolumeSnapshot reads (named like its Job): made from the snapshot
/// by the storage provider, of the data volume's class and size, deleted once the restore
/// finished.
pub fn restore_claim(
    model: &Model,
    inputs: &Inputs,
    run: &RestoreRun,
) -> Option<PersistentVolumeClaim> {
    let (Store::Snapshot(snapshot), Some(DatabaseModel::Embedded(em))) =
        (&run.store, &model.database)
    else {
        return None;
    };
    let meta = object_meta(model, inputs, &run.job, Component::Restore.as_str());
    let mut claim = pvc(meta, &em.storage);
    if let Some(spec) = claim.spec.as_mut() {
        spec.data_source = Some(TypedLocalObjectReference {
            api_group: Some(
                SNAPSHOT_API_VERSION
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            kind: "VolumeSnapshot".to_owned(),
            name: snapshot.clone(),
        });
    }
    Some(claim)
}

/// The volumes of the store a Job reads or writes (the backup volume, the claim made from a
/// VolumeSnapshot: named like the Job `name`), besides `/tmp`.
fn store_volumes(
    model: &Model,
    name: &str,
    store: &Store,
    backup_volume: bool,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = vec![mount("tmp", "/tmp")];
    if backup_volume {
        volumes.push(claim_volume("backups", backup_volume_name(model)));
        mounts.push(mount("backups", BACKUP_MOUNT));
    }
    if let Store::Snapshot(_) = store {
        volumes.push(claim_volume("snapshot", name.to_owned()));
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount("snapshot", SNAPSHOT_MOUNT)
        });
    }
    (volumes, mounts)
}

/// The init container that copies the agent from the agent image into the Pod.
fn agent_installer(agent_image: &str) -> Container {
    Container {
        name: "agent".to_owned(),
        image: Some(agent_image.to_owned()),
        command: Some(vec![AGENT_BINARY.to_owned()]),
        args: Some(vec![
            "agent".to_owned(),
            "install".to_owned(),
            COPIED_AGENT.to_owned(),
        ]),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![mount("agent", "/agent")]),
        ..Container::default()
    }
}

/// On the web Pod's node (a ReadWriteOnce volume is attached to one node).
fn beside_web(model: &Model) -> Affinity {
    Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector(model, Component::Web.as_str())),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".to_owned(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::validate::validate;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec};

    fn model(yaml: &str) -> Model {
        let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
        validate(
            &AppEnvironment::new("shop-prod", spec),
            &Settings::default(),
        )
        .expect("valid")
    }

    const S3: &str = "destination: {s3: {bucket: shop-backups, prefix: /prod/, endpoint: 'http://minio:9000', credentialsSecret: s3-creds}}";

    fn run(reason: BackupReason) -> BackupRun {
        BackupRun {
            job: "shop-backup-x".into(),
            reason,
            started: "2026-12-02T04:00:00.123456789Z".parse().expect("a time"),
        }
    }

    fn container(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .expect("present")
            .template
            .spec
            .as_ref()
            .expect("present")
            .containers[0]
    }

    fn env_names(c: &Container) -> Vec<&str> {
        c.env.iter().flatten().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn a_postgres_backup_runs_the_copied_agent_in_the_database_image_with_two_keys_of_the_secret() {
        let m = model(&format!(
            "{{app: shop, image: 'shop:1', database: {{postgres: {{image: 'pgvector/pgvector:pg15'}}}}, backup: {{keep: 3, {S3}}}}}"
        ));
        let job = job(&m, &Inputs::default(), &run(BackupReason::Scheduled)).expect("job");
        let pod = job
            .spec
            .as_ref()
            .expect("present")
            .template
            .spec
            .as_ref()
            .expect("present");
        let c = container(&job);
        assert_eq!(c.image.as_deref(), Some("pgvector/pgvector:pg15"));
        assert_eq!(c.command, Some(vec!["/agent/appenv".to_owned()]));
        let init = &pod.init_containers.as_ref().expect("init")[0];
        assert_eq!(init.image.as_deref(), Some(m.agent_image.as_str()));
        assert_eq!(
            init.args.as_deref(),
            Some(
                &[
                    "agent".to_owned(),
                    "install".to_owned(),
                    "/agent/appenv".to_owned()
                ][..]
            )
        );
        let args = c.args.as_ref().expect("present").join(" ");
        assert_eq!(
            args,
            "agent backup --reason scheduled --keep 3 --engine postgres --environment shop-prod --destination s3://shop-backups/prod"
        );
        let names = env_names(c);
        for want in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "APPENV_S3_ENDPOINT",
            "PGHOST",
            "PGPASSWORD",
            "PGDATABASE",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        // Only the two keys of the credentials Secret, and no value from the spec is a secret.
        let from_creds: Vec<_> = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .filter(|r| r.name == "s3-creds")
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(from_creds, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        assert_eq!(job.spec.as_ref().expect("present").backoff_limit, Some(0));
        assert!(pod.affinity.is_none());
    }

    #[test]
    fn a_volume_snapshot_backup_is_a_snapshot_of_the_data_volume_not_a_job() {
        let spec = |policy: &str| {
            format!(
                "{{app: dojo, image: 'dojo:1', database: {{embedded: {{engine: DuckDB, path: /data/ledger.duckdb}}, deletionPolicy: {policy}}}, backup: {{destination: {{volumeSnapshot: {{className: csi-snapshots}}}}}}}}"
            )
        };
        let m = model(&spec("Delete"));
        let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            name: "shop-prod".into(),
            ..Default::default()
        };
        let inputs = Inputs {
            owner: Some(owner),
            ..Inputs::default()
        };
        let run = run(BackupReason::Scheduled);
        assert!(job(&m, &inputs, &run).is_none(), "no Job");
        let taken = snapshot_of(&m, &inputs, &run);
        assert_eq!(taken["apiVersion"], SNAPSHOT_API_VERSION);
        assert_eq!(taken["kind"], "VolumeSnapshot");
        assert_eq!(taken["metadata"]["name"], "shop-backup-x");
        assert_eq!(taken["metadata"]["namespace"], m.namespace.name.as_str());
        assert_eq!(
            taken["spec"],
            serde_json::json!({"volumeSnapshotClassName": "csi-snapshots",
                "source": {"persistentVolumeClaimName": "dojo-data"}})
        );
        assert_eq!(
            taken["metadata"]["annotations"][REASON_ANNOTATION],
            "scheduled"
        );
        assert_eq!(
            taken["metadata"]["annotations"][STARTED_ANNOTATION], "2026-12-02T04:00:00.123456789Z",
            "to the nanosecond"
        );
        assert_eq!(taken["metadata"]["ownerReferences"][0]["name"], "shop-prod");
        // Kept with the data: no owner, the retained label.
        let retained = snapshot_of(&model(&spec("Retain")), &inputs, &run);
        assert!(retained["metadata"]["ownerReferences"].is_null());
        assert_eq!(
            retained["metadata"]["labels"][crate::build::RETAINED_LABEL],
            "true"
        );
        // Other destinations take none.
        let s3 = model(&format!(
            "{{app: dojo, image: 'dojo:1', database: {{embedded: {{engine: DuckDB, path: /data/ledger.duckdb}}}}, backup: {{{S3}}}}}"
        ));
        assert!(snapshot(&s3, &inputs, &run).is_none());
    }

    fn snapshot_of(m: &Model, inputs: &Inputs, run: &BackupRun) -> serde_json::Value {
        snapshot(m, inputs, run).expect("a snapshot")
    }

    #[test]
    fn a_dump_restore_gets_its_url_from_the_environment_never_from_the_arguments() {
        let sha = "ab".repeat(32);
        for (from, secret) in [
            (
                format!("url: 'https://dumps.example/shop.dump?sig=s3cr3t', sha256: '{sha}'"),
                None,
            ),
            (
                format!("urlSecret: dump-url, sha256: '{sha}'"),
                Some("dump-url"),
            ),
        ] {
            let m = model(&format!(
                "{{app: shop, image: 'shop:1', database: {{embedded: {{engine: SQLite, path: /data/app.db}}, restore: {{fromUrl: {{{from}}}}}}}}}"
            ));
            let Some(RestoreFrom::Url(dump)) = m.restore.as_ref().map(|r| r.from.clone()) else {
                panic!("a dump");
            };
            let run = RestoreRun {
                job: initial_restore_job_name(&m, &RestoreFrom::Url(dump.clone())),
                backup: String::new(),
                store: Store::Dump(dump),
                into_non_empty: false,
            };
            let job = restore_job(&m, &Inputs::default(), &run).expect("job");
            let c = container(&job);
            let args = c.args.as_ref().expect("present").join(" ");
            assert_eq!(
                args,
                format!("agent restore --sha256 {sha} --engine sqlite --file /data/app.db")
            );
            let url = c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == DUMP_URL_ENV)
                .expect("the URL's variable");
            match secret {
                None => assert_eq!(
                    url.value.as_deref(),
                    Some("https://dumps.example/shop.dump?sig=s3cr3t")
                ),
                Some(name) => {
                    let key = url
                        .value_from
                        .as_ref()
                        .and_then(|v| v.secret_key_ref.as_ref())
                        .expect("from the Secret");
                    assert_eq!((key.name.as_str(), key.key.as_str()), (name, DUMP_URL_KEY));
                    assert!(url.value.is_none());
                }
            }
            // No S3 credentials: a dump needs none.
            assert!(!env_names(c).contains(&ACCESS_KEY_ID), "{:?}", env_names(c));
        }
    }

    #[test]
    fn an_sqlite_backup_runs_beside_the_web_pod_and_a_duckdb_one_needs_no_affinity() {
        let spec = |engine: &str| {
            format!(
                "{{app: shop, image: 'shop:1', database: {{embedded: {{engine: {engine}, path: /data/app.db}}}}, backup: {{destination: {{volume: {{size: 1Gi}}}}}}}}"
            )
        };
        let sqlite = model(&spec("SQLite"));
        let job = job(&sqlite, &Inputs::default(), &run(BackupReason::Manual)).expect("job");
        let pod = job
            .spec
            .as_ref()
            .expect("present")
            .template
            .spec
            .as_ref()
            .expect("present");
        let c = container(&job);
        assert_eq!(c.command, Some(vec![AGENT_BINARY.to_owned()]));
        assert!(
            c.args
                .as_ref()
                .expect("present")
                .join(" ")
                .ends_with("--reason manual --keep 7 --engine sqlite --environment shop-prod --destination /backups --file /data/app.db")
        );
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/tmp", "/backups", "/data"]);
        assert!(pod.affinity.is_some());
        assert!(backup_volume(&sqlite, &Inputs::default()).is_some());
        let duckdb = model(&spec("DuckDB"));
        let job = super::job(&duckdb, &Inputs::default(), &run(BackupReason::Manual)).expect("job");
        let pod = job
            .spec
            .as_ref()
            .expect("present")
            .template
            .spec
            .as_ref()
            .expect("present");
        assert!(pod.affinity.is_none());
        assert!(
            container(&job)
                .args
                .as_ref()
                .expect("present")
                .contains(&"duckdb".to_owned())
        );
    }

    #[test]
    fn a_snapshot_restore_reads_the_file_from_a_claim_made_from_the_snapshot_mounted_read_only() {
        let m = model(
            "{app: dojo, image: 'dojo:1', database: {embedded: {engine: DuckDB, path: /data/ledger.duckdb, storage: {size: 5Gi, storageClassName: csi-rbd}}}, backup: {destination: {volumeSnapshot: {className: csi-snap}}}}",
        );
        let run = RestoreRun {
            job: "dojo-restore-r0123456789".into(),
            backup: "dojo-backup-s1".into(),
            store: Store::Snapshot("dojo-backup-s1".into()),
            into_non_empty: true,
        };
        let job = restore_job(&m, &Inputs::default(), &run).expect("job");
        let c = container(&job);
        assert_eq!(
            c.args.as_ref().expect("present").join(" "),
            "agent restore --url file:///snapshot/ledger.duckdb --into-non-empty --engine duckdb --file /data/ledger.duckdb"
        );
        let snapshot_mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == SNAPSHOT_MOUNT)
            .expect("mounted");
        assert_eq!(snapshot_mount.read_only, Some(true));
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("a pod");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == snapshot_mount.name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .expect("a claim");
        assert_eq!(volume.claim_name, run.job);
        let claim = restore_claim(&m, &Inputs::default(), &run).expect("a claim");
        assert_eq!(claim.metadata.name.as_deref(), Some(run.job.as_str()));
        let spec = claim.spec.as_ref().expect("spec");
        let source = spec.data_source.as_ref().expect("made from the snapshot");
        assert_eq!(
            (
                source.api_group.as_deref(),
                source.kind.as_str(),
                source.name.as_str()
            ),
            (
                Some("snapshot.storage.k8s.io"),
                "VolumeSnapshot",
                "dojo-backup-s1"
            )
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("csi-rbd"));
        assert_eq!(
            claim
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(appenv_api::names::label::COMPONENT))
                .map(String::as_str),
            Some("restore")
        );
        let own = RestoreRun {
            store: Store::Own,
            ..run
        };
        assert!(restore_claim(&m, &Inputs::default(), &own).is_none());
    }

    #[test]
    fn job_names_follow_what_they_back_up() {
        let m = model(&format!(
            "{{app: shop, image: 'shop:1', database: {{postgres: {{}}}}, migrations: {{command: [migrate]}}, backup: {{{S3}}}}}"
        ));
        let before = before_migration_job_name(&m).expect("migrations");
        let migration = migration_job_name(&m, m.migrations.as_ref().expect("present"));
        assert_eq!(before, migration.replace("-migrate-", "-backup-"));
        let at: Timestamp = "2026-12-02T03:00:00Z".parse().expect("present");
        assert_eq!(scheduled_job_name(&m, at), "shop-backup-s202612020300");
        let a = requested_job_name(&m, "2026-12-02T10:00:00Z");
        assert_ne!(a, requested_job_name(&m, "2026-12-02T10:00:01Z"));
        assert!(a.starts_with("shop-backup-r") && a.len() <= 63);
    }
}
