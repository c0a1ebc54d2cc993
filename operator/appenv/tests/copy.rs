//! `spec.namespace.copy` on a real API server: Secrets and ConfigMaps copied into an
//! environment's namespace from a namespace the operator allows, kept current, kept as last
//! copied (and the environment Degraded, naming the object) when the source disappears,
//! pruned when the spec stops naming them; a copy from any other namespace is refused.

mod common;

use appenv_api::{AppEnvironment, Phase};
use appenv_controller::{self as controller, Metrics, Options};
use common::{EXAMPLE_SOURCES, TEST_LABEL, apply, example};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

struct Operator(tokio::task::JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn operator(client: &Client, test: &str) -> Operator {
    appenv_controller::crd::install(client, "appenv-tests")
        .await
        .expect("CRD installs");
    common::example_sources(client).await;
    let options = Options {
        settings: common::example_settings(),
        resync: Duration::from_secs(30),
        selector: Some(format!("{TEST_LABEL}={test}")),
        concurrency: 4,
    };
    Operator(tokio::spawn(controller::run_with_metrics(
        client.clone(),
        options,
        Arc::new(Metrics::default()),
    )))
}

fn secret(name: &str, value: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": EXAMPLE_SOURCES},
        "stringData": {"API_KEY": value},
    }))
    .expect("secret")
}

async fn create_source(client: &Client, name: &str, value: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), EXAMPLE_SOURCES);
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &secret(name, value))
        .await
        .expect("source Secret");
}

