//! The build step: pure functions from a validated [`Model`] to the Kubernetes objects of one
//! environment. No I/O: the same output feeds the controller's server-side apply and
//! `appenv render`. One file per kind of child; all metadata goes through [`meta`].

mod autoscaling;
mod backup;
mod config;
mod copy;
mod guardrails;
mod meta;
mod migrations;
mod namespace;
mod pod;
mod postgres;
mod redis;
mod tls;
mod web;
mod workers;

pub use autoscaling::{
    Autoscaler, AutoscalerKind, CPU_TARGET_PERCENT, ClusterApis, HpaVersion, queue_key,
};
pub use backup::{
    BackupReason, BackupRun, REASON_ANNOTATION, RestoreRun, SNAPSHOT_API_VERSION,
    STARTED_ANNOTATION, Store, backup_volume_name, before_migration_job_name,
    initial_restore_job_name, requested_job_name, requested_restore_job_name, scheduled_job_name,
    seed_job_name,
};
pub use config::{env_config_map_name, postgres_secret_name};
pub use copy::{COPIED_FROM_ANNOTATION, Copied, Source as CopySource};
pub use meta::{
    APPLIED_HASH_ANNOTATION, ENVIRONMENT_LABEL, FIELD_MANAGER, MANAGED_BY, RETAINED_LABEL,
    hash_json, hash_of, labels, selector,
};
pub use migrations::migration_job_name;
pub use postgres::service_name as postgres_service_name;
pub use tls::WildcardTls;
pub use web::{data_volume_name, url};

use crate::validate::Model;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use secrecy::SecretString;
use serde_json::Value;

/// Inputs of a build that do not come from the spec.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Reference to the AppEnvironment (absent when rendering offline: the operator adds it).
    pub owner: Option<OwnerReference>,
    /// The generated database password: read back from the cluster by the controller (it is
    /// generated once, never again), generated fresh by `render --with-credentials`, and
    /// absent in a plain render, which must be deterministic. Neither Debug nor Display shows
    /// it: only the credentials Secret's builder exposes it.
    pub postgres_password: Option<SecretString>,
    /// The image web and workers run when it is not the spec's yet: the controller holds them
    /// at the previous image until the migration for the new one succeeded.
    pub workload_image: Option<String>,
    /// The operator-wide wildcard certificate, as the controller read it: a preview gets a
    /// copy (absent when none is configured, and when rendering offline).
    pub wildcard_tls: Option<WildcardTls>,
    /// The sources of `spec.namespace.copy` the controller found (absent offline).
    pub copies: Vec<Copied>,
    /// What the cluster offers for autoscaling workers (discovered once by the controller).
    pub cluster: ClusterApis,
    /// The backup the controller starts in this reconcile (none offline).
    pub backup: Option<BackupRun>,
    /// Hold web at zero replicas: a DuckDB backup copies the file only once no web Pod exists.
    pub stop_web: bool,
    /// Hold the workers at zero replicas (an in-place restore), their autoscalers removed.
    pub stop_workers: bool,
    /// The restore the controller starts in this reconcile.
    pub restore: Option<RestoreRun>,
    /// Start the seed Job in this reconcile.
    pub seed: bool,
}

impl Inputs {
    /// The image of web and of workers that follow the environment's image.
    pub fn workload_image<'a>(&'a self, model: &'a Model) -> &'a str {
        self.workload_image.as_deref().unwrap_or(&model.image)
    }
}

