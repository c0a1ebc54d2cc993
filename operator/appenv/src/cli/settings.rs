//! Operator settings shared by `render` and `operator`, each a flag with an environment fallback.
//! Every value is parsed into its checked type at start, so a bad one stops the process with a
//! message that names the flag and the rule.

use appenv_core::settings::{
    CheckedQuantity, DEFAULT_AGENT_IMAGE, DnsLabel, DnsName, ImagePattern, Quota, SecretRef,
    ServiceRef, Settings, parse_duration,
};
use appenv_core::validate::MIN_SLEEP_AFTER;

#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    /// Domain for preview hosts: `<app>-pr-<n>.<domain>`.
    #[arg(long, env = "APPENV_PREVIEW_DOMAIN", value_parser = DnsName::parse)]
    pub preview_domain: Option<DnsName>,
    /// IngressClass for Ingresses that name none.
    #[arg(long, env = "APPENV_INGRESS_CLASS", value_parser = DnsName::parse)]
    pub ingress_class: Option<DnsName>,
    /// Namespace of the ingress controller, allowed in by previews' NetworkPolicy.
    #[arg(
        long,
        env = "APPENV_INGRESS_NAMESPACE",
        default_value = "ingress-nginx",
        value_parser = DnsLabel::parse
    )]
    pub ingress_namespace: DnsLabel,
    /// TTL of previews that set none, e.g. 72h.
    #[arg(long, env = "APPENV_PREVIEW_TTL", default_value = "72h", value_parser = parse_duration)]
    pub preview_ttl: std::time::Duration,
    /// How long a preview that sets no spec.sleep may go without an HTTP request before it
    /// sleeps (at least 2m), e.g. 30m; unset: previews do not sleep unless they ask. Needs the
    /// activator on their traffic path.
    #[arg(long, env = "APPENV_PREVIEW_SLEEP_AFTER", value_parser = parse_sleep_after)]
    pub preview_sleep_after: Option<std::time::Duration>,
    /// The activator's Service, `NAMESPACE/NAME:PORT` (the chart sets it when the activator is
    /// enabled): environments that can sleep are reached through it. Without it, an
    /// environment that asks to sleep is refused (nothing would wake it on a request).
    #[arg(long, env = "APPENV_ACTIVATOR_SERVICE", value_parser = ServiceRef::parse)]
    pub activator_service: Option<ServiceRef>,
    /// ResourceQuota of preview namespaces: requests.cpu.
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_CPU", default_value = "4", value_parser = CheckedQuantity::parse)]
    pub preview_quota_cpu: CheckedQuantity,
    /// ResourceQuota of preview namespaces: requests.memory.
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_MEMORY", default_value = "8Gi", value_parser = CheckedQuantity::parse)]
    pub preview_quota_memory: CheckedQuantity,
    /// ResourceQuota of preview namespaces: pods (a whole number).
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_PODS", default_value = "40", value_parser = CheckedQuantity::parse_count)]
    pub preview_quota_pods: CheckedQuantity,
    /// A wildcard TLS Secret (`namespace/name`) copied into every preview namespace and used
    /// by previews' Ingresses, so previews never request certificates of their own.
    #[arg(long, env = "APPENV_WILDCARD_TLS_SECRET", value_parser = SecretRef::parse)]
    pub wildcard_tls_secret: Option<SecretRef>,
    /// ResourceQuota of preview namespaces: requests.storage.
    #[arg(long, env = "APPENV_PREVIEW_QUOTA_STORAGE", default_value = "20Gi", value_parser = CheckedQuantity::parse)]
    pub preview_quota_storage: CheckedQuantity,
    /// A namespace whose Secrets and ConfigMaps environments may copy into theirs
    /// (`spec.namespace.copy`); repeat the flag for more, or separate them with commas.
    /// Everything in such a namespace is readable by whoever may create an AppEnvironment.
    #[arg(
        long = "copy-from-namespace",
        env = "APPENV_COPY_FROM_NAMESPACES",
        value_delimiter = ',',
        value_parser = DnsLabel::parse_copy_source
    )]
    pub copy_from_namespaces: Vec<DnsLabel>,
    /// A namespace environments may adopt (`spec.namespace.adopt`) without its own opt-in label
    /// `appenv.dev/adoptable: "true"`; repeat the flag for more, or separate them with commas.
    #[arg(
        long = "adoptable-namespace",
        env = "APPENV_ADOPTABLE_NAMESPACES",
        value_delimiter = ',',
        value_parser = DnsLabel::parse
    )]
    pub adoptable_namespaces: Vec<DnsLabel>,
    /// The operator's own namespace, which no environment may own or adopt (the chart sets it
    /// to the release namespace).
    #[arg(long, env = "APPENV_OPERATOR_NAMESPACE", value_parser = DnsLabel::parse)]
    pub operator_namespace: Option<DnsLabel>,
    /// An image pattern previews may run (`*` for any characters, e.g. `ghcr.io/acme/*`);
    /// repeat the flag for more, or separate them with commas. None: previews may run any image.
    #[arg(
        long = "preview-image",
        env = "APPENV_PREVIEW_IMAGES",
        value_delimiter = ',',
        value_parser = ImagePattern::parse
    )]
    pub preview_images: Vec<ImagePattern>,
    /// The image with the `appenv` binary that backup Jobs run the agent from (the chart sets
    /// the operator's own image). Default: this version's release image.
    #[arg(long, env = "APPENV_AGENT_IMAGE", default_value = DEFAULT_AGENT_IMAGE, value_parser = parse_image)]
    pub agent_image: String,
}

