//! Throttle decisions: how many chunks a job may run now, and whether it is paused.
//!
//! Everything here is pure: the caller supplies the wall clock (a [`Timestamp`], for the
//! schedule) and a monotonic clock in milliseconds (for pause durations), and runs the
//! load probe itself. The effective concurrency is the smallest of
//! - the schedule: the first window covering now, or `default_concurrency`;
//! - the load limit, once a probe has answered ([`LoadController`]);
//! - the operator's `max_concurrency_override`.
//!
//! The job is paused (no new chunks; running chunks stop reading) when the operator paused
//! it or the load is critical. Each cap and pause comes with a sentence in
//! [`Effective::reasons`], for `ferryctl throttle --show`.
//!
//! Load control follows gh-ost and pt-online-schema-change: at `load >= max` the load limit
//! halves, at `load >= critical` the job also pauses, and below `max` the limit grows back
//! by one per reading up to the ceiling (the schedule's and the operator's cap), and a
//! pause ends. A failed probe counts as `load == max`: when the database cannot answer, we
//! back off rather than push on.

use ferry_model::throttle::{LoadPolicy, ScheduleLimit, ThrottlePolicy};
use jiff::Timestamp;

/// Tracks the load-based concurrency limit of one job across probe readings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadController {
    load_limit: u32,
    paused_since_ms_opt: Option<u64>,
    /// The load the last reading counted as (a failed probe counts as `max`).
    last_counted_load_opt: Option<f64>,
}

/// What one probe reading decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadDecision {
    /// Chunks in flight at most because of load, 1 or more.
    pub load_limit: u32,
    /// Whether the job is paused by critical load.
    pub paused: bool,
    /// Whether the pause has lasted `pause_timeout_ms` or longer: running chunks should be
    /// aborted (their claims released) rather than held open.
    pub pause_timed_out: bool,
    /// The decision in words, such as `load 31 >= max 25: halved to 4`.
    pub reason: String,
}

impl LoadController {
    /// Returns a controller whose limit starts at `ceiling` (at least 1), not paused.
    pub fn new(ceiling: u32) -> Self {
        LoadController {
            load_limit: ceiling.max(1),
            paused_since_ms_opt: None,
            last_counted_load_opt: None,
        }
    }

    /// Returns the current load limit.
    pub fn load_limit(&self) -> u32 {
        self.load_limit
    }

    /// Returns whether critical load paused the job.
    pub fn is_paused(&self) -> bool {
        self.paused_since_ms_opt.is_some()
    }

    /// Returns the load the last reading counted as, a failed probe counting as `max`;
    /// `None` before the first reading.
    pub fn last_counted_load(&self) -> Option<f64> {
        self.last_counted_load_opt
    }

    /// Returns how long the job has been paused by load at `now_ms` (monotonic
    /// milliseconds), or `None` when it is not paused.
    pub fn paused_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.paused_since_ms_opt
            .map(|paused_since_ms| now_ms.saturating_sub(paused_since_ms))
    }

    /// Returns whether the job has been paused by load for `policy.pause_timeout_ms` or
    /// longer at `now_ms`.
    pub fn pause_timed_out(&self, policy: &LoadPolicy, now_ms: u64) -> bool {
        self.paused_for_ms(now_ms)
            .is_some_and(|paused_for_ms| paused_for_ms >= policy.pause_timeout_ms)
    }

    /// Applies a probe reading taken at `now_ms` (monotonic milliseconds). `None`, or a
    /// value that is not a finite number, means the probe failed and counts as
    /// `load == policy.max`, which the reason says. `ceiling` is the most the load limit
    /// may grow to (the schedule's and the operator's caps); a lower ceiling than last
    /// time lowers the limit first, so halving acts on what actually runs.
    pub fn on_reading(
        &mut self,
        reading: Option<f64>,
        policy: &LoadPolicy,
        ceiling: u32,
        now_ms: u64,
    ) -> LoadDecision {
        let ceiling = ceiling.max(1);
        let limit_before = self.load_limit.min(ceiling);
        let (load, load_text) = match reading {
            Some(value) if value.is_finite() => (value, format!("load {value}")),
            Some(value) => (
                policy.max,
                format!(
                    "load probe returned {value}, counted as load {}",
                    policy.max
                ),
            ),
            None => (
                policy.max,
                format!("load probe failed, counted as load {}", policy.max),
            ),
        };
        self.last_counted_load_opt = Some(load);

        let reason = if load >= policy.critical {
            self.load_limit = halve(limit_before);
            self.paused_since_ms_opt.get_or_insert(now_ms);
            format!(
                "{load_text} >= critical {}: paused, halved to {}",
                policy.critical, self.load_limit
            )
        } else if load >= policy.max {
            self.load_limit = halve(limit_before);
            let still_paused = if self.is_paused() {
                format!("; still paused until load < max {}", policy.max)
            } else {
                String::new()
            };
            format!(
                "{load_text} >= max {}: halved to {}{still_paused}",
                policy.max, self.load_limit
            )
        } else {
            let was_paused = self.paused_since_ms_opt.take().is_some();
            self.load_limit = limit_before.saturating_add(1).min(ceiling);
            let change = if self.load_limit > limit_before {
                format!("raised to {}", self.load_limit)
            } else {
                format!("at ceiling {ceiling}")
            };
            let resumed = if was_paused { ", resumed" } else { "" };
            format!("{load_text} < max {}: {change}{resumed}", policy.max)
        };
        debug_assert!(self.load_limit >= 1 && self.load_limit <= ceiling);
        LoadDecision {
            load_limit: self.load_limit,
            paused: self.is_paused(),
            pause_timed_out: self.pause_timed_out(policy, now_ms),
            reason,
        }
    }
}

