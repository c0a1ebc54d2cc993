//! The `appenv` command line: one module per subcommand.

mod activator;
mod agent;
mod backup;
#[cfg(feature = "dev")]
mod bench;
mod crd;
#[cfg(feature = "dev")]
pub mod dev;
pub mod memory;
mod operator;
pub mod preview;
mod rbac;
pub mod render;
mod restore;
mod scale;
mod settings;
mod sleep;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "appenv",
    version,
    about = "Kubernetes environments for small web applications"
)]
pub struct Cli {
    /// Log filter, e.g. `info` or `appenv=debug,kube=info`.
    #[arg(long, env = "APPENV_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "APPENV_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The HTTP proxy in front of environments that sleep: records activity, wakes on a request.
    Activator(activator::ActivatorArgs),
    /// The backup agent of appenv's backup and restore Jobs: back up, restore, list.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Back up an environment now (`backup now ENV [--wait]`), or list its backups.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    #[cfg(feature = "dev")]
    /// Measure the operator (latency, API requests, memory) next to direct apply and Helm.
    Bench(bench::BenchCommand),
    #[cfg(feature = "dev")]
    /// Run a local Kubernetes control plane with a simulated node, for development.
    Dev(dev::DevArgs),
    /// Reconcile AppEnvironments: the operator.
    Operator(operator::OperatorArgs),
    /// Preview environments of pull requests.
    #[command(subcommand)]
    Preview(preview::PreviewCommand),
    /// Print every Kubernetes object of an AppEnvironment file, without a cluster.
    Render(render::RenderArgs),
    /// Restore an environment's database in place from one of its backups; web and workers
    /// stop meanwhile.
    #[command(after_long_help = restore::HELP)]
    Restore(restore::RestoreArgs),
    /// Set the replicas of web or of workers in an AppEnvironment's spec, e.g. `celery=3`.
    Scale(scale::ScaleArgs),
    /// Print the AppEnvironment CustomResourceDefinition.
    Crd,
    /// Print the RBAC rules the operator needs (ClusterRole and leader-election Role).
    Rbac(rbac::RbacArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Run a parsed command line; errors are printed with their whole cause chain.
pub async fn run(cli: Cli) -> ExitCode {
    init_logging(&cli.log, cli.log_format);
    let result = match cli.command {
        #[cfg(feature = "dev")]
        Command::Dev(args) => dev::run(args).await.map(|()| true),
        Command::Activator(args) => activator::run(args).await,
        Command::Agent(command) => agent::run(command).await,
        Command::Backup(command) => backup::run(command).await,
        Command::Render(args) => render::run(args),
        Command::Restore(args) => restore::run(args).await,
        Command::Scale(args) => scale::run(args).await,
        Command::Operator(args) => operator::run(args).await,
        Command::Preview(command) => preview::run(command).await,
        Command::Crd => crd::run(),
        #[cfg(feature = "dev")]
        Command::Bench(args) => bench::run(args).await,
        Command::Rbac(args) => rbac::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // The command has already said what is wrong.
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
