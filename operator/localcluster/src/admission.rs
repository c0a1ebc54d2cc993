//! Pod Security admission for the local cluster. Kubernetes 1.20 has none (it came in 1.23),
//! so a validating admission webhook, served by this process, enforces the Pod Security
//! Standards' **restricted** profile (latest version) on Pods in namespaces labelled
//! `pod-security.kubernetes.io/enforce: restricted`, as the built-in admission would. A server
//! of 1.23 or later has its own, and gets no webhook.
//!
//! [`check`] follows k8s.io/pod-security-admission's `policy` package: its rules, reasons and
//! details, in its order (the baseline checks, then the restricted ones; the baseline checks
//! that restricted ones replace are left out). A refusal reads as the real one,
//! `pods "NAME" is forbidden: violates PodSecurity "restricted:latest": REASON (DETAIL), ...`,
//! which the API server prefixes with `admission webhook "NAME" denied the request: `.
//!
//! Like the real admission it enforces on Pods only: a workload whose template violates the
//! profile is created, and its controller's Pod creations are refused (a ReplicaSet reports a
//! `FailedCreate` Event and a `ReplicaFailure` condition). An update is checked only when it
//! changes the spec or a seccomp or AppArmor annotation; the real one ignores other updates.
//!
//! Deviations, none of which a 1.20 API server can show: the namespace's `enforce-version`
//! label is not read (always `latest`), and a `procMount` violation is reported once.

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EphemeralContainer, Lifecycle, LifecycleHandler,
    Namespace, Pod, PodSpec, Probe, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The namespace label the webhook's `namespaceSelector` matches, with [`LEVEL`].
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const LEVEL: &str = "restricted";
/// The level and version in refusals, as the real admission names them.
pub const POLICY: &str = "restricted:latest";
/// The webhook's name, in the API server's `admission webhook "..." denied the request`.
pub const WEBHOOK_NAME: &str = "pod-security.localcluster.appenv.dev";
const CONFIGURATION_NAME: &str = "appenv-local-pod-security";
const PATH: &str = "/validate/pods";
/// A namespace labelled for restricted, only while start-up checks the webhook is in effect.
const PROBE_NAMESPACE: &str = "appenv-local-pod-security-probe";

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// One failed check: the real admission's reason and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{} ({})", self.reason, self.detail)
        }
    }
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// What the Pod Security Standards' restricted profile (latest) refuses in this Pod, in the
/// real admission's order; empty if it is admitted.
pub fn check(pod_spec: &PodSpec, metadata: &ObjectMeta) -> Vec<Violation> {
    let pod = PodView {
        meta: metadata,
        spec: pod_spec,
        containers: containers(pod_spec),
    };
    CHECKS.iter().filter_map(|check| check(&pod)).collect()
}

/// The whole refusal, as the real admission words it.
pub fn forbidden_message(pod_name: &str, violations: &[Violation]) -> String {
    let details: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!(
        "pods {} is forbidden: violates PodSecurity {}: {}",
        quote(pod_name),
        quote(POLICY),
        details.join(", ")
    )
}

type Check = fn(&PodView<'_>) -> Option<Violation>;

/// Baseline checks (without those restricted ones replace), then restricted checks; each
/// list in the order of the real registry (its files' names).
const CHECKS: [Check; 15] = [
    app_armor_profile,
    host_namespaces,
    host_ports,
    host_probes_and_lifecycle,
    privileged,
    se_linux_options,
    sysctls,
    windows_host_process,
    allow_privilege_escalation,
    capabilities,
    proc_mount,
    volume_types,
    run_as_non_root,
    run_as_user,
    seccomp_profile,
];

struct PodView<'a> {
    meta: &'a ObjectMeta,
    spec: &'a PodSpec,
    containers: Vec<ContainerView<'a>>,
}

impl PodView<'_> {
    /// Windows Pods are exempt from the Linux-only restricted checks.
    fn is_windows(&self) -> bool {
        self.spec.os.as_ref().is_some_and(|os| os.name == "windows")
    }

    /// In a user namespace (`hostUsers: false`), root in the container is not root on the node.
    fn in_user_namespace(&self) -> bool {
        self.spec.host_users == Some(false)
    }

    fn pod_security(&self) -> Option<&k8s_openapi::api::core::v1::PodSecurityContext> {
        self.spec.security_context.as_ref()
    }
}

/// The fields the checks read, alike for init, regular and ephemeral containers.
struct ContainerView<'a> {
    name: &'a str,
    security: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
    probes: [Option<&'a Probe>; 3],
    lifecycle: Option<&'a Lifecycle>,
}

impl<'a> ContainerView<'a> {
    fn of(c: &'a Container) -> Self {
        Self {
            name: &c.name,
            security: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
            probes: [
                c.liveness_probe.as_ref(),
                c.readiness_probe.as_ref(),
                c.startup_probe.as_ref(),
            ],
            lifecycle: c.lifecycle.as_ref(),
        }
    }

