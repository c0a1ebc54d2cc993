//! One reconcile of an AppEnvironment, as a list of steps:
//! `validate -> observe -> plan -> build -> apply -> prune -> status`. Validate, plan and build
//! are pure; observe reads the watches' stores; only apply, prune and status write.

use crate::apply::{self, Applied, Applier};
use crate::compact::Guarded;
use crate::error::{self, Error};
use crate::events::Kind as EventType;
use crate::observe::{self, Observed};
use crate::plan::{self, Plan, Rollout};
use crate::secrets::{self, SecretString};
use crate::{Context, status};
use crate::{restores, sleep, snapshots};
use appenv_api::names::{Action as EventAction, Reason};
use appenv_api::names::{ChildKind, label};
use appenv_api::{AppEnvironment, CopyKind};
use appenv_core::build::{self, Children, Copied, WildcardTls};
use appenv_core::settings::SecretRef;
use appenv_core::validate::{self, DatabaseModel, Invalid, Model};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource as _, ResourceExt as _};
use std::sync::Arc;

/// The steps, in order.
#[tracing::instrument(skip_all, fields(environment = %env.name_any()))]
async fn reconcile(env: &AppEnvironment, ctx: &Context) -> Result<Action, Error> {
    let env = &*ctx.written.current(env);
    let now = Timestamp::now();
    // A refusal by the namespace (adoption) depends on its labels, not only on the spec: it is
    // looked at again after a while, as the namespace's editors may opt it in.
    let mut recheck = false;
    let spec = match validate(env, ctx) {
        Ok(model) => {
            let observation = observe(ctx, env, model, now).await?;
            let settings = &ctx.options.settings;
            match observe::adoption(&ctx.stores, &observation.model, settings) {
                Ok(()) => Ok(observation),
                Err(refused) => {
                    recheck = true;
                    Err(refused)
                }
            }
        }
        Err(invalid) => Err(invalid),
    };
    let rollout = match plan::plan(&plan::Input {
        env,
        spec: spec.as_ref().map(|o| (&o.model, &o.observed)),
        now,
        resync: ctx.options.resync,
    }) {
        Plan::Expire => return expire(ctx, env).await,
        Plan::Invalid(status) => return report_invalid(ctx, env, *status, recheck).await,
        Plan::Rollout(rollout) => rollout,
    };
    let children = build(env, &rollout, spec.as_ref().ok(), ctx.cluster)?;
    let applier = Applier::new(&ctx.client, &ctx.applied, &ctx.stores);
    let mut applied =
        apply::apply_children(&applier, &children, &rollout.gates, &rollout.handovers).await?;
    let mut status = rollout.status.clone();
    data_jobs(
        ctx,
        env,
        &rollout,
        &children,
        &applier,
        &mut applied,
        &mut status,
    )
    .await?;
    report_reverts(ctx, env, &rollout, &applier).await;
    report_sleep(ctx, env, spec.as_ref().ok()).await;
    prune(ctx, env, &rollout, &applied).await?;
    let progress_later = status::write(ctx, env, status).await?;
    let next = plan::after_apply(rollout.requeue, applier.look_again());
    Ok(Action::requeue(
        progress_later.map_or(next, |wait| next.min(wait)),
    ))
}

fn validate(env: &AppEnvironment, ctx: &Context) -> Result<Model, Invalid> {
    let validated = validate::validate(env, &ctx.options.settings);
    if let Err(invalid) = &validated {
        tracing::info!(violations = invalid.0.len(), "invalid spec");
    }
    validated
}

/// A valid environment with what the observe step found: the stores' view of it, and what the
/// build needs beyond the spec. Debug shows neither secret value.
#[derive(Debug)]
struct Observation {
    model: Model,
    observed: Observed,
    /// The database password: the credentials Secret's, or a new one when it has none (it is
    /// written only into that Secret).
    password: Option<SecretString>,
    /// The wildcard certificate, for a preview when one is configured. `Err`: its Secret
    /// (`namespace/name`) does not exist, which fails the build, not the observation (an
    /// expired preview is deleted all the same).
    wildcard_tls: Result<Option<WildcardTls>, String>,
    /// The sources of `spec.namespace.copy` that were found (the others are failures in
    /// `observed`, and their copies, if any, are kept as last copied).
    copies: Vec<Copied>,
}

