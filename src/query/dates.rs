//! Relative dates for parameters (`yesterday`, `last_week`, ...), resolved on a given day (a
//! report's or a pipeline's, in its zone), then bound like `--param` values.

use chrono::{Datelike, Duration, NaiveDate};

/// A parameter value as the query gets it: a relative date becomes `YYYY-MM-DD` of `today` (the
/// report's day in its zone); anything else is kept as written.
///
/// `today`, `yesterday`; `this_week` / `last_week` (their Mondays); `this_month` / `last_month`
/// (their first days); `today-7d`, `today+1d`.
pub fn resolve(value: &str, today: NaiveDate) -> String {
    let day = match value.trim() {
        "today" => Some(today),
        "yesterday" => Some(today - Duration::days(1)),
        "this_week" => Some(monday(today)),
        "last_week" => Some(monday(today) - Duration::days(7)),
        "this_month" => today.with_day(1),
        "last_month" => today
            .with_day(1)
            .and_then(|first| (first - Duration::days(1)).with_day(1)),
        other => offset(other).map(|days| today + Duration::days(days)),
    };
    match day {
        Some(day) => day.format("%Y-%m-%d").to_string(),
        None => value.to_string(),
    }
}

fn monday(day: NaiveDate) -> NaiveDate {
    day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

/// `today-7d` → -7, `today+1d` → 1.
fn offset(text: &str) -> Option<i64> {
    let rest = text.strip_prefix("today")?.strip_suffix('d')?;
    let (sign, digits) = match rest.split_at_checked(1)? {
        ("-", digits) => (-1, digits),
        ("+", digits) => (1, digits),
        _ => return None,
    };
    digits.parse::<i64>().ok().map(|n| sign * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_dates_resolve_on_the_report_day() {
        // A Wednesday.
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let cases = [
            ("today", "2026-11-25"),
            ("yesterday", "2026-11-24"),
            ("this_week", "2026-11-23"),
            ("last_week", "2026-11-16"),
            ("this_month", "2026-11-01"),
            ("last_month", "2026-10-01"),
            ("today-7d", "2026-11-18"),
            ("today+1d", "2026-11-26"),
            ("42", "42"),
            ("beijing", "beijing"),
            ("today-xd", "today-xd"),
        ];
        for (value, expected) in cases {
            assert_eq!(resolve(value, today), expected, "{value}");
        }
        let january = NaiveDate::from_ymd_opt(2027, 1, 3).unwrap();
        assert_eq!(resolve("last_month", january), "2026-12-01");
    }
}
