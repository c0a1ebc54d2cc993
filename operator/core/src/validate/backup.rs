//! `spec.backup`: when, how many, where. Every field is input from whoever may create an
//! AppEnvironment: the destination reaches the backup Jobs of this environment only, its
//! credentials come from a Secret of the environment's own namespace (two keys, nothing else of
//! it), and an endpoint may not carry credentials of its own (they would show in the status).

use super::rules::{Errors, check_annotations, is_dns_subdomain};
use super::{
    BackupDestinationModel, BackupEngine, BackupModel, DatabaseModel, DumpModel, DumpUrl,
    RestoreFrom, RestoreModel, S3Model, SeedModel,
};
use crate::schedule::Schedule;
use appenv_api::field::truncate;
use appenv_api::{
    AppEnvironment, AppEnvironmentSpec, DumpSpec, EmbeddedEngine, MAX_BACKUPS_KEPT, MAX_RESTORE_TO,
    RestoreSpec,
};

const DEFAULT_KEEP: i32 = 7;
const DEFAULT_TIMEOUT_SECONDS: i64 = 3600;

pub(super) fn backup(
    spec: &AppEnvironmentSpec,
    database: Option<&DatabaseModel>,
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
    errors.at_most("spec.backup.restoreTo", b.restore_to.len(), MAX_RESTORE_TO);
    for (i, pattern) in b.restore_to.iter().enumerate() {
        let plain = pattern.replace('*', "a");
        if pattern.is_empty() || !is_dns_subdomain(&plain) {
            errors.add(
                format!("spec.backup.restoreTo[{i}]"),
                "must be an AppEnvironment name, `*` standing for any characters (e.g. shop-pr-*)",
            );
        }
    }
    let destination = destination(b, errors)?;
    if matches!(destination, BackupDestinationModel::VolumeSnapshot { .. })
        && !matches!(database, Some(DatabaseModel::Embedded(_)))
    {
        errors.add(
            "spec.backup.destination.volumeSnapshot",
            "needs spec.database.embedded (a snapshot of the data volume; back PostgreSQL up with pg_dump to s3 or volume)",
        );
    }
    Some(BackupModel {
        engine,
        schedule,
        keep: u32::try_from(keep.max(1)).unwrap_or(1),
        before_migrations: b.before_migrations.unwrap_or(true),
        destination,
        timeout_seconds,
        pod_annotations: b.pod_annotations.clone(),
        restore_to: b.restore_to.clone(),
    })
}

/// `spec.database.restore`: a new environment's database restored from another environment's
/// backup. Whether that environment allows it (`spec.backup.restoreTo`) is checked by the
/// controller, which reads it.
pub(super) fn restore(
    spec: &AppEnvironmentSpec,
    name: &str,
    database: Option<&DatabaseModel>,
    errors: &mut Errors,
) -> Option<RestoreModel> {
    const PATH: &str = RESTORE;
    let r = spec.database.as_ref()?.restore.as_ref()?;
    if !matches!(
        database,
        Some(DatabaseModel::Postgres(_) | DatabaseModel::Embedded(_))
    ) {
        errors.add(
            PATH,
            "needs spec.database.postgres or spec.database.embedded",
        );
    }
    if r.from_environment.is_some() == r.from_url.is_some() {
        errors.add(PATH, "set exactly one of fromEnvironment or fromUrl");
    }
    let environment = r
        .from_environment
        .as_ref()
        .map(|environment| from_environment(r, environment, name, errors));
    let dump = r.from_url.as_ref().map(|dump| {
        if r.from_environment.is_none() {
            for (set, field) in [
                (r.backup.is_some(), "backup"),
                (r.credentials_secret.is_some(), "credentialsSecret"),
            ] {
                if set {
                    errors.add(
                        format!("{PATH}.{field}"),
                        "goes with fromEnvironment, not fromUrl",
                    );
                }
            }
        }
        RestoreFrom::Url(dump_model(dump, errors))
    });
    let from = environment.or(dump)?;
    let seed = r.seed.as_ref().map(|seed| {
        if seed.command.is_empty() || seed.command.iter().any(String::is_empty) {
            errors.add(
                format!("{PATH}.seed.command"),
                "must be a non-empty command, e.g. [flask, blank-personal-data]",
            );
        }
        SeedModel {
            command: seed.command.clone(),
            args: seed.args.clone(),
        }
    });
    Some(RestoreModel { from, seed })
}

