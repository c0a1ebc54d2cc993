//! Pod Security admission on the local cluster: its webhook refuses, in a namespace labelled
//! `pod-security.kubernetes.io/enforce: restricted`, a Pod that violates the restricted profile,
//! with the real admission's message, and admits it elsewhere; a Deployment whose template
//! violates it is created, and its ReplicaSet reports the refusal as a `FailedCreate` Event and
//! the Deployment as a `ReplicaFailure` condition, which is what the operator reports. And
//! every Pod template appenv renders for the examples passes the webhook's checks (the example
//! tests of controller.rs, preview.rs and cluster.rs show it on the cluster).

mod common;

use appenv::cli::render::render;
use appenv_localcluster::admission::{ENFORCE_LABEL, WEBHOOK_NAME, check};
use appenv_localcluster::{ControlPlane, StartOptions};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod, PodTemplateSpec};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// What the webhook says of [`violating_pod_spec`], after the Pod's name.
const VIOLATIONS: &str = "is forbidden: violates PodSecurity \"restricted:latest\": \
    privileged (container \"app\" must not set securityContext.privileged=true), \
    allowPrivilegeEscalation != false (container \"app\" must set \
    securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \
    \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or \
    container \"app\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or \
    container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \
    \"Localhost\")";

/// A privileged container with none of restricted's settings.
fn violating_pod_spec() -> serde_json::Value {
    json!({
        "containers": [{
            "name": "app",
            "image": "registry.example/app:1",
            "securityContext": {"privileged": true}
        }]
    })
}

fn violating_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": violating_pod_spec()
    }))
    .expect("a Pod")
}

/// How the API server introduces a refusal: the webhook's name, unless the server has Pod
/// Security admission of its own (binaries of 1.23 or later from APPENV_K8S_BIN_DIR).
fn refused_by() -> String {
    if appenv_localcluster::shared().pod_security_webhook() {
        format!("admission webhook \"{WEBHOOK_NAME}\" denied the request: ")
    } else {
        String::new()
    }
}

/// A test namespace labelled as appenv labels every environment's namespace: at creation, as
/// appenv applies it (a label patched on afterwards can reach the webhook's namespace selector
/// after the next Pod does).
async fn restricted_namespace(client: &Client, test: &str) -> String {
    common::namespace_labelled(client, test, &[(ENFORCE_LABEL, "restricted")]).await
}

#[tokio::test]
async fn a_pod_violating_restricted_is_refused_in_a_restricted_namespace() {
    let client = common::client().await;
    let ns = restricted_namespace(&client, "psa-refused").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let refusal = pods
        .create(&PostParams::default(), &violating_pod("privileged"))
        .await
        .expect_err("the webhook refuses the Pod");
    let kube::Error::Api(status) = refusal else {
        panic!("expected the API server's refusal, got {refusal:?}");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert_eq!(status.reason, "Forbidden", "{status:?}");
    assert_eq!(
        status.message,
        format!("{}pods \"privileged\" {VIOLATIONS}", refused_by())
    );
    assert!(pods.get_opt("privileged").await.expect("get").is_none());

    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn the_same_pod_is_admitted_in_a_namespace_without_the_label() {
    let client = common::client().await;
    let ns = common::namespace(&client, "psa-unlabelled").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let created = pods
        .create(&PostParams::default(), &violating_pod("privileged"))
        .await
        .expect("no Pod Security level applies here");
    let privileged = created
        .spec
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.security_context)
        .and_then(|s| s.privileged);
    assert_eq!(privileged, Some(true));

    common::cleanup(&client, &ns).await;
}

#[tokio::test]
async fn a_deployment_violating_restricted_reports_the_refusal_of_its_pods() {
    let client = common::client().await;
    let ns = restricted_namespace(&client, "psa-deployment").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": violating_pod_spec()
            }
        }
    }))
    .expect("a Deployment");
    // Workloads are not refused, only their Pods (the real admission only warns on them).
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("the Deployment itself is admitted");

    let refused = |message: &str| {
        message.contains(&format!("{}pods \"web-", refused_by())) && message.contains(VIOLATIONS)
    };
    let failed = common::wait_for(
        &deployments,
        "web",
        LIMIT,
        "reporting ReplicaFailure",
        |d: Option<&Deployment>| {
            replica_failure(d)
                .is_some_and(|(reason, message)| reason == "FailedCreate" && refused(&message))
        },
    )
    .await;
    let (_, message) = replica_failure(failed.as_ref()).expect("the condition");
    assert!(refused(&message), "{message}");

    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let owned = replica_sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list ReplicaSets");
    let [replica_set] = owned.items.as_slice() else {
        panic!("one ReplicaSet expected, got {:?}", owned.items);
    };
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let selector = format!(
        "involvedObject.kind=ReplicaSet,involvedObject.name={},reason=FailedCreate",
        replica_set.name_any()
    );
    let event = tokio::time::timeout(
        LIMIT,
        watcher(events, watcher::Config::default().fields(&selector))
            .applied_objects()
            .try_filter(|e| {
                std::future::ready(
                    e.message
                        .as_deref()
                        .is_some_and(|m| m.starts_with("Error creating: ") && refused(m)),
                )
            })
            .boxed()
            .try_next(),
    )
    .await
    .unwrap_or_else(|_| panic!("no FailedCreate Event for {selector} within {LIMIT:?}"))
    .expect("watch Events")
    .expect("an Event");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let none = pods.list(&ListParams::default()).await.expect("list Pods");
    assert!(
        none.items.is_empty(),
        "no Pod was admitted: {:?}",
        none.items
    );

    common::cleanup(&client, &ns).await;
}

