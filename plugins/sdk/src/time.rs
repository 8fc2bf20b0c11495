//! Timestamps in and out of plugins: payload filters (`since`, `updated_after`) are
//! checked as RFC 3339, and the timestamps APIs send (RFC 3339 with any offset, or
//! Jira's `2024-01-02T03:04:05.000+0000`) are turned into one form, RFC 3339 in UTC
//! (`2024-01-02T03:04:05Z`), so that results compare and sort as text.

use crate::PluginError;

/// A moment: seconds since the Unix epoch and the fraction's digits as written.
#[derive(Debug, PartialEq, Eq)]
struct Moment {
    seconds: i64,
    fraction: String,
}

/// Checks that payload field `field` holds an RFC 3339 date-time
/// (`2024-01-02T03:04:05Z`, an offset such as `+02:00`, optional fraction) and
/// returns it in UTC, the form every API here accepts.
pub fn payload_timestamp(field: &str, value: &str) -> Result<String, PluginError> {
    parse(value).map(|moment| moment.format()).ok_or_else(|| {
        PluginError::permanent(format!(
            "invalid payload: field {field:?}: {value:?} is not an RFC 3339 date-time \
             such as \"2024-01-02T03:04:05Z\""
        ))
    })
}

/// `value` in RFC 3339 UTC (`Z`), when it is an RFC 3339 date-time or Jira's
/// variant with a `+hhmm` offset; else `value` unchanged (an API's own oddity is kept
/// rather than lost).
pub fn utc(value: &str) -> String {
    parse(value).map_or_else(|| value.to_owned(), |moment| moment.format())
}

/// [`utc`] of an optional timestamp.
pub fn utc_opt(value: Option<String>) -> Option<String> {
    value.map(|value| utc(&value))
}

/// `text` as Unix milliseconds, when it is an RFC 3339 date-time or Jira's `+hhmm`
/// variant at or after the epoch (Jira's `X-RateLimit-Reset`, say); `None` otherwise.
pub(crate) fn unix_millis(text: &str) -> Option<u64> {
    let moment = parse(text)?;
    let seconds = u64::try_from(moment.seconds).ok()?;
    let millis: String = moment
        .fraction
        .chars()
        .chain("000".chars())
        .take(3)
        .collect();
    seconds.checked_mul(1000)?.checked_add(millis.parse().ok()?)
}

fn parse(text: &str) -> Option<Moment> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = String::new();
    if let Some(after) = rest.strip_prefix('.') {
        let end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if end == 0 || end > 9 {
            return None;
        }
        fraction = after[..end].to_owned();
        rest = &after[end..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = &rest[1..];
            if !offset.is_ascii() {
                return None;
            }
            // RFC 3339 `+hh:mm`, or Jira's `+hhmm`.
            let (hours, minutes) = match offset.len() {
                5 if offset.as_bytes()[2] == b':' => (&offset[..2], &offset[3..]),
                4 => (&offset[..2], &offset[2..]),
                _ => return None,
            };
            let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
            if !all_digits(hours) || !all_digits(minutes) {
                return None;
            }
            let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_seconds;
    Some(Moment { seconds, fraction })
}

impl Moment {
    fn format(&self) -> String {
        let days = self.seconds.div_euclid(86_400);
        let of_day = self.seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let fraction = self.fraction.trim_end_matches('0');
        let fraction = if fraction.is_empty() {
            String::new()
        } else {
            format!(".{fraction}")
        };
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        )
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_become_rfc3339_utc() {
        let check = |input: &str, expected: &str| assert_eq!(utc(input), expected, "{input}");
        check("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z");
        check("2024-01-02T03:04:05+02:00", "2024-01-02T01:04:05Z");
        check("2024-01-02T03:04:05.000+0000", "2024-01-02T03:04:05Z");
        check("2024-01-02T03:04:05.120-0130", "2024-01-02T04:34:05.12Z");
        check("2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00Z");
        check("1999-12-31T23:59:59-01:00", "2000-01-01T00:59:59Z");
        check(
            "2025-06-01T10:00:00.123456789Z",
            "2025-06-01T10:00:00.123456789Z",
        );
        // Not a timestamp: kept as sent.
        check("yesterday", "yesterday");
        check("2024-02-30T00:00:00Z", "2024-02-30T00:00:00Z");
        check("2024-01-02T03:04:05", "2024-01-02T03:04:05");
        check("2024-01-02T03:04:05+0é0", "2024-01-02T03:04:05+0é0");
    }

    #[test]
    fn payload_timestamps_name_the_field() {
        assert_eq!(
            payload_timestamp("since", "2024-01-02T03:04:05+01:00").unwrap(),
            "2024-01-02T02:04:05Z"
        );
        let error = payload_timestamp("since", "2024-01-02").unwrap_err();
        assert!(!error.is_retriable());
        assert!(
            error
                .message()
                .starts_with("invalid payload: field \"since\": \"2024-01-02\""),
            "{error}"
        );
    }

    #[test]
    fn the_calendar_round_trips() {
        for days in (-800_000..800_000).step_by(997) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
