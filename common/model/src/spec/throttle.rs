//! The `throttle:` section of a spec, read into the job's initial [`ThrottlePolicy`], and
//! [`parse_throttle_schedule`] for runtime changes of the schedule. The rules themselves
//! live in [`crate::throttle`], shared with [`ThrottlePolicy::validate`], so both say the
//! same thing about the same value.

use serde_yaml_ng::Value;

use super::fields::{
    describe, item_path, read_duration_ms, read_mapping, read_number, read_positive_integer,
    read_positive_u32, read_string,
};
use super::{DEFAULT_CONCURRENCY, MAX_CONCURRENCY};
use crate::problems::Problems;
use crate::throttle::{
    self, DEFAULT_LOAD_INTERVAL_MS, DEFAULT_PAUSE_TIMEOUT_MS, DaySet, LoadPolicy, LoadProbe,
    RateLimits, ScheduleWindow, ThrottlePolicy,
};

const THROTTLE_FIELDS: &[&str] = &[
    "timezone",
    "default_concurrency",
    "schedule",
    "load",
    "rate",
    "worker_cpu_max",
];
const SCHEDULE_WINDOW_FIELDS: &[&str] = &["days", "from", "to", "max_concurrency"];
const LOAD_FIELDS: &[&str] = &["probe", "interval", "max", "critical", "pause_timeout"];
const LOAD_SQL_PROBE_FIELDS: &[&str] = &["sql"];
const RATE_FIELDS: &[&str] = &["rows_per_sec", "bytes_per_sec"];

/// Parses a YAML list of schedule windows, written as in a spec's `throttle.schedule`, for
/// runtime changes of the schedule. On failure returns every problem, with paths such as
/// `throttle.schedule[1].days`; a YAML syntax error is reported alone, with an empty path.
pub fn parse_throttle_schedule(text: &str) -> Result<Vec<ScheduleWindow>, Problems> {
    let root = serde_yaml_ng::from_str::<Value>(text).map_err(|yaml_error| {
        Problems::single("", super::reader::describe_yaml_error(text, &yaml_error))
    })?;
    let mut problems = Problems::new();
    let schedule_opt = read_schedule(&root, "throttle.schedule", &mut problems);
    match schedule_opt {
        Some(schedule) if problems.is_empty() => Ok(schedule),
        _ => {
            if problems.is_empty() {
                problems.push(
                    "",
                    "internal error: the schedule was rejected without a reason",
                );
            }
            Err(problems)
        }
    }
}

