//! The etcd coordination store, for distributed mode. Same semantics as
//! [`LocalStore`](super::LocalStore), checked by the shared
//! [`conformance`](super::conformance) suite; keys in [`keys`](super::keys), values are
//! `ferry.v1` protobuf messages (`proto/ferry/v1/state.proto`).
//!
//! # Atomicity
//! Every trait method that changes one record is a read followed by one txn that
//! compares the `mod_revision` it read (`assign`, `report_state`, `complete`,
//! `save_policy`); when another writer got there first the compare fails, nothing is
//! written, and the method reads again and re-decides, at most
//! [`EtcdStoreOptions::max_compare_retries`] times. Two concurrent `assign`s of one
//! PLANNED chunk therefore give exactly one winner; the other sees ASSIGNED and gets
//! [`CoordinationError::InvalidTransition`].
//!
//! Three things keep a busy leader cheap for etcd: the read is skipped when this store
//! wrote the chunk last (a chunk cache keyed by `mod_revision`: the compare still
//! guards, and any refusal is decided again on a fresh read); otherwise the first read
//! is serializable (no consensus round; a stale answer only fails the compare, and the
//! next read is linearizable); and the single-chunk txns of concurrent attempts go out
//! together through a group commit ([`super::coalesce`]), only ever mixing txns on
//! disjoint keys. A worker's claims, progress and results go through its own group
//! commit the same way.
//!
//! Methods over many chunks cannot be one txn (etcd's `--max-txn-ops` is 128):
//! - `create_job` clears leftovers of an interrupted creation, writes the chunks in txns
//!   of at most [`EtcdStoreOptions::max_txn_ops`] puts, and writes the job record LAST.
//!   Each txn requires that the record does not exist yet. **A job whose record exists
//!   is complete**; readers ignore chunk keys without a record, so a creation cut off
//!   half-way is invisible and the next `create_job` of that job starts over.
//! - `requeue_in_flight` and `reset_failed` are per-chunk compare-and-set in batched txns
//!   (one `mod_revision` compare per chunk). A batch that loses a compare is redone
//!   chunk by chunk. Each chunk's change is atomic; the set is not (LocalStore's is).
//!
//! # Leader fencing
//! [`EtcdStore::fenced_by`] adds `create_revision(leader_key) == leader_rev` to every
//! txn that writes. A term's leader key keeps its creation revision for the whole term
//! and no later key can have it again, so once the compare fails it fails forever: the
//! store reports [`CoordinationError::NotLeader`] and nothing of that txn is written.
//! Stores are unfenced by default (tests, tools, `ferryctl`).
//!
//! # Timeouts and errors
//! Every request is bounded by [`EtcdStoreOptions::request_timeout`] (and the channel's
//! own timeout); failures are classified once, in [`EtcdFailure::is_retryable`].
//! Reads are linearizable. Multi-page reads are pinned to the revision of their first
//! page, so a job and its chunks are read as one snapshot.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp,
};
use prost::Message;

use super::coalesce::{Coalescer, Committed, Guard, SmallTxn, Write};
pub(crate) use super::etcd_values::{
    checksum_from_proto, checksum_to_proto, decode, key_text, now_unix_ms,
};
use super::etcd_values::{decode_chunk, decode_job, encode_chunk, encode_job};
use super::keys::{KeyLayout, key_after, prefix_range_end};
use super::transitions::{assign_transition, complete_transition, planned, report_transition};
use super::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, CoordinationError, JobRecord,
    PolicyChange, Result,
};
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::ChunkRange;

use ferry_proto::v1 as pb;

/// How an [`EtcdStore`] talks to etcd.
#[derive(Clone, Debug)]
pub struct EtcdStoreOptions {
    /// Bound on each request (and on each step of connecting). Default 5 s: an etcd
    /// that cannot answer a small txn in 5 s is unavailable for our purpose.
    pub request_timeout: Duration,
    /// Bound on opening a connection to an endpoint. Default 3 s.
    pub connect_timeout: Duration,
    /// How often a read-then-txn method re-reads after losing its compare to another
    /// writer before giving up with a non-retryable error. Default 16.
    pub max_compare_retries: u32,
    /// Keys per range request when listing chunks or history. Default 1,000.
    pub list_page_size: i64,
    /// Operations per txn, at most etcd's `--max-txn-ops` (default 128 there and here).
    pub max_txn_ops: usize,
    /// Bytes of keys and values per bulk txn, below etcd's `--max-request-bytes`
    /// (1.5 MiB by default). Default 1 MiB.
    pub max_txn_bytes: usize,
    /// TLS and the etcd user. Default: plaintext, no user.
    pub access: EtcdAccess,
}

/// How ferry proves itself to etcd: TLS (the CA that signed etcd's certificate, and a
/// client certificate when etcd runs with `--client-cert-auth`) and an etcd user (RBAC).
#[derive(Clone, Default)]
pub struct EtcdAccess {
    /// TLS settings; endpoints must then be `https://`.
    pub tls: Option<etcd_client::TlsOptions>,
    /// The etcd user and its password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("EtcdAccess")
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .finish()
    }
}

impl Default for EtcdStoreOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_compare_retries: 16,
            list_page_size: 1000,
            max_txn_ops: 128,
            max_txn_bytes: 1024 * 1024,
            access: EtcdAccess::default(),
        }
    }
}

/// Why an etcd request failed. Classified once, here: see [`EtcdFailure::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum EtcdFailure {
    /// The client or the server refused or failed the request.
    #[error("{0}")]
    Client(#[from] etcd_client::Error),
    /// No answer in time. A write may still have been applied.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The compared record kept changing under us: other writers won every round.
    #[error("lost the compare to concurrent writers {attempts} times in a row")]
    CompareFailed {
        /// Rounds tried.
        attempts: u32,
    },
}

