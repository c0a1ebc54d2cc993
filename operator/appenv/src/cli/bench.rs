//! `appenv bench`: speed, requests and memory of the operator next to direct apply and Helm;
//! `appenv bench wake`: environments that sleep, woken through the activator.

use anyhow::Context as _;
pub use appenv_bench::BenchArgs;
use appenv_bench::wake::WakeArgs;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    pub what: Option<BenchWhat>,
    #[command(flatten)]
    pub create: BenchArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Wake latency of a sleeping environment through the activator (p50/p95 next to the
    /// operator's own steps), many requests at once to a sleeping one, and the activator's
    /// overhead on an awake one against calling its Pod directly (wrk).
    Wake(WakeArgs),
}

fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("[bench] figures written to {}", path.display());
    Ok(())
}

pub async fn run(command: BenchCommand) -> anyhow::Result<bool> {
    match command.what {
        Some(BenchWhat::Wake(args)) => {
            let json = args.json.clone();
            let report = appenv_bench::wake::run(args).await?;
            print!("{}", appenv_bench::wake::markdown(&report));
            write_json(&json, &report)?;
        }
        None => {
            let args = command.create;
            let json = args.json.clone();
            let report = appenv_bench::run(args).await?;
            print!("{}", appenv_bench::markdown(&report));
            write_json(&json, &report)?;
        }
    }
    Ok(true)
}
