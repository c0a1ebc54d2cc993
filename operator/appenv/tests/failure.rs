//! Failure tests: `appenv operator` as a process against a real control plane that breaks
//! under it. The operator is killed with SIGKILL mid-rollout, the API server is restarted, the
//! API server stops answering for 30 s, and an environment is deleted while the operator is
//! cut off. Each test starts its own control plane (it breaks
//! it), so these never touch the shared cluster; a control plane that cannot start fails them.
//!
//! The operator's log (with kube_runtime's watch errors and backoffs) goes to a file whose
//! last lines are printed when a test fails. `APPENV_FAILURE_SEED` replays the kill test's
//! random delays; `APPENV_LOG` changes the operator's log filter.

mod common;

use appenv_api::AppEnvironment;
use appenv_core::build::ENVIRONMENT_LABEL;
use appenv_localcluster::kubelet::SimKubelet;
use appenv_localcluster::{ControlPlane, StartOptions};
use futures::StreamExt as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a fleet of environments may take to converge after the operator's last kill.
const CONVERGE: Duration = Duration::from_secs(240);
/// How long after the API server answers again a change may take to be Ready. The operator
/// resyncs every 5 s, its watches back off for at most 30 s (plus jitter) and the simulated
/// kubelet is quick, so a minute means the operator did not notice the change.
const RECOVER: Duration = Duration::from_secs(60);

