//! The conformance suite of [`Coordination`]: plain `async fn check_*` functions that
//! panic with a message on a violation, run against [`LocalStore`](super::LocalStore)
//! (in memory and on a file) and [`EtcdStore`] by `tests/tests/coordination_store.rs`.
//! `LocalStore` is the reference: whatever it does, every store does.
//!
//! Each check creates its own uniquely named job, so checks may share a store. The
//! `check_etcd_*` functions cover what only the etcd store has (txn splitting, leader
//! fencing, interrupted creation, corrupt values).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, CoordinationError, EtcdStore,
    JobRecord, PolicyChange, TableRecord,
};
use ferry_model::checksum::RangeChecksum;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::{ChunkRange, KeyBound, KeyValue, SplitKey};
use ferry_model::schema::{ColumnSchema, ColumnType, TableName, TableSchema};
use ferry_proto::v1 as pb;

/// Returns a string unique to this call (process, time, counter and a random seed): for
/// job names and test prefixes such as `/ferry-test/{unique_suffix()}/v1`.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

fn unique_job(base: &str) -> JobId {
    JobId(format!("{base}-{}", unique_suffix()))
}

fn worker(name: &str) -> WorkerId {
    WorkerId(name.to_owned())
}

/// Returns a job record with two tables and `num_chunks` PLANNED chunks whose ranges
/// cover every kind of range and key value.
pub fn sample_job(job: &JobId, num_chunks: u32) -> (JobRecord, Vec<ChunkRecord>) {
    let table = |name: &str, key: SplitKey| TableRecord {
        schema: TableSchema {
            name: TableName {
                schema: Some("public".into()),
                name: name.into(),
            },
            columns: vec![
                ColumnSchema {
                    name: "id".into(),
                    declared_type: "BIGINT".into(),
                    column_type: ColumnType::Int64,
                    nullable: false,
                },
                ColumnSchema {
                    name: "note".into(),
                    declared_type: "TEXT".into(),
                    column_type: ColumnType::Text,
                    nullable: true,
                },
            ],
            primary_key: vec!["id".into()],
            has_rowid: false,
            source_kind: "sqlite".into(),
            native_ddl: Some(format!(
                "CREATE TABLE {name} (id BIGINT PRIMARY KEY, note TEXT)"
            )),
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        },
        key,
        warnings: vec![format!("{name}: a planning remark")],
        key_spans: vec![crate::PlannedKeySpan {
            partition: Some(format!("{name}_p1")),
            min: -7,
            max: i64::MAX,
        }],
        key_deferred: true,
    };
    let record = JobRecord {
        id: job.clone(),
        run_id: format!("run-{}", unique_suffix()),
        fingerprint: "fp-0123456789abcdef".into(),
        tables: vec![
            table(
                "orders",
                SplitKey::Columns {
                    names: vec!["id".into()],
                    nullable: true,
                    single_integer: true,
                },
            ),
            table("notes", SplitKey::None),
        ],
    };
    let chunks = (0..num_chunks)
        .map(|index| {
            let range = match index % 5 {
                0 => ChunkRange::WholeTable,
                1 => ChunkRange::NullKeys,
                2 => ChunkRange::Interval {
                    lower: None,
                    upper: Some(KeyBound(vec![KeyValue::Int(i64::from(index))])),
                },
                3 => ChunkRange::Interval {
                    lower: Some(KeyBound(vec![
                        KeyValue::Text(format!("k\"{index}/é")),
                        KeyValue::Real(-0.5),
                    ])),
                    upper: Some(KeyBound(vec![
                        KeyValue::Blob(vec![0, 255, 7]),
                        KeyValue::Int(i64::MIN),
                    ])),
                },
                _ => ChunkRange::Interval {
                    lower: Some(KeyBound(vec![KeyValue::Int(i64::from(index))])),
                    upper: None,
                },
            };
            ChunkRecord::planned(
                ChunkId(index),
                (index % 2) as usize,
                // Some chunks name a partition, so both stores must keep it.
                (index % 3 == 1).then(|| format!("part_{index}")),
                range,
                1_000 + u64::from(index),
            )
        })
        .collect();
    (record, chunks)
}

async fn create_sample(store: &dyn Coordination, base: &str, num_chunks: u32) -> JobId {
    let job = unique_job(base);
    let (record, chunks) = sample_job(&job, num_chunks);
    store
        .create_job(&record, &chunks)
        .await
        .unwrap_or_else(|error| panic!("create job {job}: {error}"));
    job
}

async fn chunk(store: &dyn Coordination, job: &JobId, id: ChunkId) -> ChunkRecord {
    store
        .list_chunks(job)
        .await
        .unwrap_or_else(|error| panic!("list chunks of job {job}: {error}"))
        .into_iter()
        .find(|record| record.id == id)
        .unwrap_or_else(|| panic!("chunk {id} of job {job} is missing"))
}

