//! The local control plane and simulated kubelet behave like a cluster: the foundation every
//! later integration test stands on. Runs against a real kube-apiserver and
//! kube-controller-manager (see `appenv_localcluster`).

mod common;

use appenv_localcluster::kubelet::{
    FAIL_ANNOTATION, NODE_NAME, READY_AFTER_ANNOTATION, SimState, TERMINATE_AFTER_ANNOTATION,
    UNREADY_ANNOTATION, observed,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Client, ResourceExt as _};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

fn deployment(
    name: &str,
    replicas: i32,
    strategy: serde_json::Value,
    annotations: serde_json::Value,
) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }))
    .expect("valid deployment")
}

fn condition_is(
    conditions: Option<&Vec<k8s_openapi::api::apps::v1::DeploymentCondition>>,
    type_: &str,
    status: &str,
) -> bool {
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == status)
}

/// The rollout of the Deployment's current generation is complete and all replicas available.
fn rolled_out(replicas: i32) -> impl Fn(Option<&Deployment>) -> bool {
    move |d: Option<&Deployment>| {
        let Some(d) = d else { return false };
        let Some(status) = &d.status else {
            return false;
        };
        status.observed_generation >= d.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && status.replicas == Some(replicas)
            && condition_is(status.conditions.as_ref(), "Available", "True")
    }
}

async fn pods_of(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
}

#[tokio::test]
async fn deployment_becomes_available_through_the_simulated_kubelet() {
    let client = common::client().await;
    let ns = common::namespace(&client, "available").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &deployment("web", 2, json!({}), json!({})),
    )
    .await
    .expect("create deployment");

    common::wait_for(&api, "web", LIMIT, "available 2/2", rolled_out(2)).await;

    let pods = pods_of(&client, &ns, "web").await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(NODE_NAME)
        );
        assert_eq!(observed(pod), Some(SimState::Running { ready: true }));
        assert!(
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some()
        );
    }
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn deleting_a_namespace_leaves_no_trace() {
    let client = common::client().await;
    let ns = common::namespace(&client, "nsdelete").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 2, json!({}), json!({})),
        )
        .await
        .expect("create deployment");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("config".into());
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    common::wait_for(&deployments, "web", LIMIT, "available", rolled_out(2)).await;
    assert_eq!(
        pods_of(&client, &ns, "web").await.len(),
        2,
        "bound pods exist before deletion"
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let uid = namespaces
        .get(&ns)
        .await
        .expect("namespace")
        .uid()
        .expect("uid");
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
    common::wait_for(
        &namespaces,
        &ns,
        LIMIT,
        "deleted",
        conditions::is_deleted(&uid),
    )
    .await;

    let leftover = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("metadata.namespace={ns}")))
        .await
        .expect("list pods");
    assert!(
        leftover.items.is_empty(),
        "pods left behind: {:?}",
        leftover.items.len()
    );
}

#[tokio::test]
async fn owned_objects_are_garbage_collected_with_their_owner() {
    let client = common::client().await;
    let ns = common::namespace(&client, "gc").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut owner = ConfigMap::default();
    owner.metadata.name = Some("owner".into());
    let owner = configmaps
        .create(&PostParams::default(), &owner)
        .await
        .expect("owner");
    let dependent: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dependent", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid()}]},
        "stringData": {"k": "v"},
    }))
    .expect("secret");
    let dependent = secrets
        .create(&PostParams::default(), &dependent)
        .await
        .expect("dependent");
    let mut unrelated = Secret::default();
    unrelated.metadata.name = Some("unrelated".into());
    secrets
        .create(&PostParams::default(), &unrelated)
        .await
        .expect("unrelated");

    configmaps
        .delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    let uid = dependent.uid().expect("uid");
    common::wait_for(
        &secrets,
        "dependent",
        LIMIT,
        "garbage-collected",
        conditions::is_deleted(&uid),
    )
    .await;
    assert!(
        secrets.get_opt("unrelated").await.expect("get").is_some(),
        "GC must spare unowned objects"
    );
    common::cleanup(&client, &ns).await;
}

