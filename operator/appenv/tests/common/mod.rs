//! Support shared by the integration tests: the process-wide local cluster, unique namespaces,
//! and waits that follow a watch with a deadline instead of sleeping.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod autoscaling;
pub mod cli;

use appenv_api::AppEnvironment;
use appenv_localcluster as devcluster;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams};
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running operator (on this process's runtime) for the environments labelled for `test`;
/// stopped when dropped.
pub struct Operator(tokio::task::JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start an operator for the environments labelled for `test`, with `settings` (resync 30 s),
/// after installing the CRD.
pub async fn operator(
    client: &Client,
    test: &str,
    settings: appenv_core::settings::Settings,
) -> Operator {
    install_crd(client).await;
    let options = appenv_controller::Options {
        settings,
        selector: Some(format!("{TEST_LABEL}={test}")),
        resync: Duration::from_secs(30),
        ..appenv_controller::Options::default()
    };
    Operator(tokio::spawn(appenv_controller::run_with_metrics(
        client.clone(),
        options,
        Arc::new(appenv_controller::Metrics::default()),
    )))
}

/// Install the CRD. A server error (5xx) is tried again for a while: the shared test cluster
/// once answered one apply with etcd's "unexpected EOF" (a 500) while every test that came
/// after it passed. Any other error, or a server error that lasts, fails the test.
async fn install_crd(client: &Client) {
    use appenv_controller::crd::InstallError;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match appenv_controller::crd::install(client, "appenv-tests").await {
            Ok(()) => return,
            Err(InstallError::Apply(kube::Error::Api(status)))
                if status.code >= 500 && tokio::time::Instant::now() < deadline =>
            {
                eprintln!("installing the CRD: {status:?}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("CRD installs: {err:?}"),
        }
    }
}

/// Poll until an Event with `reason` is about `name` (an AppEnvironment's are in `default`,
/// where Kubernetes keeps those of cluster-scoped objects), for at most `limit`. The operator
/// publishes an Event once the status it describes is written, so it may come a moment after
/// the status.
pub async fn wait_event(client: &Client, name: &str, reason: &str, limit: Duration) {
    use k8s_openapi::api::core::v1::Event;
    let api: Api<Event> = Api::all(client.clone());
    let params = kube::api::ListParams::default().fields(&format!("involvedObject.name={name}"));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let events = api.list(&params).await.expect("events").items;
        if events.iter().any(|e| e.reason.as_deref() == Some(reason)) {
            return;
        }
        let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} Event about {name} within {limit:?}; events: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client for the shared local cluster (started on first use; a failure to start fails the test).
pub async fn client() -> Client {
    devcluster::shared()
        .client()
        .await
        .expect("client for the local control plane")
}

/// A fresh namespace named after the test, unique within this run.
pub async fn namespace(client: &Client, test: &str) -> String {
    namespace_labelled(client, test, &[]).await
}

/// A fresh namespace, as [`namespace`], created with `labels`. Labels meant for admission must
/// be there at creation: the API server matches a webhook's `namespaceSelector` against its
/// informer's copy of the namespace, which can still be the unlabelled one right after a patch
/// (it reads the namespace directly only when its copy has none).
pub async fn namespace_labelled(client: &Client, test: &str, labels: &[(&str, &str)]) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    if !labels.is_empty() {
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
    }
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    name
}

/// Best-effort removal of a test namespace.
pub async fn cleanup(client: &Client, namespace: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(namespace, &DeleteParams::default()).await;
}

/// Wait, through a watch, until `cond` holds for the object, failing the test after `limit`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    limit: Duration,
    what: &str,
    cond: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(err)) => panic!("watching {name} for {what}: {err}"),
        Err(_) => {
            let current = api.get_opt(name).await.ok().flatten();
            panic!("{name}: not {what} within {limit:?}; last seen: {current:#?}")
        }
    }
}

/// Watches the Pods of one app and records the most ReplicaSets (pod-template hashes) that had
/// live Pods at the same moment. A Pod is live from creation until it is gone from the API
/// (terminating Pods still count: their containers would still run).
pub struct OverlapRecorder {
    most_at_once: Arc<Mutex<usize>>,
    hashes_seen: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OverlapRecorder {
    /// Record Pods matching `selector` (e.g. `app=web`).
    pub fn start(client: &Client, ns: &str, selector: &str) -> Self {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let config = watcher::Config::default().labels(selector);
        let most_at_once = Arc::new(Mutex::new(0));
        let hashes_seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (most, seen) = (most_at_once.clone(), hashes_seen.clone());
        let task = tokio::spawn(async move {
            let mut live: BTreeMap<String, String> = BTreeMap::new();
            let mut events = watcher::watcher(api, config).boxed();
            while let Some(Ok(event)) = events.next().await {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        let hash = pod
                            .labels()
                            .get("pod-template-hash")
                            .cloned()
                            .unwrap_or_default();
                        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                        if matches!(phase, Some("Succeeded" | "Failed")) {
                            live.remove(&pod.name_any());
                        } else {
                            live.insert(pod.name_any(), hash.clone());
                        }
                        seen.lock().expect("lock").insert(hash);
                    }
                    watcher::Event::Delete(pod) => {
                        live.remove(&pod.name_any());
                    }
                    _ => {}
                }
                let at_once = live.values().collect::<BTreeSet<_>>().len();
                let mut most = most.lock().expect("lock");
                *most = (*most).max(at_once);
            }
        });
        Self {
            most_at_once,
            hashes_seen,
            task,
        }
    }

    /// (most ReplicaSets alive at once, ReplicaSets seen)
    pub fn finish(self) -> (usize, usize) {
        self.task.abort();
        let most = *self.most_at_once.lock().expect("lock");
        let seen = self.hashes_seen.lock().expect("lock").len();
        (most, seen)
    }
}

