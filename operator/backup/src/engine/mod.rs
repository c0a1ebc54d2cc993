//! The engines' copies: what `backup` uploads and how `restore` puts it back.

mod duckdb;
mod postgres;
mod sqlite;

use crate::catalog::Catalog;
use crate::dump::{Dump, Fetched};
use crate::id::BackupId;
use crate::manifest::{FileEntry, Manifest, Reason};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Sqlite,
    Duckdb,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::Duckdb => "duckdb",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "sqlite" => Ok(Self::Sqlite),
            "duckdb" => Ok(Self::Duckdb),
            _ => Err(Error::Invalid(format!(
                "engine {s:?}: must be postgres, sqlite or duckdb"
            ))),
        }
    }
}

/// The data to copy or to restore into.
#[derive(Debug, Clone)]
pub enum Source {
    /// The database the libpq variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
    /// `PGDATABASE`) name, with `pg_dump`, `pg_restore` and `psql` from `bin` (or `PATH`).
    Postgres { bin: Option<PathBuf> },
    /// A SQLite database file.
    Sqlite { file: PathBuf },
    /// A DuckDB database file (its WAL is `{file}.wal`).
    Duckdb { file: PathBuf },
}

impl Source {
    pub fn engine(&self) -> Engine {
        match self {
            Self::Postgres { .. } => Engine::Postgres,
            Self::Sqlite { .. } => Engine::Sqlite,
            Self::Duckdb { .. } => Engine::Duckdb,
        }
    }
}

/// How a restore may proceed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Restore {
    /// Replace data that is there (otherwise a restore into a database that holds tables is
    /// refused).
    pub into_non_empty: bool,
}

/// Take a backup of `source` into `catalog`: the files, then the manifest. On failure nothing
/// is listed: an upload in progress is aborted, and no manifest is written.
pub async fn backup(catalog: &Catalog, source: &Source, reason: Reason) -> Result<Manifest> {
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let id = BackupId::at(started);
    tracing::info!(environment = catalog.environment(), %id, engine = source.engine().as_str(), to = catalog.location(), "backup started");
    let (files, tool): (Vec<FileEntry>, String) = match source {
        Source::Postgres { bin } => postgres::backup(catalog, &id, bin.as_deref()).await?,
        Source::Sqlite { file } => sqlite::backup(catalog, &id, file).await?,
        Source::Duckdb { file } => duckdb::backup(catalog, &id, file).await?,
    };
    let manifest = Manifest {
        format: Manifest::FORMAT,
        id: id.to_string(),
        environment: catalog.environment().to_owned(),
        engine: source.engine(),
        reason,
        started: started.to_string(),
        finished: jiff::Timestamp::now().to_string(),
        duration_seconds: clock.elapsed().as_secs_f64(),
        size_bytes: files.iter().map(|f| f.size_bytes).sum(),
        files,
        tool,
    };
    catalog.commit(&manifest).await?;
    tracing::info!(environment = catalog.environment(), %id, bytes = manifest.size_bytes, seconds = manifest.duration_seconds, "backup complete");
    Ok(manifest)
}

/// Where a restore's files come from.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A complete backup of a catalog.
    Backup {
        catalog: &'a Catalog,
        manifest: &'a Manifest,
    },
    /// A dump: the engine's one file (a `pg_dump` custom-format archive, or the database file).
    Dump(&'a Dump),
}

impl Origin<'_> {
    /// How messages and staged files name it.
    fn id(&self) -> &str {
        match self {
            Self::Backup { manifest, .. } => &manifest.id,
            Self::Dump(_) => "dump",
        }
    }

    /// Whether it holds the extra file `name` (a WAL): a backup if its manifest lists it, a
    /// local dump (a file of a snapshot of the volume) if the file `<dump><beside>` exists.
    fn has(&self, name: &str, beside: &str) -> bool {
        match self {
            Self::Backup { manifest, .. } => manifest.file(name).is_some(),
            Self::Dump(dump) => dump.beside(beside).is_some(),
        }
    }

    /// Fetch file `name` (a dump: its one file) to `to`, checked against the manifest or the
    /// dump's checksum; `engine`'s format is checked too, so that nothing that is not such a
    /// file is restored.
    async fn fetch(&self, name: &str, to: &std::path::Path, engine: Engine) -> Result<Fetched> {
        let dump = match self {
            Self::Backup { catalog, manifest } => {
                return fetch_backup_file(catalog, manifest, name, to).await;
            }
            Self::Dump(dump) => dump,
        };
        let fetched = dump.fetch(to).await?;
        if let Err(why) = check_format(to, engine).await {
            let _ = tokio::fs::remove_file(to).await;
            return Err(Error::Invalid(format!(
                "the dump at {} {why}: it was not restored",
                dump.shown()
            )));
        }
        Ok(fetched)
    }

    /// Fetch the extra file `name` (of a local dump: `<dump><beside>`) to `to`.
    async fn fetch_extra(&self, name: &str, beside: &str, to: &std::path::Path) -> Result<Fetched> {
        match self {
            Self::Backup { catalog, manifest } => {
                fetch_backup_file(catalog, manifest, name, to).await
            }
            Self::Dump(dump) => dump.fetch_beside(beside, to).await,
        }
    }
}

