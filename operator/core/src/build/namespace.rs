//! The environment's namespace, labelled for Pod Security "restricted".

use crate::build::Inputs;
use crate::build::meta::{RETAINED_LABEL, labels};
use crate::validate::{DatabaseModel, Model};
use appenv_api::DeletionPolicy;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Whether the environment keeps a volume that must outlive it.
pub fn retains_data(model: &Model) -> bool {
    let has_volume = matches!(
        model.database,
        Some(DatabaseModel::Postgres(_) | DatabaseModel::Embedded(_))
    );
    has_volume && model.deletion_policy == DeletionPolicy::Retain
}

pub fn namespace(model: &Model, inputs: &Inputs) -> Namespace {
    let mut all = model.namespace.labels.clone();
    all.extend(labels(model, "namespace"));
    let modes = if model.namespace.pod_security {
        ["enforce", "audit", "warn"].as_slice()
    } else {
        &[]
    };
    for mode in modes {
        all.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".to_owned(),
        );
        all.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".to_owned(),
        );
    }
    if retains_data(model) {
        all.insert(RETAINED_LABEL.to_owned(), "true".to_owned());
    }
    // Garbage collection deletes an owned namespace with its AppEnvironment. Not an adopted
    // one, and not one whose data is to be retained: the volume lives in it.
    let owned = model.namespace.owned && !retains_data(model);
    Namespace {
        metadata: ObjectMeta {
            name: Some(model.namespace.name.clone()),
            labels: Some(all),
            annotations: (!model.namespace.annotations.is_empty())
                .then(|| model.namespace.annotations.clone()),
            owner_references: inputs.owner.clone().filter(|_| owned).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}
