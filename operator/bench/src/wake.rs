//! `appenv bench wake`: environments that sleep, measured through a real activator process.
//!
//! One environment (web behind the activator, an RQ worker, Redis, PostgreSQL) on the local
//! control plane with the simulated kubelet, whose Pods answer HTTP on their own loopback
//! addresses. Three figures, each with the CPU every component used meanwhile:
//! - **wake**: put it to sleep, send one request to its host through the activator, time the
//!   first byte of the answer; repeated. Next to it, the steps as the benchmark's watches saw
//!   them: the activator's wake write, the operator scaling the database up, the database
//!   Ready, the operator scaling web up (after the database and Redis), web Ready.
//! - **crowd**: N requests at once to the sleeping environment: how many got the app's answer,
//!   how many `503` with `Retry-After`, anything else; the activator's wake writes and the
//!   wakes the environment's status went through.
//! - **awake overhead**: `wrk` against the web Pod's address, then through the activator,
//!   alternately: latency p50/p99 and requests/s of each, and the activity writes the activator
//!   made while the load ran.

use crate::cpu::{Component, CpuUse, KubeletRuntime, Meter, PodHttp, Sample};
use crate::{
    ControllerManagerArgs, Operator, OperatorOptions, cores, machine, meter, percentile, progress,
    wait_ready,
};
use anyhow::Context as _;
use appenv_api::AppEnvironment;
use appenv_api::names::request;
use appenv_core::build::FIELD_MANAGER;
use appenv_localcluster::{ControlPlane, StartOptions, http_get};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NAME: &str = "wake";
const HOST: &str = "wake.example.com";

#[derive(Debug, Clone, clap::Args)]
pub struct WakeArgs {
    /// Sleep-and-wake cycles timed (one request each).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub cycles: u64,
    /// Requests sent at once to the sleeping environment.
    #[arg(long, default_value_t = 1000)]
    pub concurrent: usize,
    /// The activator's bound of requests held for one environment (`--hold-per-environment`).
    #[arg(long, default_value_t = 1000)]
    pub hold_per_environment: usize,
    /// How long each `wrk` run of the awake overhead lasts, in seconds (the runs through the
    /// activator together last a minute or more by default: its activity writes per minute).
    #[arg(long, default_value_t = 30)]
    pub load_seconds: u64,
    /// `wrk` runs of each path (direct, through the activator), alternately.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub load_runs: u64,
    /// Connections `wrk` keeps open.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// The `wrk` binary (Debian's package `wrk`).
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
    /// The binary whose `operator` and `activator` subcommands are measured: by default this one.
    #[arg(long, env = "APPENV_OPERATOR_BIN")]
    pub operator_binary: Option<PathBuf>,
    /// Give up on any one wait after this long.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-wake.json")]
    pub json: PathBuf,
    #[command(flatten)]
    pub controller_manager: ControllerManagerArgs,
}

