//! A job's throttle policy: how many chunks may run at once, and when.
//!
//! The policy starts as the spec's `throttle:` block ([`crate::spec::JobSpec::throttle`]) and
//! can be changed at runtime (`ferryctl throttle`, `ferryctl pause`); it is stored as JSON,
//! so every type here is serde-friendly. The decisions built on it (load control, the
//! effective concurrency) live in the coordinator; this module holds the data, its
//! validation and the schedule lookup.
//!
//! Schedule windows are matched on the local wall clock of the policy's time zone:
//! - a window covers `from` (inclusive) to `to` (exclusive) on each of its days;
//! - a window whose `to` is before its `from` crosses midnight and belongs to the day it
//!   starts on, so `fri 22:00-06:00` covers Saturday 03:00 but not Friday 03:00;
//! - on the day clocks spring forward, wall times in the gap never occur (a window
//!   `02:30-04:00` on 2026-03-08 in America/New_York applies from 03:00 local); on the day
//!   they fall back, the repeated hour is matched both times;
//! - the first matching window wins; outside every window the default concurrency applies.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::duration::format_duration_ms;
use crate::problems::Problems;
use crate::spec::{DEFAULT_CONCURRENCY, DEFAULT_PRIORITY, MAX_CONCURRENCY, MAX_PRIORITY};

/// Time zone of schedules when the spec does not name one.
pub const DEFAULT_TIME_ZONE: &str = "UTC";
/// Load probe interval when the spec does not say, in milliseconds.
pub const DEFAULT_LOAD_INTERVAL_MS: u64 = 5_000;
/// Shortest accepted load probe interval, in milliseconds: a probe is a query on a database
/// under load, and probing more often than this mostly adds to that load.
pub const MIN_LOAD_INTERVAL_MS: u64 = 100;
/// How long running chunks may stay paused by critical load before they are aborted, when
/// the spec does not say, in milliseconds.
pub const DEFAULT_PAUSE_TIMEOUT_MS: u64 = 10 * 60 * 1_000;
/// Minutes in a day; `to_minute == MINUTES_PER_DAY` is 24:00, the end of the day.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// Day names in bit order: bit 0 is Monday.
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAYS_HINT: &str = "use mon, tue, wed, thu, fri, sat, sun, a range such as mon-fri, \
                         a list such as sat,sun, or daily";

/// A problem with a throttle setting or with applying a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    /// The time zone is not in the time zone database.
    #[error("unknown time zone {name:?}; use an IANA name such as America/New_York or UTC")]
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
    /// A `days` value could not be read.
    #[error("invalid days {text:?}: {reason}")]
    InvalidDays {
        /// The value as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `from` or `to` value is not a time of day.
    #[error("invalid time {text:?}; expected \"HH:MM\" from 00:00 to 24:00")]
    InvalidClockTime {
        /// The value as given.
        text: String,
    },
}

/// A job's throttle policy: the spec's `throttle:` block plus the operator's runtime changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottlePolicy {
    /// IANA time zone that schedule windows are read in, such as `America/New_York`.
    pub timezone: String,
    /// Chunks in flight across all workers outside every schedule window, 1 to
    /// [`MAX_CONCURRENCY`].
    pub default_concurrency: u32,
    /// Windows with their own concurrency; the first one covering an instant wins.
    pub schedule: Vec<ScheduleWindow>,
    /// Load-based control, if a load probe is configured.
    pub load: Option<LoadPolicy>,
    /// Job-wide row and byte rates, shared among running chunks.
    pub rate: RateLimits,
    /// CPU use above which a worker takes no further chunk, in percent (1 to 100).
    pub worker_cpu_max: Option<f64>,
    /// The operator's cap (`ferryctl throttle JOB --max-concurrency N`): one more limit,
    /// the effective concurrency is the smallest of all of them.
    pub max_concurrency_override: Option<u32>,
    /// Whether the operator paused the job (`ferryctl pause`).
    pub paused: bool,
    /// The job's weight when jobs of one cluster compete for worker slots: each running
    /// job's share of the busy slots tends to its priority over the sum of the running
    /// jobs' priorities. 1 to [`MAX_PRIORITY`]; `priority:` in the spec, changed at runtime
    /// with `ferryctl throttle JOB --priority N`. Policies stored before it existed read as
    /// [`DEFAULT_PRIORITY`].
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_priority() -> u32 {
    DEFAULT_PRIORITY
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            timezone: DEFAULT_TIME_ZONE.to_owned(),
            default_concurrency: DEFAULT_CONCURRENCY,
            schedule: Vec::new(),
            load: None,
            rate: RateLimits::default(),
            worker_cpu_max: None,
            max_concurrency_override: None,
            paused: false,
            priority: DEFAULT_PRIORITY,
        }
    }
}