/// Every child of an environment. Debug shows each object's kind and name only: the
/// credentials Secret and the certificate copy hold secret values.
#[derive(Clone)]
pub struct Children {
    pub namespace: Namespace,
    pub guardrails: Option<Guardrails>,
    /// Non-secret variables for every component (`<app>-env`).
    pub config: ConfigMap,
    pub postgres: Option<Postgres>,
    pub redis: Option<Redis>,
    /// The embedded database's ReadWriteOnce volume.
    pub data_volume: Option<PersistentVolumeClaim>,
    pub migration: Option<Job>,
    /// The backup volume (`spec.backup.destination.volume`).
    pub backup_volume: Option<PersistentVolumeClaim>,
    /// The backup Job the controller starts in this reconcile.
    pub backup: Option<Job>,
    /// The backup `VolumeSnapshot` the controller starts in this reconcile, instead of a Job
    /// (`spec.backup.destination.volumeSnapshot`).
    pub backup_snapshot: Option<Value>,
    /// The restore Job the controller starts in this reconcile.
    pub restore: Option<Job>,
    /// The claim made from a VolumeSnapshot that the restore Job reads.
    pub restore_claim: Option<PersistentVolumeClaim>,
    /// The seed Job (after the initial restore), when the controller starts it.
    pub seed: Option<Job>,
    pub web: Web,
    pub workers: Vec<Deployment>,
    /// Autoscalers of the autoscaled workers (ScaledObjects or HorizontalPodAutoscalers).
    pub autoscalers: Vec<Autoscaler>,
    /// A preview's copy of the wildcard certificate its Ingress serves.
    pub wildcard_tls: Option<Secret>,
    /// Copies of Secrets (`spec.namespace.copy`).
    pub copied_secrets: Vec<Secret>,
    /// Copies of ConfigMaps (`spec.namespace.copy`).
    pub copied_config_maps: Vec<ConfigMap>,
}

#[derive(Debug, Clone)]
pub struct Guardrails {
    pub quota: ResourceQuota,
    pub limits: LimitRange,
    pub network_policy: NetworkPolicy,
}

/// Debug shows names only: the credentials Secret holds the password.
#[derive(Clone)]
pub struct Postgres {
    pub credentials: Secret,
    pub init: ConfigMap,
    pub service: Service,
    pub statefulset: StatefulSet,
}

#[derive(Debug, Clone)]
pub struct Redis {
    pub volume: Option<PersistentVolumeClaim>,
    pub deployment: Deployment,
    pub service: Service,
}

#[derive(Debug, Clone)]
pub struct Web {
    pub deployment: Deployment,
    pub service: Service,
    pub ingress: Option<Ingress>,
    /// For an environment that can sleep: an ExternalName Service of the activator, which the
    /// Ingress sends requests to (an Ingress names Services of its own namespace only).
    pub activator: Option<Service>,
}

/// Build every child of the environment.
pub fn build(model: &Model, inputs: &Inputs) -> Children {
    let config = config::env_config_map(model, inputs);
    let config_hash = meta::hash_json(&config.data);
    let (copied_secrets, copied_config_maps) = copy::copies(model, inputs);
    Children {
        namespace: namespace::namespace(model, inputs),
        guardrails: guardrails::guardrails(model, inputs),
        postgres: postgres::postgres(model, inputs),
        redis: redis::redis(model, inputs),
        data_volume: web::data_volume(model, inputs),
        migration: migrations::job(model, inputs, &config_hash),
        backup_volume: backup::backup_volume(model, inputs),
        backup: inputs
            .backup
            .as_ref()
            .and_then(|run| backup::job(model, inputs, run)),
        backup_snapshot: inputs
            .backup
            .as_ref()
            .and_then(|run| backup::snapshot(model, inputs, run)),
        restore: inputs
            .restore
            .as_ref()
            .and_then(|run| backup::restore_job(model, inputs, run)),
        restore_claim: inputs
            .restore
            .as_ref()
            .and_then(|run| backup::restore_claim(model, inputs, run)),
        seed: inputs
            .seed
            .then(|| migrations::seed_job(model, inputs, &config_hash))
            .flatten(),
        web: Web {
            deployment: web::deployment(model, inputs, &config_hash),
            service: web::service(model, inputs),
            ingress: web::ingress(model, inputs),
            activator: web::activator(model, inputs),
        },
        workers: workers::deployments(model, inputs, &config_hash),
        autoscalers: autoscaling::autoscalers(model, inputs),
        wildcard_tls: tls::wildcard_copy(model, inputs),
        copied_secrets,
        copied_config_maps,
        config,
    }
}

