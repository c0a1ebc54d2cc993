//! One kind's index: its objects' snapshots by namespace and name, kept up to date from the
//! kind's watch events.

use super::Watched;
use kube::Resource;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The snapshots of the watched objects of kind `K`: namespace -> name -> snapshot.
/// Cluster-scoped objects are under the namespace "".
pub struct Index<K: Watched> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: Arc<tokio::sync::watch::Sender<bool>>,
}

type Objects<K> = HashMap<Box<str>, HashMap<Box<str>, <K as Watched>::Snapshot>>;

impl<K: Watched> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Watched> Index<K> {
    pub(super) fn new() -> Self {
        Self {
            objects: Arc::default(),
            ready: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// The objects, to read. A writer that panicked left them whole (each write is one map
    /// operation or one swap), so a poisoned lock is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, Objects<K>> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Objects<K>> {
        self.objects.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, namespace: &str, name: &str) -> Option<K::Snapshot> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// `f` of each object in `namespace` (name and snapshot), where it gives something.
    pub(super) fn scan<T>(
        &self,
        namespace: &str,
        f: impl Fn(&str, &K::Snapshot) -> Option<T>,
    ) -> Vec<T> {
        self.read()
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|(name, snapshot)| f(name, snapshot))
            .collect()
    }

    /// Whether the first full list is in.
    #[cfg(test)]
    pub(super) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub(super) async fn wait_ready(&self) -> Result<(), ()> {
        let mut ready = self.ready.subscribe();
        ready.wait_for(|r| *r).await.map(|_| ()).map_err(|_| ())
    }

    fn insert(objects: &mut Objects<K>, object: &K::Object) {
        let meta = object.meta();
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        match K::snapshot(object) {
            Some(snapshot) => {
                objects
                    .entry(ns.into())
                    .or_default()
                    .insert(name.into(), snapshot);
            }
            None => remove(objects, ns, name),
        }
    }
}

fn remove<V>(objects: &mut HashMap<Box<str>, HashMap<Box<str>, V>>, ns: &str, name: &str) {
    if let Some(names) = objects.get_mut(ns) {
        names.remove(name);
        if names.is_empty() {
            objects.remove(ns);
        }
    }
}

/// Keeps an [`Index`] up to date from its watch's events (a relist replaces it whole).
pub struct IndexWriter<K: Watched> {
    index: Index<K>,
    relist: Option<Objects<K>>,
}

impl<K: Watched> IndexWriter<K> {
    pub(super) fn new(index: &Index<K>) -> Self {
        Self {
            index: index.clone(),
            relist: None,
        }
    }

    pub(super) fn apply(&mut self, event: &watcher::Event<K::Object>) {
        use watcher::Event;
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(relist) = self.relist.as_mut() {
                    Index::<K>::insert(relist, object);
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    *self.index.write() = relist;
                }
                self.index.ready.send_replace(true);
            }
            Event::Apply(object) => Index::<K>::insert(&mut self.index.write(), object),
            Event::Delete(object) => {
                let meta = object.meta();
                let ns = meta.namespace.as_deref().unwrap_or_default();
                let name = meta.name.as_deref().unwrap_or_default();
                remove(&mut self.index.write(), ns, name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appenv_api::names::label;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::core::PartialObjectMeta;
    use watcher::Event;

    fn config_map(name: &str, version: &str) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta::<ConfigMap> {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop-prod".into()),
                resource_version: Some(version.into()),
                labels: Some([(label::ENVIRONMENT.to_owned(), "shop".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        }
    }

    #[test]
    fn an_index_follows_events_and_a_relist_replaces_it_whole() {
        let index = Index::<ConfigMap>::new();
        let mut writer = IndexWriter::new(&index);
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(config_map("a", "1")));
        writer.apply(&Event::InitApply(config_map("b", "2")));
        assert!(index.get("shop-prod", "a").is_none(), "not before InitDone");
        assert!(!index.is_ready());
        writer.apply(&Event::InitDone);
        assert!(index.is_ready());
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
}
