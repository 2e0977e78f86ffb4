//! Scale benchmark of the coordinator (part of `make bench`, not a test): plans a job of
//! `--chunks` chunks and runs it to the end with the shared scheduler on `--workers`
//! simulated workers of `--slots` slots each, whose chunks finish at once, so what is
//! measured is the coordinator and its store alone.
//!
//! - `--store local`: the in-process store (`ferryctl local`'s state file, in memory).
//! - `--store etcd`: the etcd store with the cluster protocol: the leader's remote
//!   executor writes each attempt's start and assignment in one txn, each simulated
//!   worker (a store of its own: its own group commit) watches its assignments and
//!   writes a VERIFIED result, as `ferry-worker` does for an attempt that ends before
//!   its first progress (and claim) is due.
//!
//! Prints assignments per second, the process's peak RSS (simulated workers included)
//! and, for etcd, how much the database file grew during the run. Usage:
//! `cargo run --release -p ferry-coordinator --example scale -- --store etcd
//! --etcd http://127.0.0.1:52379 [--chunks 100000] [--workers 200] [--slots 2]
//! [--compact-every 30]` (seconds between compactions of etcd's history, as the leader
//! does by default; 0 for none).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferry_coordination::cluster::WorkerInfo;
use ferry_coordination::conformance::sample_job;
use ferry_coordination::keys::KeyLayout;
use ferry_coordination::{
    ChunkState, ClusterRef, Coordination, EtcdStore, EtcdStoreOptions, LocalStore,
};
use ferry_coordinator::cluster::handoff::HandoffStore;
use ferry_coordinator::cluster::pool::SlotBoard;
use ferry_coordinator::cluster::remote::{AttemptRouter, RemoteExecutor};
use ferry_coordinator::cluster::runtime::compact_history;
use ferry_coordinator::scheduler::{Pacing, SchedulerOptions, run_job, run_job_on};
use ferry_model::checksum::RangeChecksum;
use ferry_model::execution::{ChunkExecutor, ChunkResult, ChunkTask};
use ferry_model::ids::{JobId, WorkerId};
use ferry_model::spec::{OnMismatch, VerifyMode};
use tokio_util::sync::CancellationToken;

struct Args {
    store: String,
    etcd: String,
    chunks: u32,
    workers: u32,
    slots: u32,
    /// Seconds between compactions of etcd's history, as the leader does by default
    /// (`history.compact_interval`); 0: none.
    compact_every: u32,
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        store: "local".into(),
        etcd: "http://127.0.0.1:52379".into(),
        chunks: 100_000,
        workers: 200,
        slots: 2,
        compact_every: 30,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u32>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--store" => parsed.store = value.clone(),
            "--etcd" => parsed.etcd = value.clone(),
            "--chunks" => parsed.chunks = number()?,
            "--workers" => parsed.workers = number()?,
            "--slots" => parsed.slots = number()?,
            "--compact-every" => parsed.compact_every = number()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(parsed)
}

/// Ends every attempt at once, verified.
struct Instantly;

#[async_trait]
impl ChunkExecutor for Instantly {
    async fn execute(&self, _task: ChunkTask) -> ChunkResult {
        verified()
    }
}

