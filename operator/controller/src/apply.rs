//! The apply step: server-side apply of the built children with one field manager, in an
//! order that respects the gates, then pruning of what the spec no longer has.

use crate::error::Error;
use crate::plan::{Gates, Handover};
use crate::stores::{Child, Meta, Stores, Version};
use appenv_api::names::{ChildKind, Component};
use appenv_core::build::{
    APPLIED_HASH_ANNOTATION, Autoscaler, Children, FIELD_MANAGER, Guardrails, Postgres, Redis, Web,
    hash_json, hash_of,
};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::DynamicObject;
use kube::{Client, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The field manager that holds an autoscaled worker's replicas between appenv letting go of
/// them and the autoscaler setting them (see [`Handover`]).
pub const HANDOVER_MANAGER: &str = "appenv-autoscaler-handover";

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// How long an object appenv applied may be missing from its watch's store before it counts
/// as deleted: the watch event of a new object arrives a moment after the apply's answer.
const IN_FLIGHT: Duration = Duration::from_secs(30);

/// An object's version marker: its generation where it has one (only changes of its spec
/// move it), else its resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker {
    Generation(i64),
    Version(Version),
}

impl Marker {
    fn of(meta: &Meta) -> Self {
        match meta.generation {
            Some(generation) if generation > 0 => Marker::Generation(generation),
            _ => Marker::Version(meta.version.clone()),
        }
    }
}

/// How a watched copy relates to what appenv last applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The version appenv's apply produced.
    Same,
    /// An earlier version: the watch has not caught up yet.
    Older,
    /// A later version: somebody else changed it.
    Changed,
}

/// Compare a watched copy with the marker of appenv's last apply. Generations are ordered by
/// definition; resourceVersions are compared as the numbers the API server (etcd revisions)
/// gives, and counted as a change when they differ and either is not a number.
fn compare(live: &Meta, applied: &Marker) -> Seen {
    use std::cmp::Ordering;
    let order = match (Marker::of(live), applied) {
        (Marker::Generation(live), Marker::Generation(applied)) => live.cmp(applied),
        (Marker::Version(live), Marker::Version(applied)) if live == *applied => Ordering::Equal,
        (Marker::Version(Version::Number(live)), Marker::Version(Version::Number(applied))) => {
            live.cmp(applied)
        }
        _ => Ordering::Greater,
    };
    match order {
        Ordering::Equal => Seen::Same,
        Ordering::Less => Seen::Older,
        Ordering::Greater => Seen::Changed,
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The object, as a hash of its kind and name (see [`AppliedCache`]).
    object: u64,
    hash: u64,
    marker: Marker,
    /// The watch has shown the applied version (so its absence now means a deletion).
    seen: bool,
    applied_at: Instant,
}

/// What appenv last applied, per object (`Kind/namespace/name`): the hash of what it applied
/// and the object's version marker right after. An object whose desired content matches and
/// whose watched copy is that version (or an earlier one the watch has not replaced yet) is
/// not applied again: a steady state writes nothing, while a deleted or edited object is
/// applied again.
///
/// Kept for every object of every environment, so kept small: grouped by namespace (the one
/// an object is in, or is), an object known by a 64-bit hash of its kind and name. Two objects
/// of one namespace whose hashes collided (with tens of objects per namespace, about one
/// chance in 10^16) would share an entry: each would be applied at every reconcile, as if
/// never applied, unless their contents' hashes collided too. Keyed by the whole string, the
/// cache took 1.4 MB with 1000 environments (heaptrack, 2026-12-04), mostly table slots and keys.
#[derive(Debug, Default)]
pub struct AppliedCache(Mutex<HashMap<Box<str>, Vec<Entry>>>);

/// The namespace of a cache key (`Kind/namespace/name`; a Namespace's `Namespace//name` is its
/// own) and the hash of the rest.
fn split_key(key: &str) -> (&str, u64) {
    use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
    let mut parts = key.splitn(3, '/');
    let kind = parts.next().unwrap_or_default();
    let ns = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let object = BuildHasherDefault::<DefaultHasher>::default().hash_one((kind, name));
    (if ns.is_empty() { name } else { ns }, object)
}

impl AppliedCache {
    fn unchanged(&self, key: &str, hash: u64, live: Option<&Meta>, now: Instant) -> bool {
        let Ok(mut cache) = self.0.lock() else {
            return false;
        };
        let (ns, object) = split_key(key);
        let Some(entry) = cache
            .get_mut(ns)
            .and_then(|entries| entries.iter_mut().find(|e| e.object == object))
            .filter(|e| e.hash == hash)
        else {
            return false;
        };
        match live.map(|meta| compare(meta, &entry.marker)) {
            Some(Seen::Same) => {
                entry.seen = true;
                true
            }
            Some(Seen::Older) => true,
            Some(Seen::Changed) => false,
            None => !entry.seen && now.duration_since(entry.applied_at) < IN_FLIGHT,
        }
    }

    fn remember(&self, key: &str, hash: u64, meta: &Meta) {
        if let Ok(mut cache) = self.0.lock() {
            let (ns, object) = split_key(key);
            let entry = Entry {
                object,
                hash,
                marker: Marker::of(meta),
                seen: false,
                applied_at: Instant::now(),
            };
            let entries = cache.entry(ns.into()).or_default();
            match entries.iter_mut().find(|e| e.object == object) {
                Some(known) => *known = entry,
                None => entries.push(entry),
            }
        }
    }

    /// Forget a namespace's objects (its environment is gone).
    pub fn forget_namespace(&self, ns: &str) {
        if let Ok(mut cache) = self.0.lock() {
            cache.remove(ns);
        }
    }
}

/// Applies the children of one environment, skipping what is already as applied.
pub struct Applier<'a> {
    client: &'a Client,
    cache: &'a AppliedCache,
    stores: &'a Stores,
    /// Something applied was skipped while its watch had not shown it yet.
    in_flight: AtomicBool,
    /// The objects (`Kind/namespace/name`) this pass wrote, not skipped.
    written: Mutex<BTreeSet<String>>,
}

