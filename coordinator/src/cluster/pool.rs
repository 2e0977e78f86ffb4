//! The slots of the live workers, shared by every job the leader runs: by weight
//! (`priority`) and under per-database caps, as decided by [`super::share`].
//!
//! Each job's scheduler says how many more slots it would take now
//! ([`WorkerPool::want`]) before it asks for one ([`WorkerPool::acquire`]); a free slot is
//! given only to the job [`share::next_job`] picks. A job refused in favour of another
//! wakes that one (through the same signal as a released slot), and is woken itself when
//! a slot frees or another job's wants change.
//!
//! A slot holds a chunk copying and, behind it, a chunk verifying: a chunk that moves on
//! to verification ([`WorkerPool::verifying`]) frees its slot for the next copy and
//! counts among the worker's verifications. A worker with `slots` slots gets a new chunk
//! only while fewer than `slots` copy and fewer than `2 × slots` copy or verify. Jobs'
//! shares and database caps count copies.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use ferry_coordination::cluster::{Mirror, WorkerInfo};
use ferry_model::ids::{JobId, WorkerId};
use tokio::sync::watch;

use super::share::{self, JobShare};
use crate::scheduler::{Gate, WorkerPool};

/// A job's entry on the board.
struct JobEntry {
    share: JobShare,
    /// Which pool registered it: a pool dropped late (a run of the job that ended after
    /// the next one started) leaves its successor's entry alone.
    registration: u64,
    /// The slots it holds, by worker: given back when its pool is dropped (chunks still
    /// in flight then are adopted, and counted again, by the job's next run).
    held: HashMap<WorkerId, u32>,
    /// Its chunks verifying, by worker: given back like `held`.
    verifying_held: HashMap<WorkerId, u32>,
    /// Another job was refused a slot in this job's favour and this job was woken for
    /// it; not woken again for that until it asks or declares its wants.
    woken_for_slot: bool,
}

/// Everything the board keeps, under one lock.
struct BoardState {
    /// Chunks copying, by worker.
    busy_by_worker: HashMap<WorkerId, u32>,
    /// Chunks verifying, by worker.
    verifying_by_worker: HashMap<WorkerId, u32>,
    /// Ordered by id, so ties between jobs go the same way every time.
    jobs: BTreeMap<JobId, JobEntry>,
    /// When the jobs' virtual times were last advanced.
    accounted_at: Instant,
    /// The last pool registration handed out.
    registrations: u64,
}

impl BoardState {
    /// Brings every job's virtual time up to now.
    fn advance(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.accounted_at);
        self.accounted_at = now;
        let mut shares: Vec<JobShare> = self.jobs.values().map(|job| job.share.clone()).collect();
        share::advance(&mut shares, elapsed.as_secs_f64());
        for (entry, advanced) in self.jobs.values_mut().zip(shares) {
            entry.share.virtual_secs = advanced.virtual_secs;
        }
    }

    fn shares(&self) -> Vec<JobShare> {
        self.jobs.values().map(|job| job.share.clone()).collect()
    }

    /// Whether any job but `job` wants slots.
    fn others_want(&self, job: &JobId) -> bool {
        self.jobs
            .iter()
            .any(|(other, entry)| other != job && entry.share.wanted > 0)
    }
}

/// How many chunks each worker holds now, across jobs, and how the jobs share them.
pub struct SlotBoard {
    state: Mutex<BoardState>,
    released: watch::Sender<u64>,
    workers: Mirror<WorkerInfo>,
    /// The cluster's caps on chunks in flight per database identity (`endpoints` in the
    /// coordinator's configuration).
    database_caps: HashMap<String, u32>,
}

impl SlotBoard {
    /// A board over the mirror of live workers, with no configured database caps.
    pub fn new(workers: Mirror<WorkerInfo>) -> Arc<Self> {
        Self::with_database_caps(workers, HashMap::new())
    }

