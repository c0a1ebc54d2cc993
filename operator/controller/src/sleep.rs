//! Environments that sleep when idle (`spec.sleep.afterIdle`, or a preview's default) and on
//! request (`appenv preview sleep`). Asleep, an environment is built as a suspended one: web,
//! workers, Redis and PostgreSQL at zero replicas, every volume kept; its phase is `Sleeping`
//! and `status.sleep` says since when and why.
//!
//! What decides, from what the object carries (no read of its own):
//! - the annotation `appenv.dev/last-request`: the time of the last HTTP request to its host,
//!   written by the activator (at most once a minute, at once for a sleeping environment) and by
//!   `appenv preview wake`. A value at or after `status.sleep.since` wakes it.
//! - the annotation `appenv.dev/sleep-requested` (`appenv preview sleep`): a value not handled
//!   yet (`status.lastSleepRequest`) puts the environment to sleep now.
//! - idle for `afterIdle` since the last request (or, with none, since it was created): asleep.
//!
//! Waking, web and workers wait for the database and Redis to be ready (see `plan`): the order
//! of a first start. No migration runs unless the image changed meanwhile.

use appenv_api::SleepStatus;
use appenv_api::names::request;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// `status.sleep.reason` of an environment that slept for want of requests.
pub const IDLE: &str = "idle";
/// `status.sleep.reason` of one put to sleep by `appenv preview sleep`.
pub const REQUESTED: &str = "requested";

pub struct Input<'a> {
    /// `spec.sleep.afterIdle` (or the preview default); `None`: it never sleeps by itself.
    pub after_idle: Option<Duration>,
    pub annotations: &'a BTreeMap<String, String>,
    /// The previous `status.sleep`: it was asleep.
    pub previous: Option<&'a SleepStatus>,
    /// The last sleep request handled (`status.lastSleepRequest`).
    pub handled: Option<&'a str>,
    /// When the environment was created (the idle time's start when no request came yet).
    pub created: Option<Timestamp>,
    pub now: Timestamp,
}

/// Whether it sleeps now, and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Set while it sleeps.
    pub status: Option<SleepStatus>,
    /// When its idle period ends (awake, sleeping by itself): look again then.
    pub due: Option<Timestamp>,
    /// It fell asleep (`true`) or woke (`false`) in this reconcile, and why: an Event.
    pub changed: Option<(bool, String)>,
    /// The last sleep request handled, for `status.lastSleepRequest`.
    pub handled_request: Option<String>,
}

fn stamp(annotations: &BTreeMap<String, String>, key: &str) -> Option<Timestamp> {
    annotations.get(key).and_then(|v| v.trim().parse().ok())
}

/// `since` of an environment that falls asleep at `t`: the first whole second at or after it.
/// The activator writes whole seconds, rounded down: a request recorded before the sleep is
/// before `since` (even in the same second), and one after it is written as `since` at least
/// (the activator's rule), which wakes it.
fn since_of(t: Timestamp) -> Timestamp {
    let down = Timestamp::from_second(t.as_second()).unwrap_or(t);
    if down == t {
        down
    } else {
        down + SignedDuration::from_secs(1)
    }
}

/// Asleep from `now`. `since` is also past the last request recorded (`last_request`): a wake
/// writes `since` at least, so that value may be up to a second ahead of the clock, and it must
/// not wake the environment again.
fn asleep(reason: &str, now: Timestamp, last_request: Option<Timestamp>, why: String) -> Decision {
    // A value further ahead is no wake's (a clock's error, or garbage): not followed.
    let after_last = last_request
        .filter(|last| *last <= now + SignedDuration::from_secs(2))
        .map(|last| since_of(last) + SignedDuration::from_secs(1));
    Decision {
        status: Some(SleepStatus {
            since: Time(since_of(now).max(after_last.unwrap_or(now))),
            reason: reason.to_owned(),
        }),
        due: None,
        changed: Some((true, why)),
        handled_request: None,
    }
}

/// `30m`, `2h`, `1d`, `90s`: the largest unit that divides it.
fn short(period: Duration) -> String {
    let secs = period.as_secs();
    match [(86_400, 'd'), (3600, 'h'), (60, 'm')]
        .into_iter()
        .find(|(unit, _)| secs.is_multiple_of(*unit) && secs > 0)
    {
        Some((unit, suffix)) => format!("{}{suffix}", secs / unit),
        None => format!("{secs}s"),
    }
}

pub fn decide(input: &Input<'_>) -> Decision {
    let mut decision = decide_sleep(input);
    if decision.handled_request.is_none() {
        // Asleep, a sleep request is already met: it is taken now, or it would put the
        // environment back to sleep right after its next wake.
        let pending = input
            .previous
            .and_then(|_| input.annotations.get(request::SLEEP))
            .map(String::as_str);
        decision.handled_request = pending.or(input.handled).map(str::to_owned);
    }
    decision
}

