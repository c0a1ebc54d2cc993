//! No secret value ever reaches a log line, an Event, an AppEnvironment's status or /metrics:
//! `appenv operator` runs as a process with every log on (trace), reconciling environments
//! that reference Secrets (envFrom, secretKeyRef, an external database, the wildcard
//! certificate of previews), generate a PostgreSQL password, fail a migration, fail to apply
//! their credentials, and have an invalid spec; then every place an operator writes is
//! searched for those values, plain and base64-encoded.

mod common;

use appenv_api::{AppEnvironment, Phase};
use appenv_controller::secrets::ExposeSecret as _;
use appenv_localcluster::kubelet::FAIL_ANNOTATION;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TEST: &str = "secrets";
const LIMIT: Duration = Duration::from_secs(180);
/// The Secret every environment references through `envFrom` and `secretKeyRef`.
const APP_SECRET: &str = "app-secrets";

use common::{Process, free_port};

use appenv_localcluster::http_get as get;

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The forms in which `secret` could show up: itself, and its base64 encoding at each of the
/// three alignments it can have inside a longer encoded value (e.g. a Secret's `url`).
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    for offset in 0..3 {
        let mut bytes = vec![b'x'; offset];
        bytes.extend_from_slice(secret.as_bytes());
        let encoded = base64(&bytes);
        // Only the groups made of the secret's bytes alone.
        let first = if offset == 0 { 0 } else { 4 };
        let last = bytes.len() / 3 * 4;
        forms.push(encoded[first..last].to_owned());
    }
    forms
}

