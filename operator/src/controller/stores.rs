//! The fetch step's source: every kind of object appenv writes is watched once, selected by
//! the environment label, and kept in a reflector store stripped to what the reconciler reads.
//! A reconcile reads these stores and sends the API server only its writes.
//!
//! What is kept: full objects for the kinds whose status or data decide something
//! (Deployments, StatefulSets, Jobs, PersistentVolumeClaims, Secrets), with managedFields and
//! pod templates removed; of Pods, their labels and their containers' waiting reasons;
//! metadata only for the others, where the version marker (generation, resourceVersion) is all
//! the applier needs; and the names of the StorageClasses.

use crate::api::AppEnvironment;
use crate::build::{APPLIED_HASH_ANNOTATION, ENVIRONMENT_LABEL, RETAINED_LABEL};
use futures::stream::BoxStream;
use futures::{FutureExt as _, Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateWaiting, ContainerStatus, LimitRange,
    Namespace, PersistentVolumeClaim, Pod, PodSpec, PodStatus, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// A reconcile request for the environment an object belongs to.
pub type Trigger = BoxStream<'static, ObjectRef<DeserializeGuard<AppEnvironment>>>;

/// The label that names a component; prune reads it (a Redis volume may go with Redis).
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// The stores of everything an environment's reconcile reads.
#[derive(Clone)]
pub struct Stores {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    services: Store<PartialObjectMeta<Service>>,
    ingresses: Store<PartialObjectMeta<Ingress>>,
    quotas: Store<PartialObjectMeta<ResourceQuota>>,
    limit_ranges: Store<PartialObjectMeta<LimitRange>>,
    network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    storage_classes: Store<PartialObjectMeta<StorageClass>>,
    pub secrets: Store<Secret>,
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    pub jobs: Store<Job>,
    pub claims: Store<PersistentVolumeClaim>,
    pods: Store<Pod>,
    /// The wildcard certificate previews copy, if one is configured.
    pub wildcard: Option<Store<Secret>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// The store was dropped: its watch stream ended (the controller is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the watch of {0} ended")]
pub struct Ended(pub &'static str);

/// The environment an object belongs to, by its label.
pub fn environment_of(meta: &ObjectMeta) -> Option<ObjectRef<DeserializeGuard<AppEnvironment>>> {
    meta.labels
        .as_ref()?
        .get(ENVIRONMENT_LABEL)
        .map(|name| ObjectRef::new(name))
}

/// Remove what no decision reads from an object's metadata: managedFields, annotations other
/// than the applied hash, labels other than appenv's and the component, owner references.
pub fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == APPLIED_HASH_ANNOTATION);
    }
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == ENVIRONMENT_LABEL || k == COMPONENT_LABEL || k == RETAINED_LABEL);
    }
}

/// A pod template reduced to its containers' names and images (the status compares images).
fn strip_template(spec: &mut Option<PodSpec>) {
    if let Some(spec) = spec.as_mut() {
        *spec = PodSpec {
            containers: spec
                .containers
                .iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        };
    }
}

pub fn strip_deployment(d: &mut Deployment) {
    strip_meta(&mut d.metadata);
    if let Some(spec) = d.spec.as_mut() {
        spec.template.metadata = None;
        strip_template(&mut spec.template.spec);
    }
}

pub fn strip_stateful_set(s: &mut StatefulSet) {
    strip_meta(&mut s.metadata);
    if let Some(spec) = s.spec.as_mut() {
        spec.template.metadata = None;
        strip_template(&mut spec.template.spec);
        spec.volume_claim_templates = None;
    }
}

pub fn strip_job(j: &mut Job) {
    strip_meta(&mut j.metadata);
    if let Some(spec) = j.spec.as_mut() {
        spec.template.metadata = None;
        strip_template(&mut spec.template.spec);
    }
}

/// Of a Pod: its name, labels (matched against a Deployment's selector) and the waiting reason
/// of each container, which is what says why a workload fails.
pub fn strip_pod(p: &mut Pod) {
    let labels = p.metadata.labels.take();
    strip_meta(&mut p.metadata);
    p.metadata.labels = labels;
    p.spec = None;
    p.status = p.status.take().map(|status| PodStatus {
        container_statuses: status.container_statuses.map(|statuses| {
            statuses
                .into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    state: c.state.and_then(|s| s.waiting).map(|w| ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: w.reason,
                            message: None,
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                })
                .collect()
        }),
        ..PodStatus::default()
    });
}

