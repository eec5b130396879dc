//! Cron expressions as school admins write them (five fields, crontab style), evaluated in a
//! time zone across daylight-saving changes:
//!
//! - a time that the clocks skip in spring (01:30 on the last Sunday of March in London) fires
//!   once, at the first minute after the jump, so a nightly backup is not lost;
//! - a time that happens twice in autumn (01:30 on the last Sunday of October) fires once, the
//!   first time.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed five-field cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
    text: String,
}

/// Why a cron expression could not be read; shown after "is not a cron expression: ".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("it has {0} field(s), not five")]
    FieldCount(usize),
    #[error("{value:?} is not a {field}")]
    NotANumber { field: &'static str, value: String },
    #[error("{field} {value} is out of range {min}-{max}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error("step {0:?} is not a positive number")]
    BadStep(String),
    #[error("range {0:?} runs backwards")]
    Backwards(String),
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    what: &'static str,
) -> Result<(u64, bool), CronError> {
    let value = |v: &str| -> Result<u32, CronError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + min);
        }
        let n: u32 = v.parse().map_err(|_| CronError::NotANumber {
            field: what,
            value: v.to_string(),
        })?;
        // Day of week 7 is Sunday too.
        let n = if what == "day of the week" && n == 7 {
            0
        } else {
            n
        };
        if n < min || n > max {
            return Err(CronError::OutOfRange {
                field: what,
                value: n,
                min,
                max,
            });
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| CronError::BadStep(s.to_string()))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(CronError::Backwards(range.to_string()));
            }
            (a, b)
        } else {
            let v = value(range)?;
            (v, if step > 1 { max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, text != "*"))
}

