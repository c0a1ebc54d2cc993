//! `appenv operator` as a user runs it: a process against a kubeconfig, reconciling to Ready,
//! with /metrics, /healthz and /readyz served.

mod common;

use appenv_api::AppEnvironment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use appenv_localcluster::http_get as get;

use common::{Process, free_port, metric};

/// `appenv operator ARGS` against the shared cluster, serving its endpoints on `port`.
fn spawn_operator(port: u16, args: &[&str]) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_appenv"))
            .arg("operator")
            .args(args)
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .env("KUBECONFIG", appenv_localcluster::shared().kubeconfig())
            .env("APPENV_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start appenv operator"),
    )
}

/// The endpoints come up once the operator reached the API server (poll: nothing to watch).
async fn wait_ready_endpoint(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz").map(|(code, _)| code).ok() != Some(200) {
        assert!(Instant::now() < deadline, "/readyz never became 200");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_operator_process_reconciles_and_serves_metrics_and_probes() {
    let client = common::client().await;
    let port = free_port();
    let _operator = spawn_operator(
        port,
        &[
            "--install-crd",
            "--selector",
            "appenv.dev/test=process",
            "--resync-seconds",
            "5",
        ],
    );
    wait_ready_endpoint(port).await;
    assert_eq!(get(port, "/healthz").expect("healthz").0, 200);

    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
        "metadata": {"name": "process-env", "labels": {"appenv.dev/test": "process"}},
        "spec": {"app": "hello", "image": "example.invalid/hello:1", "redis": {}},
    });
    let api: Api<AppEnvironment> = Api::all(client.clone());
    api.patch(
        "process-env",
        &PatchParams::apply("appenv-tests").force(),
        &Patch::Apply(&env),
    )
    .await
    .expect("apply");
    common::wait_for(
        &api,
        "process-env",
        Duration::from_secs(120),
        "Ready",
        |e: Option<&AppEnvironment>| {
            e.and_then(|e| e.status.as_ref()).and_then(|s| s.phase)
                == Some(appenv_api::Phase::Ready)
        },
    )
    .await;

    let (code, metrics) = get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("appenv_environments{phase=\"Ready\"} 1"),
        "{metrics}"
    );
    let reconciles: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("appenv_reconciles_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("reconcile counter");
    assert!(reconciles >= 1, "{metrics}");
    assert!(metrics.contains("appenv_reconcile_duration_seconds_bucket{le=\"+Inf\"}"));

    // Deleted by a user (not by its TTL): the environment leaves the phase gauge.
    api.delete("process-env", &DeleteParams::default())
        .await
        .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = get(port, "/metrics").expect("metrics");
        if !metrics.contains("appenv_environments{phase=") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a deleted environment is still counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Write requests (create, update, patch, delete) a process made, excluding the Lease.
fn writes(text: &str) -> u64 {
    metric(text, "appenv_api_requests_total{", |l| {
        ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .any(|v| l.contains(&format!("verb=\"{v}\"")))
            && !l.contains("resource=\"leases\"")
    })
}

fn metrics_of(port: u16) -> String {
    let (code, text) = get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    text
}

const LEASE_SECONDS: u64 = 6;
const RETRY_SECONDS: u64 = 1;

fn elect_args<'a>(lease_ns: &'a str, identity: &'a str, test: &'a str) -> Vec<String> {
    [
        "--selector",
        &format!("appenv.dev/test={test}"),
        "--resync-seconds",
        "5",
        "--leader-elect",
        "--lease-namespace",
        lease_ns,
        "--lease-duration",
        &format!("{LEASE_SECONDS}s"),
        "--lease-renew-deadline",
        "4s",
        "--lease-retry-period",
        &format!("{RETRY_SECONDS}s"),
        "--identity",
        identity,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn spawn_candidate(port: u16, lease_ns: &str, identity: &str, test: &str) -> Process {
    let args = elect_args(lease_ns, identity, test);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_operator(port, &args)
}

async fn holder(client: &kube::Client, lease_ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), lease_ns)
        .get_opt("appenv-operator")
        .await
        .expect("get lease")
        .and_then(|l| l.spec?.holder_identity)
}

/// Poll the Lease (a few reads a second) until `who` holds it; how long that took.
async fn wait_holder(
    client: &kube::Client,
    lease_ns: &str,
    who: Option<&str>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let current = holder(client, lease_ns).await;
        if current.as_deref() == who {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "lease holder is {current:?}, not {who:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply_env(client: &kube::Client, name: &str, test: &str, image: &str) {
    let env = json!({
        "apiVersion": "appenv.dev/v1alpha1", "kind": "AppEnvironment",
        "metadata": {"name": name, "labels": {"appenv.dev/test": test}},
        "spec": {"app": "hello", "image": image, "redis": {}},
    });
    Api::<AppEnvironment>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("appenv-tests").force(),
            &Patch::Apply(&env),
        )
        .await
        .expect("apply");
}

async fn wait_env_ready(client: &kube::Client, name: &str) {
    let api: Api<AppEnvironment> = Api::all(client.clone());
    common::wait_for(&api, name, Duration::from_secs(120), "Ready", common::ready).await;
}