const RESTORE: &str = "spec.database.restore";

fn from_environment(
    r: &RestoreSpec,
    environment: &str,
    name: &str,
    errors: &mut Errors,
) -> RestoreFrom {
    if !is_dns_subdomain(environment) {
        errors.add(
            format!("{RESTORE}.fromEnvironment"),
            "must be the name of an AppEnvironment",
        );
    } else if environment == name {
        errors.add(
            format!("{RESTORE}.fromEnvironment"),
            "must be another environment (restore this one in place with `appenv restore`)",
        );
    }
    let backup = r.backup.clone().unwrap_or_else(|| "latest".to_owned());
    if !backup_ref(&backup) {
        errors.add(
            format!("{RESTORE}.backup"),
            format!(
                "{:?} must be `latest` or a backup id as `appenv backup list` prints it (e.g. 20261201-030000-000)",
                truncate(&backup)
            ),
        );
    }
    let credentials_secret = r.credentials_secret.clone().unwrap_or_default();
    if r.credentials_secret.is_none() {
        errors.add(
            format!("{RESTORE}.credentialsSecret"),
            "required with fromEnvironment",
        );
    } else if !is_dns_subdomain(&credentials_secret) {
        errors.add(
            format!("{RESTORE}.credentialsSecret"),
            "must be the name of a Secret in the environment's namespace (a DNS subdomain)",
        );
    }
    RestoreFrom::Environment {
        name: environment.to_owned(),
        backup,
        credentials_secret,
    }
}

/// `spec.database.restore.fromUrl`: an https URL (http only with a checksum: nothing else
/// proves the file is the one meant) without credentials in it, or a Secret that holds one.
fn dump_model(dump: &DumpSpec, errors: &mut Errors) -> DumpModel {
    const PATH: &str = "spec.database.restore.fromUrl";
    let sha256 = dump.sha256.as_ref().map(|sha| sha.to_ascii_lowercase());
    if let Some(sha) = &sha256
        && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        errors.add(
            format!("{PATH}.sha256"),
            "must be 64 hexadecimal digits, as `sha256sum` prints them",
        );
    }
    if dump.url.is_some() == dump.url_secret.is_some() {
        errors.add(PATH, "set exactly one of url or urlSecret");
    }
    if let Some(url) = &dump.url
        && let Err(why) = check_url(url, sha256.is_some())
    {
        errors.add(format!("{PATH}.url"), why);
    }
    if let Some(secret) = &dump.url_secret
        && !is_dns_subdomain(secret)
    {
        errors.add(
            format!("{PATH}.urlSecret"),
            "must be the name of a Secret in the environment's namespace (a DNS subdomain)",
        );
    }
    let url = match (&dump.url, &dump.url_secret) {
        (Some(url), _) => DumpUrl::Literal(url.clone()),
        (None, Some(secret)) => DumpUrl::Secret(secret.clone()),
        (None, None) => DumpUrl::Literal(String::new()),
    };
    DumpModel { url, sha256 }
}

