//! Worker autoscaling on a cluster with KEDA's CRD (our minimal definition: the API without
//! KEDA's operator, so the tests play the autoscaler). In its own test binary: every test of a
//! binary shares one cluster, and `autoscaling_hpa.rs` needs one without KEDA.

mod common;

use appenv_api::AppEnvironment;
use common::autoscaling::{appenv, hpas, install_keda_crd, kubectl, operator, scaled_objects};
use common::{TEST_LABEL, apply, ready};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DeleteParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn environment(name: &str, test: &str, workers: Value) -> Value {
    json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: test}},
        "spec": {
            "app": "shop",
            "image": "example.com/shop:1",
            "namespace": {"name": name},
            "redis": {},
            "workers": workers,
        },
    })
}

/// Wait until the environment is Ready at its current generation.
async fn wait_ready(client: &Client, name: &str) -> AppEnvironment {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(&api, name, LIMIT, "Ready", ready)
        .await
        .expect("exists")
}

fn replicas(d: Option<&Deployment>) -> Option<i32> {
    d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas)
}

/// Wait until the Deployment has `want` replicas in its spec.
async fn wait_replicas(client: &Client, ns: &str, name: &str, want: i32) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    common::wait_for(
        &api,
        name,
        LIMIT,
        &format!("at {want} replicas"),
        move |d: Option<&Deployment>| replicas(d) == Some(want),
    )
    .await
    .expect("deployment")
}

