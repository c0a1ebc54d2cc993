//! `spec.redis`: a Redis Deployment, the variables that carry its URL, and its volume.

use super::rules::{Errors, Workload, profile_resources};
use super::{DEFAULT_REDIS_IMAGE, REDIS_URL_ENV, RedisModel};
use appenv_api::AppEnvironmentSpec;
use appenv_api::field::truncate;

pub(super) fn redis(spec: &AppEnvironmentSpec, errors: &mut Errors) -> Option<RedisModel> {
    let r = spec.redis.as_ref().filter(|r| r.enabled)?;
    let mut url_env = vec![REDIS_URL_ENV.to_owned()];
    for (i, extra) in r.url_env.iter().enumerate() {
        errors.env_name(&format!("spec.redis.urlEnv[{i}]"), extra);
        if url_env.contains(extra) {
            errors.add(
                format!("spec.redis.urlEnv[{i}]"),
                format!("{} is listed twice", truncate(extra)),
            );
        }
        url_env.push(extra.clone());
    }
    let resources = r
        .resources
        .clone()
        .unwrap_or_else(|| profile_resources(spec.profile, Workload::Redis));
    errors.resources("spec.redis.resources", &resources);
    Some(RedisModel {
        image: r
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_IMAGE.to_owned()),
        resources,
        persistence: r
            .persistence
            .as_ref()
            .map(|p| errors.storage("spec.redis.persistence", p)),
        url_env,
    })
}
