//! The job pacer: the IO shell around the pure throttle ([`crate::throttle`]). It owns
//! the job's [`ThrottlePolicy`] (loaded from the store, so operator changes survive a
//! restart), probes the source's load, publishes the [`Gate`] the scheduler obeys, and
//! admits rows into running chunks (pause and job-wide rate limits). Every 250 ms it
//! re-evaluates the schedule, so changes apply well within the 2 s promised to operators.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferry_connectors::{Sink, Source};
use ferry_coordination::{Coordination, PolicyChange};
use ferry_model::execution::Admission;
use ferry_model::ids::JobId;
use ferry_model::spec::parse_throttle_schedule;
use ferry_model::throttle::{LoadProbe, ThrottlePolicy};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::{
    ChunkCounts, ControlError, EffectiveView, JobControl, JobStateView, JobStatusView,
    ThrottleUpdate,
};
use crate::metrics;
use crate::scheduler::{Gate, Pacing};
use crate::throttle::{Effective, Throttle, explain_at};

/// How often the pacer re-evaluates the schedule and checks for due probes.
const TICK: Duration = Duration::from_millis(250);
/// How long a chunk may wait paused when the policy has no load section.
const DEFAULT_PAUSE_TIMEOUT: Duration = Duration::from_secs(600);

struct Limiters {
    rows: Option<(u64, Arc<DefaultDirectRateLimiter>)>,
    bytes: Option<(u64, Arc<DefaultDirectRateLimiter>)>,
}

/// A token bucket for `per_second` units, holding at most a tenth of a second's worth, so
/// a fresh or changed limit never lets a large burst through.
fn limiter(per_second: u64) -> Option<(u64, Arc<DefaultDirectRateLimiter>)> {
    let rate = NonZeroU32::new(u32::try_from(per_second).unwrap_or(u32::MAX))?;
    let burst = NonZeroU32::new((rate.get() / 10).max(1)).unwrap_or(NonZeroU32::MIN);
    Some((
        per_second,
        Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        )),
    ))
}

async fn take(limiter: &DefaultDirectRateLimiter, amount: u64) {
    // The bucket holds at most its burst: take large amounts in burst-sized pieces.
    let burst = limiter_burst(limiter);
    let mut remaining = amount;
    while remaining > 0 {
        let piece = remaining.min(u64::from(burst.get()));
        let piece_nonzero = NonZeroU32::new(piece as u32).unwrap_or(NonZeroU32::MIN);
        if limiter.until_n_ready(piece_nonzero).await.is_err() {
            // Cannot happen: pieces never exceed the burst. Fall back to one at a time.
            limiter.until_ready().await;
        }
        remaining -= piece;
    }
}

fn limiter_burst(limiter: &DefaultDirectRateLimiter) -> NonZeroU32 {
    // governor does not expose the quota; probe with check_n, which reports capacity.
    match limiter.check_n(NonZeroU32::MAX) {
        Err(insufficient) => NonZeroU32::new(insufficient.0).unwrap_or(NonZeroU32::MIN),
        Ok(_) => NonZeroU32::MAX,
    }
}

struct PacerState {
    throttle: Throttle,
    effective: Effective,
    last_load: Option<f64>,
    next_probe: Option<Instant>,
    cpu: CpuSampler,
    cpu_busy: Option<f64>,
    /// A database that does not answer: new chunks wait until it does.
    outage: Option<Outage>,
}

/// A database outage the job is waiting out.
struct Outage {
    /// When an attempt first found a database unavailable.
    since: Instant,
    /// What the last check (or the failed attempt) said.
    message: String,
    /// The outage budget ran out and the job was paused for it.
    paused: bool,
}

/// First pause between checks of an unavailable database; it doubles up to
/// [`OUTAGE_CHECK_MAX`].
const OUTAGE_CHECK_FIRST: Duration = Duration::from_millis(500);

/// Longest pause between checks of an unavailable database.
const OUTAGE_CHECK_MAX: Duration = Duration::from_secs(5);

/// How long one check of a database may take before it counts as no answer.
const OUTAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Host CPU utilisation from `/proc/stat` (Linux), sampled between two readings.
#[derive(Default)]
struct CpuSampler {
    last: Option<(u64, u64)>,
    last_at: Option<Instant>,
}

