//! What a real kubelet (and scheduler) does with a Pod that cannot start, as the simulated one
//! shows it through the API (reasons, messages, Events), and how appenv reports it: a missing
//! Secret, an unmountable volume, a missing claim, an image that cannot be pulled, a missing
//! image pull Secret, an init container that cannot start. And how Pods serve HTTP at their own
//! loopback addresses, are probed Ready, and what Endpoints and EndpointSlices make of those
//! addresses (and of the quiet addresses of Pods that serve no HTTP). Against the real control
//! plane.

mod common;

use appenv_api::AppEnvironment;
use appenv_controller::{self as controller, Options};
use appenv_core::settings::Settings;
use appenv_localcluster::kubelet::{
    NODE_NAME, PULL_BACKOFF, READY_AFTER_ANNOTATION, UNPULLABLE_REGISTRY, UNREADY_ANNOTATION,
    is_pod_address,
};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Event, PersistentVolumeClaim, Pod, Secret, Service};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

const LIMIT: Duration = Duration::from_secs(90);
const POD: &str = "p";

/// A Pod named [`POD`] in a new namespace with `spec`; its namespace.
async fn pod_with(client: &Client, test: &str, spec: Value) -> (String, Api<Pod>) {
    let ns = common::namespace(client, test).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": POD},
        "spec": spec,
    }))
    .expect("a valid Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    (ns, pods)
}

fn app(extra: Value) -> Value {
    let mut container = json!({"name": "app", "image": "example.invalid/app:1"});
    if let (Some(c), Some(extra)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    container
}

/// The first container's waiting reason and message.
fn waiting(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    Some((
        waiting.reason.clone().unwrap_or_default(),
        waiting.message.clone().unwrap_or_default(),
    ))
}

fn condition(pod: &Pod, type_: &str) -> Option<(String, String, String)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

fn is_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| condition(p, "Ready"))
        .is_some_and(|(status, _, _)| status == "True")
}

async fn wait_pod(
    pods: &Api<Pod>,
    what: &str,
    cond: impl Fn(&Pod) -> bool + Send + 'static,
) -> Pod {
    common::wait_for(pods, POD, LIMIT, what, move |p: Option<&Pod>| {
        p.is_some_and(&cond)
    })
    .await
    .expect("the Pod")
}

/// The first Event about the Pod with `reason` and `message`, through a watch.
async fn wait_event(client: &Client, ns: &str, reason: &str, message: &str) -> Event {
    wait_event_about(client, ns, POD, reason, message).await
}

/// The first Event about the Pod `pod` with `reason` and `message`, through a watch.
async fn wait_event_about(
    client: &Client,
    ns: &str,
    pod: &str,
    reason: &str,
    message: &str,
) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("involvedObject.name={pod}"));
    let mut stream = watcher::watcher(events.clone(), config)
        .applied_objects()
        .boxed();
    let found = tokio::time::timeout(LIMIT, async {
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            if event.reason.as_deref() == Some(reason) && event.message.as_deref() == Some(message)
            {
                return Some(event);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        _ => {
            let seen: Vec<_> = events
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.reason, e.message))
                .collect();
            panic!("no Event {reason}: {message:?} within {LIMIT:?}; seen: {seen:#?}")
        }
    }
}

fn assert_from_kubelet(event: &Event, warning: bool, field_path: Option<&str>) {
    let source = event.source.as_ref().expect("source");
    assert_eq!(source.component.as_deref(), Some("kubelet"), "{event:?}");
    assert_eq!(source.host.as_deref(), Some(NODE_NAME));
    assert_eq!(event.reporting_component.as_deref(), Some("kubelet"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(event.involved_object.field_path.as_deref(), field_path);
    assert_eq!(
        event.type_.as_deref(),
        Some(if warning { "Warning" } else { "Normal" })
    );
    assert!(event.count.is_some_and(|c| c >= 1));
    assert!(event.first_timestamp.is_some() && event.last_timestamp.is_some());
}

async fn create_secret(client: &Client, ns: &str, name: &str, data: Value) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "stringData": data,
    }))
    .expect("a valid Secret");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

