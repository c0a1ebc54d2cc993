//! The API and the builders over the examples, without a cluster or the binary: each seed
//! system's values appear in the objects `appenv render` prints (validate, then build), building
//! is deterministic, the committed CRD is generated from the types, and its CEL rules agree with
//! the Rust validation. What pins `appenv render`'s own output lines (problems by file and
//! document, `--with-credentials`) stays in operator/appenv/tests/render.rs.

use appenv_api::crd::{CRD_PATH, crd_yaml};
use appenv_api::{AppEnvironment, manifest};
use appenv_core::build::{self, ClusterApis, Inputs};
use appenv_core::settings::Settings;
use appenv_core::validate::validate;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Namespace, PersistentVolumeClaim, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn settings() -> Settings {
    Settings {
        preview_domain: Some("preview.example.com".parse().expect("domain")),
        // The Flask-React-Template examples copy their credentials from there.
        copy_from_namespaces: vec![
            appenv_core::settings::DnsLabel::parse_copy_source("flask-react-template-secrets")
                .expect("namespace"),
        ],
        ..Settings::default()
    }
}

fn read(example: &str) -> String {
    std::fs::read_to_string(repo().join("examples").join(example)).expect("example exists")
}

/// All example files, valid ones and `invalid-*`.
fn examples(invalid: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n.starts_with("invalid-") == invalid)
        .collect();
    names.sort();
    names
}

/// Every child of each AppEnvironment in `text`, in apply order, as `appenv render` prints them
/// (without `--with-credentials`, so nothing random).
fn build_objects(text: &str, example: &str) -> Vec<Value> {
    let ctx = Inputs {
        owner: None,
        postgres_password: None,
        workload_image: None,
        wildcard_tls: None,
        copies: Vec::new(),
        // No cluster to ask: what a current one serves without KEDA.
        cluster: ClusterApis::OFFLINE,
        backup: None,
        stop_web: false,
        stop_workers: false,
        restore: None,
        seed: false,
    };
    manifest::parse_numbered(text)
        .into_iter()
        .flat_map(|(number, document)| {
            let env = document
                .unwrap_or_else(|err| panic!("{example}: document {number} reads: {err:?}"));
            let model = validate(&env, &settings()).unwrap_or_else(|invalid| {
                panic!("{example}: document {number} is valid: {invalid:?}")
            });
            build::build(&model, &ctx).objects()
        })
        .collect()
}

struct Rendered(Vec<Value>);

impl Rendered {
    fn of(example: &str) -> Self {
        Self(build_objects(&read(example), example))
    }

    fn get<T: DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let found = self
            .0
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", self.kinds()));
        serde_json::from_value(found.clone()).expect("typed object")
    }

    fn has(&self, kind: &str, name: &str) -> bool {
        self.0
            .iter()
            .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn kinds(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }
}

fn container(d: &Deployment) -> Container {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
        .containers[0]
        .clone()
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

fn quantity(c: &Container, kind: &str, resource: &str) -> String {
    let r = c.resources.as_ref().expect("resources");
    let map = if kind == "requests" {
        &r.requests
    } else {
        &r.limits
    };
    map.as_ref()
        .and_then(|m| m.get(resource))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

fn strategy(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.clone())
        .unwrap_or_default()
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1)
}

