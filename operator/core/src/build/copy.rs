//! Copies of Secrets and ConfigMaps (`spec.namespace.copy`) in the environment's namespace:
//! the content the controller read from the source, under the same name, owned, labelled and
//! pruned like every other child. Offline (`appenv render`) there is no source and no copy.

use crate::build::Inputs;
use crate::build::meta::object_meta;
use crate::validate::Model;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use std::collections::BTreeMap;

const COMPONENT: &str = "copy";
/// On each copy: `namespace/name` of its source.
pub const COPIED_FROM_ANNOTATION: &str = "appenv.dev/copied-from";

/// A source object's content, as the controller read it. Debug shows names and keys, never
/// a value (a Secret's are credentials).
#[derive(Clone, PartialEq)]
pub enum Source {
    Secret {
        type_: Option<String>,
        data: BTreeMap<String, ByteString>,
    },
    ConfigMap {
        data: BTreeMap<String, String>,
        binary_data: BTreeMap<String, ByteString>,
    },
}

/// One object to copy: where from, under which name, and its content.
#[derive(Clone, PartialEq)]
pub struct Copied {
    pub namespace: String,
    pub name: String,
    pub source: Source,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, keys): (&str, Vec<&String>) = match self {
            Source::Secret { data, .. } => ("Secret", data.keys().collect()),
            Source::ConfigMap { data, binary_data } => {
                ("ConfigMap", data.keys().chain(binary_data.keys()).collect())
            }
        };
        f.debug_struct(kind).field("keys", &keys).finish()
    }
}

impl std::fmt::Debug for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copied")
            .field("from", &format_args!("{}/{}", self.namespace, self.name))
            .field("source", &self.source)
            .finish()
    }
}

/// The copies, Secrets and ConfigMaps apart.
pub fn copies(model: &Model, inputs: &Inputs) -> (Vec<Secret>, Vec<ConfigMap>) {
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    for copied in &inputs.copies {
        let mut metadata = object_meta(model, inputs, &copied.name, COMPONENT);
        metadata.annotations = Some(BTreeMap::from([(
            COPIED_FROM_ANNOTATION.to_owned(),
            format!("{}/{}", copied.namespace, copied.name),
        )]));
        match &copied.source {
            Source::Secret { type_, data } => secrets.push(Secret {
                metadata,
                type_: type_.clone(),
                data: Some(data.clone()),
                ..Secret::default()
            }),
            Source::ConfigMap { data, binary_data } => config_maps.push(ConfigMap {
                metadata,
                data: Some(data.clone()),
                binary_data: (!binary_data.is_empty()).then(|| binary_data.clone()),
                ..ConfigMap::default()
            }),
        }
    }
    (secrets, config_maps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::validate::validate;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec};

    fn model() -> Model {
        let spec: AppEnvironmentSpec =
            serde_norway::from_str("{app: shop, image: 'shop:1'}").expect("spec");
        validate(&AppEnvironment::new("shop", spec), &Settings::default()).expect("valid")
    }

    fn secret() -> Copied {
        Copied {
            namespace: "vault-sync".into(),
            name: "shop-secrets".into(),
            source: Source::Secret {
                type_: Some("Opaque".into()),
                data: BTreeMap::from([("API_KEY".to_owned(), ByteString(b"s3cr3t".to_vec()))]),
            },
        }
    }

    #[test]
    fn copies_keep_name_type_and_content_and_say_where_from() {
        let config = Copied {
            namespace: "shared".into(),
            name: "feature-flags".into(),
            source: Source::ConfigMap {
                data: BTreeMap::from([("FLAGS".to_owned(), "beta".to_owned())]),
                binary_data: BTreeMap::new(),
            },
        };
        let model = model();
        let inputs = Inputs {
            copies: vec![secret(), config],
            ..Inputs::default()
        };
        let (secrets, config_maps) = copies(&model, &inputs);
        let [secret_copy] = secrets.as_slice() else {
            panic!("one Secret: {secrets:?}")
        };
        assert_eq!(secret_copy.metadata.name.as_deref(), Some("shop-secrets"));
        assert_eq!(secret_copy.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(secret_copy.type_.as_deref(), Some("Opaque"));
        let Source::Secret { data, .. } = &secret().source else {
            unreachable!()
        };
        assert_eq!(secret_copy.data.as_ref(), Some(data));
        let annotations = secret_copy
            .metadata
            .annotations
            .as_ref()
            .expect("annotated");
        assert_eq!(
            annotations.get(COPIED_FROM_ANNOTATION).map(String::as_str),
            Some("vault-sync/shop-secrets")
        );
        let labels = secret_copy.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(appenv_api::names::label::ENVIRONMENT),
            Some(&"shop".to_owned())
        );
        let [config_copy] = config_maps.as_slice() else {
            panic!("one ConfigMap: {config_maps:?}")
        };
        assert_eq!(config_copy.metadata.name.as_deref(), Some("feature-flags"));
        assert_eq!(config_copy.binary_data, None);
        assert_eq!(copies(&model, &Inputs::default()), (vec![], vec![]));
    }

    #[test]
    fn debug_shows_the_keys_not_the_values() {
        let shown = format!("{:?}", secret());
        assert!(shown.contains("API_KEY") && shown.contains("vault-sync/shop-secrets"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
