//! The fetch step's source: every kind of object appenv writes is watched once, selected by
//! the environment label, and indexed in memory by namespace and name. A reconcile reads these
//! indexes and sends the API server only its writes.
//!
//! One typed index per kind ([`Index<K>`]); a look-up names the kind by its type
//! (`stores.get::<Deployment>(..)`), so a kind that is not watched cannot be asked for: it does
//! not compile. [`Watched`] says how a kind is watched and what its index keeps; [`Child`]
//! marks the kinds appenv applies and prunes.
//!
//! An index keeps a small snapshot per object ([`snapshot`]), not the object: k8s-openapi
//! structs are large even when stripped (a `PodSpec` is over a kilobyte before it holds
//! anything), and with a thousand environments full objects cost the operator more memory than
//! everything else. Each snapshot holds what a decision reads: the version marker and the
//! labels prune reads ([`Meta`]), for every kind; a Deployment's replicas, selector, image and
//! rollout status; a StatefulSet's applied hash and ready replicas; a Job's conditions; a
//! claim's class and phase; the generated password of a credentials Secret; of Pods only the
//! failing ones, with their labels and the reason; the names of the StorageClasses.

mod autoscalers;
mod index;
mod snapshot;
mod sources;

pub use self::autoscalers::Autoscalers;
pub use self::index::Index;
use self::index::IndexWriter;
pub use self::snapshot::{
    CANNOT_START, ClaimSnapshot, DeploymentSnapshot, FailingPod, JobSnapshot, Labels, Meta,
    MountFailure, PodFailure, SecretSnapshot, StatefulSetSnapshot, Version,
};
pub use self::sources::{Sources, Touched, copying};
use appenv_api::names::{ChildKind, label};
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret,
    Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

/// A reconcile request for the environment an object belongs to.
pub type Trigger = BoxStream<'static, ObjectRef<crate::compact::Guarded>>;

/// How long a reconcile waits for the watches' first lists before it fails (and is retried).
const FIRST_LIST: Duration = Duration::from_secs(30);

/// A store without its first list.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// Its watch stream ended (the controller is shutting down).
    #[error("the watch of {0} ended")]
    Ended(&'static str),
    #[error(
        "no list of {0} within {FIRST_LIST:?} (may the operator list and watch them? see its ClusterRole)"
    )]
    NoList(&'static str),
}

/// The environment an object belongs to, by its label.
fn environment_of(meta: &ObjectMeta) -> Option<ObjectRef<crate::compact::Guarded>> {
    meta.labels
        .as_ref()?
        .get(label::ENVIRONMENT)
        .map(|name| ObjectRef::new(name))
}

/// A kind the stores watch and index.
pub trait Watched: Resource<DynamicType = ()> + Sized + 'static {
    /// What its watch receives: the object, or only its metadata.
    type Object: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// What its index keeps of one object.
    type Snapshot: Clone + Send + Sync + 'static;
    /// Its plural, for messages.
    const PLURAL: &'static str;

    /// The snapshot kept of `object`; `None`: nothing is kept (it leaves the index).
    fn snapshot(object: &Self::Object) -> Option<Self::Snapshot>;

    /// Its index in `stores`.
    fn index(stores: &Stores) -> &Index<Self>;

    /// Which objects are watched: by default the environments' children (by their label).
    fn selection() -> watcher::Config {
        watcher::Config::default().labels(label::ENVIRONMENT)
    }

    /// Whether a change of `object` is worth a reconcile of its environment.
    fn wakes(_object: &Self::Object) -> bool {
        true
    }
}

/// A kind appenv applies and prunes: its index keeps each object's [`Meta`].
pub trait Child: Watched<Snapshot: AsRef<Meta>> {
    const KIND: ChildKind;
}

