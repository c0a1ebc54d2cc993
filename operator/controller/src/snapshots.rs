//! Backups as CSI `VolumeSnapshot`s (`spec.backup.destination.volumeSnapshot`): created like a
//! backup Job (after web is gone, for DuckDB), read back with a GET while one is being taken (no
//! watch: an environment at rest reads nothing), and pruned to `keep` once one is ready.

use crate::error::Error;
use crate::observe::{BackupJob, Migration};
use appenv_api::names::Component;
use appenv_core::build::{FIELD_MANAGER, SNAPSHOT_API_VERSION, STARTED_ANNOTATION};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};

const KIND: &str = "VolumeSnapshot";

fn resource() -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".to_owned(),
        version: "v1".to_owned(),
        api_version: SNAPSHOT_API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        plural: "volumesnapshots".to_owned(),
    }
}

/// The VolumeSnapshots of a namespace (also what `appenv backup list` reads).
pub fn api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource())
}

fn failed(name: &str, source: kube::Error) -> Error {
    Error::Apply {
        kind: KIND,
        name: name.to_owned(),
        source,
    }
}

/// The snapshot `name` as a backup run: being taken, ready (`backup ID BYTES`, the id the time
/// its backup started, to the millisecond), or failed with the snapshot controller's error.
/// None if it does not exist.
pub async fn observe(client: &Client, ns: &str, name: &str) -> Result<Option<BackupJob>, Error> {
    let found = api(client, ns)
        .get_opt(name)
        .await
        .map_err(|e| failed(name, e))?;
    Ok(found.as_ref().map(as_backup_job))
}