    fn host_ports(&self) -> impl Iterator<Item = i32> + 'a {
        self.ports
            .iter()
            .filter_map(|p| p.host_port.filter(|h| *h != 0))
    }

    fn capabilities(&self) -> Option<&'a Capabilities> {
        self.security?.capabilities.as_ref()
    }

    fn seccomp_profile(&self) -> Option<&'a SeccompProfile> {
        self.security?.seccomp_profile.as_ref()
    }

    fn of_ephemeral(c: &'a EphemeralContainer) -> Self {
        Self {
            name: &c.name,
            security: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
            probes: [
                c.liveness_probe.as_ref(),
                c.readiness_probe.as_ref(),
                c.startup_probe.as_ref(),
            ],
            lifecycle: c.lifecycle.as_ref(),
        }
    }
}

/// Init containers, containers, ephemeral containers: the real visitor's order.
fn containers(spec: &PodSpec) -> Vec<ContainerView<'_>> {
    let init = spec.init_containers.iter().flatten().map(ContainerView::of);
    let regular = spec.containers.iter().map(ContainerView::of);
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(ContainerView::of_ephemeral);
    init.chain(regular).chain(ephemeral).collect()
}

/// Go's `%q` for the names and values that occur here.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| quote(s.as_ref())).collect();
    quoted.join(", ")
}

fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 { singular } else { plural }
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// Names of the containers for which `bad` holds.
fn containers_where<'a>(
    pod: &PodView<'a>,
    bad: impl Fn(&ContainerView<'a>) -> bool,
) -> Vec<&'a str> {
    pod.containers
        .iter()
        .filter(|c| bad(c))
        .map(|c| c.name)
        .collect()
}

/// "pod and containers "a", "b"": who set a forbidden value.
fn setters(pod_set_it: bool, containers: &[&str]) -> String {
    let mut who = Vec::new();
    if pod_set_it {
        who.push("pod".to_owned());
    }
    if !containers.is_empty() {
        who.push(containers_phrase(containers));
    }
    who.join(" and ")
}

// --- baseline -------------------------------------------------------------------------------

fn app_armor_profile(pod: &PodView<'_>) -> Option<Violation> {
    let allowed = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut bad_values = BTreeSet::new();
    let pod_bad = pod
        .pod_security()
        .and_then(|s| s.app_armor_profile.as_ref())
        .filter(|p| !allowed(&p.type_))
        .map(|p| bad_values.insert(p.type_.clone()))
        .is_some();
    let mut bad_containers = Vec::new();
    for c in &pod.containers {
        if let Some(p) = c.security.and_then(|s| s.app_armor_profile.as_ref())
            && !allowed(&p.type_)
        {
            bad_containers.push(c.name);
            bad_values.insert(p.type_.clone());
        }
    }
    let mut annotations: Vec<String> = pod
        .meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, v)| {
            k.starts_with(APPARMOR_ANNOTATION_PREFIX)
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    annotations.sort();
    let mut who = Vec::new();
    if pod_bad || !bad_containers.is_empty() {
        who.push(setters(pod_bad, &bad_containers));
    }
    if !annotations.is_empty() {
        who.push(pluralize("annotation", "annotations", annotations.len()).to_owned());
    }
    if who.is_empty() {
        return None;
    }
    let mut values: Vec<String> = bad_values.into_iter().collect();
    values.extend(annotations);
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            who.join(" and "),
            join_quote(&values)
        ),
    )
}

fn host_namespaces(pod: &PodView<'_>) -> Option<Violation> {
    let used: Vec<&str> = [
        (pod.spec.host_ipc, "hostIPC=true"),
        (pod.spec.host_network, "hostNetwork=true"),
        (pod.spec.host_pid, "hostPID=true"),
    ]
    .into_iter()
    .filter(|(set, _)| *set == Some(true))
    .map(|(_, name)| name)
    .collect();
    (!used.is_empty()).then(|| violation("host namespaces", used.join(", ")))?
}

