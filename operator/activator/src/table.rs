//! The routing table: host -> environment -> its Ready web Pods, kept from the watch events of
//! AppEnvironments and web Pods. Pure: the `watch` module feeds it, the server reads it.
//!
//! Each watch is applied as a reflector applies it to its store, with only what routing needs
//! kept: during a relist (`Init` .. `InitDone`) objects are updated in place and those not
//! listed again are removed at `InitDone`, so routing goes on meanwhile.

use crate::decide::{self, Observed};
use crate::host;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::runtime::watcher::Event;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// The name of the web container's port the activator forwards to.
pub const HTTP_PORT_NAME: &str = "http";

/// What routing needs of one AppEnvironment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    /// The host of `status.url`.
    pub host: Option<String>,
    /// `status.namespace`: where its web Pods are.
    pub namespace: Option<String>,
    /// `status.phase` is `Sleeping`.
    pub sleeping: bool,
    /// `status.sleep.since`.
    pub sleep_since: Option<Timestamp>,
    /// The last-request annotation.
    pub last_request: Option<Timestamp>,
    pub resource_version: Option<String>,
}

impl Environment {
    /// What the write decision sees of it, with whether a Ready web Pod can take a request.
    pub fn observed(&self, ready: bool) -> Observed<'_> {
        Observed {
            last_request: self.last_request,
            sleeping: self.sleeping,
            sleep_since: self.sleep_since,
            ready,
            resource_version: self.resource_version.as_deref(),
        }
    }
}

/// What routing needs of one web Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPod {
    pub namespace: String,
    pub name: String,
    /// Its `appenv.dev/environment` label.
    pub environment: String,
    /// Where it takes requests, while it is Ready (not being deleted, with an IP and a port
    /// named `http`).
    pub backend: Option<SocketAddr>,
}

impl WebPod {
    /// The routing view of a Pod; `None` without the environment label.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let environment = pod
            .labels()
            .get(appenv_api::names::label::ENVIRONMENT)?
            .clone();
        Some(Self {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            environment,
            backend: backend(pod),
        })
    }
}

fn backend(pod: &Pod) -> Option<SocketAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(HTTP_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .filter(|port| *port != 0)?;
    Some(SocketAddr::new(ip, port))
}

/// Where a host leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No environment has this host.
    Unknown,
    /// More than one environment claims it (their names): the activator never guesses.
    Ambiguous(Vec<String>),
    /// One environment, with its Ready web Pods (sorted).
    Environment(Environment, Vec<SocketAddr>),
}

#[derive(Debug, Default)]
struct Relist<K> {
    /// Keys listed since `Init`, while a relist is on.
    listed: Option<HashSet<K>>,
}

impl<K: std::hash::Hash + Eq> Relist<K> {
    fn start(&mut self) {
        self.listed = Some(HashSet::new());
    }

    fn listed(&mut self, key: K) {
        if let Some(listed) = &mut self.listed {
            listed.insert(key);
        }
    }

    fn finish(&mut self) -> Option<HashSet<K>> {
        self.listed.take()
    }
}

type PodKey = (String, String);
type EnvironmentKey = (String, String);

#[derive(Debug, Default)]
pub struct Table {
    environments: HashMap<String, Environment>,
    /// Host -> the environments whose URL has it.
    hosts: HashMap<String, BTreeSet<String>>,
    /// (namespace, name) -> Pod.
    pods: HashMap<PodKey, WebPod>,
    /// (namespace, environment) -> Ready Pod name -> its address.
    ready: HashMap<EnvironmentKey, BTreeMap<String, SocketAddr>>,
    environment_relist: Relist<String>,
    pod_relist: Relist<PodKey>,
}

impl Table {
    /// Where `host` (as [`host::from_header`] gives it) leads.
    pub fn route(&self, host: &str) -> Route {
        let Some(names) = self.hosts.get(host) else {
            return Route::Unknown;
        };
        let mut claims = names.iter();
        let (Some(name), None) = (claims.next(), claims.next()) else {
            return Route::Ambiguous(names.iter().cloned().collect());
        };
        let Some(env) = self.environments.get(name) else {
            return Route::Unknown;
        };
        Route::Environment(env.clone(), self.backends(env))
    }

    /// Whether an environment of this name is known.
    pub fn has_environment(&self, name: &str) -> bool {
        self.environments.contains_key(name)
    }

    /// The Ready web Pods of `env`, in its namespace.
    fn backends(&self, env: &Environment) -> Vec<SocketAddr> {
        let Some(namespace) = &env.namespace else {
            return Vec::new();
        };
        let key = (namespace.clone(), env.name.clone());
        let mut backends: Vec<SocketAddr> = self
            .ready
            .get(&key)
            .map(|pods| pods.values().copied().collect())
            .unwrap_or_default();
        backends.sort_unstable();
        backends
    }

    /// Apply a watch event of AppEnvironments; the names of the environments it changed.
    pub fn environment_event(&mut self, event: Event<Environment>) -> Vec<String> {
        match event {
            Event::Init => {
                self.environment_relist.start();
                Vec::new()
            }
            Event::InitApply(env) => {
                self.environment_relist.listed(env.name.clone());
                self.put_environment(env)
            }
            Event::Apply(env) => self.put_environment(env),
            Event::Delete(env) => self.remove_environment(&env.name),
            Event::InitDone => {
                let Some(listed) = self.environment_relist.finish() else {
                    return Vec::new();
                };
                let gone: Vec<String> = self
                    .environments
                    .keys()
                    .filter(|name| !listed.contains(*name))
                    .cloned()
                    .collect();
                gone.iter()
                    .flat_map(|name| self.remove_environment(name))
                    .collect()
            }
        }
    }

