//! Time zones and schedules, as the config files write them: a zone (`+08:00`, `UTC`,
//! `Asia/Shanghai`; [`DEFAULT_ZONE`] when a file names none), and a cron expression read in one
//! ([`Timing`]). Reports, pipelines, the intake's day partitions and the scheduler share them.

use std::str::FromStr;

use arrow::array::timezone::Tz;
use chrono::{DateTime, Utc};

/// A parsed schedule: cron fields read in a zone.
#[derive(Clone, Debug)]
pub struct Timing {
    /// The expression as written (five fields, or six with seconds first).
    pub text: String,
    /// The zone its fields are read in.
    pub zone: Tz,
    cron: cron::Schedule,
}

impl Timing {
    /// Parses `schedule` (five fields, minute first; or six/seven, seconds first as the `cron`
    /// crate reads them), read in `zone` (see [`parse_zone`]). The error says what to write
    /// instead.
    pub fn parse(schedule: &str, zone: Tz) -> std::result::Result<Self, String> {
        let fields = schedule.split_whitespace().count();
        let full = if fields == 5 {
            format!("0 {schedule}")
        } else {
            schedule.to_string()
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| {
            format!(
                "schedule '{schedule}' is not a cron expression ({e}); write minute hour day-of-month month day-of-week, e.g. \"0 8 * * *\" for 08:00 every day"
            )
        })?;
        Ok(Self {
            text: schedule.to_string(),
            zone,
            cron,
        })
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .after(&local)
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest due time at or before `now`.
    pub fn latest_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Cron times are whole seconds; the iterator steps back from strictly before its start.
        let start = (now + chrono::Duration::seconds(1)).with_timezone(&self.zone);
        self.cron
            .after(&start)
            .next_back()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t <= now)
    }
}

/// The zone of a file that names none: the game's server day, China Standard Time.
pub const DEFAULT_ZONE: &str = "+08:00";

/// The zone a file names, or [`DEFAULT_ZONE`], parsed (see [`parse_zone`]).
pub fn zone_or_default(text: Option<&str>) -> std::result::Result<Tz, String> {
    parse_zone(text.unwrap_or(DEFAULT_ZONE))
}

/// Today's date on the game's server day ([`DEFAULT_ZONE`]).
pub fn server_today() -> chrono::NaiveDate {
    match parse_zone(DEFAULT_ZONE) {
        Ok(zone) => Utc::now().with_timezone(&zone).date_naive(),
        Err(_) => Utc::now().date_naive(),
    }
}

/// A zone: a fixed offset (`+08:00`), `UTC`, or an IANA name (`Asia/Shanghai`).
pub fn parse_zone(text: &str) -> std::result::Result<Tz, String> {
    Tz::from_str(text).map_err(|e| {
        format!(
            "timezone '{text}' is not a zone ({e}); write e.g. \"+08:00\", \"UTC\" or \"Asia/Shanghai\""
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn due_times_are_read_in_the_zone() {
        let daily = Timing::parse("0 8 * * *", parse_zone("+08:00").unwrap()).unwrap();
        // 08:00 at +08:00 is 00:00 UTC.
        assert_eq!(
            daily.next_after(at("2026-11-25T03:00:00Z")),
            Some(at("2026-11-26T00:00:00Z"))
        );
        assert_eq!(
            daily.latest_due(at("2026-11-25T03:00:00Z")),
            Some(at("2026-11-25T00:00:00Z"))
        );
        // A due time is due at its own instant, not a second later.
        assert_eq!(
            daily.latest_due(at("2026-11-25T00:00:00Z")),
            Some(at("2026-11-25T00:00:00Z"))
        );
        let every_minute = Timing::parse("* * * * *", parse_zone("UTC").unwrap()).unwrap();
        assert_eq!(
            every_minute.latest_due(at("2026-11-25T03:00:59Z")),
            Some(at("2026-11-25T03:00:00Z"))
        );
        assert!(
            Timing::parse("every day", parse_zone("UTC").unwrap())
                .unwrap_err()
                .contains("minute hour")
        );
        assert!(
            parse_zone("Mars/Olympus")
                .unwrap_err()
                .contains("not a zone")
        );
    }
}
