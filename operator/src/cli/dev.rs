//! `appenv dev`: a local control plane and a simulated node, up until Ctrl-C.

use crate::devcluster::kubelet::{NODE_NAME, SimKubelet};
use crate::devcluster::{ControlPlane, StartOptions};
use anyhow::Context as _;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where to write the kubeconfig of the local control plane (removed on exit).
    #[arg(
        long,
        env = "APPENV_DEV_KUBECONFIG",
        default_value = ".appenv-dev/kubeconfig"
    )]
    pub kubeconfig: PathBuf,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let kubeconfig = std::path::absolute(&args.kubeconfig)
        .with_context(|| format!("resolving --kubeconfig {}", args.kubeconfig.display()))?;
    let control_plane = ControlPlane::start(StartOptions {
        kubeconfig_copy: Some(kubeconfig.clone()),
        progress: true,
    })
    .await
    .context("starting the local control plane")?;
    let client = control_plane.client().await?;
    let kubelet = SimKubelet::start(client)
        .await
        .context("starting the simulated kubelet")?;
    println!(
        "appenv dev: Kubernetes {} is ready at {}\n\
         \n  export KUBECONFIG={}\n  kubectl get nodes\n\n\
         Pods are SIMULATED: node {NODE_NAME} runs no containers. appenv's simulated kubelet\n\
         binds Pods to it and reports them Running/Ready (Pods of Jobs: Succeeded), so\n\
         Deployments, Jobs and rollouts behave as on a cluster, but no application code runs.\n\
         Press Ctrl-C to stop; the cluster and its data are removed.",
        control_plane.server_version(),
        control_plane.server(),
        kubeconfig.display()
    );
    wait_for_shutdown_signal().await?;
    eprintln!("[appenv] stopping the local control plane");
    // The kubelet first, so its watches do not report the API server going away as errors.
    drop(kubelet);
    control_plane.shutdown();
    Ok(())
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
