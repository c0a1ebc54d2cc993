//! Installing the operator: the Helm chart through a real Helm v4 (helm-sdkpy), the operator
//! running with exactly the chart's ServiceAccount permissions, upgrade (enabling the activator)
//! and uninstall, and the Kustomize manifests under `config/`.

mod common;

use appenv_api::AppEnvironment;
use appenv_controller::leader::{Elector, LeaseConfig};
use appenv_controller::rbac::{self, CLUSTER_RULES, LEADER_ELECTION_RULES};
use appenv_controller::requests::Request;
use appenv_controller::{self as controller, Metrics, Options};
use appenv_core::settings::Settings;
use appenv_localcluster::kubelet::FAIL_ANNOTATION;
use appenv_localcluster::snapshots::{SNAPSHOT_CLASS, VolumeSnapshot};
use common::{TEST_LABEL, apply, example, ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::wait::conditions;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const RELEASE: &str = "appenv-operator";
const RELEASE_NS: &str = "appenv-system";
/// The activator's Deployment, Service, ServiceAccount, ClusterRole and ClusterRoleBinding.
const ACTIVATOR: &str = "appenv-operator-activator";
const LIMIT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn generated_copies_match_their_source() {
    let crd = appenv_api::crd::crd_yaml().expect("crd");
    for copy in [
        "crds/appenv.dev_appenvironments.yaml",
        "charts/appenv-operator/crds/appenv.dev_appenvironments.yaml",
        "config/crd/appenv.dev_appenvironments.yaml",
    ] {
        assert!(
            read(copy) == crd,
            "{copy} is stale: regenerate it with `cargo run -q -- crd > {copy}`"
        );
    }
    let generated = [
        ("config/rbac/role.yaml", rbac::manifest(), "rbac"),
        (
            "charts/appenv-operator/files/rbac/cluster-rules.yaml",
            rbac::rules_yaml(CLUSTER_RULES, 0),
            "rbac --rules cluster",
        ),
        (
            "charts/appenv-operator/files/rbac/leader-election-rules.yaml",
            rbac::rules_yaml(LEADER_ELECTION_RULES, 0),
            "rbac --rules leader-election",
        ),
        (
            "charts/appenv-operator/files/rbac/preview-author-rules.yaml",
            rbac::rules_yaml(rbac::PREVIEW_AUTHOR_RULES, 0),
            "rbac --rules preview-author",
        ),
    ];
    for (path, expected, command) in generated {
        assert!(
            read(path) == expected,
            "{path} is stale: regenerate it with `cargo run -q -- {command} > {path}`"
        );
    }
}

/// The Python of a virtual environment with helm-sdkpy (`.ci/run` exports it; otherwise
/// `.ci/helm-venv.sh` makes or finds it).
fn helm_python() -> String {
    if let Some(python) = std::env::var("APPENV_HELM_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return python;
    }
    let out = Command::new("bash")
        .arg(repo().join(".ci/helm-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run .ci/helm-venv.sh");
    assert!(
        out.status.success(),
        ".ci/helm-venv.sh failed: Helm (helm-sdkpy) is required by this test"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Run `.ci/helm.py` against the shared control plane; its JSON answer, or its error.
fn helm(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(helm_python())
        .arg(repo().join(".ci/helm.py"))
        .arg("--kubeconfig")
        .arg(appenv_localcluster::shared().kubeconfig())
        .args(["--namespace", RELEASE_NS])
        .args(args)
        .output()
        .expect("run .ci/helm.py");
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "helm.py printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(appenv_localcluster::shared().kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        input.write_all(text.as_bytes()).expect("kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

/// A client that authenticates as the chart's ServiceAccount (a TokenRequest token), its
/// requests counted.
async fn service_account_client(recorder: &appenv_controller::requests::Recorder) -> Client {
    let out = kubectl(
        &[
            "create",
            "token",
            RELEASE,
            "-n",
            RELEASE_NS,
            "--duration=2h",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let kubeconfig =
        kube::config::Kubeconfig::read_from(appenv_localcluster::shared().kubeconfig())
            .expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    recorder.client(config).expect("client")
}

async fn wait_ready(client: &Client, name: &str) {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(&api, name, LIMIT, "Ready", ready).await;
}

async fn exists<K>(api: Api<K>, name: &str) -> bool
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("get").is_some()
}

async fn any<K>(api: Api<K>) -> bool
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    !api.list(&Default::default())
        .await
        .expect("list")
        .items
        .is_empty()
}

fn values_of(deployment: &Deployment, name: &str) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// The image of the Deployment's (first) container.
fn image_of(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

/// The Deployment `kubectl kustomize DIR` renders.
fn kustomized_deployment(dir: &Path) -> Deployment {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_norway::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|doc| -> Value { serde::Deserialize::deserialize(doc).expect("yaml") })
        .find(|v| v["kind"] == "Deployment")
        .map(|v| serde_json::from_value(v).expect("a Deployment"))
        .expect("a Deployment")
}

/// Everything the operator does, with the chart's permissions: the seeds to Ready, a rename
/// that prunes every kind, a preview deleted by its TTL, a volume that cannot bind, the
/// wildcard certificate copied and watched, leader election in the release namespace.
async fn reconcile_everything_as_the_service_account(admin: &Client) -> BTreeSet<Request> {
    let recorder = appenv_controller::requests::Recorder::default();
    let client = service_account_client(&recorder).await;
    let test = "helm-rbac";

    // Leader election with the Role: create the Lease, then renew it (update).
    let lease = Arc::new(Elector::new(
        client.clone(),
        LeaseConfig {
            namespace: RELEASE_NS.into(),
            name: "appenv-operator".into(),
            identity: "rbac-test".into(),
            lease_duration: Duration::from_secs(6),
            renew_deadline: Duration::from_secs(4),
            retry_period: Duration::from_secs(1),
        },
    ));
    tokio::time::timeout(Duration::from_secs(30), lease.acquire())
        .await
        .expect("the ServiceAccount takes the Lease");
    let holder = tokio::spawn({
        let lease = lease.clone();
        async move { lease.hold().await }
    });

    // The wildcard certificate previews copy.
    let wildcard = common::namespace(admin, "wildcard").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "preview-wildcard-tls", "namespace": wildcard},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "certificate", "tls.key": "key"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), &wildcard)
        .create(&Default::default(), &secret)
        .await
        .expect("wildcard secret");

    common::example_sources(admin).await;
    let options = Options {
        settings: Settings {
            wildcard_tls: Some(
                format!("{wildcard}/preview-wildcard-tls")
                    .parse()
                    .expect("reference"),
            ),
            ..common::example_settings()
        },
        resync: Duration::from_secs(20),
        selector: Some(format!("{TEST_LABEL}={test}")),
        concurrency: 4,
    };
    let metrics = Arc::new(Metrics::default());
    let operator = tokio::spawn(controller::run_with_metrics(
        client.clone(),
        options,
        metrics.clone(),
    ));

    let seeds = [
        ("t7e.yaml", "rbac-t7e"),
        ("dojo.yaml", "rbac-dojo"),
        ("flask-react-template-preview.yaml", "rbac-frt-pr"),
        ("flask-react-template-production.yaml", "rbac-frt-prod"),
        ("aifacade.yaml", "rbac-aifacade"),
    ];
    for (file, name) in seeds {
        apply(admin, &example(file, name, test)).await;
    }
    // A preview with everything: PostgreSQL, migrations, Redis with a volume, a worker.
    let mut full = example("t7e.yaml", "rbac-full", test);
    full["spec"]["profile"] = json!("Preview");
    full["spec"]["preview"] = json!({"pullRequest": 7, "ttl": "72h"});
    full["spec"]["web"]["ingress"] = json!({"host": "rbac-full.preview.example.com"});
    full["spec"]["redis"] = json!({"persistence": {"size": "1Gi"}});
    // Its worker (t7e's) autoscales: a HorizontalPodAutoscaler (no KEDA yet), then a
    // ScaledObject.
    assert!(full["spec"]["workers"][0]["autoscaling"].is_object());
    apply(admin, &full).await;
    // A preview that expires.
    let mut expiring = example("flask-react-template-preview.yaml", "rbac-ttl", test);
    expiring["spec"]["preview"]["ttl"] = json!("5s");
    expiring["spec"]["web"]["ingress"]["host"] = json!("rbac-ttl.preview.example.com");
    apply(admin, &expiring).await;
    // A database volume whose StorageClass does not exist.
    let mut unbound = example("t7e.yaml", "rbac-unbound", test);
    unbound["spec"]["database"]["postgres"]["storage"]["storageClassName"] = json!("missing");
    apply(admin, &unbound).await;
    // A web that crash-loops: its rollout stands still, so the operator reads its Pods.
    let mut crashing = example("aifacade.yaml", "rbac-crashing", test);
    crashing["spec"]["web"]["podAnnotations"] = json!({ FAIL_ANNOTATION: "true" });
    apply(admin, &crashing).await;
    // The Secrets the examples read, created as a user would once appenv made the namespace.
    for (file, name) in seeds.iter().chain([&("aifacade.yaml", "rbac-crashing")]) {
        common::provide_example_secrets(admin, file, name).await;
    }

    for (_, name) in seeds {
        wait_ready(admin, name).await;
    }
    wait_ready(admin, "rbac-full").await;
    snapshot_twice_keep_once(admin, test).await;
    let worker = "t7e-rqworker";
    let hpas = common::autoscaling::hpas(admin, "rbac-full");
    common::wait_for(
        &hpas,
        worker,
        LIMIT,
        "created",
        |h: Option<&DynamicObject>| h.is_some(),
    )
    .await;
    // KEDA installed: within a resync the operator offers ScaledObjects and prunes the HPA.
    common::autoscaling::install_keda_crd(admin).await;
    let scaled_objects = common::autoscaling::scaled_objects(admin, "rbac-full");
    common::wait_for(
        &scaled_objects,
        worker,
        LIMIT,
        "created",
        |o: Option<&DynamicObject>| o.is_some(),
    )
    .await;
    common::wait_for(
        &hpas,
        worker,
        LIMIT,
        "pruned",
        |h: Option<&DynamicObject>| h.is_none(),
    )
    .await;
    let api: Api<AppEnvironment> = Api::all(admin.clone());
    common::wait_for(
        &api,
        "rbac-ttl",
        LIMIT,
        "deleted by its TTL",
        |e: Option<&AppEnvironment>| e.is_none(),
    )
    .await;
    common::wait_for(
        &api,
        "rbac-unbound",
        LIMIT,
        "Degraded",
        |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.condition("Degraded"))
                .is_some_and(|c| c.status == "True")
        },
    )
    .await;

    common::wait_for(
        &api,
        "rbac-crashing",
        LIMIT,
        "Degraded by its crash-looping Pods",
        |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.condition("Degraded"))
                .is_some_and(|c| c.status == "True" && c.message.contains("CrashLoopBackOff"))
        },
    )
    .await;

    // Rename the app and drop every component: all of the previous objects are pruned.
    let small = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": "rbac-full", "labels": {TEST_LABEL: test}},
        "spec": {"app": "small", "image": "example.com/small:1", "namespace": {"name": "rbac-full"}},
    });
    apply(admin, &small).await;
    wait_ready(admin, "rbac-full").await;
    let old_web = Api::<Deployment>::namespaced(admin.clone(), "rbac-full");
    common::wait_for(
        &old_web,
        "t7e-redis",
        LIMIT,
        "pruned",
        |d: Option<&Deployment>| d.is_none(),
    )
    .await;
    common::wait_for(
        &scaled_objects,
        worker,
        LIMIT,
        "pruned",
        |o: Option<&DynamicObject>| o.is_none(),
    )
    .await;

    operator.abort();
    holder.abort();
    assert!(
        metrics.snapshot().errors.is_empty(),
        "no reconcile failed with the chart's permissions: {:?}",
        metrics.snapshot().errors
    );
    for name in ["rbac-full", "rbac-unbound", "rbac-crashing"]
        .into_iter()
        .chain(seeds.iter().map(|(_, n)| *n))
    {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    common::cleanup(admin, &wildcard).await;
    recorder.authorized()
}