/// One step of a wake, from the request's start, as the benchmark's watches saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: &'static str,
    /// Whose work the time since the step before was.
    pub by: &'static str,
    /// Seconds from the request to this step, per cycle.
    pub at: Vec<f64>,
    /// Seconds since the step before, per cycle: p50 and p95.
    pub p50: f64,
    pub p95: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Wakes {
    pub cycles: usize,
    /// Request to the answer's first byte, seconds.
    pub first_byte: Vec<f64>,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    /// The answers' status codes (all 200 when every wake was answered by the app).
    pub statuses: BTreeMap<u16, usize>,
    pub steps: Vec<Step>,
    /// The operator's own share of each wake (its two steps), seconds: p50 and p95.
    pub operator_p50: f64,
    pub operator_p95: f64,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct Crowd {
    pub requests: usize,
    /// Answered by a web Pod of the environment.
    pub app: usize,
    /// `503` with `Retry-After`.
    pub unavailable: usize,
    /// Anything else (a connection error, another status): nothing should land here.
    pub other: BTreeMap<String, usize>,
    /// Seconds from the start to the first and to the last answer.
    pub first_answer: f64,
    pub last_answer: f64,
    /// The activator's writes of the wake annotation during the crowd.
    pub wake_writes: u64,
    /// Times the environment's status went from sleeping to awake.
    pub wakes: usize,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub path: &'static str,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers that were not 2xx/3xx, and socket errors, as wrk counted them.
    pub errors: u64,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    pub connections: usize,
    pub seconds_per_run: u64,
    pub runs: Vec<Load>,
    /// Medians of the runs of each path.
    pub direct: (f64, f64, f64),
    pub activator: (f64, f64, f64),
    /// The activator's activity writes while its load ran, and over how many minutes.
    pub activity_writes: u64,
    pub activity_minutes: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WakeReport {
    pub machine: String,
    pub cores: usize,
    pub kubernetes: String,
    pub wakes: Wakes,
    pub crowd: Crowd,
    pub overhead: Overhead,
}

/// `appenv activator` as a process of its own, on loopback.
struct ActivatorProcess {
    child: Child,
    traffic: SocketAddr,
    health: u16,
}

impl Drop for ActivatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl ActivatorProcess {
    async fn start(kubeconfig: &std::path::Path, args: &WakeArgs) -> anyhow::Result<Self> {
        let binary = match &args.operator_binary {
            Some(binary) => binary.clone(),
            None => std::env::current_exe()?,
        };
        let (traffic, health) = (free_port()?, free_port()?);
        let child = Command::new(&binary)
            .arg("activator")
            .arg(format!("--listen=127.0.0.1:{traffic}"))
            .arg(format!("--health-listen=127.0.0.1:{health}"))
            .arg(format!(
                "--hold-per-environment={}",
                args.hold_per_environment
            ))
            .env("KUBECONFIG", kubeconfig)
            .env("APPENV_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} activator", binary.display()))?;
        let mut activator = Self {
            child,
            traffic: SocketAddr::from((Ipv4Addr::LOCALHOST, traffic)),
            health,
        };
        wait_ready(&mut activator.child, health, "the activator").await?;
        Ok(activator)
    }

    /// `appenv_activator_annotation_writes_total{reason, result="written"}`.
    fn written(&self, reason: &str) -> anyhow::Result<u64> {
        let (_, text) = http_get(self.health, "/metrics").context("the activator's /metrics")?;
        let series = format!(
            "appenv_activator_annotation_writes_total{{reason=\"{reason}\",result=\"written\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no {series}in the activator's metrics"))
    }
}

/// An answer to one request: its status, whether it had `Retry-After`, its first byte.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: bool,
    first_byte: Duration,
    body: String,
}

/// `GET /` with `Host: host` on a connection of its own, read to the end.
async fn get(addr: SocketAddr, host: &str, limit: Duration) -> anyhow::Result<Answer> {
    let started = Instant::now();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut response = vec![0u8; 1];
        stream.read_exact(&mut response).await?;
        let first_byte = started.elapsed();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>((first_byte, response))
    };
    let (first_byte, response) = tokio::time::timeout(limit, exchange)
        .await
        .context("no answer in time")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let retry_after = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
    Ok(Answer {
        status,
        retry_after,
        first_byte,
        body: body.to_owned(),
    })
}

/// The environment: web (with a readiness path, so the kubelet probes its HTTP), an RQ worker,
/// Redis and PostgreSQL, reached through the activator.
fn environment() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": NAME, "labels": {"appenv.dev/bench": "true"}},
        "spec": {
            "app": "shop",
            "image": "ghcr.io/example/shop:1.0.0",
            "web": {
                "port": 8000,
                "ingress": {"host": HOST},
                "readiness": {"path": "/healthz"},
            },
            "workers": [{"name": "rq", "command": ["rq", "worker"]}],
            "redis": {},
            "database": {"postgres": {}},
            "sleep": {"afterIdle": "30m"},
        },
    })
}

/// What the benchmark's watches saw, with when.
#[derive(Default)]
struct Timeline {
    seen: Mutex<Vec<(Instant, String)>>,
}

