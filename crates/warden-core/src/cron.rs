//! Five-field cron schedules (`minute hour day-of-month month day-of-week`, UTC) for rotations.
//!
//! Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma-separated list
//! of those; day-of-week is 0–6 with 0 = Sunday (7 is also Sunday). As in classic cron, when both
//! day fields are restricted a day matches if either does. Hand-written rather than a crate: the
//! maintained cron crates bring `chrono`, and this is the whole of what rotation needs.

use time::{Duration, OffsetDateTime};

use crate::error::CoreError;

/// A parsed schedule: for each field, which values match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

fn field(spec: &str, min: u32, max: u32, name: &str) -> Result<(u64, bool), CoreError> {
    let bad = || {
        CoreError::field(
            "schedule",
            format!("{name} field {spec:?}: expected {min}–{max}, *, a-b, */n or lists"),
        )
    };
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| bad())?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad());
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            )
        } else {
            let v = range.parse::<u32>().map_err(|_| bad())?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(bad());
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, spec == "*"))
}

impl Cron {
    pub fn parse(spec: &str) -> Result<Cron, CoreError> {
        let parts: Vec<&str> = spec.split_whitespace().collect();
        let [mi, h, d, mo, w] = parts.as_slice() else {
            return Err(CoreError::field(
                "schedule",
                "five fields: minute hour day-of-month month day-of-week",
            ));
        };
        let (minutes, _) = field(mi, 0, 59, "minute")?;
        let (hours, _) = field(h, 0, 23, "hour")?;
        let (days, days_any) = field(d, 1, 31, "day-of-month")?;
        let (months, _) = field(mo, 1, 12, "month")?;
        let (mut weekdays, weekdays_any) = field(w, 0, 7, "day-of-week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any,
            weekdays_any,
        })
    }

    fn day_matches(&self, t: OffsetDateTime) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().number_days_from_sunday()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first matching minute strictly after `after` (UTC), within five years.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = after.to_offset(time::UtcOffset::UTC);
        let mut t =
            after.replace_second(0).ok()?.replace_nanosecond(0).ok()? + Duration::minutes(1);
        let end = after + Duration::days(5 * 366);
        while t <= end {
            if self.months & (1 << u8::from(t.month())) == 0 {
                // Jump to the first day of the next month.
                let (y, m) = if u8::from(t.month()) == 12 {
                    (t.year() + 1, time::Month::January)
                } else {
                    (t.year(), t.month().next())
                };
                t = time::Date::from_calendar_date(y, m, 1)
                    .ok()?
                    .midnight()
                    .assume_utc();
                continue;
            }
            if !self.day_matches(t) {
                t = (t.date().next_day()?).midnight().assume_utc();
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.replace_minute(0).ok()? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use time::macros::datetime;

    use super::*;

    #[test]
    fn next_occurrences_follow_the_fields() {
        let at = datetime!(2026-11-23 18:17:42 UTC);
        let next = |s: &str| Cron::parse(s).unwrap().next_after(at).unwrap();
        assert_eq!(next("* * * * *"), datetime!(2026-11-23 18:18 UTC));
        assert_eq!(next("0 3 * * *"), datetime!(2026-11-24 03:00 UTC));
        assert_eq!(next("*/15 * * * *"), datetime!(2026-11-23 18:30 UTC));
        assert_eq!(next("0 0 1 * *"), datetime!(2026-12-01 00:00 UTC));
        assert_eq!(
            next("30 2 * * 0"),
            datetime!(2026-11-29 02:30 UTC),
            "Sunday"
        );
        assert_eq!(
            next("30 2 * * 7"),
            datetime!(2026-11-29 02:30 UTC),
            "7 is Sunday too"
        );
        assert_eq!(
            next("0 12 29 2 *"),
            datetime!(2028-02-29 12:00 UTC),
            "leap day"
        );
        assert_eq!(
            next("0 9 1-7 * 1"),
            datetime!(2026-11-30 09:00 UTC),
            "either day field"
        );
        assert_eq!(next("5,10 0 * 1 *"), datetime!(2027-01-01 00:05 UTC));
        assert_eq!(
            Cron::parse("0 0 31 2 *").unwrap().next_after(at),
            None,
            "never"
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "* * * 13 *",
            "* * * * 8",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?}");
        }
    }
}