/// Backups as CSI VolumeSnapshots: two requested, one kept (the operator creates, reads back,
/// lists and deletes snapshots).
async fn snapshot_twice_keep_once(admin: &Client, test: &str) {
    let name = "rbac-snapshot";
    let mut env = example("dojo.yaml", name, test);
    env["spec"]["backup"] = json!({
        "keep": 1,
        "destination": {"volumeSnapshot": {"className": SNAPSHOT_CLASS}},
    });
    apply(admin, &env).await;
    common::provide_example_secrets(admin, "dojo.yaml", name).await;
    wait_ready(admin, name).await;
    let api: Api<AppEnvironment> = Api::all(admin.clone());
    let mut first = None;
    for request in ["2026-12-02T10:00:00Z", "2026-12-02T10:00:01Z"] {
        let patch = json!({"metadata": {"annotations": {"appenv.dev/backup-requested": request}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("request a backup");
        let previous = first.clone();
        let done = common::wait_for(
            &api,
            name,
            LIMIT,
            "the requested snapshot taken",
            move |e: Option<&AppEnvironment>| {
                let Some(b) = e
                    .and_then(|e| e.status.as_ref())
                    .and_then(|s| s.backup.as_ref())
                else {
                    return false;
                };
                b.last_request.as_deref() == Some(request)
                    && b.running.is_none()
                    && b.last_success
                        .as_ref()
                        .is_some_and(|s| Some(&s.job) != previous.as_ref())
            },
        )
        .await;
        first = done
            .and_then(|e| e.status)
            .and_then(|s| s.backup)
            .and_then(|b| b.last_success)
            .map(|s| s.job);
    }
    // Retention: the older one is deleted once the newer one is ready.
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(admin.clone(), name);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let names: Vec<String> = snapshots
            .list(&ListParams::default())
            .await
            .expect("list snapshots")
            .items
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect();
        if names.len() == 1 && first.as_ref() == names.first() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not pruned to the newest snapshot {first:?}: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The (verb, group, resource) triples a ClusterRole grants; no wildcards.
fn granted_by(role: &ClusterRole) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        for item in groups.iter().chain(&resources).chain(&rule.verbs) {
            assert!(!item.contains('*'), "wildcard in a ClusterRole: {rule:?}");
        }
        for group in &groups {
            for resource in &resources {
                for verb in &rule.verbs {
                    granted.insert((verb.clone(), group.clone(), resource.clone()));
                }
            }
        }
    }
    granted
}

/// Which of the activator's objects exist.
async fn activator_objects(admin: &Client) -> Vec<&'static str> {
    let mut found = Vec::new();
    if exists(
        Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS),
        ACTIVATOR,
    )
    .await
    {
        found.push("Deployment");
    }
    if exists(
        Api::<Service>::namespaced(admin.clone(), RELEASE_NS),
        ACTIVATOR,
    )
    .await
    {
        found.push("Service");
    }
    if exists(
        Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NS),
        ACTIVATOR,
    )
    .await
    {
        found.push("ServiceAccount");
    }
    if exists(Api::<ClusterRole>::all(admin.clone()), ACTIVATOR).await {
        found.push("ClusterRole");
    }
    if exists(Api::<ClusterRoleBinding>::all(admin.clone()), ACTIVATOR).await {
        found.push("ClusterRoleBinding");
    }
    found
}

