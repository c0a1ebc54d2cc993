//! The `appenv` command line: one module per subcommand.

mod dev;

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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local Kubernetes control plane with a simulated node, for development.
    Dev(dev::DevArgs),
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run a parsed command line; errors are printed with their whole cause chain.
pub async fn run(cli: Cli) -> ExitCode {
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Dev(args) => dev::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
