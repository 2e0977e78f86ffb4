//! The slots of the live workers, shared by every job the leader runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_coordination::cluster::{Mirror, WorkerInfo};
use ferry_model::ids::WorkerId;
use tokio::sync::watch;

use crate::scheduler::WorkerPool;

/// How many chunks each worker holds now, across jobs.
pub struct SlotBoard {
    busy: Mutex<HashMap<WorkerId, u32>>,
    released: watch::Sender<u64>,
    workers: Mirror<WorkerInfo>,
}

impl SlotBoard {
    /// A board over the mirror of live workers.
    pub fn new(workers: Mirror<WorkerInfo>) -> Arc<Self> {
        Arc::new(Self {
            busy: Mutex::new(HashMap::new()),
            released: watch::channel(0).0,
            workers,
        })
    }

    /// Chunks held by `worker` now.
    pub fn busy(&self, worker: &WorkerId) -> u32 {
        self.lock().get(worker).copied().unwrap_or(0)
    }

    /// A pool for one job's scheduler.
    pub fn pool(self: &Arc<Self>) -> ClusterPool {
        ClusterPool {
            board: self.clone(),
            workers: self.workers.clone(),
            released: self.released.subscribe(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, u32>> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One job's view of the shared slots.
pub struct ClusterPool {
    board: Arc<SlotBoard>,
    workers: Mirror<WorkerInfo>,
    released: watch::Receiver<u64>,
}

impl WorkerPool for ClusterPool {
    fn acquire(&mut self) -> Option<WorkerId> {
        let workers = self.workers.borrow_and_update().clone();
        let mut busy = self.board.lock();
        // The least loaded live worker with a free slot (ties: the first by name).
        let chosen = workers
            .values()
            .filter(|worker| !worker.draining)
            .filter_map(|worker| {
                let used = busy.get(&worker.id).copied().unwrap_or(0);
                (used < worker.slots).then_some((worker.slots - used, &worker.id))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
            .map(|(_, id)| id.clone())?;
        *busy.entry(chosen.clone()).or_insert(0) += 1;
        Some(chosen)
    }

    fn adopt(&mut self, worker: &WorkerId) {
        *self.board.lock().entry(worker.clone()).or_insert(0) += 1;
    }

    fn release(&mut self, worker: &WorkerId) {
        {
            let mut busy = self.board.lock();
            if let Some(used) = busy.get_mut(worker) {
                *used = used.saturating_sub(1);
                if *used == 0 {
                    busy.remove(worker);
                }
            }
        }
        self.board.released.send_modify(|version| *version += 1);
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