fn verified() -> ChunkResult {
    ChunkResult::Verified {
        rows: 1,
        checksum: RangeChecksum { rows: 1, sum: 1 },
        sync: None,
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let job = JobId(format!("scale-{}", std::process::id()));
    let (record, chunks) = sample_job(&job, args.chunks);
    let slots = (args.workers * args.slots) as usize;
    let options = SchedulerOptions {
        workers: slots,
        max_attempts: 3,
        on_mismatch: OnMismatch::Recopy,
        verify: VerifyMode::Checksum,
        retry_backoff: Duration::from_millis(10),
        mode: ferry_model::spec::JobMode::Copy,
        // Measures the store, not the cutting of chunks.
        split_idle: false,
        target_rows: 500_000,
        source_snapshot: None,
        sync: None,
        target_keys: None,
    };
    let pacing = Pacing::fixed(u32::try_from(slots)?);
    let (events, mut drain) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    let cancel = CancellationToken::new();

    let (planned, ran, outcome, db_size) = match args.store.as_str() {
        "local" => {
            let store: Arc<dyn Coordination> = Arc::new(LocalStore::in_memory()?);
            let started = Instant::now();
            store.create_job(&record, &chunks).await?;
            let planned = started.elapsed();
            let started = Instant::now();
            let outcome = run_job(
                store,
                &record,
                Arc::new(Instantly),
                &options,
                pacing,
                events,
                cancel.clone(),
            )
            .await?;
            (planned, started.elapsed(), outcome, None)
        }
        "etcd" => {
            let endpoints = vec![args.etcd.clone()];
            let prefix = KeyLayout::default_prefix(&format!("scale-{}", std::process::id()));
            let etcd = EtcdStore::connect(&endpoints, prefix, EtcdStoreOptions::default()).await?;
            let store: ClusterRef = Arc::new(etcd.clone());
            let lease = store.start_lease(Duration::from_secs(30), &cancel).await?;
            for index in 0..args.workers {
                let worker = WorkerId(format!("sim-{index:03}"));
                let info = WorkerInfo {
                    id: worker.clone(),
                    slots: args.slots,
                    draining: false,
                    host: "bench".into(),
                    pid: std::process::id(),
                    registered_at_unix_ms: 0,
                };
                store.put_live_worker(&info, lease.id).await?;
                let worker_store: ClusterRef = Arc::new(etcd.detached());
                tokio::spawn(simulated_worker(worker_store, worker, cancel.clone()));
            }
            if args.compact_every > 0 {
                // What the leader does by default (history.compact_interval = 30s,
                // keep_revisions = 100000).
                tokio::spawn(compact_history(
                    store.clone(),
                    Duration::from_secs(u64::from(args.compact_every)),
                    100_000,
                    cancel.clone(),
                ));
            }
            let db_before = etcd.db_size().await?;
            let started = Instant::now();
            store.create_job(&record, &chunks).await?;
            let planned = started.elapsed();
            let workers = store.watch_workers(&cancel);
            let executor = Arc::new(RemoteExecutor {
                store: store.clone(),
                workers: workers.clone(),
                router: AttemptRouter::start(
                    store.watch_results(&cancel),
                    store.watch_progress(&cancel),
                    &cancel,
                ),
                worker_ttl: Duration::from_secs(30),
                grace: Duration::from_secs(5),
                job_cancelled: CancellationToken::new(),
                pacer: None,
                started: Default::default(),
            });
            // Let the mirrors read their first snapshot.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let board = SlotBoard::new(workers);
            let mut pool = board.pool(record.id.clone(), Vec::new());
            let started = Instant::now();
            let outcome = run_job_on(
                HandoffStore::new(executor.clone(), None),
                &record,
                executor,
                &SchedulerOptions {
                    workers: usize::MAX,
                    ..options.clone()
                },
                &mut pool,
                pacing,
                events,
                cancel.clone(),
            )
            .await?;
            let ran = started.elapsed();
            // Growth of the database file during this run (etcd keeps every revision
            // until compacted, so this is what the job's history costs).
            let db_size = etcd.db_size().await? - db_before;
            etcd.delete_prefix().await?;
            (planned, ran, outcome, Some(db_size))
        }
        other => return Err(format!("--store {other}: use local or etcd").into()),
    };
    let verified = outcome
        .chunks
        .iter()
        .filter(|chunk| chunk.state == ChunkState::Verified)
        .count();
    if verified != chunks.len() {
        return Err(format!("only {verified} of {} chunks verified", chunks.len()).into());
    }
    cancel.cancel();
    println!(
        "store={} chunks={} workers={} slots={} compact_every_s={} create_job_s={:.2} run_s={:.2} \
         assignments_per_s={:.0} peak_rss_mb={:.0} etcd_db_growth_mb={}",
        args.store,
        chunks.len(),
        args.workers,
        args.slots,
        args.compact_every,
        planned.as_secs_f64(),
        ran.as_secs_f64(),
        chunks.len() as f64 / ran.as_secs_f64(),
        peak_rss_mb(),
        db_size.map_or("-".to_owned(), |bytes| format!(
            "{:.1}",
            bytes as f64 / 1048576.0
        )),
    );
    Ok(())
}

/// Does what `ferry-worker` does with an assignment that ends at once, minus the copy:
/// report it verified (each assignment in a task of its own, as the worker's slots run;
/// an attempt that ends before its first progress is due writes no claim). Each
/// simulated worker has a store of its own (its own group commit), as a worker process
/// has.
async fn simulated_worker(store: ClusterRef, worker: WorkerId, cancel: CancellationToken) {
    let mut assignments = store.watch_assignments(&worker, &cancel);
    let mut done = HashSet::new();
    loop {
        let current: Vec<_> = assignments.borrow_and_update().values().cloned().collect();
        done.retain(|key| {
            current
                .iter()
                .any(|a| (a.job.clone(), a.chunk, a.attempt) == *key)
        });
        for assignment in current {
            let key = (assignment.job.clone(), assignment.chunk, assignment.attempt);
            if !done.insert(key) {
                continue;
            }
            let store = store.clone();
            tokio::spawn(async move {
                let _ = store.put_result(&assignment, &verified()).await;
            });
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = assignments.changed() => if changed.is_err() { return },
        }
    }
}
