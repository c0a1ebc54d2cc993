//! appenv-controller: everything that talks to the API server while the operator runs.
//! Depends on appenv-api, appenv-core, kube's client and runtime, and tokio.
//!
//! The controller: one reconcile per AppEnvironment (`reconcile`), as a pipeline
//! `validate -> observe -> plan -> build -> apply -> prune -> status`, each step in its own
//! file: the decisions are the pure `plan`, the objects the pure builders of appenv-core. What
//! exists is read from the watches' stores (`stores`); the API sees only the writes of `apply`
//! and the status.
#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

mod apply;
mod backups;
mod compact;
pub mod crd;
mod discovery;
mod error;
mod events;
pub mod http;
mod metrics;
mod observe;
mod plan;
mod reconcile;
mod restores;
mod sleep;
mod snapshots;
mod status;
mod stores;

pub mod leader;
pub mod rbac;
pub mod requests;
pub mod secrets;

pub use discovery::cluster_apis;
pub use error::Error;
pub use metrics::{Counts, Metrics};
pub use plan::KEEP_ANNOTATION;
pub use snapshots::{api as volume_snapshots, backup_selector, choose as choose_snapshot};
pub use status::PROGRESS_EVERY;
pub use stores::CANNOT_START;

use crate::compact::Guarded;
use crate::events::Publisher;
use crate::reconcile::{error_policy, reconcile_guarded};
use appenv_api::AppEnvironment;
use appenv_core::settings::Settings;
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Client, ResourceExt as _};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every watch retries after a constant second. With a growing backoff the operator was blind
/// for minutes after an API server restart: every watch gets a "410 Gone" then (a normal
/// relist), and each counted as an error. A server that stays down is retried once a second
/// per watch, which is cheap.
#[derive(Debug, Clone, Copy)]
struct ConstantBackoff(Duration);

/// The wait before a failed watch is retried (see [`ConstantBackoff`]).
const WATCH_BACKOFF: Duration = Duration::from_secs(1);

impl Iterator for ConstantBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(self.0)
    }
}

impl kube::runtime::utils::Backoff for ConstantBackoff {
    fn reset(&mut self) {}
}

/// Reconciles at once, by default. A reconcile mostly waits for the API server (its applies,
/// its status write); with a handful of slots, a batch of new environments queues its first
/// reconciles behind the rollouts already under way (each change of their Pods and Deployments
/// reconciles them again), and the last ones' objects are created seconds late (README
/// "Measured": 100 created at once, p95 1.23x direct apply with 4, 1.05x with 16). The slots
/// are not free: every reconcile under way interleaves its short-lived allocations with the
/// environments' long-lived ones, and side by side 16 left the operator about 3 MiB larger at
/// 1100 environments than 4, 8 about 1.3 to 2 MiB smaller than 16 at the same p95.
pub const DEFAULT_CONCURRENCY: u16 = 8;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    /// Reconcile every environment at least this often, even with nothing changed.
    pub resync: Duration,
    /// Only AppEnvironments matching this label selector (empty: all).
    pub selector: Option<String>,
    /// Reconciles at once.
    pub concurrency: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            resync: Duration::from_secs(300),
            selector: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    options: Options,
    events: Publisher,
    /// Consecutive failures per environment, for capped exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    metrics: Arc<Metrics>,
    /// What was applied, so that unchanged objects are not applied again.
    applied: apply::AppliedCache,
    /// What exists: the reconcile's reads.
    stores: stores::Stores,
    /// The environments, as the controller sees them.
    envs: reflector::Store<Guarded>,
    /// What the cluster offers for autoscaling workers, discovered at start.
    cluster: appenv_core::build::ClusterApis,
    /// The statuses written in the last few seconds: progress alone is written at most every
    /// few seconds, and a reconcile sees a write before its watch brings it back.
    written: status::Written,
}

impl Context {
    /// Drop what the operator remembers of an environment that is gone: its phase in the
    /// metrics, its backoff count and the applied versions of its namespace's objects.
    fn forget(&self, name: &str, namespace: Option<&str>) {
        self.metrics.forget(name);
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(name);
        }
        if let Some(ns) = namespace {
            self.applied.forget_namespace(ns);
        }
    }

    /// After a reconcile of an environment that was deleted while it ran: the watch's Delete
    /// may have come first, and the reconcile then counted it again. The store loses an
    /// environment before its Delete reaches `forget`, so either this or that comes last.
    /// Called once per reconcile: at its end when it succeeded, by `error_policy` when not.
    fn forget_if_gone(&self, env: &AppEnvironment) {
        let name = env.name_any();
        if self.envs.get(&reflector::ObjectRef::new(&name)).is_none() {
            self.forget(&name, env_namespace(env));
        }
    }

    /// After a relist: drop the phase, counts and backoff of environments deleted while the
    /// watch was down (no Delete event came for them), i.e. of every name the store (now the
    /// full list) does not hold. Their applied-object cache entries stay until restart:
    /// harmless, a missing object is applied again whatever the cache says.
    fn forget_unlisted(&self) {
        let live: std::collections::HashSet<String> =
            self.envs.state().iter().map(|env| env.name_any()).collect();
        self.metrics.retain(|name| live.contains(name));
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|name, _| live.contains(name));
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Run the controller until a shutdown signal.
pub async fn run(client: Client, options: Options) {
    run_with_metrics(client, options, Arc::new(Metrics::default())).await;
}

