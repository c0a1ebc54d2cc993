//! appenv-localcluster: a real, local Kubernetes control plane (etcd + kube-apiserver +
//! kube-controller-manager) and a simulated kubelet, for the integration tests, `appenv dev`
//! and the benchmark. Never linked into the operator's image.
//!
//! The binaries come from `APPENV_K8S_BIN_DIR`, or from the cache that `.ci/control-plane.sh`
//! fills (it builds Kubernetes 1.20.2 from Debian's source package once per machine).
//! [`crd_server`] runs a current Kubernetes CRD server (apiextensions-apiserver 1.36, from
//! `APPENV_CRD_SERVER_BIN`, which `.ci/crd-server.sh` builds) for what concerns the CRD itself.
//!
//! Failure tests can break a running control plane: [`ControlPlane::restart_apiserver`] (the
//! API server goes away and comes back on the same port, etcd and its data stay) and
//! [`ControlPlane::pause_apiserver`] (the API server stops answering, connections hang).
//!
//! Pod Security admission, which 1.20 lacks, is enforced as on a current cluster: a webhook
//! served by this process applies the restricted profile in namespaces labelled for it (see
//! [`admission`]); a server of 1.23 or later enforces it itself.

pub mod admission;
mod certs;
pub mod crd_server;
pub mod kubelet;
mod shared;
pub mod snapshots;
pub use shared::shared;
mod process;

use crate::process::{Supervised, pid_alive};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::instrument::WithSubscriber as _;

/// The Kubernetes version `.ci/control-plane.sh` builds when no binaries are given.
pub const DEFAULT_K8S_VERSION: &str = "1.20.2";
/// The cache folder of that build: the version and the patches applied to it (must match
/// `BUILD_ID` in `.ci/control-plane.sh`).
pub const DEFAULT_K8S_BUILD_ID: &str = "1.20.2-appenv1";
/// Directory of ready binaries (kube-apiserver, kube-controller-manager, etcd), e.g. official
/// releases downloaded in CI. Like envtest's `KUBEBUILDER_ASSETS`.
pub const BIN_DIR_ENV: &str = "APPENV_K8S_BIN_DIR";
const TEMP_PREFIX: &str = "appenv-cp-";
const APISERVER: &str = Process::ApiServer.binary();
/// How long a restart waits for kube-apiserver to exit after SIGTERM before SIGKILL. It stops
/// listening at once, but then keeps open watches streaming for up to 60 s (1.20 has no flag
/// for that): waiting them out would only make every restart a minute long.
const APISERVER_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long kube-apiserver may take to answer /readyz after a (re)start.
const APISERVER_READY_LIMIT: Duration = Duration::from_secs(90);
/// How long kube-apiserver may take to enforce Pod Security after start-up (it reads webhook
/// configurations through a watch: well under a second when it is idle).
const POD_SECURITY_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DevClusterError {
    #[error(
        "control-plane binary {binary} not found in {dir}: run `bash .ci/control-plane.sh` \
         once (it builds Kubernetes {DEFAULT_K8S_VERSION} in about 5 minutes), or set \
         {BIN_DIR_ENV} to a directory holding kube-apiserver, kube-controller-manager and etcd"
    )]
    MissingBinary { binary: &'static str, dir: PathBuf },
    #[error(
        "the CRD server binary is not set: {variable} must name it; `bash .ci/crd-server.sh` \
         builds it (about 5 minutes, once per machine) and prints its path \
         (export {variable}=\"$(bash .ci/crd-server.sh)\")"
    )]
    CrdServerNotSet { variable: &'static str },
    #[error(
        "{variable}={path} is not a file: run `bash .ci/crd-server.sh` to build the CRD server \
         and set {variable} to the path it prints"
    )]
    CrdServerMissing {
        variable: &'static str,
        path: PathBuf,
    },
    #[error(
        "cannot determine the binary cache directory: neither APPENV_CACHE_DIR nor HOME is set"
    )]
    NoCacheDir,
    #[error("generating certificates for the local control plane")]
    Certificates(#[from] rcgen::Error),
    #[error("local control plane I/O ({what})")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{process} exited during start-up ({status}); last log lines:\n{log}")]
    Exited {
        process: String,
        status: String,
        log: String,
    },
    #[error("{what} not ready after {waited:?}; last log lines of {process}:\n{log}")]
    Timeout {
        what: &'static str,
        waited: Duration,
        process: String,
        log: String,
    },
    #[error("building a client for the local control plane")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("building a client for the local control plane")]
    Client(#[from] kube::Error),
    #[error("{process} is not running: the control plane was shut down")]
    NotRunning { process: &'static str },
    #[error("setting up Pod Security admission")]
    PodSecurity(#[source] kube::Error),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevClusterError {
    let what = what.into();
    move |source| DevClusterError::Io { what, source }
}

/// Where the control-plane binaries are: `APPENV_K8S_BIN_DIR`, else the build cache.
pub fn binary_dir() -> Result<PathBuf, DevClusterError> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let cache = match std::env::var_os("APPENV_CACHE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or(DevClusterError::NoCacheDir)?)
            .join(".cache/appenv"),
    };
    Ok(cache
        .join("kubernetes")
        .join(DEFAULT_K8S_BUILD_ID)
        .join("bin"))
}

fn binary(dir: &Path, binary: &'static str) -> Result<PathBuf, DevClusterError> {
    let path = dir.join(binary);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DevClusterError::MissingBinary {
            binary,
            dir: dir.to_owned(),
        })
    }
}