/// A job and its chunks read back exactly as created; an unknown job is `None` with no
/// chunks; creating an existing job again fails and changes nothing.
pub async fn check_create_load_round_trip(store: &dyn Coordination) {
    let job = unique_job("round-trip");
    let (record, chunks) = sample_job(&job, 12);
    store
        .create_job(&record, &chunks)
        .await
        .expect("create job");

    let (loaded, loaded_chunks) = store
        .load_job(&job)
        .await
        .expect("load job")
        .expect("the created job exists");
    assert_eq!(loaded, record, "job record after a round trip");
    assert_eq!(
        loaded_chunks, chunks,
        "chunks after a round trip, in id order"
    );
    assert_eq!(store.list_chunks(&job).await.expect("list"), chunks);
    assert_eq!(
        store.load_job_record(&job).await.expect("load the record"),
        Some(record.clone()),
        "the record alone, as with its chunks"
    );

    let unknown = unique_job("never-created");
    assert_eq!(
        store
            .load_job_record(&unknown)
            .await
            .expect("load an unknown record"),
        None
    );
    assert!(
        store
            .load_job(&unknown)
            .await
            .expect("load unknown")
            .is_none()
    );
    assert!(
        store
            .list_chunks(&unknown)
            .await
            .expect("list unknown")
            .is_empty()
    );

    let (other_record, other_chunks) = sample_job(&job, 3);
    assert!(
        store
            .create_job(&other_record, &other_chunks)
            .await
            .is_err(),
        "creating job {job} twice must fail"
    );
    let (reloaded, reloaded_chunks) = store
        .load_job(&job)
        .await
        .expect("reload")
        .expect("still exists");
    assert_eq!(reloaded, record, "a refused re-creation changed the record");
    assert_eq!(
        reloaded_chunks, chunks,
        "a refused re-creation changed the chunks"
    );

    // Any job name works, even one that looks like a path.
    let odd = unique_job("odd/name ü%");
    let (odd_record, odd_chunks) = sample_job(&odd, 2);
    store
        .create_job(&odd_record, &odd_chunks)
        .await
        .expect("create odd name");
    assert_eq!(
        store.load_job(&odd).await.expect("load odd name"),
        Some((odd_record, odd_chunks))
    );
    assert!(
        store
            .load_job(&JobId("odd".into()))
            .await
            .expect("load")
            .is_none()
    );

    // A job without chunks is a job too.
    let empty = unique_job("no-chunks");
    let (empty_record, _) = sample_job(&empty, 0);
    store
        .create_job(&empty_record, &[])
        .await
        .expect("create empty");
    let (loaded_empty, no_chunks) = store
        .load_job(&empty)
        .await
        .expect("load empty")
        .expect("empty job exists");
    assert_eq!(loaded_empty, empty_record);
    assert!(no_chunks.is_empty());
}

/// `assign` takes only a PLANNED chunk, bumps its attempt by one and records the worker;
/// an assigned, verified or unknown chunk is refused and left unchanged.
pub async fn check_assign_bumps_attempt_and_refuses_non_planned(store: &dyn Coordination) {
    let job = create_sample(store, "assign", 3).await;
    let first = store
        .assign(&job, ChunkId(1), &worker("w-a"))
        .await
        .expect("assign a planned chunk");
    assert_eq!(first, Attempt(1));
    let record = chunk(store, &job, ChunkId(1)).await;
    assert_eq!(record.state, ChunkState::Assigned);
    assert_eq!(record.attempt, Attempt(1));
    assert_eq!(record.worker, Some(worker("w-a")));

    match store.assign(&job, ChunkId(1), &worker("w-b")).await {
        Err(CoordinationError::InvalidTransition {
            chunk,
            from: ChunkState::Assigned,
            to: ChunkState::Assigned,
        }) => assert_eq!(chunk, ChunkId(1)),
        other => panic!("assigning an assigned chunk must be an invalid transition: {other:?}"),
    }
    assert_eq!(
        chunk(store, &job, ChunkId(1)).await,
        record,
        "refused assign wrote"
    );

    match store.assign(&job, ChunkId(99), &worker("w-a")).await {
        Err(CoordinationError::NotFound { .. }) => {}
        other => panic!("assigning an unknown chunk must be NotFound: {other:?}"),
    }

    // Back to PLANNED: the next assignment is attempt 2.
    store
        .complete(
            &job,
            ChunkId(1),
            first,
            &ChunkCompletion::Requeue {
                reason: "paused".into(),
            },
        )
        .await
        .expect("requeue");
    // Assigned and COPYING in one write; then through VERIFYING to VERIFIED, after
    // which nothing more is assigned.
    let second = store
        .start_attempt(&job, ChunkId(1), &worker("w-b"))
        .await
        .expect("reassign and start");
    assert_eq!(second, Attempt(2));
    let started = chunk(store, &job, ChunkId(1)).await;
    assert_eq!(started.state, ChunkState::Copying);
    assert_eq!(started.attempt, Attempt(2));
    assert_eq!(started.worker, Some(worker("w-b")));
    assert_eq!(started.evidence.worker, Some(worker("w-b")));
    store
        .report_state(&job, ChunkId(1), second, ChunkState::Copying)
        .await
        .expect("copying again");
    match store
        .report_state(&job, ChunkId(1), second, ChunkState::Verified)
        .await
    {
        Err(CoordinationError::InvalidTransition { .. }) => {}
        other => panic!("report_state may only move to COPYING or VERIFYING: {other:?}"),
    }
    store
        .report_state(&job, ChunkId(1), second, ChunkState::Verifying)
        .await
        .expect("verifying");
    let checksum = RangeChecksum {
        rows: 1_234,
        sum: u128::MAX - 99,
    };
    let verified = store
        .complete(
            &job,
            ChunkId(1),
            second,
            &ChunkCompletion::Verified {
                rows: 1_234,
                checksum,
                sync: None,
            },
        )
        .await
        .expect("verified");
    assert_eq!(verified.state, ChunkState::Verified);
    assert_eq!(verified.rows, 1_234);
    assert_eq!(verified.checksum, Some(checksum));
    assert_eq!(verified.worker, None);
    // The evidence of the attempt stays: who ran it, when, and the target's side.
    assert!(
        verified.evidence.worker.is_some(),
        "{:?}",
        verified.evidence
    );
    let started = verified.evidence.started_at_unix_ms.expect("start kept");
    let ended = verified.evidence.ended_at_unix_ms.expect("end kept");
    assert!(started > 0 && ended >= started, "{:?}", verified.evidence);
    assert_eq!(verified.evidence.target_checksum, Some(checksum));
    assert_eq!(chunk(store, &job, ChunkId(1)).await, verified);
    match store.assign(&job, ChunkId(1), &worker("w-a")).await {
        Err(CoordinationError::InvalidTransition {
            from: ChunkState::Verified,
            ..
        }) => {}
        other => panic!("a verified chunk is never assigned again: {other:?}"),
    }
    match store.start_attempt(&job, ChunkId(1), &worker("w-a")).await {
        Err(CoordinationError::InvalidTransition {
            from: ChunkState::Verified,
            ..
        }) => {}
        other => panic!("a verified chunk is never started again: {other:?}"),
    }
    // The other chunks were not touched.
    let (_, planned) = sample_job(&job, 3);
    assert_eq!(chunk(store, &job, ChunkId(0)).await, planned[0]);
    assert_eq!(chunk(store, &job, ChunkId(2)).await, planned[2]);
}