/// Kinds of which only the metadata is watched (metadata-only lists and watches).
macro_rules! metadata_only {
    ($($kind:ident => $field:ident, $plural:literal;)*) => {$(
        impl Watched for $kind {
            type Object = PartialObjectMeta<$kind>;
            type Snapshot = Meta;
            const PLURAL: &'static str = $plural;
            fn snapshot(object: &Self::Object) -> Option<Meta> {
                Some(Meta::of(&object.metadata))
            }
            fn index(stores: &Stores) -> &Index<Self> {
                &stores.$field
            }
        }
    )*};
}
/// Every namespace, by its metadata: whether one an environment names exists, whose it is, and
/// whether it lets environments adopt it.
impl Watched for Namespace {
    type Object = PartialObjectMeta<Namespace>;
    type Snapshot = Meta;
    const PLURAL: &'static str = "Namespaces";
    fn snapshot(object: &Self::Object) -> Option<Meta> {
        Some(Meta::of(&object.metadata))
    }
    fn index(stores: &Stores) -> &Index<Self> {
        &stores.namespaces
    }
    fn selection() -> watcher::Config {
        watcher::Config::default()
    }
}

metadata_only! {
    ConfigMap => config_maps, "ConfigMaps";
    Service => services, "Services";
    Ingress => ingresses, "Ingresses";
    ResourceQuota => quotas, "ResourceQuotas";
    LimitRange => limit_ranges, "LimitRanges";
    NetworkPolicy => network_policies, "NetworkPolicies";
}

/// Kinds watched whole, each kept as its snapshot.
macro_rules! whole {
    ($($kind:ident => $field:ident, $plural:literal, $snapshot:ty;)*) => {$(
        impl Watched for $kind {
            type Object = $kind;
            type Snapshot = $snapshot;
            const PLURAL: &'static str = $plural;
            fn snapshot(object: &$kind) -> Option<$snapshot> {
                Some(<$snapshot>::from(object))
            }
            fn index(stores: &Stores) -> &Index<Self> {
                &stores.$field
            }
        }
    )*};
}
whole! {
    Secret => secrets, "Secrets", SecretSnapshot;
    Deployment => deployments, "Deployments", DeploymentSnapshot;
    StatefulSet => stateful_sets, "StatefulSets", StatefulSetSnapshot;
    Job => jobs, "Jobs", JobSnapshot;
    PersistentVolumeClaim => claims, "PersistentVolumeClaims", ClaimSnapshot;
}

macro_rules! children {
    ($($kind:ident,)*) => {$(
        impl Child for $kind {
            const KIND: ChildKind = ChildKind::$kind;
        }
    )*};
}
children! {
    Namespace, ConfigMap, Service, Ingress, ResourceQuota, LimitRange, NetworkPolicy, Secret,
    Deployment, StatefulSet, Job, PersistentVolumeClaim,
}

/// Every StorageClass, by name: a claim of a class that does not exist never binds.
impl Watched for StorageClass {
    type Object = PartialObjectMeta<StorageClass>;
    /// Only the name, which is the index's key.
    type Snapshot = ();
    const PLURAL: &'static str = "StorageClasses";
    fn snapshot(_: &Self::Object) -> Option<()> {
        Some(())
    }
    fn index(stores: &Stores) -> &Index<Self> {
        &stores.storage_classes
    }
    fn selection() -> watcher::Config {
        watcher::Config::default()
    }
}

/// Only failing Pods are kept, and only their change reconciles (a Pod changes often).
impl Watched for Pod {
    type Object = Pod;
    type Snapshot = FailingPod;
    const PLURAL: &'static str = "Pods";
    fn snapshot(pod: &Pod) -> Option<FailingPod> {
        FailingPod::of(pod)
    }
    fn index(stores: &Stores) -> &Index<Self> {
        &stores.pods
    }
    fn wakes(pod: &Pod) -> bool {
        snapshot::failure(pod).is_some()
            || snapshot::creating(pod)
            || snapshot::completed(pod).is_some()
    }
}

/// `FailedMount` Warning Events about Pods: why a Pod stays in `ContainerCreating` is only
/// said there. Selected by reason on the server, so only those are sent.
impl Watched for Event {
    type Object = Event;
    type Snapshot = MountFailure;
    const PLURAL: &'static str = "Events";
    fn snapshot(event: &Event) -> Option<MountFailure> {
        MountFailure::of(event)
    }
    fn index(stores: &Stores) -> &Index<Self> {
        &stores.mount_failures
    }
    fn selection() -> watcher::Config {
        watcher::Config::default().fields("reason=FailedMount,involvedObject.kind=Pod")
    }
}