/// The processes of a control plane, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Etcd,
    ApiServer,
    ControllerManager,
}

impl Process {
    /// The binary's file name, also the process's name in logs and errors.
    pub const fn binary(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::ApiServer => "kube-apiserver",
            Self::ControllerManager => "kube-controller-manager",
        }
    }
}

/// Options for [`ControlPlane::start`].
#[derive(Debug, Default, Clone)]
pub struct StartOptions {
    /// Also write the kubeconfig here (e.g. a stable path for `appenv dev`); removed on shutdown.
    pub kubeconfig_copy: Option<PathBuf>,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// kube-controller-manager's own client-side rate limit.
    pub controller_manager_rate: ClientRate,
}

/// A client-side rate limit of client-go: a token bucket refilled at `qps` requests per second
/// that holds at most `burst`. Given to kube-controller-manager as `--kube-api-qps` and
/// `--kube-api-burst`.
///
/// Its defaults there, 20 and 30, are what paced the benchmark at about 1.4 environments per
/// second by every method with the CPUs idle: every Deployment costs the controller manager
/// several writes (a ReplicaSet, Pods, their statuses), and an environment has three. The local
/// cluster's default, [`ClientRate::LOCAL_CLUSTER`], is set high enough that this limit is not
/// what bounds a benchmark: what it measures is the API server, the operator and the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClientRate {
    pub qps: u32,
    pub burst: u32,
}

impl ClientRate {
    /// 1000 requests/s, burst 2000. Measured 2026-12-01 on 2 cores: 100 environments by direct
    /// apply took ~70 s at 20/30 and ~10 s at 400/800; 1000 is well past that, with room for
    /// faster machines, and still a limit (a runaway controller cannot spin unbounded). The
    /// burst, twice the rate as 400/800 was, lets the first wave of writes of a large batch
    /// through at once.
    pub const LOCAL_CLUSTER: Self = Self {
        qps: 1000,
        burst: 2000,
    };

    /// `qps` with the given burst, or twice `qps` (the local cluster's ratio) without one.
    pub fn with_qps(qps: u32, burst: Option<u32>) -> Self {
        Self {
            qps,
            burst: burst.unwrap_or_else(|| qps.saturating_mul(2)),
        }
    }

