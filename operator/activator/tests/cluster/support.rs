//! What the cluster tests share: the local cluster (a real kube-apiserver and the simulated
//! kubelet, whose Pods answer HTTP on their own loopback addresses), AppEnvironments whose
//! status a test sets itself (no operator runs), web Pods, an activator whose API requests are
//! counted, and an HTTP client.

use appenv_activator::{Activator, Config, LAST_REQUEST_ANNOTATION};
use appenv_api::AppEnvironment;
use appenv_controller::requests::Recorder;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a test waits for the cluster to do something.
pub const LIMIT: Duration = Duration::from_secs(60);

/// An admin client of the shared local cluster (started on first use; a failure to start
/// fails the test).
pub async fn admin() -> Client {
    let client = appenv_localcluster::shared()
        .client()
        .await
        .expect("a client of the local control plane");
    appenv_controller::crd::install(&client, "appenv-activator-tests")
        .await
        .expect("the CRD installs");
    client
}

/// A client of the shared cluster whose every request `recorder` counts.
pub async fn counted_client(recorder: &Recorder) -> Client {
    let path = appenv_localcluster::shared().kubeconfig();
    let kubeconfig = Kubeconfig::read_from(path).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a configuration");
    recorder.client(config).expect("a counted client")
}

/// An activator on loopback ports with `config`'s limits, its API requests counted; returned
/// once its watches have listed.
pub async fn activator(config: Config) -> (Activator, Recorder) {
    let recorder = Recorder::default();
    let client = counted_client(&recorder).await;
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        health_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..config
    };
    let activator = Activator::start(config, client)
        .await
        .expect("the activator starts");
    tokio::time::timeout(LIMIT, activator.ready())
        .await
        .expect("the activator's watches list");
    (activator, recorder)
}

/// Writes to AppEnvironments the activator sent (patches of the object, accepted or not).
pub fn environment_writes(recorder: &Recorder) -> u64 {
    recorder
        .snapshot()
        .iter()
        .filter(|(r, _)| r.is_write() && r.group == "appenv.dev")
        .map(|(_, n)| *n)
        .sum()
}

/// Every write the activator sent, of any kind.
pub fn all_writes(recorder: &Recorder) -> u64 {
    recorder.totals().1
}

/// A name unique within this run, for an environment and its namespace.
pub fn unique(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An AppEnvironment as a test sets it up.
#[derive(Debug, Clone)]
pub struct Env {
    pub name: String,
    /// The host of its `status.url`.
    pub host: String,
    /// `status.namespace` (created).
    pub namespace: String,
}

/// The time `secs` seconds from now, in whole seconds.
pub fn seconds_from_now(secs: i64) -> Timestamp {
    let now = Timestamp::now().as_second();
    Timestamp::from_second(now + secs).expect("a time")
}

impl Env {
    /// A new environment with its namespace; its status says `phase` (and `since`, when it
    /// sleeps), its annotation `last_request`.
    pub async fn create(
        client: &Client,
        test: &str,
        phase: &str,
        since: Option<Timestamp>,
        last_request: Option<Timestamp>,
    ) -> Self {
        let name = unique(test);
        let env = Self {
            host: format!("{name}.preview.test"),
            namespace: name.clone(),
            name,
        };
        let mut ns = Namespace::default();
        ns.metadata.name = Some(env.namespace.clone());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the namespace");
        let mut annotations = serde_json::Map::new();
        if let Some(at) = last_request {
            annotations.insert(LAST_REQUEST_ANNOTATION.to_owned(), at.to_string().into());
        }
        let object: AppEnvironment = serde_json::from_value(json!({
            "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
            "metadata": {"name": env.name, "annotations": annotations},
            "spec": {"app": "shop", "image": "example.invalid/shop:1"},
        }))
        .expect("an AppEnvironment");
        envs(client)
            .create(&PostParams::default(), &object)
            .await
            .expect("create the AppEnvironment");
        let sleep = since.map(|since| json!({"since": since.to_string(), "reason": "idle"}));
        env.set_status(
            client,
            json!({
                "url": format!("https://{}/", env.host),
                "namespace": env.namespace,
                "phase": phase,
                "sleep": sleep,
            }),
        )
        .await;
        env
    }

    /// Merge `status` into its status (what the controller would write).
    pub async fn set_status(&self, client: &Client, status: Value) {
        envs(client)
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("patch the status");
    }

    /// A web Pod of the environment (labels as appenv's builders set them, a container port
    /// named `http`, an HTTP readiness probe), Ready once the kubelet's probe passed.
    pub async fn web_pod(&self, client: &Client, pod: &str) -> Pod {
        let object: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod, "labels": {
                "app.kubernetes.io/component": "web",
                "app.kubernetes.io/managed-by": "appenv",
                "appenv.dev/environment": self.name,
            }},
            "spec": {"containers": [{
                "name": "web", "image": "example.invalid/shop:1",
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                    "periodSeconds": 1},
            }]},
        }))
        .expect("a Pod");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        pods.create(&PostParams::default(), &object)
            .await
            .expect("create the Pod");
        let ready = tokio::time::timeout(
            LIMIT,
            await_condition(pods, pod, |p: Option<&Pod>| p.is_some_and(is_ready)),
        )
        .await
        .expect("the Pod is Ready in time")
        .expect("watching the Pod");
        ready.expect("the Pod")
    }

    /// Wait until its last-request annotation is newer than `than`; its value.
    pub async fn last_request_newer_than(&self, client: &Client, than: Timestamp) -> Timestamp {
        let newer = move |e: Option<&AppEnvironment>| last_request(e).is_some_and(|t| t > than);
        let found = tokio::time::timeout(LIMIT, await_condition(envs(client), &self.name, newer))
            .await
            .expect("the annotation written in time")
            .expect("watching the AppEnvironment");
        last_request(found.as_ref()).expect("a value")
    }

    pub async fn delete(&self, client: &Client) {
        let _ = envs(client)
            .delete(&self.name, &DeleteParams::default())
            .await;
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

pub fn envs(client: &Client) -> Api<AppEnvironment> {
    Api::all(client.clone())
}

/// The last-request annotation's value.
pub fn last_request(env: Option<&AppEnvironment>) -> Option<Timestamp> {
    env?.annotations()
        .get(LAST_REQUEST_ANNOTATION)?
        .parse()
        .ok()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// An answer, with how long it took.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub took: Duration,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `GET path` with `Host: host` and `headers`, on a connection of its own.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        took: started.elapsed(),
    }
}

/// Send `request` as written and return the status line of the answer.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sends the request");
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    loop {
        let n = tokio::time::timeout(LIMIT, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("reads");
        answer.extend_from_slice(&buf[..n]);
        if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}
