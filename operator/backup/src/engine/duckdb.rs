//! DuckDB: one process may hold the file, so appenv stops the web component first and the
//! agent copies the database file and its WAL (`{file}.wal`) as they are.

use super::{Engine, Origin, Restore, remove_if_exists, rename, staged, with_suffix};
use crate::catalog::Catalog;
use crate::dump::Fetched;
use crate::id::BackupId;
use crate::manifest::FileEntry;
use crate::{Error, Result};
use std::path::Path;

const DATABASE: &str = "database.duckdb";
const WAL: &str = "database.duckdb.wal";

/// Take the POSIX lock a DuckDB process holds on its database file while it has it open: if
/// another process has it, refuse (DuckDB allows one process; appenv stops the web component
/// before a copy). Held until the returned handle is dropped, so no process can open the file
/// while it is copied or replaced.
fn hold(file: &Path) -> Result<std::fs::File> {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .map_err(Error::io(format!(
            "opening DuckDB database {}",
            file.display()
        )))?;
    match rustix::fs::fcntl_lock(
        &handle,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => Ok(handle),
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
            Err(Error::Invalid(format!(
                "DuckDB database {} is open in another process: DuckDB allows one, so the \
                 copy waits until the web component is stopped",
                file.display()
            )))
        }
        Err(e) => Err(Error::io(format!(
            "locking DuckDB database {}",
            file.display()
        ))(e.into())),
    }
}

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
    let _held = hold(file)?;
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

pub(super) async fn restore(origin: Origin<'_>, file: &Path, options: Restore) -> Result<Fetched> {
    let _held = match file.exists() {
        true => Some(hold(file)?),
        false => None,
    };
    let occupied = tokio::fs::metadata(file).await.is_ok_and(|m| m.len() > 0);
    if occupied && !options.into_non_empty {
        return Err(Error::Invalid(format!(
            "{} exists: restoring over it replaces the file (--into-non-empty)",
            file.display()
        )));
    }
    // Both files are fetched and checked before either is put in place.
    let database = staged(file, "", origin.id())?;
    let fetched = origin.fetch(DATABASE, &database, Engine::Duckdb).await?;
    let wal = match origin.has(WAL, ".wal") {
        true => {
            let staged_wal = staged(file, ".wal", origin.id())?;
            match origin.fetch_extra(WAL, ".wal", &staged_wal).await {
                Ok(wal) => Some((staged_wal, wal.size_bytes)),
                Err(e) => {
                    remove_if_exists(&database).await?;
                    return Err(e);
                }
            }
        }
        false => None,
    };
    let target_wal = with_suffix(file, ".wal");
    remove_if_exists(&target_wal).await?;
    let mut size_bytes = fetched.size_bytes;
    if let Some((wal, bytes)) = wal {
        rename(&wal, &target_wal).await?;
        size_bytes += bytes;
    }
    rename(&database, file).await?;
    Ok(Fetched {
        size_bytes,
        ..fetched
    })
}