/// An attempt that is not the chunk's current in-flight one can neither report nor
/// complete (`StaleAttempt` naming the current attempt), and changes nothing.
pub async fn check_stale_attempt_cannot_complete(store: &dyn Coordination) {
    let job = create_sample(store, "stale", 2).await;
    let id = ChunkId(0);
    let first = store
        .assign(&job, id, &worker("w-a"))
        .await
        .expect("assign");
    let retried = store
        .complete(
            &job,
            id,
            first,
            &ChunkCompletion::Retry {
                reason: "copy failed: connection reset".into(),
                mismatch: false,
            },
        )
        .await
        .expect("retry");
    assert_eq!(retried.state, ChunkState::Planned);
    assert_eq!(retried.failures, 1);
    assert_eq!(retried.mismatches, 0);
    assert_eq!(
        retried.last_error.as_deref(),
        Some("copy failed: connection reset")
    );
    assert_eq!(retried.worker, None);
    assert_eq!(chunk(store, &job, id).await, retried);

    // The old attempt cannot complete a PLANNED chunk.
    match store
        .complete(
            &job,
            id,
            first,
            &ChunkCompletion::Verified {
                rows: 1,
                checksum: RangeChecksum::default(),
                sync: None,
            },
        )
        .await
    {
        Err(CoordinationError::StaleAttempt {
            attempt, current, ..
        }) => assert_eq!((attempt, current), (first, first)),
        other => panic!("completing a planned chunk must be stale: {other:?}"),
    }

    let second = store
        .assign(&job, id, &worker("w-b"))
        .await
        .expect("reassign");
    assert_eq!(second, Attempt(2));
    let before = chunk(store, &job, id).await;
    let zombie = ChunkCompletion::Verified {
        rows: 5,
        checksum: RangeChecksum { rows: 5, sum: 5 },
        sync: None,
    };
    match store.complete(&job, id, first, &zombie).await {
        Err(CoordinationError::StaleAttempt {
            chunk,
            attempt,
            current,
        }) => {
            assert_eq!(chunk, id);
            assert_eq!(attempt, first);
            assert_eq!(current, second);
        }
        other => panic!("a stale attempt must not complete: {other:?}"),
    }
    match store
        .report_state(&job, id, first, ChunkState::Copying)
        .await
    {
        Err(CoordinationError::StaleAttempt { current, .. }) => assert_eq!(current, second),
        other => panic!("a stale attempt must not report: {other:?}"),
    }
    assert_eq!(
        chunk(store, &job, id).await,
        before,
        "a stale attempt wrote"
    );

    // The current attempt fails for good on a mismatch; afterwards it is stale too.
    let failed = store
        .complete(
            &job,
            id,
            second,
            &ChunkCompletion::Failed {
                reason: "checksum mismatch".into(),
                mismatch: true,
            },
        )
        .await
        .expect("fail");
    assert_eq!(failed.state, ChunkState::Failed);
    assert_eq!((failed.failures, failed.mismatches), (2, 1));
    assert_eq!(failed.attempt, second);
    assert!(matches!(
        store.complete(&job, id, second, &zombie).await,
        Err(CoordinationError::StaleAttempt { .. })
    ));
    match store.complete(&job, ChunkId(42), Attempt(1), &zombie).await {
        Err(CoordinationError::NotFound { .. }) => {}
        other => panic!("completing an unknown chunk must be NotFound: {other:?}"),
    }
}

/// A chunk of a table loaded without its key ends its copy COPIED (source checksum kept,
/// no worker, not in flight: a resumed run does not re-queue it), and is completed a
/// second time under the same attempt once its table's key is built: VERIFIED, or back
/// to PLANNED for a re-copy. A second COPIED, a late report, or another attempt is refused.
pub async fn check_copied_waits_out_of_flight_for_its_verification(store: &dyn Coordination) {
    let job = create_sample(store, "copied", 2).await;
    let source = RangeChecksum { rows: 7, sum: 77 };
    let mut attempts = Vec::new();
    for id in [ChunkId(0), ChunkId(1)] {
        let attempt = store
            .start_attempt(&job, id, &worker("w-copied"))
            .await
            .expect("start");
        let copied = store
            .complete(
                &job,
                id,
                attempt,
                &ChunkCompletion::Copied {
                    rows: 7,
                    checksum: source,
                },
            )
            .await
            .expect("copied");
        assert_eq!(copied.state, ChunkState::Copied);
        assert_eq!(copied.checksum, Some(source));
        assert_eq!((copied.rows, copied.worker.clone()), (7, None));
        assert_eq!(
            chunk(store, &job, id).await,
            copied,
            "COPIED reads back as stored"
        );
        attempts.push(attempt);
    }
    assert!(
        store
            .requeue_in_flight(&job)
            .await
            .expect("requeue")
            .is_empty(),
        "a COPIED chunk is not in flight"
    );
    assert!(matches!(
        store
            .complete(
                &job,
                ChunkId(0),
                attempts[0],
                &ChunkCompletion::Copied {
                    rows: 7,
                    checksum: source,
                },
            )
            .await,
        Err(CoordinationError::StaleAttempt { .. })
    ));
    assert!(matches!(
        store
            .report_state(&job, ChunkId(0), attempts[0], ChunkState::Verifying)
            .await,
        Err(CoordinationError::StaleAttempt { .. })
    ));
    assert!(matches!(
        store.assign(&job, ChunkId(0), &worker("w-other")).await,
        Err(CoordinationError::InvalidTransition { .. })
    ));
    let verified = store
        .complete(
            &job,
            ChunkId(0),
            attempts[0],
            &ChunkCompletion::Verified {
                rows: 7,
                checksum: source,
                sync: None,
            },
        )
        .await
        .expect("verified after the key");
    assert_eq!(verified.state, ChunkState::Verified);
    assert_eq!(verified.attempt, attempts[0]);
    let retried = store
        .complete(
            &job,
            ChunkId(1),
            attempts[1],
            &ChunkCompletion::Retry {
                reason: "checksum mismatch".into(),
                mismatch: true,
            },
        )
        .await
        .expect("mismatch after the key");
    assert_eq!(retried.state, ChunkState::Planned);
    assert_eq!((retried.failures, retried.mismatches), (1, 1));
    let next = store
        .assign(&job, ChunkId(1), &worker("w-recopy"))
        .await
        .expect("re-copy");
    assert_eq!(next.0, attempts[1].0 + 1);
}

