//! Runs chunk attempts on remote workers: the leader's side of the assignment protocol.
//!
//! An attempt is an assignment key the worker watches; its end is the worker's result
//! key, or the worker being gone: its lease vanished and stayed gone for the grace
//! period. A worker never seen since the attempt started (a new leader adopting chunks
//! in flight) gets its full lease TTL on top. The scheduler then records the end, and the
//! etcd store withdraws the assignment in that same write (`EtcdStore`'s `complete`),
//! so a late result of the attempt is refused from then on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use ferry_coordination::ClusterRef;
use ferry_coordination::cluster::{AttemptResult, ChunkProgress, Mirror, WorkerInfo};
use ferry_model::backoff::Backoff;
use ferry_model::execution::{ChunkExecutor, ChunkResult, ChunkTask};
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::scheduler::sleep_until_opt;

/// Routes changes of the results and progress mirrors to the one attempt waiting on each
/// key: a change wakes that attempt's executor, not every executor in flight (with
/// hundreds in flight, waking all of them on every result cost a core).
pub struct AttemptRouter {
    results: Mirror<AttemptResult>,
    progress: Mirror<ChunkProgress>,
    waiters: Mutex<HashMap<Vec<u8>, Arc<Notify>>>,
}

impl AttemptRouter {
    /// Routes the changes of `results` and `progress` until `cancel`.
    pub fn start(
        results: Mirror<AttemptResult>,
        progress: Mirror<ChunkProgress>,
        cancel: &CancellationToken,
    ) -> Arc<Self> {
        let router = Arc::new(Self {
            results: results.clone(),
            progress: progress.clone(),
            waiters: Mutex::new(HashMap::new()),
        });
        let routing = router.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let (mut results, mut progress) = (results, progress);
            // The last value seen of each key an attempt waits on. Not the mirrors'
            // previous snapshots: holding one made the mirror copy its whole map on every
            // change (copy on write), a copy of every unconsumed result per result.
            let mut seen_results = HashMap::new();
            let mut seen_progress = HashMap::new();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    changed = results.changed() => {
                        if changed.is_err() { return; }
                        routing.wake_changed(&mut seen_results, &results.borrow_and_update());
                    }
                    changed = progress.changed() => {
                        if changed.is_err() { return; }
                        routing.wake_changed(&mut seen_progress, &progress.borrow_and_update());
                    }
                }
            }
        });
        router
    }

    /// Wakes the waiter of every key that is new or changed in `now` since `seen` (the
    /// values last seen of the keys waited on, kept up to date here). A key first seen
    /// after its waiter registered wakes it once even if unchanged: the attempt then
    /// reads the mirror and finds nothing new.
    fn wake_changed<T: PartialEq + Clone>(
        &self,
        seen: &mut HashMap<Vec<u8>, T>,
        now: &BTreeMap<Vec<u8>, T>,
    ) {
        let waiters = self.lock();
        seen.retain(|key, _| now.contains_key(key) && waiters.contains_key(key));
        for (key, value) in now {
            let Some(waiter) = waiters.get(key) else {
                continue;
            };
            if seen.get(key) != Some(value) {
                seen.insert(key.clone(), value.clone());
                // A permit is kept when the attempt is not waiting yet: no change is lost.
                waiter.notify_one();
            }
        }
    }

    /// One wake-up for changes of any of `keys` (an attempt's result and progress).
    fn register(&self, keys: &[&Vec<u8>]) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let mut waiters = self.lock();
        for key in keys {
            waiters.insert((*key).clone(), notify.clone());
        }
        notify
    }

    fn unregister(&self, keys: &[&Vec<u8>]) {
        let mut waiters = self.lock();
        for key in keys {
            waiters.remove(*key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Attempts whose assignment was written with their start
/// ([`RemoteExecutor::start_attempt`]), with when: their executor only waits.
pub type StartedAttempts = Mutex<HashMap<(JobId, ChunkId, Attempt), Instant>>;

/// The leader's executor: assigns attempts to workers and waits for their results.
pub struct RemoteExecutor {
    /// The leader's fenced store.
    pub store: ClusterRef,
    /// Live workers.
    pub workers: Mirror<WorkerInfo>,
    /// Results and progress, routed to the attempt waiting for each.
    pub router: Arc<AttemptRouter>,
    /// The workers' lease TTL.
    pub worker_ttl: Duration,
    /// Wait after a worker's lease vanished before its chunks are reassigned.
    pub grace: Duration,
    /// Fired when an operator cancels the job: running attempts are then withdrawn
    /// (otherwise a cancelled attempt is the leader stepping down, and the assignment
    /// stays for the next leader to adopt).
    pub job_cancelled: CancellationToken,
    /// The job's pacer: each attempt carries its share of the rate limits.
    pub pacer: Option<std::sync::Arc<crate::pacer::JobPacer>>,
    /// Attempts started with their assignment (empty at first).
    pub started: StartedAttempts,
}

impl RemoteExecutor {
    /// Starts a fresh attempt of `chunk` on `worker` and writes its assignment, in one
    /// write ([`ferry_coordination::ClusterProtocol::start_assigned_attempt`]); the
    /// attempt's [`ChunkExecutor::execute`] then finds it assigned. Called by the
    /// scheduler through [`super::handoff::HandoffStore`].
    pub async fn start_attempt(
        &self,
        job: &JobId,
        chunk: ChunkId,
        worker: &WorkerId,
        source_snapshot: Option<&str>,
    ) -> ferry_coordination::Result<Attempt> {
        let assigned_at = Instant::now();
        let attempt = self
            .store
            .start_assigned_attempt(worker, job, chunk, self.share(), source_snapshot)
            .await?;
        self.started_attempts()
            .insert((job.clone(), chunk, attempt), assigned_at);
        Ok(attempt)
    }

    /// This attempt's share of the job's rate limits.
    fn share(&self) -> (u64, u64) {
        self.pacer
            .as_ref()
            .map_or((0, 0), |pacer| pacer.attempt_share())
    }

    fn started_attempts(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(JobId, ChunkId, Attempt), Instant>> {
        self.started.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retries a store call while it fails with a retryable error (etcd restarting),
    /// until `cancel`.
    async fn retrying<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut call: F,
    ) -> Option<Result<T, String>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ferry_coordination::Result<T>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            match call().await {
                Ok(value) => return Some(Ok(value)),
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%error, "etcd unavailable; retrying");
                }
                Err(error) => return Some(Err(error.to_string())),
            }
            if !backoff.wait(cancel).await {
                return None;
            }
        }
    }
}

