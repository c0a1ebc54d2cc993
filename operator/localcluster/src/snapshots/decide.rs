//! What the simulated snapshot controller, CSI snapshotter and external-provisioner do next, as
//! pure functions of a snapshot (or a claim) and the objects around it. The messages are the
//! real components' texts (external-snapshotter v4+ `pkg/common-controller/
//! snapshot_controller{,_base}.go`, external-provisioner `pkg/controller/controller.go`), with
//! Go's `%q` quoting where they use it.

use super::{
    BEING_DELETED_ANNOTATION, BOUND_PROTECTION_FINALIZER, CONTENT_PROTECTION_FINALIZER,
    DEFAULT_CLASS_ANNOTATION, DeletionPolicy, GROUP, RestoreSize, SOURCE_PROTECTION_FINALIZER,
    VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent, VolumeSnapshotContentSource,
    VolumeSnapshotContentSpec, VolumeSnapshotContentStatus, VolumeSnapshotStatus,
};
use crate::kubelet::PROVISIONER;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource as _, ResourceExt as _};

/// What the controller saw around one snapshot, read from its stores (and the volume from the
/// API server).
#[derive(Debug, Default, Clone, Copy)]
pub struct Observed<'a> {
    /// Every VolumeSnapshotClass.
    pub classes: &'a [&'a VolumeSnapshotClass],
    /// The claim named as the snapshot's source, if it exists.
    pub claim: Option<&'a PersistentVolumeClaim>,
    /// The snapshot's volume, if it exists: the content's `volumeHandle` once the content
    /// exists, else the claim's `volumeName`.
    pub volume: Option<&'a PersistentVolume>,
    /// The snapshot's content ([`content_name`], or the one its status names), if it exists.
    pub content: Option<&'a VolumeSnapshotContent>,
    /// Whether a Pending claim of the snapshot's namespace is being restored from it.
    pub restoring: bool,
}

/// The next write for a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to write: done, or waiting for nothing the controller can do.
    Nothing,
    /// Name the default class in `spec.volumeSnapshotClassName`, as the real controller does.
    SetClass(String),
    /// Replace the snapshot's finalizers by these.
    SetFinalizers(Vec<String>),
    /// `status.error` (and `readyToUse: false`) with a Warning Event of this reason.
    Fail {
        reason: &'static str,
        message: String,
    },
    /// Create the content (then a Normal `CreatingSnapshot` Event).
    CreateContent(Box<VolumeSnapshotContent>),
    /// The CSI snapshotter took the snapshot: the content's status.
    CutSnapshot {
        content: String,
        status: Box<VolumeSnapshotContentStatus>,
    },
    /// The snapshot's status from its content's, with the Normal Events of the change.
    SetStatus {
        status: Box<VolumeSnapshotStatus>,
        events: Vec<(&'static str, String)>,
    },
    /// A Warning Event only: the snapshot's deletion waits.
    Warn {
        reason: &'static str,
        message: String,
    },
    /// Mark the content: its snapshot is being deleted.
    AnnotateContent(String),
    DeleteContent(String),
    /// The CSI snapshotter deleted the snapshot: the content's finalizer goes.
    ReleaseContent(String),
}

/// A snapshot's status error and Warning Event.
fn fail(reason: &'static str, message: impl Into<String>) -> Step {
    Step::Fail {
        reason,
        message: message.into(),
    }
}

/// The name of the content of a dynamically taken snapshot.
pub fn content_name(snapshot: &VolumeSnapshot) -> String {
    format!("snapcontent-{}", snapshot.uid().unwrap_or_default())
}

/// `namespace/name`, as the snapshot controller's messages name a snapshot.
fn key(snapshot: &VolumeSnapshot) -> String {
    format!(
        "{}/{}",
        snapshot.namespace().unwrap_or_default(),
        snapshot.name_any()
    )
}

/// The snapshot a claim is restored from: its `dataSource` names a VolumeSnapshot.
pub fn restores_snapshot(claim: &PersistentVolumeClaim) -> Option<&str> {
    let source = claim.spec.as_ref()?.data_source.as_ref()?;
    (source.kind == "VolumeSnapshot" && source.api_group.as_deref() == Some(GROUP))
        .then_some(source.name.as_str())
}

/// Go's `%q` of a string: quoted, with `"` and `\` escaped.
pub fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The API server's NotFound message, as client-go errors print it.
fn not_found(resource: &str, name: &str) -> String {
    format!("{resource} {} not found", go_quote(name))
}

/// The bytes of a resource quantity (`1Gi`, `500M`, `1.5Gi`, `1e9`), rounded up as Go's
/// `Quantity.Value()` does; `None` if it is not one or is negative.
pub fn quantity_bytes(quantity: &str) -> Option<i64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let (scale, divisor): (i128, i128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?.parse::<u32>().ok()?;
            (10_i128.checked_pow(digits)?, 1)
        }
    };
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let parse = |digits: &str| -> Option<i128> {
        if digits.is_empty() {
            Some(0)
        } else {
            digits.parse().ok()
        }
    };
    let fraction_scale = 10_i128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let numerator =
        (parse(whole)?.checked_mul(fraction_scale)? + parse(fraction)?).checked_mul(scale)?;
    let denominator = fraction_scale.checked_mul(divisor)?;
    i64::try_from((numerator + denominator - 1) / denominator).ok()
}