/// Why a dump URL written in a spec is refused, if it is.
fn check_url(url: &str, checksum: bool) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!(
            "{:?} is not a URL (https://host/path)",
            truncate(&shown_url(url))
        )
    })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match scheme {
        "https" => {}
        "http" if checksum => {}
        "http" => {
            return Err(
                "an http:// URL needs sha256 (nothing else proves the file is the one meant): add fromUrl.sha256 or use https://"
                    .to_owned(),
            );
        }
        other => {
            return Err(format!(
                "the scheme {:?} is not supported: use https:// (or http:// with sha256)",
                truncate(other)
            ));
        }
    }
    if authority.contains('@') {
        return Err(
            "must not carry credentials (user:password@): put a URL that needs them in a Secret and name it in fromUrl.urlSecret"
                .to_owned(),
        );
    }
    if authority.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{:?} is not a URL (https://host/path)",
            truncate(&shown_url(url))
        ));
    }
    Ok(())
}

/// A URL as messages show it: scheme, host and path, without credentials, query or fragment
/// (a presigned URL's signature is in its query).
pub fn shown_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The database engine of a spec, as the operator compares a restore's source and target.
fn engine(spec: &AppEnvironmentSpec) -> String {
    match spec.database.as_deref() {
        Some(d) if d.postgres.is_some() => "PostgreSQL".to_owned(),
        Some(d) => d
            .embedded
            .as_ref()
            .map_or_else(|| "none".to_owned(), |e| format!("{:?}", e.engine)),
        None => "none".to_owned(),
    }
}

/// Why `source` cannot give a backup to the environment `preview` (whose spec is `spec`), if it
/// cannot: its consent (`spec.backup.restoreTo`), an s3 destination, the same engine. The
/// operator reports it in DatabaseReady (`RestoreFailed`); `appenv preview up --data-from` says it
/// before anything is created.
pub fn restore_refusal(
    source: &AppEnvironment,
    preview: &str,
    spec: &AppEnvironmentSpec,
) -> Option<String> {
    let from = source.metadata.name.as_deref().unwrap_or_default();
    let Some(backup) = &source.spec.backup else {
        return Some(format!(
            "{from} has no spec.backup: it has no backups to start from"
        ));
    };
    let allowed = backup
        .restore_to
        .iter()
        .any(|pattern| crate::settings::glob_matches(pattern, preview));
    if !allowed {
        return Some(format!(
            "{from}'s spec.backup.restoreTo does not name {preview}: add it (or a pattern such \
             as {}-pr-*) to {from}'s spec to let previews start from its backups",
            spec.app
        ));
    }
    if backup.destination.s3.is_none() {
        return Some(format!(
            "{from}'s backups are on a volume of its namespace: only an s3 destination \
             (spec.backup.destination.s3) can be restored into another environment"
        ));
    }
    let (theirs, ours) = (engine(&source.spec), engine(spec));
    if theirs != ours {
        return Some(format!(
            "{from}'s database is {theirs}, the preview's {ours}"
        ));
    }
    None
}

/// `latest`, or an id as the agent names backups: `YYYYMMDD-HHMMSS-mmm`.
pub fn backup_ref(text: &str) -> bool {
    let b = text.as_bytes();
    text == "latest"
        || (b.len() == 19
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 15 => *c == b'-',
                _ => c.is_ascii_digit(),
            }))
}

fn destination(b: &appenv_api::BackupSpec, errors: &mut Errors) -> Option<BackupDestinationModel> {
    const PATH: &str = "spec.backup.destination";
    match (
        &b.destination.s3,
        &b.destination.volume,
        &b.destination.volume_snapshot,
    ) {
        (Some(s3), None, None) => Some(BackupDestinationModel::S3(self::s3(s3, errors))),
        (None, Some(volume), None) => Some(BackupDestinationModel::Volume(
            errors.storage(&format!("{PATH}.volume"), volume),
        )),
        (None, None, Some(snapshot)) => {
            if !is_dns_subdomain(&snapshot.class_name) {
                errors.add(
                    format!("{PATH}.volumeSnapshot.className"),
                    "must be the name of a VolumeSnapshotClass (a DNS subdomain)",
                );
            }
            Some(BackupDestinationModel::VolumeSnapshot {
                class_name: snapshot.class_name.clone(),
            })
        }
        _ => {
            errors.add(PATH, "set exactly one of s3, volume or volumeSnapshot");
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
