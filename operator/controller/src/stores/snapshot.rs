//! What the indexes keep of one object: small typed snapshots holding exactly the fields a
//! decision reads, made once when the watch delivers the object. Readers get these, never a
//! k8s-openapi object, so a field that is not kept cannot be read by mistake as if it were
//! empty.

use crate::secrets::SecretString;
use appenv_api::names::{ChildKind, label};
use appenv_core::build::APPLIED_HASH_ANNOTATION;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

/// Label pairs (a selector, or a Pod's labels).
pub type Labels = Vec<(Box<str>, Box<str>)>;

fn labels(map: Option<&BTreeMap<String, String>>) -> Labels {
    map.into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect()
}

/// A resourceVersion. The API server's are etcd revisions, kept as the number (no allocation
/// per object); any other, opaque by contract, is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Number(u64),
    Opaque(Box<str>),
}

impl Version {
    pub fn of(version: &str) -> Self {
        // Only a canonical number: "007" or "+7" is not the revision 7.
        let canonical = !version.is_empty()
            && version.bytes().all(|b| b.is_ascii_digit())
            && (version == "0" || !version.starts_with('0'));
        match version.parse() {
            Ok(number) if canonical => Self::Number(number),
            _ => Self::Opaque(version.into()),
        }
    }
}

/// What every index keeps of an object's metadata: the version marker apply compares
/// (generation, resourceVersion) and the labels prune reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The environment label's value.
    pub environment: Option<Box<str>>,
    pub generation: Option<i64>,
    /// The resourceVersion (opaque "" if it has none).
    pub version: Version,
    /// The component label's value.
    pub component: Option<Box<str>>,
    /// Whether it carries the label of volumes kept after their environment was deleted.
    pub retained: bool,
    /// Whether it is being deleted (it has a deletionTimestamp).
    pub deleting: bool,
    /// Whether it carries `appenv.dev/adoptable: "true"` (read of namespaces).
    pub adoptable: bool,
}

impl Meta {
    pub fn of(meta: &ObjectMeta) -> Self {
        let label = |key: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .map(|v| v.as_str().into())
        };
        Self {
            environment: label(label::ENVIRONMENT),
            generation: meta.generation,
            version: Version::of(meta.resource_version.as_deref().unwrap_or_default()),
            component: label(label::COMPONENT),
            retained: label(label::RETAINED).is_some(),
            deleting: meta.deletion_timestamp.is_some(),
            adoptable: label(appenv_core::settings::ADOPTABLE_LABEL).as_deref() == Some("true"),
        }
    }
}

impl AsRef<Meta> for Meta {
    fn as_ref(&self) -> &Meta {
        self
    }
}

/// A Deployment: what the status and the pod-failure lookup read.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentSnapshot {
    pub meta: Meta,
    /// `spec.replicas`.
    pub replicas: Option<i32>,
    /// `spec.selector.matchLabels`.
    pub selector: Option<Labels>,
    /// The image of its first container.
    pub image: Option<Box<str>>,
    pub status: Option<RolloutStatus>,
    /// appenv's field manager owns `spec.replicas` (an autoscaler's worker hands it over).
    pub replicas_by_appenv: bool,
}

/// A Deployment's status, as far as a rollout's progress goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutStatus {
    pub observed_generation: Option<i64>,
    pub replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    /// Why the rollout is stuck: the message (else the type) of each condition that says so
    /// (`Progressing` false, `ReplicaFailure` true). Empty while it is not.
    pub stuck: Vec<Box<str>>,
}

/// The longest message kept of a failure (a kubelet's, scheduler's or admission's): enough to
/// name what is missing, short enough to keep snapshots and the status small.
pub const MESSAGE_CAP: usize = 240;

/// `message`, cut at [`MESSAGE_CAP`] characters (marked with an ellipsis).
pub fn capped(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_CAP) {
        None => message.to_owned(),
        Some((end, _)) => format!("{}...", &message[..end]),
    }
}