/// Wait until the environment's condition `type_` has `status`; its message.
async fn condition(
    client: &Client,
    name: &str,
    type_: &'static str,
    status: &'static str,
) -> String {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let env = common::wait_for(
        &api,
        name,
        LIMIT,
        type_,
        move |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.condition(type_))
                .is_some_and(|c| c.status == status)
        },
    )
    .await
    .expect("environment");
    env.condition(type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn api_key(secret: Option<&Secret>) -> Option<Vec<u8>> {
    let data = secret?.data.as_ref()?;
    data.get("API_KEY").map(|ByteString(bytes)| bytes.clone())
}

#[tokio::test]
async fn copies_follow_their_source_survive_its_loss_and_go_with_the_spec() {
    let client = common::client().await;
    let _operator = operator(&client, "copy").await;
    let (name, source) = ("copy-frt", "copy-test-creds");
    create_source(&client, source, "first").await;
    let flags: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "copy-test-flags", "namespace": EXAMPLE_SOURCES},
        "data": {"FEATURE": "on"},
    }))
    .expect("config map");
    let _ = Api::<ConfigMap>::namespaced(client.clone(), EXAMPLE_SOURCES)
        .create(&PostParams::default(), &flags)
        .await;

    let mut env = example("flask-react-template-preview.yaml", name, "copy");
    env["spec"]["namespace"]["copy"] = json!([
        {"kind": "Secret", "namespace": EXAMPLE_SOURCES, "name": "doppler-secrets"},
        {"kind": "Secret", "namespace": EXAMPLE_SOURCES, "name": source},
        {"kind": "ConfigMap", "namespace": EXAMPLE_SOURCES, "name": "copy-test-flags"},
    ]);
    env["spec"]["envFrom"] = json!([
        {"secretRef": {"name": "doppler-secrets"}},
        {"secretRef": {"name": source}},
        {"configMapRef": {"name": "copy-test-flags"}},
    ]);
    apply(&client, &env).await;
    condition(&client, name, "Ready", "True").await;

    // The copies: same content, owned by the environment, saying where from.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), name);
    let copy = secrets.get(source).await.expect("the Secret is copied");
    assert_eq!(api_key(Some(&copy)), Some(b"first".to_vec()));
    assert_eq!(
        copy.annotations()
            .get("appenv.dev/copied-from")
            .map(String::as_str),
        Some(format!("{EXAMPLE_SOURCES}/{source}").as_str())
    );
    assert_eq!(
        copy.owner_references().first().map(|o| o.kind.as_str()),
        Some("AppEnvironment")
    );
    assert!(
        secrets
            .get_opt("doppler-secrets")
            .await
            .expect("get")
            .is_some()
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), name);
    let copied_flags = config_maps.get("copy-test-flags").await.expect("copied");
    assert_eq!(
        copied_flags
            .data
            .and_then(|d| d.get("FEATURE").cloned())
            .as_deref(),
        Some("on")
    );

    // A new value in the source reaches the copy (a watch, not the next resync).
    let sources: Api<Secret> = Api::namespaced(client.clone(), EXAMPLE_SOURCES);
    let mut changed = sources.get(source).await.expect("source");
    changed.data = None;
    changed.string_data = Some([("API_KEY".to_owned(), "second".to_owned())].into());
    sources
        .replace(source, &PostParams::default(), &changed)
        .await
        .expect("source changed");
    common::wait_for(
        &secrets,
        source,
        Duration::from_secs(20),
        "the new value",
        |s: Option<&Secret>| api_key(s) == Some(b"second".to_vec()),
    )
    .await;

    // The source disappears: Degraded, naming it; the copy stays as last copied.
    sources
        .delete(source, &DeleteParams::default())
        .await
        .expect("source deleted");
    let message = condition(&client, name, "Degraded", "True").await;
    assert!(
        message.contains(&format!(
            "spec.namespace.copy[1]: Secret {EXAMPLE_SOURCES}/{source} not found"
        )),
        "{message}"
    );
    let kept = secrets.get_opt(source).await.expect("get");
    assert_eq!(
        api_key(kept.as_ref()),
        Some(b"second".to_vec()),
        "kept as last copied"
    );
    let env_now = Api::<AppEnvironment>::all(client.clone())
        .get(name)
        .await
        .expect("env");
    assert_eq!(env_now.status.and_then(|s| s.phase), Some(Phase::Degraded));

    // It comes back: Ready again.
    create_source(&client, source, "third").await;
    condition(&client, name, "Ready", "True").await;
    common::wait_for(
        &secrets,
        source,
        Duration::from_secs(20),
        "the restored value",
        |s: Option<&Secret>| api_key(s) == Some(b"third".to_vec()),
    )
    .await;

    // The spec stops naming the ConfigMap: its copy is pruned; the Secrets stay.
    env["spec"]["namespace"]["copy"] = json!([
        {"kind": "Secret", "namespace": EXAMPLE_SOURCES, "name": "doppler-secrets"},
        {"kind": "Secret", "namespace": EXAMPLE_SOURCES, "name": source},
    ]);
    env["spec"]["envFrom"] = json!([
        {"secretRef": {"name": "doppler-secrets"}},
        {"secretRef": {"name": source}},
    ]);
    apply(&client, &env).await;
    common::wait_for(
        &config_maps,
        "copy-test-flags",
        Duration::from_secs(30),
        "pruned",
        |c: Option<&ConfigMap>| c.is_none(),
    )
    .await;
    assert!(secrets.get_opt(source).await.expect("get").is_some());
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_copy_from_a_namespace_the_operator_does_not_allow_is_refused() {
    let client = common::client().await;
    let _operator = operator(&client, "copy-refused").await;
    let name = "copy-refused";
    let mut env = example("aifacade.yaml", name, "copy-refused");
    // Another team's namespace, or the cluster's own: a spec author may name anything.
    env["spec"]["namespace"]["copy"] = json!([
        {"kind": "Secret", "namespace": "kube-system", "name": "bootstrap-token-abcdef"},
    ]);
    apply(&client, &env).await;
    let message = condition(&client, name, "Valid", "False").await;
    assert!(
        message.contains(&format!(
            "spec.namespace.copy[0].namespace: \"kube-system\": not a namespace this operator \
             copies from (allowed: {EXAMPLE_SOURCES}"
        )),
        "{message}"
    );
    let copied = Api::<Secret>::namespaced(client.clone(), name)
        .get_opt("bootstrap-token-abcdef")
        .await
        .expect("get");
    assert!(copied.is_none(), "nothing is copied");
    let env_now = Api::<AppEnvironment>::all(client.clone())
        .get(name)
        .await
        .expect("env");
    assert_eq!(env_now.status.and_then(|s| s.phase), Some(Phase::Invalid));
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
