//! The fetch step's source: every kind of object appenv writes is watched once, selected by
//! the environment label, and indexed in memory by namespace and name. A reconcile reads these
//! indexes and sends the API server only its writes.
//!
//! An index keeps a compact value per object, not the object: k8s-openapi structs are large
//! even when stripped (a `PodSpec` is over a kilobyte before it holds anything), and with a
//! thousand environments full objects cost the operator more memory than everything else. Each
//! value holds what a decision reads: the version marker (generation, resourceVersion) and the
//! labels prune reads, for every kind; a Deployment's replicas, selector, image and status; a
//! StatefulSet's applied hash and ready replicas; a Job's conditions; a claim's class and
//! phase; the generated password of a credentials Secret; of Pods only the failing ones, with
//! their labels and the reason; the names of the StorageClasses. Readers get k8s-openapi
//! objects rebuilt from these values, holding only those fields.

use crate::observe::pod_failure;
use appenv_api::AppEnvironment;
use appenv_core::build::{APPLIED_HASH_ANNOTATION, ENVIRONMENT_LABEL, RETAINED_LABEL};
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, LimitRange, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, Pod, PodSpec, PodTemplateSpec, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// A reconcile request for the environment an object belongs to.
pub type Trigger = BoxStream<'static, ObjectRef<DeserializeGuard<AppEnvironment>>>;

/// The label that names a component; prune reads it (a Redis volume may go with Redis).
const COMPONENT_LABEL: &str = appenv_api::names::label::COMPONENT;

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
pub fn environment_of(meta: &ObjectMeta) -> Option<ObjectRef<DeserializeGuard<AppEnvironment>>> {
    meta.labels
        .as_ref()?
        .get(ENVIRONMENT_LABEL)
        .map(|name| ObjectRef::new(name))
}

/// What every index keeps of an object's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    environment: Option<Box<str>>,
    generation: Option<i64>,
    version: Box<str>,
    component: Option<Box<str>>,
    retained: bool,
    deleting: Option<Time>,
}

impl Meta {
    fn of(meta: &ObjectMeta) -> Self {
        let label = |key: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .map(|v| v.as_str().into())
        };
        Self {
            environment: label(ENVIRONMENT_LABEL),
            generation: meta.generation,
            version: meta.resource_version.as_deref().unwrap_or_default().into(),
            component: label(COMPONENT_LABEL),
            retained: label(RETAINED_LABEL).is_some(),
            deleting: meta.deletion_timestamp.clone(),
        }
    }

    /// The metadata rebuilt: name, namespace, version marker, appenv's labels.
    fn object_meta(&self, namespace: &str, name: &str) -> ObjectMeta {
        let mut labels = BTreeMap::new();
        let mut label = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                labels.insert(key.to_owned(), value.to_owned());
            }
        };
        label(ENVIRONMENT_LABEL, self.environment.as_deref());
        label(COMPONENT_LABEL, self.component.as_deref());
        label(RETAINED_LABEL, self.retained.then_some("true"));
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
            generation: self.generation,
            resource_version: Some(self.version.to_string()),
            labels: Some(labels),
            deletion_timestamp: self.deleting.clone(),
            ..ObjectMeta::default()
        }
    }
}

/// A Deployment's replicas, selector, first container and status (its conditions only when
/// they say the rollout is stuck).
#[derive(Clone)]
struct DeploymentView {
    meta: Meta,
    replicas: Option<i32>,
    selector: Vec<(Box<str>, Box<str>)>,
    container: Option<(Box<str>, Option<Box<str>>)>,
    status: Option<DeploymentStatus>,
}

#[derive(Clone)]
struct StatefulSetView {
    meta: Meta,
    applied_hash: Option<Box<str>>,
    ready_replicas: Option<i32>,
}

#[derive(Clone)]
struct JobView {
    meta: Meta,
    status: Option<JobStatus>,
}

#[derive(Clone)]
struct ClaimView {
    meta: Meta,
    created: Option<Time>,
    class: Option<Box<str>>,
    phase: Option<Box<str>>,
}

