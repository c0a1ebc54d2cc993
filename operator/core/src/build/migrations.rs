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
    let container = Container {
        name: "migrate".to_owned(),
        image: Some(model.image.clone()),
        image_pull_policy: model.pull_policy.clone(),
        command: Some(migrations.command.clone()),
        args: (!migrations.args.is_empty()).then(|| migrations.args.clone()),
        env: Some(app_env(model, &[])),
        env_from: Some(app_env_from(model)),
        resources: Some(migrations.resources.clone()),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![mount("tmp", "/tmp")]),
        ..Container::default()
    };
    let mut pod = app_pod_spec(model, Vec::new());
    pod.containers = vec![container];
    pod.restart_policy = Some("Never".to_owned());
    let mut meta = object_meta(
        model,
        inputs,
        &migration_job_name(model, migrations),
        COMPONENT,
    );
    meta.annotations = Some(BTreeMap::from([(
        IMAGE_ANNOTATION.to_owned(),
        model.image.clone(),
    )]));
    Some(Job {
        metadata: meta,
        spec: Some(JobSpec {
            // A failed migration is reported, not retried in a loop: a new image or spec retries.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(migrations.timeout_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, COMPONENT)),
                    annotations: Some(pod_annotations(&migrations.pod_annotations, config_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
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
