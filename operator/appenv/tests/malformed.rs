//! One AppEnvironment the operator cannot read must not stall the others. The real CRD's schema
//! keeps such objects out, so this binary (with its own control plane) installs a variant whose
//! spec accepts anything, as a cluster with an older or hand-edited CRD might.

mod common;

use appenv_api::AppEnvironment;
use appenv_controller::{self as controller, Options};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::conditions;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn an_unreadable_environment_does_not_stall_the_others() {
    let client = common::client().await;
    let mut crd = serde_json::to_value(appenv_api::crd::crd_for_server(20)).expect("crd");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("crd");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "appenvironments.appenv.dev",
        &PatchParams::apply("appenv-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("permissive CRD");
    common::wait_for(
        &crds,
        "appenvironments.appenv.dev",
        Duration::from_secs(30),
        "established",
        conditions::is_crd_established(),
    )
    .await;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("appenv.dev", "v1alpha1", "AppEnvironment"),
        "appenvironments",
    );
    let raw: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let pp = PatchParams::apply("appenv-tests").force();
    // Created first, so the operator meets it before the good one.
    let broken = json!({"apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
        "metadata": {"name": "broken"}, "spec": {"app": 42, "image": ["not", "a", "string"]}});
    raw.patch("broken", &pp, &Patch::Apply(&broken))
        .await
        .expect("stored");
    let good = json!({"apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
        "metadata": {"name": "good"}, "spec": {"app": "good", "image": "example.invalid/good:1"}});
    raw.patch("good", &pp, &Patch::Apply(&good))
        .await
        .expect("stored");

    let task = tokio::spawn(controller::run(client.clone(), Options::default()));
    let envs: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(
        &envs,
        "good",
        Duration::from_secs(120),
        "Ready",
        |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.status.as_ref()).and_then(|s| s.phase)
                == Some(appenv_api::Phase::Ready)
        },
    )
    .await;
    let still_broken = raw.get("broken").await.expect("broken still there");
    assert!(
        still_broken.data.get("status").is_none(),
        "nothing was made of the unreadable object"
    );
    task.abort();
}
