//! Operator-wide settings that validation and the builders depend on, each checked when it is
//! parsed: the operator reads them from its flags at start, so a bad value stops it there,
//! naming the flag, instead of failing every environment's apply later.

use crate::quantity;
use crate::validate::{is_dns_subdomain, parse_ttl};
use appenv_api::field::truncate;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::time::Duration;

/// Operator-wide settings that validation and the builders depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Domain under which previews get a host: `<app>-pr-<n>.<domain>`.
    pub preview_domain: Option<DnsName>,
    /// IngressClass for Ingresses that name none.
    pub ingress_class: Option<DnsName>,
    /// Namespace of the ingress controller (allowed in by previews' NetworkPolicy).
    pub ingress_namespace: DnsLabel,
    /// TTL of previews that set none.
    pub preview_ttl: Duration,
    /// How long a preview that sets no `spec.sleep` may be idle before it sleeps (`None`:
    /// previews do not sleep unless they ask).
    pub preview_sleep_after: Option<Duration>,
    /// The activator's Service (`--activator-service`): the Ingress of an environment that can
    /// sleep sends its requests there (through an ExternalName Service of its namespace), so that
    /// a request is seen and wakes it.
    pub activator_service: Option<ServiceRef>,
    /// ResourceQuota of preview namespaces.
    pub preview_quota: Quota,
    /// A wildcard certificate (a TLS Secret) copied into every preview namespace under the
    /// same name and used by previews' Ingresses that set no TLS.
    pub wildcard_tls: Option<SecretRef>,
    /// Namespaces whose Secrets and ConfigMaps environments may copy into theirs
    /// (`spec.namespace.copy`). Every object in them is readable by whoever may create an
    /// AppEnvironment: list only namespaces that hold what environments may use.
    pub copy_from_namespaces: Vec<DnsLabel>,
    /// Namespaces environments may adopt without the namespace's own opt-in label
    /// ([`ADOPTABLE_LABEL`]).
    pub adoptable_namespaces: Vec<DnsLabel>,
    /// The operator's own namespace: never an environment's, owned or adopted.
    pub operator_namespace: Option<DnsLabel>,
    /// Images previews may run (`spec.image`, a worker's, Redis's, PostgreSQL's); empty: any.
    pub preview_images: Vec<ImagePattern>,
    /// The image that holds the `appenv` binary (the operator's own): backup Jobs run the agent
    /// from it, or copy it from it into the database's image (PostgreSQL, so that `pg_dump` is
    /// the server's version).
    pub agent_image: String,
}

/// The agent image when no setting names one: this version's release image.
pub const DEFAULT_AGENT_IMAGE: &str =
    concat!("ghcr.io/appenv-dev/appenv:", env!("CARGO_PKG_VERSION"));

/// The label by which a namespace's own editors let environments adopt it.
pub const ADOPTABLE_LABEL: &str = "appenv.dev/adoptable";

/// The `hard` limits of a preview namespace's ResourceQuota.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// `requests.cpu`
    pub cpu: CheckedQuantity,
    /// `requests.memory`
    pub memory: CheckedQuantity,
    /// `pods` (a whole number)
    pub pods: CheckedQuantity,
    /// `requests.storage`
    pub storage: CheckedQuantity,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            preview_domain: None,
            ingress_class: None,
            ingress_namespace: DnsLabel("ingress-nginx".to_owned()),
            preview_ttl: Duration::from_secs(72 * 3600),
            preview_sleep_after: None,
            activator_service: None,
            preview_quota: Quota {
                cpu: CheckedQuantity("4".to_owned()),
                memory: CheckedQuantity("8Gi".to_owned()),
                pods: CheckedQuantity("40".to_owned()),
                storage: CheckedQuantity("20Gi".to_owned()),
            },
            wildcard_tls: None,
            copy_from_namespaces: Vec::new(),
            adoptable_namespaces: Vec::new(),
            operator_namespace: None,
            preview_images: Vec::new(),
            agent_image: DEFAULT_AGENT_IMAGE.to_owned(),
        }
    }
}

