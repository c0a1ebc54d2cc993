//! The Pods' HTTP servers and the kubelet's HTTP readiness probe.
//!
//! Every Pod that serves HTTP (it has [`http_ports`]) gets its own loopback address as Pod IP
//! ([`pool_address`]: 127.1.0.1 and up, never in 127.0/16 where the control plane listens; Linux
//! accepts a bind to any 127/8 address without configuration); any other Pod an address of
//! 10.1/16 and up where nothing listens ([`quiet_address`]), which Endpoints take (they refuse
//! loopback addresses). A running Pod serves HTTP on its address on each port of
//! [`http_ports`]: every request is answered `200` with `pod NAME (ns NAMESPACE)\n`, except
//! a readiness probe's path, which answers `503` while the Pod is meant to be unready. The
//! kubelet reports a Pod with an HTTP readiness probe Ready only once a GET of that path
//! answered 2xx or 3xx, as a real kubelet does.
//!
//! One tokio task listens on each port (and one serves each connection): thousands of Pods
//! cost thousands of tasks and sockets, no threads. Listeners close when the Pod stops running
//! (it finished, crash-loops, or its deletion completes) and its address is free again once the
//! Pod is gone.

use super::pod_state::{Reporter, SimEvent, SimState};
use super::{Shared, events, recheck_after};
use http::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A request header: wait this many milliseconds (at most [`MAX_DELAY`]) before answering,
/// like a slow backend.
pub const DELAY_HEADER: &str = "x-appenv-sim-delay-ms";
/// The longest wait [`DELAY_HEADER`] can ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// A response header: `namespace/name` of the Pod that answered.
pub const POD_HEADER: &str = "x-appenv-sim-pod";
/// The probe's `User-Agent`, as a 1.20 kubelet sends it.
const PROBE_USER_AGENT: &str = "kube-probe/1.20";

/// Pod addresses: 127.1.0.1 to 127.254.255.254, last byte never 0 or 255.
const POOL: u32 = 254 * 256 * 254;
/// Fresh addresses tried for a new Pod whose ports are taken (by another local cluster's
/// kubelet on this machine) before it is left with the failure.
const BIND_ATTEMPTS: usize = 64;
/// Pods remembered as ended (deleted or finished), so that a late look at one binds nothing.
const ENDED_REMEMBERED: usize = 16_384;
/// Connections waiting to be accepted on one port.
const BACKLOG: u32 = 1024;

/// The `n`th Pod address of the pool (wrapping around).
pub fn pool_address(n: u32) -> Ipv4Addr {
    numbered(127, n)
}

/// The `n`th address of the pool of Pods that serve no HTTP (wrapping around): 10.1.0.1 to
/// 10.254.255.254, outside the node's 10.0/16. Nothing listens there, and an Endpoints object
/// takes it, as it takes a real Pod's address; kube-apiserver refuses loopback addresses in
/// Endpoints, so kube-controller-manager would fail (and retry, with an Event each time) every
/// Service whose Pods have one.
pub fn quiet_address(n: u32) -> Ipv4Addr {
    numbered(10, n)
}

fn numbered(first: u32, n: u32) -> Ipv4Addr {
    let n = n % POOL;
    let second = 1 + n / (256 * 254);
    let third = (n / 254) % 256;
    let fourth = 1 + n % 254;
    Ipv4Addr::from((first << 24) | (second << 16) | (third << 8) | fourth)
}

/// Whether `ip` is a Pod address (in 127/8, outside 127.0/16).
pub fn is_pod_address(ip: Ipv4Addr) -> bool {
    let [first, second, ..] = ip.octets();
    first == 127 && second != 0
}

/// An HTTP readiness probe of one container, as the kubelet runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub container: String,
    pub port: u16,
    /// As the probe's URL shows it: empty, or starting with `/` (may carry a query).
    pub path: String,
    pub timeout: Duration,
    /// How long after a failure it probes again.
    pub period: Duration,
}

impl HttpProbe {
    /// The path a request for this probe asks for (without the query).
    fn request_path(&self) -> &str {
        match self.path.split('?').next() {
            Some("") | None => "/",
            Some(path) => path,
        }
    }

    fn url(&self, ip: Ipv4Addr) -> String {
        format!("http://{ip}:{}{}", self.port, self.path)
    }
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

/// The probe's `httpGet`, if it probes plain HTTP (HTTPS is not served).
fn http_get(probe: Option<&Probe>) -> Option<&HTTPGetAction> {
    probe?
        .http_get
        .as_ref()
        .filter(|get| get.scheme.as_deref().is_none_or(|s| s == "HTTP"))
}

/// The port a probe targets: a number, or a port name of the container (the kubelet also takes
/// a name that is a number).
fn probe_port(container: &Container, port: &IntOrString) -> Option<u16> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .or_else(|| name.parse().ok())?,
    };
    u16::try_from(number).ok().filter(|p| *p != 0)
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    let secs = value
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// The ports the Pod serves HTTP on (sorted): those an HTTP readiness, liveness or startup
/// probe targets, and the TCP container ports named `http` or `http-*`.
pub fn http_ports(pod: &Pod) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    for c in containers(pod) {
        for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe] {
            if let Some(port) = http_get(probe.as_ref()).and_then(|g| probe_port(c, &g.port)) {
                ports.insert(port);
            }
        }
        for p in c.ports.iter().flatten() {
            let named = p
                .name
                .as_deref()
                .is_some_and(|n| n == "http" || n.starts_with("http-"));
            let tcp = p.protocol.as_deref().is_none_or(|p| p == "TCP");
            if named
                && tcp
                && let Ok(port) = u16::try_from(p.container_port)
            {
                ports.insert(port);
            }
        }
    }
    ports.into_iter().collect()
}

