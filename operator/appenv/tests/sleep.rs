//! Environments that sleep, on the real control plane with the simulated kubelet: idle for its
//! period (the activator's last-request annotation older than `spec.sleep.afterIdle`), every
//! Deployment and the PostgreSQL StatefulSet go to zero with every volume kept, phase
//! `Sleeping`; a request (the annotation at or after it fell asleep) wakes it in order: the
//! database and Redis Ready before web and workers get a Pod; the same volumes after. And
//! `appenv preview sleep`'s request.

mod common;

use appenv_api::AppEnvironment;
use common::{TEST_LABEL, ready};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn whole_seconds(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn annotate(client: &Client, name: &str, key: &str, value: &str) {
    Api::<AppEnvironment>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .expect("annotate");
}

async fn wait_env(
    client: &Client,
    name: &str,
    what: &str,
    matches: impl Fn(&AppEnvironment) -> bool + Send + 'static,
) -> AppEnvironment {
    common::wait_for(
        &Api::<AppEnvironment>::all(client.clone()),
        name,
        LIMIT,
        what,
        move |e: Option<&AppEnvironment>| e.is_some_and(&matches),
    )
    .await
    .expect("environment")
}

fn sleeping(e: &AppEnvironment) -> bool {
    e.status
        .as_ref()
        .is_some_and(|s| s.sleep.is_some() && s.phase == Some(appenv_api::Phase::Sleeping))
}

fn awake(e: &AppEnvironment) -> bool {
    ready(Some(e))
        && e.status
            .as_ref()
            .is_some_and(|s| s.sleep.is_none() && s.phase == Some(appenv_api::Phase::Ready))
}

async fn claims(client: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .iter()
        .map(|c| (c.name_any(), c.uid().unwrap_or_default()))
        .collect()
}

/// Record, until aborted, `NAME ready` when a Deployment or StatefulSet first has a ready Pod
/// and `NAME up` when a Deployment's spec first asks for Pods, in the order the watches saw.
fn record(
    client: &Client,
    ns: &str,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let push = |log: &Arc<Mutex<Vec<String>>>, entry: String| {
        let mut log = log.lock().expect("lock");
        if !log.contains(&entry) {
            log.push(entry);
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let seen = log.clone();
    let a = tokio::spawn(async move {
        let mut events = watcher::watcher(deployments, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event {
                let name = d.name_any();
                if d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0 {
                    push(&seen, format!("{name} up"));
                }
                if d.status.and_then(|s| s.ready_replicas).unwrap_or(0) > 0 {
                    push(&seen, format!("{name} ready"));
                }
            }
        }
    });
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let seen = log.clone();
    let b = tokio::spawn(async move {
        let mut events = watcher::watcher(sets, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event
                && s.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    > 0
            {
                push(&seen, format!("{} ready", s.name_any()));
            }
        }
    });
    (log, vec![a, b])
}

async fn replicas(client: &Client, ns: &str) -> Vec<(String, i32)> {
    let mut all: Vec<(String, i32)> = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("deployments")
        .items
        .iter()
        .map(|d| {
            (
                d.name_any(),
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1),
            )
        })
        .collect();
    all.extend(
        Api::<StatefulSet>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("statefulsets")
            .items
            .iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1),
                )
            }),
    );
    all
}

