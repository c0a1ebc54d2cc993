//! Names, labels and metadata shared by every child.

use crate::build::Inputs;
use crate::validate::Model;
use appenv_api::names::label;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// The one field manager appenv writes with.
pub const FIELD_MANAGER: &str = "appenv";
pub const MANAGED_BY: &str = "appenv";
/// Set on every child: the AppEnvironment it belongs to (the controller watches by it).
pub const ENVIRONMENT_LABEL: &str = label::ENVIRONMENT;
/// Set on volumes (and their namespace) kept after their environment was deleted, so that a
/// new AppEnvironment of the same name adopts them.
pub const RETAINED_LABEL: &str = label::RETAINED;
/// Hash of what appenv last applied to an object whose apply is never a no-op on older API
/// servers (a StatefulSet: its atomic `volumeClaimTemplates` come back defaulted).
pub const APPLIED_HASH_ANNOTATION: &str = "appenv.dev/applied-hash";
/// Hash of the configuration a pod template depends on: a change rolls the Pods.
pub const CONFIG_HASH_ANNOTATION: &str = "appenv.dev/config-hash";

/// The labels that select a component's Pods.
pub fn selector(model: &Model, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.to_owned(), model.app.clone()),
        (label::INSTANCE.to_owned(), model.name.clone()),
        (label::COMPONENT.to_owned(), component.to_owned()),
    ])
}

/// Every label of a component's objects.
pub fn labels(model: &Model, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector(model, component);
    labels.insert(label::MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels.insert(ENVIRONMENT_LABEL.to_owned(), model.name.clone());
    labels
}

/// Metadata of a namespaced child.
pub fn object_meta(model: &Model, inputs: &Inputs, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(model.namespace.name.clone()),
        labels: Some(labels(model, component)),
        owner_references: inputs.owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// A short, stable hash (FNV-1a, 64 bit) of any serializable value's JSON.
pub fn hash_of<T: serde::Serialize>(value: &T) -> u64 {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// [`hash_of`] as 16 hex digits (for annotations and names).
pub fn hash_json<T: serde::Serialize>(value: &T) -> String {
    format!("{:016x}", hash_of(value))
}
