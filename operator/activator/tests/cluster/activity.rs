//! Activity: while requests flow, the last-request annotation is written at most once per
//! interval per environment, counted by the request-counting client layer, with one replica
//! and with two side by side.

use crate::support::{self, Env, LIMIT, activator, environment_writes, get};
use appenv_activator::{Activator, Config, LAST_REQUEST_ANNOTATION};
use futures::StreamExt as _;
use http::StatusCode;
use kube::ResourceExt as _;
use kube::runtime::watcher;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_secs(2);
/// How long requests flow.
const FLOW: Duration = Duration::from_secs(7);
/// Clients sending requests one after the other, at once.
const CLIENTS: usize = 4;
/// No client sends more than this many requests.
const MOST_PER_CLIENT: usize = 5000;

/// The values the annotation takes, as a watch sees them.
struct Values {
    seen: watch::Receiver<BTreeSet<jiff::Timestamp>>,
    task: tokio::task::JoinHandle<()>,
}

impl Values {
    fn follow(admin: &kube::Client, env: &Env) -> Self {
        let (tx, seen) = watch::channel(BTreeSet::new());
        let config = watcher::Config::default().fields(&format!("metadata.name={}", env.name));
        let events = watcher::watcher(support::envs(admin), config);
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) = event
                    && let Some(value) = e.annotations().get(LAST_REQUEST_ANNOTATION)
                    && let Ok(value) = value.parse()
                {
                    tx.send_modify(|seen| {
                        seen.insert(value);
                    });
                }
            }
        });
        Self { seen, task }
    }

    /// Wait until the watch has seen `count` values; all of them, oldest first.
    async fn wait_for(&self, count: usize) -> Vec<jiff::Timestamp> {
        let mut seen = self.seen.clone();
        let waited = tokio::time::timeout(LIMIT, seen.wait_for(|s| s.len() >= count)).await;
        let all: Vec<_> = self.seen.borrow().iter().copied().collect();
        assert!(
            matches!(waited, Ok(Ok(_))),
            "the watch saw {all:?}, not {count} values"
        );
        all
    }
}

impl Drop for Values {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests from `CLIENTS` clients for `FLOW`, spread over `addrs`; how many were answered.
async fn flow(addrs: &[SocketAddr], host: &str) -> usize {
    let until = Instant::now() + FLOW;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let addr = addrs[client % addrs.len()];
        let host = host.to_owned();
        clients.spawn(async move {
            let mut answered = 0;
            while Instant::now() < until && answered < MOST_PER_CLIENT {
                let answer = get(addr, &host, "/", &[]).await;
                assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
                answered += 1;
            }
            answered
        });
    }
    clients.join_all().await.into_iter().sum()
}

/// The landed values are at least an interval apart, and no more than the flow allows.
fn check_spacing(values: &[jiff::Timestamp]) {
    for pair in values.windows(2) {
        let apart = pair[1].duration_since(pair[0]);
        assert!(
            apart >= jiff::SignedDuration::try_from(INTERVAL).expect("an interval"),
            "two writes {apart} apart: {values:?}"
        );
    }
    let most = FLOW.as_secs() / INTERVAL.as_secs() + 2;
    assert!(values.len() as u64 <= most, "{values:?}");
    assert!(
        values.len() >= 2,
        "activity goes on being recorded: {values:?}"
    );
}

fn config() -> Config {
    Config {
        activity_interval: INTERVAL,
        ..Config::default()
    }
}

async fn ready_env(admin: &kube::Client, test: &str) -> Env {
    let env = Env::create(admin, test, "Ready", None, None).await;
    env.web_pod(admin, "web").await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_written_at_most_once_per_interval_while_requests_flow() {
    let admin = support::admin().await;
    let env = ready_env(&admin, "activity").await;
    let values = Values::follow(&admin, &env);
    let (activator, recorder) = activator(config()).await;
    let answered = flow(&[activator.addr()], &env.host).await;
    let writes = environment_writes(&recorder);
    let landed = values.wait_for(writes as usize).await;
    eprintln!(
        "[activator] {answered} requests in {FLOW:?} (interval {INTERVAL:?}): {writes} writes, \
         values {landed:?}"
    );
    assert_eq!(landed.len() as u64, writes, "every write landed");
    check_spacing(&landed);
    env.delete(&admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_side_by_side_land_at_most_one_write_per_interval_between_them() {
    let admin = support::admin().await;
    let env = ready_env(&admin, "replicas").await;
    let values = Values::follow(&admin, &env);
    let (first, first_requests): (Activator, _) = activator(config()).await;
    let (second, second_requests) = activator(config()).await;
    let answered = flow(&[first.addr(), second.addr()], &env.host).await;
    let attempts = environment_writes(&first_requests) + environment_writes(&second_requests);
    let landed_count: u64 = [&first, &second]
        .iter()
        .map(|a| {
            a.metrics().writes(
                appenv_activator::decide::Reason::Activity,
                appenv_activator::WriteResult::Written,
            ) + a.metrics().writes(
                appenv_activator::decide::Reason::Wake,
                appenv_activator::WriteResult::Written,
            )
        })
        .sum();
    let landed = values.wait_for(landed_count as usize).await;
    eprintln!(
        "[activator] two replicas, {answered} requests in {FLOW:?}: {attempts} write attempts, \
         {landed_count} landed, values {landed:?}"
    );
    check_spacing(&landed);
    assert!(
        attempts <= 2 * landed.len() as u64,
        "a refused write is not tried again at once"
    );
    env.delete(&admin).await;
}
