//! A current Kubernetes CRD server: etcd and `appenv-crd-server` (k8s.io/apiextensions-apiserver
//! of the current release, with discovery and OpenAPI; see `operator/localcluster/crd-server/`),
//! for what concerns the CRD and the AppEnvironment objects themselves on a current server: CEL
//! rules with their cost budget, server-side apply, the status subresource, printer columns,
//! `kubectl explain`. It serves no Pods, Deployments or namespaces (the 1.20 [`ControlPlane`]
//! does that).
//!
//! The binary is named by `APPENV_CRD_SERVER_BIN`, which `.ci/crd-server.sh` provides (it builds
//! the server from Debian's Go source packages once per machine). Like the control plane, its
//! files live in `/tmp/appenv-cp-<pid>-*`, its processes die with this process (PDEATHSIG), and
//! it is stopped on drop.
//!
//! [`ControlPlane`]: crate::ControlPlane

use crate::certs::Pki;
use crate::{
    Credentials, DevClusterError, Process, Running, answers_ok, binary, binary_dir, client_from,
    free_ports, kubeconfig_yaml, owned_temp_dir, write_private,
};
use kube::Client;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;
use tracing::instrument::WithSubscriber as _;

/// The variable naming the CRD server binary (`.ci/crd-server.sh` prints its path).
pub const BIN_ENV: &str = "APPENV_CRD_SERVER_BIN";
/// The process's name in logs and errors.
pub const BINARY: &str = "appenv-crd-server";
/// Debian's etcd (package etcd-server), used when the control-plane binary directory has none.
const DEBIAN_ETCD: &str = "/usr/bin/etcd";
/// How long the server may take to serve after it started (about 3 s when idle).
const READY_LIMIT: Duration = Duration::from_secs(90);
/// Admission plugins that need what this server does not serve (namespaces, webhooks and
/// admission policies are kube-apiserver's).
const DISABLED_ADMISSION: &str = "NamespaceLifecycle,MutatingAdmissionWebhook,\
ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy";

/// A running CRD server on free loopback ports. Stopped, and its directory removed, on drop or
/// [`CrdServer::shutdown`].
#[derive(Debug)]
pub struct CrdServer {
    kubeconfig: PathBuf,
    server: String,
    server_version: String,
    state: Mutex<Running>,
}

impl CrdServer {
    /// Start etcd and the CRD server, and return once `/livez` answers `ok` and discovery lists
    /// `apiextensions.k8s.io`. (Its `/readyz` never does: a Service informer it starts finds
    /// no Services to list on this server.)
    pub async fn start() -> Result<Self, DevClusterError> {
        let crd_server = crd_server_binary()?;
        let etcd = etcd_binary()?;
        let dir = owned_temp_dir()?;
        let path = dir.path().to_owned();
        let mut running = Running {
            processes: Vec::new(),
            dir: Some(dir),
            // Pods are not served here: no Pod Security webhook.
            webhook: None,
        };

        let pki = Pki::generate()?;
        let files = [
            ("ca.crt", &pki.ca_cert_pem),
            ("server.crt", &pki.server_cert_pem),
            ("server.key", &pki.server_key_pem),
            ("admin.crt", &pki.admin_cert_pem),
            ("admin.key", &pki.admin_key_pem),
        ];
        for (name, contents) in files {
            write_private(&path.join(name), contents)?;
        }
        let [etcd_client, etcd_peer, port] = free_ports::<3>()?;
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = path.join("kubeconfig");
        let credentials = Credentials::ClientCertificate {
            cert: &path.join("admin.crt"),
            key: &path.join("admin.key"),
        };
        write_private(
            &kubeconfig,
            &kubeconfig_yaml(&server, &path.join("ca.crt"), &credentials),
        )?;

        running
            .start_etcd(&etcd, &path, etcd_client, etcd_peer)
            .await?;
        let p = |name: &str| path.join(name).display().to_string();
        let mut cmd = Command::new(&crd_server);
        // Authentication and authorization are delegated, and the server will not start
        // without a kubeconfig for them: it gets one for itself, as `admin` in
        // system:masters, which the delegating authorizer allows without asking anyone.
        cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", p("server.crt")),
            format!("--tls-private-key-file={}", p("server.key")),
            format!("--cert-dir={}", p("server-certs")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--kubeconfig={}", p("kubeconfig")),
            format!("--authentication-kubeconfig={}", p("kubeconfig")),
            format!("--authorization-kubeconfig={}", p("kubeconfig")),
            "--authentication-skip-lookup".to_owned(),
            "--enable-priority-and-fairness=false".to_owned(),
            format!("--disable-admission-plugins={DISABLED_ADMISSION}"),
        ]);
        running.spawn(BINARY, cmd, &path)?;
        let client = client_from(&kubeconfig).await?;
        running
            .wait_for("CRD server /livez and discovery", READY_LIMIT, || {
                serving(client.clone())
            })
            .await?;
        let info = client.apiserver_version().await?;
        Ok(Self {
            kubeconfig,
            server,
            server_version: format!("{}.{} ({})", info.major, info.minor, info.git_version),
            state: Mutex::new(running),
        })
    }

    /// Path of an admin kubeconfig for this server (for kubectl).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// e.g. `1.36 (v1.36.4)`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// A new admin client. Create one per async runtime, as for the control plane.
    pub async fn client(&self) -> Result<Client, DevClusterError> {
        client_from(&self.kubeconfig).await
    }

    /// PIDs of the running processes (etcd, the CRD server), for leak checks.
    pub fn pids(&self) -> Vec<u32> {
        self.state()
            .processes
            .iter()
            .map(crate::process::Supervised::pid)
            .collect()
    }

    /// Stop both processes and remove the directory. Idempotent.
    pub fn shutdown(&self) {
        self.state().stop();
    }

    fn state(&self) -> MutexGuard<'_, Running> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for CrdServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The binary named by `APPENV_CRD_SERVER_BIN`.