async fn roll(api: &Api<Deployment>, name: &str, revision: usize, replicas: i32) {
    let patch =
        json!({"spec": {"template": {"metadata": {"annotations": {"rev": revision.to_string()}}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    common::wait_for(api, name, LIMIT, "rolled out", rolled_out(replicas)).await;
}

#[tokio::test]
async fn recreate_rollouts_never_run_two_replicasets_at_once() {
    let client = common::client().await;
    let ns = common::namespace(&client, "recreate").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // Terminating Pods linger, so an overlap would be visible if the strategy allowed one.
    let slow_exit = json!({ TERMINATE_AFTER_ANNOTATION: "300" });

    // Control: a RollingUpdate with surge must show an overlap, proving the recorder sees one.
    let rolling = common::OverlapRecorder::start(&client, &ns, "app=rolling");
    let surge =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    api.create(
        &PostParams::default(),
        &deployment("rolling", 2, surge, slow_exit.clone()),
    )
    .await
    .expect("create");
    common::wait_for(&api, "rolling", LIMIT, "available", rolled_out(2)).await;
    roll(&api, "rolling", 1, 2).await;
    let (most, seen) = rolling.finish();
    assert_eq!(
        (most, seen),
        (2, 2),
        "a RollingUpdate overlaps two ReplicaSets"
    );

    let recorder = common::OverlapRecorder::start(&client, &ns, "app=single-writer");
    api.create(
        &PostParams::default(),
        &deployment("single-writer", 2, json!({"type": "Recreate"}), slow_exit),
    )
    .await
    .expect("create");
    common::wait_for(&api, "single-writer", LIMIT, "available", rolled_out(2)).await;
    for revision in 1..=10 {
        roll(&api, "single-writer", revision, 2).await;
    }
    let (most, seen) = recorder.finish();
    assert_eq!(seen, 11, "each of the 10 updates made a new ReplicaSet");
    assert_eq!(most, 1, "Pods of two ReplicaSets were alive at once");
    common::cleanup(&client, &ns).await;
}

fn job(name: &str, annotations: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": annotations},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "migrate", "image": "example.invalid/app:1"}]}}},
    }))
    .expect("valid job")
}

fn job_condition(type_: &'static str) -> impl Fn(Option<&Job>) -> bool {
    move |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
    }
}

#[tokio::test]
async fn jobs_complete_or_fail_as_their_pods_do() {
    let client = common::client().await;
    let ns = common::namespace(&client, "jobs").await;
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &job("succeeds", json!({})))
        .await
        .expect("create");
    api.create(
        &PostParams::default(),
        &job("fails", json!({ FAIL_ANNOTATION: "true" })),
    )
    .await
    .expect("create");

    let done = common::wait_for(
        &api,
        "succeeds",
        LIMIT,
        "Complete",
        job_condition("Complete"),
    )
    .await;
    assert_eq!(
        done.and_then(|j| j.status).and_then(|s| s.succeeded),
        Some(1)
    );
    let failed = common::wait_for(&api, "fails", LIMIT, "Failed", job_condition("Failed")).await;
    assert_eq!(
        failed.and_then(|j| j.status).and_then(|s| s.failed),
        Some(1)
    );
    assert!(!job_condition("Complete")(
        api.get("fails").await.ok().as_ref()
    ));
    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn pods_can_be_made_to_fail_stay_unready_or_become_ready_late() {
    let client = common::client().await;
    let ns = common::namespace(&client, "steer").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for (name, annotations) in [
        ("crashing", json!({ FAIL_ANNOTATION: "true" })),
        ("unready", json!({ UNREADY_ANNOTATION: "true" })),
        ("late", json!({ READY_AFTER_ANNOTATION: "3000" })),
    ] {
        api.create(
            &PostParams::default(),
            &deployment(name, 1, json!({}), annotations),
        )
        .await
        .expect("create");
    }

    // The late one becomes available, and not before its delay.
    common::wait_for(&api, "late", LIMIT, "available", rolled_out(1)).await;
    let late = pods_of(&client, &ns, "late").await.remove(0);
    let status = late.status.expect("status");
    let started = status.start_time.expect("start time").0;
    let ready_at = status
        .conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_transition_time)
        .expect("ready transition")
        .0;
    // Pod timestamps have whole-second resolution: a true delay of 3 s shows as at least 2 s
    // (floor(t + 3) >= floor(t) + 2), while no delay would show 0 s or 1 s.
    assert!(
        ready_at.duration_since(started).as_millis() >= 2000,
        "ready {ready_at} started {started}"
    );

    for (name, state) in [
        ("crashing", SimState::CrashLoop),
        ("unready", SimState::Running { ready: false }),
    ] {
        let pod = pods_of(&client, &ns, name).await.remove(0).name_any();
        common::wait_for(&pods, &pod, LIMIT, "reported", move |p: Option<&Pod>| {
            p.and_then(observed).as_ref() == Some(&state)
        })
        .await;
        let d = api.get(name).await.expect("deployment");
        let status = d.status.expect("status");
        assert_eq!(
            status.available_replicas.unwrap_or(0),
            0,
            "{name} must not be available"
        );
        assert!(
            !condition_is(status.conditions.as_ref(), "Available", "True"),
            "{name}"
        );
    }
    common::cleanup(&client, &ns).await;
}
