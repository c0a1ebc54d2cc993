//! The activator's only API write: the last-request annotation of an AppEnvironment, by a
//! JSON merge patch that carries the resourceVersion the watch showed (of two replicas that
//! write at once, one gets 409 and leaves it). Whether to write is `decide`'s.

use crate::decide::{self, ERROR_BACKOFF, Reason, Write};
use crate::metrics::{Metrics, WriteResult};
use crate::state::EnvironmentState;
use crate::table::{Environment, EnvironmentObject};
use crate::{FIELD_MANAGER, LAST_REQUEST_ANNOTATION};
use jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams};
use std::sync::Arc;
use std::time::Duration;

/// A write that has not answered by then is given up (and counted as failed).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What writes need.
#[derive(Debug, Clone)]
pub struct Writer {
    pub api: Api<EnvironmentObject>,
    pub interval: SignedDuration,
    pub metrics: Arc<Metrics>,
}

impl Writer {
    /// A request reached `env` (with or without a Ready web Pod): write the annotation in the
    /// background if the decision says so.
    pub fn request(&self, env: &Environment, ready: bool, state: &Arc<EnvironmentState>) {
        let Some(resource_version) = env.resource_version.clone() else {
            return;
        };
        let now = Timestamp::now();
        let write = {
            let mut local = state.local();
            let Some(write) = decide::decide(now, self.interval, &env.observed(ready), &local)
            else {
                return;
            };
            local.in_flight = true;
            write
        };
        let writer = self.clone();
        let name = env.name.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let result = writer.patch(&name, &resource_version, write).await;
            writer.metrics.wrote(write.reason, result);
            {
                let mut local = state.local();
                local.in_flight = false;
                match result {
                    WriteResult::Written => {
                        local.written = local.written.max(Some(write.value));
                        local.conflicted_at = None;
                        local.backoff_until = None;
                    }
                    WriteResult::Conflict => local.conflicted_at = Some(resource_version),
                    WriteResult::Failed => {
                        local.backoff_until = Some(Timestamp::now() + ERROR_BACKOFF);
                    }
                }
            }
            // Held requests look again (after a failure, to try again when it is due).
            state.notify();
        });
    }

    async fn patch(&self, name: &str, resource_version: &str, write: Write) -> WriteResult {
        let body = serde_json::json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": {LAST_REQUEST_ANNOTATION: decide::format(write.value)},
            }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(&body);
        let patch = self.api.patch(name, &params, &patch);
        match tokio::time::timeout(WRITE_TIMEOUT, patch).await {
            Ok(Ok(_)) => {
                tracing::debug!(environment = %name, reason = write.reason.as_str(),
                    value = %decide::format(write.value), "wrote the last request");
                WriteResult::Written
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                tracing::debug!(environment = %name, "last request: written by someone else first");
                WriteResult::Conflict
            }
            Ok(Err(err)) => {
                log_failure(name, write.reason, &err);
                WriteResult::Failed
            }
            Err(_) => {
                tracing::warn!(environment = %name, reason = write.reason.as_str(),
                    "writing the last request: no answer within {WRITE_TIMEOUT:?}");
                WriteResult::Failed
            }
        }
    }
}

fn log_failure(name: &str, reason: Reason, err: &kube::Error) {
    tracing::warn!(environment = %name, reason = reason.as_str(), error = %err,
        "writing the last request failed; trying again on a request after {ERROR_BACKOFF}");
}
