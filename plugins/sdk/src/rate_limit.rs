//! Rate limits read from a response: whether it refuses for a rate limit, and how long
//! to wait before the next request.
//!
//! This module owns every rate-limit signal the SDK understands, so that every plugin
//! reads them the same way; [`Response::rate_limit_wait`] and
//! [`Response::graphql_rate_limit`] are its public face, and
//! [`Response::error_for_status`] uses it to classify refusals. It only reads: it sends
//! nothing, and the clock comes in as an argument so that tests pin it.
//!
//! The headers read, in this order of precedence:
//!
//! | header | meaning |
//! |--------|---------|
//! | `retry-after` | delay in seconds, or an HTTP date (RFC 9110: IMF-fixdate, RFC 850 or asctime) |
//! | `x-ratelimit-reset` | GitHub and many others: when the limit resets |
//! | `ratelimit-reset` | the IETF draft (delta seconds), GitLab (epoch seconds), Bitbucket |
//! | `x-ratelimit-reset` as an ISO 8601 instant | Jira Cloud |
//! | `x-ratelimit-requests-reset`, `x-ratelimit-complexity-reset`, `x-ratelimit-endpoint-requests-reset` | Linear (epoch milliseconds) |
//!
//! A reset value is told apart by its size, since APIs disagree on the unit: below
//! 10⁹ it is a delay in seconds (10⁹ s is 31 years); from 10⁹ to 10¹² it is a Unix time
//! in seconds (from September 2001 on); from 10¹² it is a Unix time in milliseconds.
//! A reset counts only when its limit is spent: when the matching `…-remaining`
//! header (`x-ratelimit-remaining` for `x-ratelimit-reset`, and so on) says a positive
//! number, that limit is not the one refusing, and its reset is ignored (GitHub's
//! secondary limits come with the primary limit's reset, an hour off). Of several
//! counting resets the latest wins.
//!
//! Times are measured from the response's `date` header when it has one (the server's
//! clock, so a skewed guest clock does not matter), else from the guest's clock. A
//! `date` has whole seconds: a reset in milliseconds may wait up to a second longer.
//! Every number is clamped before any arithmetic: a wait is at most [`MAX_WAIT`]
//! (the daemon clamps further, to its own maximum); a reset or date already passed
//! waits [`PAST_RESET_WAIT`]; negative numbers and garbage are ignored, as if the
//! header were absent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::http::Response;

