//! Cron schedules for backups: five fields (minute hour day-of-month month day-of-week), UTC,
//! as Kubernetes CronJobs take them (with `@daily` and the other descriptors). Parsed once in
//! validation, with a message that names the field and the rule; asked in the plan for the
//! next time after an instant, so that the clock is an input and tests never wait for a minute.

use k8s_openapi::jiff::civil::{Date, DateTime, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan as _};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month and day of week both restricted: a day matches either (cron's rule).
    either_day: bool,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    // 7 is Sunday too.
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        let named = self.names.iter().position(|n| *n == lower).map(|i| {
            // Month names count from 1, weekday names from 0.
            i as u32 + if self.name == "month" { 1 } else { 0 }
        });
        let value = match named {
            Some(v) => v,
            None => text
                .parse::<u32>()
                .map_err(|_| format!("{} field: {text:?} is not a number", self.name))?,
        };
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "{} field: {value} is outside {}-{}",
                self.name, self.min, self.max
            ))
        }
    }

    /// The bits of one field: a list of `*`, `N`, `N-M`, each with an optional `/step`.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!(
                            "{} field: step {step:?} must be a number above 0",
                            self.name
                        )
                    })?;
                    (range, step)
                }
                None => (part, 1),
            };
            let (from, to) = match range {
                "*" => (self.min, self.max),
                _ => match range.split_once('-') {
                    Some((a, b)) => (self.value(a)?, self.value(b)?),
                    // `N/step` runs from N to the end.
                    None if part.contains('/') => (self.value(range)?, self.max),
                    None => {
                        let v = self.value(range)?;
                        (v, v)
                    }
                },
            };
            if from > to {
                return Err(format!(
                    "{} field: range {range:?} runs backwards",
                    self.name
                ));
            }
            for v in (from..=to).step_by(step as usize) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "{text:?} has {} fields: a schedule is five (minute hour day-of-month month \
                 day-of-week, UTC), e.g. \"0 3 * * *\", or @hourly, @daily, @weekly, @monthly",
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        for (i, (field, part)) in FIELDS.iter().zip(&parts).enumerate() {
            bits[i] = field.parse(part)?;
        }
        // Sunday is 0 and 7.
        if bits[4] & (1 << 7) != 0 {
            bits[4] = (bits[4] | 1) & !(1 << 7);
        }
        Ok(Self {
            minutes: bits[0],
            hours: bits[1],
            days: bits[2],
            months: bits[3],
            weekdays: bits[4],
            either_day: !parts[2].starts_with('*') && !parts[4].starts_with('*'),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let month = self.months & (1 << date.month()) != 0;
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        month
            && if self.either_day {
                day || weekday
            } else {
                day && weekday
            }
    }

    /// The first time the schedule fires strictly after `after` (UTC), within eight years
    /// (a schedule such as `0 0 30 2 *` never fires: `None`).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(TimeZone::UTC).datetime();
        // The next whole minute after `after`.
        let first = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let mut date = first.date();
        for _ in 0..(366 * 8) {
            if self.day_matches(date) {
                for hour in 0..24u8 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in 0..60u8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let time = Time::new(hour as i8, minute as i8, 0, 0).ok()?;
                        let at = DateTime::from_parts(date, time);
                        if at >= first {
                            return at.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp());
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn next(schedule: &str, after: &str) -> String {
        Schedule::parse(schedule)
            .expect("valid")
            .next_after(at(after))
            .map_or("never".into(), |t| t.to_string())
    }

    #[test]
    fn the_next_time_is_strictly_after_and_in_utc() {
        assert_eq!(
            next("0 3 * * *", "2026-12-02T02:59:59Z"),
            "2026-12-02T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "2026-12-02T03:00:00Z"),
            "2026-12-03T03:00:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-02T03:07:30Z"),
            "2026-12-02T03:15:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-12-31T23:30:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("30 2 1 */3 *", "2026-12-02T00:00:00Z"),
            "2027-01-01T02:30:00Z"
        );
        // 2026-12-06 is a Sunday: 0 and 7 and `sun` are all Sunday.
        for sunday in ["0 4 * * 0", "0 4 * * 7", "0 4 * * SUN"] {
            assert_eq!(
                next(sunday, "2026-12-02T00:00:00Z"),
                "2026-12-06T04:00:00Z",
                "{sunday}"
            );
        }
        // Day of month and day of week both given: either matches (the 5th, or a Sunday).
        assert_eq!(
            next("0 0 5 * 0", "2026-12-02T00:00:00Z"),
            "2026-12-05T00:00:00Z"
        );
        assert_eq!(
            next("0 9 * jan-mar mon-fri", "2026-12-02T00:00:00Z"),
            "2027-01-01T09:00:00Z"
        );
        assert_eq!(next("0 0 30 2 *", "2026-12-02T00:00:00Z"), "never");
        assert_eq!(
            next("0 0 29 2 *", "2026-12-02T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
    }

    #[test]
    fn errors_name_the_field_and_the_rule() {
        for (bad, says) in [
            ("0 3 * *", "has 4 fields: a schedule is five"),
            ("61 3 * * *", "minute field: 61 is outside 0-59"),
            ("0 24 * * *", "hour field: 24 is outside 0-23"),
            ("0 3 0 * *", "day of month field: 0 is outside 1-31"),
            ("0 3 * 13 *", "month field: 13 is outside 1-12"),
            ("0 3 * * 8", "day of week field: 8 is outside 0-7"),
            ("0 3 * * mo", "day of week field: \"mo\" is not a number"),
            (
                "*/0 * * * *",
                "minute field: step \"0\" must be a number above 0",
            ),
            ("0 5-2 * * *", "hour field: range \"5-2\" runs backwards"),
            ("@reboot", "has 1 fields"),
        ] {
            let err = Schedule::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