fn host_ports(pod: &PodView<'_>) -> Option<Violation> {
    let bad = containers_where(pod, |c| c.host_ports().next().is_some());
    if bad.is_empty() {
        return None;
    }
    let ports: BTreeSet<String> = pod
        .containers
        .iter()
        .flat_map(|c| c.host_ports().map(|p| p.to_string()))
        .collect();
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn host_probes_and_lifecycle(pod: &PodView<'_>) -> Option<Violation> {
    fn probe_hosts(p: &Probe) -> [Option<&str>; 2] {
        [
            p.http_get.as_ref().and_then(|h| h.host.as_deref()),
            p.tcp_socket.as_ref().and_then(|t| t.host.as_deref()),
        ]
    }
    fn handler_hosts(h: &LifecycleHandler) -> [Option<&str>; 2] {
        [
            h.http_get.as_ref().and_then(|g| g.host.as_deref()),
            h.tcp_socket.as_ref().and_then(|t| t.host.as_deref()),
        ]
    }
    let hosts = |c: &ContainerView<'_>| -> Vec<String> {
        let probes = c.probes.iter().flatten().flat_map(|p| probe_hosts(p));
        let handlers = c
            .lifecycle
            .into_iter()
            .flat_map(|l| [l.post_start.as_ref(), l.pre_stop.as_ref()])
            .flatten()
            .flat_map(handler_hosts);
        probes
            .chain(handlers)
            .flatten()
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut bad = BTreeSet::new();
    let mut forbidden = BTreeSet::new();
    for c in &pod.containers {
        let found = hosts(c);
        if !found.is_empty() {
            bad.insert(c.name);
            forbidden.extend(found);
        }
    }
    if bad.is_empty() {
        return None;
    }
    let bad: Vec<&str> = bad.into_iter().collect();
    violation(
        "probe or lifecycle host",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                forbidden.len()
            ),
            join_quote(&forbidden)
        ),
    )
}

fn privileged(pod: &PodView<'_>) -> Option<Violation> {
    let bad = containers_where(pod, |c| c.security.and_then(|s| s.privileged) == Some(true));
    (!bad.is_empty()).then(|| {
        violation(
            "privileged",
            format!(
                "{} must not set securityContext.privileged=true",
                containers_phrase(&bad)
            ),
        )
    })?
}

fn se_linux_options(pod: &PodView<'_>) -> Option<Violation> {
    const ALLOWED_TYPES: [&str; 4] = ["", "container_t", "container_init_t", "container_kvm_t"];
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut forbidden = |o: Option<&k8s_openapi::api::core::v1::SELinuxOptions>| {
        let Some(o) = o else { return false };
        let type_ = o.type_.as_deref().unwrap_or_default();
        let bad_type = !ALLOWED_TYPES.contains(&type_);
        if bad_type {
            bad_types.insert(type_.to_owned());
        }
        let user = o.user.as_deref().is_some_and(|u| !u.is_empty());
        let role = o.role.as_deref().is_some_and(|r| !r.is_empty());
        set_user |= user;
        set_role |= role;
        bad_type || user || role
    };
    let pod_bad = forbidden(pod.pod_security().and_then(|s| s.se_linux_options.as_ref()));
    let bad: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| forbidden(c.security.and_then(|s| s.se_linux_options.as_ref())))
        .map(|c| c.name)
        .collect();
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let mut what = Vec::new();
    if !bad_types.is_empty() {
        what.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&bad_types)
        ));
    }
    if set_user {
        what.push("user may not be set".to_owned());
    }
    if set_role {
        what.push("role may not be set".to_owned());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(pod_bad, &bad),
            what.join("; ")
        ),
    )
}

fn sysctls(pod: &PodView<'_>) -> Option<Violation> {
    const SAFE: [&str; 5] = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    let forbidden: Vec<&str> = pod
        .pod_security()
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| s.name.as_str())
        .filter(|name| !SAFE.contains(name))
        .collect();
    (!forbidden.is_empty()).then(|| violation("forbidden sysctls", forbidden.join(", ")))?
}

fn windows_host_process(pod: &PodView<'_>) -> Option<Violation> {
    let host_process = |o: Option<&k8s_openapi::api::core::v1::WindowsSecurityContextOptions>| {
        o.and_then(|o| o.host_process) == Some(true)
    };
    let pod_bad = host_process(pod.pod_security().and_then(|s| s.windows_options.as_ref()));
    let bad = containers_where(pod, |c| {
        host_process(c.security.and_then(|s| s.windows_options.as_ref()))
    });
    (pod_bad || !bad.is_empty()).then(|| {
        violation(
            "hostProcess",
            format!(
                "{} must not set securityContext.windowsOptions.hostProcess=true",
                setters(pod_bad, &bad)
            ),
        )
    })?
}

// --- restricted -----------------------------------------------------------------------------

fn allow_privilege_escalation(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let bad = containers_where(pod, |c| {
        c.security.and_then(|s| s.allow_privilege_escalation) != Some(false)
    });
    (!bad.is_empty()).then(|| {
        violation(
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_phrase(&bad)
            ),
        )
    })?
}

fn capabilities(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let missing_drop_all = containers_where(pod, |c| {
        !c.capabilities()
            .and_then(|caps| caps.drop.as_ref())
            .is_some_and(|drop| drop.iter().any(|d| d == "ALL"))
    });
    let added = |c: &ContainerView<'_>| -> Vec<String> {
        c.capabilities()
            .and_then(|caps| caps.add.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| *a != "NET_BIND_SERVICE")
            .cloned()
            .collect()
    };
    let adding = containers_where(pod, |c| !added(c).is_empty());
    let forbidden: BTreeSet<String> = pod.containers.iter().flat_map(added).collect();
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&forbidden)
        ));
    }
    (!details.is_empty()).then(|| violation("unrestricted capabilities", details.join("; ")))?
}