/// The activator as `activator.enabled=true` installs it: two Ready Pods behind its Service,
/// a ClusterRole of exactly `appenv_activator::rbac::CLUSTER_RULES` bound to its own
/// ServiceAccount, and the operator told where it is.
async fn check_the_activator(admin: &Client, operator: &Deployment) {
    assert_eq!(
        values_of(operator, "APPENV_ACTIVATOR_SERVICE").as_deref(),
        Some(format!("{RELEASE_NS}/{ACTIVATOR}:80").as_str()),
        "the operator is given the activator's Service"
    );
    let deployments = Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS);
    let ready = common::wait_for(
        &deployments,
        ACTIVATOR,
        LIMIT,
        "two Ready replicas",
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.ready_replicas == Some(2))
        },
    )
    .await
    .expect("the activator Deployment");
    let spec = ready.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(image_of(&ready), image_of(operator), "the operator's image");
    let pod_spec = spec.template.spec.as_ref().expect("pod spec");
    let container = pod_spec.containers.first().expect("a container");
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("activator"),
        "{args:?}"
    );
    for flag in ["--listen=0.0.0.0:8080", "--health-listen=0.0.0.0:8081"] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
    };
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        pod_spec.service_account_name.as_deref(),
        Some(ACTIVATOR),
        "its own ServiceAccount, not the operator's"
    );

    // Its Pods are Ready (the kubelet's GET of /readyz on 8081 answered) and none of them is
    // selected by the operator's Deployment.
    let selector = spec
        .selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(admin.clone(), RELEASE_NS)
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list the activator's Pods")
        .items;
    let ready_pods = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    assert_eq!(ready_pods, 2, "{selector}: {pods:#?}");
    let operator_selector = operator
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    for pod in &pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert!(
            !operator_selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v)),
            "the operator's Deployment selects an activator Pod: {labels:?}"
        );
    }

    let service = Api::<Service>::namespaced(admin.clone(), RELEASE_NS)
        .get(ACTIVATOR)
        .await
        .expect("the activator Service");
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let http = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .expect("port http");
    assert_eq!(http.port, 80);
    assert_eq!(
        http.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );
    assert_eq!(
        service.spec.as_ref().and_then(|s| s.selector.clone()),
        spec.selector.match_labels,
        "the Service selects the activator's Pods"
    );

    let role = Api::<ClusterRole>::all(admin.clone())
        .get(ACTIVATOR)
        .await
        .expect("the activator's ClusterRole");
    let expected: BTreeSet<_> = appenv_activator::rbac::CLUSTER_RULES
        .iter()
        .flat_map(|rule| {
            rule.groups.iter().flat_map(move |group| {
                rule.resources.iter().flat_map(move |resource| {
                    rule.verbs.iter().map(move |verb| {
                        (
                            (*verb).to_owned(),
                            (*group).to_owned(),
                            (*resource).to_owned(),
                        )
                    })
                })
            })
        })
        .collect();
    assert_eq!(
        granted_by(&role),
        expected,
        "the activator's ClusterRole is appenv_activator::rbac::CLUSTER_RULES"
    );
    let binding = Api::<ClusterRoleBinding>::all(admin.clone())
        .get(ACTIVATOR)
        .await
        .expect("the activator's ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, ACTIVATOR);
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, ACTIVATOR);
    assert_eq!(subjects[0].namespace.as_deref(), Some(RELEASE_NS));
}

