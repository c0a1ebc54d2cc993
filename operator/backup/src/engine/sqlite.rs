//! SQLite: the online backup API, copying every page in one step (one read snapshot: in WAL
//! mode the app's writers go on meanwhile), checked with `PRAGMA integrity_check` before it is
//! uploaded and again before a restore puts it in place.

use super::{Engine, Origin, Restore, remove_if_exists, rename, staged, with_suffix};
use crate::catalog::Catalog;
use crate::dump::Fetched;
use crate::id::BackupId;
use crate::manifest::FileEntry;
use crate::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const COPY: &str = "database.sqlite";
/// A WAL beside a local dump (a backup's copy never has one).
const WAL: &str = "database.sqlite-wal";
/// How long the copy waits for a writer's lock before it gives up.
const BUSY: Duration = Duration::from_secs(60);

fn check(connection: &Connection, what: &str) -> Result<()> {
    let result: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(Error::sqlite(format!("checking {what}")))?;
    if result == "ok" {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "{what} fails PRAGMA integrity_check: {result}"
        )))
    }
}

/// Move the WAL beside `file` into it (`PRAGMA wal_checkpoint(TRUNCATE)`); closing the last
/// connection removes the `-wal` and `-shm` files. The file keeps its journal mode.
fn checkpoint(file: &Path) -> Result<()> {
    let what = format!("{} with its WAL", file.display());
    let connection = Connection::open(file).map_err(Error::sqlite(format!("opening {what}")))?;
    connection
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(Error::sqlite(format!("checkpointing {what}")))?;
    connection
        .close()
        .map_err(|(_, e)| Error::sqlite(format!("closing {what}"))(e))
}

/// Copy `source` to `target` with the backup API, in one step.
fn copy_online(source: &Path, target: &Path) -> Result<()> {
    let what = format!("SQLite database {}", source.display());
    if !source.is_file() {
        return Err(Error::Invalid(format!("{what}: no such file")));
    }
    let from = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(Error::sqlite(format!("opening {what}")))?;
    from.busy_timeout(BUSY)
        .map_err(Error::sqlite(format!("opening {what}")))?;
    let mut to = Connection::open(target)
        .map_err(Error::sqlite(format!("creating {}", target.display())))?;
    {
        let backup = rusqlite::backup::Backup::new(&from, &mut to)
            .map_err(Error::sqlite(format!("starting the backup of {what}")))?;
        let deadline = Instant::now() + BUSY;
        loop {
            // -1: every page in one step, under one read lock: a consistent snapshot.
            match backup
                .step(-1)
                .map_err(Error::sqlite(format!("copying {what}")))?
            {
                rusqlite::backup::StepResult::Done => break,
                _ if Instant::now() > deadline => {
                    return Err(Error::Failed(format!(
                        "{what}: still locked by a writer after {}s",
                        BUSY.as_secs()
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    check(&to, &format!("the copy of {what}"))
}

pub(super) async fn backup(
    catalog: &Catalog,
    id: &BackupId,
    file: &Path,
) -> Result<(Vec<FileEntry>, String)> {
    let dir = super::WorkDir::new(id)?;
    let copy = dir.path().join(COPY);
    let (source, target) = (file.to_owned(), copy.clone());
    tokio::task::spawn_blocking(move || copy_online(&source, &target))
        .await
        .map_err(|e| Error::Failed(format!("the SQLite copy stopped: {e}")))??;
    let entry = catalog.upload_file(id, COPY, &copy).await?;
    Ok((
        vec![entry],
        format!("SQLite {} backup API", rusqlite::version()),
    ))
}

/// Tables in an existing database file (0 when there is no file).
fn user_tables(file: &Path) -> Result<u64> {
    if !file.exists() {
        return Ok(0);
    }
    let what = format!("SQLite database {}", file.display());
    let connection = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(Error::sqlite(format!("opening {what}")))?;
    connection
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            [],
            |row| row.get(0),
        )
        .map_err(Error::sqlite(format!("reading {what}")))
}

pub(super) async fn restore(origin: Origin<'_>, file: &Path, options: Restore) -> Result<Fetched> {
    let target = file.to_owned();
    let tables = tokio::task::spawn_blocking(move || user_tables(&target))
        .await
        .map_err(|e| Error::Failed(format!("reading {}: {e}", file.display())))??;
    if tables > 0 && !options.into_non_empty {
        return Err(Error::Invalid(format!(
            "{} holds {tables} tables: restoring over them replaces the file (--into-non-empty)",
            file.display()
        )));
    }
    let staged: PathBuf = staged(file, "", origin.id())?;
    let fetched = origin.fetch(COPY, &staged, Engine::Sqlite).await?;
    // A file of a snapshot of the volume may have its WAL beside it (the app was writing):
    // copied beside the staged file, it is checkpointed into it before the check.
    let wal = origin
        .has(WAL, "-wal")
        .then(|| with_suffix(&staged, "-wal"));
    if let Some(staged_wal) = &wal
        && let Err(e) = origin.fetch_extra(WAL, "-wal", staged_wal).await
    {
        remove_if_exists(&staged).await?;
        return Err(e);
    }
    let checked = staged.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        if wal.is_some() {
            checkpoint(&checked)?;
        }
        let connection = Connection::open_with_flags(&checked, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(Error::sqlite(format!("opening {}", checked.display())))?;
        check(&connection, &format!("backup file {}", checked.display()))
    })
    .await
    .map_err(|e| Error::Failed(format!("checking the restored copy: {e}")))?;
    if let Err(e) = verdict {
        remove_if_exists(&staged).await?;
        remove_if_exists(&with_suffix(&staged, "-wal")).await?;
        remove_if_exists(&with_suffix(&staged, "-shm")).await?;
        return Err(e);
    }
    remove_if_exists(&with_suffix(&staged, "-wal")).await?;
    remove_if_exists(&with_suffix(&staged, "-shm")).await?;
    // The old file's WAL and shared memory belong to the old content.
    remove_if_exists(&with_suffix(file, "-wal")).await?;
    remove_if_exists(&with_suffix(file, "-shm")).await?;
    rename(&staged, file).await?;
    Ok(fetched)
}
