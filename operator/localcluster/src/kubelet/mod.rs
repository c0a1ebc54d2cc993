//! A simulated kubelet, like KWOK: it registers one Ready Node, binds Pending Pods to it,
//! reports them Running and Ready (or Succeeded for Pods of Jobs), and completes the graceful
//! deletion of Pods being deleted. No container runs: only the Pod API objects change, which
//! is what Deployments, ReplicaSets, Jobs and the Recreate strategy react to.
//!
//! Each Pod that serves HTTP (below) gets its own loopback address as Pod IP (127.1.0.1 and up,
//! from a random point per kubelet; never in 127.0/16, never one another Pod shows, free again
//! once the Pod is gone), where a running Pod answers HTTP for real (`http.rs`), so that
//! requests can flow to Pods on this machine; any other Pod gets an address of 10.1.0.1 and up
//! where nothing listens, as unreachable from here as a real Pod's:
//! - on every port an HTTP readiness, liveness or startup probe targets (by number or name) and
//!   every TCP container port named `http` or `http-*`;
//! - every request is answered `200` with `pod NAME (ns NAMESPACE)\n` and a [`POD_HEADER`]
//!   `namespace/name`, after the wait a [`DELAY_HEADER`] asks for (at most [`MAX_DELAY`]); but a
//!   readiness probe's path answers `503` while the Pod is meant to be unready (the annotations
//!   below);
//! - a Pod with an HTTP readiness probe is reported Ready only once the kubelet's GET of the
//!   probe's path answered 2xx or 3xx, as on a real node: at once when it is meant to be ready
//!   (`initialDelaySeconds` is not waited for), again after `periodSeconds` if it failed, each
//!   failure an `Unhealthy` Event in the kubelet's words. A port that cannot be bound (the
//!   address is taken, after a restart) refuses the probe (`connect: connection refused`) and
//!   is logged; a new Pod whose address is taken (another local cluster on this machine) moves
//!   to the next one. Pods without HTTP ports or without an HTTP readiness probe become Ready
//!   as before;
//! - listeners close when the Pod stops running (it finished, crash-loops, or its deletion
//!   completes); a new kubelet over an existing cluster listens again at the addresses its
//!   Pods show.
//!
//! kube-apiserver 1.20 refuses loopback addresses in Endpoints ("may not be in the loopback
//! range (127.0.0.0/8)": kube-controller-manager records `FailedToUpdateEndpoint` and retries),
//! but takes them in EndpointSlices (discovery.k8s.io/v1beta1), which get the Pods' addresses.
//! Only the Services of Pods that serve HTTP meet that refusal: the others' Pods have quiet
//! addresses, and their Endpoints are written as on a real cluster. A kubelet started with
//! [`SimKubelet::start_without_http`] (`appenv bench`) serves no HTTP: every Pod has a quiet
//! address, and every Service's Endpoints are written as on a real cluster.
//!
//! Pods (usually through their workload's pod template) steer it with annotations:
//! - [`FAIL_ANNOTATION`] `"true"`: a Pod of a Job fails (exit code 1); any other Pod
//!   crash-loops and never becomes Ready.
//! - [`UNREADY_ANNOTATION`] `"true"`: Running but never Ready.
//! - [`READY_AFTER_ANNOTATION`] milliseconds: Running and unready (a Job's Pod: still running)
//!   until that long after it started.
//! - [`TERMINATE_AFTER_ANNOTATION`] milliseconds: a graceful deletion takes that long.
//!
//! It fails Pods as a real kubelet (and scheduler) would, with their reasons, messages and
//! Events (see `pod_state.rs` for the texts), and retries as they do:
//! - a claim the Pod mounts is missing or not Bound: not bound to the node, `PodScheduled=False`
//!   (`Unschedulable`) with the scheduler's message and a `FailedScheduling` Event;
//! - a Secret or ConfigMap volume whose object is missing (not optional): Pending, containers
//!   waiting in `ContainerCreating` (all of them in `PodInitializing` in a Pod with init
//!   containers), a `FailedMount` Event;
//! - a container whose `env[].valueFrom` or `envFrom` names a missing Secret, ConfigMap or key
//!   (not optional): waiting in `CreateContainerConfigError` with the kubelet's message, a
//!   `Failed` Event; the other containers run, the Pod is not Ready;
//! - an image under the registry [`UNPULLABLE_REGISTRY`] (e.g. `unpullable.invalid/app:1`):
//!   `ErrImagePull` for [`PULL_BACKOFF`], then `ImagePullBackOff`, with the `Pulling`, `Failed`
//!   and `BackOff` Events (it stays in back-off: the simulated registry never has it);
//! - an `imagePullSecrets` entry that does not exist: a `FailedToRetrieveImagePullSecret`
//!   Event, and the Pod runs (the image may be public).
//!
//! Init containers run first, one after the other, each to completion (terminated `Completed`,
//! exit code 0, at once) before any container starts. The first one that cannot be created
//! (an unpullable image, a missing Secret, ConfigMap or key in its environment, as above, with
//! the same Events about `spec.initContainers{name}`) waits with that reason and holds the Pod:
//! Pending, `Initialized=False` (`ContainersNotInitialized`, "containers with incomplete
//! status: [name]"), the later init containers and every container waiting in
//! `PodInitializing` (kubectl shows `Init:ErrImagePull`, `Init:CreateContainerConfigError`...).
//! The annotations steer the containers only: init containers always succeed.
//!
//! Secrets (their keys only, never their values), ConfigMaps and claims are watched into
//! stores: a Pod waiting for one is looked at again when an object of its namespace changes,
//! so it starts (or is scheduled) once what it lacks appears. Looks at one Pod are taken one at
//! a time, each acted upon before the next, and every readiness probe ends with another look
//! (whether its result still counts or not), so the last look decides from the stores of now.
//!
//! It also provisions storage, as a cluster's default StorageClass would: the class
//! [`STORAGE_CLASS`] (default, provisioner [`PROVISIONER`]) gets a PersistentVolume for each of
//! its claims, which kube-controller-manager then binds; volumes released by deleted claims are
//! removed. Claims of other classes stay Pending, as they would without a provisioner.
//!
//! The state a Pod should be in is a pure function of the Pod, the objects it references and
//! the clock ([`target`], [`unschedulable`]); the watch loop only writes when the observed
//! state differs, so it is idempotent and a restart of the kubelet is harmless. Events are
//! written with each change of state; one recorded again increments its `count`.
//!
//! Unlike kube-controller-manager (see [`crate::ClientRate`]), it has no client-side rate limit:
//! a kube-rs client, unlike client-go's, sends every request at once (its default stack has no
//! QPS limit or token bucket), so what paces the kubelet is its own bound on writes in flight
//! (`MAX_CONCURRENT_WRITES`) and the API server.

