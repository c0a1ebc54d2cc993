//! A simulated kubelet, like KWOK: it registers one Ready Node, binds Pending Pods to it,
//! reports them Running and Ready (or Succeeded for Pods of Jobs), and completes the graceful
//! deletion of Pods being deleted. No container runs: only the Pod API objects change, which
//! is what Deployments, ReplicaSets, Jobs and the Recreate strategy react to.
//!
//! Pods (usually through their workload's pod template) steer it with annotations:
//! - [`FAIL_ANNOTATION`] `"true"`: a Pod of a Job fails (exit code 1); any other Pod
//!   crash-loops and never becomes Ready.
//! - [`UNREADY_ANNOTATION`] `"true"`: Running but never Ready.
//! - [`READY_AFTER_ANNOTATION`] milliseconds: Running and unready (a Job's Pod: still running)
//!   until that long after it started.
//! - [`TERMINATE_AFTER_ANNOTATION`] milliseconds: a graceful deletion takes that long.
//!
//! It also provisions storage, as a cluster's default StorageClass would: the class
//! [`STORAGE_CLASS`] (default, provisioner [`PROVISIONER`]) gets a PersistentVolume for each of
//! its claims, which kube-controller-manager then binds; volumes released by deleted claims are
//! removed. Claims of other classes stay Pending, as they would without a provisioner.
//!
//! The state a Pod should be in is a pure function of the Pod and the clock ([`target`]); the
//! watch loop only writes when the observed state differs, so it is idempotent and a restart
//! of the kubelet is harmless.
//!
//! Unlike kube-controller-manager (see [`crate::ClientRate`]), it has no client-side rate limit:
//! a kube-rs client, unlike client-go's, sends every request at once (its default stack has no
//! QPS limit or token bucket), so what paces the kubelet is its own bound on writes in flight
//! (`MAX_CONCURRENT_WRITES`) and the API server.

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub const NODE_NAME: &str = "appenv-sim-node";
/// The simulated default StorageClass and its provisioner.
pub const STORAGE_CLASS: &str = "standard";
pub const PROVISIONER: &str = "appenv.dev/simulated";
pub const FAIL_ANNOTATION: &str = "sim.appenv.dev/fail";
pub const UNREADY_ANNOTATION: &str = "sim.appenv.dev/unready";
pub const READY_AFTER_ANNOTATION: &str = "sim.appenv.dev/ready-after-ms";
pub const TERMINATE_AFTER_ANNOTATION: &str = "sim.appenv.dev/terminate-after-ms";
const FIELD_MANAGER: &str = "appenv-sim-kubelet";
const NODE_IP: &str = "10.0.0.1";
/// Writes in flight at once: enough to keep up with hundreds of environments, few enough not
/// to flood a small API server.
const MAX_CONCURRENT_WRITES: usize = 32;
/// After a write or read failed for a reason other than a race (the API server away), look at
/// the Pod again this much later, for at most [`RETRY_FOR`].
const RETRY_AFTER: Duration = Duration::from_millis(500);
const RETRY_FOR: Duration = Duration::from_secs(180);