    /// A board over the mirror of live workers; `database_caps` maps a database
    /// identity (`host:port/database`) to the most chunks in flight on it across jobs.
    pub fn with_database_caps(
        workers: Mirror<WorkerInfo>,
        database_caps: HashMap<String, u32>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(BoardState {
                busy_by_worker: HashMap::new(),
                verifying_by_worker: HashMap::new(),
                jobs: BTreeMap::new(),
                accounted_at: Instant::now(),
                registrations: 0,
            }),
            released: watch::channel(0).0,
            workers,
            database_caps,
        })
    }

    /// Chunks copying on `worker` now.
    pub fn busy(&self, worker: &WorkerId) -> u32 {
        self.lock().busy_by_worker.get(worker).copied().unwrap_or(0)
    }

    /// Chunks verifying on `worker` now.
    pub fn verifying(&self, worker: &WorkerId) -> u32 {
        self.lock()
            .verifying_by_worker
            .get(worker)
            .copied()
            .unwrap_or(0)
    }

    /// A pool for the scheduler of `job`, which reads and writes `databases` (their
    /// identities; jobs touching the same one share its cap). The job counts on the
    /// board until the pool is dropped.
    pub fn pool(self: &Arc<Self>, job: JobId, databases: Vec<String>) -> ClusterPool {
        let registration = {
            let mut state = self.lock();
            state.registrations += 1;
            let registration = state.registrations;
            state.jobs.insert(
                job.clone(),
                JobEntry {
                    share: JobShare::new(1, databases),
                    registration,
                    held: HashMap::new(),
                    verifying_held: HashMap::new(),
                    woken_for_slot: false,
                },
            );
            registration
        };
        ClusterPool {
            board: self.clone(),
            job,
            registration,
            workers: self.workers.clone(),
            released: self.released.subscribe(),
        }
    }

    /// How `job` shares the cluster now, one line each (for `ferryctl throttle`): its
    /// weight among the jobs that hold or want slots, and each database it touches that
    /// another active job touches too or that has a configured cap.
    pub fn sharing_lines(&self, job: &JobId) -> Vec<String> {
        let state = self.lock();
        let Some(own) = state.jobs.get(job).map(|entry| &entry.share) else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        let others: Vec<&JobShare> = state
            .jobs
            .iter()
            .filter(|(other, entry)| *other != job && entry.share.active())
            .map(|(_, entry)| &entry.share)
            .collect();
        if !others.is_empty() {
            let total_weight: u32 =
                others.iter().map(|other| other.weight).sum::<u32>() + own.weight;
            lines.push(format!(
                "shares the workers' slots with {} other job{}: priority {} of {total_weight}, {} slot{} held",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                own.weight,
                own.busy,
                if own.busy == 1 { "" } else { "s" },
            ));
        }
        let uses = share::database_use(
            state.jobs.values().map(|entry| &entry.share),
            &self.database_caps,
        );
        for database in &own.databases {
            let sharing = others
                .iter()
                .filter(|other| other.databases.contains(database))
                .count();
            let Some(database_use) = uses.get(database) else {
                continue;
            };
            if sharing == 0 && !database_use.configured {
                continue;
            }
            let origin = if database_use.configured {
                "the cluster's [[endpoints]] cap".to_owned()
            } else {
                format!("the smallest concurrency of the {} jobs on it", sharing + 1)
            };
            lines.push(format!(
                "database {database}: {} in flight across jobs, cap {} ({origin})",
                database_use.busy, database_use.cap
            ));
        }
        lines
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every job's scheduler to look at the slots again.
    fn wake_all(&self) {
        self.released.send_modify(|version| *version += 1);
    }
}

/// One job's view of the shared slots.
pub struct ClusterPool {
    board: Arc<SlotBoard>,
    job: JobId,
    registration: u64,
    workers: Mirror<WorkerInfo>,
    released: watch::Receiver<u64>,
}

impl WorkerPool for ClusterPool {
    fn want(&mut self, slots: usize, gate: &Gate) {
        let wake_others = {
            let mut state = self.board.lock();
            state.advance();
            let others_want = state.others_want(&self.job);
            let Some(index) = state.jobs.keys().position(|job| *job == self.job) else {
                return;
            };
            let mut shares = state.shares();
            let before = shares[index].clone();
            let rejoining = !before.active() && slots > 0;
            shares[index].wanted = u32::try_from(slots).unwrap_or(u32::MAX);
            shares[index].weight = gate.priority.max(1);
            shares[index].concurrency = gate.concurrency.max(1);
            if rejoining {
                share::rejoin(&mut shares, index);
            }
            let after = shares[index].clone();
            if let Some(entry) = state.jobs.get_mut(&self.job) {
                entry.share = after.clone();
                entry.woken_for_slot = false;
            }
            // Fewer wants, another weight or another concurrency (a shared database's
            // default cap) may let another job take a slot now.
            others_want
                && (after.wanted < before.wanted
                    || after.weight != before.weight
                    || after.concurrency != before.concurrency)
        };
        if wake_others {
            self.board.wake_all();
        }
    }