fn strip_claim(c: &mut PersistentVolumeClaim) {
    strip_meta(&mut c.metadata);
}

fn strip_secret(s: &mut Secret) {
    strip_meta(&mut s.metadata);
}

fn strip_partial<K>(p: &mut PartialObjectMeta<K>) {
    strip_meta(&mut p.metadata);
}

fn children() -> watcher::Config {
    watcher::Config::default().labels(ENVIRONMENT_LABEL)
}

/// A watch stream, kept in a store, turned into reconcile requests of the environments of the
/// objects that `wanted` accepts.
fn triggers<K, S, B>(
    stream: S,
    writer: reflector::store::Writer<K>,
    backoff: B,
    wanted: fn(&K) -> bool,
) -> Trigger
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    B: Backoff + Send + 'static,
{
    stream
        .reflect(writer)
        .backoff(backoff)
        .touched_objects()
        .filter_map(move |object| async move {
            object
                .ok()
                .filter(wanted)
                .and_then(|o| environment_of(o.meta()))
        })
        .boxed()
}

fn every<K>(_: &K) -> bool {
    true
}

/// A Pod changes often; only a failing one is worth a reconcile of its environment.
fn failing(pod: &Pod) -> bool {
    crate::controller::observe::pod_failure(&[pod]).is_some()
}

fn full<K, B>(
    client: &Client,
    strip: fn(&mut K),
    backoff: B,
    wanted: fn(&K) -> bool,
) -> (Store<K>, Trigger)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    B: Backoff + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher::watcher(Api::<K>::all(client.clone()), children()).modify(strip);
    (reader, triggers(stream, writer, backoff, wanted))
}

fn metadata<K, B>(
    client: &Client,
    config: watcher::Config,
    backoff: B,
) -> (Store<PartialObjectMeta<K>>, Trigger)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    B: Backoff + Send + 'static,
{
    let (reader, writer) = reflector::store();
    // An `Api` of `PartialObjectMeta` sends metadata-only lists and watches.
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    let stream = watcher::watcher(api, config).modify(strip_partial::<K>);
    (reader, triggers(stream, writer, backoff, every))
}

fn find<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<ObjectMeta>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let mut key = ObjectRef::<K>::new(name);
    if let Some(ns) = namespace {
        key = key.within(ns);
    }
    store.get(&key).map(|o| o.meta().clone())
}

fn select<K>(store: &Store<K>, namespace: &str, environment: &str) -> Vec<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| {
            let m = o.meta();
            m.namespace.as_deref() == Some(namespace)
                && m.labels
                    .as_ref()
                    .and_then(|l| l.get(ENVIRONMENT_LABEL))
                    .is_some_and(|e| e == environment)
        })
        .collect()
}

fn metas<K: Resource>(objects: Vec<std::sync::Arc<K>>) -> Vec<ObjectMeta> {
    objects.iter().map(|o| o.meta().clone()).collect()
}

/// An object of a namespaced store.
pub fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .get(&ObjectRef::new(name).within(namespace))
        .map(|o| (*o).clone())
}

