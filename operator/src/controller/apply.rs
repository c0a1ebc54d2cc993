//! The apply step: server-side apply of the built children with one field manager, in an
//! order that respects the gates, then pruning of what the spec no longer has.

use crate::build::{
    APPLIED_HASH_ANNOTATION, Children, ENVIRONMENT_LABEL, FIELD_MANAGER, Guardrails, Postgres,
    RETAINED_LABEL, Redis, Web, hash_json,
};
use crate::controller::error::Error;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::{Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Mutex;

/// What this reconcile may apply beyond the always-safe parts.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The database is ready: the migration Job may run.
    pub migration: bool,
    /// Web and workers may be applied (an image for them is decided).
    pub workloads: bool,
    /// The `APPLIED_HASH_ANNOTATION` of the existing PostgreSQL StatefulSet, if any.
    pub statefulset_hash: Option<String>,
}

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// What appenv last applied, per object (`Kind/namespace/name`): the hash of what it applied
/// and the object's version marker right after (its generation where it has one, else its
/// resourceVersion). An object whose desired content and live marker both match is not applied
/// again: a steady state writes nothing, while a deleted or edited object is applied again.
#[derive(Debug, Default)]
pub struct AppliedCache(Mutex<HashMap<String, (String, String)>>);

impl AppliedCache {
    fn unchanged(&self, key: &str, hash: &str, live: Option<&String>) -> bool {
        let Some(live) = live else { return false };
        self.0
            .lock()
            .ok()
            .and_then(|cache| cache.get(key).cloned())
            .is_some_and(|(h, marker)| h == hash && marker == *live)
    }

    fn remember(&self, key: String, hash: String, marker: String) {
        if let Ok(mut cache) = self.0.lock() {
            cache.insert(key, (hash, marker));
        }
    }

    /// Forget a namespace's objects (its environment is gone).
    pub fn forget_namespace(&self, ns: &str) {
        let infix = format!("/{ns}/");
        let namespace = format!("Namespace//{ns}");
        if let Ok(mut cache) = self.0.lock() {
            cache.retain(|key, _| !key.contains(&infix) && *key != namespace);
        }
    }
}

/// An object's version marker: changes when somebody else changes what appenv applies.
fn marker(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(generation) if generation > 0 => format!("g{generation}"),
        _ => format!("r{}", meta.resource_version.as_deref().unwrap_or_default()),
    }
}

/// Applies the children of one environment, skipping what is already as applied.
pub struct Applier<'a> {
    client: &'a Client,
    cache: &'a AppliedCache,
    /// `Kind/namespace/name` -> version marker of what exists now.
    live: HashMap<String, String>,
}

impl<'a> Applier<'a> {
    /// Read the version markers (metadata only) of the environment's objects of `kinds`.
    pub async fn observe(
        client: &'a Client,
        cache: &'a AppliedCache,
        namespace: &str,
        environment: &str,
        kinds: &BTreeSet<&'static str>,
    ) -> Result<Self, Error> {
        let mut applier = Self {
            client,
            cache,
            live: HashMap::new(),
        };
        let selector = format!("{ENVIRONMENT_LABEL}={environment}");
        let ns = Api::<Namespace>::all(client.clone())
            .get_metadata_opt(namespace)
            .await
            .map_err(|source| Error::Observe {
                what: format!("namespace {namespace}"),
                source,
            })?;
        if let Some(ns) = ns {
            applier
                .live
                .insert(format!("Namespace//{namespace}"), marker(&ns.metadata));
        }
        for kind in kinds {
            match *kind {
                "ConfigMap" => applier.list::<ConfigMap>(namespace, &selector).await?,
                "Service" => applier.list::<Service>(namespace, &selector).await?,
                "Secret" => applier.list::<Secret>(namespace, &selector).await?,
                "Deployment" => applier.list::<Deployment>(namespace, &selector).await?,
                "Job" => applier.list::<Job>(namespace, &selector).await?,
                "Ingress" => applier.list::<Ingress>(namespace, &selector).await?,
                "PersistentVolumeClaim" => {
                    applier
                        .list::<PersistentVolumeClaim>(namespace, &selector)
                        .await?;
                }
                "ResourceQuota" => applier.list::<ResourceQuota>(namespace, &selector).await?,
                "LimitRange" => applier.list::<LimitRange>(namespace, &selector).await?,
                "NetworkPolicy" => applier.list::<NetworkPolicy>(namespace, &selector).await?,
                // Always applied (the StatefulSet has its own hash, see apply_children).
                _ => {}
            }
        }
        Ok(applier)
    }

