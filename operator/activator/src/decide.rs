//! Whether a request writes the last-request annotation now: a pure function of what the
//! activator's watch saw of the environment, what this replica wrote itself, and the clock.
//!
//! - Activity: at most one write per environment per interval, decided from the newest value
//!   known (the one the watch last saw, or this replica's own write the watch has not shown
//!   yet): skipped while that value is newer than `now - interval`.
//! - Wake: a request to an environment that sleeps, or has no Ready web Pod, writes at once
//!   unless the newest known value is already at or after `status.sleep.since`, which is what
//!   wakes it (the controller's rule: the annotation and `since` are whole seconds, `since`
//!   the first whole second at or after the environment fell asleep and after the last request
//!   recorded, so a request recorded before it, even in the same second, does not wake it). Without `since` there is nothing
//!   to compare with, and the activity rule decides. The value written is never before
//!   `since`.
//! - The interval a replica applies is the configured one plus a fraction of a second to a
//!   few seconds of its own ([`replica_interval`]): of two replicas that see the same value,
//!   one is due a little before the other, whose watch then shows the first one's write, so
//!   that they seldom both try (and one gets 409). Values written stay at least the configured
//!   interval apart.
//! - A write is conditional on the resourceVersion seen: one refused with 409 (another replica
//!   or the controller changed the object) is not tried again before the watch shows a newer
//!   version; one that failed otherwise not before [`ERROR_BACKOFF`].

use jiff::{SignedDuration, Timestamp};

/// After a write that failed (other than a conflict), the wait before this replica tries
/// again for that environment.
pub const ERROR_BACKOFF: SignedDuration = SignedDuration::from_secs(5);

/// What the watch shows of an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed<'a> {
    /// The annotation's value (unparsable counts as none).
    pub last_request: Option<Timestamp>,
    /// `status.phase` is `Sleeping`.
    pub sleeping: bool,
    /// `status.sleep.since`.
    pub sleep_since: Option<Timestamp>,
    /// A Ready web Pod can take the request.
    pub ready: bool,
    /// `metadata.resourceVersion`: a write without one is not possible.
    pub resource_version: Option<&'a str>,
}

/// What this replica did about the environment's annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// A write is on its way.
    pub in_flight: bool,
    /// The last value this replica wrote.
    pub written: Option<Timestamp>,
    /// The resourceVersion a write was refused at (409).
    pub conflicted_at: Option<String>,
    /// No write before this time (a write failed).
    pub backoff_until: Option<Timestamp>,
}

/// Why the annotation is written (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Activity of an awake environment (at most once per interval).
    Activity,
    /// A request to an environment that sleeps or has no Ready web Pod.
    Wake,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Wake => "wake",
        }
    }
}

/// Write `value` to the annotation, for `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub reason: Reason,
    pub value: Timestamp,
}

/// The interval a replica applies: `configured` plus `fraction` (0 to 1, drawn once per
/// replica) of a twentieth of it, at most 3 s.
pub fn replica_interval(configured: SignedDuration, fraction: f64) -> SignedDuration {
    let spread = (configured / 20).min(SignedDuration::from_secs(3));
    configured + spread.mul_f64(fraction.clamp(0.0, 1.0))
}

/// Whether a request is a wake request: the environment sleeps, or no Ready web Pod can take
/// it.
pub fn is_wake(observed: &Observed<'_>) -> bool {
    observed.sleeping || !observed.ready
}

/// `time` in whole seconds (the annotation's precision).
pub fn whole_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).unwrap_or(time)
}

/// `time` rounded up to whole seconds.
fn whole_seconds_up(time: Timestamp) -> Timestamp {
    let down = whole_seconds(time);
    if down == time {
        down
    } else {
        down + SignedDuration::from_secs(1)
    }
}

