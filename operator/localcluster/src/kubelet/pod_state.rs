//! The state a Pod should show, as pure functions of the Pod, the objects it references (seen
//! through [`Referenced`]) and the clock; the status body that shows it; and the Events a real
//! kubelet (or scheduler) writes on the way there. The messages are the real components' texts.

use super::{
    FAIL_ANNOTATION, NODE_IP, READY_AFTER_ANNOTATION, UNPULLABLE_REGISTRY, UNREADY_ANNOTATION,
    annotation_flag, millis,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use serde_json::{Value, json};
use std::time::Duration;

/// How long an unpullable image shows `ErrImagePull` before `ImagePullBackOff` (a real kubelet
/// backs off 10 s after the first failure; shorter here, so tests see both quickly).
pub const PULL_BACKOFF: Duration = Duration::from_secs(3);

/// What the simulated kubelet reports for a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimState {
    Running {
        ready: bool,
    },
    CrashLoop,
    Succeeded,
    Failed,
    /// Not bound to the node: `PodScheduled=False`, reason `Unschedulable`, the scheduler's
    /// message.
    Unschedulable(String),
    /// A volume cannot be mounted: Pending, every container waits in `ContainerCreating` (every
    /// init container and container in `PodInitializing`, if the Pod has init containers; the
    /// reason is in a `FailedMount` Event, not in the Pod).
    ContainerCreating,
    /// Some containers cannot be created (in spec order); the others run.
    Waiting(Vec<Wait>),
    /// An init container cannot be created (those before it completed): Pending,
    /// `Initialized=False`, the later init containers and every container waiting in
    /// `PodInitializing`.
    Initializing(Wait),
}

impl SimState {
    /// Whether the Pod waits for an object to appear or change (a Secret, a ConfigMap, a
    /// claim), so that a change of those objects should re-evaluate it.
    pub fn waits_on_objects(&self) -> bool {
        match self {
            Self::Unschedulable(_) | Self::ContainerCreating => true,
            Self::Waiting(waits) => waits
                .iter()
                .any(|w| w.reason == WaitReason::CreateContainerConfigError),
            Self::Initializing(wait) => wait.reason == WaitReason::CreateContainerConfigError,
            _ => false,
        }
    }
}

/// A container that cannot be created, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub container: String,
    pub reason: WaitReason,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    CreateContainerConfigError,
    ErrImagePull,
    ImagePullBackOff,
}

impl WaitReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::CreateContainerConfigError,
            Self::ErrImagePull,
            Self::ImagePullBackOff,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// A Secret or a ConfigMap, as Pods reference them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Secret,
    ConfigMap,
}

impl Source {
    /// The resource's name in the API's NotFound errors (`secret "x" not found`).
    const fn resource(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::ConfigMap => "configmap",
        }
    }

    const fn kind(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
        }
    }
}

/// Whether a referenced object (and key) exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Yes,
    NoObject,
    NoKey,
}

/// What the kubelet and the scheduler can see of the objects Pods reference.
pub trait Referenced {
    /// Whether the Secret or ConfigMap `name` in `namespace` exists and, given a key, has it.
    fn lookup(&self, source: Source, namespace: &str, name: &str, key: Option<&str>) -> Found;
    /// `None` if the claim does not exist, else whether it is Bound.
    fn claim_bound(&self, namespace: &str, name: &str) -> Option<bool>;
}

fn runs_to_completion(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_some_and(|p| p == "Never" || p == "OnFailure")
}

