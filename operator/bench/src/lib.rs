//! appenv-bench: `appenv bench`, measured figures, side by side with what users would do
//! instead, on one local control plane with the simulated kubelet, in one run.
//!
//! For each size N, N environments (a web app, an RQ-style worker and Redis) are created at once
//! three ways: as AppEnvironments reconciled by an `appenv operator` process; by applying their
//! rendered manifests directly (server-side apply, as `kubectl apply --server-side` from CI
//! would); and by `helm install` of a chart holding the same manifests, one release each (a real
//! Helm v4 through helm-sdkpy). The baselines' objects carry [`BASELINE_LABEL`] instead of the
//! label the operator watches. An environment is Ready when its AppEnvironment says so, or, for
//! the baselines, when all of its Deployments are available. Latencies count from the moment
//! the batch started. The operator's API requests come from its own client-side counter
//! (`appenv_api_requests_total`), its memory from /proc. What bounds each run is measured too:
//! the CPU time every component used during it ([`cpu`]), and which was the busiest.

mod cpu;
mod targets;
pub mod wake;

pub use crate::cpu::{Busiest, Component, CpuUse};
use crate::cpu::{KubeletRuntime, Meter, PodHttp};
pub use crate::targets::{Growth, Target, targets};
use anyhow::Context as _;
use appenv_api::AppEnvironment;
use appenv_core::build::{self, ENVIRONMENT_LABEL, FIELD_MANAGER};
use appenv_core::settings::Settings;
use appenv_core::validate;
use appenv_localcluster::{ClientRate, ControlPlane, Process, StartOptions, http_get};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::Discovery;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Batch sizes: N environments created at once, for each N.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub sizes: Vec<usize>,
    /// Operator memory is read when this many environments exist (more are created if needed).
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000,3000")]
    pub memory_at: Vec<usize>,
    /// A batch of 1 runs this many times, one after the other, for every method: one
    /// environment's create->Ready is a few round trips, and one sample is mostly noise. Its
    /// figures are the runs' median (p50) and slowest.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..))]
    pub single_runs: u64,
    /// Batches larger than 1 and up to `--batch-runs-max` run this many times per method, the
    /// methods' order rotating from run to run (appenv first, then direct apply first, ...):
    /// on a machine of two cores the p95 of one run moves by more than the targets' margins.
    /// A latency target compares appenv with another method run by run (the methods of one
    /// run go one after the other) and reads the median of the runs' ratios of p95s.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_runs: u64,
    /// helm install takes part in this many of those runs only (the first ones): a run of 100
    /// releases takes minutes, and its target's margin is wide.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub helm_runs: u64,
    /// The largest batch that runs `--batch-runs` times (larger ones run once).
    #[arg(long, default_value_t = 100)]
    pub batch_runs_max: usize,
    /// The Helm baseline runs for batches up to this size (one release per environment).
    #[arg(long, default_value_t = 100)]
    pub helm_max: usize,
    /// Python of a venv with helm-sdkpy (`.ci/helm-venv.sh` prints one).
    #[arg(long, env = "APPENV_HELM_PYTHON")]
    pub helm_python: Option<PathBuf>,
    /// The Helm command-line wrapper.
    #[arg(long, default_value = ".ci/helm.py")]
    pub helm_script: PathBuf,
    /// Requests (or helm processes) in flight at once when creating a batch, for every method.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// The operator's resync period during the run (the steady state is measured over two).
    #[arg(long, default_value_t = 15)]
    pub resync_seconds: u64,
    /// The operator's reconcile concurrency (by default the operator's own default).
    #[arg(long, default_value_t = appenv_controller::DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// The binary whose `operator` subcommand is measured: by default this one; the image's
    /// (`cargo build --release -p appenv --no-default-features`, as operator/Dockerfile builds
    /// it) leaves out the CLI's local cluster and benchmark, and maps fewer pages.
    #[arg(long, env = "APPENV_OPERATOR_BIN")]
    pub operator_binary: Option<PathBuf>,
    /// Give up on a batch that is not Ready after this long.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench.json")]
    pub json: PathBuf,
    #[command(flatten)]
    pub controller_manager: ControllerManagerArgs,
}

/// kube-controller-manager's client rate limit on the local cluster, for `appenv bench` and
/// `appenv dev`. Its own default (20 requests/s, burst 30) would pace every method of the
/// benchmark alike, whatever it is meant to measure (see [`ClientRate`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerManagerArgs {
    /// kube-controller-manager's client limit in requests per second (its `--kube-api-qps`;
    /// kube-controller-manager's own default is 20).
    #[arg(
        long,
        env = "APPENV_CONTROLLER_MANAGER_QPS",
        default_value_t = ClientRate::LOCAL_CLUSTER.qps,
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    pub controller_manager_qps: u32,
    /// Its burst (`--kube-api-burst`) [default: twice --controller-manager-qps].
    #[arg(
        long,
        env = "APPENV_CONTROLLER_MANAGER_BURST",
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    pub controller_manager_burst: Option<u32>,
}

impl ControllerManagerArgs {
    pub fn rate(&self) -> ClientRate {
        ClientRate::with_qps(self.controller_manager_qps, self.controller_manager_burst)
    }
}

