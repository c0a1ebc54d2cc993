//! `spec.backup`: when, how many, where. Every field is input from whoever may create an
//! AppEnvironment: the destination reaches the backup Jobs of this environment only, its
//! credentials come from a Secret of the environment's own namespace (two keys, nothing else of
//! it), and an endpoint may not carry credentials of its own (they would show in the status).

use super::rules::{Errors, check_annotations, is_dns_subdomain};
use super::{BackupDestinationModel, BackupEngine, BackupModel, DatabaseModel, S3Model};
use crate::schedule::Schedule;
use crate::settings::Settings;
use appenv_api::field::truncate;
use appenv_api::{AppEnvironmentSpec, EmbeddedEngine, MAX_BACKUPS_KEPT};

const DEFAULT_KEEP: i32 = 7;
const DEFAULT_TIMEOUT_SECONDS: i64 = 3600;

pub(super) fn backup(
    spec: &AppEnvironmentSpec,
    database: Option<&DatabaseModel>,
    settings: &Settings,
    errors: &mut Errors,
) -> Option<BackupModel> {
    let b = spec.backup.as_ref()?;
    let engine = match database {
        Some(DatabaseModel::Postgres(_)) => BackupEngine::Postgres,
        Some(DatabaseModel::Embedded(em)) => match em.engine {
            EmbeddedEngine::DuckDB => BackupEngine::Duckdb,
            EmbeddedEngine::SQLite => BackupEngine::Sqlite,
        },
        _ => {
            errors.add(
                "spec.backup",
                "needs spec.database.postgres or spec.database.embedded (an external database is backed up where it runs)",
            );
            BackupEngine::Postgres
        }
    };
    let schedule = b.schedule.as_deref().and_then(|text| {
        Schedule::parse(text)
            .map_err(|why| errors.add("spec.backup.schedule", why))
            .ok()
    });
    let keep = b.keep.unwrap_or(DEFAULT_KEEP);
    if !(1..=MAX_BACKUPS_KEPT).contains(&keep) {
        errors.add(
            "spec.backup.keep",
            format!("must be between 1 and {MAX_BACKUPS_KEPT}"),
        );
    }
    let timeout_seconds = b.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !(60..=86_400).contains(&timeout_seconds) {
        errors.add("spec.backup.timeoutSeconds", "must be between 60 and 86400");
    }
    check_annotations("spec.backup.podAnnotations", &b.pod_annotations, errors);
    let destination = destination(b, errors)?;
    Some(BackupModel {
        engine,
        schedule,
        keep: u32::try_from(keep.max(1)).unwrap_or(1),
        before_migrations: b.before_migrations.unwrap_or(true),
        destination,
        timeout_seconds,
        pod_annotations: b.pod_annotations.clone(),
        agent_image: settings.agent_image.clone(),
    })
}

fn destination(b: &appenv_api::BackupSpec, errors: &mut Errors) -> Option<BackupDestinationModel> {
    const PATH: &str = "spec.backup.destination";
    match (&b.destination.s3, &b.destination.volume) {
        (Some(s3), None) => Some(BackupDestinationModel::S3(self::s3(s3, errors))),
        (None, Some(volume)) => Some(BackupDestinationModel::Volume(
            errors.storage(&format!("{PATH}.volume"), volume),
        )),
        _ => {
            errors.add(PATH, "set exactly one of s3 or volume");
            None
        }
    }
}

fn s3(s3: &appenv_api::S3Destination, errors: &mut Errors) -> S3Model {
    const PATH: &str = "spec.backup.destination.s3";
    let bucket_ok = (3..=63).contains(&s3.bucket.len())
        && s3
            .bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        errors.add(
            format!("{PATH}.bucket"),
            format!(
                "{:?} must be 3 to 63 lower-case letters, digits, '-' or '.'",
                truncate(&s3.bucket)
            ),
        );
    }
    let prefix = s3
        .prefix
        .as_deref()
        .unwrap_or_default()
        .trim_matches('/')
        .to_owned();
    let prefix_ok = prefix.len() <= 256
        && prefix
            .split('/')
            .all(|part| part != "." && part != ".." && (prefix.is_empty() || !part.is_empty()))
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
    if !prefix_ok {
        errors.add(
            format!("{PATH}.prefix"),
            "must be path segments of letters, digits, '-', '_' or '.' separated by '/' (no '.', '..' or empty segments)",
        );
    }
    if let Some(endpoint) = &s3.endpoint
        && let Err(why) = check_endpoint(endpoint)
    {
        errors.add(format!("{PATH}.endpoint"), why);
    }
    if let Some(region) = &s3.region {
        let ok = !region.is_empty()
            && region.len() <= 64
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            errors.add(
                format!("{PATH}.region"),
                "must be a region name (lower-case letters, digits and '-'), e.g. eu-central-1",
            );
        }
    }
    if !is_dns_subdomain(&s3.credentials_secret) {
        errors.add(
            format!("{PATH}.credentialsSecret"),
            "must be the name of a Secret in the environment's namespace (a DNS subdomain)",
        );
    }
    S3Model {
        bucket: s3.bucket.clone(),
        prefix,
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        credentials_secret: s3.credentials_secret.clone(),
    }
}

/// An `http://` or `https://` URL with a host, without credentials, query or fragment.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("must name a host, e.g. https://s3.eu-central-1.amazonaws.com".to_owned());
    }
    if authority.contains('@') {
        return Err(
            "may not carry credentials (user:password@): name a Secret in credentialsSecret"
                .to_owned(),
        );
    }
    if rest.contains(['?', '#', ' ']) || endpoint.chars().any(char::is_control) {
        return Err("may not have a query, a fragment or spaces".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_endpoint;

    #[test]
    fn an_endpoint_is_a_plain_http_url() {
        for ok in [
            "https://s3.eu-central-1.amazonaws.com",
            "http://127.0.0.1:9000",
            "http://minio.backups.svc:9000/",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("s3.amazonaws.com", "must start with"),
            ("ftp://host", "must start with"),
            ("https://", "must name a host"),
            ("https://key:secret@minio:9000", "may not carry credentials"),
            ("https://minio:9000/?x=1", "query"),
        ] {
            let err = check_endpoint(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
