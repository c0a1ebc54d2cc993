//! The web component: Deployment, Service, Ingress, and the embedded database's volume.

use crate::build::Inputs;
use crate::build::meta::{RETAINED_LABEL, object_meta, selector};
use crate::build::pod::{
    app_env, app_env_from, app_pod_spec, claim_volume, mount, pod_annotations, restricted_container,
};
use crate::validate::{DatabaseModel, Model, ProbeModel, StorageModel, TlsModel};
use appenv_api::names::Component;
use appenv_api::{DeletionPolicy, IssuerKind};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub const COMPONENT: &str = Component::Web.as_str();

pub fn data_volume_name(model: &Model) -> String {
    format!("{}-data", model.app)
}

pub fn http_probe(probe: &ProbeModel) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(probe.path.clone()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(probe.initial_delay_seconds),
        period_seconds: Some(probe.period_seconds),
        timeout_seconds: Some(probe.timeout_seconds),
        failure_threshold: Some(probe.failure_threshold),
        ..Probe::default()
    }
}

/// `Recreate` where Pods must never overlap (one writer), the default rolling update otherwise.
pub fn strategy(recreate: bool) -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some(
            if recreate {
                "Recreate"
            } else {
                "RollingUpdate"
            }
            .to_owned(),
        ),
        ..DeploymentStrategy::default()
    }
}

pub fn pvc(meta: ObjectMeta, storage: &StorageModel) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The embedded database's volume and where its file's directory is mounted (web, and the
/// Jobs that open the file: a seed, a backup or restore of SQLite or DuckDB).
pub fn embedded_data(model: &Model) -> Option<(Volume, VolumeMount)> {
    let Some(DatabaseModel::Embedded(em)) = &model.database else {
        return None;
    };
    Some((
        claim_volume("data", data_volume_name(model)),
        mount("data", &em.mount_path),
    ))
}

pub fn data_volume(model: &Model, inputs: &Inputs) -> Option<PersistentVolumeClaim> {
    let Some(DatabaseModel::Embedded(em)) = &model.database else {
        return None;
    };
    let mut meta = object_meta(model, inputs, &data_volume_name(model), "database");
    if model.deletion_policy == DeletionPolicy::Retain {
        // Not owned: it must survive its environment (see `RETAINED_LABEL`).
        meta.owner_references = None;
        if let Some(labels) = meta.labels.as_mut() {
            labels.insert(RETAINED_LABEL.to_owned(), "true".to_owned());
        }
    }
    Some(pvc(meta, &em.storage))
}

pub fn deployment(model: &Model, inputs: &Inputs, config_hash: &str) -> Deployment {
    let web = &model.web;
    let mut volumes = Vec::new();
    let mut mounts = vec![mount("tmp", "/tmp")];
    if let Some((volume, mount)) = embedded_data(model) {
        volumes.push(volume);
        mounts.push(mount);
    }
    let container = Container {
        name: COMPONENT.to_owned(),
        image: Some(inputs.workload_image(model).to_owned()),
        image_pull_policy: model.pull_policy.clone(),
        command: (!web.command.is_empty()).then(|| web.command.clone()),
        args: (!web.args.is_empty()).then(|| web.args.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: web.port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(app_env(model, &web.env)),
        env_from: Some(app_env_from(model)),
        readiness_probe: web.readiness.as_ref().map(http_probe),
        liveness_probe: web.liveness.as_ref().map(http_probe),
        resources: Some(web.resources.clone()),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut pod = app_pod_spec(model, volumes);
    pod.containers = vec![container];
    Deployment {
        metadata: object_meta(model, inputs, &model.app, COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(if model.suspend || inputs.stop_web {
                0
            } else {
                web.replicas
            }),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector(model, COMPONENT)),
                ..LabelSelector::default()
            },
            strategy: Some(strategy(web.recreate)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(crate::build::labels(model, COMPONENT)),
                    annotations: Some(pod_annotations(&web.pod_annotations, config_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn service(model: &Model, inputs: &Inputs) -> Service {
    crate::build::service(
        object_meta(model, inputs, &model.app, COMPONENT),
        selector(model, COMPONENT),
        "http",
        model.web.service_port,
        model.web.port,
        false,
    )
}

/// The name of the ExternalName Service that stands for the activator in the namespace.
pub fn activator_service_name(model: &Model) -> String {
    format!("{}-activator", model.app)
}

/// For an environment that can sleep: the activator as a Service of its namespace (type
/// ExternalName, the activator's cluster DNS name), for the Ingress to send requests to.
pub fn activator(model: &Model, inputs: &Inputs) -> Option<Service> {
    let activator = model.activator.as_ref()?;
    model.web.ingress.as_ref()?;
    Some(Service {
        metadata: object_meta(model, inputs, &activator_service_name(model), COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".to_owned()),
            external_name: Some(activator.host()),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: i32::from(activator.port()),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn ingress(model: &Model, inputs: &Inputs) -> Option<Ingress> {
    let ing = model.web.ingress.as_ref()?;
    let mut meta = object_meta(model, inputs, &model.app, COMPONENT);
    let mut annotations = ing.annotations.clone();
    let tls_secret = match &ing.tls {
        None => None,
        Some(TlsModel::Secret(secret)) => Some(secret.clone()),
        Some(TlsModel::Issuer { name, kind }) => {
            let key = match kind {
                IssuerKind::ClusterIssuer => "cert-manager.io/cluster-issuer",
                IssuerKind::Issuer => "cert-manager.io/issuer",
            };
            annotations.insert(key.to_owned(), name.clone());
            Some(format!("{}-tls", model.app))
        }
    };
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
    Some(Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: ing.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(ing.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(ing.path.clone()),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            // Through the activator when the environment can sleep: it sees
                            // every request, and wakes it.
                            service: Some(match &model.activator {
                                Some(activator) => IngressServiceBackend {
                                    name: activator_service_name(model),
                                    port: Some(ServiceBackendPort {
                                        number: Some(i32::from(activator.port())),
                                        ..ServiceBackendPort::default()
                                    }),
                                },
                                None => IngressServiceBackend {
                                    name: model.app.clone(),
                                    port: Some(ServiceBackendPort {
                                        number: Some(model.web.service_port),
                                        ..ServiceBackendPort::default()
                                    }),
                                },
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            tls: tls_secret.map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![ing.host.clone()]),
                    secret_name: Some(secret),
                }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

/// The URL the web component is served at, if it has an Ingress.
pub fn url(model: &Model) -> Option<String> {
    let ing = model.web.ingress.as_ref()?;
    let scheme = if ing.tls.is_some() { "https" } else { "http" };
    Some(format!(
        "{scheme}://{}{}",
        ing.host,
        if ing.path == "/" { "" } else { &ing.path }
    ))
}
