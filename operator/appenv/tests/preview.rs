//! `appenv preview` end to end, run as CI runs it (a process with a kubeconfig), against the
//! real control plane with the operator running.

mod common;

use appenv_controller::{self as controller, Options};
use appenv_core::settings::Settings;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

const WILDCARD: &str = "preview-wildcard-tls";

/// The operator of this test binary, with a preview domain and a wildcard certificate.
async fn operator(client: &Client) {
    static STARTED: OnceCell<()> = OnceCell::const_new();
    STARTED
        .get_or_init(|| async {
            appenv_controller::crd::install(client, "appenv-tests")
                .await
                .expect("crd");
            let mut ns = Namespace::default();
            ns.metadata.name = Some("appenv-system".into());
            let _ = Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await;
            set_wildcard(client, "cert-1").await;
            common::example_sources(client).await;
            let options = Options {
                settings: Settings {
                    wildcard_tls: Some(
                        format!("appenv-system/{WILDCARD}")
                            .parse()
                            .expect("reference"),
                    ),
                    // Previews here run images of two registries only.
                    preview_images: ["ghcr.io/x/*", "example.invalid/*"]
                        .iter()
                        .map(|p| appenv_core::settings::ImagePattern::parse(p).expect("pattern"))
                        .collect(),
                    ..common::example_settings()
                },
                ..Options::default()
            };
            // The operator must outlive each test's runtime: it gets a thread and runtime of its own.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let client = appenv_localcluster::shared()
                        .client()
                        .await
                        .expect("client");
                    controller::run(client, options).await;
                });
            });
        })
        .await;
}