/// A number of bytes as Go's `resource.NewQuantity(n, BinarySI).String()` writes it: the
/// largest binary suffix that divides it (`1Gi`, `1536Ki`), plain below 1024 or when none does.
pub fn binary_quantity(bytes: i64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes.unsigned_abs() < 1024 {
        return bytes.to_string();
    }
    let (mut amount, mut exponent) = (bytes, 0);
    while amount % 1024 == 0 && exponent < SUFFIXES.len() - 1 {
        amount /= 1024;
        exponent += 1;
    }
    format!("{amount}{}", SUFFIXES[exponent])
}

fn has_finalizer(snapshot: &VolumeSnapshot, finalizer: &str) -> bool {
    snapshot.finalizers().iter().any(|f| f == finalizer)
}

fn is_ready(snapshot: &VolumeSnapshot) -> bool {
    snapshot.status.as_ref().is_some_and(|s| {
        s.ready_to_use == Some(true) && s.bound_volume_snapshot_content_name.is_some()
    })
}

/// Whether the content is the one dynamically taken for this snapshot (points back to it).
fn bound_to(content: &VolumeSnapshotContent, snapshot: &VolumeSnapshot) -> bool {
    let target = &content.spec.volume_snapshot_ref;
    target.uid == snapshot.uid()
        && target.name.as_deref() == Some(&*snapshot.name_any())
        && target.namespace == snapshot.namespace()
}

/// What the snapshot controller does next for `snapshot`.
pub fn next_step(snapshot: &VolumeSnapshot, seen: &Observed<'_>) -> Step {
    if snapshot.meta().deletion_timestamp.is_some() {
        return deletion_step(snapshot, seen);
    }
    let source = &snapshot.spec.source;
    let claim_name = match (
        &source.persistent_volume_claim_name,
        &source.volume_snapshot_content_name,
    ) {
        (Some(claim), None) => claim,
        // Pre-provisioned snapshots are not simulated.
        (None, Some(_)) => return Step::Nothing,
        _ => {
            return fail(
                "SnapshotValidationError",
                "Exactly one of PersistentVolumeClaimName and VolumeSnapshotContentName should be specified",
            );
        }
    };
    let class = match resolve_class(snapshot, seen) {
        Ok(class) => class,
        Err(step) => return step,
    };
    if let Some(step) = add_finalizers(snapshot, seen) {
        return step;
    }
    if is_ready(snapshot) {
        return Step::Nothing;
    }
    match seen.content {
        Some(content) => content_step(snapshot, content, seen),
        None => match create_content(snapshot, claim_name, class, seen) {
            Ok(content) => Step::CreateContent(Box::new(content)),
            Err(error) => fail(
                "SnapshotContentCreationFailed",
                format!("Failed to create snapshot content with error {error}"),
            ),
        },
    }
}

/// The snapshot's class: the one it names, or the default class of its volume's driver
/// (written into its spec first). `Err` holds the step in the way.
fn resolve_class<'a>(
    snapshot: &VolumeSnapshot,
    seen: &Observed<'a>,
) -> Result<&'a VolumeSnapshotClass, Step> {
    if let Some(name) = &snapshot.spec.volume_snapshot_class_name {
        return seen
            .classes
            .iter()
            .copied()
            .find(|c| c.name_any() == *name)
            .ok_or_else(|| {
                let error = not_found("volumesnapshotclass.snapshot.storage.k8s.io", name);
                fail(
                    "GetSnapshotClassFailed",
                    format!("Failed to get snapshot class with error {error}"),
                )
            });
    }
    let set_default_failed = |error: String| {
        fail(
            "SetDefaultSnapshotClassFailed",
            format!("Failed to set default snapshot class with error {error}"),
        )
    };
    let driver = volume_driver(snapshot, seen).map_err(set_default_failed)?;
    let defaults: Vec<_> = seen
        .classes
        .iter()
        .filter(|c| {
            c.annotations()
                .get(DEFAULT_CLASS_ANNOTATION)
                .map(String::as_str)
                == Some("true")
                && c.spec.driver == driver
        })
        .collect();
    match defaults.as_slice() {
        [] => Err(set_default_failed(
            "cannot find default snapshot class".into(),
        )),
        [class] => Err(Step::SetClass(class.name_any())),
        more => Err(set_default_failed(format!(
            "{} default snapshot classes were found",
            more.len()
        ))),
    }
}

/// The volume of the snapshot's claim, checked as `getVolumeFromVolumeSnapshot` does.
fn claim_volume<'a>(
    snapshot: &VolumeSnapshot,
    seen: &Observed<'a>,
) -> Result<&'a PersistentVolume, String> {
    let claim_name = snapshot
        .spec
        .source
        .persistent_volume_claim_name
        .as_deref()
        .unwrap_or_default();
    let Some(claim) = seen.claim else {
        return Err(format!(
            "failed to retrieve PVC {claim_name} from the lister: {}",
            go_quote(&not_found("persistentvolumeclaim", claim_name))
        ));
    };
    if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        return Err(format!(
            "the PVC {claim_name} is not yet bound to a PV, will not attempt to take a snapshot"
        ));
    }
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default();
    let Some(volume) = seen.volume.filter(|v| v.name_any() == volume_name) else {
        return Err(format!(
            "failed to retrieve PV {volume_name} from the API server: {}",
            go_quote(&not_found("persistentvolumes", volume_name))
        ));
    };
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let bound = claim_ref.is_some_and(|r| {
        r.name.as_deref() == Some(&*claim.name_any())
            && r.namespace == claim.namespace()
            && (r.uid.as_deref().is_none_or(str::is_empty) || r.uid == claim.uid())
    });
    if !bound {
        return Err("claim in dataSource not bound or invalid".into());
    }
    Ok(volume)
}

