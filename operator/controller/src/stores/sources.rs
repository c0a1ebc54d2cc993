//! The sources of `spec.namespace.copy`: every Secret and ConfigMap of the namespaces the
//! operator copies from (no label selects them: a secret manager writes them as it likes),
//! watched in those namespaces only. A change of one reconciles the environments that copy it.

use appenv_api::CopyKind;
use appenv_core::build::{Copied, CopySource};
use appenv_core::validate::CopyModel;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use std::collections::BTreeMap;

/// A Secret of this type is not copied: its token belongs to a ServiceAccount of the source
/// namespace (and the token controller deletes copies whose account is missing).
const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

/// A source object that changed (or appeared, or went away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub kind: CopyKind,
    pub namespace: String,
    pub name: String,
}

/// The watched sources, by namespace.
#[derive(Clone, Default)]
pub struct Sources {
    secrets: BTreeMap<String, Store<Secret>>,
    config_maps: BTreeMap<String, Store<ConfigMap>>,
}

/// A watch of every `K` in `namespace`, into a store; its changes as [`Touched`].
fn watch<K, B>(
    client: &Client,
    namespace: &str,
    kind: CopyKind,
    backoff: B,
) -> (Store<K>, BoxStream<'static, Touched>)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    B: Backoff + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let changes = watcher::watcher(
        Api::<K>::namespaced(client.clone(), namespace),
        watcher::Config::default(),
    )
    .modify(|object: &mut K| object.meta_mut().managed_fields = None)
    .reflect(writer)
    .backoff(backoff)
    .touched_objects()
    .filter_map(move |change| async move {
        let object = change.ok()?;
        Some(Touched {
            kind,
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        })
    })
    .boxed();
    (reader, changes)
}

impl Sources {
    /// Watch the Secrets and ConfigMaps of `namespaces`. Nothing is read until the returned
    /// stream is polled.
    pub fn watch<B>(
        client: &Client,
        namespaces: &[appenv_core::settings::DnsLabel],
        backoff: impl Fn() -> B,
    ) -> (Self, BoxStream<'static, Touched>)
    where
        B: Backoff + Send + 'static,
    {
        let mut sources = Self::default();
        let mut changes = Vec::new();
        for namespace in namespaces.iter().map(|ns| &**ns) {
            let (secrets, touched) = watch(client, namespace, CopyKind::Secret, backoff());
            sources.secrets.insert(namespace.to_owned(), secrets);
            changes.push(touched);
            let (config_maps, touched) = watch(client, namespace, CopyKind::ConfigMap, backoff());
            sources
                .config_maps
                .insert(namespace.to_owned(), config_maps);
            changes.push(touched);
        }
        (sources, futures::stream::select_all(changes).boxed())
    }

    /// Waits for the first list of every source namespace, each named for messages.
    pub fn first_lists(
        &self,
    ) -> Vec<(&'static str, futures::future::BoxFuture<'_, Result<(), ()>>)> {
        let secrets = self.secrets.values().map(|s| {
            let wait = s.wait_until_ready().map(|r| r.map_err(|_| ())).boxed();
            ("the Secrets of a namespace copied from", wait)
        });
        let config_maps = self.config_maps.values().map(|s| {
            let wait = s.wait_until_ready().map(|r| r.map_err(|_| ())).boxed();
            ("the ConfigMaps of a namespace copied from", wait)
        });
        secrets.chain(config_maps).collect()
    }

    /// The content of what `copy` names, or why it cannot be copied.
    pub fn get(&self, copy: &CopyModel) -> Result<Copied, String> {
        // Built only for a failure: a reconcile reads every copy's source.
        let what = || {
            format!(
                "{}: {} {}/{}",
                copy.path, copy.kind, copy.namespace, copy.name
            )
        };
        let source = match copy.kind {
            CopyKind::Secret => {
                let key = ObjectRef::new(&copy.name).within(&copy.namespace);
                let found = self.secrets.get(&copy.namespace).and_then(|s| s.get(&key));
                let secret = found.ok_or_else(|| format!("{} not found", what()))?;
                if secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN) {
                    return Err(format!(
                        "{} is a service-account token: never copied",
                        what()
                    ));
                }
                CopySource::Secret {
                    type_: secret.type_.clone(),
                    data: secret.data.clone().unwrap_or_default(),
                }
            }
            CopyKind::ConfigMap => {
                let key = ObjectRef::new(&copy.name).within(&copy.namespace);
                let found = self
                    .config_maps
                    .get(&copy.namespace)
                    .and_then(|s| s.get(&key));
                let config_map = found.ok_or_else(|| format!("{} not found", what()))?;
                CopySource::ConfigMap {
                    data: config_map.data.clone().unwrap_or_default(),
                    binary_data: config_map.binary_data.clone().unwrap_or_default(),
                }
            }
        };
        Ok(Copied {
            namespace: copy.namespace.clone(),
            name: copy.name.clone(),
            source,
        })
    }
}

/// The environments among `envs` that copy the object `touched`.
pub fn copying(
    envs: &[std::sync::Arc<crate::compact::Guarded>],
    touched: &Touched,
) -> Vec<ObjectRef<crate::compact::Guarded>> {
    envs.iter()
        .filter(|guarded| {
            guarded.0.as_ref().is_ok_and(|env| {
                env.copies().iter().any(|c| {
                    c.kind == touched.kind
                        && c.namespace == touched.namespace
                        && c.name == touched.name
                })
            })
        })
        .map(|guarded| ObjectRef::from_obj(guarded.as_ref()))
        .collect()
}