/// `requeue_in_flight` returns exactly the ASSIGNED, COPYING and VERIFYING chunks to
/// PLANNED without a worker; `reset_failed` returns FAILED chunks to PLANNED with no
/// failures counted. Both return the ids they changed, in id order; attempts are kept.
pub async fn check_requeue_in_flight_and_reset_failed(store: &dyn Coordination) {
    let job = create_sample(store, "requeue", 8).await;
    // 0 planned, 1 assigned, 2 copying, 3 verifying, 4 verified, 5 failed, 6 assigned,
    // 7 failed.
    let mut attempts = Vec::new();
    for index in 1..=7 {
        let attempt = store
            .assign(&job, ChunkId(index), &worker("w-a"))
            .await
            .expect("assign");
        attempts.push(attempt);
    }
    let at = |index: u32| attempts[index as usize - 1];
    store
        .report_state(&job, ChunkId(2), at(2), ChunkState::Copying)
        .await
        .expect("copying");
    store
        .report_state(&job, ChunkId(3), at(3), ChunkState::Verifying)
        .await
        .expect("verifying");
    store
        .complete(
            &job,
            ChunkId(4),
            at(4),
            &ChunkCompletion::Verified {
                rows: 10,
                checksum: RangeChecksum { rows: 10, sum: 77 },
                sync: None,
            },
        )
        .await
        .expect("verified");
    for index in [5, 7] {
        store
            .complete(
                &job,
                ChunkId(index),
                at(index),
                &ChunkCompletion::Failed {
                    reason: "gave up".into(),
                    mismatch: false,
                },
            )
            .await
            .expect("failed");
    }
    let before = store.list_chunks(&job).await.expect("list");

    let requeued = store.requeue_in_flight(&job).await.expect("requeue");
    assert_eq!(
        requeued,
        vec![ChunkId(1), ChunkId(2), ChunkId(3), ChunkId(6)]
    );
    let after = store.list_chunks(&job).await.expect("list");
    for (old, new) in before.iter().zip(&after) {
        if requeued.contains(&old.id) {
            let expected = ChunkRecord {
                state: ChunkState::Planned,
                worker: None,
                ..old.clone()
            };
            assert_eq!(new, &expected, "requeued chunk {}", old.id);
        } else {
            assert_eq!(new, old, "requeue touched chunk {} ({})", old.id, old.state);
        }
    }
    assert!(
        store
            .requeue_in_flight(&job)
            .await
            .expect("again")
            .is_empty()
    );

    let reset = store.reset_failed(&job).await.expect("reset");
    assert_eq!(reset, vec![ChunkId(5), ChunkId(7)]);
    let after_reset = store.list_chunks(&job).await.expect("list");
    for (old, new) in after.iter().zip(&after_reset) {
        if reset.contains(&old.id) {
            let expected = ChunkRecord {
                state: ChunkState::Planned,
                failures: 0,
                ..old.clone()
            };
            assert_eq!(new, &expected, "reset chunk {}", old.id);
        } else {
            assert_eq!(new, old, "reset touched chunk {} ({})", old.id, old.state);
        }
    }
    assert!(store.reset_failed(&job).await.expect("again").is_empty());
    // The next assignment of a reset chunk continues its attempts.
    let next = store
        .assign(&job, ChunkId(5), &worker("w-b"))
        .await
        .expect("assign reset chunk");
    assert_eq!(next, Attempt(at(5).0 + 1));

    let unknown = unique_job("no-such-job");
    assert!(
        store
            .requeue_in_flight(&unknown)
            .await
            .expect("unknown")
            .is_empty()
    );
    assert!(
        store
            .reset_failed(&unknown)
            .await
            .expect("unknown")
            .is_empty()
    );
}

