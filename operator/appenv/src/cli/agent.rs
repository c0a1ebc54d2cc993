//! `appenv agent`: the backup agent, as it runs inside appenv's backup and restore Jobs (and by
//! hand, against any PostgreSQL, SQLite or DuckDB the machine reaches).
//!
//! PostgreSQL's connection comes from the libpq variables (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`); an S3 destination's credentials from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`. Neither is ever printed.

use anyhow::Context as _;
use appenv_backup::destination::S3Credentials;
use appenv_backup::{
    BackupId, Catalog, Destination, Dump, Engine, Origin, Reason, Restore, Source,
};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Take a backup: the engine's consistent copy, uploaded, then its manifest; then prune.
    Backup(BackupArgs),
    /// Restore a backup (`latest` or an id) into the database.
    Restore(RestoreArgs),
    /// List the complete backups, oldest first.
    List(StoreArgs),
    /// Copy this binary to PATH (mode 0755, atomically): how a PostgreSQL backup Job's init
    /// container puts the agent into the database's image.
    Install(InstallArgs),
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Where to put the agent, e.g. `/agent/appenv` (its directory must exist).
    pub path: PathBuf,
}

/// Where an environment's backups are.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The environment whose backups these are (a path segment under the destination).
    #[arg(long)]
    pub environment: String,
    /// `s3://bucket/prefix`, or an absolute directory (`file:///backups` or `/backups`).
    #[arg(long)]
    pub destination: String,
    /// The S3 API's endpoint, e.g. `https://s3.eu-central-1.amazonaws.com` (default: AWS).
    #[arg(long, env = "APPENV_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region (default us-east-1).
    #[arg(long, env = "APPENV_S3_REGION")]
    pub s3_region: Option<String>,
}

/// The database.
#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    /// postgres, sqlite or duckdb.
    #[arg(long)]
    pub engine: String,
    /// The database file (sqlite, duckdb).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Where `pg_dump`, `pg_restore` and `psql` are (default: PATH).
    #[arg(long, env = "APPENV_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Why: scheduled, manual or before-migration.
    #[arg(long, default_value = "manual")]
    pub reason: String,
    /// Complete backups to keep; older ones are deleted after this one is complete.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The environment whose backup to restore (with --destination and --backup).
    #[arg(long, requires_all = ["destination", "backup"], conflicts_with = "url")]
    pub environment: Option<String>,
    /// `s3://bucket/prefix`, or an absolute directory (`file:///backups` or `/backups`).
    #[arg(long, requires = "environment")]
    pub destination: Option<String>,
    /// The S3 API's endpoint, e.g. `https://s3.eu-central-1.amazonaws.com` (default: AWS).
    #[arg(long, env = "APPENV_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region (default us-east-1).
    #[arg(long, env = "APPENV_S3_REGION")]
    pub s3_region: Option<String>,
    /// `latest` or a backup id as `list` prints it.
    #[arg(long, requires = "environment")]
    pub backup: Option<String>,
    /// Restore a dump instead of a backup: `https://...` (`http://` with --sha256), `file://`
    /// or an absolute path. For PostgreSQL a `pg_dump --format=custom` archive, for SQLite and
    /// DuckDB the database file. Never printed whole: a presigned URL's query is left out.
    #[arg(
        long,
        env = "APPENV_RESTORE_URL",
        hide_env_values = true,
        required_unless_present = "environment"
    )]
    pub url: Option<String>,
    /// The dump's SHA-256 (64 hex digits): a dump that differs is not restored.
    #[arg(long, requires = "url")]
    pub sha256: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Replace what the database holds (otherwise a restore into a database with tables is
    /// refused).
    #[arg(long)]
    pub into_non_empty: bool,
}

fn catalog(store: &StoreArgs) -> anyhow::Result<Catalog> {
    let destination = Destination::parse(
        &store.destination,
        store.s3_endpoint.as_deref(),
        store.s3_region.as_deref(),
    )?;
    let credentials = S3Credentials::from_env()?;
    Ok(Catalog::open(
        &destination,
        credentials.as_ref(),
        &store.environment,
    )?)
}

