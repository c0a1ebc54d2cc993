//! What example environments expect to exist that no operator makes: the Secrets and
//! ConfigMaps a user keeps in a secret manager. `appenv dev --examples` creates them with
//! placeholder values, as a user would: a copy source (`spec.namespace.copy`) in its namespace
//! before the environments, an object the environment reads from its own namespace once
//! appenv has created that namespace.

use anyhow::Context as _;
use appenv_api::{AppEnvironment, CopyKind};
use appenv_core::settings::{DnsLabel, Settings};
use k8s_openapi::api::core::v1::{ConfigMap, EnvFromSource, EnvVar, Namespace, Secret};
use kube::api::{Api, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The value of every placeholder key.
pub const PLACEHOLDER: &str = "placeholder";

/// One object to create, with the keys the environments read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub kind: CopyKind,
    pub namespace: String,
    pub name: String,
    pub keys: BTreeSet<String>,
    /// A copy source: created before the environments. Otherwise it lives in an environment's
    /// namespace, which appenv creates.
    pub source: bool,
}

/// Objects an environment names, with the keys it reads: from `envFrom`, every `env`'s
/// `valueFrom`, and an external database's Secret.
fn references(env: &AppEnvironment) -> BTreeMap<(CopyKind, String), BTreeSet<String>> {
    let spec = &env.spec;
    let mut out: BTreeMap<(CopyKind, String), BTreeSet<String>> = BTreeMap::new();
    for EnvFromSource {
        secret_ref,
        config_map_ref,
        ..
    } in &spec.env_from
    {
        if let Some(r) = secret_ref.as_ref().filter(|r| r.optional != Some(true)) {
            out.entry((CopyKind::Secret, r.name.clone())).or_default();
        }
        if let Some(r) = config_map_ref.as_ref().filter(|r| r.optional != Some(true)) {
            out.entry((CopyKind::ConfigMap, r.name.clone()))
                .or_default();
        }
    }
    let vars: Vec<&EnvVar> = spec
        .env
        .iter()
        .chain(&spec.web.env)
        .chain(spec.workers.iter().flat_map(|w| &w.env))
        .collect();
    for source in vars.iter().filter_map(|v| v.value_from.as_ref()) {
        if let Some(r) = source
            .secret_key_ref
            .as_ref()
            .filter(|r| r.optional != Some(true))
        {
            let entry = out.entry((CopyKind::Secret, r.name.clone())).or_default();
            entry.insert(r.key.clone());
        }
        if let Some(r) = source
            .config_map_key_ref
            .as_ref()
            .filter(|r| r.optional != Some(true))
        {
            let entry = out
                .entry((CopyKind::ConfigMap, r.name.clone()))
                .or_default();
            entry.insert(r.key.clone());
        }
    }
    if let Some(external) = spec.database.as_ref().and_then(|d| d.external.as_ref()) {
        let r = &external.secret_ref;
        let entry = out.entry((CopyKind::Secret, r.name.clone())).or_default();
        entry.insert(r.key.clone());
    }
    // The S3 credentials of backups and of a restore from another environment's bucket.
    let backup = spec.backup.as_ref().and_then(|b| b.destination.s3.as_ref());
    let restore = spec.database.as_ref().and_then(|d| d.restore.as_ref());
    let s3_secrets = backup
        .map(|s3| &s3.credentials_secret)
        .into_iter()
        .chain(restore.and_then(|r| r.credentials_secret.as_ref()));
    for name in s3_secrets {
        let entry = out.entry((CopyKind::Secret, name.clone())).or_default();
        entry.extend(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map(str::to_owned));
    }
    out
}

/// `settings` with the copy sources of `envs` allowed, as an operator for these examples would
/// be configured.
pub fn allowing_sources(envs: &[AppEnvironment], settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    for copy in envs.iter().flat_map(|e| &e.spec.namespace.copy) {
        if let Ok(ns) = DnsLabel::parse_copy_source(&copy.namespace)
            && !settings.copy_from_namespaces.contains(&ns)
        {
            settings.copy_from_namespaces.push(ns);
        }
    }
    settings
}