/// What the simulated kubelet reports for a Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimState {
    Running { ready: bool },
    CrashLoop,
    Succeeded,
    Failed,
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn flag(pod: &Pod, key: &str) -> bool {
    annotation(pod, key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn millis(pod: &Pod, key: &str) -> Option<Duration> {
    annotation(pod, key)?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_millis)
}

fn runs_to_completion(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_some_and(|p| p == "Never" || p == "OnFailure")
}

/// When the Pod was reported started, if it was.
fn started_at(pod: &Pod) -> Option<Timestamp> {
    pod.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

/// The state the Pod should be in at `now`, and when that will change by itself (a delay).
pub fn target(pod: &Pod, now: Timestamp) -> (SimState, Option<Timestamp>) {
    let started = started_at(pod).unwrap_or(now);
    if let Some(delay) = millis(pod, READY_AFTER_ANNOTATION) {
        let due = started + delay;
        if due > now {
            let waiting = SimState::Running {
                ready: runs_to_completion(pod),
            };
            return (waiting, Some(due));
        }
    }
    let fail = flag(pod, FAIL_ANNOTATION);
    let state = match (runs_to_completion(pod), fail) {
        (true, true) => SimState::Failed,
        (true, false) => SimState::Succeeded,
        (false, true) => SimState::CrashLoop,
        (false, false) => SimState::Running {
            ready: !flag(pod, UNREADY_ANNOTATION),
        },
    };
    (state, None)
}

/// The state the Pod's status shows now, if the simulated kubelet has reported it.
pub fn observed(pod: &Pod) -> Option<SimState> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let crash_looping = status.container_statuses.iter().flatten().any(|c| {
        c.state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
    });
    match status.phase.as_deref()? {
        "Succeeded" => Some(SimState::Succeeded),
        "Failed" => Some(SimState::Failed),
        "Running" if crash_looping => Some(SimState::CrashLoop),
        "Running" => Some(SimState::Running { ready }),
        _ => None,
    }
}

/// The status subresource body that reports `state` for `pod`.
pub fn status_patch(pod: &Pod, state: SimState, pod_ip: &str, now: Timestamp) -> Value {
    let start = started_at(pod).unwrap_or(now).to_string();
    let now = now.to_string();
    let spec = pod.spec.as_ref();
    let ready = matches!(state, SimState::Running { ready: true });
    let terminated = |code: i32, reason: &str| json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": start, "finishedAt": now}});
    let container_state = match state {
        SimState::Running { .. } => json!({"running": {"startedAt": start}}),
        SimState::CrashLoop => json!({"waiting": {"reason": "CrashLoopBackOff",
            "message": "back-off restarting failed container (simulated)"}}),
        SimState::Succeeded => terminated(0, "Completed"),
        SimState::Failed => terminated(1, "Error"),
    };
    let containers: Vec<Value> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let mut status = json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
                "containerID": format!("sim://{}/{}", pod.uid().unwrap_or_default(), c.name),
                "ready": ready,
                "started": matches!(state, SimState::Running { .. }),
                "restartCount": if state == SimState::CrashLoop { 5 } else { 0 },
                "state": container_state,
            });
            if state == SimState::CrashLoop {
                status["lastState"] = terminated(1, "Error");
            }
            status
        })
        .collect();
    let init_containers: Vec<Value> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
                "imageID": "", "ready": true, "restartCount": 0,
                "state": terminated(0, "Completed")})
        })
        .collect();
    let (phase, ready_reason) = match state {
        SimState::Running { ready: true } => ("Running", None),
        SimState::Running { ready: false } | SimState::CrashLoop => {
            ("Running", Some("ContainersNotReady"))
        }
        SimState::Succeeded => ("Succeeded", Some("PodCompleted")),
        SimState::Failed => ("Failed", Some("PodFailed")),
    };
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let mut c = json!({"type": type_, "status": if ok { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        c
    };
    json!({"status": {
        "phase": phase,
        "hostIP": NODE_IP,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start,
        "conditions": [
            condition("PodScheduled", true, None),
            condition("Initialized", true, None),
            condition("ContainersReady", ready, ready_reason),
            condition("Ready", ready, ready_reason),
        ],
        "containerStatuses": containers,
        "initContainerStatuses": init_containers,
    }})
}

/// A running simulated kubelet; stops (its tasks are aborted) on drop.
#[derive(Debug)]
pub struct SimKubelet {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimKubelet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Shared {
    client: Client,
    writes: Semaphore,
    /// `uid/action` keys of writes in flight, so a burst of events does not repeat them.
    in_flight: Mutex<HashSet<String>>,
    next_ip: AtomicU32,
}

impl Shared {
    /// Claim `key` for one write in flight; `false` if it is already running.
    fn claim(&self, key: &str) -> bool {
        self.in_flight
            .lock()
            .map(|mut keys| keys.insert(key.to_owned()))
            .unwrap_or(false)
    }

    fn release(&self, key: &str) {
        if let Ok(mut keys) = self.in_flight.lock() {
            keys.remove(key);
        }
    }
}

impl SimKubelet {
    /// Register the node and start binding, reporting and deleting Pods.
    pub async fn start(client: Client) -> Result<Self, kube::Error> {
        register_node(&client).await?;
        let shared = Arc::new(Shared {
            client: client.clone(),
            writes: Semaphore::new(MAX_CONCURRENT_WRITES),
            in_flight: Mutex::new(HashSet::new()),
            next_ip: AtomicU32::new(0),
        });
        register_storage_class(&client).await?;
        let heartbeat = tokio::spawn(heartbeat(client.clone()));
        let pods = tokio::spawn(watch_pods(shared));
        let claims = tokio::spawn(provision(client.clone()));
        let released = tokio::spawn(reclaim(client));
        Ok(Self {
            tasks: vec![heartbeat, pods, claims, released],
        })
    }
}

async fn register_storage_class(client: &Client) -> Result<(), kube::Error> {
    let class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    });
    Api::<StorageClass>::all(client.clone())
        .patch(
            STORAGE_CLASS,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&class),
        )
        .await?;
    Ok(())
}