/// When the Pod was reported started, if it was.
pub fn started_at(pod: &Pod) -> Option<Timestamp> {
    pod.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

/// Why the scheduler cannot place the Pod, if it cannot: a claim it mounts is missing or not
/// bound (every claim counts as `Immediate` binding, like the simulated StorageClass).
pub fn unschedulable(pod: &Pod, refs: &impl Referenced) -> Option<String> {
    let ns = pod.namespace().unwrap_or_default();
    let volumes = pod.spec.as_ref()?.volumes.as_deref().unwrap_or_default();
    let mut unbound = false;
    for claim in volumes
        .iter()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
    {
        match refs.claim_bound(&ns, &claim.claim_name) {
            None => {
                return Some(format!(
                    "0/1 nodes are available: 1 persistentvolumeclaim \"{}\" not found.",
                    claim.claim_name
                ));
            }
            Some(false) => unbound = true,
            Some(true) => {}
        }
    }
    unbound.then(|| {
        "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims.".to_owned()
    })
}

/// Why a volume cannot be mounted, if one cannot: a Secret or ConfigMap volume whose object is
/// missing (and not optional), in the kubelet's `FailedMount` text.
pub fn mount_failure(pod: &Pod, refs: &impl Referenced) -> Option<String> {
    let ns = pod.namespace().unwrap_or_default();
    let volumes = pod.spec.as_ref()?.volumes.as_deref().unwrap_or_default();
    volumes.iter().find_map(|volume| {
        let (source, name) = if let Some(s) = volume.secret.as_ref() {
            if s.optional == Some(true) {
                return None;
            }
            (Source::Secret, s.secret_name.clone().unwrap_or_default())
        } else if let Some(c) = volume.config_map.as_ref() {
            if c.optional == Some(true) {
                return None;
            }
            (Source::ConfigMap, c.name.clone())
        } else {
            return None;
        };
        (refs.lookup(source, &ns, &name, None) == Found::NoObject).then(|| {
            format!(
                "MountVolume.SetUp failed for volume \"{}\" : {} \"{name}\" not found",
                volume.name,
                source.resource()
            )
        })
    })
}

/// The imagePullSecrets that do not exist (the Pod still runs: the image may be public).
pub fn missing_pull_secrets(pod: &Pod, refs: &impl Referenced) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .filter(|name| refs.lookup(Source::Secret, &ns, name, None) == Found::NoObject)
        .collect()
}

/// Why the container's environment cannot be built, in the kubelet's text: `envFrom` first,
/// then `env`, the first missing object or key that is not optional.
pub fn config_error(pod: &Pod, container: &Container, refs: &impl Referenced) -> Option<String> {
    let ns = pod.namespace().unwrap_or_default();
    let check =
        |source: Source, name: &str, key: Option<&str>| match refs.lookup(source, &ns, name, key) {
            Found::Yes => None,
            Found::NoObject => Some(format!("{} \"{name}\" not found", source.resource())),
            Found::NoKey => Some(format!(
                "couldn't find key {} in {} {ns}/{name}",
                key.unwrap_or_default(),
                source.kind()
            )),
        };
    let from = container.env_from.iter().flatten().find_map(|from| {
        if let Some(s) = from
            .secret_ref
            .as_ref()
            .filter(|s| s.optional != Some(true))
        {
            return check(Source::Secret, &s.name, None);
        }
        if let Some(c) = from
            .config_map_ref
            .as_ref()
            .filter(|c| c.optional != Some(true))
        {
            return check(Source::ConfigMap, &c.name, None);
        }
        None
    });
    from.or_else(|| {
        container.env.iter().flatten().find_map(|var| {
            let from = var.value_from.as_ref()?;
            if let Some(s) = from
                .secret_key_ref
                .as_ref()
                .filter(|s| s.optional != Some(true))
            {
                return check(Source::Secret, &s.name, Some(&s.key));
            }
            if let Some(c) = from
                .config_map_key_ref
                .as_ref()
                .filter(|c| c.optional != Some(true))
            {
                return check(Source::ConfigMap, &c.name, Some(&c.key));
            }
            None
        })
    })
}

/// Whether the image is one the simulated registry refuses: under [`UNPULLABLE_REGISTRY`].
pub fn unpullable(image: &str) -> bool {
    image
        .strip_prefix(UNPULLABLE_REGISTRY)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The runtime's answer to a pull of an image that does not exist (containerd's text).
pub fn pull_error(image: &str) -> String {
    format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": \
         failed to resolve reference \"{image}\": {image}: not found"
    )
}