impl Timeline {
    fn push(&self, what: String) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((Instant::now(), what));
        }
    }

    /// When `what` was first seen at or after `since`.
    fn first(&self, what: &str, since: Instant) -> Option<Instant> {
        self.seen
            .lock()
            .ok()?
            .iter()
            .find_map(|(at, w)| (*at >= since && w == what).then_some(*at))
    }

    /// How many times the environment went from asleep to awake since `since` (asleep then).
    fn wakes(&self, since: Instant) -> usize {
        let Ok(seen) = self.seen.lock() else {
            return 0;
        };
        let mut asleep = true;
        let mut wakes = 0;
        for (_, what) in seen.iter().filter(|(at, _)| *at >= since) {
            match what.as_str() {
                "awake" if asleep => (asleep, wakes) = (false, wakes + 1),
                "asleep" => asleep = true,
                _ => {}
            }
        }
        wakes
    }
}

/// Sleeping or awake, and a wake written (a last request at or after it fell asleep).
fn environment_marks(env: &AppEnvironment) -> Vec<String> {
    let sleep = env.status.as_ref().and_then(|s| s.sleep.as_ref());
    let last = env
        .annotations()
        .get(request::LAST_REQUEST)
        .and_then(|v| v.parse::<Timestamp>().ok());
    match sleep {
        None => vec!["awake".to_owned()],
        Some(sleep) if last.is_some_and(|l| l >= sleep.since.0) => {
            vec!["asleep".to_owned(), "wake written".to_owned()]
        }
        Some(_) => vec!["asleep".to_owned()],
    }
}

/// `NAME up` while a workload asks for Pods, `NAME ready` while it has a ready one.
fn workload_marks(name: &str, replicas: Option<i32>, ready: Option<i32>) -> Vec<String> {
    let mut marks = Vec::new();
    if replicas.unwrap_or(0) > 0 {
        marks.push(format!("{name} up"));
    }
    if ready.unwrap_or(0) > 0 {
        marks.push(format!("{name} ready"));
    }
    marks
}

/// Watch the environment, its Deployments and StatefulSets into `timeline`.
fn watch(client: &Client, timeline: &Arc<Timeline>) -> Vec<tokio::task::JoinHandle<()>> {
    fn spawn<K, F>(
        api: Api<K>,
        config: watcher::Config,
        timeline: Arc<Timeline>,
        marks: F,
    ) -> tokio::task::JoinHandle<()>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        F: Fn(&K) -> Vec<String> + Send + 'static,
    {
        tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff().applied_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(object)) = stream.next().await {
                for mark in marks(&object) {
                    timeline.push(mark);
                }
            }
        })
    }
    vec![
        spawn(
            Api::<AppEnvironment>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            timeline.clone(),
            environment_marks,
        ),
        spawn(
            Api::<Deployment>::namespaced(client.clone(), NAME),
            watcher::Config::default(),
            timeline.clone(),
            |d: &Deployment| {
                workload_marks(
                    &d.name_any(),
                    d.spec.as_ref().and_then(|s| s.replicas),
                    d.status.as_ref().and_then(|s| s.ready_replicas),
                )
            },
        ),
        spawn(
            Api::<StatefulSet>::namespaced(client.clone(), NAME),
            watcher::Config::default(),
            timeline.clone(),
            |s: &StatefulSet| {
                workload_marks(
                    &s.name_any(),
                    s.spec.as_ref().and_then(|s| s.replicas),
                    s.status.as_ref().and_then(|s| s.ready_replicas),
                )
            },
        ),
    ]
}

/// Poll `check` every 50 ms until it holds; fail after `limit`.
async fn until(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !check().await? {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn annotate(client: &Client, key: &str, value: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    Api::<AppEnvironment>::all(client.clone())
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating {NAME} with {key}"))?;
    Ok(())
}

fn status_of(env: &AppEnvironment) -> (bool, Option<appenv_api::Phase>) {
    env.status
        .as_ref()
        .map_or((false, None), |s| (s.sleep.is_some(), s.phase))
}

async fn pods(client: &Client) -> anyhow::Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), NAME)
        .list(&ListParams::default())
        .await
        .context("listing the environment's Pods")?
        .items)
}

