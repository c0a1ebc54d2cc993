//! `appenv activator`: the HTTP proxy in front of environments that sleep (see the
//! appenv-activator crate). Any number of replicas run side by side, without leader election.

use anyhow::Context as _;
use appenv_core::settings::parse_duration;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ActivatorArgs {
    /// Address of the traffic port (the Ingress controller's backend).
    #[arg(long, env = "APPENV_ACTIVATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "APPENV_ACTIVATOR_HEALTH_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub health_listen: SocketAddr,
    /// Record an environment's activity (annotation appenv.dev/last-request) at most this often.
    #[arg(long, env = "APPENV_ACTIVITY_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub activity_interval: Duration,
    /// A request held for a waking environment longer than this gets 503 with Retry-After.
    #[arg(long, env = "APPENV_WAKE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub wake_timeout: Duration,
    /// A browser (GET accepting text/html) held longer than this gets a page that reloads itself.
    #[arg(long, env = "APPENV_BROWSER_WAIT", default_value = "2s", value_parser = parse_duration)]
    pub browser_wait: Duration,
    /// Requests held at once for one environment; more get 503 at once.
    #[arg(long, env = "APPENV_HOLD_PER_ENVIRONMENT", default_value_t = 1000)]
    pub hold_per_environment: usize,
    /// Requests held at once in all; more get 503 at once.
    #[arg(long, env = "APPENV_HOLD_TOTAL", default_value_t = 5000)]
    pub hold_total: usize,
    /// On SIGTERM, /readyz fails and requests are still served this long before the process
    /// stops, so that the Ingress controller stops sending them first.
    #[arg(long, env = "APPENV_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
}

impl ActivatorArgs {
    pub fn config(&self) -> appenv_activator::Config {
        appenv_activator::Config {
            listen: self.listen,
            health_listen: self.health_listen,
            activity_interval: self.activity_interval,
            wake_timeout: self.wake_timeout,
            browser_wait: self.browser_wait,
            hold_per_environment: self.hold_per_environment,
            hold_total: self.hold_total,
        }
    }
}

pub async fn run(args: ActivatorArgs) -> anyhow::Result<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes configuration (kubeconfig or in-cluster)")?;
    let client = kube::Client::try_from(config).context("connecting to Kubernetes")?;
    let mut activator = appenv_activator::Activator::start(args.config(), client)
        .await
        .context("starting the activator")?;
    tokio::select! {
        ended = activator.wait() => {
            ended.context("the activator stopped")?;
            return Ok(false);
        }
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    let delay = args.shutdown_delay;
    tracing::info!(
        ?delay,
        "stopping: /readyz fails, requests are served meanwhile"
    );
    activator.drain();
    tokio::time::sleep(delay).await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser as _;
    use std::time::Duration;

    fn config(args: &[&str]) -> appenv_activator::Config {
        let cli = Cli::try_parse_from([&["appenv", "activator"], args].concat()).expect("parses");
        match cli.command {
            Command::Activator(args) => args.config(),
            other => panic!("not the activator: {other:?}"),
        }
    }

    #[test]
    fn the_flags_default_to_the_library_s_defaults_and_set_each_limit() {
        assert_eq!(config(&[]), appenv_activator::Config::default());
        let set = config(&[
            "--listen=127.0.0.1:9080",
            "--health-listen=127.0.0.1:9081",
            "--activity-interval=2m",
            "--wake-timeout=90s",
            "--browser-wait=3s",
            "--hold-per-environment=10",
            "--hold-total=20",
        ]);
        assert_eq!(
            set,
            appenv_activator::Config {
                listen: "127.0.0.1:9080".parse().expect("an address"),
                health_listen: "127.0.0.1:9081".parse().expect("an address"),
                activity_interval: Duration::from_secs(120),
                wake_timeout: Duration::from_secs(90),
                browser_wait: Duration::from_secs(3),
                hold_per_environment: 10,
                hold_total: 20,
            }
        );
    }
}
