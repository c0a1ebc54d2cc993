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

/// An operator for `test` whose environments may sleep (it has an activator).
async fn operator(client: &Client, test: &str) -> common::Operator {
    let settings = appenv_core::settings::Settings {
        activator_service: Some(
            appenv_core::settings::ServiceRef::parse("appenv-system/appenv-activator:80")
                .expect("a service"),
        ),
        ..appenv_core::settings::Settings::default()
    };
    common::operator(client, test, settings).await
}

/// An activator in this process, on loopback.
async fn activator(client: &Client) -> appenv_activator::Activator {
    let config = appenv_activator::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        health_listen: "127.0.0.1:0".parse().expect("address"),
        ..appenv_activator::Config::default()
    };
    let activator = appenv_activator::Activator::start(config, client.clone())
        .await
        .expect("the activator starts");
    activator.ready().await;
    activator
}

/// A web app on PostgreSQL at `host`, which sleeps after 30 minutes without a request.
fn web_app(name: &str, test: &str, host: &str) -> serde_json::Value {
    json!({
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
    })
}

/// Put the environment to sleep as `appenv preview sleep` does, and wait until it sleeps and
/// the API server lists no web Pod. When it fell asleep.
async fn sleep_now(client: &Client, name: &str) -> Timestamp {
    let asked = Timestamp::now().to_string();
    annotate(client, name, "appenv.dev/sleep-requested", &asked).await;
    let slept = wait_env(client, name, "Sleeping", sleeping).await;
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
    slept
        .status
        .and_then(|s| s.sleep)
        .map(|s| s.since.0)
        .expect("since")
}

fn whole_seconds(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A request now to an environment asleep since `since`, as the activator records it: whole
/// seconds, never before `since`.
fn request_after(since: Timestamp) -> String {
    whole_seconds(Timestamp::now().max(since))
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
    let _operator = operator(&client, test).await;
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
        &request_after(status.since.0),
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

    // `appenv preview sleep`: a new sleep request, taken once: a request after it wakes the
    // environment for good (the old sleep request does not put it back to sleep).
    let asked = Timestamp::now().to_string();
    annotate(&client, name, "appenv.dev/sleep-requested", &asked).await;
    let slept = wait_env(&client, name, "Sleeping on request", sleeping).await;
    let status = slept.status.expect("status");
    assert_eq!(
        status.sleep.as_ref().map(|s| s.reason.as_str()),
        Some("requested")
    );
    assert_eq!(status.last_sleep_request.as_deref(), Some(asked.as_str()));
    let since = status.sleep.as_ref().map(|s| s.since.0).expect("since");
    annotate(
        &client,
        name,
        "appenv.dev/last-request",
        &request_after(since),
    )
    .await;
    let woken = wait_env(&client, name, "Ready after the request", awake).await;
    assert_eq!(
        woken.status.and_then(|s| s.last_sleep_request),
        Some(asked),
        "the request handled stays recorded"
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
    let _operator = operator(&client, test).await;
    let activator = activator(&client).await;
    let (name, host) = ("sleep-wake", "sleep-wake.example.com");
    common::apply(&client, &web_app(name, test, host)).await;
    wait_env(&client, name, "Ready", awake).await;
    let (code, body) = get(activator.addr(), host).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("pod shop-"),
        "answered by a web Pod: {body}"
    );
    let since = sleep_now(&client, name).await;
    let (code, _) = get(activator.addr(), "unknown.example.com").await;
    assert_eq!(code, 404);
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

/// Two activators, as the chart runs them: one is killed while it holds a request that woke the
/// environment; the wake completes and the other one answers.
#[tokio::test]
async fn a_wake_completes_when_the_activator_that_started_it_is_killed() {
    let client = common::client().await;
    let test = "sleep-kill";
    let _operator = operator(&client, test).await;
    let (first, second) = (activator(&client).await, activator(&client).await);
    let (name, host) = ("sleep-kill", "sleep-kill.example.com");
    common::apply(&client, &web_app(name, test, host)).await;
    wait_env(&client, name, "Ready", awake).await;
    let since = sleep_now(&client, name).await;
    let held = tokio::spawn(get(first.addr(), host));
    // Killed once it holds the request (and wrote the wake).
    let mut holding = first.held();
    tokio::time::timeout(LIMIT, holding.wait_for(|n| *n >= 1))
        .await
        .expect("the request is held")
        .expect("the activator runs");
    drop(first);
    // Its connection goes with it (as with a killed process): no answer.
    let lost = tokio::time::timeout(LIMIT, held)
        .await
        .expect("the connection ends");
    assert!(
        lost.is_err() || lost.as_ref().is_ok_and(|(code, _)| *code == 0),
        "the killed replica answered: {lost:?}"
    );
    let (code, body) = get(second.addr(), host).await;
    assert_eq!(code, 200, "the other replica answers: {body}");
    assert!(body.starts_with("pod shop-"), "{body}");
    let woken = wait_env(&client, name, "awake and Ready", awake).await;
    let recorded: Timestamp = woken
        .annotations()
        .get("appenv.dev/last-request")
        .and_then(|v| v.parse().ok())
        .expect("a request was recorded");
    assert!(recorded >= since);
    let _ = Api::<AppEnvironment>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