/// Why a condition says the rollout is stuck: `reason: message` (e.g. the ReplicaSet's
/// `FailedCreate` with the admission's refusal), the message alone without a reason, the type
/// alone without either.
fn stuck(c: &DeploymentCondition) -> Option<Box<str>> {
    let says_stuck = (c.type_ == "Progressing" && c.status == "False")
        || (c.type_ == "ReplicaFailure" && c.status == "True");
    let why = match (c.reason.as_deref(), c.message.as_deref()) {
        (Some(reason), Some(message)) => format!("{reason}: {}", capped(message)),
        (None, Some(message)) => capped(message),
        (Some(reason), None) => reason.to_owned(),
        (None, None) => c.type_.clone(),
    };
    says_stuck.then(|| why.into())
}

impl From<&Deployment> for DeploymentSnapshot {
    fn from(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        let image = spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.as_deref())
            .map(Into::into);
        let status = d.status.as_ref().map(|s| RolloutStatus {
            observed_generation: s.observed_generation,
            replicas: s.replicas,
            updated_replicas: s.updated_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            stuck: s.conditions.iter().flatten().filter_map(stuck).collect(),
        });
        Self {
            meta: Meta::of(&d.metadata),
            replicas: spec.and_then(|s| s.replicas),
            selector: spec
                .and_then(|s| s.selector.match_labels.as_ref())
                .map(|l| labels(Some(l))),
            image,
            status,
            replicas_by_appenv: owns_replicas(d),
        }
    }
}

/// Whether appenv's field manager owns a Deployment's `spec.replicas`.
fn owns_replicas(d: &Deployment) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(appenv_core::build::FIELD_MANAGER)
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

/// The PostgreSQL StatefulSet: the hash of what appenv applied and its ready replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefulSetSnapshot {
    pub meta: Meta,
    /// Its `APPLIED_HASH_ANNOTATION`.
    pub applied_hash: Option<Box<str>>,
    pub ready_replicas: Option<i32>,
}

impl From<&StatefulSet> for StatefulSetSnapshot {
    fn from(s: &StatefulSet) -> Self {
        Self {
            meta: Meta::of(&s.metadata),
            applied_hash: s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
                .map(|h| h.as_str().into()),
            ready_replicas: s.status.as_ref().and_then(|s| s.ready_replicas),
        }
    }
}

/// The migration Job: its conditions (without their times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSnapshot {
    pub meta: Meta,
    pub conditions: Vec<JobCondition>,
    /// `status.startTime` and `status.completionTime` (or the Failed condition's time).
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub created: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCondition {
    pub type_: Box<str>,
    pub status: Box<str>,
    pub reason: Option<Box<str>>,
    pub message: Option<Box<str>>,
}

impl From<&Job> for JobSnapshot {
    fn from(j: &Job) -> Self {
        let status = j.status.as_ref();
        let conditions = status.and_then(|s| s.conditions.as_ref());
        let failed_at = conditions.into_iter().flatten().find_map(|c| {
            (c.type_ == "Failed" && c.status == "True")
                .then(|| c.last_transition_time.as_ref().map(|t| t.0))
                .flatten()
        });
        Self {
            meta: Meta::of(&j.metadata),
            started: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            created: j.metadata.creation_timestamp.as_ref().map(|t| t.0),
            finished: status
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0)
                .or(failed_at),
            conditions: conditions
                .into_iter()
                .flatten()
                .map(|c| JobCondition {
                    type_: c.type_.as_str().into(),
                    status: c.status.as_str().into(),
                    reason: c.reason.as_deref().map(Into::into),
                    message: c.message.as_deref().map(Into::into),
                })
                .collect(),
        }
    }
}

/// A PersistentVolumeClaim: when it was made, its class and its phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSnapshot {
    pub meta: Meta,
    pub created: Option<Timestamp>,
    /// `spec.storageClassName`.
    pub class: Option<Box<str>>,
    /// `status.phase`.
    pub phase: Option<Box<str>>,
}

