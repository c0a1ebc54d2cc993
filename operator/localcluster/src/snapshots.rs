//! CSI volume snapshots, as a cluster with the external-snapshotter (v4+, `snapshot.storage.
//! k8s.io/v1`) and a CSI driver has them: the CustomResourceDefinitions, a default
//! VolumeSnapshotClass [`SNAPSHOT_CLASS`] for the simulated driver (the kubelet's
//! [`PROVISIONER`]), and simulations of the three components that act on them, writing what
//! they write (statuses, finalizers, Events with their reasons and messages: the real texts,
//! see `snapshots/decide.rs`).
//!
//! - The snapshot controller: for each VolumeSnapshot of a claim it resolves the class (the
//!   named one, else the default class of the volume's driver, written into
//!   `spec.volumeSnapshotClassName`), adds the `volumesnapshot-as-source-protection` finalizer,
//!   creates the content `snapcontent-<snapshot uid>` (`volumeHandle` the PersistentVolume's
//!   name, the class's driver and deletion policy, a `volumeSnapshotRef` to the snapshot) and
//!   copies its status into the snapshot's (`boundVolumeSnapshotContentName`, `creationTime`,
//!   `readyToUse`, `restoreSize` as a quantity such as `1Gi`), with the `CreatingSnapshot`,
//!   `SnapshotCreated` and `SnapshotReady` Events; once bound to a content that deletes with
//!   it, the `volumesnapshot-bound-protection` finalizer. What stands in the way is written as
//!   it does, in `status.error` (`readyToUse: false`) with a Warning Event, and retried when
//!   the missing object appears (the claims and classes are watched): a class that does not
//!   exist (`GetSnapshotClassFailed`), no default class or a claim without a volume when none
//!   is named (`SetDefaultSnapshotClassFailed`), a claim that does not exist or is not Bound,
//!   or a volume another provisioner made (`SnapshotContentCreationFailed`).
//! - The CSI snapshotter (sidecar of the simulated driver): takes the snapshot of a content at
//!   once (`snapshotHandle`, `creationTime` in nanoseconds, `readyToUse: true`, `restoreSize`
//!   the volume's capacity in bytes); deletes it when the content is deleted.
//! - The external-provisioner, for claims of the simulated StorageClass restored from a
//!   snapshot (`dataSource` a VolumeSnapshot): the claim gets its volume only once the
//!   snapshot exists in its namespace, is bound and ready to use, and is no larger than the
//!   claim; until then it stays Pending with a `ProvisioningFailed` Warning Event.
//!
//! Deleting a snapshot follows its finalizers: the content is marked
//! (`volumesnapshot-being-deleted`), deleted if its deletion policy is `Delete` (the CSI
//! snapshotter then releases it), and the snapshot goes once the content is gone; while a
//! Pending claim is restored from it, it waits (`SnapshotDeletePending`).
//!
//! Not simulated: no data is copied anywhere (the simulated volumes have no contents, so a
//! restored volume is as empty as a new one); pre-provisioned snapshots
//! (`source.volumeSnapshotContentName`) are left alone; the source claim's
//! `pvc-as-source-protection` finalizer (the snapshot is cut at once, so it would come and go);
//! contents of classes of other drivers get no status (no sidecar for them, as on a cluster
//! without that driver); group snapshots, snapshot secrets and the validating webhook.
//!
//! Everything runs as kube-runtime controllers: their watches resume after the API server was
//! away (each backing off by itself), a failed write is retried, and every snapshot is looked
//! at again each minute, as the real controllers resync. A snapshot that is ready and a claim
//! that is bound cost no write.

mod decide;