fn decide_sleep(input: &Input<'_>) -> Decision {
    let last_request = stamp(input.annotations, request::LAST_REQUEST);
    let start = last_request.or(input.created).unwrap_or(input.now);
    let due = input
        .after_idle
        .and_then(|after| SignedDuration::try_from(after).ok())
        .and_then(|after| start.checked_add(after).ok());
    if let Some(sleeping) = input.previous {
        let since = sleeping.since.0;
        let woken = last_request.filter(|r| *r >= since);
        let never = sleeping.reason == IDLE && input.after_idle.is_none();
        return match (woken, never) {
            (Some(at), _) => Decision {
                status: None,
                due,
                changed: Some((false, format!("woken by a request at {at}"))),
                ..Decision::default()
            },
            (None, true) => Decision {
                status: None,
                due: None,
                changed: Some((false, "woken: it no longer sleeps when idle".to_owned())),
                ..Decision::default()
            },
            (None, false) => Decision {
                status: Some(sleeping.clone()),
                ..Decision::default()
            },
        };
    }
    // A new value of the sleep annotation is a new request, taken once.
    if let Some(raw) = input
        .annotations
        .get(request::SLEEP)
        .filter(|raw| Some(raw.as_str()) != input.handled)
        && let Ok(asked) = raw.trim().parse::<Timestamp>()
    {
        return Decision {
            handled_request: Some(raw.clone()),
            ..asleep(
                REQUESTED,
                input.now,
                last_request,
                format!("asleep on request (appenv preview sleep at {asked})"),
            )
        };
    }
    match due {
        Some(due) if input.now >= due => asleep(
            IDLE,
            input.now,
            last_request,
            format!(
                "asleep: no request since {start} ({} idle)",
                short(input.after_idle.unwrap_or_default())
            ),
        ),
        due => Decision {
            due,
            ..Decision::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a time")
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn decide_at(
        now: &str,
        after_idle: Option<u64>,
        notes: &BTreeMap<String, String>,
        previous: Option<&SleepStatus>,
    ) -> Decision {
        decide(&Input {
            after_idle: after_idle.map(Duration::from_secs),
            annotations: notes,
            previous,
            handled: None,
            created: Some(at("2026-12-02T10:00:00Z")),
            now: at(now),
        })
    }

    #[test]
    fn an_idle_environment_sleeps_once_its_period_passed_since_the_last_request() {
        let none = annotations(&[]);
        let d = decide_at("2026-12-02T10:29:59Z", Some(1800), &none, None);
        assert_eq!(d.status, None);
        assert_eq!(d.due, Some(at("2026-12-02T10:30:00Z")), "from its creation");
        let d = decide_at("2026-12-02T10:30:00.250Z", Some(1800), &none, None);
        let status = d.status.expect("asleep");
        assert_eq!(
            (status.since.0, status.reason.as_str()),
            (at("2026-12-02T10:30:01Z"), IDLE),
            "since: the first whole second at or after it fell asleep"
        );
        assert!(
            matches!(d.changed, Some((true, ref why)) if why.contains("no request since 2026-12-02T10:00:00Z"))
        );
        let used = annotations(&[(request::LAST_REQUEST, "2026-12-02T10:20:00Z")]);
        let d = decide_at("2026-12-02T10:30:00Z", Some(1800), &used, None);
        assert_eq!((d.status, d.due), (None, Some(at("2026-12-02T10:50:00Z"))));
        assert_eq!(
            decide_at("2026-12-02T23:00:00Z", None, &none, None),
            Decision::default(),
            "never sleeps by itself"
        );
    }

    #[test]
    fn a_request_at_or_after_it_fell_asleep_wakes_it_and_an_older_one_does_not() {
        let sleeping = SleepStatus {
            since: Time(at("2026-12-02T10:30:00Z")),
            reason: IDLE.into(),
        };
        let old = annotations(&[(request::LAST_REQUEST, "2026-12-02T10:00:00Z")]);
        let d = decide_at("2026-12-02T11:00:00Z", Some(1800), &old, Some(&sleeping));
        assert_eq!(d.status, Some(sleeping.clone()));
        assert_eq!(d.changed, None, "nothing changed: nothing to say");
        let same_second = annotations(&[(request::LAST_REQUEST, "2026-12-02T10:30:00Z")]);
        let d = decide_at(
            "2026-12-02T11:00:00Z",
            Some(1800),
            &same_second,
            Some(&sleeping),
        );
        assert_eq!(d.status, None);
        assert_eq!(d.due, Some(at("2026-12-02T11:00:00Z")));
        assert!(matches!(d.changed, Some((false, _))));
        // An idle sleeper whose spec no longer sleeps wakes; one put to sleep on request stays.
        let d = decide_at("2026-12-02T11:00:00Z", None, &old, Some(&sleeping));
        assert_eq!(d.status, None);
        let requested = SleepStatus {
            reason: REQUESTED.into(),
            ..sleeping
        };
        let d = decide_at("2026-12-02T11:00:00Z", None, &old, Some(&requested));
        assert_eq!(d.status, Some(requested));
    }

    #[test]
    fn a_new_sleep_request_sleeps_now_and_is_taken_once() {
        let asked = annotations(&[
            (request::SLEEP, "2026-12-02T10:05:00Z"),
            (request::LAST_REQUEST, "2026-12-02T10:05:00Z"),
        ]);
        let d = decide_at("2026-12-02T10:05:00.400Z", None, &asked, None);
        assert_eq!(
            d.status.as_ref().map(|s| s.reason.as_str()),
            Some(REQUESTED),
            "a request in the same second does not hide it"
        );
        assert_eq!(d.handled_request.as_deref(), Some("2026-12-02T10:05:00Z"));
        let sleeping = d.status.expect("asleep");
        assert_eq!(sleeping.since.0, at("2026-12-02T10:05:01Z"));
        let after = |last_request: &str, previous: Option<&SleepStatus>| {
            decide(&Input {
                after_idle: None,
                annotations: &annotations(&[
                    (request::SLEEP, "2026-12-02T10:05:00Z"),
                    (request::LAST_REQUEST, last_request),
                ]),
                previous,
                handled: Some("2026-12-02T10:05:00Z"),
                created: None,
                now: at("2026-12-02T10:05:01.500Z"),
            })
        };
        // The request recorded before it fell asleep, in the same second, does not wake it.
        let d = after("2026-12-02T10:05:00Z", Some(&sleeping));
        assert_eq!(d.status.as_ref(), Some(&sleeping), "still asleep");
        // One after it (the activator writes `since` at least) wakes it; the request handled
        // is not taken again, and stays recorded.
        let d = after("2026-12-02T10:05:01Z", Some(&sleeping));
        assert_eq!(d.status, None, "woken");
        let d = after("2026-12-02T10:05:01Z", None);
        assert_eq!(d.status, None, "not asleep again");
        assert_eq!(d.handled_request.as_deref(), Some("2026-12-02T10:05:00Z"));
        // The last wake's request may be ahead of the clock (written as the last `since`): a
        // sleep request within that second falls asleep after it, and stays asleep.
        let ahead = annotations(&[
            (request::SLEEP, "2026-12-02T10:20:00.900Z"),
            (request::LAST_REQUEST, "2026-12-02T10:20:01Z"),
        ]);
        let d = decide_at("2026-12-02T10:20:00.950Z", None, &ahead, None);
        let sleeping = d.status.expect("asleep");
        assert_eq!(sleeping.since.0, at("2026-12-02T10:20:02Z"));
        let d = decide(&Input {
            after_idle: None,
            annotations: &ahead,
            previous: Some(&sleeping),
            handled: Some("2026-12-02T10:20:00.900Z"),
            created: None,
            now: at("2026-12-02T10:20:01.500Z"),
        });
        assert_eq!(
            d.status.as_ref(),
            Some(&sleeping),
            "not woken by the old request"
        );
        // Asleep (idle) when asked to sleep: the request is taken at once, so the next wake
        // lasts.
        let idle = SleepStatus {
            since: Time(at("2026-12-02T10:30:00Z")),
            reason: IDLE.into(),
        };
        let asked_asleep = annotations(&[
            (request::SLEEP, "2026-12-02T10:40:00.5Z"),
            (request::LAST_REQUEST, "2026-12-02T10:00:00Z"),
        ]);
        let d = decide_at(
            "2026-12-02T10:40:01Z",
            Some(1800),
            &asked_asleep,
            Some(&idle),
        );
        assert_eq!(
            d.status.as_ref(),
            Some(&idle),
            "still asleep, since unchanged"
        );
        assert_eq!(d.handled_request.as_deref(), Some("2026-12-02T10:40:00.5Z"));
        let woken = annotations(&[
            (request::SLEEP, "2026-12-02T10:40:00.5Z"),
            (request::LAST_REQUEST, "2026-12-02T10:50:00Z"),
        ]);
        let d = decide(&Input {
            after_idle: Some(Duration::from_secs(1800)),
            annotations: &woken,
            previous: None,
            handled: Some("2026-12-02T10:40:00.5Z"),
            created: None,
            now: at("2026-12-02T10:50:01Z"),
        });
        assert_eq!(d.status, None, "the wake lasts");
        // A value that is no time is no request.
        let garbage = annotations(&[(request::SLEEP, "now please")]);
        assert_eq!(
            decide_at("2026-12-02T10:06:01Z", None, &garbage, None),
            Decision::default()
        );
    }
}
