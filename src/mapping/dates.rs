//! Dates and time zones for the mapping: parsing what HR systems send, and the calendar day a
//! person is in.
//!
//! HR dates are calendar days ("starts on 2025-04-01") in the worker's time zone, not instants.
//! So effective dating compares calendar days: "today" is the day the clock's instant falls on
//! in that time zone. A leaver in Sydney is deactivated when their end date begins in Sydney,
//! hours before it begins in UTC.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A date or instant read from a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// A calendar day with no time zone (`2025-04-01`).
    Date(NaiveDate),
    /// A wall-clock time with no zone (`2025-04-01T09:00:00`): taken in the target zone.
    Local(NaiveDateTime),
    /// An instant (RFC 3339 with an offset, or epoch seconds).
    Instant(DateTime<FixedOffset>),
}

impl When {
    /// The calendar day this falls on in `tz`.
    pub fn day_in(self, tz: Tz) -> NaiveDate {
        match self {
            When::Date(d) => d,
            When::Local(dt) => dt.date(),
            When::Instant(i) => i.with_timezone(&tz).date_naive(),
        }
    }

    /// As a wall-clock time in `tz` (an instant is converted; a date is its midnight).
    pub fn local_in(self, tz: Option<Tz>) -> NaiveDateTime {
        match self {
            When::Date(d) => d.and_hms_opt(0, 0, 0).expect("midnight exists on every date"),
            When::Local(dt) => dt,
            When::Instant(i) => match tz {
                Some(tz) => i.with_timezone(&tz).naive_local(),
                None => i.naive_local(),
            },
        }
    }
}

/// The formats tried, in order, when no input format is given.
const DATE_FORMATS: &[&str] = &["%Y-%m-%d", "%Y/%m/%d"];
const LOCAL_FORMATS: &[&str] =
    &["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];

/// Parse `text` as a date or instant. With `format` (strftime), only that format is tried;
/// otherwise RFC 3339, then ISO dates and date-times.
pub fn parse(text: &str, format: Option<&str>) -> Option<When> {
    let text = text.trim();
    if let Some(f) = format {
        if let Ok(i) = DateTime::parse_from_str(text, f) {
            return Some(When::Instant(i));
        }
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, f) {
            return Some(When::Local(dt));
        }
        return NaiveDate::parse_from_str(text, f).ok().map(When::Date);
    }
    if let Ok(i) = DateTime::parse_from_rfc3339(text) {
        return Some(When::Instant(i));
    }
    for f in DATE_FORMATS {
        if let Ok(d) = NaiveDate::parse_from_str(text, f) {
            return Some(When::Date(d));
        }
    }
    for f in LOCAL_FORMATS {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, f) {
            return Some(When::Local(dt));
        }
    }
    None
}

/// Epoch seconds as an instant; `None` when out of range.
pub fn from_epoch(secs: i64) -> Option<When> {
    Utc.timestamp_opt(secs, 0).single().map(|t| When::Instant(t.fixed_offset()))
}

/// An IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn time_zone(name: &str) -> Option<Tz> {
    name.trim().parse::<Tz>().ok()
}

/// Whether a strftime format is valid (chrono panics when displaying an invalid one, so every
/// format is checked before use).
pub fn valid_format(format: &str) -> bool {
    use chrono::format::{Item, StrftimeItems};
    !StrftimeItems::new(format).any(|i| matches!(i, Item::Error))
}

/// An RFC 3339 instant or a date (taken as midnight UTC), for test cases' `now`.
pub fn parse_now(text: &str) -> Option<DateTime<Utc>> {
    match parse(text, None)? {
        When::Instant(i) => Some(i.with_timezone(&Utc)),
        When::Date(d) => Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)),
        When::Local(dt) => Some(Utc.from_utc_datetime(&dt)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_in_respects_the_zone() {
        let i = parse("2025-03-31T23:30:00Z", None).unwrap();
        assert_eq!(i.day_in(chrono_tz::UTC), NaiveDate::from_ymd_opt(2025, 3, 31).unwrap());
        assert_eq!(
            i.day_in(chrono_tz::Europe::Berlin),
            NaiveDate::from_ymd_opt(2025, 4, 1).unwrap()
        );
        assert_eq!(
            i.day_in(chrono_tz::America::New_York),
            NaiveDate::from_ymd_opt(2025, 3, 31).unwrap()
        );
    }

    #[test]
    fn parses_common_shapes() {
        assert!(matches!(parse("2025-04-01", None), Some(When::Date(_))));
        assert!(matches!(parse("2025-04-01T09:00:00", None), Some(When::Local(_))));
        assert!(matches!(parse("2025-04-01T09:00:00+02:00", None), Some(When::Instant(_))));
        assert!(matches!(parse("01/04/2025", Some("%d/%m/%Y")), Some(When::Date(_))));
        assert_eq!(parse("yesterday", None), None);
        assert_eq!(parse("2025-02-30", None), None);
    }

    #[test]
    fn formats_are_checked() {
        assert!(valid_format("%Y-%m-%d"));
        assert!(!valid_format("%Q"));
    }
}