async fn observe(
    ctx: &Context,
    env: &AppEnvironment,
    mut model: Model,
    now: Timestamp,
) -> Result<Observation, Error> {
    ctx.stores.ready().await.map_err(Error::Watches)?;
    let sleep = sleep::decide(&sleep::Input {
        after_idle: model.sleep_after,
        annotations: env.annotations(),
        previous: env.status.as_ref().and_then(|s| s.sleep.as_ref()),
        handled: env
            .status
            .as_ref()
            .and_then(|s| s.last_sleep_request.as_deref()),
        created: env.metadata.creation_timestamp.as_ref().map(|t| t.0),
        now,
    });
    // Asleep, it is built as a suspended environment: every component at zero replicas.
    model.suspend |= sleep.status.is_some();
    let mut observed = observe::observe(&ctx.stores, &model);
    observed.sleep = sleep;
    observed.restore_source = restore_source(ctx, env, &model);
    // A backup VolumeSnapshot being taken is read back (no watch: at rest, nothing is read).
    if let Some(backup) = &model.backup
        && matches!(
            backup.destination,
            validate::BackupDestinationModel::VolumeSnapshot { .. }
        )
        && let Some(running) = env
            .status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .and_then(|b| b.running.as_ref())
        && let Some(run) =
            snapshots::observe(&ctx.client, &model.namespace.name, &running.job).await?
    {
        observed.backup_jobs.insert(running.job.clone(), run);
    }
    observed.restore_snapshot = restore_snapshot(ctx, env, &model).await?;
    let password = match observed.password.take() {
        Some(existing) => Some(existing),
        None if matches!(model.database, Some(DatabaseModel::Postgres(_))) => {
            Some(secrets::generate_password().map_err(Error::Password)?)
        }
        None => None,
    };
    let wildcard_tls = match (&ctx.options.settings.wildcard_tls, &model.preview) {
        (Some(source), Some(_)) => wildcard_tls(ctx, source).map(Some),
        _ => Ok(None),
    };
    let mut copies = Vec::new();
    for copy in &model.namespace.copies {
        match ctx.stores.sources.get(copy) {
            Ok(found) => copies.push(found),
            Err(why) => observed.copy_failures.push(format!(
                "{why} (a copy already in the namespace is kept as last copied)"
            )),
        }
    }
    Ok(Observation {
        model,
        observed,
        password,
        wildcard_tls,
        copies,
    })
}

/// The VolumeSnapshot an `appenv restore` request not handled yet names (`latest`: the newest
/// ready one), when backups are VolumeSnapshots: listed only while such a request waits.
async fn restore_snapshot(
    ctx: &Context,
    env: &AppEnvironment,
    model: &Model,
) -> Result<Option<Result<String, String>>, Error> {
    let snapshots = model.backup.as_ref().is_some_and(|b| {
        matches!(
            b.destination,
            validate::BackupDestinationModel::VolumeSnapshot { .. }
        )
    });
    let handled = env
        .status
        .as_ref()
        .and_then(|s| s.restore.as_ref())
        .and_then(|r| r.last_request.as_deref());
    let Some(request) = env
        .annotations()
        .get(restores::REQUEST_ANNOTATION)
        .filter(|r| snapshots && handled != Some(r.as_str()))
    else {
        return Ok(None);
    };
    let wanted = match restores::parse_request(request, true) {
        Ok((wanted, _)) => wanted,
        Err(why) => return Ok(Some(Err(why))),
    };
    let selector = snapshots::backup_selector(model);
    let ns = &model.namespace.name;
    snapshots::resolve(&ctx.client, ns, &selector, &wanted)
        .await
        .map(Some)
}