impl Stores {
    /// Set up the watches. Nothing is read until the returned streams are polled (the
    /// controller polls them: every change of an environment's object reconciles it).
    pub fn watch<B>(
        client: &Client,
        wildcard: Option<&(String, String)>,
        backoff: impl Fn() -> B,
    ) -> (Self, Vec<Trigger>, BoxStream<'static, ()>)
    where
        B: Backoff + Send + 'static,
    {
        let mut all = Vec::new();
        macro_rules! keep {
            ($watch:expr) => {{
                let (store, trigger) = $watch;
                all.push(trigger);
                store
            }};
        }
        let c = client;
        let stores = Self {
            namespaces: keep!(metadata(c, children(), backoff())),
            config_maps: keep!(metadata(c, children(), backoff())),
            services: keep!(metadata(c, children(), backoff())),
            ingresses: keep!(metadata(c, children(), backoff())),
            quotas: keep!(metadata(c, children(), backoff())),
            limit_ranges: keep!(metadata(c, children(), backoff())),
            network_policies: keep!(metadata(c, children(), backoff())),
            storage_classes: keep!(metadata(c, watcher::Config::default(), backoff())),
            secrets: keep!(full(c, strip_secret, backoff(), every)),
            deployments: keep!(full(c, strip_deployment, backoff(), every)),
            stateful_sets: keep!(full(c, strip_stateful_set, backoff(), every)),
            jobs: keep!(full(c, strip_job, backoff(), every)),
            claims: keep!(full(c, strip_claim, backoff(), every)),
            pods: keep!(full(c, strip_pod, backoff(), failing)),
            wildcard: None,
        };
        let mut stores = stores;
        let mut wildcard_changes = futures::stream::pending().boxed();
        if let Some((ns, name)) = wildcard {
            // A change of the certificate reaches every preview's copy: the caller reconciles
            // every environment on this stream.
            let (reader, writer) = reflector::store();
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            wildcard_changes = watcher::watcher(Api::<Secret>::namespaced(c.clone(), ns), config)
                .modify(strip_secret)
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
    pub async fn ready(&self) -> Result<(), Ended> {
        let waits: [(&'static str, _); 14] = [
            ("Namespaces", self.namespaces.wait_until_ready().boxed()),
            ("ConfigMaps", self.config_maps.wait_until_ready().boxed()),
            ("Services", self.services.wait_until_ready().boxed()),
            ("Ingresses", self.ingresses.wait_until_ready().boxed()),
            ("ResourceQuotas", self.quotas.wait_until_ready().boxed()),
            ("LimitRanges", self.limit_ranges.wait_until_ready().boxed()),
            (
                "NetworkPolicies",
                self.network_policies.wait_until_ready().boxed(),
            ),
            (
                "StorageClasses",
                self.storage_classes.wait_until_ready().boxed(),
            ),
            ("Secrets", self.secrets.wait_until_ready().boxed()),
            ("Deployments", self.deployments.wait_until_ready().boxed()),
            (
                "StatefulSets",
                self.stateful_sets.wait_until_ready().boxed(),
            ),
            ("Jobs", self.jobs.wait_until_ready().boxed()),
            (
                "PersistentVolumeClaims",
                self.claims.wait_until_ready().boxed(),
            ),
            ("Pods", self.pods.wait_until_ready().boxed()),
        ];
        for (what, wait) in waits {
            wait.await.map_err(|_| Ended(what))?;
        }
        if let Some(wildcard) = &self.wildcard {
            wildcard
                .wait_until_ready()
                .await
                .map_err(|_| Ended("the wildcard certificate"))?;
        }
        Ok(())
    }

    /// The metadata of an object appenv applies, by kind (`K::kind`), if it exists.
    pub fn meta(&self, kind: &str, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let ns = Some(namespace);
        match kind {
            "Namespace" => find(&self.namespaces, None, name),
            "ConfigMap" => find(&self.config_maps, ns, name),
            "Service" => find(&self.services, ns, name),
            "Ingress" => find(&self.ingresses, ns, name),
            "ResourceQuota" => find(&self.quotas, ns, name),
            "LimitRange" => find(&self.limit_ranges, ns, name),
            "NetworkPolicy" => find(&self.network_policies, ns, name),
            "Secret" => find(&self.secrets, ns, name),
            "Deployment" => find(&self.deployments, ns, name),
            "StatefulSet" => find(&self.stateful_sets, ns, name),
            "Job" => find(&self.jobs, ns, name),
            "PersistentVolumeClaim" => find(&self.claims, ns, name),
            _ => None,
        }
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
            "ConfigMap" => metas(select(&self.config_maps, ns, env)),
            "Service" => metas(select(&self.services, ns, env)),
            "Ingress" => metas(select(&self.ingresses, ns, env)),
            "ResourceQuota" => metas(select(&self.quotas, ns, env)),
            "LimitRange" => metas(select(&self.limit_ranges, ns, env)),
            "NetworkPolicy" => metas(select(&self.network_policies, ns, env)),
            "Secret" => metas(select(&self.secrets, ns, env)),
            "Deployment" => metas(select(&self.deployments, ns, env)),
            "StatefulSet" => metas(select(&self.stateful_sets, ns, env)),
            "Job" => metas(select(&self.jobs, ns, env)),
            "PersistentVolumeClaim" => metas(select(&self.claims, ns, env)),
            _ => Vec::new(),
        }
    }

    /// Whether a StorageClass of that name exists.
    pub fn storage_class_exists(&self, name: &str) -> bool {
        find(&self.storage_classes, None, name).is_some()
    }

    /// The Pods in a namespace whose labels include `selector`.
    pub fn pods_matching(
        &self,
        namespace: &str,
        selector: &std::collections::BTreeMap<String, String>,
    ) -> Vec<std::sync::Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && selector
                        .iter()
                        .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
            })
            .collect()
    }