    /// Apply a watch event of web Pods; the names of the environments whose Pods changed.
    pub fn pod_event(&mut self, event: Event<WebPod>) -> Vec<String> {
        match event {
            Event::Init => {
                self.pod_relist.start();
                Vec::new()
            }
            Event::InitApply(pod) => {
                self.pod_relist
                    .listed((pod.namespace.clone(), pod.name.clone()));
                self.put_pod(pod)
            }
            Event::Apply(pod) => self.put_pod(pod),
            Event::Delete(pod) => self.remove_pod(&(pod.namespace, pod.name)),
            Event::InitDone => {
                let Some(listed) = self.pod_relist.finish() else {
                    return Vec::new();
                };
                let gone: Vec<PodKey> = self
                    .pods
                    .keys()
                    .filter(|key| !listed.contains(*key))
                    .cloned()
                    .collect();
                gone.iter().flat_map(|key| self.remove_pod(key)).collect()
            }
        }
    }

    fn put_environment(&mut self, env: Environment) -> Vec<String> {
        let name = env.name.clone();
        if self.environments.get(&name) == Some(&env) {
            return Vec::new();
        }
        let new_host = env.host.clone();
        let old = self.environments.insert(name.clone(), env);
        let old_host = old.and_then(|old| old.host);
        if old_host != new_host {
            if let Some(host) = old_host {
                self.unclaim(&host, &name);
            }
            if let Some(host) = new_host {
                self.claim(host, &name);
            }
        }
        vec![name]
    }

    fn remove_environment(&mut self, name: &str) -> Vec<String> {
        let Some(old) = self.environments.remove(name) else {
            return Vec::new();
        };
        if let Some(host) = old.host {
            self.unclaim(&host, name);
        }
        vec![name.to_owned()]
    }

    fn claim(&mut self, host: String, name: &str) {
        let names = self.hosts.entry(host.clone()).or_default();
        names.insert(name.to_owned());
        if names.len() > 1 {
            tracing::warn!(%host, environments = ?names,
                "more than one environment claims this host: its requests are refused");
        }
    }

    fn unclaim(&mut self, host: &str, name: &str) {
        if let Some(names) = self.hosts.get_mut(host) {
            names.remove(name);
            if names.is_empty() {
                self.hosts.remove(host);
            }
        }
    }

    fn put_pod(&mut self, pod: WebPod) -> Vec<String> {
        let key = (pod.namespace.clone(), pod.name.clone());
        if self.pods.get(&key) == Some(&pod) {
            return Vec::new();
        }
        let mut changed = self.remove_pod(&key);
        let env_key = (pod.namespace.clone(), pod.environment.clone());
        if let Some(addr) = pod.backend {
            self.ready
                .entry(env_key)
                .or_default()
                .insert(pod.name.clone(), addr);
        }
        if !changed.contains(&pod.environment) {
            changed.push(pod.environment.clone());
        }
        self.pods.insert(key, pod);
        changed
    }

    fn remove_pod(&mut self, key: &PodKey) -> Vec<String> {
        let Some(old) = self.pods.remove(key) else {
            return Vec::new();
        };
        let env_key = (old.namespace.clone(), old.environment.clone());
        if let Some(ready) = self.ready.get_mut(&env_key) {
            ready.remove(&old.name);
            if ready.is_empty() {
                self.ready.remove(&env_key);
            }
        }
        vec![old.environment]
    }
}

/// The AppEnvironment as the activator reads it: metadata and the few status fields routing
/// needs, every one optional. Not the typed `AppEnvironment`: an activator of another release
/// than the CRD (during an upgrade), or an object whose spec this release does not read,
/// still routes.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EnvironmentObject {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    status: Option<StatusObject>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusObject {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    sleep: Option<SleepObject>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
struct SleepObject {
    #[serde(default)]
    since: Option<String>,
}

impl kube::Resource for EnvironmentObject {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        appenv_api::AppEnvironment::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        appenv_api::AppEnvironment::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        appenv_api::AppEnvironment::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        appenv_api::AppEnvironment::plural(dt)
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

impl EnvironmentObject {
    /// What routing keeps of it.
    pub fn environment(&self) -> Environment {
        let status = self.status.clone().unwrap_or_default();
        let sleeping = status.phase.as_deref() == Some(appenv_api::Phase::Sleeping.as_str());
        Environment {
            name: self.name_any(),
            host: status.url.as_deref().and_then(host::from_url),
            namespace: status.namespace.filter(|ns| !ns.is_empty()),
            sleeping,
            sleep_since: status
                .sleep
                .and_then(|sleep| sleep.since)
                .as_deref()
                .and_then(decide::parse),
            last_request: self
                .annotations()
                .get(crate::LAST_REQUEST_ANNOTATION)
                .and_then(|value| decide::parse(value)),
            resource_version: self.resource_version(),
        }
    }
}

#[cfg(test)]
mod tests;