/// A PersistentVolume for every Pending claim of the simulated class.
async fn provision(client: Client) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut events = watcher::watcher(claims, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let claim = match event {
            Ok(Event::Apply(claim) | Event::InitApply(claim)) => claim,
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "simulated provisioner: claim watch");
                continue;
            }
        };
        let Some(spec) = claim.spec.as_ref() else {
            continue;
        };
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound");
        if !pending
            || spec.volume_name.is_some()
            || spec.storage_class_name.as_deref() != Some(STORAGE_CLASS)
        {
            continue;
        }
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".to_owned());
        let name = format!("pv-{}", claim.uid().unwrap_or_default());
        let volume = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.clone().unwrap_or_default(),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "hostPath": {"path": format!("/var/lib/appenv-sim/{name}")},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": claim.namespace(), "name": claim.name_any(), "uid": claim.uid()},
            },
        });
        let apply = || async {
            volumes
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&volume),
                )
                .await
        };
        if let Err(err) = while_away(apply).await {
            tracing::debug!(error = %err, claim = %claim.name_any(), "simulated provisioner");
        }
    }
}

/// The API server did not answer, or answered that it cannot serve now.
fn away(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        _ => true,
    }
}

/// Run `request` again while it fails without an answer from the API server (restarting,
/// unreachable), for at most [`RETRY_FOR`]: the watch that asked for it may not ask again.
async fn while_away<T, F, Fut>(mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    loop {
        match request().await {
            Err(err) if away(&err) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %err, "simulated kubelet: API server away, retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
            result => return result,
        }
    }
}

/// Delete the simulated volumes whose claims were deleted.
async fn reclaim(client: Client) {
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut events = watcher::watcher(volumes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(Event::Apply(volume) | Event::InitApply(volume)) = event else {
            continue;
        };
        let ours = volume
            .annotations()
            .get("pv.kubernetes.io/provisioned-by")
            .is_some_and(|p| p == PROVISIONER);
        let released = volume
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Released" || p == "Failed");
        if ours && released {
            let name = volume.name_any();
            let _ = while_away(|| async { volumes.delete(&name, &DeleteParams::default()).await })
                .await;
        }
    }
}

async fn register_node(client: &Client) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "type": "appenv-simulated"}},
    });
    nodes.patch(NODE_NAME, &pp, &Patch::Apply(&node)).await?;
    report_node_status(&nodes).await
}