/// A control plane of the test's own, with a simulated kubelet and the CRD installed.
struct Cluster {
    // Dropped first: the kubelet's tasks stop before the control plane does.
    _kubelet: SimKubelet,
    client: Client,
    control_plane: ControlPlane,
    /// Holds the operator's log.
    dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let started = Instant::now();
    let control_plane = ControlPlane::start(StartOptions::default())
        .await
        .expect("the test's own control plane starts");
    let client = control_plane.client().await.expect("client");
    let kubelet = SimKubelet::start(client.clone())
        .await
        .expect("the simulated kubelet starts");
    appenv_controller::crd::install(&client, "appenv-tests")
        .await
        .expect("CRD installs");
    say(format!(
        "control plane {} at {} up in {:.1?}",
        control_plane.server_version(),
        control_plane.server(),
        started.elapsed()
    ));
    Cluster {
        _kubelet: kubelet,
        client,
        control_plane,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// Progress lines, past the harness's capture, so a slow run shows where the time went.
fn say(line: String) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let _ = writeln!(std::io::stderr(), "[failure {now:.3}] {line}");
}

/// `appenv operator` as a process; its stderr is appended to one log per test.
struct Operator {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Operator {
    fn start(cluster: &Cluster) -> Self {
        let log = cluster.dir.path().join("operator.log");
        let out = File::options()
            .append(true)
            .create(true)
            .open(&log)
            .expect("operator log");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_appenv"))
            .arg("operator")
            .args(["--install-crd", "--resync-seconds", "5"])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .env("KUBECONFIG", cluster.control_plane.kubeconfig())
            .env(
                "APPENV_LOG",
                // kube_runtime's debug lines show its watch errors and backoffs.
                std::env::var("APPENV_LOG")
                    .unwrap_or_else(|_| "info,kube_runtime=debug".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start appenv operator");
        Self { child, port, log }
    }

    /// Still running (has not exited by itself).
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// kill -9, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until /readyz answers 200 (poll: there is nothing to watch).
    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(self.port, "/readyz").map(|(code, _)| code).ok() != Some(200) {
            assert!(self.running(), "the operator exited: {}", self.log_tail());
            assert!(
                Instant::now() < deadline,
                "/readyz never answered 200: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "\n--- last lines of the operator log ---\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            say(self.log_tail());
        }
    }
}

use appenv_localcluster::http_get as get;

use common::free_port;

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> (Self, u64) {
        let seed = std::env::var("APPENV_FAILURE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(1);
                (nanos as u64) ^ u64::from(std::process::id())
            })
            .max(1);
        (Self(seed), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[low, high)`.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// The three shapes of environment the tests roll out.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// PostgreSQL (a StatefulSet with a volume) and a migration Job before every rollout.
    Postgres,
    /// Redis and a worker next to web.
    Redis,
    /// SQLite on a ReadWriteOnce volume, one replica, Recreate.
    Sqlite,
}

fn environment(name: &str, shape: Shape, version: u32) -> Value {
    let mut spec = match shape {
        Shape::Postgres => json!({
            "app": "shop",
            "image": format!("example.invalid/shop:{version}"),
            "database": {"postgres": {"database": "app", "storage": {"size": "1Gi"}}},
            "migrations": {"command": ["migrate"]},
        }),
        Shape::Redis => json!({
            "app": "queue",
            "image": format!("example.invalid/queue:{version}"),
            "redis": {},
            "workers": [{"name": "worker", "command": ["work"]}],
        }),
        Shape::Sqlite => json!({
            "app": "notes",
            "image": format!("example.invalid/notes:{version}"),
            "database": {"embedded": {"engine": "SQLite", "path": "/data/notes.sqlite",
                "storage": {"size": "1Gi"}}},
        }),
    };
    spec["namespace"] = json!({"name": name});
    json!({
        "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Environments of a test and the image version each should end at.
struct Fleet {
    envs: BTreeMap<String, (Shape, u32)>,
}

impl Fleet {
    /// `count` environments `<prefix>-NN`, the shapes in turn.
    fn new(prefix: &str, count: usize) -> Self {
        let shapes = [Shape::Postgres, Shape::Redis, Shape::Sqlite];
        let envs = (0..count)
            .map(|i| (format!("{prefix}-{i:02}"), (shapes[i % shapes.len()], 1)))
            .collect();
        Self { envs }
    }

    fn names(&self) -> BTreeSet<String> {
        self.envs.keys().cloned().collect()
    }

    async fn apply_all(&self, client: &Client) {
        for name in self.envs.keys() {
            self.apply(client, name).await;
        }
    }

    async fn apply(&self, client: &Client, name: &str) {
        let (shape, version) = self.envs[name];
        Api::<AppEnvironment>::all(client.clone())
            .patch(
                name,
                &PatchParams::apply("appenv-tests").force(),
                &Patch::Apply(environment(name, shape, version)),
            )
            .await
            .expect("apply AppEnvironment");
    }

    /// A new image for `name`: a new rollout (and, with PostgreSQL, a new migration Job).
    async fn bump(&mut self, client: &Client, name: &str) {
        if let Some((_, version)) = self.envs.get_mut(name) {
            *version += 1;
        }
        self.apply(client, name).await;
    }

    async fn add(&mut self, client: &Client, name: &str, shape: Shape) {
        self.envs.insert(name.to_owned(), (shape, 1));
        self.apply(client, name).await;
    }

    /// Wait, through a watch, until every environment is Ready at its current generation and
    /// runs the image it was last given; `when` says what it waits after, for the message.
    async fn wait_ready(&self, client: &Client, limit: Duration, when: &str, operator: &Operator) {
        let started = Instant::now();
        let api: Api<AppEnvironment> = Api::all(client.clone());
        let (reader, writer) = reflector::store();
        let done = |store: &Store<AppEnvironment>| {
            self.envs.iter().all(|(name, (shape, version))| {
                store
                    .get(&reflector::ObjectRef::new(name))
                    .is_some_and(|env| {
                        common::ready(Some(&*env))
                            && env.status.as_ref().and_then(|s| s.image.as_deref())
                                == Some(image(*shape, *version).as_str())
                    })
            })
        };
        let mut events = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .boxed();
        let converged = tokio::time::timeout(limit, async {
            while let Some(event) = events.next().await {
                if event.is_ok() && done(&reader) {
                    return;
                }
            }
        })
        .await;
        if converged.is_err() {
            let mut report = Vec::new();
            for name in self.envs.keys() {
                report.push(describe(
                    reader.get(&reflector::ObjectRef::new(name)).as_deref(),
                ));
                report.push(namespace_report(client, name).await);
            }
            panic!(
                "not all Ready within {limit:?} {when}:\n{}{}",
                report.join("\n"),
                operator.log_tail()
            );
        }
        say(format!(
            "{} environments Ready {when} in {:.1?}",
            self.envs.len(),
            started.elapsed()
        ));
    }
}

fn image(shape: Shape, version: u32) -> String {
    let app = match shape {
        Shape::Postgres => "shop",
        Shape::Redis => "queue",
        Shape::Sqlite => "notes",
    };
    format!("example.invalid/{app}:{version}")
}

/// One line per environment for a failure message.
/// The Pods and claims of namespace `ns`, their phases and conditions, its Secrets' names and its
/// recent Events: what a failed wait needs to be understood.
async fn namespace_report(client: &Client, ns: &str) -> String {
    use k8s_openapi::api::core::v1::{Event, Pod};
    let mut lines = Vec::new();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for pod in pods {
        let status = pod.status.unwrap_or_default();
        let conditions: Vec<String> = status
            .conditions
            .unwrap_or_default()
            .iter()
            .map(|c| format!("{}={}", c.type_, c.status))
            .collect();
        lines.push(format!(
            "    pod {} on {:?}: {:?} {}",
            pod.metadata.name.unwrap_or_default(),
            pod.spec.and_then(|s| s.node_name),
            status.phase,
            conditions.join(",")
        ));
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for claim in claims {
        lines.push(format!(
            "    claim {}: {:?}",
            claim.metadata.name.unwrap_or_default(),
            claim.status.and_then(|s| s.phase)
        ));
    }
    let secrets: Vec<String> = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|secret| secret.metadata.name.unwrap_or_default())
        .collect();
    lines.push(format!("    secrets (names): {}", secrets.join(", ")));
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for event in events.iter().rev().take(12) {
        lines.push(format!(
            "    event {} {}: {}",
            event.involved_object.name.as_deref().unwrap_or_default(),
            event.reason.as_deref().unwrap_or_default(),
            event.message.as_deref().unwrap_or_default()
        ));
    }
    lines.join("\n")
}

fn describe(env: Option<&AppEnvironment>) -> String {
    let Some(env) = env else {
        return "  (missing)".to_owned();
    };
    let status = env.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!(
        "  {} generation {:?} observed {:?} phase {:?} image {:?}: {}",
        env.name_any(),
        env.metadata.generation,
        status.observed_generation,
        status.phase,
        status.image,
        conditions.join("; ")
    )
}

/// Kinds whose objects must be exactly what the environment's build says, no more.
const CHECKED_KINDS: [&str; 7] = [
    "Deployment",
    "StatefulSet",
    "Job",
    "Service",
    "PersistentVolumeClaim",
    "ConfigMap",
    "Secret",
];

type Inventory = BTreeMap<(String, &'static str), BTreeSet<String>>;

/// What the product's own build of each environment (as the server holds it) says must exist:
/// (namespace, kind) -> names. Names are deterministic, so a duplicate would be an extra name.
async fn expected_children(client: &Client, fleet: &Fleet) -> Inventory {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let mut expected = Inventory::new();
    for name in fleet.envs.keys() {
        let env = api.get(name).await.expect("get AppEnvironment");
        let model =
            appenv_core::validate::validate(&env, &appenv_core::settings::Settings::default())
                .expect("a valid spec");
        let children = appenv_core::build::build(&model, &appenv_core::build::Inputs::default());
        for object in children.objects() {
            let kind = object["kind"].as_str().unwrap_or_default();
            let Some(kind) = CHECKED_KINDS.iter().find(|k| **k == kind) else {
                continue;
            };
            let name = object["metadata"]["name"].as_str().expect("name");
            expected
                .entry((model.namespace.name.clone(), kind))
                .or_default()
                .insert(name.to_owned());
            // The StatefulSet controller makes a claim per replica and template.
            if *kind == "StatefulSet" {
                let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
                for template in object["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let claim = template["metadata"]["name"].as_str().expect("claim");
                    for ordinal in 0..replicas {
                        expected
                            .entry((model.namespace.name.clone(), "PersistentVolumeClaim"))
                            .or_default()
                            .insert(format!("{claim}-{name}-{ordinal}"));
                    }
                }
            }
        }
    }
    expected
}

async fn labelled<K>(client: &Client, into: &mut Inventory)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = CHECKED_KINDS
        .iter()
        .find(|k| **k == K::kind(&()))
        .expect("a checked kind");
    let list = Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default().labels(ENVIRONMENT_LABEL))
        .await
        .expect("list");
    for object in list.items {
        into.entry((object.namespace().unwrap_or_default(), kind))
            .or_default()
            .insert(object.name_any());
    }
}

/// Every object labelled with an environment, in every namespace, is one the build expects,
/// and every expected one exists: no duplicates, nothing missing, nothing elsewhere.
async fn assert_exact_children(client: &Client, fleet: &Fleet) {
    let expected = expected_children(client, fleet).await;
    let mut actual = Inventory::new();
    labelled::<Deployment>(client, &mut actual).await;
    labelled::<StatefulSet>(client, &mut actual).await;
    labelled::<Job>(client, &mut actual).await;
    labelled::<Service>(client, &mut actual).await;
    labelled::<PersistentVolumeClaim>(client, &mut actual).await;
    labelled::<ConfigMap>(client, &mut actual).await;
    labelled::<Secret>(client, &mut actual).await;
    let keys: BTreeSet<_> = expected.keys().chain(actual.keys()).cloned().collect();
    let differences: Vec<String> = keys
        .iter()
        .filter(|key| expected.get(*key) != actual.get(*key))
        .map(|key| {
            format!(
                "  {}/{}: expected {:?}, found {:?}",
                key.0,
                key.1,
                expected.get(key),
                actual.get(key)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "children differ from the build:\n{}",
        differences.join("\n")
    );
    let namespaces: BTreeSet<String> = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default().labels(ENVIRONMENT_LABEL))
        .await
        .expect("namespaces")
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(namespaces, fleet.names(), "one namespace per environment");
}

/// (namespace, name) -> every uid an object of that name had, in order.
type UidHistory = BTreeMap<(String, String), Vec<String>>;

/// Every uid each database volume (a PVC of an environment, other than Redis's) ever had, from
/// a watch started before the first environment. A volume deleted and recreated shows two.
struct VolumeHistory {
    uids: Arc<Mutex<UidHistory>>,
    deleted: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl VolumeHistory {
    fn start(client: &Client) -> Self {
        let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
        let config = watcher::Config::default().labels(&format!(
            "{ENVIRONMENT_LABEL},app.kubernetes.io/component!=redis"
        ));
        let uids: Arc<Mutex<UidHistory>> = Arc::default();
        let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
        let (seen, gone) = (uids.clone(), deleted.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher(api, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(pvc) | watcher::Event::InitApply(pvc)) => {
                        let key = (pvc.namespace().unwrap_or_default(), pvc.name_any());
                        let uid = pvc.uid().unwrap_or_default();
                        let mut seen = seen.lock().expect("lock");
                        let history = seen.entry(key).or_default();
                        if !history.contains(&uid) {
                            history.push(uid);
                        }
                    }
                    Ok(watcher::Event::Delete(pvc)) => {
                        gone.lock().expect("lock").push(format!(
                            "{}/{} ({})",
                            pvc.namespace().unwrap_or_default(),
                            pvc.name_any(),
                            pvc.uid().unwrap_or_default()
                        ));
                    }
                    _ => {}
                }
            }
        });
        Self {
            uids,
            deleted,
            task,
        }
    }

    /// The first uid of every database volume, once each environment has its volume.
    async fn wait_first_uids(
        &self,
        expected: usize,
        limit: Duration,
    ) -> BTreeMap<(String, String), String> {
        let deadline = Instant::now() + limit;
        loop {
            let first: BTreeMap<_, _> = self
                .uids
                .lock()
                .expect("lock")
                .iter()
                .map(|(key, uids)| (key.clone(), uids[0].clone()))
                .collect();
            if first.len() >= expected {
                return first;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {expected} database volumes within {limit:?}: {first:?}",
                first.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// No database volume was deleted or replaced, and each still has the uid first recorded.
    async fn assert_kept(&self, client: &Client, first: &BTreeMap<(String, String), String>) {
        self.task.abort();
        let deleted = self.deleted.lock().expect("lock").clone();
        assert!(deleted.is_empty(), "database volumes deleted: {deleted:?}");
        let history = self.uids.lock().expect("lock").clone();
        for ((ns, name), uid) in first {
            assert_eq!(
                history.get(&(ns.clone(), name.clone())),
                Some(&vec![uid.clone()]),
                "{ns}/{name} was recreated"
            );
            let now = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .expect("the database volume still exists");
            assert_eq!(now.uid().as_deref(), Some(uid.as_str()), "{ns}/{name}");
            assert!(
                now.metadata.deletion_timestamp.is_none(),
                "{ns}/{name} is being deleted"
            );
        }
        assert_eq!(
            history.len(),
            first.len(),
            "database volumes appeared that were not recorded first: {history:?}"
        );
    }
}

/// Database volumes a fleet has: one per PostgreSQL and per SQLite environment.
fn database_volumes(fleet: &Fleet) -> usize {
    fleet
        .envs
        .values()
        .filter(|(shape, _)| matches!(shape, Shape::Postgres | Shape::Sqlite))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_operator_at_random_moments_while_20_environments_roll_out_restart_it_repeat_10_times_all_converge_with_no_duplicates_and_no_volume_lost()
 {
    let started = Instant::now();
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let (mut rng, seed) = Rng::seeded();
    say(format!(
        "kill -9 test: seed {seed} (rerun with APPENV_FAILURE_SEED={seed})"
    ));
    let volumes = VolumeHistory::start(&client);
    let mut fleet = Fleet::new("crash", 20);
    let mut operator = Operator::start(&cluster);
    fleet.apply_all(&client).await;
    let names: Vec<String> = fleet.envs.keys().cloned().collect();
    for round in 0..10 {
        let delay = rng.millis(200, 3000);
        tokio::time::sleep(delay).await;
        assert!(
            operator.running(),
            "the operator exited by itself before kill {round}: {}",
            operator.log_tail()
        );
        operator.kill();
        // Rollouts in flight at the next kill: new images for two environments.
        for _ in 0..2 {
            let name = &names[usize::try_from(rng.next() % 20).expect("index")];
            fleet.bump(&client, name).await;
        }
        say(format!("kill {round} after {delay:?}"));
        operator = Operator::start(&cluster);
    }
    let first_uids = volumes
        .wait_first_uids(database_volumes(&fleet), CONVERGE)
        .await;
    fleet
        .wait_ready(&client, CONVERGE, "after the last kill", &operator)
        .await;
    assert!(operator.running(), "{}", operator.log_tail());
    assert_exact_children(&client, &fleet).await;
    volumes.assert_kept(&client, &first_uids).await;
    say(format!("kill -9 test done in {:.1?}", started.elapsed()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_the_api_server_keeping_etcd_during_reconciles_the_operator_reconnects_and_converges()
 {
    let started = Instant::now();
    let cluster = cluster().await;
    let client = cluster.client.clone();
    // Data written before the restart must be there after it.
    let markers: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut marker = ConfigMap::default();
    marker.metadata.name = Some("before-restart".into());
    marker.data = Some(BTreeMap::from([("kept".to_owned(), "yes".to_owned())]));
    let marker_uid = markers
        .create(&PostParams::default(), &marker)
        .await
        .expect("create marker")
        .uid();

    let volumes = VolumeHistory::start(&client);
    let mut fleet = Fleet::new("restart", 8);
    let mut operator = Operator::start(&cluster);
    let pid = operator.child.id();
    operator.wait_serving().await;
    fleet.apply_all(&client).await;
    // The operator is at work: the first environment has a status.
    let envs: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(
        &envs,
        "restart-00",
        Duration::from_secs(60),
        "reconciled",
        |e: Option<&AppEnvironment>| e.is_some_and(|e| e.status.is_some()),
    )
    .await;
    let uids_before: BTreeMap<String, Option<String>> = envs
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|e| (e.name_any(), e.uid()))
        .collect();
    // Rollouts in flight when the API server goes: new images (and migrations) for three.
    for name in ["restart-02", "restart-03", "restart-05"] {
        fleet.bump(&client, name).await;
    }
    let apiserver_pids = cluster.control_plane.pids();
    let restarted = Instant::now();
    cluster
        .control_plane
        .restart_apiserver()
        .await
        .expect("kube-apiserver restarts");
    say(format!(
        "kube-apiserver restarted in {:.1?}",
        restarted.elapsed()
    ));
    assert_ne!(
        cluster.control_plane.pids(),
        apiserver_pids,
        "a new kube-apiserver process"
    );

    // The restart kept etcd's data.
    let kept = markers.get("before-restart").await.expect("marker kept");
    assert_eq!(kept.uid(), marker_uid);
    assert_eq!(
        kept.data.and_then(|d| d.get("kept").cloned()).as_deref(),
        Some("yes")
    );
    let uids_after: BTreeMap<String, Option<String>> = envs
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|e| (e.name_any(), e.uid()))
        .collect();
    assert_eq!(uids_after, uids_before, "the same AppEnvironments");

    // Changes after the restart reach the operator through its re-established watches.
    fleet.add(&client, "restart-new", Shape::Postgres).await;
    fleet.bump(&client, "restart-01").await;
    fleet
        .wait_ready(&client, RECOVER, "after the API server restart", &operator)
        .await;
    assert!(
        operator.running(),
        "the operator exited: {}",
        operator.log_tail()
    );
    assert_eq!(operator.child.id(), pid, "the same operator process");
    assert_eq!(get(operator.port, "/healthz").expect("healthz").0, 200);
    assert_exact_children(&client, &fleet).await;
    let first_uids = volumes
        .wait_first_uids(database_volumes(&fleet), Duration::from_secs(10))
        .await;
    volumes.assert_kept(&client, &first_uids).await;
    say(format!("restart test done in {:.1?}", started.elapsed()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_unreachable_for_30_s_the_operator_keeps_running_and_recovers_without_a_restart()
{
    let started = Instant::now();
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let mut fleet = Fleet::new("partition", 3);
    let mut operator = Operator::start(&cluster);
    let pid = operator.child.id();
    operator.wait_serving().await;
    fleet.apply_all(&client).await;
    fleet
        .wait_ready(&client, CONVERGE, "before the partition", &operator)
        .await;

    // SIGSTOP: connections to the API server hang, as across a network partition.
    cluster
        .control_plane
        .pause_apiserver()
        .expect("pause kube-apiserver");
    let paused = Instant::now();
    let mut readyz = BTreeSet::new();
    while paused.elapsed() < Duration::from_secs(30) {
        assert!(
            operator.running(),
            "the operator exited while the API server was unreachable: {}",
            operator.log_tail()
        );
        // /healthz says the process serves; it must not depend on the API server.
        let (code, _) = get(operator.port, "/healthz").expect("/healthz answers");
        assert_eq!(code, 200, "/healthz while the API server is unreachable");
        // /readyz may say either; record what it says.
        readyz.insert(get(operator.port, "/readyz").map(|(c, _)| c).unwrap_or(0));
        // Nothing to watch while the API server is gone: poll once a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    say(format!(
        "API server unreachable for {:.1?}; operator /readyz answered {readyz:?}",
        paused.elapsed()
    ));
    cluster
        .control_plane
        .resume_apiserver()
        .await
        .expect("resume kube-apiserver");
    assert!(operator.running(), "{}", operator.log_tail());

    // A change after the partition is reconciled by the same process.
    fleet.bump(&client, "partition-00").await;
    fleet.bump(&client, "partition-01").await;
    fleet
        .wait_ready(&client, RECOVER, "after the partition", &operator)
        .await;
    assert!(
        operator.running(),
        "the operator exited: {}",
        operator.log_tail()
    );
    assert_eq!(operator.child.id(), pid, "the same operator process");
    assert_exact_children(&client, &fleet).await;
    say(format!("partition test done in {:.1?}", started.elapsed()));
}

/// How many environments the operator's `appenv_environments` gauge counts, in any phase.
fn counted_environments(operator: &Operator) -> u64 {
    let (_, text) = get(operator.port, "/metrics").expect("/metrics answers");
    common::metric(&text, "appenv_environments{", |_| true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_deleted_while_the_operator_was_cut_off_leaves_its_metrics_after_the_relist()
{
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let fleet = Fleet::new("missed", 2);
    let mut operator = Operator::start(&cluster);
    operator.wait_serving().await;
    fleet.apply_all(&client).await;
    fleet
        .wait_ready(&client, CONVERGE, "before the cut", &operator)
        .await;
    assert_eq!(counted_environments(&operator), 2);

    // The operator stops (SIGSTOP) and its connections die with the API server it had; the
    // delete happens on the new server, so no watch of the operator's carries it: only the
    // full list after the reconnect (the old resourceVersion is too old for the new server's
    // watch cache) shows it gone.
    let pid = libc::pid_t::try_from(operator.child.id()).expect("pid");
    // SAFETY: signals to our own child process (a stopped one is still killed by the drop of
    // `operator` if the test fails on the way).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    cluster
        .control_plane
        .restart_apiserver()
        .await
        .expect("kube-apiserver restarts");
    let envs: Api<AppEnvironment> = Api::all(client.clone());
    envs.delete("missed-00", &Default::default())
        .await
        .expect("delete");
    common::wait_for(
        &envs,
        "missed-00",
        Duration::from_secs(60),
        "deleted",
        |e: Option<&AppEnvironment>| e.is_none(),
    )
    .await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);

    let deadline = Instant::now() + RECOVER;
    while counted_environments(&operator) != 1 {
        assert!(
            Instant::now() < deadline,
            "the deleted environment is still counted: {}",
            operator.log_tail()
        );
        // The metrics are served, not watched: poll.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(operator.running(), "{}", operator.log_tail());
}
