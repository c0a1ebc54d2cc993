use super::*;
use crate::kubelet::{FAIL_ANNOTATION, READY_AFTER_ANNOTATION, UNREADY_ANNOTATION};
use std::collections::{BTreeMap, BTreeSet};

/// The objects a test cluster has.
#[derive(Default)]
struct Objects {
    /// (kind, name) -> keys
    sources: BTreeMap<(&'static str, String), BTreeSet<String>>,
    /// name -> bound
    claims: BTreeMap<String, bool>,
}

impl Objects {
    fn secret(mut self, name: &str, keys: &[&str]) -> Self {
        let keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self.sources.insert(("Secret", name.to_owned()), keys);
        self
    }

    fn config_map(mut self, name: &str, keys: &[&str]) -> Self {
        let keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self.sources.insert(("ConfigMap", name.to_owned()), keys);
        self
    }

    fn claim(mut self, name: &str, bound: bool) -> Self {
        self.claims.insert(name.to_owned(), bound);
        self
    }
}

impl Referenced for Objects {
    fn lookup(&self, source: Source, namespace: &str, name: &str, key: Option<&str>) -> Found {
        assert_eq!(namespace, "shop", "looked up in the Pod's namespace");
        match self.sources.get(&(source.kind(), name.to_owned())) {
            None => Found::NoObject,
            Some(keys) if key.is_some_and(|k| !keys.contains(k)) => Found::NoKey,
            Some(_) => Found::Yes,
        }
    }

    fn claim_bound(&self, namespace: &str, name: &str) -> Option<bool> {
        assert_eq!(namespace, "shop");
        self.claims.get(name).copied()
    }
}

fn none() -> Objects {
    Objects::default()
}

fn pod_from(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1"},
        "spec": spec,
    }))
    .expect("a valid Pod")
}

fn pod(restart: &str, annotations: &[(&str, &str)]) -> Pod {
    let mut pod = pod_from(json!({
        "restartPolicy": restart,
        "containers": [{"name": "app", "image": "example:1"}],
    }));
    pod.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    pod
}

fn with_status(mut pod: Pod, state: &SimState, now: Timestamp) -> Pod {
    let patch = status_patch(&pod, state, "10.244.0.2", now);
    pod.status = Some(serde_json::from_value(patch["status"].clone()).expect("valid status"));
    pod
}

fn wait(container: &str, reason: WaitReason, message: &str) -> Wait {
    Wait {
        container: container.into(),
        reason,
        message: message.into(),
    }
}

#[test]
fn targets_follow_restart_policy_and_annotations() {
    let now = Timestamp::now();
    let state = |pod: Pod| target(&pod, &none(), now).0;
    assert_eq!(state(pod("Always", &[])), SimState::Running { ready: true });
    assert_eq!(state(pod("Never", &[])), SimState::Succeeded);
    assert_eq!(state(pod("OnFailure", &[])), SimState::Succeeded);
    assert_eq!(
        state(pod("Never", &[(FAIL_ANNOTATION, "true")])),
        SimState::Failed
    );
    assert_eq!(
        state(pod("Always", &[(FAIL_ANNOTATION, "true")])),
        SimState::CrashLoop
    );
    assert_eq!(
        state(pod("Always", &[(UNREADY_ANNOTATION, "true")])),
        SimState::Running { ready: false }
    );
}

#[test]
fn ready_after_delays_readiness_from_start_time() {
    let now = Timestamp::now();
    let fresh = pod("Always", &[(READY_AFTER_ANNOTATION, "500")]);
    let (state, due) = target(&fresh, &none(), now);
    assert_eq!(state, SimState::Running { ready: false });
    assert_eq!(due, Some(now + Duration::from_millis(500)));
    let started = with_status(fresh, &state, now);
    let later = now + Duration::from_millis(600);
    assert_eq!(
        target(&started, &none(), later),
        (SimState::Running { ready: true }, None)
    );
}