#[test]
fn dojo_renders_the_single_writer_duckdb_deployment_of_its_seed() {
    let r = Rendered::of("dojo.yaml");
    let web: Deployment = r.get("Deployment", "dojo");
    assert_eq!(replicas(&web), 1);
    assert_eq!(strategy(&web), "Recreate");
    let c = container(&web);
    assert_eq!(c.ports.as_ref().expect("ports")[0].container_port, 8000);
    let ready = c.readiness_probe.as_ref().expect("readiness");
    assert_eq!(
        ready.http_get.as_ref().and_then(|h| h.path.as_deref()),
        Some("/healthz")
    );
    assert_eq!(
        (ready.initial_delay_seconds, ready.period_seconds),
        (Some(5), Some(10))
    );
    let live = c.liveness_probe.as_ref().expect("liveness");
    assert_eq!(
        live.http_get.as_ref().and_then(|h| h.path.as_deref()),
        Some("/healthz")
    );
    assert_eq!(
        (live.initial_delay_seconds, live.period_seconds),
        (Some(30), Some(30))
    );
    assert_eq!(quantity(&c, "requests", "cpu"), "100m");
    assert_eq!(quantity(&c, "requests", "memory"), "256Mi");
    assert_eq!(quantity(&c, "limits", "cpu"), "1");
    assert_eq!(quantity(&c, "limits", "memory"), "1Gi");
    let sc = c.security_context.as_ref().expect("container security");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let pod = web
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod");
    let psc = pod.security_context.as_ref().expect("pod security");
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(1000), Some(1000), Some(1000))
    );
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));

    // The volume: 5Gi ReadWriteOnce, mounted at /data; the file's path in DOJO_DB_PATH.
    let pvc: PersistentVolumeClaim = r.get("PersistentVolumeClaim", "dojo-data");
    let spec = pvc.spec.as_ref().expect("pvc spec");
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_owned()][..])
    );
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    assert_eq!(size.map(|q| q.0.as_str()), Some("5Gi"));
    let data = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "data")
        .expect("data volume");
    assert_eq!(
        data.persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str()),
        Some("dojo-data")
    );
    let mounted = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "data")
        .expect("mount");
    assert_eq!(mounted.mount_path, "/data");
    let config: ConfigMap = r.get("ConfigMap", "dojo-env");
    assert_eq!(
        config
            .data
            .as_ref()
            .and_then(|d| d.get("DOJO_DB_PATH"))
            .map(String::as_str),
        Some("/data/ledger.duckdb")
    );
    assert_eq!(
        env(&c, "DOJO_ENV").and_then(|e| e.value.as_deref()),
        Some("production")
    );

    let svc: Service = r.get("Service", "dojo");
    let port = &svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .expect("ports")[0];
    assert_eq!(port.port, 80);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8000))
    );
    // Production keeps the data: the volume is not owned and is marked for adoption.
    assert_eq!(
        pvc.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("appenv.dev/retain"))
            .map(String::as_str),
        Some("true")
    );
}

#[test]
fn t7e_renders_flask_rq_redis_pgvector_and_alembic() {
    let r = Rendered::of("t7e.yaml");
    let web = container(&r.get("Deployment", "t7e"));
    assert_eq!(web.command.as_deref(), Some(&["gunicorn".to_owned()][..]));
    assert!(web.args.iter().flatten().any(|a| a == "app:create_app()"));
    let worker = container(&r.get("Deployment", "t7e-rqworker"));
    assert_eq!(
        worker.command,
        Some(vec!["python".into(), "-m".into(), "rqworker".into()])
    );
    assert_eq!(worker.image, web.image, "the worker runs the same image");
    let config: ConfigMap = r.get("ConfigMap", "t7e-env");
    assert_eq!(
        config
            .data
            .as_ref()
            .and_then(|d| d.get("REDIS_URL"))
            .map(String::as_str),
        Some("redis://t7e-redis:6379/0")
    );
    for c in [&web, &worker] {
        let url = env(c, "DATABASE_URL")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref());
        assert_eq!(
            url.map(|s| (s.name.as_str(), s.key.as_str())),
            Some(("t7e-postgres-credentials", "url"))
        );
    }
    let pg: StatefulSet = r.get("StatefulSet", "t7e-postgres");
    let pg_pod = pg
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod");
    assert_eq!(
        pg_pod.containers[0].image.as_deref(),
        Some("pgvector/pgvector:pg16")
    );
    let init: ConfigMap = r.get("ConfigMap", "t7e-postgres-init");
    let sql = init
        .data
        .as_ref()
        .and_then(|d| d.values().next().cloned())
        .unwrap_or_default();
    assert!(
        sql.contains("CREATE EXTENSION IF NOT EXISTS \"vector\""),
        "{sql}"
    );
    let job: Job =
        r.0.iter()
            .find(|o| o["kind"] == "Job")
            .map(|o| serde_json::from_value(o.clone()).expect("job"))
            .expect("a migration Job");
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("job pod");
    assert_eq!(
        pod.containers[0].command,
        Some(vec!["alembic".into(), "upgrade".into(), "head".into()])
    );
    assert_eq!(pod.containers[0].image, web.image);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert!(r.has("Service", "t7e-redis") && r.has("Deployment", "t7e-redis"));
    let ingress: Ingress = r.get("Ingress", "t7e");
    let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("cert-manager.io/cluster-issuer")
            .map(String::as_str),
        Some("letsencrypt")
    );
}