/// The longest wait a response can ask for; longer ones are cut to it. The daemon cuts
/// further, to its configured maximum (an hour by default).
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The wait for a reset time or date that has already passed (clock skew, most
/// likely): short, but not zero, so that a retry does not hammer a server still
/// counting.
pub const PAST_RESET_WAIT: Duration = Duration::from_secs(1);

/// The wait for a refusal known to be a rate limit that no header times: a GitHub
/// secondary rate limit ("wait at least one minute", GitHub's documentation says), or
/// a GraphQL rate-limit error.
pub const UNTIMED_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Reset values from here on are Unix times in seconds; below, delays in seconds.
const EPOCH_SECONDS_FROM: u64 = 1_000_000_000;
/// Reset values from here on are Unix times in milliseconds.
const EPOCH_MILLIS_FROM: u64 = 1_000_000_000_000;

/// Each reset header with the header that says how much of its limit is left.
const RESET_HEADERS: [(&str, &str); 5] = [
    ("x-ratelimit-reset", "x-ratelimit-remaining"),
    ("ratelimit-reset", "ratelimit-remaining"),
    (
        "x-ratelimit-requests-reset",
        "x-ratelimit-requests-remaining",
    ),
    (
        "x-ratelimit-complexity-reset",
        "x-ratelimit-complexity-remaining",
    ),
    (
        "x-ratelimit-endpoint-requests-reset",
        "x-ratelimit-endpoint-requests-remaining",
    ),
];

/// GraphQL error codes (`errors[].extensions.code`, or GitHub's `errors[].type`) that
/// mean a rate limit: Linear's and GitHub's.
const GRAPHQL_RATE_LIMIT_CODES: [&str; 2] = ["RATELIMITED", "RATE_LIMITED"];

/// How long `response`'s headers ask to wait before the next request, measured from
/// `clock` when the response has no `date`; `None` when no header asks for a wait.
pub(crate) fn wait(response: &Response, clock: SystemTime) -> Option<Duration> {
    let now = response
        .header("date")
        .and_then(|date| httpdate::parse_http_date(date.trim()).ok())
        .unwrap_or(clock);
    let now = unix_millis(now);
    let retry_after = response
        .header("retry-after")
        .and_then(|value| retry_after_millis(value, now));
    let millis = retry_after.or_else(|| {
        RESET_HEADERS
            .iter()
            .filter(|(_, remaining)| !has_room(response.header(remaining)))
            .filter_map(|(reset, _)| response.header(reset))
            .filter_map(|value| reset_millis(value, now))
            .max()
    })?;
    Some(clamp(millis))
}

/// Whether `response` refuses for a rate limit and, if so, how long to wait (`None`:
/// the daemon's backoff decides). Only for non-2xx responses.
///
/// A refusal is a 429; a 403 with a sign of a rate limit (a `retry-after`, a spent
/// `…-remaining`, or a body that speaks of a rate limit: GitHub's primary and
/// secondary limits); or any status whose body is a GraphQL rate-limit error. GitHub's
/// shapes (a 403, a spent limit, a body naming a secondary rate limit) and GraphQL
/// errors wait [`UNTIMED_LIMIT_WAIT`] when no header times them; a bare 429 leaves the
/// wait to the daemon's backoff.
pub(crate) fn refusal(response: &Response, clock: SystemTime) -> Option<Refusal> {
    let body = response.text().to_ascii_lowercase();
    let secondary = body.contains("secondary rate limit");
    let untimed = match response.status {
        429 => secondary || spent(response),
        403 if response.header("retry-after").is_some()
            || spent(response)
            || body.contains("rate limit") =>
        {
            true
        }
        _ if graphql_rate_limited(response) => true,
        _ => return None,
    };
    let wait = wait(response, clock).or(untimed.then_some(UNTIMED_LIMIT_WAIT));
    Some(Refusal { wait })
}

/// A response that refuses for a rate limit; see [`refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// How long to wait before trying again; `None` leaves it to the daemon's backoff.
    pub(crate) wait: Option<Duration>,
}

/// The wait for a GraphQL rate-limit error in `response`'s body (see
/// [`Response::graphql_rate_limit`]).
pub(crate) fn graphql_wait(response: &Response, clock: SystemTime) -> Option<Duration> {
    graphql_rate_limited(response).then(|| wait(response, clock).unwrap_or(UNTIMED_LIMIT_WAIT))
}

/// Whether the body is a GraphQL response with a rate-limit error.
fn graphql_rate_limited(response: &Response) -> bool {
    let starts_as_object = response
        .body
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        == Some(&b'{');
    if !starts_as_object {
        return false;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
        return false;
    };
    let Some(errors) = body.get("errors").and_then(Value::as_array) else {
        return false;
    };
    errors.iter().any(|error| {
        let code = error.pointer("/extensions/code").and_then(Value::as_str);
        let kind = error.get("type").and_then(Value::as_str);
        [code, kind].into_iter().flatten().any(|code| {
            GRAPHQL_RATE_LIMIT_CODES
                .iter()
                .any(|known| code.eq_ignore_ascii_case(known))
        })
    })
}

/// Whether some `…-remaining` header says its limit is spent.
fn spent(response: &Response) -> bool {
    RESET_HEADERS.iter().any(|(_, remaining)| {
        response
            .header(remaining)
            .and_then(|value| thousandths(value.trim()))
            == Some(0)
    })
}