#[test]
fn observed_reads_back_every_reported_state() {
    let now = Timestamp::now();
    let config = wait(
        "app",
        WaitReason::CreateContainerConfigError,
        "secret \"s\" not found",
    );
    for (restart, state) in [
        ("Always", SimState::Running { ready: true }),
        ("Always", SimState::Running { ready: false }),
        ("Always", SimState::CrashLoop),
        ("Never", SimState::Succeeded),
        ("Never", SimState::Failed),
        ("Always", SimState::Unschedulable("0/1 nodes".into())),
        ("Always", SimState::ContainerCreating),
        ("Always", SimState::Waiting(vec![config.clone()])),
        ("Never", SimState::Waiting(vec![config.clone()])),
    ] {
        let reported = with_status(pod(restart, &[]), &state, now);
        assert_eq!(observed(&reported), Some(state.clone()), "{state:?}");
    }
    assert_eq!(observed(&pod("Always", &[])), None);
}

fn env_pod(container: Value) -> Pod {
    pod_from(json!({"containers": [container]}))
}

#[test]
fn a_missing_secret_or_configmap_in_env_from_is_a_config_error_with_the_kubelets_text() {
    let now = Timestamp::now();
    let pod = env_pod(json!({"name": "app", "image": "shop:1", "envFrom": [
        {"configMapRef": {"name": "settings"}},
        {"secretRef": {"name": "doppler-secrets"}},
    ]}));
    let waits = |objects: &Objects| target(&pod, objects, now).0;
    assert_eq!(
        waits(&none()),
        SimState::Waiting(vec![wait(
            "app",
            WaitReason::CreateContainerConfigError,
            "configmap \"settings\" not found"
        )])
    );
    assert_eq!(
        waits(&none().config_map("settings", &[])),
        SimState::Waiting(vec![wait(
            "app",
            WaitReason::CreateContainerConfigError,
            "secret \"doppler-secrets\" not found"
        )])
    );
    let all = none()
        .config_map("settings", &[])
        .secret("doppler-secrets", &[]);
    assert_eq!(waits(&all), SimState::Running { ready: true });
    assert!(waits(&none()).waits_on_objects());
}

#[test]
fn a_missing_key_names_the_key_and_the_object_and_optional_references_never_block() {
    let pod = env_pod(json!({"name": "app", "image": "shop:1", "env": [
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}}},
        {"name": "MONGODB_URI", "valueFrom": {"secretKeyRef": {"name": "db", "key": "MONGODB_URI"}}},
    ], "envFrom": [{"secretRef": {"name": "gone-too", "optional": true}}]}));
    let objects = none().config_map("settings", &["OTHER"]).secret("db", &[]);
    let container = &pod.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        config_error(&pod, container, &objects).as_deref(),
        Some("couldn't find key MODE in ConfigMap shop/settings")
    );
    let objects = none().config_map("settings", &["MODE"]).secret("db", &[]);
    assert_eq!(
        config_error(&pod, container, &objects).as_deref(),
        Some("couldn't find key MONGODB_URI in Secret shop/db")
    );
    let objects = none()
        .config_map("settings", &["MODE"])
        .secret("db", &["MONGODB_URI"]);
    assert_eq!(config_error(&pod, container, &objects), None);
}

#[test]
fn only_the_container_missing_its_config_waits_and_the_pod_is_not_ready() {
    let now = Timestamp::now();
    let pod = pod_from(json!({"containers": [
        {"name": "app", "image": "shop:1", "envFrom": [{"secretRef": {"name": "s"}}]},
        {"name": "sidecar", "image": "proxy:1"},
    ]}));
    let (state, _) = target(&pod, &none(), now);
    let reported = with_status(pod, &state, now);
    let status = reported.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"), "the sidecar runs");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [app]")
    );
    let containers = status.container_statuses.as_deref().expect("containers");
    let waiting = containers[0]
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref());
    assert_eq!(
        waiting.and_then(|w| w.message.as_deref()),
        Some("secret \"s\" not found")
    );
    assert!(containers[1].ready);
}