/// Put the environment to sleep (as `appenv preview sleep`) and wait until no Pod is left.
async fn sleep(client: &Client, limit: Duration) -> anyhow::Result<()> {
    let api = Api::<AppEnvironment>::all(client.clone());
    annotate(client, request::SLEEP, &Timestamp::now().to_string()).await?;
    until("Sleeping", limit, async || {
        let env = api.get(NAME).await?;
        Ok(status_of(&env) == (true, Some(appenv_api::Phase::Sleeping)))
    })
    .await?;
    until("every Pod gone", limit, async || {
        Ok(pods(client).await?.is_empty())
    })
    .await
}

async fn awake_and_ready(client: &Client, limit: Duration) -> anyhow::Result<()> {
    let api = Api::<AppEnvironment>::all(client.clone());
    until("awake and Ready", limit, async || {
        let env = api.get(NAME).await?;
        Ok(status_of(&env) == (false, Some(appenv_api::Phase::Ready)))
    })
    .await
}

/// The control plane, the kubelet, the operator and the activator of one run, and its meter.
/// Fields drop in order: the processes and the kubelet stop before the control plane.
struct Bed {
    watches: Vec<tokio::task::JoinHandle<()>>,
    timeline: Arc<Timeline>,
    meter: Meter,
    activator: ActivatorProcess,
    _operator: Operator,
    _kubelet: KubeletRuntime,
    client: Client,
    plane: ControlPlane,
    limit: Duration,
}

impl Bed {
    async fn start(args: &WakeArgs) -> anyhow::Result<Self> {
        let limit = Duration::from_secs(args.timeout_seconds);
        progress("starting the control plane and the simulated kubelet");
        let plane = ControlPlane::start(StartOptions {
            progress: true,
            controller_manager_rate: args.controller_manager.rate(),
            ..StartOptions::default()
        })
        .await?;
        let client = plane.client().await?;
        let kubelet = KubeletRuntime::start(plane.kubeconfig(), PodHttp::Serve).await?;
        appenv_controller::crd::install(&client, FIELD_MANAGER).await?;
        let operator = Operator::start(
            plane.kubeconfig(),
            &OperatorOptions {
                binary: args.operator_binary.clone(),
                resync_seconds: 300,
                concurrency: 4,
                extra: vec!["--activator-service=appenv-system/appenv-activator:80".into()],
            },
        )
        .await?;
        progress("starting the activator");
        let activator = ActivatorProcess::start(plane.kubeconfig(), args).await?;
        let meter = meter(
            &plane,
            &[
                (Component::Operator, operator.pid()),
                (Component::Activator, activator.child.id()),
            ],
            &kubelet,
        )?;
        let timeline = Arc::new(Timeline::default());
        let watches = watch(&client, &timeline);
        Ok(Self {
            watches,
            timeline,
            meter,
            activator,
            _operator: operator,
            _kubelet: kubelet,
            client,
            plane,
            limit,
        })
    }

    fn sample(&self) -> anyhow::Result<Sample> {
        self.meter.sample()
    }