/// A setting that breaks its rule; the message quotes the value (cut short) and names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("{0:?} is not a Kubernetes quantity (e.g. 100m, 1, 256Mi, 5Gi)")]
    Quantity(String),
    #[error("{0:?} must be a whole number, e.g. 40")]
    Count(String),
    #[error(
        "{0:?} must be a DNS name: dot-separated parts of at most 63 lower-case letters, digits \
         and '-', each starting and ending with a letter or digit, at most 253 characters"
    )]
    DnsName(String),
    #[error(
        "{0:?} must be a DNS label: at most 63 lower-case letters, digits and '-', starting and \
         ending with a letter or digit"
    )]
    DnsLabel(String),
    #[error("{0:?} is a system namespace: environments may not copy from it")]
    SystemNamespace(String),
    #[error("{0:?} must be NAMESPACE/NAME, e.g. ingress-nginx/wildcard-tls")]
    Reference(String),
    #[error("{0:?} must be NAMESPACE/NAME:PORT, e.g. appenv-system/appenv-activator:80")]
    Service(String),
    #[error("{0:?} must be a positive number followed by s, m, h or d, e.g. 72h or 10m")]
    Duration(String),
    #[error(
        "{0:?} must be an image reference, `*` standing for any characters, e.g. \
         ghcr.io/acme/* (no spaces, not empty, at most 255 characters)"
    )]
    ImagePattern(String),
}

/// A pattern of image references, `*` standing for any run of characters (`/` and `:`
/// included): `ghcr.io/acme/*` allows every image under `ghcr.io/acme/`, any tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePattern(String);

impl ImagePattern {
    pub fn parse(text: &str) -> Result<Self, SettingError> {
        let fits = !text.is_empty()
            && text.len() <= 255
            && text
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '\''));
        if fits {
            Ok(Self(text.to_owned()))
        } else {
            Err(SettingError::ImagePattern(truncate(text)))
        }
    }

    /// Whether `image` matches: the parts between `*`s appear in order, the first at the
    /// start and the last at the end.
    pub fn matches(&self, image: &str) -> bool {
        glob_matches(&self.0, image)
    }
}

/// Whether `text` matches `pattern`, `*` standing for any run of characters: the parts between
/// `*`s appear in order, the first at the start and the last at the end.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A resource quantity the API server accepts (`100m`, `8Gi`, `40`), kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedQuantity(String);

impl CheckedQuantity {
    pub fn parse(text: &str) -> Result<Self, SettingError> {
        match quantity::parse(text) {
            Some(_) if text.trim() == text => Ok(Self(text.to_owned())),
            _ => Err(SettingError::Quantity(truncate(text))),
        }
    }

    /// A quantity of things, such as Pods: the API server takes only whole numbers there.
    pub fn parse_count(text: &str) -> Result<Self, SettingError> {
        let checked = Self::parse(text)?;
        match quantity::parse(text) {
            Some(value) if value.fract() == 0.0 => Ok(checked),
            _ => Err(SettingError::Count(truncate(text))),
        }
    }
}

/// A DNS subdomain name (RFC 1123): a preview domain, an IngressClass, a Secret's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName(String);

impl DnsName {
    pub fn parse(text: &str) -> Result<Self, SettingError> {
        if is_dns_subdomain(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(SettingError::DnsName(truncate(text)))
        }
    }
}

/// A DNS label (RFC 1123): a namespace's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsLabel(String);

impl DnsLabel {
    pub fn parse(text: &str) -> Result<Self, SettingError> {
        // A namespace may start with a digit: a subdomain of one part (which is at most 63).
        if !text.contains('.') && is_dns_subdomain(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(SettingError::DnsLabel(truncate(text)))
        }
    }
}

/// Namespaces no environment may copy from: what is in them belongs to the cluster.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

impl DnsLabel {
    /// A namespace environments may copy Secrets and ConfigMaps from: a DNS label, not one of
    /// the cluster's own.
    pub fn parse_copy_source(text: &str) -> Result<Self, SettingError> {
        let label = Self::parse(text)?;
        if SYSTEM_NAMESPACES.contains(&text) {
            return Err(SettingError::SystemNamespace(truncate(text)));
        }
        Ok(label)
    }
}