pub use self::decide::{
    Observed, Step, binary_quantity, content_name, go_quote, next_step, quantity_bytes,
    restore_blocker, restores_snapshot,
};
use crate::kubelet::{NODE_NAME, PROVISIONER, STORAGE_CLASS};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, CustomResource, Resource, ResourceExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The API group of volume snapshots.
pub const GROUP: &str = "snapshot.storage.k8s.io";
/// The simulated VolumeSnapshotClass: default, driver [`PROVISIONER`], deletion policy `Delete`.
pub const SNAPSHOT_CLASS: &str = "appenv-sim-snapshots";
/// Marks a VolumeSnapshotClass as its driver's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// On every snapshot of a claim: held while a claim is restored from it.
pub const SOURCE_PROTECTION_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
/// On a snapshot bound to a content that deletes with it: held until the content is gone.
pub const BOUND_PROTECTION_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
/// On a content bound to a snapshot: held until the CSI driver deleted the snapshot.
pub const CONTENT_PROTECTION_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
/// Set on a content whose snapshot is being deleted.
pub const BEING_DELETED_ANNOTATION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";
/// The CRDs, in the order of the documents of `snapshot-crds.yaml`.
pub const CRD_NAMES: [&str; 3] = [
    "volumesnapshotclasses.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
    "volumesnapshots.snapshot.storage.k8s.io",
];
const CRDS_YAML: &str = include_str!("snapshot-crds.yaml");
/// The Events' source, as the real snapshot controller's.
const CONTROLLER_COMPONENT: &str = "snapshot-controller";
/// Field managers: the snapshot controller, the CSI snapshotter sidecar.
const CONTROLLER_MANAGER: &str = "appenv-sim-snapshot-controller";
const SNAPSHOTTER_MANAGER: &str = "appenv-sim-csi-snapshotter";
/// How long the CRDs may take to be Established (well under a second on an idle server).
const ESTABLISHED_LIMIT: Duration = Duration::from_secs(60);
/// After a failed write or read (a conflict, the API server away), look again this much later.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Every object is looked at again this often, as the real controllers resync (a backstop:
/// watches bring what changes).
const RESYNC: Duration = Duration::from_secs(60);

/// A request for a point-in-time snapshot of a claim's volume.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshot",
    namespaced,
    status = "VolumeSnapshotStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    pub source: VolumeSnapshotSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

/// Exactly one: the claim to snapshot, or a pre-provisioned content.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<RestoreSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
}

/// `status.error` of a snapshot or a content.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// A snapshot's `restoreSize`: a quantity (`1Gi`), or an integer (the schema allows both).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum RestoreSize {
    Bytes(i64),
    Quantity(String),
}

impl RestoreSize {
    pub fn bytes(&self) -> Option<i64> {
        match self {
            Self::Bytes(bytes) => Some(*bytes),
            Self::Quantity(quantity) => quantity_bytes(quantity),
        }
    }
}

/// A snapshot on the storage system, bound to the VolumeSnapshot it was taken for.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshotContent",
    status = "VolumeSnapshotContentStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    pub deletion_policy: DeletionPolicy,
    pub driver: String,
    pub source: VolumeSnapshotContentSource,
    pub volume_snapshot_ref: ObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Unix nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
}

/// Whether a content (and the snapshot on the storage) goes with its VolumeSnapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// How snapshots of a driver's volumes are taken (its fields sit at the top of the object).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshotClass",
    no_spec,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClassFields {
    pub driver: String,
    pub deletion_policy: DeletionPolicy,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// The CRD documents of `snapshot-crds.yaml` (YAML, as server-side apply takes it), in the
/// order of [`CRD_NAMES`].
fn crd_documents() -> impl Iterator<Item = &'static str> {
    CRDS_YAML.split("\n---\n").filter(|document| {
        document.lines().any(|line| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#')
        })
    })
}

/// Install the CRDs (waiting until they are Established) and the simulated class, and start
/// the simulated snapshot controller, CSI snapshotter and external-provisioner of restored
/// claims. Their tasks stop when aborted.
pub async fn start(client: &Client) -> Result<Vec<JoinHandle<()>>, kube::Error> {
    install_crds(client).await?;
    apply_class(client).await?;
    let (stores, triggers) = Stores::start(client);
    let tasks = vec![
        tokio::spawn(run_snapshot_controller(
            client.clone(),
            stores.clone(),
            triggers,
        )),
        tokio::spawn(run_restore_provisioner(client.clone(), stores)),
    ];
    Ok(tasks)
}

/// Apply the CRDs, then wait until the API server serves them.
async fn install_crds(client: &Client) -> Result<(), kube::Error> {
    for (name, document) in CRD_NAMES.into_iter().zip(crd_documents()) {
        let request = http::Request::patch(format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}\
             ?fieldManager={CONTROLLER_MANAGER}&force=true"
        ))
        .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
        .body(document.as_bytes().to_vec())
        .map_err(kube::Error::HttpError)?;
        let _: CustomResourceDefinition = client.request(request).await?;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRD_NAMES {
        let established = await_condition(crds.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(ESTABLISHED_LIMIT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(kube::Error::Service(err.into())),
            Err(_) => {
                let message = format!("CRD {name} not Established within {ESTABLISHED_LIMIT:?}");
                return Err(kube::Error::Service(message.into()));
            }
        }
    }
    Ok(())
}