/// Reads `throttle:` into the job's initial policy; the runtime settings (operator's
/// override, pause) start unset.
pub(super) fn read_throttle(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<ThrottlePolicy> {
    let fields = read_mapping(value, path, THROTTLE_FIELDS, &[], problems)?;
    let timezone_opt = match fields.optional("timezone") {
        Some(zone) => read_time_zone(zone, &fields.path_of("timezone"), problems),
        None => Some(throttle::DEFAULT_TIME_ZONE.to_owned()),
    };
    let concurrency_opt = match fields.optional("default_concurrency") {
        Some(concurrency) => read_positive_u32(
            concurrency,
            &fields.path_of("default_concurrency"),
            MAX_CONCURRENCY,
            problems,
        ),
        None => Some(DEFAULT_CONCURRENCY),
    };
    let schedule_opt = match fields.optional("schedule") {
        Some(schedule) => read_schedule(schedule, &fields.path_of("schedule"), problems),
        None => Some(Vec::new()),
    };
    let load_opt = match fields.optional("load") {
        Some(load) => read_load(load, &fields.path_of("load"), problems).map(Some),
        None => Some(None),
    };
    let rate_opt = match fields.optional("rate") {
        Some(rate) => read_rate(rate, &fields.path_of("rate"), problems),
        None => Some(RateLimits::default()),
    };
    let worker_cpu_max_opt = match fields.optional("worker_cpu_max") {
        Some(percent) => {
            let percent_path = fields.path_of("worker_cpu_max");
            read_number(percent, &percent_path, problems)
                .filter(|percent| {
                    problems.check(&percent_path, throttle::check_worker_cpu_max(*percent))
                })
                .map(Some)
        }
        None => Some(None),
    };
    Some(ThrottlePolicy {
        timezone: timezone_opt?,
        default_concurrency: concurrency_opt?,
        schedule: schedule_opt?,
        load: load_opt?,
        rate: rate_opt?,
        worker_cpu_max: worker_cpu_max_opt?,
        // Runtime settings: the operator's, never the spec's.
        max_concurrency_override: None,
        paused: false,
        // The spec's top-level `priority:`, set by the caller.
        priority: crate::spec::DEFAULT_PRIORITY,
    })
}

fn read_time_zone(value: &Value, path: &str, problems: &mut Problems) -> Option<String> {
    let name = read_string(value, path, problems)?;
    match throttle::canonical_time_zone_name(name) {
        Ok(canonical) => Some(canonical),
        Err(error) => {
            problems.push(path, error.to_string());
            None
        }
    }
}

fn read_schedule(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<Vec<ScheduleWindow>> {
    let Value::Sequence(items) = value else {
        problems.push(
            path,
            format!(
                "expected a list of windows such as {{ days: mon-fri, from: \"08:00\", \
                 to: \"20:00\", max_concurrency: 2 }}, found {}",
                describe(value)
            ),
        );
        return None;
    };
    let mut windows = Vec::with_capacity(items.len());
    let mut all_valid = true;
    for (index, item) in items.iter().enumerate() {
        match read_schedule_window(item, &item_path(path, index), problems) {
            Some(window) => windows.push(window),
            None => all_valid = false,
        }
    }
    all_valid.then_some(windows)
}

fn read_schedule_window(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<ScheduleWindow> {
    let fields = read_mapping(value, path, SCHEDULE_WINDOW_FIELDS, &[], problems)?;
    let days_opt = match fields.optional("days") {
        Some(days) => read_days(days, &fields.path_of("days"), problems),
        None => Some(DaySet::ALL),
    };
    let from_path = fields.path_of("from");
    let to_path = fields.path_of("to");
    let from_opt = fields
        .required("from", problems)
        .and_then(|from| read_clock_minute(from, &from_path, problems));
    let to_opt = fields
        .required("to", problems)
        .and_then(|to| read_clock_minute(to, &to_path, problems));
    let max_concurrency_opt =
        fields
            .required("max_concurrency", problems)
            .and_then(|concurrency| {
                read_positive_u32(
                    concurrency,
                    &fields.path_of("max_concurrency"),
                    MAX_CONCURRENCY,
                    problems,
                )
            });
    let (from_minute, to_minute) = (from_opt?, to_opt?);
    let not_empty = throttle::check_window_not_empty(from_minute, to_minute, &from_path);
    if !problems.check(&to_path, not_empty) {
        return None;
    }
    Some(ScheduleWindow {
        days: days_opt?,
        from_minute,
        to_minute,
        max_concurrency: max_concurrency_opt?,
    })
}

/// Reads `days`: a string such as `mon-fri`, `"sat,sun"` or `daily`, or a list of them.
fn read_days(value: &Value, path: &str, problems: &mut Problems) -> Option<DaySet> {
    let parse_days =
        |text: &str, text_path: &str, problems: &mut Problems| match text.parse::<DaySet>() {
            Ok(days) => Some(days),
            Err(error) => {
                problems.push(text_path, error.to_string());
                None
            }
        };
    match value {
        Value::String(text) => parse_days(text, path, problems),
        Value::Sequence(items) => {
            let mut union = DaySet(0);
            let mut all_valid = true;
            for (index, item) in items.iter().enumerate() {
                let day_path = item_path(path, index);
                let days_opt = read_string(item, &day_path, problems)
                    .and_then(|text| parse_days(text, &day_path, problems));
                match days_opt {
                    Some(days) => union = DaySet(union.0 | days.0),
                    None => all_valid = false,
                }
            }
            if !all_valid {
                return None;
            }
            problems
                .check(path, throttle::check_days(union))
                .then_some(union)
        }
        other => {
            problems.push(
                path,
                format!(
                    "expected days such as \"mon-fri\", \"sat,sun\" or \"daily\", found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

fn read_clock_minute(value: &Value, path: &str, problems: &mut Problems) -> Option<u16> {
    let Value::String(text) = value else {
        problems.push(
            path,
            format!(
                "expected a time such as \"08:00\" (quoted), found {}",
                describe(value)
            ),
        );
        return None;
    };
    match throttle::parse_clock_minute(text) {
        Ok(minute_of_day) => Some(minute_of_day),
        Err(error) => {
            problems.push(path, error.to_string());
            None
        }
    }
}

fn read_load(value: &Value, path: &str, problems: &mut Problems) -> Option<LoadPolicy> {
    let fields = read_mapping(value, path, LOAD_FIELDS, &[], problems)?;
    let probe_opt = match fields.optional("probe") {
        Some(probe) => read_load_probe(probe, &fields.path_of("probe"), problems),
        None => Some(LoadProbe::Builtin),
    };
    let interval_path = fields.path_of("interval");
    let interval_ms_opt = match fields.optional("interval") {
        Some(interval) => {
            read_duration_ms(interval, &interval_path, problems).filter(|interval_ms| {
                problems.check(&interval_path, throttle::check_load_interval(*interval_ms))
            })
        }
        None => Some(DEFAULT_LOAD_INTERVAL_MS),
    };
    let max_path = fields.path_of("max");
    let max_opt = fields
        .required("max", problems)
        .and_then(|max| read_number(max, &max_path, problems))
        .filter(|max| problems.check(&max_path, throttle::check_load_max(*max)));
    let critical_path = fields.path_of("critical");
    let critical_opt = fields
        .required("critical", problems)
        .and_then(|critical| read_number(critical, &critical_path, problems))
        .filter(|critical| {
            let outcome = throttle::check_load_critical(max_opt, *critical, &max_path);
            problems.check(&critical_path, outcome)
        });
    let pause_timeout_path = fields.path_of("pause_timeout");
    let pause_timeout_ms_opt = match fields.optional("pause_timeout") {
        Some(timeout) => read_duration_ms(timeout, &pause_timeout_path, problems),
        None => Some(DEFAULT_PAUSE_TIMEOUT_MS),
    };
    if let (Some(interval_ms), Some(pause_timeout_ms)) = (interval_ms_opt, pause_timeout_ms_opt) {
        let outcome = throttle::check_pause_timeout(interval_ms, pause_timeout_ms, &interval_path);
        if !problems.check(&pause_timeout_path, outcome) {
            return None;
        }
    }
    Some(LoadPolicy {
        probe: probe_opt?,
        interval_ms: interval_ms_opt?,
        max: max_opt?,
        critical: critical_opt?,
        pause_timeout_ms: pause_timeout_ms_opt?,
    })
}

/// Reads `probe`: `builtin`, or `{ sql: "SELECT ..." }`.
fn read_load_probe(value: &Value, path: &str, problems: &mut Problems) -> Option<LoadProbe> {
    match value {
        Value::String(name) if name == "builtin" => Some(LoadProbe::Builtin),
        Value::Mapping(_) => {
            let fields = read_mapping(value, path, LOAD_SQL_PROBE_FIELDS, &[], problems)?;
            let sql_path = fields.path_of("sql");
            let query = fields
                .required("sql", problems)
                .and_then(|query| read_string(query, &sql_path, problems))?;
            problems
                .check(&sql_path, throttle::check_sql_probe(query))
                .then(|| LoadProbe::Sql(query.to_owned()))
        }
        other => {
            problems.push(
                path,
                format!(
                    "expected builtin or {{ sql: \"SELECT ...\" }}, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

fn read_rate(value: &Value, path: &str, problems: &mut Problems) -> Option<RateLimits> {
    let fields = read_mapping(value, path, RATE_FIELDS, &[], problems)?;
    let mut read_rate_field = |key: &str| match fields.optional(key) {
        Some(per_sec) => {
            read_positive_integer(per_sec, &fields.path_of(key), u64::MAX, problems).map(Some)
        }
        None => Some(None),
    };
    let rows_per_sec_opt = read_rate_field("rows_per_sec");
    let bytes_per_sec_opt = read_rate_field("bytes_per_sec");
    Some(RateLimits {
        rows_per_sec: rows_per_sec_opt?,
        bytes_per_sec: bytes_per_sec_opt?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;
    use crate::spec::test_support::*;

    const FULL_THROTTLE: &str = "\
throttle:
  timezone: America/New_York
  default_concurrency: 16
  schedule:
    - { days: mon-fri, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }
    - { days: \"sat,sun\", from: \"22:00\", to: \"06:00\", max_concurrency: 32 }
    - days: [mon, Wed-thu]
      from: 12:00
      to: \"24:00\"
      max_concurrency: 3
  load:
    probe: builtin
    interval: 5s
    max: 25
    critical: 60.5
    pause_timeout: 10m
  rate: { rows_per_sec: 200000, bytes_per_sec: 50000000 }
  worker_cpu_max: 85
";

    /// [`FULL_THROTTLE`] with one line replaced: `old` must occur exactly once.
    fn throttle_with(old: &str, new: &str) -> String {
        assert_eq!(FULL_THROTTLE.matches(old).count(), 1, "{old:?}");
        spec_with("", &FULL_THROTTLE.replace(old, new))
    }

    fn throttle_error(old: &str, new: &str) -> (String, String) {
        single_error(&throttle_with(old, new))
    }

    #[test]
    fn full_throttle_block_parses_every_field() {
        let throttle = parse(&spec_with("", FULL_THROTTLE)).unwrap().throttle;
        assert_eq!(
            throttle,
            ThrottlePolicy {
                timezone: "America/New_York".to_owned(),
                default_concurrency: 16,
                schedule: vec![
                    ScheduleWindow {
                        days: DaySet(0b001_1111),
                        from_minute: 8 * 60,
                        to_minute: 20 * 60,
                        max_concurrency: 2,
                    },
                    ScheduleWindow {
                        days: DaySet(0b110_0000),
                        from_minute: 22 * 60,
                        to_minute: 6 * 60,
                        max_concurrency: 32,
                    },
                    ScheduleWindow {
                        days: DaySet(0b000_1101),
                        from_minute: 12 * 60,
                        to_minute: 24 * 60,
                        max_concurrency: 3,
                    },
                ],
                load: Some(LoadPolicy {
                    probe: LoadProbe::Builtin,
                    interval_ms: 5_000,
                    max: 25.0,
                    critical: 60.5,
                    pause_timeout_ms: 600_000,
                }),
                rate: RateLimits {
                    rows_per_sec: Some(200_000),
                    bytes_per_sec: Some(50_000_000),
                },
                worker_cpu_max: Some(85.0),
                max_concurrency_override: None,
                paused: false,
                priority: 1,
            }
        );
        assert_eq!(throttle.validate(), Ok(()));
    }

    #[test]
    fn throttle_defaults_and_sql_probe() {
        let yaml = spec_with(
            "",
            "throttle:\n  timezone: europe/paris\n  schedule:\n    \
             - { from: \"01:00\", to: \"05:00\", max_concurrency: 8 }\n  \
             load: { probe: { sql: \"SELECT count(*) FROM pg_stat_activity\" }, max: 0.5, \
             critical: 1 }\n",
        );
        let throttle = parse(&yaml).unwrap().throttle;
        assert_eq!(throttle.timezone, "Europe/Paris");
        assert_eq!(throttle.default_concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(throttle.schedule[0].days, DaySet::ALL);
        assert_eq!(
            throttle.load,
            Some(LoadPolicy {
                probe: LoadProbe::Sql("SELECT count(*) FROM pg_stat_activity".to_owned()),
                interval_ms: DEFAULT_LOAD_INTERVAL_MS,
                max: 0.5,
                critical: 1.0,
                pause_timeout_ms: DEFAULT_PAUSE_TIMEOUT_MS,
            })
        );
        assert_eq!(throttle.rate, RateLimits::default());
        assert_eq!(throttle.worker_cpu_max, None);
        let minimal = parse(&spec_with("", "")).unwrap().throttle;
        assert_eq!(minimal.timezone, "UTC");
        assert!(minimal.schedule.is_empty() && minimal.load.is_none());
    }

    #[test]
    fn unknown_time_zone_is_reported() {
        assert_eq!(
            throttle_error("timezone: America/New_York", "timezone: Mars/Base"),
            (
                "throttle.timezone".to_owned(),
                "unknown time zone \"Mars/Base\"; use an IANA name such as America/New_York \
                 or UTC"
                    .to_owned()
            )
        );
    }

    #[test]
    fn bad_days_are_reported_at_their_window() {
        assert_eq!(
            throttle_error("days: \"sat,sun\"", "days: \"sat,sunday\""),
            (
                "throttle.schedule[1].days".to_owned(),
                "invalid days \"sat,sunday\": unknown day \"sunday\"; use mon, tue, wed, thu, \
                 fri, sat, sun, a range such as mon-fri, a list such as sat,sun, or daily"
                    .to_owned()
            )
        );
        let (path, message) = throttle_error("days: [mon, Wed-thu]", "days: [mon, 3]");
        assert_eq!(path, "throttle.schedule[2].days[1]");
        assert_eq!(message, "expected a string, found integer 3");
        assert_eq!(
            throttle_error("days: [mon, Wed-thu]", "days: []"),
            (
                "throttle.schedule[2].days".to_owned(),
                "must name at least one day; use mon, tue, wed, thu, fri, sat, sun, a range \
                 such as mon-fri, a list such as sat,sun, or daily"
                    .to_owned()
            )
        );
    }

    #[test]
    fn bad_clock_times_are_reported() {
        assert_eq!(
            throttle_error("from: \"08:00\"", "from: \"8am\""),
            (
                "throttle.schedule[0].from".to_owned(),
                "invalid time \"8am\"; expected \"HH:MM\" from 00:00 to 24:00".to_owned()
            )
        );
        assert_eq!(
            throttle_error("to: \"24:00\"", "to: \"24:30\""),
            (
                "throttle.schedule[2].to".to_owned(),
                "invalid time \"24:30\"; expected \"HH:MM\" from 00:00 to 24:00".to_owned()
            )
        );
        assert_eq!(
            throttle_error("from: 12:00", "from: 1200"),
            (
                "throttle.schedule[2].from".to_owned(),
                "expected a time such as \"08:00\" (quoted), found integer 1200".to_owned()
            )
        );
    }

    #[test]
    fn empty_window_is_reported_on_its_end() {
        assert_eq!(
            throttle_error("to: \"06:00\"", "to: \"22:00\""),
            (
                "throttle.schedule[1].to".to_owned(),
                "must differ from throttle.schedule[1].from (22:00); for a whole day use 00:00 \
                 to 24:00"
                    .to_owned()
            )
        );
    }

    #[test]
    fn missing_window_fields_and_bad_window_concurrency_are_reported() {
        let yaml = spec_with(
            "",
            "throttle:\n  schedule:\n    - { days: mon }\n    \
             - { from: \"01:00\", to: \"02:00\", max_concurrency: 2000, size: 1 }\n",
        );
        assert_eq!(
            paths_of(&yaml),
            [
                "throttle.schedule[0].from",
                "throttle.schedule[0].to",
                "throttle.schedule[0].max_concurrency",
                "throttle.schedule[1].size",
                "throttle.schedule[1].max_concurrency",
            ]
        );
        let not_a_list = spec_with("", "throttle:\n  schedule: \"0 2 * * *\"\n");
        assert_eq!(paths_of(&not_a_list), ["throttle.schedule"]);
    }

    #[test]
    fn critical_not_above_max_is_reported() {
        assert_eq!(
            throttle_error("critical: 60.5", "critical: 25"),
            (
                "throttle.load.critical".to_owned(),
                "must be greater than throttle.load.max".to_owned()
            )
        );
    }

    #[test]
    fn bad_load_max_and_probe_are_reported() {
        assert_eq!(
            throttle_error("max: 25", "max: 0"),
            (
                "throttle.load.max".to_owned(),
                "must be greater than 0".to_owned()
            )
        );
        assert_eq!(
            throttle_error("max: 25", "max: \"25\""),
            (
                "throttle.load.max".to_owned(),
                "expected a number, found string \"25\"".to_owned()
            )
        );
        assert_eq!(
            throttle_error("probe: builtin", "probe: threads_running"),
            (
                "throttle.load.probe".to_owned(),
                "expected builtin or { sql: \"SELECT ...\" }, found string \"threads_running\""
                    .to_owned()
            )
        );
        assert_eq!(
            throttle_error("probe: builtin", "probe: { sql: \" \" }"),
            (
                "throttle.load.probe.sql".to_owned(),
                "must not be empty".to_owned()
            )
        );
        let missing = throttle_with("    max: 25\n    critical: 60.5\n", "");
        assert_eq!(
            paths_of(&missing),
            ["throttle.load.max", "throttle.load.critical"]
        );
    }

    #[test]
    fn bad_durations_are_reported() {
        assert_eq!(
            throttle_error("interval: 5s", "interval: 5"),
            (
                "throttle.load.interval".to_owned(),
                "expected a duration such as \"5s\" or \"500ms\", found integer 5".to_owned()
            )
        );
        assert_eq!(
            throttle_error("interval: 5s", "interval: 5 parsecs"),
            (
                "throttle.load.interval".to_owned(),
                "invalid duration \"5 parsecs\": unknown unit \"parsecs\"; write a number and a \
                 unit (ns, us, ms, s, m, h, d, w or their long names), such as 500ms, 10s, 1.5h \
                 or 1m 30s"
                    .to_owned()
            )
        );
        assert_eq!(
            throttle_error("interval: 5s", "interval: 1500us"),
            (
                "throttle.load.interval".to_owned(),
                "invalid duration \"1500us\": finer than a millisecond, the finest this field \
                 takes"
                    .to_owned()
            )
        );
        assert_eq!(
            throttle_error("interval: 5s", "interval: 50ms"),
            (
                "throttle.load.interval".to_owned(),
                "must be at least 100ms".to_owned()
            )
        );
        assert_eq!(
            throttle_error("pause_timeout: 10m", "pause_timeout: 2s"),
            (
                "throttle.load.pause_timeout".to_owned(),
                "must be at least throttle.load.interval (5s)".to_owned()
            )
        );
        assert_eq!(
            throttle_error("pause_timeout: 10m", "pause_timeout: 10"),
            (
                "throttle.load.pause_timeout".to_owned(),
                "expected a duration such as \"5s\" or \"500ms\", found integer 10".to_owned()
            )
        );
    }

    #[test]
    fn durations_take_the_syntax_shared_with_the_configuration() {
        let load = parse(&throttle_with("    interval: 5s\n", "    interval: 1.5s\n"))
            .unwrap()
            .throttle
            .load
            .unwrap();
        assert_eq!(load.interval_ms, 1_500);
        let day = parse(&throttle_with("pause_timeout: 10m", "pause_timeout: 1d"));
        assert_eq!(
            day.unwrap().throttle.load.unwrap().pause_timeout_ms,
            86_400_000
        );
    }

    #[test]
    fn bad_rates_are_reported() {
        assert_eq!(
            throttle_error("rows_per_sec: 200000", "rows_per_sec: 0"),
            (
                "throttle.rate.rows_per_sec".to_owned(),
                "must be at least 1".to_owned()
            )
        );
        assert_eq!(
            throttle_error("bytes_per_sec: 50000000", "bytes_per_sec: 5e7"),
            (
                "throttle.rate.bytes_per_sec".to_owned(),
                "expected a positive integer, found float 50000000.0".to_owned()
            )
        );
        assert_eq!(
            paths_of(&throttle_with("rows_per_sec: 200000", "rows: 1")),
            ["throttle.rate.rows"]
        );
    }

    #[test]
    fn bad_worker_cpu_max_is_reported() {
        for bad in ["0", "100.5", "-5"] {
            assert_eq!(
                throttle_error("worker_cpu_max: 85", &format!("worker_cpu_max: {bad}")),
                (
                    "throttle.worker_cpu_max".to_owned(),
                    "must be a percentage from 1 to 100".to_owned()
                ),
                "{bad}"
            );
        }
        let percent = parse(&throttle_with("worker_cpu_max: 85", "worker_cpu_max: 99.5"));
        assert_eq!(percent.unwrap().throttle.worker_cpu_max, Some(99.5));
    }

    #[test]
    fn runtime_schedule_parses_alone_with_spec_paths() {
        let schedule = parse_throttle_schedule(
            "- { days: mon-fri, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }\n",
        )
        .unwrap();
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule[0].to_string(), "mon-fri 08:00-20:00");
        assert_eq!(parse_throttle_schedule("[]\n").unwrap(), []);
        let errors = parse_throttle_schedule(
            "- { days: mon, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }\n\
             - { days: moon, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }\n",
        )
        .unwrap_err();
        assert_eq!(errors.paths(), ["throttle.schedule[1].days"]);
        let syntax = parse_throttle_schedule("- {unclosed\n").unwrap_err();
        assert_eq!(syntax.paths(), [""]);
    }

    #[test]
    fn runtime_only_throttle_fields_are_unknown_in_a_spec() {
        let yaml = spec_with("", "throttle:\n  paused: true\n");
        assert_eq!(
            single_error(&yaml),
            (
                "throttle.paused".to_owned(),
                "unknown field; expected one of: timezone, default_concurrency, schedule, load, \
                 rate, worker_cpu_max"
                    .to_owned()
            )
        );
    }

    #[test]
    fn every_throttle_mistake_is_reported_at_once() {
        let yaml = spec_with(
            "",
            "throttle:\n  timezone: Nowhere\n  default_concurrency: 2000\n  schedule:\n    \
             - { days: someday, from: \"25:00\", to: \"01:00\", max_concurrency: 0 }\n  \
             load: { interval: 1x, max: -1, critical: .inf }\n  worker_cpu_max: high\n",
        );
        assert_eq!(
            paths_of(&yaml),
            [
                "throttle.timezone",
                "throttle.default_concurrency",
                "throttle.schedule[0].days",
                "throttle.schedule[0].from",
                "throttle.schedule[0].max_concurrency",
                "throttle.load.interval",
                "throttle.load.max",
                "throttle.load.critical",
                "throttle.worker_cpu_max",
            ]
        );
    }

    #[test]
    fn default_concurrency_zero_is_reported() {
        let yaml = spec_with("", "throttle:\n  default_concurrency: 0\n");
        assert_eq!(
            single_error(&yaml),
            (
                "throttle.default_concurrency".to_owned(),
                "must be at least 1".to_owned()
            )
        );
    }
}
