//! The environment's own fields: `metadata.name`, `spec.app`, the image and its pull secrets,
//! the list bounds of the CRD, and the Pods' security ids.

use super::rules::{Errors, is_dns_subdomain};
use appenv_api::{
    AppEnvironmentSpec, MAX_ENV, MAX_ENV_FROM, MAX_PULL_SECRETS, MAX_WORKERS, SecuritySpec,
};

pub(super) fn check(spec: &AppEnvironmentSpec, name: &str, errors: &mut Errors) {
    errors.dns_label("spec.app", &spec.app, 40);
    if name.is_empty() {
        errors.add("metadata.name", "is required");
    } else if !is_dns_subdomain(name) || name.len() > 63 {
        errors.add(
            "metadata.name",
            "must be a DNS name of at most 63 characters",
        );
    }
    if spec.image.trim().is_empty()
        || spec.image.chars().any(char::is_whitespace)
        || spec.image.len() > 512
    {
        errors.add(
            "spec.image",
            "must be an image reference without spaces, e.g. ghcr.io/org/app:v1.2.3",
        );
    }
    errors.at_most("spec.env", spec.env.len(), MAX_ENV);
    errors.at_most("spec.envFrom", spec.env_from.len(), MAX_ENV_FROM);
    errors.at_most(
        "spec.imagePullSecrets",
        spec.image_pull_secrets.len(),
        MAX_PULL_SECRETS,
    );
    errors.at_most("spec.workers", spec.workers.len(), MAX_WORKERS);
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if !is_dns_subdomain(secret) {
            errors.add(
                format!("spec.imagePullSecrets[{i}]"),
                "must be a Secret name (DNS subdomain)",
            );
        }
    }
    security(&spec.security, errors);
}

/// The Pods' security context: never root.
fn security(security: &SecuritySpec, errors: &mut Errors) {
    for (field, id) in [
        ("runAsUser", security.run_as_user),
        ("runAsGroup", security.run_as_group),
        ("fsGroup", security.fs_group),
    ] {
        if !(1..=i64::from(i32::MAX)).contains(&id) {
            errors.add(
                format!("spec.security.{field}"),
                "must be a non-root id from 1 to 2147483647",
            );
        }
    }
}