async fn apply_class(client: &Client) -> Result<(), kube::Error> {
    let class = json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshotClass",
        "metadata": {"name": SNAPSHOT_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "driver": PROVISIONER,
        "deletionPolicy": "Delete",
    });
    Api::<VolumeSnapshotClass>::all(client.clone())
        .patch(
            SNAPSHOT_CLASS,
            &PatchParams::apply(CONTROLLER_MANAGER).force(),
            &Patch::Apply(&class),
        )
        .await?;
    Ok(())
}

/// The objects the controllers read, as watches keep them (the snapshots are each
/// controller's own).
#[derive(Clone)]
struct Stores {
    client: Client,
    contents: Store<VolumeSnapshotContent>,
    classes: Store<VolumeSnapshotClass>,
    claims: Store<PersistentVolumeClaim>,
}

type Trigger<K> = futures::stream::BoxStream<'static, Result<K, watcher::Error>>;

/// The watches that fill the [`Stores`]: the snapshot controller's triggers.
struct Triggers {
    contents: Trigger<VolumeSnapshotContent>,
    classes: Trigger<VolumeSnapshotClass>,
    claims: Trigger<PersistentVolumeClaim>,
}

/// A watch of every `K` into a store, and the stream of changed objects that fills it.
fn reflect<K>(client: &Client) -> (Store<K>, Trigger<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .touched_objects()
        // Each watch backs off by itself. An error passed on would make the controller back
        // off all its watches at once, and more with each error: after the API server was
        // away, every watch errs once or twice in turn, which added up to minutes.
        .filter_map(|result| {
            std::future::ready(match result {
                Ok(object) => Some(Ok(object)),
                Err(err) => {
                    tracing::debug!(kind = %K::kind(&()), error = %err, "simulated snapshots: watch");
                    None
                }
            })
        })
        .boxed();
    (reader, stream)
}

impl Stores {
    fn start(client: &Client) -> (Self, Triggers) {
        let (contents, content_trigger) = reflect(client);
        let (classes, class_trigger) = reflect(client);
        let (claims, claim_trigger) = reflect(client);
        let stores = Self {
            client: client.clone(),
            contents,
            classes,
            claims,
        };
        let triggers = Triggers {
            contents: content_trigger,
            classes: class_trigger,
            claims: claim_trigger,
        };
        (stores, triggers)
    }

    /// Wait until every store has its first list: an object not listed yet is not a missing one.
    async fn ready(&self) -> Result<(), kube::Error> {
        futures::future::try_join3(
            self.contents.wait_until_ready(),
            self.classes.wait_until_ready(),
            self.claims.wait_until_ready(),
        )
        .await
        .map(|_| ())
        .map_err(|err| kube::Error::Service(err.into()))
    }
}

/// The snapshot controller (and the CSI snapshotter), until aborted.
async fn run_snapshot_controller(client: Client, stores: Stores, triggers: Triggers) {
    let (snapshots, trigger) = reflect::<VolumeSnapshot>(&client);
    let (by_claim, all) = (snapshots.clone(), snapshots.clone());
    Controller::for_stream(trigger, snapshots)
        .watches_stream(triggers.contents, |content: VolumeSnapshotContent| {
            let target = &content.spec.volume_snapshot_ref;
            target
                .name
                .clone()
                .zip(target.namespace.clone())
                .map(|(name, ns)| ObjectRef::new(&name).within(&ns))
        })
        .watches_stream(triggers.claims, move |claim: PersistentVolumeClaim| {
            snapshots_of_claim(&by_claim, &claim)
        })
        .watches_stream(triggers.classes, move |_: VolumeSnapshotClass| {
            // A class came, changed or went: any snapshot not ready may now find its class.
            all.state()
                .iter()
                .filter(|s| s.status.as_ref().and_then(|s| s.ready_to_use) != Some(true))
                .map(|s| ObjectRef::from_obj(&**s))
                .collect::<Vec<_>>()
        })
        .run(reconcile_snapshot, retry, Arc::new(stores))
        .for_each(|_| std::future::ready(()))
        .await;
}