#[test]
fn a_missing_volume_source_keeps_the_pod_creating_with_a_failed_mount_event() {
    let now = Timestamp::now();
    let pod = pod_from(json!({
        "containers": [{"name": "app", "image": "shop:1"}],
        "volumes": [
            {"name": "opt", "secret": {"secretName": "maybe", "optional": true}},
            {"name": "config", "configMap": {"name": "nginx"}},
            {"name": "certs", "secret": {"secretName": "tls"}},
        ],
    }));
    assert_eq!(
        mount_failure(&pod, &none()).as_deref(),
        Some("MountVolume.SetUp failed for volume \"config\" : configmap \"nginx\" not found")
    );
    let objects = none().config_map("nginx", &[]);
    assert_eq!(
        mount_failure(&pod, &objects).as_deref(),
        Some("MountVolume.SetUp failed for volume \"certs\" : secret \"tls\" not found")
    );
    let (state, _) = target(&pod, &objects, now);
    assert_eq!(state, SimState::ContainerCreating);
    let events = events(&pod, None, &state, &objects);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "FailedMount");
    assert!(events[0].warning);
    assert_eq!(events[0].field_path, None);
    let reported = with_status(pod.clone(), &state, now);
    let status = reported.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.pod_ip, None, "no sandbox before the volumes mount");
    // Shown already: nothing new to record.
    assert!(super::events(&reported, Some(&state), &state, &objects).is_empty());
    let all = objects.secret("tls", &[]);
    assert_eq!(target(&pod, &all, now).0, SimState::Running { ready: true });
}

#[test]
fn a_missing_or_unbound_claim_is_unschedulable_with_the_schedulers_message() {
    let pod = pod_from(json!({
        "containers": [{"name": "app", "image": "shop:1"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-shop"}}],
    }));
    assert_eq!(
        unschedulable(&pod, &none()).as_deref(),
        Some("0/1 nodes are available: 1 persistentvolumeclaim \"data-shop\" not found.")
    );
    let pending = none().claim("data-shop", false);
    let message = unschedulable(&pod, &pending).expect("unbound");
    assert_eq!(
        message,
        "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims."
    );
    assert_eq!(unschedulable(&pod, &none().claim("data-shop", true)), None);
    let state = SimState::Unschedulable(message.clone());
    let patch = status_patch(&pod, &state, "", Timestamp::now());
    assert_eq!(
        patch["status"]["conditions"],
        json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null,
            "lastTransitionTime": patch["status"]["conditions"][0]["lastTransitionTime"]}])
    );
    assert!(patch["status"].get("startTime").is_none(), "not started");
    let events = events(&pod, None, &state, &pending);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reporter, Reporter::Scheduler);
    assert_eq!(events[0].reason, "FailedScheduling");
}

#[test]
fn an_unpullable_image_fails_to_pull_then_backs_off() {
    let now = Timestamp::now();
    let image = "unpullable.invalid/shop:1";
    let pod = env_pod(json!({"name": "app", "image": image}));
    assert!(unpullable(image) && unpullable(UNPULLABLE_REGISTRY));
    assert!(!unpullable("unpullable.invalid.example.com/shop:1"));
    let (first, change) = target(&pod, &none(), now);
    assert_eq!(
        first,
        SimState::Waiting(vec![wait(
            "app",
            WaitReason::ErrImagePull,
            &pull_error(image)
        )])
    );
    assert_eq!(change, Some(now + PULL_BACKOFF));
    let reasons = |events: Vec<SimEvent>| -> Vec<(bool, &str, String)> {
        events
            .into_iter()
            .map(|e| (e.warning, e.reason, e.message))
            .collect()
    };
    assert_eq!(
        reasons(events(&pod, None, &first, &none())),
        [
            (false, "Pulling", format!("Pulling image \"{image}\"")),
            (
                true,
                "Failed",
                format!("Failed to pull image \"{image}\": {}", pull_error(image))
            ),
            (true, "Failed", "Error: ErrImagePull".to_owned()),
        ]
    );
    let pulled = with_status(pod, &first, now);
    let later = now + PULL_BACKOFF;
    let (second, change) = target(&pulled, &none(), later);
    let back_off = format!("Back-off pulling image \"{image}\"");
    assert_eq!(
        second,
        SimState::Waiting(vec![wait("app", WaitReason::ImagePullBackOff, &back_off)])
    );
    assert_eq!(change, None, "it stays in back-off");
    assert!(!second.waits_on_objects(), "no object can fix an image");
    let shown = observed(&pulled);
    let events = events(&pulled, shown.as_ref(), &second, &none());
    assert_eq!(
        reasons(events.clone()),
        [
            (false, "BackOff", back_off),
            (true, "Failed", "Error: ImagePullBackOff".to_owned()),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.field_path.as_deref() == Some("spec.containers{app}"))
    );
}