fn source(database: &DatabaseArgs) -> anyhow::Result<Source> {
    let engine: Engine = database.engine.parse()?;
    let file = || {
        database
            .file
            .clone()
            .with_context(|| format!("--file: the {} database file is required", engine.as_str()))
    };
    Ok(match engine {
        Engine::Postgres => Source::Postgres {
            bin: database.pg_bin.clone(),
        },
        Engine::Sqlite => Source::Sqlite { file: file()? },
        Engine::Duckdb => Source::Duckdb { file: file()? },
    })
}

fn reason(text: &str) -> anyhow::Result<Reason> {
    match text {
        "scheduled" => Ok(Reason::Scheduled),
        "manual" => Ok(Reason::Manual),
        "before-migration" => Ok(Reason::BeforeMigration),
        other => anyhow::bail!("--reason {other:?}: must be scheduled, manual or before-migration"),
    }
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// Run an agent command; a failure is also written where Kubernetes reads a container's
/// termination message (`/dev/termination-log`, when it exists), so the operator can say why a
/// backup or restore Job failed without reading its logs.
pub async fn run(command: AgentCommand) -> anyhow::Result<bool> {
    let result = run_command(command).await;
    if let Err(e) = &result {
        // Kubernetes keeps at most 4096 bytes of it.
        terminate_with(&format!("{e:#}").chars().take(4000).collect::<String>());
    }
    result
}

/// Write the container's termination message (`/dev/termination-log`, or
/// `APPENV_TERMINATION_LOG`), if the file exists: a failure's cause, or a success's result
/// (`backup ID BYTES`, `restored ID BYTES`), which the operator reads from the Pod's status.
fn terminate_with(message: &str) {
    let path = std::env::var_os("APPENV_TERMINATION_LOG")
        .map_or_else(|| PathBuf::from("/dev/termination-log"), PathBuf::from);
    if path.exists() {
        let _ = std::fs::write(&path, message);
    }
}

/// Copy `source` to `target` with mode 0755, atomically: written to `<target>.tmp-<pid>` in
/// the same directory, flushed to disk, then renamed over `target`, so that a reader never finds
/// a half-copied binary (an init container killed mid-copy leaves at most the temporary file).
/// The bytes copied.
pub fn install(source: &Path, target: &Path) -> anyhow::Result<u64> {
    let name = target
        .file_name()
        .with_context(|| format!("{}: not a file path", target.display()))?;
    let mut temporary_name = name.to_os_string();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = target.with_file_name(temporary_name);
    let copied = write_executable(source, &temporary).and_then(|bytes| {
        std::fs::rename(&temporary, target)
            .with_context(|| format!("renaming {} to {}", temporary.display(), target.display()))?;
        Ok(bytes)
    });
    if copied.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    let bytes =
        copied.with_context(|| format!("installing the appenv agent at {}", target.display()))?;
    // The rename is durable once the directory is (best effort: not every file system lets a
    // directory be opened for sync).
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(bytes)
}

/// Copy `source` into the new file `path` with mode 0755 (whatever the umask) and fsync it.
fn write_executable(source: &Path, path: &Path) -> anyhow::Result<u64> {
    let mut from =
        std::fs::File::open(source).with_context(|| format!("reading {}", source.display()))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let bytes = std::io::copy(&mut from, &mut to)
        .with_context(|| format!("copying {} to {}", source.display(), path.display()))?;
    to.set_permissions(std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    to.sync_all()
        .with_context(|| format!("writing {} to disk", path.display()))?;
    Ok(bytes)
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let target = source(&args.database)?;
    let options = Restore {
        into_non_empty: args.into_non_empty,
    };
    if let Some(url) = &args.url {
        let dump = Dump::parse(url, args.sha256.as_deref())?;
        let fetched = appenv_backup::engine::restore(Origin::Dump(&dump), &target, options).await?;
        let id = format!("sha256:{}", &fetched.sha256[..12]);
        terminate_with(&format!("restored {id} {}", fetched.size_bytes));
        println!(
            "restored the dump at {} ({}, SHA-256 {})",
            dump.shown(),
            mib(fetched.size_bytes),
            fetched.sha256
        );
        return Ok(());
    }
    let (Some(environment), Some(destination), Some(backup)) =
        (args.environment, args.destination, args.backup)
    else {
        anyhow::bail!("--environment, --destination and --backup, or --url: what to restore");
    };
    let catalog = catalog(&StoreArgs {
        environment,
        destination,
        s3_endpoint: args.s3_endpoint,
        s3_region: args.s3_region,
    })?;
    let manifest = match backup.as_str() {
        "latest" => catalog.latest().await?,
        id => catalog.find(&BackupId::parse(id)?).await?,
    };
    let origin = Origin::Backup {
        catalog: &catalog,
        manifest: &manifest,
    };
    appenv_backup::engine::restore(origin, &target, options).await?;
    terminate_with(&format!("restored {} {}", manifest.id, manifest.size_bytes));
    println!(
        "restored backup {} of {} ({}, taken {})",
        manifest.id,
        manifest.environment,
        mib(manifest.size_bytes),
        manifest.started
    );
    Ok(())
}

async fn run_command(command: AgentCommand) -> anyhow::Result<bool> {
    match command {
        AgentCommand::Install(args) => {
            let binary = std::env::current_exe().context("finding the running appenv binary")?;
            let bytes = install(&binary, &args.path)?;
            println!(
                "installed the appenv agent at {} ({})",
                args.path.display(),
                mib(bytes)
            );
        }
        AgentCommand::Backup(args) => {
            let (catalog, source) = (catalog(&args.store)?, source(&args.database)?);
            let manifest =
                appenv_backup::engine::backup(&catalog, &source, reason(&args.reason)?).await?;
            terminate_with(&format!("backup {} {}", manifest.id, manifest.size_bytes));
            println!(
                "backup {} of {} complete: {} in {:.1}s, {}",
                manifest.id,
                manifest.environment,
                mib(manifest.size_bytes),
                manifest.duration_seconds,
                catalog.location()
            );
            if let Some(keep) = args.keep {
                let pruned = catalog.prune(keep as usize, jiff::Timestamp::now()).await?;
                for id in &pruned.expired {
                    println!("deleted backup {id} (keeping {keep})");
                }
                for id in &pruned.abandoned {
                    println!("deleted incomplete backup {id} (abandoned)");
                }
            }
        }
        AgentCommand::Restore(args) => restore(args).await?,
        AgentCommand::List(store) => {
            let catalog = catalog(&store)?;
            let backups = catalog.list().await?;
            println!(
                "ID                   ENGINE    REASON            SIZE        SECONDS  SHA-256 (first file)"
            );
            for m in &backups {
                let sha = m
                    .files
                    .first()
                    .map_or("-", |f| &f.sha256[..16.min(f.sha256.len())]);
                println!(
                    "{:<20} {:<9} {:<17} {:<11} {:<8.1} {sha}",
                    m.id,
                    m.engine.as_str(),
                    m.reason.as_str(),
                    mib(m.size_bytes),
                    m.duration_seconds
                );
            }
            if backups.is_empty() {
                println!(
                    "(no complete backup of {} in {})",
                    catalog.environment(),
                    catalog.location()
                );
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_copies_with_mode_0755_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path().join("source");
        std::fs::write(&source, b"#!/bin/sh\necho agent\n").expect("source");
        let target = dir.path().join("appenv");
        // An older copy is replaced whole.
        std::fs::write(&target, b"old and longer than the new one, for sure").expect("old");
        assert_eq!(install(&source, &target).expect("installs"), 21);
        assert_eq!(
            std::fs::read(&target).expect("copy"),
            b"#!/bin/sh\necho agent\n"
        );
        let mode = std::fs::metadata(&target)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn install_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path().join("source");
        std::fs::write(&source, b"x").expect("source");
        let target = dir.path().join("missing/appenv");
        let message = format!("{:#}", install(&source, &target).expect_err("no such dir"));
        assert!(
            message.starts_with(&format!(
                "installing the appenv agent at {}: creating {}.tmp-",
                target.display(),
                target.display()
            )) && message.contains("No such file or directory"),
            "{message}"
        );
        let message = format!(
            "{:#}",
            install(&dir.path().join("nothing"), &dir.path().join("appenv"))
                .expect_err("no source")
        );
        assert!(
            message.contains("nothing") && message.contains("appenv"),
            "{message}"
        );
    }
}