fn back_off_message(image: &str) -> String {
    format!("Back-off pulling image \"{image}\"")
}

/// Why the container cannot be created at `now`, if it cannot, and when that changes by itself:
/// its image cannot be pulled (the pull comes first, as on a kubelet), or its environment
/// cannot be built.
fn cannot_create(
    pod: &Pod,
    container: &Container,
    refs: &impl Referenced,
    now: Timestamp,
) -> Option<(Wait, Option<Timestamp>)> {
    let image = container.image.as_deref().unwrap_or_default();
    let mut change_at = None;
    let (reason, message) = if unpullable(image) {
        let backed_off_at = started_at(pod).unwrap_or(now) + PULL_BACKOFF;
        if now < backed_off_at {
            change_at = Some(backed_off_at);
            (WaitReason::ErrImagePull, pull_error(image))
        } else {
            (WaitReason::ImagePullBackOff, back_off_message(image))
        }
    } else {
        let message = config_error(pod, container, refs)?;
        (WaitReason::CreateContainerConfigError, message)
    };
    let wait = Wait {
        container: container.name.clone(),
        reason,
        message,
    };
    Some((wait, change_at))
}

/// The state a bound Pod should be in at `now`, and when that will change by itself.
///
/// The init containers run first, one after the other, each to completion (exit code 0): the
/// first that cannot be created holds the Pod in [`SimState::Initializing`]. The steering
/// annotations apply to the containers only.
pub fn target(pod: &Pod, refs: &impl Referenced, now: Timestamp) -> (SimState, Option<Timestamp>) {
    if mount_failure(pod, refs).is_some() {
        return (SimState::ContainerCreating, None);
    }
    if let Some((wait, change_at)) = init_containers(pod)
        .iter()
        .find_map(|c| cannot_create(pod, c, refs, now))
    {
        return (SimState::Initializing(wait), change_at);
    }
    let started = started_at(pod).unwrap_or(now);
    let mut change_at = None;
    let waits: Vec<Wait> = containers(pod)
        .iter()
        .filter_map(|c| {
            let (wait, change) = cannot_create(pod, c, refs, now)?;
            change_at = change_at.or(change);
            Some(wait)
        })
        .collect();
    if !waits.is_empty() {
        return (SimState::Waiting(waits), change_at);
    }
    if let Some(delay) = millis(pod, READY_AFTER_ANNOTATION) {
        let due = started + delay;
        if due > now {
            let waiting = SimState::Running {
                ready: runs_to_completion(pod),
            };
            return (waiting, Some(due));
        }
    }
    let fail = annotation_flag(pod, FAIL_ANNOTATION);
    let state = match (runs_to_completion(pod), fail) {
        (true, true) => SimState::Failed,
        (true, false) => SimState::Succeeded,
        (false, true) => SimState::CrashLoop,
        (false, false) => SimState::Running {
            ready: !annotation_flag(pod, UNREADY_ANNOTATION),
        },
    };
    (state, None)
}

fn waiting_reason(
    c: &k8s_openapi::api::core::v1::ContainerStatus,
) -> Option<&k8s_openapi::api::core::v1::ContainerStateWaiting> {
    c.state.as_ref()?.waiting.as_ref()
}

/// The wait a container status shows, if it waits for one of the [`WaitReason`]s.
fn shown_wait(c: &k8s_openapi::api::core::v1::ContainerStatus) -> Option<Wait> {
    let waiting = waiting_reason(c)?;
    Some(Wait {
        container: c.name.clone(),
        reason: WaitReason::parse(waiting.reason.as_deref()?)?,
        message: waiting.message.clone().unwrap_or_default(),
    })
}

