//! `spec.preview`: the pull request an environment previews, and its time to live.

use super::PreviewModel;
use super::rules::Errors;
use crate::settings::Settings;
use appenv_api::AppEnvironmentSpec;
use appenv_api::field::truncate;
use std::time::Duration;

pub(super) fn preview(
    spec: &AppEnvironmentSpec,
    settings: &Settings,
    errors: &mut Errors,
) -> Option<PreviewModel> {
    let p = spec.preview.as_ref()?;
    if p.pull_request < 1 {
        errors.add(
            "spec.preview.pullRequest",
            "must be a positive pull request number",
        );
    }
    let ttl = match &p.ttl {
        None => settings.preview_ttl,
        Some(text) => parse_ttl(text).unwrap_or_else(|| {
            errors.add(
                "spec.preview.ttl",
                format!(
                    "{:?} must be a positive number followed by s, m, h or d, e.g. 72h",
                    truncate(text)
                ),
            );
            settings.preview_ttl
        }),
    };
    Some(PreviewModel {
        pull_request: p.pull_request,
        repository: p.repository.clone(),
        branch: p.branch.clone(),
        sha: p.sha.clone(),
        ttl,
    })
}

/// The images a preview's spec names, each one the operator allows previews to run (all when
/// it lists none). Default images (Redis's, PostgreSQL's) are the operator's, not the spec's.
pub(super) fn images(spec: &AppEnvironmentSpec, settings: &Settings, errors: &mut Errors) {
    let allowed = &settings.preview_images;
    if allowed.is_empty() {
        return;
    }
    let mut named: Vec<(String, &str)> = vec![("spec.image".to_owned(), spec.image.as_str())];
    for (i, worker) in spec.workers.iter().enumerate() {
        if let Some(image) = &worker.image {
            named.push((format!("spec.workers[{i}].image"), image));
        }
    }
    if let Some(image) = spec.redis.as_ref().and_then(|r| r.image.as_deref()) {
        named.push(("spec.redis.image".to_owned(), image));
    }
    let postgres = spec.database.as_ref().and_then(|d| d.postgres.as_ref());
    if let Some(image) = postgres.and_then(|p| p.image.as_deref()) {
        named.push(("spec.database.postgres.image".to_owned(), image));
    }
    let patterns: Vec<&str> = allowed.iter().map(|p| &**p).collect();
    for (path, image) in named {
        if !allowed.iter().any(|p| p.matches(image)) {
            errors.add(
                path,
                format!(
                    "{:?} is not an image previews may run (allowed: {}; the operator's \
                     --preview-image, the chart's previews.allowedImages)",
                    truncate(image),
                    patterns.join(", ")
                ),
            );
        }
    }
}

/// The shortest `spec.sleep.afterIdle`: the activator reports requests once a minute, so a
/// period near that would put an environment in use to sleep.
pub const MIN_SLEEP_AFTER: Duration = Duration::from_secs(120);

/// How long without a request before the environment sleeps (`None`: never):
/// `spec.sleep.afterIdle`, or for a preview the operator's default.
pub(super) fn sleep_after(
    spec: &AppEnvironmentSpec,
    is_preview: bool,
    settings: &Settings,
    errors: &mut Errors,
) -> Option<Duration> {
    const FIELD: &str = "spec.sleep.afterIdle";
    let Some(sleep) = &spec.sleep else {
        // Without an activator, previews do not sleep by default (nothing would wake them).
        return settings
            .preview_sleep_after
            .filter(|_| is_preview && settings.activator_service.is_some());
    };
    if sleep.after_idle == "never" {
        return None;
    }
    match parse_ttl(&sleep.after_idle) {
        Some(_) if settings.activator_service.is_none() => {
            errors.add(
                FIELD,
                "this operator has no activator (--activator-service, the chart's activator.enabled): nothing would wake the environment on a request; set `never` or enable the activator",
            );
            None
        }
        Some(after) if after >= MIN_SLEEP_AFTER => Some(after),
        Some(_) => {
            errors.add(
                FIELD,
                format!(
                    "{:?} is shorter than 2m: the activator reports requests once a minute, so the environment could sleep while in use",
                    truncate(&sleep.after_idle)
                ),
            );
            None
        }
        None => {
            errors.add(
                FIELD,
                format!(
                    "{:?} must be `never` or a positive number followed by s, m, h or d, e.g. 30m",
                    truncate(&sleep.after_idle)
                ),
            );
            None
        }
    }
}

/// `72h`, `30m`, `45s`, `7d`.
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    (value > 0).then(|| Duration::from_secs(value * unit))
}