#[test]
fn a_missing_pull_secret_is_an_event_and_the_pod_still_runs() {
    let now = Timestamp::now();
    let pod = pod_from(json!({
        "containers": [{"name": "app", "image": "shop:1"}],
        "imagePullSecrets": [{"name": "regcred"}, {"name": "present"}, {"name": "other"}],
    }));
    let objects = none().secret("present", &[]);
    let (state, _) = target(&pod, &objects, now);
    assert_eq!(state, SimState::Running { ready: true });
    let events = events(&pod, None, &state, &objects);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "FailedToRetrieveImagePullSecret");
    assert_eq!(
        events[0].message,
        "Unable to retrieve some image pull secrets (regcred, other); attempting to pull the image may not succeed."
    );
    let running = with_status(pod, &state, now);
    assert!(
        super::events(&running, Some(&state), &state, &objects).is_empty(),
        "once, when the Pod starts"
    );
}

/// A backup Job's Pod: the init container `agent` copies a binary for `backup`.
fn init_pod(agent_image: &str, agent_extra: Value, annotations: &[(&str, &str)]) -> Pod {
    let mut agent = json!({"name": "agent", "image": agent_image});
    if let (Some(a), Some(extra)) = (agent.as_object_mut(), agent_extra.as_object()) {
        a.extend(extra.clone());
    }
    let mut pod = pod_from(json!({
        "restartPolicy": "Never",
        "initContainers": [agent],
        "containers": [{"name": "backup", "image": "postgres:16"}],
    }));
    pod.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    pod
}