/// Label selecting a test's AppEnvironments for that test's operator.
pub const TEST_LABEL: &str = "appenv.dev/test";

/// An example, renamed to `name` (and its namespace), labelled for the test's operator.
pub fn example(file: &str, name: &str, test: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(file);
    let mut env: Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("example")).expect("yaml");
    env["metadata"] = json!({"name": name, "labels": {TEST_LABEL: test}});
    // Only the name: what the example copies into its namespace (and lets out) stays.
    env["spec"]["namespace"]["name"] = json!(name);
    env
}

pub async fn apply(client: &Client, env: &Value) {
    let name = env["metadata"]["name"].as_str().expect("name");
    Api::<AppEnvironment>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("appenv-tests").force(),
            &Patch::Apply(env),
        )
        .await
        .expect("apply AppEnvironment");
}

/// Ready at the object's current generation.
pub fn ready(env: Option<&AppEnvironment>) -> bool {
    env.is_some_and(|e| {
        e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
            && e.condition("Ready").is_some_and(|c| c.status == "True")
    })
}

/// A child process killed (and reaped) when the test lets go of it.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (for a process's endpoints).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// The sum of a metric's samples (all label sets) whose line starts with `prefix`, in the
/// Prometheus text (format 0.0.4) an operator serves: comment lines start with `#`, so only
/// samples match a metric's name.
pub fn metric(text: &str, prefix: &str, filter: impl Fn(&str) -> bool) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The Secrets the examples read from their namespace (`envFrom`) that neither appenv makes
/// nor copies (`spec.namespace.copy`, see [`example_sources`]), with the keys they read: the
/// user creates them.
pub fn example_secrets(file: &str) -> &'static [(&'static str, &'static [&'static str])] {
    match file {
        "aifacade.yaml" => &[("aifacade-secrets", &["DEEPSEEK_API_KEY", "SECRET_KEY"])],
        // Its backup Jobs' credentials (read only when a backup runs).
        "t7e.yaml" => &[(
            "t7e-backups",
            &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        )],
        _ => &[],
    }
}

/// Create, as a user would once appenv has made the namespace, the Secret `name` with `keys`
/// (placeholder values) in `namespace`; waits for the namespace to exist.
pub async fn provide_secret(client: &Client, namespace: &str, name: &str, keys: &[&str]) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for(
        &namespaces,
        namespace,
        Duration::from_secs(120),
        "created",
        |ns: Option<&Namespace>| ns.is_some(),
    )
    .await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "stringData": keys.iter().map(|k| (*k, "placeholder")).collect::<BTreeMap<_, _>>(),
    }))
    .expect("a valid Secret");
    match Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(err) => panic!("creating Secret {namespace}/{name}: {err}"),
    }
}

/// [`provide_secret`] for every Secret the example `file` reads, in `namespace`.
pub async fn provide_example_secrets(client: &Client, file: &str, namespace: &str) {
    for (name, keys) in example_secrets(file) {
        provide_secret(client, namespace, name, keys).await;
    }
}

/// The namespace the Flask-React-Template examples copy their credentials from
/// (`spec.namespace.copy`); operators in the tests are allowed to copy from it.
pub const EXAMPLE_SOURCES: &str = "flask-react-template-secrets";

/// Settings of an operator for the examples: a preview domain, and copies allowed from
/// [`EXAMPLE_SOURCES`].
pub fn example_settings() -> appenv_core::settings::Settings {
    appenv_core::settings::Settings {
        preview_domain: Some("preview.example.com".parse().expect("domain")),
        copy_from_namespaces: vec![
            appenv_core::settings::DnsLabel::parse_copy_source(EXAMPLE_SOURCES).expect("namespace"),
        ],
        ..appenv_core::settings::Settings::default()
    }
}

/// The valid examples' files (`examples/*.yaml` but `invalid-*`), sorted.
pub fn example_files() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("invalid-"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

/// Every valid example's AppEnvironments.
pub fn all_examples() -> Vec<AppEnvironment> {
    example_files()
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("example reads");
            appenv_api::manifest::parse(&text)
                .into_iter()
                .map(|d| d.expect("example parses"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Create the copy sources the examples expect (placeholder values, as `appenv dev --examples`
/// does), once per test process; a user's secret manager would have made them.
pub async fn example_sources(client: &Client) {
    use appenv::cli::dev::placeholders;
    static CREATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            let expected = placeholders::expected(&all_examples(), &example_settings());
            assert!(
                expected.iter().any(|p| p.source),
                "the examples copy something"
            );
            for placeholder in expected.iter().filter(|p| p.source) {
                placeholders::create(client, placeholder)
                    .await
                    .expect("copy source created");
            }
        })
        .await;
}
