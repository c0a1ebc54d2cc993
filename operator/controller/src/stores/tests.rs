use super::*;
use crate::secrets::ExposeSecret;
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateWaiting, ContainerStatus, EnvVar, PodSpec, PodStatus,
    PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use watcher::Event;

fn meta(name: &str, version: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("shop-prod".into()),
        resource_version: Some(version.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

#[test]
fn a_deployment_keeps_what_the_status_reads() {
    let d = Deployment {
        metadata: ObjectMeta {
            generation: Some(2),
            ..meta(
                "shop",
                "42",
                &[
                    (label::ENVIRONMENT, "shop"),
                    (label::COMPONENT, "web"),
                    ("x", "y"),
                ],
            )
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), "shop".to_owned())])),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta::default()),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: Some("shop:2".into()),
                        env: Some(vec![EnvVar::default(); 20]),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: Some(DeploymentStatus {
            ready_replicas: Some(1),
            conditions: Some(vec![
                DeploymentCondition {
                    type_: "Available".into(),
                    status: "True".into(),
                    ..DeploymentCondition::default()
                },
                DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    message: Some("deadline exceeded".into()),
                    ..DeploymentCondition::default()
                },
            ]),
            ..DeploymentStatus::default()
        }),
    };
    let stores = Stores::empty();
    stores.insert::<Deployment>(d);
    let kept = stores
        .get::<Deployment>("shop-prod", "shop")
        .expect("indexed");
    let m = &kept.meta;
    assert_eq!((m.generation, &m.version), (Some(2), &Version::Number(42)));
    assert_eq!(
        (m.environment.as_deref(), m.component.as_deref()),
        (Some("shop"), Some("web"))
    );
    assert_eq!(kept.replicas, Some(2));
    assert_eq!(
        kept.selector,
        Some(vec![("app".into(), "shop".into())]),
        "matchLabels"
    );
    assert_eq!(kept.image.as_deref(), Some("shop:2"));
    let status = kept.status.expect("status");
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(
        status.stuck,
        ["deadline exceeded".into()],
        "only conditions that say the rollout is stuck"
    );
    assert_eq!(
        stores
            .meta::<Deployment>("shop-prod", "shop")
            .and_then(|m| m.generation),
        Some(2)
    );
    assert_eq!(
        stores
            .of_environment::<Deployment>("shop-prod", "shop")
            .len(),
        1
    );
    assert!(
        stores
            .of_environment::<Deployment>("shop-prod", "other")
            .is_empty()
    );
    // Another kind's index is another index: the same name is not found there.
    assert!(stores.meta::<StatefulSet>("shop-prod", "shop").is_none());
}

#[test]
fn only_failing_pods_are_kept_and_matched_by_selector() {
    let pod = |name: &str, reason: &str| Pod {
        metadata: meta(name, "1", &[(label::ENVIRONMENT, "shop"), ("app", "shop")]),
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "web".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: None,
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    let stores = Stores::empty();
    let mut writer = IndexWriter::new(&stores.pods);
    writer.apply(&Event::Apply(pod("shop-1", "ContainerCreating")));
    assert!(stores.pods.scan("shop-prod", |_, _| Some(())).is_empty());
    assert!(!Pod::wakes(&pod("shop-1", "ContainerCreating")));
    writer.apply(&Event::Apply(pod("shop-1", "CrashLoopBackOff")));
    assert!(Pod::wakes(&pod("shop-1", "CrashLoopBackOff")));
    let selector: Labels = vec![("app".into(), "shop".into())];
    let failure = stores.pod_failure("shop-prod", &selector).expect("failing");
    assert_eq!(failure, "Pod shop-1 container web: CrashLoopBackOff");
    let other: Labels = vec![("app".into(), "other".into())];
    assert_eq!(stores.pod_failure("shop-prod", &other), None);
    // Recovered: it leaves the index.
    writer.apply(&Event::Apply(pod("shop-1", "ContainerCreating")));
    assert_eq!(stores.pod_failure("shop-prod", &selector), None);
}

#[test]
fn a_child_kind_names_its_type_and_storage_classes_are_watched_unlabelled() {
    fn kind_of<K: Child>() -> (ChildKind, String) {
        (K::KIND, K::kind(&()).into_owned())
    }
    for (kind, of_type) in [
        kind_of::<Namespace>(),
        kind_of::<ConfigMap>(),
        kind_of::<Service>(),
        kind_of::<Ingress>(),
        kind_of::<ResourceQuota>(),
        kind_of::<LimitRange>(),
        kind_of::<NetworkPolicy>(),
        kind_of::<Secret>(),
        kind_of::<Deployment>(),
        kind_of::<StatefulSet>(),
        kind_of::<Job>(),
        kind_of::<PersistentVolumeClaim>(),
    ] {
        assert_eq!(kind.as_str(), of_type);
    }
    assert_eq!(
        Deployment::selection().label_selector.as_deref(),
        Some(label::ENVIRONMENT)
    );
    assert_eq!(StorageClass::selection().label_selector, None);
}

#[test]
fn a_secret_keeps_its_password_and_a_storage_class_its_name() {
    let stores = Stores::empty();
    let secret = Secret {
        metadata: meta("shop-postgres", "1", &[(label::ENVIRONMENT, "shop")]),
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            k8s_openapi::ByteString(b"s3cret".to_vec()),
        )])),
        ..Secret::default()
    };
    stores.insert::<Secret>(secret);
    let kept = stores.get::<Secret>("shop-prod", "shop-postgres");
    let password = kept.and_then(|s| s.password);
    assert_eq!(
        password.as_ref().map(ExposeSecret::expose_secret),
        Some("s3cret")
    );
    let class = PartialObjectMeta::<StorageClass> {
        metadata: ObjectMeta {
            name: Some("fast".into()),
            ..ObjectMeta::default()
        },
        ..PartialObjectMeta::default()
    };
    stores.insert::<StorageClass>(class);
    assert!(stores.storage_class_exists("fast"));
    assert!(!stores.storage_class_exists("slow"));
}