#[test]
fn flask_react_template_preview_is_a_guarded_pr_namespace_with_celery_and_redis() {
    let r = Rendered::of("flask-react-template-preview.yaml");
    let ns: Namespace = r.get("Namespace", "flask-react-template-pr-123");
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    assert!(r.has("ResourceQuota", "appenv-quota") && r.has("LimitRange", "appenv-defaults"));
    let np: NetworkPolicy = r.get("NetworkPolicy", "appenv-default-deny");
    let types = np
        .spec
        .as_ref()
        .and_then(|s| s.policy_types.clone())
        .unwrap_or_default();
    assert_eq!(types, vec!["Ingress".to_owned(), "Egress".to_owned()]);
    // Out: the namespace, DNS, and MongoDB outside the cluster (spec.namespace.egress).
    let egress = np
        .spec
        .as_ref()
        .and_then(|s| s.egress.clone())
        .unwrap_or_default();
    assert_eq!(egress.len(), 3, "{egress:?}");
    let mongo = &egress[2];
    let block = mongo
        .to
        .as_ref()
        .and_then(|to| to.first())
        .and_then(|peer| peer.ip_block.clone())
        .expect("an ipBlock peer");
    assert_eq!(block.cidr, "0.0.0.0/0");
    assert_eq!(
        block.except.unwrap_or_default(),
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    );
    let ports: Vec<_> = mongo
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port.clone(), p.protocol.clone()))
        .collect();
    assert_eq!(
        ports,
        [(Some(IntOrString::Int(27017)), Some("TCP".to_owned()))]
    );
    let ingress: Ingress = r.get("Ingress", "flask-react-template");
    let rule = &ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.clone())
        .expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("pr-123.preview.example.com"));

    let worker_d: Deployment = r.get("Deployment", "flask-react-template-worker");
    let worker = container(&worker_d);
    assert_eq!(replicas(&worker_d), 1);
    assert_eq!(
        env(&worker, "CELERY_CONCURRENCY").and_then(|e| e.value.as_deref()),
        Some("8")
    );
    assert_eq!(
        (
            quantity(&worker, "requests", "cpu"),
            quantity(&worker, "requests", "memory")
        ),
        ("200m".into(), "512Mi".into())
    );
    let beat_d: Deployment = r.get("Deployment", "flask-react-template-beat");
    let beat = container(&beat_d);
    assert_eq!(
        (replicas(&beat_d), strategy(&beat_d)),
        (1, "Recreate".into()),
        "beat never runs twice"
    );
    assert_eq!(
        (
            quantity(&beat, "requests", "cpu"),
            quantity(&beat, "requests", "memory")
        ),
        ("50m".into(), "128Mi".into())
    );
    let redis = container(&r.get("Deployment", "flask-react-template-redis"));
    assert_eq!(
        (
            quantity(&redis, "requests", "cpu"),
            quantity(&redis, "requests", "memory")
        ),
        ("50m".into(), "128Mi".into())
    );
    let config: ConfigMap = r.get("ConfigMap", "flask-react-template-env");
    let data = config.data.unwrap_or_default();
    for var in ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL"] {
        assert_eq!(
            data.get(var).map(String::as_str),
            Some("redis://flask-react-template-redis:6379/0"),
            "{var}"
        );
    }
    let mongo = env(&worker, "MONGODB_URI")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref());
    assert_eq!(
        mongo.map(|s| (s.name.as_str(), s.key.as_str())),
        Some(("doppler-secrets", "MONGODB_URI"))
    );
}

