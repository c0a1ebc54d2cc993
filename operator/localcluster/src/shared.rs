//! One local cluster per process, shared by every test in a test binary.
//!
//! Tests run on their own short-lived tokio runtimes, but the simulated kubelet must keep
//! running between them, so the cluster lives on a dedicated thread with its own runtime.
//! The control plane is stopped by an `atexit` hook when the test binary exits (statics are
//! never dropped), and its processes die with the binary in any case (PDEATHSIG).

use super::kubelet::SimKubelet;
use super::{ControlPlane, StartOptions};
use std::io::Write as _;
use std::sync::OnceLock;

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

extern "C" fn shutdown_shared() {
    if let Some(Ok(control_plane)) = SHARED.get() {
        control_plane.shutdown();
    }
}

/// The process-wide local cluster (control plane + simulated kubelet), started on first use.
///
/// # Panics
/// If the control plane cannot start: tests that need it fail rather than skip.
pub fn shared() -> &'static ControlPlane {
    let result = SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("appenv-local-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        let _ = tx.send(Err(format!("tokio runtime: {err}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let started = async {
                        let cp = ControlPlane::start(StartOptions::default())
                            .await
                            .map_err(|e| format!("{e}"))?;
                        let client = cp.client().await.map_err(|e| format!("{e}"))?;
                        let kubelet = SimKubelet::start(client)
                            .await
                            .map_err(|e| format!("starting the simulated kubelet: {e}"))?;
                        Ok::<_, String>((cp, kubelet))
                    };
                    match started.await {
                        Ok((cp, kubelet)) => {
                            let _ = tx.send(Ok(cp));
                            // Keep the kubelet's tasks running for the life of the process.
                            let _kubelet = kubelet;
                            std::future::pending::<()>().await;
                        }
                        Err(err) => {
                            let _ = tx.send(Err(err));
                        }
                    }
                });
            });
        if let Err(err) = spawned {
            return Err(format!("starting the local-cluster thread: {err}"));
        }
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err("the local-cluster thread died".to_owned()));
        if let Ok(cp) = &result {
            // SAFETY: registering a plain `extern "C" fn` with no captured state.
            unsafe {
                libc::atexit(shutdown_shared);
            }
            // Straight to stderr, past the test harness's output capture, so every run shows
            // which real API server its integration tests talked to.
            let _ = writeln!(
                std::io::stderr(),
                "[appenv] integration tests run against a real kube-apiserver {} at {}",
                cp.server_version(),
                cp.server()
            );
        }
        result
    });
    match result {
        Ok(cp) => cp,
        Err(err) => panic!("the local Kubernetes control plane could not start: {err}"),
    }
}
