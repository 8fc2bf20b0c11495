//! Rate limits as an API states them: what one response says about the quota left, and
//! the hold that follows when it is spent.
//!
//! [`wait_from_response`] reads a response's status and headers and says how long no
//! request of the same plugin, host and credential should go out, or `None` when the
//! response asks for no wait. [`RateLimitHold`] is such a wait as the store keeps it,
//! shared by every daemon of a shared store. Pure: the clock is a parameter, no I/O.
//!
//! The headers read:
//!
//! | header | meaning |
//! |--------|---------|
//! | `x-ratelimit-remaining` / `x-ratelimit-reset` | GitHub and many others: the reset as Unix seconds, or a delay |
//! | `ratelimit-remaining` / `ratelimit-reset` | the IETF draft (a delay in seconds), GitLab (Unix seconds) |
//! | `ratelimit-resettime` | GitLab: the reset as an HTTP date |
//! | `ratelimit` | the IETF structured field: `remaining=0, reset=30` or `"default";r=0;t=30` |
//! | `x-ratelimit-requests-remaining` / `x-ratelimit-requests-reset` | Linear: the reset as Unix milliseconds |
//! | `retry-after` | delay seconds or an HTTP date; read on a 429 or 503, and on a 403 whose quota is spent |
//!
//! A reset counts only when its own `…-remaining` says 0: a limit with room left is
//! not the one refusing. A reset number's unit is told by its size, as APIs disagree:
//! below 10⁹ a delay in seconds, below 10¹² Unix seconds, from there Unix
//! milliseconds. Times are measured from the response's `date` when it has one (the
//! server's clock, so a skewed daemon clock does not matter). Every number is clamped
//! before arithmetic: digits saturate, negative numbers and garbage are ignored as if
//! the header were absent, a reset already passed waits nothing, and no wait is longer
//! than [`MAX_WAIT`]; the daemon clamps further, to its own bounds.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest wait a response can ask for; longer ones are cut to it.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The longest credential key (the names of the secrets an `[[auth]]` rule adds) and
/// host kept with a hold, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Reset values from here on are Unix times in seconds; below, delays in seconds.
const EPOCH_SECONDS_FROM: u64 = 1_000_000_000;
/// Reset values from here on are Unix times in milliseconds.
const EPOCH_MILLIS_FROM: u64 = 1_000_000_000_000;

/// A spent quota: until `until`, no job of `plugin` sends a request to `host` with
/// `credential`, and its jobs wait, pending, without spending an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitHold {
    /// The plugin whose requests are held.
    pub plugin: String,
    /// The `allowed_hosts` entry the requests went to (`https://api.github.com`).
    pub host: String,
    /// Which credential: the names of the secrets its `[[auth]]` headers carry (never
    /// a value), empty for requests without one.
    pub credential: String,
    /// When the quota resets.
    pub until: DateTime<Utc>,
    /// When the hold was learned.
    pub learned_at: DateTime<Utc>,
    /// The node (daemon) that learned it, on a shared store.
    pub node: Option<String>,
}

/// How long a response with `status` and the headers `header` (looked up by lowercase
/// name) asks that no further request go out, measured at `now` when it has no
/// `date`; `None` when it asks for no wait (its quota has room, or it says nothing).
pub fn wait_from_response<'a>(
    status: u16,
    header: impl Fn(&str) -> Option<&'a str>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let now = header("date")
        .and_then(http_date)
        .unwrap_or(now)
        .timestamp_millis();
    let now = u64::try_from(now).unwrap_or(0);
    let structured = header("ratelimit")
        .map(structured_field)
        .unwrap_or_default();
    let mut spent = false;
    let mut waits = Vec::new();
    let pairs = [
        ("x-ratelimit-remaining", "x-ratelimit-reset"),
        ("ratelimit-remaining", "ratelimit-reset"),
        (
            "x-ratelimit-requests-remaining",
            "x-ratelimit-requests-reset",
        ),
    ];
    for (remaining, reset) in pairs {
        if header(remaining).and_then(number) == Some(0) {
            spent = true;
            waits.extend(header(reset).and_then(|value| reset_millis(value, now)));
        }
    }
    if header("ratelimit-remaining").and_then(number) == Some(0)
        && let Some(at) = header("ratelimit-resettime").and_then(http_date)
    {
        waits.push(until(unix_millis(at), now));
    }
    if structured.remaining == Some(0) {
        spent = true;
        waits.extend(structured.reset.map(|seconds| seconds.saturating_mul(1000)));
    }
    let reads_retry_after = matches!(status, 429 | 503) || (status == 403 && spent);
    if reads_retry_after && let Some(value) = header("retry-after") {
        waits.extend(retry_after_millis(value, now));
    }
    let millis = waits.into_iter().max()?;
    Some(Duration::from_millis(millis).min(MAX_WAIT))
}

/// What an IETF `RateLimit` structured field says.
#[derive(Default)]
struct Structured {
    remaining: Option<u64>,
    /// Seconds.
    reset: Option<u64>,
}

/// Reads `remaining=0, reset=30` (draft 03 to 07) and `"name";r=0;t=30` (draft 08 on).
fn structured_field(value: &str) -> Structured {
    let mut field = Structured::default();
    for item in value.split([',', ';']) {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        let value = number(value.trim().trim_matches('"'));
        match key.trim().to_ascii_lowercase().as_str() {
            "remaining" | "r" => field.remaining = field.remaining.or(value),
            "reset" | "t" => field.reset = field.reset.or(value),
            _ => {}
        }
    }
    field
}