impl EtcdFailure {
    /// Returns whether trying again unchanged may succeed: etcd unreachable, without a
    /// leader, overloaded, or too slow. Invalid requests, compare failures, auth
    /// errors and the like are final.
    pub fn is_retryable(&self) -> bool {
        use etcd_client::Error;
        if self.is_auth_revision_old() {
            return true;
        }
        match self {
            EtcdFailure::Timeout(_) => true,
            EtcdFailure::CompareFailed { .. } => false,
            EtcdFailure::Client(error) => match error {
                // A certificate etcd or we refused does not get better by waiting.
                Error::TransportError(transport) => !mentions_certificate(transport),
                Error::IoError(_) => true,
                Error::GRpcStatus(status) => {
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::ResourceExhausted
                            | tonic::Code::Aborted
                    ) && !status.message().to_lowercase().contains("certificate")
                        && !mentions_certificate(status)
                }
                _ => false,
            },
        }
    }
}

/// Help texts of the etcd metrics (`docs/metrics.md`).
fn describe_metrics() {
    metrics::describe_histogram!(
        "ferry_etcd_request_seconds",
        metrics::Unit::Seconds,
        "time of each etcd request, answered or not"
    );
    metrics::describe_counter!(
        "ferry_etcd_request_errors_total",
        "etcd requests that failed or timed out"
    );
    metrics::describe_counter!(
        "ferry_etcd_compactions_total",
        "compactions of etcd's history by the leader"
    );
    metrics::describe_counter!(
        LEASE_FENCED,
        "times this process stopped writing because its etcd lease lapsed (self-fencing)"
    );
}

/// Times this process stopped writing because its lease was not renewed in time or
/// expired (self-fencing): a worker stops reporting, a coordinator steps down.
pub(crate) const LEASE_FENCED: &str = "ferry_etcd_lease_fenced_total";

/// Whether a transport error (or one of its sources) is about a TLS certificate.
fn mentions_certificate(error: &dyn std::error::Error) -> bool {
    let mut source_opt: Option<&dyn std::error::Error> = Some(error);
    while let Some(source) = source_opt {
        if source.to_string().to_lowercase().contains("certificate") {
            return true;
        }
        source_opt = source.source();
    }
    false
}

impl EtcdFailure {
    /// Whether etcd refused the request's token as older than its users and roles
    /// (`ErrAuthOldRevision`): a new token makes the same request go through.
    pub fn is_auth_revision_old(&self) -> bool {
        matches!(
            self,
            EtcdFailure::Client(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("revision of auth store is old")
        )
    }
}

/// The leader term a fenced store writes for.
#[derive(Clone)]
struct LeaderFence {
    key: Vec<u8>,
    create_revision: i64,
}

/// A coordination store in etcd. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct EtcdStore {
    pub(super) client: Client,
    pub(super) keys: KeyLayout,
    pub(super) options: EtcdStoreOptions,
    fence: Option<LeaderFence>,
    /// Group commit of this store's small txns, started on first use.
    committer: Arc<OnceLock<Coalescer>>,
    /// Chunk records this store wrote last, with their `mod_revision`: the next change
    /// of a chunk in flight compares against it instead of reading it first. Terminal
    /// chunks are dropped; bulk changes clear it. A stale entry only costs a failed
    /// compare and a read.
    chunk_cache: Arc<Mutex<ChunkCache>>,
}

/// Chunk key → the record as last written by this store and its `mod_revision`.
type ChunkCache = HashMap<Vec<u8>, (ChunkRecord, i64)>;

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.keys.prefix())
            .field("options", &self.options)
            .field(
                "fence",
                &self.fence.as_ref().map(|fence| {
                    (
                        String::from_utf8_lossy(&fence.key).into_owned(),
                        fence.create_revision,
                    )
                }),
            )
            .finish()
    }
}

/// What [`EtcdStore::update_chunk_guarded`] did.
pub(super) enum ChunkUpdate<T> {
    /// Written; the transition's answer.
    Applied(T),
    /// The transition wanted no change; nothing written.
    Unchanged,
    /// A guard of the extra writes failed; nothing written.
    GuardFailed,
}

