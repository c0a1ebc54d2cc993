//! Operator settings shared by `render` and `operator`, each a flag with an environment fallback.

use appenv_core::validate::{Quota, Settings};

#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    /// Domain for preview hosts: `<app>-pr-<n>.<domain>`.
    #[arg(long, env = "APPENV_PREVIEW_DOMAIN")]
    pub preview_domain: Option<String>,
    /// IngressClass for Ingresses that name none.
    #[arg(long, env = "APPENV_INGRESS_CLASS")]
    pub ingress_class: Option<String>,
    /// Namespace of the ingress controller, allowed in by previews' NetworkPolicy.
    #[arg(
        long,
        env = "APPENV_INGRESS_NAMESPACE",
        default_value = "ingress-nginx"
    )]
    pub ingress_namespace: String,
    /// TTL of previews that set none, e.g. 72h.
    #[arg(long, env = "APPENV_PREVIEW_TTL", default_value = "72h", value_parser = parse_duration)]
    pub preview_ttl: std::time::Duration,
    /// ResourceQuota of preview namespaces: requests.cpu.
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_CPU", default_value = "4")]
    pub preview_quota_cpu: String,
    /// ResourceQuota of preview namespaces: requests.memory.
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_MEMORY", default_value = "8Gi")]
    pub preview_quota_memory: String,
    /// ResourceQuota of preview namespaces: pods.
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_PODS", default_value = "40")]
    pub preview_quota_pods: String,
    /// A wildcard TLS Secret (`namespace/name`) copied into every preview namespace and used
    /// by previews' Ingresses, so previews never request certificates of their own.
    #[arg(long, env = "APPENV_WILDCARD_TLS_SECRET", value_parser = parse_secret_ref)]
    pub wildcard_tls_secret: Option<(String, String)>,
    /// ResourceQuota of preview namespaces: requests.storage.
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_STORAGE", default_value = "20Gi")]
    pub preview_quota_storage: String,
}

fn parse_secret_ref(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?}: expected NAMESPACE/NAME of a TLS Secret")),
    }
}

/// A duration such as `72h`, `10m`, `30s` or `7d` (TTLs and timeouts).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    appenv_core::validate::parse_ttl(text).ok_or_else(|| {
        format!("{text:?}: expected a number followed by s, m, h or d, e.g. 72h or 10m")
    })
}

impl SettingsArgs {
    pub fn to_settings(&self) -> Settings {
        Settings {
            preview_domain: self.preview_domain.clone(),
            ingress_class: self.ingress_class.clone(),
            ingress_namespace: self.ingress_namespace.clone(),
            preview_ttl: self.preview_ttl,
            preview_quota: Quota {
                cpu: self.preview_quota_cpu.clone(),
                memory: self.preview_quota_memory.clone(),
                pods: self.preview_quota_pods.clone(),
                storage: self.preview_quota_storage.clone(),
            },
            wildcard_tls: self.wildcard_tls_secret.clone(),
        }
    }
}
