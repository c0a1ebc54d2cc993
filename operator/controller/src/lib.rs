//! appenv-controller: everything that talks to the API server while the operator runs.
//! Depends on appenv-api, appenv-core, kube's client and runtime, and tokio.
//!
//! The controller: one reconcile per AppEnvironment, as a pipeline
//! `observe -> validate -> build -> apply -> status`, each step in its own file. What exists
//! is read from the watches' stores (`stores`); the API sees only the writes of `apply` and
//! the status.
#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

mod apply;
pub mod crd;
mod error;
mod events;
pub mod http;
mod metrics;
mod observe;
mod status;
mod stores;

pub mod leader;
pub mod rbac;
pub mod requests;
pub mod secrets;

pub use error::Error;
pub use metrics::{Counts, Metrics};

use crate::apply::Allowed;
use crate::events::{Kind as EventType, Publisher};
use crate::observe::Migration;
use crate::status::Gates;
use appenv_api::{AppEnvironment, AppEnvironmentStatus, condition};
use appenv_core::build::{self, FIELD_MANAGER};
use appenv_core::settings::Settings;
use appenv_core::validate::{self, DatabaseModel};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Client, Resource, ResourceExt as _};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Changes of one environment's objects that arrive within this window are reconciled once: a
/// rollout reports many small status changes in a burst.
const DEBOUNCE: Duration = Duration::from_millis(200);

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

/// Annotation that keeps a preview past its TTL.
pub const KEEP_ANNOTATION: &str = "appenv.dev/keep";

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
            concurrency: 4,
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
    envs: reflector::Store<DeserializeGuard<AppEnvironment>>,
}