    /// kube-controller-manager's flags for this limit.
    pub fn controller_manager_args(self) -> [String; 2] {
        [
            format!("--kube-api-qps={}", self.qps),
            format!("--kube-api-burst={}", self.burst),
        ]
    }
}

impl Default for ClientRate {
    fn default() -> Self {
        Self::LOCAL_CLUSTER
    }
}

impl std::fmt::Display for ClientRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests/s, burst {}", self.qps, self.burst)
    }
}

/// A running control plane on free loopback ports. Stopped, and its directory removed, on drop
/// or [`ControlPlane::shutdown`]; its processes also die with this process (see `process.rs`).
#[derive(Debug)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    server: String,
    server_version: String,
    pod_security_webhook: bool,
    kubeconfig_copy: Option<PathBuf>,
    state: Mutex<Running>,
}

#[derive(Debug)]
struct Running {
    /// In start order; stopped in reverse.
    processes: Vec<Supervised>,
    /// The Pod Security admission webhook; stopped after the processes.
    webhook: Option<admission::Server>,
    dir: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// Start etcd, kube-apiserver and kube-controller-manager and wait until they serve.
    pub async fn start(options: StartOptions) -> Result<Self, DevClusterError> {
        let started = Instant::now();
        let say = |msg: String| {
            if options.progress {
                let _ = writeln!(std::io::stderr(), "[appenv] {msg}");
            }
        };
        let bins = binary_dir()?;
        let etcd = binary(&bins, Process::Etcd.binary())?;
        let apiserver = binary(&bins, Process::ApiServer.binary())?;
        let controller_manager = binary(&bins, Process::ControllerManager.binary())?;
        let dir = owned_temp_dir()?;
        let path = dir.path().to_owned();
        let mut running = Running {
            processes: Vec::new(),
            webhook: None,
            dir: Some(dir),
        };

        let pki = certs::Pki::generate()?;
        let token = random_hex().map_err(io_err("reading /dev/urandom"))?;
        let files = [
            ("ca.crt", pki.ca_cert_pem.as_str()),
            ("apiserver.crt", pki.server_cert_pem.as_str()),
            ("apiserver.key", pki.server_key_pem.as_str()),
            ("sa.key", pki.service_account_key_pem.as_str()),
            ("sa.pub", pki.service_account_pub_pem.as_str()),
            (
                "tokens.csv",
                &format!("{token},admin,admin,system:masters\n"),
            ),
        ];
        for (name, contents) in files {
            write_private(&path.join(name), contents)?;
        }
        let [etcd_client, etcd_peer, apiserver_port, kcm_port] = free_ports::<4>()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = path.join("kubeconfig");
        let kubeconfig_text =
            kubeconfig_yaml(&server, &path.join("ca.crt"), &Credentials::Token(&token));
        write_private(&kubeconfig, &kubeconfig_text)?;

        say(format!("starting etcd ({})", etcd.display()));
        running
            .start_etcd(&etcd, &path, etcd_client, etcd_peer)
            .await?;

        say("starting kube-apiserver".to_owned());
        let p = |name: &str| path.join(name).display().to_string();
        let mut cmd = Command::new(&apiserver);
        cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={apiserver_port}"),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".to_owned(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--disable-admission-plugins=ServiceAccount".to_owned(),
            // On by default since 1.9; named so that binaries of any version call the webhook.
            "--enable-admission-plugins=ValidatingAdmissionWebhook".to_owned(),
            format!("--cert-dir={}", p("apiserver-certs")),
        ]);
        running.spawn(Process::ApiServer.binary(), cmd, &path)?;
        let client = client_from(&kubeconfig).await?;
        running
            .wait_for("kube-apiserver /readyz", APISERVER_READY_LIMIT, || {
                apiserver_ready(client.clone())
            })
            .await?;
        let info = client.apiserver_version().await?;
        let server_version = format!("{}.{} ({})", info.major, info.minor, info.git_version);