fn halve(limit: u32) -> u32 {
    (limit / 2).max(1)
}

/// The throttle's verdict: how many chunks may be in flight and whether new work waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Chunks in flight at most: the smallest of every cap (at least 1 for a validated
    /// policy).
    pub concurrency: u32,
    /// Whether the job is paused, by the operator or by critical load: no new chunks start
    /// and running chunks stop reading.
    pub paused: bool,
    /// One sentence per cap, then one per pause, such as
    /// `schedule window 1 (mon-fri 08:00-20:00 America/New_York) allows 2 at ...`.
    pub reasons: Vec<String>,
}

/// One limit on concurrency and why it applies.
struct Cap {
    limit: u32,
    reason: String,
}

/// Returns the effective concurrency and pause state from the schedule's limit, the load
/// limit (`None` when load is not controlled or not yet probed) and whether load paused
/// the job, with the policy's operator override and pause.
pub fn effective(
    policy: &ThrottlePolicy,
    schedule: &ScheduleLimit,
    load_limit: Option<u32>,
    load_paused: bool,
) -> Effective {
    let load_cap_opt = load_limit.map(|limit| Cap {
        limit,
        reason: format!("load limit {limit}"),
    });
    combine(
        policy,
        schedule_cap(policy, schedule),
        load_cap_opt,
        load_paused,
    )
}

/// Returns what the policy alone allows at `instant`, without load information, for
/// `ferryctl throttle --show --at TIME`.
pub fn explain_at(policy: &ThrottlePolicy, instant: Timestamp) -> Effective {
    combine(policy, schedule_cap_at(policy, instant), None, false)
}

fn combine(
    policy: &ThrottlePolicy,
    schedule_cap: Cap,
    load_cap_opt: Option<Cap>,
    load_paused: bool,
) -> Effective {
    let override_cap_opt = policy.max_concurrency_override.map(|limit| Cap {
        limit,
        reason: format!("operator override {limit}"),
    });
    let caps: Vec<Cap> = std::iter::once(schedule_cap)
        .chain(load_cap_opt)
        .chain(override_cap_opt)
        .collect();
    let concurrency = caps.iter().map(|cap| cap.limit).fold(u32::MAX, u32::min);
    let mut reasons: Vec<String> = caps.into_iter().map(|cap| cap.reason).collect();
    if policy.paused {
        reasons.push("paused by operator".to_owned());
    }
    if load_paused {
        reasons.push("paused by load".to_owned());
    }
    Effective {
        concurrency,
        paused: policy.paused || load_paused,
        reasons,
    }
}

/// The schedule's cap at `instant`. A policy whose time zone cannot be read (a validated
/// one always can) gets the lowest limit of its schedule and default, the safe side.
fn schedule_cap_at(policy: &ThrottlePolicy, instant: Timestamp) -> Cap {
    match policy.window_at(instant) {
        Ok(schedule) => schedule_cap(policy, &schedule),
        Err(error) => {
            let lowest_limit = policy
                .schedule
                .iter()
                .map(|window| window.max_concurrency)
                .fold(policy.default_concurrency, u32::min);
            Cap {
                limit: lowest_limit,
                reason: format!("{error}: the lowest schedule limit {lowest_limit} applies"),
            }
        }
    }
}