/// The chart's release and the kustomize manifests name the same objects (`appenv-operator` in
/// `appenv-system`): the tests that install or dry-run them take turns.
static OPERATOR_NAMES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_chart_installs_grants_exactly_what_the_operator_uses_upgrades_and_uninstalls() {
    let _names = OPERATOR_NAMES.lock().await;
    let admin = common::client().await;

    // Install (waits for the operator Deployment to be available).
    let installed = helm(&[
        "install",
        RELEASE,
        repo()
            .join("charts/appenv-operator")
            .to_str()
            .expect("path"),
        "--create-namespace",
        "--timeout",
        "180",
    ])
    .unwrap_or_else(|e| panic!("helm install: {e}"));
    assert_eq!(installed["info"]["status"], "deployed", "{installed:#}");
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    common::wait_for(
        &crds,
        "appenvironments.appenv.dev",
        LIMIT,
        "established",
        conditions::is_crd_established(),
    )
    .await;
    let deployment = Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("operator Deployment");
    assert_eq!(
        values_of(&deployment, "APPENV_LEADER_ELECT").as_deref(),
        Some("true")
    );
    // The backup agent's image is, by default, the operator's own.
    assert_eq!(
        values_of(&deployment, "APPENV_AGENT_IMAGE"),
        image_of(&deployment),
        "APPENV_AGENT_IMAGE is the operator's image by default"
    );

    // The activator is off by default: none of its objects, and the operator is not told of one.
    assert_eq!(activator_objects(&admin).await, Vec::<&str>::new());
    assert_eq!(values_of(&deployment, "APPENV_ACTIVATOR_SERVICE"), None);

    // The ClusterRole is the one in rbac.rs: no wildcards.
    let role = Api::<ClusterRole>::all(admin.clone())
        .get(RELEASE)
        .await
        .expect("ClusterRole");
    let granted = granted_by(&role);
    let expected: BTreeSet<_> = rbac::grants(CLUSTER_RULES)
        .into_iter()
        .map(|r| (r.verb.to_owned(), r.group, r.resource))
        .collect();
    assert_eq!(
        granted, expected,
        "the installed ClusterRole is rbac::CLUSTER_RULES"
    );

    // The operator, as the ServiceAccount, reconciles everything; it used every verb granted
    // and nothing else.
    let used = reconcile_everything_as_the_service_account(&admin).await;
    let all_rules: Vec<_> = CLUSTER_RULES
        .iter()
        .chain(LEADER_ELECTION_RULES)
        .copied()
        .collect();
    for request in &used {
        assert!(
            rbac::allows(&all_rules, request),
            "the operator made a request its roles do not grant: {request}"
        );
    }
    let unused: Vec<String> = rbac::grants(&all_rules)
        .into_iter()
        .filter(|grant| !used.contains(grant))
        .map(|grant| grant.to_string())
        .collect();
    assert!(
        unused.is_empty(),
        "granted but never used by the operator: {unused:?}"
    );

    // Upgrade with changed values, the activator enabled; values the schema rejects are
    // refused, naming the value.
    let values = json!({
        "replicaCount": 1,
        "activator": {"enabled": true},
        "log": {"level": "debug"},
        "previews": {
            "domain": "preview.example.org",
            "wildcardTlsSecret": "certs/wildcard",
            "sleepAfter": "30m",
        },
        "backup": {"agentImage": "registry.example/mirror/appenv:9"},
        "operator": {"memoryTrimSeconds": 0},
    });
    let upgraded = helm(&[
        "upgrade",
        RELEASE,
        repo()
            .join("charts/appenv-operator")
            .to_str()
            .expect("path"),
        "--values-json",
        &values.to_string(),
        "--timeout",
        "180",
    ])
    .unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    assert_eq!(upgraded["version"], 2, "{upgraded:#}");
    let deployment = Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("operator Deployment");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert_eq!(
        values_of(&deployment, "APPENV_LOG").as_deref(),
        Some("debug")
    );
    assert_eq!(
        values_of(&deployment, "APPENV_PREVIEW_DOMAIN").as_deref(),
        Some("preview.example.org")
    );
    assert_eq!(
        values_of(&deployment, "APPENV_WILDCARD_TLS_SECRET").as_deref(),
        Some("certs/wildcard")
    );
    assert_eq!(
        values_of(&deployment, "APPENV_AGENT_IMAGE").as_deref(),
        Some("registry.example/mirror/appenv:9")
    );
    assert_eq!(
        values_of(&deployment, "APPENV_PREVIEW_SLEEP_AFTER").as_deref(),
        Some("30m")
    );
    assert_eq!(
        values_of(&deployment, "APPENV_MEMORY_TRIM_SECONDS").as_deref(),
        Some("0")
    );
    // The values not given keep their defaults (the map is merged, not replaced).
    assert_eq!(
        values_of(&deployment, "APPENV_RESYNC_SECONDS").as_deref(),
        Some("300")
    );
    // The chart's concurrency is the operator's own default (chosen by measurement).
    let concurrency = appenv_controller::DEFAULT_CONCURRENCY.to_string();
    assert_eq!(
        values_of(&deployment, "APPENV_CONCURRENCY"),
        Some(concurrency)
    );
    check_the_activator(&admin, &deployment).await;
    // Values the schema refuses, each naming the value.
    let chart = repo().join("charts/appenv-operator");
    let chart = chart.to_str().expect("path");
    for (values, named, what) in [
        (
            r#"{"backup": {"agentImage": "registry.example/appenv 9"}}"#,
            "agentImage",
            "an agent image with a space",
        ),
        (
            r#"{"replicaCount": "two"}"#,
            "replicaCount",
            "a string replica count",
        ),
        (
            r#"{"activator": {"enabled": true, "shutdownDelay": "40s"}}"#,
            "shutdownDelay",
            "a shutdown delay past the grace period",
        ),
        (
            r#"{"operator": {"memoryTrimSeconds": -1}}"#,
            "memoryTrimSeconds",
            "a negative memory trim period",
        ),
        (
            r#"{"previews": {"sleepAfter": "90s"}}"#,
            "sleepAfter",
            "a preview sleep period under 2m",
        ),
    ] {
        let refused = helm(&["upgrade", RELEASE, chart, "--values-json", values])
            .expect_err(&format!("{what} is refused"));
        assert!(refused.contains(named), "{what}: {refused}");
    }

    // Uninstall removes what the release made, and keeps what the docs say it keeps: the CRD
    // (and so every AppEnvironment and its namespace) and the leader-election Lease.
    let kept = example("dojo.yaml", "helm-kept", "helm-kept");
    apply(&admin, &kept).await;
    helm(&["uninstall", RELEASE]).unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    let gone = |found: bool, what: &str| assert!(!found, "{what} survived helm uninstall");
    gone(
        exists(
            Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS),
            RELEASE,
        )
        .await,
        "the Deployment",
    );
    gone(
        exists(
            Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NS),
            RELEASE,
        )
        .await,
        "the ServiceAccount",
    );
    gone(
        exists(Api::<ClusterRole>::all(admin.clone()), RELEASE).await,
        "the ClusterRole",
    );
    gone(
        exists(Api::<ClusterRoleBinding>::all(admin.clone()), RELEASE).await,
        "the ClusterRoleBinding",
    );
    gone(
        any(Api::<Role>::namespaced(admin.clone(), RELEASE_NS)).await,
        "the leader-election Role",
    );
    gone(
        any(Api::<RoleBinding>::namespaced(admin.clone(), RELEASE_NS)).await,
        "the leader-election RoleBinding",
    );
    gone(
        any(Api::<Service>::namespaced(admin.clone(), RELEASE_NS)).await,
        "the metrics Service",
    );
    assert_eq!(
        activator_objects(&admin).await,
        Vec::<&str>::new(),
        "the activator's objects survived helm uninstall"
    );
    assert!(
        exists(crds.clone(), "appenvironments.appenv.dev").await,
        "Helm never deletes a chart's CRD"
    );
    assert!(
        exists(Api::<AppEnvironment>::all(admin.clone()), "helm-kept").await,
        "AppEnvironments outlive the release"
    );
    assert!(
        exists(
            Api::<Lease>::namespaced(admin.clone(), RELEASE_NS),
            "appenv-operator"
        )
        .await,
        "the Lease stays until its namespace goes"
    );
    let _ = Api::<AppEnvironment>::all(admin.clone())
        .delete(
            kept["metadata"]["name"].as_str().expect("name"),
            &DeleteParams::default(),
        )
        .await;
}

