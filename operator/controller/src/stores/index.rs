//! One kind's index: its objects' snapshots by namespace and name, kept up to date from the
//! kind's watch events.

use super::Watched;
use kube::Resource;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The snapshots of the watched objects of kind `K`, by `namespace/name` (neither can contain
/// a slash). Cluster-scoped objects are under the namespace "".
///
/// One ordered map for all namespaces: a namespace's objects are one range of it, and with a
/// thousand environments of a few objects each, a map per namespace would cost more in empty
/// buckets than the snapshots themselves.
pub struct Index<K: Watched> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: Arc<tokio::sync::watch::Sender<bool>>,
}

type Objects<K> = BTreeMap<Box<str>, <K as Watched>::Snapshot>;

/// The key of `name` in `namespace`.
fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The keys of `namespace`'s objects: from "namespace/" up to, not including, "namespace0"
/// ('0' follows '/').
fn range(namespace: &str) -> (String, String) {
    (format!("{namespace}/"), format!("{namespace}0"))
}

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
        self.read().get(key(namespace, name).as_str()).cloned()
    }

    /// `f` of each object in `namespace` (name and snapshot), where it gives something.
    pub(super) fn scan<T>(
        &self,
        namespace: &str,
        f: impl Fn(&str, &K::Snapshot) -> Option<T>,
    ) -> Vec<T> {
        let (from, to) = range(namespace);
        self.read()
            .range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
            .filter_map(|(key, snapshot)| f(&key[namespace.len() + 1..], snapshot))
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
                objects.insert(key(ns, name).into(), snapshot);
            }
            None => {
                objects.remove(key(ns, name).as_str());
            }
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
            Event::Init => self.relist = Some(BTreeMap::new()),
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
                self.index.write().remove(key(ns, name).as_str());
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
            Some(super::super::Version::Number(1))
        );
        writer.apply(&Event::Apply(config_map("a", "3")));
        writer.apply(&Event::Delete(config_map("b", "2")));
        assert_eq!(
            index.get("shop-prod", "a").map(|m| m.version),
            Some(super::super::Version::Number(3))
        );
        assert!(index.get("shop-prod", "b").is_none());
        // A relist that no longer has "a" (deleted while the watch was down) forgets it.
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(config_map("c", "9")));
        writer.apply(&Event::InitDone);
        let names = index.scan("shop-prod", |name, _| Some(name.to_owned()));
        assert_eq!(names, ["c"]);
        // A namespace is its own range: not those whose names start with it.
        let mut other = config_map("d", "10");
        other.metadata.namespace = Some("shop-prod-2".into());
        writer.apply(&Event::Apply(other));
        let names = index.scan("shop-prod", |name, _| Some(name.to_owned()));
        assert_eq!(names, ["c"]);
        let names = index.scan("shop-prod-2", |name, _| Some(name.to_owned()));
        assert_eq!(names, ["d"]);
        assert!(
            index
                .scan("elsewhere", |name, _| Some(name.to_owned()))
                .is_empty()
        );
    }
}