#[tokio::test]
async fn a_missing_secret_in_env_from_is_a_config_error_until_the_secret_exists() {
    let client = common::client().await;
    let spec = json!({"containers": [app(json!({"envFrom": [{"secretRef": {"name": "doppler-secrets"}}]}))]});
    let (ns, pods) = pod_with(&client, "cfg-missing", spec).await;
    let message = "secret \"doppler-secrets\" not found";
    let pod = wait_pod(&pods, "CreateContainerConfigError", move |p| {
        waiting(p) == Some(("CreateContainerConfigError".into(), message.into()))
    })
    .await;
    assert_eq!(
        condition(&pod, "Ready").map(|c| c.0),
        Some("False".into()),
        "not Ready"
    );
    let event = wait_event(&client, &ns, "Failed", &format!("Error: {message}")).await;
    assert_from_kubelet(&event, true, Some("spec.containers{app}"));

    // The kubelet retries: the Pod starts once the Secret appears.
    let value = "mongodb://user:hunter2@db.example.com";
    create_secret(
        &client,
        &ns,
        "doppler-secrets",
        json!({"MONGODB_URI": value}),
    )
    .await;
    wait_pod(&pods, "Ready", |p| is_ready(Some(p))).await;
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .all(|e| !e.message.as_deref().unwrap_or_default().contains("hunter2")),
        "no Secret value in an Event"
    );
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_missing_key_names_the_key_and_the_secret_and_a_new_key_starts_the_pod() {
    let client = common::client().await;
    let ns = common::namespace(&client, "cfg-key").await;
    create_secret(&client, &ns, "db", json!({"OTHER": "x"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": POD},
        "spec": {"containers": [app(json!({"env": [{"name": "MONGODB_URI",
            "valueFrom": {"secretKeyRef": {"name": "db", "key": "MONGODB_URI"}}}]}))]},
    }))
    .expect("a valid Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    let message = format!("couldn't find key MONGODB_URI in Secret {ns}/db");
    let expected = message.clone();
    wait_pod(&pods, "missing its key", move |p| {
        waiting(p) == Some(("CreateContainerConfigError".into(), expected.clone()))
    })
    .await;
    let patch = json!({"stringData": {"MONGODB_URI": "mongodb://db"}});
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("add the key");
    wait_pod(&pods, "Ready", |p| is_ready(Some(p))).await;
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_missing_volume_source_keeps_the_pod_creating_with_a_failed_mount_event() {
    let client = common::client().await;
    let spec = json!({
        "containers": [app(json!({"volumeMounts": [{"name": "certs", "mountPath": "/certs"}]}))],
        "volumes": [{"name": "certs", "secret": {"secretName": "tls-certs"}}],
    });
    let (ns, pods) = pod_with(&client, "mount", spec).await;
    let pod = wait_pod(&pods, "ContainerCreating", |p| {
        waiting(p).is_some_and(|(reason, _)| reason == "ContainerCreating")
    })
    .await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    let event = wait_event(
        &client,
        &ns,
        "FailedMount",
        "MountVolume.SetUp failed for volume \"certs\" : secret \"tls-certs\" not found",
    )
    .await;
    assert_from_kubelet(&event, true, None);
    create_secret(&client, &ns, "tls-certs", json!({"tls.crt": "x"})).await;
    wait_pod(&pods, "Ready", |p| is_ready(Some(p))).await;
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_missing_claim_leaves_the_pod_unscheduled_until_it_exists_and_binds() {
    let client = common::client().await;
    let spec = json!({
        "containers": [app(json!({}))],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    });
    let (ns, pods) = pod_with(&client, "unscheduled", spec).await;
    let message = "0/1 nodes are available: 1 persistentvolumeclaim \"data\" not found.";
    let pod = wait_pod(&pods, "Unschedulable", move |p| {
        condition(p, "PodScheduled")
            == Some(("False".into(), "Unschedulable".into(), message.into()))
    })
    .await;
    assert_eq!(pod.spec.as_ref().and_then(|s| s.node_name.clone()), None);
    let event = wait_event(&client, &ns, "FailedScheduling", message).await;
    assert_eq!(
        event.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .expect("a valid claim");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
    let pod = wait_pod(&pods, "Ready", |p| is_ready(Some(p))).await;
    assert_eq!(
        pod.spec.and_then(|s| s.node_name).as_deref(),
        Some(NODE_NAME),
        "scheduled once the claim bound"
    );
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn an_event_recorded_again_counts_up_instead_of_being_a_new_object() {
    let client = common::client().await;
    let spec = json!({
        "containers": [app(json!({}))],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    });
    let (ns, pods) = pod_with(&client, "recount", spec).await;
    let missing = "0/1 nodes are available: 1 persistentvolumeclaim \"data\" not found.";
    let first = wait_event(&client, &ns, "FailedScheduling", missing).await;
    assert_eq!(first.count, Some(1));
    // A claim of a class nobody provisions: it exists but never binds.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "nobody-provisions",
            "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .expect("a valid claim");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
    let unbound = "0/1 nodes are available: 1 pod has unbound immediate PersistentVolumeClaims.";
    wait_pod(&pods, "waiting for the claim to bind", move |p| {
        condition(p, "PodScheduled").is_some_and(|c| c.2 == unbound)
    })
    .await;
    claims
        .delete("data", &DeleteParams::default())
        .await
        .expect("delete claim");
    wait_pod(&pods, "missing its claim again", move |p| {
        condition(p, "PodScheduled").is_some_and(|c| c.2 == missing)
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let name = first.metadata.name.clone().expect("name");
    let deadline = Instant::now() + LIMIT;
    loop {
        let again = events.get(&name).await.expect("the same Event");
        if again.count == Some(2) {
            assert_eq!(again.first_timestamp, first.first_timestamp);
            break;
        }
        assert!(Instant::now() < deadline, "count {:?}", again.count);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let same: Vec<Event> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.message.as_deref() == Some(missing))
        .collect();
    assert_eq!(same.len(), 1, "one object, counted twice");
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn an_unpullable_image_fails_to_pull_then_backs_off() {
    let client = common::client().await;
    let image = format!("{UNPULLABLE_REGISTRY}/app:1");
    let spec = json!({"containers": [{"name": "app", "image": image}]});
    let (ns, pods) = pod_with(&client, "pull", spec).await;
    let started = Instant::now();
    wait_pod(&pods, "ErrImagePull", |p| {
        waiting(p).is_some_and(|(reason, _)| reason == "ErrImagePull")
    })
    .await;
    let back_off = format!("Back-off pulling image \"{image}\"");
    let expected = back_off.clone();
    wait_pod(&pods, "ImagePullBackOff", move |p| {
        waiting(p) == Some(("ImagePullBackOff".into(), expected.clone()))
    })
    .await;
    assert!(
        started.elapsed() + Duration::from_secs(1) >= PULL_BACKOFF,
        "ErrImagePull first, for a while"
    );
    let failed = wait_event(&client, &ns, "Failed", "Error: ErrImagePull").await;
    assert_from_kubelet(&failed, true, Some("spec.containers{app}"));
    let backing_off = wait_event(&client, &ns, "BackOff", &back_off).await;
    assert_from_kubelet(&backing_off, false, Some("spec.containers{app}"));
    wait_event(&client, &ns, "Failed", "Error: ImagePullBackOff").await;
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_missing_image_pull_secret_is_an_event_and_the_pod_still_runs() {
    let client = common::client().await;
    let spec = json!({"containers": [app(json!({}))], "imagePullSecrets": [{"name": "regcred"}]});
    let (ns, pods) = pod_with(&client, "pullsecret", spec).await;
    wait_pod(&pods, "Ready", |p| is_ready(Some(p))).await;
    let event = wait_event(
        &client,
        &ns,
        "FailedToRetrieveImagePullSecret",
        "Unable to retrieve some image pull secrets (regcred); attempting to pull the image may not succeed.",
    )
    .await;
    assert_from_kubelet(&event, true, None);
    common::cleanup(&client, &ns).await;
}

/// A Job like appenv's PostgreSQL backup: the init container `agent` (image `agent_image`)
/// copies a binary into an emptyDir, which the container `backup` runs.
fn backup_like_job(name: &str, agent_image: &str) -> Job {
    let mount = json!([{"name": "agent", "mountPath": "/agent"}]);
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "agent", "emptyDir": {}}],
            "initContainers": [{"name": "agent", "image": agent_image, "command": ["/appenv"],
                "args": ["agent", "install", "/agent/appenv"], "volumeMounts": mount}],
            "containers": [{"name": "backup", "image": "example.invalid/postgres:16",
                "command": ["/agent/appenv"], "args": ["agent", "backup"], "volumeMounts": mount}],
        }}},
    }))
    .expect("a valid Job")
}

/// The first Pod of the Job `job` for which `cond` holds, through a watch.
async fn wait_job_pod(pods: &Api<Pod>, job: &str, what: &str, cond: impl Fn(&Pod) -> bool) -> Pod {
    let config = watcher::Config::default().labels(&format!("job-name={job}"));
    let mut stream = watcher::watcher(pods.clone(), config)
        .applied_objects()
        .boxed();
    let found = tokio::time::timeout(LIMIT, async {
        while let Some(pod) = stream.next().await {
            if let Ok(pod) = pod
                && cond(&pod)
            {
                return Some(pod);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(pod)) => pod,
        _ => {
            let seen = pods
                .list(&ListParams::default().labels(&format!("job-name={job}")))
                .await
                .map(|l| l.items);
            panic!("no Pod of the Job {job} {what} within {LIMIT:?}; seen: {seen:#?}")
        }
    }
}

/// The init container `agent`'s waiting reason and message.
fn init_waiting(pod: &Pod) -> Option<(String, String)> {
    let status = pod
        .status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .first()?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    Some((
        waiting.reason.clone().unwrap_or_default(),
        waiting.message.clone().unwrap_or_default(),
    ))
}

/// The STATUS column of `kubectl get pods` for the Job's Pod, as the API server prints it (the
/// same printer as kubectl's).
async fn printed_status(client: &Client, ns: &str, job: &str) -> String {
    let mut request = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/pods"))
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .expect("request");
    request.headers_mut().insert(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io"
            .parse()
            .expect("header value"),
    );
    let table: Value =
        serde_json::from_str(&client.request_text(request).await.expect("Table")).expect("json");
    let column = table["columnDefinitions"]
        .as_array()
        .and_then(|columns| columns.iter().position(|c| c["name"] == "Status"))
        .expect("a Status column");
    let rows = table["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "one Pod: {table}");
    rows[0]["cells"][column]
        .as_str()
        .expect("a status")
        .to_owned()
}

#[tokio::test]
async fn a_job_whose_init_image_cannot_be_pulled_never_completes_and_one_that_can_does() {
    let client = common::client().await;
    let ns = common::namespace(&client, "init").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let image = format!("{UNPULLABLE_REGISTRY}/appenv:1");
    for job in [
        backup_like_job("blocked", &image),
        backup_like_job("completes", "example.invalid/appenv:1"),
    ] {
        jobs.create(&PostParams::default(), &job)
            .await
            .expect("create Job");
    }

    let pulling = wait_job_pod(&pods, "blocked", "in ErrImagePull", |p| {
        init_waiting(p).is_some_and(|(reason, _)| reason == "ErrImagePull")
    })
    .await;
    let status = pulling.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(
        waiting(&pulling).map(|w| w.0).as_deref(),
        Some("PodInitializing"),
        "the container waits for its init container"
    );
    assert_eq!(
        condition(&pulling, "Initialized"),
        Some((
            "False".into(),
            "ContainersNotInitialized".into(),
            "containers with incomplete status: [agent]".into()
        ))
    );
    // Read at once, it is still in ErrImagePull (unless the back-off came meanwhile).
    let printed = printed_status(&client, &ns, "blocked").await;
    assert!(
        ["Init:ErrImagePull", "Init:ImagePullBackOff"].contains(&printed.as_str()),
        "{printed}"
    );
    let name = pulling.metadata.name.clone().expect("name");
    let failed = wait_event_about(&client, &ns, &name, "Failed", "Error: ErrImagePull").await;
    assert_from_kubelet(&failed, true, Some("spec.initContainers{agent}"));

    let back_off = format!("Back-off pulling image \"{image}\"");
    let expected = back_off.clone();
    wait_job_pod(&pods, "blocked", "in ImagePullBackOff", move |p| {
        init_waiting(p) == Some(("ImagePullBackOff".into(), expected.clone()))
    })
    .await;
    let backing_off = wait_event_about(&client, &ns, &name, "BackOff", &back_off).await;
    assert_from_kubelet(&backing_off, false, Some("spec.initContainers{agent}"));
    assert_eq!(
        printed_status(&client, &ns, "blocked").await,
        "Init:ImagePullBackOff"
    );

    let done = common::wait_for(&jobs, "completes", LIMIT, "Complete", |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
    })
    .await;
    assert_eq!(
        done.and_then(|j| j.status).and_then(|s| s.succeeded),
        Some(1)
    );
    let completed = wait_job_pod(&pods, "completes", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    let agent = completed
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|s| s.first())
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .expect("the init container terminated");
    assert_eq!(
        (agent.exit_code, agent.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert_eq!(
        condition(&completed, "Initialized").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_eq!(printed_status(&client, &ns, "completes").await, "Completed");

    // Long after the other completed, and in back-off for good: still running, never done.
    let blocked = jobs.get("blocked").await.expect("the Job");
    let status = blocked.status.expect("Job status");
    assert_eq!(
        (status.active, status.succeeded, status.failed),
        (Some(1), None, None)
    );
    assert!(
        status.conditions.unwrap_or_default().is_empty(),
        "neither Complete nor Failed"
    );
    assert_eq!(
        printed_status(&client, &ns, "blocked").await,
        "Init:ImagePullBackOff"
    );
    common::cleanup(&client, &ns).await;
}

/// One operator for this test binary, with a preview domain, on a thread of its own (it must
/// outlive each test's runtime).
async fn operator(client: &Client) {
    static STARTED: OnceCell<()> = OnceCell::const_new();
    STARTED
        .get_or_init(|| async {
            controller::crd::install(client, "appenv-tests")
                .await
                .expect("crd");
            let options = Options {
                settings: Settings {
                    preview_domain: Some("preview.example.com".parse().expect("domain")),
                    ..Settings::default()
                },
                ..Options::default()
            };
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let client = appenv_localcluster::shared()
                        .client()
                        .await
                        .expect("client");
                    controller::run(client, options).await;
                });
            });
        })
        .await;
}

fn degraded_message(env: Option<&AppEnvironment>) -> Option<String> {
    env?.condition("Degraded")
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_whose_secret_is_missing_is_degraded_naming_it_until_it_is_created() {
    let client = common::client().await;
    operator(&client).await;
    let name = "kubelet-missing-secret";
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
        "metadata": {"name": name},
        "spec": {"app": "shop", "image": "example.invalid/shop:1",
            "envFrom": [{"secretRef": {"name": "shop-secrets"}}]},
    });
    common::apply(&client, &env).await;
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let degraded = common::wait_for(
        &api,
        name,
        LIMIT,
        "Degraded",
        |e: Option<&AppEnvironment>| {
            degraded_message(e).is_some_and(|m| m.contains("CreateContainerConfigError"))
        },
    )
    .await;
    let message = degraded_message(degraded.as_ref()).unwrap_or_default();
    assert!(
        message.starts_with("web: Pod shop-")
            && message.ends_with(
                "container web: CreateContainerConfigError: secret \"shop-secrets\" not found"
            ),
        "{message}"
    );
    assert_eq!(
        degraded.and_then(|e| e.status).and_then(|s| s.phase),
        Some(appenv_api::Phase::Degraded)
    );
    common::provide_secret(&client, name, "shop-secrets", &["KEY"]).await;
    common::wait_for(&api, name, LIMIT, "Ready", common::ready).await;
    let _ = api.delete(name, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_up_wait_stops_at_once_when_the_image_cannot_be_pulled() {
    let client = common::client().await;
    operator(&client).await;
    let image = format!("{UNPULLABLE_REGISTRY}/demo:pr-77");
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_appenv"));
    command
        .args(["preview", "up", "--app", "kubelet-demo", "--pr", "77"])
        .args(["--image", &image, "--wait", "--timeout", "5m"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig())
        .env_remove("GITHUB_OUTPUT");
    let up = tokio::task::block_in_place(|| command.output()).expect("run appenv");
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success(), "up must fail: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "not the 5-minute timeout: {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("failed: a component cannot start: web: Pod kubelet-demo-")
            && stderr.contains(&format!(
                "ImagePullBackOff: Back-off pulling image \"{image}\""
            )),
        "{stderr}"
    );
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete("kubelet-demo-pr-77", &DeleteParams::default())
        .await;
}

// --- HTTP: each Pod's own loopback address, served and probed ----------------------------------

/// A web container: port 8000 named `http`, probed for readiness at `/healthz`.
fn web_container() -> Value {
    json!({"name": "web", "image": "example.invalid/web:1",
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}})
}

/// A Deployment `name` of `replicas` Pods labelled `app=name` running [`web_container`], with
/// `annotations` on its Pods.
async fn web_deployment(client: &Client, ns: &str, name: &str, replicas: i32, annotations: Value) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [web_container()]}}},
    }))
    .expect("a valid Deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create Deployment");
}