impl<'a> Applier<'a> {
    pub fn new(client: &'a Client, cache: &'a AppliedCache, stores: &'a Stores) -> Self {
        Self {
            client,
            cache,
            stores,
            in_flight: AtomicBool::new(false),
            written: Mutex::default(),
        }
    }

    /// Whether this pass wrote the object (rather than skipping it as already applied).
    pub fn wrote(&self, kind: ChildKind, ns: &str, name: &str) -> bool {
        let key = format!("{kind}/{ns}/{name}");
        self.written.lock().is_ok_and(|w| w.contains(&key))
    }

    fn note_written(&self, key: &str) {
        if let Ok(mut written) = self.written.lock() {
            written.insert(key.to_owned());
        }
    }

    /// When to look again at objects skipped as in flight (none: `None`): if their watch never
    /// shows them, they count as deleted then and are applied again.
    pub fn look_again(&self) -> Option<Duration> {
        self.in_flight.load(Ordering::Relaxed).then_some(IN_FLIGHT)
    }

    /// Whether the object at `key` is as last applied (see [`AppliedCache`]).
    fn skip<K: Child>(&self, ns: &str, name: &str, key: &str, hash: u64) -> bool {
        self.skip_live(self.stores.meta::<K>(ns, name), key, hash)
    }

    /// Whether the object at `key`, whose watched copy is `live`, is as last applied.
    fn skip_live(&self, live: Option<Meta>, key: &str, hash: u64) -> bool {
        let skip = self
            .cache
            .unchanged(key, hash, live.as_ref(), Instant::now());
        if skip && live.is_none() {
            self.in_flight.store(true, Ordering::Relaxed);
        }
        skip
    }

    async fn apply<K>(&self, object: &K) -> Result<(), Error>
    where
        K: Child<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    {
        let name = object.name_any();
        let ns = object.namespace().unwrap_or_default();
        let kind = K::KIND.as_str();
        let key = format!("{kind}/{ns}/{name}");
        let hash = hash_of(object);
        if self.skip::<K>(&ns, &name, &key, hash) {
            return Ok(());
        }
        let applied = Api::<K>::namespaced(self.client.clone(), &ns)
            .patch(&name, &params(), &Patch::Apply(object))
            .await
            .map_err(|source| Error::Apply { kind, name, source })?;
        self.note_written(&key);
        self.cache.remember(&key, hash, &Meta::of(applied.meta()));
        Ok(())
    }