/// The stores of everything an environment's reconcile reads.
#[derive(Clone)]
pub struct Stores {
    namespaces: Index<Namespace>,
    config_maps: Index<ConfigMap>,
    services: Index<Service>,
    ingresses: Index<Ingress>,
    quotas: Index<ResourceQuota>,
    limit_ranges: Index<LimitRange>,
    network_policies: Index<NetworkPolicy>,
    storage_classes: Index<StorageClass>,
    secrets: Index<Secret>,
    deployments: Index<Deployment>,
    stateful_sets: Index<StatefulSet>,
    jobs: Index<Job>,
    claims: Index<PersistentVolumeClaim>,
    pods: Index<Pod>,
    mount_failures: Index<Event>,
    /// The wildcard certificate previews copy, if one is configured.
    pub wildcard: Option<Store<Secret>>,
    /// The sources of `spec.namespace.copy`, in the namespaces the operator copies from.
    pub sources: Sources,
    /// The autoscalers, of the kinds the cluster serves.
    pub autoscalers: Autoscalers,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// A watch of kind `K` kept in a new index, and its reconcile requests (pushed to `triggers`)
/// of the environments of the objects `K::wakes` accepts.
fn watch_kind<K, B>(client: &Client, backoff: B, triggers: &mut Vec<Trigger>) -> Index<K>
where
    K: Watched,
    B: Backoff + Send + 'static,
{
    watch_kind_for(client, backoff, triggers, |o: &K::Object| {
        Some(o)
            .filter(|o| K::wakes(o))
            .and_then(|o| environment_of(o.meta()))
    })
}

/// [`watch_kind`] with the environment each object belongs to (whose reconcile its change
/// requests) found by `environment`.
fn watch_kind_for<K, B>(
    client: &Client,
    backoff: B,
    triggers: &mut Vec<Trigger>,
    environment: impl Fn(&K::Object) -> Option<ObjectRef<crate::compact::Guarded>>
    + Send
    + Sync
    + 'static,
) -> Index<K>
where
    K: Watched,
    B: Backoff + Send + 'static,
{
    let environment = std::sync::Arc::new(environment);
    let index = Index::new();
    let mut writer = IndexWriter::new(&index);
    let trigger = watcher::watcher(Api::<K::Object>::all(client.clone()), K::selection())
        .inspect_ok(move |event| writer.apply(event))
        .backoff(backoff)
        .touched_objects()
        .filter_map(move |object| {
            let environment = environment.clone();
            async move {
                match object {
                    Ok(object) => environment(&object),
                    Err(err) => {
                        tracing::debug!(kind = %K::kind(&()), error = %err, "watch");
                        None
                    }
                }
            }
        })
        .boxed();
    triggers.push(trigger);
    index
}

/// The wait for the first list of `K`, named for messages.
fn first_list<K: Watched>(
    stores: &Stores,
) -> (&'static str, futures::future::BoxFuture<'_, Result<(), ()>>) {
    (K::PLURAL, K::index(stores).wait_ready().boxed())
}

/// What the watches report, for the controller to reconcile on.
pub struct Changes {
    /// Changes of environments' objects: reconcile that environment.
    pub triggers: Vec<Trigger>,
    /// Changes of the wildcard certificate: reconcile every environment.
    pub wildcard: BoxStream<'static, ()>,
    /// Changes of copy sources: reconcile the environments that copy them.
    pub sources: BoxStream<'static, Touched>,
}

impl Stores {
    /// Set up the watches. Nothing is read until the returned streams are polled (the
    /// controller polls them: every change of an environment's object reconciles it).
    pub fn watch<B>(
        client: &Client,
        settings: &appenv_core::settings::Settings,
        autoscalers: &[appenv_core::build::AutoscalerKind],
        backoff: impl Fn() -> B,
    ) -> (Self, Changes)
    where
        B: Backoff + Send + 'static,
    {
        let mut all = Vec::new();
        let c = client;
        let mut stores = Self {
            namespaces: watch_kind(c, backoff(), &mut all),
            config_maps: watch_kind(c, backoff(), &mut all),
            services: watch_kind(c, backoff(), &mut all),
            ingresses: watch_kind(c, backoff(), &mut all),
            quotas: watch_kind(c, backoff(), &mut all),
            limit_ranges: watch_kind(c, backoff(), &mut all),
            network_policies: watch_kind(c, backoff(), &mut all),
            storage_classes: watch_kind(c, backoff(), &mut all),
            secrets: watch_kind(c, backoff(), &mut all),
            deployments: watch_kind(c, backoff(), &mut all),
            stateful_sets: watch_kind(c, backoff(), &mut all),
            jobs: watch_kind(c, backoff(), &mut all),
            claims: watch_kind(c, backoff(), &mut all),
            pods: Index::new(),
            mount_failures: Index::new(),
            wildcard: None,
            sources: Sources::default(),
            autoscalers: Autoscalers::default(),
        };
        stores.pods = watch_kind(c, backoff(), &mut all);
        // An Event has no environment label: its Pod (kept while it is creating) has.
        let pods = stores.pods.clone();
        stores.mount_failures = watch_kind_for(c, backoff(), &mut all, move |event: &Event| {
            let about = &event.involved_object;
            let ns = about.namespace.as_deref().unwrap_or_default();
            let pod = pods.get(ns, about.name.as_deref()?)?;
            let environment = pod
                .labels
                .iter()
                .find(|(k, _)| &**k == label::ENVIRONMENT)?;
            Some(ObjectRef::new(&environment.1))
        });
        stores.autoscalers = Autoscalers::watch(c, autoscalers, &backoff, &mut all);
        let (sources, source_changes) = Sources::watch(c, &settings.copy_from_namespaces, &backoff);
        stores.sources = sources;
        let mut wildcard_changes = futures::stream::pending().boxed();
        let wildcard = settings.wildcard_tls.as_ref();
        if let Some((ns, name)) = wildcard.map(|w| (w.namespace(), w.name())) {
            // A change of the certificate reaches every preview's copy: the caller reconciles
            // every environment on this stream.
            let (reader, writer) = reflector::store();
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            wildcard_changes = watcher::watcher(Api::<Secret>::namespaced(c.clone(), ns), config)
                .modify(|s: &mut Secret| s.metadata.managed_fields = None)
                .reflect(writer)
                .backoff(backoff())
                .touched_objects()
                .filter_map(|change| async move { change.ok().map(|_| ()) })
                .boxed();
            stores.wildcard = Some(reader);
        }
        let changes = Changes {
            triggers: all,
            wildcard: wildcard_changes,
            sources: source_changes,
        };
        (stores, changes)
    }