/// A chunk that never started is split in one step: it keeps the first piece, the others
/// get the next ids with its table and partition, and the job loads whole afterwards. A
/// chunk that started (assigned once, even if back to PLANNED) and a split into fewer
/// than two pieces are refused, changing nothing.
pub async fn check_split_chunk_only_before_it_starts(store: &dyn Coordination) {
    let job = create_sample(store, "split", 6).await;
    let before = store.list_chunks(&job).await.expect("list");
    let int_range = |lower: i64, upper: i64| ChunkRange::Interval {
        lower: Some(KeyBound(vec![KeyValue::Int(lower)])),
        upper: Some(KeyBound(vec![KeyValue::Int(upper)])),
    };
    let pieces = vec![
        (int_range(0, 10), 400),
        (int_range(10, 20), 300),
        (int_range(20, 30), 301),
    ];
    // Chunk 4 names a partition (index % 3 == 1) and belongs to table 0.
    let split = store
        .split_chunk(&job, ChunkId(4), Attempt(0), &pieces)
        .await
        .expect("split");
    let ids: Vec<ChunkId> = split.iter().map(|chunk| chunk.id).collect();
    assert_eq!(ids, vec![ChunkId(4), ChunkId(6), ChunkId(7)]);
    let after = store.list_chunks(&job).await.expect("list after split");
    assert_eq!(after.len(), 8, "two chunks added");
    for (index, (range, rows)) in pieces.iter().enumerate() {
        let stored = &after[ids[index].0 as usize];
        assert_eq!(stored, &split[index], "piece {index} as returned");
        assert_eq!(&stored.range, range);
        assert_eq!(stored.estimated_rows, *rows);
        assert_eq!(stored.state, ChunkState::Planned);
        assert_eq!(stored.attempt, Attempt(0));
        assert_eq!(stored.table_index, before[4].table_index);
        assert_eq!(stored.partition, before[4].partition);
    }
    for index in [0, 1, 2, 3, 5] {
        assert_eq!(after[index], before[index], "split touched chunk {index}");
    }
    // One chunk reads back alone as listed (how a worker reads a piece cut after it
    // read the job).
    assert_eq!(
        store
            .load_chunk(&job, ChunkId(7))
            .await
            .expect("load chunk"),
        Some(after[7].clone())
    );
    assert_eq!(
        store
            .load_chunk(&job, ChunkId(8))
            .await
            .expect("load chunk"),
        None
    );
    // The new chunks are assigned like any other.
    let attempt = store
        .assign(&job, ChunkId(7), &worker("w-split"))
        .await
        .expect("assign a new piece");
    assert_eq!(attempt, Attempt(1));

    // A chunk that started once is never split, even back in PLANNED.
    let started = store
        .assign(&job, ChunkId(2), &worker("w-split"))
        .await
        .expect("assign");
    let refused = store
        .split_chunk(&job, ChunkId(2), Attempt(0), &pieces)
        .await;
    assert!(
        matches!(refused, Err(CoordinationError::SplitRefused { chunk, .. }) if chunk == ChunkId(2)),
        "split of an assigned chunk: {refused:?}"
    );
    store
        .complete(
            &job,
            ChunkId(2),
            started,
            &ChunkCompletion::Retry {
                reason: "busy".into(),
                mismatch: false,
            },
        )
        .await
        .expect("retry");
    let refused = store
        .split_chunk(&job, ChunkId(2), Attempt(0), &pieces)
        .await;
    assert!(
        matches!(refused, Err(CoordinationError::SplitRefused { .. })),
        "split of a retried chunk: {refused:?}"
    );
    let refused = store
        .split_chunk(&job, ChunkId(0), Attempt(0), &pieces[..1])
        .await;
    assert!(
        matches!(refused, Err(CoordinationError::SplitRefused { .. })),
        "split into one piece: {refused:?}"
    );
    let unchanged = store.list_chunks(&job).await.expect("list after refusals");
    assert_eq!(unchanged.len(), 8);
    assert_eq!(unchanged[0], after[0]);
    let (record, chunks) = store
        .load_job(&job)
        .await
        .expect("load")
        .expect("the job exists");
    assert_eq!(chunks.len(), 8);
    assert_eq!(record.tables[0].key_spans.len(), 1, "key spans round-trip");
    assert!(matches!(
        store
            .split_chunk(&job, ChunkId(99), Attempt(0), &pieces)
            .await,
        Err(CoordinationError::NotFound { .. })
    ));

    // A retried chunk is refused at its attempt too: its first attempt may have written.
    let refused = store.split_chunk(&job, ChunkId(2), started, &pieces).await;
    assert!(
        matches!(refused, Err(CoordinationError::SplitRefused { .. })),
        "split of a retried chunk at its attempt: {refused:?}"
    );
    // A chunk whose first attempt was handed back before writing (Requeued) is cut at
    // attempt 1: it keeps the first piece and its attempt count, so its next attempt is
    // the second and fences out the first.
    let handed = store
        .assign(&job, ChunkId(5), &worker("w-split"))
        .await
        .expect("assign");
    assert_eq!(handed, Attempt(1));
    let refused = store.split_chunk(&job, ChunkId(5), handed, &pieces).await;
    assert!(
        matches!(refused, Err(CoordinationError::SplitRefused { .. })),
        "split of a chunk still running: {refused:?}"
    );
    store
        .complete(
            &job,
            ChunkId(5),
            handed,
            &ChunkCompletion::Requeue {
                reason: "handed back".into(),
            },
        )
        .await
        .expect("requeue");
    let refused = store
        .split_chunk(&job, ChunkId(5), Attempt(0), &pieces)
        .await;
    assert!(
        matches!(refused, Err(CoordinationError::SplitRefused { .. })),
        "split of a handed-back chunk as if it never started: {refused:?}"
    );
    let given_back = store
        .split_chunk(&job, ChunkId(5), handed, &pieces)
        .await
        .expect("split a handed-back chunk");
    let ids: Vec<ChunkId> = given_back.iter().map(|chunk| chunk.id).collect();
    assert_eq!(ids, vec![ChunkId(5), ChunkId(8), ChunkId(9)]);
    let listed = store.list_chunks(&job).await.expect("list after give-back");
    assert_eq!(listed.len(), 10);
    assert_eq!(
        listed[5].attempt,
        Attempt(1),
        "the chunk keeps its attempt count"
    );
    assert_eq!(listed[5].state, ChunkState::Planned);
    assert_eq!(listed[5].range, pieces[0].0);
    assert_eq!(listed[8].attempt, Attempt(0));
    assert_eq!(
        store
            .assign(&job, ChunkId(5), &worker("w-split"))
            .await
            .expect("assign the first piece"),
        Attempt(2)
    );
    let refused = store
        .split_chunk(&job, ChunkId(9), Attempt(2), &pieces)
        .await;
    assert!(
        matches!(refused, Err(CoordinationError::SplitRefused { .. })),
        "split after a later attempt: {refused:?}"
    );
}