    fn capacity(&self) -> Option<usize> {
        // The live workers' slots that take new chunks; jobs sharing them get less, which
        // only makes a cut a little coarser.
        let workers = self.workers.borrow().clone();
        let slots: u64 = workers
            .values()
            .filter(|worker| !worker.draining)
            .map(|worker| u64::from(worker.slots))
            .sum();
        Some(usize::try_from(slots).unwrap_or(usize::MAX))
    }

    fn acquire(&mut self) -> Option<WorkerId> {
        let workers = self.workers.borrow_and_update().clone();
        let mut state = self.board.lock();
        // The least loaded live worker with a slot free for a copy and room for the
        // verification that follows it (ties: fewer verifying, then the first by name).
        let chosen = workers
            .values()
            .filter(|worker| !worker.draining)
            .filter_map(|worker| {
                let used = state.busy_by_worker.get(&worker.id).copied().unwrap_or(0);
                let verifying = state
                    .verifying_by_worker
                    .get(&worker.id)
                    .copied()
                    .unwrap_or(0);
                let room = used < worker.slots
                    && u64::from(used) + u64::from(verifying) < 2 * u64::from(worker.slots);
                // Lazily: a worker's count can pass its slots for a moment (attempts a
                // new term adopts), and `slots - used` must not be computed then.
                room.then(|| {
                    (
                        worker.slots - used,
                        std::cmp::Reverse(verifying),
                        &worker.id,
                    )
                })
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(a.2)))
            .map(|(_, _, id)| id.clone())?;
        state.advance();
        let shares = state.shares();
        let picked = share::next_job(&shares, &self.board.database_caps)
            .and_then(|index| state.jobs.keys().nth(index).cloned());
        match picked {
            Some(job) if job == self.job => {
                *state.busy_by_worker.entry(chosen.clone()).or_insert(0) += 1;
                if let Some(entry) = state.jobs.get_mut(&self.job) {
                    entry.share.busy += 1;
                    entry.share.wanted = entry.share.wanted.saturating_sub(1);
                    *entry.held.entry(chosen.clone()).or_insert(0) += 1;
                    entry.woken_for_slot = false;
                }
                Some(chosen)
            }
            Some(other) => {
                // The slot is another job's: wake it (once) to take it.
                let wake = state
                    .jobs
                    .get_mut(&other)
                    .is_some_and(|entry| !std::mem::replace(&mut entry.woken_for_slot, true));
                drop(state);
                if wake {
                    self.board.wake_all();
                }
                None
            }
            None => None,
        }
    }

    fn adopt(&mut self, worker: &WorkerId) {
        let mut state = self.board.lock();
        state.advance();
        *state.busy_by_worker.entry(worker.clone()).or_insert(0) += 1;
        if let Some(entry) = state.jobs.get_mut(&self.job) {
            entry.share.busy += 1;
            *entry.held.entry(worker.clone()).or_insert(0) += 1;
        }
    }

    fn release(&mut self, worker: &WorkerId, verifying: bool) {
        {
            let mut state = self.board.lock();
            state.advance();
            if verifying {
                take_back(&mut state.verifying_by_worker, worker, 1);
                if let Some(entry) = state.jobs.get_mut(&self.job) {
                    take_back(&mut entry.verifying_held, worker, 1);
                }
            } else {
                take_back(&mut state.busy_by_worker, worker, 1);
                if let Some(entry) = state.jobs.get_mut(&self.job) {
                    entry.share.busy = entry.share.busy.saturating_sub(1);
                    take_back(&mut entry.held, worker, 1);
                }
            }
        }
        self.board.wake_all();
    }