/// Whether the volume is a CSI volume of the simulated driver: one the simulated provisioner
/// made (its PersistentVolumes are hostPath ones, standing in for CSI volumes).
fn simulated(volume: &PersistentVolume) -> bool {
    volume
        .annotations()
        .get("pv.kubernetes.io/provisioned-by")
        .is_some_and(|p| p == PROVISIONER)
}

/// The CSI driver of the snapshot's volume (`pvDriverFromSnapshot`).
fn volume_driver(snapshot: &VolumeSnapshot, seen: &Observed<'_>) -> Result<&'static str, String> {
    let volume = claim_volume(snapshot, seen)?;
    if simulated(volume) {
        Ok(PROVISIONER)
    } else {
        Err(format!(
            "snapshotting non-CSI volumes is not supported, snapshot:{}",
            key(snapshot)
        ))
    }
}

/// The finalizers to add: the source protection always, the bound protection once a content
/// that deletes with the snapshot is bound to it.
fn add_finalizers(snapshot: &VolumeSnapshot, seen: &Observed<'_>) -> Option<Step> {
    let bound_deletes = seen
        .content
        .is_some_and(|c| bound_to(c, snapshot) && c.spec.deletion_policy == DeletionPolicy::Delete);
    let mut finalizers = snapshot.finalizers().to_vec();
    for (needed, finalizer) in [
        (true, SOURCE_PROTECTION_FINALIZER),
        (bound_deletes, BOUND_PROTECTION_FINALIZER),
    ] {
        if needed && !has_finalizer(snapshot, finalizer) {
            finalizers.push(finalizer.to_owned());
        }
    }
    (finalizers.len() != snapshot.finalizers().len()).then_some(Step::SetFinalizers(finalizers))
}

/// The content exists: the CSI snapshotter takes the snapshot, then its status is the
/// snapshot's.
fn content_step(
    snapshot: &VolumeSnapshot,
    content: &VolumeSnapshotContent,
    seen: &Observed<'_>,
) -> Step {
    if !bound_to(content, snapshot) {
        return fail(
            "SnapshotContentMisbound",
            format!(
                "VolumeSnapshotContent [{}] is bound to a different snapshot",
                content.name_any()
            ),
        );
    }
    if content.status.is_none()
        && content.spec.driver == PROVISIONER
        && let Some(status) = cut_snapshot(content, seen.volume)
    {
        return Step::CutSnapshot {
            content: content.name_any(),
            status: Box::new(status),
        };
    }
    match status_from(snapshot, content) {
        Some((status, events)) => Step::SetStatus {
            status: Box::new(status),
            events,
        },
        None => Step::Nothing,
    }
}

/// What the simulated CSI driver answers to `CreateSnapshot` of the content's volume: ready at
/// once, the size of the volume (no data is copied: the simulated volumes have none).
fn cut_snapshot(
    content: &VolumeSnapshotContent,
    volume: Option<&PersistentVolume>,
) -> Option<VolumeSnapshotContentStatus> {
    let handle = content.spec.source.volume_handle.as_deref()?;
    let volume = volume.filter(|v| v.name_any() == handle)?;
    let size = volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity_bytes(&q.0));
    let uid = content
        .spec
        .volume_snapshot_ref
        .uid
        .as_deref()
        .unwrap_or_default();
    Some(VolumeSnapshotContentStatus {
        snapshot_handle: Some(format!("appenv-sim-snapshot-{uid}")),
        creation_time: Timestamp::now().as_nanosecond().try_into().ok(),
        ready_to_use: Some(true),
        restore_size: size,
        error: None,
    })
}