/// An image reference: not empty, no whitespace, at most 255 characters.
fn parse_image(text: &str) -> Result<String, String> {
    let ok = !text.is_empty() && text.len() <= 255 && !text.chars().any(char::is_whitespace);
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} must be an image reference, e.g. ghcr.io/appenv-dev/appenv:0.1.0 (no spaces, at most 255 characters)"
        ))
    }
}

/// A sleep period of at least [`MIN_SLEEP_AFTER`], e.g. 30m.
fn parse_sleep_after(text: &str) -> Result<std::time::Duration, String> {
    match appenv_core::validate::parse_ttl(text) {
        Some(after) if after >= MIN_SLEEP_AFTER => Ok(after),
        Some(_) => Err(format!(
            "{text:?} is shorter than 2m: the activator reports requests once a minute"
        )),
        None => Err(format!(
            "{text:?} must be a positive number followed by s, m, h or d, e.g. 30m"
        )),
    }
}

impl SettingsArgs {
    pub fn to_settings(&self) -> Settings {
        Settings {
            preview_domain: self.preview_domain.clone(),
            ingress_class: self.ingress_class.clone(),
            ingress_namespace: self.ingress_namespace.clone(),
            preview_ttl: self.preview_ttl,
            preview_sleep_after: self.preview_sleep_after,
            activator_service: self.activator_service.clone(),
            preview_quota: Quota {
                cpu: self.preview_quota_cpu.clone(),
                memory: self.preview_quota_memory.clone(),
                pods: self.preview_quota_pods.clone(),
                storage: self.preview_quota_storage.clone(),
            },
            wildcard_tls: self.wildcard_tls_secret.clone(),
            copy_from_namespaces: self.copy_from_namespaces.clone(),
            adoptable_namespaces: self.adoptable_namespaces.clone(),
            operator_namespace: self.operator_namespace.clone(),
            preview_images: self.preview_images.clone(),
            agent_image: self.agent_image.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    /// `appenv render -f x.yaml` with `flags` after it.
    fn render(flags: &[&str]) -> Result<Cli, clap::Error> {
        let args = ["appenv", "render", "-f", "x.yaml"];
        Cli::try_parse_from(args.iter().chain(flags))
    }

    fn rejection(flags: &[&str]) -> String {
        match render(flags) {
            Ok(cli) => panic!("{flags:?} accepted: {cli:?}"),
            Err(err) => {
                assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
                err.to_string()
            }
        }
    }

    #[test]
    fn a_bad_quota_names_the_flag_and_the_rule() {
        let message = rejection(&["--preview-quota-cpu", "four"]);
        assert!(message.contains("--preview-quota-cpu"), "{message}");
        assert!(
            message.contains("\"four\" is not a Kubernetes quantity"),
            "{message}"
        );
        let message = rejection(&["--preview-quota-pods", "1.5"]);
        assert!(message.contains("--preview-quota-pods"), "{message}");
        assert!(message.contains("must be a whole number"), "{message}");
    }

    #[test]
    fn a_bad_wildcard_reference_names_the_flag_and_the_rule() {
        let message = rejection(&["--wildcard-tls-secret", "wildcard-tls"]);
        assert!(message.contains("--wildcard-tls-secret"), "{message}");
        assert!(message.contains("must be NAMESPACE/NAME"), "{message}");
        let message = rejection(&["--wildcard-tls-secret", "Ingress/wildcard-tls"]);
        assert!(message.contains("--wildcard-tls-secret"), "{message}");
        assert!(
            message.contains("\"Ingress\" must be a DNS label"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_duration_or_name_names_the_flag_and_the_rule() {
        let message = rejection(&["--preview-ttl", "3 days"]);
        assert!(message.contains("--preview-ttl"), "{message}");
        assert!(message.contains("followed by s, m, h or d"), "{message}");
        let message = rejection(&["--preview-domain", "Preview.Example.com"]);
        assert!(message.contains("--preview-domain"), "{message}");
        assert!(message.contains("must be a DNS name"), "{message}");
        let message = rejection(&["--ingress-namespace", "ingress.nginx"]);
        assert!(message.contains("--ingress-namespace"), "{message}");
        assert!(message.contains("must be a DNS label"), "{message}");
    }

    #[test]
    fn good_flags_become_typed_settings() {
        let cli = render(&[
            "--preview-quota-cpu",
            "500m",
            "--preview-quota-pods",
            "12",
            "--wildcard-tls-secret",
            "ingress-nginx/wildcard-tls",
            "--preview-ttl",
            "2d",
            "--preview-domain",
            "preview.example.com",
        ])
        .expect("valid flags");
        let Command::Render(args) = cli.command else {
            panic!("not render: {cli:?}")
        };
        let settings = args.settings.to_settings();
        assert_eq!(&*settings.preview_quota.cpu, "500m");
        assert_eq!(&*settings.preview_quota.pods, "12");
        assert_eq!(&*settings.preview_quota.memory, "8Gi");
        let wildcard = settings.wildcard_tls.expect("wildcard");
        assert_eq!(
            (wildcard.namespace(), wildcard.name()),
            ("ingress-nginx", "wildcard-tls")
        );
        assert_eq!(settings.preview_ttl.as_secs(), 2 * 86_400);
        assert_eq!(
            settings.preview_domain.as_deref(),
            Some("preview.example.com")
        );
        assert_eq!(&*settings.ingress_namespace, "ingress-nginx");
    }
}