/// A namespace with the Secrets its environment reads made before the environment: labelled as
/// the namespace an environment of the same name kept (retained), which appenv lets that
/// environment own again (an unlabelled existing namespace it refuses: issue 19).
async fn create_namespace(client: &Client, name: &str) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    ns.metadata.labels = Some(BTreeMap::from([(
        appenv_core::build::ENVIRONMENT_LABEL.to_owned(),
        name.to_owned(),
    )]));
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn create_secret(client: &Client, ns: &str, name: &str, type_: &str, data: &[(&str, &str)]) {
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "type": type_,
        "stringData": data,
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

/// An environment of this test named `name` in the namespace of the same name, referencing
/// the namespace's [`APP_SECRET`] in every way a spec can.
fn environment(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["namespace"] = json!({"name": name});
    spec["envFrom"] = json!([{"secretRef": {"name": APP_SECRET}}]);
    spec["env"] = json!([{"name": "SIGNING_KEY",
        "valueFrom": {"secretKeyRef": {"name": APP_SECRET, "key": "SIGNING_KEY"}}}]);
    json!({
        "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {common::TEST_LABEL: TEST}},
        "spec": spec,
    })
}

async fn wait_env(
    client: &Client,
    name: &str,
    what: &str,
    cond: impl Fn(&AppEnvironment) -> bool + Send + 'static,
) {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(
        &api,
        name,
        LIMIT,
        what,
        move |e: Option<&AppEnvironment>| e.is_some_and(&cond),
    )
    .await;
}

fn condition_reason(env: &AppEnvironment, type_: &str) -> Option<String> {
    env.condition(type_).map(|c| c.reason.clone())
}

/// Every object of kind `K` in `namespaces`, as JSON.
async fn objects_in<K>(client: &Client, namespaces: &[String]) -> String
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Serialize,
{
    let mut all = Vec::new();
    for ns in namespaces {
        let list = Api::<K>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("list");
        all.extend(list.items);
    }
    serde_json::to_string(&all).expect("JSON")
}

/// Where `needle` occurs in `haystack`, shown with the needle masked.
fn leak(haystack: &str, needle: &str) -> Option<String> {
    let at = haystack.find(needle)?;
    let start = (0..=at.saturating_sub(200))
        .rev()
        .find(|i| haystack.is_char_boundary(*i))
        .unwrap_or(0);
    let end = ((at + needle.len() + 200).min(haystack.len())..=haystack.len())
        .find(|i| haystack.is_char_boundary(*i))
        .unwrap_or(haystack.len());
    Some(haystack[start..end].replace(needle, "<SECRET>"))
}

#[tokio::test]
async fn no_secret_value_reaches_logs_events_status_or_metrics() {
    assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
    let client = common::client().await;
    let pid = std::process::id();
    let name = |what: &str| format!("sec-{what}-{pid}");
    let (full, failing, invalid, external, preview, conflict) = (
        name("full"),
        name("failing"),
        name("invalid"),
        name("external"),
        name("preview"),
        name("conflict"),
    );
    let environments = [&full, &failing, &invalid, &external, &preview, &conflict];
    let tls_ns = name("tls");

    // Distinctive values in the referenced Secrets.
    let token = || {
        let token = appenv_controller::secrets::generate_password().expect("random");
        token.expose_secret().to_owned()
    };
    let (api_token, signing_key, external_password, tls_key, conflict_password) =
        (token(), token(), token(), token(), token());
    let mut namespaces: Vec<String> = environments.iter().map(|n| (*n).clone()).collect();
    namespaces.push(tls_ns.clone());
    for ns in &namespaces {
        create_namespace(&client, ns).await;
    }
    for ns in environments {
        create_secret(
            &client,
            ns,
            APP_SECRET,
            "Opaque",
            &[("API_TOKEN", &api_token), ("SIGNING_KEY", &signing_key)],
        )
        .await;
    }
    let external_url = format!("postgresql://app:{external_password}@db.example.invalid:5432/app");
    create_secret(
        &client,
        &external,
        "external-db",
        "Opaque",
        &[("uri", &external_url)],
    )
    .await;
    let certificate = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        "c".repeat(64)
    );
    let private_key =
        format!("-----BEGIN PRIVATE KEY-----\n{tls_key}\n-----END PRIVATE KEY-----\n");
    create_secret(
        &client,
        &tls_ns,
        "wildcard-tls",
        "kubernetes.io/tls",
        &[("tls.crt", &certificate), ("tls.key", &private_key)],
    )
    .await;
    // Credentials that exist already, of a type the operator cannot apply over (a Secret's
    // type is immutable): it reads this password, then its apply fails, on every reconcile.
    create_secret(
        &client,
        &conflict,
        "conflict-postgres-credentials",
        "kubernetes.io/basic-auth",
        &[("username", "app"), ("password", &conflict_password)],
    )
    .await;

    // The operator, logging everything to a file.
    let log = tempfile::NamedTempFile::new().expect("log file");
    let port = free_port();
    let _operator = Process(
        Command::new(env!("CARGO_BIN_EXE_appenv"))
            .arg("operator")
            .args(["--install-crd", "--selector"])
            .arg(format!("{}={TEST}", common::TEST_LABEL))
            .args(["--resync-seconds", "5"])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .args(["--preview-domain", "preview.example.invalid"])
            .arg(format!("--wildcard-tls-secret={tls_ns}/wildcard-tls"))
            .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig())
            .env("APPENV_LOG", "trace")
            .env_remove("APPENV_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(log.as_file().try_clone().expect("log"))
            .stderr(log.as_file().try_clone().expect("log"))
            .spawn()
            .expect("start appenv operator"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz").map(|(code, _)| code).ok() != Some(200) {
        assert!(Instant::now() < deadline, "/readyz never became 200");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let postgres = json!({"postgres": {"database": "app", "storage": {"size": "1Gi"}},
                          "deletionPolicy": "Delete"});
    let specs = [
        // Everything: PostgreSQL (a generated password), migrations, a worker, Redis.
        environment(
            &full,
            json!({"app": "full", "image": "example.invalid/full:1",
                "web": {"replicas": 1},
                "workers": [{"name": "worker", "command": ["rq", "worker"], "replicas": 1}],
                "redis": {},
                "database": postgres,
                "migrations": {"command": ["alembic", "upgrade", "head"]}}),
        ),
        // Its migration fails.
        environment(
            &failing,
            json!({"app": "failing", "image": "example.invalid/failing:1",
                "web": {"replicas": 1},
                "database": postgres,
                "migrations": {"command": ["alembic", "upgrade", "head"],
                               "podAnnotations": {FAIL_ANNOTATION: "true"}}}),
        ),
        // Invalid: an embedded database allows one web replica (a CEL rule 1.20 does not
        // enforce, so the object is stored).
        environment(
            &invalid,
            json!({"app": "invalid", "image": "example.invalid/invalid:1",
                "web": {"replicas": 3},
                "database": {"embedded": {"engine": "SQLite", "path": "/data/app.db"}}}),
        ),
        // The connection string comes from a Secret.
        environment(
            &external,
            json!({"app": "external", "image": "example.invalid/external:1",
                "web": {"replicas": 1},
                "database": {"external": {"secretRef": {"name": "external-db", "key": "uri"}}}}),
        ),
        // A preview: the wildcard certificate (and its key) is copied into its namespace.
        environment(
            &preview,
            json!({"app": "preview", "image": "example.invalid/preview:1", "profile": "Preview",
                "preview": {"pullRequest": 7}, "web": {"ingress": {}}}),
        ),
        // Its credentials cannot be applied.
        environment(
            &conflict,
            json!({"app": "conflict", "image": "example.invalid/conflict:1",
                "web": {"replicas": 1}, "database": postgres}),
        ),
    ];
    for spec in &specs {
        common::apply(&client, spec).await;
    }
    for name in [&full, &external, &preview] {
        wait_env(&client, name, "Ready", |e| common::ready(Some(e))).await;
    }
    wait_env(&client, &failing, "migration failed", |e| {
        condition_reason(e, "MigrationsSucceeded").as_deref() == Some("Failed")
    })
    .await;
    wait_env(&client, &invalid, "Invalid", |e| {
        e.status.as_ref().and_then(|s| s.phase) == Some(Phase::Invalid)
    })
    .await;
    common::wait_event(&client, &failing, "MigrationFailed", LIMIT).await;
    common::wait_event(&client, &invalid, "InvalidSpec", LIMIT).await;
    common::wait_event(&client, &conflict, "ApplyFailed", LIMIT).await;
    // A few resyncs (every 5 s) of environments at rest, failed and failing.
    tokio::time::sleep(Duration::from_secs(12)).await;

    // The generated passwords, as the operator stored them.
    let mut secrets = vec![
        ("referenced API_TOKEN", api_token.clone()),
        ("referenced SIGNING_KEY", signing_key.clone()),
        ("external database password", external_password.clone()),
        ("wildcard TLS key", tls_key.clone()),
        ("pre-existing database password", conflict_password.clone()),
    ];
    for (ns, app) in [(&full, "full"), (&failing, "failing")] {
        let credentials = Api::<Secret>::namespaced(client.clone(), ns)
            .get(&format!("{app}-postgres-credentials"))
            .await
            .expect("credentials Secret");
        let data = credentials.data.unwrap_or_default();
        let password = data
            .get("password")
            .and_then(|p| String::from_utf8(p.0.clone()).ok())
            .expect("a generated password");
        assert_eq!(password.len(), 32, "{ns}: generated password");
        let url = data
            .get("url")
            .and_then(|p| String::from_utf8(p.0.clone()).ok())
            .expect("a connection URL");
        assert!(url.contains(&password));
        // The search for encoded forms works: the Secret holds the password base64-encoded
        // twice (alone, and inside `url`, at another alignment).
        let encoded = serde_json::to_string(&data).expect("JSON");
        let found = forms(&password)
            .iter()
            .skip(1)
            .filter(|form| encoded.contains(form.as_str()))
            .count();
        assert!(
            found >= 2,
            "{found} encoded forms of the password in {ns}'s Secret"
        );
        secrets.push(("generated database password", password));
    }
    let copied = Api::<Secret>::namespaced(client.clone(), &preview)
        .get("wildcard-tls")
        .await
        .expect("the wildcard certificate copied into the preview");
    assert!(
        copied
            .data
            .unwrap_or_default()
            .get("tls.key")
            .is_some_and(|k| k.0 == private_key.as_bytes())
    );

    // Everywhere the operator writes (and where what it built could carry a value in plain
    // text: ConfigMaps and pod templates reference Secrets, never copy them).
    let (code, metrics) = get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.involved_object.name.as_deref() == Some(full.as_str())),
        "Events about the environments were found"
    );
    let envs = Api::<AppEnvironment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("environments");
    let log_text = String::from_utf8_lossy(&std::fs::read(log.path()).expect("log")).into_owned();
    let places = [
        ("the operator's log", log_text.clone()),
        (
            "Events",
            serde_json::to_string(&events.items).expect("JSON"),
        ),
        (
            "AppEnvironments",
            serde_json::to_string(&envs.items).expect("JSON"),
        ),
        ("/metrics", metrics),
        (
            "ConfigMaps",
            objects_in::<ConfigMap>(&client, &namespaces).await,
        ),
        (
            "Deployments",
            objects_in::<Deployment>(&client, &namespaces).await,
        ),
        (
            "StatefulSets",
            objects_in::<StatefulSet>(&client, &namespaces).await,
        ),
        ("Jobs", objects_in::<Job>(&client, &namespaces).await),
    ];

    // The search could have found something: the log has every environment, at trace level,
    // kube's requests included, and the places are not empty.
    for name in environments {
        assert!(log_text.contains(name.as_str()), "{name} not in the log");
    }
    assert!(
        log_text.contains("TRACE") && log_text.contains("kube"),
        "the log is at trace level and includes kube: {} bytes",
        log_text.len()
    );
    assert!(
        log_text.contains("conflict-postgres-credentials"),
        "the failed apply of the credentials is logged"
    );
    for (place, text) in &places {
        assert!(text.len() > 100, "{place}: {text}");
    }

    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for form in forms(secret) {
            for (place, text) in &places {
                if let Some(context) = leak(text, &form) {
                    let how = if form == *secret { "as is" } else { "base64" };
                    leaks.push(format!("{what} ({how}) in {place}: ...{context}..."));
                }
            }
        }
    }

    let api: Api<AppEnvironment> = Api::all(client.clone());
    for name in environments {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    for ns in &namespaces {
        common::cleanup(&client, ns).await;
    }
    assert!(
        leaks.is_empty(),
        "secret values leaked:\n{}",
        leaks.join("\n\n")
    );
}
