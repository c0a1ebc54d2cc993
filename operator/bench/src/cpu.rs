//! What bounds a figure: the CPU time each component of the benchmark used during one run.
//!
//! The control plane and the operator are processes of their own: their user + system time
//! comes from `/proc/PID/stat`. Helm's processes are children of the benchmark, reaped before
//! a run ends: theirs comes from `getrusage(RUSAGE_CHILDREN)`. The simulated kubelet runs inside
//! the benchmark's process, on a tokio runtime of its own ([`KubeletRuntime`]), so its time is
//! that of its threads (`/proc/self/task/TID/stat`, and for threads that ended, what they had
//! used when they stopped). The rest of the benchmark's process is the benchmark's own client:
//! the requests that create the environments (for direct apply, what `kubectl` would do) and
//! the watches that see them Ready. The machine's busy time (`/proc/stat`) is read as well: the
//! difference to the components' sum is other load on the machine.

use anyhow::Context as _;
use appenv_localcluster::kubelet::SimKubelet;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A part of the benchmark whose CPU time is measured on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Apiserver,
    Etcd,
    ControllerManager,
    Kubelet,
    Operator,
    /// `appenv activator` (`appenv bench wake`).
    Activator,
    Helm,
    /// The load generator, `wrk` (`appenv bench wake`).
    Load,
    Bench,
}

impl Component {
    /// In the order of the report's columns.
    pub const ALL: [Self; 9] = [
        Self::Apiserver,
        Self::Etcd,
        Self::ControllerManager,
        Self::Kubelet,
        Self::Operator,
        Self::Activator,
        Self::Helm,
        Self::Load,
        Self::Bench,
    ];

    /// The name in the report and the JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Apiserver => "apiserver",
            Self::Etcd => "etcd",
            Self::ControllerManager => "controller-manager",
            Self::Kubelet => "kubelet",
            Self::Operator => "operator",
            Self::Activator => "activator",
            Self::Helm => "helm",
            Self::Load => "load",
            Self::Bench => "bench",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The component that used the most CPU during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Busiest {
    pub component: Component,
    pub seconds: f64,
    /// Its CPU seconds over the run's wall time: the cores it kept busy on average.
    pub cores: f64,
}

/// CPU seconds (user + system) of each component during one run.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct CpuUse {
    pub wall_seconds: f64,
    /// Only the components that ran: no `helm` for the other methods.
    pub seconds: BTreeMap<Component, f64>,
    pub busiest: Option<Busiest>,
    /// All components' CPU seconds over the wall time.
    pub all_cores: f64,
    /// The machine's busy CPU seconds (every process's) over the wall time.
    pub machine_cores: f64,
}

impl CpuUse {
    /// `machine_seconds`: the busy CPU seconds of the whole machine meanwhile.
    pub fn new(wall_seconds: f64, seconds: BTreeMap<Component, f64>, machine_seconds: f64) -> Self {
        let per_wall = |s: f64| {
            if wall_seconds > 0.0 {
                s / wall_seconds
            } else {
                0.0
            }
        };
        let busiest = busiest(&seconds).map(|(component, seconds)| Busiest {
            component,
            seconds,
            cores: per_wall(seconds),
        });
        Self {
            all_cores: per_wall(seconds.values().sum()),
            machine_cores: per_wall(machine_seconds),
            wall_seconds,
            seconds,
            busiest,
        }
    }

    /// Both intervals' use together, as if they were one (the runs of a batch).
    pub fn plus(&self, other: &CpuUse) -> CpuUse {
        let mut seconds = self.seconds.clone();
        for (component, s) in &other.seconds {
            *seconds.entry(*component).or_default() += s;
        }
        CpuUse::new(
            self.wall_seconds + other.wall_seconds,
            seconds,
            self.machine_cores * self.wall_seconds + other.machine_cores * other.wall_seconds,
        )
    }

    pub fn seconds_of(&self, component: Component) -> Option<f64> {
        self.seconds.get(&component).copied()
    }

    /// The busiest component and the cores it kept busy, e.g. "apiserver 1.62 cores of 2".
    pub fn bound(&self, cores: usize) -> String {
        match self.busiest {
            Some(b) => format!("{} {:.2} cores of {cores}", b.component, b.cores),
            None => "-".into(),
        }
    }

