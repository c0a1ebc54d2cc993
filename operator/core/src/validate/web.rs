//! `spec.web`: the web Deployment, its Service, probes and Ingress (host, path, TLS).

use super::database::engine_name;
use super::rules::{
    Errors, Reserved, Workload, check_annotations, check_env, is_dns_subdomain, profile_resources,
};
use super::{IngressModel, PreviewModel, ProbeModel, TlsModel, WebModel};
use crate::settings::Settings;
use appenv_api::field::truncate;
use appenv_api::{AppEnvironmentSpec, EmbeddedEngine, HttpProbe, IngressSpec, Profile, TlsSpec};

/// What the web section depends on outside `spec.web`.
pub(super) struct Around<'a> {
    pub settings: &'a Settings,
    pub preview: Option<&'a PreviewModel>,
    /// From the spec: an embedded database allows one writer.
    pub embedded: Option<EmbeddedEngine>,
    /// The validated database is embedded: replace the Pod, never run two.
    pub recreate: bool,
    pub reserved: &'a Reserved,
}

pub(super) fn web(spec: &AppEnvironmentSpec, around: &Around<'_>, errors: &mut Errors) -> WebModel {
    let web_spec = &spec.web;
    let default_replicas = if around.embedded.is_some() || spec.profile == Profile::Preview {
        1
    } else {
        2
    };
    let web_replicas = web_spec.replicas.unwrap_or(default_replicas);
    if !(0..=100).contains(&web_replicas) {
        errors.add("spec.web.replicas", "must be between 0 and 100");
    }
    if let Some(engine) = around.embedded
        && web_replicas > 1
    {
        errors.add(
            "spec.web.replicas",
            format!(
                "must be 1 when spec.database.embedded is set ({} allows one writer)",
                engine_name(engine)
            ),
        );
    }
    let port = web_spec.port.unwrap_or(8000);
    if !(1..=65535).contains(&port) {
        errors.add("spec.web.port", "must be between 1 and 65535");
    }
    let service_port = web_spec.service.port.unwrap_or(80);
    if !(1..=65535).contains(&service_port) {
        errors.add("spec.web.service.port", "must be between 1 and 65535");
    }
    let web_resources = web_spec
        .resources
        .clone()
        .unwrap_or_else(|| profile_resources(spec.profile, Workload::Web));
    errors.resources("spec.web.resources", &web_resources);
    check_env("spec.web.env", &web_spec.env, around.reserved, errors);
    let ingress = web_spec
        .ingress
        .as_ref()
        .map(|ing| ingress(spec, ing, around, errors));
    let web = WebModel {
        command: web_spec.command.clone(),
        args: web_spec.args.clone(),
        port,
        replicas: web_replicas,
        recreate: around.recreate,
        readiness: probe(
            "spec.web.readinessProbe",
            web_spec.readiness_probe.as_ref(),
            5,
            10,
            errors,
        ),
        liveness: probe(
            "spec.web.livenessProbe",
            web_spec.liveness_probe.as_ref(),
            30,
            30,
            errors,
        ),
        resources: web_resources,
        env: web_spec.env.clone(),
        service_port,
        ingress,
        pod_annotations: web_spec.pod_annotations.clone(),
    };
    check_annotations("spec.web.podAnnotations", &web.pod_annotations, errors);
    web
}

fn ingress(
    spec: &AppEnvironmentSpec,
    ing: &IngressSpec,
    around: &Around<'_>,
    errors: &mut Errors,
) -> IngressModel {
    let settings = around.settings;
    let host = match (&ing.host, around.preview, &settings.preview_domain) {
        (Some(host), _, _) => Some(host.clone()),
        (None, Some(p), Some(domain)) => {
            Some(format!("{}-pr-{}.{domain}", spec.app, p.pull_request))
        }
        (None, _, _) => {
            errors.add(
                "spec.web.ingress.host",
                "is required (only previews get a default host, and only when the operator has a preview domain)",
            );
            None
        }
    };
    if let Some(host) = host.as_deref().filter(|host| !is_dns_subdomain(host)) {
        errors.add(
            "spec.web.ingress.host",
            format!("{:?} must be a DNS name", truncate(host)),
        );
    }
    let host = host.unwrap_or_default();
    let path = ing.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') {
        errors.add("spec.web.ingress.path", "must start with '/'");
    }
    let tls = match &ing.tls {
        // Previews share the operator's wildcard certificate, copied into their namespace.
        None if around.preview.is_some() => settings
            .wildcard_tls
            .as_ref()
            .map(|secret| TlsModel::Secret(secret.name().to_owned())),
        None => None,
        Some(tls) => self::tls(tls, errors),
    };
    IngressModel {
        host,
        class_name: ing
            .class_name
            .clone()
            .or_else(|| settings.ingress_class.as_ref().map(ToString::to_string)),
        path,
        tls,
        annotations: ing.annotations.clone(),
    }
}

fn tls(tls: &TlsSpec, errors: &mut Errors) -> Option<TlsModel> {
    match (&tls.secret_name, &tls.issuer) {
        (Some(_), Some(_)) => {
            errors.add("spec.web.ingress.tls", "set secretName or issuer, not both");
            None
        }
        (Some(secret), None) => {
            if !is_dns_subdomain(secret) {
                errors.add(
                    "spec.web.ingress.tls.secretName",
                    "must be a Secret name (DNS subdomain)",
                );
            }
            Some(TlsModel::Secret(secret.clone()))
        }
        (None, Some(issuer)) => Some(TlsModel::Issuer {
            name: issuer.name.clone(),
            kind: issuer.kind,
        }),
        (None, None) => {
            errors.add("spec.web.ingress.tls", "set secretName or issuer");
            None
        }
    }
}

fn probe(
    path: &str,
    spec: Option<&HttpProbe>,
    delay: i32,
    period: i32,
    errors: &mut Errors,
) -> Option<ProbeModel> {
    if spec.is_some_and(|p| !p.enabled) {
        return None;
    }
    let http_path = spec
        .and_then(|p| p.path.clone())
        .unwrap_or_else(|| "/healthz".to_owned());
    if !http_path.starts_with('/')
        || http_path.chars().any(char::is_whitespace)
        || http_path.len() > 256
    {
        errors.add(
            format!("{path}.path"),
            "must start with '/', contain no spaces and be at most 256 characters",
        );
    }
    let model = ProbeModel {
        path: http_path,
        initial_delay_seconds: spec.and_then(|p| p.initial_delay_seconds).unwrap_or(delay),
        period_seconds: spec.and_then(|p| p.period_seconds).unwrap_or(period),
        timeout_seconds: spec.and_then(|p| p.timeout_seconds).unwrap_or(1),
        failure_threshold: spec.and_then(|p| p.failure_threshold).unwrap_or(3),
    };
    for (field, value, min, max) in [
        ("initialDelaySeconds", model.initial_delay_seconds, 0, 3600),
        ("periodSeconds", model.period_seconds, 1, 3600),
        ("timeoutSeconds", model.timeout_seconds, 1, 3600),
        ("failureThreshold", model.failure_threshold, 1, 100),
    ] {
        if !(min..=max).contains(&value) {
            errors.add(
                format!("{path}.{field}"),
                format!("must be between {min} and {max}"),
            );
        }
    }
    Some(model)
}