#[async_trait]
impl ChunkExecutor for RemoteExecutor {
    async fn execute(&self, task: ChunkTask) -> ChunkResult {
        let cancel = task.cancel.clone();
        let (job, chunk, attempt, worker) = (
            task.job.clone(),
            task.chunk,
            task.attempt,
            task.worker.clone(),
        );
        // Written with the attempt's start; otherwise (an attempt adopted from an
        // earlier leader) write the assignment, or adopt it when it stands already.
        let started = self
            .started_attempts()
            .remove(&(job.clone(), chunk, attempt));
        let assigned_at = match started {
            Some(assigned_at) => assigned_at,
            None => {
                let assigned_at = Instant::now();
                let share = self.share();
                match self
                    .retrying(&cancel, || {
                        self.store.put_assignment(
                            &worker,
                            &job,
                            chunk,
                            attempt,
                            share,
                            task.source_snapshot.as_deref(),
                        )
                    })
                    .await
                {
                    None => return ChunkResult::Cancelled,
                    Some(Err(message)) => return store_failure(message),
                    Some(Ok(())) => {}
                }
                assigned_at
            }
        };
        tracing::debug!(%job, %chunk, %attempt, %worker, "attempt assigned");

        let keys = self.store.keys();
        let result_key = keys.result(&job, chunk, attempt.0);
        let progress_key = keys.progress(&job, chunk);
        let worker_key = keys.worker(&worker);
        let keys = [&result_key, &progress_key];
        let wake = self.router.register(&keys);
        let outcome = self
            .wait(
                &task,
                &result_key,
                &progress_key,
                &worker_key,
                &wake,
                assigned_at,
            )
            .await;
        self.router.unregister(&keys);
        outcome
    }
}

