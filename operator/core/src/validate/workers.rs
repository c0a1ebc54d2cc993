//! `spec.workers[]`: background processes, each its own Deployment.

use super::AutoscalingModel;
use super::WorkerModel;
use super::rules::{Errors, Reserved, Workload, check_annotations, check_env, profile_resources};
use appenv_api::field::truncate;
use appenv_api::{
    AppEnvironmentSpec, AutoscalingSpec, MAX_AUTOSCALED_REPLICAS, MAX_QUEUES, Profile, WorkerSpec,
};
use std::collections::BTreeSet;

pub(super) fn workers(
    spec: &AppEnvironmentSpec,
    reserved: &Reserved,
    errors: &mut Errors,
) -> Vec<WorkerModel> {
    let mut names = BTreeSet::new();
    spec.workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let at = |field: &str| format!("spec.workers[{i}].{field}");
            errors.dns_label(&at("name"), &w.name, 30);
            if !names.insert(w.name.as_str()) {
                errors.add(
                    at("name"),
                    format!("{:?} is used by another worker", truncate(&w.name)),
                );
            }
            if spec.app.len() + 1 + w.name.len() > 63 {
                errors.add(
                    at("name"),
                    "with the app name it must fit in 63 characters (<app>-<worker>)",
                );
            }
            worker(spec, w, &at, reserved, errors)
        })
        .collect()
}

/// One worker's fields after its name (checked against the others by the caller).
fn worker(
    spec: &AppEnvironmentSpec,
    w: &WorkerSpec,
    at: &dyn Fn(&str) -> String,
    reserved: &Reserved,
    errors: &mut Errors,
) -> WorkerModel {
    let default = match (&w.autoscaling, w.singleton, spec.profile) {
        // What its autoscaler starts from.
        (Some(a), _, _) => a.min_replicas,
        (None, true, _) | (None, false, Profile::Preview) => 1,
        (None, false, Profile::Production) => 2,
    };
    let replicas = w.replicas.unwrap_or(default);
    if !(0..=100).contains(&replicas) {
        errors.add(at("replicas"), "must be between 0 and 100");
    }
    if w.singleton && replicas > 1 {
        errors.add(
            at("replicas"),
            "must be at most 1 for a singleton worker (it must never run twice)",
        );
    }
    let autoscaling = w
        .autoscaling
        .as_ref()
        .map(|a| autoscaling(spec, w, a, at, errors));
    let concurrency = w.concurrency.map(|c| {
        if !(1..=1024).contains(&c) {
            errors.add(at("concurrency"), "must be between 1 and 1024");
        }
        let var = w
            .concurrency_env
            .clone()
            .unwrap_or_else(|| "WORKER_CONCURRENCY".to_owned());
        errors.env_name(&at("concurrencyEnv"), &var);
        (var, c)
    });
    if let Some(image) = &w.image
        && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
    {
        errors.add(at("image"), "must be an image reference without spaces");
    }
    let resources = w
        .resources
        .clone()
        .unwrap_or_else(|| profile_resources(spec.profile, Workload::Worker));
    errors.resources(&at("resources"), &resources);
    check_env(&at("env"), &w.env, reserved, errors);
    check_annotations(&at("podAnnotations"), &w.pod_annotations, errors);
    WorkerModel {
        name: w.name.clone(),
        image: w.image.clone(),
        command: w.command.clone(),
        args: w.args.clone(),
        replicas,
        concurrency,
        singleton: w.singleton,
        autoscaling,
        resources,
        env: w.env.clone(),
        pod_annotations: w.pod_annotations.clone(),
    }
}

/// `spec.workers[i].autoscaling`: bounds, queue names, and what it may not go with.
fn autoscaling(
    spec: &AppEnvironmentSpec,
    w: &WorkerSpec,
    a: &AutoscalingSpec,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) -> AutoscalingModel {
    let field = at("autoscaling");
    if w.singleton {
        errors.add(
            field.clone(),
            "not allowed for a singleton worker (it must never run twice)",
        );
    }
    if w.replicas.is_some() {
        errors.add(
            field.clone(),
            "set replicas or autoscaling, not both (the autoscaler sets the replicas)",
        );
    }
    if !spec.redis.as_ref().is_some_and(|r| r.enabled) {
        errors.add(
            field.clone(),
            "needs spec.redis (the queue is in the environment's Redis)",
        );
    }
    if !(1..=MAX_AUTOSCALED_REPLICAS).contains(&a.min_replicas) {
        errors.add(
            format!("{field}.minReplicas"),
            format!("must be between 1 and {MAX_AUTOSCALED_REPLICAS}"),
        );
    }
    if a.max_replicas > MAX_AUTOSCALED_REPLICAS {
        errors.add(
            format!("{field}.maxReplicas"),
            format!("must be at most {MAX_AUTOSCALED_REPLICAS}"),
        );
    }
    if a.max_replicas < a.min_replicas {
        errors.add(
            format!("{field}.maxReplicas"),
            "must be at least minReplicas",
        );
    }
    let queue = &a.queue;
    if queue.names.is_empty() || queue.names.len() > MAX_QUEUES {
        errors.add(
            format!("{field}.queue.names"),
            format!("must name between 1 and {MAX_QUEUES} queues"),
        );
    }
    for (j, name) in queue.names.iter().enumerate() {
        let valid =
            !name.is_empty() && name.len() <= 200 && name.chars().all(|c| c.is_ascii_graphic());
        if !valid {
            errors.add(
                format!("{field}.queue.names[{j}]"),
                "must be 1 to 200 printable characters without spaces",
            );
        }
    }
    let target_length = queue.target_length.unwrap_or(DEFAULT_TARGET_LENGTH);
    if !(1..=100_000).contains(&target_length) {
        errors.add(
            format!("{field}.queue.targetLength"),
            "must be between 1 and 100000",
        );
    }
    AutoscalingModel {
        min_replicas: a.min_replicas,
        max_replicas: a.max_replicas,
        queue_type: queue.type_,
        queues: queue.names.clone(),
        target_length,
    }
}

/// Jobs waiting per Pod an autoscaler aims at, unless the spec says.
const DEFAULT_TARGET_LENGTH: i32 = 5;