    fn since(&self, before: &Sample, children: Option<Component>) -> anyhow::Result<CpuUse> {
        self.meter.since(before, children)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

/// The steps of a wake, in order: what was seen (the last of these marks of the web Deployment
/// `shop`, the database's StatefulSet `shop-postgres` and Redis's Deployment `shop-redis`), and
/// whose work led to it from the step before.
const STEPS: [(&str, &[&str], &str); 5] = [
    (
        "wake written",
        &["wake written"],
        "activator: the request seen, the wake written",
    ),
    (
        "database and Redis up",
        &["shop-postgres up", "shop-redis up"],
        "operator: the wake seen, the database and Redis scaled up",
    ),
    (
        "database and Redis ready",
        &["shop-postgres ready", "shop-redis ready"],
        "kubelet and controllers: their Pods Ready",
    ),
    (
        "web up",
        &["shop up"],
        "operator: the database and Redis seen ready, web scaled up",
    ),
    (
        "web ready",
        &["shop ready"],
        "kubelet and controllers: web's Pod Ready",
    ),
];

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Sleep and wake `cycles` times, one request each.
async fn wakes(bed: &Bed, cycles: u64) -> anyhow::Result<Wakes> {
    let mut first_byte = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut at: Vec<Vec<f64>> = vec![Vec::new(); STEPS.len()];
    let mut cpu: Option<CpuUse> = None;
    for cycle in 1..=cycles {
        sleep(&bed.client, bed.limit).await?;
        let before = bed.sample()?;
        let started = Instant::now();
        let answer = get(bed.activator.traffic, HOST, bed.limit).await?;
        let used = bed.since(&before, None)?;
        cpu = Some(match cpu {
            Some(total) => total.plus(&used),
            None => used,
        });
        anyhow::ensure!(
            answer.status != 200 || answer.body.starts_with("pod shop-"),
            "a 200 that is not from a web Pod: {:?}",
            answer.body
        );
        *statuses.entry(answer.status).or_default() += 1;
        first_byte.push(answer.first_byte.as_secs_f64());
        awake_and_ready(&bed.client, bed.limit).await?;
        for (i, (_, marks, _)) in STEPS.iter().enumerate() {
            let mut last = started;
            for mark in *marks {
                let seen = bed
                    .timeline
                    .first(mark, started)
                    .with_context(|| format!("cycle {cycle}: {mark:?} never seen"))?;
                last = last.max(seen);
            }
            at[i].push(last.duration_since(started).as_secs_f64());
        }
        progress(format!(
            "wake {cycle}/{cycles}: {} in {:.0} ms",
            answer.status,
            answer.first_byte.as_secs_f64() * 1000.0
        ));
    }
    let steps: Vec<Step> = STEPS
        .iter()
        .enumerate()
        .map(|(i, (what, _, by))| {
            let deltas: Vec<f64> = (0..at[i].len())
                .map(|c| at[i][c] - if i == 0 { 0.0 } else { at[i - 1][c] })
                .collect();
            let deltas = sorted(&deltas);
            Step {
                what,
                by,
                at: at[i].clone(),
                p50: percentile(&deltas, 50.0),
                p95: percentile(&deltas, 95.0),
            }
        })
        .collect();
    // The operator's steps: the wake seen to the database up, and the database ready to web up.
    let operator = sorted(
        &(0..first_byte.len())
            .map(|c| (at[1][c] - at[0][c]) + (at[3][c] - at[2][c]))
            .collect::<Vec<_>>(),
    );
    let all = sorted(&first_byte);
    Ok(Wakes {
        cycles: first_byte.len(),
        p50: percentile(&all, 50.0),
        p95: percentile(&all, 95.0),
        max: all.last().copied().unwrap_or(0.0),
        first_byte,
        statuses,
        steps,
        operator_p50: percentile(&operator, 50.0),
        operator_p95: percentile(&operator, 95.0),
        cpu: cpu.unwrap_or_default(),
    })
}

/// `requests` at once to the sleeping environment.
async fn crowd(bed: &Bed, requests: usize) -> anyhow::Result<Crowd> {
    sleep(&bed.client, bed.limit).await?;
    let writes_before = bed.activator.written("wake")?;
    let before = bed.sample()?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..requests {
        let (addr, limit) = (bed.activator.traffic, bed.limit);
        tasks.spawn(async move { (get(addr, HOST, limit).await, started.elapsed()) });
    }
    let (mut app, mut unavailable) = (0, 0);
    let mut other: BTreeMap<String, usize> = BTreeMap::new();
    let (mut first, mut last) = (f64::MAX, 0.0f64);
    while let Some(done) = tasks.join_next().await {
        let (answer, elapsed) = done.context("a request's task")?;
        let elapsed = elapsed.as_secs_f64();
        (first, last) = (first.min(elapsed), last.max(elapsed));
        match answer {
            Ok(a) if a.status == 200 && a.body.starts_with("pod shop-") => app += 1,
            Ok(a) if a.status == 503 && a.retry_after => unavailable += 1,
            Ok(a) => *other.entry(format!("status {}", a.status)).or_default() += 1,
            Err(err) => *other.entry(format!("{err:#}")).or_default() += 1,
        }
    }
    let cpu = bed.since(&before, None)?;
    awake_and_ready(&bed.client, bed.limit).await?;
    Ok(Crowd {
        requests,
        app,
        unavailable,
        other,
        first_answer: first,
        last_answer: last,
        wake_writes: bed.activator.written("wake")? - writes_before,
        wakes: bed.timeline.wakes(started),
        cpu,
    })
}

/// Seconds of a wrk latency such as `635.91us`, `1.20ms` or `2.00s`.
fn wrk_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    Some(number.trim().parse::<f64>().ok()? * scale)
}

/// Requests/s, p50 and p99 (ms) and errors from `wrk --latency`'s output.
fn parse_wrk(output: &str) -> anyhow::Result<(f64, f64, f64, u64)> {
    let value = |prefix: &str| {
        output.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let rate: f64 = value("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let ms = |p: &str| {
        value(p)
            .and_then(|v| wrk_seconds(&v))
            .map(|s| s * 1000.0)
            .with_context(|| format!("no {p} latency in wrk's output"))
    };
    let mut errors: u64 = value("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if let Some(socket) = value("Socket errors:") {
        errors += socket
            .split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok((rate, ms("50%")?, ms("99%")?, errors))
}

/// One `wrk` run against `url` with `Host: HOST`.
fn wrk(bed: &Bed, args: &WakeArgs, path: &'static str, url: &str) -> anyhow::Result<Load> {
    let before = bed.sample()?;
    let output = Command::new(&args.wrk)
        .args(["--latency", "-t1"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.load_seconds))
        .args(["-H", &format!("Host: {HOST}")])
        .arg(url)
        .output()
        .with_context(|| {
            format!(
                "running {} (Debian's package wrk; `--wrk PATH` names another)",
                args.wrk.display()
            )
        })?;
    let cpu = bed.since(&before, Some(Component::Load))?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}{}",
        text,
        String::from_utf8_lossy(&output.stderr)
    );
    let (requests_per_second, p50_ms, p99_ms, errors) = parse_wrk(&text)?;
    Ok(Load {
        path,
        requests_per_second,
        p50_ms,
        p99_ms,
        errors,
        cpu,
    })
}

fn medians(runs: &[Load], path: &str) -> (f64, f64, f64) {
    let of = |f: fn(&Load) -> f64| {
        let values: Vec<f64> = runs.iter().filter(|r| r.path == path).map(f).collect();
        percentile(&sorted(&values), 50.0)
    };
    (
        of(|r| r.p50_ms),
        of(|r| r.p99_ms),
        of(|r| r.requests_per_second),
    )
}

/// The web Pod's own address and port.
async fn web_pod_url(client: &Client) -> anyhow::Result<String> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAME)
        .list(&ListParams::default().labels("app.kubernetes.io/component=web"))
        .await?;
    let ip = pods
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .context("no web Pod with an address")?;
    Ok(format!("http://{ip}:8000/"))
}