async fn set_wildcard(client: &Client, content: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(WILDCARD.into()),
            namespace: Some("appenv-system".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(format!("crt-{content}").into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(format!("key-{content}").into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), "appenv-system")
        .patch(
            WILDCARD,
            &PatchParams::apply("appenv-tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("wildcard secret");
}

fn appenv(args: &[&str], github_output: Option<&Path>) -> Output {
    appenv_as(
        appenv_localcluster::shared().kubeconfig(),
        args,
        github_output,
    )
}

/// `appenv ARGS` with the credentials of `kubeconfig`.
fn appenv_as(kubeconfig: &Path, args: &[&str], github_output: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_appenv"));
    command
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("GITHUB_OUTPUT");
    if let Some(path) = github_output {
        command.env("GITHUB_OUTPUT", path);
    }
    tokio::task::block_in_place(|| command.output()).expect("run appenv")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn count<K>(client: &Client, ns: &str) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len()
}

async fn image_of(client: &Client, ns: &str, name: &str) -> String {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment");
    d.spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

async fn wildcard_copy(client: &Client, ns: &str) -> Option<String> {
    let copy = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(WILDCARD)
        .await
        .expect("get")?;
    copy.data.and_then(|d| d.get("tls.crt").map(|v| text(&v.0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_reaches_ready_updates_in_place_lists_and_down_waits_for_the_namespace() {
    let client = common::client().await;
    operator(&client).await;
    let outputs = tempfile::NamedTempFile::new().expect("tempfile");
    let file = "examples/flask-react-template-preview.yaml";
    let up = appenv(
        &[
            "preview",
            "up",
            "--app",
            "flask-react-template",
            "--pr",
            "41",
            "--image",
            "ghcr.io/x/frt:pr-41-a",
            "--file",
            file,
            "--wait",
            "--timeout",
            "3m",
        ],
        Some(outputs.path()),
    );
    assert!(up.status.success(), "up failed:\n{}", text(&up.stderr));
    assert_eq!(
        text(&up.stdout).trim(),
        "https://flask-react-template-pr-41.preview.example.com"
    );
    assert!(
        text(&up.stderr).contains("Ready"),
        "progress is shown: {}",
        text(&up.stderr)
    );
    let written = std::fs::read_to_string(outputs.path()).expect("GITHUB_OUTPUT");
    assert!(
        written.contains("url=https://flask-react-template-pr-41.preview.example.com\n"),
        "{written}"
    );
    assert!(
        written.contains("namespace=flask-react-template-pr-41\n"),
        "{written}"
    );

    // The preview namespace has its guardrails.
    let ns = "flask-react-template-pr-41";
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace");
    assert_eq!(
        namespace
            .metadata
            .labels
            .unwrap_or_default()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        count::<ResourceQuota>(&client, ns).await,
        1,
        "ResourceQuota"
    );
    assert_eq!(count::<LimitRange>(&client, ns).await, 1, "LimitRange");
    assert_eq!(
        count::<NetworkPolicy>(&client, ns).await,
        1,
        "NetworkPolicy"
    );

    // The wildcard certificate is copied in, used by the Ingress, and kept current.
    assert_eq!(
        wildcard_copy(&client, ns).await.as_deref(),
        Some("crt-cert-1")
    );
    let ingress = Api::<Ingress>::namespaced(client.clone(), ns)
        .get("flask-react-template")
        .await
        .expect("ingress");
    let tls = ingress.spec.and_then(|s| s.tls).expect("tls");
    assert_eq!(tls[0].secret_name.as_deref(), Some(WILDCARD));
    set_wildcard(&client, "cert-2").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while wildcard_copy(&client, ns).await.as_deref() != Some("crt-cert-2") {
        assert!(Instant::now() < deadline, "the copy was not updated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Up again with a new image: the same namespace, rolled in place.
    let again = appenv(
        &[
            "preview",
            "up",
            "--app",
            "flask-react-template",
            "--pr",
            "41",
            "--image",
            "ghcr.io/x/frt:pr-41-b",
            "--file",
            file,
            "--wait",
            "--timeout",
            "3m",
        ],
        None,
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("updated preview flask-react-template-pr-41"));
    assert_eq!(
        image_of(&client, ns, "flask-react-template").await,
        "ghcr.io/x/frt:pr-41-b"
    );

    let list = appenv(&["preview", "list"], None);
    let table = text(&list.stdout);
    assert!(list.status.success());
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("PR") && h.contains("EXPIRES")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("41 ")
            && l.contains("Ready")
            && l.contains("https://flask-react-template-pr-41.preview.example.com")),
        "{table}"
    );
    let json_list = appenv(&["preview", "list", "-o", "json"], None);
    let rows: serde_json::Value = serde_json::from_slice(&json_list.stdout).expect("json");
    assert!(
        rows.as_array().is_some_and(|r| r
            .iter()
            .any(|row| row["pr"] == json!(41) && row["expiresAt"].is_string())),
        "{rows}"
    );

    // Down waits until the namespace is gone; a second down has nothing to do.
    let down = appenv(
        &[
            "preview",
            "down",
            "--app",
            "flask-react-template",
            "--pr",
            "41",
            "--wait",
            "--timeout",
            "3m",
        ],
        None,
    );
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(ns)
            .await
            .expect("get")
            .is_none(),
        "namespace still there after down --wait"
    );
    let again = appenv(
        &[
            "preview",
            "down",
            "--app",
            "flask-react-template",
            "--pr",
            "41",
        ],
        None,
    );
    assert!(again.status.success());
    assert!(text(&again.stderr).contains("nothing to delete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_a_failing_migration_exits_non_zero_and_says_why() {
    let client = common::client().await;
    operator(&client).await;
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/t7e.yaml"),
    )
    .expect("example");
    let mut env: serde_json::Value = serde_norway::from_str(&base).expect("yaml");
    env["spec"]["migrations"]["podAnnotations"] =
        json!({ appenv_localcluster::kubelet::FAIL_ANNOTATION: "true" });
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), serde_norway::to_string(&env).expect("yaml")).expect("write");
    let started = Instant::now();
    let up = appenv(
        &[
            "preview",
            "up",
            "--app",
            "t7e",
            "--pr",
            "5",
            "--image",
            "ghcr.io/x/t7e:pr-5",
            "--file",
            &file.path().display().to_string(),
            "--wait",
            "--timeout",
            "2m",
        ],
        None,
    );
    let stderr = text(&up.stderr);
    assert!(!up.status.success(), "up must fail: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("failed: migrations for ghcr.io/x/t7e:pr-5 failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("MigrationsSucceeded=False (Failed)"),
        "{stderr}"
    );
    assert!(stderr.contains("migration log"), "{stderr}");
    let _ = appenv(&["preview", "down", "--app", "t7e", "--pr", "5"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_works_as_a_kubectl_plugin() {
    let client = common::client().await;
    // Without the CRD the CLI says what is missing instead of "404 page not found" (the
    // other tests may or may not have installed it yet: check before installing).
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    if crds
        .get_opt("appenvironments.appenv.dev")
        .await
        .expect("get")
        .is_none()
    {
        let missing = appenv(&["preview", "list"], None);
        assert!(!missing.status.success());
        assert!(
            text(&missing.stderr).contains("no AppEnvironment API"),
            "{}",
            text(&missing.stderr)
        );
    }
    operator(&client).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_appenv"),
        dir.path().join("kubectl-appenv"),
    )
    .expect("symlink");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::task::block_in_place(|| {
        Command::new("kubectl")
            .args(["appenv", "preview", "list"])
            .env("PATH", path)
            .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig())
            .output()
    })
    .expect("kubectl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("PR "),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_names_what_blocks_the_namespace() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let client = common::client().await;
    operator(&client).await;
    let up = appenv(
        &[
            "preview",
            "up",
            "--app",
            "blocked",
            "--pr",
            "9",
            "--image",
            "example.invalid/blocked:1",
            "--wait",
            "--timeout",
            "2m",
        ],
        None,
    );
    assert!(up.status.success(), "{}", text(&up.stderr));
    let ns = "blocked-pr-9";
    let held: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
    }))
    .expect("configmap");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    configmaps
        .create(&PostParams::default(), &held)
        .await
        .expect("create");

    let down = appenv(
        &[
            "preview",
            "down",
            "--app",
            "blocked",
            "--pr",
            "9",
            "--wait",
            "--timeout",
            "20s",
        ],
        None,
    );
    let stderr = text(&down.stderr);
    assert!(
        !down.status.success(),
        "down must report the blocked namespace: {stderr}"
    );
    assert!(
        stderr.contains("still exists after 20s") && stderr.contains("example.com/hold"),
        "{stderr}"
    );

    // Lift the finalizer: the namespace then goes.
    configmaps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("unblock");
    let again = appenv(
        &[
            "preview",
            "down",
            "--app",
            "blocked",
            "--pr",
            "9",
            "--wait",
            "--timeout",
            "2m",
        ],
        None,
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
}

const TYPO: [&str; 10] = [
    "preview",
    "up",
    "--app",
    "typo",
    "--pr",
    "3",
    "--image",
    "example.invalid/typo:1",
    "--set",
    "web.replicaz=2",
];

#[test]
fn a_misspelt_set_is_refused_before_any_connection() {
    // A kubeconfig that does not exist: had `up` tried to connect, it would say so instead.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_appenv"))
        .args(TYPO)
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run appenv");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: --set web.replicaz=2: web.replicaz is not a field of the AppEnvironment spec; did you mean web.replicas?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_or_invalid_set_creates_nothing() {
    let client = common::client().await;
    operator(&client).await;
    let api: Api<appenv_api::AppEnvironment> = Api::all(client.clone());
    let typo = appenv(&TYPO, None);
    let stderr = text(&typo.stderr);
    assert!(!typo.status.success(), "{stderr}");
    assert!(
        stderr.contains("web.replicaz is not a field") && stderr.contains("web.replicas?"),
        "{stderr}"
    );
    // Well spelt but against a rule: validation names the field and the rule.
    let mut invalid = TYPO;
    invalid[9] = "preview.ttl=soon";
    let rule = appenv(&invalid, None);
    let stderr = text(&rule.stderr);
    assert!(!rule.status.success(), "{stderr}");
    assert!(
        stderr.contains("the preview spec is invalid")
            && stderr.contains("spec.preview.ttl: \"soon\" must be a positive number"),
        "{stderr}"
    );
    assert!(
        api.get_opt("typo-pr-3").await.expect("get").is_none(),
        "a refused preview was created"
    );
}

/// A kubeconfig for the shared cluster that authenticates with `token` only.
fn token_kubeconfig(token: &str, dir: &Path) -> std::path::PathBuf {
    let admin = appenv_localcluster::shared().kubeconfig();
    let mut config: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(admin).expect("kubeconfig")).expect("yaml");
    for user in config["users"].as_array_mut().expect("users") {
        user["user"] = json!({ "token": token });
    }
    let path = dir.join("ci-kubeconfig");
    std::fs::write(&path, serde_norway::to_string(&config).expect("yaml")).expect("write");
    path
}

fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl");
    // `auth can-i` answers on stdout (and exits 1 for "no"); warnings go to stderr.
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_token_with_the_charts_preview_author_role_suffices_and_reads_no_secret() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
    let client = common::client().await;
    operator(&client).await;
    // The chart's role, from the rules file its template includes.
    let rules: Vec<PolicyRule> = serde_norway::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../charts/appenv-operator/files/rbac/preview-author-rules.yaml"),
        )
        .expect("rules file"),
    )
    .expect("rules");
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some("appenv-preview-author".into()),
            ..Default::default()
        },
        rules: Some(rules),
        ..ClusterRole::default()
    };
    let apply = PatchParams::apply("appenv-tests").force();
    Api::<ClusterRole>::all(client.clone())
        .patch("appenv-preview-author", &apply, &Patch::Apply(&role))
        .await
        .expect("role");
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "ci-previews", "namespace": "appenv-system"}
    }))
    .expect("account");
    Api::<ServiceAccount>::namespaced(client.clone(), "appenv-system")
        .patch("ci-previews", &apply, &Patch::Apply(&account))
        .await
        .expect("service account");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ci-previews"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "appenv-preview-author"},
        "subjects": [{"kind": "ServiceAccount", "name": "ci-previews", "namespace": "appenv-system"}],
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch("ci-previews", &apply, &Patch::Apply(&binding))
        .await
        .expect("binding");
    let admin = appenv_localcluster::shared().kubeconfig();
    let token = kubectl_as(
        admin,
        &[
            "create",
            "token",
            "ci-previews",
            "-n",
            "appenv-system",
            "--duration=1h",
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ci = token_kubeconfig(token.trim(), dir.path());

    // What CI runs, with that token only.
    let up = appenv_as(
        &ci,
        &[
            "preview",
            "up",
            "--app",
            "ci-app",
            "--pr",
            "9",
            "--image",
            "ghcr.io/x/ci:pr-9",
            "--wait",
            "--timeout",
            "2m",
        ],
        None,
    );
    assert!(up.status.success(), "up: {}", text(&up.stderr));
    let listed = appenv_as(&ci, &["preview", "list"], None);
    assert!(listed.status.success(), "list: {}", text(&listed.stderr));
    let listed = text(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(" ci-app ") && l.contains(" Ready ")),
        "{listed}"
    );

    // What the token cannot do: read Secrets, create Pods, delete namespaces.
    for can in [
        ["get", "secrets", "--all-namespaces"],
        ["list", "secrets", "--all-namespaces"],
        ["create", "pods", "--namespace=ci-app-pr-9"],
        ["delete", "namespaces", "--all-namespaces"],
    ] {
        let mut args = vec!["auth", "can-i"];
        args.extend(can);
        assert_eq!(kubectl_as(&ci, &args).trim(), "no", "{can:?}");
    }
    assert_eq!(
        kubectl_as(
            &ci,
            &["auth", "can-i", "create", "appenvironments.appenv.dev"]
        )
        .trim(),
        "yes"
    );

    let down = appenv_as(
        &ci,
        &[
            "preview",
            "down",
            "--app",
            "ci-app",
            "--pr",
            "9",
            "--wait",
            "--timeout",
            "2m",
        ],
        None,
    );
    assert!(down.status.success(), "down: {}", text(&down.stderr));
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt("ci-app-pr-9")
            .await
            .expect("get")
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
        "the namespace went with the preview"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_of_an_image_the_operator_does_not_allow_is_refused() {
    let client = common::client().await;
    operator(&client).await;
    let up = appenv(
        &[
            "preview",
            "up",
            "--app",
            "flask-react-template",
            "--pr",
            "77",
            "--image",
            "docker.io/evil/miner:1",
            "--file",
            "examples/flask-react-template-preview.yaml",
            "--wait",
            "--timeout",
            "1m",
        ],
        None,
    );
    let stderr = text(&up.stderr);
    assert!(!up.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains(
            "spec.image: \"docker.io/evil/miner:1\" is not an image previews may run (allowed: ghcr.io/x/*, example.invalid/*"
        ),
        "{stderr}"
    );
    assert_eq!(
        count::<Deployment>(&client, "flask-react-template-pr-77").await,
        0,
        "nothing runs"
    );
    let _ = appenv(
        &[
            "preview",
            "down",
            "--app",
            "flask-react-template",
            "--pr",
            "77",
        ],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_data_from_shows_the_restore_while_it_runs_then_reaches_ready() {
    let client = common::client().await;
    operator(&client).await;
    // Production: PostgreSQL, backups on S3 that this app's previews may start from.
    let source = "rdata-prod";
    common::apply(
        &client,
        &json!({
            "apiVersion": "appenv.dev/v1alpha1",
            "kind": "AppEnvironment",
            "metadata": {"name": source},
            "spec": {
                "app": "rdata",
                "image": "example.invalid/rdata:1",
                "database": {"postgres": {}},
                "backup": {
                    "destination": {"s3": {"bucket": "rdata-backups", "credentialsSecret": "s3"}},
                    "restoreTo": ["rdata-pr-*"],
                },
            },
        }),
    )
    .await;
    let base = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(
        base.path(),
        "apiVersion: appenv.dev/v1alpha1\nkind: AppEnvironment\nmetadata: {name: rdata}\n\
         spec: {app: rdata, image: 'example.invalid/rdata:1', database: {postgres: {}}}\n",
    )
    .expect("base file");
    let up = Command::new(env!("CARGO_BIN_EXE_appenv"))
        .args([
            "preview",
            "up",
            "--app",
            "rdata",
            "--pr",
            "3",
            "--image",
            "ghcr.io/x/rdata:pr-3",
            "--file",
            &base.path().display().to_string(),
            "--data-from",
            source,
            "--seed",
            "flask",
            "--seed",
            "blank-personal-data",
            "--wait",
            "--timeout",
            "3m",
        ])
        .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig())
        .env_remove("GITHUB_OUTPUT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start appenv");
    let mut up = common::Process(up);
    let mut progress = up.0.stderr.take().expect("stderr");
    // The restore Job cannot start before the preview's credentials for the source's bucket
    // exist in its namespace: the preview waits, Restoring, until they are there.
    let api: Api<appenv_api::AppEnvironment> = Api::all(client.clone());
    common::wait_for(
        &api,
        "rdata-pr-3",
        Duration::from_secs(120),
        "Restoring",
        |e: Option<&appenv_api::AppEnvironment>| {
            e.and_then(|e| e.condition("DatabaseReady"))
                .is_some_and(|c| c.reason == "Restoring")
        },
    )
    .await;
    common::provide_secret(
        &client,
        "rdata-pr-3",
        "appenv-restore-credentials",
        &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
    )
    .await;
    let (status, stderr) = tokio::task::block_in_place(|| {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut progress, &mut stderr).expect("stderr");
        (up.0.wait().expect("appenv ends"), stderr)
    });
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.starts_with(
            "note: spec.namespace.copy copies no Secret appenv-restore-credentials into the preview's namespace"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "; database: restoring from {source} (backup latest): Job rdata-restore-"
        )),
        "the progress shows the restore: {stderr}"
    );
    let env = api.get("rdata-pr-3").await.expect("the preview");
    assert!(
        env.status
            .as_ref()
            .and_then(|s| s.restore.as_ref())
            .is_some_and(|r| r.initialized),
        "{:?}",
        env.status
    );
    let _ = appenv(&["preview", "down", "--app", "rdata", "--pr", "3"], None);
    let _ = api.delete(source, &Default::default()).await;
}