/// What a txn did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TxnOutcome {
    /// Every compare held; every operation was applied.
    Applied,
    /// A compare (other than the leader fence) failed; nothing was written.
    CompareFailed,
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (one small read under `prefix`), so
    /// an unreachable cluster is reported here, as a retryable
    /// [`CoordinationError::Etcd`]. `prefix` is usually
    /// [`KeyLayout::default_prefix`]`(cluster)`; a trailing `/` is ignored, an empty
    /// prefix is refused.
    pub async fn connect(
        endpoints: &[String],
        prefix: String,
        options: EtcdStoreOptions,
    ) -> Result<Self> {
        let operation = format!("connect to {}", endpoints.join(","));
        let keys = KeyLayout::new(prefix);
        if keys.prefix().is_empty() {
            // An empty prefix would make the store (and delete_prefix) span every key.
            return Err(CoordinationError::Etcd {
                operation,
                source: EtcdFailure::Client(etcd_client::Error::InvalidArgs(
                    "the key prefix is empty; use e.g. /ferry/{cluster}/v1".into(),
                )),
            });
        }
        describe_metrics();
        let mut connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), options.request_timeout)
            .with_require_leader(true);
        if let Some(tls) = &options.access.tls {
            connect_options = connect_options.with_tls(tls.clone());
        }
        if let Some((user, password)) = &options.access.user {
            connect_options = connect_options.with_user(user.clone(), password.clone());
        }
        let client = bounded(
            &operation,
            options.request_timeout + options.connect_timeout,
            Client::connect(endpoints, Some(connect_options)),
        )
        .await?;
        let store = Self {
            client,
            keys,
            options,
            fence: None,
            committer: Arc::default(),
            chunk_cache: Arc::default(),
        };
        let root = store.keys.root();
        let probe = GetOptions::new()
            .with_range(prefix_range_end(&root))
            .with_count_only();
        let mut kv = store.client.kv_client();
        store.call(&operation, kv.get(root, Some(probe))).await?;
        Ok(store)
    }

    /// [`EtcdStore::connect`], retrying up to `attempts` times while etcd is unreachable
    /// (backoff from 200 ms to 2 s): a process may start before etcd does.
    pub async fn connect_retrying(
        endpoints: &[String],
        prefix: String,
        options: EtcdStoreOptions,
        attempts: u32,
    ) -> Result<Self> {
        let mut backoff = ferry_model::backoff::Backoff::new(Duration::from_millis(200));
        let mut tries = 1;
        loop {
            match Self::connect(endpoints, prefix.clone(), options.clone()).await {
                Err(error) if error.is_retryable() && tries < attempts => {
                    tracing::warn!(%error, "etcd not reachable yet; retrying");
                }
                other => return other,
            }
            tries += 1;
            tokio::time::sleep(backoff.next_pause()).await;
        }
    }

    /// Returns a store on the same connection whose every write also requires that
    /// `leader_key` still has `leader_create_revision` (the coordinator's term); a write
    /// after the term ended fails with [`CoordinationError::NotLeader`] and writes nothing.
    pub fn fenced_by(&self, leader_key: Vec<u8>, leader_create_revision: i64) -> Self {
        Self {
            fence: Some(LeaderFence {
                key: leader_key,
                create_revision: leader_create_revision,
            }),
            committer: Arc::default(),
            chunk_cache: Arc::default(),
            ..self.clone()
        }
    }

    /// Returns a store on the same connection with a group commit and a chunk cache of
    /// its own, as a store of another process would have (the scale benchmark's
    /// simulated workers: their txns must not share the leader's batches).
    pub fn detached(&self) -> Self {
        Self {
            committer: Arc::default(),
            chunk_cache: Arc::default(),
            ..self.clone()
        }
    }

    /// Returns the key layout under this store's prefix.
    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// Deletes every key under the store's prefix and returns how many were deleted.
    /// For tests and for tearing down a cluster's state; ferry itself never calls it.
    pub async fn delete_prefix(&self) -> Result<i64> {
        let operation = format!("delete every key under {}", self.keys.prefix());
        let root = self.keys.root();
        let options = DeleteOptions::new().with_range(prefix_range_end(&root));
        if self.fence.is_some() {
            // Through a txn so the fence applies (the count is then not reported).
            let delete = TxnOp::delete(root, Some(options));
            return match self.commit(&operation, Vec::new(), vec![delete]).await? {
                TxnOutcome::Applied => Ok(0),
                TxnOutcome::CompareFailed => Err(self.contention(&operation)),
            };
        }
        let mut kv = self.client.kv_client();
        let response = self
            .call(&operation, kv.delete(root, Some(options)))
            .await?;
        Ok(response.deleted())
    }

    /// Puts the chunks that `select` picks among the ended ones (VERIFIED or FAILED) back
    /// to PLANNED, their failure count reset, so the next run copies them again with
    /// overwrite under a higher attempt. Chunks in flight are left alone. Returns the
    /// changed ids.
    pub async fn recopy_chunks(
        &self,
        job: &JobId,
        select: impl Fn(&ChunkRecord) -> bool,
    ) -> Result<Vec<ChunkId>> {
        let operation = format!("re-queue chunks of job {job} for a re-copy");
        self.update_chunks(&operation, job, |record| {
            let ended = matches!(record.state, ChunkState::Verified | ChunkState::Failed);
            (ended && select(record)).then(|| ChunkRecord {
                state: ChunkState::Planned,
                failures: 0,
                rows: 0,
                checksum: None,
                ..record.clone()
            })
        })
        .await
    }

    /// The size of the etcd member's database file in bytes (for capacity figures).
    pub async fn db_size(&self) -> Result<i64> {
        let mut maintenance = self.client.maintenance_client();
        let status = self
            .call("read the etcd status", maintenance.status())
            .await?;
        Ok(status.db_size())
    }

    /// The underlying client, for the etcd-only conformance checks.
    #[cfg(feature = "testing")]
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Awaits one request under the request timeout.
    pub(super) async fn call<T>(
        &self,
        operation: &str,
        request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        let outcome = bounded(operation, self.options.request_timeout, request).await;
        if let Err(CoordinationError::Etcd { source, .. }) = &outcome
            && source.is_auth_revision_old()
        {
            // etcd refuses a token issued before its users or roles changed; the client
            // renews a token only when it is invalid, so renew it here: the caller's retry
            // (the error is retryable) then goes through.
            if let Err(error) = self.client.refresh_token().await {
                tracing::warn!(%error, "cannot renew the etcd authentication token");
            }
        }
        outcome
    }

    /// Reads one key; also returns the store revision the read saw.
    pub(super) async fn get(
        &self,
        operation: &str,
        key: Vec<u8>,
    ) -> Result<(Option<KeyValue>, i64)> {
        let mut kv = self.client.kv_client();
        let mut response = self.call(operation, kv.get(key, None)).await?;
        let revision = response.header().map_or(0, |header| header.revision());
        Ok((response.take_kvs().into_iter().next(), revision))
    }

    /// Reads every key starting with `prefix`, in key order, in pages of
    /// `list_page_size`, all at one revision: `revision`, or (when 0) that of the
    /// first page.
    pub(super) async fn list(
        &self,
        operation: &str,
        prefix: &[u8],
        revision: i64,
    ) -> Result<Vec<KeyValue>> {
        let end = prefix_range_end(prefix);
        let mut start = prefix.to_vec();
        let mut pinned_revision = revision;
        let mut entries = Vec::new();
        let mut kv = self.client.kv_client();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(self.options.list_page_size)
                .with_revision(pinned_revision);
            let mut response = self
                .call(operation, kv.get(start.clone(), Some(options)))
                .await?;
            if pinned_revision == 0 {
                pinned_revision = response.header().map_or(0, |header| header.revision());
            }
            let more = response.more();
            let page = response.take_kvs();
            let Some(last) = page.last() else {
                break;
            };
            start = key_after(last.key());
            entries.extend(page);
            if !more {
                break;
            }
        }
        Ok(entries)
    }

    /// Runs one txn: `compares` (plus the leader fence) then `operations`.
    pub(super) async fn commit(
        &self,
        operation: &str,
        compares: Vec<Compare>,
        operations: Vec<TxnOp>,
    ) -> Result<TxnOutcome> {
        Ok(self.commit_raw(operation, compares, operations).await?.0)
    }

    /// [`EtcdStore::commit`], also returning the revision an applied txn wrote at.
    pub(super) async fn commit_raw(
        &self,
        operation: &str,
        mut compares: Vec<Compare>,
        operations: Vec<TxnOp>,
    ) -> Result<Committed> {
        if let Some(fence) = &self.fence {
            compares.push(Compare::create_revision(
                fence.key.clone(),
                CompareOp::Equal,
                fence.create_revision,
            ));
        }
        debug_assert!(compares.len() <= self.options.max_txn_ops.max(1));
        debug_assert!(operations.len() <= self.options.max_txn_ops.max(1));
        let txn = Txn::new().when(compares).and_then(operations);
        let mut kv = self.client.kv_client();
        let response = self.call(operation, kv.txn(txn)).await?;
        if response.succeeded() {
            let revision = response.header().map_or(0, |header| header.revision());
            return Ok((TxnOutcome::Applied, revision));
        }
        self.check_fence(operation).await?;
        Ok((TxnOutcome::CompareFailed, 0))
    }

    /// The leader fence as a guard, for txns built outside [`EtcdStore::commit_raw`].
    pub(super) fn fence_guard(&self) -> Option<Guard> {
        self.fence
            .as_ref()
            .map(|fence| Guard::CreateRevision(fence.key.clone(), fence.create_revision))
    }

    /// Runs a [`SmallTxn`] alone.
    pub(super) async fn commit_small(&self, operation: &str, txn: &SmallTxn) -> Result<Committed> {
        self.commit_raw(operation, txn.compares(), txn.ops()).await
    }

    /// Runs a [`SmallTxn`] through this store's group commit (see [`super::coalesce`]).
    pub(super) async fn commit_coalesced(
        &self,
        operation: &str,
        txn: SmallTxn,
    ) -> Result<Committed> {
        let committer = self.committer.get_or_init(|| {
            // The committer's own store has no committer: it must not keep its own
            // channel open (the task ends when this store's clones are all dropped).
            Coalescer::start(Self {
                committer: Arc::default(),
                ..self.clone()
            })
        });
        committer.commit(self, operation, txn).await
    }

    /// After a failed txn: whether the fence is what failed. Sound after the fact
    /// because a lost term never comes back (see the module doc).
    async fn check_fence(&self, operation: &str) -> Result<()> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let (leader, _) = self.get(operation, fence.key.clone()).await?;
        let holds = leader.is_some_and(|leader| leader.create_revision() == fence.create_revision);
        if holds {
            return Ok(());
        }
        Err(CoordinationError::NotLeader {
            leader_key: String::from_utf8_lossy(&fence.key).into_owned(),
            create_revision: fence.create_revision,
        })
    }

    pub(super) fn contention(&self, operation: &str) -> CoordinationError {
        CoordinationError::Etcd {
            operation: operation.to_owned(),
            source: EtcdFailure::CompareFailed {
                attempts: self.options.max_compare_retries + 1,
            },
        }
    }

    /// Reads a chunk, lets `transition` decide, and writes its answer with a compare
    /// on the revision read; re-reads and re-decides when another writer won. A
    /// `transition` that returns `None` writes nothing.
    async fn update_chunk<T>(
        &self,
        operation: &str,
        job: &JobId,
        chunk: ChunkId,
        transition: impl Fn(ChunkRecord) -> Result<Option<(ChunkRecord, T)>>,
    ) -> Result<Option<T>> {
        self.update_chunk_and(operation, job, chunk, transition, |_| SmallTxn::default())
            .await
    }

    /// [`EtcdStore::update_chunk`], writing in the same txn the writes `also` gives for
    /// the record as read (`also`'s guards must not be given: see
    /// [`EtcdStore::update_chunk_guarded`]).
    async fn update_chunk_and<T>(
        &self,
        operation: &str,
        job: &JobId,
        chunk: ChunkId,
        transition: impl Fn(ChunkRecord) -> Result<Option<(ChunkRecord, T)>>,
        also: impl Fn(&ChunkRecord) -> SmallTxn,
    ) -> Result<Option<T>> {
        match self
            .update_chunk_guarded(operation, job, chunk, transition, also)
            .await?
        {
            ChunkUpdate::Applied(answer) => Ok(Some(answer)),
            ChunkUpdate::Unchanged => Ok(None),
            // `also` has no guards: only the chunk's own compare can fail.
            ChunkUpdate::GuardFailed => Err(self.contention(operation)),
        }
    }

    /// Reads a chunk, lets `transition` decide, and writes its answer together with the
    /// guards and writes `also` gives for the record as read, in one txn that also
    /// compares the chunk's `mod_revision`. The record comes from the chunk cache when
    /// this store wrote it last, else from a serializable read (no consensus round: a
    /// stale answer only fails the compare); anything but an applied txn on such a
    /// record is decided again on a linearizable read. When `also` gave guards and the
    /// txn failed, nothing is retried: [`ChunkUpdate::GuardFailed`] (nothing written).
    /// The txn goes through the group commit.
    pub(super) async fn update_chunk_guarded<T>(
        &self,
        operation: &str,
        job: &JobId,
        chunk: ChunkId,
        transition: impl Fn(ChunkRecord) -> Result<Option<(ChunkRecord, T)>>,
        also: impl Fn(&ChunkRecord) -> SmallTxn,
    ) -> Result<ChunkUpdate<T>> {
        let key = self.keys.chunk(job, chunk);
        let mut cached = self.cached_chunk(&key);
        let mut linearizable = false;
        for _ in 0..=self.options.max_compare_retries {
            let confirmed = cached.is_none() && linearizable;
            let (current, revision) = match cached.take() {
                Some(hit) => hit,
                None => {
                    let (entry, _) = self.read_chunk(operation, &key, linearizable).await?;
                    let was_linearizable = linearizable;
                    linearizable = true;
                    let Some(entry) = entry else {
                        if was_linearizable {
                            return Err(CoordinationError::NotFound {
                                what: format!("chunk {chunk} of job {job}"),
                            });
                        }
                        continue;
                    };
                    (decode_chunk(&entry)?, entry.mod_revision())
                }
            };
            let SmallTxn {
                guards: also_guards,
                writes: mut also_writes,
            } = also(&current);
            let guarded = !also_guards.is_empty();
            let decided = transition(current);
            let (next, answer) = match decided {
                Ok(Some(change)) => change,
                // The cache or a serializable read may be behind another writer: decide
                // on what etcd holds.
                _ if !confirmed => {
                    self.forget_chunk(&key);
                    linearizable = true;
                    continue;
                }
                Ok(None) => return Ok(ChunkUpdate::Unchanged),
                Err(error) => return Err(error),
            };
            let value = encode_chunk(&key, &next)?;
            also_writes.push(Write::Put(key.clone(), value));
            let mut guards = vec![Guard::ModRevision(key.clone(), revision)];
            guards.extend(also_guards);
            let txn = SmallTxn {
                guards,
                writes: also_writes,
            };
            let (outcome, written_at) = self.commit_coalesced(operation, txn).await?;
            if outcome == TxnOutcome::Applied {
                self.remember_chunk(key, next, written_at);
                return Ok(ChunkUpdate::Applied(answer));
            }
            self.forget_chunk(&key);
            if guarded {
                return Ok(ChunkUpdate::GuardFailed);
            }
            linearizable = true;
        }
        Err(self.contention(operation))
    }

    /// Reads a chunk key: linearizable, or serializable (the member's own state, with
    /// no consensus round; it may be behind).
    async fn read_chunk(
        &self,
        operation: &str,
        key: &[u8],
        linearizable: bool,
    ) -> Result<(Option<KeyValue>, i64)> {
        if linearizable {
            return self.get(operation, key.to_vec()).await;
        }
        let mut kv = self.client.kv_client();
        let mut response = self
            .call(
                operation,
                kv.get(key.to_vec(), Some(GetOptions::new().with_serializable())),
            )
            .await?;
        let revision = response.header().map_or(0, |header| header.revision());
        Ok((response.take_kvs().into_iter().next(), revision))
    }

    fn chunk_cache(&self) -> std::sync::MutexGuard<'_, ChunkCache> {
        self.chunk_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn cached_chunk(&self, key: &[u8]) -> Option<(ChunkRecord, i64)> {
        self.chunk_cache().get(key).cloned()
    }

    pub(super) fn forget_chunk(&self, key: &[u8]) {
        self.chunk_cache().remove(key);
    }

    /// Keeps a chunk this store just wrote, until it ends (VERIFIED or FAILED).
    fn remember_chunk(&self, key: Vec<u8>, record: ChunkRecord, revision: i64) {
        let mut cache = self.chunk_cache();
        let ended = matches!(record.state, ChunkState::Verified | ChunkState::Failed);
        if !ended && revision > 0 {
            cache.insert(key, (record, revision));
        } else {
            cache.remove(&key);
        }
    }

    /// Applies `transition` to every chunk of the job it selects (returns `Some` for),
    /// in batched compare-and-set txns; returns the changed ids in id order.
    async fn update_chunks(
        &self,
        operation: &str,
        job: &JobId,
        transition: impl Fn(&ChunkRecord) -> Option<ChunkRecord>,
    ) -> Result<Vec<ChunkId>> {
        // The bulk change bypasses the cache; forget it rather than track each key.
        self.chunk_cache().clear();
        let Some((_, chunks)) = self.load_entries(operation, job).await? else {
            return Ok(Vec::new());
        };
        let mut pending = Vec::new();
        for (entry, record) in &chunks {
            if let Some(next) = transition(record) {
                let value = encode_chunk(entry.key(), &next)?;
                pending.push((record.id, entry.key().to_vec(), entry.mod_revision(), value));
            }
        }
        // One compare per chunk plus the fence must fit in a txn.
        let max_per_txn = self.options.max_txn_ops.saturating_sub(1).max(1);
        let mut changed = Vec::new();
        for batch in batches(pending, max_per_txn, self.options.max_txn_bytes, |item| {
            item.1.len() + item.3.len()
        }) {
            let compares = batch
                .iter()
                .map(|(_, key, revision, _)| {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, *revision)
                })
                .collect();
            let puts = batch
                .iter()
                .map(|(_, key, _, value)| TxnOp::put(key.clone(), value.clone(), None))
                .collect();
            if self.commit(operation, compares, puts).await? == TxnOutcome::Applied {
                changed.extend(batch.iter().map(|(id, ..)| *id));
                continue;
            }
            // Someone else changed a chunk of the batch: redo it chunk by chunk.
            for (id, ..) in batch {
                let redone = self
                    .update_chunk(operation, job, id, |record| {
                        Ok(transition(&record).map(|next| (next, ())))
                    })
                    .await?;
                if redone.is_some() {
                    changed.push(id);
                }
            }
        }
        changed.sort_unstable();
        Ok(changed)
    }

    /// Reads a job record and its chunks at one revision (`None` without a record).
    async fn load_entries(
        &self,
        operation: &str,
        job: &JobId,
    ) -> Result<Option<(JobRecord, Vec<(KeyValue, ChunkRecord)>)>> {
        let (entry, revision) = self.get(operation, self.keys.job_record(job)).await?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let (record, num_chunks) = decode_job(&entry)?;
        let entries = self
            .list(operation, &self.keys.chunks_root(job), revision)
            .await?;
        let mut chunks = Vec::with_capacity(entries.len());
        for entry in entries {
            let chunk = decode_chunk(&entry)?;
            chunks.push((entry, chunk));
        }
        chunks.sort_by_key(|(_, chunk)| chunk.id);
        if chunks.len() != num_chunks as usize {
            return Err(CoordinationError::CorruptValue {
                key: key_text(&self.keys.job_record(job)),
                detail: format!(
                    "the job record counts {num_chunks} chunks but {} are stored",
                    chunks.len()
                ),
            });
        }
        Ok(Some((record, chunks)))
    }
}

