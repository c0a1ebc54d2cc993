//! DuckDB: one process may hold the file, so appenv stops the web component first and the
//! agent copies the database file and its WAL (`{file}.wal`) as they are.

use super::{Restore, remove_if_exists, rename, staged, with_suffix};
use crate::catalog::Catalog;
use crate::id::BackupId;
use crate::manifest::{FileEntry, Manifest};
use crate::{Error, Result};
use std::path::Path;

const DATABASE: &str = "database.duckdb";
const WAL: &str = "database.duckdb.wal";

pub(super) async fn backup(
    catalog: &Catalog,
    id: &BackupId,
    file: &Path,
) -> Result<(Vec<FileEntry>, String)> {
    if !file.is_file() {
        return Err(Error::Invalid(format!(
            "DuckDB database {}: no such file",
            file.display()
        )));
    }
    let mut files = vec![catalog.upload_file(id, DATABASE, file).await?];
    let wal = with_suffix(file, ".wal");
    if wal.is_file() {
        files.push(catalog.upload_file(id, WAL, &wal).await?);
    }
    Ok((
        files,
        "file copy (DuckDB database and WAL, writer stopped)".into(),
    ))
}

pub(super) async fn restore(
    catalog: &Catalog,
    manifest: &Manifest,
    file: &Path,
    options: Restore,
) -> Result<()> {
    let occupied = tokio::fs::metadata(file).await.is_ok_and(|m| m.len() > 0);
    if occupied && !options.into_non_empty {
        return Err(Error::Invalid(format!(
            "{} exists: restoring over it replaces the file (--into-non-empty)",
            file.display()
        )));
    }
    // Both files are fetched and checked before either is put in place.
    let database = staged(file, "", &manifest.id)?;
    catalog.download(manifest, DATABASE, &database).await?;
    let wal = match manifest.file(WAL) {
        Some(_) => {
            let staged_wal = staged(file, ".wal", &manifest.id)?;
            if let Err(e) = catalog.download(manifest, WAL, &staged_wal).await {
                remove_if_exists(&database).await?;
                return Err(e);
            }
            Some(staged_wal)
        }
        None => None,
    };
    let target_wal = with_suffix(file, ".wal");
    remove_if_exists(&target_wal).await?;
    if let Some(wal) = wal {
        rename(&wal, &target_wal).await?;
    }
    rename(&database, file).await
}