impl CpuSampler {
    /// Busy percentage since the previous sample at least a second ago; `None` until two
    /// samples exist or when `/proc/stat` cannot be read.
    fn sample(&mut self) -> Option<f64> {
        if self
            .last_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = text
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let total: u64 = fields.iter().take(8).sum();
        let previous = self.last.replace((idle, total));
        self.last_at = Some(Instant::now());
        let (previous_idle, previous_total) = previous?;
        let total_delta = total.saturating_sub(previous_total);
        if total_delta == 0 {
            return None;
        }
        let idle_delta = idle.saturating_sub(previous_idle);
        Some(100.0 * (1.0 - idle_delta as f64 / total_delta as f64))
    }
}

/// Paces one job; implements [`Admission`] for its chunks and [`JobControl`] for operators.
pub struct JobPacer {
    job: JobId,
    store: Arc<dyn Coordination>,
    source: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
    /// How long an outage may last before the job pauses for it.
    outage_timeout: Duration,
    /// The job run's end: stops the checks of an unavailable database.
    cancel: CancellationToken,
    state: Mutex<PacerState>,
    gate_tx: watch::Sender<Gate>,
    limiters: RwLock<Limiters>,
    in_flight: Arc<AtomicU32>,
    rows_streamed: AtomicU64,
    started: Instant,
    done: std::sync::atomic::AtomicBool,
    /// The spec's throttle this run started from.
    spec_policy: ThrottlePolicy,
}

fn now_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

pub(crate) fn unix_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// What the store keeps for a job's throttle: the policy in force, and the spec's policy
/// it started from (to notice when the spec's throttle changes between runs).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPolicy {
    effective: ThrottlePolicy,
    spec: ThrottlePolicy,
}

fn stored_json(effective: &ThrottlePolicy, spec: &ThrottlePolicy) -> String {
    serde_json::to_string(&StoredPolicy {
        effective: effective.clone(),
        spec: spec.clone(),
    })
    .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

fn policy_json(policy: &ThrottlePolicy) -> String {
    serde_json::to_string(policy).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// Why a job's pacer could not start.
#[derive(Debug, thiserror::Error)]
pub enum PacerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ferry_coordination::CoordinationError),
    /// The stored policy does not decode.
    #[error("stored throttle policy of job {job} is unreadable: {detail}")]
    CorruptPolicy {
        /// The job.
        job: JobId,
        /// Why.
        detail: String,
    },
    /// The policy asks for a probe the source cannot run.
    #[error("throttle.load: {0}")]
    Probe(String),
}

impl JobPacer {
    /// Starts pacing `job`: its stored policy if an earlier run stored one (operator
    /// changes survive restarts), else `spec_policy`, which is stored with origin `spec`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        job: JobId,
        spec_policy: ThrottlePolicy,
        store: Arc<dyn Coordination>,
        source: Arc<dyn Source>,
        sink: Arc<dyn Sink>,
        outage_timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, PacerError> {
        // Check the probe before anything is stored, so a refused spec leaves no trace.
        if let Some(load) = &spec_policy.load
            && load.probe == LoadProbe::Builtin
            && source.probe_load().await.ok().flatten().is_none()
        {
            return Err(PacerError::Probe(format!(
                "the {} source has no built-in load probe; use `probe: {{ sql: \"SELECT ...\" }}` or remove throttle.load",
                source.kind()
            )));
        }
        let stored =
            match store.load_policy(&job).await? {
                Some(json) => Some(serde_json::from_str::<StoredPolicy>(&json).map_err(
                    |error| PacerError::CorruptPolicy {
                        job: job.clone(),
                        detail: error.to_string(),
                    },
                )?),
                None => None,
            };
        let policy = match stored {
            // Resumed with the same spec: the stored policy, operator changes included.
            Some(stored) if stored.spec == spec_policy => stored.effective,
            // The spec's throttle changed since the last run: it wins, but an operator's
            // concurrency cap and pause stay until an operator lifts them.
            Some(stored) => {
                let mut policy = spec_policy.clone();
                policy.max_concurrency_override = stored.effective.max_concurrency_override;
                policy.paused = stored.effective.paused;
                let change = PolicyChange::throttle(
                    unix_ms(),
                    "spec",
                    "",
                    format!(
                        "the spec's throttle changed: {} → {} (operator cap and pause kept)",
                        summarize(&stored.spec),
                        summarize(&spec_policy)
                    ),
                );
                store
                    .save_policy(&job, &stored_json(&policy, &spec_policy), &change)
                    .await?;
                policy
            }
            None => {
                let change = PolicyChange::throttle(
                    unix_ms(),
                    "spec",
                    "",
                    format!("initial policy from the spec: {}", summarize(&spec_policy)),
                );
                store
                    .save_policy(&job, &stored_json(&spec_policy, &spec_policy), &change)
                    .await?;
                spec_policy.clone()
            }
        };
        metrics::describe();
        let throttle = Throttle::new(policy);
        let effective = throttle.effective_at(Timestamp::now());
        let gate = Gate {
            concurrency: effective.concurrency,
            paused: effective.paused,
            hold_new: false,
            priority: throttle.policy().priority,
        };
        let (gate_tx, _) = watch::channel(gate);
        let pacer = Arc::new(Self {
            job,
            store,
            source,
            sink,
            outage_timeout,
            cancel: cancel.clone(),
            limiters: RwLock::new(Limiters {
                rows: throttle.policy().rate.rows_per_sec.and_then(limiter),
                bytes: throttle.policy().rate.bytes_per_sec.and_then(limiter),
            }),
            state: Mutex::new(PacerState {
                throttle,
                effective,
                last_load: None,
                next_probe: Some(Instant::now()),
                cpu: CpuSampler::default(),
                cpu_busy: None,
                outage: None,
            }),
            gate_tx,
            in_flight: Arc::new(AtomicU32::new(0)),
            rows_streamed: AtomicU64::new(0),
            started: Instant::now(),
            done: std::sync::atomic::AtomicBool::new(false),
            spec_policy,
        });
        tokio::spawn(pacer.clone().run(cancel));
        Ok(pacer)
    }

