//! `appenv operator`: run the controller against the cluster of the current kubeconfig (or
//! in-cluster configuration).

use crate::cli::settings::SettingsArgs;
use crate::controller::{self, Options};
use anyhow::Context as _;
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
    #[arg(long, env = "APPENV_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// Install or update the AppEnvironment CRD at start.
    #[arg(long, env = "APPENV_INSTALL_CRD")]
    pub install_crd: bool,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "APPENV_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
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

pub async fn run(args: OperatorArgs) -> anyhow::Result<bool> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster configuration)")?;
    if args.install_crd {
        crate::crd::install(&client, crate::build::FIELD_MANAGER)
            .await
            .context("installing the AppEnvironment CRD")?;
    }
    let envs: kube::Api<crate::api::AppEnvironment> = kube::Api::all(client.clone());
    envs.list(&kube::api::ListParams::default().limit(1)).await.context(
        "listing AppEnvironments: is the CRD installed? (`kubectl apply -f crds/` or --install-crd)",
    )?;
    let metrics = Arc::new(controller::Metrics::default());
    let readiness = Arc::new(controller::http::Readiness::default());
    let server = tokio::spawn(controller::http::serve(
        args.metrics_addr,
        metrics.clone(),
        readiness.clone(),
    ));
    readiness.set(true);
    tracing::info!(options = ?args.options(), "appenv operator starting");
    tokio::select! {
        () = controller::run_with_metrics(client, args.options(), metrics) => Ok(true),
        served = server => {
            // The endpoints are part of the contract (probes): without them, stop.
            served.context("metrics server task")?.with_context(|| format!("serving on {}", args.metrics_addr))?;
            Ok(false)
        }
    }
}