#[test]
fn the_kustomize_agent_image_follows_the_operator_image() {
    let deployment = kustomized_deployment(&repo().join("config/default"));
    let image = image_of(&deployment).expect("image");
    assert_eq!(
        values_of(&deployment, "APPENV_CONCURRENCY"),
        Some(appenv_controller::DEFAULT_CONCURRENCY.to_string()),
        "the manifests' concurrency is the operator's default"
    );
    assert_eq!(
        values_of(&deployment, "APPENV_AGENT_IMAGE").as_ref(),
        Some(&image),
        "APPENV_AGENT_IMAGE is the operator's image"
    );
    // An overlay's `images:` (kustomize edit set image) rewrites both; kustomize takes a base
    // by a relative path only.
    let overlay = tempfile::tempdir().expect("tempdir");
    let dir = std::fs::canonicalize(overlay.path()).expect("tempdir");
    let base = std::fs::canonicalize(repo().join("config/default")).expect("config/default");
    let up = "../".repeat(dir.components().count() - 1);
    let base = format!("{up}{}", base.display().to_string().trim_start_matches('/'));
    let name = image
        .rsplit_once(':')
        .map_or(image.as_str(), |(name, _)| name);
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources:\n  - {base}\nimages:\n  - name: {name}\n    \
             newName: registry.example/mirror/appenv\n    newTag: \"9\"\n"
        ),
    )
    .expect("write the overlay");
    let deployment = kustomized_deployment(&dir);
    assert_eq!(
        image_of(&deployment).as_deref(),
        Some("registry.example/mirror/appenv:9")
    );
    assert_eq!(
        values_of(&deployment, "APPENV_AGENT_IMAGE").as_deref(),
        Some("registry.example/mirror/appenv:9"),
        "the overlay's image transformer rewrites APPENV_AGENT_IMAGE too"
    );
    // Other env values are no image of that name: untouched.
    assert_eq!(
        values_of(&deployment, "APPENV_LOG").as_deref(),
        Some("info")
    );
}