    fn verifying(&mut self, worker: &WorkerId) {
        {
            let mut state = self.board.lock();
            state.advance();
            take_back(&mut state.busy_by_worker, worker, 1);
            *state.verifying_by_worker.entry(worker.clone()).or_insert(0) += 1;
            if let Some(entry) = state.jobs.get_mut(&self.job) {
                entry.share.busy = entry.share.busy.saturating_sub(1);
                take_back(&mut entry.held, worker, 1);
                *entry.verifying_held.entry(worker.clone()).or_insert(0) += 1;
            }
        }
        self.board.wake_all();
    }

    fn changed(&mut self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::select! {
                changed = self.workers.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                changed = self.released.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        })
    }

    fn adopts_in_flight(&self) -> bool {
        true
    }
}

/// Lowers `worker`'s count in `counts` by `count`, dropping it at zero.
fn take_back(counts: &mut HashMap<WorkerId, u32>, worker: &WorkerId, count: u32) {
    if let Some(used) = counts.get_mut(worker) {
        *used = used.saturating_sub(count);
        if *used == 0 {
            counts.remove(worker);
        }
    }
}

impl Drop for ClusterPool {
    /// The job leaves the board: its share and database use go; the others may take
    /// what it held or was owed.
    fn drop(&mut self) {
        {
            let mut state = self.board.lock();
            if state
                .jobs
                .get(&self.job)
                .is_some_and(|entry| entry.registration == self.registration)
                && let Some(entry) = state.jobs.remove(&self.job)
            {
                for (worker, count) in entry.held {
                    take_back(&mut state.busy_by_worker, &worker, count);
                }
                for (worker, count) in entry.verifying_held {
                    take_back(&mut state.verifying_by_worker, &worker, count);
                }
            }
        }
        self.board.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_coordination::cluster::WorkerInfo;

    use super::*;

    fn board_with_slots(slots: u32, caps: HashMap<String, u32>) -> Arc<SlotBoard> {
        let worker = WorkerInfo {
            id: WorkerId("w1".into()),
            slots,
            draining: false,
            host: "test".into(),
            pid: 1,
            registered_at_unix_ms: 0,
        };
        let workers = BTreeMap::from([(b"w1".to_vec(), worker)]);
        let (sender, mirror) = watch::channel(Arc::new(workers));
        // The mirror stays readable after the sender is gone.
        drop(sender);
        SlotBoard::with_database_caps(mirror, caps)
    }

    fn gate(priority: u32, concurrency: u32) -> Gate {
        Gate {
            concurrency,
            paused: false,
            hold_new: false,
            priority,
        }
    }

    /// Lets `pools` take slots in turn (each as its scheduler would: declare, then take
    /// until refused) until none takes one; returns the slots each took.
    fn fill(pools: &mut [(&mut ClusterPool, Gate)]) -> Vec<u32> {
        let mut taken = vec![0; pools.len()];
        loop {
            let mut progressed = false;
            for (index, (pool, gate)) in pools.iter_mut().enumerate() {
                pool.want(8, gate);
                while pool.acquire().is_some() {
                    taken[index] += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return taken;
            }
        }
    }

    #[test]
    fn two_jobs_taking_turns_get_the_slots_by_weight_and_a_refusal_wakes_the_other() {
        let board = board_with_slots(8, HashMap::new());
        let mut heavy = board.pool(JobId("heavy".into()), vec!["a:1/x".into()]);
        let mut light = board.pool(JobId("light".into()), vec!["b:1/x".into()]);
        light.want(8, &gate(1, 8));
        // The light job declared first, yet it may not take the heavy job's share.
        heavy.want(8, &gate(3, 8));
        let mut woken = light.released.clone();
        woken.mark_unchanged();
        assert!(
            light.acquire().is_none(),
            "the first slot is the heavy job's"
        );
        // The heavy job, whose turn it is, was woken to take it.
        assert!(woken.has_changed().unwrap_or(false));
        let taken = fill(&mut [(&mut heavy, gate(3, 8)), (&mut light, gate(1, 8))]);
        assert_eq!(taken, vec![6, 2]);
        // A released slot of the light job goes to it again (it is below its share).
        light.release(&WorkerId("w1".into()), false);
        heavy.want(8, &gate(3, 8));
        assert!(heavy.acquire().is_none());
        light.want(8, &gate(1, 8));
        assert!(light.acquire().is_some());
    }

    #[test]
    fn a_job_that_wants_nothing_leaves_every_slot_and_a_dropped_pool_leaves_the_board() {
        let board = board_with_slots(4, HashMap::new());
        let mut heavy = board.pool(JobId("heavy".into()), Vec::new());
        let mut light = board.pool(JobId("light".into()), Vec::new());
        heavy.want(0, &gate(3, 8));
        let taken = fill(&mut [(&mut light, gate(1, 8))]);
        assert_eq!(taken, vec![4]);
        drop(light);
        // The light job's slots left with it (a next run of it adopts what still runs).
        assert_eq!(board.busy(&WorkerId("w1".into())), 0);
        assert!(board.sharing_lines(&JobId("light".into())).is_empty());
        let taken = fill(&mut [(&mut heavy, gate(3, 8))]);
        assert_eq!(taken, vec![4]);
    }

    #[test]
    fn a_chunk_verifying_frees_its_slot_for_a_copy_and_a_slot_holds_one_verification() {
        let board = board_with_slots(2, HashMap::new());
        let mut pool = board.pool(JobId("job".into()), Vec::new());
        let worker = WorkerId("w1".into());
        let taken = fill(&mut [(&mut pool, gate(1, 8))]);
        assert_eq!(taken, vec![2]);
        pool.verifying(&worker);
        assert_eq!((board.busy(&worker), board.verifying(&worker)), (1, 1));
        assert_eq!(fill(&mut [(&mut pool, gate(1, 8))]), vec![1]);
        // Two copying, one verifying: another verification fits, no more copies.
        pool.verifying(&worker);
        assert_eq!(fill(&mut [(&mut pool, gate(1, 8))]), vec![1]);
        // One copying, three verifying: 2 × slots in flight, no room until a
        // verification ends.
        pool.verifying(&worker);
        assert_eq!((board.busy(&worker), board.verifying(&worker)), (1, 3));
        assert!(pool.acquire().is_none());
        pool.release(&worker, true);
        assert_eq!(fill(&mut [(&mut pool, gate(1, 8))]), vec![1]);
        assert_eq!((board.busy(&worker), board.verifying(&worker)), (2, 2));
        drop(pool);
        assert_eq!((board.busy(&worker), board.verifying(&worker)), (0, 0));
    }

    #[test]
    fn attempts_adopted_past_a_workers_slots_leave_it_no_room_until_they_end() {
        // A new term adopts what still runs on a worker while its scheduler also takes
        // slots: for a moment the worker holds more than it has (this panicked with an
        // overflow in `acquire` in debug builds).
        let board = board_with_slots(2, HashMap::new());
        let mut pool = board.pool(JobId("job".into()), Vec::new());
        let worker = WorkerId("w1".into());
        for _ in 0..3 {
            pool.adopt(&worker);
        }
        pool.want(8, &gate(1, 8));
        assert!(pool.acquire().is_none(), "3 of 2 slots held: no room");
        pool.release(&worker, false);
        pool.release(&worker, false);
        assert_eq!(board.busy(&worker), 1);
        assert_eq!(fill(&mut [(&mut pool, gate(1, 8))]), vec![1]);
    }

    #[test]
    fn jobs_on_one_database_stay_under_its_cap_and_say_so() {
        let shared = "db:5432/orders".to_owned();
        let board = board_with_slots(8, HashMap::from([(shared.clone(), 3)]));
        let mut left = board.pool(JobId("left".into()), vec![shared.clone(), "t:1/a".into()]);
        let mut right = board.pool(JobId("right".into()), vec![shared.clone(), "t:1/b".into()]);
        let taken = fill(&mut [(&mut left, gate(1, 8)), (&mut right, gate(1, 8))]);
        assert_eq!(taken.iter().sum::<u32>(), 3);
        let lines = board.sharing_lines(&JobId("left".into()));
        assert_eq!(
            lines,
            vec![
                format!(
                    "shares the workers' slots with 1 other job: priority 1 of 2, {} slot{} held",
                    taken[0],
                    if taken[0] == 1 { "" } else { "s" }
                ),
                "database db:5432/orders: 3 in flight across jobs, cap 3 (the cluster's \
                 [[endpoints]] cap)"
                    .to_owned(),
            ]
        );
    }
}