#[tokio::test]
async fn two_replicas_one_leader_and_a_handover_within_the_lease_duration() {
    let client = common::client().await;
    appenv_controller::crd::install(&client, "appenv-tests")
        .await
        .expect("crd");
    let lease_ns = common::namespace(&client, "leases").await;
    let test = "leader";

    let (port_a, port_b) = (free_port(), free_port());
    let mut a = spawn_candidate(port_a, &lease_ns, "replica-a", test);
    wait_holder(
        &client,
        &lease_ns,
        Some("replica-a"),
        Duration::from_secs(60),
    )
    .await;
    let mut b = spawn_candidate(port_b, &lease_ns, "replica-b", test);
    wait_ready_endpoint(port_b).await;

    for name in ["leader-one", "leader-two"] {
        apply_env(&client, name, test, "example.invalid/hello:1").await;
    }
    for name in ["leader-one", "leader-two"] {
        wait_env_ready(&client, name).await;
    }
    // Only the leader reconciled and wrote; the standby only read.
    let (text_a, text_b) = (metrics_of(port_a), metrics_of(port_b));
    assert!(text_a.contains("appenv_leader 1\n"), "{text_a}");
    assert!(text_b.contains("appenv_leader 0\n"), "{text_b}");
    assert!(writes(&text_a) > 0, "the leader wrote: {text_a}");
    assert_eq!(writes(&text_b), 0, "the standby wrote nothing: {text_b}");
    assert_eq!(
        metric(&text_b, "appenv_reconciles_total ", |_| true),
        0,
        "{text_b}"
    );
    assert_eq!(
        holder(&client, &lease_ns).await.as_deref(),
        Some("replica-a")
    );

    // kill -9 the leader: the standby takes over once the Lease expires.
    a.0.kill().expect("kill the leader");
    let _ = a.0.wait();
    let handover = wait_holder(
        &client,
        &lease_ns,
        Some("replica-b"),
        Duration::from_secs(LEASE_SECONDS * 3),
    )
    .await;
    writeln!(
        std::io::stderr(),
        "leader killed -> new leader in {handover:.1?} (lease duration {LEASE_SECONDS}s, retry period {RETRY_SECONDS}s)"
    )
    .ok();
    // A standby sees the last renewal up to one retry period late and notices its expiry up
    // to one retry period late; the rest is the lease duration.
    let bound = Duration::from_secs(LEASE_SECONDS + 2 * RETRY_SECONDS) + Duration::from_millis(500);
    assert!(
        handover <= bound,
        "handover took {handover:?}: more than the lease duration and two retry periods"
    );
    // The new leader reconciles: a change reaches Ready.
    apply_env(&client, "leader-one", test, "example.invalid/hello:2").await;
    wait_env_ready(&client, "leader-one").await;
    let text_b = metrics_of(port_b);
    assert!(text_b.contains("appenv_leader 1\n"), "{text_b}");
    assert!(writes(&text_b) > 0, "{text_b}");

    // A leader that finds the Lease taken stops at once (the lease task ended: exit).
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_ns);
    let mut lease = leases.get("appenv-operator").await.expect("lease");
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
        spec.lease_duration_seconds = Some(600);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    }
    leases
        .replace("appenv-operator", &Default::default(), &lease)
        .await
        .expect("take the lease away");
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS * 2);
    let status = loop {
        if let Some(status) = b.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the replica kept running without its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !status.success(),
        "losing the lease is a failure exit: {status:?}"
    );

    let api: Api<AppEnvironment> = Api::all(client.clone());
    for name in ["leader-one", "leader-two"] {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    common::cleanup(&client, &lease_ns).await;
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_releases_the_lease_at_once() {
    let client = common::client().await;
    appenv_controller::crd::install(&client, "appenv-tests")
        .await
        .expect("crd");
    let lease_ns = common::namespace(&client, "release").await;
    let port = free_port();
    let mut leader = spawn_candidate(port, &lease_ns, "replica-r", "release");
    wait_holder(
        &client,
        &lease_ns,
        Some("replica-r"),
        Duration::from_secs(60),
    )
    .await;
    let pid = libc::pid_t::try_from(leader.0.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = leader.0.wait().expect("wait");
    assert!(status.success(), "a SIGTERM stop is clean: {status:?}");
    assert_eq!(
        holder(&client, &lease_ns).await,
        None,
        "the Lease is released, so a standby takes it without waiting for it to expire"
    );
    common::cleanup(&client, &lease_ns).await;
}

/// A stop that comes while an attempt to take the Lease is under way never cuts the attempt
/// short: the caller learns whether it holds the Lease, so it can release it (the SIGTERM race
/// of a leader that had just taken the Lease, in-process and deterministic).
#[tokio::test]
async fn a_stop_during_acquisition_tells_whether_the_lease_was_taken() {
    use appenv_controller::leader::{Elector, LeaseConfig};
    let client = common::client().await;
    let lease_ns = common::namespace(&client, "acquire-stop").await;
    let candidate = |identity: &str| {
        Elector::new(
            client.clone(),
            LeaseConfig {
                namespace: lease_ns.clone(),
                name: "appenv-operator".into(),
                identity: identity.into(),
                lease_duration: Duration::from_secs(60),
                renew_deadline: Duration::from_secs(40),
                retry_period: Duration::from_secs(20),
            },
        )
    };
    let (first, second) = (candidate("first"), candidate("second"));
    // Stopped before it began: the attempt still runs and takes the free Lease.
    assert!(first.acquire_until(std::future::ready(())).await);
    assert_eq!(holder(&client, &lease_ns).await.as_deref(), Some("first"));
    // The Lease is held: one attempt, then the stop is honoured without waiting 20 s.
    let started = Instant::now();
    assert!(!second.acquire_until(std::future::ready(())).await);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(holder(&client, &lease_ns).await.as_deref(), Some("first"));
    first.release().await.expect("release");
    assert_eq!(holder(&client, &lease_ns).await, None);
    common::cleanup(&client, &lease_ns).await;
}