/// The newest saved policy reads back; the history keeps every change of the job in the
/// order saved (12 of them, so ordering is numeric, not textual), separately per job.
pub async fn check_policy_history_is_ordered(store: &dyn Coordination) {
    let job = unique_job("policy");
    let other = unique_job("policy-other");
    assert_eq!(store.load_policy(&job).await.expect("load"), None);
    assert!(
        store
            .policy_history(&job)
            .await
            .expect("history")
            .is_empty()
    );

    let mut expected = Vec::new();
    for index in 0..12_i64 {
        let policy = format!("{{\"max_concurrency\":{index}}}");
        let (origin, actor) = if index % 2 == 0 {
            ("operator", "token:alice")
        } else {
            ("controller", "")
        };
        let change = PolicyChange::throttle(
            1_700_000_000_000 + index * 1_000,
            origin,
            actor,
            format!("max_concurrency {} → {index}", index - 1),
        );
        store
            .save_policy(&job, &policy, &change)
            .await
            .expect("save policy");
        expected.push(change);
        // An operator's action between policy changes: in the history, policy untouched.
        if index % 3 == 0 {
            let event = PolicyChange::operator_action(
                1_700_000_000_500 + index * 1_000,
                "recopy",
                "cert:CN=ops",
                format!("re-copy table t{index}: 2 chunks"),
            );
            store
                .record_event(&job, &event)
                .await
                .expect("record event");
            assert!(!event.is_throttle());
            expected.push(event);
        }
        assert_eq!(
            store.load_policy(&job).await.expect("load").as_deref(),
            Some(policy.as_str())
        );
    }
    assert_eq!(store.policy_history(&job).await.expect("history"), expected);

    // An event before any policy: the job still has no policy.
    let early = JobId("no-policy-yet".into());
    let submitted =
        PolicyChange::operator_action(5, "submit", "token:bob", "submitted: 1 tables".into());
    store.record_event(&early, &submitted).await.expect("event");
    assert_eq!(store.load_policy(&early).await.expect("load"), None);
    assert_eq!(
        store.policy_history(&early).await.expect("history"),
        vec![submitted]
    );

    let other_change = PolicyChange::throttle(1, "spec", "", "initial".into());
    store
        .save_policy(&other, "{}", &other_change)
        .await
        .expect("save other");
    assert_eq!(
        store.policy_history(&other).await.expect("history"),
        vec![other_change]
    );
    assert_eq!(store.policy_history(&job).await.expect("history"), expected);
}

