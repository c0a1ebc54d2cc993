//! `spec.namespace`: the namespace's name (given, or derived from the preview or the
//! environment), its labels and annotations, its egress rules and what is copied into it.

use super::rules::{Errors, is_dns_label, is_label_key, is_label_value};
use super::{NamespaceModel, PreviewModel, copy, egress};
use crate::settings::Settings;
use appenv_api::field::truncate;
use appenv_api::{AppEnvironmentSpec, MAX_EGRESS};

const RESERVED_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "default"];

pub(super) fn namespace(
    spec: &AppEnvironmentSpec,
    name: &str,
    preview: Option<&PreviewModel>,
    settings: &Settings,
    errors: &mut Errors,
) -> NamespaceModel {
    let ns_name = match (&spec.namespace.name, preview) {
        (Some(ns), _) => ns.clone(),
        (None, Some(p)) => format!("{}-pr-{}", spec.app, p.pull_request),
        (None, None) => name.to_owned(),
    };
    if spec.namespace.name.is_some() {
        errors.dns_label("spec.namespace.name", &ns_name, 63);
    } else if !is_dns_label(&ns_name, 63) {
        errors.add(
            "spec.namespace.name",
            format!(
                "the default namespace name {:?} is not a DNS label; set spec.namespace.name",
                truncate(&ns_name)
            ),
        );
    }
    if RESERVED_NAMESPACES.contains(&ns_name.as_str())
        && !(spec.namespace.adopt && ns_name == "default")
    {
        errors.add(
            "spec.namespace.name",
            format!("{ns_name:?} is a system namespace; appenv cannot own it"),
        );
    }
    if settings
        .operator_namespace
        .as_ref()
        .is_some_and(|own| **own == ns_name)
    {
        errors.add(
            "spec.namespace.name",
            format!(
                "{ns_name:?} is the operator's own namespace: no environment's, owned or adopted"
            ),
        );
    }
    let is_preview = preview.is_some() || spec.profile == appenv_api::Profile::Preview;
    if spec.namespace.adopt && is_preview {
        errors.add(
            "spec.namespace.adopt",
            "a preview never adopts a namespace: it gets one of its own (<app>-pr-<number>)",
        );
    }
    if spec.namespace.guardrails == Some(false) && !spec.namespace.adopt {
        errors.add(
            "spec.namespace.guardrails",
            "may be false only with spec.namespace.adopt: a namespace appenv owns is always \
             labelled for Pod Security restricted",
        );
    }
    for (key, value) in &spec.namespace.labels {
        if !is_label_key(key) || !is_label_value(value) {
            errors.add(
                format!("spec.namespace.labels[{}]", truncate(key)),
                "must be a valid label key and value",
            );
        }
    }
    for key in spec.namespace.annotations.keys() {
        if !is_label_key(key) {
            errors.add(
                format!("spec.namespace.annotations[{}]", truncate(key)),
                "must be a valid annotation key",
            );
        }
    }

    errors.at_most(
        "spec.namespace.egress",
        spec.namespace.egress.len(),
        MAX_EGRESS,
    );
    for (i, rule) in spec.namespace.egress.iter().enumerate() {
        egress::check(&format!("spec.namespace.egress[{i}]"), rule, errors);
    }
    let copies = copy::copies(
        &spec.namespace.copy,
        &copy::Target {
            app: &spec.app,
            namespace: &ns_name,
            preview,
            settings,
        },
        errors,
    );
    NamespaceModel {
        copies,
        pod_security: !spec.namespace.adopt || spec.namespace.guardrails == Some(true),
        name: ns_name,
        owned: !spec.namespace.adopt,
        labels: spec.namespace.labels.clone(),
        annotations: spec.namespace.annotations.clone(),
        egress: spec.namespace.egress.clone(),
    }
}
