//! Writing the simulated kubelet's and scheduler's Events as the real ones do (client-go's
//! event recorder): a core/v1 Event in the Pod's namespace, `source` and `reportingComponent`
//! naming the component (and the node, for the kubelet), `involvedObject` the Pod. An Event
//! recorded again for the same Pod, reason, message and field path is not a new object: its
//! `count` goes up and its `lastTimestamp` moves, as client-go's correlator does.

use super::NODE_NAME;
use super::pod_state::{Reporter, SimEvent};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

/// FNV-1a: a stable hash (the same in every process and release), for Event names.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The Event's name: the Pod's name and a hash of what makes two Events the same one.
pub fn event_name(pod: &Pod, event: &SimEvent) -> String {
    let uid = pod.uid().unwrap_or_default();
    let hash = fnv1a(&[
        &uid,
        event.reporter.component(),
        event.reason,
        &event.message,
        event.field_path.as_deref().unwrap_or_default(),
    ]);
    format!("{}.{hash:016x}", pod.name_any())
}

/// The Event object recording `event` about `pod` for the first time at `now`.
pub fn event_object(pod: &Pod, event: &SimEvent, now: Timestamp) -> Value {
    let mut involved = json!({
        "apiVersion": "v1", "kind": "Pod",
        "namespace": pod.namespace(), "name": pod.name_any(),
        "uid": pod.uid(), "resourceVersion": pod.resource_version(),
    });
    if let Some(path) = &event.field_path {
        involved["fieldPath"] = json!(path);
    }
    let component = event.reporter.component();
    let mut source = json!({ "component": component });
    let mut instance = component.to_owned();
    if event.reporter == Reporter::Kubelet {
        source["host"] = json!(NODE_NAME);
        instance = NODE_NAME.to_owned();
    }
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name(pod, event), "namespace": pod.namespace()},
        "involvedObject": involved,
        "reason": event.reason,
        "message": event.message,
        "type": if event.warning { "Warning" } else { "Normal" },
        "source": source,
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    })
}

/// Record `event` about `pod`: create it, or count one more occurrence of it.
pub async fn record(client: &Client, pod: &Pod, event: &SimEvent) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    create_or_count(
        client,
        &pod.namespace().unwrap_or_default(),
        &event_name(pod, event),
        event_object(pod, event, now),
        now,
    )
    .await
}

/// Create the Event `object` (`name` in `ns`, first seen `now`), or, as client-go's correlator
/// does, count one more occurrence of the one that exists.
pub(crate) async fn create_or_count(
    client: &Client,
    ns: &str,
    name: &str,
    object: Value,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let created: Result<Event, _> = events
        .create(
            &PostParams::default(),
            &serde_json::from_value(object).map_err(kube::Error::SerdeError)?,
        )
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = events.get(name).await?;
            let count = existing.count.unwrap_or(1).saturating_add(1);
            let patch = json!({"count": count, "lastTimestamp": now.to_string(),
                "metadata": {"resourceVersion": existing.resource_version()}});
            events
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-1".into());
        pod.metadata.namespace = Some("shop".into());
        pod.metadata.uid = Some("u-1".into());
        pod
    }

    fn failed(message: &str) -> SimEvent {
        SimEvent {
            reporter: Reporter::Kubelet,
            warning: true,
            reason: "Failed",
            message: message.into(),
            field_path: Some("spec.containers{app}".into()),
        }
    }

    #[test]
    fn an_event_is_written_as_the_kubelet_writes_it() {
        let now = Timestamp::now();
        let event: Event = serde_json::from_value(event_object(
            &pod(),
            &failed("Error: secret \"x\" not found"),
            now,
        ))
        .expect("a valid Event");
        let source = event.source.expect("source");
        assert_eq!(source.component.as_deref(), Some("kubelet"));
        assert_eq!(source.host.as_deref(), Some(NODE_NAME));
        assert_eq!(event.reporting_component.as_deref(), Some("kubelet"));
        assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(event.involved_object.name.as_deref(), Some("web-1"));
        assert_eq!(
            event.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.count, Some(1));
        assert!(event.event_time.is_none(), "a core Event without eventTime");
        assert!(event.metadata.name.is_some_and(|n| n.starts_with("web-1.")));
    }

    #[test]
    fn the_same_event_has_the_same_name_and_another_one_another() {
        let first = event_name(&pod(), &failed("Error: a"));
        assert_eq!(first, event_name(&pod(), &failed("Error: a")));
        assert_ne!(first, event_name(&pod(), &failed("Error: b")));
        let scheduler = SimEvent {
            reporter: Reporter::Scheduler,
            ..failed("Error: a")
        };
        assert_ne!(first, event_name(&pod(), &scheduler));
        let event = event_object(&pod(), &scheduler, Timestamp::now());
        assert_eq!(event["source"], json!({"component": "default-scheduler"}));
    }
}