/// A time window on some weekdays with its own concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleWindow {
    /// Days the window starts on.
    pub days: DaySet,
    /// Start, in minutes since local midnight (inclusive), 0 to [`MINUTES_PER_DAY`].
    pub from_minute: u16,
    /// End, in minutes since local midnight (exclusive), 0 to [`MINUTES_PER_DAY`]; before
    /// `from_minute` when the window crosses midnight; never equal to it.
    pub to_minute: u16,
    /// Chunks in flight at most while the window applies, 1 to [`MAX_CONCURRENCY`].
    pub max_concurrency: u32,
}

impl ScheduleWindow {
    /// Returns whether the window ends on the day after it starts.
    pub fn crosses_midnight(&self) -> bool {
        self.to_minute < self.from_minute
    }

    /// Returns whether the window covers a local wall-clock time, given as its weekday and
    /// minutes since midnight. A window crossing midnight covers the early hours of the day
    /// after each of its days.
    pub fn covers(&self, weekday: Weekday, minute_of_day: u16) -> bool {
        if self.crosses_midnight() {
            let started_today = self.days.contains(weekday) && minute_of_day >= self.from_minute;
            let started_yesterday =
                self.days.contains(weekday.wrapping_sub(1)) && minute_of_day < self.to_minute;
            started_today || started_yesterday
        } else {
            self.days.contains(weekday)
                && minute_of_day >= self.from_minute
                && minute_of_day < self.to_minute
        }
    }
}

impl fmt::Display for ScheduleWindow {
    /// Writes the window as `mon-fri 08:00-20:00`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {}-{}",
            self.days,
            format_clock_minute(self.from_minute),
            format_clock_minute(self.to_minute)
        )
    }
}

/// A set of weekdays: bit 0 is Monday, bit 6 is Sunday; the other bit must be clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DaySet(pub u8);

impl DaySet {
    /// Every day of the week.
    pub const ALL: DaySet = DaySet(0b111_1111);

    /// Returns the set holding just `weekday`.
    pub fn single(weekday: Weekday) -> DaySet {
        DaySet(1 << day_bit(weekday))
    }

    /// Returns whether the set holds `weekday`.
    pub fn contains(self, weekday: Weekday) -> bool {
        self.0 & (1 << day_bit(weekday)) != 0
    }

    /// Returns whether the set names at least one day and nothing beyond Sunday.
    pub fn is_valid(self) -> bool {
        self.0 != 0 && self.0 & !DaySet::ALL.0 == 0
    }
}

fn day_bit(weekday: Weekday) -> u8 {
    // `to_monday_zero_offset` is 0 (Monday) to 6 (Sunday); the cast cannot lose anything.
    weekday.to_monday_zero_offset().unsigned_abs()
}

fn parse_day_name(name: &str) -> Option<u8> {
    DAY_NAMES
        .iter()
        .position(|day_name| day_name.eq_ignore_ascii_case(name))
        .and_then(|index| u8::try_from(index).ok())
}

impl FromStr for DaySet {
    type Err = ThrottleError;

    /// Reads `mon`..`sun` (any case), ranges such as `mon-fri` (wrapping: `fri-mon` is
    /// Friday to Monday), comma-separated lists of both, and `daily` or `*`.
    fn from_str(text: &str) -> Result<DaySet, ThrottleError> {
        let invalid = |reason: String| ThrottleError::InvalidDays {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed == "*" || trimmed.eq_ignore_ascii_case("daily") {
            return Ok(DaySet::ALL);
        }
        let mut bits = 0u8;
        for item in trimmed.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(invalid(format!("empty day in the list; {DAYS_HINT}")));
            }
            let (first_name, last_name) = item.split_once('-').unwrap_or((item, item));
            let day_of = |name: &str| {
                parse_day_name(name.trim())
                    .ok_or_else(|| invalid(format!("unknown day {:?}; {DAYS_HINT}", name.trim())))
            };
            let first_day = day_of(first_name)?;
            let last_day = day_of(last_name)?;
            let mut day = first_day;
            loop {
                bits |= 1 << day;
                if day == last_day {
                    break;
                }
                day = (day + 1) % 7;
            }
        }
        Ok(DaySet(bits))
    }
}