/// wrk straight at the web Pod, then through the activator, `load_runs` times each.
async fn overhead(bed: &Bed, args: &WakeArgs) -> anyhow::Result<Overhead> {
    let direct = web_pod_url(&bed.client).await?;
    let through = format!("http://{}/", bed.activator.traffic);
    let mut runs = Vec::new();
    let (mut activity_writes, mut activity_seconds) = (0, 0.0);
    for run in 1..=args.load_runs {
        progress(format!("awake overhead, run {run}/{}", args.load_runs));
        runs.push(wrk(bed, args, "direct", &direct)?);
        let writes = bed.activator.written("activity")?;
        let load = wrk(bed, args, "activator", &through)?;
        activity_writes += bed.activator.written("activity")? - writes;
        activity_seconds += load.cpu.wall_seconds;
        runs.push(load);
    }
    Ok(Overhead {
        connections: args.connections,
        seconds_per_run: args.load_seconds,
        direct: medians(&runs, "direct"),
        activator: medians(&runs, "activator"),
        runs,
        activity_writes,
        activity_minutes: activity_seconds / 60.0,
    })
}

pub async fn run(args: WakeArgs) -> anyhow::Result<WakeReport> {
    let bed = Bed::start(&args).await?;
    let env: AppEnvironment = serde_json::from_value(environment())?;
    Api::<AppEnvironment>::all(bed.client.clone())
        .patch(
            NAME,
            &PatchParams::apply("appenv-bench").force(),
            &Patch::Apply(&env),
        )
        .await
        .context("creating the environment")?;
    progress("waiting for the environment to be Ready");
    awake_and_ready(&bed.client, bed.limit).await?;
    progress(format!("{} sleep-and-wake cycles", args.cycles));
    let wakes = wakes(&bed, args.cycles).await?;
    progress(format!(
        "{} requests at once to the sleeping environment",
        args.concurrent
    ));
    let crowd = crowd(&bed, args.concurrent).await?;
    let overhead = overhead(&bed, &args).await?;
    let report = WakeReport {
        machine: machine(),
        cores: cores(),
        kubernetes: bed.plane.server_version().to_owned(),
        wakes,
        crowd,
        overhead,
    };
    Ok(report)
}