/// Two tasks assigning the same PLANNED chunk at the same moment: exactly one wins
/// (attempt 1, its worker recorded), the other gets `InvalidTransition` from ASSIGNED.
/// Repeated over `rounds` chunks.
pub async fn check_concurrent_assign_gives_one_winner(store: Arc<dyn Coordination>, rounds: u32) {
    let job = create_sample(store.as_ref(), "race", rounds).await;
    for index in 0..rounds {
        let id = ChunkId(index);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let contenders = ["w-a", "w-b"].map(|name| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            let job = job.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let result = store.assign(&job, id, &worker(name)).await;
                (name, result)
            })
        });
        let mut winners = Vec::new();
        for contender in contenders {
            let (name, result) = contender.await.expect("assign task panicked");
            match result {
                Ok(attempt) => {
                    assert_eq!(attempt, Attempt(1), "winner of chunk {id}");
                    winners.push(name);
                }
                Err(CoordinationError::InvalidTransition {
                    from: ChunkState::Assigned,
                    ..
                }) => {}
                Err(other) => panic!("the loser of chunk {id} must see ASSIGNED: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "chunk {id}: winners {winners:?}");
        let record = chunk(store.as_ref(), &job, id).await;
        assert_eq!(record.attempt, Attempt(1), "chunk {id} was assigned twice");
        assert_eq!(record.worker, Some(worker(winners[0])));
    }
}

/// `create_job` with `num_chunks` chunks (far more than one txn holds) stores them all,
/// in order, and per-chunk batch updates over all of them work.
pub async fn check_etcd_large_job_is_split_into_txns(store: &EtcdStore, num_chunks: u32) {
    let job = unique_job("large");
    let (record, chunks) = sample_job(&job, num_chunks);
    store
        .create_job(&record, &chunks)
        .await
        .expect("create a large job");
    let (loaded, loaded_chunks) = store
        .load_job(&job)
        .await
        .expect("load")
        .expect("large job exists");
    assert_eq!(loaded, record);
    assert_eq!(loaded_chunks.len(), chunks.len(), "every chunk is stored");
    assert_eq!(loaded_chunks, chunks, "chunks in id order, unchanged");

    // Requeue more chunks than one txn may compare.
    let num_in_flight = num_chunks.min(300);
    for index in 0..num_in_flight {
        store
            .assign(&job, ChunkId(index), &worker("w-a"))
            .await
            .expect("assign");
    }
    let requeued = store.requeue_in_flight(&job).await.expect("requeue");
    assert_eq!(
        requeued,
        (0..num_in_flight).map(ChunkId).collect::<Vec<_>>()
    );
    let after = store.list_chunks(&job).await.expect("list");
    assert!(after.iter().all(|chunk| chunk.state == ChunkState::Planned));
    assert!(
        after
            .iter()
            .take(num_in_flight as usize)
            .all(|chunk| chunk.attempt == Attempt(1) && chunk.worker.is_none())
    );
}

/// A store fenced by a leader key writes while the key stands; once the key is gone
/// (or recreated, with a new creation revision) every write fails with `NotLeader` and
/// writes nothing.
pub async fn check_etcd_fenced_store_refuses_writes_after_leader_loss(store: &EtcdStore) {
    let mut client = store.client().clone();
    let leader_key = [store.keys().election(), b"/test-leader".to_vec()].concat();
    let put = client
        .put(leader_key.clone(), "coordinator-a", None)
        .await
        .expect("put the leader key");
    let term_revision = put.header().map_or(0, |header| header.revision());
    assert!(
        term_revision > 0,
        "the put's revision is the key's create revision"
    );
    let fenced = store.fenced_by(leader_key.clone(), term_revision);

    // While the term stands, the fenced store writes.
    let job = unique_job("fenced");
    let (record, chunks) = sample_job(&job, 4);
    fenced
        .create_job(&record, &chunks)
        .await
        .expect("fenced create");
    let attempt = fenced
        .assign(&job, ChunkId(0), &worker("w-a"))
        .await
        .expect("fenced assign");
    fenced
        .save_policy(
            &job,
            "{}",
            &PolicyChange::throttle(1, "spec", "", "initial".into()),
        )
        .await
        .expect("fenced save policy");

    client
        .delete(leader_key.clone(), None)
        .await
        .expect("delete the leader key");
    let snapshot = store.load_job(&job).await.expect("load").expect("exists");
    let history = store.policy_history(&job).await.expect("history");
    assert_refused_after_leader_loss(&fenced, &job, attempt).await;
    let other = unique_job("fenced-other");
    let (other_record, other_chunks) = sample_job(&other, 300);
    expect_not_leader(
        fenced.create_job(&other_record, &other_chunks).await,
        "create_job",
    );
    assert!(store.load_job(&other).await.expect("load").is_none());
    let stray = store
        .list("list stray chunks", &store.keys().chunks_root(&other), 0)
        .await
        .expect("read");
    assert!(stray.is_empty(), "a refused create_job wrote a chunk");
    expect_not_leader(
        fenced.register_worker(&worker("w-z")).await,
        "register_worker",
    );
    let (registered, _) = store
        .get("read worker", store.keys().worker(&worker("w-z")))
        .await
        .expect("read");
    assert!(registered.is_none(), "a refused register_worker wrote");

    // A new term's key has a new creation revision: the old term stays fenced.
    client
        .put(leader_key.clone(), "coordinator-b", None)
        .await
        .expect("put the new leader key");
    assert_refused_after_leader_loss(&fenced, &job, attempt).await;

    assert_eq!(
        store.load_job(&job).await.expect("load").expect("exists"),
        snapshot,
        "a fenced store wrote after losing the term"
    );
    assert_eq!(store.policy_history(&job).await.expect("history"), history);
    client
        .delete(leader_key, None)
        .await
        .expect("delete the leader key");
}

fn expect_not_leader<T: std::fmt::Debug>(result: super::Result<T>, what: &str) {
    match result {
        Err(error @ CoordinationError::NotLeader { .. }) => {
            assert!(!error.is_retryable(), "NotLeader is final");
        }
        other => panic!("{what} after leader loss must be NotLeader: {other:?}"),
    }
}

async fn assert_refused_after_leader_loss(fenced: &EtcdStore, job: &JobId, attempt: Attempt) {
    expect_not_leader(
        fenced.assign(job, ChunkId(1), &worker("w-b")).await,
        "assign",
    );
    expect_not_leader(
        fenced
            .report_state(job, ChunkId(0), attempt, ChunkState::Copying)
            .await,
        "report_state",
    );
    expect_not_leader(
        fenced
            .complete(
                job,
                ChunkId(0),
                attempt,
                &ChunkCompletion::Requeue { reason: "x".into() },
            )
            .await,
        "complete",
    );
    expect_not_leader(fenced.requeue_in_flight(job).await, "requeue_in_flight");
    expect_not_leader(
        fenced
            .save_policy(
                job,
                "{\"max_concurrency\":1}",
                &PolicyChange::throttle(2, "operator", "anonymous", "late".into()),
            )
            .await,
        "save_policy",
    );
    expect_not_leader(
        fenced
            .record_event(
                job,
                &PolicyChange::operator_action(3, "cancel", "anonymous", "late".into()),
            )
            .await,
        "record_event",
    );
    // Reads need no term.
    assert!(fenced.load_job(job).await.expect("fenced read").is_some());
}

/// Chunk keys written by a `create_job` cut off before its record are invisible (the
/// job does not exist), and the next `create_job` of the job replaces them entirely.
pub async fn check_etcd_interrupted_create_is_invisible(store: &EtcdStore) {
    let job = unique_job("interrupted");
    let (_, leftovers) = sample_job(&job, 6);
    let mut client = store.client().clone();
    for leftover in &leftovers {
        let value = pb::ChunkRecordValue {
            id: leftover.id.0,
            range: Some(pb::ChunkRange::from(&leftover.range)),
            state: pb::ChunkState::Planned as i32,
            ..Default::default()
        };
        client
            .put(
                store.keys().chunk(&job, leftover.id),
                value.encode_to_vec(),
                None,
            )
            .await
            .expect("write a leftover chunk");
    }
    assert!(store.load_job(&job).await.expect("load").is_none());
    assert!(store.list_chunks(&job).await.expect("list").is_empty());

    let (record, chunks) = sample_job(&job, 2);
    store
        .create_job(&record, &chunks)
        .await
        .expect("create over leftovers");
    let (loaded, loaded_chunks) = store
        .load_job(&job)
        .await
        .expect("load")
        .expect("exists now");
    assert_eq!(loaded, record);
    assert_eq!(loaded_chunks, chunks, "leftover chunks were not cleared");
}

/// A value that is not what it should be is a `CorruptValue` error naming its key,
/// never a panic, and is not retryable.
pub async fn check_etcd_corrupt_value_is_an_error(store: &EtcdStore) {
    let job = create_sample(store, "corrupt", 2).await;
    let key = store.keys().chunk(&job, ChunkId(1));
    let mut client = store.client().clone();
    client
        .put(key.clone(), vec![0xff, 0xff, 0xff], None)
        .await
        .expect("write garbage");
    let expected_key = String::from_utf8_lossy(&key).into_owned();
    for result in [
        store.load_job(&job).await.map(|_| ()),
        store
            .assign(&job, ChunkId(1), &worker("w-a"))
            .await
            .map(|_| ()),
        store.requeue_in_flight(&job).await.map(|_| ()),
    ] {
        match result {
            Err(error @ CoordinationError::CorruptValue { .. }) => {
                assert!(!error.is_retryable());
                assert!(
                    error.to_string().contains(&expected_key),
                    "the error names the key: {error}"
                );
            }
            other => panic!("a corrupt chunk must be CorruptValue: {other:?}"),
        }
    }
    // The intact chunk is still usable.
    assert_eq!(
        store
            .assign(&job, ChunkId(0), &worker("w-a"))
            .await
            .expect("assign the intact chunk"),
        Attempt(1)
    );
}

/// Concurrent changes of different chunks share txns (the group commit), and every one
/// of them is applied exactly once; a record cached by this store but changed by
/// another writer is read again, not trusted.
pub async fn check_etcd_concurrent_changes_share_txns(store: &EtcdStore, other: &EtcdStore) {
    const CHUNKS: u32 = 200;
    let job = create_sample(store, "coalesce", CHUNKS).await;
    let before = store_revision(store).await;
    let assigned = futures_all((0..CHUNKS).map(|index| {
        let store = store.clone();
        let job = job.clone();
        async move { store.assign(&job, ChunkId(index), &worker("w-a")).await }
    }))
    .await;
    for (index, attempt) in assigned.into_iter().enumerate() {
        assert_eq!(
            attempt.unwrap_or_else(|error| panic!("assign chunk {index}: {error}")),
            Attempt(1)
        );
    }
    let txns = store_revision(store).await - before;
    assert!(
        txns < i64::from(CHUNKS) / 2,
        "{CHUNKS} concurrent assigns took {txns} txns: the group commit did not batch them"
    );
    let chunks = store.list_chunks(&job).await.expect("list");
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.state == ChunkState::Assigned && chunk.attempt == Attempt(1)),
        "every chunk assigned exactly once"
    );

    // Another writer (a store with its own cache) sends every chunk back to PLANNED.
    let requeued = other.requeue_in_flight(&job).await.expect("requeue");
    assert_eq!(requeued.len(), CHUNKS as usize);
    // This store's cache still says ASSIGNED at attempt 1: reporting COPYING on it must
    // be refused (the chunk is PLANNED now), and assigning again must give attempt 2.
    let report = store
        .report_state(&job, ChunkId(0), Attempt(1), ChunkState::Copying)
        .await;
    assert!(
        matches!(report, Err(CoordinationError::StaleAttempt { .. })),
        "a stale cached record must not decide: {report:?}"
    );
    assert_eq!(
        store
            .assign(&job, ChunkId(1), &worker("w-b"))
            .await
            .expect("assign through a stale cache"),
        Attempt(2)
    );
}