/// Latencies of one batch, in seconds, and the CPU time each component used meanwhile. A
/// batch of `n` may run several times one after the other (`runs`): its percentiles are then
/// over every run's environments, each timed from its own run's start.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub method: &'static str,
    /// Environments created at once.
    pub n: usize,
    /// How many times the batch ran.
    pub runs: usize,
    pub p50: f64,
    pub p95: f64,
    /// The p95 of each run, in the order they ran.
    pub run_p95: Vec<f64>,
    pub max: f64,
    pub per_second: f64,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    pub n: usize,
    pub per_environment: f64,
    pub writes_per_environment: f64,
    /// The objects of one environment.
    pub objects_per_environment: usize,
    /// Phase changes per environment that the benchmark's watch saw, from no status to Ready.
    pub phase_changes_per_environment: f64,
    /// One write per object and one status write per phase change a user can see.
    pub minimum_per_environment: f64,
    /// The requests per environment by verb and resource, the most frequent first.
    pub by_request: Vec<(String, f64)>,
    /// The operator's CPU seconds (user + system) during the batch, per environment.
    pub operator_cpu_seconds_per_environment: f64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub machine: String,
    /// The binary whose `operator` subcommand was measured.
    pub operator_binary: String,
    /// CPU cores the benchmark could use (what a component's "cores" are out of).
    pub cores: usize,
    pub kubernetes: String,
    /// kube-controller-manager's client rate limit during the run.
    pub controller_manager_rate: ClientRate,
    pub batches: Vec<Batch>,
    pub requests: Vec<Requests>,
    /// At rest, at the end of the run, with `steady_environments`.
    pub steady_resyncs: u64,
    pub steady_environments: usize,
    /// Requests at rest other than watches re-opened, and per resync of an environment.
    pub steady_requests: u64,
    pub steady_requests_per_resync: f64,
    pub steady_writes_per_resync: f64,
    /// Watches re-opened at rest: the API server ends each watch after its timeout (kube-rs
    /// asks for 290 s) and the operator opens it again, whatever the number of environments.
    pub steady_watch_reopens: u64,
    /// How long the at-rest window lasted, in seconds.
    pub steady_seconds: f64,
    /// Every request at rest, by verb and resource ("watch apps/deployments"), watches included.
    pub steady_by_request: Vec<(String, u64)>,
    pub steady_operator_cpu_seconds_per_resync: f64,
    /// The operator's memory, requests and CPU after each step that created environments.
    pub growth: Vec<Growth>,
    /// The targets and what this run measured of them.
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    /// The sizes of the operator's batches, in the order they ran.
    pub fn sizes(&self) -> Vec<usize> {
        self.batches
            .iter()
            .filter(|b| b.method == "appenv")
            .map(|b| b.n)
            .collect()
    }
}

fn progress(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "[bench] {message}");
}

/// The benchmarked environment: a Flask app behind gunicorn, an RQ worker and Redis.
fn environment(name: &str) -> anyhow::Result<AppEnvironment> {
    let value = serde_json::json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {"appenv.dev/bench": "true"}},
        "spec": {
            "app": "shop",
            "image": "ghcr.io/example/shop:1.0.0",
            "web": {
                "command": ["gunicorn"],
                "args": ["--bind", "0.0.0.0:8000", "app:app"],
                "port": 8000,
                "ingress": {"host": format!("{name}.example.com")},
            },
            "workers": [{"name": "rq", "command": ["rq", "worker"]}],
            "redis": {},
        },
    });
    serde_json::from_value(value).context("the benchmark's environment")
}

/// The environment's objects as the operator would apply them (without owner).
fn rendered(name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let env = environment(name)?;
    let model = validate::validate(&env, &Settings::default())
        .map_err(|invalid| anyhow::anyhow!("the benchmark's environment is invalid: {invalid}"))?;
    Ok(build::build(&model, &build::Inputs::default()).objects())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A batch of `n` from the latencies of each of its runs (each timed from its own run's
/// start); envs/s is the slowest run's.
fn batch(method: &'static str, n: usize, runs: &[Vec<f64>]) -> Batch {
    let sorted = |latencies: &[f64]| {
        let mut sorted = latencies.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
    };
    let all = sorted(&runs.concat());
    let max = all.last().copied().unwrap_or(0.0);
    Batch {
        method,
        n,
        runs: runs.len(),
        p50: percentile(&all, 50.0),
        p95: percentile(&all, 95.0),
        run_p95: runs.iter().map(|r| percentile(&sorted(r), 95.0)).collect(),
        max,
        per_second: if max > 0.0 { n as f64 / max } else { 0.0 },
        cpu: CpuUse::default(),
    }
}

/// The names of one run of a batch: `{prefix}-{round}-{i}`, with the run's number when the
/// batch runs more than once.
fn batch_names(prefix: &str, round: usize, (run, runs): (usize, usize), n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match runs {
            1 => format!("{prefix}-{round}-{i}"),
            _ => format!("{prefix}-{round}-{run}-{i}"),
        })
        .collect()
}

/// A way of creating environments that the benchmark compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Appenv,
    Direct,
    Helm,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Self::Appenv => "appenv",
            Self::Direct => "direct apply",
            Self::Helm => "helm install",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Appenv => "bench",
            Self::Direct => "direct",
            Self::Helm => "helm",
        }
    }
}

/// The runs of one method for one size: each run's latencies, their CPU, and for appenv the
/// names created and the operator's requests.
#[derive(Default)]
struct MethodRuns {
    latencies: Vec<Vec<f64>>,
    cpu: Option<CpuUse>,
    names: Vec<String>,
    requests: Counters,
}

/// `appenv operator` as a separate process, so its memory and requests are its own.
struct Operator {
    child: Child,
    port: u16,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Totals from the operator's metrics: requests (also by verb and resource), writes,
/// reconciles.
#[derive(Debug, Default, Clone)]
struct Counters {
    requests: u64,
    writes: u64,
    reconciles: u64,
    by_request: BTreeMap<String, u64>,
}

impl Counters {
    /// What was counted since `before`.
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            requests: self.requests - before.requests,
            writes: self.writes - before.writes,
            reconciles: self.reconciles - before.reconciles,
            by_request: self
                .by_request
                .iter()
                .map(|(request, &count)| {
                    let earlier = before.by_request.get(request).copied().unwrap_or(0);
                    (request.clone(), count.saturating_sub(earlier))
                })
                .filter(|(_, more)| *more > 0)
                .collect(),
        }
    }

    /// The watch requests among these: watches (re-)opened.
    fn watches(&self) -> u64 {
        self.by_request
            .iter()
            .filter(|(request, _)| request.starts_with("watch "))
            .map(|(_, count)| count)
            .sum()
    }

    fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.writes += other.writes;
        self.reconciles += other.reconciles;
        for (request, count) in &other.by_request {
            *self.by_request.entry(request.clone()).or_default() += count;
        }
    }

    /// These requests per environment of `n`, by verb and resource ("patch
    /// apps/deployments"), the most frequent first.
    fn per_environment(&self, n: usize) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .by_request
            .iter()
            .map(|(request, &count)| (request.clone(), count as f64 / n.max(1) as f64))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

/// "patch apps/deployments" from a line's labels `{verb="patch",group="apps",resource=...}`.
fn request_of(line: &str) -> Option<String> {
    let label = |name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(&line[start..start + len])
    };
    let group = label("group").unwrap_or("");
    let group = if group.is_empty() { "core" } else { group };
    Some(format!("{} {group}/{}", label("verb")?, label("resource")?))
}