pub(crate) mod events;
mod http;
mod pod_state;

pub use self::http::{
    DELAY_HEADER, HttpProbe, MAX_DELAY, POD_HEADER, http_ports, is_pod_address, readiness_probes,
};
pub use self::pod_state::{
    Found, PULL_BACKOFF, Referenced, SimEvent, SimState, Source, Wait, WaitReason, config_error,
    mount_failure, observed, status_patch, target, unpullable, unschedulable,
};
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
/// Images under this registry host cannot be pulled (see the module doc).
pub const UNPULLABLE_REGISTRY: &str = "unpullable.invalid";
const FIELD_MANAGER: &str = "appenv-sim-kubelet";
const NODE_IP: &str = "10.0.0.1";
/// Writes in flight at once: enough to keep up with hundreds of environments, few enough not
/// to flood a small API server.
const MAX_CONCURRENT_WRITES: usize = 32;
/// After a write or read failed for a reason other than a race (the API server away), look at
/// the Pod again this much later, for at most [`RETRY_FOR`].
const RETRY_AFTER: Duration = Duration::from_millis(500);
const RETRY_FOR: Duration = Duration::from_secs(180);

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn annotation_flag(pod: &Pod, key: &str) -> bool {
    annotation(pod, key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn millis(pod: &Pod, key: &str) -> Option<Duration> {
    annotation(pod, key)?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_millis)
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
    in_flight: InFlightWrites,
    /// The Pods' addresses and HTTP servers.
    servers: http::Servers,
    refs: Refs,
    /// Pods (namespace -> names) that wait for a Secret, ConfigMap or claim: looked at again
    /// when one of their namespace changes.
    blocked: Blocked,
    /// One decision about a Pod at a time.
    decisions: Decisions,
}

impl Shared {
    fn claim(&self, key: &str, state: Option<&SimState>) -> bool {
        self.in_flight.claim(key, state)
    }

    fn release(&self, key: &str) -> bool {
        self.in_flight.release(key)
    }

    fn block(&self, pod: &Pod) {
        self.blocked
            .block(&pod.namespace().unwrap_or_default(), &pod.name_any());
    }

    fn unblock(&self, pod: &Pod) {
        self.blocked
            .unblock(&pod.namespace().unwrap_or_default(), &pod.name_any());
    }

    fn take_blocked(&self, namespace: Option<&str>) -> Vec<(String, String)> {
        self.blocked.take(namespace)
    }
}

/// Decisions about a Pod are taken one at a time, each acted upon (its server stopped or probed,
/// its write claimed) before the next is taken. `handle` runs on every worker thread of the
/// runtime at once: without this, a decision taken from the stores just before a Secret arrived
/// could be acted upon after the decision that saw the Secret (the look the Secret's arrival
/// asks for), stopping the server that decision had started probing, or showing its state last.
/// Pods share [`DECISION_STRIPES`] locks by the hash of their name: a decision is short and
/// takes no other decision's lock.
struct Decisions([Mutex<()>; DECISION_STRIPES]);

const DECISION_STRIPES: usize = 64;

impl Decisions {
    fn new() -> Self {
        Self(std::array::from_fn(|_| Mutex::new(())))
    }

    /// Held while a decision about the Pod `ns/name` is taken and acted upon.
    fn lock(&self, ns: &str, name: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        (ns, name).hash(&mut hasher);
        let stripe = (hasher.finish() % DECISION_STRIPES as u64) as usize;
        // A decision that panicked left nothing half-done that the next one relies on.
        self.0[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The Pods that wait for a Secret, ConfigMap or claim: namespace -> names.
#[derive(Default)]
struct Blocked(Mutex<HashMap<String, HashSet<String>>>);

impl Blocked {
    /// Mark the Pod as waiting for an object (before its state is decided, so that an object
    /// arriving meanwhile finds it).
    fn block(&self, ns: &str, name: &str) {
        if let Ok(mut blocked) = self.0.lock() {
            blocked
                .entry(ns.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
    }

    fn unblock(&self, ns: &str, name: &str) {
        if let Ok(mut blocked) = self.0.lock()
            && let Some(names) = blocked.get_mut(ns)
        {
            names.remove(name);
            if names.is_empty() {
                blocked.remove(ns);
            }
        }
    }

    /// The Pods (namespace, name) of `namespace` (of every namespace: `None`) that wait for
    /// an object, no longer marked.
    fn take(&self, namespace: Option<&str>) -> Vec<(String, String)> {
        let Ok(mut blocked) = self.0.lock() else {
            return Vec::new();
        };
        let taken: Vec<(String, HashSet<String>)> = match namespace {
            Some(ns) => blocked.remove_entry(ns).into_iter().collect(),
            None => blocked.drain().collect(),
        };
        taken
            .into_iter()
            .flat_map(|(ns, names)| names.into_iter().map(move |name| (ns.clone(), name)))
            .collect()
    }
}

/// The writes in flight, by `uid/action` key.
#[derive(Default)]
struct InFlightWrites(Mutex<HashMap<String, InFlight>>);

impl InFlightWrites {
    /// Claim `key` for one write in flight (of `state`, for a status); `false` if it is
    /// already running. A different state decided meanwhile marks the running one stale.
    fn claim(&self, key: &str, state: Option<&SimState>) -> bool {
        let Ok(mut keys) = self.0.lock() else {
            return false;
        };
        match keys.get_mut(key) {
            Some(running) => {
                running.stale |= running.state.as_ref() != state;
                false
            }
            None => {
                let state = state.cloned();
                keys.insert(
                    key.to_owned(),
                    InFlight {
                        state,
                        stale: false,
                    },
                );
                true
            }
        }
    }

    /// Release `key`; `true` if another state was decided while it ran (look again).
    fn release(&self, key: &str) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|mut keys| keys.remove(key))
            .is_some_and(|running| running.stale)
    }
}

/// A write in flight: the status it writes (`None` for other writes), and whether another
/// was decided meanwhile.
struct InFlight {
    state: Option<SimState>,
    stale: bool,
}

/// The Secrets (keys only), ConfigMaps and claims Pods reference, as their watches keep them.
#[derive(Clone)]
struct Refs {
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    claims: Store<PersistentVolumeClaim>,
}

impl Referenced for Refs {
    fn lookup(&self, source: Source, namespace: &str, name: &str, key: Option<&str>) -> Found {
        fn has<'a>(mut keys: impl Iterator<Item = &'a String>, key: Option<&str>) -> bool {
            key.is_none_or(|key| keys.any(|k| k.as_str() == key))
        }
        let found = match source {
            Source::Secret => self
                .secrets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| has(s.data.iter().flat_map(|d| d.keys()), key)),
            Source::ConfigMap => self
                .config_maps
                .get(&ObjectRef::new(name).within(namespace))
                .map(|c| {
                    let binary = c.binary_data.iter().flat_map(|d| d.keys());
                    has(c.data.iter().flat_map(|d| d.keys()).chain(binary), key)
                }),
        };
        match found {
            None => Found::NoObject,
            Some(false) => Found::NoKey,
            Some(true) => Found::Yes,
        }
    }

    fn claim_bound(&self, namespace: &str, name: &str) -> Option<bool> {
        let claim = self.claims.get(&ObjectRef::new(name).within(namespace))?;
        Some(claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    }
}

/// Keep only what a lookup reads: a Secret's keys (never its values), a ConfigMap's keys.
fn strip_secret(secret: &mut Secret) {
    secret.metadata.managed_fields = None;
    secret.string_data = None;
    for value in secret.data.iter_mut().flat_map(|d| d.values_mut()) {
        value.0.clear();
    }
}

fn strip_config_map(config_map: &mut ConfigMap) {
    config_map.metadata.managed_fields = None;
    for value in config_map.data.iter_mut().flat_map(|d| d.values_mut()) {
        value.clear();
    }
    for value in config_map
        .binary_data
        .iter_mut()
        .flat_map(|d| d.values_mut())
    {
        value.0.clear();
    }
}

fn strip_claim(claim: &mut PersistentVolumeClaim) {
    claim.metadata.managed_fields = None;
}

/// Watch `K` into `writer`'s store; every change looks again at the Pods of its namespace that
/// wait. Started once `shared` exists: a task that found it missing would end, and with it the
/// store's updates (every Pod waiting for a Secret then waited for ever).
fn watch_referenced<K>(
    client: &Client,
    writer: reflector::store::Writer<K>,
    strip: fn(&mut K),
    shared: std::sync::Weak<Shared>,
) -> JoinHandle<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tokio::spawn(async move {
        let mut events = stream.boxed();
        while let Some(event) = events.next().await {
            let namespace = match event {
                Ok(Event::Apply(object) | Event::Delete(object)) => object.namespace(),
                // A relist (after the API server was away) replaced the store: any object may
                // have come or gone.
                Ok(Event::InitDone) => None,
                Ok(Event::Init | Event::InitApply(_)) => continue,
                Err(err) => {
                    tracing::warn!(kind = %K::kind(&()), error = %err, "simulated kubelet: watch");
                    continue;
                }
            };
            // Gone: the kubelet stopped.
            let Some(shared) = shared.upgrade() else {
                return;
            };
            for (ns, name) in shared.take_blocked(namespace.as_deref()) {
                recheck_after(&shared, &ns, &name, Duration::ZERO);
            }
        }
    })
}

impl SimKubelet {
    /// Register the node and start binding, reporting and deleting Pods.
    pub async fn start(client: Client) -> Result<Self, kube::Error> {
        Self::start_with(client, http::Servers::new()).await
    }

    /// [`SimKubelet::start`], but no Pod serves HTTP: every Pod gets a quiet address and is
    /// Ready as its annotations say, without a probe. For a benchmark: a Pod that serves HTTP
    /// has a loopback address, which Endpoints refuse, and kube-controller-manager fails and
    /// retries the Endpoints of every Service that selects one, with a Warning Event each
    /// time: a load on the API server that no real cluster has.
    pub async fn start_without_http(client: Client) -> Result<Self, kube::Error> {
        Self::start_with(client, http::Servers::new().without_http()).await
    }

    async fn start_with(client: Client, servers: http::Servers) -> Result<Self, kube::Error> {
        register_node(&client).await?;
        let (secrets, secrets_writer) = reflector::store();
        let (config_maps, config_maps_writer) = reflector::store();
        let (claims, claims_writer) = reflector::store();
        let shared = Arc::new(Shared {
            client: client.clone(),
            writes: Semaphore::new(MAX_CONCURRENT_WRITES),
            in_flight: InFlightWrites::default(),
            servers,
            refs: Refs {
                secrets,
                config_maps,
                claims,
            },
            blocked: Blocked::default(),
            decisions: Decisions::new(),
        });
        let weak = Arc::downgrade(&shared);
        let mut tasks = vec![
            watch_referenced(&client, secrets_writer, strip_secret, weak.clone()),
            watch_referenced(&client, config_maps_writer, strip_config_map, weak.clone()),
            watch_referenced(&client, claims_writer, strip_claim, weak),
        ];
        register_storage_class(&client).await?;
        tasks.extend(crate::snapshots::start(&client).await?);
        tasks.push(tokio::spawn(heartbeat(client.clone())));
        tasks.push(tokio::spawn(watch_pods(shared)));
        tasks.push(tokio::spawn(provision(client.clone())));
        tasks.push(tokio::spawn(reclaim(client)));
        Ok(Self { tasks })
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
            // Provisioned by `crate::snapshots` once its snapshot is ready to use.
            || crate::snapshots::restores_snapshot(&claim).is_some()
        {
            continue;
        }
        if let Err(err) = create_volume(&volumes, &claim).await {
            tracing::debug!(error = %err, claim = %claim.name_any(), "simulated provisioner");
        }
    }
}

/// Apply the simulated volume of a claim of the simulated class, bound to it.
pub(crate) async fn create_volume(
    volumes: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
) -> Result<(), kube::Error> {
    let spec = claim.spec.clone().unwrap_or_default();
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
    while_away(apply).await.map(|_| ())
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
    // Decide nothing before the referenced objects are known: a Secret not listed yet is not
    // a missing one.
    let refs = &shared.refs;
    let ready = futures::future::try_join3(
        refs.secrets.wait_until_ready(),
        refs.config_maps.wait_until_ready(),
        refs.claims.wait_until_ready(),
    )
    .await;
    if let Err(err) = ready {
        tracing::warn!(error = %err, "simulated kubelet: a store's watch ended");
        return;
    }
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let mut events = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    // A (re)list is handled once complete: the addresses its Pods show are reserved first, so
    // that no new Pod is given one of them.
    let mut listed = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(pod)) => handle(&shared, pod),
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                shared.servers.reserve(&pod);
                listed.push(pod);
            }
            Ok(Event::InitDone) => {
                let uids = listed.iter().filter_map(|p| p.uid()).collect();
                shared.servers.retain(&uids);
                for pod in listed.drain(..) {
                    handle(&shared, pod);
                }
            }
            Ok(Event::Delete(pod)) => shared.servers.forget(&pod.uid().unwrap_or_default()),
            Err(err) => tracing::warn!(error = %err, "simulated kubelet: pod watch"),
        }
    }
}

