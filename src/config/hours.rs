//! Times of day a schedule speaks of: its backup window (`window = "19:00-07:00"`) and when a
//! bandwidth limit applies (`when = "08:00-16:30 Mon-Fri"`). A range that ends before it starts
//! runs past midnight, and its days are the days it starts on.

use jiff::Zoned;
use jiff::civil::{Time, Weekday};

/// Hours that cannot be read: what was written and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HoursError(String);

/// `HH:MM-HH:MM` (seconds allowed: `HH:MM:SS`), optionally followed by days: `Mon-Fri`,
/// `Sat,Sun`, `Mon,Wed-Fri`. Without days, every day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hours {
    text: String,
    start: Time,
    end: Time,
    /// Monday first.
    days: [bool; 7],
}

pub const HOURS_FIX: &str = "a range of times and, if not every day, the days it starts on: \"19:00-07:00\", \"08:00-16:30 Mon-Fri\", \"09:00-12:00 Sat,Sun\"";

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn day_index(d: Weekday) -> usize {
    d.to_monday_zero_offset() as usize
}

impl Hours {
    pub fn parse(text: &str) -> Result<Hours, HoursError> {
        let bad = |why: &str| HoursError(format!("{text:?} is not a range of hours: {why}"));
        let mut parts = text.split_whitespace();
        let range = parts.next().ok_or_else(|| bad("it is empty"))?;
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| bad("give a start and an end, like 19:00-07:00"))?;
        let time = |t: &str| {
            let ok = t.len() >= 4
                && t.split(':').count() >= 2
                && t.chars().all(|c| c.is_ascii_digit() || c == ':');
            ok.then(|| Time::strptime("%H:%M:%S", t).or_else(|_| Time::strptime("%H:%M", t)))
                .and_then(Result::ok)
                .ok_or_else(|| bad(&format!("{t:?} is not a time of day (HH:MM, 24-hour)")))
        };
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(bad("it starts and ends at the same time"));
        }
        let mut days = [false; 7];
        match parts.next() {
            None => days = [true; 7],
            Some(list) => {
                for item in list.split(',') {
                    let find = |d: &str| {
                        let d = d.to_ascii_lowercase();
                        (0..7)
                            .find(|&i| DAYS[i] == d || FULL_DAYS[i] == d)
                            .ok_or_else(|| bad(&format!("{d:?} is not a day (Mon, Tue, … Sun)")))
                    };
                    match item.split_once('-') {
                        Some((from, to)) => {
                            let (from, to) = (find(from)?, find(to)?);
                            let mut i = from;
                            loop {
                                days[i] = true;
                                if i == to {
                                    break;
                                }
                                i = (i + 1) % 7;
                            }
                        }
                        None => days[find(item)?] = true,
                    }
                }
            }
        }
        if parts.next().is_some() {
            return Err(bad("write the days as one list, like Mon-Fri or Sat,Sun"));
        }
        Ok(Hours {
            text: text.trim().to_string(),
            start,
            end,
            days,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }

    /// Whether `at` falls in these hours.
    pub fn contains(&self, at: &Zoned) -> bool {
        let t = at.time();
        let today = day_index(at.weekday());
        let yesterday = (today + 6) % 7;
        if self.crosses_midnight() {
            (t >= self.start && self.days[today]) || (t < self.end && self.days[yesterday])
        } else {
            t >= self.start && t < self.end && self.days[today]
        }
    }

    /// When the hours that `at` falls in end (`None` when `at` is outside them).
    pub fn end_after(&self, at: &Zoned) -> Option<Zoned> {
        if !self.contains(at) {
            return None;
        }
        let date = if self.crosses_midnight() && at.time() >= self.start {
            at.date().tomorrow().ok()?
        } else {
            at.date()
        };
        date.to_datetime(self.end)
            .to_zoned(at.time_zone().clone())
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Zoned {
        // 2026-12-07 is a Monday.
        format!("{text}[Europe/London]").parse().unwrap()
    }

    #[test]
    fn a_window_past_midnight_holds_from_its_start_to_the_next_morning() {
        let w = Hours::parse("19:00-07:00").unwrap();
        assert!(w.contains(&at("2026-12-07T19:00")));
        assert!(w.contains(&at("2026-12-08T06:59")));
        assert!(!w.contains(&at("2026-12-08T07:00")));
        assert!(!w.contains(&at("2026-12-08T12:00")));
        assert_eq!(
            w.end_after(&at("2026-12-07T22:30")).unwrap(),
            at("2026-12-08T07:00")
        );
        assert_eq!(
            w.end_after(&at("2026-12-08T03:00")).unwrap(),
            at("2026-12-08T07:00")
        );
        assert_eq!(w.end_after(&at("2026-12-08T12:00")), None);
    }

    #[test]
    fn school_hours_on_weekdays_only() {
        let h = Hours::parse("08:00-16:30 Mon-Fri").unwrap();
        assert!(h.contains(&at("2026-12-07T08:00")));
        assert!(h.contains(&at("2026-12-11T16:29:59")));
        assert!(!h.contains(&at("2026-12-11T16:30")));
        assert!(!h.contains(&at("2026-12-12T10:00")), "Saturday");
        let weekend = Hours::parse("22:00-06:00 Fri-Sun").unwrap();
        assert!(weekend.contains(&at("2026-12-12T01:00")), "Friday night");
        assert!(!weekend.contains(&at("2026-12-08T01:00")), "Monday night");
        assert!(weekend.contains(&at("2026-12-14T05:00")), "Sunday night");
        let some = Hours::parse("09:00:30-12:00 sat,Sunday").unwrap();
        assert!(some.contains(&at("2026-12-13T11:00")));
        assert!(!some.contains(&at("2026-12-12T09:00:10")));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("", "empty"),
            ("19:00", "start and an end"),
            ("25:00-07:00", "\"25:00\" is not a time"),
            ("7pm-7am", "not a time"),
            ("08:00-08:00", "same time"),
            ("08:00-16:30 Mo-Fr", "\"mo\" is not a day"),
            ("08:00-16:30 Mon Fri", "one list"),
        ] {
            let e = Hours::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