/// Wait until `child`'s `/readyz` on `port` answers 200; fail when it stops or after a minute.
async fn wait_ready(child: &mut Child, port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/readyz").map(|r| r.0).ok() != Some(200) {
        if let Some(exit) = child.try_wait()? {
            anyhow::bail!("{what} stopped: {exit}");
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How the measured operator runs.
struct OperatorOptions {
    /// By default this benchmark's own binary.
    binary: Option<PathBuf>,
    resync_seconds: u64,
    concurrency: u16,
    /// More flags of `appenv operator`.
    extra: Vec<String>,
}

impl Operator {
    async fn start(kubeconfig: &Path, options: &OperatorOptions) -> anyhow::Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let binary = match &options.binary {
            Some(binary) => binary.clone(),
            None => std::env::current_exe()?,
        };
        let child = Command::new(&binary)
            .args(["operator", "--resync-seconds"])
            .arg(options.resync_seconds.to_string())
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .args(["--selector", "appenv.dev/bench=true"])
            .args(&options.extra)
            .env("KUBECONFIG", kubeconfig)
            .env("APPENV_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} operator", binary.display()))?;
        let mut operator = Self { child, port };
        wait_ready(&mut operator.child, port, "the operator").await?;
        Ok(operator)
    }

    /// Wait until the operator's start-up requests (a list and a watch per watched kind) are
    /// done: no request for `QUIET`. Otherwise they would count against the first batch.
    async fn settle(&self) -> anyhow::Result<()> {
        const QUIET: Duration = Duration::from_secs(2);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.counters()?.requests;
        let mut since = Instant::now();
        while since.elapsed() < QUIET {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the operator kept sending requests at start-up ({last} so far)"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.counters()?.requests;
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        Ok(())
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        let (_, text) = http_get(self.port, "/metrics").context("reading /metrics")?;
        let mut counters = Counters::default();
        for line in text.lines() {
            let Some(n) = line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if line.starts_with("appenv_api_requests_total{") {
                counters.requests += n;
                if let Some(request) = request_of(line) {
                    *counters.by_request.entry(request).or_default() += n;
                }
                let write = ["create", "update", "patch", "delete"]
                    .iter()
                    .any(|v| line.contains(&format!("verb=\"{v}\"")));
                if write {
                    counters.writes += n;
                }
            } else if line.starts_with("appenv_reconciles_total ") {
                counters.reconciles = n;
            }
        }
        Ok(counters)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("VmRSS")?;
        Ok(kib / 1024.0)
    }
}

/// When each awaited environment became Ready, fed by one watch.
#[derive(Default)]
struct Readiness {
    ready_at: Mutex<HashMap<String, Instant>>,
    /// Per environment, the last phase seen and how many times it changed (from none).
    phases: Mutex<HashMap<String, (Option<appenv_api::Phase>, u32)>>,
}

impl Readiness {
    /// Count a change of `name`'s phase, as a user watching it would see one.
    fn saw_phase(&self, name: &str, phase: Option<appenv_api::Phase>) {
        if let Ok(mut phases) = self.phases.lock() {
            let (last, changes) = phases.entry(name.to_owned()).or_insert((None, 0));
            if *last != phase {
                *last = phase;
                *changes += 1;
            }
        }
    }

    /// Phase changes per environment of `names`.
    fn phase_changes(&self, names: &[String]) -> f64 {
        let total: u32 = self
            .phases
            .lock()
            .map(|p| names.iter().filter_map(|n| p.get(n)).map(|(_, c)| c).sum())
            .unwrap_or(0);
        f64::from(total) / names.len().max(1) as f64
    }

    fn mark(&self, name: &str) {
        if let Ok(mut ready) = self.ready_at.lock() {
            ready.entry(name.to_owned()).or_insert_with(Instant::now);
        }
    }

    fn count(&self, names: &[String]) -> usize {
        self.ready_at
            .lock()
            .map(|r| names.iter().filter(|n| r.contains_key(*n)).count())
            .unwrap_or(0)
    }

    async fn wait(
        &self,
        names: &[String],
        started: Instant,
        limit: Duration,
    ) -> anyhow::Result<Vec<f64>> {
        let poll = Poll {
            what: "environments Ready",
            total: names.len(),
            started,
            limit,
            every: Duration::from_millis(50),
        };
        poll.until_all(|| std::future::ready(Ok(self.count(names))))
            .await?;
        let ready = self
            .ready_at
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(names
            .iter()
            .filter_map(|n| ready.get(n))
            .map(|at| at.duration_since(started).as_secs_f64())
            .collect())
    }
}

/// Watch AppEnvironments: Ready at the current generation.
fn watch_environments(client: Client, readiness: Arc<Readiness>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<AppEnvironment> = Api::all(client);
        let stream = watcher(
            api,
            watcher::Config::default().labels("appenv.dev/bench=true"),
        )
        .default_backoff()
        .applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(env)) = stream.next().await {
            readiness.saw_phase(&env.name_any(), env.status.as_ref().and_then(|s| s.phase));
            let ready = env.status.as_ref().and_then(|s| s.observed_generation)
                == env.metadata.generation
                && env.condition("Ready").is_some_and(|c| c.status == "True");
            if ready {
                readiness.mark(&env.name_any());
            }
        }
    })
}

/// Watch Deployments made by the baselines: an environment (its namespace) is Ready when all
/// `expected` of its Deployments are available at their generation.
fn watch_deployments(
    client: Client,
    expected: usize,
    readiness: Arc<Readiness>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Deployment> = Api::all(client);
        let stream = watcher(api, watcher::Config::default().labels(BASELINE_LABEL))
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        let mut available: HashMap<String, BTreeMap<String, bool>> = HashMap::new();
        while let Some(Ok(d)) = stream.next().await {
            let Some(ns) = d.namespace() else { continue };
            if !(ns.starts_with("direct-") || ns.starts_with("helm-")) {
                continue;
            }
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ok = d.status.as_ref().is_some_and(|s| {
                s.observed_generation == d.metadata.generation
                    && s.available_replicas.unwrap_or(0) >= want
                    && s.updated_replicas.unwrap_or(0) >= want
            });
            let states = available.entry(ns.clone()).or_default();
            states.insert(d.name_any(), ok);
            if states.len() == expected && states.values().all(|v| *v) {
                readiness.mark(&ns);
            }
        }
    })
}