    /// The pacing handles for the scheduler.
    pub fn pacing(self: &Arc<Self>) -> Pacing {
        let pacer = self.clone();
        Pacing {
            gate: self.gate_tx.subscribe(),
            admission: self.clone(),
            in_flight: self.in_flight.clone(),
            on_unavailable: Arc::new(move |message| pacer.report_unavailable(message)),
        }
    }

    /// An attempt found a database unavailable: new chunks wait (the gate holds them)
    /// while the source and the target are checked with a growing pause, until both
    /// answer; past the job's outage budget the job is paused, with the reason.
    pub fn report_unavailable(self: &Arc<Self>, message: &str) {
        let first = {
            let mut state = self.lock();
            match state.outage.as_mut() {
                Some(outage) => {
                    outage.message = message.to_owned();
                    false
                }
                None => {
                    state.outage = Some(Outage {
                        since: Instant::now(),
                        message: message.to_owned(),
                        paused: false,
                    });
                    true
                }
            }
        };
        if first {
            tracing::warn!(job = %self.job, %message, "a database is unavailable: new chunks wait until it answers");
            tokio::spawn(self.clone().wait_out_outage());
        }
        self.publish();
    }

    /// What the job waits for, when a database is away ("waiting for the databases
    /// (unavailable for 42 s): …").
    pub fn waiting_for(&self) -> Option<String> {
        self.lock().outage.as_ref().map(describe_outage)
    }