/// Run the controller until a shutdown signal, counting into `metrics`.
pub async fn run_with_metrics(client: Client, options: Options, metrics: Arc<Metrics>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    let signal = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    };
    run_until(client, options, metrics, signal).await;
}

/// Run the controller until `shutdown` completes (then finish the reconciles under way),
/// counting into `metrics`. What the cluster offers for autoscaling is discovered at start and
/// again every resync: when it changed (KEDA installed or removed), the controller finishes
/// its reconciles and starts again with watches of the kinds now served.
pub async fn run_until(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::FutureExt as _;
    let shutdown = Box::pin(shutdown).shared();
    loop {
        let cluster = discovery::cluster_apis(&client).await;
        // Shared: a watch of the discovery is Send but not Sync, which the controller needs.
        let changed = discovery::changed(client.clone(), cluster, options.resync)
            .boxed()
            .shared();
        let stop = {
            let shutdown = shutdown.clone();
            async move {
                futures::future::select(shutdown, changed).await;
            }
        };
        run_controller(
            client.clone(),
            options.clone(),
            metrics.clone(),
            cluster,
            stop,
        )
        .await;
        if shutdown.clone().now_or_never().is_some() {
            return;
        }
        tracing::info!("the cluster's autoscaling APIs changed: restarting the controller");
    }
}

/// The namespace an environment's status says it owns.
fn env_namespace(env: &AppEnvironment) -> Option<&str> {
    env.status.as_ref()?.namespace.as_deref()
}

/// One run of the controller, with the autoscaling APIs `cluster` offers, until `shutdown`.
async fn run_controller(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    cluster: appenv_core::build::ClusterApis,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut env_config = watcher::Config::default();
    if let Some(selector) = &options.selector {
        env_config = env_config.labels(selector);
    }
    let backoff = || ConstantBackoff(WATCH_BACKOFF);
    let autoscalers = discovery::autoscaler_kinds(cluster);
    let (stores, changes) =
        stores::Stores::watch(&client, &options.settings, &autoscalers, backoff);
    let (reader, writer) = reflector::store();
    let ctx = Arc::new(Context {
        events: Publisher::new(client.clone(), std::env::var("APPENV_POD_NAME").ok()),
        client: client.clone(),
        failures: Mutex::new(HashMap::new()),
        options: options.clone(),
        metrics,
        applied: apply::AppliedCache::default(),
        stores,
        envs: reader.clone(),
        cluster,
        written: status::Written::default(),
    });
    // Each environment is kept compact as it is read (`compact`).
    let envs: Api<Guarded> = Api::all(client.clone());
    let deleted = ctx.clone();
    let envs = watcher::watcher(envs, env_config)
        .reflect(writer)
        // An environment deleted by anyone: drop what the operator remembers of it; one deleted
        // while the watch was down is missing from the next full list (the store holds that
        // list once its InitDone has passed `reflect`).
        .inspect_ok(move |event| match event {
            watcher::Event::Delete(kube::core::DeserializeGuard(Ok(env))) => {
                let decoded = env.environment().ok();
                deleted.forget(&env.name_any(), decoded.as_ref().and_then(env_namespace));
            }
            watcher::Event::InitDone => deleted.forget_unlisted(),
            _ => {}
        })
        .backoff(backoff())
        .applied_objects();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let reader_ready = reader.clone();
    let copiers = reader.clone();
    let source_changes = changes.sources.flat_map(move |touched| {
        futures::stream::iter(stores::copying(&copiers.state(), &touched))
    });
    let controller = Controller::for_stream(envs, reader)
        .reconcile_all_on(changes.wildcard)
        .reconcile_on(futures::stream::select_all(changes.triggers))
        .reconcile_on(source_changes)
        // No debounce: a change is reconciled at once when a slot is free. Under load the
        // changes of one environment merge by themselves: while all slots are busy, or while
        // that environment is being reconciled, kube's scheduler holds its requests as one.
        .with_config(kube::runtime::controller::Config::default().concurrency(options.concurrency))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_guarded, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(environment = %object.name, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "controller"),
            }
        });
    // kube's graceful shutdown stops the watches, then waits for the reconciles under way; but
    // its runner starts only once the environments' store is ready, and with the watch stopped
    // before its first full list that never happens: a stop already in at start (a SIGTERM
    // while the Lease was being taken) or during a start-up outage would hang the process.
    // Until the store is ready nothing has been reconciled, so such a stop ends at once.
    let stopped_before_ready = async move {
        shutdown.await;
        let ready = futures::FutureExt::now_or_never(reader_ready.wait_until_ready());
        if !matches!(ready, Some(Ok(()))) {
            tracing::info!("stopped before the first list of AppEnvironments: nothing to finish");
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = controller => {}
        () = stopped_before_ready => {}
    }
}