/// Where `spec.database.restore` reads from: the source environment's bucket, if it allows this
/// environment (`spec.backup.restoreTo`), has an S3 destination and the same engine. Read with
/// this environment's own credentials Secret: the source's never leaves its namespace. Or a dump
/// at a URL.
fn restore_source(
    ctx: &Context,
    env: &AppEnvironment,
    model: &Model,
) -> Option<Result<build::Store, String>> {
    let (from, credentials_secret) = match &model.restore.as_ref()?.from {
        validate::RestoreFrom::Environment {
            name,
            credentials_secret,
            ..
        } => (name, credentials_secret),
        // The Job downloads it: the operator never reads a URL a spec names.
        validate::RestoreFrom::Url(dump) => return Some(Ok(build::Store::Dump(dump.clone()))),
    };
    let Some(guarded) = ctx.envs.get(&ObjectRef::new(from)) else {
        return Some(Err(
            "it does not exist (or this operator does not watch it)".to_owned(),
        ));
    };
    let Some(source) = guarded.0.as_ref().ok().and_then(|s| s.environment().ok()) else {
        return Some(Err("its spec cannot be read".to_owned()));
    };
    if let Some(why) = validate::restore_refusal(&source, &model.name, &env.spec) {
        return Some(Err(why));
    }
    let Ok(source) = validate::validate(&source, &ctx.options.settings) else {
        return Some(Err("its spec is invalid".to_owned()));
    };
    let Some(backup) = &source.backup else {
        return Some(Err("it has no spec.backup".to_owned()));
    };
    let validate::BackupDestinationModel::S3(s3) = &backup.destination else {
        return Some(Err(
            "its backups are on a volume of its namespace: only an s3 destination can be restored into another environment".to_owned(),
        ));
    };
    Some(Ok(build::Store::Other {
        environment: from.clone(),
        s3: s3.clone(),
        credentials_secret: credentials_secret.clone(),
    }))
}

/// The wildcard certificate's Secret, from its watch.
fn wildcard_tls(ctx: &Context, source_ref: &SecretRef) -> Result<WildcardTls, String> {
    let (namespace, name) = (source_ref.namespace(), source_ref.name());
    let source = ctx
        .stores
        .wildcard
        .as_ref()
        .and_then(|store| store.get(&ObjectRef::new(name).within(namespace)))
        .ok_or_else(|| format!("{namespace}/{name}"))?;
    Ok(WildcardTls {
        name: name.to_owned(),
        type_: source.type_.clone(),
        data: source.data.clone().unwrap_or_default(),
    })
}

/// An Event for each Deployment scaled by hand that this reconcile set back (planned, and
/// written by the apply: a watch that is behind shows the hand-made replicas a moment longer,
/// and an apply it skips is no second revert).
async fn report_reverts(
    ctx: &Context,
    env: &AppEnvironment,
    rollout: &Rollout<'_>,
    applier: &Applier<'_>,
) {
    let namespace = &rollout.model.namespace.name;
    for revert in &rollout.reverts {
        if !applier.wrote(ChildKind::Deployment, namespace, &revert.deployment) {
            continue;
        }
        tracing::info!(component = %revert.component, from = revert.from, to = revert.to, "replicas reverted");
        ctx.events
            .publish(
                &env.object_ref(&()),
                EventType::Normal,
                Reason::ReplicasReverted.as_str(),
                EventAction::Reconcile.as_str(),
                &revert.message(),
            )
            .await;
    }
}

/// An Event when the environment fell asleep or woke in this reconcile.
async fn report_sleep(ctx: &Context, env: &AppEnvironment, observation: Option<&Observation>) {
    let Some((slept, why)) = observation.and_then(|o| o.observed.sleep.changed.as_ref()) else {
        return;
    };
    tracing::info!(slept, %why, "sleep");
    let reason = if *slept {
        Reason::Sleeping
    } else {
        Reason::Woke
    };
    ctx.events
        .publish(
            &env.object_ref(&()),
            EventType::Normal,
            reason.as_str(),
            EventAction::Sleep.as_str(),
            why,
        )
        .await;
}

async fn expire(ctx: &Context, env: &AppEnvironment) -> Result<Action, Error> {
    ctx.events
        .publish(
            &env.object_ref(&()),
            EventType::Normal,
            Reason::Expired.as_str(),
            EventAction::Delete.as_str(),
            "the preview's TTL ran out",
        )
        .await;
    kube::Api::<AppEnvironment>::all(ctx.client.clone())
        .delete(&env.name_any(), &Default::default())
        .await
        .map_err(Error::Expire)?;
    ctx.forget(&env.name_any(), crate::env_namespace(env));
    Ok(Action::await_change())
}

async fn report_invalid(
    ctx: &Context,
    env: &AppEnvironment,
    status: appenv_api::AppEnvironmentStatus,
    recheck: bool,
) -> Result<Action, Error> {
    if let Some(wait) = status::write(ctx, env, status).await? {
        // Only the message changed (the same rule broken another way): written on its turn.
        return Ok(Action::requeue(wait));
    }
    if recheck {
        // The namespace may opt in meanwhile (a label no watch maps to this environment).
        return Ok(Action::requeue(ADOPTION_RECHECK));
    }
    // Nothing to retry until the spec changes.
    Ok(Action::await_change())
}

