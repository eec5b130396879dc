//! Time. The wall clock is read here and nowhere else, so that schedules, staleness and
//! retention can be tested with a manual clock.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock, in UTC.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().expect("clock lock") = t;
    }
    pub fn advance(&self, d: jiff::SignedDuration) {
        let mut t = self.0.lock().expect("clock lock");
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}

/// Format a time for people: `2026-11-22 13:05:09 UTC`.
pub fn human(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time as the state database stores it: RFC 3339 in UTC, nanoseconds as needed.
pub fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

/// A time the state database stored, if it reads as RFC 3339.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// The UTC day a time falls on.
pub fn utc_date(t: Timestamp) -> jiff::civil::Date {
    t.to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// Midnight UTC at the start of a day.
pub fn start_of(d: jiff::civil::Date) -> Timestamp {
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}