    /// Checks the databases until both answer; pauses the job once the outage outlasts
    /// its budget.
    async fn wait_out_outage(self: Arc<Self>) {
        let mut pause = OUTAGE_CHECK_FIRST;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(OUTAGE_CHECK_MAX);
            let checked = self.databases_answer().await;
            let pause_now = {
                let mut state = self.lock();
                let Some(outage) = state.outage.as_mut() else {
                    return;
                };
                match &checked {
                    Ok(()) => None,
                    Err(message) => {
                        outage.message.clone_from(message);
                        let over_budget = outage.since.elapsed() >= self.outage_timeout;
                        if over_budget && !outage.paused {
                            outage.paused = true;
                            Some(describe_outage(outage))
                        } else {
                            None
                        }
                    }
                }
            };
            if checked.is_ok() {
                let outage = self.lock().outage.take();
                if let Some(outage) = outage {
                    tracing::warn!(job = %self.job, after = ?outage.since.elapsed(), "the databases answer again: chunks resume");
                }
                self.publish();
                return;
            }
            if let Some(reason) = pause_now {
                let mut policy = self.current_policy();
                policy.paused = true;
                let summary = format!(
                    "paused: false → true (outage budget of {} used up: {reason}); resume it \
                     once the database is back",
                    ferry_model::duration::format_duration(self.outage_timeout)
                );
                tracing::error!(job = %self.job, %reason, "outage budget used up: the job is paused");
                if let Err(error) = self
                    .replace_policy_from(policy, summary, "outage", "")
                    .await
                {
                    tracing::error!(job = %self.job, %error, "cannot pause the job for the outage");
                }
            }
            self.publish();
        }
    }

    /// Whether the source and the target answer (and the target takes writes).
    async fn databases_answer(&self) -> Result<(), String> {
        let check = |side: &'static str, result| match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("{side} database: {error}")),
            Err(_) => Err(format!(
                "{side} database: no answer within {}",
                ferry_model::duration::format_duration(OUTAGE_CHECK_TIMEOUT)
            )),
        };
        check(
            "source",
            tokio::time::timeout(OUTAGE_CHECK_TIMEOUT, self.source.ping()).await,
        )?;
        check(
            "target",
            tokio::time::timeout(OUTAGE_CHECK_TIMEOUT, self.sink.ping()).await,
        )
    }

    /// One attempt's share of the job-wide rate limits (rows/s, bytes/s; 0 = none): the
    /// limits split evenly among the chunks allowed in flight. Remote workers apply it
    /// to the attempt they are given.
    pub fn attempt_share(&self) -> (u64, u64) {
        let state = self.lock();
        let rate = &state.throttle.policy().rate;
        let ways = u64::from(state.effective.concurrency.max(1));
        let share = |limit: Option<u64>| limit.map_or(0, |limit| (limit / ways).max(1));
        (share(rate.rows_per_sec), share(rate.bytes_per_sec))
    }

    /// Whether the job is paused now (by an operator or by load).
    pub fn is_paused(&self) -> bool {
        self.lock().effective.paused
    }

    /// Marks the job's run as over (for `job_status`).
    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.probe_if_due().await;
            self.publish();
        }
    }

    async fn probe_if_due(&self) {
        let (probe, interval) = {
            let state = self.lock();
            let Some(load) = state.throttle.policy().load.clone() else {
                return;
            };
            match state.next_probe {
                Some(at) if at <= Instant::now() => {}
                _ => return,
            }
            (load.probe, Duration::from_millis(load.interval_ms))
        };
        let reading = tokio::time::timeout(interval.max(Duration::from_secs(1)), async {
            match &probe {
                LoadProbe::Builtin => self.source.probe_load().await,
                LoadProbe::Sql(sql) => self.source.probe_load_sql(sql).await,
            }
        })
        .await;
        let value = match reading {
            Ok(Ok(Some(value))) => Some(value),
            Ok(Ok(None)) => {
                tracing::warn!(job = %self.job, "load probe returned nothing; counted as high load");
                None
            }
            Ok(Err(error)) => {
                tracing::warn!(job = %self.job, %error, "load probe failed; counted as high load");
                None
            }
            Err(_) => {
                tracing::warn!(job = %self.job, "load probe timed out; counted as high load");
                None
            }
        };
        if value.is_none() {
            ::metrics::counter!(metrics::PROBE_FAILURES, "ferry_job" => self.job.0.clone())
                .increment(1);
        }
        let mut state = self.lock();
        state.last_load = value;
        if let Some(load) = value {
            ::metrics::gauge!(metrics::SOURCE_LOAD, "ferry_job" => self.job.0.clone()).set(load);
        }
        let now = now_ms(self.started);
        if let Some(decision) = state.throttle.on_load_reading(value, Timestamp::now(), now) {
            tracing::debug!(job = %self.job, reason = %decision.reason, "load reading");
        }
        state.next_probe = Some(Instant::now() + interval);
    }

    /// Recomputes the effective throttle and publishes the gate when it changed.
    fn publish(&self) {
        let (effective, changed, hold_new, priority) = {
            let mut state = self.lock();
            let mut effective = state.throttle.effective_at(Timestamp::now());
            if let Some(busy) = state.cpu.sample() {
                state.cpu_busy = Some(busy);
            }
            let cpu_max = state.throttle.policy().worker_cpu_max;
            let hold_new = match (cpu_max, state.cpu_busy) {
                (Some(max), Some(busy)) if busy >= max => {
                    effective.reasons.push(format!(
                        "host CPU {busy:.0}% >= worker_cpu_max {max}%: no new chunks start"
                    ));
                    true
                }
                _ => false,
            };
            let hold_new = match &state.outage {
                Some(outage) => {
                    effective.reasons.push(describe_outage(outage));
                    true
                }
                None => hold_new,
            };
            let changed = effective.concurrency != state.effective.concurrency
                || effective.paused != state.effective.paused;
            state.effective = effective.clone();
            (
                effective,
                changed,
                hold_new,
                state.throttle.policy().priority,
            )
        };
        self.publish_metrics(&effective);
        let gate = Gate {
            concurrency: effective.concurrency,
            paused: effective.paused,
            hold_new,
            priority,
        };
        self.gate_tx.send_if_modified(|current| {
            let modified = *current != gate;
            *current = gate;
            modified
        });
        if changed {
            tracing::info!(job = %self.job, concurrency = effective.concurrency, paused = effective.paused, reasons = ?effective.reasons, "throttle changed");
        }
    }

    /// The throttle's gauges for this job.
    fn publish_metrics(&self, effective: &Effective) {
        let job = self.job.0.clone();
        ::metrics::gauge!(metrics::THROTTLE_CONCURRENCY, "ferry_job" => job.clone())
            .set(f64::from(effective.concurrency));
        ::metrics::gauge!(metrics::THROTTLE_PAUSED, "ferry_job" => job.clone())
            .set(if effective.paused { 1.0 } else { 0.0 });
        ::metrics::gauge!(metrics::CHUNKS_IN_FLIGHT, "ferry_job" => job.clone())
            .set(f64::from(self.in_flight.load(Ordering::Relaxed)));
        let limiting = metrics::limiting_reason(&effective.reasons);
        for reason in metrics::THROTTLE_REASONS {
            ::metrics::gauge!(metrics::THROTTLE_LIMITED_BY, "ferry_job" => job.clone(), "reason" => reason)
                .set(if reason == limiting { 1.0 } else { 0.0 });
        }
        let rate = self.lock().throttle.policy().rate;
        ::metrics::gauge!(metrics::THROTTLE_ROWS_PER_SEC, "ferry_job" => job.clone())
            .set(rate.rows_per_sec.unwrap_or(0) as f64);
        ::metrics::gauge!(metrics::THROTTLE_BYTES_PER_SEC, "ferry_job" => job)
            .set(rate.bytes_per_sec.unwrap_or(0) as f64);
    }

    fn view(&self, effective: &Effective, with_load: bool) -> EffectiveView {
        let state = self.lock();
        let limiters = self
            .limiters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        EffectiveView {
            concurrency: effective.concurrency,
            paused: effective.paused,
            reasons: effective.reasons.clone(),
            load: if with_load { state.last_load } else { None },
            in_flight: if with_load {
                self.in_flight.load(Ordering::Relaxed)
            } else {
                0
            },
            rows_per_sec: limiters.rows.as_ref().map_or(0, |(rate, _)| *rate),
            bytes_per_sec: limiters.bytes.as_ref().map_or(0, |(rate, _)| *rate),
        }
    }

    fn check_job(&self, job: &str) -> Result<(), ControlError> {
        if job == self.job.0 {
            Ok(())
        } else {
            Err(ControlError::UnknownJob(job.to_string()))
        }
    }

    /// Validates, stores, then applies a new policy.
    async fn replace_policy(
        &self,
        policy: ThrottlePolicy,
        summary: String,
        actor: &str,
    ) -> Result<EffectiveView, ControlError> {
        self.replace_policy_from(policy, summary, "operator", actor)
            .await
    }

    /// [`JobPacer::replace_policy`], recorded as a change by `origin` (`actor`: who).
    async fn replace_policy_from(
        &self,
        policy: ThrottlePolicy,
        summary: String,
        origin: &str,
        actor: &str,
    ) -> Result<EffectiveView, ControlError> {
        policy
            .validate()
            .map_err(|problems| ControlError::InvalidThrottle(problems.to_lines()))?;
        let change = PolicyChange::throttle(unix_ms(), origin, actor, summary);
        self.store
            .save_policy(&self.job, &stored_json(&policy, &self.spec_policy), &change)
            .await
            .map_err(|error| ControlError::Internal(error.to_string()))?;
        {
            let mut limiters = self
                .limiters
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if limiters.rows.as_ref().map(|(rate, _)| *rate) != policy.rate.rows_per_sec {
                limiters.rows = policy.rate.rows_per_sec.and_then(limiter);
            }
            if limiters.bytes.as_ref().map(|(rate, _)| *rate) != policy.rate.bytes_per_sec {
                limiters.bytes = policy.rate.bytes_per_sec.and_then(limiter);
            }
        }
        self.lock().throttle.set_policy(policy);
        self.publish();
        let effective = self.lock().effective.clone();
        Ok(self.view(&effective, true))
    }

    fn current_policy(&self) -> ThrottlePolicy {
        self.lock().throttle.policy().clone()
    }
}

