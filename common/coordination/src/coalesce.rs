//! Group commit for the small txns of one process (a leader's, a worker's).
//!
//! A leader running hundreds of attempts writes a few small txns per chunk (its start
//! with its assignment, its completion); a worker with several slots writes a claim,
//! progress and a result per attempt. Sent one by one, etcd spends its time on the
//! per-request work (gRPC, a raft entry, an apply), not on the keys. The committer
//! here takes the txns queued while the previous ones were in flight and sends them as
//! one txn, so under load one request carries dozens of chunk changes; alone, a txn goes
//! out at once, unchanged.
//!
//! Only txns that touch pairwise disjoint keys (compared or written) share a batch, so
//! the batch applies exactly what the txns would have applied one after the other, in
//! any order. When the batch's compares do not all hold, the txns whose compares failed
//! are answered so and the others are sent again; when the request fails, every txn
//! gets the failure (the batch may or may not have been applied, as for a single txn).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::etcd::{EtcdFailure, EtcdStore, TxnOutcome};
use super::{CoordinationError, Result};

/// Batches in flight at once: one being applied while the next one fills.
const IN_FLIGHT: usize = 2;

/// One compare of a coalescable txn.
#[derive(Clone, Debug)]
pub(crate) enum Guard {
    /// The key's last modification is at this revision (0: the key does not exist).
    ModRevision(Vec<u8>, i64),
    /// The key was created at this revision (0: the key does not exist).
    CreateRevision(Vec<u8>, i64),
}

impl Guard {
    fn key(&self) -> &[u8] {
        match self {
            Guard::ModRevision(key, _) | Guard::CreateRevision(key, _) => key,
        }
    }

    fn to_compare(&self) -> Compare {
        match self {
            Guard::ModRevision(key, revision) => {
                Compare::mod_revision(key.clone(), CompareOp::Equal, *revision)
            }
            Guard::CreateRevision(key, revision) => {
                Compare::create_revision(key.clone(), CompareOp::Equal, *revision)
            }
        }
    }
}

/// One single-key write of a coalescable txn (no range).
#[derive(Clone, Debug)]
pub(crate) enum Write {
    /// Sets the key.
    Put(Vec<u8>, Vec<u8>),
    /// Sets the key on a lease (it vanishes with the lease).
    PutOnLease(Vec<u8>, Vec<u8>, i64),
    /// Deletes the key (nothing when it does not exist).
    Delete(Vec<u8>),
}

impl Write {
    fn key(&self) -> &[u8] {
        match self {
            Write::Put(key, _) | Write::PutOnLease(key, _, _) | Write::Delete(key) => key,
        }
    }

    fn size(&self) -> usize {
        match self {
            Write::Put(key, value) | Write::PutOnLease(key, value, _) => key.len() + value.len(),
            Write::Delete(key) => key.len(),
        }
    }

    pub(crate) fn to_op(&self) -> TxnOp {
        match self {
            Write::Put(key, value) => TxnOp::put(key.clone(), value.clone(), None),
            Write::PutOnLease(key, value, lease) => TxnOp::put(
                key.clone(),
                value.clone(),
                Some(etcd_client::PutOptions::new().with_lease(*lease)),
            ),
            Write::Delete(key) => TxnOp::delete(key.clone(), None),
        }
    }
}

/// A txn made of guards and single-key writes.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmallTxn {
    pub guards: Vec<Guard>,
    pub writes: Vec<Write>,
}

impl SmallTxn {
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.guards
            .iter()
            .map(Guard::key)
            .chain(self.writes.iter().map(Write::key))
    }

    fn size(&self) -> usize {
        self.guards
            .iter()
            .map(|guard| guard.key().len())
            .sum::<usize>()
            + self.writes.iter().map(Write::size).sum::<usize>()
    }

    pub(crate) fn compares(&self) -> Vec<Compare> {
        self.guards.iter().map(Guard::to_compare).collect()
    }

    pub(crate) fn ops(&self) -> Vec<TxnOp> {
        self.writes.iter().map(Write::to_op).collect()
    }
}

/// What a caller gets back: the outcome and, when applied, the revision the txn wrote
/// at (the `mod_revision` of every key it put).
pub(crate) type Committed = (TxnOutcome, i64);

struct Pending {
    operation: String,
    txn: SmallTxn,
    reply: oneshot::Sender<Result<Committed>>,
}

/// The sending side of a store's committer. Dropping every clone of it ends the task.
#[derive(Clone)]
pub(crate) struct Coalescer {
    sender: mpsc::UnboundedSender<Pending>,
}