    /// Hand a Deployment's replicas to [`HANDOVER_MANAGER`] at `replicas`, so that appenv's
    /// apply without the field (an autoscaled worker's) leaves them as they are.
    async fn hand_over(&self, ns: &str, handover: &Handover) -> Result<(), Error> {
        let name = handover.deployment.clone();
        let body = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": handover.replicas},
        });
        let params = PatchParams::apply(HANDOVER_MANAGER).force();
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| Error::Apply {
                kind: ChildKind::Deployment.as_str(),
                name,
                source,
            })?;
        tracing::info!(deployment = %handover.deployment, replicas = handover.replicas, "replicas handed over to the autoscaler");
        Ok(())
    }

    /// Apply an autoscaler, of a kind the cluster serves (a dynamic object: KEDA's types are
    /// not in k8s-openapi, and the HorizontalPodAutoscaler's version is the cluster's).
    async fn apply_autoscaler(&self, autoscaler: &Autoscaler) -> Result<(), Error> {
        let kind = autoscaler.kind.kind();
        let name = autoscaler.name.clone();
        let ns = autoscaler.object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = format!("{kind}/{ns}/{name}");
        let hash = hash_of(&autoscaler.object);
        let live = self.stores.autoscalers.meta(autoscaler.kind, &ns, &name);
        if self.skip_live(live, &key, hash) {
            return Ok(());
        }
        let resource = crate::discovery::api_resource(autoscaler.kind);
        let applied = Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &resource)
            .patch(&name, &params(), &Patch::Apply(&autoscaler.object))
            .await
            .map_err(|source| Error::Apply { kind, name, source })?;
        self.note_written(&key);
        self.cache
            .remember(&key, hash, &Meta::of(&applied.metadata));
        Ok(())
    }

    async fn apply_namespace(&self, namespace: &Namespace) -> Result<(), Error> {
        let name = namespace.name_any();
        let key = format!("{}//{name}", ChildKind::Namespace);
        let hash = hash_of(namespace);
        if self.skip::<Namespace>("", &name, &key, hash) {
            return Ok(());
        }
        let applied = Api::<Namespace>::all(self.client.clone())
            .patch(&name, &params(), &Patch::Apply(namespace))
            .await
            .map_err(|source| Error::Apply {
                kind: ChildKind::Namespace.as_str(),
                name,
                source,
            })?;
        self.note_written(&key);
        self.cache
            .remember(&key, hash, &Meta::of(&applied.metadata));
        Ok(())
    }
}

/// The names of the children a reconcile applied (or keeps), per kind: prune deletes the rest.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub children: BTreeMap<ChildKind, BTreeSet<String>>,
    /// Autoscalers, by kind (`ScaledObject`, `HorizontalPodAutoscaler`) and name: kept while
    /// the workloads are held too.
    pub autoscalers: BTreeSet<(&'static str, String)>,
}