    /// Wait until every store holds its first full list.
    pub async fn ready(&self) -> Result<(), NotReady> {
        let waits = [
            first_list::<Namespace>(self),
            first_list::<ConfigMap>(self),
            first_list::<Service>(self),
            first_list::<Ingress>(self),
            first_list::<ResourceQuota>(self),
            first_list::<LimitRange>(self),
            first_list::<NetworkPolicy>(self),
            first_list::<StorageClass>(self),
            first_list::<Secret>(self),
            first_list::<Deployment>(self),
            first_list::<StatefulSet>(self),
            first_list::<Job>(self),
            first_list::<PersistentVolumeClaim>(self),
            first_list::<Pod>(self),
            first_list::<Event>(self),
        ];
        let wildcard = self.wildcard.as_ref().map(|w| {
            let wait = w.wait_until_ready().map(|r| r.map_err(|_| ())).boxed();
            ("the wildcard certificate's Secret", wait)
        });
        let sources = self.sources.first_lists();
        let autoscalers = self.autoscalers.first_lists();
        let waits = waits.into_iter().chain(wildcard).chain(sources);
        for (what, wait) in waits.chain(autoscalers) {
            match tokio::time::timeout(FIRST_LIST, wait).await {
                Ok(Ok(())) => {}
                Ok(Err(())) => return Err(NotReady::Ended(what)),
                Err(_) => return Err(NotReady::NoList(what)),
            }
        }
        Ok(())
    }

