//! The migration Job: the new image runs the migration command before web and workers move
//! to it. Named after what it runs, so a new image (or command) is a new Job.

use crate::build::Context;
use crate::build::meta::{hash_json, labels, object_meta};
use crate::build::pod::{
    app_env, app_env_from, app_pod_spec, mount, pod_annotations, restricted_container,
};
use crate::validate::{MigrationsModel, Model};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

const COMPONENT: &str = "migrations";
/// The image a migration Job runs, on the Job itself.
pub const IMAGE_ANNOTATION: &str = "appenv.dev/image";

pub fn migration_job_name(model: &Model, migrations: &MigrationsModel) -> String {
    let hash = hash_json(&(&model.image, &migrations.command, &migrations.args));
    format!("{}-migrate-{}", model.app, &hash[..10])
}

pub fn job(model: &Model, ctx: &Context, config_hash: &str) -> Option<Job> {
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
        ctx,
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