    async fn list<K>(&mut self, ns: &str, selector: &str) -> Result<(), Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let kind = short_kind::<K>();
        let list = Api::<K>::namespaced(self.client.clone(), ns)
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .map_err(|source| Error::Observe {
                what: format!("{kind} in {ns}"),
                source,
            })?;
        for item in list.items {
            let name = item.metadata.name.clone().unwrap_or_default();
            self.live
                .insert(format!("{kind}/{ns}/{name}"), marker(&item.metadata));
        }
        Ok(())
    }

    async fn apply<K>(&self, object: &K) -> Result<(), Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let name = object.name_any();
        let ns = object.namespace().unwrap_or_default();
        let kind = short_kind::<K>();
        let key = format!("{kind}/{ns}/{name}");
        let hash = hash_json(object);
        if self.cache.unchanged(&key, &hash, self.live.get(&key)) {
            return Ok(());
        }
        let applied = Api::<K>::namespaced(self.client.clone(), &ns)
            .patch(&name, &params(), &Patch::Apply(object))
            .await
            .map_err(|source| Error::Apply { kind, name, source })?;
        self.cache.remember(key, hash, marker(applied.meta()));
        Ok(())
    }

    async fn apply_namespace(&self, namespace: &Namespace) -> Result<(), Error> {
        let name = namespace.name_any();
        let key = format!("Namespace//{name}");
        let hash = hash_json(namespace);
        if self.cache.unchanged(&key, &hash, self.live.get(&key)) {
            return Ok(());
        }
        let applied = Api::<Namespace>::all(self.client.clone())
            .patch(&name, &params(), &Patch::Apply(namespace))
            .await
            .map_err(|source| Error::Apply {
                kind: "Namespace",
                name,
                source,
            })?;
        self.cache.remember(key, hash, marker(&applied.metadata));
        Ok(())
    }
}

/// The kinds an environment's children have (whose live versions the applier reads).
pub fn kinds(children: &Children, wildcard_copy: bool) -> BTreeSet<&'static str> {
    let mut kinds = BTreeSet::from(["ConfigMap", "Service", "Deployment"]);
    if children.guardrails.is_some() {
        kinds.extend(["ResourceQuota", "LimitRange", "NetworkPolicy"]);
    }
    if children.postgres.is_some() || wildcard_copy {
        kinds.insert("Secret");
    }
    if children.redis.as_ref().is_some_and(|r| r.volume.is_some()) || children.data_volume.is_some()
    {
        kinds.insert("PersistentVolumeClaim");
    }
    if children.migration.is_some() {
        kinds.insert("Job");
    }
    if children.web.ingress.is_some() {
        kinds.insert("Ingress");
    }
    kinds
}

fn short_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    // Kinds of k8s-openapi types are static strings.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

/// Apply every child that `allowed` permits, in dependency order. Returns the names applied
/// per kind, for pruning.
pub async fn apply_children(
    applier: &Applier<'_>,
    children: &Children,
    allowed: &Allowed,
) -> Result<BTreeMap<&'static str, BTreeSet<String>>, Error> {
    // Destructured without `..`: a new kind of child does not compile until it is applied.
    let Children {
        namespace,
        guardrails,
        config,
        postgres,
        redis,
        data_volume,
        migration,
        web,
        workers,
    } = children;
    let mut applied: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut note = |kind: &'static str, name: String| {
        applied.entry(kind).or_default().insert(name);
    };

    applier.apply_namespace(namespace).await?;
    if let Some(Guardrails {
        quota,
        limits,
        network_policy,
    }) = guardrails
    {
        applier.apply(quota).await?;
        applier.apply(limits).await?;
        applier.apply(network_policy).await?;
        note("ResourceQuota", quota.name_any());
        note("LimitRange", limits.name_any());
        note("NetworkPolicy", network_policy.name_any());
    }
    applier.apply(config).await?;
    note("ConfigMap", config.name_any());
    if let Some(Postgres {
        credentials,
        init,
        service,
        statefulset,
    }) = postgres
    {
        applier.apply(credentials).await?;
        applier.apply(init).await?;
        applier.apply(service).await?;
        // On 1.20 a StatefulSet apply always writes (its atomic volumeClaimTemplates come back
        // defaulted), so it is applied only when what we apply changed. The price: a manual
        // edit of the StatefulSet is not reverted until the spec changes.
        let mut statefulset = statefulset.clone();
        let hash = hash_json(&statefulset);
        statefulset
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());
        if allowed.statefulset_hash.as_deref() != Some(hash.as_str()) {
            applier.apply(&statefulset).await?;
        }
        note("Secret", credentials.name_any());
        note("ConfigMap", init.name_any());
        note("Service", service.name_any());
        note("StatefulSet", statefulset.name_any());
    }
    if let Some(Redis {
        volume,
        deployment,
        service,
    }) = redis
    {
        if let Some(volume) = volume {
            applier.apply(volume).await?;
            note("PersistentVolumeClaim", volume.name_any());
        }
        applier.apply(service).await?;
        applier.apply(deployment).await?;
        note("Service", service.name_any());
        note("Deployment", deployment.name_any());
    }
    if let Some(volume) = data_volume {
        applier.apply(volume).await?;
        note("PersistentVolumeClaim", volume.name_any());
    }
    if let Some(job) = migration {
        if allowed.migration {
            applier.apply(job).await?;
        }
        // The current image's Job is kept even while it waits for the database.
        note("Job", job.name_any());
    }
    let Web {
        deployment,
        service,
        ingress,
    } = web;
    applier.apply(service).await?;
    note("Service", service.name_any());
    if allowed.workloads {
        applier.apply(deployment).await?;
        note("Deployment", deployment.name_any());
        for worker in workers {
            applier.apply(worker).await?;
            note("Deployment", worker.name_any());
        }
    } else {
        // Held until the first migration succeeds: keep what exists, create nothing new.
        note("Deployment", deployment.name_any());
        for worker in workers {
            note("Deployment", worker.name_any());
        }
    }
    if let Some(ingress) = ingress {
        applier.apply(ingress).await?;
        note("Ingress", ingress.name_any());
    }
    Ok(applied)
}