fn condition_of(pod: &Pod, type_: &str) -> (String, Option<String>, Option<String>) {
    let c = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .expect("the condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// A container status's state: ("waiting" | "running" | "terminated", reason, message).
fn state_of(status: &k8s_openapi::api::core::v1::ContainerStatus) -> (&str, String, String) {
    let state = status.state.as_ref().expect("state");
    let text = |s: Option<&String>| s.cloned().unwrap_or_default();
    if let Some(w) = &state.waiting {
        ("waiting", text(w.reason.as_ref()), text(w.message.as_ref()))
    } else if let Some(t) = &state.terminated {
        let reason = text(t.reason.as_ref());
        ("terminated", reason, t.exit_code.to_string())
    } else if state.running.is_some() {
        ("running", String::new(), String::new())
    } else {
        ("", String::new(), String::new())
    }
}

fn init_statuses(pod: &Pod) -> &[k8s_openapi::api::core::v1::ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_deref())
        .expect("init container statuses")
}

fn container_statuses(pod: &Pod) -> &[k8s_openapi::api::core::v1::ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .expect("container statuses")
}

#[test]
fn init_containers_complete_first_and_the_annotations_steer_the_containers_only() {
    let now = Timestamp::now();
    let state = |pod: &Pod| target(pod, &none(), now).0;
    let succeeds = init_pod("agent:1", json!({}), &[]);
    assert_eq!(state(&succeeds), SimState::Succeeded);
    let fails = init_pod("agent:1", json!({}), &[(FAIL_ANNOTATION, "true")]);
    assert_eq!(state(&fails), SimState::Failed);

    let failed = with_status(fails, &SimState::Failed, now);
    let agent = &init_statuses(&failed)[0];
    assert_eq!(
        state_of(agent),
        ("terminated", "Completed".into(), "0".into()),
        "the init container succeeded"
    );
    assert!(agent.ready, "an init container that completed is ready");
    assert_eq!(agent.started, None, "no `started` for init containers");
    assert!(agent.container_id.is_some());
    assert_eq!(
        state_of(&container_statuses(&failed)[0]),
        ("terminated", "Error".into(), "1".into())
    );
    assert_eq!(
        condition_of(&failed, "Initialized"),
        ("True".into(), None, None)
    );

    let mut running = init_pod("agent:1", json!({}), &[]);
    if let Some(spec) = running.spec.as_mut() {
        spec.restart_policy = Some("Always".into());
    }
    let state = target(&running, &none(), now).0;
    assert_eq!(state, SimState::Running { ready: true });
    let running = with_status(running, &state, now);
    assert_eq!(
        state_of(&init_statuses(&running)[0]).0,
        "terminated",
        "init containers stay terminated once the containers run"
    );
    assert_eq!(condition_of(&running, "Ready").0, "True");
}

#[test]
fn an_unpullable_init_image_holds_the_pod_initializing_then_backs_off() {
    let now = Timestamp::now();
    let image = "unpullable.invalid/appenv:1";
    let mut pod = init_pod(image, json!({}), &[]);
    // The container's image is never pulled: its init container has not run.
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers[0].image = Some("unpullable.invalid/postgres:16".into());
    }
    let (first, change) = target(&pod, &none(), now);
    assert_eq!(
        first,
        SimState::Initializing(wait("agent", WaitReason::ErrImagePull, &pull_error(image)))
    );
    assert_eq!(change, Some(now + PULL_BACKOFF));
    assert!(!first.waits_on_objects(), "no object can fix an image");

    let pulled = with_status(pod, &first, now);
    let status = pulled.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(
        status.pod_ip.as_deref(),
        Some("10.244.0.2"),
        "the sandbox runs"
    );
    let agent = &init_statuses(&pulled)[0];
    assert_eq!(
        state_of(agent),
        ("waiting", "ErrImagePull".into(), pull_error(image))
    );
    assert!(!agent.ready);
    assert_eq!(agent.image_id, "");
    assert_eq!(agent.container_id, None);
    let backup = &container_statuses(&pulled)[0];
    assert_eq!(
        state_of(backup),
        ("waiting", "PodInitializing".into(), String::new())
    );
    assert!(!backup.ready);
    assert_eq!(backup.started, Some(false));
    assert_eq!(
        condition_of(&pulled, "Initialized"),
        (
            "False".into(),
            Some("ContainersNotInitialized".into()),
            Some("containers with incomplete status: [agent]".into())
        )
    );
    let not_ready = (
        "False".into(),
        Some("ContainersNotReady".into()),
        Some("containers with unready status: [backup]".into()),
    );
    assert_eq!(condition_of(&pulled, "Ready"), not_ready);
    assert_eq!(condition_of(&pulled, "ContainersReady"), not_ready);
    assert_eq!(observed(&pulled), Some(first.clone()));

    let field_paths = |events: &[SimEvent]| {
        events
            .iter()
            .all(|e| e.field_path.as_deref() == Some("spec.initContainers{agent}"))
    };
    let pulling = events(&pulled, None, &first, &none());
    let reasons: Vec<_> = pulling
        .iter()
        .map(|e| (e.reason, e.message.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("Pulling", format!("Pulling image \"{image}\"")),
            (
                "Failed",
                format!("Failed to pull image \"{image}\": {}", pull_error(image))
            ),
            ("Failed", "Error: ErrImagePull".to_owned()),
        ]
    );
    assert!(field_paths(&pulling), "{pulling:?}");
    assert!(
        events(&pulled, Some(&first), &first, &none()).is_empty(),
        "shown already"
    );

    let later = now + PULL_BACKOFF;
    let (second, change) = target(&pulled, &none(), later);
    let back_off = format!("Back-off pulling image \"{image}\"");
    assert_eq!(
        second,
        SimState::Initializing(wait("agent", WaitReason::ImagePullBackOff, &back_off))
    );
    assert_eq!(change, None, "it stays in back-off");
    let backing_off = events(&pulled, observed(&pulled).as_ref(), &second, &none());
    let reasons: Vec<_> = backing_off
        .iter()
        .map(|e| (e.warning, e.reason, e.message.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (false, "BackOff", back_off.clone()),
            (true, "Failed", "Error: ImagePullBackOff".to_owned()),
        ]
    );
    assert!(field_paths(&backing_off));
    let backed_off = with_status(pulled, &second, later);
    assert_eq!(
        state_of(&init_statuses(&backed_off)[0]),
        ("waiting", "ImagePullBackOff".into(), back_off)
    );
    assert_eq!(observed(&backed_off), Some(second));
}