/// The Deployment's `ReplicaFailure` condition, if true: its reason and message.
fn replica_failure(deployment: Option<&Deployment>) -> Option<(String, String)> {
    let conditions = deployment?.status.as_ref()?.conditions.as_ref()?;
    let failure = conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some((
        failure.reason.clone().unwrap_or_default(),
        failure.message.clone().unwrap_or_default(),
    ))
}

#[test]
fn every_pod_template_appenv_renders_for_the_examples_is_admitted() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let settings = common::example_settings();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(repo.join("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        let file = path.file_name().and_then(|n| n.to_str()).expect("name");
        if !file.ends_with(".yaml") || file.starts_with("invalid-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("example");
        let yaml = render(&text, file, &settings, false).expect("renders");
        for document in serde_norway::Deserializer::from_str(&yaml) {
            let object: Value = serde::Deserialize::deserialize(document).expect("yaml");
            let template = match object["kind"].as_str() {
                Some("Deployment" | "StatefulSet" | "Job") => &object["spec"]["template"],
                _ => continue,
            };
            let template: PodTemplateSpec =
                serde_json::from_value(template.clone()).expect("a Pod template");
            let violations = check(
                &template.spec.unwrap_or_default(),
                &template.metadata.unwrap_or_default(),
            );
            assert!(
                violations.is_empty(),
                "{file}: {} {}: {violations:?}",
                object["kind"],
                object["metadata"]["name"]
            );
            *kinds.entry(object["kind"].to_string()).or_default() += 1;
        }
    }
    // Web, workers and Redis (Deployments), PostgreSQL (a StatefulSet), migrations (a Job).
    let seen: Vec<&str> = kinds.keys().map(|k| k.trim_matches('"')).collect();
    assert_eq!(seen, ["Deployment", "Job", "StatefulSet"], "{kinds:?}");
    assert!(kinds.values().sum::<usize>() >= 10, "{kinds:?}");
}

/// The webhook lives in the control plane's process, not in the API server: it keeps refusing
/// across a pause and a restart of kube-apiserver (what the failure tests do).
#[tokio::test]
async fn the_webhook_outlives_api_server_pauses_and_restarts() {
    let control_plane = ControlPlane::start(StartOptions::default())
        .await
        .expect("the test's own control plane starts");
    let client = control_plane.client().await.expect("client");
    let ns = restricted_namespace(&client, "psa-restart").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let refuses = || async {
        match pods
            .create(&PostParams::default(), &violating_pod("privileged"))
            .await
        {
            Err(kube::Error::Api(status)) => status.message.contains(VIOLATIONS),
            Ok(_) => panic!("a violating Pod was admitted"),
            Err(_) => false,
        }
    };
    assert!(refuses().await);

    control_plane.pause_apiserver().expect("pause");
    control_plane.resume_apiserver().await.expect("resume");
    assert!(refuses().await, "refused after a pause");

    control_plane.restart_apiserver().await.expect("restart");
    // A restarted server calls no webhook until it has read their configurations again, and
    // refuses Pods meanwhile (failurePolicy: Fail): what it says then is not the refusal.
    let deadline = Instant::now() + LIMIT;
    while !refuses().await {
        assert!(
            Instant::now() < deadline,
            "the webhook's refusal not back within {LIMIT:?} of a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    control_plane.shutdown();
}

/// An environment whose spec breaks `restricted` through a field its author may set (an
/// AppArmor annotation on the web Pods): the webhook refuses the Pods, the ReplicaSet reports
/// `FailedCreate`, and appenv reports the environment Degraded with the admission's message.
#[tokio::test]
async fn an_environment_whose_pods_pod_security_refuses_is_degraded_with_the_reason() {
    use appenv_api::{AppEnvironment, Phase};
    let client = common::client().await;
    let test = "psa-env";
    let operator = common::operator(&client, test, common::example_settings()).await;
    let name = "psa-dojo";
    let mut env = common::example("dojo.yaml", name, test);
    env["spec"]["web"]["podAnnotations"] =
        json!({"container.apparmor.security.beta.kubernetes.io/web": "unconfined"});
    common::apply(&client, &env).await;
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let degraded = common::wait_for(
        &api,
        name,
        Duration::from_secs(120),
        "Degraded",
        |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.condition("Degraded"))
                .is_some_and(|c| c.status == "True")
        },
    )
    .await
    .expect("environment");
    drop(operator);
    let message = degraded
        .condition("Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.starts_with("web: ") && message.contains("FailedCreate"),
        "{message}"
    );
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\": forbidden AppArmor profile"),
        "{message}"
    );
    assert_eq!(degraded.status.and_then(|s| s.phase), Some(Phase::Degraded));
    let _ = api.delete(name, &Default::default()).await;
}
