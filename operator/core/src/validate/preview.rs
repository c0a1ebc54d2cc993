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