fn proc_mount(pod: &PodView<'_>) -> Option<Violation> {
    let mount = |c: &ContainerView<'_>| {
        c.security
            .and_then(|s| s.proc_mount.clone())
            .filter(|m| m != "Default")
    };
    let bad = containers_where(pod, |c| mount(c).is_some());
    let types: BTreeSet<String> = pod.containers.iter().filter_map(mount).collect();
    (!bad.is_empty()).then(|| {
        violation(
            "procMount",
            format!(
                "{} must not set securityContext.procMount to {}",
                containers_phrase(&bad),
                join_quote(&types)
            ),
        )
    })?
}

/// Volumes other than these come from the node or reach storage directly, bypassing what a
/// PersistentVolume's administrator decided.
const ALLOWED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn volume_types(pod: &PodView<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for volume in pod.spec.volumes.iter().flatten() {
        // The volume's source is its one field besides `name`, named by the API's JSON.
        let source = serde_json::to_value(volume)
            .ok()
            .and_then(|v| v.as_object()?.keys().find(|k| *k != "name").cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        if !ALLOWED_VOLUME_TYPES.contains(&source.as_str()) {
            bad.push(volume.name.as_str());
            types.insert(source);
        }
    }
    (!bad.is_empty()).then(|| {
        violation(
            "restricted volume types",
            format!(
                "{} {} {} {} {}",
                pluralize("volume", "volumes", bad.len()),
                join_quote(&bad),
                pluralize("uses", "use", bad.len()),
                pluralize(
                    "restricted volume type",
                    "restricted volume types",
                    types.len()
                ),
                join_quote(&types)
            ),
        )
    })?
}

fn run_as_non_root(pod: &PodView<'_>) -> Option<Violation> {
    if pod.in_user_namespace() {
        return None;
    }
    let pod_value = pod.pod_security().and_then(|s| s.run_as_non_root);
    let explicitly_bad = containers_where(pod, |c| {
        c.security.and_then(|s| s.run_as_non_root) == Some(false)
    });
    if pod_value == Some(false) || !explicitly_bad.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters(pod_value == Some(false), &explicitly_bad)
            ),
        );
    }
    let implicitly_bad = containers_where(pod, |c| {
        c.security.and_then(|s| s.run_as_non_root).is_none() && pod_value != Some(true)
    });
    (!implicitly_bad.is_empty()).then(|| {
        violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicitly_bad)
            ),
        )
    })?
}

fn run_as_user(pod: &PodView<'_>) -> Option<Violation> {
    if pod.in_user_namespace() {
        return None;
    }
    let pod_bad = pod.pod_security().and_then(|s| s.run_as_user) == Some(0);
    let bad = containers_where(pod, |c| c.security.and_then(|s| s.run_as_user) == Some(0));
    (pod_bad || !bad.is_empty()).then(|| {
        violation(
            "runAsUser=0",
            format!("{} must not set runAsUser=0", setters(pod_bad, &bad)),
        )
    })?
}

fn seccomp_profile(pod: &PodView<'_>) -> Option<Violation> {
    if pod.is_windows() {
        return None;
    }
    let valid = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut bad_values = BTreeSet::new();
    let pod_profile = pod.pod_security().and_then(|s| s.seccomp_profile.as_ref());
    let pod_bad = pod_profile.is_some_and(|p| !valid(&p.type_));
    if pod_bad {
        bad_values.extend(pod_profile.map(|p| p.type_.clone()));
    }
    let pod_set = pod_profile.is_some() && !pod_bad;
    let explicitly_bad = containers_where(pod, |c| {
        c.seccomp_profile().is_some_and(|p| !valid(&p.type_))
    });
    bad_values.extend(
        pod.containers
            .iter()
            .filter_map(ContainerView::seccomp_profile)
            .filter(|p| !valid(&p.type_))
            .map(|p| p.type_.clone()),
    );
    if pod_bad || !explicitly_bad.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters(pod_bad, &explicitly_bad),
                join_quote(&bad_values)
            ),
        );
    }
    let implicitly_bad = containers_where(pod, |c| c.seccomp_profile().is_none() && !pod_set);
    (!implicitly_bad.is_empty()).then(|| {
        violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicitly_bad)
            ),
        )
    })?
}

// --- the webhook ----------------------------------------------------------------------------

