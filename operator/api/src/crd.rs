//! The AppEnvironment CustomResourceDefinition: generated from the Rust types, kept in
//! `crds/` (a test fails if it is stale), in the shape that fits the server it goes to
//! (installing it is the controller crate's `crd::install`).

use crate::AppEnvironment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;

/// Where the generated CRD is kept in the repository.
pub const CRD_PATH: &str = "crds/appenv.dev_appenvironments.yaml";
/// The first Kubernetes minor version that knows CEL rules (`x-kubernetes-validations`).
pub const CEL_SINCE_MINOR: u32 = 25;

/// The CRD as YAML, with a header saying how it is regenerated.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(&crd())?;
    Ok(format!(
        "# Generated from operator/api by `appenv crd`; do not edit.\n\
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