#[async_trait]
impl Coordination for EtcdStore {
    async fn load_job(&self, job: &JobId) -> Result<Option<(JobRecord, Vec<ChunkRecord>)>> {
        let operation = format!("load job {job}");
        let loaded = self.load_entries(&operation, job).await?;
        Ok(loaded.map(|(record, chunks)| {
            let chunks = chunks.into_iter().map(|(_, chunk)| chunk).collect();
            (record, chunks)
        }))
    }

    async fn load_job_record(&self, job: &JobId) -> Result<Option<JobRecord>> {
        let operation = format!("load the record of job {job}");
        let (entry, _) = self.get(&operation, self.keys.job_record(job)).await?;
        entry
            .map(|entry| decode_job(&entry).map(|(record, _)| record))
            .transpose()
    }

    async fn create_job(&self, job: &JobRecord, chunks: &[ChunkRecord]) -> Result<()> {
        let operation = format!("create job {}", job.id);
        let record_key = self.keys.job_record(&job.id);
        let num_chunks =
            u32::try_from(chunks.len()).map_err(|_| CoordinationError::CorruptValue {
                key: key_text(&record_key),
                detail: format!("{} chunks do not fit the record", chunks.len()),
            })?;
        debug_assert_eq!(
            chunks
                .iter()
                .map(|chunk| chunk.id)
                .collect::<HashSet<_>>()
                .len(),
            chunks.len(),
            "chunk ids of job {} are not unique",
            job.id
        );
        let record_value = encode_job(&record_key, job, num_chunks)?;
        let mut puts = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let key = self.keys.chunk(&job.id, chunk.id);
            let record = planned(chunk);
            let value = encode_chunk(&key, &record)?;
            puts.push((key, value, record));
        }
        let record_absent = || Compare::create_revision(record_key.clone(), CompareOp::Equal, 0);
        let already_exists = || CoordinationError::AlreadyExists {
            what: format!("job {}", job.id),
        };