async fn prune_kind<K>(
    client: &Client,
    ns: &str,
    environment: &str,
    keep: Option<&BTreeSet<String>>,
    skip: impl Fn(&K) -> bool,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let selector = format!("{ENVIRONMENT_LABEL}={environment}");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Observe {
            what: format!("{} in {ns}", K::kind(&())),
            source,
        })?;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for object in list.items {
        let name = object.name_any();
        if keep.is_some_and(|k| k.contains(&name))
            || skip(&object)
            || object.meta().deletion_timestamp.is_some()
        {
            continue;
        }
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(kind = %K::kind(&()), %name, "pruned"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    kind: short_kind::<K>(),
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}

fn never<K>(_: &K) -> bool {
    false
}

/// Delete this environment's objects that were not applied: components that were disabled or
/// removed. Database volumes are never pruned: data is deleted only with the environment.
pub async fn prune(
    client: &Client,
    ns: &str,
    environment: &str,
    applied: &BTreeMap<&'static str, BTreeSet<String>>,
) -> Result<(), Error> {
    let keep = |kind: &str| applied.get(kind);
    prune_kind::<Deployment>(client, ns, environment, keep("Deployment"), never).await?;
    prune_kind::<StatefulSet>(client, ns, environment, keep("StatefulSet"), never).await?;
    prune_kind::<Service>(client, ns, environment, keep("Service"), never).await?;
    prune_kind::<ConfigMap>(client, ns, environment, keep("ConfigMap"), never).await?;
    prune_kind::<Secret>(client, ns, environment, keep("Secret"), never).await?;
    prune_kind::<Ingress>(client, ns, environment, keep("Ingress"), never).await?;
    prune_kind::<Job>(client, ns, environment, keep("Job"), never).await?;
    prune_kind::<ResourceQuota>(client, ns, environment, keep("ResourceQuota"), never).await?;
    prune_kind::<LimitRange>(client, ns, environment, keep("LimitRange"), never).await?;
    prune_kind::<NetworkPolicy>(client, ns, environment, keep("NetworkPolicy"), never).await?;
    // Only Redis's own volume may go with Redis; a database volume never does.
    prune_kind::<PersistentVolumeClaim>(
        client,
        ns,
        environment,
        keep("PersistentVolumeClaim"),
        |pvc: &PersistentVolumeClaim| {
            let labels = pvc.labels();
            labels
                .get("app.kubernetes.io/component")
                .map(String::as_str)
                != Some("redis")
                || labels.contains_key(RETAINED_LABEL)
        },
    )
    .await?;
    Ok(())
}

/// Copy the wildcard certificate into a preview's namespace (same name, current data). Returns
/// the copy's name for pruning. Its content never leaves the two Secrets.
pub async fn copy_wildcard_tls(
    applier: &Applier<'_>,
    source: &(String, String),
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Result<String, Error> {
    let (source_ns, name) = source;
    let original = Api::<Secret>::namespaced(applier.client.clone(), source_ns)
        .get(name)
        .await
        .map_err(|source| Error::Observe {
            what: format!("wildcard TLS Secret {source_ns}/{name}"),
            source,
        })?;
    let copy = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: original.type_.clone(),
        data: original.data.clone(),
        ..Secret::default()
    };
    applier.apply(&copy).await?;
    Ok(name.clone())
}