/// The snapshots a change of the claim may unblock: those of the claim, and the one it is
/// restored from (whose deletion waits for it).
fn snapshots_of_claim(
    snapshots: &Store<VolumeSnapshot>,
    claim: &PersistentVolumeClaim,
) -> Vec<ObjectRef<VolumeSnapshot>> {
    let ns = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let mut refs: Vec<_> = snapshots
        .state()
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(&ns)
                && s.spec.source.persistent_volume_claim_name.as_deref() == Some(&name)
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect();
    refs.extend(restores_snapshot(claim).map(|snapshot| ObjectRef::new(snapshot).within(&ns)));
    refs
}

/// Reconcile failed (a conflict, the API server away): look again soon.
fn retry<K, C>(object: Arc<K>, err: &kube::Error, _: Arc<C>) -> Action
where
    K: Resource,
{
    tracing::debug!(object = %object.meta().name.as_deref().unwrap_or_default(), error = %err,
        "simulated snapshots: retrying");
    Action::requeue(RETRY_AFTER)
}

/// One step of the snapshot controller (or the CSI snapshotter) for a snapshot.
async fn reconcile_snapshot(
    snapshot: Arc<VolumeSnapshot>,
    stores: Arc<Stores>,
) -> Result<Action, kube::Error> {
    stores.ready().await?;
    let ns = snapshot.namespace().unwrap_or_default();
    let content = snapshot
        .status
        .as_ref()
        .and_then(|s| s.bound_volume_snapshot_content_name.clone())
        .unwrap_or_else(|| content_name(&snapshot));
    let content = stores.contents.get(&ObjectRef::new(&content));
    let claim = snapshot
        .spec
        .source
        .persistent_volume_claim_name
        .as_ref()
        .and_then(|name| stores.claims.get(&ObjectRef::new(name).within(&ns)));
    let volume_name = match &content {
        Some(content) => content.spec.source.volume_handle.clone(),
        None => claim
            .as_ref()
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.volume_name.clone()),
    };
    // Only a snapshot still to be taken needs its volume.
    let taken = snapshot
        .status
        .as_ref()
        .is_some_and(|s| s.ready_to_use == Some(true));
    let volume_name =
        volume_name.filter(|_| !taken && snapshot.meta().deletion_timestamp.is_none());
    let volume = match volume_name {
        Some(name) => {
            Api::<PersistentVolume>::all(stores.client.clone())
                .get_opt(&name)
                .await?
        }
        None => None,
    };
    let classes = stores.classes.state();
    let classes: Vec<&VolumeSnapshotClass> = classes.iter().map(|c| &**c).collect();
    let restoring = stores.claims.state().iter().any(|c| {
        c.namespace().as_deref() == Some(&ns)
            && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
            && restores_snapshot(c) == Some(&*snapshot.name_any())
    });
    let seen = Observed {
        classes: &classes,
        claim: claim.as_deref(),
        volume: volume.as_ref(),
        content: content.as_deref(),
        restoring,
    };
    let step = next_step(&snapshot, &seen);
    act(&stores.client, &snapshot, step).await
}

fn snapshot_api(client: &Client, snapshot: &VolumeSnapshot) -> Api<VolumeSnapshot> {
    Api::namespaced(client.clone(), &snapshot.namespace().unwrap_or_default())
}

fn manager(name: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(name.to_owned()),
        ..PatchParams::default()
    }
}

