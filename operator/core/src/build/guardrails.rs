//! Guardrails of preview namespaces: a ResourceQuota, default container resources, and a
//! default-deny NetworkPolicy that lets in only the namespace itself and the ingress
//! controller, and lets out only the namespace itself, DNS and the destinations the spec lists
//! (`spec.namespace.egress`).

use crate::build::meta::object_meta;
use crate::build::{Guardrails, Inputs};
use crate::validate::Model;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn namespace_named(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                name.to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn same_namespace() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }
}

pub fn guardrails(model: &Model, inputs: &Inputs) -> Option<Guardrails> {
    let quota = model.guardrails.as_ref()?;
    let hard = quantities(&[
        ("requests.cpu", &quota.cpu),
        ("requests.memory", &quota.memory),
        ("pods", &quota.pods),
        ("requests.storage", &quota.storage),
    ]);
    let port = |number: i32, protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.to_owned()),
        ..NetworkPolicyPort::default()
    };
    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![same_namespace()]),
            ..NetworkPolicyEgressRule::default()
        },
        NetworkPolicyEgressRule {
            to: Some(vec![namespace_named("kube-system")]),
            ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
        },
    ];
    egress.extend(
        model
            .namespace
            .egress
            .iter()
            .map(|rule| NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: rule.cidr.clone(),
                        except: (!rule.except.is_empty()).then(|| rule.except.clone()),
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: (!rule.ports.is_empty())
                    .then(|| rule.ports.iter().map(|&n| port(n, "TCP")).collect()),
            }),
    );
    Some(Guardrails {
        quota: ResourceQuota {
            metadata: object_meta(model, inputs, "appenv-quota", "guardrails"),
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard),
                ..ResourceQuotaSpec::default()
            }),
            ..ResourceQuota::default()
        },
        limits: LimitRange {
            metadata: object_meta(model, inputs, "appenv-defaults", "guardrails"),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".to_owned(),
                    default: Some(quantities(&[("cpu", "500m"), ("memory", "512Mi")])),
                    default_request: Some(quantities(&[("cpu", "50m"), ("memory", "64Mi")])),
                    ..LimitRangeItem::default()
                }],
            }),
        },
        network_policy: NetworkPolicy {
            metadata: object_meta(model, inputs, "appenv-default-deny", "guardrails"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    // The activator proxies to web for an environment that can sleep.
                    from: Some(
                        [
                            Some(same_namespace()),
                            Some(namespace_named(&model.ingress_namespace)),
                            model
                                .activator
                                .as_ref()
                                .map(|a| namespace_named(a.namespace())),
                        ]
                        .into_iter()
                        .flatten()
                        .collect(),
                    ),
                    ..NetworkPolicyIngressRule::default()
                }]),
                egress: Some(egress),
            }),
        },
    })
}