/// The state the Pod's status shows now, if the simulated kubelet (or scheduler) reported one.
pub fn observed(pod: &Pod) -> Option<SimState> {
    let status = pod.status.as_ref()?;
    let conditions = status.conditions.iter().flatten();
    if let Some(c) = conditions
        .clone()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some(SimState::Unschedulable(
            c.message.clone().unwrap_or_default(),
        ));
    }
    let ready = conditions
        .clone()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    let init_statuses = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let crash_looping = statuses
        .iter()
        .filter_map(waiting_reason)
        .any(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
    let waits: Vec<Wait> = statuses.iter().filter_map(shown_wait).collect();
    let init_wait = init_statuses.iter().find_map(shown_wait);
    let waits_in = |c: &k8s_openapi::api::core::v1::ContainerStatus, reasons: &[&str]| {
        waiting_reason(c)
            .and_then(|w| w.reason.as_deref())
            .is_some_and(|r| reasons.contains(&r))
    };
    // Before the volumes are mounted, a Pod with init containers shows every container in
    // `PodInitializing`, one without in `ContainerCreating`.
    let creating = !statuses.is_empty()
        && statuses
            .iter()
            .all(|c| waits_in(c, &["ContainerCreating", "PodInitializing"]))
        && init_statuses
            .iter()
            .all(|c| waits_in(c, &["PodInitializing"]));
    match status.phase.as_deref()? {
        "Succeeded" => Some(SimState::Succeeded),
        "Failed" => Some(SimState::Failed),
        "Pending" if init_wait.is_some() => init_wait.map(SimState::Initializing),
        "Running" if crash_looping => Some(SimState::CrashLoop),
        "Running" | "Pending" if !waits.is_empty() => Some(SimState::Waiting(waits)),
        "Pending" if creating => Some(SimState::ContainerCreating),
        "Running" => Some(SimState::Running { ready }),
        _ => None,
    }
}