    /// The snapshot of an object of kind `K` (`namespace` "" for a cluster-scoped one), if it
    /// exists (for Pods: if it is failing).
    pub fn get<K: Watched>(&self, namespace: &str, name: &str) -> Option<K::Snapshot> {
        K::index(self).get(namespace, name)
    }

    /// The metadata of an object appenv applies, if it exists.
    pub fn meta<K: Child>(&self, namespace: &str, name: &str) -> Option<Meta> {
        self.get::<K>(namespace, name).map(|s| s.as_ref().clone())
    }

    /// The names and snapshots of an environment's objects of kind `K` in its namespace.
    pub fn of_environment<K: Child>(
        &self,
        namespace: &str,
        environment: &str,
    ) -> Vec<(String, K::Snapshot)> {
        K::index(self).scan(namespace, |name, snapshot| {
            (snapshot.as_ref().environment.as_deref() == Some(environment))
                .then(|| (name.to_owned(), snapshot.clone()))
        })
    }

    /// Whether a StorageClass of that name exists.
    pub fn storage_class_exists(&self, name: &str) -> bool {
        self.get::<StorageClass>("", name).is_some()
    }

    /// Why a Pod in `namespace` whose labels include `selector` fails, if one does (the first
    /// by name): what the Pod shows, or for a Pod still creating, the `FailedMount` Event that
    /// names it.
    pub fn pod_failure(&self, namespace: &str, selector: &Labels) -> Option<String> {
        let mut failures = self.pods.scan(namespace, |name, pod| {
            let matches = has_labels(&pod.labels, selector);
            if !matches {
                return None;
            }
            let failure = match &pod.failure {
                PodFailure::Failing(failure) => failure.to_string(),
                PodFailure::Creating => {
                    let mut mounts = self.mount_failures.scan(namespace, |_, event| {
                        (&*event.pod == name).then(|| event.message.to_string())
                    });
                    mounts.sort();
                    let message = mounts.into_iter().next()?;
                    format!("{} {name}: FailedMount: {message}", ChildKind::Pod)
                }
                PodFailure::Completed(_) => return None,
            };
            Some((name.to_owned(), failure))
        });
        failures.sort();
        failures.into_iter().next().map(|(_, failure)| failure)
    }

    /// The termination message of a succeeded Job Pod matching `selector` (see
    /// [`PodFailure::Completed`]).
    pub fn pod_result(&self, namespace: &str, selector: &Labels) -> Option<String> {
        let mut results = self.pods.scan(namespace, |_, pod| {
            let matches = has_labels(&pod.labels, selector);
            match &pod.failure {
                PodFailure::Completed(message) if matches => Some(message.to_string()),
                _ => None,
            }
        });
        results.sort();
        results.pop()
    }
}

/// Whether `labels` has every label of `selector`.
fn has_labels(labels: &Labels, selector: &Labels) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.iter().any(|(key, value)| key == k && value == v))
}

#[cfg(test)]
impl Stores {
    /// Stores that watch nothing, for tests.
    pub(crate) fn empty() -> Self {
        Self {
            namespaces: Index::new(),
            config_maps: Index::new(),
            services: Index::new(),
            ingresses: Index::new(),
            quotas: Index::new(),
            limit_ranges: Index::new(),
            network_policies: Index::new(),
            storage_classes: Index::new(),
            secrets: Index::new(),
            deployments: Index::new(),
            stateful_sets: Index::new(),
            jobs: Index::new(),
            claims: Index::new(),
            pods: Index::new(),
            mount_failures: Index::new(),
            wildcard: None,
            sources: Sources::default(),
            autoscalers: Autoscalers::default(),
        }
    }

    /// Index `object` as its watch would on a change.
    pub(crate) fn insert<K: Watched>(&self, object: K::Object) {
        IndexWriter::new(K::index(self)).apply(&watcher::Event::Apply(object));
    }
}

#[cfg(test)]
mod tests;