/// How often an environment refused its namespace looks at that namespace again.
const ADOPTION_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

fn build(
    env: &AppEnvironment,
    rollout: &Rollout<'_>,
    observation: Option<&Observation>,
    cluster_apis: build::ClusterApis,
) -> Result<Children, Error> {
    let wildcard_tls = match observation.map(|o| &o.wildcard_tls) {
        Some(Err(missing)) => {
            return Err(Error::Missing(format!("wildcard TLS Secret {missing}")));
        }
        Some(Ok(found)) => found.clone(),
        None => None,
    };
    Ok(build::build(
        rollout.model,
        &build::Inputs {
            // `controller_owner_ref` needs the uid, which a server-side object always has.
            owner: env.controller_owner_ref(&()),
            postgres_password: observation.and_then(|o| o.password.clone()),
            workload_image: rollout.gates.workload_image.clone(),
            wildcard_tls,
            copies: observation.map(|o| o.copies.clone()).unwrap_or_default(),
            cluster: cluster_apis,
            backup: rollout.backups.start.clone(),
            stop_web: rollout.gates.stop_web,
            stop_workers: rollout.gates.stop_workers,
            restore: rollout.restores.start.clone(),
            seed: rollout.restores.seed,
        },
    ))
}

/// Start the backup, restore or seed Job the plan chose (a DuckDB backup once no web Pod
/// exists, an in-place restore once no web or worker Pod exists: until then the status records
/// it as not started), delete old backup Jobs, keep the others from prune, and publish an Event
/// for each that finished.
async fn data_jobs(
    ctx: &Context,
    env: &AppEnvironment,
    rollout: &Rollout<'_>,
    children: &Children,
    applier: &Applier<'_>,
    applied: &mut Applied,
    status: &mut appenv_api::AppEnvironmentStatus,
) -> Result<(), Error> {
    let (backups, restores) = (&rollout.backups, &rollout.restores);
    let model = rollout.model;
    let namespace = &model.namespace.name;
    let of = |components: &str| {
        format!(
            "{}={},{}={},{} in ({components})",
            label::NAME,
            model.app,
            label::INSTANCE,
            model.name,
            label::COMPONENT
        )
    };
    if let Some(job) = &children.backup {
        let web = backups.needs_no_web_pod.then(|| of("web"));
        if !apply::start_job(applier, job, None, web.as_deref()).await? {
            status.backup.clone_from(&backups.deferred);
        }
    }
    if let Some(snapshot) = &children.backup_snapshot {
        let web = backups.needs_no_web_pod.then(|| of("web"));
        let name = snapshot
            .pointer("/metadata/name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if !apply::no_pods(applier, namespace, name, web.as_deref()).await? {
            status.backup.clone_from(&backups.deferred);
        } else if let Err(error) = snapshots::create(&ctx.client, snapshot).await {
            if !snapshots::api_missing(&error) {
                return Err(error);
            }
            // Not retried in a loop with web held at zero: failed, until the next time.
            tracing::warn!(snapshot = %name, "{}", snapshots::NO_SNAPSHOT_API);
            snapshots::fail_running(
                &mut status.backup,
                snapshots::NO_SNAPSHOT_API,
                Timestamp::now(),
            );
        }
    }
    if let Some(backup) = &model.backup
        && matches!(
            backup.destination,
            validate::BackupDestinationModel::VolumeSnapshot { .. }
        )
        && backups.finished.iter().any(|f| f.ok)
    {
        let selector = of(appenv_api::names::Component::Backup.as_str());
        snapshots::prune(&ctx.client, namespace, &selector, backup.keep as usize).await?;
    }
    if let Some(job) = &children.restore {
        let app = restores.needs_no_app_pod.then(|| of("web,worker"));
        let claim = children.restore_claim.as_ref();
        if !apply::start_job(applier, job, claim, app.as_deref()).await? {
            status.restore.clone_from(&restores.deferred);
        }
    }
    if matches!(
        model.backup.as_ref().map(|b| &b.destination),
        Some(validate::BackupDestinationModel::VolumeSnapshot { .. })
    ) {
        let running = status
            .restore
            .as_ref()
            .and_then(|r| r.running.as_ref())
            .map(|r| r.job.as_str());
        apply::drop_restore_claims(
            &ctx.client,
            &ctx.stores,
            namespace,
            &env.name_any(),
            running,
        )
        .await?;
    }
    if let Some(job) = &children.seed {
        apply::start_job(applier, job, None, None).await?;
    }
    if !backups.delete_jobs.is_empty() {
        apply::delete_jobs(&ctx.client, namespace, &backups.delete_jobs).await?;
    }
    applied
        .children
        .entry(ChildKind::Job)
        .or_default()
        .extend(backups.keep_jobs.iter().chain(&restores.keep_jobs).cloned());
    let events = [
        (
            &backups.finished,
            Reason::BackupSucceeded,
            Reason::BackupFailed,
            EventAction::Backup,
        ),
        (
            &restores.finished,
            Reason::RestoreSucceeded,
            Reason::RestoreFailed,
            EventAction::Restore,
        ),
    ];
    for (finished, ok, failed, action) in events {
        for f in finished {
            let (kind, reason) = if f.ok {
                (EventType::Normal, ok)
            } else {
                (EventType::Warning, failed)
            };
            ctx.events
                .publish(
                    &env.object_ref(&()),
                    kind,
                    reason.as_str(),
                    action.as_str(),
                    &f.message,
                )
                .await;
        }
    }
    Ok(())
}