impl RemoteExecutor {
    /// Waits for the attempt's result (forwarding its progress), or for its worker to be
    /// lost, or for cancellation.
    async fn wait(
        &self,
        task: &ChunkTask,
        result_key: &Vec<u8>,
        progress_key: &Vec<u8>,
        worker_key: &Vec<u8>,
        wake: &Notify,
        assigned_at: Instant,
    ) -> ChunkResult {
        // Assignment latency: from writing the assignment to the first sign of the
        // worker running it (its first progress, or its result).
        let mut latency_recorded = false;
        let mut record_latency = || {
            if !latency_recorded {
                latency_recorded = true;
                metrics::histogram!(crate::metrics::ASSIGNMENT_SECONDS)
                    .record(assigned_at.elapsed().as_secs_f64());
            }
        };
        let (job, chunk, attempt, worker) = (&task.job, task.chunk, task.attempt, &task.worker);
        let cancel = &task.cancel;
        let mut workers = self.workers.clone();
        let started = Instant::now();
        let mut seen_worker = false;
        let mut absent_since: Option<Instant> = None;
        let mut rows_reported = 0u64;
        let mut verifying_reported = false;
        let mut give_back_asked = false;
        loop {
            let outcome = self
                .router
                .results
                .borrow()
                .get(result_key)
                .map(|result| result.result.clone());
            if let Some(outcome) = outcome {
                record_latency();
                // Progress comes at intervals: a verified attempt's rows not reported yet
                // were streamed all the same.
                if let ChunkResult::Verified { rows, .. } = &outcome
                    && *rows > rows_reported
                {
                    (task.progress)(rows - rows_reported);
                }
                // The scheduler records it; the store withdraws the assignment in the
                // same write, so a late duplicate of this result is refused.
                return outcome;
            }
            let running = self
                .router
                .progress
                .borrow()
                .get(progress_key)
                .filter(|running| running.attempt == attempt)
                .cloned();
            if let Some(running) = running {
                record_latency();
                if running.rows > rows_reported {
                    (task.progress)(running.rows - rows_reported);
                    rows_reported = running.rows;
                }
                if running.verifying && !verifying_reported {
                    verifying_reported = true;
                    (task.on_verifying)();
                }
            }
            let present = workers.borrow_and_update().contains_key(worker_key);
            // When the worker is absent: the instant it counts as lost. A worker not
            // seen since we started waiting (a new leader adopting the chunk) gets its
            // full lease on top of the grace.
            let lost_at = if present {
                seen_worker = true;
                absent_since = None;
                None
            } else {
                let since = *absent_since.get_or_insert_with(Instant::now);
                Some(if seen_worker {
                    since + self.grace
                } else {
                    started + self.worker_ttl + self.grace
                })
            };
            if lost_at.is_some_and(|at| Instant::now() >= at) {
                tracing::warn!(%job, %chunk, %attempt, %worker, "worker lost; re-copying its chunk with overwrite");
                return ChunkResult::Error {
                    message: format!(
                        "worker {worker} was lost (its lease expired) during attempt {attempt}"
                    ),
                    retryable: true,
                };
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    if self.job_cancelled.is_cancelled() {
                        // Best effort: the worker stops when its assignment vanishes.
                        let _ = self
                            .store
                            .withdraw_assignment(worker, job, chunk, attempt)
                            .await;
                    }
                    return ChunkResult::Cancelled;
                }
                () = task.give_back.cancelled(), if !give_back_asked => {
                    // The worker hands the chunk back (a Requeued result) or, too late for
                    // that, ends it as it would have; either way its result comes here.
                    give_back_asked = true;
                    if let Err(error) = self
                        .store
                        .request_give_back(worker, job, chunk, attempt)
                        .await
                    {
                        tracing::warn!(%job, %chunk, %attempt, %error, "cannot ask for the chunk back; it runs to its end");
                    }
                }
                () = wake.notified() => {}
                _ = workers.changed() => {}
                () = sleep_until_opt(lost_at) => {}
            }
        }
    }
}

fn store_failure(message: String) -> ChunkResult {
    // Leadership lost or a corrupt store: the attempt never started; leave the chunk in
    // flight for whoever leads next.
    tracing::error!(%message, "cannot assign a chunk");
    ChunkResult::Cancelled
}
