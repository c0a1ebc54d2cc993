//! The migration Job: the new image runs the migration command before web and workers move
//! to it. Named after what it runs, so a new image, command or environment is a new Job.

use crate::build::Inputs;
use crate::build::meta::{hash_json, labels, object_meta};
use crate::build::pod::{
    app_env, app_env_from, app_pod_spec, mount, pod_annotations, restricted_container,
};
use crate::validate::{MigrationsModel, Model};
use appenv_api::names::Component;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

const COMPONENT: &str = Component::Migrations.as_str();
/// The image a migration Job runs, on the Job itself.
pub const IMAGE_ANNOTATION: &str = "appenv.dev/image";

pub fn migration_job_name(model: &Model, migrations: &MigrationsModel) -> String {
    // Everything the migration runs with: a new image, command or environment is a new Job
    // (and so retries a failed one); scaling or other unrelated changes are not.
    let hash = hash_json(&(
        &model.image,
        &migrations.command,
        &migrations.args,
        &model.env,
        &model.env_from,
    ));
    format!("{}-migrate-{}", model.app, &hash[..10])
}

pub fn job(model: &Model, inputs: &Inputs, config_hash: &str) -> Option<Job> {
    let migrations = model.migrations.as_ref()?;
    Some(app_job(
        model,
        inputs,
        &AppJob {
            name: migration_job_name(model, migrations),
            component: COMPONENT,
            container: "migrate",
            command: &migrations.command,
            args: &migrations.args,
            timeout_seconds: migrations.timeout_seconds,
            resources: &migrations.resources,
            pod_annotations: &migrations.pod_annotations,
        },
        config_hash,
    ))
}

/// The seed Job of `spec.database.restore.seed`: the app's image and environment, after the
/// initial restore and before the migration.
pub fn seed_job(model: &Model, inputs: &Inputs, config_hash: &str) -> Option<Job> {
    let seed = model.restore.as_ref()?.seed.as_ref()?;
    let migrations = model.migrations.as_ref();
    Some(app_job(
        model,
        inputs,
        &AppJob {
            name: crate::build::backup::seed_job_name(model, &seed.command, &seed.args),
            component: Component::Seed.as_str(),
            container: "seed",
            command: &seed.command,
            args: &seed.args,
            timeout_seconds: migrations.map_or(600, |m| m.timeout_seconds),
            resources: migrations.map_or(&model.web.resources, |m| &m.resources),
            pod_annotations: migrations.map_or(&BTreeMap::new(), |m| &m.pod_annotations),
        },
        config_hash,
    ))
}

/// A Job of the app's image and environment that runs one command once.
struct AppJob<'a> {
    name: String,
    component: &'a str,
    container: &'a str,
    command: &'a [String],
    args: &'a [String],
    timeout_seconds: i64,
    resources: &'a k8s_openapi::api::core::v1::ResourceRequirements,
    pod_annotations: &'a BTreeMap<String, String>,
}

fn app_job(model: &Model, inputs: &Inputs, job: &AppJob<'_>, config_hash: &str) -> Job {
    // An embedded database's file (a seed after a restore; migrations have none): the volume
    // is free, as nothing of the app runs yet.
    let (mut volumes, mut mounts) = (Vec::new(), vec![mount("tmp", "/tmp")]);
    if let Some((volume, mount)) = crate::build::web::embedded_data(model) {
        volumes.push(volume);
        mounts.push(mount);
    }
    let container = Container {
        name: job.container.to_owned(),
        image: Some(model.image.clone()),
        image_pull_policy: model.pull_policy.clone(),
        command: Some(job.command.to_vec()),
        args: (!job.args.is_empty()).then(|| job.args.to_vec()),
        env: Some(app_env(model, &[])),
        env_from: Some(app_env_from(model)),
        resources: Some(job.resources.clone()),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut pod = app_pod_spec(model, volumes);
    pod.containers = vec![container];
    pod.restart_policy = Some("Never".to_owned());
    let mut meta = object_meta(model, inputs, &job.name, job.component);
    meta.annotations = Some(BTreeMap::from([(
        IMAGE_ANNOTATION.to_owned(),
        model.image.clone(),
    )]));
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            // A failed Job is reported, not retried in a loop: a new image or spec retries.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(job.timeout_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, job.component)),
                    annotations: Some(pod_annotations(job.pod_annotations, config_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::validate::validate;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec};

    fn model(yaml: &str) -> Model {
        let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
        validate(&AppEnvironment::new("shop", spec), &Settings::default()).expect("valid")
    }

    #[test]
    fn a_seed_of_an_embedded_database_mounts_its_file() {
        let m = model(
            "{app: notes, image: 'notes:1', database: {embedded: {engine: SQLite, path: /data/notes.db}, restore: {fromEnvironment: notes-prod, credentialsSecret: s3, seed: {command: [blank]}}}}",
        );
        let job = seed_job(&m, &Inputs::default(), "h").expect("a seed Job");
        let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|v| v.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/tmp", "/data"]);
        assert_eq!(
            pod.containers[0].command.as_deref(),
            Some(&["blank".to_owned()][..])
        );
    }

    #[test]
    fn a_new_image_command_or_environment_is_a_new_job_and_scaling_is_not() {
        let base = "{app: shop, image: 'shop:1', migrations: {command: [migrate]}}";
        let name = |m: &Model| migration_job_name(m, m.migrations.as_ref().expect("migrations"));
        let first = name(&model(base));
        assert_eq!(
            first,
            name(&model(
                "{app: shop, image: 'shop:1', migrations: {command: [migrate]}, web: {replicas: 5}}"
            ))
        );
        for changed in [
            "{app: shop, image: 'shop:2', migrations: {command: [migrate]}}",
            "{app: shop, image: 'shop:1', migrations: {command: [migrate, --all]}}",
            "{app: shop, image: 'shop:1', migrations: {command: [migrate]}, env: [{name: A, value: b}]}",
        ] {
            assert_ne!(first, name(&model(changed)), "{changed}");
        }
        assert!(first.starts_with("shop-migrate-") && first.len() <= 63);
    }
}
