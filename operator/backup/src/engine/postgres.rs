//! PostgreSQL: `pg_dump --format=custom` streamed to the destination (one consistent
//! snapshot, the database online), `pg_restore` in one transaction.

use super::{Engine, Origin, Restore};
use crate::catalog::Catalog;
use crate::dump::Fetched;
use crate::id::BackupId;
use crate::manifest::FileEntry;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

const DUMP: &str = "database.dump";

/// Tables, views, sequences of the database that are not part of an extension or the catalog.
const USER_RELATIONS: &str = "SELECT count(*) FROM pg_class c \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg\\_toast%' \
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                      AND d.objid = c.oid AND d.deptype = 'e')";

fn tool(bin: Option<&Path>, name: &str) -> PathBuf {
    bin.map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
}

fn command(bin: Option<&Path>, name: &str) -> Command {
    let mut command = Command::new(tool(bin, name));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Never wait for a password prompt.
        .env(
            "PGCONNECT_TIMEOUT",
            std::env::var("PGCONNECT_TIMEOUT").unwrap_or_else(|_| "10".into()),
        );
    command
}

/// The last lines a tool wrote to stderr, for an error message (no secret is in them: libpq
/// does not print passwords).
fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("; ")
}

/// Run a tool to completion; its stdout, or an error that says what it printed.
async fn run(bin: Option<&Path>, name: &str, args: &[&str]) -> Result<String> {
    let output = command(bin, name)
        .args(args)
        .output()
        .await
        .map_err(Error::io(format!("running {}", tool(bin, name).display())))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(Error::Failed(format!(
            "{name} failed ({}): {}",
            output.status,
            last_lines(&output.stderr)
        )))
    }
}

pub(super) async fn backup(
    catalog: &Catalog,
    id: &BackupId,
    bin: Option<&Path>,
) -> Result<(Vec<FileEntry>, String)> {
    let version = run(bin, "pg_dump", &["--version"]).await?;
    let mut child = command(bin, "pg_dump")
        .args(["--format=custom", "--no-password"])
        .spawn()
        .map_err(Error::io(format!(
            "running {}",
            tool(bin, "pg_dump").display()
        )))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::Failed("pg_dump: no output pipes".into()));
    };
    let errors = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        text
    });
    let mut upload = catalog.upload(id, DUMP).await?;
    let copied = upload.copy_from(&mut stdout).await;
    // Closing the pipe ends a pg_dump whose output is no longer read (a failed upload), so the
    // wait below cannot hang on it.
    drop(stdout);
    if copied.is_err() {
        let _ = child.start_kill();
    }
    let status = child
        .wait()
        .await
        .map_err(Error::io("waiting for pg_dump"))?;
    let stderr = errors.await.unwrap_or_default();
    match copied {
        Ok(()) if status.success() => {
            let entry = upload.finish().await?;
            Ok((vec![entry], version))
        }
        Ok(()) => {
            upload.abort().await;
            Err(Error::Failed(format!(
                "pg_dump failed ({status}): {}",
                last_lines(&stderr)
            )))
        }
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// The number of relations in the database that are the user's (not an extension's).
async fn user_relations(bin: Option<&Path>) -> Result<u64> {
    let out = run(
        bin,
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            USER_RELATIONS,
        ],
    )
    .await?;
    out.parse().map_err(|_| {
        Error::Failed(format!(
            "psql: unexpected answer {out:?} counting relations"
        ))
    })
}

pub(super) async fn restore(
    origin: Origin<'_>,
    bin: Option<&Path>,
    options: Restore,
) -> Result<Fetched> {
    let database = std::env::var("PGDATABASE")
        .ok()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            Error::Invalid("PGDATABASE: the database to restore into is not set".into())
        })?;
    let relations = user_relations(bin).await?;
    if relations > 0 && !options.into_non_empty {
        return Err(Error::Invalid(format!(
            "database {database} holds {relations} tables, views or sequences: restoring over \
             them replaces them (--into-non-empty)"
        )));
    }
    // Checked (the manifest's or the dump's checksum, the archive's format) before anything in
    // the database changes.
    let dir = super::WorkDir::new(&origin.id())?;
    let dump = dir.path().join(DUMP);
    let fetched = origin.fetch(DUMP, &dump, Engine::Postgres).await?;
    let dump = dump.to_string_lossy().into_owned();
    let mut args = vec![
        "--no-owner",
        "--no-privileges",
        "--no-password",
        "--exit-on-error",
        // All or nothing: a failed restore leaves the database as it was.
        "--single-transaction",
        "--dbname",
        &database,
    ];
    if options.into_non_empty {
        args.extend(["--clean", "--if-exists"]);
    }
    args.push(&dump);
    run(bin, "pg_restore", &args).await?;
    Ok(fetched)
}