impl fmt::Display for DaySet {
    /// Writes the days in the shortest spec spelling: `daily`, `mon-fri`, `sat,sun`,
    /// `mon,wed-fri`; `none` for an empty set.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == DaySet::ALL {
            return formatter.write_str("daily");
        }
        let mut parts: Vec<String> = Vec::new();
        let mut day = 0usize;
        while day < DAY_NAMES.len() {
            if self.0 & (1 << day) == 0 {
                day += 1;
                continue;
            }
            let run_start = day;
            while day + 1 < DAY_NAMES.len() && self.0 & (1 << (day + 1)) != 0 {
                day += 1;
            }
            let run_end = day;
            match run_end - run_start {
                0 => parts.push(DAY_NAMES[run_start].to_owned()),
                1 => {
                    parts.push(DAY_NAMES[run_start].to_owned());
                    parts.push(DAY_NAMES[run_end].to_owned());
                }
                _ => parts.push(format!("{}-{}", DAY_NAMES[run_start], DAY_NAMES[run_end])),
            }
            day += 1;
        }
        if parts.is_empty() {
            return formatter.write_str("none");
        }
        formatter.write_str(&parts.join(","))
    }
}

/// Where a load reading comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadProbe {
    /// The source connector's own measure: active backends on PostgreSQL,
    /// `Threads_running` on MySQL.
    Builtin,
    /// A query on the source returning one number.
    Sql(String),
}

impl fmt::Display for LoadProbe {
    /// Writes `builtin` or `sql`, never the query itself.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadProbe::Builtin => formatter.write_str("builtin"),
            LoadProbe::Sql(_) => formatter.write_str("sql"),
        }
    }
}

/// Load-based control: probe the source, halve concurrency above `max`, pause above
/// `critical`, grow again by one per probe below `max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadPolicy {
    /// What is measured.
    pub probe: LoadProbe,
    /// Time between probes, in milliseconds; at least [`MIN_LOAD_INTERVAL_MS`].
    pub interval_ms: u64,
    /// Load at or above which concurrency halves; greater than 0.
    pub max: f64,
    /// Load at or above which the job pauses; greater than `max`.
    pub critical: f64,
    /// How long chunks may stay paused before they are aborted, in milliseconds; at least
    /// `interval_ms`.
    pub pause_timeout_ms: u64,
}

/// Job-wide rates, shared among running chunks; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// Rows per second across the job, at least 1.
    pub rows_per_sec: Option<u64>,
    /// Bytes per second across the job, at least 1.
    pub bytes_per_sec: Option<u64>,
}

/// The schedule's verdict for one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleLimit {
    /// Chunks in flight at most: the matching window's, or the default.
    pub max_concurrency: u32,
    /// Index of the matching window in [`ThrottlePolicy::schedule`]; `None` when no window
    /// matches and the default applies.
    pub window: Option<usize>,
    /// The instant on the policy's local clock, such as `2026-03-08 03:30 EDT (Sun)`.
    pub local_time: String,
}