async fn report_node_status(nodes: &Api<Node>) -> Result<(), kube::Error> {
    let now = Timestamp::now().to_string();
    let ready = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
            "message": "simulated by appenv: no container runs here"})
    };
    let capacity =
        json!({"cpu": "64", "memory": "256Gi", "pods": "5000", "ephemeral-storage": "1Ti"});
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": NODE_IP},
                      {"type": "Hostname", "address": NODE_NAME}],
        "conditions": [
            ready("Ready", "True", "KubeletReady"),
            ready("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ready("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ready("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "nodeInfo": {"kubeletVersion": "v1.20.2-appenv-sim", "kubeProxyVersion": "v1.20.2-appenv-sim",
            "operatingSystem": "linux", "architecture": "amd64", "containerRuntimeVersion": "sim://0",
            "kernelVersion": "", "osImage": "appenv simulated node", "machineID": "", "systemUUID": "",
            "bootID": ""},
    }});
    nodes
        .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Keep the node alive for the node-lifecycle controller: renew its Lease every 10 s and its
/// Ready condition every 40 s, as a kubelet does.
async fn heartbeat(client: Client) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut beats: u64 = 0;
    loop {
        tick.tick().await;
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NODE_NAME, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": NODE_NAME, "leaseDurationSeconds": 40,
                     "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now())},
        });
        if let Err(err) = leases.patch(NODE_NAME, &pp, &Patch::Apply(&lease)).await {
            tracing::warn!(error = %err, "simulated kubelet: renewing the node lease");
        }
        if beats % 4 == 3
            && let Err(err) = report_node_status(&nodes).await
        {
            tracing::warn!(error = %err, "simulated kubelet: reporting node status");
        }
        beats += 1;
    }
}

async fn watch_pods(shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let mut events = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => handle(&shared, pod),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "simulated kubelet: pod watch"),
        }
    }
}

/// Decide what the Pod needs and start that write, unless the same write is already running.
fn handle(shared: &Arc<Shared>, pod: Pod) {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let action = match node.as_deref() {
        None if pod.metadata.deletion_timestamp.is_none() => "bind",
        Some(NODE_NAME) if pod.metadata.deletion_timestamp.is_some() => "delete",
        Some(NODE_NAME) => {
            let (state, change_at) = target(&pod, Timestamp::now());
            if let Some(at) = change_at {
                schedule_recheck(shared, &pod, at);
            }
            if observed(&pod) == Some(state) {
                return;
            }
            "status"
        }
        _ => return,
    };
    let key = format!("{}/{action}", pod.uid().unwrap_or_default());
    if !shared.claim(&key) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = match action {
            "bind" => bind(&shared, &pod).await,
            "delete" => finish_deletion(&shared, &pod).await,
            _ => report(&shared, &pod).await,
        };
        shared.release(&key);
        match result {
            Ok(()) => {}
            // Conflicts and NotFound are normal races with controllers; the next event retries.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(pod = %pod.name_any(), action, error = %e, "simulated kubelet");
            }
            // The API server is away (restarting, unreachable) or refused for a while: no event
            // may follow (a resumed watch replays nothing), so look again by itself.
            Err(err) => {
                tracing::debug!(pod = %pod.name_any(), action, error = %err, "simulated kubelet: retrying");
                recheck_after(&shared, &pod, RETRY_AFTER);
            }
        }
    });
}

/// Re-evaluate the Pod when a delay it asked for has passed (no event would arrive then).
fn schedule_recheck(shared: &Arc<Shared>, pod: &Pod, at: Timestamp) {
    let key = format!("{}/recheck", pod.uid().unwrap_or_default());
    if !shared.claim(&key) {
        return;
    }
    let wait = at.duration_since(Timestamp::now()).unsigned_abs();
    let shared = shared.clone();
    let pod = pod.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        shared.release(&key);
        recheck_after(&shared, &pod, Duration::ZERO);
    });
}

/// Read the Pod again after `delay` and handle what it needs, retrying the read while the API
/// server does not answer (for at most [`RETRY_FOR`]).
fn recheck_after(shared: &Arc<Shared>, pod: &Pod, delay: Duration) {
    let (shared, ns, name) = (
        shared.clone(),
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
    );
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
        let deadline = tokio::time::Instant::now() + delay + RETRY_FOR;
        tokio::time::sleep(delay).await;
        loop {
            match pods.get_opt(&name).await {
                Ok(Some(pod)) => return handle(&shared, pod),
                Ok(None) => return,
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(pod = %name, error = %err, "simulated kubelet: gave up on a pod");
                    return;
                }
                Err(_) => tokio::time::sleep(RETRY_AFTER).await,
            }
        }
    });
}