/// Apply every child that the `gates` permit, in dependency order. Returns the names applied
/// per kind, for pruning.
#[expect(
    clippy::too_many_lines,
    reason = "one list of every kind of child, destructured so that a new kind must be applied"
)]
pub async fn apply_children(
    applier: &Applier<'_>,
    children: &Children,
    gates: &Gates,
    handovers: &[Handover],
) -> Result<Applied, Error> {
    // Destructured without `..`: a new kind of child does not compile until it is applied.
    let Children {
        namespace,
        guardrails,
        config,
        postgres,
        redis,
        data_volume,
        migration,
        backup_volume,
        backup: _, // these four: see `reconcile::data_jobs`
        backup_snapshot: _,
        restore: _,
        restore_claim: _,
        seed: _,
        web,
        workers,
        autoscalers,
        wildcard_tls,
        copied_secrets,
        copied_config_maps,
    } = children;
    let mut applied = Applied {
        autoscalers: autoscalers
            .iter()
            .map(|a| (a.kind.kind(), a.name.clone()))
            .collect(),
        ..Applied::default()
    };
    let mut note = |kind: ChildKind, name: String| {
        applied.children.entry(kind).or_default().insert(name);
    };
    // Three stages, each stage's requests at once: the namespace; what the workloads' Pods
    // read or need to exist when they are created (guardrails: a LimitRange defaults their
    // resources; the configuration and copies they read; credentials; volumes; Services, whose
    // variables a Pod gets only for Services that exist before it); then the workloads and
    // the Ingress.
    let mut first: Vec<Pending<'_>> = Vec::new();
    let mut then: Vec<Pending<'_>> = Vec::new();

    applier.apply_namespace(namespace).await?;
    if let Some(Guardrails {
        quota,
        limits,
        network_policy,
    }) = guardrails
    {
        first.push(Box::pin(applier.apply(quota)));
        first.push(Box::pin(applier.apply(limits)));
        first.push(Box::pin(applier.apply(network_policy)));
        note(ChildKind::ResourceQuota, quota.name_any());
        note(ChildKind::LimitRange, limits.name_any());
        note(ChildKind::NetworkPolicy, network_policy.name_any());
    }
    first.push(Box::pin(applier.apply(config)));
    note(ChildKind::ConfigMap, config.name_any());
    // Copies before the workloads whose Pods read them (the certificate before the Ingress).
    for copy in copied_secrets.iter().chain(wildcard_tls) {
        first.push(Box::pin(applier.apply(copy)));
        note(ChildKind::Secret, copy.name_any());
    }
    for copy in copied_config_maps {
        first.push(Box::pin(applier.apply(copy)));
        note(ChildKind::ConfigMap, copy.name_any());
    }
    if let Some(Postgres {
        credentials,
        init,
        service,
        statefulset,
    }) = postgres
    {
        first.push(Box::pin(applier.apply(credentials)));
        first.push(Box::pin(applier.apply(init)));
        first.push(Box::pin(applier.apply(service)));
        note(ChildKind::StatefulSet, statefulset.name_any());
        if let Some(statefulset) = changed_statefulset(statefulset, gates) {
            then.push(Box::pin(async move { applier.apply(&statefulset).await }));
        }
        note(ChildKind::Secret, credentials.name_any());
        note(ChildKind::ConfigMap, init.name_any());
        note(ChildKind::Service, service.name_any());
    }
    if let Some(Redis {
        volume,
        deployment,
        service,
    }) = redis
    {
        if let Some(volume) = volume {
            first.push(Box::pin(applier.apply(volume)));
            note(ChildKind::PersistentVolumeClaim, volume.name_any());
        }
        first.push(Box::pin(applier.apply(service)));
        then.push(Box::pin(applier.apply(deployment)));
        note(ChildKind::Service, service.name_any());
        note(ChildKind::Deployment, deployment.name_any());
    }
    for volume in data_volume.iter().chain(backup_volume) {
        first.push(Box::pin(applier.apply(volume)));
        note(ChildKind::PersistentVolumeClaim, volume.name_any());
    }
    if let Some(job) = migration {
        if gates.run_migration {
            then.push(Box::pin(applier.apply(job)));
        }
        // The current image's Job is kept even while it waits for the database.
        note(ChildKind::Job, job.name_any());
    }
    let Web {
        deployment,
        service,
        ingress,
        activator,
    } = web;
    for service in std::iter::once(service).chain(activator) {
        first.push(Box::pin(applier.apply(service)));
        note(ChildKind::Service, service.name_any());
    }
    let workloads = Workloads {
        web: deployment,
        workers,
        autoscalers,
        handovers,
    };
    for deployment in std::iter::once(deployment).chain(workers) {
        note(ChildKind::Deployment, deployment.name_any());
    }
    if let Some(ingress) = ingress {
        then.push(Box::pin(applier.apply(ingress)));
        note(ChildKind::Ingress, ingress.name_any());
    }
    futures::future::try_join_all(first).await?;
    then.push(Box::pin(apply_workloads(applier, gates, workloads)));
    futures::future::try_join_all(then).await?;
    Ok(applied)
}

/// Create a backup, restore or seed Job. With `no_pod_of` (a label selector: web's for a DuckDB
/// backup, web's and the workers' for an in-place restore) only once no such Pod exists, as the
/// API server lists them now (a watch may lag, and a Pod being deleted still holds the file):
/// otherwise nothing is created, and the reconcile looks again soon. Whether it was created.
pub async fn start_job(
    applier: &Applier<'_>,
    job: &Job,
    claim: Option<&PersistentVolumeClaim>,
    no_pod_of: Option<&str>,
) -> Result<bool, Error> {
    let ns = job.namespace().unwrap_or_default();
    if !no_pods(applier, &ns, &job.name_any(), no_pod_of).await? {
        return Ok(false);
    }
    // The claim its Pod reads (made from a VolumeSnapshot), before the Job.
    if let Some(claim) = claim {
        applier.apply(claim).await?;
    }
    applier.apply(job).await?;
    tracing::info!(job = %job.name_any(), "started");
    Ok(true)
}

