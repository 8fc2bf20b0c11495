//! The schedule model and the pure cron arithmetic: parsing and validating expressions
//! and time zones, the next and latest instants, and the misfire decision at start-up.
//!
//! No I/O and no clock here: every function takes the instant it reasons about, so the
//! misfire rules are tested exactly. Expressions are parsed by croner (the parser
//! tokio-cron-scheduler uses, with its settings), and every instant is computed in the
//! schedule's own zone, daylight saving included.

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

pub use honeydew_core::schedule::{MisfirePolicy, Schedule};

/// Why a schedule was refused or could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error(
        "invalid cron expression {expr:?}: {reason} (expected 5 fields \"MIN HOUR DOM MON DOW\", or 6 with seconds first)"
    )]
    InvalidCron {
        /// The expression.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone {0:?}: use an IANA name such as \"UTC\" or \"Europe/Paris\"")]
    UnknownTimezone(String),
    /// The misfire policy is not one of the two.
    #[error("unknown misfire policy {0:?}: use \"skip\" or \"run_once\"")]
    InvalidMisfire(String),
    /// The name is empty or unusable.
    #[error(
        "invalid schedule name {0:?}: use letters, digits, '-', '_' or '.', up to 100 characters"
    )]
    InvalidName(String),
    /// Another schedule has this name.
    #[error("a schedule named {0:?} already exists")]
    DuplicateName(String),
    /// No schedule has this name or id.
    #[error("no schedule named or with id {0:?}")]
    NotFound(String),
    /// The command or payload would not be accepted by submit.
    #[error(transparent)]
    Submit(#[from] crate::queue::SubmitError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The cron library refused to register the schedule.
    #[error("cron scheduler error: {0}")]
    Scheduler(String),
}

/// A parsed expression in its zone.
#[derive(Clone, Debug)]
pub struct CronSpec {
    cron: Cron,
    zone: Tz,
}

impl CronSpec {
    /// Parses `expr` (5 fields, or 6 with seconds first) read in IANA zone `timezone`.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let zone: Tz = timezone
            .parse()
            .map_err(|_| ScheduleError::UnknownTimezone(timezone.to_owned()))?;
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expr: expr.to_owned(),
            reason,
        };
        let fields = expr.split_whitespace().count();
        let with_seconds = match fields {
            5 => format!("0 {}", expr.trim()),
            6 => expr.split_whitespace().collect::<Vec<_>>().join(" "),
            n => return Err(invalid(format!("it has {n} fields"))),
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&with_seconds)
            .map_err(|err| invalid(err.to_string()))?;
        Ok(Self { cron, zone })
    }

    /// The first instant strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Instants are whole seconds; croner keeps the sub-second part of its input.
        self.cron
            .find_next_occurrence(&t.trunc_subsecs(0).with_timezone(&self.zone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The latest instant at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.trunc_subsecs(0).with_timezone(&self.zone), true)
            .ok()
            .map(|previous| previous.with_timezone(&Utc))
    }
}

/// What start-up does about a schedule whose `next_run_at` passed while the daemon was
/// down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misfire {
    /// Nothing was missed.
    None,
    /// Instants were missed; run nothing, resume at `next`.
    Skip {
        /// How many instants were missed.
        missed: usize,
        /// The next instant to fire.
        next: Option<DateTime<Utc>>,
    },
    /// Instants were missed; run one job now, for the latest missed `instant`.
    RunOnce {
        /// How many instants were missed.
        missed: usize,
        /// The latest missed instant, which the one job stands for.
        instant: DateTime<Utc>,
    },
}

/// Counting missed instants stops here: a schedule every second that was down for a
/// week need not be counted exactly.
const MISSED_COUNT_LIMIT: usize = 100_000;

/// The misfire decision for `schedule` at start-up time `now`.
pub fn misfire(schedule: &Schedule, spec: &CronSpec, now: DateTime<Utc>) -> Misfire {
    let Some(due) = schedule.next_run_at else {
        return Misfire::None;
    };
    let already_ran = schedule.last_scheduled_for.is_some_and(|last| last >= due);
    if due > now || already_ran {
        return Misfire::None;
    }
    let mut missed = 1;
    let mut latest = due;
    while let Some(next) = spec.next_after(latest).filter(|next| *next <= now) {
        latest = next;
        missed += 1;
        if missed >= MISSED_COUNT_LIMIT {
            latest = spec.latest_at_or_before(now).unwrap_or(latest);
            break;
        }
    }
    match schedule.misfire {
        MisfirePolicy::Skip => Misfire::Skip {
            missed,
            next: spec.next_after(now),
        },
        MisfirePolicy::RunOnce => Misfire::RunOnce {
            missed,
            instant: latest,
        },
    }
}

