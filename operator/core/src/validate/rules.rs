//! The rules every section shares: the error collector, name and key syntax, resources,
//! storage, environment variables and annotations.

use super::StorageModel;
use crate::quantity;
use appenv_api::field::{FieldError, Invalid, truncate};
use appenv_api::{Profile, StorageSpec};
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{BTreeMap, BTreeSet};

/// Collects violations while the model is built, so one pass reports them all.
#[derive(Default)]
pub(super) struct Errors(Vec<FieldError>);

impl Errors {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Every violation found, in the order found, or `Ok` if there was none.
    pub(super) fn finish(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.0))
        }
    }

    /// A list longer than the CRD's maxItems (which a server enforces, `appenv render` not).
    pub(super) fn at_most(&mut self, path: &str, len: usize, max: usize) {
        if len > max {
            self.add(
                path,
                format!("at most {max} items (as the CRD says), not {len}"),
            );
        }
    }

    pub(super) fn dns_label(&mut self, path: &str, value: &str, max: usize) {
        if !is_dns_label(value, max) {
            self.add(
                path,
                format!(
                    "{:?} must be a DNS label: at most {max} lower-case letters, digits and '-', \
                     starting with a letter and ending with a letter or digit",
                    truncate(value)
                ),
            );
        }
    }

    pub(super) fn env_name(&mut self, path: &str, value: &str) {
        if !is_env_name(value) {
            self.add(
                path,
                format!(
                    "{:?} is not a valid environment variable name (letters, digits, '_', '-', \
                     '.', not starting with a digit)",
                    truncate(value)
                ),
            );
        }
    }

    pub(super) fn resources(&mut self, path: &str, resources: &ResourceRequirements) {
        let maps = [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ];
        for (kind, map) in maps {
            for (name, value) in map.iter().flatten() {
                if quantity::parse(&value.0).is_none() {
                    self.add(
                        format!("{path}.{kind}.{name}"),
                        format!(
                            "{:?} is not a Kubernetes quantity (e.g. 100m, 1, 256Mi, 5Gi)",
                            truncate(&value.0)
                        ),
                    );
                }
            }
        }
        for name in ["cpu", "memory"] {
            let get = |m: &Option<BTreeMap<String, Quantity>>| {
                m.as_ref()
                    .and_then(|m| m.get(name))
                    .and_then(|q| quantity::parse(&q.0))
            };
            if let (Some(request), Some(limit)) = (get(&resources.requests), get(&resources.limits))
                && request > limit
            {
                self.add(
                    format!("{path}.requests.{name}"),
                    format!("must not exceed limits.{name}"),
                );
            }
        }
    }

    pub(super) fn storage(&mut self, path: &str, storage: &StorageSpec) -> StorageModel {
        if quantity::parse(&storage.size.0).is_none_or(|v| v <= 0.0) {
            self.add(
                format!("{path}.size"),
                format!(
                    "{:?} must be a positive quantity, e.g. 5Gi",
                    truncate(&storage.size.0)
                ),
            );
        }
        if let Some(class) = &storage.storage_class_name
            && !is_dns_subdomain(class)
        {
            self.add(
                format!("{path}.storageClassName"),
                "must be a DNS subdomain name",
            );
        }
        StorageModel {
            size: storage.size.clone(),
            storage_class_name: storage.storage_class_name.clone(),
        }
    }
}

pub fn is_dns_label(value: &str, max: usize) -> bool {
    let bytes = value.as_bytes();
    !value.is_empty()
        && value.len() <= max
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !value.ends_with('-')
}

pub fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|part| {
            let bytes = part.as_bytes();
            !part.is_empty()
                && part.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_env_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.as_bytes()[0].is_ascii_digit()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

pub(super) fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && is_label_value(name) && !name.is_empty()
}

pub(super) fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.is_empty()
        || (value.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// What a profile sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Workload {
    Web,
    Worker,
    Redis,
    Postgres,
}

/// Resources a profile gives a component that sets none: (requests cpu, memory, limits cpu, memory).
pub(super) fn profile_resources(profile: Profile, workload: Workload) -> ResourceRequirements {
    let (rc, rm, lc, lm) = match (profile, workload) {
        (Profile::Preview, Workload::Web) => ("50m", "128Mi", "500m", "512Mi"),
        (Profile::Preview, Workload::Worker) => ("100m", "256Mi", "500m", "512Mi"),
        (Profile::Preview, Workload::Redis) => ("50m", "128Mi", "200m", "256Mi"),
        (Profile::Preview, Workload::Postgres) => ("100m", "256Mi", "1", "1Gi"),
        (Profile::Production, Workload::Web | Workload::Worker) => ("250m", "512Mi", "1", "1Gi"),
        (Profile::Production, Workload::Redis) => ("100m", "256Mi", "500m", "512Mi"),
        (Profile::Production, Workload::Postgres) => ("250m", "512Mi", "2", "2Gi"),
    };
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(rc, rm)),
        limits: Some(pair(lc, lm)),
        ..ResourceRequirements::default()
    }
}

pub(super) fn check_annotations(
    path: &str,
    annotations: &BTreeMap<String, String>,
    errors: &mut Errors,
) {
    for key in annotations.keys() {
        if !is_label_key(key) {
            errors.add(
                format!("{path}[{}]", truncate(key)),
                "must be a valid annotation key",
            );
        }
    }
}

/// Variables appenv sets itself, each with the field it comes from: users may not set them too.
pub(super) type Reserved = BTreeMap<String, &'static str>;

pub(super) fn check_env(path: &str, env: &[EnvVar], reserved: &Reserved, errors: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        let at = format!("{path}[{i}].name");
        errors.env_name(&at, &var.name);
        if let Some(owner) = reserved.get(&var.name) {
            errors.add(
                &at,
                format!(
                    "{} is set by appenv from {owner}; remove it here",
                    truncate(&var.name)
                ),
            );
        }
        if !seen.insert(var.name.as_str()) {
            errors.add(&at, format!("{} is listed twice", truncate(&var.name)));
        }
    }
}