/// Whether the API server lists no Pod of `selector` in `ns` (none given: true); if some
/// exist, `what` waits and the reconcile looks again soon.
pub async fn no_pods(
    applier: &Applier<'_>,
    ns: &str,
    what: &str,
    selector: Option<&str>,
) -> Result<bool, Error> {
    let Some(selector) = selector else {
        return Ok(true);
    };
    let pods = Api::<Pod>::namespaced(applier.client.clone(), ns)
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(|source| Error::Apply {
            kind: ChildKind::Pod.as_str(),
            name: selector.to_owned(),
            source,
        })?;
    if pods.items.is_empty() {
        return Ok(true);
    }
    tracing::info!(%what, pods = pods.items.len(), "waits for the app's Pods to stop");
    applier.in_flight.store(true, Ordering::Relaxed);
    Ok(false)
}

/// Delete finished backup Jobs past the history (their Pods with them).
pub async fn delete_jobs(client: &Client, ns: &str, names: &[String]) -> Result<(), Error> {
    let api = Api::<Job>::namespaced(client.clone(), ns);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for name in names {
        match api.delete(name, &params).await {
            Ok(_) => tracing::info!(job = %name, "old backup Job deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    kind: ChildKind::Job.as_str(),
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The StatefulSet with the hash of what is applied, if that changed. On 1.20 a StatefulSet
/// apply always writes (its atomic volumeClaimTemplates come back defaulted), so it is applied
/// only when what we apply changed. The price: a manual edit of the StatefulSet is not
/// reverted until the spec changes.
fn changed_statefulset(statefulset: &StatefulSet, gates: &Gates) -> Option<StatefulSet> {
    let mut statefulset = statefulset.clone();
    let hash = hash_json(&statefulset);
    if gates.statefulset_hash.as_deref() == Some(hash.as_str()) {
        return None;
    }
    statefulset
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash);
    Some(statefulset)
}

/// A request of a stage of [`apply_children`].
type Pending<'a> = futures::future::BoxFuture<'a, Result<(), Error>>;

/// Web, workers and the workers' autoscalers.
struct Workloads<'a> {
    web: &'a Deployment,
    workers: &'a [Deployment],
    autoscalers: &'a [Autoscaler],
    handovers: &'a [Handover],
}

/// Web and workers (the replicas of newly autoscaled ones handed over first), then the
/// workers' autoscalers; held until the first migration succeeds (what exists is kept, nothing
/// new is created).
async fn apply_workloads(
    applier: &Applier<'_>,
    gates: &Gates,
    workloads: Workloads<'_>,
) -> Result<(), Error> {
    let Workloads {
        web,
        workers,
        autoscalers,
        handovers,
    } = workloads;
    if gates.apply_workloads() {
        applier.apply(web).await?;
        let ns = web.namespace().unwrap_or_default();
        for handover in handovers {
            applier.hand_over(&ns, handover).await?;
        }
        for worker in workers {
            applier.apply(worker).await?;
        }
        // After the Deployments they scale.
        for autoscaler in autoscalers {
            applier.apply_autoscaler(autoscaler).await?;
        }
    }
    Ok(())
}

async fn prune_kind<K>(
    client: &Client,
    stores: &Stores,
    ns: &str,
    environment: &str,
    keep: Option<&BTreeSet<String>>,
    skip: impl Fn(&Meta) -> bool,
) -> Result<(), Error>
where
    K: Child<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let kind = K::KIND.as_str();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for (name, snapshot) in stores.of_environment::<K>(ns, environment) {
        let meta = snapshot.as_ref();
        if keep.is_some_and(|k| k.contains(&name)) || skip(meta) || meta.deleting {
            continue;
        }
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(kind, %name, "pruned"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Prune { kind, name, source }),
        }
    }
    Ok(())
}

fn never(_: &Meta) -> bool {
    false
}

