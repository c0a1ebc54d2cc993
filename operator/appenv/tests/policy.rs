//! Who may take which namespace, on a real API server: an environment adopts only a namespace
//! that opts in (its `appenv.dev/adoptable: "true"` label) or that the operator lists; never the
//! operator's own, never one another environment has, never by a preview. Each refusal is
//! Valid=False naming the field, and nothing is applied there: the namespace's labels and
//! objects stay as they were.

mod common;

use appenv_api::{AppEnvironment, Phase};
use appenv_controller::{self as controller, Metrics, Options};
use common::{TEST_LABEL, apply, example};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const TEST: &str = "policy";
/// Stands for the operator's own namespace (the chart sets its release namespace).
const OPERATOR_NS: &str = "policy-operator";

struct Operator(tokio::task::JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn operator(client: &Client) -> Operator {
    appenv_controller::crd::install(client, "appenv-tests")
        .await
        .expect("CRD installs");
    let options = Options {
        settings: appenv_core::settings::Settings {
            operator_namespace: Some(
                appenv_core::settings::DnsLabel::parse(OPERATOR_NS).expect("namespace"),
            ),
            ..common::example_settings()
        },
        resync: Duration::from_secs(30),
        selector: Some(format!("{TEST_LABEL}={TEST}")),
        concurrency: 4,
    };
    Operator(tokio::spawn(controller::run_with_metrics(
        client.clone(),
        options,
        Arc::new(Metrics::default()),
    )))
}

/// A namespace that is not an environment's, with `labels` and one ConfigMap of its own.
async fn team_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    ns.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "team-config", "namespace": name},
        "data": {"OWNER": "team"},
    }))
    .expect("config map");
    Api::<ConfigMap>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &config)
        .await
        .expect("config map");
}

async fn labels_of(client: &Client, name: &str) -> BTreeMap<String, String> {
    Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .expect("namespace")
        .labels()
        .clone()
}

/// Wait for Valid=False on `env`; its message.
async fn refused(client: &Client, env: &str) -> String {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let found = common::wait_for(
        &api,
        env,
        LIMIT,
        "Valid=False",
        |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.condition("Valid"))
                .is_some_and(|c| c.status == "False")
        },
    )
    .await
    .expect("environment");
    assert_eq!(
        found.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Invalid)
    );
    found
        .condition("Valid")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Nothing of appenv's in `ns`, and its labels as they were.
async fn untouched(client: &Client, ns: &str, labels: &BTreeMap<String, String>) {
    assert_eq!(&labels_of(client, ns).await, labels, "labels of {ns}");
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(deployments.items.is_empty(), "nothing applied in {ns}");
    let configs = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("appenv.dev/environment"))
        .await
        .expect("list");
    assert!(configs.items.is_empty(), "no appenv ConfigMap in {ns}");
}

fn adopting(file: &str, env: &str, ns: &str) -> serde_json::Value {
    let mut spec = example(file, env, TEST);
    spec["spec"]["namespace"] = json!({"name": ns, "adopt": true});
    spec
}

#[tokio::test]
async fn only_namespaces_that_opt_in_are_adopted_and_refusals_touch_nothing() {
    let client = common::client().await;
    let _operator = operator(&client).await;
    team_namespace(&client, OPERATOR_NS, &[]).await;
    team_namespace(&client, "team-unlabelled", &[("team", "payments")]).await;
    team_namespace(
        &client,
        "team-adoptable",
        &[("appenv.dev/adoptable", "true")],
    )
    .await;

    // The operator's own namespace, even when asked to adopt it.
    let before = labels_of(&client, OPERATOR_NS).await;
    apply(
        &client,
        &adopting("aifacade.yaml", "policy-own", OPERATOR_NS),
    )
    .await;
    let message = refused(&client, "policy-own").await;
    assert!(
        message
            .contains("spec.namespace.name: \"policy-operator\" is the operator's own namespace"),
        "{message}"
    );
    untouched(&client, OPERATOR_NS, &before).await;

    // A namespace that did not opt in.
    let before = labels_of(&client, "team-unlabelled").await;
    apply(
        &client,
        &adopting("aifacade.yaml", "policy-unlabelled", "team-unlabelled"),
    )
    .await;
    let message = refused(&client, "policy-unlabelled").await;
    assert!(
        message.contains(
            "spec.namespace.adopt: namespace \"team-unlabelled\" does not let environments adopt it"
        ),
        "{message}"
    );
    untouched(&client, "team-unlabelled", &before).await;
    // Naming it without adopt does not take it either.
    let mut owning = example("aifacade.yaml", "policy-owning", TEST);
    owning["spec"]["namespace"] = json!({"name": "team-unlabelled"});
    apply(&client, &owning).await;
    let message = refused(&client, "policy-owning").await;
    assert!(
        message.contains("exists and is no environment's"),
        "{message}"
    );
    untouched(&client, "team-unlabelled", &before).await;

    // A preview never adopts, not even a namespace that opts in.
    let before = labels_of(&client, "team-adoptable").await;
    let mut preview = adopting(
        "flask-react-template-preview.yaml",
        "policy-preview",
        "team-adoptable",
    );
    preview["spec"]["namespace"]["copy"] =
        json!([{"namespace": common::EXAMPLE_SOURCES, "name": "doppler-secrets"}]);
    apply(&client, &preview).await;
    let message = refused(&client, "policy-preview").await;
    assert!(
        message.contains("spec.namespace.adopt: a preview never adopts a namespace"),
        "{message}"
    );
    untouched(&client, "team-adoptable", &before).await;

    // A namespace that opts in is adopted (no Pod Security labels unless asked)...
    apply(
        &client,
        &adopting("aifacade.yaml", "policy-adopter", "team-adoptable"),
    )
    .await;
    common::provide_example_secrets(&client, "aifacade.yaml", "team-adoptable").await;
    let api: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(&api, "policy-adopter", LIMIT, "Ready", common::ready).await;
    let labels = labels_of(&client, "team-adoptable").await;
    assert_eq!(
        labels.get("appenv.dev/environment").map(String::as_str),
        Some("policy-adopter")
    );
    assert!(
        !labels.contains_key("pod-security.kubernetes.io/enforce"),
        "an adopted namespace's other Pods are not bound: {labels:?}"
    );

    // ... and a second environment may not have it.
    apply(
        &client,
        &adopting("aifacade.yaml", "policy-second", "team-adoptable"),
    )
    .await;
    let message = refused(&client, "policy-second").await;
    assert!(
        message.contains(
            "spec.namespace.name: namespace \"team-adoptable\" belongs to environment \"policy-adopter\""
        ),
        "{message}"
    );

    // Deleting the adopter leaves the namespace and the team's own objects.
    api.delete("policy-adopter", &DeleteParams::default())
        .await
        .expect("delete");
    common::wait_for(
        &api,
        "policy-adopter",
        LIMIT,
        "deleted",
        |e: Option<&AppEnvironment>| e.is_none(),
    )
    .await;
    let ns = Api::<Namespace>::all(client.clone())
        .get("team-adoptable")
        .await
        .expect("the adopted namespace stays");
    assert!(ns.metadata.deletion_timestamp.is_none());
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), "team-adoptable")
            .get_opt("team-config")
            .await
            .expect("get")
            .is_some()
    );
    for env in [
        "policy-own",
        "policy-unlabelled",
        "policy-owning",
        "policy-preview",
        "policy-second",
    ] {
        let _ = api.delete(env, &DeleteParams::default()).await;
    }
}
