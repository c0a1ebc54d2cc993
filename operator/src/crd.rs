//! The AppEnvironment CustomResourceDefinition: generated from the Rust types, kept in
//! `crds/` (a test fails if it is stale), and installed to fit the server it goes to.

use crate::api::AppEnvironment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt as _};

use std::time::Duration;

/// Where the generated CRD is kept in the repository.
pub const CRD_PATH: &str = "crds/appenv.dev_appenvironments.yaml";
/// The first Kubernetes minor version that knows CEL rules (`x-kubernetes-validations`).
pub const CEL_SINCE_MINOR: u32 = 25;

/// The CRD as YAML, with a header saying how it is regenerated.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated from operator/src/api by `appenv crd`; do not edit.\n\
         # Regenerate: cargo run -q -- crd > {CRD_PATH}\n{body}"
    ))
}

/// The CRD as generated from the types, with one correction: schemars lists `null` among the
/// values of an optional enum, which kubectl's client-side validation rejects ("unknown object
/// type nil"); `nullable: true` already allows leaving such a field out.
pub fn crd() -> CustomResourceDefinition {
    let generated = AppEnvironment::crd();
    let mut value = serde_json::to_value(&generated).unwrap_or_default();
    visit_objects(&mut value, &mut |map| {
        if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
    });
    serde_json::from_value(value).unwrap_or(generated)
}

/// The CRD for a server of the given minor version. Servers before 1.25 reject
/// `x-kubernetes-validations` under server-side apply ("field not declared in schema") and
/// could not enforce them anyway; there the rules are left out and the operator's validate
/// step (which enforces the same invariants) is what stands.
pub fn crd_for_server(minor: u32) -> CustomResourceDefinition {
    let crd = crd();
    if minor >= CEL_SINCE_MINOR {
        return crd;
    }
    let mut value = serde_json::to_value(&crd).unwrap_or_default();
    visit_objects(&mut value, &mut |map| {
        map.remove("x-kubernetes-validations");
    });
    serde_json::from_value(value).unwrap_or(crd)
}

/// Call `f` on every JSON object within `value`, depth first.
fn visit_objects(
    value: &mut serde_json::Value,
    f: &mut impl FnMut(&mut serde_json::Map<String, serde_json::Value>),
) {
    match value {
        serde_json::Value::Object(map) => {
            f(map);
            map.values_mut().for_each(|v| visit_objects(v, f));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| visit_objects(v, f)),
        _ => {}
    }
}

/// The server's minor version as a number (`"20"`, `"27+"` → 20, 27).
pub async fn server_minor(client: &Client) -> Result<u32, kube::Error> {
    let info = client.apiserver_version().await?;
    Ok(info.minor.trim_end_matches('+').parse().unwrap_or(0))
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("applying the AppEnvironment CRD")]
    Apply(#[from] kube::Error),
    #[error("the AppEnvironment CRD was not established within {0:?}")]
    NotEstablished(Duration),
}

/// Server-side apply the CRD (as fits the server) and wait until it is established.
pub async fn install(client: &Client, field_manager: &str) -> Result<(), InstallError> {
    let crd = crd_for_server(server_minor(client).await?);
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let limit = Duration::from_secs(30);
    match tokio::time::timeout(
        limit,
        await_condition(api, &name, conditions::is_crd_established()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(InstallError::NotEstablished(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_get_the_crd_without_cel_rules_and_new_ones_with_them() {
        let old = serde_json::to_string(&crd_for_server(20)).expect("json");
        let new = serde_json::to_string(&crd_for_server(CEL_SINCE_MINOR)).expect("json");
        assert!(!old.contains("x-kubernetes-validations"));
        assert!(new.contains("x-kubernetes-validations"));
        // Everything else is the same schema.
        assert!(old.contains("\"embedded\"") && old.contains("\"workers\""));
        assert!(
            !new.contains("null]") && !new.contains("null,"),
            "no null among enum values"
        );
    }
}
