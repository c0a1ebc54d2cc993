//! `spec.migrations`: the Job that runs before each rollout of a new image.

use super::MigrationsModel;
use super::database::engine_name;
use super::rules::{Errors, check_annotations};
use appenv_api::{AppEnvironmentSpec, EmbeddedEngine};
use k8s_openapi::api::core::v1::ResourceRequirements;

/// `web_resources`: what the Job gets when it sets none (the web container's).
pub(super) fn migrations(
    spec: &AppEnvironmentSpec,
    embedded: Option<EmbeddedEngine>,
    web_resources: &ResourceRequirements,
    errors: &mut Errors,
) -> Option<MigrationsModel> {
    let m = spec.migrations.as_ref()?;
    if let Some(engine) = embedded {
        errors.add(
            "spec.migrations",
            format!(
                "not allowed with spec.database.embedded ({} allows one writer, the web Pod; apply forward-only migrations at start-up)",
                engine_name(engine)
            ),
        );
    }
    if m.command.is_empty() || m.command.iter().any(String::is_empty) {
        errors.add(
            "spec.migrations.command",
            "must be a non-empty command, e.g. [alembic, upgrade, head]",
        );
    }
    let timeout_seconds = m.timeout_seconds.unwrap_or(600);
    if !(10..=86_400).contains(&timeout_seconds) {
        errors.add(
            "spec.migrations.timeoutSeconds",
            "must be between 10 and 86400",
        );
    }
    let resources = m.resources.clone().unwrap_or_else(|| web_resources.clone());
    errors.resources("spec.migrations.resources", &resources);
    check_annotations("spec.migrations.podAnnotations", &m.pod_annotations, errors);
    Some(MigrationsModel {
        command: m.command.clone(),
        args: m.args.clone(),
        timeout_seconds,
        resources,
        pod_annotations: m.pod_annotations.clone(),
    })
}