/// Download file `name` of a backup to `to`, checked against its manifest.
async fn fetch_backup_file(
    catalog: &Catalog,
    manifest: &Manifest,
    name: &str,
    to: &std::path::Path,
) -> Result<Fetched> {
    catalog.download(manifest, name, to).await?;
    let entry = manifest
        .file(name)
        .ok_or_else(|| Error::Failed(format!("backup {} has no file {name}", manifest.id)))?;
    Ok(Fetched {
        size_bytes: entry.size_bytes,
        sha256: entry.sha256.clone(),
    })
}

/// Whether `path` starts as a file of `engine` does: a `pg_dump` custom-format archive
/// (`PGDMP`), a SQLite database (`SQLite format 3`), a DuckDB database (`DUCK` at byte 8).
async fn check_format(path: &std::path::Path, engine: Engine) -> Result<(), String> {
    let head = crate::dump::head(path, 16)
        .await
        .map_err(|e| e.to_string())?;
    let ok = match engine {
        Engine::Postgres => head.starts_with(b"PGDMP"),
        Engine::Sqlite => head.starts_with(b"SQLite format 3\0"),
        Engine::Duckdb => head.get(8..12) == Some(b"DUCK".as_slice()),
    };
    match (ok, engine) {
        (true, _) => Ok(()),
        (false, Engine::Postgres) => Err(
            "is not a pg_dump custom-format archive (make one with pg_dump --format=custom)"
                .to_owned(),
        ),
        (false, Engine::Sqlite) => Err("is not a SQLite database file".to_owned()),
        (false, Engine::Duckdb) => Err("is not a DuckDB database file".to_owned()),
    }
}

/// Restore into `target` from `origin` (a backup must be of the same engine). What was fetched:
/// its bytes, and the SHA-256 of its main file.
pub async fn restore(origin: Origin<'_>, target: &Source, options: Restore) -> Result<Fetched> {
    if let Origin::Backup { manifest, .. } = origin
        && manifest.engine != target.engine()
    {
        return Err(Error::Invalid(format!(
            "backup {} is a {} backup: it cannot be restored into {}",
            manifest.id,
            manifest.engine.as_str(),
            target.engine().as_str()
        )));
    }
    let from = match origin {
        Origin::Backup { catalog, manifest } => {
            format!("backup {} of {}", manifest.id, catalog.environment())
        }
        Origin::Dump(dump) => format!("the dump at {}", dump.shown()),
    };
    tracing::info!(%from, "restore started");
    let fetched = match target {
        Source::Postgres { bin } => postgres::restore(origin, bin.as_deref(), options).await?,
        Source::Sqlite { file } => sqlite::restore(origin, file, options).await?,
        Source::Duckdb { file } => duckdb::restore(origin, file, options).await?,
    };
    tracing::info!(%from, bytes = fetched.size_bytes, "restore complete");
    Ok(fetched)
}

/// A private directory for a copy on its way (the Job's emptyDir at `TMPDIR`), removed with
/// what is in it when dropped.
#[derive(Debug)]
pub(crate) struct WorkDir(PathBuf);

impl WorkDir {
    pub(crate) fn new(id: &dyn std::fmt::Display) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("appenv-agent-{}-{id}", std::process::id()));
        std::fs::create_dir(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        Ok(Self(dir))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `{dir}/.{name}.restore-{id}`: where a restored file is staged beside its target, so that
/// putting it in place is a rename on one filesystem.
fn staged(file: &std::path::Path, suffix: &str, id: &str) -> Result<PathBuf> {
    let dir = file
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file in a directory", file.display())))?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: not a file name", file.display())))?;
    Ok(dir.join(format!(".{name}{suffix}.restore-{id}")))
}

/// `path` with `suffix` appended to its file name (`ledger.duckdb` -> `ledger.duckdb.wal`).
fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

async fn remove_if_exists(path: &std::path::Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()))(e)),
    }
}

async fn rename(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    tokio::fs::rename(from, to).await.map_err(Error::io(format!(
        "moving {} to {}",
        from.display(),
        to.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_by_name() {
        assert_eq!(
            "PostgreSQL".parse::<Engine>().expect("valid"),
            Engine::Postgres
        );
        assert_eq!("duckdb".parse::<Engine>().expect("valid"), Engine::Duckdb);
        let err = "mysql".parse::<Engine>().expect_err("unknown").to_string();
        assert!(
            err.contains("\"mysql\"") && err.contains("postgres, sqlite or duckdb"),
            "{err}"
        );
    }

    #[test]
    fn staged_files_sit_beside_their_target() {
        let file = std::path::Path::new("/data/ledger.duckdb");
        assert_eq!(
            staged(file, ".wal", "20261202-041500-123").expect("staged"),
            std::path::Path::new("/data/.ledger.duckdb.wal.restore-20261202-041500-123")
        );
        assert_eq!(
            with_suffix(file, ".wal"),
            std::path::Path::new("/data/ledger.duckdb.wal")
        );
    }
}