    /// What bounded the run, in words: the busiest component, all components together, and
    /// the whole machine (which includes load from outside the benchmark).
    pub fn explain(&self, cores: usize) -> String {
        let cores_f = cores as f64;
        let other = (self.machine_cores - self.all_cores).max(0.0);
        let saturated = if self.machine_cores < 0.9 * cores_f {
            String::new()
        } else if other >= 0.25 * cores_f {
            format!(
                ": every core was busy, {other:.2} of them with load from outside the benchmark \
                 (this figure is not the benchmark's alone)"
            )
        } else {
            ": every core was busy".to_owned()
        };
        format!(
            "{}; all components {:.2} cores, the machine {:.2}{saturated}",
            self.bound(cores),
            self.all_cores,
            self.machine_cores
        )
    }
}

/// The component with the most CPU seconds; on a tie, the first in [`Component::ALL`].
pub fn busiest(seconds: &BTreeMap<Component, f64>) -> Option<(Component, f64)> {
    seconds
        .iter()
        .map(|(c, s)| (*c, *s))
        .fold(None, |best, (c, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((c, s)),
        })
}

/// utime + stime, in clock ticks, from a line of `/proc/PID/stat` or `/proc/PID/task/TID/stat`.
/// The command name (field 2) is in parentheses and may hold spaces and parentheses itself, so
/// the fields are counted from the last `)`: utime and stime are fields 14 and 15.
pub fn stat_ticks(line: &str) -> Option<u64> {
    let (_, rest) = line.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The busy clock ticks of all CPUs from the first line of `/proc/stat`
/// (`cpu user nice system idle iowait irq softirq steal ...`): user, nice, system, irq and
/// softirq. Idle and waiting for I/O are not busy; stolen time went to other virtual machines.
pub fn machine_busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().next()?;
    let mut fields = line.split_whitespace();
    (fields.next()? == "cpu").then_some(())?;
    let values: Vec<u64> = fields
        .take(7)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, _idle, _iowait, irq, softirq] = values.try_into().ok()?;
    Some(user + nice + system + irq + softirq)
}

fn read_ticks(path: &str) -> anyhow::Result<u64> {
    let line = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    stat_ticks(&line).with_context(|| format!("no utime and stime in {path}: {line}"))
}

/// Clock ticks per second of `/proc`'s times.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the system; it takes no pointer.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU time of the children this process has waited for (Helm's, here).
fn reaped_children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; getrusage fills it or fails.
    let status = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    if status != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialised (all zero is a valid rusage) and filled by getrusage.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// This thread's id, from the `/proc/thread-self` link (`PID/task/TID`).
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// The threads of one tokio runtime and the CPU time of those that ended.
#[derive(Debug, Default)]
struct ThreadGroup {
    state: Mutex<Threads>,
}

#[derive(Debug, Default)]
struct Threads {
    live: Vec<u32>,
    ended_ticks: u64,
}

impl ThreadGroup {
    fn state(&self) -> std::sync::MutexGuard<'_, Threads> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// On a thread of the group, when it starts.
    fn enter(&self) {
        if let Some(tid) = current_tid() {
            self.state().live.push(tid);
        }
    }

    /// On a thread of the group, when it stops: what it used is kept.
    fn leave(&self) {
        let Some(tid) = current_tid() else { return };
        let mut state = self.state();
        state.ended_ticks += read_ticks("/proc/thread-self/stat").unwrap_or(0);
        state.live.retain(|t| *t != tid);
    }

    fn ticks(&self) -> anyhow::Result<u64> {
        let state = self.state();
        let mut ticks = state.ended_ticks;
        for tid in &state.live {
            ticks += read_ticks(&format!("/proc/self/task/{tid}/stat"))?;
        }
        Ok(ticks)
    }
}

/// Whether the simulated kubelet's Pods serve HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodHttp {
    /// Every Pod serves HTTP on a loopback address (what `appenv bench wake` measures).
    Serve,
    /// No Pod serves HTTP, and each has an address Endpoints take
    /// ([`SimKubelet::start_without_http`]).
    Quiet,
}

/// The simulated kubelet on a tokio runtime of its own (as many worker threads as the
/// benchmark's runtime has), so that its CPU time can be told from the benchmark's.
#[derive(Debug)]
pub struct KubeletRuntime {
    kubelet: Option<SimKubelet>,
    runtime: Option<tokio::runtime::Runtime>,
    threads: Arc<ThreadGroup>,
}