#[test]
fn flask_react_template_production_scales_workers_independently() {
    let r = Rendered::of("flask-react-template-production.yaml");
    let worker_d: Deployment = r.get("Deployment", "flask-react-template-worker");
    let worker = container(&worker_d);
    assert_eq!(replicas(&worker_d), 3);
    assert_eq!(
        (
            quantity(&worker, "requests", "cpu"),
            quantity(&worker, "requests", "memory")
        ),
        ("500m".into(), "1Gi".into())
    );
    assert_eq!(replicas(&r.get("Deployment", "flask-react-template")), 2);
    let beat_d: Deployment = r.get("Deployment", "flask-react-template-beat");
    assert_eq!(
        (replicas(&beat_d), strategy(&beat_d)),
        (1, "Recreate".into())
    );
    let redis = container(&r.get("Deployment", "flask-react-template-redis"));
    assert_eq!(
        (
            quantity(&redis, "requests", "cpu"),
            quantity(&redis, "requests", "memory")
        ),
        ("100m".into(), "256Mi".into())
    );
    assert!(
        !r.has("ResourceQuota", "appenv-quota"),
        "production has no preview guardrails"
    );
}

#[test]
fn aifacade_renders_gunicorn_on_5000_with_sqlite_on_a_volume_and_tls() {
    let r = Rendered::of("aifacade.yaml");
    let web_d: Deployment = r.get("Deployment", "aifacade");
    let web = container(&web_d);
    assert_eq!(web.ports.as_ref().expect("ports")[0].container_port, 5000);
    let args = web.args.clone().unwrap_or_default().join(" ");
    assert!(
        args.contains("--workers 4") && args.contains("--timeout 120"),
        "{args}"
    );
    assert_eq!(
        (replicas(&web_d), strategy(&web_d)),
        (1, "Recreate".into()),
        "SQLite allows one writer"
    );
    let mounted = web
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "data")
        .expect("mount");
    assert_eq!(mounted.mount_path, "/app/instance");
    let from = web.env_from.clone().unwrap_or_default();
    assert!(from.iter().any(|f| {
        f.secret_ref
            .as_ref()
            .is_some_and(|s| s.name == "aifacade-secrets")
    }));
    let ingress: Ingress = r.get("Ingress", "aifacade");
    let tls = ingress.spec.and_then(|s| s.tls).expect("tls");
    assert_eq!(tls[0].secret_name.as_deref(), Some("aifacade-tls"));
    // Default profile is production: the SQLite volume is retained.
    let pvc: PersistentVolumeClaim = r.get("PersistentVolumeClaim", "aifacade-data");
    assert!(pvc.metadata.owner_references.is_none());
}