/// Whether an update can change what the checks see; the real admission ignores the others
/// (labels, finalizers, owner references...), so Pods admitted earlier stay manageable.
fn significant_update(pod: &Pod, old: &Pod) -> bool {
    let guarded = |p: &Pod| -> BTreeMap<String, String> {
        p.metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                k.starts_with(APPARMOR_ANNOTATION_PREFIX)
                    || k.starts_with(SECCOMP_CONTAINER_ANNOTATION_PREFIX)
                    || *k == SECCOMP_POD_ANNOTATION
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    pod.spec != old.spec || guarded(pod) != guarded(old)
}

/// The answer to one AdmissionReview request for a Pod.
pub fn review(request: &AdmissionRequest<Pod>) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let Some(pod) = &request.object else {
        return allowed;
    };
    if request.operation == Operation::Update
        && let Some(old) = &request.old_object
        && !significant_update(pod, old)
    {
        return allowed;
    }
    let no_spec = PodSpec::default();
    let violations = check(pod.spec.as_ref().unwrap_or(&no_spec), &pod.metadata);
    if violations.is_empty() {
        return allowed;
    }
    // A Pod of a workload has its generated name by the time validating admission runs.
    let name = pod
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&request.name);
    let mut denied = allowed.deny(forbidden_message(name, &violations));
    denied.result.code = StatusCode::FORBIDDEN.as_u16();
    denied.result.reason = "Forbidden".to_owned();
    denied
}

async fn validate(body: Bytes) -> Response {
    let review_in: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {err}"),
            )
                .into_response();
        }
    };
    let request: AdmissionRequest<Pod> = match review_in.try_into() {
        Ok(request) => request,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}")).into_response(),
    };
    let review_out: AdmissionReview<DynamicObject> = review(&request).into_review();
    match serde_json::to_vec(&review_out) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// The webhook's HTTPS server: a tokio runtime on a thread of its own, so that it serves for
/// as long as the control plane lives whichever runtime started it (tests start control planes
/// on short-lived runtimes, and may block theirs), and across API server restarts and pauses.
/// Stopped on drop.
pub(crate) struct Server {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("port", &self.port).finish()
    }
}

impl Server {
    /// Serve on a free loopback port with this certificate chain and key (PEM).
    pub(crate) fn start(cert_pem: &str, key_pem: &str) -> std::io::Result<Self> {
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(cert_pem, key_pem)?));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("appenv-pod-security".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = serve(listener, tls) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn tls_config(cert_pem: &str, key_pem: &str) -> std::io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve(listener: tokio::net::TcpListener, tls: tokio_rustls::TlsAcceptor) {
    let app = axum::Router::new().route(PATH, axum::routing::post(validate));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                // Out of file descriptors, most likely: give the open connections a moment.
                tracing::warn!(%err, "pod security webhook: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let stream = match tls.accept(tcp).await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(%err, "pod security webhook: TLS handshake failed");
                    return;
                }
            };
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%err, "pod security webhook: connection ended");
            }
        });
    }
}

// --- registration ---------------------------------------------------------------------------

/// The configuration that sends Pod creations and updates in namespaces labelled for
/// restricted to the webhook at `port`, trusting `ca_pem`. Failing closed, as the built-in
/// admission cannot be skipped either.
pub fn configuration(port: u16, ca_pem: &str) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(CONFIGURATION_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:{port}{PATH}")),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            failure_policy: Some("Fail".to_owned()),
            side_effects: "None".to_owned(),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    ENFORCE_LABEL.to_owned(),
                    LEVEL.to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            timeout_seconds: Some(10),
            ..ValidatingWebhook::default()
        }]),
    }
}

/// Whether this API server has Pod Security admission of its own (beta and on by default
/// since 1.23), which makes the webhook unnecessary.
pub(crate) fn built_in(version: &k8s_openapi::apimachinery::pkg::version::Info) -> bool {
    // A minor version may carry a suffix, as in "23+".
    let number = |s: &str| -> u32 {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    };
    (number(&version.major), number(&version.minor)) >= (1, 23)
}

/// Create the webhook's configuration.
pub(crate) async fn register(client: &Client, port: u16, ca_pem: &str) -> kube::Result<()> {
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .create(&PostParams::default(), &configuration(port, ca_pem))
        .await?;
    Ok(())
}