impl KubeletRuntime {
    /// Start the simulated kubelet, its Pods serving HTTP or not as `http` says.
    pub async fn start(kubeconfig: &Path, http: PodHttp) -> anyhow::Result<Self> {
        let threads = Arc::new(ThreadGroup::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("sim-kubelet")
            .enable_all()
            .on_thread_start({
                let threads = threads.clone();
                move || threads.enter()
            })
            .on_thread_stop({
                let threads = threads.clone();
                move || threads.leave()
            })
            .build()
            .context("starting the simulated kubelet's runtime")?;
        let kubeconfig = kubeconfig.to_owned();
        // The client is made on the kubelet's runtime: its connections live where it was made.
        let kubelet = runtime
            .spawn(async move {
                let kubeconfig = Kubeconfig::read_from(&kubeconfig)?;
                let mut config =
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await?;
                config.read_timeout = Some(Duration::from_secs(295));
                let client = Client::try_from(config)?;
                let kubelet = match http {
                    PodHttp::Serve => SimKubelet::start(client).await,
                    PodHttp::Quiet => SimKubelet::start_without_http(client).await,
                };
                kubelet.context("starting the simulated kubelet")
            })
            .await??;
        Ok(Self {
            kubelet: Some(kubelet),
            runtime: Some(runtime),
            threads,
        })
    }
}

impl Drop for KubeletRuntime {
    fn drop(&mut self) {
        drop(self.kubelet.take());
        // A runtime cannot be dropped (which blocks) inside the benchmark's async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// CPU times at one moment, in clock ticks (Helm's reaped children as a duration).
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    ticks: HashMap<Component, u64>,
    children: Duration,
    machine_ticks: u64,
}

/// Reads every component's CPU time.
#[derive(Debug)]
pub struct Meter {
    ticks_per_second: f64,
    processes: Vec<(Component, u32)>,
    kubelet: Arc<ThreadGroup>,
}

impl Meter {
    /// `processes`: the components that are processes of their own, with their PIDs.
    pub fn new(processes: Vec<(Component, u32)>, kubelet: &KubeletRuntime) -> Self {
        Self {
            ticks_per_second: clock_ticks_per_second(),
            processes,
            kubelet: kubelet.threads.clone(),
        }
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        let mut ticks = HashMap::new();
        for (component, pid) in &self.processes {
            let used = read_ticks(&format!("/proc/{pid}/stat"))
                .with_context(|| format!("the CPU time of {component}"))?;
            ticks.insert(*component, used);
        }
        // The kubelet's threads first: the process's total then includes all they used.
        let kubelet = self.kubelet.ticks()?;
        let process = read_ticks("/proc/self/stat")?;
        ticks.insert(Component::Kubelet, kubelet);
        ticks.insert(Component::Bench, process.saturating_sub(kubelet));
        let proc_stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Ok(Sample {
            at: Instant::now(),
            ticks,
            children: reaped_children_cpu(),
            machine_ticks: machine_busy_ticks(&proc_stat).context("no cpu line in /proc/stat")?,
        })
    }

