//! `spec.namespace.copy`: Secrets and ConfigMaps copied into the environment's namespace. A
//! spec comes from whoever may create AppEnvironments (often a CI token), so a copy may come
//! only from a namespace the operator was configured to copy from, never from the
//! environment's own, and may not take the name of an object appenv writes itself.

use super::rules::{Errors, is_dns_subdomain};
use super::{CopyModel, PreviewModel};
use crate::settings::Settings;
use appenv_api::field::truncate;
use appenv_api::{CopyKind, CopySpec, MAX_COPIES};
use std::collections::BTreeSet;

/// The Secrets and ConfigMaps appenv itself writes into an environment of `app` (whether or not
/// this spec makes them): a copy under one of these names would fight appenv's own object.
pub(crate) fn own_names(app: &str) -> [(CopyKind, String); 3] {
    [
        (CopyKind::ConfigMap, format!("{app}-env")),
        (CopyKind::ConfigMap, format!("{app}-postgres-init")),
        (CopyKind::Secret, format!("{app}-postgres-credentials")),
    ]
}

/// Where the environment lives and what else is copied into it.
pub(super) struct Target<'a> {
    pub app: &'a str,
    pub namespace: &'a str,
    pub preview: Option<&'a PreviewModel>,
    pub settings: &'a Settings,
}

pub(super) fn copies(
    list: &[CopySpec],
    target: &Target<'_>,
    errors: &mut Errors,
) -> Vec<CopyModel> {
    errors.at_most("spec.namespace.copy", list.len(), MAX_COPIES);
    let allowed = &target.settings.copy_from_namespaces;
    let mut reserved: Vec<(CopyKind, String)> = own_names(target.app).into();
    if let (Some(wildcard), Some(_)) = (&target.settings.wildcard_tls, target.preview) {
        reserved.push((CopyKind::Secret, wildcard.name().to_owned()));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, copy) in list.iter().enumerate() {
        let path = format!("spec.namespace.copy[{i}]");
        let (kind, ns, name) = (copy.kind, copy.namespace.as_str(), copy.name.as_str());
        if ns == target.namespace {
            errors.add(
                format!("{path}.namespace"),
                format!("{ns:?} is the environment's own namespace: nothing to copy"),
            );
        } else if !allowed.iter().any(|a| &**a == ns) {
            let rule = if allowed.is_empty() {
                "this operator copies from no namespace (its --copy-from-namespace flag, the \
                 chart's copyFromNamespaces, is empty)"
                    .to_owned()
            } else {
                let names: Vec<&str> = allowed.iter().map(|a| &**a).collect();
                format!(
                    "not a namespace this operator copies from (allowed: {}; its \
                     --copy-from-namespace flag, the chart's copyFromNamespaces)",
                    names.join(", ")
                )
            };
            errors.add(
                format!("{path}.namespace"),
                format!("{:?}: {rule}", truncate(ns)),
            );
        }
        if !is_dns_subdomain(name) {
            errors.add(
                format!("{path}.name"),
                format!(
                    "{:?} must be a DNS subdomain: lower-case letters, digits, '-' and '.', \
                     at most 253 characters",
                    truncate(name)
                ),
            );
        } else if reserved.iter().any(|(k, n)| *k == kind && n == name) {
            errors.add(
                format!("{path}.name"),
                format!("{kind} {name:?} is one appenv writes into this environment itself"),
            );
        } else if !seen.insert((kind, name)) {
            errors.add(
                format!("{path}.name"),
                format!("{kind} {name:?} is copied twice (one object per name in a namespace)"),
            );
        }
        out.push(CopyModel {
            path,
            kind,
            namespace: ns.to_owned(),
            name: name.to_owned(),
        });
    }
    out
}