/// Checks a schedule name: 1-100 characters of letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<(), ScheduleError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ScheduleError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn schedule(expr: &str, misfire: MisfirePolicy, next_run_at: DateTime<Utc>) -> Schedule {
        Schedule {
            id: Uuid::now_v7(),
            name: "nightly".into(),
            cron_expr: expr.into(),
            timezone: "UTC".into(),
            command: "echo.echo".into(),
            payload: b"{}".to_vec(),
            priority: 0,
            max_retries: None,
            misfire,
            enabled: true,
            created_at: next_run_at,
            last_run_at: None,
            next_run_at: Some(next_run_at),
            last_job_id: None,
            last_scheduled_for: None,
            last_error: None,
            last_error_at: None,
        }
    }

    #[test]
    fn five_and_six_field_expressions_parse() {
        let every_five_minutes = CronSpec::parse("*/5 * * * *", "UTC").unwrap();
        assert_eq!(
            every_five_minutes.next_after(utc(2026, 11, 29, 10, 2, 30)),
            Some(utc(2026, 11, 29, 10, 5, 0))
        );
        let every_second = CronSpec::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second.next_after(utc(2026, 11, 29, 10, 2, 30)),
            Some(utc(2026, 11, 29, 10, 2, 31))
        );
    }

    #[test]
    fn invalid_expressions_are_refused_with_the_reason() {
        for (expr, needle) in [
            ("* * *", "it has 3 fields"),
            ("61 * * * *", "invalid cron expression \"61 * * * *\""),
            ("* * * * * * * *", "it has 8 fields"),
            ("every day", "it has 2 fields"),
        ] {
            let err = CronSpec::parse(expr, "UTC").unwrap_err().to_string();
            assert!(err.contains(needle), "{expr}: {err}");
            assert!(err.contains("expected 5 fields"), "{err}");
        }
    }

    #[test]
    fn unknown_time_zone_is_refused() {
        let err = CronSpec::parse("0 9 * * *", "Mars/Olympus").unwrap_err();
        assert!(matches!(err, ScheduleError::UnknownTimezone(ref zone) if zone == "Mars/Olympus"));
    }

    #[test]
    fn expressions_are_read_in_their_time_zone() {
        let nine_in_paris = CronSpec::parse("0 9 * * *", "Europe/Paris").unwrap();
        // 29 November: Paris is UTC+1.
        assert_eq!(
            nine_in_paris.next_after(utc(2026, 11, 29, 0, 0, 0)),
            Some(utc(2026, 11, 29, 8, 0, 0))
        );
    }

    #[test]
    fn instants_follow_daylight_saving_changes() {
        let nine_in_paris = CronSpec::parse("0 9 * * *", "Europe/Paris").unwrap();
        // Paris moves from UTC+1 to UTC+2 in the night of 28 to 29 March 2026.
        let before = nine_in_paris.next_after(utc(2026, 3, 28, 0, 0, 0)).unwrap();
        let after = nine_in_paris.next_after(before).unwrap();
        assert_eq!(before, utc(2026, 3, 28, 8, 0, 0));
        assert_eq!(after, utc(2026, 3, 29, 7, 0, 0));
    }

    #[test]
    fn latest_instant_at_or_before_includes_an_exact_match() {
        let hourly = CronSpec::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            hourly.latest_at_or_before(utc(2026, 11, 29, 10, 0, 0)),
            Some(utc(2026, 11, 29, 10, 0, 0))
        );
        assert_eq!(
            hourly.latest_at_or_before(utc(2026, 11, 29, 10, 59, 59)),
            Some(utc(2026, 11, 29, 10, 0, 0))
        );
    }

    #[test]
    fn instants_are_whole_seconds_whatever_the_sub_second_of_the_input() {
        let every_second = CronSpec::parse("* * * * * *", "UTC").unwrap();
        let daily = CronSpec::parse("0 3 * * *", "UTC").unwrap();
        let t = utc(2026, 11, 29, 10, 2, 30) + chrono::TimeDelta::milliseconds(333);
        assert_eq!(
            every_second.next_after(t),
            Some(utc(2026, 11, 29, 10, 2, 31))
        );
        assert_eq!(
            every_second.latest_at_or_before(t),
            Some(utc(2026, 11, 29, 10, 2, 30))
        );
        assert_eq!(daily.next_after(t), Some(utc(2026, 11, 30, 3, 0, 0)));
        assert_eq!(
            daily.latest_at_or_before(t),
            Some(utc(2026, 11, 29, 3, 0, 0))
        );
    }

    #[test]
    fn nothing_missed_when_next_run_is_still_ahead() {
        let spec = CronSpec::parse("0 * * * *", "UTC").unwrap();
        let schedule = schedule(
            "0 * * * *",
            MisfirePolicy::RunOnce,
            utc(2026, 11, 29, 11, 0, 0),
        );
        assert_eq!(
            misfire(&schedule, &spec, utc(2026, 11, 29, 10, 30, 0)),
            Misfire::None
        );
    }

    #[test]
    fn skip_policy_counts_the_missed_instants_and_resumes_after_now() {
        let spec = CronSpec::parse("0 * * * *", "UTC").unwrap();
        let schedule = schedule("0 * * * *", MisfirePolicy::Skip, utc(2026, 11, 29, 8, 0, 0));
        assert_eq!(
            misfire(&schedule, &spec, utc(2026, 11, 29, 10, 30, 0)),
            Misfire::Skip {
                missed: 3,
                next: Some(utc(2026, 11, 29, 11, 0, 0))
            }
        );
    }

    #[test]
    fn run_once_policy_stands_one_job_for_the_latest_missed_instant() {
        let spec = CronSpec::parse("0 * * * *", "UTC").unwrap();
        let schedule = schedule(
            "0 * * * *",
            MisfirePolicy::RunOnce,
            utc(2026, 11, 29, 8, 0, 0),
        );
        assert_eq!(
            misfire(&schedule, &spec, utc(2026, 11, 29, 10, 30, 0)),
            Misfire::RunOnce {
                missed: 3,
                instant: utc(2026, 11, 29, 10, 0, 0)
            }
        );
    }

    #[test]
    fn an_instant_already_triggered_before_a_restart_is_not_a_misfire() {
        let spec = CronSpec::parse("0 * * * *", "UTC").unwrap();
        let mut schedule = schedule(
            "0 * * * *",
            MisfirePolicy::RunOnce,
            utc(2026, 11, 29, 10, 0, 0),
        );
        schedule.last_scheduled_for = Some(utc(2026, 11, 29, 10, 0, 0));
        assert_eq!(
            misfire(&schedule, &spec, utc(2026, 11, 29, 10, 0, 30)),
            Misfire::None
        );
    }

    #[test]
    fn misfire_policy_and_names_parse_strictly() {
        assert_eq!(
            "run_once".parse::<MisfirePolicy>().unwrap(),
            MisfirePolicy::RunOnce
        );
        assert_eq!(
            "skip".parse::<MisfirePolicy>().unwrap(),
            MisfirePolicy::Skip
        );
        assert!("sometimes".parse::<MisfirePolicy>().is_err());
        assert!(validate_name("nightly-sync.v2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
    }

    proptest::proptest! {
        /// Any expression and zone text parses or is refused with a reason; a parsed
        /// spec's next instant is always after the instant asked about.
        #[test]
        fn any_cron_text_parses_or_is_refused_without_panicking(
            expr in "[0-9*/,\\- A-Za-z?#LW]{0,40}",
            zone in "[A-Za-z/_+-]{0,30}",
        ) {
            let _ = CronSpec::parse(&expr, &zone);
            if let Ok(spec) = CronSpec::parse(&expr, "UTC") {
                let now = utc(2026, 3, 29, 1, 30, 0);
                if let Some(next) = spec.next_after(now) {
                    proptest::prop_assert!(next > now);
                }
            }
        }
    }
}