    /// The environment's claims in its namespace.
    pub fn claims_of(
        &self,
        namespace: &str,
        environment: &str,
    ) -> Vec<std::sync::Arc<PersistentVolumeClaim>> {
        select(&self.claims, namespace, environment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    #[test]
    fn stripping_keeps_what_decisions_read_and_drops_the_rest() {
        let labels = BTreeMap::from([
            (ENVIRONMENT_LABEL.to_owned(), "shop".to_owned()),
            (COMPONENT_LABEL.to_owned(), "web".to_owned()),
            ("app.kubernetes.io/name".to_owned(), "shop".to_owned()),
        ]);
        let annotations = BTreeMap::from([
            (APPLIED_HASH_ANNOTATION.to_owned(), "abc".to_owned()),
            (
                "deployment.kubernetes.io/revision".to_owned(),
                "2".to_owned(),
            ),
        ]);
        let mut d = Deployment {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                namespace: Some("shop-prod".into()),
                generation: Some(2),
                resource_version: Some("42".into()),
                labels: Some(labels),
                annotations: Some(annotations),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
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
                ready_replicas: Some(2),
                ..DeploymentStatus::default()
            }),
        };
        strip_deployment(&mut d);
        let m = &d.metadata;
        assert_eq!(m.managed_fields, None);
        assert_eq!(
            (m.generation, m.resource_version.as_deref()),
            (Some(2), Some("42"))
        );
        let kept: Vec<&String> = m.labels.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(kept, [COMPONENT_LABEL, ENVIRONMENT_LABEL]);
        let kept: Vec<&String> = m.annotations.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(kept, [APPLIED_HASH_ANNOTATION]);
        let spec = d.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.as_ref().expect("pod spec");
        assert_eq!(pod.containers[0].image.as_deref(), Some("shop:2"));
        assert_eq!(pod.containers[0].env, None);
        assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(2));
        assert_eq!(environment_of(m).map(|r| r.name), Some("shop".to_owned()));
    }

    #[test]
    fn a_pod_keeps_its_labels_and_waiting_reasons_and_only_a_failing_one_triggers() {
        let waiting = |reason: &str| ContainerStatus {
            name: "web".into(),
            image: "shop:2".into(),
            ready: false,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some("back-off 5m0s restarting failed container".into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let pod = |reason: &str| Pod {
            metadata: ObjectMeta {
                name: Some("shop-1".into()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/instance".to_owned(), "shop".to_owned()),
                    (ENVIRONMENT_LABEL.to_owned(), "shop".to_owned()),
                ])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                container_statuses: Some(vec![waiting(reason)]),
                pod_ip: Some("10.0.0.9".into()),
                ..PodStatus::default()
            }),
        };
        let mut crashing = pod("CrashLoopBackOff");
        strip_pod(&mut crashing);
        assert_eq!(crashing.spec, None);
        assert_eq!(crashing.metadata.managed_fields, None);
        assert_eq!(
            crashing.metadata.labels.as_ref().map(BTreeMap::len),
            Some(2)
        );
        let status = crashing.status.as_ref().expect("status");
        assert_eq!(status.pod_ip, None);
        let c = &status.container_statuses.as_ref().expect("containers")[0];
        assert_eq!(c.name, "web");
        assert_eq!(c.image, "");
        let w = c
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(
            (w.reason.as_deref(), w.message.as_deref()),
            (Some("CrashLoopBackOff"), None)
        );
        assert!(failing(&crashing));
        let mut starting = pod("ContainerCreating");
        strip_pod(&mut starting);
        assert!(!failing(&starting));
    }
}
