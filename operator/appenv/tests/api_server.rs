//! What appenv writes is accepted by a real API server: the generated CRD, every example
//! AppEnvironment, and every object `appenv render` produces for every example.

mod common;

use appenv::cli::render::render;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::discovery::{Scope, pinned_kind};
use serde_json::{Value, json};

const MANAGER: &str = "appenv-tests";

/// Server-side apply of one rendered object; `dry_run` unless it is a namespace.
async fn apply(client: &Client, object: &Value, dry_run: bool) -> Result<(), String> {
    let types: TypeMeta = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
    let (resource, caps) = pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{gvk:?}: {e}"))?;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api: Api<DynamicObject> = match (caps.scope, object["metadata"]["namespace"].as_str()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply(MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map(|_| ())
        .map_err(|e| format!("{} {name}: {e}", types.kind))
}

#[tokio::test]
async fn the_crd_examples_and_every_rendered_object_are_accepted_by_the_api_server() {
    let client = common::client().await;
    appenv_controller::crd::install(&client, MANAGER)
        .await
        .expect("the API server accepts the generated CRD");
    let settings = common::example_settings();
    let files = common::example_files();

    // `render` has no cluster and writes `autoscaling/v2`; the operator applies the same fields
    // in the version the server serves (`v2beta2` on 1.20), and so does this test.
    let hpa_version = appenv_controller::cluster_apis(&client)
        .await
        .hpa
        .expect("the server serves HorizontalPodAutoscalers");
    let mut failures = Vec::new();
    let mut accepted = 0;
    let mut namespaces = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let source = file.display().to_string();
        // The AppEnvironment itself, as a user would `kubectl apply` it.
        let env: Value = serde_norway::from_str(&text).expect("yaml");
        if let Err(e) = apply(&client, &env, true).await {
            failures.push(format!("{source}: AppEnvironment: {e}"));
        }
        let rendered = render(&text, &source, &settings, true).expect("example renders");
        for document in serde_norway::Deserializer::from_str(&rendered) {
            let mut object: Value =
                serde::Deserialize::deserialize(document).expect("rendered yaml");
            if object["apiVersion"] == "autoscaling/v2" {
                object["apiVersion"] = json!(format!("autoscaling/{}", hpa_version.as_str()));
            }
            let is_namespace = object["kind"] == "Namespace";
            if is_namespace {
                namespaces.push(
                    object["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            match apply(&client, &object, !is_namespace).await {
                Ok(()) => accepted += 1,
                Err(e) => failures.push(format!("{source}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "rejected by the API server:\n{}",
        failures.join("\n")
    );
    assert!(accepted >= 40, "only {accepted} objects checked");

    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let _ = api.delete(&ns, &DeleteParams::default()).await;
    }
}
