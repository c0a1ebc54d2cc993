//! `appenv bench`: speed, requests and memory of the operator next to direct apply and Helm.

use anyhow::Context as _;
pub use appenv_bench::BenchArgs;

pub async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    let json = args.json.clone();
    let report = appenv_bench::run(args).await?;
    print!("{}", appenv_bench::markdown(&report));
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("[bench] figures written to {}", json.display());
    Ok(true)
}
