//! What every application Pod shares: the Pod Security "restricted" defaults, the
//! environment wiring, and a writable `/tmp` on a read-only root filesystem.

use crate::build::config::{env_config_map_name, postgres_secret_name};
use crate::build::meta::CONFIG_HASH_ANNOTATION;
use crate::validate::{DatabaseModel, Model};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
    LocalObjectReference, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use std::collections::BTreeMap;

pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Pod-level security for a given user, group and volume group.
pub fn restricted_pod(user: i64, group: i64, fs_group: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(group),
        fs_group: Some(fs_group),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// A volume of the claim `claim`, read-write.
pub fn claim_volume(name: &str, claim: String) -> Volume {
    Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: Some(false),
        }),
        ..Volume::default()
    }
}

pub fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// A Pod spec for the application's image: restricted security, no service-account token,
/// no service-link variables (they would clash with names like `REDIS_PORT`), `/tmp` writable.
pub fn app_pod_spec(model: &Model, mut volumes: Vec<Volume>) -> PodSpec {
    volumes.insert(0, empty_dir("tmp"));
    PodSpec {
        security_context: Some(restricted_pod(
            model.security.run_as_user,
            model.security.run_as_group,
            model.security.fs_group,
        )),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        image_pull_secrets: (!model.pull_secrets.is_empty()).then(|| {
            model
                .pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Variables of an application container: the shared ones, the database URL from its Secret,
/// then the component's own.
pub fn app_env(model: &Model, component_env: &[EnvVar]) -> Vec<EnvVar> {
    let mut env = model.env.clone();
    match &model.database {
        Some(DatabaseModel::Postgres(pg)) => {
            env.push(secret_env(&pg.url_env, &postgres_secret_name(model), "url"));
        }
        Some(DatabaseModel::External {
            secret,
            key,
            url_env,
        }) => {
            env.push(secret_env(url_env, secret, key));
        }
        Some(DatabaseModel::Embedded(_)) | None => {}
    }
    env.extend(component_env.iter().cloned());
    env
}

/// `envFrom` of an application container: appenv's ConfigMap first, then the user's sources.
pub fn app_env_from(model: &Model) -> Vec<EnvFromSource> {
    let mut from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: env_config_map_name(model),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }];
    from.extend(model.env_from.iter().cloned());
    from
}

/// The user's Pod annotations plus the configuration hash (which always wins: it is what
/// rolls the Pods when their configuration changes).
pub fn pod_annotations(
    user: &BTreeMap<String, String>,
    config_hash: &str,
) -> BTreeMap<String, String> {
    let mut annotations = user.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned());
    annotations
}
