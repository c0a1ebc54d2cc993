//! `spec.namespace.egress[]`: IP blocks a preview's Pods may reach, read by `ipnet`.

use super::rules::Errors;
use appenv_api::field::truncate;
use appenv_api::{EgressRule, MAX_EGRESS};
use ipnet::IpNet;

const CIDR: &str = "must be an IP block in CIDR notation, e.g. 0.0.0.0/0 or 203.0.113.0/24";

/// An IP block `address/prefix`; the address may have host bits set (`10.1.2.3/8` is the
/// block `10.0.0.0/8`) and IPv4 octets leading zeros (read as decimal), as the API server reads
/// them. An IPv4 prefix has at most two digits, an IPv6 one three.
pub(super) fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse().ok()
}

/// Whether `inner` is a strictly smaller block inside `outer` (of the same address family).
pub(super) fn is_inside(inner: &IpNet, outer: &IpNet) -> bool {
    inner.prefix_len() > outer.prefix_len() && outer.contains(inner)
}

pub(super) fn check(path: &str, rule: &EgressRule, errors: &mut Errors) {
    for (field, len) in [("except", rule.except.len()), ("ports", rule.ports.len())] {
        errors.at_most(&format!("{path}.{field}"), len, MAX_EGRESS);
    }
    let block = parse_cidr(&rule.cidr);
    if block.is_none() {
        errors.add(
            format!("{path}.cidr"),
            format!("{:?} {CIDR}", truncate(&rule.cidr)),
        );
    }
    for (i, except) in rule.except.iter().enumerate() {
        let at = format!("{path}.except[{i}]");
        match (parse_cidr(except), block) {
            (None, _) => errors.add(at, format!("{:?} {CIDR}", truncate(except))),
            (Some(inner), Some(outer)) if !is_inside(&inner, &outer) => {
                errors.add(
                    at,
                    format!(
                        "{:?} must be a smaller block inside cidr {:?}",
                        truncate(except),
                        truncate(&rule.cidr)
                    ),
                );
            }
            _ => {}
        }
    }
    for (i, port) in rule.ports.iter().enumerate() {
        if !(1..=65535).contains(port) {
            errors.add(
                format!("{path}.ports[{i}]"),
                format!("{port} must be a TCP port between 1 and 65535"),
            );
        }
    }
}