        // 1. Clear the chunks of an earlier creation that was cut off before its record.
        let chunks_root = self.keys.chunks_root(&job.id);
        let clear = TxnOp::delete(
            chunks_root.clone(),
            Some(DeleteOptions::new().with_range(prefix_range_end(&chunks_root))),
        );
        if self
            .commit(&operation, vec![record_absent()], vec![clear])
            .await?
            == TxnOutcome::CompareFailed
        {
            return Err(already_exists());
        }
        // 2. The chunks, in txns of at most max_txn_ops puts.
        for batch in batches(
            puts,
            self.options.max_txn_ops.max(1),
            self.options.max_txn_bytes,
            |(key, value, _)| key.len() + value.len(),
        ) {
            let operations = batch
                .iter()
                .map(|(key, value, _)| TxnOp::put(key.clone(), value.clone(), None))
                .collect();
            let (outcome, revision) = self
                .commit_raw(&operation, vec![record_absent()], operations)
                .await?;
            if outcome == TxnOutcome::CompareFailed {
                return Err(already_exists());
            }
            // The first assignment of each chunk then needs no read.
            for (key, _, record) in batch {
                self.remember_chunk(key, record, revision);
            }
        }
        // 3. The record, last: from now on the job exists, complete.
        let write_record = TxnOp::put(record_key.clone(), record_value, None);
        if self
            .commit(&operation, vec![record_absent()], vec![write_record])
            .await?
            == TxnOutcome::CompareFailed
        {
            return Err(already_exists());
        }
        Ok(())
    }

    async fn register_worker(&self, worker: &WorkerId) -> Result<()> {
        let operation = format!("register worker {worker}");
        let value = pb::WorkerRecordValue {
            id: worker.0.clone(),
            registered_at_unix_ms: now_unix_ms(),
            ..Default::default()
        }
        .encode_to_vec();
        let put = TxnOp::put(self.keys.worker(worker), value, None);
        match self.commit(&operation, Vec::new(), vec![put]).await? {
            TxnOutcome::Applied => Ok(()),
            // Without compares of our own only the fence can fail, and commit reports that.
            TxnOutcome::CompareFailed => Err(self.contention(&operation)),
        }
    }

    async fn requeue_in_flight(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        let operation = format!("requeue the in-flight chunks of job {job}");
        self.update_chunks(&operation, job, |record| {
            record.state.in_flight().then(|| ChunkRecord {
                state: ChunkState::Planned,
                worker: None,
                ..record.clone()
            })
        })
        .await
    }

    async fn assign(&self, job: &JobId, chunk: ChunkId, worker: &WorkerId) -> Result<Attempt> {
        let operation = format!("assign chunk {chunk} of job {job} to worker {worker}");
        let assigned = self
            .update_chunk(&operation, job, chunk, |record| {
                assign_transition(record, worker, crate::now_unix_ms()).map(Some)
            })
            .await?;
        assigned.ok_or_else(|| self.contention(&operation))
    }

    async fn start_attempt(
        &self,
        job: &JobId,
        chunk: ChunkId,
        worker: &WorkerId,
    ) -> Result<Attempt> {
        let operation = format!("start chunk {chunk} of job {job} on worker {worker}");
        let started = self
            .update_chunk(&operation, job, chunk, |record| {
                let (assigned, attempt) = assign_transition(record, worker, crate::now_unix_ms())?;
                let started = report_transition(assigned, attempt, ChunkState::Copying)?;
                Ok(Some((started, attempt)))
            })
            .await?;
        started.ok_or_else(|| self.contention(&operation))
    }

    async fn report_state(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        state: ChunkState,
    ) -> Result<()> {
        let operation = format!("report chunk {chunk} of job {job} as {state}");
        self.update_chunk(&operation, job, chunk, |record| {
            report_transition(record, attempt, state).map(|next| Some((next, ())))
        })
        .await?;
        Ok(())
    }

    async fn complete(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        completion: &ChunkCompletion,
    ) -> Result<ChunkRecord> {
        let operation = format!("complete attempt {attempt} of chunk {chunk} of job {job}");
        // In the same txn, the attempt's assignment is withdrawn (a late result of it is
        // refused from then on) and what it left is cleared.
        let completed = self
            .update_chunk_and(
                &operation,
                job,
                chunk,
                |record| {
                    let next =
                        complete_transition(record, attempt, completion, crate::now_unix_ms())?;
                    Ok(Some((next.clone(), next)))
                },
                |current| SmallTxn {
                    guards: Vec::new(),
                    writes: match &current.worker {
                        Some(worker) => self.attempt_cleanup(worker, job, chunk, attempt),
                        None => Vec::new(),
                    },
                },
            )
            .await?;
        completed.ok_or_else(|| self.contention(&operation))
    }

    async fn load_chunk(&self, job: &JobId, chunk: ChunkId) -> Result<Option<ChunkRecord>> {
        let operation = format!("load chunk {chunk} of job {job}");
        let (entry, _) = self.get(&operation, self.keys.chunk(job, chunk)).await?;
        entry.as_ref().map(decode_chunk).transpose()
    }

    async fn split_chunk(
        &self,
        job: &JobId,
        chunk: ChunkId,
        after: Attempt,
        pieces: &[(ChunkRange, u64)],
    ) -> Result<Vec<ChunkRecord>> {
        self.split_chunk_txn(job, chunk, after, pieces).await
    }

    async fn reset_failed(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        let operation = format!("reset the failed chunks of job {job}");
        self.update_chunks(&operation, job, |record| {
            (record.state == ChunkState::Failed).then(|| ChunkRecord {
                state: ChunkState::Planned,
                failures: 0,
                ..record.clone()
            })
        })
        .await
    }

    async fn save_policy(
        &self,
        job: &JobId,
        policy_json: &str,
        change: &PolicyChange,
    ) -> Result<()> {
        let operation = format!("save the throttle policy of job {job}");
        self.append_history(&operation, job, Some(policy_json), change)
            .await
    }

    async fn load_policy(&self, job: &JobId) -> Result<Option<String>> {
        let operation = format!("load the throttle policy of job {job}");
        let (entry, _) = self.get(&operation, self.keys.policy(job)).await?;
        let policy_opt = entry
            .map(|entry| decode::<pb::PolicyValue>(&entry).map(|policy| policy.policy_json))
            .transpose()?;
        // A job whose history got an entry before any policy was stored holds "".
        Ok(policy_opt.filter(|policy_json| !policy_json.is_empty()))
    }

    async fn policy_history(&self, job: &JobId) -> Result<Vec<PolicyChange>> {
        let operation = format!("list the throttle policy history of job {job}");
        let entries = self
            .list(&operation, &self.keys.policy_history_root(job), 0)
            .await?;
        entries
            .iter()
            .map(|entry| {
                decode::<pb::PolicyChangeValue>(entry).map(|change| PolicyChange {
                    at_unix_ms: change.at_unix_ms,
                    origin: change.origin,
                    summary: change.summary,
                    actor: change.actor,
                    action: if change.action.is_empty() {
                        crate::THROTTLE_ACTION.to_owned()
                    } else {
                        change.action
                    },
                })
            })
            .collect()
    }

    async fn record_event(&self, job: &JobId, event: &PolicyChange) -> Result<()> {
        let operation = format!("record {} in the history of job {job}", event.action);
        self.append_history(&operation, job, None, event).await
    }
}

