//! `appenv operator` as a user runs it: a process against a kubeconfig, reconciling to Ready,
//! with /metrics, /healthz and /readyz served.

mod common;

use appenv::api::AppEnvironment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` with plain HTTP/1.0; (status code, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

#[tokio::test]
async fn the_operator_process_reconciles_and_serves_metrics_and_probes() {
    let client = common::client().await;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let _operator = Process(
        Command::new(env!("CARGO_BIN_EXE_appenv"))
            .args([
                "operator",
                "--install-crd",
                "--selector",
                "appenv.dev/test=process",
                "--resync-seconds",
                "5",
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .env("KUBECONFIG", appenv::devcluster::shared().kubeconfig())
            .env("APPENV_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start appenv operator"),
    );
    // The endpoints come up once the operator reached the API server (poll: nothing to watch).
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz").map(|(code, _)| code).ok() != Some(200) {
        assert!(Instant::now() < deadline, "/readyz never became 200");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
                == Some(appenv::api::Phase::Ready)
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
    let _ = api.delete("process-env", &DeleteParams::default()).await;
}
