//! `spec.database`: exactly one of a Postgres StatefulSet, an embedded database file on a
//! volume, or an external database named by a Secret; and what becomes of the data.

use super::rules::{Errors, Workload, is_dns_subdomain, profile_resources};
use super::{DEFAULT_POSTGRES_IMAGE, DatabaseModel, EmbeddedModel, PostgresModel};
use appenv_api::field::truncate;
use appenv_api::{
    AppEnvironmentSpec, DeletionPolicy, EmbeddedEngine, EmbeddedSpec, ExternalSpec, PostgresSpec,
    Profile, StorageSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub(super) fn engine_name(engine: EmbeddedEngine) -> &'static str {
    match engine {
        EmbeddedEngine::DuckDB => "DuckDB",
        EmbeddedEngine::SQLite => "SQLite",
    }
}

pub(super) fn database(spec: &AppEnvironmentSpec, errors: &mut Errors) -> Option<DatabaseModel> {
    let db = spec.database.as_ref()?;
    let kinds = [
        db.postgres.is_some(),
        db.embedded.is_some(),
        db.external.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errors.add(
            "spec.database",
            "set exactly one of postgres, embedded or external",
        );
    }
    if let Some(pg) = &db.postgres {
        Some(DatabaseModel::Postgres(postgres(spec, pg, errors)))
    } else if let Some(em) = &db.embedded {
        Some(DatabaseModel::Embedded(embedded(em, errors)))
    } else {
        db.external.as_ref().map(|ext| external(ext, errors))
    }
}

/// The engine of an embedded database, from the spec, not the model: with two databases set
/// (already an error) the rules that protect an embedded file's single writer must still be
/// checked.
pub(super) fn embedded_engine(spec: &AppEnvironmentSpec) -> Option<EmbeddedEngine> {
    spec.database
        .as_ref()
        .and_then(|d| d.embedded.as_ref())
        .map(|e| e.engine)
}

pub(super) fn deletion_policy(spec: &AppEnvironmentSpec) -> DeletionPolicy {
    spec.database
        .as_ref()
        .and_then(|d| d.deletion_policy)
        .unwrap_or(match spec.profile {
            Profile::Preview => DeletionPolicy::Delete,
            Profile::Production => DeletionPolicy::Retain,
        })
}

fn postgres(spec: &AppEnvironmentSpec, pg: &PostgresSpec, errors: &mut Errors) -> PostgresModel {
    let extensions = pg
        .extensions
        .clone()
        .unwrap_or_else(|| vec!["vector".to_owned()]);
    for (i, ext) in extensions.iter().enumerate() {
        // Interpolated into SQL: only plain identifiers.
        let ok = !ext.is_empty()
            && ext.len() <= 63
            && ext
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            errors.add(
                format!("spec.database.postgres.extensions[{i}]"),
                "must be an extension name (lower-case letters, digits, '_')",
            );
        }
    }
    let database_name = pg
        .database
        .clone()
        .unwrap_or_else(|| spec.app.replace('-', "_"));
    let ok = !database_name.is_empty()
        && database_name.len() <= 63
        && database_name.as_bytes()[0].is_ascii_lowercase()
        && database_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        errors.add(
            "spec.database.postgres.database",
            "must be lower-case letters, digits and '_', starting with a letter",
        );
    }
    let url_env = pg
        .url_env
        .clone()
        .unwrap_or_else(|| "DATABASE_URL".to_owned());
    errors.env_name("spec.database.postgres.urlEnv", &url_env);
    let default_size = if spec.profile == Profile::Preview {
        "1Gi"
    } else {
        "10Gi"
    };
    let storage = pg.storage.clone().unwrap_or(StorageSpec {
        size: Quantity(default_size.into()),
        storage_class_name: None,
    });
    let resources = pg
        .resources
        .clone()
        .unwrap_or_else(|| profile_resources(spec.profile, Workload::Postgres));
    errors.resources("spec.database.postgres.resources", &resources);
    PostgresModel {
        image: pg
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_POSTGRES_IMAGE.to_owned()),
        extensions,
        database: database_name,
        storage: errors.storage("spec.database.postgres.storage", &storage),
        resources,
        url_env,
    }
}

fn embedded(em: &EmbeddedSpec, errors: &mut Errors) -> EmbeddedModel {
    let path = em.path.clone();
    let mount_path = path
        .rsplit_once('/')
        .map(|(dir, _)| dir.to_owned())
        .unwrap_or_default();
    let file = path.rsplit_once('/').map(|(_, f)| f).unwrap_or_default();
    if !path.starts_with('/')
        || mount_path.is_empty()
        || file.is_empty()
        || path.split('/').any(|p| p == ".." || p == ".")
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        errors.add(
            "spec.database.embedded.path",
            format!(
                "{:?} must be an absolute file path inside a directory, e.g. /data/ledger.duckdb (the directory becomes the volume)",
                truncate(&path)
            ),
        );
    }
    if mount_path == "/tmp" {
        errors.add(
            "spec.database.embedded.path",
            "must not be under /tmp (an ephemeral directory)",
        );
    }
    let path_env = em
        .path_env
        .clone()
        .unwrap_or_else(|| "DATABASE_PATH".to_owned());
    errors.env_name("spec.database.embedded.pathEnv", &path_env);
    let storage = em.storage.clone().unwrap_or(StorageSpec {
        size: Quantity("5Gi".into()),
        storage_class_name: None,
    });
    EmbeddedModel {
        engine: em.engine,
        path,
        mount_path,
        path_env,
        storage: errors.storage("spec.database.embedded.storage", &storage),
    }
}

fn external(ext: &ExternalSpec, errors: &mut Errors) -> DatabaseModel {
    if !is_dns_subdomain(&ext.secret_ref.name) {
        errors.add(
            "spec.database.external.secretRef.name",
            "must be a Secret name (DNS subdomain)",
        );
    }
    let key_ok = !ext.secret_ref.key.is_empty()
        && ext.secret_ref.key.len() <= 253
        && ext
            .secret_ref
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !key_ok {
        errors.add(
            "spec.database.external.secretRef.key",
            "must be a Secret key (letters, digits, '-', '_', '.')",
        );
    }
    let url_env = ext
        .url_env
        .clone()
        .unwrap_or_else(|| "DATABASE_URL".to_owned());
    errors.env_name("spec.database.external.urlEnv", &url_env);
    DatabaseModel::External {
        secret: ext.secret_ref.name.clone(),
        key: ext.secret_ref.key.clone(),
        url_env,
    }
}
