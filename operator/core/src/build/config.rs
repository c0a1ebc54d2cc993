//! `<app>-env`: the variables appenv itself provides (Redis URLs, the embedded database's
//! path, the environment's identity), shared by every application container.

use crate::build::Inputs;
use crate::build::meta::object_meta;
use crate::validate::{DatabaseModel, Model};
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;

pub fn env_config_map_name(model: &Model) -> String {
    format!("{}-env", model.app)
}

pub fn postgres_secret_name(model: &Model) -> String {
    format!("{}-postgres-credentials", model.app)
}

pub fn redis_url(model: &Model) -> String {
    format!("redis://{}-redis:6379/0", model.app)
}

pub fn env_config_map(model: &Model, inputs: &Inputs) -> ConfigMap {
    let mut data = BTreeMap::from([
        ("APPENV_APP".to_owned(), model.app.clone()),
        ("APPENV_ENVIRONMENT".to_owned(), model.name.clone()),
    ]);
    if let Some(preview) = &model.preview {
        data.insert(
            "APPENV_PULL_REQUEST".to_owned(),
            preview.pull_request.to_string(),
        );
    }
    for var in model.redis.iter().flat_map(|r| r.url_env.iter()) {
        data.insert(var.clone(), redis_url(model));
    }
    if let Some(DatabaseModel::Embedded(em)) = &model.database {
        data.insert(em.path_env.clone(), em.path.clone());
    }
    ConfigMap {
        metadata: object_meta(model, inputs, &env_config_map_name(model), "config"),
        data: Some(data),
        ..ConfigMap::default()
    }
}
