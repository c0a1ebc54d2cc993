//! Support shared by the integration tests: the process-wide local cluster, unique namespaces,
//! and waits that follow a watch with a deadline instead of sleeping.

#![allow(dead_code)] // each test binary uses a different part of this module

use appenv::devcluster;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A client for the shared local cluster (started on first use; a failure to start fails the test).
pub async fn client() -> Client {
    devcluster::shared()
        .client()
        .await
        .expect("client for the local control plane")
}

/// A fresh namespace named after the test, unique within this run.
pub async fn namespace(client: &Client, test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    name
}

/// Best-effort removal of a test namespace.
pub async fn cleanup(client: &Client, namespace: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(namespace, &DeleteParams::default()).await;
}

/// Wait, through a watch, until `cond` holds for the object, failing the test after `limit`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    limit: Duration,
    what: &str,
    cond: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(err)) => panic!("watching {name} for {what}: {err}"),
        Err(_) => {
            let current = api.get_opt(name).await.ok().flatten();
            panic!("{name}: not {what} within {limit:?}; last seen: {current:#?}")
        }
    }
}