fn schedule_cap(policy: &ThrottlePolicy, schedule: &ScheduleLimit) -> Cap {
    let limit = schedule.max_concurrency;
    let reason = match schedule.window {
        // Windows are numbered from 1 in words; `throttle.schedule[0]` is window 1.
        Some(index) => match policy.schedule.get(index) {
            Some(window) => format!(
                "schedule window {} ({window} {}) allows {limit} at {}",
                index + 1,
                policy.timezone,
                schedule.local_time
            ),
            None => format!(
                "schedule window {} allows {limit} at {}",
                index + 1,
                schedule.local_time
            ),
        },
        None if policy.schedule.is_empty() => format!("default concurrency {limit}"),
        None => format!(
            "no schedule window matches {}: default concurrency {limit}",
            schedule.local_time
        ),
    };
    Cap { limit, reason }
}

/// A job's throttle state: its policy and, when load is controlled, its load controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    policy: ThrottlePolicy,
    load_controller_opt: Option<LoadController>,
    last_load_decision_opt: Option<LoadDecision>,
}

impl Throttle {
    /// Returns the throttle of a job starting with `policy`; no load reading yet.
    pub fn new(policy: ThrottlePolicy) -> Self {
        let load_controller_opt = policy.load.as_ref().map(|_| new_load_controller());
        Throttle {
            policy,
            load_controller_opt,
            last_load_decision_opt: None,
        }
    }

    /// Returns the current policy.
    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Replaces the policy (an operator's change). Load state carries over while load stays
    /// controlled; the next reading applies the new thresholds and ceiling.
    pub fn set_policy(&mut self, policy: ThrottlePolicy) {
        match (&policy.load, &self.load_controller_opt) {
            (None, _) => {
                self.load_controller_opt = None;
                self.last_load_decision_opt = None;
            }
            (Some(_), None) => self.load_controller_opt = Some(new_load_controller()),
            (Some(_), Some(_)) => {}
        }
        self.policy = policy;
    }

    /// Applies a probe reading (`None`: the probe failed) taken at wall-clock `instant` and
    /// monotonic `now_ms`. The load limit's ceiling is the schedule's limit at `instant`,
    /// lowered by the operator's override. Returns `None` when the policy has no `load`.
    pub fn on_load_reading(
        &mut self,
        reading: Option<f64>,
        instant: Timestamp,
        now_ms: u64,
    ) -> Option<LoadDecision> {
        let load_policy = self.policy.load.as_ref()?;
        let controller = self
            .load_controller_opt
            .get_or_insert_with(new_load_controller);
        let schedule_limit = schedule_cap_at(&self.policy, instant).limit;
        let ceiling = self
            .policy
            .max_concurrency_override
            .map_or(schedule_limit, |cap| cap.min(schedule_limit));
        let decision = controller.on_reading(reading, load_policy, ceiling, now_ms);
        self.last_load_decision_opt = Some(decision.clone());
        Some(decision)
    }

    /// Returns the effective concurrency and pause state at `instant`, with the last load
    /// decision (if any) explained in its own words.
    pub fn effective_at(&self, instant: Timestamp) -> Effective {
        let load_cap_opt = self.last_load_decision_opt.as_ref().map(|decision| Cap {
            limit: decision.load_limit,
            reason: decision.reason.clone(),
        });
        let load_paused = self
            .last_load_decision_opt
            .as_ref()
            .is_some_and(|decision| decision.paused);
        combine(
            &self.policy,
            schedule_cap_at(&self.policy, instant),
            load_cap_opt,
            load_paused,
        )
    }

    /// Returns the load controller, when the policy controls load.
    pub fn load_controller(&self) -> Option<&LoadController> {
        self.load_controller_opt.as_ref()
    }

    /// Returns the decision of the last load reading, if load is controlled and probed.
    pub fn last_load_decision(&self) -> Option<&LoadDecision> {
        self.last_load_decision_opt.as_ref()
    }

    /// Returns how long critical load has paused the job at `now_ms`, if it is paused.
    pub fn load_paused_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.load_controller_opt
            .as_ref()
            .and_then(|controller| controller.paused_for_ms(now_ms))
    }

