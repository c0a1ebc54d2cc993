use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    appenv::cli::run(appenv::cli::Cli::parse()).await
}