impl EtcdStore {
    /// Appends `change` to the job's history under the next sequence number, storing
    /// `policy_json` as the job's policy (`None`: the stored one stays), in one
    /// transaction that another writer's append makes fail and retry.
    async fn append_history(
        &self,
        operation: &str,
        job: &JobId,
        policy_json: Option<&str>,
        change: &PolicyChange,
    ) -> Result<()> {
        let policy_key = self.keys.policy(job);
        for _ in 0..=self.options.max_compare_retries {
            let (entry, _) = self.get(operation, policy_key.clone()).await?;
            let (stored, revision) = match &entry {
                Some(entry) => (
                    Some(decode::<pb::PolicyValue>(entry)?),
                    entry.mod_revision(),
                ),
                // A key that does not exist has mod_revision 0.
                None => (None, 0),
            };
            let last_seq = stored.as_ref().map_or(0, |policy| policy.last_history_seq);
            let seq = last_seq + 1;
            let history_key = self.keys.policy_history_entry(job, seq);
            let policy = pb::PolicyValue {
                policy_json: match policy_json {
                    Some(json) => json.to_owned(),
                    None => stored.map(|policy| policy.policy_json).unwrap_or_default(),
                },
                last_history_seq: seq,
            };
            let history = pb::PolicyChangeValue {
                at_unix_ms: change.at_unix_ms,
                origin: change.origin.clone(),
                summary: change.summary.clone(),
                actor: change.actor.clone(),
                action: change.action.clone(),
            };
            let compares = vec![
                Compare::mod_revision(policy_key.clone(), CompareOp::Equal, revision),
                Compare::create_revision(history_key.clone(), CompareOp::Equal, 0),
            ];
            let puts = vec![
                TxnOp::put(policy_key.clone(), policy.encode_to_vec(), None),
                TxnOp::put(history_key, history.encode_to_vec(), None),
            ];
            if self.commit(operation, compares, puts).await? == TxnOutcome::Applied {
                return Ok(());
            }
        }
        Err(self.contention(operation))
    }
}