fn ms(seconds: f64) -> String {
    format!("{:.0}", seconds * 1000.0)
}

fn wake_table(out: &mut String, report: &WakeReport) {
    let w = &report.wakes;
    let statuses: Vec<String> = w
        .statuses
        .iter()
        .map(|(s, n)| format!("{n}x {s}"))
        .collect();
    let _ = writeln!(
        out,
        "\n### Wake: request to first byte, through the activator ({} cycles; answers: {})\n",
        w.cycles,
        statuses.join(", ")
    );
    let _ = writeln!(out, "| figure | p50 ms | p95 ms | max ms | goal |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let goal = if w.p95 < 1.5 { "met" } else { "not met" };
    let _ = writeln!(
        out,
        "| request -> first byte | {} | {} | {} | < 1500 ms: {goal} |",
        ms(w.p50),
        ms(w.p95),
        ms(w.max)
    );
    let _ = writeln!(
        out,
        "| the operator's own steps | {} | {} | | |",
        ms(w.operator_p50),
        ms(w.operator_p95)
    );
    let _ = writeln!(
        out,
        "\nThe steps of a wake as the benchmark's watches saw them, each timed from the step \
         before (the first from the request):\n"
    );
    let _ = writeln!(out, "| step | whose work | p50 ms | p95 ms |");
    let _ = writeln!(out, "|---|---|---|---|");
    for step in &w.steps {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            step.what,
            step.by,
            ms(step.p50),
            ms(step.p95)
        );
    }
    let _ = writeln!(
        out,
        "\nBounded by (CPU during the requests, summed over the cycles): {}",
        w.cpu.explain(report.cores)
    );
}

fn crowd_table(out: &mut String, report: &WakeReport) {
    let c = &report.crowd;
    let other: Vec<String> = c.other.iter().map(|(k, n)| format!("{n}x {k}")).collect();
    let _ = writeln!(
        out,
        "\n### {} requests at once to a sleeping environment\n",
        c.requests
    );
    let _ = writeln!(
        out,
        "| the app's answer | 503 + Retry-After | anything else | wake writes | wakes | first answer s | last answer s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {:.2} | {:.2} |",
        c.app,
        c.unavailable,
        if other.is_empty() {
            "0".to_owned()
        } else {
            other.join("; ")
        },
        c.wake_writes,
        c.wakes,
        c.first_answer,
        c.last_answer
    );
    let _ = writeln!(out, "\nBounded by: {}", c.cpu.explain(report.cores));
}