/// The containers' HTTP readiness probes (in spec order). `initialDelaySeconds` is not
/// waited for: the simulated container is up at once.
pub fn readiness_probes(pod: &Pod) -> Vec<HttpProbe> {
    containers(pod)
        .iter()
        .filter_map(|c| {
            let probe = c.readiness_probe.as_ref()?;
            let get = http_get(Some(probe))?;
            let path = match get.path.as_deref().unwrap_or_default() {
                "" => String::new(),
                p if p.starts_with('/') => p.to_owned(),
                p => format!("/{p}"),
            };
            Some(HttpProbe {
                container: c.name.clone(),
                port: probe_port(c, &get.port)?,
                path,
                timeout: seconds(probe.timeout_seconds, 1),
                period: seconds(probe.period_seconds, 10),
            })
        })
        .collect()
}

/// The Pod IP its status shows.
fn shown_ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref()
}

fn uid(pod: &Pod) -> String {
    pod.uid().unwrap_or_default()
}

/// What one Pod's servers answer with, shared by its listeners.
#[derive(Debug)]
struct Served {
    pod: String,
    namespace: String,
    /// From when (Unix milliseconds) the readiness path answers 200: `i64::MAX` never.
    ready_from: AtomicI64,
}

impl Served {
    fn ready_now(&self) -> bool {
        self.ready_from.load(Ordering::Relaxed) <= Timestamp::now().as_millisecond()
    }
}