/// The write a request at `now` makes, if any.
pub fn decide(
    now: Timestamp,
    interval: SignedDuration,
    observed: &Observed<'_>,
    local: &Local,
) -> Option<Write> {
    let resource_version = observed.resource_version?;
    if local.in_flight
        || local.conflicted_at.as_deref() == Some(resource_version)
        || local.backoff_until.is_some_and(|until| now < until)
    {
        return None;
    }
    let newest = observed.last_request.max(local.written);
    let value = whole_seconds(now);
    let wake = is_wake(observed);
    if wake && let Some(since) = observed.sleep_since {
        if newest.is_none_or(|newest| newest < since) {
            return Some(Write {
                reason: Reason::Wake,
                value: value.max(whole_seconds_up(since)),
            });
        }
        return None;
    }
    let due = newest.is_none_or(|newest| newest + interval <= now);
    due.then_some(Write {
        reason: if wake { Reason::Wake } else { Reason::Activity },
        value,
    })
}

/// The annotation's value for `time`: RFC 3339, UTC, whole seconds.
pub fn format(time: Timestamp) -> String {
    whole_seconds(time).to_string()
}

/// The annotation's (or `since`'s) value as a time; `None` when it does not parse.
pub fn parse(value: &str) -> Option<Timestamp> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: SignedDuration = SignedDuration::from_secs(60);

    fn at(text: &str) -> Timestamp {
        parse(text).unwrap_or_else(|| panic!("{text} is a time"))
    }

    fn awake(last_request: Option<&str>) -> Observed<'static> {
        Observed {
            last_request: last_request.map(at),
            sleeping: false,
            sleep_since: None,
            ready: true,
            resource_version: Some("10"),
        }
    }

    fn sleeping(last_request: Option<&str>, since: Option<&str>) -> Observed<'static> {
        Observed {
            last_request: last_request.map(at),
            sleeping: true,
            sleep_since: since.map(at),
            ready: false,
            resource_version: Some("10"),
        }
    }

    #[test]
    fn activity_is_written_at_most_once_per_interval() {
        let now = at("2026-12-02T10:00:30.700Z");
        let none = Local::default();
        let written = |value: &str| Write {
            reason: Reason::Activity,
            value: at(value),
        };
        assert_eq!(
            decide(now, MINUTE, &awake(None), &none),
            Some(written("2026-12-02T10:00:30Z")),
            "never written: now, in whole seconds"
        );
        assert_eq!(
            decide(now, MINUTE, &awake(Some("2026-12-02T09:59:31Z")), &none),
            None,
            "seen 59 s ago"
        );
        assert_eq!(
            decide(now, MINUTE, &awake(Some("2026-12-02T09:59:30Z")), &none),
            Some(written("2026-12-02T10:00:30Z")),
            "seen a whole interval ago"
        );
        let own = Local {
            written: Some(at("2026-12-02T10:00:00Z")),
            ..Local::default()
        };
        assert_eq!(
            decide(now, MINUTE, &awake(Some("2026-12-02T09:00:00Z")), &own),
            None,
            "its own write, not yet seen by the watch, counts"
        );
    }

    #[test]
    fn a_write_in_flight_refused_or_failed_holds_the_next_one() {
        let now = at("2026-12-02T10:00:30Z");
        let in_flight = Local {
            in_flight: true,
            ..Local::default()
        };
        assert_eq!(decide(now, MINUTE, &awake(None), &in_flight), None);
        let refused = Local {
            conflicted_at: Some("10".to_owned()),
            ..Local::default()
        };
        assert_eq!(
            decide(now, MINUTE, &awake(None), &refused),
            None,
            "same version"
        );
        let newer = Observed {
            resource_version: Some("11"),
            ..awake(None)
        };
        assert!(
            decide(now, MINUTE, &newer, &refused).is_some(),
            "a newer version"
        );
        let failed = Local {
            backoff_until: Some(now + SignedDuration::from_secs(1)),
            ..Local::default()
        };
        assert_eq!(decide(now, MINUTE, &awake(None), &failed), None);
        assert!(decide(now + ERROR_BACKOFF, MINUTE, &awake(None), &failed).is_some());
        let unversioned = Observed {
            resource_version: None,
            ..awake(None)
        };
        assert_eq!(decide(now, MINUTE, &unversioned, &Local::default()), None);
    }

    #[test]
    fn a_wake_is_written_at_once_unless_a_value_at_or_after_since_is_known() {
        let now = at("2026-12-02T10:00:30.200Z");
        let none = Local::default();
        let since = Some("2026-12-02T10:00:10Z");
        let wake = |value: &str| {
            Some(Write {
                reason: Reason::Wake,
                value: at(value),
            })
        };
        assert_eq!(
            decide(
                now,
                MINUTE,
                &sleeping(Some("2026-12-02T10:00:05Z"), since),
                &none
            ),
            wake("2026-12-02T10:00:30Z"),
            "the last request 25 s ago is older than since: not waiting for the interval"
        );
        assert_eq!(
            decide(
                now,
                MINUTE,
                &sleeping(Some("2026-12-02T10:00:10Z"), since),
                &none
            ),
            None,
            "equal to since wakes it: written by another replica (or this one)"
        );
        assert_eq!(
            decide(
                now,
                MINUTE,
                &sleeping(Some("2026-12-02T10:00:09Z"), since),
                &none
            ),
            wake("2026-12-02T10:00:30Z"),
            "a second before since does not"
        );
        let own = Local {
            written: Some(at("2026-12-02T10:00:20Z")),
            ..Local::default()
        };
        assert_eq!(decide(now, MINUTE, &sleeping(None, since), &own), None);
        assert_eq!(
            decide(
                now,
                MINUTE,
                &sleeping(None, Some("2026-12-02T10:00:30.100Z")),
                &none
            ),
            wake("2026-12-02T10:00:31Z"),
            "never before since, in whole seconds"
        );
    }

    #[test]
    fn without_since_a_wake_follows_the_interval_and_is_counted_as_a_wake() {
        let now = at("2026-12-02T10:00:30Z");
        let none = Local::default();
        assert_eq!(
            decide(now, MINUTE, &sleeping(None, None), &none),
            Some(Write {
                reason: Reason::Wake,
                value: now
            }),
            "a missing since: write"
        );
        assert_eq!(
            decide(
                now,
                MINUTE,
                &sleeping(Some("2026-12-02T10:00:00Z"), None),
                &none
            ),
            None
        );
        let no_pod = Observed {
            ready: false,
            ..awake(None)
        };
        assert!(is_wake(&no_pod));
        assert_eq!(
            decide(now, MINUTE, &no_pod, &none).map(|w| w.reason),
            Some(Reason::Wake)
        );
        assert!(!is_wake(&awake(None)));
    }

    #[test]
    fn a_replica_is_due_a_little_after_the_interval_and_writes_whole_seconds() {
        assert_eq!(replica_interval(MINUTE, 0.0), MINUTE);
        assert_eq!(replica_interval(MINUTE, 1.0), SignedDuration::from_secs(63));
        assert_eq!(
            replica_interval(SignedDuration::from_secs(600), 1.0),
            SignedDuration::from_secs(603),
            "at most 3 s more"
        );
        assert_eq!(
            replica_interval(SignedDuration::from_secs(2), 0.5),
            SignedDuration::from_millis(2050)
        );
        let interval = replica_interval(MINUTE, 0.5);
        let seen = awake(Some("2026-12-02T10:00:00Z"));
        let none = Local::default();
        assert_eq!(
            decide(at("2026-12-02T10:01:01.400Z"), interval, &seen, &none),
            None
        );
        assert_eq!(
            decide(at("2026-12-02T10:01:01.500Z"), interval, &seen, &none),
            Some(Write {
                reason: Reason::Activity,
                value: at("2026-12-02T10:01:01Z")
            })
        );
    }

    #[test]
    fn values_are_rfc3339_utc_in_whole_seconds() {
        assert_eq!(
            format(at("2026-12-02T10:00:30.987654Z")),
            "2026-12-02T10:00:30Z"
        );
        assert_eq!(
            parse("2026-12-02T11:00:30+01:00"),
            Some(at("2026-12-02T10:00:30Z"))
        );
        assert_eq!(parse("yesterday"), None);
    }
}
