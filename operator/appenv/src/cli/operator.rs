//! `appenv operator`: run the controller against the cluster of the current kubeconfig (or
//! in-cluster configuration).

use crate::cli::settings::SettingsArgs;
use anyhow::Context as _;
use appenv_controller::leader::{Elector, LeaseConfig};
use appenv_controller::{self as controller, Options};
use appenv_core::settings::parse_duration;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Reconcile every environment at least this often, in seconds.
    #[arg(long, env = "APPENV_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Only reconcile AppEnvironments matching this label selector.
    #[arg(long, env = "APPENV_SELECTOR")]
    pub selector: Option<String>,
    /// Environments reconciled at once.
    #[arg(long, env = "APPENV_CONCURRENCY", default_value_t = appenv_controller::DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// Install or update the AppEnvironment CRD at start.
    #[arg(long, env = "APPENV_INSTALL_CRD")]
    pub install_crd: bool,
    /// Return the memory the operator freed (environments that are gone) to the system this
    /// often, in seconds; 0: never (glibc keeps it for reuse).
    #[arg(long, env = "APPENV_MEMORY_TRIM_SECONDS", default_value_t = 30)]
    pub memory_trim_seconds: u64,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "APPENV_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

/// Leader election: with it, any number of replicas is safe and only one reconciles.
#[derive(Debug, clap::Args)]
pub struct LeaderArgs {
    /// Reconcile only while holding a coordination.k8s.io Lease.
    #[arg(long, env = "APPENV_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "APPENV_LEASE_NAME", default_value = "appenv-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the chart sets the operator's own namespace).
    #[arg(long, env = "APPENV_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// A Lease not renewed for this long may be taken by another replica.
    #[arg(long, env = "APPENV_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// The leader stops (and exits) when it could not renew the Lease for this long.
    #[arg(long, env = "APPENV_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_deadline: Duration,
    /// How often replicas try to take, and the leader renews, the Lease.
    #[arg(long, env = "APPENV_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,
    /// This replica's identity in the Lease (default: host name and process id).
    #[arg(long, env = "APPENV_POD_NAME")]
    pub identity: Option<String>,
}

impl LeaderArgs {
    fn config(&self) -> anyhow::Result<Option<LeaseConfig>> {
        if !self.leader_elect {
            return Ok(None);
        }
        let identity = match &self.identity {
            Some(identity) => identity.clone(),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "appenv".to_owned());
                format!("{host}-{}", std::process::id())
            }
        };
        let config = LeaseConfig {
            namespace: self.lease_namespace.clone(),
            name: self.lease_name.clone(),
            identity,
            lease_duration: self.lease_duration,
            renew_deadline: self.lease_renew_deadline,
            retry_period: self.lease_retry_period,
        };
        config
            .check()
            .map_err(|rule| anyhow::anyhow!("--lease-*: {rule}"))?;
        Ok(Some(config))
    }
}

impl OperatorArgs {
    pub fn options(&self) -> Options {
        Options {
            settings: self.settings.to_settings(),
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            selector: self.selector.clone(),
            concurrency: self.concurrency.max(1),
        }
    }
}

/// SIGTERM (Kubernetes stopping the Pod) or SIGINT (Ctrl-C), listened for from the moment this
/// is called: a signal that arrives between leader election and the controller's start is not
/// lost (tokio drops a signal that comes while nobody listens, and the process would no longer
/// stop on it).
fn shutdown_signal()
-> anyhow::Result<futures::future::Shared<futures::future::BoxFuture<'static, ()>>> {
    use futures::FutureExt as _;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
    .boxed()
    .shared())
}

fn server_ended(
    served: Result<std::io::Result<()>, tokio::task::JoinError>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<bool> {
    // The endpoints are part of the contract (probes): without them, stop.
    served
        .context("metrics server task")?
        .with_context(|| format!("serving on {addr}"))?;
    Ok(false)
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<bool> {
    let shutdown = shutdown_signal()?;
    let lease = args.leader.config()?;
    let metrics = Arc::new(controller::Metrics::default());
    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes configuration (kubeconfig or in-cluster)")?;
    let client = metrics
        .requests
        .client(config)
        .context("connecting to Kubernetes")?;
    if args.install_crd {
        appenv_controller::crd::install(&client, appenv_core::build::FIELD_MANAGER)
            .await
            .context("installing the AppEnvironment CRD")?;
    }
    let envs: kube::Api<appenv_api::AppEnvironment> = kube::Api::all(client.clone());
    envs.list(&kube::api::ListParams::default().limit(1)).await.context(
        "listing AppEnvironments: is the CRD installed? (`kubectl apply -f crds/` or --install-crd)",
    )?;
    let readiness = Arc::new(controller::http::Readiness::default());
    let mut server = tokio::spawn(controller::http::serve(
        args.metrics_addr,
        metrics.clone(),
        readiness.clone(),
    ));
    let trim =
        (args.memory_trim_seconds > 0).then(|| Duration::from_secs(args.memory_trim_seconds));
    let trimming = tokio::spawn(crate::cli::memory::give_back_every(trim));
    // A standby replica is ready too: it is healthy and waiting for its turn.
    readiness.set(true);
    tracing::info!(options = ?args.options(), "appenv operator starting");
    let elector = lease.map(|config| Arc::new(Elector::new(client.clone(), config)));
    let mut holding = match &elector {
        Some(elector) => {
            metrics.leader(false);
            // A SIGTERM during an attempt lets the attempt finish: if it took the Lease, the
            // controller below stops at once (the signal is already in) and the Lease is
            // released, not left to expire.
            tokio::select! {
                acquired = elector.acquire_until(shutdown.clone()) => if !acquired {
                    return Ok(true);
                },
                served = &mut server => return server_ended(served, args.metrics_addr),
            }
            metrics.leader(true);
            // The renewals run as their own task; the process ends if that task ends.
            let elector = elector.clone();
            Some(tokio::spawn(async move { elector.hold().await }))
        }
        None => None,
    };
    let lost = async {
        match holding.as_mut() {
            Some(task) => task.await,
            None => futures::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = controller::run_until(client, args.options(), metrics.clone(), shutdown) => Ok(true),
        lost = lost => match lost {
            Ok(lost) => Err(anyhow::anyhow!("{lost}: stopping so that only the leader reconciles")),
            Err(died) => Err(anyhow::anyhow!("the leader-election task died ({died}): stopping")),
        },
        served = &mut server => server_ended(served, args.metrics_addr),
    };
    trimming.abort();
    if let (Some(task), Some(elector)) = (holding, &elector) {
        task.abort();
        // Wait for the renewals to stop (an aborted task ends at its next await), so that no
        // renewal is sent after the release below.
        let _ = task.await;
        if outcome.is_ok() {
            metrics.leader(false);
            if let Err(err) = elector.release().await {
                tracing::warn!(error = %err, "could not release the lease; it expires by itself");
            }
        }
    }
    outcome
}