/// One port of a Pod: its readiness paths answer 503 while the Pod is unready.
#[derive(Debug)]
struct Endpoint {
    served: Arc<Served>,
    readiness_paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeState {
    Idle,
    /// The probe of this number is running: only its result counts.
    InFlight(u64),
    Passed,
    Failed {
        retry_at: Instant,
    },
}

/// A running Pod's listeners; closed on drop.
#[derive(Debug)]
struct PodServer {
    ip: Ipv4Addr,
    served: Arc<Served>,
    listeners: HashMap<u16, Listening>,
    /// Ports that could not be bound, and why.
    unbound: HashMap<u16, String>,
    probe: ProbeState,
}

/// One bound port and the task that accepts its connections; closed on drop.
#[derive(Debug)]
struct Listening {
    listener: Arc<TcpListener>,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    /// Stop listening at once, as a stopped container's socket does: a connection attempted
    /// after this is refused, not accepted by the kernel and then reset when the aborted task
    /// is dropped later. The open connections close when the task is.
    fn drop(&mut self) {
        self.task.abort();
        use std::os::fd::AsRawFd as _;
        // SAFETY: the descriptor is the listener's, open while `self.listener` is held.
        // `shutdown` of a listening socket moves it out of LISTEN (Linux), nothing else.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

impl PodServer {
    /// Bind the ports not bound yet; the errors of those that fail.
    fn listen(&mut self, ports: &[u16], probes: &[HttpProbe]) -> Vec<(u16, std::io::Error)> {
        let mut failed = Vec::new();
        for &port in ports {
            if self.listeners.contains_key(&port) {
                continue;
            }
            match bind(SocketAddr::from((self.ip, port))) {
                Ok(listener) => {
                    self.unbound.remove(&port);
                    let endpoint = Arc::new(Endpoint {
                        served: self.served.clone(),
                        readiness_paths: probes
                            .iter()
                            .filter(|p| p.port == port)
                            .map(|p| p.request_path().to_owned())
                            .collect(),
                    });
                    let listener = Arc::new(listener);
                    let task = tokio::spawn(accept(listener.clone(), endpoint));
                    self.listeners.insert(port, Listening { listener, task });
                }
                Err(err) => failed.push((port, err)),
            }
        }
        failed
    }

    /// Close the listeners and move to `ip`.
    fn move_to(&mut self, ip: Ipv4Addr) {
        self.listeners.clear();
        self.unbound.clear();
        self.ip = ip;
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// What the Pod's readiness is, as far as its servers and probes decide.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// As the Pod's target says (no HTTP readiness probe, or not meant to be ready).
    AsTarget,
    /// Ready (the probe passed) or not (it failed, and is not due again yet).
    Ready(bool),
    /// A probe is running: write nothing until it is done (it looks at the Pod again then).
    Wait,
    /// Probe now, at this address; the probed ports that could not be bound refuse. Its result
    /// is recorded under `probe`, its number.
    Probe {
        ip: Ipv4Addr,
        unbound: HashSet<u16>,
        probe: u64,
    },
}

#[derive(Debug, Default)]
struct Registry {
    next: u32,
    /// The number of the next probe started.
    next_probe: u64,
    /// Pod uid -> its address (the one its status shows, or the one it will show).
    addresses: HashMap<String, Ipv4Addr>,
    in_use: HashSet<Ipv4Addr>,
    servers: HashMap<String, PodServer>,
    /// Pods that never serve again (deleted or finished), oldest first.
    ended: VecDeque<String>,
    ended_set: HashSet<String>,
}

impl Registry {
    fn assign(&mut self, uid: &str, ip: Ipv4Addr) {
        if let Some(old) = self.addresses.insert(uid.to_owned(), ip)
            && old != ip
        {
            self.in_use.remove(&old);
        }
        self.in_use.insert(ip);
    }

    /// The next address no Pod has: of the loopback pool for a Pod that `serves` HTTP, else
    /// of the quiet pool.
    fn allocate(&mut self, serves: bool) -> Ipv4Addr {
        let pool = if serves { pool_address } else { quiet_address };
        for _ in 0..POOL {
            let ip = pool(self.next);
            self.next = (self.next + 1) % POOL;
            if !self.in_use.contains(&ip) {
                return ip;
            }
        }
        pool(self.next)
    }

    fn address_of(&mut self, uid: &str, serves: bool) -> Ipv4Addr {
        if let Some(ip) = self.addresses.get(uid) {
            return *ip;
        }
        let ip = self.allocate(serves);
        self.assign(uid, ip);
        ip
    }

    fn end(&mut self, uid: &str) {
        self.servers.remove(uid);
        if self.ended_set.insert(uid.to_owned()) {
            self.ended.push_back(uid.to_owned());
        }
        while self.ended.len() > ENDED_REMEMBERED {
            if let Some(old) = self.ended.pop_front() {
                self.ended_set.remove(&old);
            }
        }
    }

    /// Bind the Pod's missing ports; a Pod whose address is not published yet moves to another
    /// one while its ports are taken there.
    fn listen(&mut self, pod: &Pod, ports: &[u16], probes: &[HttpProbe]) {
        let uid = uid(pod);
        let published = shown_ip(pod).is_some();
        for attempt in 1..=BIND_ATTEMPTS {
            let Some(server) = self.servers.get_mut(&uid) else {
                return;
            };
            let failed = server.listen(ports, probes);
            let busy = failed
                .iter()
                .any(|(_, e)| e.kind() == std::io::ErrorKind::AddrInUse);
            if busy && !published && attempt < BIND_ATTEMPTS {
                let ip = self.allocate(true);
                self.assign(&uid, ip);
                if let Some(server) = self.servers.get_mut(&uid) {
                    server.move_to(ip);
                }
                continue;
            }
            for (port, err) in failed {
                let error = err.to_string();
                if server.unbound.get(&port) != Some(&error) {
                    tracing::warn!(pod = %pod.name_any(), namespace = %pod.namespace().unwrap_or_default(),
                        address = %SocketAddr::from((server.ip, port)), %error,
                        "simulated kubelet: cannot listen for the pod");
                }
                server.unbound.insert(port, error);
            }
            return;
        }
    }
}

/// The Pods' addresses and servers.
#[derive(Debug)]
pub struct Servers {
    registry: Mutex<Registry>,
    /// Whether Pods serve HTTP ([`Servers::without_http`]); set once, read without the lock.
    http: bool,
}

impl Servers {
    /// Addresses counting up from a random point of the pool, so that two local clusters on
    /// one machine seldom meet (a new Pod moves on if they do).
    pub fn new() -> Self {
        raise_open_file_limit();
        let start = getrandom::u32().unwrap_or_else(|_| std::process::id());
        Self::starting_at(start)
    }

    pub fn starting_at(n: u32) -> Self {
        Self {
            registry: Mutex::new(Registry {
                next: n % POOL,
                ..Registry::default()
            }),
            http: true,
        }
    }

    /// No Pod serves HTTP: every Pod gets a quiet address, which Endpoints take, and is Ready
    /// as its annotations say, without a probe (for a benchmark: see [`SimKubelet`]).
    ///
    /// [`SimKubelet`]: super::SimKubelet
    pub fn without_http(self) -> Self {
        Self {
            http: false,
            ..self
        }
    }

    /// The ports the Pod serves HTTP on ([`http_ports`]): none when Pods serve no HTTP.
    pub fn ports(&self, pod: &Pod) -> Vec<u16> {
        if self.http {
            http_ports(pod)
        } else {
            Vec::new()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Pod IP to report: the one its status shows, else its own address: of the loopback
    /// pool if it serves HTTP ([`Servers::ports`]), else of the quiet pool.
    pub fn address(&self, pod: &Pod) -> String {
        match shown_ip(pod) {
            Some(ip) => ip.to_owned(),
            None => {
                let serves = !self.ports(pod).is_empty();
                self.lock().address_of(&uid(pod), serves).to_string()
            }
        }
    }

    /// Keep the address the Pod's status shows for it (a Pod seen again after a restart).
    pub fn reserve(&self, pod: &Pod) {
        if let Some(ip) = shown_ip(pod).and_then(|ip| ip.parse().ok()) {
            self.lock().assign(&uid(pod), ip);
        }
    }

    /// Close the Pod's listeners, for now (it may run again).
    pub fn stop(&self, uid: &str) {
        self.lock().servers.remove(uid);
    }

    /// Close the Pod's listeners for good: it finished or its containers stopped for deletion.
    pub fn end(&self, uid: &str) {
        self.lock().end(uid);
    }

    /// The Pod is gone: close its listeners and free its address.
    pub fn forget(&self, uid: &str) {
        let mut registry = self.lock();
        registry.end(uid);
        if let Some(ip) = registry.addresses.remove(uid) {
            registry.in_use.remove(&ip);
        }
    }

    /// Forget the Pods not in `uids` (after a relist: they were deleted meanwhile).
    pub fn retain(&self, uids: &HashSet<String>) {
        let registry = self.lock();
        let gone: Vec<String> = registry
            .addresses
            .keys()
            .chain(registry.servers.keys())
            .filter(|uid| !uids.contains(*uid))
            .cloned()
            .collect();
        drop(registry);
        for uid in gone {
            self.forget(&uid);
        }
    }

    /// Serve the running Pod's `ports`, its readiness path answering 200 from `ready_from`
    /// (Unix milliseconds); whether it is Ready as far as `probes` decide, if `probe` (it is
    /// meant to be ready and has HTTP readiness probes).
    pub fn serve(
        &self,
        pod: &Pod,
        ports: &[u16],
        probes: &[HttpProbe],
        ready_from: i64,
        probe: bool,
    ) -> Gate {
        let uid = uid(pod);
        let mut guard = self.lock();
        let registry = &mut *guard;
        if registry.ended_set.contains(&uid) {
            return Gate::AsTarget;
        }
        if !registry.servers.contains_key(&uid) {
            let ip = match shown_ip(pod) {
                Some(ip) => match ip.parse().ok().filter(|ip| is_pod_address(*ip)) {
                    Some(ip) => ip,
                    // Not an address this kubelet gave (an older one's): nothing can answer.
                    None => return Gate::AsTarget,
                },
                None => registry.address_of(&uid, true),
            };
            registry.assign(&uid, ip);
            let served = Arc::new(Served {
                pod: pod.name_any(),
                namespace: pod.namespace().unwrap_or_default(),
                ready_from: AtomicI64::new(ready_from),
            });
            let server = PodServer {
                ip,
                served,
                listeners: HashMap::new(),
                unbound: HashMap::new(),
                probe: ProbeState::Idle,
            };
            registry.servers.insert(uid.clone(), server);
        }
        registry.listen(pod, ports, probes);
        let Some(server) = registry.servers.get_mut(&uid) else {
            return Gate::AsTarget;
        };
        server
            .served
            .ready_from
            .store(ready_from, Ordering::Relaxed);
        if !probe {
            server.probe = ProbeState::Idle;
            return Gate::AsTarget;
        }
        match server.probe {
            ProbeState::Passed => Gate::Ready(true),
            ProbeState::InFlight(_) => Gate::Wait,
            ProbeState::Failed { retry_at } if Instant::now() < retry_at => Gate::Ready(false),
            ProbeState::Idle | ProbeState::Failed { .. } => {
                let probe = registry.next_probe;
                registry.next_probe += 1;
                server.probe = ProbeState::InFlight(probe);
                Gate::Probe {
                    ip: server.ip,
                    unbound: server.unbound.keys().copied().collect(),
                    probe,
                }
            }
        }
    }

    /// Record the result of the Pod's probe number `probe` (`Some(period)`: it failed, probe
    /// again that much later); `false` if it no longer counts: the Pod stopped running meanwhile
    /// (its server, and the probe with it, may have started again since), or was decided not
    /// to be probed.
    pub fn probed(&self, uid: &str, probe: u64, failed: Option<Duration>) -> bool {
        let mut registry = self.lock();
        let Some(server) = registry.servers.get_mut(uid) else {
            return false;
        };
        if server.probe != ProbeState::InFlight(probe) {
            return false;
        }
        server.probe = match failed {
            None => ProbeState::Passed,
            Some(period) => ProbeState::Failed {
                retry_at: Instant::now() + period,
            },
        };
        true
    }
}

/// Let the process open as many files as it may: each serving Pod holds a listening socket.
fn raise_open_file_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the rlimit owned here.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
                let wanted = limit.rlim_max.min(1 << 20);
                if limit.rlim_cur < wanted {
                    limit.rlim_cur = wanted;
                    let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
                }
            }
        }
    });
}

/// Whether the running Pod (`state`, changing by itself at `change_at`) is Ready, once its
/// HTTP ports are served: `None` while a probe runs (the Pod is looked at again when it is
/// done, whatever became of it). A Pod that is not running serves nothing.
pub(super) fn gate(
    shared: &Arc<Shared>,
    pod: &Pod,
    state: SimState,
    change_at: Option<Timestamp>,
) -> Option<SimState> {
    let ready = match state {
        SimState::Running { ready } => ready,
        SimState::Succeeded | SimState::Failed => {
            shared.servers.end(&uid(pod));
            return Some(state);
        }
        _ => {
            shared.servers.stop(&uid(pod));
            return Some(state);
        }
    };
    let ports = shared.servers.ports(pod);
    if ports.is_empty() {
        return Some(state);
    }
    let probes = readiness_probes(pod);
    let ready_from = match (ready, change_at) {
        (true, _) => i64::MIN,
        (false, Some(at)) => at.as_millisecond(),
        (false, None) => i64::MAX,
    };
    let probe = ready && !probes.is_empty();
    match shared
        .servers
        .serve(pod, &ports, &probes, ready_from, probe)
    {
        Gate::AsTarget => Some(state),
        Gate::Ready(ready) => Some(SimState::Running { ready }),
        Gate::Wait => None,
        Gate::Probe { ip, unbound, probe } => {
            start_probe(shared, pod.clone(), probes, ip, unbound, probe);
            None
        }
    }
}

/// Run the Pod's readiness probes (`probe` is the run's number, see [`Servers::probed`]; the
/// ports in `unbound` refuse); record a failure as the kubelet does (an `Unhealthy` Event, and
/// another look after the probe's period), then look at the Pod again: read anew and decided
/// from the stores of now, whether the result counted or not (it does not once the Pod stopped
/// running meanwhile). No probe leaves the Pod showing what was decided before it, with
/// nothing to look at it again.
fn start_probe(
    shared: &Arc<Shared>,
    pod: Pod,
    probes: Vec<HttpProbe>,
    ip: Ipv4Addr,
    unbound: HashSet<u16>,
    probe: u64,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let mut failure = None;
        for http_probe in &probes {
            let result = if unbound.contains(&http_probe.port) {
                Err(refused(ip, http_probe))
            } else {
                probe_once(ip, http_probe).await
            };
            if let Err(message) = result {
                failure = Some((http_probe, message));
                break;
            }
        }
        let period = failure.as_ref().map(|(p, _)| p.period);
        let counted = shared.servers.probed(&uid(&pod), probe, period);
        if counted && let Some((http_probe, message)) = failure {
            tracing::warn!(pod = %name, namespace = %ns, %message, "simulated kubelet: readiness probe failed");
            let event = SimEvent {
                reporter: Reporter::Kubelet,
                warning: true,
                reason: "Unhealthy",
                message: format!("Readiness probe failed: {message}"),
                field_path: Some(format!("spec.containers{{{}}}", http_probe.container)),
            };
            let permit = shared.writes.acquire().await;
            if let Err(err) = events::record(&shared.client, &pod, &event).await {
                tracing::debug!(pod = %name, error = %err, "simulated kubelet: event");
            }
            drop(permit);
            recheck_after(&shared, &ns, &name, http_probe.period);
        }
        if !counted {
            tracing::debug!(pod = %name, namespace = %ns, "simulated kubelet: a probe's result no longer counts, looking again");
        }
        recheck_after(&shared, &ns, &name, Duration::ZERO);
    });
}