async fn apply_environments(
    client: &Client,
    names: &[String],
    parallel: usize,
) -> anyhow::Result<()> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                api.patch(
                    &name,
                    &PatchParams::apply("appenv-bench"),
                    &Patch::Apply(environment(&name)?),
                )
                .await
                .with_context(|| format!("creating AppEnvironment {name}"))
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The label the baselines' objects carry instead of [`ENVIRONMENT_LABEL`]: the operator
/// measured beside them watches every object with that label, and a team without appenv has
/// no operator watching its objects. With appenv's own label the operator indexed every
/// baseline object and was asked to reconcile environments that do not exist: it spent CPU
/// during the baselines' batches, and its memory after the batch of 1000 was read once it had
/// seen the objects of 2100 environments.
pub const BASELINE_LABEL: &str = "bench.appenv.dev/environment";

/// The rendered objects of environment `name`, moved into namespace `ns`, with
/// [`BASELINE_LABEL`] for [`ENVIRONMENT_LABEL`] wherever it is a key (labels and selectors
/// alike, so the objects select each other as before).
fn objects_in(name: &str, ns: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut objects = rendered(name)?;
    for object in &mut objects {
        if object["kind"] == "Namespace" {
            object["metadata"]["name"] = serde_json::json!(ns);
        } else {
            object["metadata"]["namespace"] = serde_json::json!(ns);
        }
        relabel(object);
    }
    Ok(objects)
}

/// Rename every [`ENVIRONMENT_LABEL`] key in `value` to [`BASELINE_LABEL`].
fn relabel(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(environment) = map.remove(ENVIRONMENT_LABEL) {
                map.insert(BASELINE_LABEL.to_owned(), environment);
            }
            map.values_mut().for_each(relabel);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(relabel),
        _ => {}
    }
}