/// Delete this environment's objects that were not applied: components that were disabled or
/// removed. Database volumes are never pruned: data is deleted only with the environment.
/// What exists is read from the watches' stores.
pub async fn prune(
    client: &Client,
    stores: &Stores,
    ns: &str,
    environment: &str,
    applied: &Applied,
) -> Result<(), Error> {
    let keep = |kind: ChildKind| applied.children.get(&kind);
    let (c, s, env) = (client, stores, environment);
    prune_kind::<Deployment>(c, s, ns, env, keep(ChildKind::Deployment), never).await?;
    prune_kind::<StatefulSet>(c, s, ns, env, keep(ChildKind::StatefulSet), never).await?;
    prune_kind::<Service>(c, s, ns, env, keep(ChildKind::Service), never).await?;
    prune_kind::<ConfigMap>(c, s, ns, env, keep(ChildKind::ConfigMap), never).await?;
    prune_kind::<Secret>(c, s, ns, env, keep(ChildKind::Secret), never).await?;
    prune_kind::<Ingress>(c, s, ns, env, keep(ChildKind::Ingress), never).await?;
    prune_kind::<Job>(c, s, ns, env, keep(ChildKind::Job), never).await?;
    prune_kind::<ResourceQuota>(c, s, ns, env, keep(ChildKind::ResourceQuota), never).await?;
    prune_kind::<LimitRange>(c, s, ns, env, keep(ChildKind::LimitRange), never).await?;
    prune_kind::<NetworkPolicy>(c, s, ns, env, keep(ChildKind::NetworkPolicy), never).await?;
    // Only Redis's own volume may go with Redis; a database volume never does.
    prune_kind::<PersistentVolumeClaim>(
        c,
        s,
        ns,
        env,
        keep(ChildKind::PersistentVolumeClaim),
        |meta: &Meta| meta.component.as_deref() != Some(Component::Redis.as_str()) || meta.retained,
    )
    .await?;
    prune_autoscalers(client, stores, ns, environment, &applied.autoscalers).await
}