async fn prune(
    ctx: &Context,
    env: &AppEnvironment,
    rollout: &Rollout<'_>,
    applied: &Applied,
) -> Result<(), Error> {
    let namespace = &rollout.model.namespace.name;
    if !rollout.prune {
        // Autoscalers change kind without a spec change (KEDA installed since): the old
        // kind's are pruned in any pass (found in the stores: no request when none is left).
        let (stores, keep) = (&ctx.stores, &applied.autoscalers);
        return apply::prune_autoscalers(&ctx.client, stores, namespace, &env.name_any(), keep)
            .await;
    }
    // A copy whose source is gone stays as last copied: only a copy the spec no longer names
    // is pruned.
    let mut keep = applied.clone();
    for copy in &rollout.model.namespace.copies {
        let kind = match copy.kind {
            CopyKind::Secret => ChildKind::Secret,
            CopyKind::ConfigMap => ChildKind::ConfigMap,
        };
        keep.children
            .entry(kind)
            .or_default()
            .insert(copy.name.clone());
    }
    apply::prune(&ctx.client, &ctx.stores, namespace, &env.name_any(), &keep).await
}

/// The controller's reconcile: a malformed object is reported and left alone; the reconcile
/// is timed; success clears the environment's backoff.
pub(crate) async fn reconcile_guarded(
    guarded: Arc<Guarded>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let env = match &guarded.0 {
        Ok(compact) => match compact.environment() {
            Ok(env) => env,
            // The operator encoded it itself: this would be a bug, reported as one.
            Err(err) => {
                tracing::error!(environment = %compact.name_any(), error = %err, "a kept AppEnvironment does not decode");
                return Ok(Action::await_change());
            }
        },
        Err(invalid) => {
            // One object that cannot be read must not stall the others: report and wait.
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "undeserializable AppEnvironment");
            return Ok(Action::await_change());
        }
    };
    let timer = ctx.metrics.reconcile(&env.name_any());
    let result = reconcile(&env, &ctx).await;
    drop(timer);
    if result.is_ok() {
        if let Ok(mut failures) = ctx.failures.lock() {
            failures.remove(&env.name_any());
        }
        ctx.forget_if_gone(&env);
    }
    result
}

/// A failed reconcile: counted, reported as a Warning Event whose reason is the error's
/// category, and retried after a per-environment exponential backoff.
pub(crate) fn error_policy(guarded: Arc<Guarded>, err: &Error, ctx: Arc<Context>) -> Action {
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
    let delay = plan::retry_delay(attempts);
    ctx.metrics.error(err.category());
    if let Some(env) = guarded.0.as_ref().ok().and_then(|c| c.environment().ok()) {
        ctx.forget_if_gone(&env);
    }
    let cause = error::chain(err);
    tracing::warn!(environment = %name, category = err.category().as_str(), error = %cause, retry_in = ?delay, "reconcile failed");
    if let Ok(env) = &guarded.0 {
        let reference = env.object_ref(&());
        let category = err.category().as_str();
        tokio::spawn(async move {
            ctx.events
                .publish(
                    &reference,
                    EventType::Warning,
                    category,
                    EventAction::Reconcile.as_str(),
                    &cause,
                )
                .await;
        });
    }
    Action::requeue(delay)
}
