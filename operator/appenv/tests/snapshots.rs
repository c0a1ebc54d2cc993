//! CSI volume snapshots on the local cluster, as a cluster with the external-snapshotter and a
//! CSI driver has them (`appenv_localcluster::snapshots`): a snapshot of a Bound claim becomes
//! ready to use, bound to its content; what stands in the way is reported as the real snapshot
//! controller and external-provisioner report it, and retried once it is gone; a claim restored
//! from a snapshot waits for it; deleting a snapshot deletes its content. Against the real
//! control plane.

mod common;

use appenv_localcluster::kubelet::{PROVISIONER, STORAGE_CLASS, SimKubelet};
use appenv_localcluster::snapshots::{
    BOUND_PROTECTION_FINALIZER, CRD_NAMES, DeletionPolicy, GROUP, RestoreSize, SNAPSHOT_CLASS,
    SOURCE_PROTECTION_FINALIZER, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent,
};
use appenv_localcluster::{ControlPlane, StartOptions};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A claim of 1Gi of the default (simulated) class, restored from `snapshot` if given.
async fn create_claim(client: &Client, ns: &str, name: &str, snapshot: Option<&str>) {
    let mut claim = json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let Some(snapshot) = snapshot {
        claim["spec"]["dataSource"] =
            json!({"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": snapshot});
    }
    let claim: PersistentVolumeClaim = serde_json::from_value(claim).expect("a valid claim");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create the claim");
}

fn phase(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.status.as_ref()?.phase.as_deref()
}

async fn wait_bound(client: &Client, ns: &str, name: &str) -> PersistentVolumeClaim {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    common::wait_for(
        &claims,
        name,
        LIMIT,
        "Bound",
        |c: Option<&PersistentVolumeClaim>| c.and_then(phase) == Some("Bound"),
    )
    .await
    .expect("the claim")
}

/// A snapshot of `claim`, of `class` (none: the default class).
async fn create_snapshot(client: &Client, ns: &str, name: &str, claim: &str, class: Option<&str>) {
    let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    let snapshot: VolumeSnapshot = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshot",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a valid VolumeSnapshot");
    Api::<VolumeSnapshot>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &snapshot)
        .await
        .expect("create the VolumeSnapshot");
}

fn ready(snapshot: &VolumeSnapshot) -> bool {
    snapshot
        .status
        .as_ref()
        .is_some_and(|s| s.ready_to_use == Some(true))
}

async fn wait_ready(client: &Client, ns: &str, name: &str) -> VolumeSnapshot {
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    common::wait_for(
        &snapshots,
        name,
        LIMIT,
        "readyToUse",
        |s: Option<&VolumeSnapshot>| s.is_some_and(ready),
    )
    .await
    .expect("the VolumeSnapshot")
}

/// The snapshot once its `status.error.message` is `message`.
async fn wait_error(client: &Client, ns: &str, name: &str, message: &str) -> VolumeSnapshot {
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let message = message.to_owned();
    common::wait_for(
        &snapshots,
        name,
        LIMIT,
        "failed",
        move |s: Option<&VolumeSnapshot>| {
            s.and_then(|s| s.status.as_ref())
                .and_then(|s| s.error.as_ref())
                .and_then(|e| e.message.as_deref())
                == Some(&*message)
        },
    )
    .await
    .expect("the VolumeSnapshot")
}

/// The first Event about the object `name` of `kind` with `reason` and `message`, through a
/// watch.
async fn wait_event(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    reason: &str,
    message: &str,
) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("involvedObject.name={name}"));
    let mut stream = watcher::watcher(events.clone(), config)
        .applied_objects()
        .boxed();
    let found = tokio::time::timeout(LIMIT, async {
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            if event.involved_object.kind.as_deref() == Some(kind)
                && event.reason.as_deref() == Some(reason)
                && event.message.as_deref() == Some(message)
            {
                return Some(event);
            }
        }
        None
    })
    .await;
    if let Ok(Some(event)) = found {
        return event;
    }
    let seen: Vec<_> = events
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.involved_object.name, e.reason, e.message))
        .collect();
    panic!("no Event {reason}: {message:?} about {kind} {name} within {LIMIT:?}; seen: {seen:#?}")
}

fn content_of(snapshot: &VolumeSnapshot) -> String {
    snapshot
        .status
        .as_ref()
        .and_then(|s| s.bound_volume_snapshot_content_name.clone())
        .expect("bound to a content")
}

#[tokio::test]
async fn the_snapshot_crds_are_established_with_structural_schemas() {
    let client = common::client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in CRD_NAMES {
        let crd = crds.get(name).await.expect("the CRD");
        let conditions: Vec<_> = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.type_, c.status))
            .collect();
        for (type_, status) in [
            ("Established", "True"),
            ("NamesAccepted", "True"),
            ("KubernetesAPIApprovalPolicyConformant", "True"),
        ] {
            assert!(
                conditions.contains(&(type_.to_owned(), status.to_owned())),
                "{name}: {conditions:?}"
            );
        }
        assert!(
            !conditions.iter().any(|(t, _)| t == "NonStructuralSchema"),
            "{name}: {conditions:?}"
        );
    }
}