/// The probe's failure when nothing listens at its port (Go's text).
fn refused(ip: Ipv4Addr, probe: &HttpProbe) -> String {
    format!(
        "Get \"{}\": dial tcp {ip}:{}: connect: connection refused",
        probe.url(ip),
        probe.port
    )
}

/// An OS error as Go prints it: `connection refused`, without Rust's `(os error 111)`.
fn go_error_text(err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::ConnectionRefused {
        return "connection refused".to_owned();
    }
    let text = err.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect::<String>()
    })
}

/// GET the probe's path at `ip`, as the kubelet does: `Ok` for 2xx and 3xx, else the failure
/// in the kubelet's words.
pub async fn probe_once(ip: Ipv4Addr, probe: &HttpProbe) -> Result<(), String> {
    let url = probe.url(ip);
    let get = async {
        let stream = TcpStream::connect((ip, probe.port)).await.map_err(|e| {
            format!(
                "dial tcp {ip}:{}: connect: {}",
                probe.port,
                go_error_text(&e)
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        let request = Request::get(if probe.path.is_empty() {
            "/"
        } else {
            probe.path.as_str()
        })
        .header(HOST, format!("{ip}:{}", probe.port))
        .header(USER_AGENT, PROBE_USER_AGENT)
        .header(CONNECTION, "close")
        .body(String::new())
        .map_err(|e| e.to_string())?;
        let exchange = sender.send_request(request);
        tokio::pin!(exchange);
        let response = tokio::select! {
            response = &mut exchange => response,
            _ = connection => exchange.await,
        };
        response
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    };
    let code = match tokio::time::timeout(probe.timeout, get).await {
        Ok(Ok(code)) => code,
        Ok(Err(detail)) => return Err(format!("Get \"{url}\": {detail}")),
        Err(_) => {
            return Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ));
        }
    };
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Accept connections until aborted; aborting also closes the open ones.
async fn accept(listener: Arc<TcpListener>, endpoint: Arc<Endpoint>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, endpoint.clone()));
                }
                // Shut down by dropping its `Listening`: the task is aborted too.
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return,
                Err(err) => {
                    // Out of file descriptors, most likely: give the open connections a moment.
                    tracing::warn!(%err, pod = %endpoint.served.pod, "simulated kubelet: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, endpoint: Arc<Endpoint>) {
    let service = hyper::service::service_fn(move |request| {
        let endpoint = endpoint.clone();
        async move { Ok::<_, Infallible>(answer(&endpoint, request).await) }
    });
    if let Err(err) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%err, "simulated pod: connection ended");
    }
}