impl Cron {
    /// Parse `minute hour day-of-month month day-of-week`, or @hourly/@daily/@weekly/
    /// @monthly/@yearly.
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError::FieldCount(parts.len()));
        }
        let (minutes, _) = field(parts[0], 0, 59, &[], "minute")?;
        let (hours, _) = field(parts[1], 0, 23, &[], "hour")?;
        let (days, days_restricted) = field(parts[2], 1, 31, &[], "day of the month")?;
        let (months, _) = field(parts[3], 1, 12, &MONTHS, "month")?;
        let (weekdays, weekdays_restricted) = field(parts[4], 0, 7, &WEEKDAYS, "day of the week")?;
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays | (weekdays >> 7)) as u8 & 0x7f,
            days_restricted,
            weekdays_restricted,
            text: text.trim().to_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a local wall-clock minute matches.
    pub fn matches(&self, t: &jiff::civil::DateTime) -> bool {
        let day = self.days & (1 << t.day()) != 0;
        let weekday = self.weekdays & (1 << t.weekday().to_sunday_zero_offset()) != 0;
        // Vixie cron: when both day fields are restricted, either may match.
        let date = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        };
        self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.months & (1 << t.month()) != 0
            && date
    }

    /// The first firing strictly after `after`, within about five years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let minute = jiff::SignedDuration::from_secs(60);
        // Start at the next whole minute.
        let secs = after.as_second().div_euclid(60) * 60 + 60;
        let mut t = Timestamp::from_second(secs).ok()?;
        let mut prev_local = tz.to_datetime(t.checked_sub(minute).ok()?);
        // The latest local time seen, to fire a repeated (autumn) hour only once.
        let mut high_water = prev_local;
        for _ in 0..(5 * 366 * 24 * 60) {
            let local = tz.to_datetime(t);
            let jumped = local > prev_local.checked_add(minute).ok()?;
            if local > high_water {
                if self.matches(&local) {
                    return Some(t);
                }
                if jumped {
                    // The clocks went forward: local minutes in between never happened.
                    let mut skipped = prev_local.checked_add(minute).ok()?;
                    while skipped < local {
                        if self.matches(&skipped) {
                            return Some(t);
                        }
                        skipped = skipped.checked_add(minute).ok()?;
                    }
                }
                high_water = local;
            }
            prev_local = local;
            t = t.checked_add(minute).ok()?;
        }
        None
    }

    /// The longest time between two firings over the next year from `from`: what an RPO must
    /// exceed.
    pub fn longest_gap(&self, from: Timestamp, tz: &TimeZone) -> Option<jiff::SignedDuration> {
        let end = from
            .checked_add(jiff::SignedDuration::from_hours(24 * 400))
            .ok()?;
        let mut t = self.next_after(from, tz)?;
        let mut longest = jiff::SignedDuration::ZERO;
        while t < end {
            let next = self.next_after(t, tz)?;
            longest = longest.max(next.duration_since(t));
            t = next;
        }
        Some(longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn london() -> TimeZone {
        TimeZone::get("Europe/London").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_field_expressions_parse_and_bad_ones_say_why() {
        assert!(Cron::parse("0 1 * * *").is_ok());
        assert!(Cron::parse("*/15 8-17 * * mon-fri").is_ok());
        assert!(Cron::parse("0 8 1 9 *").is_ok());
        assert!(Cron::parse("@daily").is_ok());
        assert_eq!(
            Cron::parse("0 0 1 * * *").unwrap_err().to_string(),
            "it has 6 field(s), not five"
        );
        assert_eq!(
            Cron::parse("61 1 * * *").unwrap_err().to_string(),
            "minute 61 is out of range 0-59"
        );
        assert_eq!(
            Cron::parse("0 1 * * funday").unwrap_err(),
            CronError::NotANumber {
                field: "day of the week",
                value: "funday".into()
            }
        );
        assert_eq!(
            Cron::parse("0 1 * * */0").unwrap_err(),
            CronError::BadStep("0".into())
        );
        assert_eq!(
            Cron::parse("0 17-8 * * *").unwrap_err(),
            CronError::Backwards("17-8".into())
        );
    }

    #[test]
    fn a_nightly_job_fires_at_local_time_in_winter_and_summer() {
        let c = Cron::parse("0 1 * * *").unwrap();
        // 01:00 GMT is 01:00 UTC in January, 01:00 BST is 00:00 UTC in July.
        assert_eq!(
            c.next_after(at("2026-01-10T12:00:00Z"), &london()),
            Some(at("2026-01-11T01:00:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-07-10T12:00:00Z"), &london()),
            Some(at("2026-07-11T00:00:00Z"))
        );
    }

    #[test]
    fn the_spring_gap_fires_once_after_the_jump_and_the_autumn_hour_once() {
        // 2026-03-29: clocks go from 01:00 GMT to 02:00 BST. 01:30 never happens.
        let c = Cron::parse("30 1 * * *").unwrap();
        let fire = c.next_after(at("2026-03-28T12:00:00Z"), &london()).unwrap();
        assert_eq!(
            fire,
            at("2026-03-29T01:00:00Z"),
            "fires at 02:00 BST, right after the jump"
        );
        assert_eq!(
            c.next_after(fire, &london()),
            Some(at("2026-03-30T00:30:00Z"))
        );
        // 2026-10-25: clocks go from 02:00 BST back to 01:00 GMT. 01:30 happens twice.
        let first = c.next_after(at("2026-10-24T12:00:00Z"), &london()).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"), "01:30 BST");
        assert_eq!(
            c.next_after(first, &london()),
            Some(at("2026-10-26T01:30:00Z")),
            "not again at 01:30 GMT"
        );
    }

    #[test]
    fn the_longest_gap_of_a_weekday_schedule_is_the_weekend() {
        let c = Cron::parse("0 1 * * 1-5").unwrap();
        // Friday 01:00 to Monday 01:00; 73 hours across the October change.
        let gap = c
            .longest_gap(at("2026-01-01T00:00:00Z"), &london())
            .unwrap();
        assert_eq!(gap.as_hours(), 73);
        // 25 hours once a year, across the October change.
        let daily = Cron::parse("0 1 * * *").unwrap();
        assert_eq!(
            daily
                .longest_gap(at("2026-01-01T00:00:00Z"), &london())
                .unwrap()
                .as_hours(),
            25
        );
    }
}