impl Context {
    /// Drop what the operator remembers of an environment that is gone: its phase in the
    /// metrics, its backoff count and the applied versions of its namespace's objects.
    fn forget(&self, env: &AppEnvironment) {
        let name = env.name_any();
        self.metrics.forget(&name);
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&name);
        }
        if let Some(ns) = env.status.as_ref().and_then(|s| s.namespace.as_deref()) {
            self.applied.forget_namespace(ns);
        }
    }

    /// After a reconcile of an environment that was deleted while it ran: the watch's Delete
    /// may have come first, and the reconcile then counted it again. The store loses an
    /// environment before its Delete reaches `forget`, so either this or that comes last.
    /// Called once per reconcile: at its end when it succeeded, by `error_policy` when not.
    fn forget_if_gone(&self, env: &AppEnvironment) {
        let key = reflector::ObjectRef::<DeserializeGuard<AppEnvironment>>::new(&env.name_any());
        if self.envs.get(&key).is_none() {
            self.forget(env);
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

fn owner_reference(env: &AppEnvironment) -> Option<OwnerReference> {
    // `controller_owner_ref` needs the uid, which a server-side object always has.
    env.controller_owner_ref(&())
}

async fn publish(
    ctx: &Context,
    env: &AppEnvironment,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    ctx.events
        .publish(&env.object_ref(&()), type_, reason, action, &note)
        .await;
}

fn condition_status<'a>(status: Option<&'a AppEnvironmentStatus>, type_: &str) -> Option<&'a str> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// Events for the transitions between two statuses.
async fn publish_transitions(
    ctx: &Context,
    env: &AppEnvironment,
    before: Option<&AppEnvironmentStatus>,
    after: &AppEnvironmentStatus,
) {
    let became = |type_: &str, value: &str| {
        condition_status(Some(after), type_) == Some(value)
            && condition_status(before, type_) != Some(value)
    };
    let message = |type_: &str| {
        after
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    if became(condition::VALID, "False") {
        publish(
            ctx,
            env,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            message(condition::VALID),
        )
        .await;
    }
    if became(condition::READY, "True") {
        publish(
            ctx,
            env,
            EventType::Normal,
            "Ready",
            "Reconcile",
            message(condition::READY),
        )
        .await;
    }
    if became(condition::DEGRADED, "True") {
        publish(
            ctx,
            env,
            EventType::Warning,
            "Degraded",
            "Reconcile",
            message(condition::DEGRADED),
        )
        .await;
    }
    let migration_failed = after
        .conditions
        .iter()
        .any(|c| c.type_ == condition::MIGRATIONS_SUCCEEDED && c.reason == "Failed");
    let failed_before = before.is_some_and(|b| {
        b.conditions
            .iter()
            .any(|c| c.type_ == condition::MIGRATIONS_SUCCEEDED && c.reason == "Failed")
    });
    if migration_failed && !failed_before {
        publish(
            ctx,
            env,
            EventType::Warning,
            "MigrationFailed",
            "Migrate",
            message(condition::MIGRATIONS_SUCCEEDED),
        )
        .await;
    }
}

/// Write the status only if it differs from what the object has.
async fn write_status(
    ctx: &Context,
    env: &AppEnvironment,
    status: AppEnvironmentStatus,
) -> Result<(), Error> {
    if let Some(phase) = status.phase {
        ctx.metrics.phase(&env.name_any(), phase);
    }
    if env.status.as_ref() == Some(&status) {
        return Ok(());
    }
    publish_transitions(ctx, env, env.status.as_ref(), &status).await;
    let api: Api<AppEnvironment> = Api::all(ctx.client.clone());
    let body = serde_json::json!({
        "apiVersion": "appenv.dev/v1alpha1",
        "kind": "AppEnvironment",
        "status": status,
    });
    api.patch_status(
        &env.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(Error::Status)
}

fn expired(env: &AppEnvironment, now: Timestamp) -> bool {
    let keep = env
        .annotations()
        .get(KEEP_ANNOTATION)
        .is_some_and(|v| v == "true");
    let expires = env
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| t.0);
    env.spec.preview.is_some() && !keep && expires.is_some_and(|at| at <= now)
}

#[tracing::instrument(skip_all, fields(environment = %env.name_any()))]
#[allow(clippy::too_many_lines)] // becomes plan + steps next (issue 13)
async fn reconcile_valid(env: &AppEnvironment, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let generation = env.metadata.generation;
    let api: Api<AppEnvironment> = Api::all(ctx.client.clone());
    if expired(env, now) {
        publish(
            ctx,
            env,
            EventType::Normal,
            "Expired",
            "Delete",
            "the preview's TTL ran out".to_owned(),
        )
        .await;
        api.delete(&env.name_any(), &Default::default())
            .await
            .map_err(Error::Expire)?;
        ctx.forget(env);
        return Ok(Action::await_change());
    }

    // validate
    let model = match validate::validate(env, &ctx.options.settings) {
        Ok(model) => model,
        Err(invalid) => {
            tracing::info!(violations = invalid.0.len(), "invalid spec");
            let status = status::invalid(&invalid, env.status.as_ref(), generation, now);
            write_status(ctx, env, status).await?;
            // Nothing to retry until the spec changes.
            return Ok(Action::await_change());
        }
    };
    if let Some(owned) = env.status.as_ref().and_then(|s| s.namespace.as_deref())
        && owned != model.namespace.name
    {
        let invalid = validate::Invalid(vec![validate::FieldError {
            path: "spec.namespace.name".to_owned(),
            message: format!("immutable: the environment owns namespace {owned:?}"),
        }]);
        write_status(
            ctx,
            env,
            status::invalid(&invalid, env.status.as_ref(), generation, now),
        )
        .await?;
        return Ok(Action::await_change());
    }

    // observe (from the watches' stores)
    ctx.stores.ready().await.map_err(Error::Watches)?;
    let observed = observe::observe(&ctx.stores, &model);
    let migration = observed
        .migration
        .clone()
        .unwrap_or(Migration::NotConfigured);
    let previous_image = env.status.as_ref().and_then(|s| s.image.clone());
    let rollout_image = match migration {
        Migration::NotConfigured | Migration::Succeeded => Some(model.image.clone()),
        // The previous version keeps serving (or, on the first rollout, nothing starts
        // before the schema exists).
        _ => previous_image,
    };
    let database_ready = match &model.database {
        Some(DatabaseModel::Postgres(_)) => observed
            .postgres
            .as_ref()
            .is_some_and(|s| s.ready_replicas.unwrap_or(0) >= 1),
        _ => true,
    };

    // build
    let password = match observed.password.clone() {
        Some(existing) => Some(existing),
        None if matches!(model.database, Some(DatabaseModel::Postgres(_))) => {
            Some(crate::secrets::generate_password().map_err(Error::Password)?)
        }
        None => None,
    };
    let children = build::build(
        &model,
        &build::Context {
            owner: owner_reference(env),
            postgres_password: password,
            workload_image: rollout_image.clone(),
        },
    );

    // apply
    let allowed = Allowed {
        migration: database_ready,
        workloads: rollout_image.is_some(),
        statefulset_hash: observed
            .postgres
            .as_ref()
            .and_then(|s| s.applied_hash.as_deref().map(str::to_owned)),
    };
    let wildcard = match (&ctx.options.settings.wildcard_tls, &model.preview) {
        (Some(source), Some(_)) => Some(source),
        _ => None,
    };
    let applier = apply::Applier::new(&ctx.client, &ctx.applied, &ctx.stores);
    let mut applied = apply::apply_children(&applier, &children, &allowed).await?;
    if let Some(source) = wildcard {
        let copy = apply::copy_wildcard_tls(
            &applier,
            source,
            &model.namespace.name,
            build::labels(&model, "tls"),
            owner_reference(env),
        )
        .await?;
        applied.entry("Secret").or_default().insert(copy);
    }
    let spec_changed = env.status.as_ref().and_then(|s| s.observed_generation) != generation;
    if spec_changed {
        apply::prune(
            &ctx.client,
            &ctx.stores,
            &model.namespace.name,
            &env.name_any(),
            &applied,
        )
        .await?;
    }

    // status
    let gates = Gates {
        rollout_image,
        database_ready,
    };
    let status = status::compute(
        &model,
        &observed,
        &gates,
        env.status.as_ref(),
        generation,
        now,
    );
    let ready = condition_status(Some(&status), condition::READY) == Some("True");
    let failed = matches!(migration, Migration::Failed(_));
    let expires_at = status.expires_at.as_ref().map(|t| t.0);
    write_status(ctx, env, status).await?;

    let mut next = if ready || failed {
        // At rest (or waiting for a new image after a failed migration): resync only.
        ctx.options.resync
    } else {
        // Rolling out: watches of the children bring the changes; this is a safety net.
        Duration::from_secs(30).min(ctx.options.resync)
    };
    if let Some(wait) = applier.look_again() {
        next = next.min(wait);
    }
    if let Some(at) = expires_at {
        let until = at.duration_since(now).unsigned_abs();
        next = next.min(until + Duration::from_secs(1));
    }
    Ok(Action::requeue(next))
}

async fn reconcile(
    guarded: Arc<DeserializeGuard<AppEnvironment>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let env = match &guarded.0 {
        Ok(env) => env,
        Err(invalid) => {
            // One object that cannot be read must not stall the others: report and wait.
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "undeserializable AppEnvironment");
            return Ok(Action::await_change());
        }
    };
    let timer = ctx.metrics.reconcile(&env.name_any());
    let result = reconcile_valid(env, &ctx).await;
    drop(timer);
    if result.is_ok() {
        if let Ok(mut failures) = ctx.failures.lock() {
            failures.remove(&env.name_any());
        }
        ctx.forget_if_gone(env);
    }
    result
}

fn error_policy(
    guarded: Arc<DeserializeGuard<AppEnvironment>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let name = guarded.0.as_ref().map(|e| e.name_any()).unwrap_or_default();
    let attempts = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(name.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    // 1 s, 2 s, 4 s ... capped at 5 minutes.
    let delay = Duration::from_secs(1u64 << attempts.min(9).saturating_sub(1))
        .min(Duration::from_secs(300));
    ctx.metrics.error(err.category());
    if let Ok(env) = &guarded.0 {
        ctx.forget_if_gone(env);
    }
    let cause = error::chain(err);
    tracing::warn!(environment = %name, category = err.category().as_str(), error = %cause, retry_in = ?delay, "reconcile failed");
    if let Ok(env) = &guarded.0 {
        let env = env.clone();
        let category = err.category().as_str();
        tokio::spawn(async move {
            publish(&ctx, &env, EventType::Warning, category, "Reconcile", cause).await;
        });
    }
    Action::requeue(delay)
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
/// counting into `metrics`.
pub async fn run_until(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut env_config = watcher::Config::default();
    if let Some(selector) = &options.selector {
        env_config = env_config.labels(selector);
    }
    let backoff = || ConstantBackoff(WATCH_BACKOFF);
    let (stores, triggers, wildcard_changes) =
        stores::Stores::watch(&client, options.settings.wildcard_tls.as_ref(), backoff);
    // The environments' store without managedFields, which no decision reads.
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
    });
    let envs: Api<DeserializeGuard<AppEnvironment>> = Api::all(client.clone());
    let deleted = ctx.clone();
    let envs = watcher::watcher(envs, env_config)
        .modify(|guarded: &mut DeserializeGuard<AppEnvironment>| {
            if let Ok(env) = guarded.0.as_mut() {
                env.metadata.managed_fields = None;
            }
        })
        .reflect(writer)
        // An environment deleted by anyone: drop what the operator remembers of it; one deleted
        // while the watch was down is missing from the next full list (the store holds that
        // list once its InitDone has passed `reflect`).
        .inspect_ok(move |event| match event {
            watcher::Event::Delete(DeserializeGuard(Ok(env))) => deleted.forget(env),
            watcher::Event::InitDone => deleted.forget_unlisted(),
            _ => {}
        })
        .backoff(backoff())
        .applied_objects();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let reader_ready = reader.clone();
    let controller = Controller::for_stream(envs, reader)
        .reconcile_all_on(wildcard_changes)
        .reconcile_on(futures::stream::select_all(triggers))
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(options.concurrency)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
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
