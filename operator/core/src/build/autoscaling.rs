//! Autoscalers of workers with `autoscaling` (named like their Deployment): a KEDA
//! `ScaledObject` on the Redis queue's length where the cluster has KEDA, else a
//! HorizontalPodAutoscaler on CPU where it serves one, else none. Which the cluster offers is
//! an input ([`ClusterApis`]): the controller discovers it, offline it is assumed.

use crate::build::Inputs;
use crate::build::workers::{worker_meta, worker_name};
use crate::validate::{AutoscalingModel, Model, WorkerModel};
use appenv_api::QueueType;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use serde_json::{Value, json};

/// CPU use, in percent of the requests, a HorizontalPodAutoscaler aims at.
pub const CPU_TARGET_PERCENT: i32 = 75;

/// The version of `autoscaling` HorizontalPodAutoscalers a cluster serves (1.20: only
/// `v2beta2` has resource metrics with targets; 1.23 and later: `v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpaVersion {
    V2,
    V2beta2,
}

impl HpaVersion {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V2beta2 => "v2beta2",
        }
    }
}

/// What the cluster offers for autoscaling, as discovered by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterApis {
    /// KEDA's `scaledobjects.keda.sh` (v1alpha1) is served.
    pub keda: bool,
    /// The HorizontalPodAutoscaler version served, if one with CPU targets is.
    pub hpa: Option<HpaVersion>,
}

impl ClusterApis {
    /// What `appenv render` assumes without a cluster: `autoscaling/v2`, no KEDA.
    pub const OFFLINE: Self = Self {
        keda: false,
        hpa: Some(HpaVersion::V2),
    };
}

/// The kind of an autoscaler, with its API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoscalerKind {
    ScaledObject,
    HorizontalPodAutoscaler(HpaVersion),
}

impl AutoscalerKind {
    pub const fn group(self) -> &'static str {
        match self {
            Self::ScaledObject => "keda.sh",
            Self::HorizontalPodAutoscaler(_) => "autoscaling",
        }
    }
    pub const fn version(self) -> &'static str {
        match self {
            Self::ScaledObject => "v1alpha1",
            Self::HorizontalPodAutoscaler(v) => v.as_str(),
        }
    }
    pub const fn kind(self) -> &'static str {
        match self {
            Self::ScaledObject => "ScaledObject",
            Self::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
        }
    }
    pub const fn plural(self) -> &'static str {
        match self {
            Self::ScaledObject => "scaledobjects",
            Self::HorizontalPodAutoscaler(_) => "horizontalpodautoscalers",
        }
    }
}

/// One worker's autoscaler: its kind and the object (JSON with apiVersion and kind).
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaler {
    pub kind: AutoscalerKind,
    pub name: String,
    pub object: Value,
}

/// The autoscalers of the model's autoscaled workers, of the kind the cluster offers (none
/// while the environment is suspended: the Deployments are then held at zero).
pub fn autoscalers(model: &Model, inputs: &Inputs) -> Vec<Autoscaler> {
    if model.suspend || inputs.stop_workers {
        return Vec::new();
    }
    let kind = match inputs.cluster {
        ClusterApis { keda: true, .. } => AutoscalerKind::ScaledObject,
        ClusterApis { hpa: Some(v), .. } => AutoscalerKind::HorizontalPodAutoscaler(v),
        ClusterApis { hpa: None, .. } => return Vec::new(),
    };
    model
        .workers
        .iter()
        .filter_map(|w| w.autoscaling.as_ref().map(|a| (w, a)))
        .map(|(w, a)| {
            let object = match kind {
                AutoscalerKind::ScaledObject => scaled_object(model, inputs, w, a),
                AutoscalerKind::HorizontalPodAutoscaler(v) => hpa(model, inputs, w, a, v),
            };
            Autoscaler {
                kind,
                name: worker_name(model, w),
                object,
            }
        })
        .collect()
}

/// The Redis list holding a queue's waiting jobs.
pub fn queue_key(queue_type: QueueType, name: &str) -> String {
    match queue_type {
        QueueType::Rq => format!("rq:queue:{name}"),
        QueueType::Celery => name.to_owned(),
    }
}