        // Before the controller manager, so that no Pod is ever created without it. A server
        // with its own Pod Security admission (binaries from APPENV_K8S_BIN_DIR) needs none.
        if !admission::built_in(&info) {
            say("starting the Pod Security admission webhook (restricted)".to_owned());
            let webhook = admission::Server::start(&pki.server_cert_pem, &pki.server_key_pem)
                .map_err(io_err("serving the Pod Security admission webhook"))?;
            let port = webhook.port();
            running.webhook = Some(webhook);
            admission::register(&client, port, &pki.ca_cert_pem)
                .await
                .map_err(DevClusterError::PodSecurity)?;
        }
        admission::create_probe_namespace(&client)
            .await
            .map_err(DevClusterError::PodSecurity)?;
        running
            .wait_for("Pod Security admission", POD_SECURITY_LIMIT, || {
                admission::in_effect(client.clone())
            })
            .await?;
        admission::delete_probe_namespace(&client)
            .await
            .map_err(DevClusterError::PodSecurity)?;
        let pod_security_webhook = running.webhook.is_some();

        say("starting kube-controller-manager".to_owned());
        let mut cmd = Command::new(&controller_manager);
        let kc = kubeconfig.display().to_string();
        cmd.args([
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={kcm_port}"),
            "--leader-elect=false".to_owned(),
            "--controllers=*,-serviceaccount-token,-bootstrapsigner,-tokencleaner".to_owned(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            "--use-service-account-credentials=false".to_owned(),
            format!("--cert-dir={}", p("kcm-certs")),
        ]);
        cmd.args(options.controller_manager_rate.controller_manager_args());
        // Before 1.24 the controller manager also served plain HTTP on the fixed port 10252,
        // which collides with any other control plane on the machine; later releases dropped
        // both that port and the flag that turns it off.
        if info.major == "1"
            && info
                .minor
                .trim_end_matches('+')
                .parse::<u32>()
                .is_ok_and(|m| m < 24)
        {
            cmd.arg("--port=0");
        }
        running.spawn(Process::ControllerManager.binary(), cmd, &path)?;
        // The service-account controller creates `default/default` once the controllers run:
        // a functional sign that garbage collection, namespaces and workloads are handled.
        let service_accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client.clone(), "default");
        running
            .wait_for("kube-controller-manager", Duration::from_secs(60), || {
                let api = service_accounts.clone();
                async move { matches!(api.get_opt("default").await, Ok(Some(_))) }
            })
            .await?;