#[tokio::test]
async fn server_side_dry_run_accepts_the_kustomize_manifests() {
    let _names = OPERATOR_NAMES.lock().await;
    let client = common::client().await;
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo().join("config/default"))
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize config/default: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
    let kinds: BTreeSet<String> = serde_norway::Deserializer::from_str(&rendered)
        .map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            value["kind"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.contains(kind),
            "config/default renders a {kind}: {kinds:?}"
        );
    }
    // A dry run cannot create the namespace its objects go into: create it first.
    let namespace: Value = serde_norway::Deserializer::from_str(&rendered)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("yaml"))
        .find(|v: &Value| v["kind"] == "Namespace")
        .expect("namespace");
    let name = namespace["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("appenv-tests"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            ),
        )
        .await
        .expect("namespace");
    // kubectl validates against the server's OpenAPI before sending: a server older than 1.25
    // does not know the CRD's `x-kubernetes-validations` (it drops them when it stores the
    // CRD), so that client-side check is off there; the server still checks everything.
    let minor: u32 = appenv_localcluster::shared()
        .server_version()
        .split(['.', ' '])
        .nth(1)
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .expect("server minor version");
    let validate = if minor < 25 {
        "--validate=false"
    } else {
        "--validate=true"
    };
    // kubectl reads each object, then sends a create or a patch: the chart's test in this
    // binary installs and uninstalls the same CRD meanwhile, so the object may appear or go
    // between the two (AlreadyExists, NotFound). A dry run changes nothing: try it again.
    let mut attempts = 0;
    let applied = loop {
        attempts += 1;
        let applied = kubectl(
            &["apply", "--dry-run=server", validate, "-f", "-"],
            Some(&rendered),
        );
        let stderr = String::from_utf8_lossy(&applied.stderr);
        let raced = stderr.contains("(AlreadyExists)") || stderr.contains("(NotFound)");
        if applied.status.success() || !raced || attempts == 5 {
            break applied;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        applied.status.success(),
        "server-side dry run of config/default: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let report = String::from_utf8_lossy(&applied.stdout);
    assert!(report.contains("(server dry run)"), "{report}");
    assert!(
        report.contains("deployment.apps/appenv-operator"),
        "{report}"
    );
}