fn scaled_object(
    model: &Model,
    inputs: &Inputs,
    worker: &WorkerModel,
    autoscaling: &AutoscalingModel,
) -> Value {
    let name = worker_name(model, worker);
    let meta = worker_meta(model, inputs, worker);
    // The Redis Service of the environment, by its name in the namespace (database 0, as in
    // REDIS_URL).
    let address = format!("{}-redis.{}.svc:6379", model.app, model.namespace.name);
    let triggers: Vec<Value> = autoscaling
        .queues
        .iter()
        .map(|queue| {
            json!({
                "type": "redis",
                "metadata": {
                    "address": address,
                    "listName": queue_key(autoscaling.queue_type, queue),
                    "listLength": autoscaling.target_length.to_string(),
                    "databaseIndex": "0",
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "triggers": triggers,
        },
    })
}

fn hpa(
    model: &Model,
    inputs: &Inputs,
    worker: &WorkerModel,
    autoscaling: &AutoscalingModel,
    version: HpaVersion,
) -> Value {
    let name = worker_name(model, worker);
    let hpa = HorizontalPodAutoscaler {
        metadata: worker_meta(model, inputs, worker),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: name.clone(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(CPU_TARGET_PERCENT),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    };
    let mut object = serde_json::to_value(&hpa).unwrap_or(Value::Null);
    // The fields used are the same in v2beta2 and v2.
    object["apiVersion"] = json!(format!("autoscaling/{}", version.as_str()));
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::build;
    use crate::settings::Settings;
    use crate::validate::validate;
    use appenv_api::{AppEnvironment, AppEnvironmentSpec};

    fn model(suspend: bool) -> Model {
        let spec: AppEnvironmentSpec = serde_norway::from_str(&format!(
            "{{app: shop, image: 'shop:1', redis: {{}}, suspend: {suspend}, workers: [\
               {{name: rq, autoscaling: {{minReplicas: 1, maxReplicas: 6, queue: {{type: RQ, names: [high, low], targetLength: 10}}}}}}, \
               {{name: celery, autoscaling: {{minReplicas: 2, maxReplicas: 4, queue: {{type: Celery, names: [celery]}}}}}}, \
               {{name: plain, replicas: 3}}]}}"
        ))
        .expect("spec");
        validate(
            &AppEnvironment::new("shop-prod", spec),
            &Settings::default(),
        )
        .expect("valid")
    }

    fn inputs(cluster: ClusterApis) -> Inputs {
        Inputs {
            cluster,
            ..Inputs::default()
        }
    }

    #[test]
    fn with_keda_each_autoscaled_worker_gets_a_scaled_object_on_its_redis_lists() {
        let keda = ClusterApis {
            keda: true,
            hpa: Some(HpaVersion::V2beta2),
        };
        let children = build(&model(false), &inputs(keda));
        let names: Vec<&str> = children
            .autoscalers
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["shop-rq", "shop-celery"]);
        let rq = &children.autoscalers[0];
        assert_eq!(rq.kind, AutoscalerKind::ScaledObject);
        assert_eq!(rq.object["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(rq.object["metadata"]["namespace"], "shop-prod");
        assert_eq!(
            rq.object["metadata"]["labels"]["appenv.dev/environment"],
            "shop-prod"
        );
        let spec = &rq.object["spec"];
        assert_eq!(spec["scaleTargetRef"]["name"], "shop-rq");
        assert_eq!(
            (
                spec["minReplicaCount"].clone(),
                spec["maxReplicaCount"].clone()
            ),
            (json!(1), json!(6))
        );
        let triggers = spec["triggers"].as_array().expect("triggers");
        let lists: Vec<&str> = triggers
            .iter()
            .map(|t| t["metadata"]["listName"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(lists, ["rq:queue:high", "rq:queue:low"]);
        assert_eq!(triggers[0]["type"], "redis");
        assert_eq!(
            triggers[0]["metadata"]["address"],
            "shop-redis.shop-prod.svc:6379"
        );
        assert_eq!(triggers[0]["metadata"]["listLength"], "10");
        let celery = &children.autoscalers[1].object["spec"]["triggers"][0]["metadata"];
        assert_eq!(celery["listName"], "celery");
        assert_eq!(celery["listLength"], "5");
    }

    #[test]
    fn without_keda_an_hpa_on_cpu_of_the_served_version_and_no_replicas_in_the_deployment() {
        for (version, api_version) in [
            (HpaVersion::V2, "autoscaling/v2"),
            (HpaVersion::V2beta2, "autoscaling/v2beta2"),
        ] {
            let cluster = ClusterApis {
                keda: false,
                hpa: Some(version),
            };
            let children = build(&model(false), &inputs(cluster));
            let hpa = &children.autoscalers[1];
            assert_eq!(hpa.kind, AutoscalerKind::HorizontalPodAutoscaler(version));
            assert_eq!(hpa.object["apiVersion"], api_version);
            assert_eq!(hpa.object["kind"], "HorizontalPodAutoscaler");
            let spec = &hpa.object["spec"];
            assert_eq!(spec["scaleTargetRef"]["name"], "shop-celery");
            assert_eq!(spec["minReplicas"], 2);
            assert_eq!(spec["maxReplicas"], 4);
            assert_eq!(
                spec["metrics"][0]["resource"]["target"]["averageUtilization"],
                CPU_TARGET_PERCENT
            );
            let replicas: Vec<Option<i32>> = children
                .workers
                .iter()
                .map(|d| d.spec.as_ref().and_then(|s| s.replicas))
                .collect();
            assert_eq!(replicas, [None, None, Some(3)], "the autoscaler's field");
        }
        let none = build(&model(false), &inputs(ClusterApis::default()));
        assert!(none.autoscalers.is_empty(), "nothing served: no autoscaler");
    }

    #[test]
    fn a_suspended_environment_has_no_autoscalers_and_zero_replicas() {
        let children = build(&model(true), &inputs(ClusterApis::OFFLINE));
        assert!(children.autoscalers.is_empty());
        assert!(
            children
                .workers
                .iter()
                .all(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(0))
        );
    }
}