/// "waiting for the databases (unavailable for 42 s): source database: …".
fn describe_outage(outage: &Outage) -> String {
    format!(
        "waiting for the databases (unavailable for {} s): {}",
        outage.since.elapsed().as_secs(),
        outage.message
    )
}

/// A one-line description of a policy, for the history.
fn summarize(policy: &ThrottlePolicy) -> String {
    let mut parts = vec![format!(
        "default_concurrency {}",
        policy.default_concurrency
    )];
    if !policy.schedule.is_empty() {
        let windows: Vec<String> = policy
            .schedule
            .iter()
            .map(|w| format!("{w} → {}", w.max_concurrency))
            .collect();
        parts.push(format!(
            "schedule [{}] {}",
            windows.join(", "),
            policy.timezone
        ));
    }
    if let Some(load) = &policy.load {
        parts.push(format!("load max {} critical {}", load.max, load.critical));
    }
    if let Some(rows) = policy.rate.rows_per_sec {
        parts.push(format!("rows/s {rows}"));
    }
    if let Some(bytes) = policy.rate.bytes_per_sec {
        parts.push(format!("bytes/s {bytes}"));
    }
    if let Some(cap) = policy.max_concurrency_override {
        parts.push(format!("override {cap}"));
    }
    if policy.paused {
        parts.push("paused".to_string());
    }
    parts.join(", ")
}