/// Delete the claims made from VolumeSnapshots for restores that finished (all but `running`'s,
/// named like its Job), as the stores have them (at rest, no request), with their Jobs: a
/// finished Pod still holds its claim (`kubernetes.io/pvc-protection`) on older clusters.
/// `status.restore.last` keeps what the Job did.
pub async fn drop_restore_claims(
    client: &Client,
    stores: &Stores,
    ns: &str,
    environment: &str,
    running: Option<&str>,
) -> Result<(), Error> {
    let done: Vec<(String, bool)> = stores
        .of_environment::<PersistentVolumeClaim>(ns, environment)
        .into_iter()
        .filter(|(name, snapshot)| {
            snapshot.as_ref().component.as_deref() == Some(Component::Restore.as_str())
                && Some(name.as_str()) != running
        })
        .map(|(name, snapshot)| (name, snapshot.as_ref().deleting))
        .collect();
    if done.is_empty() {
        return Ok(());
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    for (name, deleting) in &done {
        if *deleting {
            continue;
        }
        match claims.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(claim = %name, "the restore's claim deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    kind: ChildKind::PersistentVolumeClaim.as_str(),
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    let jobs: Vec<String> = done.into_iter().map(|(name, _)| name).collect();
    delete_jobs(client, ns, &jobs).await
}

/// Delete the environment's autoscalers of workers that no longer autoscale (or are gone),
/// and of a kind the build no longer makes (KEDA installed since).
pub async fn prune_autoscalers(
    client: &Client,
    stores: &Stores,
    ns: &str,
    environment: &str,
    keep: &BTreeSet<(&'static str, String)>,
) -> Result<(), Error> {
    for watch in stores.autoscalers.kinds() {
        let kind = watch.kind.kind();
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &watch.resource);
        for (name, meta) in stores
            .autoscalers
            .of_environment(watch.kind, ns, environment)
        {
            if keep.contains(&(kind, name.clone())) || meta.deleting {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(kind, %name, "pruned"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(source) => return Err(Error::Prune { kind, name, source }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(generation: Option<i64>, version: &str) -> Meta {
        Meta::of(&ObjectMeta {
            generation,
            resource_version: Some(version.to_owned()),
            ..ObjectMeta::default()
        })
    }

    #[test]
    fn generations_order_and_versions_compare_as_numbers() {
        let applied = Marker::of(&meta(Some(3), "100"));
        assert_eq!(compare(&meta(Some(3), "250"), &applied), Seen::Same);
        assert_eq!(compare(&meta(Some(2), "90"), &applied), Seen::Older);
        assert_eq!(compare(&meta(Some(4), "300"), &applied), Seen::Changed);
        let applied = Marker::of(&meta(None, "100"));
        assert_eq!(compare(&meta(None, "100"), &applied), Seen::Same);
        assert_eq!(compare(&meta(None, "99"), &applied), Seen::Older);
        // Numbers, not strings: "1000" is after "999".
        let applied = Marker::of(&meta(None, "999"));
        assert_eq!(compare(&meta(None, "1000"), &applied), Seen::Changed);
        // Not a number: only equality is known.
        let applied = Marker::of(&meta(None, "abc"));
        assert_eq!(compare(&meta(None, "abc"), &applied), Seen::Same);
        assert_eq!(compare(&meta(None, "abb"), &applied), Seen::Changed);
        // Only a canonical number is one: "0100" is not the revision 100.
        let applied = Marker::of(&meta(None, "100"));
        assert_eq!(compare(&meta(None, "0100"), &applied), Seen::Changed);
        assert_eq!(compare(&meta(None, "+99"), &applied), Seen::Changed);
        assert_eq!(compare(&meta(None, ""), &applied), Seen::Changed);
    }

    #[test]
    fn the_cache_tells_the_objects_of_a_namespace_apart_and_forgets_them_with_it() {
        let cache = AppliedCache::default();
        let now = Instant::now();
        let applied = meta(None, "10");
        let unchanged = |key, hash| cache.unchanged(key, hash, Some(&applied), now);
        cache.remember("Namespace//x", 1, &applied);
        cache.remember("Service/x/web", 2, &applied);
        cache.remember("Deployment/x/web", 3, &applied);
        cache.remember("Service/y/web", 4, &applied);
        assert!(unchanged("Namespace//x", 1));
        assert!(unchanged("Service/x/web", 2));
        assert!(unchanged("Deployment/x/web", 3));
        assert!(
            !unchanged("Service/x/web", 3),
            "same name, another kind: its own entry"
        );
        assert!(
            !unchanged("Service/x/other", 2),
            "same kind, another name: not known"
        );
        cache.remember("Service/x/web", 5, &applied);
        assert!(!unchanged("Service/x/web", 2), "replaced");
        assert!(unchanged("Service/x/web", 5));
        cache.forget_namespace("x");
        assert!(!unchanged("Namespace//x", 1), "the namespace itself goes");
        assert!(!unchanged("Service/x/web", 5));
        assert!(!unchanged("Deployment/x/web", 3));
        assert!(unchanged("Service/y/web", 4), "another namespace's stay");
    }

    #[test]
    fn the_cache_skips_what_the_watch_shows_as_applied_and_applies_what_changed_or_went() {
        const H: u64 = 1;
        const OTHER: u64 = 2;
        let cache = AppliedCache::default();
        let now = Instant::now();
        let applied = meta(None, "10");
        assert!(
            !cache.unchanged("Service/x/k", H, Some(&applied), now),
            "never applied"
        );
        cache.remember("Service/x/k", H, &applied);
        assert!(
            !cache.unchanged("Service/x/k", OTHER, Some(&applied), now),
            "new content"
        );
        // Created a moment ago, the watch has not shown it yet: in flight, not missing.
        assert!(cache.unchanged("Service/x/k", H, None, now));
        assert!(
            cache.unchanged("Service/x/k", H, Some(&meta(None, "9")), now),
            "watch behind"
        );
        assert!(
            cache.unchanged("Service/x/k", H, Some(&applied), now),
            "as applied"
        );
        // Once shown, its absence is a deletion.
        assert!(!cache.unchanged("Service/x/k", H, None, now));
        assert!(
            !cache.unchanged("Service/x/k", H, Some(&meta(None, "11")), now),
            "edited"
        );
        // Never shown for longer than IN_FLIGHT: counted as gone.
        cache.remember("Service/y/j", H, &applied);
        assert!(!cache.unchanged(
            "Service/y/j",
            H,
            None,
            now + IN_FLIGHT + Duration::from_secs(1)
        ));
        cache.forget_namespace("x");
        assert!(
            cache.unchanged("Service/y/j", H, Some(&applied), now),
            "other keys kept"
        );
    }
}
