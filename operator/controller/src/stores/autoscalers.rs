//! The environments' autoscalers (KEDA ScaledObjects, HorizontalPodAutoscalers), of the kinds
//! the cluster serves: watched like the other children (by the environment label, metadata
//! only kept), so that apply skips what is as applied and prune finds what to delete. Kinds
//! the cluster does not serve are not watched (their watch would fail forever).

use super::{Meta, Trigger, environment_of};
use crate::discovery::api_resource;
use appenv_api::names::label;
use appenv_core::build::AutoscalerKind;
use futures::{FutureExt as _, StreamExt as _};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};

/// One watched kind of autoscaler.
#[derive(Clone)]
pub struct Watch {
    pub kind: AutoscalerKind,
    pub resource: ApiResource,
    store: Store<DynamicObject>,
}

/// The watched autoscaler kinds.
#[derive(Clone, Default)]
pub struct Autoscalers(Vec<Watch>);

impl Autoscalers {
    /// Watch `kinds`, pushing reconcile requests for their environments to `triggers`.
    pub fn watch<B: Backoff + Send + 'static>(
        client: &Client,
        kinds: &[AutoscalerKind],
        backoff: impl Fn() -> B,
        triggers: &mut Vec<Trigger>,
    ) -> Self {
        let mut watches = Vec::new();
        for kind in kinds {
            let resource = api_resource(*kind);
            let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
            let store = writer.as_reader();
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
            let config = watcher::Config::default().labels(label::ENVIRONMENT);
            let trigger = watcher::watcher(api, config)
                .modify(|o: &mut DynamicObject| o.metadata.managed_fields = None)
                .reflect(writer)
                .backoff(backoff())
                .touched_objects()
                .filter_map(|o| async move { o.ok().and_then(|o| environment_of(&o.metadata)) })
                .boxed();
            triggers.push(trigger);
            watches.push(Watch {
                kind: *kind,
                resource,
                store,
            });
        }
        Self(watches)
    }

    /// The watched kinds.
    pub fn kinds(&self) -> &[Watch] {
        &self.0
    }

    /// The metadata of an autoscaler, if it exists.
    pub fn meta(&self, kind: AutoscalerKind, namespace: &str, name: &str) -> Option<Meta> {
        let watch = self.0.iter().find(|w| w.kind == kind)?;
        let key = ObjectRef::new_with(name, watch.resource.clone()).within(namespace);
        watch.store.get(&key).map(|o| Meta::of(&o.metadata))
    }

    /// The names of an environment's autoscalers of `kind` in its namespace.
    pub fn of_environment(
        &self,
        kind: AutoscalerKind,
        namespace: &str,
        environment: &str,
    ) -> Vec<(String, Meta)> {
        let Some(watch) = self.0.iter().find(|w| w.kind == kind) else {
            return Vec::new();
        };
        watch
            .store
            .state()
            .iter()
            .filter(|o| o.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|o| Some((o.metadata.name.clone()?, Meta::of(&o.metadata))))
            .filter(|(_, meta)| meta.environment.as_deref() == Some(environment))
            .collect()
    }

    /// Waits for each watched kind's first list, named for messages.
    pub fn first_lists(
        &self,
    ) -> Vec<(
        &'static str,
        futures::future::BoxFuture<'static, Result<(), ()>>,
    )> {
        self.0
            .iter()
            .map(|w| {
                let store = w.store.clone();
                let wait = async move { store.wait_until_ready().await.map_err(|_| ()) }.boxed();
                (w.kind.kind(), wait)
            })
            .collect()
    }
}
