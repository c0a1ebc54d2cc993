//! The two watches that keep the routing table: AppEnvironments (all of them) and the web Pods
//! appenv manages (by label, in every namespace). Each change tells the held requests of the
//! environments it touched.

use crate::health::Readiness;
use crate::server::Context;
use crate::table::{EnvironmentObject, WebPod};
use appenv_api::names::{Component, label};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A failed watch is retried after a constant second (as the controller's are): after an API
/// server restart every watch fails once with "410 Gone" and relists.
#[derive(Debug, Clone, Copy)]
struct ConstantBackoff;

const WATCH_BACKOFF: Duration = Duration::from_secs(1);

impl Iterator for ConstantBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(WATCH_BACKOFF)
    }
}

impl kube::runtime::utils::Backoff for ConstantBackoff {
    fn reset(&mut self) {}
}

/// The label selector of the Pods the activator forwards to.
pub fn web_pod_selector() -> String {
    format!(
        "{}={},{}={},{}",
        label::COMPONENT,
        Component::Web.as_str(),
        label::MANAGED_BY,
        appenv_core::build::MANAGED_BY,
        label::ENVIRONMENT
    )
}

/// `event` with its object turned into `T` (events whose object gives none are dropped).
fn convert<K, T>(event: Event<K>, f: impl Fn(&K) -> Option<T>) -> Option<Event<T>> {
    Some(match event {
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
        Event::InitApply(k) => Event::InitApply(f(&k)?),
        Event::Apply(k) => Event::Apply(f(&k)?),
        Event::Delete(k) => Event::Delete(f(&k)?),
    })
}

/// Follow the AppEnvironments for ever.
pub async fn environments(client: Client, ctx: Arc<Context>, readiness: watch::Sender<Readiness>) {
    let api: Api<EnvironmentObject> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .backoff(ConstantBackoff)
        .boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(error = %err, "watching AppEnvironments");
                continue;
            }
        };
        let done = matches!(event, Event::InitDone);
        let Some(event) = convert(event, |o| Some(o.environment())) else {
            continue;
        };
        let changed: Vec<(String, bool)> = {
            let mut table = ctx.table_mut();
            let names = table.environment_event(event);
            names
                .into_iter()
                .map(|name| {
                    let gone = !table.has_environment(&name);
                    (name, gone)
                })
                .collect()
        };
        for (name, gone) in changed {
            ctx.states.changed(&name, gone);
        }
        if done {
            readiness.send_modify(|l| l.environments = true);
        }
    }
}

/// Follow the web Pods for ever.
pub async fn pods(client: Client, ctx: Arc<Context>, readiness: watch::Sender<Readiness>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().labels(&web_pod_selector());
    let mut events = watcher::watcher(api, config)
        .backoff(ConstantBackoff)
        .boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(error = %err, "watching web Pods");
                continue;
            }
        };
        let done = matches!(event, Event::InitDone);
        let Some(event) = convert(event, WebPod::from_pod) else {
            continue;
        };
        let changed = ctx.table_mut().pod_event(event);
        for name in changed {
            ctx.states.changed(&name, false);
        }
        if done {
            readiness.send_modify(|l| l.pods = true);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn web_pods_are_selected_by_component_manager_and_environment() {
        assert_eq!(
            super::web_pod_selector(),
            "app.kubernetes.io/component=web,app.kubernetes.io/managed-by=appenv,appenv.dev/environment"
        );
    }
}