async fn bind(shared: &Shared, pod: &Pod) -> Result<(), kube::Error> {
    let _permit = shared.writes.acquire().await;
    let pods: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod.name_any(), "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
    });
    let _: Value = pods
        .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
        .await?;
    Ok(())
}

async fn report(shared: &Shared, pod: &Pod) -> Result<(), kube::Error> {
    let _permit = shared.writes.acquire().await;
    let existing_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let ip = existing_ip.unwrap_or_else(|| {
        let n = shared.next_ip.fetch_add(1, Ordering::Relaxed);
        format!("10.244.{}.{}", (n / 250) % 256, n % 250 + 2)
    });
    let now = Timestamp::now();
    let (state, _) = target(pod, now);
    let patch = status_patch(pod, state, &ip, now);
    let pods: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn finish_deletion(shared: &Shared, pod: &Pod) -> Result<(), kube::Error> {
    if let Some(delay) = millis(pod, TERMINATE_AFTER_ANNOTATION) {
        tokio::time::sleep(delay).await;
    }
    let _permit = shared.writes.acquire().await;
    let pods: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use std::collections::BTreeMap;

    fn pod(restart: &str, annotations: &[(&str, &str)]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        );
        pod.spec = Some(PodSpec {
            restart_policy: Some(restart.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("example:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        pod
    }

    fn with_status(mut pod: Pod, state: SimState, now: Timestamp) -> Pod {
        let patch = status_patch(&pod, state, "10.244.0.2", now);
        pod.status = Some(serde_json::from_value(patch["status"].clone()).expect("valid status"));
        pod
    }

    #[test]
    fn targets_follow_restart_policy_and_annotations() {
        let now = Timestamp::now();
        assert_eq!(
            target(&pod("Always", &[]), now).0,
            SimState::Running { ready: true }
        );
        assert_eq!(target(&pod("Never", &[]), now).0, SimState::Succeeded);
        assert_eq!(target(&pod("OnFailure", &[]), now).0, SimState::Succeeded);
        assert_eq!(
            target(&pod("Never", &[(FAIL_ANNOTATION, "true")]), now).0,
            SimState::Failed
        );
        assert_eq!(
            target(&pod("Always", &[(FAIL_ANNOTATION, "true")]), now).0,
            SimState::CrashLoop
        );
        assert_eq!(
            target(&pod("Always", &[(UNREADY_ANNOTATION, "true")]), now).0,
            SimState::Running { ready: false }
        );
    }

    #[test]
    fn ready_after_delays_readiness_from_start_time() {
        let now = Timestamp::now();
        let fresh = pod("Always", &[(READY_AFTER_ANNOTATION, "500")]);
        let (state, due) = target(&fresh, now);
        assert_eq!(state, SimState::Running { ready: false });
        assert_eq!(due, Some(now + Duration::from_millis(500)));
        let started = with_status(fresh, state, now);
        let later = now + Duration::from_millis(600);
        assert_eq!(
            target(&started, later),
            (SimState::Running { ready: true }, None)
        );
    }

    #[test]
    fn observed_reads_back_every_reported_state() {
        let now = Timestamp::now();
        for (restart, state) in [
            ("Always", SimState::Running { ready: true }),
            ("Always", SimState::Running { ready: false }),
            ("Always", SimState::CrashLoop),
            ("Never", SimState::Succeeded),
            ("Never", SimState::Failed),
        ] {
            let reported = with_status(pod(restart, &[]), state, now);
            assert_eq!(observed(&reported), Some(state), "{state:?}");
        }
        assert_eq!(observed(&pod("Always", &[])), None);
    }
}
