//! Support of the autoscaling tests: KEDA's CRD (our own minimal definition), an operator
//! per test, `kubectl` and `appenv` run against the shared cluster.

use appenv_core::settings::Settings;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::wait::conditions;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Install the stand-in of KEDA's ScaledObject CRD and wait until it is served.
pub async fn install_keda_crd(client: &Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keda-scaledobjects.yaml");
    let crd: CustomResourceDefinition =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("CRD");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "scaledobjects.keda.sh",
        &PatchParams::apply("appenv-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("KEDA CRD installs");
    super::wait_for(
        &api,
        "scaledobjects.keda.sh",
        Duration::from_secs(60),
        "established",
        conditions::is_crd_established(),
    )
    .await;
}

/// An operator for the environments labelled for `test`, with the default settings.
pub async fn operator(client: &Client, test: &str) -> super::Operator {
    super::operator(client, test, Settings::default()).await
}

/// `PROGRAM ARGS` with the shared cluster's kubeconfig.
fn run(program: &str, args: &[&str]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig());
    tokio::task::block_in_place(|| command.output()).expect("run")
}

/// `kubectl ARGS`: whether it succeeded, and what it printed.
pub fn kubectl(args: &[&str]) -> (bool, String) {
    let out = run("kubectl", args);
    (out.status.success(), text(&out))
}

/// `appenv ARGS`: whether it succeeded, and what it printed.
pub fn appenv(args: &[&str]) -> (bool, String) {
    let out = run(env!("CARGO_BIN_EXE_appenv"), args);
    (out.status.success(), text(&out))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// KEDA's ScaledObjects in `namespace`.
pub fn scaled_objects(client: &Client, namespace: &str) -> Api<DynamicObject> {
    dynamic(
        client,
        namespace,
        "keda.sh",
        "v1alpha1",
        "ScaledObject",
        "scaledobjects",
    )
}

/// HorizontalPodAutoscalers in `namespace`, in the version the 1.20 server offers with CPU
/// targets (k8s-openapi has only `v2`, which 1.20 does not serve).
pub fn hpas(client: &Client, namespace: &str) -> Api<DynamicObject> {
    dynamic(
        client,
        namespace,
        "autoscaling",
        "v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    )
}

fn dynamic(
    client: &Client,
    namespace: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}