        if let Some(copy) = &options.kubeconfig_copy {
            if let Some(parent) = copy.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            write_private(copy, &kubeconfig_text)?;
        }
        say(format!(
            "control plane ready: Kubernetes {server_version} at {server} in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(Self {
            kubeconfig,
            server,
            server_version,
            pod_security_webhook,
            kubeconfig_copy: options.kubeconfig_copy,
            state: Mutex::new(running),
        })
    }

    /// Path of an admin kubeconfig for this control plane.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// e.g. `1.20 (v1.20.2)`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Whether this process enforces Pod Security, through its webhook (a 1.20 server has no
    /// Pod Security admission), rather than the API server itself. Either way Pods in
    /// namespaces labelled `pod-security.kubernetes.io/enforce: restricted` are held to it;
    /// the webhook's refusals start with `admission webhook "..." denied the request: `.
    pub fn pod_security_webhook(&self) -> bool {
        self.pod_security_webhook
    }

    /// A new admin client. Create one per async runtime: a client's connection pool lives on
    /// the runtime that created it.
    pub async fn client(&self) -> Result<Client, DevClusterError> {
        client_from(&self.kubeconfig).await
    }

    /// PIDs of the running control-plane processes (for leak checks).
    pub fn pids(&self) -> Vec<u32> {
        self.state().processes.iter().map(Supervised::pid).collect()
    }

    /// PID of one running process, e.g. to read its command line from /proc; `None` after
    /// [`ControlPlane::shutdown`].
    pub fn pid(&self, process: Process) -> Option<u32> {
        self.state()
            .processes
            .iter()
            .find(|p| p.name() == process.binary())
            .map(Supervised::pid)
    }

    /// Restart kube-apiserver while etcd (and its data) and kube-controller-manager keep
    /// running: SIGTERM and wait for it to exit (SIGKILL after 5 s), then start it again with
    /// the same flags, port and certificates, and return once its /readyz answers `ok`.
    ///
    /// Meanwhile new connections are refused and open watches end. The new server has the same
    /// objects and resource versions, but a fresh watch cache: a watch resumed from a resource
    /// version of before the restart gets 410 Gone and must relist, as after a real upgrade.
    pub async fn restart_apiserver(&self) -> Result<(), DevClusterError> {
        self.with_apiserver("stopping kube-apiserver", Supervised::terminate)?;
        let deadline = Instant::now() + APISERVER_STOP_GRACE;
        loop {
            if self.with_apiserver("", |p| Ok(p.exited().is_some()))? {
                break;
            }
            if Instant::now() >= deadline {
                self.with_apiserver("", |p| {
                    p.kill();
                    Ok(())
                })?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.with_apiserver("starting kube-apiserver again", Supervised::respawn)?;
        self.wait_apiserver_ready().await
    }

    /// Make the API server unreachable until [`ControlPlane::resume_apiserver`]: SIGSTOP. Its
    /// port stays open, so connections (open and new) hang without an answer, as across a
    /// network partition, rather than being refused; clients find out only through their own
    /// timeouts. kube-controller-manager and the simulated kubelet lose it too.
    ///
    /// A paused server is resumed by [`ControlPlane::shutdown`], so a failing test still
    /// tears down promptly.
    pub fn pause_apiserver(&self) -> Result<(), DevClusterError> {
        self.with_apiserver("pausing kube-apiserver", Supervised::pause)
    }

    /// SIGCONT after [`ControlPlane::pause_apiserver`]; returns once /readyz answers `ok`.
    pub async fn resume_apiserver(&self) -> Result<(), DevClusterError> {
        self.with_apiserver("resuming kube-apiserver", Supervised::resume)?;
        self.wait_apiserver_ready().await
    }

    fn state(&self) -> MutexGuard<'_, Running> {
        // The state stays consistent if a holder panicked: every change is one push or pop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on the kube-apiserver process, holding the state lock only for that call.
    fn with_apiserver<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Supervised) -> std::io::Result<T>,
    ) -> Result<T, DevClusterError> {
        let mut state = self.state();
        let process = state
            .processes
            .iter_mut()
            .find(|p| p.name() == APISERVER)
            .ok_or(DevClusterError::NotRunning { process: APISERVER })?;
        f(process).map_err(io_err(what))
    }

    /// Poll /readyz until `ok`, failing early if the restarted kube-apiserver exits.
    async fn wait_apiserver_ready(&self) -> Result<(), DevClusterError> {
        let client = self.client().await?;
        let started = Instant::now();
        loop {
            if apiserver_ready(client.clone()).await {
                return Ok(());
            }
            let failure = self.with_apiserver("", |p| {
                Ok(match p.exited() {
                    Some(status) => Some(DevClusterError::Exited {
                        process: APISERVER.to_owned(),
                        status,
                        log: p.log_tail(25),
                    }),
                    None if started.elapsed() > APISERVER_READY_LIMIT => {
                        Some(DevClusterError::Timeout {
                            what: "kube-apiserver /readyz",
                            waited: APISERVER_READY_LIMIT,
                            process: APISERVER.to_owned(),
                            log: p.log_tail(25),
                        })
                    }
                    None => None,
                })
            })?;
            if let Some(failure) = failure {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop every process (in reverse start order) and remove the directory. Idempotent.
    pub fn shutdown(&self) {
        self.state().stop();
        if let Some(copy) = &self.kubeconfig_copy {
            let _ = std::fs::remove_file(copy);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Running {
    /// Stop every process (in reverse start order) and remove the directory. Idempotent.
    fn stop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop(Duration::from_secs(5));
        }
        drop(self.webhook.take());
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }

    /// Start etcd with its data in `dir` on the given loopback ports and wait until its client
    /// port accepts connections.
    async fn start_etcd(
        &mut self,
        etcd: &Path,
        dir: &Path,
        client_port: u16,
        peer_port: u16,
    ) -> Result<(), DevClusterError> {
        let mut cmd = Command::new(etcd);
        cmd.arg("--data-dir")
            .arg(dir.join("etcd"))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{client_port}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{client_port}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{peer_port}"
            ))
            .arg("--unsafe-no-fsync")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        self.spawn(Process::Etcd.binary(), cmd, dir)?;
        self.wait_for("etcd", Duration::from_secs(30), || async {
            TcpStream::connect((Ipv4Addr::LOCALHOST, client_port)).is_ok()
        })
        .await
    }

    fn spawn(&mut self, name: &str, cmd: Command, dir: &Path) -> Result<(), DevClusterError> {
        let log = dir.join(format!("{name}.log"));
        let child =
            Supervised::spawn(name, cmd, &log).map_err(io_err(format!("starting {name}")))?;
        self.processes.push(child);
        Ok(())
    }

    /// Poll `ready` until it holds, failing early if the last started process exits.
    async fn wait_for<F, Fut>(
        &mut self,
        what: &'static str,
        limit: Duration,
        mut ready: F,
    ) -> Result<(), DevClusterError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if ready().await {
                return Ok(());
            }
            let Some(last) = self.processes.last_mut() else {
                return Ok(());
            };
            if let Some(status) = last.exited() {
                return Err(DevClusterError::Exited {
                    process: last.name().to_owned(),
                    status,
                    log: last.log_tail(25),
                });
            }
            if start.elapsed() > limit {
                return Err(DevClusterError::Timeout {
                    what,
                    waited: limit,
                    process: last.name().to_owned(),
                    log: last.log_tail(25),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether kube-apiserver answers `ok` on /readyz. Refused connections and 500s are expected
/// while it starts: the client's error logging for those polls is kept out of the terminal.
async fn apiserver_ready(client: Client) -> bool {
    answers_ok(client, "/readyz").await
}

/// Whether the server answers `ok` on a health endpoint (`/readyz`, `/livez`), with the
/// client's error logging kept quiet as in [`apiserver_ready`].
async fn answers_ok(client: Client, path: &str) -> bool {
    let Ok(req) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    client
        .request_text(req)
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
        .is_ok_and(|t| t.trim() == "ok")
}

async fn client_from(kubeconfig: &Path) -> Result<Client, DevClusterError> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.read_timeout = Some(Duration::from_secs(295));
    Ok(Client::try_from(config)?)
}

/// How a kubeconfig's user authenticates.
enum Credentials<'a> {
    /// A bearer token from kube-apiserver's `--token-auth-file`.
    Token(&'a str),
    /// A client certificate signed by the server's `--client-ca-file`.
    ClientCertificate { cert: &'a Path, key: &'a Path },
}

fn kubeconfig_yaml(server: &str, ca: &Path, credentials: &Credentials<'_>) -> String {
    let user = match credentials {
        Credentials::Token(token) => format!("token: {token}"),
        Credentials::ClientCertificate { cert, key } => format!(
            "client-certificate: {}\n    client-key: {}",
            cert.display(),
            key.display()
        ),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: appenv-local\n  cluster:\n    \
         server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    \
         {user}\ncontexts:\n- name: appenv-local\n  context:\n    cluster: appenv-local\n    \
         user: admin\ncurrent-context: appenv-local\n",
        ca = ca.display()
    )
}

fn write_private(path: &Path, contents: &str) -> Result<(), DevClusterError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

/// `N` distinct free loopback ports. All listeners are held until every port is chosen, so the
/// kernel cannot hand out the same port twice.
fn free_ports<const N: usize>() -> Result<[u16; N], DevClusterError> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .map_err(io_err("choosing a free port"))?;
        *port = listener
            .local_addr()
            .map_err(io_err("choosing a free port"))?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}

fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new private directory `/tmp/appenv-cp-<our pid>-*` for a control plane's files, after
/// removing those of dead owners. `.ci/run` finds leaked processes by that name.
fn owned_temp_dir() -> Result<tempfile::TempDir, DevClusterError> {
    remove_stale_dirs();
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(io_err("creating the control plane directory"))
}

/// Remove directories left by control planes whose process died without cleaning up
/// (SIGKILL); their child processes died with them (PDEATHSIG).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let owner = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<i32>().ok());
        if owner.is_some_and(|pid| !pid_alive(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports::<4>().expect("ports");
        for (i, a) in ports.iter().enumerate() {
            assert!(*a > 0);
            assert!(ports[i + 1..].iter().all(|b| b != a));
        }
    }

    #[test]
    fn kubeconfig_parses_and_points_at_server() {
        let text = kubeconfig_yaml(
            "https://127.0.0.1:6443",
            Path::new("/x/ca.crt"),
            &Credentials::Token("t0k"),
        );
        let parsed: Kubeconfig = serde_norway::from_str(&text).expect("valid kubeconfig");
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(parsed.current_context.as_deref(), Some("appenv-local"));
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.token.is_some());

        let text = kubeconfig_yaml(
            "https://127.0.0.1:6443",
            Path::new("/x/ca.crt"),
            &Credentials::ClientCertificate {
                cert: Path::new("/x/admin.crt"),
                key: Path::new("/x/admin.key"),
            },
        );
        let parsed: Kubeconfig = serde_norway::from_str(&text).expect("valid kubeconfig");
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(user.client_certificate.as_deref(), Some("/x/admin.crt"));
        assert_eq!(user.client_key.as_deref(), Some("/x/admin.key"));
        assert!(user.token.is_none());
    }

    #[test]
    fn the_controller_manager_gets_its_rate_as_flags() {
        let default = StartOptions::default().controller_manager_rate;
        assert_eq!(default, ClientRate::LOCAL_CLUSTER);
        assert_eq!(
            default.controller_manager_args(),
            ["--kube-api-qps=1000", "--kube-api-burst=2000"]
        );
        assert_eq!(default.to_string(), "1000 requests/s, burst 2000");
    }

    #[test]
    fn a_rate_without_a_burst_bursts_to_twice_its_qps() {
        assert_eq!(
            ClientRate::with_qps(50, None),
            ClientRate {
                qps: 50,
                burst: 100
            }
        );
        assert_eq!(ClientRate::with_qps(50, Some(60)).burst, 60);
        assert_eq!(ClientRate::with_qps(u32::MAX, None).burst, u32::MAX);
    }

    #[test]
    fn random_hex_has_requested_length_and_varies() {
        let a = random_hex().expect("urandom");
        let b = random_hex().expect("urandom");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}

#[cfg(test)]
mod build_id_tests {
    use super::{DEFAULT_K8S_BUILD_ID, DEFAULT_K8S_VERSION};

    #[test]
    fn the_cache_folder_matches_what_the_provisioning_script_builds() {
        let script = include_str!("../../../.ci/control-plane.sh");
        let suffix = DEFAULT_K8S_BUILD_ID
            .strip_prefix(&format!("{DEFAULT_K8S_VERSION}-"))
            .expect("build id starts with the version");
        assert!(script.contains(&format!("K8S_VERSION=\"{DEFAULT_K8S_VERSION}\"")));
        assert!(script.contains(&format!("BUILD_ID=\"$K8S_VERSION-{suffix}\"")));
    }
}

/// GET `path` from a local HTTP endpoint on `port` (plain HTTP/1.0): status code and body. For
/// the operator's /metrics, /healthz and /readyz in tests and benchmarks.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port))?;
    use std::io::{Read as _, Write as _};
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}