fn describe_limit(value: Option<u64>) -> String {
    value.map_or("none".to_string(), |v| v.to_string())
}

#[async_trait]
impl Admission for JobPacer {
    async fn admit(&self, rows: u64, bytes: u64) -> Result<(), String> {
        self.wait_while_paused().await?;
        let (rows_limiter, bytes_limiter) = {
            let limiters = self
                .limiters
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                limiters.rows.as_ref().map(|(_, l)| l.clone()),
                limiters.bytes.as_ref().map(|(_, l)| l.clone()),
            )
        };
        if let Some(limiter) = rows_limiter {
            take(&limiter, rows).await;
        }
        if let Some(limiter) = bytes_limiter {
            take(&limiter, bytes).await;
        }
        // A pause may have come while the batch waited for the rate limit.
        self.wait_while_paused().await?;
        self.rows_streamed.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }

    fn limits_rows(&self) -> bool {
        self.limiters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rows
            .is_some()
    }

    fn limits_bytes(&self) -> bool {
        self.limiters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bytes
            .is_some()
    }
}

impl JobPacer {
    /// How long an attempt may wait paused before it gives its chunk back.
    pub fn pause_timeout(&self) -> Duration {
        self.lock()
            .throttle
            .policy()
            .load
            .as_ref()
            .map_or(DEFAULT_PAUSE_TIMEOUT, |load| {
                Duration::from_millis(load.pause_timeout_ms)
            })
    }

    async fn wait_while_paused(&self) -> Result<(), String> {
        let mut gate = self.gate_tx.subscribe();
        if !gate.borrow_and_update().paused {
            return Ok(());
        }
        let timeout = self.pause_timeout();
        ferry_model::execution::wait_out_pause(timeout, gate.wait_for(|gate| !gate.paused)).await
    }
}

#[async_trait]
impl JobControl for JobPacer {
    async fn job_status(&self, job: &str) -> Result<JobStatusView, ControlError> {
        self.check_job(job)?;
        let chunks = self
            .store
            .list_chunks(&self.job)
            .await
            .map_err(|error| ControlError::Internal(error.to_string()))?;
        let counts = ChunkCounts::of_records(&chunks);
        let paused = self.lock().effective.paused;
        let done = self.done.load(Ordering::Relaxed);
        let state = match (done, counts.failed > 0, paused) {
            (true, true, _) => JobStateView::Failed,
            (true, false, _) => JobStateView::Done,
            (false, _, true) => JobStateView::Paused,
            (false, _, false) => JobStateView::Running,
        };
        Ok(JobStatusView {
            state,
            rows_verified: counts.rows_verified,
            rows_streamed: self.rows_streamed.load(Ordering::Relaxed),
            chunks_total: counts.total,
            chunks_verified: counts.verified,
            chunks_failed: counts.failed,
            chunks_running: self.in_flight.load(Ordering::Relaxed),
            waiting: self.waiting_for(),
            eta: None,
        })
    }