/// No Debug: it holds the generated password.
#[derive(Clone)]
struct SecretView {
    meta: Meta,
    password: Option<String>,
}

/// A failing Pod: its labels (matched against a Deployment's selector) and why it fails.
#[derive(Clone)]
struct FailingPod {
    labels: Vec<(Box<str>, Box<str>)>,
    failure: Box<str>,
}

fn pairs(map: Option<&BTreeMap<String, String>>) -> Vec<(Box<str>, Box<str>)> {
    map.into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect()
}

fn deployment_view(d: &Deployment) -> Option<DeploymentView> {
    let spec = d.spec.as_ref();
    let container = spec
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .map(|c| (c.name.as_str().into(), c.image.as_deref().map(Into::into)));
    let status = d.status.clone().map(|mut status| {
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| {
                (c.type_ == "Progressing" && c.status == "False")
                    || (c.type_ == "ReplicaFailure" && c.status == "True")
            });
            for c in conditions.iter_mut() {
                c.last_transition_time = None;
                c.last_update_time = None;
            }
        }
        status
    });
    Some(DeploymentView {
        meta: Meta::of(&d.metadata),
        replicas: spec.and_then(|s| s.replicas),
        selector: pairs(spec.and_then(|s| s.selector.match_labels.as_ref())),
        container,
        status,
    })
}

fn stateful_set_view(s: &StatefulSet) -> Option<StatefulSetView> {
    Some(StatefulSetView {
        meta: Meta::of(&s.metadata),
        applied_hash: s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
            .map(|h| h.as_str().into()),
        ready_replicas: s.status.as_ref().and_then(|s| s.ready_replicas),
    })
}

fn job_view(j: &Job) -> Option<JobView> {
    Some(JobView {
        meta: Meta::of(&j.metadata),
        status: j.status.as_ref().map(|s| JobStatus {
            conditions: s.conditions.clone(),
            ..JobStatus::default()
        }),
    })
}

fn claim_view(c: &PersistentVolumeClaim) -> Option<ClaimView> {
    Some(ClaimView {
        meta: Meta::of(&c.metadata),
        created: c.metadata.creation_timestamp.clone(),
        class: c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .map(Into::into),
        phase: c
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .map(Into::into),
    })
}

fn secret_view(s: &Secret) -> Option<SecretView> {
    Some(SecretView {
        meta: Meta::of(&s.metadata),
        password: s
            .data
            .as_ref()
            .and_then(|d| d.get("password"))
            .and_then(|p| String::from_utf8(p.0.clone()).ok()),
    })
}

/// Only failing Pods are kept: a healthy one leaves (or never enters) the index.
fn failing_pod(p: &Pod) -> Option<FailingPod> {
    pod_failure(std::slice::from_ref(p)).map(|failure| FailingPod {
        labels: pairs(p.metadata.labels.as_ref()),
        failure: failure.into(),
    })
}

fn meta_view<K>(p: &PartialObjectMeta<K>) -> Option<Meta> {
    Some(Meta::of(&p.metadata))
}

/// Objects of one kind: namespace -> name -> compact value. Cluster-scoped objects are under
/// the namespace "".
struct Index<V> {
    objects: Arc<RwLock<Objects<V>>>,
    ready: Arc<tokio::sync::watch::Sender<bool>>,
}

type Objects<V> = HashMap<Box<str>, HashMap<Box<str>, V>>;

impl<V> Clone for Index<V> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<V: Clone> Index<V> {
    fn new() -> Self {
        Self {
            objects: Arc::default(),
            ready: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// The objects, to read. A writer that panicked left them whole (each write is one map
    /// operation or one swap), so a poisoned lock is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, Objects<V>> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Objects<V>> {
        self.objects.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, namespace: &str, name: &str) -> Option<V> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// `f` of each object in `namespace` (name and value), where it gives something.
    fn scan<T>(&self, namespace: &str, f: impl Fn(&str, &V) -> Option<T>) -> Vec<T> {
        self.read()
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| f(name, value))
            .collect()
    }