/// Awaits `request` for at most `limit`, mapping both failures to [`CoordinationError::Etcd`].
pub(super) async fn bounded<T>(
    operation: &str,
    limit: Duration,
    request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(limit, request).await;
    metrics::histogram!("ferry_etcd_request_seconds").record(started.elapsed().as_secs_f64());
    let failure = match outcome {
        Ok(Ok(answer)) => return Ok(answer),
        Ok(Err(error)) => EtcdFailure::Client(error),
        Err(_elapsed) => EtcdFailure::Timeout(limit),
    };
    metrics::counter!("ferry_etcd_request_errors_total").increment(1);
    Err(CoordinationError::Etcd {
        operation: operation.to_owned(),
        source: failure,
    })
}

/// Splits `items` into batches of at most `max_items` items and (unless one item is
/// bigger alone) at most `max_bytes` bytes as measured by `size`.
fn batches<T>(
    items: Vec<T>,
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut all = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        let full = current.len() >= max_items || current_bytes + item_bytes > max_bytes;
        if full && !current.is_empty() {
            all.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += item_bytes;
        current.push(item);
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd_values::chunk_from_proto;
    use ferry_model::checksum::RangeChecksum;
    use ferry_model::key::ChunkRange;
    use ferry_model::key::{KeyBound, KeyValue as Bound};

    fn sample_chunk() -> ChunkRecord {
        ChunkRecord {
            id: ChunkId(7),
            table_index: 2,
            range: ChunkRange::Interval {
                lower: Some(KeyBound(vec![Bound::Int(-5), Bound::Text("é".into())])),
                upper: None,
            },
            estimated_rows: 12_345,
            state: ChunkState::Verified,
            attempt: Attempt(3),
            failures: 2,
            mismatches: 1,
            rows: 12_000,
            checksum: Some(RangeChecksum {
                rows: 12_000,
                sum: u128::MAX - 12_345,
            }),
            last_error: Some("checksum mismatch".into()),
            worker: Some(WorkerId("w-1".into())),
            partition: Some("events_2024".into()),
            evidence: crate::ChunkEvidence {
                worker: Some(WorkerId("w-0".into())),
                started_at_unix_ms: Some(1_700_000_000_000),
                ended_at_unix_ms: Some(1_700_000_001_500),
                target_checksum: Some(RangeChecksum {
                    rows: 12_000,
                    sum: u128::MAX - 12_345,
                }),
                sync: Some(ferry_model::execution::SyncChanges {
                    rows_read: 40,
                    inserted: 3,
                    updated: 5,
                    deleted: 7,
                    recopied_rows: 0,
                    repaired: false,
                    keys_compared: true,
                }),
            },
        }
    }

    #[test]
    fn a_chunk_value_written_before_evidence_reads_with_none() {
        let mut old = pb::ChunkRecordValue::decode(
            encode_chunk(b"k", &sample_chunk())
                .expect("encodes")
                .as_slice(),
        )
        .expect("decodes");
        old.last_worker = None;
        old.started_at_unix_ms = None;
        old.ended_at_unix_ms = None;
        old.target_checksum = None;
        old.sync = None;
        let record = chunk_from_proto(old).expect("valid");
        assert_eq!(record.evidence, crate::ChunkEvidence::default());
        assert_eq!(record.rows, 12_000);
    }

    #[test]
    fn chunk_record_round_trips_through_its_value() {
        let record = sample_chunk();
        let bytes = encode_chunk(b"k", &record).expect("encodes");
        let value = pb::ChunkRecordValue::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(chunk_from_proto(value).expect("valid"), record);
    }

    #[test]
    fn unknown_state_is_corrupt_not_a_panic() {
        let value = pb::ChunkRecordValue {
            state: 99,
            range: Some(pb::ChunkRange::from(&ChunkRange::WholeTable)),
            ..Default::default()
        };
        assert!(chunk_from_proto(value).is_err());
        let missing_range = pb::ChunkRecordValue {
            state: pb::ChunkState::Planned as i32,
            ..Default::default()
        };
        assert!(chunk_from_proto(missing_range).is_err());
    }

    #[test]
    fn retry_hint_separates_unavailable_from_refused() {
        let unavailable =
            EtcdFailure::Client(tonic::Status::unavailable("etcdserver: no leader").into());
        let invalid = EtcdFailure::Client(
            tonic::Status::invalid_argument("etcdserver: too many operations in txn request")
                .into(),
        );
        assert!(unavailable.is_retryable());
        assert!(EtcdFailure::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!invalid.is_retryable());
        assert!(!EtcdFailure::CompareFailed { attempts: 3 }.is_retryable());
        let error = CoordinationError::Etcd {
            operation: "assign chunk 1 of job j".into(),
            source: unavailable,
        };
        assert!(error.is_retryable());
        assert!(
            !CoordinationError::NotLeader {
                leader_key: "k".into(),
                create_revision: 1
            }
            .is_retryable()
        );
    }

    #[test]
    fn batches_respect_item_and_byte_limits() {
        let sizes: Vec<usize> = vec![10; 300];
        let by_count = batches(sizes.clone(), 128, usize::MAX, |size| *size);
        assert_eq!(
            by_count.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![128, 128, 44]
        );
        let by_bytes = batches(sizes, 128, 95, |size| *size);
        assert!(
            by_bytes
                .iter()
                .all(|batch| batch.len() == 9 || batch.len() == 3)
        );
        let oversized = batches(vec![500, 1], 128, 100, |size| *size);
        assert_eq!(oversized, vec![vec![500], vec![1]]);
    }

    #[test]
    fn completion_follows_the_state_machine() {
        let assigned = ChunkRecord {
            state: ChunkState::Planned,
            attempt: Attempt(0),
            failures: 0,
            mismatches: 0,
            worker: None,
            ..sample_chunk()
        };
        let (assigned, attempt) =
            assign_transition(assigned, &WorkerId("w".into()), 1_000).expect("planned");
        assert_eq!(attempt, Attempt(1));
        assert_eq!(assigned.evidence.started_at_unix_ms, Some(1_000));
        assert_eq!(assigned.evidence.worker, Some(WorkerId("w".into())));
        let retried = complete_transition(
            assigned.clone(),
            attempt,
            &ChunkCompletion::Retry {
                reason: "boom".into(),
                mismatch: true,
            },
            2_000,
        )
        .expect("in flight");
        assert_eq!(retried.evidence.ended_at_unix_ms, Some(2_000));
        assert_eq!(retried.state, ChunkState::Planned);
        assert_eq!((retried.failures, retried.mismatches), (1, 1));
        assert_eq!(retried.worker, None);
        assert!(matches!(
            complete_transition(
                retried,
                attempt,
                &ChunkCompletion::Requeue { reason: "x".into() },
                3_000,
            ),
            Err(CoordinationError::StaleAttempt { .. })
        ));
        assert!(matches!(
            report_transition(assigned, attempt, ChunkState::Verified),
            Err(CoordinationError::InvalidTransition { .. })
        ));
    }
}