#[test]
fn a_creating_pod_fails_with_the_failed_mount_event_that_names_it() {
    let creating: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shop-1", "namespace": "shop-prod",
            "labels": {label::ENVIRONMENT: "shop", "app": "shop"}},
        "status": {"phase": "Pending", "containerStatuses": [{
            "name": "web", "image": "shop:2", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]},
    }))
    .expect("a valid Pod");
    let event = |pod: &str| -> k8s_openapi::api::core::v1::Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{pod}.1"), "namespace": "shop-prod"},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": "shop-prod"},
            "reason": "FailedMount",
            "message": "MountVolume.SetUp failed for volume \"certs\" : secret \"tls\" not found",
        }))
        .expect("a valid Event")
    };
    let stores = Stores::empty();
    assert!(Pod::wakes(&creating), "a creating Pod may be failing");
    stores.insert::<Pod>(creating);
    let selector: Labels = vec![("app".into(), "shop".into())];
    assert_eq!(
        stores.pod_failure("shop-prod", &selector),
        None,
        "creating, and no Event says why: starting"
    );
    stores.insert::<k8s_openapi::api::core::v1::Event>(event("shop-2"));
    assert_eq!(
        stores.pod_failure("shop-prod", &selector),
        None,
        "another Pod's"
    );
    stores.insert::<k8s_openapi::api::core::v1::Event>(event("shop-1"));
    assert_eq!(
        stores.pod_failure("shop-prod", &selector).as_deref(),
        Some(
            "Pod shop-1: FailedMount: MountVolume.SetUp failed for volume \"certs\" : secret \"tls\" not found"
        )
    );
}

#[test]
fn an_init_container_that_cannot_start_is_the_pods_failure() {
    let waiting = |name: &str, reason: &str, message: Option<&str>| ContainerStatus {
        name: name.into(),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: message.map(Into::into),
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    };
    let pod = Pod {
        metadata: meta("shop-backup-x-1", "1", &[("job-name", "shop-backup-x")]),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            init_container_statuses: Some(vec![waiting(
                "agent",
                "ImagePullBackOff",
                Some("Back-off pulling image \"unpullable.invalid/appenv:1\""),
            )]),
            container_statuses: Some(vec![waiting("backup", "PodInitializing", None)]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    assert_eq!(
        snapshot::failure(&pod).as_deref(),
        Some(
            "Pod shop-backup-x-1 init container agent: ImagePullBackOff: Back-off pulling image \"unpullable.invalid/appenv:1\""
        )
    );
}

#[test]
fn a_failed_job_pod_says_why_with_its_termination_message_and_a_deployments_does_not() {
    let failed = |labels: &[(&str, &str)]| Pod {
        metadata: meta("shop-backup-x-1", "1", labels),
        status: Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "backup".into(),
                state: Some(ContainerState {
                    terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                        exit_code: 1,
                        reason: Some("Error".into()),
                        message: Some(
                            "s3://b/p/shop at http://minio:9000: Connection refused\n".into(),
                        ),
                        ..Default::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    assert_eq!(
        snapshot::failure(&failed(&[("job-name", "shop-backup-x")])).as_deref(),
        Some(
            "Pod shop-backup-x-1 container backup: Error (exit code 1): s3://b/p/shop at http://minio:9000: Connection refused"
        )
    );
    // An evicted Pod of a Deployment is no failure of its component.
    assert_eq!(snapshot::failure(&failed(&[("app", "shop")])), None);
}

#[test]
fn a_succeeded_job_pod_keeps_the_agents_report_and_is_no_failure() {
    let pod = Pod {
        metadata: meta("shop-backup-x-1", "1", &[("job-name", "shop-backup-x")]),
        status: Some(PodStatus {
            phase: Some("Succeeded".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "backup".into(),
                state: Some(ContainerState {
                    terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                        exit_code: 0,
                        reason: Some("Completed".into()),
                        message: Some("backup 20261202-030000-123 1048576".into()),
                        ..Default::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    let stores = Stores::empty();
    let mut writer = IndexWriter::new(&stores.pods);
    assert!(Pod::wakes(&pod));
    writer.apply(&Event::Apply(pod));
    let selector: Labels = vec![("job-name".into(), "shop-backup-x".into())];
    assert_eq!(stores.pod_failure("shop-prod", &selector), None);
    assert_eq!(
        stores.pod_result("shop-prod", &selector).as_deref(),
        Some("backup 20261202-030000-123 1048576")
    );
}
