//! Routing by host to the Ready web Pods of an environment, and nothing else.

use crate::support::{self, Env, activator, all_writes, environment_writes, get, raw};
use appenv_activator::{Config, Outcome};
use appenv_controller::requests::Request;
use http::StatusCode;
use std::collections::BTreeSet;

#[tokio::test]
async fn requests_reach_the_ready_web_pods_of_the_environment_their_host_names() {
    let admin = support::admin().await;
    let env = Env::create(&admin, "route", "Ready", None, None).await;
    let pods = [
        env.web_pod(&admin, "web-a").await,
        env.web_pod(&admin, "web-b").await,
    ];
    let (activator, recorder) = activator(Config::default()).await;

    let mut answered_by = BTreeSet::new();
    for i in 0..6 {
        // The host as a client may write it: another case, with a port.
        let host = format!("{}:443", env.host.to_uppercase());
        let answer = get(activator.addr(), &host, &format!("/orders?page={i}"), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let pod = answer
            .header("x-appenv-sim-pod")
            .unwrap_or_default()
            .to_owned();
        let name = pod.rsplit('/').next().unwrap_or_default();
        assert_eq!(answer.body, format!("pod {name} (ns {})\n", env.namespace));
        answered_by.insert(pod);
    }
    let expected: BTreeSet<String> = pods
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                env.namespace,
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(answered_by, expected, "both Ready Pods, in turn");
    assert_eq!(activator.metrics().requests(Outcome::Proxied), 6);

    // The first request was the environment's activity: recorded once.
    env.last_request_newer_than(&admin, support::seconds_from_now(-120))
        .await;
    assert_eq!(
        environment_writes(&recorder),
        1,
        "{:?}",
        recorder.snapshot()
    );
    assert_eq!(all_writes(&recorder), 1);
    // Its ClusterRole grants exactly what it used.
    let granted: BTreeSet<Request> = appenv_activator::rbac::CLUSTER_RULES
        .iter()
        .flat_map(|rule| {
            rule.groups.iter().flat_map(move |group| {
                rule.resources.iter().flat_map(move |resource| {
                    rule.verbs.iter().map(move |verb| Request {
                        verb,
                        group: (*group).to_owned(),
                        resource: (*resource).to_owned(),
                    })
                })
            })
        })
        .collect();
    assert_eq!(recorder.authorized(), granted);

    // The health port: ready, the counts in the metrics; not ready once draining.
    let health = activator.health_addr();
    let ready = get(health, "activator", "/readyz", &[]).await;
    assert_eq!((ready.status, ready.body.as_str()), (StatusCode::OK, "ok"));
    let metrics = get(health, "activator", "/metrics", &[]).await;
    for line in [
        r#"appenv_activator_requests_total{outcome="proxied"} 6"#,
        // (the write's count may follow the watch event the test waited for)
        "# TYPE appenv_activator_annotation_writes_total counter",
        "appenv_activator_held_requests 0",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "{line} in {}",
            metrics.body
        );
    }
    activator.drain();
    let draining = get(health, "activator", "/readyz", &[]).await;
    assert_eq!(draining.status, StatusCode::SERVICE_UNAVAILABLE);
    let still = get(activator.addr(), &env.host, "/", &[]).await;
    assert_eq!(still.status, StatusCode::OK, "still served while draining");
    env.delete(&admin).await;
}

#[tokio::test]
async fn an_unknown_or_forged_host_gets_404_and_nothing_is_written_or_reached() {
    let admin = support::admin().await;
    let env = Env::create(&admin, "forged", "Ready", None, None).await;
    let pod = env.web_pod(&admin, "web").await;
    let pod_ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .expect("the Pod's address");
    let (activator, recorder) = activator(Config::default()).await;
    let apiserver = appenv_localcluster::shared()
        .server()
        .trim_start_matches("https://")
        .to_owned();

    let forged = [
        "unknown.preview.test".to_owned(),
        format!("{pod_ip}:8000"),
        pod_ip.clone(),
        apiserver.clone(),
        "localhost".to_owned(),
        "kubernetes.default.svc".to_owned(),
        format!("sub.{}", env.host),
    ];
    for host in &forged {
        let answer = get(activator.addr(), host, "/", &[]).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{host}: {answer:?}");
        assert_eq!(answer.body, "no environment is served at this host\n");
        assert!(
            answer.header("x-appenv-sim-pod").is_none(),
            "{host}: reached a Pod"
        );
    }
    // Targets that would name a destination, whatever the Host says.
    let addr = activator.addr();
    let refused = [
        (
            format!(
                "GET http://{pod_ip}:8000/ HTTP/1.1\r\nHost: {}\r\n\r\n",
                env.host
            ),
            "400",
        ),
        (
            format!("GET http://{apiserver}/api HTTP/1.1\r\nHost: {apiserver}\r\n\r\n"),
            "400",
        ),
        (
            format!("CONNECT {pod_ip}:8000 HTTP/1.1\r\nHost: {pod_ip}:8000\r\n\r\n"),
            "405",
        ),
        ("GET / HTTP/1.0\r\n\r\n".to_owned(), "400"),
    ];
    for (request, status) in &refused {
        let line = raw(addr, request).await;
        assert_eq!(line.split(' ').nth(1), Some(*status), "{request:?}: {line}");
    }

    let metrics = activator.metrics();
    assert_eq!(metrics.requests(Outcome::UnknownHost), forged.len() as u64);
    assert_eq!(metrics.requests(Outcome::Refused), refused.len() as u64);
    assert_eq!(metrics.requests(Outcome::Proxied), 0);
    // The environment's own host still routes; only then is anything written.
    assert_eq!(all_writes(&recorder), 0, "{:?}", recorder.snapshot());
    let answer = get(addr, &env.host, "/", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    env.delete(&admin).await;
}

#[tokio::test]
async fn a_host_two_environments_claim_is_refused_and_neither_is_written() {
    let admin = support::admin().await;
    let first = Env::create(&admin, "claim-a", "Ready", None, None).await;
    let second = Env::create(
        &admin,
        "claim-b",
        "Sleeping",
        Some(support::seconds_from_now(-5)),
        None,
    )
    .await;
    second
        .set_status(
            &admin,
            serde_json::json!({"url": format!("http://{}:8080/", first.host)}),
        )
        .await;
    first.web_pod(&admin, "web").await;
    let (activator, recorder) = activator(Config::default()).await;
    let answer = get(activator.addr(), &first.host, "/", &[]).await;
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST, "{answer:?}");
    assert_eq!(activator.metrics().requests(Outcome::AmbiguousHost), 1);
    assert_eq!(
        all_writes(&recorder),
        0,
        "nothing woken: {:?}",
        recorder.snapshot()
    );
    first.delete(&admin).await;
    second.delete(&admin).await;
}