impl Coalescer {
    /// Starts the committer for `store` (whose fence, if any, guards every batch).
    pub(crate) fn start(store: EtcdStore) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(store, receiver));
        Self { sender }
    }

    /// Commits `txn`, possibly in one request with other callers' txns.
    pub(crate) async fn commit(
        &self,
        store: &EtcdStore,
        operation: &str,
        txn: SmallTxn,
    ) -> Result<Committed> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            operation: operation.to_owned(),
            txn,
            reply,
        };
        if let Err(mpsc::error::SendError(pending)) = self.sender.send(pending) {
            // The committer is gone (runtime shutting down): commit directly.
            return store.commit_small(operation, &pending.txn).await;
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(CoordinationError::Etcd {
                operation: operation.to_owned(),
                source: EtcdFailure::Client(etcd_client::Error::InvalidArgs(
                    "the etcd committer stopped".into(),
                )),
            }),
        }
    }
}

/// Limits of one batch, from the store's options.
struct Limits {
    ops: usize,
    bytes: usize,
}

/// A batch being filled.
#[derive(Default)]
struct Batch {
    items: Vec<Pending>,
    keys: HashSet<Vec<u8>>,
    compares: usize,
    writes: usize,
    bytes: usize,
}

impl Batch {
    /// Adds `pending` when it fits and touches no key of the batch; gives it back
    /// otherwise. A first item always fits.
    fn offer(&mut self, pending: Pending, limits: &Limits) -> Option<Pending> {
        let txn = &pending.txn;
        if !self.items.is_empty() {
            // One compare is the leader fence.
            let fits = self.compares + txn.guards.len() < limits.ops
                && self.writes + txn.writes.len() <= limits.ops
                && self.bytes + txn.size() <= limits.bytes;
            if !fits || txn.keys().any(|key| self.keys.contains(key)) {
                return Some(pending);
            }
        }
        self.keys.extend(txn.keys().map(<[u8]>::to_vec));
        self.compares += txn.guards.len();
        self.writes += txn.writes.len();
        self.bytes += txn.size();
        self.items.push(pending);
        None
    }

    fn is_full(&self, limits: &Limits) -> bool {
        self.compares + 1 >= limits.ops || self.writes >= limits.ops || self.bytes >= limits.bytes
    }
}

async fn run(store: EtcdStore, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let limits = Limits {
        ops: store.options.max_txn_ops.max(2),
        bytes: store.options.max_txn_bytes,
    };
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Txns that did not fit the last batch (a shared key), oldest first.
    let mut held: VecDeque<Pending> = VecDeque::new();
    loop {
        let first = match held.pop_front() {
            Some(pending) => pending,
            None => match receiver.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        // While every slot is busy, more txns queue up for this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Batch::default();
        batch.offer(first, &limits);
        let mut skipped = VecDeque::new();
        while let Some(pending) = held.pop_front() {
            if let Some(back) = batch.offer(pending, &limits) {
                skipped.push_back(back);
            }
            if batch.is_full(&limits) {
                break;
            }
        }
        skipped.append(&mut held);
        held = skipped;
        while !batch.is_full(&limits) {
            let Ok(pending) = receiver.try_recv() else {
                break;
            };
            if let Some(back) = batch.offer(pending, &limits) {
                held.push_back(back);
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            apply(&store, batch.items).await;
            drop(slot);
        });
    }
}

/// Sends a batch and answers each of its txns. When a compare fails, the txn's failure
/// branch reads every compared key, so the txns whose guards failed are answered
/// CompareFailed (as they would have been alone at that revision) and the rest is sent
/// again, without a request per txn.
async fn apply(store: &EtcdStore, mut items: Vec<Pending>) {
    loop {
        if let [only] = items.as_slice() {
            let result = store.commit_small(&only.operation, &only.txn).await;
            if let Some(only) = items.into_iter().next() {
                let _ = only.reply.send(result);
            }
            return;
        }
        let operation = format!(
            "{} (and {} more in one txn)",
            items[0].operation,
            items.len() - 1
        );
        let fence = store.fence_guard();
        let guards: Vec<&Guard> = items
            .iter()
            .flat_map(|item| item.txn.guards.iter())
            .chain(fence.iter())
            .collect();
        let compares: Vec<Compare> = guards.iter().map(|guard| guard.to_compare()).collect();
        let ops: Vec<TxnOp> = items.iter().flat_map(|item| item.txn.ops()).collect();
        let reads: Vec<TxnOp> = guards
            .iter()
            .map(|guard| TxnOp::get(guard.key().to_vec(), None))
            .collect();
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let mut kv = store.client.kv_client();
        let response = match store.call(&operation, kv.txn(txn)).await {
            Ok(response) => response,
            Err(error) => {
                for item in items {
                    let _ = item.reply.send(Err(replicate(&error, &item.operation)));
                }
                return;
            }
        };
        if response.succeeded() {
            let revision = response.header().map_or(0, |header| header.revision());
            for item in items {
                let _ = item.reply.send(Ok((TxnOutcome::Applied, revision)));
            }
            return;
        }
        // Revisions of the compared keys at the txn's revision (absent: 0, 0).
        let mut current: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                for kv in get.kvs() {
                    current.insert(kv.key().to_vec(), (kv.create_revision(), kv.mod_revision()));
                }
            }
        }
        let holds = |guard: &Guard| {
            let (created, modified) = current.get(guard.key()).copied().unwrap_or((0, 0));
            match guard {
                Guard::ModRevision(_, revision) => modified == *revision,
                Guard::CreateRevision(_, revision) => created == *revision,
            }
        };
        if fence.as_ref().is_some_and(|fence| !holds(fence)) {
            // The term is over: each txn alone gets the store's NotLeader error.
            for item in items {
                let result = store.commit_small(&item.operation, &item.txn).await;
                let _ = item.reply.send(result);
            }
            return;
        }
        let (standing, refused): (Vec<_>, Vec<_>) = items
            .into_iter()
            .partition(|item| item.txn.guards.iter().all(holds));
        for item in refused {
            let _ = item.reply.send(Ok((TxnOutcome::CompareFailed, 0)));
        }
        if standing.is_empty() {
            return;
        }
        items = standing;
    }
}