/// Write `step` for the snapshot.
async fn act(
    client: &Client,
    snapshot: &VolumeSnapshot,
    step: Step,
) -> Result<Action, kube::Error> {
    let snapshots = snapshot_api(client, snapshot);
    let contents: Api<VolumeSnapshotContent> = Api::all(client.clone());
    let name = snapshot.name_any();
    // Every write is of what the controller saw at this version: a conflict means it is stale.
    let version = snapshot.resource_version();
    match step {
        Step::Nothing => return Ok(Action::requeue(RESYNC)),
        Step::SetClass(class) => {
            let patch = json!({"metadata": {"resourceVersion": version},
                "spec": {"volumeSnapshotClassName": class}});
            snapshots
                .patch(&name, &manager(CONTROLLER_MANAGER), &Patch::Merge(&patch))
                .await?;
        }
        Step::SetFinalizers(finalizers) => {
            let patch = json!({"metadata": {"resourceVersion": version, "finalizers": finalizers}});
            snapshots
                .patch(&name, &manager(CONTROLLER_MANAGER), &Patch::Merge(&patch))
                .await?;
        }
        Step::Fail { reason, message } => {
            let shown = snapshot.status.as_ref().and_then(|s| s.error.as_ref());
            if shown.and_then(|e| e.message.as_deref()) != Some(&*message) {
                let error = SnapshotError {
                    message: Some(message.clone()),
                    time: Some(Time(Timestamp::now())),
                };
                let patch = json!({"metadata": {"resourceVersion": version},
                    "status": {"error": error, "readyToUse": false}});
                snapshots
                    .patch_status(&name, &manager(CONTROLLER_MANAGER), &Patch::Merge(&patch))
                    .await?;
                record(
                    client,
                    snapshot,
                    CONTROLLER_COMPONENT,
                    true,
                    reason,
                    &message,
                )
                .await;
            }
        }
        Step::CreateContent(content) => {
            let params = PostParams {
                field_manager: Some(CONTROLLER_MANAGER.to_owned()),
                ..PostParams::default()
            };
            match contents.create(&params, &content).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(err) => return Err(err),
            }
            let message = format!(
                "Waiting for a snapshot {}/{name} to be created by the CSI driver.",
                snapshot.namespace().unwrap_or_default()
            );
            record(
                client,
                snapshot,
                CONTROLLER_COMPONENT,
                false,
                "CreatingSnapshot",
                &message,
            )
            .await;
        }
        Step::CutSnapshot { content, status } => {
            let patch = json!({"status": status});
            contents
                .patch_status(
                    &content,
                    &manager(SNAPSHOTTER_MANAGER),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Step::SetStatus { status, events } => {
            let mut body = serde_json::to_value(&status).map_err(kube::Error::SerdeError)?;
            if status.error.is_none() {
                // A merge patch keeps what it does not name: clear the error explicitly.
                body["error"] = Value::Null;
            }
            let patch = json!({"metadata": {"resourceVersion": version}, "status": body});
            snapshots
                .patch_status(&name, &manager(CONTROLLER_MANAGER), &Patch::Merge(&patch))
                .await?;
            for (reason, message) in events {
                record(
                    client,
                    snapshot,
                    CONTROLLER_COMPONENT,
                    false,
                    reason,
                    &message,
                )
                .await;
            }
        }
        Step::Warn { reason, message } => {
            record(
                client,
                snapshot,
                CONTROLLER_COMPONENT,
                true,
                reason,
                &message,
            )
            .await;
            return Ok(Action::requeue(RESYNC));
        }
        Step::AnnotateContent(content) => {
            let patch = json!({"metadata": {"annotations": {BEING_DELETED_ANNOTATION: "yes"}}});
            contents
                .patch(
                    &content,
                    &manager(CONTROLLER_MANAGER),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Step::DeleteContent(content) => {
            match contents.delete(&content, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        Step::ReleaseContent(content) => release_content(&contents, &content).await?,
    }
    // The write's own watch event brings the next step; this is a backstop.
    Ok(Action::requeue(RESYNC))
}

/// The CSI snapshotter deleted the content's snapshot (nothing to delete: it has no data):
/// its finalizer goes.
async fn release_content(
    contents: &Api<VolumeSnapshotContent>,
    name: &str,
) -> Result<(), kube::Error> {
    let Some(content) = contents.get_opt(name).await? else {
        return Ok(());
    };
    let finalizers: Vec<&String> = content
        .finalizers()
        .iter()
        .filter(|f| *f != CONTENT_PROTECTION_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"resourceVersion": content.resource_version(),
        "finalizers": finalizers}});
    contents
        .patch(name, &manager(SNAPSHOTTER_MANAGER), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The external-provisioner of claims restored from snapshots, until aborted.
async fn run_restore_provisioner(client: Client, stores: Stores) {
    let (claims, claim_trigger) = reflect::<PersistentVolumeClaim>(&client);
    let (snapshots, trigger) = reflect::<VolumeSnapshot>(&client);
    let context = Arc::new(Restores { stores, snapshots });
    Controller::for_stream(claim_trigger, claims.clone())
        .watches_stream(trigger, move |snapshot: VolumeSnapshot| {
            let ns = snapshot.namespace();
            let name = snapshot.name_any();
            claims
                .state()
                .iter()
                .filter(|c| c.namespace() == ns && restores_snapshot(c) == Some(&*name))
                .map(|c| ObjectRef::from_obj(&**c))
                .collect::<Vec<_>>()
        })
        .run(reconcile_claim, retry, context)
        .for_each(|_| std::future::ready(()))
        .await;
}

struct Restores {
    stores: Stores,
    snapshots: Store<VolumeSnapshot>,
}

/// Provision a Pending claim of the simulated class restored from a snapshot, once the snapshot
/// is ready; until then, a `ProvisioningFailed` Event says why not.
async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Restores>,
) -> Result<Action, kube::Error> {
    let Some(snapshot_name) = restores_snapshot(&claim) else {
        return Ok(Action::await_change());
    };
    let spec = claim.spec.as_ref();
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound");
    if !pending
        || spec.and_then(|s| s.volume_name.as_ref()).is_some()
        || spec.and_then(|s| s.storage_class_name.as_deref()) != Some(STORAGE_CLASS)
        || claim.meta().deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    ctx.stores.ready().await?;
    ctx.snapshots
        .wait_until_ready()
        .await
        .map_err(|err| kube::Error::Service(err.into()))?;
    let ns = claim.namespace().unwrap_or_default();
    let snapshot = ctx
        .snapshots
        .get(&ObjectRef::new(snapshot_name).within(&ns));
    let content = snapshot
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.bound_volume_snapshot_content_name.as_ref())
        .and_then(|name| ctx.stores.contents.get(&ObjectRef::new(name)));
    match restore_blocker(
        &claim,
        STORAGE_CLASS,
        snapshot.as_deref(),
        content.as_deref(),
    ) {
        Some(message) => {
            let component = format!("{PROVISIONER}_{NODE_NAME}_appenv-sim");
            record(
                &ctx.stores.client,
                &*claim,
                &component,
                true,
                "ProvisioningFailed",
                &message,
            )
            .await;
            Ok(Action::requeue(RESYNC))
        }
        None => {
            let volumes: Api<PersistentVolume> = Api::all(ctx.stores.client.clone());
            crate::kubelet::create_volume(&volumes, &claim).await?;
            Ok(Action::await_change())
        }
    }
}

/// The core/v1 Event client-go's recorder writes about `object` the first time, at `now`.
fn event_object<K>(
    object: &K,
    component: &str,
    warning: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Value
where
    K: Resource<DynamicType = ()>,
{
    let involved = object.object_ref(&());
    let uid = involved.uid.clone().unwrap_or_default();
    let hash = crate::kubelet::events::fnv1a(&[&uid, component, reason, message]);
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{hash:016x}", object.meta().name.as_deref().unwrap_or_default()),
            "namespace": involved.namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    })
}

/// Record an Event about a namespaced `object`: create it, or count one more occurrence (as
/// client-go's correlator does). Best effort, as a recorder is: a failure is only logged.
async fn record<K>(
    client: &Client,
    object: &K,
    component: &str,
    warning: bool,
    reason: &str,
    message: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let now = Timestamp::now();
    let body = event_object(object, component, warning, reason, message, now);
    let ns = body["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let result = crate::kubelet::events::create_or_count(client, &ns, &name, body, now);
    if let Err(err) = result.await {
        tracing::debug!(reason, error = %err, "simulated snapshots: event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;

    fn crds() -> Vec<CustomResourceDefinition> {
        crd_documents()
            .map(|document| serde_norway::from_str(document).expect("a CRD"))
            .collect()
    }

    /// The names of the v1 schema's properties at `path` (e.g. `["spec", "source"]`).
    fn properties<'a>(crd: &'a CustomResourceDefinition, path: &[&str]) -> Vec<&'a str> {
        let mut schema: &JSONSchemaProps = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("a schema");
        for step in path {
            schema = schema
                .properties
                .as_ref()
                .and_then(|p| p.get(*step))
                .expect("the property");
        }
        schema
            .properties
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect()
    }

    fn crd_name<K: Resource<DynamicType = ()>>() -> String {
        format!("{}.{}", K::plural(&()), K::group(&()))
    }

    #[test]
    fn the_crds_are_the_v1_snapshot_api_the_types_read() {
        let crds = crds();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(names, CRD_NAMES);
        assert_eq!(
            [
                crd_name::<VolumeSnapshotClass>(),
                crd_name::<VolumeSnapshotContent>(),
                crd_name::<VolumeSnapshot>(),
            ],
            CRD_NAMES
        );
        for crd in &crds {
            assert_eq!(crd.spec.group, GROUP);
            let [version] = crd.spec.versions.as_slice() else {
                panic!("only v1");
            };
            assert_eq!(
                (version.name.as_str(), version.served, version.storage),
                ("v1", true, true)
            );
            let status = version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref());
            let kind = crd.spec.names.kind.as_str();
            assert_eq!(status.is_some(), kind != "VolumeSnapshotClass", "{kind}");
        }
        let [class, content, snapshot] = crds.as_slice() else {
            panic!("three CRDs");
        };
        let scopes = [&class.spec.scope, &content.spec.scope, &snapshot.spec.scope];
        assert_eq!(scopes, ["Cluster", "Cluster", "Namespaced"]);
        for field in ["driver", "deletionPolicy", "parameters"] {
            assert!(properties(class, &[]).contains(&field), "{field}");
        }
        let expected: [(&CustomResourceDefinition, &[&str], &[&str]); 6] = [
            (snapshot, &["spec"], &["source", "volumeSnapshotClassName"]),
            (
                snapshot,
                &["spec", "source"],
                &["persistentVolumeClaimName", "volumeSnapshotContentName"],
            ),
            (
                snapshot,
                &["status"],
                &[
                    "boundVolumeSnapshotContentName",
                    "creationTime",
                    "error",
                    "readyToUse",
                    "restoreSize",
                ],
            ),
            (
                content,
                &["spec"],
                &[
                    "deletionPolicy",
                    "driver",
                    "source",
                    "volumeSnapshotClassName",
                    "volumeSnapshotRef",
                ],
            ),
            (
                content,
                &["spec", "source"],
                &["snapshotHandle", "volumeHandle"],
            ),
            (
                content,
                &["status"],
                &[
                    "creationTime",
                    "error",
                    "readyToUse",
                    "restoreSize",
                    "snapshotHandle",
                ],
            ),
        ];
        for (crd, path, fields) in expected {
            assert_eq!(properties(crd, path), fields, "{path:?}");
        }
        let columns: Vec<_> = snapshot.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        for column in [
            "ReadyToUse",
            "SourcePVC",
            "RestoreSize",
            "SnapshotClass",
            "SnapshotContent",
            "CreationTime",
            "Age",
        ] {
            assert!(columns.contains(&column), "{column}");
        }
    }

    #[test]
    fn a_class_keeps_its_fields_at_the_top_of_the_object() {
        let class: VolumeSnapshotClass = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "c"}, "driver": "d", "deletionPolicy": "Retain",
        }))
        .expect("a class");
        assert_eq!(class.spec.driver, "d");
        assert_eq!(class.spec.deletion_policy, DeletionPolicy::Retain);
        let written = serde_json::to_value(&class).expect("json");
        assert_eq!(written["driver"], "d");
        assert!(written.get("spec").is_none());
    }

    #[test]
    fn an_event_about_a_snapshot_is_written_as_the_snapshot_controller_writes_it() {
        let snapshot: VolumeSnapshot = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "snap", "namespace": "shop", "uid": "u-1"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
        }))
        .expect("a snapshot");
        let write = || {
            let reason = "GetSnapshotClassFailed";
            event_object(
                &snapshot,
                CONTROLLER_COMPONENT,
                true,
                reason,
                "m",
                Timestamp::now(),
            )
        };
        let body = write();
        let event: k8s_openapi::api::core::v1::Event =
            serde_json::from_value(body.clone()).expect("an Event");
        let involved = &event.involved_object;
        assert_eq!(involved.kind.as_deref(), Some("VolumeSnapshot"));
        assert_eq!(
            involved.api_version.as_deref(),
            Some("snapshot.storage.k8s.io/v1")
        );
        assert_eq!(involved.namespace.as_deref(), Some("shop"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        let source = event.source.and_then(|s| s.component);
        assert_eq!(source.as_deref(), Some("snapshot-controller"));
        let again = write();
        let name = &body["metadata"]["name"];
        assert_eq!(name, &again["metadata"]["name"], "the same Event counts up");
    }
}