#[tokio::test]
async fn a_snapshot_of_a_bound_claim_becomes_ready_bound_to_its_content() {
    let client = common::client().await;
    let ns = common::namespace(&client, "snap-ready").await;
    create_claim(&client, &ns, "data", None).await;
    let claim = wait_bound(&client, &ns, "data").await;
    create_snapshot(&client, &ns, "snap", "data", None).await;

    let snapshot = wait_ready(&client, &ns, "snap").await;
    assert_eq!(
        snapshot.spec.volume_snapshot_class_name.as_deref(),
        Some(SNAPSHOT_CLASS),
        "the default class of the volume's driver is named"
    );
    let status = snapshot.status.clone().expect("status");
    let uid = snapshot.uid().expect("uid");
    assert_eq!(content_of(&snapshot), format!("snapcontent-{uid}"));
    assert_eq!(
        status.restore_size,
        Some(RestoreSize::Quantity("1Gi".into()))
    );
    assert!(
        status.creation_time.is_some() && status.error.is_none(),
        "{status:?}"
    );
    for finalizer in [SOURCE_PROTECTION_FINALIZER, BOUND_PROTECTION_FINALIZER] {
        assert!(
            snapshot.finalizers().iter().any(|f| f == finalizer),
            "{finalizer}"
        );
    }

    let content = Api::<VolumeSnapshotContent>::all(client.clone())
        .get(&content_of(&snapshot))
        .await
        .expect("the content");
    let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
    assert_eq!(content.spec.source.volume_handle, volume);
    assert_eq!(content.spec.driver, PROVISIONER);
    assert_eq!(content.spec.deletion_policy, DeletionPolicy::Delete);
    assert_eq!(
        content.spec.volume_snapshot_class_name.as_deref(),
        Some(SNAPSHOT_CLASS)
    );
    let target = &content.spec.volume_snapshot_ref;
    assert_eq!(
        (
            target.namespace.as_deref(),
            target.name.as_deref(),
            target.uid.as_deref()
        ),
        (Some(&*ns), Some("snap"), Some(&*uid))
    );
    let shown = content.status.clone().expect("the content's status");
    assert_eq!(
        (shown.ready_to_use, shown.restore_size),
        (Some(true), Some(1 << 30))
    );
    assert!(shown.snapshot_handle.is_some() && shown.creation_time.is_some());

    for (reason, message) in [
        (
            "CreatingSnapshot",
            format!("Waiting for a snapshot {ns}/snap to be created by the CSI driver."),
        ),
        (
            "SnapshotCreated",
            format!("Snapshot {ns}/snap was successfully created by the CSI driver."),
        ),
        (
            "SnapshotReady",
            format!("Snapshot {ns}/snap is ready to use."),
        ),
    ] {
        let event = wait_event(&client, &ns, "VolumeSnapshot", "snap", reason, &message).await;
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        let source = event.source.and_then(|s| s.component);
        assert_eq!(source.as_deref(), Some("snapshot-controller"));
    }
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_snapshot_naming_a_missing_class_fails_until_the_class_exists() {
    let client = common::client().await;
    let ns = common::namespace(&client, "snap-class").await;
    let class = format!("gold-{ns}");
    create_claim(&client, &ns, "data", None).await;
    wait_bound(&client, &ns, "data").await;
    create_snapshot(&client, &ns, "snap", "data", Some(&class)).await;

    let message = format!(
        "Failed to get snapshot class with error \
         volumesnapshotclass.snapshot.storage.k8s.io \"{class}\" not found"
    );
    let failed = wait_error(&client, &ns, "snap", &message).await;
    let status = failed.status.expect("status");
    assert_eq!(status.ready_to_use, Some(false));
    assert!(status.error.and_then(|e| e.time).is_some());
    let event = wait_event(
        &client,
        &ns,
        "VolumeSnapshot",
        "snap",
        "GetSnapshotClassFailed",
        &message,
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    let classes: Api<VolumeSnapshotClass> = Api::all(client.clone());
    let gold: VolumeSnapshotClass = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshotClass",
        "metadata": {"name": class}, "driver": PROVISIONER, "deletionPolicy": "Retain",
    }))
    .expect("a valid class");
    classes
        .create(&PostParams::default(), &gold)
        .await
        .expect("create the class");
    let snapshot = wait_ready(&client, &ns, "snap").await;
    assert!(
        snapshot
            .status
            .as_ref()
            .and_then(|s| s.error.as_ref())
            .is_none(),
        "cleared"
    );
    let contents: Api<VolumeSnapshotContent> = Api::all(client.clone());
    let content = contents
        .get(&content_of(&snapshot))
        .await
        .expect("the content");
    assert_eq!(
        content.spec.deletion_policy,
        DeletionPolicy::Retain,
        "the class's"
    );

    common::cleanup(&client, &ns).await;
    let _ = classes.delete(&class, &DeleteParams::default()).await;
    let _ = contents
        .delete(&content.name_any(), &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_snapshot_of_a_missing_claim_waits_for_the_claim() {
    let client = common::client().await;
    let ns = common::namespace(&client, "snap-claim").await;
    create_snapshot(&client, &ns, "snap", "data", Some(SNAPSHOT_CLASS)).await;

    let message = "Failed to create snapshot content with error snapshot controller failed to \
                   update snap on API server: cannot get claim from snapshot";
    wait_error(&client, &ns, "snap", message).await;
    let event = wait_event(
        &client,
        &ns,
        "VolumeSnapshot",
        "snap",
        "SnapshotContentCreationFailed",
        message,
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    create_claim(&client, &ns, "data", None).await;
    let snapshot = wait_ready(&client, &ns, "snap").await;
    assert!(snapshot.status.and_then(|s| s.error).is_none());
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_claim_restored_from_a_snapshot_is_pending_until_the_snapshot_is_ready() {
    let client = common::client().await;
    let ns = common::namespace(&client, "snap-restore").await;
    create_claim(&client, &ns, "copy", Some("snap")).await;

    let message = format!(
        "failed to provision volume with StorageClass \"{STORAGE_CLASS}\": error getting handle \
         for DataSource Type VolumeSnapshot by Name snap: error getting snapshot snap from api \
         server: volumesnapshots.snapshot.storage.k8s.io \"snap\" not found"
    );
    let event = wait_event(
        &client,
        &ns,
        "PersistentVolumeClaim",
        "copy",
        "ProvisioningFailed",
        &message,
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let waiting = claims.get("copy").await.expect("the claim");
    assert_eq!(phase(&waiting), Some("Pending"));
    assert!(
        waiting
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .is_none()
    );

    create_claim(&client, &ns, "data", None).await;
    create_snapshot(&client, &ns, "snap", "data", None).await;
    wait_ready(&client, &ns, "snap").await;
    let restored = wait_bound(&client, &ns, "copy").await;
    let volume = restored.spec.and_then(|s| s.volume_name).expect("a volume");
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .expect("the volume");
    let capacity = volume.spec.and_then(|s| s.capacity).unwrap_or_default();
    assert_eq!(capacity.get("storage").map(|q| q.0.as_str()), Some("1Gi"));
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn deleting_a_snapshot_deletes_its_content() {
    let client = common::client().await;
    let ns = common::namespace(&client, "snap-delete").await;
    create_claim(&client, &ns, "data", None).await;
    wait_bound(&client, &ns, "data").await;
    create_snapshot(&client, &ns, "snap", "data", None).await;
    let snapshot = wait_ready(&client, &ns, "snap").await;
    let content = content_of(&snapshot);

    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), &ns);
    snapshots
        .delete("snap", &DeleteParams::default())
        .await
        .expect("delete the snapshot");
    let contents: Api<VolumeSnapshotContent> = Api::all(client.clone());
    common::wait_for(
        &contents,
        &content,
        LIMIT,
        "deleted",
        |c: Option<&VolumeSnapshotContent>| c.is_none(),
    )
    .await;
    common::wait_for(
        &snapshots,
        "snap",
        LIMIT,
        "deleted",
        |s: Option<&VolumeSnapshot>| s.is_none(),
    )
    .await;
    common::cleanup(&client, &ns).await;
}

/// The simulation outlives a restart of kube-apiserver (its watches resume, its writes are
/// retried): after one, a new snapshot is taken, a claim is restored from it and an older
/// snapshot is deleted with its content. On a control plane of the test's own.
#[tokio::test]
async fn snapshots_are_served_after_the_api_server_restarts() {
    let control_plane = ControlPlane::start(StartOptions::default())
        .await
        .expect("the test's own control plane starts");
    let client = control_plane.client().await.expect("client");
    let kubelet = SimKubelet::start(client.clone())
        .await
        .expect("the simulated kubelet starts");
    let ns = common::namespace(&client, "snap-restart").await;
    create_claim(&client, &ns, "data", None).await;
    wait_bound(&client, &ns, "data").await;
    create_snapshot(&client, &ns, "before", "data", None).await;
    let before = content_of(&wait_ready(&client, &ns, "before").await);

    control_plane.restart_apiserver().await.expect("restart");
    create_snapshot(&client, &ns, "after", "data", None).await;
    create_claim(&client, &ns, "copy", Some("after")).await;
    wait_ready(&client, &ns, "after").await;
    wait_bound(&client, &ns, "copy").await;
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(client.clone(), &ns);
    snapshots
        .delete("before", &DeleteParams::default())
        .await
        .expect("delete the snapshot");
    let contents: Api<VolumeSnapshotContent> = Api::all(client.clone());
    common::wait_for(
        &contents,
        &before,
        LIMIT,
        "deleted",
        |c: Option<&VolumeSnapshotContent>| c.is_none(),
    )
    .await;
    drop(kubelet);
    control_plane.shutdown();
}