/// The status subresource body that reports `state` for `pod`.
pub fn status_patch(pod: &Pod, state: &SimState, pod_ip: &str, now: Timestamp) -> Value {
    let now_text = now.to_string();
    let condition = |type_: &str, ok: bool, reason: Option<&str>, message: Option<&str>| {
        let mut c = json!({"type": type_, "status": if ok { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": now_text});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        if let Some(message) = message {
            c["message"] = json!(message);
        }
        c
    };
    if let SimState::Unschedulable(message) = state {
        return json!({"status": {
            "phase": "Pending",
            "conditions": [condition("PodScheduled", false, Some("Unschedulable"), Some(message))],
        }});
    }
    let start = started_at(pod).unwrap_or(now).to_string();
    let terminated = |code: i32, reason: &str| json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": start, "finishedAt": now_text}});
    let waiting =
        |w: &Wait| json!({"waiting": {"reason": w.reason.as_str(), "message": w.message}});
    let init = init_containers(pod);
    // A container not created yet waits in `PodInitializing` in a Pod with init containers
    // (until they have run, or its volumes are mounted), in `ContainerCreating` in another.
    let not_created = json!({"waiting": {"reason": if init.is_empty() { "ContainerCreating" } else { "PodInitializing" }}});
    let wait_of = |name: &str| match state {
        SimState::Waiting(waits) => waits.iter().find(|w| w.container == name),
        _ => None,
    };
    let containers: Vec<Value> = containers(pod)
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let wait = wait_of(&c.name);
            let (container_state, running) = match (state, wait) {
                (_, Some(w)) => (waiting(w), false),
                (SimState::ContainerCreating | SimState::Initializing(_), None) => {
                    (not_created.clone(), false)
                }
                (SimState::Running { .. } | SimState::Waiting(_), None) => {
                    (json!({"running": {"startedAt": start}}), true)
                }
                (SimState::CrashLoop, None) => (
                    json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": "back-off restarting failed container (simulated)"}}),
                    false,
                ),
                (SimState::Succeeded, None) => (terminated(0, "Completed"), false),
                (SimState::Failed, None) => (terminated(1, "Error"), false),
                (SimState::Unschedulable(_), None) => (json!({}), false),
            };
            let ready = match state {
                SimState::Running { ready } => *ready,
                SimState::Waiting(_) => running,
                _ => false,
            };
            let created = running
                || matches!(
                    state,
                    SimState::CrashLoop | SimState::Succeeded | SimState::Failed
                );
            let mut status = json!({
                "name": c.name,
                "image": image,
                "imageID": if created { format!("sim://{image}") } else { String::new() },
                "ready": ready,
                "started": running,
                "restartCount": if *state == SimState::CrashLoop { 5 } else { 0 },
                "state": container_state,
            });
            if created {
                status["containerID"] = json!(format!(
                    "sim://{}/{}",
                    pod.uid().unwrap_or_default(),
                    c.name
                ));
            }
            if *state == SimState::CrashLoop {
                status["lastState"] = terminated(1, "Error");
            }
            status
        })
        .collect();
    // The init containers before `blocked` ran to completion (at once, when the Pod started);
    // `blocked` waits (its reason, or for the volumes), the later ones were not created.
    let blocked = match state {
        SimState::ContainerCreating => Some(0),
        SimState::Initializing(w) => {
            Some(init.iter().position(|c| c.name == w.container).unwrap_or(0))
        }
        _ => None,
    };
    let init_containers: Vec<Value> = init
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let image = c.image.clone().unwrap_or_default();
            let completed = blocked.is_none_or(|at| i < at);
            let container_state = match state {
                _ if completed => json!({"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": start, "finishedAt": start}}),
                SimState::Initializing(w) if w.container == c.name => waiting(w),
                _ => json!({"waiting": {"reason": "PodInitializing"}}),
            };
            let mut status = json!({"name": c.name, "image": image,
                "imageID": if completed { format!("sim://{image}") } else { String::new() },
                "ready": completed, "restartCount": 0, "state": container_state});
            if completed {
                status["containerID"] = json!(format!(
                    "sim://{}/{}",
                    pod.uid().unwrap_or_default(),
                    c.name
                ));
            }
            status
        })
        .collect();
    let incomplete: Vec<&str> = init
        .iter()
        .zip(&init_containers)
        .filter(|(_, s)| s["ready"] != json!(true))
        .map(|(c, _)| c.name.as_str())
        .collect();
    let incomplete_message = format!(
        "containers with incomplete status: [{}]",
        incomplete.join(" ")
    );
    let initialized = if init.is_empty() {
        condition(
            "Initialized",
            *state != SimState::ContainerCreating,
            None,
            None,
        )
    } else if incomplete.is_empty() {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(&incomplete_message),
        )
    };
    let unready: Vec<&str> = containers
        .iter()
        .filter(|c| c["ready"] != json!(true))
        .filter_map(|c| c["name"].as_str())
        .collect();
    let unready_message = format!("containers with unready status: [{}]", unready.join(" "));
    let (phase, ready_reason) = match state {
        SimState::Running { ready: true } => ("Running", None),
        SimState::Running { ready: false } | SimState::CrashLoop => {
            ("Running", Some("ContainersNotReady"))
        }
        SimState::Waiting(waits) if waits.len() < containers.len() => {
            ("Running", Some("ContainersNotReady"))
        }
        SimState::Waiting(_)
        | SimState::Initializing(_)
        | SimState::ContainerCreating
        | SimState::Unschedulable(_) => ("Pending", Some("ContainersNotReady")),
        SimState::Succeeded => ("Succeeded", Some("PodCompleted")),
        SimState::Failed => ("Failed", Some("PodFailed")),
    };
    let ready = ready_reason.is_none();
    let not_ready_message =
        (ready_reason == Some("ContainersNotReady")).then_some(unready_message.as_str());
    let mut status = json!({
        "phase": phase,
        "hostIP": NODE_IP,
        "startTime": start,
        "conditions": [
            condition("PodScheduled", true, None, None),
            initialized,
            condition("ContainersReady", ready, ready_reason, not_ready_message),
            condition("Ready", ready, ready_reason, not_ready_message),
        ],
        "containerStatuses": containers,
        "initContainerStatuses": init_containers,
    });
    // The sandbox (and its IP) comes after the volumes are mounted.
    if *state != SimState::ContainerCreating {
        status["podIP"] = json!(pod_ip);
        status["podIPs"] = json!([{ "ip": pod_ip }]);
    }
    json!({ "status": status })
}

