use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = appenv::cli::Cli::parse();
    if matches!(cli.command, appenv::cli::Command::Operator(_)) {
        // Before the runtime's threads start (see `memory`).
        appenv::cli::memory::limit_arenas();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(appenv::cli::run(cli))
}