    async fn wait_ready(&self) -> Result<(), ()> {
        let mut ready = self.ready.subscribe();
        ready.wait_for(|r| *r).await.map(|_| ()).map_err(|_| ())
    }

    fn insert(objects: &mut Objects<V>, meta: &ObjectMeta, value: Option<V>) {
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        match value {
            Some(value) => {
                objects
                    .entry(ns.into())
                    .or_default()
                    .insert(name.into(), value);
            }
            None => {
                if let Some(names) = objects.get_mut(ns) {
                    names.remove(name);
                    if names.is_empty() {
                        objects.remove(ns);
                    }
                }
            }
        }
    }
}

/// Keeps an [`Index`] up to date from a watch's events (a relist replaces it whole).
struct IndexWriter<K, V> {
    index: Index<V>,
    view: fn(&K) -> Option<V>,
    relist: Option<Objects<V>>,
}

impl<K: Resource, V: Clone> IndexWriter<K, V> {
    fn new(index: &Index<V>, view: fn(&K) -> Option<V>) -> Self {
        Self {
            index: index.clone(),
            view,
            relist: None,
        }
    }

    fn apply(&mut self, event: &watcher::Event<K>) {
        use watcher::Event;
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(relist) = self.relist.as_mut() {
                    Index::insert(relist, object.meta(), (self.view)(object));
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    *self.index.write() = relist;
                }
                self.index.ready.send_replace(true);
            }
            Event::Apply(object) => {
                Index::insert(&mut self.index.write(), object.meta(), (self.view)(object));
            }
            Event::Delete(object) => Index::insert(&mut self.index.write(), object.meta(), None),
        }
    }
}

