//! What the cluster offers for autoscaling workers, asked when the controller starts and again
//! every resync (a KEDA installed later restarts the controller with it): discovery documents,
//! which every authenticated client may read.

use appenv_core::build::{AutoscalerKind, ClusterApis, HpaVersion};
use kube::Client;
use kube::core::ApiResource;

/// KEDA's ScaledObject and the newest HorizontalPodAutoscaler version with CPU targets the
/// API server serves. A discovery that fails counts as "not offered" (logged): workers then
/// run at their minimum replicas.
pub async fn cluster_apis(client: &Client) -> ClusterApis {
    let hpa = match client.list_api_groups().await {
        Ok(groups) => {
            let served = |version: &str| {
                groups.groups.iter().any(|g| {
                    g.name == "autoscaling" && g.versions.iter().any(|v| v.version == version)
                })
            };
            [HpaVersion::V2, HpaVersion::V2beta2]
                .into_iter()
                .find(|v| served(v.as_str()))
        }
        Err(err) => {
            tracing::warn!(error = %err, "API discovery failed: no HorizontalPodAutoscalers");
            None
        }
    };
    let keda = AutoscalerKind::ScaledObject;
    let keda = match client
        .list_api_group_resources(&format!("{}/{}", keda.group(), keda.version()))
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == keda.plural()),
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(err) => {
            tracing::warn!(error = %err, "API discovery of KEDA failed: no ScaledObjects");
            false
        }
    };
    let apis = ClusterApis { keda, hpa };
    tracing::info!(keda, hpa = ?hpa.map(HpaVersion::as_str), "autoscaling APIs");
    apis
}

/// Resolves once the cluster offers something else than `known` (asked every `interval`).
pub async fn changed(client: Client, known: ClusterApis, interval: std::time::Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if cluster_apis(&client).await != known {
            return;
        }
    }
}

/// The kinds of autoscaler the controller watches, applies and prunes on this cluster.
pub fn autoscaler_kinds(apis: ClusterApis) -> Vec<AutoscalerKind> {
    let mut kinds = Vec::new();
    if apis.keda {
        kinds.push(AutoscalerKind::ScaledObject);
    }
    kinds.extend(apis.hpa.map(AutoscalerKind::HorizontalPodAutoscaler));
    kinds
}

/// kube's description of an autoscaler kind, for dynamic requests.
pub fn api_resource(kind: AutoscalerKind) -> ApiResource {
    ApiResource {
        group: kind.group().to_owned(),
        version: kind.version().to_owned(),
        api_version: format!("{}/{}", kind.group(), kind.version()),
        kind: kind.kind().to_owned(),
        plural: kind.plural().to_owned(),
    }
}