/// The snapshot's status brought up to its content's (`updateSnapshotStatus`), and the Events
/// of the change; `None` if it already shows it.
fn status_from(
    snapshot: &VolumeSnapshot,
    content: &VolumeSnapshotContent,
) -> Option<(VolumeSnapshotStatus, Vec<(&'static str, String)>)> {
    let old = snapshot.status.clone().unwrap_or_default();
    let shown = content.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.bound_volume_snapshot_content_name = Some(content.name_any());
    if status.creation_time.is_none()
        && let Some(nanos) = shown.creation_time
    {
        status.creation_time = Timestamp::from_nanosecond(i128::from(nanos)).ok().map(Time);
    }
    let ready = shown.ready_to_use.unwrap_or(false);
    if status.ready_to_use != Some(ready) {
        status.ready_to_use = Some(ready);
        if ready {
            status.error = None;
        }
    }
    let zero = status
        .restore_size
        .as_ref()
        .is_none_or(|s| s.bytes() == Some(0));
    if zero && let Some(bytes) = shown.restore_size.filter(|b| *b > 0) {
        status.restore_size = Some(RestoreSize::Quantity(binary_quantity(bytes)));
    }
    if status == old {
        return None;
    }
    let mut events = Vec::new();
    if old.creation_time.is_none() && status.creation_time.is_some() {
        let message = format!(
            "Snapshot {} was successfully created by the CSI driver.",
            key(snapshot)
        );
        events.push(("SnapshotCreated", message));
    }
    if old.ready_to_use != Some(true) && ready {
        events.push((
            "SnapshotReady",
            format!("Snapshot {} is ready to use.", key(snapshot)),
        ));
    }
    Some((status, events))
}

/// The content for the snapshot (`createSnapshotContent`), or the error in the way.
fn create_content(
    snapshot: &VolumeSnapshot,
    claim_name: &str,
    class: &VolumeSnapshotClass,
    seen: &Observed<'_>,
) -> Result<VolumeSnapshotContent, String> {
    // `ensurePVCFinalizer` reads the claim first, and fails as an update would.
    let update_failed = |name: &str, why: &str| {
        format!("snapshot controller failed to update {name} on API server: {why}")
    };
    let Some(claim) = seen.claim else {
        return Err(update_failed(
            &snapshot.name_any(),
            "cannot get claim from snapshot",
        ));
    };
    if claim.meta().deletion_timestamp.is_some() {
        return Err(update_failed(
            claim_name,
            "cannot add finalizer on claim because it is being deleted",
        ));
    }
    let volume = claim_volume(snapshot, seen).map_err(|error| {
        format!(
            "failed to get input parameters to create snapshot {}: {}",
            snapshot.name_any(),
            go_quote(&error)
        )
    })?;
    if !simulated(volume) {
        return Err(format!(
            "cannot find CSI PersistentVolumeSource for volume {}",
            volume.name_any()
        ));
    }
    let spec = VolumeSnapshotContentSpec {
        deletion_policy: class.spec.deletion_policy,
        driver: class.spec.driver.clone(),
        source: VolumeSnapshotContentSource {
            volume_handle: Some(volume.name_any()),
            snapshot_handle: None,
        },
        volume_snapshot_ref: ObjectReference {
            api_version: Some(format!("{GROUP}/v1")),
            kind: Some("VolumeSnapshot".into()),
            namespace: snapshot.namespace(),
            name: Some(snapshot.name_any()),
            uid: snapshot.uid(),
            resource_version: snapshot.resource_version(),
            field_path: None,
        },
        volume_snapshot_class_name: Some(class.name_any()),
    };
    let mut content = VolumeSnapshotContent::new(&content_name(snapshot), spec);
    content.metadata.finalizers = Some(vec![CONTENT_PROTECTION_FINALIZER.to_owned()]);
    Ok(content)
}

/// A snapshot being deleted (`processSnapshotWithDeletionTimestamp`): its content is marked,
/// deleted if its policy says so, and the finalizers go once nothing needs them.
fn deletion_step(snapshot: &VolumeSnapshot, seen: &Observed<'_>) -> Step {
    let ours = [SOURCE_PROTECTION_FINALIZER, BOUND_PROTECTION_FINALIZER];
    if !ours.iter().any(|f| has_finalizer(snapshot, f)) {
        return Step::Nothing;
    }
    let mut keep_bound = false;
    if let Some(content) = seen.content.filter(|c| bound_to(c, snapshot)) {
        if seen.restoring {
            return Step::Warn {
                reason: "SnapshotDeletePending",
                message: "Snapshot is being used to restore a PVC".into(),
            };
        }
        if !content.annotations().contains_key(BEING_DELETED_ANNOTATION) {
            return Step::AnnotateContent(content.name_any());
        }
        if content.spec.deletion_policy == DeletionPolicy::Delete {
            if content.meta().deletion_timestamp.is_none() {
                return Step::DeleteContent(content.name_any());
            }
            if content
                .finalizers()
                .iter()
                .any(|f| f == CONTENT_PROTECTION_FINALIZER)
            {
                return Step::ReleaseContent(content.name_any());
            }
            // Until the content is gone.
            keep_bound = true;
        }
    }
    let finalizers: Vec<String> = snapshot
        .finalizers()
        .iter()
        .filter(|f| {
            *f != SOURCE_PROTECTION_FINALIZER && (keep_bound || *f != BOUND_PROTECTION_FINALIZER)
        })
        .cloned()
        .collect();
    if finalizers.len() == snapshot.finalizers().len() {
        Step::Nothing
    } else {
        Step::SetFinalizers(finalizers)
    }
}

/// Why the external-provisioner cannot provision `claim` from its snapshot yet (the message of
/// its `ProvisioningFailed` Event), or `None` if it can: the snapshot exists in the claim's
/// namespace, is bound to a content of the class's driver, ready to use, and no larger than
/// the claim.
pub fn restore_blocker(
    claim: &PersistentVolumeClaim,
    storage_class: &str,
    snapshot: Option<&VolumeSnapshot>,
    content: Option<&VolumeSnapshotContent>,
) -> Option<String> {
    let name = restores_snapshot(claim)?;
    let error = snapshot_source_error(claim, name, snapshot, content)?;
    Some(format!(
        "failed to provision volume with StorageClass {}: error getting handle for DataSource Type \
         VolumeSnapshot by Name {name}: {error}",
        go_quote(storage_class)
    ))
}

/// `getSnapshotSource`'s error.
fn snapshot_source_error(
    claim: &PersistentVolumeClaim,
    name: &str,
    snapshot: Option<&VolumeSnapshot>,
    content: Option<&VolumeSnapshotContent>,
) -> Option<String> {
    let Some(snapshot) = snapshot else {
        return Some(format!(
            "error getting snapshot {name} from api server: {}",
            not_found("volumesnapshots.snapshot.storage.k8s.io", name)
        ));
    };
    if snapshot.meta().deletion_timestamp.is_some() {
        return Some(format!("snapshot {name} is currently being deleted"));
    }
    let status = snapshot.status.clone().unwrap_or_default();
    let content = content.filter(|c| {
        Some(c.name_any()) == status.bound_volume_snapshot_content_name
            && bound_to(c, snapshot)
            && c.spec.driver == PROVISIONER
    });
    let Some(content) = content else {
        return Some(format!("snapshot {name} not bound"));
    };
    if status.ready_to_use != Some(true) {
        return Some(format!("snapshot {name} is not Ready"));
    }
    if content
        .status
        .as_ref()
        .and_then(|s| s.snapshot_handle.as_ref())
        .is_none()
    {
        return Some(format!("snapshot handle {name} is not available"));
    }
    let size = status.restore_size.as_ref().and_then(RestoreSize::bytes)?;
    let requested = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity_bytes(&q.0));
    match requested {
        None => Some(format!(
            "error getting capacity for PVC {} when creating snapshot {name}",
            claim.name_any()
        )),
        Some(requested) if requested < size => Some(format!(
            "requested volume size {requested} is less than the size {size} for the source snapshot {name}"
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshots::{SNAPSHOT_CLASS, SnapshotError};
    use serde_json::{Value, json};

    fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
        serde_json::from_value(value).expect("a valid object")
    }

    /// Snapshot `snap` of claim `data` in `shop`, of `class` (none: the default).
    fn snapshot(class: Option<&str>, finalizers: &[&str]) -> VolumeSnapshot {
        let mut spec = json!({"source": {"persistentVolumeClaimName": "data"}});
        if let Some(class) = class {
            spec["volumeSnapshotClassName"] = json!(class);
        }
        object(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "snap", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "7", "finalizers": finalizers},
            "spec": spec,
        }))
    }

    fn claim(phase: &str) -> PersistentVolumeClaim {
        object(json!({
            "metadata": {"name": "data", "namespace": "shop", "uid": "c-1"},
            "spec": {"volumeName": "pv-c-1", "storageClassName": "standard",
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": phase},
        }))
    }

    fn volume(provisioner: &str) -> PersistentVolume {
        object(json!({
            "metadata": {"name": "pv-c-1",
                "annotations": {"pv.kubernetes.io/provisioned-by": provisioner}},
            "spec": {"capacity": {"storage": "1Gi"},
                "claimRef": {"namespace": "shop", "name": "data", "uid": "c-1"}},
        }))
    }

    fn class(name: &str, driver: &str, default: bool) -> VolumeSnapshotClass {
        object(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": name,
                "annotations": {DEFAULT_CLASS_ANNOTATION: if default { "true" } else { "false" }}},
            "driver": driver, "deletionPolicy": "Delete",
        }))
    }

    fn content(status: Option<Value>) -> VolumeSnapshotContent {
        let mut content = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-u-1", "finalizers": [CONTENT_PROTECTION_FINALIZER]},
            "spec": {"deletionPolicy": "Delete", "driver": PROVISIONER,
                "source": {"volumeHandle": "pv-c-1"}, "volumeSnapshotClassName": SNAPSHOT_CLASS,
                "volumeSnapshotRef": {"kind": "VolumeSnapshot", "namespace": "shop",
                    "name": "snap", "uid": "u-1"}},
        });
        if let Some(status) = status {
            content["status"] = status;
        }
        object(content)
    }

    fn failure(step: &Step) -> (&'static str, &str) {
        match step {
            Step::Fail { reason, message } => (reason, message.as_str()),
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn quantities_are_read_as_bytes_and_written_as_go_writes_binary_ones() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(quantity_bytes("1e3"), Some(1000));
        assert_eq!(quantity_bytes("100m"), Some(1), "rounded up");
        assert_eq!(quantity_bytes("42"), Some(42));
        for invalid in ["", "Gi", "abc", "-1Gi", "1Zi"] {
            assert_eq!(quantity_bytes(invalid), None, "{invalid}");
        }
        assert_eq!(binary_quantity(1 << 30), "1Gi");
        assert_eq!(binary_quantity(1536 * 1024), "1536Ki");
        assert_eq!(binary_quantity(2048), "2Ki");
        assert_eq!(binary_quantity(1_000_000_000), "1000000000");
        assert_eq!(binary_quantity(512), "512");
        assert_eq!(binary_quantity(0), "0");
    }

    #[test]
    fn go_quotes_like_percent_q() {
        assert_eq!(
            go_quote(r#"persistentvolumeclaim "x" not found"#),
            r#""persistentvolumeclaim \"x\" not found""#
        );
        assert_eq!(go_quote(r"a\b"), r#""a\\b""#);
    }

    #[test]
    fn a_missing_class_fails_as_the_snapshot_controller_says() {
        let classes = [&class(SNAPSHOT_CLASS, PROVISIONER, true)];
        let seen = Observed {
            classes: &classes,
            ..Observed::default()
        };
        let step = next_step(&snapshot(Some("gold"), &[]), &seen);
        assert_eq!(
            failure(&step),
            (
                "GetSnapshotClassFailed",
                r#"Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io "gold" not found"#
            )
        );
    }

    #[test]
    fn without_a_class_the_default_of_the_volumes_driver_is_named() {
        let ours = class(SNAPSHOT_CLASS, PROVISIONER, true);
        let other = class("other", "other.csi", true);
        let (claim, volume) = (claim("Bound"), volume(PROVISIONER));
        let classes = [&ours, &other];
        let seen = Observed {
            classes: &classes,
            claim: Some(&claim),
            volume: Some(&volume),
            ..Observed::default()
        };
        assert_eq!(
            next_step(&snapshot(None, &[]), &seen),
            Step::SetClass(SNAPSHOT_CLASS.into())
        );

        let twice = class("twice", PROVISIONER, true);
        let classes = [&ours, &twice];
        let step = next_step(
            &snapshot(None, &[]),
            &Observed {
                classes: &classes,
                ..seen
            },
        );
        assert_eq!(
            failure(&step),
            (
                "SetDefaultSnapshotClassFailed",
                "Failed to set default snapshot class with error 2 default snapshot classes were found"
            )
        );
        let step = next_step(
            &snapshot(None, &[]),
            &Observed {
                classes: &[],
                ..seen
            },
        );
        assert_eq!(
            failure(&step).1,
            "Failed to set default snapshot class with error cannot find default snapshot class"
        );
    }

    #[test]
    fn without_a_class_a_claim_without_a_volume_of_the_driver_fails_to_find_one() {
        let ours = class(SNAPSHOT_CLASS, PROVISIONER, true);
        let classes = [&ours];
        let (pending, bound, foreign) = (claim("Pending"), claim("Bound"), volume("other.csi"));
        let cases = [
            (
                None,
                None,
                r#"failed to retrieve PVC data from the lister: "persistentvolumeclaim \"data\" not found""#,
            ),
            (
                Some(&pending),
                None,
                "the PVC data is not yet bound to a PV, will not attempt to take a snapshot",
            ),
            (
                Some(&bound),
                None,
                r#"failed to retrieve PV pv-c-1 from the API server: "persistentvolumes \"pv-c-1\" not found""#,
            ),
            (
                Some(&bound),
                Some(&foreign),
                "snapshotting non-CSI volumes is not supported, snapshot:shop/snap",
            ),
        ];
        for (claim, volume, error) in cases {
            let seen = Observed {
                classes: &classes,
                claim,
                volume,
                ..Observed::default()
            };
            let step = next_step(&snapshot(None, &[]), &seen);
            let expected = format!("Failed to set default snapshot class with error {error}");
            assert_eq!(
                failure(&step),
                ("SetDefaultSnapshotClassFailed", &*expected)
            );
        }
    }

    #[test]
    fn a_missing_or_unbound_claim_fails_the_contents_creation() {
        let ours = class(SNAPSHOT_CLASS, PROVISIONER, true);
        let classes = [&ours];
        let snapshot = snapshot(Some(SNAPSHOT_CLASS), &[SOURCE_PROTECTION_FINALIZER]);
        let seen = Observed {
            classes: &classes,
            ..Observed::default()
        };
        assert_eq!(
            failure(&next_step(&snapshot, &seen)),
            (
                "SnapshotContentCreationFailed",
                "Failed to create snapshot content with error snapshot controller failed to \
                 update snap on API server: cannot get claim from snapshot"
            )
        );
        let pending = claim("Pending");
        let step = next_step(
            &snapshot,
            &Observed {
                claim: Some(&pending),
                ..seen
            },
        );
        assert_eq!(
            failure(&step).1,
            "Failed to create snapshot content with error failed to get input parameters to \
             create snapshot snap: \"the PVC data is not yet bound to a PV, will not attempt to \
             take a snapshot\""
        );
        let (bound, foreign) = (claim("Bound"), volume("other.csi"));
        let seen = Observed {
            claim: Some(&bound),
            volume: Some(&foreign),
            ..seen
        };
        assert_eq!(
            failure(&next_step(&snapshot, &seen)).1,
            "Failed to create snapshot content with error cannot find CSI PersistentVolumeSource \
             for volume pv-c-1"
        );
    }

    #[test]
    fn a_snapshot_of_a_bound_claim_gets_its_finalizer_then_a_content() {
        let ours = class(SNAPSHOT_CLASS, PROVISIONER, true);
        let classes = [&ours];
        let (claim, volume) = (claim("Bound"), volume(PROVISIONER));
        let seen = Observed {
            classes: &classes,
            claim: Some(&claim),
            volume: Some(&volume),
            ..Observed::default()
        };
        assert_eq!(
            next_step(&snapshot(Some(SNAPSHOT_CLASS), &[]), &seen),
            Step::SetFinalizers(vec![SOURCE_PROTECTION_FINALIZER.into()])
        );
        let snapshot = snapshot(Some(SNAPSHOT_CLASS), &[SOURCE_PROTECTION_FINALIZER]);
        let Step::CreateContent(created) = next_step(&snapshot, &seen) else {
            panic!("a content is created");
        };
        let expected = content(None);
        assert_eq!(created.name_any(), "snapcontent-u-1");
        assert_eq!(created.finalizers(), expected.finalizers());
        assert_eq!(created.spec.source, expected.spec.source);
        assert_eq!(created.spec.driver, PROVISIONER);
        assert_eq!(created.spec.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(
            created.spec.volume_snapshot_class_name.as_deref(),
            Some(SNAPSHOT_CLASS)
        );
        let target = &created.spec.volume_snapshot_ref;
        assert_eq!(
            (
                target.kind.as_deref(),
                target.namespace.as_deref(),
                target.name.as_deref(),
                target.uid.as_deref()
            ),
            (
                Some("VolumeSnapshot"),
                Some("shop"),
                Some("snap"),
                Some("u-1")
            )
        );
    }

    #[test]
    fn the_driver_cuts_the_snapshot_and_its_status_becomes_the_snapshots() {
        let ours = class(SNAPSHOT_CLASS, PROVISIONER, true);
        let classes = [&ours];
        let (claim, volume, taken) = (claim("Bound"), volume(PROVISIONER), content(None));
        let seen = Observed {
            classes: &classes,
            claim: Some(&claim),
            volume: Some(&volume),
            content: Some(&taken),
            ..Observed::default()
        };
        let finalizers = [SOURCE_PROTECTION_FINALIZER, BOUND_PROTECTION_FINALIZER];
        assert_eq!(
            next_step(&snapshot(Some(SNAPSHOT_CLASS), &finalizers[..1]), &seen),
            Step::SetFinalizers(finalizers.map(String::from).to_vec()),
            "bound to a content that deletes with it"
        );
        let snapshot = snapshot(Some(SNAPSHOT_CLASS), &finalizers);
        let Step::CutSnapshot {
            content: name,
            status,
        } = next_step(&snapshot, &seen)
        else {
            panic!("the CSI snapshotter takes the snapshot");
        };
        assert_eq!(name, "snapcontent-u-1");
        assert_eq!(
            (status.ready_to_use, status.restore_size),
            (Some(true), Some(1 << 30))
        );
        assert_eq!(
            status.snapshot_handle.as_deref(),
            Some("appenv-sim-snapshot-u-1")
        );

        let taken = content(Some(json!({"snapshotHandle": "h", "readyToUse": true,
            "restoreSize": 1_073_741_824_i64, "creationTime": 1_700_000_000_000_000_000_i64})));
        let seen = Observed {
            content: Some(&taken),
            ..seen
        };
        let Step::SetStatus { status, events } = next_step(&snapshot, &seen) else {
            panic!("the snapshot shows its content");
        };
        assert_eq!(
            status.bound_volume_snapshot_content_name.as_deref(),
            Some("snapcontent-u-1")
        );
        assert_eq!(status.ready_to_use, Some(true));
        assert_eq!(
            status.restore_size,
            Some(RestoreSize::Quantity("1Gi".into()))
        );
        let created = serde_json::to_value(&status.creation_time).expect("json");
        assert_eq!(created, json!("2023-11-14T22:13:20Z"));
        assert_eq!(
            events,
            [
                (
                    "SnapshotCreated",
                    "Snapshot shop/snap was successfully created by the CSI driver.".to_owned()
                ),
                (
                    "SnapshotReady",
                    "Snapshot shop/snap is ready to use.".to_owned()
                ),
            ]
        );
        let mut ready = snapshot.clone();
        ready.status = Some(*status);
        assert_eq!(next_step(&ready, &seen), Step::Nothing);
    }

    #[test]
    fn becoming_ready_clears_an_earlier_error() {
        let mut failed = snapshot(Some(SNAPSHOT_CLASS), &[SOURCE_PROTECTION_FINALIZER]);
        failed.status = Some(VolumeSnapshotStatus {
            ready_to_use: Some(false),
            error: Some(SnapshotError {
                message: Some("earlier".into()),
                time: None,
            }),
            ..VolumeSnapshotStatus::default()
        });
        let taken = content(Some(json!({"readyToUse": true, "restoreSize": 1024})));
        let Some((status, _)) = status_from(&failed, &taken) else {
            panic!("the status changes");
        };
        assert_eq!((status.ready_to_use, status.error), (Some(true), None));
        assert_eq!(
            status.restore_size,
            Some(RestoreSize::Quantity("1Ki".into()))
        );
    }

    #[test]
    fn deleting_a_snapshot_deletes_its_content_then_lets_it_go() {
        let finalizers = [SOURCE_PROTECTION_FINALIZER, BOUND_PROTECTION_FINALIZER];
        let mut deleted = snapshot(Some(SNAPSHOT_CLASS), &finalizers);
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let mut taken = content(None);
        fn seen(content: Option<&VolumeSnapshotContent>) -> Observed<'_> {
            Observed {
                content,
                ..Observed::default()
            }
        }
        let restoring = Observed {
            restoring: true,
            ..seen(Some(&taken))
        };
        assert_eq!(
            next_step(&deleted, &restoring),
            Step::Warn {
                reason: "SnapshotDeletePending",
                message: "Snapshot is being used to restore a PVC".into()
            }
        );
        assert_eq!(
            next_step(&deleted, &seen(Some(&taken))),
            Step::AnnotateContent("snapcontent-u-1".into())
        );
        taken
            .annotations_mut()
            .insert(BEING_DELETED_ANNOTATION.into(), "yes".into());
        assert_eq!(
            next_step(&deleted, &seen(Some(&taken))),
            Step::DeleteContent("snapcontent-u-1".into())
        );
        taken.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(
            next_step(&deleted, &seen(Some(&taken))),
            Step::ReleaseContent("snapcontent-u-1".into())
        );
        taken.metadata.finalizers = None;
        assert_eq!(
            next_step(&deleted, &seen(Some(&taken))),
            Step::SetFinalizers(vec![BOUND_PROTECTION_FINALIZER.into()]),
            "bound until the content is gone"
        );
        assert_eq!(
            next_step(&deleted, &seen(None)),
            Step::SetFinalizers(vec![])
        );
        deleted.metadata.finalizers = Some(vec!["someone.else/keep".into()]);
        assert_eq!(next_step(&deleted, &seen(None)), Step::Nothing);
    }

    #[test]
    fn a_retained_content_stays_when_its_snapshot_goes() {
        let mut deleted = snapshot(Some(SNAPSHOT_CLASS), &[SOURCE_PROTECTION_FINALIZER]);
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let mut kept = content(None);
        kept.spec.deletion_policy = DeletionPolicy::Retain;
        kept.annotations_mut()
            .insert(BEING_DELETED_ANNOTATION.into(), "yes".into());
        let seen = Observed {
            content: Some(&kept),
            ..Observed::default()
        };
        assert_eq!(next_step(&deleted, &seen), Step::SetFinalizers(vec![]));
    }

    fn restored(request: &str, data_source: Value) -> PersistentVolumeClaim {
        object(json!({
            "metadata": {"name": "copy", "namespace": "shop"},
            "spec": {"storageClassName": "standard", "dataSource": data_source,
                "resources": {"requests": {"storage": request}}},
            "status": {"phase": "Pending"},
        }))
    }

    #[test]
    fn only_a_volume_snapshot_data_source_is_a_restore() {
        let snapshot = json!({"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": "snap"});
        assert_eq!(restores_snapshot(&restored("1Gi", snapshot)), Some("snap"));
        let other = json!({"kind": "PersistentVolumeClaim", "name": "data"});
        assert_eq!(restores_snapshot(&restored("1Gi", other)), None);
        assert_eq!(restores_snapshot(&claim("Bound")), None);
    }

    #[test]
    fn a_restored_claim_waits_for_a_ready_snapshot_no_larger_than_itself() {
        let source = json!({"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": "snap"});
        fn blocker(
            claim: &PersistentVolumeClaim,
            snapshot: Option<&VolumeSnapshot>,
            content: Option<&VolumeSnapshotContent>,
        ) -> Option<String> {
            let prefix = "failed to provision volume with StorageClass \"standard\": error \
                          getting handle for DataSource Type VolumeSnapshot by Name snap: ";
            restore_blocker(claim, "standard", snapshot, content).map(|m| {
                m.strip_prefix(prefix)
                    .map(str::to_owned)
                    .expect("the prefix")
            })
        }
        let claim = restored("1Gi", source.clone());
        assert_eq!(
            blocker(&claim, None, None).as_deref(),
            Some(
                r#"error getting snapshot snap from api server: volumesnapshots.snapshot.storage.k8s.io "snap" not found"#
            )
        );
        let mut snap = snapshot(Some(SNAPSHOT_CLASS), &[]);
        assert_eq!(
            blocker(&claim, Some(&snap), None).as_deref(),
            Some("snapshot snap not bound")
        );
        let taken = content(Some(json!({"snapshotHandle": "h", "readyToUse": true})));
        snap.status = Some(VolumeSnapshotStatus {
            bound_volume_snapshot_content_name: Some("snapcontent-u-1".into()),
            ready_to_use: Some(false),
            ..VolumeSnapshotStatus::default()
        });
        assert_eq!(
            blocker(&claim, Some(&snap), Some(&taken)).as_deref(),
            Some("snapshot snap is not Ready")
        );
        if let Some(status) = snap.status.as_mut() {
            status.ready_to_use = Some(true);
            status.restore_size = Some(RestoreSize::Quantity("1Gi".into()));
        }
        assert_eq!(blocker(&claim, Some(&snap), Some(&taken)), None);
        let small = restored("512Mi", source);
        assert_eq!(
            blocker(&small, Some(&snap), Some(&taken)).as_deref(),
            Some(
                "requested volume size 536870912 is less than the size 1073741824 for the \
                 source snapshot snap"
            )
        );
        snap.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(
            blocker(&claim, Some(&snap), Some(&taken)).as_deref(),
            Some("snapshot snap is currently being deleted")
        );
    }
}