/// The Pods labelled `app=app`, once `cond` holds for the list of them, through a watch.
async fn wait_pods(
    pods: &Api<Pod>,
    app: &str,
    what: &str,
    cond: impl Fn(&[Pod]) -> bool,
) -> Vec<Pod> {
    let selector = format!("app={app}");
    let (reader, writer) = kube::runtime::reflector::store();
    let config = watcher::Config::default().labels(&selector);
    let mut stream = watcher::watcher(pods.clone(), config)
        .reflect(writer)
        .boxed();
    let found = tokio::time::timeout(LIMIT, async {
        while let Some(event) = stream.next().await {
            let listed = matches!(
                event,
                Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_))
            );
            let now: Vec<Pod> = reader.state().iter().map(|p| Pod::clone(p)).collect();
            if listed && cond(&now) {
                return now;
            }
        }
        Vec::new()
    })
    .await;
    match found {
        Ok(now) if cond(&now) => now,
        _ => {
            let seen = pods.list(&ListParams::default().labels(&selector)).await;
            panic!("the Pods {selector} not {what} within {LIMIT:?}; seen: {seen:#?}")
        }
    }
}

/// Pods with a readiness probe that are looked at (here through a change of their own) just as
/// the Secret they wait for appears all start and are probed Ready. Under load in CI, a look
/// that decided from the stores just before the Secret arrived was acted upon after the look the
/// Secret asked for: it stopped the server that look was probing, the probe's result was
/// dropped, and the Pod stayed in `CreateContainerConfigError` with nothing to look at it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probed_pods_looked_at_just_as_their_secret_appears_all_become_ready() {
    const REPLICAS: usize = 10;
    let client = common::client().await;
    let ns = common::namespace(&client, "http-secret-appears").await;
    let mut container = web_container();
    container["envFrom"] = json!([{"secretRef": {"name": "web-secrets"}}]);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container]}}},
    }))
    .expect("a valid Deployment");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let waiting_pods = wait_pods(&pods, "web", "waiting for their Secret", |p| {
        p.len() == REPLICAS
            && p.iter().all(|p| {
                waiting(p).is_some_and(|(reason, _)| reason == "CreateContainerConfigError")
            })
    })
    .await;
    let touches = waiting_pods.iter().map(|pod| {
        let (pods, name) = (pods.clone(), pod.metadata.name.clone().unwrap_or_default());
        async move {
            let patch = json!({"metadata": {"annotations": {"example.com/touched": "true"}}});
            pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("touch the Pod");
        }
    });
    futures::future::join(
        futures::future::join_all(touches),
        create_secret(&client, &ns, "web-secrets", json!({"SECRET_KEY": "x"})),
    )
    .await;
    wait_pods(&pods, "web", "Ready", |p| {
        p.len() == REPLICAS && p.iter().all(|p| is_ready(Some(p)))
    })
    .await;
    common::cleanup(&client, &ns).await;
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// GET `path` at `ip:port` (HTTP/1.0): status and body; an error if nothing listens there.
async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut stream = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n")?;
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
    })
    .await
    .expect("the request's thread")
}