/// A namespaced object, written `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    namespace: DnsLabel,
    name: DnsName,
}

impl SecretRef {
    pub fn parse(text: &str) -> Result<Self, SettingError> {
        let Some((namespace, name)) = text.split_once('/') else {
            return Err(SettingError::Reference(truncate(text)));
        };
        if name.contains('/') {
            return Err(SettingError::Reference(truncate(text)));
        }
        Ok(Self {
            namespace: DnsLabel::parse(namespace)?,
            name: DnsName::parse(name)?,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service in another namespace, and its port: `namespace/name:port` (the activator's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    namespace: DnsLabel,
    name: DnsLabel,
    port: u16,
}

impl ServiceRef {
    pub fn parse(text: &str) -> Result<Self, SettingError> {
        let bad = || SettingError::Service(truncate(text));
        let (namespace, rest) = text.split_once('/').ok_or_else(bad)?;
        let (name, port) = rest.split_once(':').ok_or_else(bad)?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?;
        Ok(Self {
            namespace: DnsLabel::parse(namespace).map_err(|_| bad())?,
            name: DnsLabel::parse(name).map_err(|_| bad())?,
            port,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its cluster DNS name: `name.namespace.svc.cluster.local`.
    pub fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    pub const fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// A duration such as `72h`, `10m`, `30s` or `7d` (TTLs and timeouts).
pub fn parse_duration(text: &str) -> Result<Duration, SettingError> {
    parse_ttl(text).ok_or_else(|| SettingError::Duration(truncate(text)))
}

/// The checked text of each value type: read as `&str`, shown as written, parsed by `parse`.
macro_rules! text_setting {
    ($($type:ident),*) => {$(
        impl Deref for $type {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $type {
            type Err = SettingError;
            fn from_str(text: &str) -> Result<Self, SettingError> {
                Self::parse(text)
            }
        }
    )*};
}

text_setting!(CheckedQuantity, DnsName, DnsLabel, ImagePattern);

impl FromStr for SecretRef {
    type Err = SettingError;
    fn from_str(text: &str) -> Result<Self, SettingError> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::is_dns_label;

    #[test]
    fn the_defaults_obey_their_own_rules() {
        let defaults = Settings::default();
        let quota = &defaults.preview_quota;
        for value in [&quota.cpu, &quota.memory, &quota.storage] {
            assert_eq!(CheckedQuantity::parse(value).as_ref(), Ok(value));
        }
        assert_eq!(
            CheckedQuantity::parse_count(&quota.pods).as_ref(),
            Ok(&quota.pods)
        );
        assert_eq!(
            DnsLabel::parse(&defaults.ingress_namespace).as_ref(),
            Ok(&defaults.ingress_namespace)
        );
        assert!(is_dns_label(&defaults.ingress_namespace, 63));
    }

    #[test]
    fn image_patterns_match_in_order_from_start_to_end() {
        let pattern = |p: &str| ImagePattern::parse(p).expect("pattern");
        let acme = pattern("ghcr.io/acme/*");
        assert!(acme.matches("ghcr.io/acme/shop:1"));
        assert!(acme.matches("ghcr.io/acme/team/shop@sha256:abc"));
        assert!(!acme.matches("ghcr.io/acmeevil/shop:1"));
        assert!(!acme.matches("docker.io/ghcr.io/acme/shop:1"));
        let exact = pattern("redis:7.4-alpine");
        assert!(exact.matches("redis:7.4-alpine"));
        assert!(!exact.matches("redis:7.4-alpine-evil"));
        let middle = pattern("ghcr.io/*/shop:*");
        assert!(middle.matches("ghcr.io/acme/shop:pr-7"));
        assert!(!middle.matches("ghcr.io/acme/cart:pr-7"));
        // The end must not overlap the start: "a*a" needs two a's.
        assert!(!pattern("a*a").matches("a"));
        assert!(pattern("a*a").matches("aa"));
        for bad in ["", "with space", "quote\"d"] {
            assert!(matches!(
                ImagePattern::parse(bad),
                Err(SettingError::ImagePattern(_))
            ));
        }
    }

    #[test]
    fn copy_sources_are_namespaces_but_not_the_clusters_own() {
        assert_eq!(
            DnsLabel::parse_copy_source("preview-secrets").map(|l| l.to_string()),
            Ok("preview-secrets".to_owned())
        );
        assert_eq!(
            DnsLabel::parse_copy_source("kube-system"),
            Err(SettingError::SystemNamespace("kube-system".into()))
        );
        assert!(matches!(
            DnsLabel::parse_copy_source("a/b"),
            Err(SettingError::DnsLabel(_))
        ));
    }

    #[test]
    fn quantities_are_checked_and_kept_as_written() {
        for good in ["4", "500m", "8Gi", "1e3", "0.5"] {
            assert_eq!(
                CheckedQuantity::parse(good).map(|q| q.to_string()),
                Ok(good.into())
            );
        }
        for bad in ["", "four", "-1", "8GB", " 4", "4 ", "1..2"] {
            assert_eq!(
                CheckedQuantity::parse(bad),
                Err(SettingError::Quantity(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            CheckedQuantity::parse_count("40").map(|q| q.to_string()),
            Ok("40".into())
        );
        assert_eq!(
            CheckedQuantity::parse_count("1k").map(|q| q.to_string()),
            Ok("1k".into())
        );
        assert_eq!(
            CheckedQuantity::parse_count("1.5"),
            Err(SettingError::Count("1.5".into()))
        );
        assert_eq!(
            CheckedQuantity::parse_count("500m"),
            Err(SettingError::Count("500m".into()))
        );
        assert_eq!(
            CheckedQuantity::parse_count("x"),
            Err(SettingError::Quantity("x".into()))
        );
    }

    #[test]
    fn names_are_dns_names_and_labels() {
        assert!(DnsName::parse("preview.example.com").is_ok());
        assert!(DnsName::parse("nginx").is_ok());
        for bad in [
            "",
            "Preview.example.com",
            "a..b",
            "-a.b",
            "a_b",
            "a.b.",
            &"a".repeat(64),
        ] {
            assert_eq!(
                DnsName::parse(bad),
                Err(SettingError::DnsName(truncate(bad)))
            );
        }
        assert!(DnsLabel::parse("ingress-nginx").is_ok());
        assert!(DnsLabel::parse("1-system").is_ok());
        for bad in ["", "ingress.nginx", "Ingress", "a-", &"a".repeat(64)] {
            assert_eq!(
                DnsLabel::parse(bad),
                Err(SettingError::DnsLabel(truncate(bad)))
            );
        }
    }

    #[test]
    fn a_secret_reference_is_namespace_slash_name() {
        let reference = SecretRef::parse("appenv-system/wildcard.tls").expect("valid");
        assert_eq!(
            (reference.namespace(), reference.name()),
            ("appenv-system", "wildcard.tls")
        );
        assert_eq!(reference.to_string(), "appenv-system/wildcard.tls");
        for shape in ["wildcard", "a/b/c", ""] {
            assert_eq!(
                SecretRef::parse(shape),
                Err(SettingError::Reference(shape.into()))
            );
        }
        assert_eq!(
            SecretRef::parse("/name"),
            Err(SettingError::DnsLabel(String::new()))
        );
        assert_eq!(
            SecretRef::parse("ns.x/name"),
            Err(SettingError::DnsLabel("ns.x".into()))
        );
        assert_eq!(
            SecretRef::parse("ns/Name"),
            Err(SettingError::DnsName("Name".into()))
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        for bad in ["", "72", "0h", "1w", "-1h"] {
            assert_eq!(parse_duration(bad), Err(SettingError::Duration(bad.into())));
        }
    }

    #[test]
    fn messages_quote_the_value_and_name_the_rule() {
        let message = CheckedQuantity::parse("lots").expect_err("bad").to_string();
        assert_eq!(
            message,
            "\"lots\" is not a Kubernetes quantity (e.g. 100m, 1, 256Mi, 5Gi)"
        );
        let long = "x".repeat(500);
        let message = DnsName::parse(&long).expect_err("bad").to_string();
        assert!(message.len() < 300, "{message}");
    }
}