/// In one batch of the group commit, a txn whose compare fails is refused alone: the
/// others are applied.
pub async fn check_etcd_batch_with_a_failed_compare_applies_the_rest(store: &EtcdStore) {
    use super::coalesce::{Guard, SmallTxn, Write};
    use super::etcd::TxnOutcome;
    const TXNS: usize = 60;
    let root = [store.keys().root(), b"coalesce-test/".to_vec()].concat();
    let key = |index: usize| [root.clone(), format!("{index:03}").into_bytes()].concat();
    let fails = |index: usize| index % 5 == 2;
    let before = store_revision(store).await;
    let outcomes = futures_all((0..TXNS).map(|index| {
        let store = store.clone();
        let key = key(index);
        async move {
            // Every fifth txn requires its key to exist already: it does not.
            let guard = if fails(index) {
                Guard::CreateRevision(key.clone(), 1)
            } else {
                Guard::CreateRevision(key.clone(), 0)
            };
            let txn = SmallTxn {
                guards: vec![guard],
                writes: vec![Write::Put(key, b"written".to_vec())],
            };
            store.commit_coalesced("test write", txn).await
        }
    }))
    .await;
    let txns = store_revision(store).await - before;
    let applied = (0..TXNS).filter(|index| !fails(*index)).count();
    assert!(
        txns < i64::try_from(applied).unwrap_or(i64::MAX),
        "{applied} txns applied in {txns} revisions: they were not batched"
    );
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let (outcome, _) = outcome.unwrap_or_else(|error| panic!("txn {index}: {error}"));
        let expected = if fails(index) {
            TxnOutcome::CompareFailed
        } else {
            TxnOutcome::Applied
        };
        assert_eq!(outcome, expected, "txn {index}");
    }
    let mut client = store.client().clone();
    for index in 0..TXNS {
        let found = client
            .get(key(index), None)
            .await
            .expect("read back")
            .kvs()
            .len();
        assert_eq!(found, usize::from(!fails(index)), "key {index}");
    }

    // A store fenced by a term that is over: every txn of a batch is refused NotLeader
    // and nothing is written.
    let fenced = store.fenced_by([root.clone(), b"no-such-leader".to_vec()].concat(), 12345);
    let refused = futures_all((0..20).map(|index| {
        let fenced = fenced.clone();
        let key = [root.clone(), format!("fenced-{index:02}").into_bytes()].concat();
        async move {
            let txn = SmallTxn {
                guards: vec![Guard::CreateRevision(key.clone(), 0)],
                writes: vec![Write::Put(key, b"written".to_vec())],
            };
            fenced.commit_coalesced("fenced write", txn).await
        }
    }))
    .await;
    for outcome in refused {
        assert!(
            matches!(outcome, Err(CoordinationError::NotLeader { .. })),
            "a write after the term must be NotLeader: {outcome:?}"
        );
    }
    let fenced_root = [root.clone(), b"fenced-".to_vec()].concat();
    let written = client
        .get(
            fenced_root.clone(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count")
        .count();
    assert_eq!(written, 0, "nothing written after the term");
}

async fn store_revision(store: &EtcdStore) -> i64 {
    let mut client = store.client().clone();
    client
        .get(store.keys().root(), None)
        .await
        .expect("read the revision")
        .header()
        .map_or(0, |header| header.revision())
}

/// Runs the futures concurrently (each on its own task) and returns their outputs in order.
async fn futures_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}
