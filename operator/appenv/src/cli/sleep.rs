//! `appenv preview sleep|wake --app APP --pr N [--wait]`: put a preview to sleep now, or wake
//! it, as the operator's idle rule and the activator's first request would.
//!
//! Both set an annotation the controller reads (operator/controller/src/sleep.rs): `sleep` the
//! time of the request in `appenv.dev/sleep-requested`; `wake` the time in
//! `appenv.dev/last-request`, as a request through the activator does. `--wait` watches the
//! environment until its phase is `Sleeping`, or `Ready` again.

use crate::cli::backup::annotate;
use crate::cli::preview::preview_name;
use anyhow::{Context as _, bail};
use appenv_activator::decide;
use appenv_api::names::request;
use appenv_api::{AppEnvironment, Phase};
use appenv_core::settings::parse_duration;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use std::time::Duration;

/// The field manager of the annotations (the operator's own, `appenv`, would claim them).
const FIELD_MANAGER: &str = "appenv-sleep";

#[derive(Debug, clap::Args)]
pub struct SleepArgs {
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub pr: u32,
    /// Wait until the preview sleeps (`sleep`) or is Ready again (`wake`).
    #[arg(long)]
    pub wait: bool,
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn phase(env: &AppEnvironment) -> Option<Phase> {
    env.status.as_ref().and_then(|s| s.phase)
}

fn asleep(env: &AppEnvironment) -> bool {
    env.status.as_ref().is_some_and(|s| s.sleep.is_some())
}

fn awake_and_ready(env: &AppEnvironment) -> bool {
    !asleep(env)
        && phase(env) == Some(Phase::Ready)
        && env.status.as_ref().and_then(|s| s.observed_generation) == env.metadata.generation
}

/// Put the preview to sleep now (`wake: false`) or wake it.
pub async fn run(client: &Client, args: &SleepArgs, wake: bool) -> anyhow::Result<bool> {
    let name = preview_name(&args.app, args.pr);
    let api: Api<AppEnvironment> = Api::all(client.clone());
    let Some(env) = api
        .get_opt(&name)
        .await
        .with_context(|| format!("reading AppEnvironment {name}"))?
    else {
        bail!("no preview {name}");
    };
    let now = Timestamp::now();
    // A wake is a request as the activator records it; a sleep request keeps its fraction of a
    // second, so two requests in one second are two requests (the controller takes each once).
    let (key, verb, value) = if wake {
        // As the activator's wake: never before `since` (the controller's rule).
        let since = env.status.as_ref().and_then(|s| s.sleep.as_ref());
        let at = since.map_or(now, |s| now.max(s.since.0));
        (request::LAST_REQUEST, "wake", decide::format(at))
    } else {
        (request::SLEEP, "sleep", now.to_string())
    };
    if wake && !asleep(&env) {
        println!("{name} is awake (phase {:?})", phase(&env));
        return Ok(true);
    }
    annotate(&api, &name, key, &value, FIELD_MANAGER).await?;
    println!("{verb} of {name} requested");
    if !args.wait {
        return Ok(true);
    }
    let done = move |e: Option<&AppEnvironment>| {
        e.is_none_or(|e| if wake { awake_and_ready(e) } else { asleep(e) })
    };
    match tokio::time::timeout(args.timeout, await_condition(api, &name, done)).await {
        Ok(Ok(Some(env))) => {
            let since = env
                .status
                .as_ref()
                .and_then(|s| s.sleep.as_ref())
                .map(|s| format!(" since {}", s.since.0))
                .unwrap_or_default();
            println!("{name}: {:?}{since}", phase(&env).unwrap_or(Phase::Pending));
            Ok(true)
        }
        Ok(Ok(None)) => bail!("AppEnvironment {name} was deleted while waiting for it"),
        Ok(Err(err)) => Err(err).with_context(|| format!("watching AppEnvironment {name}")),
        Err(_) => {
            eprintln!(
                "error: {name} did not {verb} within {}s",
                args.timeout.as_secs()
            );
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wake_time_is_written_as_the_activator_writes_it() {
        let now: Timestamp = "2026-12-02T10:00:00.987Z".parse().expect("time");
        assert_eq!(decide::format(now), "2026-12-02T10:00:00Z");
    }
}
