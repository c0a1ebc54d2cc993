//! Requests to a sleeping environment: held, the environment woken by one write, answered by
//! its web Pod once one is Ready; bounded, and answered 503 (a browser: the waking page) past
//! a bound or a wait. The controller's part (web back after the wake) is played by the test.

use crate::support::{self, Answer, Env, LIMIT, activator, environment_writes, get};
use appenv_activator::WriteResult;
use appenv_activator::decide::Reason;
use appenv_activator::{Config, Outcome, WAKING_PAGE};
use http::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// A sleeping environment: asleep for 30 s, its last request 90 s ago.
async fn sleeping(admin: &kube::Client, test: &str) -> (Env, jiff::Timestamp) {
    let since = support::seconds_from_now(-30);
    let last = support::seconds_from_now(-90);
    (
        Env::create(admin, test, "Sleeping", Some(since), Some(last)).await,
        since,
    )
}

/// What the controller does once woken: web back, the environment awake.
async fn wake_up(admin: &kube::Client, env: &Env) {
    env.set_status(admin, json!({"phase": "Progressing", "sleep": null}))
        .await;
    env.web_pod(admin, "web").await;
}

async fn held(activator: &appenv_activator::Activator, count: usize) {
    let mut held = activator.held();
    tokio::time::timeout(LIMIT, held.wait_for(|n| *n >= count))
        .await
        .expect("the requests are held in time")
        .expect("the activator runs");
}

#[tokio::test]
async fn a_request_to_a_sleeping_environment_wakes_it_once_and_is_answered_by_its_pod() {
    let admin = support::admin().await;
    let (env, since) = sleeping(&admin, "wake").await;
    let (activator, recorder) = activator(Config::default()).await;
    let (addr, host) = (activator.addr(), env.host.clone());
    let request = tokio::spawn(async move { get(addr, &host, "/cart", &[]).await });

    let written = env.last_request_newer_than(&admin, since).await;
    held(&activator, 1).await;
    assert_eq!(
        environment_writes(&recorder),
        1,
        "{:?}",
        recorder.snapshot()
    );
    assert!(written > since);
    wake_up(&admin, &env).await;
    let answer = request.await.expect("the request");
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, format!("pod web (ns {})\n", env.namespace));

    let metrics = activator.metrics();
    assert_eq!(metrics.requests(Outcome::HeldThenProxied), 1);
    assert_eq!(metrics.writes(Reason::Wake, WriteResult::Written), 1);
    assert_eq!(environment_writes(&recorder), 1, "still one write");
    env.delete(&admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_wake_it_once_and_each_gets_the_pods_answer_or_503() {
    const REQUESTS: usize = 1000;
    let admin = support::admin().await;
    let (env, since) = sleeping(&admin, "thousand").await;
    let (activator, recorder) = activator(Config::default()).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let (addr, host) = (activator.addr(), env.host.clone());
        requests.spawn(async move { get(addr, &host, &format!("/item/{i}"), &[]).await });
    }
    held(&activator, REQUESTS).await;
    env.last_request_newer_than(&admin, since).await;
    assert_eq!(
        environment_writes(&recorder),
        1,
        "{:?}",
        recorder.snapshot()
    );
    wake_up(&admin, &env).await;

    let answers: Vec<Answer> = requests.join_all().await;
    let pod_answer = format!("pod web (ns {})\n", env.namespace);
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK && a.body == pod_answer)
        .count();
    let retry_later = answers
        .iter()
        .filter(|a| {
            a.status == StatusCode::SERVICE_UNAVAILABLE && a.header("retry-after").is_some()
        })
        .count();
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "[activator] {REQUESTS} concurrent requests to a sleeping environment: {ok} answered by the Pod, \
         {retry_later} 503 with Retry-After, {} other; wake writes: {}; slowest answer {slowest:?}",
        REQUESTS - ok - retry_later,
        environment_writes(&recorder),
    );
    assert_eq!(
        ok + retry_later,
        REQUESTS,
        "every request answered by the Pod or 503 Retry-After"
    );
    assert_eq!(environment_writes(&recorder), 1, "woken by one write");
    assert_eq!(
        activator
            .metrics()
            .writes(Reason::Wake, WriteResult::Written),
        1
    );
    env.delete(&admin).await;
}

#[tokio::test]
async fn past_the_bound_per_environment_a_request_gets_503_at_once_and_a_client_gone_frees_its_place()
 {
    let admin = support::admin().await;
    let (env, _) = sleeping(&admin, "bound").await;
    let config = Config {
        hold_per_environment: 2,
        ..Config::default()
    };
    let (activator, _recorder) = activator(config).await;
    // Two clients whose requests are held, on connections the test closes later.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(activator.addr())
            .await
            .expect("connects");
        let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", env.host);
        stream.write_all(request.as_bytes()).await.expect("sends");
        clients.push(stream);
    }
    held(&activator, 2).await;
    let third = get(activator.addr(), &env.host, "/", &[]).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE, "{third:?}");
    assert_eq!(third.header("retry-after"), Some("5"));
    assert!(
        third.took < Duration::from_secs(5),
        "at once: {:?}",
        third.took
    );
    assert_eq!(activator.metrics().requests(Outcome::OverLimit), 1);

    drop(clients);
    let mut count = activator.held();
    tokio::time::timeout(LIMIT, count.wait_for(|n| *n == 0))
        .await
        .expect("the places of clients gone are given back")
        .expect("the activator runs");
    env.delete(&admin).await;
}

#[tokio::test]
async fn a_browser_gets_the_waking_page_after_its_wait_and_another_client_503_after_the_timeout() {
    let admin = support::admin().await;
    let (env, since) = sleeping(&admin, "browser").await;
    let config = Config {
        browser_wait: Duration::from_millis(300),
        wake_timeout: Duration::from_millis(1500),
        ..Config::default()
    };
    let (activator, recorder) = activator(config).await;
    let browser = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let api = [("accept", "application/json")];
    let (page, timeout) = tokio::join!(
        get(activator.addr(), &env.host, "/", &browser),
        get(activator.addr(), &env.host, "/api/items", &api),
    );
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{page:?}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("retry-after"), Some("2"));
    assert_eq!(page.body, WAKING_PAGE);
    assert!(
        page.body
            .contains(r#"<meta http-equiv="refresh" content="2">"#)
    );
    assert!(page.body.contains("This preview is waking up"));
    assert!(page.took >= Duration::from_millis(300), "{:?}", page.took);
    assert!(page.took < Duration::from_millis(1500), "{:?}", page.took);

    assert_eq!(
        timeout.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{timeout:?}"
    );
    assert_eq!(timeout.header("retry-after"), Some("5"));
    assert!(
        timeout.took >= Duration::from_millis(1500),
        "{:?}",
        timeout.took
    );

    let metrics = activator.metrics();
    assert_eq!(metrics.requests(Outcome::BrowserPage), 1);
    assert_eq!(metrics.requests(Outcome::WakeTimeout), 1);
    env.last_request_newer_than(&admin, since).await;
    assert_eq!(environment_writes(&recorder), 1, "one wake for both");
    env.delete(&admin).await;
}