/// A `retry-after` value in milliseconds from `now`: delay-seconds or an HTTP date.
fn retry_after_millis(value: &str, now: u64) -> Option<u64> {
    if let Some(seconds) = number(value) {
        return Some(seconds.saturating_mul(1000));
    }
    let at = http_date(value)?;
    Some(until(unix_millis(at), now))
}

/// A reset number in milliseconds from `now`, its unit told by its size.
fn reset_millis(value: &str, now: u64) -> Option<u64> {
    let value = number(value)?;
    Some(if value < EPOCH_SECONDS_FROM {
        value.saturating_mul(1000)
    } else if value < EPOCH_MILLIS_FROM {
        until(value.saturating_mul(1000), now)
    } else {
        until(value, now)
    })
}

/// Milliseconds from `now` to `at`, both Unix milliseconds; 0 when `at` has passed.
fn until(at: u64, now: u64) -> u64 {
    at.saturating_sub(now)
}

fn unix_millis(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_millis()).unwrap_or(0)
}

/// A non-negative whole number (a fraction is dropped: `1.5` is 1), saturating at
/// `u64::MAX`; `None` for a sign, an exponent, garbage or nothing.
fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    let whole = match text.split_once('.') {
        Some((whole, fraction)) if fraction.bytes().all(|b| b.is_ascii_digit()) => whole,
        Some(_) => return None,
        None => text,
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(whole.bytes().fold(0u64, |acc, digit| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// An HTTP date (IMF-fixdate, as servers send `date` and `retry-after`).
fn http_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const NOW: &str = "Thu, 03 Dec 2026 08:00:00 GMT";

    fn now() -> DateTime<Utc> {
        http_date(NOW).unwrap()
    }

    /// The wait a response with `status` and `headers` asks for, measured at [`NOW`].
    fn check(status: u16, headers: &[(&str, &str)], expected: Option<u64>) {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| *value)
        };
        let wait = wait_from_response(status, lookup, now());
        assert_eq!(
            wait.map(|wait| wait.as_secs()),
            expected,
            "{status} {headers:?}"
        );
    }

    fn epoch_in(seconds: i64) -> String {
        (now() + TimeDelta::seconds(seconds))
            .timestamp()
            .to_string()
    }

    #[test]
    fn github_style_remaining_and_reset() {
        let reset = epoch_in(90);
        check(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            Some(90),
        );
        check(
            403,
            &[
                ("x-ratelimit-remaining", "12"),
                ("x-ratelimit-reset", &reset),
            ],
            None,
        );
        // A delay rather than an instant.
        check(
            200,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "30")],
            Some(30),
        );
        // Measured from the server's date, not the daemon's clock.
        let later = (now() + TimeDelta::seconds(10)).format("%a, %d %b %Y %H:%M:%S GMT");
        check(
            200,
            &[
                ("date", &later.to_string()),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            Some(80),
        );
    }

    #[test]
    fn ietf_headers_and_the_structured_field() {
        check(
            200,
            &[("ratelimit-remaining", "0"), ("ratelimit-reset", "45")],
            Some(45),
        );
        check(
            200,
            &[("ratelimit", "limit=100, remaining=0, reset=50")],
            Some(50),
        );
        check(200, &[("ratelimit", "\"default\";r=0;t=20")], Some(20));
        check(200, &[("ratelimit", "\"default\";r=5;t=20")], None);
    }

    #[test]
    fn gitlab_epoch_reset_and_reset_time() {
        check(
            429,
            &[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", &epoch_in(120)),
            ],
            Some(120),
        );
        let at = (now() + TimeDelta::seconds(60)).format("%a, %d %b %Y %H:%M:%S GMT");
        check(
            200,
            &[
                ("ratelimit-remaining", "0"),
                ("ratelimit-resettime", &at.to_string()),
            ],
            Some(60),
        );
    }

    #[test]
    fn linear_millisecond_reset() {
        let reset = (now() + TimeDelta::seconds(90))
            .timestamp_millis()
            .to_string();
        check(
            400,
            &[
                ("x-ratelimit-requests-remaining", "0"),
                ("x-ratelimit-requests-reset", &reset),
            ],
            Some(90),
        );
    }

    #[test]
    fn retry_after_counts_on_429_503_and_a_spent_403_only() {
        check(429, &[("retry-after", "120")], Some(120));
        check(503, &[("retry-after", "7")], Some(7));
        let at = (now() + TimeDelta::seconds(300)).format("%a, %d %b %Y %H:%M:%S GMT");
        check(429, &[("retry-after", &at.to_string())], Some(300));
        check(403, &[("retry-after", "60")], None);
        check(
            403,
            &[("retry-after", "60"), ("x-ratelimit-remaining", "0")],
            Some(60),
        );
        check(200, &[("retry-after", "60")], None);
        // A bare 429 says nothing of when: the plugin's own retry decides.
        check(429, &[], None);
    }

    #[test]
    fn outside_numbers_are_clamped_or_ignored() {
        let week = MAX_WAIT.as_secs();
        check(
            429,
            &[("retry-after", "99999999999999999999999")],
            Some(week),
        );
        check(429, &[("retry-after", "-5")], None);
        check(429, &[("retry-after", "soon")], None);
        check(429, &[("retry-after", "1e9")], None);
        check(
            200,
            &[("x-ratelimit-remaining", "-1"), ("x-ratelimit-reset", "30")],
            None,
        );
        // A reset already passed holds nothing (the daemon raises it to its minimum).
        check(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &epoch_in(-30)),
            ],
            Some(0),
        );
        // Milliseconds far in the future: cut to the longest wait.
        check(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "18446744073709551615"),
            ],
            Some(week),
        );
    }

    #[test]
    fn the_latest_of_several_spent_limits_wins() {
        check(
            429,
            &[
                ("retry-after", "10"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "40"),
            ],
            Some(40),
        );
    }
}