async fn apply_direct(
    client: &Client,
    discovery: &Discovery,
    names: &[String],
    parallel: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(names.iter().cloned())
        .map(|ns| async move {
            for object in objects_in(&ns, &ns)? {
                let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
                let kind = object["kind"].as_str().unwrap_or_default().to_owned();
                let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
                let (resource, caps) = discovery
                    .resolve_gvk(&kube::api::GroupVersionKind::gvk(group, version, &kind))
                    .with_context(|| format!("{kind} is not served"))?;
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let api: Api<DynamicObject> = match caps.scope {
                    kube::discovery::Scope::Namespaced => {
                        Api::namespaced_with(client.clone(), &ns, &resource)
                    }
                    kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
                };
                api.patch(
                    &name,
                    &PatchParams::apply("appenv-bench").force(),
                    &Patch::Apply(&object),
                )
                .await
                .with_context(|| format!("applying {kind} {ns}/{name}"))?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn write_chart(dir: &Path, ns: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {ns}\nversion: 0.1.0\n"),
    )?;
    let mut manifests = String::new();
    for object in objects_in(ns, ns)? {
        if object["kind"] == "Namespace" {
            continue; // `--create-namespace`
        }
        // JSON is YAML, and Helm's YAML 1.1 reading cannot turn a string "no" into false.
        manifests.push_str("---\n");
        manifests.push_str(&serde_json::to_string(&object)?);
        manifests.push('\n');
    }
    std::fs::write(dir.join("templates/manifests.yaml"), manifests)?;
    Ok(())
}

async fn helm_installs(
    kubeconfig: &Path,
    python: &Path,
    script: &Path,
    names: &[String],
    parallel: usize,
) -> anyhow::Result<()> {
    let charts = tempfile::tempdir()?;
    for ns in names {
        write_chart(&charts.path().join(ns), ns)?;
    }
    futures::stream::iter(names.iter().cloned())
        .map(|ns| {
            let chart = charts.path().join(&ns);
            async move {
                let out = tokio::process::Command::new(python)
                    .arg(script)
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["--namespace", &ns, "install", &ns])
                    .arg(&chart)
                    .args(["--create-namespace", "--no-wait"])
                    .stdout(Stdio::null())
                    .output()
                    .await
                    .context("running helm")?;
                anyhow::ensure!(
                    out.status.success(),
                    "helm install {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Delete a baseline's namespaces and wait until they are gone: their removal (the namespace
/// controller deleting every object, the kubelet stopping every Pod) would otherwise load the
/// cluster during the next batch, which is the next size's appenv batch.
async fn delete_namespaces(
    client: &Client,
    names: &[String],
    limit: Duration,
) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for name in names {
        let _ = api.delete(name, &DeleteParams::background()).await;
    }
    namespaces_gone(client, names, "baseline namespaces gone", limit).await
}

/// Delete AppEnvironments (the benchmark's are named as their namespaces) and wait until their
/// namespaces are gone, as the operator and the garbage collector remove them.
async fn delete_environments(
    client: &Client,
    names: &[String],
    limit: Duration,
) -> anyhow::Result<()> {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    for name in names {
        let _ = api.delete(name, &DeleteParams::background()).await;
    }
    namespaces_gone(client, names, "extra runs' environments gone", limit).await
}

async fn namespaces_gone(
    client: &Client,
    names: &[String],
    what: &'static str,
    limit: Duration,
) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let poll = Poll {
        what,
        total: names.len(),
        started: Instant::now(),
        limit,
        every: Duration::from_secs(1),
    };
    poll.until_all(|| async {
        let existing: std::collections::HashSet<String> = api
            .list_metadata(&Default::default())
            .await
            .context("listing namespaces")?
            .items
            .into_iter()
            .filter_map(|ns| ns.metadata.name)
            .collect();
        Ok(names.iter().filter(|n| !existing.contains(*n)).count())
    })
    .await
}

/// Waiting for `total` things to be done, polled every `every`: fails `limit` after `started`,
/// and says how far it got every 10 s.
struct Poll {
    what: &'static str,
    total: usize,
    started: Instant,
    limit: Duration,
    every: Duration,
}

impl Poll {
    /// Until `done` counts all of them.
    async fn until_all<F, Fut>(&self, mut done: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<usize>>,
    {
        let mut last_report = Instant::now();
        loop {
            let done = done().await?;
            if done >= self.total {
                return Ok(());
            }
            anyhow::ensure!(
                self.started.elapsed() < self.limit,
                "{done} of {} {} after {:?}",
                self.total,
                self.what,
                self.limit
            );
            if last_report.elapsed() > Duration::from_secs(10) {
                progress(format!(
                    "  {done}/{} {} after {:.0?}",
                    self.total,
                    self.what,
                    self.started.elapsed()
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(self.every).await;
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cores();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {memory:.0} GiB RAM")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
}

/// CPU meters for the processes of the control plane, `others` (the operator's, ...) and the
/// simulated kubelet.
fn meter(
    plane: &ControlPlane,
    others: &[(Component, u32)],
    kubelet: &KubeletRuntime,
) -> anyhow::Result<Meter> {
    let mut processes = Vec::new();
    for (component, process) in [
        (Component::Apiserver, Process::ApiServer),
        (Component::Etcd, Process::Etcd),
        (Component::ControllerManager, Process::ControllerManager),
    ] {
        let pid = plane
            .pid(process)
            .with_context(|| format!("{} is not running", process.binary()))?;
        processes.push((component, pid));
    }
    processes.extend_from_slice(others);
    Ok(Meter::new(processes, kubelet))
}

/// How each size of batch runs: how many times, and by which methods.
struct Sizes<'a> {
    args: &'a BenchArgs,
    /// Whether the Helm baseline can run (helm-sdkpy was found).
    helm: bool,
}

impl Sizes<'_> {
    fn runs(&self, n: usize) -> usize {
        match n {
            1 => self.args.single_runs as usize,
            n if n <= self.args.batch_runs_max => self.args.batch_runs as usize,
            _ => 1,
        }
    }

    /// The methods of run `run` (from 0) of a batch of `n`.
    fn methods(&self, n: usize, run: usize) -> Vec<Method> {
        let mut methods = vec![Method::Appenv, Method::Direct];
        if self.helm && n <= self.args.helm_max && run < self.args.helm_runs as usize {
            methods.push(Method::Helm);
        }
        methods
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    let limit = Duration::from_secs(args.timeout_seconds);
    progress("starting the control plane and the simulated kubelet");
    let controller_manager_rate = args.controller_manager.rate();
    let plane = ControlPlane::start(StartOptions {
        progress: true,
        controller_manager_rate,
        ..StartOptions::default()
    })
    .await?;
    let client = plane.client().await?;
    // Its Pods serve no HTTP: a serving Pod's loopback address is refused in Endpoints, and
    // kube-controller-manager's retries of every web Service (with an Event each) would load
    // the API server as no real cluster does, and more in some batches than in others.
    let kubelet = KubeletRuntime::start(plane.kubeconfig(), PodHttp::Quiet).await?;
    appenv_controller::crd::install(&client, FIELD_MANAGER).await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let operator = Operator::start(
        plane.kubeconfig(),
        &OperatorOptions {
            binary: args.operator_binary.clone(),
            resync_seconds: args.resync_seconds,
            concurrency: args.concurrency,
            extra: Vec::new(),
        },
    )
    .await?;
    operator.settle().await?;
    let meter = meter(&plane, &[(Component::Operator, operator.pid())], &kubelet)?;
    let mut report = Report {
        machine: machine(),
        cores: cores(),
        kubernetes: plane.server_version().to_owned(),
        controller_manager_rate,
        operator_binary: match &args.operator_binary {
            Some(binary) => binary.display().to_string(),
            None => "this benchmark's own binary (all features)".into(),
        },
        ..Report::default()
    };
    let probe = rendered("probe")?;
    let objects_per_env = probe.len();
    let deployments_per_env = probe.iter().filter(|o| o["kind"] == "Deployment").count();
    let helm = args.helm_python.clone().filter(|p| p.exists());
    if helm.is_none() {
        report
            .notes
            .push("helm baseline skipped: no --helm-python / APPENV_HELM_PYTHON".into());
    }
    let mut existing = 0;
    let rss = operator.rss_mib()?;
    progress(format!("operator memory with 0 environments: {rss:.1} MiB"));
    report.growth.push(Growth {
        rss_mib: rss,
        ..Growth::default()
    });
    // A step of the operator's: what it cost, and its memory once all are Ready.
    // `share`: the part of the step's requests and CPU that belongs to the environments kept
    // (a batch that ran several times keeps one run's).
    let grown = |existing: usize,
                 created: usize,
                 (requests, cpu, share): (&Counters, &CpuUse, f64),
                 report: &mut Report|
     -> anyhow::Result<()> {
        let rss_mib = operator.rss_mib()?;
        progress(format!(
            "operator memory with {existing} environments: {rss_mib:.1} MiB"
        ));
        report.growth.push(Growth {
            environments: existing,
            created,
            rss_mib,
            requests: (requests.requests as f64 * share).round() as u64,
            operator_cpu_seconds: cpu.seconds_of(Component::Operator).unwrap_or(0.0) * share,
        });
        Ok(())
    };

    let envs_ready = Arc::new(Readiness::default());
    let env_watch = watch_environments(client.clone(), envs_ready.clone());
    let baseline_ready = Arc::new(Readiness::default());
    let deploy_watch =
        watch_deployments(client.clone(), deployments_per_env, baseline_ready.clone());

    let sizes = Sizes {
        args: &args,
        helm: helm.is_some(),
    };
    for (round, &n) in args.sizes.iter().enumerate() {
        let runs = sizes.runs(n);
        let mut results: BTreeMap<Method, MethodRuns> = BTreeMap::new();
        for run in 0..runs {
            let mut order = sizes.methods(n, run);
            let first = run % order.len();
            order.rotate_left(first);
            for method in order {
                let names = batch_names(method.prefix(), round, (run, runs), n);
                let times = if runs > 1 {
                    format!(" (run {} of {runs})", run + 1)
                } else {
                    String::new()
                };
                progress(match method {
                    Method::Appenv => format!("appenv: {n} AppEnvironments at once{times}"),
                    Method::Direct => {
                        format!("direct apply: {n} environments' manifests at once{times}")
                    }
                    Method::Helm => format!(
                        "helm install: {n} releases at once ({} in flight){times}",
                        args.parallel
                    ),
                });
                // The operator's requests count for its own method only.
                let before = match method {
                    Method::Appenv => Some(operator.counters()?),
                    _ => None,
                };
                let cpu_before = meter.sample()?;
                let started = Instant::now();
                let ready = match method {
                    Method::Appenv => {
                        apply_environments(&client, &names, args.parallel).await?;
                        &envs_ready
                    }
                    Method::Direct => {
                        apply_direct(&client, &discovery, &names, args.parallel).await?;
                        &baseline_ready
                    }
                    Method::Helm => {
                        let python = helm.as_ref().context("no helm")?;
                        let (kubeconfig, script) = (plane.kubeconfig(), &args.helm_script);
                        helm_installs(kubeconfig, python, script, &names, args.parallel).await?;
                        &baseline_ready
                    }
                };
                let latencies = ready.wait(&names, started, limit).await?;
                let cpu = meter.since(
                    &cpu_before,
                    (method == Method::Helm).then_some(Component::Helm),
                )?;
                let requests = match &before {
                    Some(before) => operator.counters()?.since(before),
                    None => Counters::default(),
                };
                if method != Method::Appenv {
                    delete_namespaces(&client, &names, limit).await?;
                }
                let result = results.entry(method).or_default();
                result.latencies.push(latencies);
                result.cpu = Some(match result.cpu.take() {
                    Some(earlier) => earlier.plus(&cpu),
                    None => cpu,
                });
                result.requests.add(&requests);
                result.names.extend(names);
            }
        }
        for (method, result) in results {
            let cpu = result.cpu.unwrap_or_default();
            if method == Method::Appenv {
                let created = result.names.len();
                let per_env = |x: u64| x as f64 / created.max(1) as f64;
                let phase_changes = envs_ready.phase_changes(&result.names);
                report.requests.push(Requests {
                    n,
                    per_environment: per_env(result.requests.requests),
                    writes_per_environment: per_env(result.requests.writes),
                    objects_per_environment: objects_per_env,
                    phase_changes_per_environment: phase_changes,
                    minimum_per_environment: objects_per_env as f64 + phase_changes,
                    by_request: result.requests.per_environment(created),
                    operator_cpu_seconds_per_environment: cpu
                        .seconds_of(Component::Operator)
                        .unwrap_or(0.0)
                        / created.max(1) as f64,
                });
                // The runs after the first are removed again: the growth table and the memory
                // target count the environments of one run of each batch.
                let extra = &result.names[n.min(created)..];
                if !extra.is_empty() {
                    progress(format!(
                        "appenv: deleting the {} environments of the extra runs",
                        extra.len()
                    ));
                    delete_environments(&client, extra, limit).await?;
                }
                existing += n.min(created);
                let share = n.min(created) as f64 / created.max(1) as f64;
                grown(
                    existing,
                    n.min(created),
                    (&result.requests, &cpu, share),
                    &mut report,
                )?;
            }
            report.batches.push(Batch {
                cpu,
                ..batch(method.label(), n, &result.latencies)
            });
        }
    }

    // How cost grows: more environments, up to each larger `--memory-at` count.
    let mut targets: Vec<usize> = args
        .memory_at
        .iter()
        .copied()
        .filter(|&m| m > existing)
        .collect();
    targets.sort_unstable();
    for target in targets {
        let names: Vec<String> = (existing..target)
            .map(|i| format!("bench-mem-{i}"))
            .collect();
        progress(format!(
            "growth: creating {} more environments (to {target})",
            names.len()
        ));
        let before = operator.counters()?;
        let cpu_before = meter.sample()?;
        let started = Instant::now();
        apply_environments(&client, &names, args.parallel).await?;
        envs_ready.wait(&names, started, limit).await?;
        let cpu = meter.since(&cpu_before, None)?;
        let requests = operator.counters()?.since(&before);
        existing = target;
        grown(existing, names.len(), (&requests, &cpu, 1.0), &mut report)?;
    }

    // At rest: two resync periods with nothing changing, with every environment of the run.
    progress(format!(
        "at rest: {existing} environments over two resyncs ({}s each)",
        args.resync_seconds
    ));
    let before = operator.counters()?;
    let cpu_before = meter.sample()?;
    let rest_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.resync_seconds * 2 + 1)).await;
    let cpu = meter.since(&cpu_before, None)?;
    let at_rest = operator.counters()?.since(&before);
    let resyncs = at_rest.reconciles;
    let per_resync = |x: f64| x / resyncs.max(1) as f64;
    let reopens = at_rest.watches();
    report.steady_resyncs = resyncs;
    report.steady_environments = existing;
    report.steady_seconds = rest_started.elapsed().as_secs_f64();
    report.steady_watch_reopens = reopens;
    report.steady_by_request = at_rest.by_request.into_iter().filter(|r| r.1 > 0).collect();
    report.steady_requests = at_rest.requests - reopens;
    report.steady_requests_per_resync = per_resync(report.steady_requests as f64);
    report.steady_writes_per_resync = per_resync(at_rest.writes as f64);
    report.steady_operator_cpu_seconds_per_resync =
        per_resync(cpu.seconds_of(Component::Operator).unwrap_or(0.0));
    report.targets = targets::targets(&report);
    env_watch.abort();
    deploy_watch.abort();
    drop(operator);
    drop(kubelet);
    Ok(report)
}

fn fmt_batch(b: &Batch) -> String {
    let each: Vec<String> = match b.n {
        1 => vec!["-".into()],
        _ => b.run_p95.iter().map(|p| format!("{p:.2}")).collect(),
    };
    format!(
        "| {} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.1} |",
        b.method,
        b.n,
        b.runs,
        b.p50,
        b.p95,
        each.join(", "),
        b.max,
        b.per_second
    )
}

/// CPU seconds of each component per batch, and what bounded each batch.
fn cpu_tables(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "\nCPU seconds (user + system) of each component during each batch, from its start \
         until all Ready (bench: the benchmark's own client, which creates the objects and \
         watches for Ready); bounded by: the busiest component, its CPU seconds over the batch's \
         wall time, in cores of the machine's {}; all: every component's; machine: every \
         process's on the machine, the benchmark's and any other load:\n",
        report.cores
    );
    // Not the activator and the load generator: they run in `bench wake` only.
    let components: Vec<Component> = Component::ALL
        .into_iter()
        .filter(|c| !matches!(c, Component::Activator | Component::Load))
        .collect();
    let columns: Vec<&str> = components.iter().map(|c| c.as_str()).collect();
    let _ = writeln!(
        out,
        "| method | N | wall s | {} | bounded by | all, cores | machine, cores |",
        columns.join(" | ")
    );
    let _ = writeln!(
        out,
        "|---|---|---|{}---|---|---|",
        "---|".repeat(columns.len())
    );
    for b in &report.batches {
        let seconds: Vec<String> = components
            .iter()
            .map(|c| {
                b.cpu
                    .seconds_of(*c)
                    .map_or("-".into(), |s| format!("{s:.2}"))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {} | {} | {:.2} | {:.2} |",
            b.method,
            b.n,
            b.cpu.wall_seconds,
            seconds.join(" | "),
            b.cpu.bound(report.cores),
            b.cpu.all_cores,
            b.cpu.machine_cores
        );
    }
    let _ = writeln!(out);
    for b in &report.batches {
        let _ = writeln!(
            out,
            "- {}, N = {}: bounded by {}",
            b.method,
            b.n,
            b.cpu.explain(report.cores)
        );
    }
}

/// The report as markdown.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {}; Kubernetes {} (local control plane, simulated kubelet); \
         kube-controller-manager's client limit: {}",
        report.machine, report.kubernetes, report.controller_manager_rate
    );
    let _ = writeln!(out, "Operator measured: {}\n", report.operator_binary);
    let _ = writeln!(
        out,
        "| method | N | runs | p50 s | p95 s | p95 s of each run | max s | envs/s (slowest run) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for b in &report.batches {
        let _ = writeln!(out, "{}", fmt_batch(b));
    }
    let _ = writeln!(
        out,
        "\n| N | appenv / direct apply | of | appenv / helm install | of |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for n in report.sizes() {
        let ratio = |other: &str| match targets::ratio_of(report, n, other) {
            Some((ratio, paired)) => {
                let each: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
                let how = targets::ratio_name(report, n, other);
                match each.is_empty() {
                    true => (format!("{ratio:.2}"), how),
                    false => (
                        format!("{ratio:.2}"),
                        format!("{how} ({})", each.join(", ")),
                    ),
                }
            }
            None => ("-".into(), "-".into()),
        };
        let ((direct, direct_how), (helm, helm_how)) =
            (ratio("direct apply"), ratio("helm install"));
        let _ = writeln!(
            out,
            "| {n} | {direct} | {direct_how} | {helm} | {helm_how} |"
        );
    }
    cpu_tables(&mut out, report);
    let _ = writeln!(
        out,
        "\n| N | API requests / environment | writes / environment | objects | phase changes seen | \
         minimum (objects + phase changes) | requests / minimum | writes / minimum | operator CPU s / \
         environment |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &report.requests {
        let minimum = r.minimum_per_environment.max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.4} |",
            r.n,
            r.per_environment,
            r.writes_per_environment,
            r.objects_per_environment,
            r.phase_changes_per_environment,
            r.minimum_per_environment,
            r.per_environment / minimum,
            r.writes_per_environment / minimum,
            r.operator_cpu_seconds_per_environment
        );
    }
    for r in &report.requests {
        let requests: Vec<String> = r
            .by_request
            .iter()
            .map(|(request, per)| format!("{per:.2} {request}"))
            .collect();
        let _ = writeln!(
            out,
            "\nN = {}, per environment: {}",
            r.n,
            requests.join(", ")
        );
    }
    targets::growth_table(&mut out, report);
    let _ = writeln!(
        out,
        "\nAt rest with {} environments over {:.0} s: {} resyncs, {:.2} requests (watches \
         re-opened apart), {:.2} writes and {:.6} operator CPU seconds per resync of an \
         environment; {} watches re-opened (the API server ends a watch after its timeout); \
         every request: {}.",
        report.steady_environments,
        report.steady_seconds,
        report.steady_resyncs,
        report.steady_requests_per_resync,
        report.steady_writes_per_resync,
        report.steady_operator_cpu_seconds_per_resync,
        report.steady_watch_reopens,
        if report.steady_by_request.is_empty() {
            "none".to_owned()
        } else {
            report
                .steady_by_request
                .iter()
                .map(|(request, count)| format!("{count} {request}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    targets::targets_table(&mut out, report);
    for note in &report.notes {
        let _ = writeln!(out, "\nNote: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_watch_requests_count_as_watches_re_opened() {
        let counters = Counters {
            requests: 6,
            by_request: [
                ("watch apps/deployments", 1),
                ("watch core/services", 2),
                ("get core/secrets", 3),
            ]
            .into_iter()
            .map(|(request, count)| (request.to_owned(), count))
            .collect(),
            ..Counters::default()
        };
        assert_eq!(counters.watches(), 3);
    }

    #[test]
    fn requests_are_named_as_rbac_names_them() {
        let line = |verb: &str, group: &str, resource: &str| {
            format!(
                "appenv_api_requests_total{{verb=\"{verb}\",group=\"{group}\",resource=\"{resource}\"}} 3"
            )
        };
        assert_eq!(
            request_of(&line("patch", "apps", "deployments")).as_deref(),
            Some("patch apps/deployments")
        );
        assert_eq!(
            request_of(&line("create", "", "events")).as_deref(),
            Some("create core/events")
        );
        let before = Counters {
            requests: 2,
            by_request: BTreeMap::from([("patch apps/deployments".into(), 2)]),
            ..Counters::default()
        };
        let after = Counters {
            requests: 10,
            by_request: BTreeMap::from([
                ("patch apps/deployments".into(), 6),
                ("create core/events".into(), 2),
                ("list core/pods".into(), 0),
            ]),
            ..Counters::default()
        };
        let mut runs = after.since(&before);
        assert_eq!(runs.requests, 8);
        assert_eq!(
            runs.per_environment(2),
            vec![
                ("patch apps/deployments".to_owned(), 2.0),
                ("create core/events".to_owned(), 1.0)
            ]
        );
        // A second run's requests add to the first's.
        runs.add(&after.since(&before));
        assert_eq!(runs.requests, 16);
        assert_eq!(
            runs.per_environment(4),
            vec![
                ("patch apps/deployments".to_owned(), 2.0),
                ("create core/events".to_owned(), 1.0)
            ]
        );
    }

    #[test]
    fn runs_of_a_batch_rotate_the_methods_and_cpu_adds_up() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let args =
            <Cli as clap::Parser>::parse_from(["bench", "--batch-runs", "5", "--helm-max", "50"])
                .bench;
        let sizes = Sizes {
            args: &args,
            helm: true,
        };
        assert_eq!(
            (sizes.runs(1), sizes.runs(100), sizes.runs(1000)),
            (7, 5, 1)
        );
        assert_eq!(
            sizes.methods(100, 0),
            vec![Method::Appenv, Method::Direct],
            "helm only up to --helm-max"
        );
        assert_eq!(sizes.methods(50, 0).len(), 3);
        assert_eq!(
            (sizes.methods(50, 2).len(), sizes.methods(50, 3).len()),
            (3, 2),
            "helm only in the first --helm-runs runs"
        );
        assert_eq!(
            batch_names("direct", 2, (1, 3), 2),
            ["direct-2-1-0", "direct-2-1-1"]
        );
        assert_eq!(batch_names("bench", 0, (0, 1), 1), ["bench-0-0"]);
        let one = CpuUse::new(2.0, BTreeMap::from([(Component::Operator, 1.0)]), 2.0);
        let two = CpuUse::new(
            6.0,
            BTreeMap::from([(Component::Operator, 2.0), (Component::Apiserver, 6.0)]),
            9.0,
        );
        let both = one.plus(&two);
        assert_eq!(both.wall_seconds, 8.0);
        assert_eq!(both.seconds_of(Component::Operator), Some(3.0));
        assert_eq!(both.seconds_of(Component::Apiserver), Some(6.0));
        assert!((both.machine_cores - 11.0 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_and_rates() {
        let b = batch("x", 4, &[vec![4.0, 1.0, 2.0, 3.0]]);
        assert_eq!((b.p50, b.p95, b.max, b.runs), (2.0, 4.0, 4.0, 1));
        assert_eq!(b.run_p95, [4.0]);
        assert!((b.per_second - 1.0).abs() < f64::EPSILON);
        assert_eq!(batch("x", 1, &[]).p95, 0.0);
        // A single environment's runs: their median and slowest.
        let runs = batch(
            "x",
            1,
            &[vec![0.3], vec![0.2], vec![0.9], vec![0.25], vec![0.21]],
        );
        assert_eq!((runs.n, runs.runs, runs.p50, runs.max), (1, 5, 0.25, 0.9));
        // A batch's runs: each run's p95, and envs/s of the slowest.
        let runs = batch("x", 2, &[vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(
            (runs.runs, runs.run_p95.as_slice()),
            (2, [2.0, 4.0].as_slice())
        );
        assert!((runs.per_second - 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn the_report_says_how_fast_the_controller_manager_could_go() {
        let report = Report {
            controller_manager_rate: ClientRate::with_qps(123, Some(456)),
            ..Report::default()
        };
        let text = markdown(&report);
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.ends_with("client limit: 123 requests/s, burst 456")),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(
            json["controller_manager_rate"],
            serde_json::json!({"qps": 123, "burst": 456})
        );
    }

    #[test]
    fn the_report_says_what_bounded_each_batch() {
        let cpu = CpuUse::new(
            2.0,
            BTreeMap::from([
                (Component::Apiserver, 1.5),
                (Component::Operator, 0.3),
                (Component::Helm, 2.4),
            ]),
            4.0,
        );
        let report = Report {
            cores: 2,
            batches: vec![Batch {
                cpu,
                ..batch("helm install", 2, &[vec![1.0, 2.0]])
            }],
            ..Report::default()
        };
        let text = markdown(&report);
        assert!(
            text.contains(
                "| method | N | wall s | apiserver | etcd | controller-manager | kubelet | \
                 operator | helm | bench | bounded by | all, cores | machine, cores |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| helm install | 2 | 2.00 | 1.50 | - | - | - | 0.30 | 2.40 | - | \
                 helm 1.20 cores of 2 | 2.10 | 2.00 |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "- helm install, N = 2: bounded by helm 1.20 cores of 2; \
                 all components 2.10 cores, the machine 2.00: every core was busy"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["cores"], 2);
        assert_eq!(json["batches"][0]["cpu"]["seconds"]["helm"], 2.4);
        assert_eq!(json["batches"][0]["cpu"]["busiest"]["component"], "helm");
    }

    #[test]
    fn the_controller_manager_flags_become_its_rate() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            controller_manager: ControllerManagerArgs,
        }
        let parse = |flags: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(
                std::iter::once("bench").chain(flags.iter().copied()),
            )
            .map(|cli| cli.controller_manager.rate())
        };
        assert_eq!(parse(&[]).expect("defaults"), ClientRate::LOCAL_CLUSTER);
        assert_eq!(
            parse(&["--controller-manager-qps", "300"]).expect("qps"),
            ClientRate {
                qps: 300,
                burst: 600
            }
        );
        assert_eq!(
            parse(&[
                "--controller-manager-qps=300",
                "--controller-manager-burst=310"
            ])
            .expect("both"),
            ClientRate {
                qps: 300,
                burst: 310
            }
        );
        let zero = parse(&["--controller-manager-qps", "0"]).expect_err("0 is refused");
        assert!(
            zero.to_string().contains("--controller-manager-qps"),
            "{zero}"
        );
    }

    #[test]
    fn the_benchmarked_environment_is_valid_and_renders() {
        let objects = rendered("bench-0-0").expect("renders");
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "Deployment").count(),
            3,
            "{kinds:?}"
        );
        let moved = objects_in("bench-0-0", "direct-0-0").expect("moves");
        assert!(moved.iter().all(|o| o["kind"] == "Namespace"
            && o["metadata"]["name"] == "direct-0-0"
            || o["metadata"]["namespace"] == "direct-0-0"));
    }

    #[test]
    fn the_baselines_objects_are_not_the_operators_to_watch() {
        let original = rendered("bench-0-0").expect("renders");
        let moved = objects_in("bench-0-0", "direct-0-0").expect("moves");
        let key = format!("\"{ENVIRONMENT_LABEL}\"");
        assert!(
            original.iter().any(|o| o.to_string().contains(&key)),
            "the operator's objects carry {ENVIRONMENT_LABEL}"
        );
        for object in &moved {
            let text = object.to_string();
            assert!(!text.contains(&key), "{text}");
            assert_eq!(
                object["metadata"]["labels"][BASELINE_LABEL], "bench-0-0",
                "{text}"
            );
        }
        // Each Deployment still selects its own Pods.
        for d in moved.iter().filter(|o| o["kind"] == "Deployment") {
            let selector = d["spec"]["selector"]["matchLabels"]
                .as_object()
                .expect("a selector");
            for (k, v) in selector {
                assert_eq!(&d["spec"]["template"]["metadata"]["labels"][k], v, "{d}");
            }
        }
    }
}
