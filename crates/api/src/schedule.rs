//! Cron schedules in a time zone: when a policy's runs fall.

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule {0:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week): {1}"
    )]
    InvalidCron(String, String),
    #[error("timeZone {0:?} is not an IANA time zone name (e.g. UTC, Europe/Paris)")]
    InvalidTimeZone(String),
}

impl ScheduleError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::InvalidCron(..) => "InvalidSchedule",
            ScheduleError::InvalidTimeZone(_) => "InvalidTimeZone",
        }
    }
}

impl Schedule {
    /// `expression` must have exactly five fields; `time_zone` defaults to UTC.
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        if expression.split_whitespace().count() != 5 {
            return Err(ScheduleError::InvalidCron(
                expression.to_string(),
                format!("found {} fields", expression.split_whitespace().count()),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| ScheduleError::InvalidCron(expression.to_string(), e.to_string()))?;
        let zone = match time_zone {
            None | Some("") => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| ScheduleError::InvalidTimeZone(name.to_string()))?
            }
        };
        Ok(Self { cron, zone })
    }

    /// The time zone the schedule is read in.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.zone.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The latest run at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.zone.clone());
        self.cron
            .find_previous_occurrence(&zoned, true)
            .ok()
            .map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn daily_at_two_in_utc() {
        let s = Schedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-21T10:00:00Z")),
            Some(ts("2026-11-22T02:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(ts("2026-11-21T10:00:00Z")),
            Some(ts("2026-11-21T02:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(ts("2026-11-21T02:00:00Z")),
            Some(ts("2026-11-21T02:00:00Z"))
        );
    }

    #[test]
    fn time_zone_moves_the_run() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Paris")).unwrap();
        // 02:00 in Paris is 01:00 UTC in winter.
        assert_eq!(
            s.next_after(ts("2026-11-21T10:00:00Z")),
            Some(ts("2026-11-22T01:00:00Z"))
        );
    }

    #[test]
    fn every_minute() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-21T10:00:30Z")),
            Some(ts("2026-11-21T10:01:00Z"))
        );
    }

    #[test]
    fn rejects_bad_cron_and_unknown_zones() {
        for bad in ["", "* * * *", "0 2 * * * *", "61 * * * *", "every day"] {
            let err = Schedule::parse(bad, None).unwrap_err();
            assert_eq!(err.reason(), "InvalidSchedule", "{bad:?}");
        }
        let err = Schedule::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(err.reason(), "InvalidTimeZone");
    }
}