/// What `envs` expect to exist; environments `settings` does not accept are left out (the
/// operator reports them).
pub fn expected(envs: &[AppEnvironment], settings: &Settings) -> Vec<Placeholder> {
    let mut out: Vec<Placeholder> = Vec::new();
    for env in envs {
        let Ok(model) = appenv_core::validate::validate(env, settings) else {
            continue;
        };
        for ((kind, name), keys) in references(env) {
            let copied = model
                .namespace
                .copies
                .iter()
                .find(|c| c.kind == kind && c.name == name);
            let (namespace, source) = match copied {
                Some(copy) => (copy.namespace.clone(), true),
                None => (model.namespace.name.clone(), false),
            };
            match out
                .iter_mut()
                .find(|p| p.kind == kind && p.namespace == namespace && p.name == name)
            {
                Some(known) => known.keys.extend(keys),
                None => out.push(Placeholder {
                    kind,
                    namespace,
                    name,
                    keys,
                    source,
                }),
            }
        }
    }
    out
}

/// Create `placeholder` unless it exists (a user's own object is never overwritten); its
/// namespace too, for a copy source. Returns whether it was created.
pub async fn create(client: &kube::Client, placeholder: &Placeholder) -> anyhow::Result<bool> {
    let Placeholder {
        kind,
        namespace,
        name,
        keys,
        source,
    } = placeholder;
    if *source {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(namespace.clone());
        match Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(err) => return Err(err).context(format!("creating namespace {namespace}")),
        }
    }
    let data: BTreeMap<String, String> = keys
        .iter()
        .map(|k| (k.clone(), PLACEHOLDER.to_owned()))
        .collect();
    let mut meta = kube::api::ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        ..Default::default()
    };
    meta.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/created-by".to_owned(),
        "appenv-dev".to_owned(),
    )]));
    let created = match kind {
        CopyKind::Secret => {
            let secret = Secret {
                metadata: meta,
                string_data: Some(data),
                ..Secret::default()
            };
            Api::<Secret>::namespaced(client.clone(), namespace)
                .create(&PostParams::default(), &secret)
                .await
                .map(|_| ())
        }
        CopyKind::ConfigMap => {
            let config_map = ConfigMap {
                metadata: meta,
                data: Some(data),
                ..ConfigMap::default()
            };
            Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .create(&PostParams::default(), &config_map)
                .await
                .map(|_| ())
        }
    };
    match created {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(err) => Err(err).context(format!("creating {kind} {namespace}/{name}")),
    }
}

/// Create the placeholders that live in environments' namespaces, each once appenv has
/// created its namespace (polled, for at most `within`).
pub async fn create_in_environments(
    client: &kube::Client,
    placeholders: &[Placeholder],
    within: Duration,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + within;
    for placeholder in placeholders.iter().filter(|p| !p.source) {
        let ns = &placeholder.namespace;
        while namespaces.get_opt(ns).await?.is_none() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "namespace {ns} did not appear within {within:?} (is the operator running?)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        create(client, placeholder).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, yaml: &str) -> AppEnvironment {
        AppEnvironment::new(name, serde_norway::from_str(yaml).expect("spec"))
    }

    #[test]
    fn copy_sources_and_own_namespace_objects_with_the_keys_read() {
        let envs = [
            env(
                "shop",
                "{app: shop, image: 'shop:1', namespace: {copy: [{namespace: vault, name: creds}]}, \
                 envFrom: [{secretRef: {name: creds}}, {configMapRef: {name: flags}}, {secretRef: {name: maybe, optional: true}}], \
                 web: {env: [{name: A, valueFrom: {secretKeyRef: {name: creds, key: API_KEY}}}]}, \
                 database: {external: {secretRef: {name: creds, key: DB_URL}}}}",
            ),
            env(
                "shop-pr-1",
                "{app: shop, image: 'shop:1', preview: {pullRequest: 1}, namespace: {copy: [{namespace: vault, name: creds}]}, \
                 envFrom: [{secretRef: {name: creds}}]}",
            ),
        ];
        let settings = Settings {
            preview_domain: Some("preview.example.org".parse().expect("domain")),
            ..Settings::default()
        };
        // Without the source allowed, nothing validates: the operator would refuse them.
        assert_eq!(expected(&envs, &settings), vec![]);
        let settings = allowing_sources(&envs, &settings);
        assert_eq!(
            settings
                .copy_from_namespaces
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["vault"]
        );
        let keys = |list: &[&str]| list.iter().map(|k| (*k).to_owned()).collect();
        assert_eq!(
            expected(&envs, &settings),
            vec![
                Placeholder {
                    kind: CopyKind::Secret,
                    namespace: "vault".into(),
                    name: "creds".into(),
                    keys: keys(&["API_KEY", "DB_URL"]),
                    source: true,
                },
                Placeholder {
                    kind: CopyKind::ConfigMap,
                    namespace: "shop".into(),
                    name: "flags".into(),
                    keys: keys(&[]),
                    source: false,
                },
            ]
        );
    }
}
