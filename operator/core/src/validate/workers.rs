//! `spec.workers[]`: background processes, each its own Deployment.

use super::WorkerModel;
use super::rules::{Errors, Reserved, Workload, check_annotations, check_env, profile_resources};
use appenv_api::field::truncate;
use appenv_api::{AppEnvironmentSpec, Profile, WorkerSpec};
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
    let replicas = w.replicas.unwrap_or(match (w.singleton, spec.profile) {
        (true, _) | (false, Profile::Preview) => 1,
        (false, Profile::Production) => 2,
    });
    if !(0..=100).contains(&replicas) {
        errors.add(at("replicas"), "must be between 0 and 100");
    }
    if w.singleton && replicas > 1 {
        errors.add(
            at("replicas"),
            "must be at most 1 for a singleton worker (it must never run twice)",
        );
    }
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
        resources,
        env: w.env.clone(),
        pod_annotations: w.pod_annotations.clone(),
    }
}