impl From<&PersistentVolumeClaim> for ClaimSnapshot {
    fn from(c: &PersistentVolumeClaim) -> Self {
        Self {
            meta: Meta::of(&c.metadata),
            created: c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            class: c
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                .map(Into::into),
            phase: c
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .map(Into::into),
        }
    }
}

/// A Secret: its generated `password`, if it has one (a [`SecretString`]: Debug does not show
/// it).
#[derive(Debug, Clone)]
pub struct SecretSnapshot {
    pub meta: Meta,
    pub password: Option<SecretString>,
}

impl From<&Secret> for SecretSnapshot {
    fn from(s: &Secret) -> Self {
        Self {
            meta: Meta::of(&s.metadata),
            password: s
                .data
                .as_ref()
                .and_then(|d| d.get("password"))
                .and_then(|p| String::from_utf8(p.0.clone()).ok())
                .filter(|p| !p.is_empty())
                .map(SecretString::from),
        }
    }
}

macro_rules! as_meta {
    ($($snapshot:ty),*) => {$(
        impl AsRef<Meta> for $snapshot {
            fn as_ref(&self) -> &Meta {
                &self.meta
            }
        }
    )*};
}
as_meta!(
    DeploymentSnapshot,
    StatefulSetSnapshot,
    JobSnapshot,
    ClaimSnapshot,
    SecretSnapshot
);

/// A Pod that fails, or may (its labels are matched against a Deployment's selector). Only
/// those are kept: a healthy one leaves (or never enters) the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingPod {
    pub labels: Labels,
    pub failure: PodFailure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodFailure {
    /// Why it fails, from what the Pod shows.
    Failing(Box<str>),
    /// Pending with its containers in `ContainerCreating`: normal for a moment, a failure if a
    /// `FailedMount` Event names the Pod (the reason lives there, not in the Pod).
    Creating,
    /// A Job's Pod that succeeded with a termination message: what the backup agent reports
    /// (the backup's id and size), kept until the Pod goes.
    Completed(Box<str>),
}

impl FailingPod {
    pub fn of(pod: &Pod) -> Option<Self> {
        let failure = match failure(pod) {
            Some(failure) => PodFailure::Failing(failure.into()),
            None if creating(pod) => PodFailure::Creating,
            None => PodFailure::Completed(completed(pod)?.into()),
        };
        Some(Self {
            labels: labels(pod.metadata.labels.as_ref()),
            failure,
        })
    }
}

/// Waiting reasons that do not pass by themselves.
const FAILING_WAIT: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
];

/// Reasons of a failure that will not pass without a change (of the spec, or of an object the
/// environment needs that the user provides: a Secret, an image): a rollout reporting one of
/// these will not finish by waiting. Not `ErrImagePull` (a registry may fail once; the kubelet
/// retries and reports `ImagePullBackOff` if it keeps failing) nor `CrashLoopBackOff` (an
/// application may crash while what it connects to starts).
pub const CANNOT_START: &[&str] = &[
    "CreateContainerConfigError",
    "ImagePullBackOff",
    "InvalidImageName",
    "FailedCreate",
    "FailedMount",
    "Unschedulable",
];

/// The scheduler's message while a claim is being provisioned and bound: a claim that never
/// binds is reported from the claim itself (see `observe`), so this alone is no failure.
const UNBOUND_CLAIMS: &str = "unbound immediate PersistentVolumeClaims";

/// Why a Pod fails, if a container of it waits for a reason that will not pass by itself, or
/// the scheduler cannot place it: `Pod NAME container C: REASON: message` (the message capped).
pub fn failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let pod_kind = ChildKind::Pod;
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && !c
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(UNBOUND_CLAIMS)
    });
    if let Some(c) = unschedulable {
        let message = capped(c.message.as_deref().unwrap_or_default());
        return Some(format!("{pod_kind} {name}: Unschedulable: {message}"));
    }
    // Init containers first: while one cannot start, the others wait in PodInitializing.
    let init = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| (c, "init container"));
    let main = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| (c, "container"));
    let failed_job = status.phase.as_deref() == Some("Failed")
        && pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("job-name"));
    if failed_job && let Some(failure) = terminated(pod, name) {
        return Some(failure);
    }
    init.chain(main).find_map(|(c, what)| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        FAILING_WAIT.contains(&reason).then(|| {
            let mut failure = format!("{pod_kind} {name} {what} {}: {reason}", c.name);
            if let Some(message) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
                failure.push_str(": ");
                failure.push_str(&capped(message));
            }
            failure
        })
    })
}