impl ThrottlePolicy {
    /// Checks the policy against the rules the spec enforces, for policies changed at
    /// runtime. Returns every problem, at spec paths such as `throttle.schedule[1].to`.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::new();
        problems.check(
            "throttle.timezone",
            time_zone_named(&self.timezone)
                .map(|_| ())
                .map_err(|error| error.to_string()),
        );
        problems.check(
            "throttle.default_concurrency",
            check_concurrency(self.default_concurrency),
        );
        for (index, window) in self.schedule.iter().enumerate() {
            let window_path = format!("throttle.schedule[{index}]");
            problems.check(&format!("{window_path}.days"), check_days(window.days));
            problems.check(
                &format!("{window_path}.from"),
                check_clock_minute(window.from_minute),
            );
            problems.check(
                &format!("{window_path}.to"),
                check_clock_minute(window.to_minute),
            );
            problems.check(
                &format!("{window_path}.to"),
                check_window_not_empty(
                    window.from_minute,
                    window.to_minute,
                    &format!("{window_path}.from"),
                ),
            );
            problems.check(
                &format!("{window_path}.max_concurrency"),
                check_concurrency(window.max_concurrency),
            );
        }
        if let Some(load) = &self.load {
            if let LoadProbe::Sql(query) = &load.probe {
                problems.check("throttle.load.probe.sql", check_sql_probe(query));
            }
            problems.check(
                "throttle.load.interval",
                check_load_interval(load.interval_ms),
            );
            problems.check("throttle.load.max", check_load_max(load.max));
            problems.check(
                "throttle.load.critical",
                check_load_critical(
                    check_load_max(load.max).is_ok().then_some(load.max),
                    load.critical,
                    "throttle.load.max",
                ),
            );
            problems.check(
                "throttle.load.pause_timeout",
                check_pause_timeout(
                    load.interval_ms,
                    load.pause_timeout_ms,
                    "throttle.load.interval",
                ),
            );
        }
        if let Some(rows_per_sec) = self.rate.rows_per_sec {
            problems.check("throttle.rate.rows_per_sec", check_rate(rows_per_sec));
        }
        if let Some(bytes_per_sec) = self.rate.bytes_per_sec {
            problems.check("throttle.rate.bytes_per_sec", check_rate(bytes_per_sec));
        }
        if let Some(percent) = self.worker_cpu_max {
            problems.check("throttle.worker_cpu_max", check_worker_cpu_max(percent));
        }
        if let Some(cap) = self.max_concurrency_override {
            problems.check("throttle.max_concurrency_override", check_concurrency(cap));
        }
        problems.check("priority", check_priority(self.priority));
        problems.into_result()
    }

    /// Returns the policy's time zone.
    ///
    /// # Errors
    /// [`ThrottleError::UnknownTimeZone`] when `timezone` is not in the time zone database.
    pub fn time_zone(&self) -> Result<TimeZone, ThrottleError> {
        time_zone_named(&self.timezone)
    }

    /// Returns the schedule's limit at `instant`: the first window covering the instant's
    /// local wall-clock time, or `default_concurrency` when none does.
    ///
    /// # Errors
    /// [`ThrottleError::UnknownTimeZone`] when `timezone` is not in the time zone database
    /// (a validated policy never has one).
    pub fn window_at(&self, instant: Timestamp) -> Result<ScheduleLimit, ThrottleError> {
        let time_zone = self.time_zone()?;
        let abbreviation = time_zone.to_offset_info(instant).abbreviation().to_owned();
        let local = instant.to_zoned(time_zone);
        let weekday = local.weekday();
        // hour() is 0..=23 and minute() 0..=59 on a Zoned, so both are non-negative.
        let minute_of_day =
            u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let local_time = format!(
            "{:04}-{:02}-{:02} {:02}:{:02} {abbreviation} ({})",
            local.year(),
            local.month(),
            local.day(),
            local.hour(),
            local.minute(),
            weekday_label(weekday),
        );
        let window_opt = self
            .schedule
            .iter()
            .position(|window| window.covers(weekday, minute_of_day));
        let max_concurrency = match window_opt {
            Some(index) => self.schedule[index].max_concurrency,
            None => self.default_concurrency,
        };
        Ok(ScheduleLimit {
            max_concurrency,
            window: window_opt,
            local_time,
        })
    }
}