#[tokio::test]
async fn an_idle_environment_sleeps_keeps_its_volumes_and_wakes_in_order_on_a_request() {
    let client = common::client().await;
    let test = "sleep-idle";
    let settings = appenv_core::settings::Settings {
        activator_service: Some(
            appenv_core::settings::ServiceRef::parse("appenv-system/appenv-activator:80")
                .expect("a service"),
        ),
        ..appenv_core::settings::Settings::default()
    };
    let _operator = common::operator(&client, test, settings).await;
    let name = "sleep-idle";
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: test}},
        "spec": {
            "app": "shop",
            "image": "example.invalid/shop:1",
            "workers": [{"name": "rq", "replicas": 1}],
            "redis": {},
            "database": {"postgres": {}},
            "web": {"replicas": 1, "ingress": {"host": "sleep-idle.example.com"}},
            "sleep": {"afterIdle": "30m"},
        },
    });
    common::apply(&client, &env).await;
    wait_env(&client, name, "Ready", awake).await;
    let volumes = claims(&client, name).await;
    assert!(
        volumes.contains_key("data-shop-postgres-0"),
        "PostgreSQL's volume: {volumes:?}"
    );

    // The last request 31 minutes ago: idle past its period, it sleeps at once.
    let long_ago = Timestamp::now() - SignedDuration::from_secs(31 * 60);
    annotate(
        &client,
        name,
        "appenv.dev/last-request",
        &whole_seconds(long_ago),
    )
    .await;
    let slept = wait_env(&client, name, "Sleeping", sleeping).await;
    let status = slept
        .status
        .as_ref()
        .and_then(|s| s.sleep.clone())
        .expect("sleep");
    assert_eq!(status.reason, "idle");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let all = replicas(&client, name).await;
        if all.iter().all(|(_, n)| *n == 0) {
            assert_eq!(all.len(), 4, "web, worker, Redis, PostgreSQL: {all:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all at zero: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(claims(&client, name).await, volumes, "every volume kept");
    // Its Ingress reaches the activator, through an ExternalName Service of the namespace.
    let activator = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), name)
        .get("shop-activator")
        .await
        .expect("the activator's Service");
    assert_eq!(
        activator.spec.and_then(|s| s.external_name).as_deref(),
        Some("appenv-activator.appenv-system.svc.cluster.local")
    );

    // A request: it wakes, the database and Redis first.
    let (log, tasks) = record(&client, name);
    annotate(
        &client,
        name,
        "appenv.dev/last-request",
        &whole_seconds(Timestamp::now()),
    )
    .await;
    wait_env(&client, name, "awake and Ready", awake).await;
    let log = log.lock().expect("lock").clone();
    for task in tasks {
        task.abort();
    }
    let at = |entry: &str| {
        log.iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("{entry:?} not in {log:?}"))
    };
    for app in ["shop up", "shop-rq up"] {
        assert!(at("shop-postgres ready") < at(app), "{log:?}");
        assert!(at("shop-redis ready") < at(app), "{log:?}");
    }
    assert_eq!(
        claims(&client, name).await,
        volumes,
        "the same volumes after the wake"
    );

    // `appenv preview sleep`: a sleep request newer than the last request.
    annotate(
        &client,
        name,
        "appenv.dev/sleep-requested",
        &whole_seconds(Timestamp::now() + SignedDuration::from_secs(1)),
    )
    .await;
    let slept = wait_env(&client, name, "Sleeping on request", sleeping).await;
    assert_eq!(
        slept.status.and_then(|s| s.sleep).map(|s| s.reason),
        Some("requested".to_owned())
    );
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// One HTTP/1.1 request to `addr` with `host`: the status code and the body.
async fn get(addr: std::net::SocketAddr, host: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

/// The whole path on this machine: a request to the host of a sleeping environment reaches the
/// activator, which records it; the operator wakes the environment (database first); the
/// request, held meanwhile, is answered by a web Pod. An unknown host is refused and wakes
/// nothing.
#[tokio::test]
async fn a_request_through_the_activator_wakes_a_sleeping_environment_and_is_answered_by_web() {
    let client = common::client().await;
    let test = "sleep-wake";
    let settings = appenv_core::settings::Settings {
        activator_service: Some(
            appenv_core::settings::ServiceRef::parse("appenv-system/appenv-activator:80")
                .expect("a service"),
        ),
        ..appenv_core::settings::Settings::default()
    };
    let _operator = common::operator(&client, test, settings).await;
    let config = appenv_activator::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        health_listen: "127.0.0.1:0".parse().expect("address"),
        ..appenv_activator::Config::default()
    };
    let activator = appenv_activator::Activator::start(config, client.clone())
        .await
        .expect("the activator starts");
    let name = "sleep-wake";
    let host = "sleep-wake.example.com";
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {TEST_LABEL: test}},
        "spec": {
            "app": "shop",
            "image": "example.invalid/shop:1",
            "web": {"ingress": {"host": host}, "readiness": {"path": "/healthz"}},
            "database": {"postgres": {}},
            "sleep": {"afterIdle": "30m"},
        },
    });
    common::apply(&client, &env).await;
    wait_env(&client, name, "Ready", awake).await;
    let (code, body) = get(activator.addr(), host).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("pod shop-"),
        "answered by a web Pod: {body}"
    );

    let asked = Timestamp::now() + SignedDuration::from_secs(1);
    annotate(
        &client,
        name,
        "appenv.dev/sleep-requested",
        &whole_seconds(asked),
    )
    .await;
    let slept = wait_env(&client, name, "Sleeping", sleeping).await;
    let since = slept
        .status
        .and_then(|s| s.sleep)
        .map(|s| s.since.0)
        .expect("since");
    let (code, _) = get(activator.addr(), "unknown.example.com").await;
    assert_eq!(code, 404);
    // Wait until web's Pods are gone, as a sleeping environment's are.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), name);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=web"))
        .await
        .expect("pods")
        .items
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "web's Pods never went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = std::time::Instant::now();
    let (code, body) = get(activator.addr(), host).await;
    let took = started.elapsed();
    assert_eq!(
        code, 200,
        "the held request is answered once web is back: {body}"
    );
    assert!(body.starts_with("pod shop-"), "{body}");
    eprintln!("wake through the activator: request to answer {took:?}");
    let woken = wait_env(&client, name, "awake and Ready", awake).await;
    let recorded: Timestamp = woken
        .annotations()
        .get("appenv.dev/last-request")
        .and_then(|v| v.parse().ok())
        .expect("the activator recorded the request");
    assert!(recorded >= since, "{recorded} before {since}");
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