/// Who writes an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Kubelet,
    Scheduler,
}

impl Reporter {
    pub const fn component(self) -> &'static str {
        match self {
            Self::Kubelet => "kubelet",
            Self::Scheduler => "default-scheduler",
        }
    }
}

/// An Event about a Pod, as the kubelet or the scheduler writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub reporter: Reporter,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    /// `spec.containers{name}` for an Event about one container.
    pub field_path: Option<String>,
}

fn kubelet_event(
    warning: bool,
    reason: &'static str,
    message: String,
    field_path: Option<&str>,
) -> SimEvent {
    SimEvent {
        reporter: Reporter::Kubelet,
        warning,
        reason,
        message,
        field_path: field_path.map(str::to_owned),
    }
}

/// The Events of a container (an init container: `init`) starting to wait for `wait`, about
/// `spec.containers{name}` (`spec.initContainers{name}`).
fn wait_events(pod: &Pod, wait: &Wait, init: bool) -> Vec<SimEvent> {
    let (specs, field) = if init {
        (init_containers(pod), "initContainers")
    } else {
        (containers(pod), "containers")
    };
    let field_path = format!("spec.{field}{{{}}}", wait.container);
    let container = Some(field_path.as_str());
    let image = specs
        .iter()
        .find(|c| c.name == wait.container)
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    match wait.reason {
        WaitReason::CreateContainerConfigError => vec![kubelet_event(
            true,
            "Failed",
            format!("Error: {}", wait.message),
            container,
        )],
        WaitReason::ErrImagePull => vec![
            kubelet_event(
                false,
                "Pulling",
                format!("Pulling image \"{image}\""),
                container,
            ),
            kubelet_event(
                true,
                "Failed",
                format!("Failed to pull image \"{image}\": {}", wait.message),
                container,
            ),
            kubelet_event(true, "Failed", "Error: ErrImagePull".to_owned(), container),
        ],
        WaitReason::ImagePullBackOff => vec![
            kubelet_event(false, "BackOff", back_off_message(&image), container),
            kubelet_event(
                true,
                "Failed",
                "Error: ImagePullBackOff".to_owned(),
                container,
            ),
        ],
    }
}

/// The Events of the Pod's move from what it shows (`shown`) to `state`: what the real
/// kubelet (or scheduler) records on the way. A wait already shown records nothing again.
pub fn events(
    pod: &Pod,
    shown: Option<&SimState>,
    state: &SimState,
    refs: &impl Referenced,
) -> Vec<SimEvent> {
    let mut out = Vec::new();
    if let SimState::Unschedulable(message) = state {
        if shown != Some(state) {
            out.push(SimEvent {
                reporter: Reporter::Scheduler,
                warning: true,
                reason: "FailedScheduling",
                message: message.clone(),
                field_path: None,
            });
        }
        return out;
    }
    let starting = matches!(shown, None | Some(SimState::Unschedulable(_)));
    if starting {
        let missing = missing_pull_secrets(pod, refs);
        if !missing.is_empty() {
            out.push(kubelet_event(
                true,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
                None,
            ));
        }
    }
    match state {
        SimState::ContainerCreating if shown != Some(state) => {
            if let Some(message) = mount_failure(pod, refs) {
                out.push(kubelet_event(true, "FailedMount", message, None));
            }
        }
        SimState::Waiting(waits) => {
            let shown_waits = match shown {
                Some(SimState::Waiting(w)) => w.as_slice(),
                _ => &[],
            };
            for wait in waits.iter().filter(|w| !shown_waits.contains(w)) {
                out.extend(wait_events(pod, wait, false));
            }
        }
        SimState::Initializing(wait) if shown != Some(state) => {
            out.extend(wait_events(pod, wait, true));
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests;