/// A copy of a batch's failure for one of its txns, classified the same way
/// (`etcd_client::Error` cannot be cloned).
fn replicate(error: &CoordinationError, operation: &str) -> CoordinationError {
    let source = match error {
        CoordinationError::Etcd { source, .. } => match source {
            EtcdFailure::Timeout(limit) => EtcdFailure::Timeout(*limit),
            EtcdFailure::CompareFailed { attempts } => EtcdFailure::CompareFailed {
                attempts: *attempts,
            },
            EtcdFailure::Client(etcd_client::Error::GRpcStatus(status)) => {
                EtcdFailure::Client(etcd_client::Error::GRpcStatus(status.clone()))
            }
            EtcdFailure::Client(
                client @ (etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)),
            ) => EtcdFailure::Client(etcd_client::Error::IoError(std::io::Error::other(
                client.to_string(),
            ))),
            EtcdFailure::Client(other) => {
                EtcdFailure::Client(etcd_client::Error::InvalidArgs(other.to_string()))
            }
        },
        other => EtcdFailure::Client(etcd_client::Error::InvalidArgs(other.to_string())),
    };
    CoordinationError::Etcd {
        operation: operation.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(keys: &[&str]) -> Pending {
        let (reply, _) = oneshot::channel();
        Pending {
            operation: "test".into(),
            txn: SmallTxn {
                guards: vec![Guard::ModRevision(keys[0].as_bytes().to_vec(), 1)],
                writes: keys
                    .iter()
                    .map(|key| Write::Put(key.as_bytes().to_vec(), b"v".to_vec()))
                    .collect(),
            },
            reply,
        }
    }

    #[test]
    fn txns_sharing_a_key_never_share_a_batch() {
        let limits = Limits {
            ops: 128,
            bytes: 1 << 20,
        };
        let mut batch = Batch::default();
        assert!(batch.offer(pending(&["a", "b"]), &limits).is_none());
        assert!(batch.offer(pending(&["c"]), &limits).is_none());
        assert!(batch.offer(pending(&["d", "b"]), &limits).is_some());
        assert!(batch.offer(pending(&["a"]), &limits).is_some());
        assert_eq!(batch.items.len(), 2);
    }

    #[test]
    fn a_batch_stays_within_the_txn_limits_counting_the_fence() {
        let limits = Limits {
            ops: 4,
            bytes: 1 << 20,
        };
        let mut batch = Batch::default();
        for key in ["a", "b", "c"] {
            assert!(batch.offer(pending(&[key]), &limits).is_none());
        }
        // Three guards plus the fence make four compares: the batch is full.
        assert!(batch.is_full(&limits));
        assert!(batch.offer(pending(&["d"]), &limits).is_some());
    }

    #[test]
    fn a_txn_too_big_alone_still_goes_alone() {
        let limits = Limits { ops: 2, bytes: 1 };
        let mut batch = Batch::default();
        assert!(batch.offer(pending(&["a", "b", "c"]), &limits).is_none());
        assert!(batch.offer(pending(&["d"]), &limits).is_some());
    }
}