    /// Returns whether critical load has paused the job for `pause_timeout` or longer at
    /// `now_ms`, so that running chunks should be aborted.
    pub fn load_pause_timed_out(&self, now_ms: u64) -> bool {
        match (&self.policy.load, &self.load_controller_opt) {
            (Some(load_policy), Some(controller)) => {
                controller.pause_timed_out(load_policy, now_ms)
            }
            _ => false,
        }
    }
}

/// Load does not limit anything before its first reading: the controller starts at the
/// largest concurrency, and every reading first lowers it to the actual ceiling.
fn new_load_controller() -> LoadController {
    LoadController::new(ferry_model::spec::MAX_CONCURRENCY)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use ferry_model::throttle::{
        DEFAULT_PAUSE_TIMEOUT_MS, DaySet, LoadProbe, ScheduleWindow, parse_clock_minute,
    };

    use super::*;

    fn load_policy() -> LoadPolicy {
        LoadPolicy {
            probe: LoadProbe::Builtin,
            interval_ms: 5_000,
            max: 25.0,
            critical: 60.0,
            pause_timeout_ms: DEFAULT_PAUSE_TIMEOUT_MS,
        }
    }

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
            days: days.parse::<DaySet>().unwrap(),
            from_minute: parse_clock_minute(from).unwrap(),
            to_minute: parse_clock_minute(to).unwrap(),
            max_concurrency,
        }
    }

    fn new_york_policy() -> ThrottlePolicy {
        ThrottlePolicy {
            timezone: "America/New_York".to_owned(),
            default_concurrency: 16,
            schedule: vec![window("mon-fri", "08:00", "20:00", 2)],
            ..ThrottlePolicy::default()
        }
    }

    /// Feeds readings one interval apart and returns the load limit after each.
    fn limits_after(controller: &mut LoadController, ceiling: u32, readings: &[f64]) -> Vec<u32> {
        readings
            .iter()
            .enumerate()
            .map(|(index, reading)| {
                let now_ms = 5_000 * u64::try_from(index).unwrap();
                controller
                    .on_reading(Some(*reading), &load_policy(), ceiling, now_ms)
                    .load_limit
            })
            .collect()
    }

    #[test]
    fn high_load_halves_the_limit_down_to_one() {
        let mut controller = LoadController::new(16);
        assert_eq!(controller.load_limit(), 16);
        assert_eq!(
            limits_after(&mut controller, 16, &[30.0, 25.0, 40.0, 31.0, 59.9, 26.0]),
            [8, 4, 2, 1, 1, 1]
        );
        assert!(!controller.is_paused());
    }

    #[test]
    fn low_load_grows_the_limit_by_one_per_reading_up_to_the_ceiling() {
        let mut controller = LoadController::new(6);
        assert_eq!(
            limits_after(
                &mut controller,
                6,
                &[30.0, 30.0, 10.0, 10.0, 24.9, 0.0, 10.0]
            ),
            [3, 1, 2, 3, 4, 5, 6]
        );
        let decision = controller.on_reading(Some(10.0), &load_policy(), 6, 40_000);
        assert_eq!(decision.load_limit, 6);
        assert_eq!(decision.reason, "load 10 < max 25: at ceiling 6");
    }

    #[test]
    fn a_lower_ceiling_lowers_the_limit_before_halving() {
        let mut controller = LoadController::new(32);
        let decision = controller.on_reading(Some(31.0), &load_policy(), 8, 0);
        assert_eq!(decision.load_limit, 4);
        assert_eq!(decision.reason, "load 31 >= max 25: halved to 4");
        // A higher ceiling later is grown towards one step at a time.
        assert_eq!(limits_after(&mut controller, 32, &[1.0, 1.0]), [5, 6]);
    }

    #[test]
    fn critical_load_pauses_until_a_reading_below_max() {
        let policy = load_policy();
        let mut controller = LoadController::new(8);
        let critical = controller.on_reading(Some(60.0), &policy, 8, 1_000);
        assert_eq!(
            critical,
            LoadDecision {
                load_limit: 4,
                paused: true,
                pause_timed_out: false,
                reason: "load 60 >= critical 60: paused, halved to 4".to_owned(),
            }
        );
        // Between max and critical the pause holds.
        let still_high = controller.on_reading(Some(40.0), &policy, 8, 6_000);
        assert!(still_high.paused);
        assert_eq!(
            still_high.reason,
            "load 40 >= max 25: halved to 2; still paused until load < max 25"
        );
        assert_eq!(controller.paused_for_ms(11_000), Some(10_000));
        let recovered = controller.on_reading(Some(24.0), &policy, 8, 11_000);
        assert!(!recovered.paused);
        assert_eq!(recovered.load_limit, 3);
        assert_eq!(recovered.reason, "load 24 < max 25: raised to 3, resumed");
        assert_eq!(controller.paused_for_ms(12_000), None);
    }

    #[test]
    fn pause_times_out_after_pause_timeout() {
        let policy = LoadPolicy {
            pause_timeout_ms: 20_000,
            ..load_policy()
        };
        let mut controller = LoadController::new(8);
        assert!(
            !controller
                .on_reading(Some(99.0), &policy, 8, 100_000)
                .pause_timed_out
        );
        // The pause started at the first critical reading, not the latest.
        assert!(
            !controller
                .on_reading(Some(99.0), &policy, 8, 115_000)
                .pause_timed_out
        );
        assert!(!controller.pause_timed_out(&policy, 119_999));
        assert!(controller.pause_timed_out(&policy, 120_000));
        assert!(
            controller
                .on_reading(Some(99.0), &policy, 8, 120_000)
                .pause_timed_out
        );
    }

    #[test]
    fn failed_probe_counts_as_max_load() {
        let mut controller = LoadController::new(8);
        let failed = controller.on_reading(None, &load_policy(), 8, 0);
        assert_eq!(failed.load_limit, 4);
        assert!(!failed.paused);
        assert_eq!(
            failed.reason,
            "load probe failed, counted as load 25 >= max 25: halved to 4"
        );
        assert_eq!(controller.last_counted_load(), Some(25.0));
        let not_a_number = controller.on_reading(Some(f64::NAN), &load_policy(), 8, 5_000);
        assert_eq!(not_a_number.load_limit, 2);
        assert_eq!(
            not_a_number.reason,
            "load probe returned NaN, counted as load 25 >= max 25: halved to 2"
        );
    }

    #[test]
    fn effective_concurrency_is_the_smallest_cap() {
        let schedule = ScheduleLimit {
            max_concurrency: 8,
            window: None,
            local_time: "2026-03-09 21:00 UTC (Mon)".to_owned(),
        };
        let with_override = |cap: Option<u32>| ThrottlePolicy {
            default_concurrency: 8,
            max_concurrency_override: cap,
            ..ThrottlePolicy::default()
        };
        let concurrency = |cap: Option<u32>, load_limit: Option<u32>| {
            effective(&with_override(cap), &schedule, load_limit, false).concurrency
        };
        assert_eq!(concurrency(None, None), 8);
        assert_eq!(concurrency(None, Some(4)), 4);
        assert_eq!(concurrency(Some(2), Some(4)), 2);
        assert_eq!(concurrency(Some(6), Some(4)), 4);
        // An override above the schedule is one more cap, not a raise.
        assert_eq!(concurrency(Some(64), None), 8);
        assert_eq!(
            effective(&with_override(Some(3)), &schedule, Some(4), false).reasons,
            [
                "default concurrency 8",
                "load limit 4",
                "operator override 3"
            ]
        );
    }

    #[test]
    fn operator_pause_and_load_pause_both_pause() {
        let schedule = ScheduleLimit {
            max_concurrency: 4,
            window: None,
            local_time: "2026-03-09 21:00 UTC (Mon)".to_owned(),
        };
        let paused_policy = ThrottlePolicy {
            paused: true,
            ..ThrottlePolicy::default()
        };
        let by_operator = effective(&paused_policy, &schedule, None, false);
        assert!(by_operator.paused);
        assert_eq!(by_operator.concurrency, 4);
        assert_eq!(
            by_operator.reasons,
            ["default concurrency 4", "paused by operator"]
        );
        let by_load = effective(&ThrottlePolicy::default(), &schedule, Some(1), true);
        assert!(by_load.paused);
        assert_eq!(by_load.reasons.last().unwrap(), "paused by load");
        assert!(!effective(&ThrottlePolicy::default(), &schedule, Some(1), false).paused);
    }

    #[test]
    fn explain_at_names_the_window_or_the_default() {
        let policy = new_york_policy();
        let in_window = explain_at(&policy, instant("2026-03-09T09:00[America/New_York]"));
        assert_eq!(
            in_window,
            Effective {
                concurrency: 2,
                paused: false,
                reasons: vec![
                    "schedule window 1 (mon-fri 08:00-20:00 America/New_York) allows 2 at \
                     2026-03-09 09:00 EDT (Mon)"
                        .to_owned()
                ],
            }
        );
        let evening = explain_at(&policy, instant("2026-03-09T20:00[America/New_York]"));
        assert_eq!(evening.concurrency, 16);
        assert_eq!(
            evening.reasons,
            ["no schedule window matches 2026-03-09 20:00 EDT (Mon): default concurrency 16"]
        );
    }

    #[test]
    fn unknown_time_zone_falls_back_to_the_lowest_schedule_limit() {
        let policy = ThrottlePolicy {
            timezone: "Mars/Base".to_owned(),
            ..new_york_policy()
        };
        let explained = explain_at(&policy, instant("2026-03-09T21:00Z"));
        assert_eq!(explained.concurrency, 2);
        assert!(
            explained.reasons[0].starts_with("unknown time zone \"Mars/Base\""),
            "{:?}",
            explained.reasons
        );
    }

    #[test]
    fn throttle_halves_from_the_schedule_window_and_explains_the_load() {
        let policy = ThrottlePolicy {
            load: Some(load_policy()),
            max_concurrency_override: Some(12),
            ..new_york_policy()
        };
        let mut throttle = Throttle::new(policy);
        let evening = instant("2026-03-09T21:00[America/New_York]");
        // Before any reading, load caps nothing.
        assert_eq!(throttle.effective_at(evening).concurrency, 12);
        // The ceiling is min(default 16, override 12): halving starts there.
        let decision = throttle.on_load_reading(Some(31.0), evening, 0).unwrap();
        assert_eq!(decision.reason, "load 31 >= max 25: halved to 6");
        assert_eq!(throttle.last_load_decision(), Some(&decision));
        assert_eq!(
            throttle.load_controller().unwrap().last_counted_load(),
            Some(31.0)
        );
        assert_eq!(
            throttle.effective_at(evening),
            Effective {
                concurrency: 6,
                paused: false,
                reasons: vec![
                    "no schedule window matches 2026-03-09 21:00 EDT (Mon): default \
                     concurrency 16"
                        .to_owned(),
                    "load 31 >= max 25: halved to 6".to_owned(),
                    "operator override 12".to_owned(),
                ],
            }
        );
        // In the morning window (2), the next high reading halves from 2.
        let morning = instant("2026-03-10T09:00[America/New_York]");
        let decision = throttle
            .on_load_reading(Some(70.0), morning, 5_000)
            .unwrap();
        assert_eq!(
            decision.reason,
            "load 70 >= critical 60: paused, halved to 1"
        );
        let paused = throttle.effective_at(morning);
        assert_eq!((paused.concurrency, paused.paused), (1, true));
        assert_eq!(paused.reasons.last().unwrap(), "paused by load");
        assert_eq!(throttle.load_paused_for_ms(65_000), Some(60_000));
        assert!(!throttle.load_pause_timed_out(65_000));
        assert!(throttle.load_pause_timed_out(605_000));
    }

    #[test]
    fn throttle_without_load_ignores_readings_and_follows_policy_changes() {
        let mut throttle = Throttle::new(new_york_policy());
        let morning = instant("2026-03-10T09:00[America/New_York]");
        assert_eq!(throttle.on_load_reading(Some(99.0), morning, 0), None);
        assert_eq!(throttle.effective_at(morning).concurrency, 2);

        let mut changed = throttle.policy().clone();
        changed.paused = true;
        changed.max_concurrency_override = Some(1);
        changed.load = Some(load_policy());
        throttle.set_policy(changed);
        let decision = throttle.on_load_reading(Some(1.0), morning, 0).unwrap();
        assert_eq!(decision.reason, "load 1 < max 25: at ceiling 1");
        let effective_now = throttle.effective_at(morning);
        assert_eq!((effective_now.concurrency, effective_now.paused), (1, true));
        assert!(
            effective_now
                .reasons
                .contains(&"paused by operator".to_owned())
        );

        let mut without_load = throttle.policy().clone();
        without_load.load = None;
        throttle.set_policy(without_load);
        assert_eq!(throttle.effective_at(morning).reasons.len(), 3);
        assert!(!throttle.load_pause_timed_out(u64::MAX));
    }
}
