//! Worker autoscaling on a cluster without KEDA (its own test binary, so its own cluster: the
//! KEDA tests install KEDA's CRD in theirs): a HorizontalPodAutoscaler on CPU of the version
//! the 1.20 API server serves (`autoscaling/v2beta2`), and a `kubectl scale` of a worker appenv
//! scales is reverted with an Event that says how to scale instead.

mod common;

use appenv_api::AppEnvironment;
use common::autoscaling::{hpas, kubectl, operator};
use common::{TEST_LABEL, apply, ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

async fn wait_ready(client: &Client, name: &str) -> AppEnvironment {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(&api, name, LIMIT, "Ready", ready)
        .await
        .expect("exists")
}

async fn reverted_events(client: &Client, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ReplicasReverted"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_keda_an_hpa_and_a_manual_scale_is_reverted_with_an_event() {
    let client = common::client().await;
    let test = "hpa";
    let _operator = operator(&client, test).await;
    let name = "hpa-shop";
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: test}},
        "spec": {
            "app": "shop",
            "image": "example.com/shop:1",
            "namespace": {"name": name},
            "redis": {},
            "workers": [
                {"name": "celery", "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "queue": {"type": "Celery", "names": ["celery"]}}},
                {"name": "mail", "replicas": 1},
            ],
        },
    });
    apply(&client, &env).await;
    wait_ready(&client, name).await;

    // The HorizontalPodAutoscaler, in the version the server offers (1.20: v2beta2).
    let hpas = hpas(&client, name);
    let hpa = hpas
        .get("shop-celery")
        .await
        .expect("HorizontalPodAutoscaler");
    let spec = &hpa.data["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "shop-celery");
    assert_eq!(
        (spec["minReplicas"].as_i64(), spec["maxReplicas"].as_i64()),
        (Some(2), Some(4))
    );
    assert_eq!(spec["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(
        spec["metrics"][0]["resource"]["target"]["averageUtilization"],
        75
    );
    assert!(hpas.get_opt("shop-mail").await.expect("get").is_none());
    // No KEDA here: the ScaledObject API is not served.
    let absent = client.list_api_group_resources("keda.sh/v1alpha1").await;
    assert!(
        matches!(absent, Err(kube::Error::Api(ref e)) if e.code == 404),
        "{absent:?}"
    );

    // A manual scale of the worker appenv scales: set back to the spec's, one Event saying so.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), name);
    let (ok, out) = kubectl(&[
        "scale",
        "deployment",
        "shop-mail",
        "--replicas=5",
        "-n",
        name,
    ]);
    assert!(ok, "{out}");
    let started = Instant::now();
    let event = loop {
        if let Some(event) = reverted_events(&client, name).await.into_iter().next() {
            break event;
        }
        assert!(started.elapsed() < LIMIT, "no ReplicasReverted Event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let message = event.message.clone().unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "worker-mail: Deployment shop-mail was scaled by hand; reverted from 5 to 1 replicas, as the spec says. \
             To scale it, run `appenv scale {name} mail=5` or set spec.workers[1].replicas (or spec.workers[1].autoscaling to follow its queue)."
        )
    );
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    common::wait_for(
        &deployments,
        "shop-mail",
        LIMIT,
        "reverted to 1",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas) == Some(1)
        },
    )
    .await;
    // Later reconciles (a spec change) add no second Event for the same revert.
    let mut changed = env.clone();
    changed["spec"]["env"] = json!([{"name": "AFTER", "value": "1"}]);
    apply(&client, &changed).await;
    wait_ready(&client, name).await;
    assert_eq!(
        reverted_events(&client, name).await.len(),
        1,
        "one Event per revert"
    );
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