fn weekday_label(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

/// Looks up an IANA time zone name (case-insensitively) in the bundled database.
fn time_zone_named(name: &str) -> Result<TimeZone, ThrottleError> {
    let unknown = || ThrottleError::UnknownTimeZone {
        name: name.to_owned(),
    };
    let time_zone = TimeZone::get(name).map_err(|_| unknown())?;
    // jiff answers `Etc/Unknown` with a placeholder zone that behaves as UTC: a typo
    // guard, not a place.
    if time_zone.is_unknown() {
        return Err(unknown());
    }
    Ok(time_zone)
}

/// Returns the database's spelling of a time zone name (`america/new_york` becomes
/// `America/New_York`), or an error naming it when it is unknown.
pub(crate) fn canonical_time_zone_name(name: &str) -> Result<String, ThrottleError> {
    let time_zone = time_zone_named(name)?;
    Ok(time_zone.iana_name().unwrap_or(name).to_owned())
}

/// Reads a time of day `"HH:MM"` (or `"H:MM"`), 00:00 to 24:00, into minutes since midnight.
///
/// # Errors
/// [`ThrottleError::InvalidClockTime`] for anything else, such as `"8am"` or `"24:30"`.
pub fn parse_clock_minute(text: &str) -> Result<u16, ThrottleError> {
    let invalid = || ThrottleError::InvalidClockTime {
        text: text.to_owned(),
    };
    let (hour_text, minute_text) = text.trim().split_once(':').ok_or_else(invalid)?;
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(hour_text) || hour_text.len() > 2 {
        return Err(invalid());
    }
    if !all_digits(minute_text) || minute_text.len() != 2 {
        return Err(invalid());
    }
    let hour: u16 = hour_text.parse().map_err(|_| invalid())?;
    let minute: u16 = minute_text.parse().map_err(|_| invalid())?;
    if minute >= 60 {
        return Err(invalid());
    }
    let minute_of_day = hour * 60 + minute;
    if minute_of_day > MINUTES_PER_DAY {
        return Err(invalid());
    }
    Ok(minute_of_day)
}

/// Writes minutes since midnight as `HH:MM` (1440 is `24:00`).
pub fn format_clock_minute(minute_of_day: u16) -> String {
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

// The rules below are shared by `ThrottlePolicy::validate` and the spec parser, so both
// say the same thing about the same value. Each returns the message for its field.

/// Checks a job's `priority`: 1 to [`MAX_PRIORITY`].
///
/// # Errors
/// A message for the field when the weight is out of range.
pub fn check_priority(priority: u32) -> Result<(), String> {
    if priority == 0 {
        return Err("must be at least 1".to_owned());
    }
    if priority > MAX_PRIORITY {
        return Err(format!("must be at most {MAX_PRIORITY}"));
    }
    Ok(())
}

pub(crate) fn check_concurrency(concurrency: u32) -> Result<(), String> {
    if concurrency < 1 {
        return Err("must be at least 1".to_owned());
    }
    if concurrency > MAX_CONCURRENCY {
        return Err(format!("must be at most {MAX_CONCURRENCY}"));
    }
    Ok(())
}

pub(crate) fn check_days(days: DaySet) -> Result<(), String> {
    if days.0 == 0 {
        return Err(format!("must name at least one day; {DAYS_HINT}"));
    }
    if !days.is_valid() {
        return Err(format!("bits beyond sunday are set ({:#010b})", days.0));
    }
    Ok(())
}

pub(crate) fn check_clock_minute(minute_of_day: u16) -> Result<(), String> {
    if minute_of_day > MINUTES_PER_DAY {
        return Err("must be at most 24:00".to_owned());
    }
    Ok(())
}

/// A window from a time to the same time would be either empty or a whole day; neither is
/// what someone writing it most likely meant, so it is refused.
pub(crate) fn check_window_not_empty(
    from_minute: u16,
    to_minute: u16,
    from_path: &str,
) -> Result<(), String> {
    if from_minute == to_minute {
        return Err(format!(
            "must differ from {from_path} ({}); for a whole day use 00:00 to 24:00",
            format_clock_minute(from_minute)
        ));
    }
    Ok(())
}

pub(crate) fn check_sql_probe(query: &str) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(())
}

pub(crate) fn check_load_interval(interval_ms: u64) -> Result<(), String> {
    if interval_ms < MIN_LOAD_INTERVAL_MS {
        return Err(format!(
            "must be at least {}",
            format_duration_ms(MIN_LOAD_INTERVAL_MS)
        ));
    }
    Ok(())
}

pub(crate) fn check_load_max(max: f64) -> Result<(), String> {
    if !(max.is_finite() && max > 0.0) {
        return Err("must be greater than 0".to_owned());
    }
    Ok(())
}

/// `valid_max_opt` is `None` when `max` is itself invalid (and reported on its own field):
/// then only `critical`'s own sense is checked.
pub(crate) fn check_load_critical(
    valid_max_opt: Option<f64>,
    critical: f64,
    max_path: &str,
) -> Result<(), String> {
    if !critical.is_finite() {
        return Err("must be a finite number".to_owned());
    }
    match valid_max_opt {
        Some(max) if critical <= max => Err(format!("must be greater than {max_path}")),
        _ => Ok(()),
    }
}

/// A pause is only noticed at a probe, so a timeout shorter than the probe interval would
/// abort chunks at the first critical reading; the spec says so instead.
pub(crate) fn check_pause_timeout(
    interval_ms: u64,
    pause_timeout_ms: u64,
    interval_path: &str,
) -> Result<(), String> {
    if pause_timeout_ms < interval_ms {
        return Err(format!(
            "must be at least {interval_path} ({})",
            format_duration_ms(interval_ms)
        ));
    }
    Ok(())
}

/// The largest rate limit, per second: no database moves more rows or bytes, so a larger
/// value is a typo (or an attempt to overflow the pacer's arithmetic).
pub const MAX_RATE_PER_SEC: u64 = 1_000_000_000_000;

pub(crate) fn check_rate(per_sec: u64) -> Result<(), String> {
    if per_sec < 1 {
        return Err("must be at least 1".to_owned());
    }
    if per_sec > MAX_RATE_PER_SEC {
        return Err(format!(
            "{per_sec} is above any real rate: must be at most {MAX_RATE_PER_SEC}; to remove \
             the limit, leave it out (`ferryctl throttle`: 0)"
        ));
    }
    Ok(())
}

pub(crate) fn check_worker_cpu_max(percent: f64) -> Result<(), String> {
    if !(1.0..=100.0).contains(&percent) {
        return Err("must be a percentage from 1 to 100".to_owned());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    /// Reads "2026-03-09T08:00[America/New_York]" (local time in a zone) or
    /// "2026-03-08T07:15:00Z" (UTC).
    fn instant(text: &str) -> Timestamp {
        if text.contains('[') {
            text.parse::<jiff::Zoned>().unwrap().timestamp()
        } else {
            text.parse::<Timestamp>().unwrap()
        }
    }

    fn window(days: &str, from: &str, to: &str, max_concurrency: u32) -> ScheduleWindow {
        ScheduleWindow {
            days: days.parse().unwrap(),
            from_minute: parse_clock_minute(from).unwrap(),
            to_minute: parse_clock_minute(to).unwrap(),
            max_concurrency,
        }
    }

    fn policy(timezone: &str, schedule: Vec<ScheduleWindow>) -> ThrottlePolicy {
        ThrottlePolicy {
            timezone: timezone.to_owned(),
            default_concurrency: 16,
            schedule,
            ..ThrottlePolicy::default()
        }
    }

    fn window_index_at(policy: &ThrottlePolicy, zoned: &str) -> Option<usize> {
        policy.window_at(instant(zoned)).unwrap().window
    }

    #[test]
    fn window_from_is_inclusive_and_to_is_exclusive() {
        let weekdays = policy(
            "America/New_York",
            vec![window("mon-fri", "08:00", "20:00", 2)],
        );
        // 2026-03-10 is a Tuesday.
        let at = |time: &str| {
            window_index_at(&weekdays, &format!("2026-03-10T{time}[America/New_York]"))
        };
        assert_eq!(at("07:59"), None);
        assert_eq!(at("08:00"), Some(0));
        assert_eq!(at("19:59"), Some(0));
        assert_eq!(at("20:00"), None);
    }

    #[test]
    fn limit_is_the_window_or_the_default() {
        let weekdays = policy("UTC", vec![window("mon-fri", "08:00", "20:00", 2)]);
        let inside = weekdays
            .window_at(instant("2026-03-10T09:00[UTC]"))
            .unwrap();
        assert_eq!(inside.max_concurrency, 2);
        let outside = weekdays
            .window_at(instant("2026-03-10T21:00[UTC]"))
            .unwrap();
        assert_eq!(
            outside,
            ScheduleLimit {
                max_concurrency: 16,
                window: None,
                local_time: "2026-03-10 21:00 UTC (Tue)".to_owned(),
            }
        );
    }

    /// Asserts which window (if any) covers each UTC wall-clock time.
    fn assert_windows_at(policy: &ThrottlePolicy, expected: &[(&str, Option<usize>, &str)]) {
        for (utc_time, expected_window, why) in expected {
            let zoned = format!("{utc_time}[UTC]");
            assert_eq!(
                window_index_at(policy, &zoned),
                *expected_window,
                "{utc_time}: {why}"
            );
        }
    }

    #[test]
    fn window_crossing_midnight_belongs_to_its_start_day() {
        let friday_night = policy("UTC", vec![window("fri", "22:00", "06:00", 32)]);
        // 2026-03-13 is a Friday.
        assert_windows_at(
            &friday_night,
            &[
                ("2026-03-13T21:59", None, "friday before the start"),
                ("2026-03-13T22:00", Some(0), "friday at the start"),
                ("2026-03-13T23:59", Some(0), "friday before midnight"),
                (
                    "2026-03-14T00:00",
                    Some(0),
                    "saturday midnight, started friday",
                ),
                (
                    "2026-03-14T03:00",
                    Some(0),
                    "saturday 03:00, started friday",
                ),
                ("2026-03-14T06:00", None, "saturday at the end"),
                (
                    "2026-03-13T03:00",
                    None,
                    "friday 03:00 would have started thursday",
                ),
                (
                    "2026-03-15T03:00",
                    None,
                    "sunday 03:00 would have started saturday",
                ),
                ("2026-03-14T22:00", None, "saturday is not listed"),
            ],
        );
    }

    #[test]
    fn weekend_nights_cross_midnight_on_each_listed_day() {
        let weekend = policy("UTC", vec![window("sat,sun", "22:00", "06:00", 32)]);
        assert_windows_at(
            &weekend,
            &[
                ("2026-03-14T23:00", Some(0), "saturday night"),
                (
                    "2026-03-15T03:00",
                    Some(0),
                    "sunday early, started saturday",
                ),
                ("2026-03-16T03:00", Some(0), "monday early, started sunday"),
                ("2026-03-16T23:00", None, "monday night"),
                ("2026-03-14T03:00", None, "saturday early, started friday"),
            ],
        );
    }

    #[test]
    fn wrapping_day_range_covers_the_weekend() {
        let long_weekend = policy("UTC", vec![window("fri-mon", "00:00", "24:00", 8)]);
        let covered: Vec<bool> = (9..=15)
            .map(|day| {
                window_index_at(&long_weekend, &format!("2026-03-{day:02}T12:00[UTC]")).is_some()
            })
            .collect();
        // Monday 9th .. Sunday 15th.
        assert_eq!(covered, [true, false, false, false, true, true, true]);
        assert_eq!(
            window_index_at(&long_weekend, "2026-03-13T23:59[UTC]"),
            Some(0)
        );
    }

    #[test]
    fn first_matching_window_wins() {
        let overlapping = policy(
            "UTC",
            vec![
                window("mon", "09:00", "10:00", 1),
                window("daily", "00:00", "24:00", 8),
            ],
        );
        let at_nine = overlapping
            .window_at(instant("2026-03-09T09:30[UTC]"))
            .unwrap();
        assert_eq!((at_nine.window, at_nine.max_concurrency), (Some(0), 1));
        let at_ten = overlapping
            .window_at(instant("2026-03-09T10:00[UTC]"))
            .unwrap();
        assert_eq!((at_ten.window, at_ten.max_concurrency), (Some(1), 8));
    }

    #[test]
    fn spring_forward_window_in_the_gap_applies_after_the_jump() {
        // 2026-03-08 02:00 EST jumps to 03:00 EDT in New York.
        let early = policy("America/New_York", vec![window("sun", "02:30", "04:00", 3)]);
        let at_quarter_past_three = early.window_at(instant("2026-03-08T07:15:00Z")).unwrap();
        assert_eq!(
            at_quarter_past_three.local_time,
            "2026-03-08 03:15 EDT (Sun)"
        );
        assert_eq!(at_quarter_past_three.window, Some(0));
        // One minute before the jump is 01:59 EST, before the window.
        let before_jump = early.window_at(instant("2026-03-08T06:59:00Z")).unwrap();
        assert_eq!(before_jump.local_time, "2026-03-08 01:59 EST (Sun)");
        assert_eq!(before_jump.window, None);
        // The jump itself lands on 03:00 EDT, inside the window.
        assert_eq!(window_index_at(&early, "2026-03-08T07:00:00Z"), Some(0));
        assert_eq!(window_index_at(&early, "2026-03-08T08:00:00Z"), None); // 04:00 EDT
    }

    #[test]
    fn fall_back_repeated_hour_matches_both_times() {
        // 2026-11-01 02:00 EDT falls back to 01:00 EST in New York.
        let one_am = policy("America/New_York", vec![window("sun", "01:00", "02:00", 5)]);
        let first = one_am.window_at(instant("2026-11-01T05:30:00Z")).unwrap();
        assert_eq!(first.local_time, "2026-11-01 01:30 EDT (Sun)");
        assert_eq!(first.window, Some(0));
        let second = one_am.window_at(instant("2026-11-01T06:30:00Z")).unwrap();
        assert_eq!(second.local_time, "2026-11-01 01:30 EST (Sun)");
        assert_eq!(second.window, Some(0));
        assert_eq!(window_index_at(&one_am, "2026-11-01T07:00:00Z"), None); // 02:00 EST
        assert_eq!(window_index_at(&one_am, "2026-11-01T04:59:00Z"), None); // 00:59 EDT
    }

    #[test]
    fn unknown_time_zone_is_an_error() {
        let mars = policy("Mars/Base", Vec::new());
        assert_eq!(
            mars.window_at(instant("2026-03-09T00:00Z")),
            Err(ThrottleError::UnknownTimeZone {
                name: "Mars/Base".to_owned()
            })
        );
        assert_eq!(
            canonical_time_zone_name("Etc/Unknown")
                .unwrap_err()
                .to_string(),
            "unknown time zone \"Etc/Unknown\"; use an IANA name such as America/New_York or UTC"
        );
        assert_eq!(
            canonical_time_zone_name("america/new_york").unwrap(),
            "America/New_York"
        );
    }

    #[test]
    fn day_sets_parse_and_display_in_canonical_form() {
        let cases = [
            ("mon", "mon"),
            ("MON-Fri", "mon-fri"),
            ("sat,sun", "sat,sun"),
            ("sun, sat", "sat,sun"),
            ("fri-mon", "mon,fri-sun"),
            ("daily", "daily"),
            ("*", "daily"),
            ("mon-sun", "daily"),
            ("sun-sat", "daily"),
            ("mon,wed-fri", "mon,wed-fri"),
            ("tue,wed", "tue,wed"),
        ];
        for (text, canonical) in cases {
            let days: DaySet = text.parse().unwrap();
            assert_eq!(days.to_string(), canonical, "{text}");
            assert_eq!(canonical.parse::<DaySet>().unwrap(), days, "{text}");
        }
        assert_eq!("mon-fri".parse::<DaySet>().unwrap(), DaySet(0b001_1111));
        assert!(DaySet(0b100_0000).contains(Weekday::Sunday));
        assert_eq!(DaySet(0).to_string(), "none");
    }

    #[test]
    fn bad_day_sets_name_the_problem() {
        let error = "mon-funday".parse::<DaySet>().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("invalid days \"mon-funday\": unknown day \"funday\"; {DAYS_HINT}")
        );
        for bad in ["", "mon,,tue", "monday", "mon-", "1"] {
            assert!(bad.parse::<DaySet>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clock_times_parse_from_midnight_to_end_of_day() {
        assert_eq!(parse_clock_minute("00:00").unwrap(), 0);
        assert_eq!(parse_clock_minute("8:05").unwrap(), 485);
        assert_eq!(parse_clock_minute("24:00").unwrap(), 1440);
        for bad in [
            "24:01", "25:00", "12:60", "12", "12:5", "-1:00", "8am", "123:00", "",
        ] {
            assert_eq!(
                parse_clock_minute(bad),
                Err(ThrottleError::InvalidClockTime {
                    text: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
        assert_eq!(format_clock_minute(1440), "24:00");
        assert_eq!(format_clock_minute(485), "08:05");
    }

    #[test]
    fn validate_reports_every_problem_with_its_path() {
        let broken = ThrottlePolicy {
            timezone: "Mars/Base".to_owned(),
            default_concurrency: 0,
            schedule: vec![
                window("mon", "08:00", "20:00", 2),
                ScheduleWindow {
                    days: DaySet(0),
                    from_minute: 600,
                    to_minute: 600,
                    max_concurrency: 2000,
                },
            ],
            load: Some(LoadPolicy {
                probe: LoadProbe::Sql("  ".to_owned()),
                interval_ms: 50,
                max: 25.0,
                critical: 25.0,
                pause_timeout_ms: 10,
            }),
            rate: RateLimits {
                rows_per_sec: Some(0),
                bytes_per_sec: Some(1),
            },
            worker_cpu_max: Some(120.0),
            max_concurrency_override: Some(0),
            paused: true,
            priority: 0,
        };
        assert_eq!(
            broken.validate().unwrap_err().to_lines(),
            [
                "throttle.timezone: unknown time zone \"Mars/Base\"; use an IANA name such as \
                 America/New_York or UTC",
                "throttle.default_concurrency: must be at least 1",
                &format!("throttle.schedule[1].days: must name at least one day; {DAYS_HINT}"),
                "throttle.schedule[1].to: must differ from throttle.schedule[1].from (10:00); \
                 for a whole day use 00:00 to 24:00",
                "throttle.schedule[1].max_concurrency: must be at most 1024",
                "throttle.load.probe.sql: must not be empty",
                "throttle.load.interval: must be at least 100ms",
                "throttle.load.critical: must be greater than throttle.load.max",
                "throttle.load.pause_timeout: must be at least throttle.load.interval (50ms)",
                "throttle.rate.rows_per_sec: must be at least 1",
                "throttle.worker_cpu_max: must be a percentage from 1 to 100",
                "throttle.max_concurrency_override: must be at least 1",
                "priority: must be at least 1",
            ]
        );
        assert_eq!(ThrottlePolicy::default().validate(), Ok(()));
    }

    #[test]
    fn policy_round_trips_through_json() {
        let stored = ThrottlePolicy {
            timezone: "Europe/Paris".to_owned(),
            default_concurrency: 4,
            schedule: vec![window("sat,sun", "22:00", "06:00", 32)],
            load: Some(LoadPolicy {
                probe: LoadProbe::Sql("SELECT 1".to_owned()),
                interval_ms: 5_000,
                max: 25.5,
                critical: 60.0,
                pause_timeout_ms: DEFAULT_PAUSE_TIMEOUT_MS,
            }),
            rate: RateLimits {
                rows_per_sec: Some(200_000),
                bytes_per_sec: None,
            },
            worker_cpu_max: Some(85.0),
            max_concurrency_override: Some(8),
            paused: true,
            priority: 3,
        };
        let json = serde_json::to_string(&stored).unwrap();
        assert!(json.contains("{\"sql\":\"SELECT 1\"}"), "{json}");
        let loaded: ThrottlePolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(loaded, stored);
        // A policy stored before `priority` existed reads with the default weight.
        let older = json.replace(",\"priority\":3", "");
        assert_ne!(older, json);
        let loaded_older: ThrottlePolicy = serde_json::from_str(&older).unwrap();
        assert_eq!(loaded_older.priority, DEFAULT_PRIORITY);
    }
}