/// Create the namespace, labelled for restricted, in which [`in_effect`] probes.
pub(crate) async fn create_probe_namespace(client: &Client) -> kube::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let probe = Namespace {
        metadata: ObjectMeta {
            name: Some(PROBE_NAMESPACE.to_owned()),
            labels: Some(BTreeMap::from([(
                ENFORCE_LABEL.to_owned(),
                LEVEL.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces.create(&PostParams::default(), &probe).await?;
    Ok(())
}

/// Whether the API server refuses a dry-run Pod that violates restricted in the probe
/// namespace. It admits it until it has read the webhook's configuration.
pub(crate) async fn in_effect(client: Client) -> bool {
    let pods: Api<Pod> = Api::namespaced(client, PROBE_NAMESPACE);
    let mut pod = Pod::default();
    pod.metadata.name = Some("probe".to_owned());
    pod.spec = Some(PodSpec {
        containers: vec![Container {
            name: "probe".to_owned(),
            image: Some("probe".to_owned()),
            ..Container::default()
        }],
        ..PodSpec::default()
    });
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match pods.create(&dry_run, &pod).await {
        Err(kube::Error::Api(status)) => {
            status.code == 403 && status.message.contains("violates PodSecurity")
        }
        _ => false,
    }
}

/// Remove the probe namespace (kube-controller-manager finishes its deletion).
pub(crate) async fn delete_probe_namespace(client: &Client) -> kube::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(PROBE_NAMESPACE, &DeleteParams::default())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A Pod restricted admits: what appenv's builders make, reduced to the checked fields.
    fn compliant() -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1"},
            "spec": {
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"}
                },
                "containers": [{
                    "name": "app",
                    "image": "app:1",
                    "ports": [{"containerPort": 8000}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8000}},
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}
                    }
                }],
                "volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "env", "configMap": {"name": "env"}},
                    {"name": "creds", "secret": {"secretName": "creds"}}
                ]
            }
        }))
        .expect("a Pod")
    }

    /// `compliant()` with a JSON merge patch (objects merge, anything else replaces).
    fn patched(patch: &Value) -> Pod {
        fn merge(into: &mut Value, patch: &Value) {
            match (into, patch) {
                (Value::Object(into), Value::Object(patch)) => {
                    for (k, v) in patch {
                        merge(into.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
                (into, patch) => *into = patch.clone(),
            }
        }
        let mut pod = serde_json::to_value(compliant()).expect("json");
        merge(&mut pod, patch);
        serde_json::from_value(pod).expect("a Pod")
    }

    /// `compliant()` with this container (the security context merged into the compliant one).
    fn with_container(fields: &Value) -> Pod {
        let mut container =
            serde_json::to_value(&compliant().spec.expect("spec").containers[0]).expect("json");
        for (k, v) in fields.as_object().expect("an object") {
            if k == "securityContext" {
                for (sk, sv) in v.as_object().expect("an object") {
                    container["securityContext"][sk] = sv.clone();
                }
            } else {
                container[k] = v.clone();
            }
        }
        patched(&json!({"spec": {"containers": [container]}}))
    }

    fn violations(pod: &Pod) -> Vec<String> {
        check(pod.spec.as_ref().expect("spec"), &pod.metadata)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn refused(pod: &Pod, expected: &str) {
        assert_eq!(violations(pod), [expected]);
    }

    fn admitted(pod: &Pod) {
        assert_eq!(violations(pod), Vec::<String>::new());
    }

    #[test]
    fn a_pod_as_appenv_builds_it_is_admitted() {
        admitted(&compliant());
    }

    #[test]
    fn a_bare_pod_is_refused_with_the_real_message() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"containers": [{"name": "x", "image": "x"}]}
        }))
        .expect("a Pod");
        let found = check(pod.spec.as_ref().expect("spec"), &pod.metadata);
        assert_eq!(
            forbidden_message("x", &found),
            "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": \
             allowPrivilegeEscalation != false (container \"x\" must set \
             securityContext.allowPrivilegeEscalation=false), unrestricted capabilities \
             (container \"x\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"x\" must set \
             securityContext.runAsNonRoot=true), seccompProfile (pod or container \"x\" must \
             set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn init_containers_come_first_and_names_are_pluralized() {
        let mut pod = compliant();
        let spec = pod.spec.as_mut().expect("spec");
        let mut init = spec.containers[0].clone();
        init.name = "migrate".to_owned();
        for c in [&mut init, &mut spec.containers[0]] {
            c.security_context.as_mut().expect("sc").privileged = Some(true);
        }
        spec.init_containers = Some(vec![init]);
        refused(
            &pod,
            "privileged (containers \"migrate\", \"app\" must not set securityContext.privileged=true)",
        );
    }

    #[test]
    fn app_armor_allows_the_runtime_default_and_local_profiles_only() {
        admitted(&with_container(
            &json!({"securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}),
        ));
        admitted(&patched(&json!({"metadata": {"annotations": {
            "container.apparmor.security.beta.kubernetes.io/app": "runtime/default"
        }}})));
        refused(
            &with_container(
                &json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            ),
            "forbidden AppArmor profile (container \"app\" must not set AppArmor profile type to \"Unconfined\")",
        );
        refused(
            &patched(&json!({"metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/app": "unconfined"
            }}})),
            "forbidden AppArmor profile (annotation must not set AppArmor profile type to \
             \"container.apparmor.security.beta.kubernetes.io/app=\\\"unconfined\\\"\")",
        );
    }

    #[test]
    fn host_namespaces_are_refused() {
        admitted(&patched(
            &json!({"spec": {"hostNetwork": false, "hostPID": false}}),
        ));
        refused(
            &patched(&json!({"spec": {"hostNetwork": true, "hostPID": true}})),
            "host namespaces (hostNetwork=true, hostPID=true)",
        );
    }

    #[test]
    fn host_ports_are_refused() {
        admitted(&with_container(&json!({"ports": [{"containerPort": 80}]})));
        refused(
            &with_container(&json!({"ports": [{"containerPort": 80, "hostPort": 8080}]})),
            "hostPort (container \"app\" uses hostPort 8080)",
        );
    }

    #[test]
    fn probe_and_lifecycle_hosts_are_refused() {
        admitted(&with_container(
            &json!({"lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 80}}}}),
        ));
        refused(
            &with_container(&json!({
                "livenessProbe": {"tcpSocket": {"port": 80, "host": "10.0.0.1"}},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "host": "metadata"}}}
            })),
            "probe or lifecycle host (container \"app\" uses probe or lifecycle hosts \"10.0.0.1\", \"metadata\")",
        );
    }

    #[test]
    fn privileged_containers_are_refused() {
        admitted(&with_container(
            &json!({"securityContext": {"privileged": false}}),
        ));
        refused(
            &with_container(&json!({"securityContext": {"privileged": true}})),
            "privileged (container \"app\" must not set securityContext.privileged=true)",
        );
    }

    #[test]
    fn se_linux_options_allow_container_types_and_a_level_only() {
        admitted(&with_container(
            &json!({"securityContext": {"seLinuxOptions": {
                "type": "container_t", "level": "s0:c1,c2"
            }}}),
        ));
        refused(
            &patched(&json!({"spec": {"securityContext": {"seLinuxOptions": {
                "type": "spc_t", "user": "root"
            }}}})),
            "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set)",
        );
    }

    #[test]
    fn only_safe_sysctls_are_admitted() {
        admitted(&patched(&json!({"spec": {"securityContext": {"sysctls": [
            {"name": "net.ipv4.tcp_syncookies", "value": "1"}
        ]}}})));
        refused(
            &patched(&json!({"spec": {"securityContext": {"sysctls": [
                {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                {"name": "kernel.msgmax", "value": "1"}
            ]}}})),
            "forbidden sysctls (kernel.msgmax)",
        );
    }

    #[test]
    fn windows_host_process_is_refused() {
        admitted(&patched(
            &json!({"spec": {"securityContext": {"windowsOptions": {"hostProcess": false}}}}),
        ));
        refused(
            &patched(
                &json!({"spec": {"securityContext": {"windowsOptions": {"hostProcess": true}}}}),
            ),
            "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)",
        );
    }

    #[test]
    fn privilege_escalation_must_be_disallowed_explicitly() {
        refused(
            &with_container(&json!({"securityContext": {"allowPrivilegeEscalation": null}})),
            "allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)",
        );
        refused(
            &with_container(&json!({"securityContext": {"allowPrivilegeEscalation": true}})),
            "allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)",
        );
    }

    #[test]
    fn capabilities_drop_all_and_add_only_net_bind_service() {
        admitted(&with_container(
            &json!({"securityContext": {"capabilities": {
                "drop": ["ALL"], "add": ["NET_BIND_SERVICE"]
            }}}),
        ));
        refused(
            &with_container(&json!({"securityContext": {"capabilities": {
                "drop": ["NET_RAW"], "add": ["SYS_ADMIN", "CHOWN", "NET_BIND_SERVICE"]
            }}})),
            "unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]; \
             container \"app\" must not include \"CHOWN\", \"SYS_ADMIN\" in securityContext.capabilities.add)",
        );
    }

    #[test]
    fn the_proc_mount_must_stay_default() {
        admitted(&with_container(
            &json!({"securityContext": {"procMount": "Default"}}),
        ));
        refused(
            &with_container(&json!({"securityContext": {"procMount": "Unmasked"}})),
            "procMount (container \"app\" must not set securityContext.procMount to \"Unmasked\")",
        );
    }

    #[test]
    fn only_volumes_of_the_cluster_s_storage_and_of_the_api_are_admitted() {
        admitted(&patched(&json!({"spec": {"volumes": [
            {"name": "a", "projected": {"sources": []}},
            {"name": "b", "downwardAPI": {}},
            {"name": "c", "ephemeral": {}},
            {"name": "d", "csi": {"driver": "x"}}
        ]}})));
        refused(
            &patched(&json!({"spec": {"volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": "/"}},
                {"name": "share", "nfs": {"server": "s", "path": "/"}}
            ]}})),
            "restricted volume types (volumes \"host\", \"share\" use restricted volume types \"hostPath\", \"nfs\")",
        );
    }

    #[test]
    fn run_as_non_root_is_required_of_the_pod_or_every_container() {
        // Set on the container instead of the pod.
        let mut pod = with_container(&json!({"securityContext": {"runAsNonRoot": true}}));
        let security = pod.spec.as_mut().and_then(|s| s.security_context.as_mut());
        security.expect("pod security").run_as_non_root = None;
        admitted(&pod);
        refused(
            &patched(&json!({"spec": {"securityContext": {"runAsNonRoot": null}}})),
            "runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true)",
        );
        refused(
            &with_container(&json!({"securityContext": {"runAsNonRoot": false}})),
            "runAsNonRoot != true (container \"app\" must not set securityContext.runAsNonRoot=false)",
        );
    }

    #[test]
    fn run_as_user_must_not_be_root_outside_a_user_namespace() {
        admitted(&with_container(
            &json!({"securityContext": {"runAsUser": 1}}),
        ));
        refused(
            &patched(&json!({"spec": {"securityContext": {"runAsUser": 0}}})),
            "runAsUser=0 (pod must not set runAsUser=0)",
        );
        admitted(&patched(
            &json!({"spec": {"hostUsers": false, "securityContext": {"runAsUser": 0}}}),
        ));
    }

    #[test]
    fn seccomp_must_be_runtime_default_or_localhost() {
        let mut pod = with_container(&json!({"securityContext": {"seccompProfile": {
            "type": "Localhost", "localhostProfile": "p.json"
        }}}));
        let security = pod.spec.as_mut().and_then(|s| s.security_context.as_mut());
        security.expect("pod security").seccomp_profile = None;
        admitted(&pod);
        refused(
            &patched(
                &json!({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
            ),
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
        );
        refused(
            &patched(&json!({"spec": {"securityContext": {"seccompProfile": null}}})),
            "seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
        );
    }

    fn request(operation: &str, object: &Pod, old: Option<&Pod>) -> AdmissionRequest<Pod> {
        let review: AdmissionReview<Pod> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "",
                "namespace": "ns",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": old,
                "dryRun": false
            }
        }))
        .expect("an AdmissionReview");
        review.try_into().expect("a request")
    }

    #[test]
    fn a_violating_pod_is_refused_as_forbidden_and_a_compliant_one_allowed() {
        let bad = with_container(&json!({"securityContext": {"privileged": true}}));
        let response = review(&request("CREATE", &bad, None));
        assert!(!response.allowed);
        assert_eq!(response.result.code, 403);
        assert_eq!(response.result.reason, "Forbidden");
        assert_eq!(
            response.result.message,
            "pods \"web-1\" is forbidden: violates PodSecurity \"restricted:latest\": \
             privileged (container \"app\" must not set securityContext.privileged=true)"
        );
        let review_out = serde_json::to_value(response.into_review()).expect("json");
        assert_eq!(
            review_out["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert!(review(&request("CREATE", &compliant(), None)).allowed);
    }

    #[test]
    fn updates_are_checked_only_when_they_change_what_the_checks_see() {
        let bad = with_container(&json!({"securityContext": {"privileged": true}}));
        let mut relabelled = bad.clone();
        relabelled.metadata.labels = Some(BTreeMap::from([("a".to_owned(), "b".to_owned())]));
        assert!(review(&request("UPDATE", &relabelled, Some(&bad))).allowed);
        let mut new_image = bad.clone();
        new_image.spec.as_mut().expect("spec").containers[0].image = Some("app:2".to_owned());
        assert!(!review(&request("UPDATE", &new_image, Some(&bad))).allowed);
        let mut unconfined = bad.clone();
        unconfined.metadata.annotations = Some(BTreeMap::from([(
            SECCOMP_POD_ANNOTATION.to_owned(),
            "unconfined".to_owned(),
        )]));
        assert!(!review(&request("UPDATE", &unconfined, Some(&bad))).allowed);
    }

    #[test]
    fn servers_from_1_23_on_have_pod_security_admission_of_their_own() {
        let version = |major: &str, minor: &str| k8s_openapi::apimachinery::pkg::version::Info {
            major: major.to_owned(),
            minor: minor.to_owned(),
            ..Default::default()
        };
        assert!(!built_in(&version("1", "20")));
        assert!(!built_in(&version("1", "22+")));
        assert!(built_in(&version("1", "23")));
        assert!(built_in(&version("1", "34+")));
        assert!(!built_in(&version("", "")));
    }

    #[test]
    fn the_configuration_sends_pod_writes_in_restricted_namespaces_and_fails_closed() {
        let config = configuration(4443, "PEM");
        let webhook = &config.webhooks.as_ref().expect("webhooks")[0];
        assert_eq!(webhook.name, WEBHOOK_NAME);
        assert_eq!(
            webhook.client_config.url.as_deref(),
            Some("https://127.0.0.1:4443/validate/pods")
        );
        assert_eq!(
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.as_slice()),
            Some(b"PEM".as_slice())
        );
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(webhook.side_effects, "None");
        assert_eq!(webhook.admission_review_versions, ["v1"]);
        let selector = webhook.namespace_selector.as_ref().expect("selector");
        assert_eq!(
            selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get(ENFORCE_LABEL))
                .map(String::as_str),
            Some("restricted")
        );
        let rule = &webhook.rules.as_ref().expect("rules")[0];
        assert_eq!(
            rule.resources.as_deref(),
            Some(["pods".to_owned()].as_slice())
        );
        assert_eq!(
            rule.operations.as_deref(),
            Some(["CREATE".to_owned(), "UPDATE".to_owned()].as_slice())
        );
    }
}
