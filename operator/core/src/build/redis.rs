//! Redis: one Pod (Recreate: one instance owns its data), a Service, optionally a volume.

use crate::build::meta::{labels, object_meta, selector};
use crate::build::pod::{claim_volume, empty_dir, mount, restricted_container, restricted_pod};
use crate::build::web::{pvc, strategy};
use crate::build::{Inputs, Redis, service};
use crate::validate::Model;
use appenv_api::names::Component;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const COMPONENT: &str = Component::Redis.as_str();
/// The `redis` user of the official images.
const REDIS_UID: i64 = 999;

pub fn redis(model: &Model, inputs: &Inputs) -> Option<Redis> {
    let redis = model.redis.as_ref()?;
    let name = format!("{}-redis", model.app);
    let volume_name = format!("{}-redis-data", model.app);
    let data = match &redis.persistence {
        Some(_) => claim_volume("data", volume_name.clone()),
        None => empty_dir("data"),
    };
    let args: Vec<String> = match &redis.persistence {
        Some(_) => vec!["--appendonly", "yes", "--dir", "/data"],
        None => vec!["--save", "", "--appendonly", "no"],
    }
    .into_iter()
    .map(str::to_owned)
    .collect();
    let tcp = |delay: i32, period: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(6379),
            ..TCPSocketAction::default()
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let container = Container {
        name: COMPONENT.to_owned(),
        image: Some(redis.image.clone()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("redis".to_owned()),
            container_port: 6379,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(tcp(2, 5)),
        liveness_probe: Some(tcp(15, 20)),
        resources: Some(redis.resources.clone()),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![mount("data", "/data"), mount("tmp", "/tmp")]),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: object_meta(model, inputs, &name, COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(if model.suspend { 0 } else { 1 }),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector(model, COMPONENT)),
                ..LabelSelector::default()
            },
            strategy: Some(strategy(true)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, COMPONENT)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(restricted_pod(REDIS_UID, REDIS_UID, REDIS_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    volumes: Some(vec![data, empty_dir("tmp")]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = service(
        object_meta(model, inputs, &name, COMPONENT),
        selector(model, COMPONENT),
        "redis",
        6379,
        6379,
        false,
    );
    let volume = redis
        .persistence
        .as_ref()
        .map(|storage| pvc(object_meta(model, inputs, &volume_name, COMPONENT), storage));
    Some(Redis {
        volume,
        deployment,
        service,
    })
}