/// What a Pod needs next.
enum Action {
    Bind,
    Report(SimState),
    Delete,
}

impl Action {
    const fn name(&self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Report(_) => "status",
            Self::Delete => "delete",
        }
    }
}

/// Decide what the Pod needs and start that write, unless the same write is already running.
///
/// Every look at a Pod comes here: its watch events, a Secret, ConfigMap or claim of its
/// namespace that changed while it waited, a write decided while another ran, a delay it asked
/// for, and the end of each readiness probe. Each decides from the stores of now, so the last
/// one shows what they hold.
fn handle(shared: &Arc<Shared>, pod: Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let _deciding = shared.decisions.lock(&ns, &pod.name_any());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let action = match node.as_deref() {
        None if deleting => return shared.unblock(&pod),
        Some(NODE_NAME) if deleting => {
            shared.unblock(&pod);
            Action::Delete
        }
        None | Some(NODE_NAME) => {
            shared.block(&pod);
            let now = Timestamp::now();
            let (state, change_at) = if node.is_none() {
                match unschedulable(&pod, &shared.refs) {
                    Some(message) => (SimState::Unschedulable(message), None),
                    // Still marked: this look may be at a copy older than the bound Pod that a
                    // newer look found waiting for a Secret (a read answered late, under load);
                    // unmarked, the Secret's arrival would find no Pod to look at again, and
                    // the bind fails (already bound) with no event to follow. A mark left over
                    // costs one more look when an object of its namespace changes.
                    None => return start(shared, pod, Action::Bind),
                }
            } else {
                target(&pod, &shared.refs, now)
            };
            if !state.waits_on_objects() {
                shared.unblock(&pod);
            }
            if let Some(at) = change_at {
                schedule_recheck(shared, &pod, at);
            }
            // A running Pod serves HTTP; its readiness probe may be running.
            let Some(state) = http::gate(shared, &pod, state, change_at) else {
                return;
            };
            if observed(&pod).as_ref() == Some(&state) {
                return;
            }
            Action::Report(state)
        }
        _ => return,
    };
    start(shared, pod, action);
}