/// The termination message of a Job's Pod that succeeded (the backup agent's result).
pub fn completed(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let of_job = pod
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("job-name"));
    if !of_job || status.phase.as_deref() != Some("Succeeded") {
        return None;
    }
    status.container_statuses.iter().flatten().find_map(|c| {
        let t = c.state.as_ref()?.terminated.as_ref()?;
        let message = t.message.as_deref()?.trim();
        (t.exit_code == 0 && !message.is_empty()).then(|| capped(message))
    })
}

/// Why a Job's Pod failed: its container's exit and termination message (the backup agent
/// writes its error there), which the Job's own `Failed` condition does not carry.
fn terminated(pod: &Pod, name: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    status.container_statuses.iter().flatten().find_map(|c| {
        let t = c.state.as_ref()?.terminated.as_ref()?;
        (t.exit_code != 0).then(|| {
            let reason = t.reason.as_deref().unwrap_or("Error");
            let mut failure = format!(
                "{} {name} container {}: {reason} (exit code {})",
                ChildKind::Pod,
                c.name,
                t.exit_code
            );
            if let Some(message) = t
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                failure.push_str(": ");
                failure.push_str(&capped(message));
            }
            failure
        })
    })
}

/// Whether the Pod is Pending with every container waiting in `ContainerCreating`.
pub fn creating(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    // With init containers, a kubelet that cannot mount a volume shows PodInitializing.
    let waiting = if status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    status.phase.as_deref() == Some("Pending")
        && !containers.is_empty()
        && containers.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some(waiting)
        })
}

/// A `FailedMount` Warning Event: the Pod it is about and its message (capped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFailure {
    pub pod: Box<str>,
    pub message: Box<str>,
}

impl MountFailure {
    pub fn of(event: &Event) -> Option<Self> {
        let about = &event.involved_object;
        (about.kind.as_deref() == Some("Pod") && event.reason.as_deref() == Some("FailedMount"))
            .then(|| Self {
                pod: about.name.as_deref().unwrap_or_default().into(),
                message: capped(event.message.as_deref().unwrap_or_default()).into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    #[test]
    fn snapshots_stay_a_few_hundred_bytes_while_the_objects_are_kilobytes() {
        // The point of the snapshots: a thousand environments' children must not cost the
        // operator more memory than everything else (heap parts are a few short strings).
        assert!(std::mem::size_of::<PodSpec>() > 1000);
        for (what, size) in [
            ("Meta", std::mem::size_of::<Meta>()),
            ("Deployment", std::mem::size_of::<DeploymentSnapshot>()),
            ("StatefulSet", std::mem::size_of::<StatefulSetSnapshot>()),
            ("Job", std::mem::size_of::<JobSnapshot>()),
            (
                "PersistentVolumeClaim",
                std::mem::size_of::<ClaimSnapshot>(),
            ),
            ("Secret", std::mem::size_of::<SecretSnapshot>()),
            ("Pod", std::mem::size_of::<FailingPod>()),
            ("Event", std::mem::size_of::<MountFailure>()),
        ] {
            assert!(size <= 256, "{what} snapshot is {size} bytes");
        }
    }

    #[test]
    fn a_deployment_snapshot_keeps_only_what_the_status_reads() {
        let d = Deployment {
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "web".into(),
                            image: Some("shop:2".into()),
                            env: Some(vec![EnvVar::default(); 20]),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                selector: LabelSelector::default(),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        let snapshot = DeploymentSnapshot::from(&d);
        assert_eq!(snapshot.image.as_deref(), Some("shop:2"));
        // A selector without matchLabels stays absent (no Pod is looked up), not empty (it
        // would match every Pod).
        assert_eq!(snapshot.selector, None);
        // A stuck condition without a message is named by its type.
        let stuck = snapshot.status.map(|s| s.stuck);
        assert_eq!(stuck, Some(vec!["ReplicaFailure".into()]));
    }

    #[test]
    fn a_replica_failure_keeps_its_reason_and_the_admissions_message_capped() {
        let refused = format!(
            "pods \"shop-1\" is forbidden: violates PodSecurity \"restricted:latest\": {}",
            "x".repeat(400)
        );
        let condition = DeploymentCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(refused.clone()),
            ..DeploymentCondition::default()
        };
        let why = stuck(&condition).expect("stuck");
        assert!(
            why.starts_with("FailedCreate: pods \"shop-1\" is forbidden: violates PodSecurity")
        );
        assert_eq!(
            why.chars().count(),
            "FailedCreate: ".len() + MESSAGE_CAP + 3
        );
        assert!(why.ends_with("..."));
    }

    fn pod_with(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-1", "labels": {"app": "shop"}},
            "status": status,
        }))
        .expect("a valid Pod")
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod_with(
            serde_json::json!({"phase": "Pending", "containerStatuses": [{
                "name": "app", "image": "shop:2", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }]}),
        )
    }