    /// What each component used since `before`; the benchmark's reaped child processes (Helm's,
    /// or the load generator's) as `children`'s.
    pub fn since(&self, before: &Sample, children: Option<Component>) -> anyhow::Result<CpuUse> {
        Ok(used_between(
            before,
            &self.sample()?,
            self.ticks_per_second,
            children,
        ))
    }
}

fn used_between(
    before: &Sample,
    after: &Sample,
    ticks_per_second: f64,
    children: Option<Component>,
) -> CpuUse {
    let mut seconds: BTreeMap<Component, f64> = after
        .ticks
        .iter()
        .map(|(component, ticks)| {
            let earlier = before.ticks.get(component).copied().unwrap_or(0);
            let used = ticks.saturating_sub(earlier) as f64 / ticks_per_second;
            (*component, used)
        })
        .collect();
    if let Some(component) = children {
        let reaped = after.children.saturating_sub(before.children);
        seconds.insert(component, reaped.as_secs_f64());
    }
    let machine = after.machine_ticks.saturating_sub(before.machine_ticks) as f64;
    CpuUse::new(
        after.at.duration_since(before.at).as_secs_f64(),
        seconds,
        machine / ticks_per_second,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        let line = "4242 (kube-apiserver) S 1 4242 4242 0 -1 4194560 52133 0 0 0 \
                    1517 402 0 0 20 0 12 0 16270 1190043648 31590 18446744073709551615";
        assert_eq!(stat_ticks(line), Some(1517 + 402));
        // A command name with spaces and parentheses, as a thread's may have.
        let odd = "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 30 12 5 5 20 0 1 0 1 0 0";
        assert_eq!(stat_ticks(odd), Some(42));
        assert_eq!(stat_ticks("7 (short) R 1 2"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn the_machine_is_busy_when_not_idle_waiting_or_stolen() {
        let stat = "cpu  1404145 10 207240 1451833 7634 3 5070 1680 0 0\n\
                    cpu0 702072 5 103620 725916 3817 1 2535 840 0 0\n";
        assert_eq!(
            machine_busy_ticks(stat),
            Some(1404145 + 10 + 207240 + 3 + 5070)
        );
        assert_eq!(machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(machine_busy_ticks("cpu 1 2 3"), None);
        let real = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        assert!(machine_busy_ticks(&real).is_some());
    }

    #[test]
    fn this_process_and_this_thread_can_be_read() {
        assert!(read_ticks("/proc/self/stat").is_ok());
        let tid = current_tid().expect("a thread id");
        assert!(read_ticks(&format!("/proc/self/task/{tid}/stat")).is_ok());
    }

    #[test]
    fn a_thread_that_ended_keeps_what_it_used() {
        let group = Arc::new(ThreadGroup::default());
        let worker = group.clone();
        std::thread::spawn(move || {
            worker.enter();
            while read_ticks("/proc/thread-self/stat").expect("own stat") < 3 {
                std::hint::black_box(0u64.wrapping_add(1));
            }
            assert!(worker.ticks().expect("live thread") >= 3);
            worker.leave();
        })
        .join()
        .expect("the thread ran");
        assert!(group.state().live.is_empty());
        assert!(group.ticks().expect("ended threads only") >= 3);
    }

    #[test]
    fn the_busiest_is_the_most_seconds_and_the_first_on_a_tie() {
        let seconds = BTreeMap::from([
            (Component::Etcd, 1.0),
            (Component::Apiserver, 3.0),
            (Component::Operator, 3.0),
            (Component::Bench, 0.5),
        ]);
        assert_eq!(busiest(&seconds), Some((Component::Apiserver, 3.0)));
        assert_eq!(busiest(&BTreeMap::new()), None);
    }

    #[test]
    fn a_run_says_what_bounded_it_in_cores() {
        let cpu = CpuUse::new(
            10.0,
            BTreeMap::from([
                (Component::Apiserver, 16.2),
                (Component::Etcd, 2.0),
                (Component::Kubelet, 1.3),
            ]),
            19.0,
        );
        let busiest = cpu.busiest.expect("a busiest component");
        assert_eq!(busiest.component, Component::Apiserver);
        assert!((busiest.cores - 1.62).abs() < 1e-9);
        assert!((cpu.all_cores - 1.95).abs() < 1e-9);
        assert_eq!(cpu.bound(2), "apiserver 1.62 cores of 2");
        assert_eq!(
            cpu.explain(2),
            "apiserver 1.62 cores of 2; all components 1.95 cores, the machine 1.90: \
             every core was busy"
        );
        assert_eq!(
            cpu.explain(4),
            "apiserver 1.62 cores of 4; all components 1.95 cores, the machine 1.90"
        );
        let disturbed = CpuUse::new(10.0, BTreeMap::from([(Component::Apiserver, 3.0)]), 20.0);
        assert_eq!(
            disturbed.explain(2),
            "apiserver 0.30 cores of 2; all components 0.30 cores, the machine 2.00: every core \
             was busy, 1.70 of them with load from outside the benchmark (this figure is not the \
             benchmark's alone)"
        );
        assert_eq!(CpuUse::default().bound(2), "-");
        let json = serde_json::to_value(&cpu).expect("serializes");
        assert_eq!(json["seconds"]["apiserver"], 16.2);
        assert_eq!(json["busiest"]["component"], "apiserver");
    }

    #[test]
    fn the_difference_of_two_samples_is_in_seconds_and_helm_only_when_asked() {
        let start = Instant::now();
        let sample = |after: u64, ticks: &[(Component, u64)], children_ms: u64| Sample {
            at: start + Duration::from_secs(after),
            ticks: ticks.iter().copied().collect(),
            children: Duration::from_millis(children_ms),
            machine_ticks: 1000 + 150 * after,
        };
        let before = sample(
            0,
            &[(Component::Apiserver, 100), (Component::Bench, 7)],
            500,
        );
        let after = sample(
            2,
            &[(Component::Apiserver, 350), (Component::Bench, 7)],
            2000,
        );
        let cpu = used_between(&before, &after, 100.0, Some(Component::Helm));
        assert_eq!(cpu.wall_seconds, 2.0);
        assert_eq!(cpu.machine_cores, 1.5);
        assert_eq!(cpu.seconds_of(Component::Apiserver), Some(2.5));
        assert_eq!(cpu.seconds_of(Component::Bench), Some(0.0));
        assert_eq!(cpu.seconds_of(Component::Helm), Some(1.5));
        assert_eq!(
            used_between(&before, &after, 100.0, None).seconds_of(Component::Helm),
            None
        );
    }

    #[test]
    fn a_component_has_one_name_in_the_report_and_the_json() {
        for component in Component::ALL {
            assert_eq!(
                serde_json::to_value(component).expect("serializes"),
                component.as_str()
            );
        }
    }
}