async fn answer<B>(endpoint: &Endpoint, request: Request<B>) -> Response<String> {
    let delay = request
        .headers()
        .get(DELAY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_millis);
    if let Some(delay) = delay {
        tokio::time::sleep(delay.min(MAX_DELAY)).await;
    }
    let served = &endpoint.served;
    let unready = endpoint
        .readiness_paths
        .iter()
        .any(|p| p == request.uri().path())
        && !served.ready_now();
    let pod = format!("pod {} (ns {})", served.pod, served.namespace);
    let (status, body) = if unready {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{pod}: not ready\n"),
        )
    } else {
        (StatusCode::OK, format!("{pod}\n"))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("{}/{}", served.namespace, served.pod)) {
        headers.insert(POD_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(spec: Value, status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc-123", "namespace": "app-staging", "uid": "u-1"},
            "spec": spec,
            "status": status,
        }))
        .expect("a valid Pod")
    }

    fn web(status: Value) -> Pod {
        pod(
            json!({"containers": [{
                "name": "app", "image": "app:1",
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
            }]}),
            status,
        )
    }

    #[test]
    fn pod_addresses_count_up_in_loopback_outside_127_0() {
        assert_eq!(pool_address(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(pool_address(253), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(pool_address(254), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(pool_address(254 * 256), Ipv4Addr::new(127, 2, 0, 1));
        assert_eq!(pool_address(POOL - 1), Ipv4Addr::new(127, 254, 255, 254));
        assert_eq!(pool_address(POOL), pool_address(0), "wraps around");
        for n in (0..POOL).step_by(97) {
            let ip = pool_address(n);
            assert!(is_pod_address(ip), "{ip}");
            assert!(!matches!(ip.octets()[3], 0 | 255), "{ip}");
        }
        assert!(!is_pod_address(Ipv4Addr::LOCALHOST));
        assert!(!is_pod_address(Ipv4Addr::new(10, 244, 0, 2)));
        assert_eq!(quiet_address(0), Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(quiet_address(POOL - 1), Ipv4Addr::new(10, 254, 255, 254));
        assert!(!is_pod_address(quiet_address(7)));
    }

    #[test]
    fn http_ports_are_probed_ports_and_ports_named_http() {
        let many = pod(
            json!({"containers": [
                {"name": "app", "image": "app:1",
                 "ports": [{"name": "http", "containerPort": 8000},
                           {"name": "http-admin", "containerPort": 8081},
                           {"name": "http-dns", "containerPort": 53, "protocol": "UDP"},
                           {"name": "metrics", "containerPort": 9090},
                           {"name": "httpx", "containerPort": 9091}],
                 "readinessProbe": {"httpGet": {"path": "healthz", "port": "http"},
                                    "timeoutSeconds": 3, "periodSeconds": 2},
                 "livenessProbe": {"httpGet": {"path": "/live", "port": 9090}}},
                {"name": "sidecar", "image": "side:1",
                 "startupProbe": {"httpGet": {"port": "8082"}},
                 "readinessProbe": {"httpGet": {"port": "nameless"}},
                 "livenessProbe": {"httpGet": {"port": 8443, "scheme": "HTTPS"}}},
                {"name": "worker", "image": "w:1",
                 "readinessProbe": {"exec": {"command": ["true"]}}},
            ]}),
            json!({}),
        );
        assert_eq!(http_ports(&many), [8000, 8081, 8082, 9090]);
        assert_eq!(
            readiness_probes(&many),
            [HttpProbe {
                container: "app".into(),
                port: 8000,
                path: "/healthz".into(),
                timeout: Duration::from_secs(3),
                period: Duration::from_secs(2),
            }],
            "the name resolves against the container's ports; an unknown name probes nothing"
        );
        let bare = pod_with_probe(json!({"httpGet": {"port": 8080}}));
        let probe = readiness_probes(&bare).pop().expect("a probe");
        assert_eq!(probe.path, "");
        assert_eq!(probe.request_path(), "/");
        assert_eq!(probe.timeout, Duration::from_secs(1), "the API's default");
        assert_eq!(probe.period, Duration::from_secs(10));
        assert_eq!(
            probe.url(Ipv4Addr::new(127, 1, 0, 1)),
            "http://127.1.0.1:8080"
        );
        let none = pod(
            json!({"containers": [{"name": "db", "image": "pg:16",
            "ports": [{"name": "postgres", "containerPort": 5432}]}]}),
            json!({}),
        );
        assert!(http_ports(&none).is_empty());
        assert!(readiness_probes(&none).is_empty());
    }

    fn pod_with_probe(probe: Value) -> Pod {
        pod(
            json!({"containers": [{"name": "app", "image": "app:1", "readinessProbe": probe}]}),
            json!({}),
        )
    }

    /// GET `path` at `addr` through `sender`: status, body and the Pod header.
    async fn get(
        sender: &mut hyper::client::conn::http1::SendRequest<String>,
        addr: SocketAddr,
        path: &str,
        delay_ms: Option<u64>,
    ) -> (u16, String, String) {
        use hyper::body::Body as _;
        let mut request = Request::get(path).header(HOST, addr.to_string());
        if let Some(ms) = delay_ms {
            request = request.header(DELAY_HEADER, ms.to_string());
        }
        let response = sender
            .send_request(request.body(String::new()).expect("a request"))
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let pod = response
            .headers()
            .get(POD_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.expect("a body frame").into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        (status, pod, String::from_utf8(bytes).expect("a text body"))
    }

    async fn connect(
        addr: SocketAddr,
    ) -> (
        hyper::client::conn::http1::SendRequest<String>,
        JoinHandle<Result<(), hyper::Error>>,
    ) {
        let stream = TcpStream::connect(addr).await.expect("connects");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        (sender, tokio::spawn(connection))
    }

    #[tokio::test]
    async fn a_pod_answers_with_its_name_keeps_connections_and_its_readiness_path_follows_it() {
        let servers = Servers::starting_at(POOL / 2 + u32::from(std::process::id() as u16));
        let pod = web(json!({}));
        let (ports, probes) = (http_ports(&pod), readiness_probes(&pod));
        let gate = servers.serve(&pod, &ports, &probes, i64::MAX, false);
        assert_eq!(gate, Gate::AsTarget, "not meant to be ready: not probed");
        let ip: Ipv4Addr = servers.address(&pod).parse().expect("an address");
        assert!(is_pod_address(ip));
        let addr = SocketAddr::from((ip, 8000));

        let (mut sender, _connection) = connect(addr).await;
        let (status, from, body) = get(&mut sender, addr, "/anything", None).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "pod web-abc-123 (ns app-staging)\n")
        );
        assert_eq!(from, "app-staging/web-abc-123");
        let (status, _, body) = get(&mut sender, addr, "/healthz", None).await;
        assert_eq!(status, 503, "unready: {body}");
        assert_eq!(
            probe_once(ip, &probes[0]).await,
            Err("HTTP probe failed with statuscode: 503".to_owned())
        );

        // Meant to be ready: probed once, then Ready without probing again.
        let gate = servers.serve(&pod, &ports, &probes, i64::MIN, true);
        assert_eq!(
            gate,
            Gate::Probe {
                ip,
                unbound: HashSet::new(),
                probe: 0,
            }
        );
        assert_eq!(
            servers.serve(&pod, &ports, &probes, i64::MIN, true),
            Gate::Wait,
            "a probe is running"
        );
        assert_eq!(probe_once(ip, &probes[0]).await, Ok(()));
        assert!(servers.probed("u-1", 0, None));
        assert_eq!(
            servers.serve(&pod, &ports, &probes, i64::MIN, true),
            Gate::Ready(true)
        );
        let started = Instant::now();
        let (status, _, _) = get(&mut sender, addr, "/healthz", Some(120)).await;
        assert_eq!(status, 200, "the same connection, kept alive");
        assert!(started.elapsed() >= Duration::from_millis(120), "delayed");

        servers.forget("u-1");
        // Refused at once, before the runtime has dropped the aborted listener task.
        let refused = probe_once(ip, &probes[0]).await;
        assert!(
            get_fails(&mut sender, addr).await,
            "the open connection is closed"
        );
        assert_eq!(refused, Err(super::refused(ip, &probes[0])));
        assert_eq!(
            refused,
            Err(format!(
                "Get \"http://{ip}:8000/healthz\": dial tcp {ip}:8000: connect: connection refused"
            ))
        );
        assert_eq!(
            servers.serve(&pod, &ports, &probes, i64::MIN, true),
            Gate::AsTarget,
            "a Pod gone never serves again"
        );
    }

    async fn get_fails(
        sender: &mut hyper::client::conn::http1::SendRequest<String>,
        addr: SocketAddr,
    ) -> bool {
        // The listener task is aborted at once; its connections close as the runtime drops them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let request = Request::get("/").header(HOST, addr.to_string());
            let request = request.body(String::new()).expect("a request");
            if sender.ready().await.is_err() || sender.send_request(request).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_new_pod_moves_past_a_taken_address_and_a_published_one_is_refused() {
        let start = POOL / 3 + u32::from(std::process::id() as u16);
        let taken = pool_address(start);
        let _other = std::net::TcpListener::bind((taken, 8000)).expect("bind the first address");
        let servers = Servers::starting_at(start);
        let fresh = web(json!({}));
        let (ports, probes) = (http_ports(&fresh), readiness_probes(&fresh));
        let gate = servers.serve(&fresh, &ports, &probes, i64::MIN, true);
        let next = pool_address(start + 1);
        assert_eq!(
            gate,
            Gate::Probe {
                ip: next,
                unbound: HashSet::new(),
                probe: 0,
            }
        );
        assert_eq!(servers.address(&fresh), next.to_string());
        servers.forget("u-1");

        // After a restart (a new kubelet): the Pod shows the taken address; it keeps it, and its
        // probe fails.
        let restarted = Servers::starting_at(start);
        let shown = web(json!({"podIP": taken.to_string()}));
        restarted.reserve(&shown);
        let gate = restarted.serve(&shown, &ports, &probes, i64::MIN, true);
        assert_eq!(
            gate,
            Gate::Probe {
                ip: taken,
                unbound: HashSet::from([8000]),
                probe: 0,
            }
        );
        assert!(restarted.probed("u-1", 0, Some(Duration::from_secs(60))));
        assert_eq!(
            restarted.serve(&shown, &ports, &probes, i64::MIN, true),
            Gate::Ready(false),
            "not probed again before its period"
        );
        assert_eq!(restarted.address(&shown), taken.to_string());
    }

    #[tokio::test]
    async fn a_probe_counts_only_while_it_is_the_latest_of_a_server_still_running() {
        let servers = Servers::starting_at(POOL / 5 + u32::from(std::process::id() as u16));
        let pod = web(json!({}));
        let (ports, probes) = (http_ports(&pod), readiness_probes(&pod));
        let serve = |probe: bool| servers.serve(&pod, &ports, &probes, i64::MIN, probe);
        let started = |gate: Gate| match gate {
            Gate::Probe { probe, .. } => probe,
            other => panic!("a probe should start: {other:?}"),
        };
        // A decision that the Pod does not run (taken before its Secret appeared, acted upon
        // late) stops the server while its probe runs: the result no longer counts.
        let first = started(serve(true));
        servers.stop("u-1");
        assert!(!servers.probed("u-1", first, None), "its server is gone");
        // The server runs again and is probed anew; so is one decided not to be probed.
        let second = started(serve(true));
        assert_eq!(serve(false), Gate::AsTarget);
        assert!(!servers.probed("u-1", second, None), "not to be probed");
        let third = started(serve(true));
        servers.stop("u-1");
        let fourth = started(serve(true));
        assert!(
            !servers.probed("u-1", third, Some(Duration::from_secs(60))),
            "a probe of the server stopped meanwhile does not count for the new one"
        );
        assert_eq!(serve(true), Gate::Wait, "the latest probe still runs");
        assert!(servers.probed("u-1", fourth, None));
        assert_eq!(serve(true), Gate::Ready(true));
        assert!(!servers.probed("u-1", fourth, None), "recorded once");
        servers.forget("u-1");
    }

    #[test]
    fn addresses_in_use_are_skipped_and_freed_when_the_pod_is_gone() {
        let servers = Servers::starting_at(0);
        let shown = web(json!({"podIP": "127.1.0.2"}));
        servers.reserve(&shown);
        let other = |uid: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": uid, "uid": uid}})).expect("a Pod")
        };
        let serving = |uid: &str| -> Pod {
            let mut pod = web(json!({}));
            pod.metadata.uid = Some(uid.to_owned());
            pod
        };
        assert_eq!(servers.address(&serving("a")), "127.1.0.1");
        assert_eq!(servers.address(&serving("a")), "127.1.0.1", "kept");
        assert_eq!(
            servers.address(&serving("b")),
            "127.1.0.3",
            "127.1.0.2 is in use"
        );
        // A Pod without HTTP ports gets an address Endpoints take, never a loopback one.
        assert_eq!(servers.address(&other("c")), "10.1.0.4");
        assert_eq!(servers.address(&other("c")), "10.1.0.4", "kept");
        servers.retain(&HashSet::from(["a".to_owned()]));
        let registry = servers.lock();
        assert_eq!(
            registry.in_use,
            HashSet::from([Ipv4Addr::new(127, 1, 0, 1)]),
            "the Pods not listed again are forgotten"
        );
    }

    #[test]
    fn without_http_a_serving_pod_gets_a_quiet_address_and_no_ports() {
        let mut pod = web(json!({}));
        pod.metadata.uid = Some("a".to_owned());
        assert!(!http_ports(&pod).is_empty(), "the Pod would serve HTTP");
        let servers = Servers::starting_at(0).without_http();
        assert!(servers.ports(&pod).is_empty());
        let ip: Ipv4Addr = servers.address(&pod).parse().expect("an address");
        assert!(!is_pod_address(ip), "{ip} is a loopback Pod address");
        assert_eq!(ip, quiet_address(0));
        assert_eq!(Servers::starting_at(0).ports(&pod), http_ports(&pod));
    }
}