fn crd_server_binary() -> Result<PathBuf, DevClusterError> {
    let path = std::env::var_os(BIN_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or(DevClusterError::CrdServerNotSet { variable: BIN_ENV })?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(DevClusterError::CrdServerMissing {
            variable: BIN_ENV,
            path,
        })
    }
}

/// The control plane's etcd (Debian's, linked there by `.ci/control-plane.sh`), else Debian's
/// own path.
fn etcd_binary() -> Result<PathBuf, DevClusterError> {
    let dir = binary_dir()?;
    binary(&dir, Process::Etcd.binary()).or_else(|err| {
        let debian = Path::new(DEBIAN_ETCD);
        if debian.is_file() {
            Ok(debian.to_owned())
        } else {
            Err(err)
        }
    })
}

/// Whether the server is live and its discovery (which `kubectl apply` needs to map kinds)
/// lists `apiextensions.k8s.io`. Failed polls while it starts are kept out of the log.
async fn serving(client: Client) -> bool {
    if !answers_ok(client.clone(), "/livez").await {
        return false;
    }
    client
        .list_api_groups()
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
        .is_ok_and(|groups| {
            groups
                .groups
                .iter()
                .any(|g| g.name == "apiextensions.k8s.io")
        })
}

static SHARED: OnceLock<Result<CrdServer, String>> = OnceLock::new();

extern "C" fn shutdown_shared() {
    if let Some(Ok(server)) = SHARED.get() {
        server.shutdown();
    }
}

/// The process-wide CRD server, started on first use and stopped when the process exits.
///
/// # Panics
/// If it cannot start (no `APPENV_CRD_SERVER_BIN`, a server that exits or never serves):
/// tests that need it fail rather than skip.
pub fn shared() -> &'static CrdServer {
    let result = SHARED.get_or_init(|| {
        // Started on a thread of its own: the caller may be inside a runtime, where another
        // cannot block. Nothing of the server needs that runtime afterwards.
        let started = std::thread::Builder::new()
            .name("appenv-crd-server".into())
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("tokio runtime: {e}"))?
                    .block_on(CrdServer::start())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("starting the CRD server thread: {e}"))
            .and_then(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err("the CRD server thread panicked".to_owned()))
            });
        if let Ok(server) = &started {
            // SAFETY: registering a plain `extern "C" fn` with no captured state.
            unsafe {
                libc::atexit(shutdown_shared);
            }
            let _ = writeln!(
                std::io::stderr(),
                "[appenv] CRD tests run against a current CRD server, apiextensions-apiserver \
                 {} at {}",
                server.server_version(),
                server.server()
            );
        }
        started
    });
    match result {
        Ok(server) => server,
        Err(err) => panic!("the CRD server could not start: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_for_a_missing_binary_names_the_variable_and_the_script() {
        let text = DevClusterError::CrdServerNotSet { variable: BIN_ENV }.to_string();
        assert!(text.contains("APPENV_CRD_SERVER_BIN"), "{text}");
        assert!(text.contains(".ci/crd-server.sh"), "{text}");
        let text = DevClusterError::CrdServerMissing {
            variable: BIN_ENV,
            path: PathBuf::from("/nowhere/appenv-crd-server"),
        }
        .to_string();
        assert!(text.contains("APPENV_CRD_SERVER_BIN=/nowhere/appenv-crd-server"));
        assert!(text.contains(".ci/crd-server.sh"), "{text}");
    }
}