/// Whether a `…-remaining` value says the limit has room left: a positive number.
/// Absent or unreadable, it may be spent.
fn has_room(remaining: Option<&str>) -> bool {
    remaining
        .and_then(|value| thousandths(value.trim()))
        .is_some_and(|left| left > 0)
}

/// A `retry-after` value in milliseconds from `now`: delay-seconds or an HTTP date.
fn retry_after_millis(value: &str, now: u64) -> Option<u64> {
    let value = value.trim();
    if let Some(millis) = thousandths(value) {
        return Some(millis);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(until(unix_millis(date), now))
}

/// A reset value in milliseconds from `now`, its unit told by its size (see the
/// module's documentation).
fn reset_millis(value: &str, now: u64) -> Option<u64> {
    let Some(thousandths) = thousandths(value.trim()) else {
        // Jira Cloud sends the reset as an ISO 8601 instant.
        return crate::time::unix_millis(value.trim()).map(|at| until(at, now));
    };
    let whole = thousandths / 1000;
    Some(if whole < EPOCH_SECONDS_FROM {
        thousandths
    } else if whole < EPOCH_MILLIS_FROM {
        until(thousandths, now)
    } else {
        until(whole, now)
    })
}

/// Milliseconds from `now` to `at`, both Unix milliseconds; a time already passed
/// waits [`PAST_RESET_WAIT`].
fn until(at: u64, now: u64) -> u64 {
    if at > now {
        at - now
    } else {
        millis(PAST_RESET_WAIT)
    }
}

/// A non-negative decimal number (`12`, `1.5`) in thousandths, saturating at
/// `u64::MAX`; `None` for anything else (a sign, an exponent, garbage, nothing).
fn thousandths(text: &str) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let fold = |acc: u64, byte: u8| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(byte - b'0'))
    };
    let whole = whole.bytes().fold(0, fold);
    let fraction = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, fold);
    Some(whole.saturating_mul(1000).saturating_add(fraction))
}

