//! A preview's copy of the operator-wide wildcard certificate: same name and content as the
//! source Secret (read by the controller), in the preview's namespace, owned and pruned like
//! every other child.

use crate::build::Inputs;
use crate::build::meta::object_meta;
use crate::validate::Model;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

const COMPONENT: &str = "tls";

/// The wildcard certificate's Secret as the controller read it. Debug shows its name and keys,
/// never the content (a private key).
#[derive(Clone, PartialEq)]
pub struct WildcardTls {
    /// The source's name, which the copy keeps (previews' Ingresses name it).
    pub name: String,
    /// The source's type (`kubernetes.io/tls`).
    pub type_: Option<String>,
    pub data: BTreeMap<String, ByteString>,
}

impl std::fmt::Debug for WildcardTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WildcardTls")
            .field("name", &self.name)
            .field("type_", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The copy a preview gets, if a wildcard certificate is configured; none for other
/// environments.
pub fn wildcard_copy(model: &Model, inputs: &Inputs) -> Option<Secret> {
    model.preview.as_ref()?;
    let source = inputs.wildcard_tls.as_ref()?;
    Some(Secret {
        metadata: object_meta(model, inputs, &source.name, COMPONENT),
        type_: source.type_.clone(),
        data: Some(source.data.clone()),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::validate::validate;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec};

    fn model(yaml: &str) -> Model {
        let spec: AppEnvironmentSpec = serde_norway::from_str(yaml).expect("spec");
        let settings = Settings {
            preview_domain: Some("preview.example.org".parse().expect("domain")),
            ..Settings::default()
        };
        validate(&AppEnvironment::new("shop-pr-7", spec), &settings).expect("valid")
    }

    fn source() -> WildcardTls {
        WildcardTls {
            name: "wildcard".into(),
            type_: Some("kubernetes.io/tls".into()),
            data: BTreeMap::from([("tls.key".to_owned(), ByteString(b"private".to_vec()))]),
        }
    }

    #[test]
    fn a_preview_gets_a_labelled_copy_and_other_environments_none() {
        let preview = model("{app: shop, image: 'shop:1', preview: {pullRequest: 7}}");
        let inputs = Inputs {
            wildcard_tls: Some(source()),
            ..Inputs::default()
        };
        let copy = wildcard_copy(&preview, &inputs).expect("a copy");
        assert_eq!(copy.metadata.name.as_deref(), Some("wildcard"));
        assert_eq!(
            copy.metadata.namespace,
            Some(preview.namespace.name.clone())
        );
        assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(copy.data, Some(source().data));
        let labels = copy.metadata.labels.expect("labels");
        assert_eq!(
            labels.get(appenv_api::names::label::ENVIRONMENT),
            Some(&preview.name)
        );
        assert_eq!(wildcard_copy(&preview, &Inputs::default()), None);
        let production = model("{app: shop, image: 'shop:1'}");
        assert_eq!(wildcard_copy(&production, &inputs), None);
    }

    #[test]
    fn debug_shows_the_keys_not_the_key() {
        let shown = format!("{:?}", source());
        assert!(shown.contains("tls.key"));
        assert!(!shown.contains("private"), "{shown}");
    }
}
