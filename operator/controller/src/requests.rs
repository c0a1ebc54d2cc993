//! Every API request a client makes, counted by Kubernetes verb and resource: a tower layer on
//! the kube `Client`. The operator serves the counts as `appenv_api_requests_total`; tests use
//! them to prove the ClusterRole grants exactly the verbs the code uses, and that a standby
//! replica writes nothing.

use kube::client::{Body, ClientBuilder};
use prometheus_client::encoding::EncodeLabelSet;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// What RBAC sees of a request: verb, API group ("" for the core group) and resource (with
/// `/subresource` when there is one). Its fields are the labels of `appenv_api_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct Request {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
}

impl Request {
    /// Whether the request changes something on the server.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)
    }
}

/// How Kubernetes names a request (its RequestInfo): `None` for non-resource paths such as
/// `/version` or discovery.
pub fn classify(method: &http::Method, uri: &http::Uri) -> Option<Request> {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => return None,
    };
    // `namespaces/<ns>/<resource>...` addresses a namespaced resource, except a namespace's own
    // subresources (`namespaces/<name>/status|finalize`).
    let rest = match rest {
        ["namespaces", _ns, resource, tail @ ..] if !matches!(*resource, "status" | "finalize") => {
            let mut parts = vec![*resource];
            parts.extend_from_slice(tail);
            parts
        }
        other => other.to_vec(),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub, ..] => (*resource, Some(*name), Some(*sub)),
        [] => return None,
    };
    let watching = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    Some(Request {
        verb,
        group,
        resource,
    })
}

/// Counts of requests, shared between the client layer and whoever reads them.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    counts: Arc<Mutex<BTreeMap<Request, u64>>>,
    /// Server-side applies that created their object (answered 201): the API server also
    /// authorizes those as `create`.
    created_by_apply: Arc<Mutex<BTreeSet<Request>>>,
}

impl Recorder {
    pub(crate) fn record(&self, method: &http::Method, uri: &http::Uri) -> Option<Request> {
        let request = classify(method, uri)?;
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(request.clone()).or_default() += 1;
        }
        Some(request)
    }

    fn answered(&self, request: Request, status: http::StatusCode) {
        if request.verb == "patch"
            && status == http::StatusCode::CREATED
            && let Ok(mut created) = self.created_by_apply.lock()
        {
            created.insert(Request {
                verb: "create",
                ..request
            });
        }
    }

    /// Every (verb, group, resource) the API server authorized for this client: the requests,
    /// and `create` for each kind a server-side apply created.
    pub fn authorized(&self) -> BTreeSet<Request> {
        let mut all: BTreeSet<Request> = self.snapshot().into_keys().collect();
        if let Ok(created) = self.created_by_apply.lock() {
            all.extend(created.iter().cloned());
        }
        all
    }

    /// Requests so far, by kind.
    pub fn snapshot(&self) -> BTreeMap<Request, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Requests so far, and how many of them were writes.
    pub fn totals(&self) -> (u64, u64) {
        self.snapshot()
            .iter()
            .fold((0, 0), |(all, writes), (request, n)| {
                (all + n, writes + if request.is_write() { *n } else { 0 })
            })
    }

    /// A client for `config` whose every request is counted here.
    pub fn client(&self, config: kube::Config) -> Result<kube::Client, kube::Error> {
        let recorder = self.clone();
        let layer = tower::layer::layer_fn(move |inner| Counting {
            inner,
            recorder: recorder.clone(),
        });
        Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
    }
}

/// The tower service that counts: each request when sent, its answer's status when it comes.
struct Counting<S> {
    inner: S,
    recorder: Recorder,
}

impl<S, B> tower::Service<http::Request<Body>> for Counting<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let kind = self.recorder.record(request.method(), request.uri());
        let recorder = self.recorder.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(kind) = kind {
                recorder.answered(kind, response.status());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(method: &str, uri: &str) -> String {
        let method = http::Method::from_bytes(method.as_bytes()).expect("method");
        let uri: http::Uri = uri.parse().expect("uri");
        classify(&method, &uri).map_or_else(|| "-".to_owned(), |r| r.to_string())
    }

    #[test]
    fn names_requests_as_rbac_does() {
        let cases = [
            ("GET", "/api/v1/namespaces", "list core/namespaces"),
            ("PATCH", "/api/v1/namespaces/pr-1", "patch core/namespaces"),
            (
                "PUT",
                "/api/v1/namespaces/pr-1/finalize",
                "update core/namespaces/finalize",
            ),
            (
                "GET",
                "/api/v1/namespaces/pr-1/pods?labelSelector=a",
                "list core/pods",
            ),
            (
                "GET",
                "/api/v1/namespaces/pr-1/pods/web-1/log",
                "get core/pods/log",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/events",
                "create core/events",
            ),
            (
                "GET",
                "/apis/apps/v1/deployments?watch=true&resourceVersion=1",
                "watch apps/deployments",
            ),
            (
                "PATCH",
                "/apis/appenv.dev/v1alpha1/appenvironments/t7e/status?fieldManager=appenv",
                "patch appenv.dev/appenvironments/status",
            ),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/a/jobs/migrate",
                "delete batch/jobs",
            ),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/a/jobs",
                "deletecollection batch/jobs",
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/op",
                "get coordination.k8s.io/leases",
            ),
            ("GET", "/version", "-"),
            ("GET", "/apis", "-"),
        ];
        for (method, uri, expected) in cases {
            assert_eq!(named(method, uri), expected, "{method} {uri}");
        }
    }

    #[test]
    fn counts_writes_apart() {
        let recorder = Recorder::default();
        let get = http::Method::GET;
        let patch = http::Method::PATCH;
        recorder.record(
            &get,
            &"/api/v1/namespaces/a/secrets/s".parse().expect("uri"),
        );
        recorder.record(
            &patch,
            &"/api/v1/namespaces/a/secrets/s".parse().expect("uri"),
        );
        recorder.record(
            &patch,
            &"/api/v1/namespaces/a/secrets/s".parse().expect("uri"),
        );
        assert_eq!(recorder.totals(), (3, 2));
        assert_eq!(recorder.snapshot().len(), 2);
        let apply = recorder
            .record(
                &patch,
                &"/api/v1/namespaces/a/secrets/t".parse().expect("uri"),
            )
            .expect("a resource request");
        recorder.answered(apply.clone(), http::StatusCode::OK);
        assert!(!recorder.authorized().iter().any(|r| r.verb == "create"));
        recorder.answered(apply, http::StatusCode::CREATED);
        assert!(recorder.authorized().iter().any(|r| r.verb == "create"));
    }
}