    #[test]
    fn a_pod_that_cannot_start_says_why_in_the_kubelets_words() {
        assert_eq!(
            failure(&waiting(
                "CreateContainerConfigError",
                "secret \"doppler-secrets\" not found"
            ))
            .as_deref(),
            Some(
                "Pod shop-1 container app: CreateContainerConfigError: secret \"doppler-secrets\" not found"
            )
        );
        assert_eq!(
            failure(&waiting(
                "ImagePullBackOff",
                "Back-off pulling image \"x:1\""
            ))
            .as_deref(),
            Some("Pod shop-1 container app: ImagePullBackOff: Back-off pulling image \"x:1\"")
        );
        // Normal while a Pod starts: no failure, but kept (a FailedMount Event may explain it).
        let creating = waiting("ContainerCreating", "");
        assert_eq!(failure(&creating), None);
        assert_eq!(
            FailingPod::of(&creating).map(|p| p.failure),
            Some(PodFailure::Creating)
        );
        let running = pod_with(serde_json::json!({"phase": "Running"}));
        assert_eq!(FailingPod::of(&running), None);
        // A long message is capped: the snapshot stays small.
        let long = failure(&waiting("ErrImagePull", &"y".repeat(5000))).expect("failing");
        assert!(long.len() < MESSAGE_CAP + 100, "{}", long.len());
    }

    fn unscheduled(message: &str) -> Pod {
        pod_with(serde_json::json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        }]}))
    }

    #[test]
    fn an_unschedulable_pod_fails_with_the_schedulers_message_unless_a_claim_is_binding() {
        let missing = "0/1 nodes are available: 1 persistentvolumeclaim \"data\" not found.";
        assert_eq!(
            failure(&unscheduled(missing)),
            Some(format!("Pod shop-1: Unschedulable: {missing}"))
        );
        let binding =
            "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims.";
        assert_eq!(failure(&unscheduled(binding)), None);
    }

    #[test]
    fn only_failed_mount_events_about_pods_are_kept() {
        let event = |kind: &str, reason: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "shop-1.abc", "namespace": "shop"},
                "involvedObject": {"kind": kind, "name": "shop-1"},
                "reason": reason,
                "message": "MountVolume.SetUp failed for volume \"certs\" : secret \"tls\" not found",
            }))
            .expect("a valid Event")
        };
        assert_eq!(
            MountFailure::of(&event("Pod", "FailedMount")),
            Some(MountFailure {
                pod: "shop-1".into(),
                message: "MountVolume.SetUp failed for volume \"certs\" : secret \"tls\" not found"
                    .into(),
            })
        );
        assert_eq!(MountFailure::of(&event("Pod", "FailedScheduling")), None);
        assert_eq!(MountFailure::of(&event("Node", "FailedMount")), None);
    }
}