#[test]
fn a_config_error_of_an_init_container_holds_the_pod_until_the_secret_exists() {
    let now = Timestamp::now();
    let pod = init_pod(
        "agent:1",
        json!({"env": [{"name": "TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "agent", "key": "token"}}}]}),
        &[],
    );
    let message = "couldn't find key token in Secret shop/agent";
    let (state, change) = target(&pod, &none().secret("agent", &[]), now);
    assert_eq!(
        state,
        SimState::Initializing(wait(
            "agent",
            WaitReason::CreateContainerConfigError,
            message
        ))
    );
    assert_eq!(change, None);
    assert!(state.waits_on_objects(), "the Secret may get its key");
    let events = events(&pod, None, &state, &none());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "Failed");
    assert_eq!(events[0].message, format!("Error: {message}"));
    assert_eq!(
        events[0].field_path.as_deref(),
        Some("spec.initContainers{agent}")
    );
    let reported = with_status(pod.clone(), &state, now);
    assert_eq!(
        reported.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(
        state_of(&init_statuses(&reported)[0]),
        (
            "waiting",
            "CreateContainerConfigError".into(),
            message.into()
        )
    );
    assert_eq!(
        state_of(&container_statuses(&reported)[0]).1,
        "PodInitializing"
    );
    assert_eq!(condition_of(&reported, "Initialized").0, "False");
    assert_eq!(observed(&reported), Some(state));

    let (state, _) = target(&reported, &none().secret("agent", &["token"]), now);
    assert_eq!(state, SimState::Succeeded);
    let done = with_status(reported, &state, now);
    assert_eq!(
        condition_of(&done, "Initialized"),
        ("True".into(), None, None)
    );
    assert_eq!(
        state_of(&init_statuses(&done)[0]),
        ("terminated", "Completed".into(), "0".into())
    );
}

#[test]
fn init_containers_run_in_order_and_the_first_that_cannot_start_holds_the_later_ones() {
    let now = Timestamp::now();
    let pod = pod_from(json!({
        "restartPolicy": "Never",
        "initContainers": [
            {"name": "first", "image": "busybox:1"},
            {"name": "second", "image": "busybox:1", "envFrom": [{"secretRef": {"name": "s"}}]},
            {"name": "third", "image": "unpullable.invalid/busybox:1"},
        ],
        "containers": [
            {"name": "app", "image": "shop:1"},
            {"name": "sidecar", "image": "proxy:1"},
        ],
    }));
    let (state, _) = target(&pod, &none(), now);
    assert_eq!(
        state,
        SimState::Initializing(wait(
            "second",
            WaitReason::CreateContainerConfigError,
            "secret \"s\" not found"
        )),
        "the third init container's image is not pulled before the second ran"
    );
    let reported = with_status(pod.clone(), &state, now);
    let init: Vec<_> = init_statuses(&reported)
        .iter()
        .map(|s| (s.name.as_str(), state_of(s).0, state_of(s).1, s.ready))
        .collect();
    assert_eq!(
        init,
        [
            ("first", "terminated", "Completed".into(), true),
            (
                "second",
                "waiting",
                "CreateContainerConfigError".into(),
                false
            ),
            ("third", "waiting", "PodInitializing".into(), false),
        ]
    );
    assert!(
        container_statuses(&reported)
            .iter()
            .all(|s| state_of(s).1 == "PodInitializing" && !s.ready)
    );
    assert_eq!(
        condition_of(&reported, "Initialized").2.as_deref(),
        Some("containers with incomplete status: [second third]")
    );
    assert_eq!(
        condition_of(&reported, "Ready").2.as_deref(),
        Some("containers with unready status: [app sidecar]")
    );

    let objects = none().secret("s", &[]);
    let (state, _) = target(&reported, &objects, now);
    assert_eq!(
        state,
        SimState::Initializing(wait(
            "third",
            WaitReason::ErrImagePull,
            &pull_error("unpullable.invalid/busybox:1")
        ))
    );
    let events = events(&reported, observed(&reported).as_ref(), &state, &objects);
    assert!(
        events
            .iter()
            .all(|e| e.field_path.as_deref() == Some("spec.initContainers{third}")),
        "{events:?}"
    );
    assert_eq!(events.len(), 3, "Pulling and Failed twice");
}

#[test]
fn a_missing_volume_source_shows_every_container_of_a_pod_with_init_containers_initializing() {
    let now = Timestamp::now();
    let mut pod = init_pod("agent:1", json!({}), &[]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = Some(vec![
            serde_json::from_value(json!({"name": "certs", "secret": {"secretName": "tls"}}))
                .expect("a volume"),
        ]);
    }
    let (state, _) = target(&pod, &none(), now);
    assert_eq!(state, SimState::ContainerCreating);
    let reported = with_status(pod, &state, now);
    let status = reported.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.pod_ip, None, "no sandbox before the volumes mount");
    for s in init_statuses(&reported)
        .iter()
        .chain(container_statuses(&reported))
    {
        assert_eq!(state_of(s).1, "PodInitializing", "{}", s.name);
        assert!(!s.ready);
    }
    assert_eq!(
        condition_of(&reported, "Initialized"),
        (
            "False".into(),
            Some("ContainersNotInitialized".into()),
            Some("containers with incomplete status: [agent]".into())
        )
    );
    assert_eq!(observed(&reported), Some(state));
}

#[test]
fn observed_reads_back_every_reported_state_of_a_pod_with_init_containers() {
    let now = Timestamp::now();
    let config = wait(
        "backup",
        WaitReason::CreateContainerConfigError,
        "secret \"s\" not found",
    );
    let pull = wait("agent", WaitReason::ErrImagePull, "not found");
    let back_off = wait("agent", WaitReason::ImagePullBackOff, "Back-off");
    for state in [
        SimState::Running { ready: true },
        SimState::Running { ready: false },
        SimState::CrashLoop,
        SimState::Succeeded,
        SimState::Failed,
        SimState::Unschedulable("0/1 nodes".into()),
        SimState::ContainerCreating,
        SimState::Waiting(vec![config.clone()]),
        SimState::Initializing(pull),
        SimState::Initializing(back_off),
        SimState::Initializing(wait(
            "agent",
            WaitReason::CreateContainerConfigError,
            "secret \"s\" not found",
        )),
    ] {
        let reported = with_status(init_pod("agent:1", json!({}), &[]), &state, now);
        assert_eq!(observed(&reported), Some(state.clone()), "{state:?}");
    }
}

#[test]
fn a_pod_without_init_containers_shows_no_init_container_and_no_init_reason() {
    let now = Timestamp::now();
    let pod = pod("Always", &[]);
    for state in [
        SimState::ContainerCreating,
        SimState::Running { ready: true },
    ] {
        let patch = status_patch(&pod, &state, "10.244.0.2", now);
        assert_eq!(patch["status"]["initContainerStatuses"], json!([]));
        let initialized = &patch["status"]["conditions"][1];
        assert_eq!(initialized["type"], "Initialized");
        assert!(initialized.get("reason").is_none(), "{initialized}");
        assert!(initialized.get("message").is_none(), "{initialized}");
    }
    let creating = status_patch(&pod, &SimState::ContainerCreating, "", now);
    assert_eq!(
        creating["status"]["containerStatuses"][0]["state"],
        json!({"waiting": {"reason": "ContainerCreating"}})
    );
}
