//! `appenv agent`: the backup agent, as it runs inside appenv's backup and restore Jobs (and by
//! hand, against any PostgreSQL, SQLite or DuckDB the machine reaches).
//!
//! PostgreSQL's connection comes from the libpq variables (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`); an S3 destination's credentials from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`. Neither is ever printed.

use anyhow::Context as _;
use appenv_backup::destination::S3Credentials;
use appenv_backup::{BackupId, Catalog, Destination, Engine, Reason, Restore, Source};
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Take a backup: the engine's consistent copy, uploaded, then its manifest; then prune.
    Backup(BackupArgs),
    /// Restore a backup (`latest` or an id) into the database.
    Restore(RestoreArgs),
    /// List the complete backups, oldest first.
    List(StoreArgs),
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
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// `latest` or a backup id as `list` prints it.
    #[arg(long)]
    pub backup: String,
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

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// Run an agent command; a failure is also written where Kubernetes reads a container's
/// termination message (`/dev/termination-log`, when it exists), so the operator can say why a
/// backup or restore Job failed without reading its logs.
pub async fn run(command: AgentCommand) -> anyhow::Result<bool> {
    let result = run_command(command).await;
    if let Err(e) = &result {
        let path = std::env::var_os("APPENV_TERMINATION_LOG")
            .map_or_else(|| PathBuf::from("/dev/termination-log"), PathBuf::from);
        if path.exists() {
            // Kubernetes keeps at most 4096 bytes of it.
            let message: String = format!("{e:#}").chars().take(4000).collect();
            let _ = std::fs::write(&path, message);
        }
    }
    result
}

async fn run_command(command: AgentCommand) -> anyhow::Result<bool> {
    match command {
        AgentCommand::Backup(args) => {
            let (catalog, source) = (catalog(&args.store)?, source(&args.database)?);
            let manifest =
                appenv_backup::engine::backup(&catalog, &source, reason(&args.reason)?).await?;
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
        AgentCommand::Restore(args) => {
            let (catalog, target) = (catalog(&args.store)?, source(&args.database)?);
            let manifest = match args.backup.as_str() {
                "latest" => catalog.latest().await?,
                id => catalog.find(&BackupId::parse(id)?).await?,
            };
            let options = Restore {
                into_non_empty: args.into_non_empty,
            };
            appenv_backup::engine::restore(&catalog, &manifest, &target, options).await?;
            println!(
                "restored backup {} of {} ({}, taken {})",
                manifest.id,
                manifest.environment,
                mib(manifest.size_bytes),
                manifest.started
            );
        }
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