/// Start the write `action` for the Pod, unless the same write is already running.
fn start(shared: &Arc<Shared>, pod: Pod, action: Action) {
    let key = format!("{}/{}", pod.uid().unwrap_or_default(), action.name());
    let state = match &action {
        Action::Report(state) => Some(state),
        Action::Bind | Action::Delete => None,
    };
    // A status write of another state in flight (decided before an object appeared, or
    // before the Pod was bound) is marked stale: the Pod is looked at again once it is done.
    if !shared.claim(&key, state) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let name = action.name();
        let result = match action {
            Action::Bind => bind(&shared, &pod).await,
            Action::Delete => finish_deletion(&shared, &pod).await,
            Action::Report(state) => report(&shared, &pod, &state).await,
        };
        let stale = shared.release(&key);
        let ns = pod.namespace().unwrap_or_default();
        if stale {
            recheck_after(&shared, &ns, &pod.name_any(), Duration::ZERO);
        }
        match result {
            Ok(()) => {}
            // Conflicts and NotFound are normal races with controllers; the next event retries.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(pod = %pod.name_any(), action = name, error = %e, "simulated kubelet");
            }
            // The API server is away (restarting, unreachable) or refused for a while: no event
            // may follow (a resumed watch replays nothing), so look again by itself.
            Err(err) => {
                tracing::debug!(pod = %pod.name_any(), action = name, error = %err, "simulated kubelet: retrying");
                recheck_after(&shared, &ns, &pod.name_any(), RETRY_AFTER);
            }
        }
    });
}

