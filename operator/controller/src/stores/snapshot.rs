//! What the indexes keep of one object: small typed snapshots holding exactly the fields a
//! decision reads, made once when the watch delivers the object. Readers get these, never a
//! k8s-openapi object, so a field that is not kept cannot be read by mistake as if it were
//! empty.

use crate::secrets::SecretString;
use appenv_api::names::{ChildKind, label};
use appenv_core::build::APPLIED_HASH_ANNOTATION;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
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

/// What every index keeps of an object's metadata: the version marker apply compares
/// (generation, resourceVersion) and the labels prune reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The environment label's value.
    pub environment: Option<Box<str>>,
    pub generation: Option<i64>,
    /// The resourceVersion ("" if it has none).
    pub version: Box<str>,
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
            version: meta.resource_version.as_deref().unwrap_or_default().into(),
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

fn stuck(c: &DeploymentCondition) -> Option<Box<str>> {
    let says_stuck = (c.type_ == "Progressing" && c.status == "False")
        || (c.type_ == "ReplicaFailure" && c.status == "True");
    says_stuck.then(|| c.message.as_deref().unwrap_or(&c.type_).into())
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
        let conditions = j.status.as_ref().and_then(|s| s.conditions.as_ref());
        Self {
            meta: Meta::of(&j.metadata),
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

/// A failing Pod: its labels (matched against a Deployment's selector) and why it fails.
/// Only failing Pods are kept: a healthy one leaves (or never enters) the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingPod {
    pub labels: Labels,
    pub failure: Box<str>,
}

impl FailingPod {
    pub fn of(pod: &Pod) -> Option<Self> {
        failure(pod).map(|failure| Self {
            labels: labels(pod.metadata.labels.as_ref()),
            failure: failure.into(),
        })
    }
}

/// Why a Pod fails, if a container of it waits for a reason that will not pass by itself.
pub fn failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status.container_statuses.iter().flatten().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        matches!(
            reason,
            "CrashLoopBackOff"
                | "ImagePullBackOff"
                | "ErrImagePull"
                | "CreateContainerConfigError"
                | "InvalidImageName"
        )
        .then(|| {
            format!(
                "{} {} container {}: {reason}",
                ChildKind::Pod,
                pod.metadata.name.as_deref().unwrap_or("?"),
                c.name
            )
        })
    })
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
}
