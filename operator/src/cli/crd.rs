//! `appenv crd`: the CustomResourceDefinition, generated from the Rust types.

use crate::api::AppEnvironment;
use kube::CustomResourceExt as _;

/// Where the generated CRD is kept in the repository (a test keeps it current).
pub const CRD_PATH: &str = "crds/appenv.dev_appenvironments.yaml";

/// The CRD as YAML, with a header saying how it is regenerated.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&AppEnvironment::crd())?;
    Ok(format!(
        "# Generated from operator/src/api by `appenv crd`; do not edit.\n\
         # Regenerate: cargo run -q -- crd > {CRD_PATH}\n{body}"
    ))
}