impl Children {
    /// All objects as JSON, in an order that applies cleanly: the namespace, its guardrails,
    /// configuration, volumes and services, then workloads, the migration before the
    /// workloads that wait for it, and the Ingress last (after the certificate it serves).
    pub fn objects(&self) -> Vec<Value> {
        // Destructured without `..`: a new kind of child does not compile until it is listed.
        let Children {
            namespace,
            guardrails,
            config,
            postgres,
            redis,
            data_volume,
            migration,
            backup_volume,
            backup,
            backup_snapshot,
            restore,
            restore_claim,
            seed,
            web,
            workers,
            autoscalers,
            wildcard_tls,
            copied_secrets,
            copied_config_maps,
        } = self;
        let mut out = vec![to_value(namespace)];
        if let Some(Guardrails {
            quota,
            limits,
            network_policy,
        }) = guardrails
        {
            out.extend([to_value(quota), to_value(limits), to_value(network_policy)]);
        }
        out.push(to_value(config));
        // Before the workloads whose Pods read them (the certificate before the Ingress).
        out.extend(copied_secrets.iter().chain(wildcard_tls).map(to_value));
        out.extend(copied_config_maps.iter().map(to_value));
        if let Some(Postgres {
            credentials,
            init,
            service,
            statefulset,
        }) = postgres
        {
            out.extend([
                to_value(credentials),
                to_value(init),
                to_value(service),
                to_value(statefulset),
            ]);
        }
        if let Some(Redis {
            volume,
            deployment,
            service,
        }) = redis
        {
            out.extend(volume.iter().map(to_value));
            out.extend([to_value(service), to_value(deployment)]);
        }
        out.extend(
            data_volume
                .iter()
                .chain(backup_volume)
                .chain(restore_claim)
                .map(to_value),
        );
        // A backup before the migration it protects.
        out.extend((backup.iter().chain(restore).chain(seed).chain(migration)).map(to_value));
        out.extend(backup_snapshot.iter().cloned());
        let Web {
            deployment,
            service,
            ingress,
            activator,
        } = web;
        out.extend([to_value(service), to_value(deployment)]);
        out.extend(activator.iter().map(to_value));
        out.extend(workers.iter().map(to_value));
        out.extend(autoscalers.iter().map(|a| a.object.clone()));
        out.extend(ingress.iter().map(to_value));
        out
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.name.clone().unwrap_or_default()
        };
        f.debug_struct("Postgres")
            .field("credentials", &name(&self.credentials.metadata))
            .field("init", &name(&self.init.metadata))
            .field("service", &name(&self.service.metadata))
            .field("statefulset", &name(&self.statefulset.metadata))
            .finish()
    }
}

impl std::fmt::Debug for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.objects().into_iter().map(|object| {
            let text = |value: &Value| value.as_str().unwrap_or("?").to_owned();
            format!(
                "{}/{}",
                text(&object["kind"]),
                text(&object["metadata"]["name"])
            )
        });
        f.debug_list().entries(names).finish()
    }
}

/// A Service for one port of a component's Pods; `headless` for a StatefulSet's identity.
fn service(
    meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    selector: std::collections::BTreeMap<String, String>,
    port_name: &str,
    port: i32,
    target_port: i32,
    headless: bool,
) -> Service {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: (!headless).then(|| "ClusterIP".to_owned()),
            cluster_ip: headless.then(|| "None".to_owned()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(port_name.to_owned()),
                port,
                target_port: Some(IntOrString::Int(target_port)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    // k8s-openapi objects always serialize to JSON objects.
    serde_json::to_value(object).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::validate::validate;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec};

    #[test]
    fn the_password_is_in_the_credentials_secret_and_in_no_debug_output() {
        let spec: AppEnvironmentSpec =
            serde_norway::from_str("{app: shop, image: 'shop:1', database: {postgres: {}}}")
                .expect("spec");
        let model =
            validate(&AppEnvironment::new("shop", spec), &Settings::default()).expect("valid");
        let password = "s3cretPassw0rdThatMustNotLeak123";
        let inputs = Inputs {
            postgres_password: Some(password.into()),
            ..Inputs::default()
        };
        let children = build(&model, &inputs);
        let credentials = &children.postgres.as_ref().expect("postgres").credentials;
        let data = credentials.data.as_ref().expect("data");
        assert_eq!(data["password"].0, password.as_bytes());
        assert!(String::from_utf8_lossy(&data["url"].0).contains(password));
        let postgres = children.postgres.as_ref().expect("postgres");
        for shown in [
            format!("{inputs:?}"),
            format!("{children:?}"),
            format!("{postgres:?}"),
        ] {
            assert!(!shown.contains(password), "{shown}");
        }
        assert!(format!("{children:?}").contains("Secret/shop-postgres-credentials"));
    }
}