/// What a snapshot's status says, as a backup Job's would.
pub fn as_backup_job(snapshot: &DynamicObject) -> BackupJob {
    let status = snapshot.data.get("status");
    let ready = status
        .and_then(|s| s.get("readyToUse"))
        .and_then(serde_json::Value::as_bool)
        == Some(true);
    let error = status
        .and_then(|s| s.pointer("/error/message"))
        .and_then(serde_json::Value::as_str);
    // When the backup started, to the nanosecond (snapshots of older operators: the creation
    // time, whole seconds).
    let created = snapshot
        .annotations()
        .get(STARTED_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| snapshot.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let taken = status
        .and_then(|s| s.get("creationTime"))
        .and_then(serde_json::Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok());
    let state = match (ready, error) {
        (true, _) => Migration::Succeeded,
        (false, Some(why)) => {
            Migration::Failed(format!("VolumeSnapshot {}: {why}", snapshot.name_any()))
        }
        (false, None) => Migration::Running,
    };
    let result = (ready)
        .then(|| {
            let id = created?.strftime("%Y%m%d-%H%M%S-%3f").to_string();
            let bytes = status
                .and_then(|s| s.get("restoreSize"))
                .and_then(serde_json::Value::as_str)
                .and_then(appenv_core::quantity::parse)
                .map_or(0, |b| b as u64);
            Some(format!("backup {id} {bytes}"))
        })
        .flatten();
    BackupJob {
        component: Component::Backup,
        state,
        started: created,
        finished: ready.then(|| taken.or(created)).flatten(),
        created,
        pod_failure: None,
        result,
    }
}

/// Create the snapshot (server-side apply).
pub async fn create(client: &Client, snapshot: &serde_json::Value) -> Result<(), Error> {
    let field = |name: &str| {
        snapshot
            .pointer(&format!("/metadata/{name}"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (ns, name) = (field("namespace"), field("name"));
    api(client, &ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(snapshot),
        )
        .await
        .map_err(|e| failed(&name, e))?;
    tracing::info!(snapshot = %name, "backup VolumeSnapshot created");
    Ok(())
}

/// Whether `error` says the cluster serves no VolumeSnapshot API (no CSI external-snapshotter
/// installed): the API server answers 404 for the resource itself.
pub fn api_missing(error: &Error) -> bool {
    matches!(error, Error::Apply { source: kube::Error::Api(e), .. } if e.code == 404)
}

/// What a cluster without the VolumeSnapshot API makes of a backup that would be one.
pub const NO_SNAPSHOT_API: &str = "the cluster serves no VolumeSnapshot API (snapshot.storage.k8s.io/v1): install the CSI external-snapshotter and a driver that takes snapshots, or back up to s3 or a volume";

/// Record the running backup as failed with `why` (the snapshot could not be created): web
/// starts again and nothing retries before the next schedule time or request.
pub fn fail_running(status: &mut Option<Box<appenv_api::BackupStatus>>, why: &str, now: Timestamp) {
    let Some(st) = status.as_mut() else {
        return;
    };
    if let Some(mut run) = st.running.take() {
        run.finished_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        run.message = Some(format!("backup VolumeSnapshot {}: {why}", run.job));
        run.web_stopped = false;
        st.last_failure = Some(run);
    }
}

/// Delete the environment's ready backup snapshots but the newest `keep`, and failed ones
/// older than the newest ready one. The names deleted.
pub async fn prune(
    client: &Client,
    ns: &str,
    selector: &str,
    keep: usize,
) -> Result<Vec<String>, Error> {
    let list = api(client, ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| failed(selector, e))?;
    let doomed = past_keep(&list.items, keep);
    for name in &doomed {
        match api(client, ns).delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(snapshot = %name, keep, "old backup VolumeSnapshot deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(failed(name, e)),
        }
    }
    Ok(doomed)
}

/// The labels of the environment's backup VolumeSnapshots.
pub fn backup_selector(model: &appenv_core::validate::Model) -> String {
    format!(
        "{}={},{}={},{}={}",
        appenv_api::names::label::NAME,
        model.app,
        appenv_api::names::label::INSTANCE,
        model.name,
        appenv_api::names::label::COMPONENT,
        Component::Backup.as_str()
    )
}

/// The environment's snapshot (of `selector`) a restore request names: `latest` (the newest
/// ready one) or a name; or why it cannot be restored from.
pub async fn resolve(
    client: &Client,
    ns: &str,
    selector: &str,
    wanted: &str,
) -> Result<Result<String, String>, Error> {
    let list = api(client, ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| failed(selector, e))?;
    Ok(choose(&list.items, wanted))
}

/// [`resolve`]'s choice among the environment's snapshots.
pub fn choose(snapshots: &[DynamicObject], wanted: &str) -> Result<String, String> {
    if wanted == "latest" {
        return snapshots
            .iter()
            .map(|s| (as_backup_job(s), s.name_any()))
            .filter(|(run, _)| run.state == Migration::Succeeded)
            .max_by(|a, b| a.0.created.cmp(&b.0.created).then(a.1.cmp(&b.1)))
            .map(|(_, name)| name)
            .ok_or_else(|| {
                "the environment has no backup VolumeSnapshot that is ready to use".to_owned()
            });
    }
    let Some(found) = snapshots.iter().find(|s| s.name_any() == wanted) else {
        return Err(format!(
            "VolumeSnapshot {wanted} is not one of the environment's backups (`appenv backup list` lists them)"
        ));
    };
    match as_backup_job(found).state {
        Migration::Succeeded => Ok(wanted.to_owned()),
        // "VolumeSnapshot NAME: the snapshot controller's error".
        Migration::Failed(why) => Err(why),
        _ => Err(format!("VolumeSnapshot {wanted} is not ready to use yet")),
    }
}

/// Which snapshots retention deletes: the ready ones past the newest `keep`, and the failed ones
/// older than the newest ready one (snapshots being taken are left alone).
pub fn past_keep(snapshots: &[DynamicObject], keep: usize) -> Vec<String> {
    let mut runs: Vec<(Option<Timestamp>, String, BackupJob)> = snapshots
        .iter()
        .map(|s| {
            let run = as_backup_job(s);
            (run.created, s.name_any(), run)
        })
        .collect();
    // Newest first.
    runs.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let newest_ready = runs
        .iter()
        .find(|(_, _, r)| r.state == Migration::Succeeded)
        .and_then(|(t, _, _)| *t);
    let mut ready = 0;
    let mut doomed = Vec::new();
    for (created, name, run) in runs {
        match run.state {
            Migration::Succeeded => {
                ready += 1;
                if ready > keep {
                    doomed.push(name);
                }
            }
            Migration::Failed(_) if created < newest_ready => doomed.push(name),
            _ => {}
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use appenv_core::build::REASON_ANNOTATION;
    use serde_json::json;

    fn snapshot(name: &str, created: &str, status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": SNAPSHOT_API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": "dojo", "creationTimestamp": created,
                "annotations": {REASON_ANNOTATION: "scheduled"}},
            "spec": {"source": {"persistentVolumeClaimName": "dojo-data"}},
            "status": status,
        }))
        .expect("a snapshot")
    }

    #[test]
    fn a_snapshots_status_reads_as_a_backup_run() {
        let taking = snapshot("a", "2026-12-02T04:00:00Z", json!({}));
        assert_eq!(as_backup_job(&taking).state, Migration::Running);
        let ready = snapshot(
            "a",
            "2026-12-02T04:00:00Z",
            json!({"readyToUse": true, "restoreSize": "1Gi", "creationTime": "2026-12-02T04:00:03Z"}),
        );
        let run = as_backup_job(&ready);
        assert_eq!(run.state, Migration::Succeeded);
        assert_eq!(
            run.result.as_deref(),
            Some("backup 20261202-040000-000 1073741824")
        );
        assert_eq!(
            run.finished.map(|t| t.to_string()).as_deref(),
            Some("2026-12-02T04:00:03Z")
        );
        let failed = snapshot(
            "a",
            "2026-12-02T04:00:00Z",
            json!({"readyToUse": false, "error": {"message": "Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"csi\" not found"}}),
        );
        assert_eq!(
            as_backup_job(&failed).state,
            Migration::Failed(
                "VolumeSnapshot a: Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"csi\" not found".to_owned()
            )
        );
    }

    #[test]
    fn a_restore_takes_the_newest_ready_snapshot_or_the_named_one_if_ready() {
        let ready = json!({"readyToUse": true});
        let snapshots = [
            snapshot("old", "2026-12-01T04:00:00Z", ready.clone()),
            snapshot("new", "2026-12-02T04:00:00Z", ready),
            snapshot("taking", "2026-12-02T05:00:00Z", json!({})),
            snapshot(
                "broken",
                "2026-12-02T06:00:00Z",
                json!({"readyToUse": false, "error": {"message": "disk gone"}}),
            ),
        ];
        assert_eq!(choose(&snapshots, "latest"), Ok("new".to_owned()));
        assert_eq!(choose(&snapshots, "old"), Ok("old".to_owned()));
        assert_eq!(
            choose(&snapshots, "taking"),
            Err("VolumeSnapshot taking is not ready to use yet".to_owned())
        );
        assert_eq!(
            choose(&snapshots, "broken"),
            Err("VolumeSnapshot broken: disk gone".to_owned())
        );
        let missing = choose(&snapshots, "other-env-backup").expect_err("not the environment's");
        assert!(
            missing.contains("is not one of the environment's backups"),
            "{missing}"
        );
        assert_eq!(
            choose(&snapshots[2..3], "latest"),
            Err("the environment has no backup VolumeSnapshot that is ready to use".to_owned())
        );
    }

    #[test]
    fn a_missing_snapshot_api_fails_the_run_and_releases_web() {
        let mut status = Some(Box::new(appenv_api::BackupStatus {
            running: Some(appenv_api::BackupRun {
                job: "dojo-backup-r1".into(),
                reason: "manual".into(),
                web_stopped: true,
                ..Default::default()
            }),
            last_request: Some("2026-12-02T10:00:00Z".into()),
            ..Default::default()
        }));
        let now: Timestamp = "2026-12-02T10:00:05Z".parse().expect("time");
        fail_running(&mut status, NO_SNAPSHOT_API, now);
        let st = status.expect("status");
        assert!(st.running.is_none(), "web starts again");
        let failure = st.last_failure.expect("a failure");
        assert!(!failure.web_stopped);
        assert_eq!(failure.finished_at.map(|t| t.0), Some(now));
        assert_eq!(
            failure.message.as_deref(),
            Some(format!("backup VolumeSnapshot dojo-backup-r1: {NO_SNAPSHOT_API}").as_str())
        );
        assert_eq!(
            st.last_request.as_deref(),
            Some("2026-12-02T10:00:00Z"),
            "not asked again"
        );
        let missing = Error::Apply {
            kind: KIND,
            name: "x".into(),
            source: kube::Error::Api(
                kube::core::Status::failure(
                    "the server could not find the requested resource",
                    "NotFound",
                )
                .with_code(404)
                .boxed(),
            ),
        };
        assert!(api_missing(&missing));
    }

    #[test]
    fn retention_keeps_the_newest_ready_ones_and_drops_older_failures() {
        let ready = json!({"readyToUse": true, "restoreSize": "1Gi"});
        let error = json!({"error": {"message": "x"}});
        let snapshots = [
            snapshot("s1", "2026-12-01T01:00:00Z", ready.clone()),
            snapshot("s2", "2026-12-01T02:00:00Z", error.clone()),
            snapshot("s3", "2026-12-01T03:00:00Z", ready.clone()),
            snapshot("s4", "2026-12-01T04:00:00Z", ready.clone()),
            snapshot("s5", "2026-12-01T05:00:00Z", error),
            snapshot("s6", "2026-12-01T06:00:00Z", json!({})),
        ];
        // s5 failed after the newest ready one: kept (it says why backups fail); s6 is being
        // taken.
        assert_eq!(past_keep(&snapshots, 2), ["s2", "s1"]);
        assert_eq!(past_keep(&snapshots, 5), ["s2"]);
    }

    #[test]
    fn two_backups_in_one_second_keep_their_order_by_when_they_started() {
        let started = |name: &str, at: &str| {
            let mut s = snapshot(
                name,
                "2026-12-02T04:00:07Z",
                json!({"readyToUse": true, "restoreSize": "1Mi"}),
            );
            s.annotations_mut()
                .insert(STARTED_ANNOTATION.to_owned(), at.to_owned());
            s
        };
        // Names sort the other way round (they are hashes of the requests).
        let snapshots = [
            started("dojo-backup-rb", "2026-12-02T04:00:07.120Z"),
            started("dojo-backup-ra", "2026-12-02T04:00:07.930Z"),
        ];
        assert_eq!(past_keep(&snapshots, 1), ["dojo-backup-rb"]);
        assert_eq!(
            choose(&snapshots, "latest"),
            Ok("dojo-backup-ra".to_owned())
        );
        assert_eq!(
            as_backup_job(&snapshots[1]).result.as_deref(),
            Some("backup 20261202-040007-930 1048576"),
            "the id has the milliseconds"
        );
    }
}
