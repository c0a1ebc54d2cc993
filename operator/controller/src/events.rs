//! Events about AppEnvironments, as core/v1 Events in `default` (where Kubernetes keeps the
//! events of cluster-scoped objects), shown by `kubectl describe appenv`. kube's
//! events.k8s.io recorder cannot be used here: older API servers reject its events for
//! cluster-scoped objects outside `kube-system`, and so they do core/v1 Events that set
//! `eventTime`; without it, the long-standing rule that allows `default` applies.

use appenv_api::AppEnvironmentStatus;
use appenv_api::names::{Action, ConditionType, Reason};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// The Event API limits a message to 1024 bytes.
const MAX_NOTE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

pub struct Publisher {
    client: Client,
    instance: String,
}

impl Publisher {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| "appenv".to_owned()),
        }
    }

    /// Publish an Event; failures are logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        kind: Kind,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let now = Timestamp::now();
        let mut message = note.to_owned();
        if message.len() > MAX_NOTE {
            let cut = (0..=MAX_NOTE)
                .rev()
                .find(|i| message.is_char_boundary(*i))
                .unwrap_or(0);
            message.truncate(cut);
            message.push_str("...");
        }
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!(
                    "{}.",
                    regarding.name.as_deref().unwrap_or("appenv")
                )),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            involved_object: regarding.clone(),
            type_: Some(
                if kind == Kind::Normal {
                    "Normal"
                } else {
                    "Warning"
                }
                .to_owned(),
            ),
            reason: Some(reason.to_owned()),
            action: Some(action.to_owned()),
            message: Some(message),
            source: Some(EventSource {
                component: Some("appenv".to_owned()),
                host: None,
            }),
            reporting_component: Some("appenv.dev/operator".to_owned()),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        if let Err(err) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %err, reason, "publishing an event");
        }
    }
}

/// One Event to publish about an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: Kind,
    pub reason: Reason,
    pub action: Action,
    pub message: String,
}

fn condition(status: Option<&AppEnvironmentStatus>, type_: ConditionType) -> Option<&Condition> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_.as_str())
}

/// The Events for the transitions from `before` to `after`: the spec became invalid, the
/// environment became ready or degraded, its migration failed.
pub fn transitions(
    before: Option<&AppEnvironmentStatus>,
    after: &AppEnvironmentStatus,
) -> Vec<Note> {
    let is = |status: Option<&AppEnvironmentStatus>, type_: ConditionType, value: &str| {
        condition(status, type_).is_some_and(|c| c.status == value)
    };
    let became = |type_, value| is(Some(after), type_, value) && !is(before, type_, value);
    let failed = |status: Option<&AppEnvironmentStatus>| {
        condition(status, ConditionType::MigrationsSucceeded)
            .is_some_and(|c| c.reason == Reason::Failed.as_str())
    };
    let note = |kind, reason, action, type_| Note {
        kind,
        reason,
        action,
        message: condition(Some(after), type_)
            .map(|c| c.message.clone())
            .unwrap_or_default(),
    };
    let mut notes = Vec::new();
    if became(ConditionType::Valid, "False") {
        notes.push(note(
            Kind::Warning,
            Reason::InvalidSpec,
            Action::Validate,
            ConditionType::Valid,
        ));
    }
    if became(ConditionType::Ready, "True") {
        notes.push(note(
            Kind::Normal,
            Reason::Ready,
            Action::Reconcile,
            ConditionType::Ready,
        ));
    }
    if became(ConditionType::Degraded, "True") {
        notes.push(note(
            Kind::Warning,
            Reason::Degraded,
            Action::Reconcile,
            ConditionType::Degraded,
        ));
    }
    if failed(Some(after)) && !failed(before) {
        notes.push(note(
            Kind::Warning,
            Reason::MigrationFailed,
            Action::Migrate,
            ConditionType::MigrationsSucceeded,
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn status(conditions: &[(ConditionType, &str, Reason)]) -> AppEnvironmentStatus {
        AppEnvironmentStatus {
            conditions: conditions
                .iter()
                .map(|(type_, status, reason)| Condition {
                    type_: type_.as_str().to_owned(),
                    status: (*status).to_owned(),
                    reason: reason.as_str().to_owned(),
                    message: format!("{type_} says so"),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
                .collect(),
            ..AppEnvironmentStatus::default()
        }
    }

    #[test]
    fn becoming_ready_is_one_normal_event_and_staying_ready_none() {
        let ready = status(&[(ConditionType::Ready, "True", Reason::Ready)]);
        let notes = transitions(None, &ready);
        assert_eq!(
            notes,
            [Note {
                kind: Kind::Normal,
                reason: Reason::Ready,
                action: Action::Reconcile,
                message: "Ready says so".into(),
            }]
        );
        assert_eq!(transitions(Some(&ready), &ready), []);
    }

    #[test]
    fn an_invalid_spec_a_degradation_and_a_failed_migration_are_warnings_once() {
        let bad = status(&[
            (ConditionType::Valid, "False", Reason::InvalidSpec),
            (ConditionType::Degraded, "True", Reason::ComponentFailing),
            (ConditionType::MigrationsSucceeded, "False", Reason::Failed),
        ]);
        let reasons: Vec<Reason> = transitions(None, &bad).iter().map(|n| n.reason).collect();
        assert_eq!(
            reasons,
            [
                Reason::InvalidSpec,
                Reason::Degraded,
                Reason::MigrationFailed
            ]
        );
        assert!(
            transitions(None, &bad)
                .iter()
                .all(|n| n.kind == Kind::Warning)
        );
        assert_eq!(transitions(Some(&bad), &bad), []);
    }
}