    async fn pause(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError> {
        self.check_job(job)?;
        let mut policy = self.current_policy();
        policy.paused = true;
        self.replace_policy(policy, "paused: false → true".to_string(), actor)
            .await
    }

    async fn resume(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError> {
        self.check_job(job)?;
        let mut policy = self.current_policy();
        policy.paused = false;
        self.replace_policy(policy, "paused: true → false".to_string(), actor)
            .await
    }

    async fn update_throttle(
        &self,
        job: &str,
        update: ThrottleUpdate,
        actor: &str,
    ) -> Result<(String, EffectiveView), ControlError> {
        self.check_job(job)?;
        let old = self.current_policy();
        let mut policy = old.clone();
        let mut changes = Vec::new();
        if let Some(cap) = update.max_concurrency {
            policy.max_concurrency_override = Some(cap);
        }
        if update.clear_override {
            policy.max_concurrency_override = None;
        }
        if policy.max_concurrency_override != old.max_concurrency_override {
            changes.push(format!(
                "max_concurrency override: {} → {}",
                describe_limit(old.max_concurrency_override.map(u64::from)),
                describe_limit(policy.max_concurrency_override.map(u64::from))
            ));
        }
        if let Some(rows) = update.rows_per_sec {
            policy.rate.rows_per_sec = (rows > 0).then_some(rows);
            changes.push(format!(
                "rows_per_sec: {} → {}",
                describe_limit(old.rate.rows_per_sec),
                describe_limit(policy.rate.rows_per_sec)
            ));
        }
        if let Some(bytes) = update.bytes_per_sec {
            policy.rate.bytes_per_sec = (bytes > 0).then_some(bytes);
            changes.push(format!(
                "bytes_per_sec: {} → {}",
                describe_limit(old.rate.bytes_per_sec),
                describe_limit(policy.rate.bytes_per_sec)
            ));
        }
        if update.load_max.is_some() || update.load_critical.is_some() {
            let Some(load) = policy.load.as_mut() else {
                return Err(ControlError::InvalidThrottle(vec![
                    "throttle.load: the job has no load probe; add throttle.load to the spec to use --load-max/--load-critical".to_string(),
                ]));
            };
            let (old_max, old_critical) = (load.max, load.critical);
            if let Some(max) = update.load_max {
                load.max = max;
            }
            if let Some(critical) = update.load_critical {
                load.critical = critical;
            }
            changes.push(format!(
                "load max {old_max} → {}, critical {old_critical} → {}",
                load.max, load.critical
            ));
        }
        if let Some(yaml) = update.schedule_yaml {
            let windows = parse_throttle_schedule(&yaml)
                .map_err(|problems| ControlError::InvalidThrottle(problems.to_lines()))?;
            let describe = |windows: &[ferry_model::throttle::ScheduleWindow]| {
                windows
                    .iter()
                    .map(|w| format!("{w} → {}", w.max_concurrency))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            changes.push(format!(
                "schedule: [{}] → [{}]",
                describe(&old.schedule),
                describe(&windows)
            ));
            policy.schedule = windows;
        }
        if let Some(priority) = update.priority {
            policy.priority = priority;
            changes.push(format!("priority: {} → {priority}", old.priority));
        }
        if changes.is_empty() {
            return Err(ControlError::InvalidThrottle(vec![
                "nothing to change".to_string(),
            ]));
        }
        let view = self
            .replace_policy(policy.clone(), changes.join("; "), actor)
            .await?;
        Ok((policy_json(&policy), view))
    }

    async fn throttle(
        &self,
        job: &str,
        at: Option<Timestamp>,
    ) -> Result<(String, EffectiveView), ControlError> {
        self.check_job(job)?;
        let policy = self.current_policy();
        let view = match at {
            Some(instant) => self.view(&explain_at(&policy, instant), false),
            None => {
                let effective = self.lock().effective.clone();
                self.view(&effective, true)
            }
        };
        Ok((policy_json(&policy), view))
    }

    async fn history(&self, job: &str) -> Result<Vec<PolicyChange>, ControlError> {
        self.check_job(job)?;
        self.store
            .policy_history(&self.job)
            .await
            .map_err(|error| ControlError::Internal(error.to_string()))
    }
}
