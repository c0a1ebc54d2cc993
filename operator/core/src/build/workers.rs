//! Worker Deployments (`<app>-<worker>`), independent of web and of each other.

use crate::build::Inputs;
use crate::build::meta::{labels, object_meta, selector};
use crate::build::pod::{
    app_env, app_env_from, app_pod_spec, mount, pod_annotations, restricted_container,
};
use crate::build::web::strategy;
use crate::validate::{Model, WorkerModel};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

pub const WORKER_LABEL: &str = "appenv.dev/worker";

pub fn worker_name(model: &Model, worker: &WorkerModel) -> String {
    format!("{}-{}", model.app, worker.name)
}

fn worker_selector(model: &Model, worker: &WorkerModel) -> BTreeMap<String, String> {
    let mut s = selector(model, "worker");
    s.insert(WORKER_LABEL.to_owned(), worker.name.clone());
    s
}

/// Metadata of a worker's objects (its Deployment and its autoscaler).
pub(crate) fn worker_meta(model: &Model, inputs: &Inputs, worker: &WorkerModel) -> ObjectMeta {
    let mut meta = object_meta(model, inputs, &worker_name(model, worker), "worker");
    if let Some(l) = meta.labels.as_mut() {
        l.insert(WORKER_LABEL.to_owned(), worker.name.clone());
    }
    meta
}

pub fn deployments(model: &Model, inputs: &Inputs, config_hash: &str) -> Vec<Deployment> {
    model
        .workers
        .iter()
        .map(|w| deployment(model, inputs, w, config_hash))
        .collect()
}

fn deployment(
    model: &Model,
    inputs: &Inputs,
    worker: &WorkerModel,
    config_hash: &str,
) -> Deployment {
    let mut env = worker.env.clone();
    if let Some((var, value)) = &worker.concurrency {
        env.push(EnvVar {
            name: var.clone(),
            value: Some(value.to_string()),
            ..EnvVar::default()
        });
    }
    let container = Container {
        name: "worker".to_owned(),
        image: Some(
            worker
                .image
                .clone()
                .unwrap_or_else(|| inputs.workload_image(model).to_owned()),
        ),
        image_pull_policy: model.pull_policy.clone(),
        command: (!worker.command.is_empty()).then(|| worker.command.clone()),
        args: (!worker.args.is_empty()).then(|| worker.args.clone()),
        env: Some(app_env(model, &env)),
        env_from: Some(app_env_from(model)),
        resources: Some(worker.resources.clone()),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![mount("tmp", "/tmp")]),
        ..Container::default()
    };
    let mut pod = app_pod_spec(model, Vec::new());
    pod.containers = vec![container];
    let mut pod_labels = labels(model, "worker");
    pod_labels.insert(WORKER_LABEL.to_owned(), worker.name.clone());
    Deployment {
        metadata: worker_meta(model, inputs, worker),
        spec: Some(DeploymentSpec {
            // An autoscaled worker's replicas are its autoscaler's: appenv leaves the field out
            // of what it applies, and so no longer owns it (unless suspended: then zero).
            replicas: match (&worker.autoscaling, model.suspend || inputs.stop_workers) {
                (_, true) => Some(0),
                (Some(_), false) => None,
                (None, false) => Some(worker.replicas),
            },
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(worker_selector(model, worker)),
                ..LabelSelector::default()
            },
            // A singleton (e.g. Celery beat) must never run twice, not even during a rollout.
            strategy: Some(strategy(worker.singleton)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations(&worker.pod_annotations, config_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