/// The stores of everything an environment's reconcile reads.
#[derive(Clone)]
pub struct Stores {
    namespaces: Index<Meta>,
    config_maps: Index<Meta>,
    services: Index<Meta>,
    ingresses: Index<Meta>,
    quotas: Index<Meta>,
    limit_ranges: Index<Meta>,
    network_policies: Index<Meta>,
    storage_classes: Index<Meta>,
    secrets: Index<SecretView>,
    deployments: Index<DeploymentView>,
    stateful_sets: Index<StatefulSetView>,
    jobs: Index<JobView>,
    claims: Index<ClaimView>,
    pods: Index<FailingPod>,
    /// The wildcard certificate previews copy, if one is configured.
    pub wildcard: Option<Store<Secret>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

fn children() -> watcher::Config {
    watcher::Config::default().labels(ENVIRONMENT_LABEL)
}

/// A watch of `api` kept in an index of `view`s and turned into reconcile requests of the
/// environments of the objects `wanted` accepts.
fn indexed<K, V, B>(
    api: Api<K>,
    config: watcher::Config,
    view: fn(&K) -> Option<V>,
    wanted: fn(&K) -> bool,
    backoff: B,
) -> (Index<V>, Trigger)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    B: Backoff + Send + 'static,
{
    let index = Index::new();
    let mut writer = IndexWriter::new(&index, view);
    let trigger = watcher::watcher(api, config)
        .inspect_ok(move |event| writer.apply(event))
        .backoff(backoff)
        .touched_objects()
        .filter_map(move |object| async move {
            match object {
                Ok(object) => Some(object)
                    .filter(wanted)
                    .and_then(|o| environment_of(o.meta())),
                Err(err) => {
                    tracing::debug!(kind = %K::kind(&()), error = %err, "watch");
                    None
                }
            }
        })
        .boxed();
    (index, trigger)
}

fn every<K>(_: &K) -> bool {
    true
}

/// A Pod changes often; only a failing one is worth a reconcile of its environment.
fn failing(pod: &Pod) -> bool {
    pod_failure(std::slice::from_ref(pod)).is_some()
}

/// An `Api` of `PartialObjectMeta` sends metadata-only lists and watches.
fn metadata<K, B>(client: &Client, config: watcher::Config, backoff: B) -> (Index<Meta>, Trigger)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    B: Backoff + Send + 'static,
{
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    indexed(api, config, meta_view::<K>, every, backoff)
}

fn full<K, V, B>(
    client: &Client,
    view: fn(&K) -> Option<V>,
    wanted: fn(&K) -> bool,
    backoff: B,
) -> (Index<V>, Trigger)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    B: Backoff + Send + 'static,
{
    indexed(
        Api::<K>::all(client.clone()),
        children(),
        view,
        wanted,
        backoff,
    )
}

/// The metadata of the objects of `index` in `ns` that belong to environment `env`.
fn metas<V: Clone + AsRef<Meta>>(index: &Index<V>, ns: &str, env: &str) -> Vec<ObjectMeta> {
    index.scan(ns, |name, value| {
        let m = value.as_ref();
        (m.environment.as_deref() == Some(env)).then(|| m.object_meta(ns, name))
    })
}

macro_rules! as_meta {
    ($($view:ty),*) => {$(
        impl AsRef<Meta> for $view {
            fn as_ref(&self) -> &Meta {
                &self.meta
            }
        }
    )*};
}
as_meta!(
    DeploymentView,
    StatefulSetView,
    JobView,
    ClaimView,
    SecretView
);

impl AsRef<Meta> for Meta {
    fn as_ref(&self) -> &Meta {
        self
    }
}

impl Stores {
    /// Set up the watches. Nothing is read until the returned streams are polled (the
    /// controller polls them: every change of an environment's object reconciles it).
    pub fn watch<B>(
        client: &Client,
        wildcard: Option<&appenv_core::settings::SecretRef>,
        backoff: impl Fn() -> B,
    ) -> (Self, Vec<Trigger>, BoxStream<'static, ()>)
    where
        B: Backoff + Send + 'static,
    {
        let mut all = Vec::new();
        macro_rules! keep {
            ($watch:expr) => {{
                let (index, trigger) = $watch;
                all.push(trigger);
                index
            }};
        }
        let c = client;
        let mut stores = Self {
            namespaces: keep!(metadata::<Namespace, _>(c, children(), backoff())),
            config_maps: keep!(metadata::<ConfigMap, _>(c, children(), backoff())),
            services: keep!(metadata::<Service, _>(c, children(), backoff())),
            ingresses: keep!(metadata::<Ingress, _>(c, children(), backoff())),
            quotas: keep!(metadata::<ResourceQuota, _>(c, children(), backoff())),
            limit_ranges: keep!(metadata::<LimitRange, _>(c, children(), backoff())),
            network_policies: keep!(metadata::<NetworkPolicy, _>(c, children(), backoff())),
            storage_classes: keep!(metadata::<StorageClass, _>(
                c,
                watcher::Config::default(),
                backoff()
            )),
            secrets: keep!(full(c, secret_view, every, backoff())),
            deployments: keep!(full(c, deployment_view, every, backoff())),
            stateful_sets: keep!(full(c, stateful_set_view, every, backoff())),
            jobs: keep!(full(c, job_view, every, backoff())),
            claims: keep!(full(c, claim_view, every, backoff())),
            pods: keep!(full(c, failing_pod, failing, backoff())),
            wildcard: None,
        };
        let mut wildcard_changes = futures::stream::pending().boxed();
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
        (stores, all, wildcard_changes)
    }

    /// Wait until every store holds its first full list.
    pub async fn ready(&self) -> Result<(), NotReady> {
        use futures::FutureExt as _;
        let waits = [
            ("Namespaces", self.namespaces.wait_ready().boxed()),
            ("ConfigMaps", self.config_maps.wait_ready().boxed()),
            ("Services", self.services.wait_ready().boxed()),
            ("Ingresses", self.ingresses.wait_ready().boxed()),
            ("ResourceQuotas", self.quotas.wait_ready().boxed()),
            ("LimitRanges", self.limit_ranges.wait_ready().boxed()),
            (
                "NetworkPolicies",
                self.network_policies.wait_ready().boxed(),
            ),
            ("StorageClasses", self.storage_classes.wait_ready().boxed()),
            ("Secrets", self.secrets.wait_ready().boxed()),
            ("Deployments", self.deployments.wait_ready().boxed()),
            ("StatefulSets", self.stateful_sets.wait_ready().boxed()),
            ("Jobs", self.jobs.wait_ready().boxed()),
            ("PersistentVolumeClaims", self.claims.wait_ready().boxed()),
            ("Pods", self.pods.wait_ready().boxed()),
        ];
        let wildcard = self.wildcard.as_ref().map(|w| {
            let wait = w.wait_until_ready().map(|r| r.map_err(|_| ())).boxed();
            ("the wildcard certificate's Secret", wait)
        });
        for (what, wait) in waits.into_iter().chain(wildcard) {
            match tokio::time::timeout(FIRST_LIST, wait).await {
                Ok(Ok(())) => {}
                Ok(Err(())) => return Err(NotReady::Ended(what)),
                Err(_) => return Err(NotReady::NoList(what)),
            }
        }
        Ok(())
    }

    /// The metadata of an object appenv applies, by kind (`K::kind`), if it exists: its name,
    /// version marker and appenv's labels.
    pub fn meta(&self, kind: &str, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let (ns, n) = (namespace, name);
        let meta = match kind {
            "Namespace" => self.namespaces.get("", n),
            "ConfigMap" => self.config_maps.get(ns, n),
            "Service" => self.services.get(ns, n),
            "Ingress" => self.ingresses.get(ns, n),
            "ResourceQuota" => self.quotas.get(ns, n),
            "LimitRange" => self.limit_ranges.get(ns, n),
            "NetworkPolicy" => self.network_policies.get(ns, n),
            "Secret" => self.secrets.get(ns, n).map(|v| v.meta),
            "Deployment" => self.deployments.get(ns, n).map(|v| v.meta),
            "StatefulSet" => self.stateful_sets.get(ns, n).map(|v| v.meta),
            "Job" => self.jobs.get(ns, n).map(|v| v.meta),
            "PersistentVolumeClaim" => self.claims.get(ns, n).map(|v| v.meta),
            _ => None,
        }?;
        Some(meta.object_meta(namespace, name))
    }

    /// The metadata of an environment's objects of one kind in its namespace.
    pub fn of_environment(
        &self,
        kind: &str,
        namespace: &str,
        environment: &str,
    ) -> Vec<ObjectMeta> {
        let (ns, env) = (namespace, environment);
        match kind {
            "ConfigMap" => metas(&self.config_maps, ns, env),
            "Service" => metas(&self.services, ns, env),
            "Ingress" => metas(&self.ingresses, ns, env),
            "ResourceQuota" => metas(&self.quotas, ns, env),
            "LimitRange" => metas(&self.limit_ranges, ns, env),
            "NetworkPolicy" => metas(&self.network_policies, ns, env),
            "Secret" => metas(&self.secrets, ns, env),
            "Deployment" => metas(&self.deployments, ns, env),
            "StatefulSet" => metas(&self.stateful_sets, ns, env),
            "Job" => metas(&self.jobs, ns, env),
            "PersistentVolumeClaim" => metas(&self.claims, ns, env),
            _ => Vec::new(),
        }
    }

    /// Whether a StorageClass of that name exists.
    pub fn storage_class_exists(&self, name: &str) -> bool {
        self.storage_classes.get("", name).is_some()
    }

    /// The `password` of a Secret, if it has one.
    pub fn password(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets.get(namespace, name)?.password
    }

    /// A Deployment rebuilt with what the status reads: replicas, selector, first container's
    /// name and image, status (conditions only when stuck).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        let view = self.deployments.get(namespace, name)?;
        let selector = view
            .selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let containers = view
            .container
            .iter()
            .map(|(name, image)| Container {
                name: name.to_string(),
                image: image.as_deref().map(str::to_owned),
                ..Container::default()
            })
            .collect();
        Some(Deployment {
            metadata: view.meta.object_meta(namespace, name),
            spec: Some(DeploymentSpec {
                replicas: view.replicas,
                selector: LabelSelector {
                    match_labels: Some(selector),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers,
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: view.status,
        })
    }

    /// A StatefulSet rebuilt with its applied hash and ready replicas.
    pub fn stateful_set(&self, namespace: &str, name: &str) -> Option<StatefulSet> {
        let view = self.stateful_sets.get(namespace, name)?;
        let mut metadata = view.meta.object_meta(namespace, name);
        metadata.annotations = view
            .applied_hash
            .map(|hash| BTreeMap::from([(APPLIED_HASH_ANNOTATION.to_owned(), hash.to_string())]));
        Some(StatefulSet {
            metadata,
            status: Some(StatefulSetStatus {
                ready_replicas: view.ready_replicas,
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        })
    }

    /// A Job rebuilt with its conditions.
    pub fn job(&self, namespace: &str, name: &str) -> Option<Job> {
        let view = self.jobs.get(namespace, name)?;
        Some(Job {
            metadata: view.meta.object_meta(namespace, name),
            status: view.status,
            ..Job::default()
        })
    }

    /// The environment's claims in its namespace, rebuilt with creation time, class and phase.
    pub fn claims_of(&self, namespace: &str, environment: &str) -> Vec<PersistentVolumeClaim> {
        self.claims.scan(namespace, |name, view| {
            (view.meta.environment.as_deref() == Some(environment)).then(|| {
                let mut metadata = view.meta.object_meta(namespace, name);
                metadata.creation_timestamp = view.created.clone();
                PersistentVolumeClaim {
                    metadata,
                    spec: Some(PersistentVolumeClaimSpec {
                        storage_class_name: view.class.as_deref().map(str::to_owned),
                        ..PersistentVolumeClaimSpec::default()
                    }),
                    status: Some(PersistentVolumeClaimStatus {
                        phase: view.phase.as_deref().map(str::to_owned),
                        ..PersistentVolumeClaimStatus::default()
                    }),
                }
            })
        })
    }

    /// Why a Pod in `namespace` whose labels include `selector` fails, if one does.
    pub fn pod_failure(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Option<String> {
        let mut failures = self.pods.scan(namespace, |name, pod| {
            let matches = selector.iter().all(|(k, v)| {
                pod.labels
                    .iter()
                    .any(|(key, value)| **key == **k && **value == **v)
            });
            matches.then(|| (name.to_owned(), pod.failure.to_string()))
        });
        failures.sort();
        failures.into_iter().next().map(|(_, failure)| failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, EnvVar, PodStatus,
    };
    use watcher::Event;

    fn meta(name: &str, version: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop-prod".into()),
            resource_version: Some(version.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn config_map(name: &str, version: &str) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta::<ConfigMap> {
            metadata: meta(name, version, &[(ENVIRONMENT_LABEL, "shop")]),
            ..PartialObjectMeta::default()
        }
    }

    #[test]
    fn an_index_follows_events_and_a_relist_replaces_it_whole() {
        let index = Index::new();
        let mut writer = IndexWriter::new(&index, meta_view::<ConfigMap>);
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(config_map("a", "1")));
        writer.apply(&Event::InitApply(config_map("b", "2")));
        assert!(index.get("shop-prod", "a").is_none(), "not before InitDone");
        assert!(!*index.ready.borrow());
        writer.apply(&Event::InitDone);
        assert!(*index.ready.borrow());
        assert_eq!(
            index.get("shop-prod", "a").map(|m| m.version),
            Some("1".into())
        );
        writer.apply(&Event::Apply(config_map("a", "3")));
        writer.apply(&Event::Delete(config_map("b", "2")));
        assert_eq!(
            index.get("shop-prod", "a").map(|m| m.version),
            Some("3".into())
        );
        assert!(index.get("shop-prod", "b").is_none());
        // A relist that no longer has "a" (deleted while the watch was down) forgets it.
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(config_map("c", "9")));
        writer.apply(&Event::InitDone);
        let names = index.scan("shop-prod", |name, _| Some(name.to_owned()));
        assert_eq!(names, ["c"]);
        assert!(
            index
                .scan("elsewhere", |name, _| Some(name.to_owned()))
                .is_empty()
        );
    }

    #[test]
    fn a_deployment_is_rebuilt_with_what_the_status_reads() {
        let d = Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..meta(
                    "shop",
                    "42",
                    &[
                        (ENVIRONMENT_LABEL, "shop"),
                        (COMPONENT_LABEL, "web"),
                        ("x", "y"),
                    ],
                )
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".to_owned(), "shop".to_owned())])),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta::default()),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "web".into(),
                            image: Some("shop:2".into()),
                            env: Some(vec![EnvVar::default(); 20]),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                ready_replicas: Some(1),
                conditions: Some(vec![
                    DeploymentCondition {
                        type_: "Available".into(),
                        status: "True".into(),
                        ..DeploymentCondition::default()
                    },
                    DeploymentCondition {
                        type_: "Progressing".into(),
                        status: "False".into(),
                        message: Some("deadline exceeded".into()),
                        ..DeploymentCondition::default()
                    },
                ]),
                ..DeploymentStatus::default()
            }),
        };
        let stores = stores_for_test();
        let mut writer = IndexWriter::new(&stores.deployments, deployment_view);
        writer.apply(&Event::Apply(d));
        let rebuilt = stores.deployment("shop-prod", "shop").expect("indexed");
        let m = &rebuilt.metadata;
        assert_eq!(
            (m.generation, m.resource_version.as_deref()),
            (Some(2), Some("42"))
        );
        let labels: Vec<&String> = m.labels.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(labels, [COMPONENT_LABEL, ENVIRONMENT_LABEL]);
        let spec = rebuilt.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("shop")
        );
        let container = &spec.template.spec.as_ref().expect("pod spec").containers[0];
        assert_eq!(
            (container.name.as_str(), container.image.as_deref()),
            ("web", Some("shop:2"))
        );
        assert_eq!(container.env, None);
        let status = rebuilt.status.expect("status");
        assert_eq!(status.ready_replicas, Some(1));
        let kept: Vec<&str> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            kept,
            ["Progressing"],
            "only conditions that say the rollout is stuck"
        );
        assert_eq!(
            stores
                .meta("Deployment", "shop-prod", "shop")
                .and_then(|m| m.generation),
            Some(2)
        );
        assert_eq!(
            stores
                .of_environment("Deployment", "shop-prod", "shop")
                .len(),
            1
        );
        assert!(
            stores
                .of_environment("Deployment", "shop-prod", "other")
                .is_empty()
        );
    }

    fn stores_for_test() -> Stores {
        Stores {
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
            wildcard: None,
        }
    }

    #[test]
    fn only_failing_pods_are_kept_and_matched_by_selector() {
        let pod = |name: &str, reason: &str| Pod {
            metadata: meta(name, "1", &[(ENVIRONMENT_LABEL, "shop"), ("app", "shop")]),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "web".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: None,
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let stores = stores_for_test();
        let mut writer = IndexWriter::new(&stores.pods, failing_pod);
        writer.apply(&Event::Apply(pod("shop-1", "ContainerCreating")));
        assert!(stores.pods.scan("shop-prod", |_, _| Some(())).is_empty());
        assert!(!failing(&pod("shop-1", "ContainerCreating")));
        writer.apply(&Event::Apply(pod("shop-1", "CrashLoopBackOff")));
        assert!(failing(&pod("shop-1", "CrashLoopBackOff")));
        let selector = BTreeMap::from([("app".to_owned(), "shop".to_owned())]);
        let failure = stores.pod_failure("shop-prod", &selector).expect("failing");
        assert!(
            failure.contains("shop-1") && failure.contains("CrashLoopBackOff"),
            "{failure}"
        );
        let other = BTreeMap::from([("app".to_owned(), "other".to_owned())]);
        assert_eq!(stores.pod_failure("shop-prod", &other), None);
        // Recovered: it leaves the index.
        writer.apply(&Event::Apply(pod("shop-1", "ContainerCreating")));
        assert_eq!(stores.pod_failure("shop-prod", &selector), None);
    }
}