/// `time` as Unix milliseconds; a time before 1970 reads as 0.
fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A wait of `millis`, at most [`MAX_WAIT`].
fn clamp(millis: u64) -> Duration {
    Duration::from_millis(millis).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2015-10-21 07:28:00 UTC, the clock of every test: `Wed, 21 Oct 2015 07:28:00 GMT`.
    const NOW: u64 = 1_445_412_480;

    fn clock() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    /// The wait `headers` ask for, in milliseconds, at [`NOW`].
    fn check(headers: &[(&str, &str)], expected: Option<u64>) {
        let wait = wait(&Response::new(200, headers, ""), clock());
        assert_eq!(
            wait.map(|wait| u64::try_from(wait.as_millis()).unwrap()),
            expected,
            "{headers:?}"
        );
    }

    const MAX: u64 = 7 * 24 * 60 * 60 * 1000;

    #[test]
    fn retry_after_in_seconds() {
        check(&[("retry-after", "7")], Some(7_000));
        check(&[("Retry-After", " 120 ")], Some(120_000));
        check(&[("retry-after", "0")], Some(0));
        check(&[("retry-after", "1.5")], Some(1_500));
        check(&[("retry-after", "99999999999999999999")], Some(MAX));
        check(&[("retry-after", "604801")], Some(MAX));
        check(&[("retry-after", "-5")], None);
        check(&[("retry-after", "+5")], None);
        check(&[("retry-after", "5s")], None);
        check(&[("retry-after", "1e3")], None);
        check(&[("retry-after", "")], None);
        check(&[("retry-after", "soon")], None);
        check(&[("retry-after", "5.")], None);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        // IMF-fixdate, 90 s after the guest's clock.
        check(
            &[("retry-after", "Wed, 21 Oct 2015 07:29:30 GMT")],
            Some(90_000),
        );
        // The obsolete forms RFC 9110 still asks recipients to read.
        check(
            &[("retry-after", "Wednesday, 21-Oct-15 07:29:30 GMT")],
            Some(90_000),
        );
        check(&[("retry-after", "Wed Oct 21 07:29:30 2015")], Some(90_000));
        // Measured from the response's own `date` when it has one: the server's clock.
        check(
            &[
                ("date", "Wed, 21 Oct 2015 07:00:00 GMT"),
                ("retry-after", "Wed, 21 Oct 2015 07:00:10 GMT"),
            ],
            Some(10_000),
        );
        // An unreadable `date` falls back to the guest's clock.
        check(
            &[
                ("date", "yesterday"),
                ("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT"),
            ],
            Some(10_000),
        );
        // A date already passed waits a little.
        check(
            &[("retry-after", "Thu, 01 Jan 1970 00:00:00 GMT")],
            Some(1_000),
        );
        check(
            &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
            Some(MAX),
        );
        check(&[("retry-after", "Wed, 32 Oct 2015 07:29:30 GMT")], None);
        check(&[("retry-after", "Wed, 21 Oct 2015 07:29:30 UTC")], None);
    }

    #[test]
    fn jira_reset_as_an_iso_8601_instant() {
        // NOW is 2015-10-21T07:28:00Z.
        check(
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "2015-10-21T07:33:00.000+0000"),
            ],
            Some(300_000),
        );
        check(
            &[("x-ratelimit-reset", "2015-10-21T07:28:30.5Z")],
            Some(30_500),
        );
        // Already passed: a short wait, not none.
        check(&[("x-ratelimit-reset", "2015-10-21T07:00:00Z")], Some(1000));
        check(&[("x-ratelimit-reset", "2015-13-21T07:00:00Z")], None);
    }

    #[test]
    fn github_reset_in_epoch_seconds() {
        let reset = (NOW + 300).to_string();
        check(
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            Some(300_000),
        );
        // Without a remaining count the reset still counts.
        check(&[("x-ratelimit-reset", &reset)], Some(300_000));
        // With room left, the reset is not what refuses.
        check(
            &[
                ("x-ratelimit-remaining", "42"),
                ("x-ratelimit-reset", &reset),
            ],
            None,
        );
        // A reset already passed.
        check(
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1000000000"),
            ],
            Some(1_000),
        );
        // From the server's clock when the response is dated.
        check(
            &[
                ("date", "Wed, 21 Oct 2015 07:27:00 GMT"),
                ("x-ratelimit-reset", &reset),
            ],
            Some(360_000),
        );
        // retry-after wins over a reset.
        check(
            &[("retry-after", "30"), ("x-ratelimit-reset", &reset)],
            Some(30_000),
        );
    }

    #[test]
    fn ratelimit_reset_in_delta_or_epoch_seconds() {
        // The IETF draft: seconds to go.
        check(&[("ratelimit-reset", "30")], Some(30_000));
        check(
            &[("ratelimit-remaining", "0"), ("ratelimit-reset", "30")],
            Some(30_000),
        );
        // GitLab: a Unix time.
        let reset = (NOW + 45).to_string();
        check(&[("ratelimit-reset", &reset)], Some(45_000));
        // Just under the epoch line: 31 years of delay, cut.
        check(&[("ratelimit-reset", "999999999")], Some(MAX));
        check(
            &[("ratelimit-remaining", "3"), ("ratelimit-reset", "30")],
            None,
        );
    }

    #[test]
    fn linear_resets_in_epoch_milliseconds() {
        let reset = (NOW * 1000 + 2_500).to_string();
        check(&[("x-ratelimit-requests-reset", &reset)], Some(2_500));
        check(&[("x-ratelimit-complexity-reset", &reset)], Some(2_500));
        check(
            &[("x-ratelimit-endpoint-requests-reset", &reset)],
            Some(2_500),
        );
        // Only the spent limit counts...
        let later = (NOW * 1000 + 3_600_000).to_string();
        check(
            &[
                ("x-ratelimit-requests-remaining", "1200"),
                ("x-ratelimit-requests-reset", &later),
                ("x-ratelimit-complexity-remaining", "0"),
                ("x-ratelimit-complexity-reset", &reset),
            ],
            Some(2_500),
        );
        // ...and of several spent ones, the latest.
        check(
            &[
                ("x-ratelimit-requests-reset", &later),
                ("x-ratelimit-complexity-reset", &reset),
            ],
            Some(3_600_000),
        );
    }

    #[test]
    fn absurd_values_are_clamped_or_ignored() {
        for header in [
            "x-ratelimit-reset",
            "ratelimit-reset",
            "x-ratelimit-requests-reset",
        ] {
            check(&[(header, "99999999999999999999")], Some(MAX));
            check(&[(header, "18446744073709551616")], Some(MAX));
            check(&[(header, "-1")], None);
            check(&[(header, "0x10")], None);
            check(&[(header, "NaN")], None);
            check(&[(header, "")], None);
            check(&[(header, "١٢")], None);
        }
        check(&[("retry-after", "18446744073709551615.999")], Some(MAX));
        check(
            &[
                ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
                ("ratelimit-reset", "1000000000"),
            ],
            Some(MAX),
        );
        check(&[], None);
    }

    /// How `refusal` classifies a response: `None` when it is no rate limit, else the
    /// wait in milliseconds.
    fn check_refusal(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        expected: Option<Option<u64>>,
    ) {
        let refusal = refusal(&Response::new(status, headers, body), clock());
        assert_eq!(
            refusal.map(|refusal| refusal.wait.map(millis)),
            expected,
            "HTTP {status} {headers:?} {body:?}"
        );
    }

    #[test]
    fn refusals() {
        let reset = (NOW + 300).to_string();
        let primary = r#"{"message":"API rate limit exceeded for user ID 1."}"#;
        let secondary = r#"{"message":"You have exceeded a secondary rate limit."}"#;
        // GitHub's primary limit: a 403 (or 429) with nothing left, until the reset.
        let spent = [
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &*reset),
        ];
        check_refusal(403, &spent, primary, Some(Some(300_000)));
        check_refusal(429, &spent, primary, Some(Some(300_000)));
        // Secondary limits: retry-after when given, else a minute, whatever the
        // primary limit's reset says.
        check_refusal(403, &[("retry-after", "30")], secondary, Some(Some(30_000)));
        let room = [
            ("x-ratelimit-remaining", "4000"),
            ("x-ratelimit-reset", &*reset),
        ];
        check_refusal(403, &room, secondary, Some(Some(60_000)));
        check_refusal(429, &room, secondary, Some(Some(60_000)));
        check_refusal(403, &[], "Rate limit exceeded", Some(Some(60_000)));
        check_refusal(
            403,
            &[("x-ratelimit-remaining", "0")],
            "",
            Some(Some(60_000)),
        );
        // A bare 429 leaves the wait to the daemon's backoff.
        check_refusal(429, &[], "slow down", Some(None));
        check_refusal(429, &[("retry-after", "7")], "", Some(Some(7_000)));
        // A plain forbidden is no rate limit.
        check_refusal(403, &room, r#"{"message":"Resource not accessible"}"#, None);
        check_refusal(403, &[], "", None);
        check_refusal(404, &[("retry-after", "5")], "", None);
        // GraphQL rate limits in a 4xx.
        let linear =
            r#"{"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}"#;
        check_refusal(400, &[], linear, Some(Some(60_000)));
        let reset_ms = (NOW * 1000 + 5_000).to_string();
        check_refusal(
            400,
            &[("x-ratelimit-requests-reset", &reset_ms)],
            linear,
            Some(Some(5_000)),
        );
        check_refusal(
            400,
            &[],
            r#"{"errors":[{"message":"bad","extensions":{"code":"INVALID_INPUT"}}]}"#,
            None,
        );
    }

    /// The GraphQL rate-limit wait for a body, in milliseconds.
    fn check_graphql(headers: &[(&str, &str)], body: &str, expected: Option<u64>) {
        let wait = graphql_wait(&Response::new(200, headers, body), clock());
        assert_eq!(wait.map(millis), expected, "{body}");
    }

    #[test]
    fn graphql_rate_limit_errors() {
        let linear = r#"{"data":null,"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}"#;
        check_graphql(&[], linear, Some(60_000));
        let reset_ms = (NOW * 1000 + 12_000).to_string();
        check_graphql(
            &[("x-ratelimit-complexity-reset", &reset_ms)],
            linear,
            Some(12_000),
        );
        let github = r#"{"errors":[{"type":"RATE_LIMITED","message":"API rate limit exceeded"}]}"#;
        check_graphql(&[], github, Some(60_000));
        let mixed =
            r#"{"errors":[{"message":"a"},{"message":"b","extensions":{"code":"ratelimited"}}]}"#;
        check_graphql(&[], mixed, Some(60_000));
        check_graphql(
            &[],
            r#"{"errors":[{"message":"nope","extensions":{"code":"FORBIDDEN"}}]}"#,
            None,
        );
        check_graphql(&[], r#"{"data":{"teams":{"nodes":[]}}}"#, None);
        check_graphql(&[], r#"{"errors":"RATELIMITED"}"#, None);
        check_graphql(&[], "RATELIMITED", None);
        check_graphql(&[], "", None);
        check_graphql(&[], "{not json", None);
    }

    /// Header values a server might send, or garble: numbers of every size and form,
    /// dates, and arbitrary text.
    fn header_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (any::<u64>(), any::<u16>()).prop_map(|(n, f)| format!("{n}.{f}")),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}{b}{a}")),
            any::<f64>().prop_map(|n| n.to_string()),
            (0..=253_402_300_799_u64).prop_map(|secs| {
                httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
            }),
            any::<String>(),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ]
    }

    /// Every header this module reads.
    const HEADER_NAMES: [&str; 11] = [
        "retry-after",
        "date",
        "x-ratelimit-reset",
        "x-ratelimit-remaining",
        "ratelimit-reset",
        "ratelimit-remaining",
        "x-ratelimit-requests-reset",
        "x-ratelimit-requests-remaining",
        "x-ratelimit-complexity-reset",
        "x-ratelimit-complexity-remaining",
        "x-ratelimit-endpoint-requests-reset",
    ];

    proptest! {
        #[test]
        fn no_header_value_panics_and_every_wait_is_bounded(
            values in proptest::collection::vec(header_value(), 11),
            status in prop_oneof![Just(200_u16), Just(400), Just(403), Just(429), Just(503)],
            clock_secs in any::<u64>(),
        ) {
            let headers: Vec<(&str, &str)> =
                HEADER_NAMES.iter().copied().zip(values.iter().map(String::as_str)).collect();
            let response = Response::new(status, &headers, r#"{"errors":[{"extensions":{"code":"RATELIMITED"}}]}"#);
            let clock = UNIX_EPOCH.checked_add(Duration::from_secs(clock_secs)).unwrap_or(UNIX_EPOCH);
            for wait in [
                wait(&response, clock),
                graphql_wait(&response, clock),
                refusal(&response, clock).and_then(|refusal| refusal.wait),
            ]
            .into_iter()
            .flatten()
            {
                prop_assert!(wait <= MAX_WAIT, "{wait:?} for {headers:?}");
            }
        }

        #[test]
        fn a_single_header_never_panics(name in 0..11_usize, value in header_value()) {
            let response = Response::new(429, &[(HEADER_NAMES[name], &value)], "");
            if let Some(wait) = wait(&response, clock()) {
                prop_assert!(wait <= MAX_WAIT);
            }
        }
    }
}