#[test]
fn every_child_carries_the_recommended_labels_and_rendering_is_deterministic() {
    for example in examples(false) {
        let text = read(&example);
        let yaml = |objects: Vec<Value>| serde_norway::to_string(&objects).expect("YAML");
        let first = yaml(build_objects(&text, &example));
        let second = yaml(build_objects(&text, &example));
        assert_eq!(first, second, "{example}: rendering must be byte-identical");
        for object in Rendered::of(&example).0 {
            let labels = &object["metadata"]["labels"];
            for key in ["name", "instance", "component", "managed-by"] {
                assert!(
                    labels[format!("app.kubernetes.io/{key}")].is_string(),
                    "{example}: {} lacks {key}",
                    object["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn the_crd_in_the_repository_is_generated_from_the_types() {
    let committed = std::fs::read_to_string(repo().join(CRD_PATH)).expect("committed CRD");
    let generated = crd_yaml().expect("crd");
    assert!(
        committed == generated,
        "{CRD_PATH} is stale: regenerate it with `cargo run -q -- crd > {CRD_PATH}`"
    );
}

fn load(example: &str) -> AppEnvironment {
    serde_norway::from_str(&read(example)).expect("parses")
}

#[test]
fn cel_rules_in_the_crd_agree_with_the_rust_validation() {
    for example in examples(false) {
        load(&example)
            .validate_cel()
            .unwrap_or_else(|e| panic!("{example}: CEL rejects a valid example: {e:?}"));
    }
    // The cross-field invariants are CEL rules too, so a current API server rejects these
    // even without the operator.
    for example in [
        "invalid-embedded-replicas.yaml",
        "invalid-two-databases.yaml",
        "invalid-singleton-replicas.yaml",
        "invalid-restore.yaml",
    ] {
        assert!(
            load(example).validate_cel().is_err(),
            "{example}: CEL accepts it"
        );
    }
    // The namespace is immutable: a transition rule.
    let old = load("dojo.yaml");
    let mut moved = old.clone();
    moved.spec.namespace.name = Some("elsewhere".into());
    let mut before = old.clone();
    before.spec.namespace.name = Some("dojo-production".into());
    assert!(moved.validate_cel_update(&before).is_err());
    assert!(before.validate_cel_update(&before).is_ok());
}

/// A preview that can sleep (the operator's default period, an activator) is reached through
/// the activator: its Ingress names an ExternalName Service of the activator, and its
/// NetworkPolicy lets the activator's namespace in; without an activator, nothing changes.
#[test]
fn a_preview_that_can_sleep_is_reached_through_the_activator() {
    let sleepy = Settings {
        preview_sleep_after: Some(std::time::Duration::from_secs(1800)),
        activator_service: Some(
            appenv_core::settings::ServiceRef::parse("appenv-system/appenv-activator:80")
                .expect("a service"),
        ),
        ..settings()
    };
    let text = read("flask-react-template-preview.yaml");
    let env = manifest::parse_numbered(&text)
        .into_iter()
        .find_map(|(_, d)| d.ok())
        .expect("a document");
    let model = validate(&env, &sleepy).expect("valid");
    assert_eq!(
        model.sleep_after,
        Some(std::time::Duration::from_secs(1800))
    );
    let children = build::build(&model, &Inputs::default());
    let activator = children
        .web
        .activator
        .clone()
        .expect("the activator's Service");
    let spec = activator.spec.clone().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
    assert_eq!(
        spec.external_name.as_deref(),
        Some("appenv-activator.appenv-system.svc.cluster.local")
    );
    let ingress = children.web.ingress.clone().expect("an Ingress");
    let backend = ingress
        .spec
        .and_then(|s| s.rules)
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.http)
        .and_then(|h| h.paths.into_iter().next())
        .and_then(|p| p.backend.service)
        .expect("a Service backend");
    assert_eq!(Some(backend.name), activator.metadata.name);
    assert_eq!(backend.port.and_then(|p| p.number), Some(80));
    let from = children
        .guardrails
        .as_ref()
        .and_then(|g| g.network_policy.spec.clone())
        .and_then(|s| s.ingress)
        .and_then(|i| i.into_iter().next())
        .and_then(|rule| rule.from)
        .unwrap_or_default();
    let namespaces: Vec<String> = from
        .iter()
        .filter_map(|peer| peer.namespace_selector.as_ref()?.match_labels.as_ref())
        .filter_map(|labels| labels.get("kubernetes.io/metadata.name").cloned())
        .collect();
    assert!(
        namespaces.contains(&"appenv-system".to_owned()),
        "{namespaces:?}"
    );
    // The same preview with an operator without an activator: reached directly.
    let plain = build::build(
        &validate(&env, &settings()).expect("valid"),
        &Inputs::default(),
    );
    assert!(plain.web.activator.is_none());
}