fn assert_own_loopback_address(pod: &Pod) -> Ipv4Addr {
    let ip = pod_ip(pod).expect("an IPv4 Pod IP");
    assert!(
        ip.is_loopback() && ip != Ipv4Addr::LOCALHOST && is_pod_address(ip),
        "{ip}"
    );
    let ips: Vec<String> = pod
        .status
        .iter()
        .flat_map(|s| s.pod_ips.iter().flatten())
        .map(|i| i.ip.clone())
        .collect();
    assert_eq!(ips, [ip.to_string()], "podIPs");
    ip
}

/// A Pod that serves no HTTP gets an address of 10.1/16 and up (where nothing listens), which
/// Endpoints take.
fn assert_quiet_address(pod: &Pod) -> Ipv4Addr {
    let ip = pod_ip(pod).expect("an IPv4 Pod IP");
    let [first, second, ..] = ip.octets();
    assert!(
        first == 10 && second != 0 && !is_pod_address(ip),
        "{ip}: not a quiet address"
    );
    ip
}

#[tokio::test]
async fn an_http_pod_gets_its_own_loopback_address_answers_there_and_is_ready_once_probed() {
    let client = common::client().await;
    let ns = common::namespace(&client, "http-web").await;
    web_deployment(&client, &ns, "web", 1, json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ready = wait_pods(&pods, "web", "Ready", |p| {
        p.len() == 1 && is_ready(p.first())
    })
    .await;
    let pod = &ready[0];
    let ip = assert_own_loopback_address(pod);
    let name = pod.metadata.name.clone().expect("a name");
    let (code, body) = http_get(ip, 8000, "/anything")
        .await
        .expect("the Pod answers");
    assert_eq!((code, body), (200, format!("pod {name} (ns {ns})\n")));
    let (code, _) = http_get(ip, 8000, "/healthz")
        .await
        .expect("the probe's path");
    assert_eq!(code, 200);
    let unhealthy = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().fields("reason=Unhealthy"))
        .await
        .expect("events");
    assert!(unhealthy.items.is_empty(), "{:?}", unhealthy.items);

    // Scaled to zero: once its Pod is gone, nothing answers at its address.
    let scale = json!({"spec": {"replicas": 0}});
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale to zero");
    wait_pods(&pods, "web", "gone", <[Pod]>::is_empty).await;
    let refused = http_get(ip, 8000, "/anything").await;
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn an_unready_http_pod_is_never_ready_and_its_readiness_path_answers_503() {
    let client = common::client().await;
    let ns = common::namespace(&client, "http-unready").await;
    web_deployment(&client, &ns, "web", 1, json!({UNREADY_ANNOTATION: "true"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = wait_pods(&pods, "web", "Running with an address", |p| {
        p.first().is_some_and(|p| {
            pod_ip(p).is_some()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;
    let pod = &running[0];
    let ip = assert_own_loopback_address(pod);
    assert_eq!(
        condition(pod, "Ready"),
        Some((
            "False".into(),
            "ContainersNotReady".into(),
            "containers with unready status: [web]".into()
        ))
    );
    let (code, body) = http_get(ip, 8000, "/healthz")
        .await
        .expect("the Pod answers");
    assert_eq!(code, 503, "{body}");
    let (code, _) = http_get(ip, 8000, "/").await.expect("the Pod answers");
    assert_eq!(code, 200, "only the readiness path is unready");
    let pod = pods
        .get(pod.metadata.name.as_deref().expect("a name"))
        .await
        .expect("the Pod");
    assert!(!is_ready(Some(&pod)), "still not Ready");
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn pods_get_different_addresses_and_one_without_http_ports_is_ready_as_before() {
    let client = common::client().await;
    let ns = common::namespace(&client, "http-two").await;
    web_deployment(&client, &ns, "web", 2, json!({})).await;
    let (_, pods) = pod_with(
        &client,
        "http-plain",
        json!({"containers": [app(json!({}))]}),
    )
    .await;
    let plain = wait_pod(&pods, "Ready", |p| is_ready(Some(p))).await;
    let plain_ip = assert_quiet_address(&plain);

    let web_pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ready = wait_pods(&web_pods, "web", "both Ready", |p| {
        p.len() == 2 && p.iter().all(|p| is_ready(Some(p)))
    })
    .await;
    let ips: Vec<Ipv4Addr> = ready.iter().map(assert_own_loopback_address).collect();
    assert_ne!(ips[0], ips[1]);
    assert!(!ips.contains(&plain_ip));
    for (pod, ip) in ready.iter().zip(&ips) {
        let (_, body) = http_get(*ip, 8000, "/").await.expect("the Pod answers");
        assert!(
            body.contains(pod.metadata.name.as_deref().expect("a name")),
            "{body}"
        );
    }
    common::cleanup(&client, &ns).await;
    common::cleanup(
        &client,
        &plain.metadata.namespace.clone().expect("a namespace"),
    )
    .await;
}

/// The Service of Pods that serve no HTTP (Redis, PostgreSQL): kube-controller-manager writes
/// its Endpoints with the Pod's address, as on a real cluster, and records no failure.
#[tokio::test]
async fn endpoints_of_a_service_whose_pods_serve_no_http_are_written() {
    let client = common::client().await;
    let ns = common::namespace(&client, "quiet-svc").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": POD, "labels": {"app": "redis"}},
        "spec": {"containers": [app(json!({"ports": [{"name": "redis", "containerPort": 6379}]}))]},
    }))
    .expect("a valid Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "redis"},
        "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379, "targetPort": "redis"}]},
    }))
    .expect("a valid Service");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create Service");
    let ready = wait_pod(&pods, "Ready", |p| is_ready(Some(p))).await;
    let ip = assert_quiet_address(&ready).to_string();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let written = common::wait_for(
        &endpoints,
        "redis",
        LIMIT,
        "its Pod's address",
        |e: Option<&Endpoints>| {
            e.iter()
                .flat_map(|e| e.subsets.iter().flatten())
                .flat_map(|s| s.addresses.iter().flatten())
                .any(|a| a.ip == ip)
        },
    )
    .await
    .expect("Endpoints");
    let ports: Vec<i32> = written
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [6379]);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let failures = events
        .list(&ListParams::default().fields("reason=FailedToUpdateEndpoint"))
        .await
        .expect("list Events");
    assert!(failures.items.is_empty(), "{:?}", failures.items);
    common::cleanup(&client, &ns).await;
}

/// kube-apiserver 1.20 refuses loopback addresses in Endpoints (its validation of endpoint
/// addresses) but takes them in EndpointSlices: kube-controller-manager's endpoint controller
/// fails to write the Service's addresses, with a Warning Event (and retries), while its
/// EndpointSlice controller writes them, Ready.
#[tokio::test]
async fn loopback_pod_ips_are_refused_in_endpoints_and_taken_in_endpoint_slices() {
    let client = common::client().await;
    let ns = common::namespace(&client, "http-svc").await;
    web_deployment(&client, &ns, "web", 1, json!({})).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .expect("a valid Service");
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create Service");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ready = wait_pods(&pods, "web", "Ready", |p| {
        p.len() == 1 && is_ready(p.first())
    })
    .await;
    let ip = assert_own_loopback_address(&ready[0]);
    let pod_name = ready[0].metadata.name.clone().expect("a name");

    let message = format!(
        "Failed to update endpoint {ns}/web: Endpoints \"web\" is invalid: \
         subsets[0].addresses[0].ip: Invalid value: \"{ip}\": \
         may not be in the loopback range (127.0.0.0/8)"
    );
    let event = wait_event_about(&client, &ns, "web", "FailedToUpdateEndpoint", &message).await;
    assert_eq!(event.involved_object.kind.as_deref(), Some("Endpoints"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), &ns)
        .get_opt("web")
        .await
        .expect("read Endpoints");
    let addresses = endpoints
        .iter()
        .flat_map(|e| e.subsets.iter().flatten())
        .flat_map(|s| {
            s.addresses
                .iter()
                .flatten()
                .chain(s.not_ready_addresses.iter().flatten())
        })
        .count();
    assert_eq!(addresses, 0, "no address written: {endpoints:?}");
    let log_path = appenv_localcluster::shared()
        .kubeconfig()
        .with_file_name("kube-controller-manager.log");
    let log = std::fs::read_to_string(&log_path).expect("kube-controller-manager's log");
    let logged = message.replace('"', "\\\"");
    assert!(
        log.contains(&logged),
        "{} does not log {logged}",
        log_path.display()
    );

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice"),
        "endpointslices",
    );
    let slices: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let config = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let mut stream = watcher::watcher(slices, config).applied_objects().boxed();
    let written = tokio::time::timeout(LIMIT, async {
        while let Some(slice) = stream.next().await {
            if let Ok(slice) = slice
                && slice.data["endpoints"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
            {
                return Some(slice);
            }
        }
        None
    })
    .await;
    let slice = written
        .ok()
        .flatten()
        .expect("an EndpointSlice with the Pod's address");
    let endpoint = &slice.data["endpoints"][0];
    assert_eq!(slice.data["addressType"], "IPv4");
    assert_eq!(endpoint["addresses"], json!([ip.to_string()]));
    assert_eq!(endpoint["conditions"]["ready"], true);
    assert_eq!(endpoint["targetRef"]["name"], pod_name.as_str());
    assert_eq!(
        slice.data["ports"],
        json!([{"name": "http", "port": 8000, "protocol": "TCP"}])
    );
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_job_pod_serves_while_it_runs_and_closes_its_listener_when_it_succeeds() {
    let client = common::client().await;
    let ns = common::namespace(&client, "http-job").await;
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "task"},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {READY_AFTER_ANNOTATION: "3000"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "task",
                "image": "example.invalid/task:1",
                "ports": [{"name": "http-status", "containerPort": 8080}]}]}}},
    }))
    .expect("a valid Job");
    Api::<Job>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &job)
        .await
        .expect("create Job");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    let running = wait_job_pod(&pods, "task", "Running", |p| {
        phase(p).as_deref() == Some("Running") && pod_ip(p).is_some()
    })
    .await;
    let ip = assert_own_loopback_address(&running);
    let answer = http_get(ip, 8080, "/status").await;
    let succeeded = wait_job_pod(&pods, "task", "Succeeded", |p| {
        phase(p).as_deref() == Some("Succeeded")
    })
    .await;
    assert_eq!(
        answer.expect("the running Pod answers").0,
        200,
        "while it ran"
    );
    assert_eq!(pod_ip(&succeeded), Some(ip));
    let refused = http_get(ip, 8080, "/status").await;
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "finished: {refused:?}"
    );
    common::cleanup(&client, &ns).await;
}