/// Whether appenv's field manager owns the Deployment's `spec.replicas`.
fn appenv_owns_replicas(d: &Deployment) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some("appenv")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keda_a_scaled_object_scales_the_worker_and_appenv_leaves_its_replicas() {
    let client = common::client().await;
    install_keda_crd(&client).await;
    let test = "keda";
    let _operator = operator(&client, test).await;
    let name = "keda-shop";
    let auto = json!({"minReplicas": 1, "maxReplicas": 5, "queue": {"type": "RQ", "names": ["default", "high"], "targetLength": 20}});
    let workers = json!([
        {"name": "rq", "command": ["rq", "worker"], "autoscaling": auto},
        {"name": "mail", "replicas": 2},
    ]);
    apply(&client, &environment(name, test, workers.clone())).await;
    wait_ready(&client, name).await;

    // The ScaledObject: one redis trigger per queue, on the environment's Redis.
    let so = scaled_objects(&client, name)
        .get("shop-rq")
        .await
        .expect("ScaledObject");
    assert_eq!(so.data["spec"]["scaleTargetRef"]["name"], "shop-rq");
    assert_eq!(so.data["spec"]["minReplicaCount"], 1);
    assert_eq!(so.data["spec"]["maxReplicaCount"], 5);
    let triggers = so.data["spec"]["triggers"].as_array().expect("triggers");
    let lists: Vec<&Value> = triggers
        .iter()
        .map(|t| &t["metadata"]["listName"])
        .collect();
    assert_eq!(lists, [&json!("rq:queue:default"), &json!("rq:queue:high")]);
    assert_eq!(
        triggers[0]["metadata"]["address"],
        format!("shop-redis.{name}.svc:6379")
    );
    assert_eq!(triggers[0]["metadata"]["listLength"], "20");
    assert_eq!(
        so.metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].kind.as_str()),
        Some("AppEnvironment")
    );
    assert!(
        hpas(&client, name)
            .get_opt("shop-rq")
            .await
            .expect("get")
            .is_none(),
        "KEDA present: no HorizontalPodAutoscaler (KEDA makes its own)"
    );
    assert!(
        scaled_objects(&client, name)
            .get_opt("shop-mail")
            .await
            .expect("get")
            .is_none(),
        "only the autoscaled worker"
    );

    // The autoscaler (here: the test, as KEDA would) scales the worker; appenv does not own
    // the field, and a rollout of every Deployment (a new variable) leaves it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), name);
    let rq = deployments.get("shop-rq").await.expect("worker");
    assert!(
        !appenv_owns_replicas(&rq),
        "{:?}",
        rq.metadata.managed_fields
    );
    let (ok, out) = kubectl(&["scale", "deployment", "shop-rq", "--replicas=3", "-n", name]);
    assert!(ok, "{out}");
    let mut changed = environment(name, test, workers.clone());
    changed["spec"]["env"] = json!([{"name": "ROLL", "value": "1"}]);
    apply(&client, &changed).await;
    wait_ready(&client, name).await;
    let rq = deployments.get("shop-rq").await.expect("worker");
    let template_env = rq
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| format!("{:?}", p.containers[0].env));
    assert!(
        template_env.is_some_and(|e| e.contains("ROLL")),
        "the worker was applied again"
    );
    assert_eq!(
        replicas(Some(&rq)),
        Some(3),
        "the autoscaler's replicas stay"
    );

    // `appenv scale` refuses the autoscaled worker and scales the other one.
    let (ok, out) = appenv(&["scale", name, "rq=4"]);
    assert!(!ok, "{out}");
    assert!(out.contains("rq: autoscaled between 1 and 5 replicas (spec.workers[0].autoscaling): change minReplicas and maxReplicas instead"), "{out}");
    let (ok, out) = appenv(&["scale", name, "mail=3"]);
    assert!(ok, "{out}");
    assert!(out.contains("mail set to 3 replicas"), "{out}");
    wait_replicas(&client, name, "shop-mail", 3).await;
    let env: AppEnvironment = Api::all(client.clone()).get(name).await.expect("env");
    assert_eq!(env.spec.workers[1].replicas, Some(3));
    assert_eq!(env.spec.env.len(), 1, "the rest of the spec is kept");

    // No longer autoscaled: the ScaledObject is pruned and appenv sets the replicas again.
    let mut fixed = changed.clone();
    fixed["spec"]["workers"][0] = json!({"name": "rq", "command": ["rq", "worker"], "replicas": 2});
    fixed["spec"]["workers"][1]["replicas"] = json!(3);
    apply(&client, &fixed).await;
    wait_replicas(&client, name, "shop-rq", 2).await;
    common::wait_for(
        &scaled_objects(&client, name),
        "shop-rq",
        LIMIT,
        "pruned",
        |o: Option<&DynamicObject>| o.is_none(),
    )
    .await;
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// A worker that appenv scaled becomes autoscaled. On the 1.20 API server, a field the only
/// manager that set it stops applying is removed: the Deployment would fall back to the
/// default of 1 before the autoscaler moves it. appenv hands the field over instead, and the
/// replicas stay where they were until the autoscaler sets them.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_becomes_autoscaled_keeps_its_replicas() {
    let client = common::client().await;
    install_keda_crd(&client).await;
    let test = "keda-handover";
    let _operator = operator(&client, test).await;
    let name = "keda-handover";
    let workers = json!([{"name": "rq", "replicas": 4}]);
    apply(&client, &environment(name, test, workers)).await;
    wait_ready(&client, name).await;
    wait_replicas(&client, name, "shop-rq", 4).await;
    let auto = json!({"minReplicas": 1, "maxReplicas": 6, "queue": {"type": "Celery", "names": ["celery"]}});
    let workers = json!([{"name": "rq", "autoscaling": auto}]);
    apply(&client, &environment(name, test, workers)).await;
    wait_ready(&client, name).await;
    scaled_objects(&client, name)
        .get("shop-rq")
        .await
        .expect("ScaledObject");
    let rq = Api::<Deployment>::namespaced(client.clone(), name)
        .get("shop-rq")
        .await
        .expect("worker");
    assert!(
        !appenv_owns_replicas(&rq),
        "{:?}",
        rq.metadata.managed_fields
    );
    assert_eq!(replicas(Some(&rq)), Some(4), "not reset to 1");
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