fn overhead_table(out: &mut String, report: &WakeReport) {
    let o = &report.overhead;
    let _ = writeln!(
        out,
        "\n### Awake: the activator against calling the web Pod directly (wrk, {} connections, \
         {} s per run, on loopback)\n",
        o.connections, o.seconds_per_run
    );
    let _ = writeln!(
        out,
        "| path | run | requests/s | p50 ms | p99 ms | errors | bounded by |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for load in &o.runs {
        let run = runs.entry(load.path).or_default();
        *run += 1;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
            load.path,
            run,
            load.requests_per_second,
            load.p50_ms,
            load.p99_ms,
            load.errors,
            load.cpu.explain(report.cores)
        );
    }
    let (d50, d99, drate) = o.direct;
    let (a50, a99, arate) = o.activator;
    let _ = writeln!(
        out,
        "\nAdded by the activator (medians of the runs): p50 +{:.2} ms, p99 +{:.2} ms; \
         requests/s {:.0} against {:.0} direct ({:.2}x). Activity writes while its load ran: {} \
         in {:.2} minutes (at most one per environment per minute).",
        a50 - d50,
        a99 - d99,
        arate,
        drate,
        if drate > 0.0 { arate / drate } else { 0.0 },
        o.activity_writes,
        o.activity_minutes
    );
}

/// The report as markdown.
pub fn markdown(report: &WakeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## appenv bench wake\n\nMachine: {}; Kubernetes {} (local control plane, simulated \
         kubelet whose Pods answer HTTP on loopback); `appenv operator` and `appenv activator` \
         as processes of their own.",
        report.machine, report.kubernetes
    );
    wake_table(&mut out, report);
    crowd_table(&mut out, report);
    overhead_table(&mut out, report);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latencies_read_in_their_units() {
        assert_eq!(wrk_seconds("635.50us"), Some(635.5e-6));
        assert_eq!(wrk_seconds("1.25ms"), Some(1.25e-3));
        assert_eq!(wrk_seconds("2.00s"), Some(2.0));
        assert_eq!(wrk_seconds("1.00m"), Some(60.0));
        assert_eq!(wrk_seconds("fast"), None);
    }

    #[test]
    fn wrk_output_gives_rate_percentiles_and_errors() {
        let output = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 16 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   800.00us  100.00us   \
            2.00ms   90.00%\n  Latency Distribution\n     50%  750.00us\n     75%  850.00us\n     \
            90%    1.00ms\n     99%    1.50ms\n  20000 requests in 2.00s, 3.00MB read\n  Socket \
            errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\n\
            Requests/sec:  10000.50\nTransfer/sec:      1.50MB\n";
        let (rate, p50, p99, errors) = parse_wrk(output).expect("parses");
        assert_eq!(rate, 10000.5);
        assert!((p50 - 0.75).abs() < 1e-9, "{p50}");
        assert!((p99 - 1.5).abs() < 1e-9, "{p99}");
        assert_eq!(errors, 7);
        assert!(parse_wrk("no figures").is_err());
    }

    #[test]
    fn wakes_count_each_return_from_sleep_once() {
        let timeline = Timeline::default();
        let start = Instant::now();
        for mark in [
            "asleep",
            "wake written",
            "awake",
            "awake",
            "asleep",
            "awake",
        ] {
            timeline.push(mark.to_owned());
        }
        assert_eq!(timeline.wakes(start), 2);
        assert!(timeline.first("wake written", start).is_some());
        assert!(timeline.first("shop up", start).is_none());
    }

    #[test]
    fn the_environment_marks_a_wake_written_only_while_asleep() {
        let mut env: AppEnvironment = serde_json::from_value(environment()).expect("env");
        assert_eq!(environment_marks(&env), vec!["awake"]);
        env.status = Some(appenv_api::AppEnvironmentStatus {
            sleep: Some(appenv_api::SleepStatus {
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-12-02T10:00:00Z".parse().expect("time"),
                ),
                reason: "requested".into(),
            }),
            ..Default::default()
        });
        env.annotations_mut()
            .insert(request::LAST_REQUEST.into(), "2026-12-02T09:59:59Z".into());
        assert_eq!(environment_marks(&env), vec!["asleep"]);
        env.annotations_mut()
            .insert(request::LAST_REQUEST.into(), "2026-12-02T10:00:00Z".into());
        assert_eq!(environment_marks(&env), vec!["asleep", "wake written"]);
    }
}