/// Re-evaluate the Pod when a delay it asked for has passed (no event would arrive then).
fn schedule_recheck(shared: &Arc<Shared>, pod: &Pod, at: Timestamp) {
    let key = format!("{}/recheck", pod.uid().unwrap_or_default());
    if !shared.claim(&key, None) {
        return;
    }
    let wait = at.duration_since(Timestamp::now()).unsigned_abs();
    let shared = shared.clone();
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    tokio::spawn(async move {
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        shared.release(&key);
        recheck_after(&shared, &ns, &name, Duration::ZERO);
    });
}

/// Read the Pod again after `delay` and handle what it needs, retrying the read while the API
/// server does not answer (for at most [`RETRY_FOR`]).
fn recheck_after(shared: &Arc<Shared>, ns: &str, name: &str, delay: Duration) {
    let (shared, ns, name) = (shared.clone(), ns.to_owned(), name.to_owned());
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

/// Write the Events of the Pod's move to `state`, then the status that shows it.
async fn report(shared: &Shared, pod: &Pod, state: &SimState) -> Result<(), kube::Error> {
    let _permit = shared.writes.acquire().await;
    let shown = observed(pod);
    for event in pod_state::events(pod, shown.as_ref(), state, &shared.refs) {
        if let Err(err) = events::record(&shared.client, pod, &event).await {
            tracing::debug!(pod = %pod.name_any(), reason = event.reason, error = %err, "simulated kubelet: event");
        }
    }
    let ip = shared.servers.address(pod);
    let patch = status_patch(pod, state, &ip, Timestamp::now());
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
    // Its containers have stopped: nothing answers at its address any more.
    shared.servers.end(&pod.uid().unwrap_or_default());
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

    #[test]
    fn a_write_in_flight_is_not_repeated_and_another_state_decided_meanwhile_makes_it_stale() {
        let writes = InFlightWrites::default();
        let running = SimState::Running { ready: true };
        let creating = SimState::ContainerCreating;
        assert!(writes.claim("u/status", Some(&creating)));
        assert!(!writes.claim("u/status", Some(&creating)), "the same write");
        assert!(!writes.release("u/status"), "nothing else was decided");
        assert!(writes.claim("u/status", Some(&creating)));
        assert!(!writes.claim("u/status", Some(&running)));
        assert!(
            writes.release("u/status"),
            "Running was decided: look again"
        );
        assert!(writes.claim("u/bind", None));
        assert!(!writes.claim("u/bind", None));
        assert!(!writes.release("u/bind"));
    }

    /// A kubelet whose stores hold `claims` and no Secret, and whose client reaches nothing
    /// (its writes fail; what counts here is what a look leaves marked).
    fn kubelet_without_secrets(claims: &[PersistentVolumeClaim]) -> Arc<Shared> {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
        let client = Client::try_from(config).expect("a client");
        let (secrets, _) = reflector::store::<Secret>();
        let (config_maps, _) = reflector::store::<ConfigMap>();
        let (claim_store, mut writer) = reflector::store::<PersistentVolumeClaim>();
        for claim in claims {
            writer.apply_watcher_event(&Event::Apply(claim.clone()));
        }
        Arc::new(Shared {
            client,
            writes: Semaphore::new(MAX_CONCURRENT_WRITES),
            in_flight: InFlightWrites::default(),
            servers: http::Servers::starting_at(0),
            refs: Refs {
                secrets,
                config_maps,
                claims: claim_store,
            },
            blocked: Blocked::default(),
            decisions: Decisions::new(),
        })
    }

    #[tokio::test]
    async fn a_late_look_at_the_pod_before_it_was_bound_leaves_it_waiting_for_its_secret() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data-db-0", "namespace": "ns"},
            "status": {"phase": "Bound"},
        }))
        .expect("a claim");
        let shared = kubelet_without_secrets(&[claim]);
        let pod = |node: Option<&str>| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "db-0", "namespace": "ns", "uid": "u-db"},
                "spec": {"nodeName": node, "containers": [{"name": "postgres", "image": "postgres:16",
                    "env": [{"name": "PGPASSWORD", "valueFrom": {"secretKeyRef":
                        {"name": "db-credentials", "key": "password"}}}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}]},
            }))
            .expect("a Pod")
        };
        // The bound Pod waits for its Secret: marked, so that the Secret's arrival looks again.
        handle(&shared, pod(Some(NODE_NAME)));
        // Then a read made before the bind is answered: the Pod as it was, unbound. It is
        // bound again (the write fails: already bound), and must stay marked.
        handle(&shared, pod(None));
        assert_eq!(
            shared.take_blocked(Some("ns")),
            [("ns".to_owned(), "db-0".to_owned())],
            "the Pod still waits for its Secret"
        );
    }

    #[test]
    fn waiting_pods_are_taken_by_namespace_or_all_at_once_after_a_relist() {
        let blocked = Blocked::default();
        blocked.block("a", "p1");
        blocked.block("a", "p2");
        blocked.block("b", "p3");
        blocked.unblock("a", "p2");
        assert_eq!(blocked.take(Some("a")), [("a".to_owned(), "p1".to_owned())]);
        assert!(blocked.take(Some("a")).is_empty(), "taken once");
        blocked.block("c", "p4");
        let mut all = blocked.take(None);
        all.sort();
        assert_eq!(
            all,
            [
                ("b".to_owned(), "p3".to_owned()),
                ("c".to_owned(), "p4".to_owned())
            ]
        );
        assert!(blocked.take(None).is_empty());
    }
}
