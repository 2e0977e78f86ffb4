//! Cuts chunks while a job runs, through the store, and brings the scheduler's model
//! and queue along: queued chunks that never started ([`crate::idle_split`]) and running
//! chunks handed back on request ([`crate::give_back`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_coordination::{ChunkRecord, Coordination, CoordinationError, JobRecord};
use ferry_model::ids::{Attempt, ChunkId};
use ferry_model::key::ChunkRange;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::give_back::{RunningCopy, TableDurations, choose_give_backs};
use crate::idle_split::{SplitInputs, choose_splits, cut_range, span_of};
use crate::scheduler::{JobEvent, SchedulerError, sort_largest_first};

/// Cuts chunks through the store and brings the scheduler's model and queue along.
pub(crate) struct Cutter<'a> {
    pub(crate) store: &'a dyn Coordination,
    pub(crate) job: &'a JobRecord,
    pub(crate) events: &'a UnboundedSender<JobEvent>,
    /// Chunks that cannot be cut (their key or range does not allow it, or the store
    /// refused): not considered again in this run.
    pub(crate) refused: HashSet<ChunkId>,
    /// The pieces of chunks handed back in this run: they run to their end (cut again,
    /// rows as wide would only be read again and again).
    pub(crate) handed_back: HashSet<ChunkId>,
}

impl Cutter<'_> {
    /// Cuts the queued chunks [`choose_splits`] picks and queues their pieces. A store
    /// failure stops the run (the model would no longer say what the store holds); a
    /// refusal only leaves the chunk whole.
    pub(crate) async fn split_queued(
        &mut self,
        model: &mut Vec<ChunkRecord>,
        queue: &mut Vec<ChunkId>,
        inputs: &SplitInputs,
        running: usize,
    ) -> Result<(), SchedulerError> {
        // The queue pops its last entry first: walk it from the end, largest first.
        let candidates = queue
            .iter()
            .rev()
            .filter(|id| {
                let record = &model[id.0 as usize];
                record.attempt == Attempt(0) && !self.refused.contains(id)
            })
            .map(|id| (*id, model[id.0 as usize].estimated_rows));
        let orders = choose_splits(inputs, running, candidates);
        if orders.is_empty() {
            return Ok(());
        }
        for (chunk_id, pieces) in orders {
            let Some(cut) = self.cut_of(model, chunk_id, pieces) else {
                continue;
            };
            self.apply(model, queue, chunk_id, Attempt(0), &cut).await?;
        }
        sort_largest_first(queue, model);
        Ok(())
    }

    /// The pieces `chunk` would be cut into, or `None` (and never asked again) when its
    /// key or range cannot be cut.
    pub(crate) fn cut_of(
        &mut self,
        model: &[ChunkRecord],
        chunk: ChunkId,
        pieces: usize,
    ) -> Option<Vec<(ChunkRange, u64)>> {
        if self.refused.contains(&chunk) {
            return None;
        }
        let record = &model[chunk.0 as usize];
        let span = self
            .job
            .tables
            .get(record.table_index)
            .and_then(|table| span_of(&table.key_spans, record.partition.as_deref()));
        let cut = cut_range(&record.range, record.estimated_rows, span, pieces);
        if cut.is_none() {
            self.refused.insert(chunk);
        }
        cut
    }

    /// Cuts a chunk whose first attempt was handed back before it wrote into `cut` and
    /// queues every piece; queues it whole when the store refuses.
    pub(crate) async fn cut_handed_back(
        &mut self,
        model: &mut Vec<ChunkRecord>,
        queue: &mut Vec<ChunkId>,
        chunk: ChunkId,
        cut: &[(ChunkRange, u64)],
    ) -> Result<(), SchedulerError> {
        if !self.apply(model, queue, chunk, Attempt(1), cut).await? {
            queue.push(chunk);
        }
        sort_largest_first(queue, model);
        Ok(())
    }

    /// Cuts `chunk` at attempt `after` into `cut` through the store, updates the model
    /// and queues the new pieces; `false` when the store refused (the chunk stays whole).
    async fn apply(
        &mut self,
        model: &mut Vec<ChunkRecord>,
        queue: &mut Vec<ChunkId>,
        chunk: ChunkId,
        after: Attempt,
        cut: &[(ChunkRange, u64)],
    ) -> Result<bool, SchedulerError> {
        let split = match self
            .store
            .split_chunk(&self.job.id, chunk, after, cut)
            .await
        {
            Ok(split) => split,
            Err(CoordinationError::SplitRefused { reason, .. }) => {
                tracing::warn!(job = %self.job.id, %chunk, %reason, "chunk left whole");
                self.refused.insert(chunk);
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        };
        let record = &model[chunk.0 as usize];
        let table_index = record.table_index;
        tracing::info!(
            job = %self.job.id,
            %chunk,
            range = %record.range,
            rows = record.estimated_rows,
            pieces = split.len(),
            handed_back = after > Attempt(0),
            "cut a chunk that has written nothing, so that idle workers share it"
        );
        let mut added = Vec::with_capacity(split.len().saturating_sub(1));
        let mut misaligned = false;
        for piece in split {
            let index = piece.id.0 as usize;
            if after > Attempt(0) {
                self.handed_back.insert(piece.id);
            }
            if piece.id == chunk {
                if after > Attempt(0) {
                    // Handed back while running: it is queued again, as its first piece.
                    queue.push(chunk);
                }
            } else {
                added.push((piece.id, piece.estimated_rows));
                queue.push(piece.id);
            }
            // The store hands out the next free ids, and the model holds every chunk by
            // id: a new piece lands at the end.
            match index.cmp(&model.len()) {
                std::cmp::Ordering::Less => model[index] = piece,
                std::cmp::Ordering::Equal => model.push(piece),
                std::cmp::Ordering::Greater => misaligned = true,
            }
        }
        if misaligned {
            // Another writer added chunks: take the store's word for all of them.
            *model = self.store.list_chunks(&self.job.id).await?;
        }
        let _ = self.events.send(JobEvent::ChunkSplit {
            table_index,
            chunk,
            added,
        });
        Ok(true)
    }
}

/// What the scheduler follows of each running attempt to hand slow ones back
/// ([`crate::give_back`]).
#[derive(Default)]
pub(crate) struct LiveAttempts {
    live: HashMap<ChunkId, LiveAttempt>,
}

/// One running attempt.
pub(crate) struct LiveAttempt {
    started: Instant,
    table_index: usize,
    /// Its chunk's first attempt, started by this run (adopted ones are not handed back).
    first: bool,
    verifying: bool,
    streamed: Arc<AtomicU64>,
    give_back: CancellationToken,
    /// The pieces its chunk is cut into once the attempt answers the request.
    cut: Option<Vec<(ChunkRange, u64)>>,
}

impl LiveAttempt {
    /// How long the attempt ran.
    pub(crate) fn took(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Whether it may be asked back: a first attempt, still copying, not asked yet.
    fn askable(&self) -> bool {
        self.first && !self.verifying && self.cut.is_none()
    }

    /// The pieces requested for its chunk, when it was asked to hand the chunk back.
    pub(crate) fn into_cut(self) -> Option<Vec<(ChunkRange, u64)>> {
        self.cut
    }
}

impl LiveAttempts {
    /// Follows an attempt that just started.
    pub(crate) fn started(
        &mut self,
        chunk: ChunkId,
        table_index: usize,
        first: bool,
        streamed: Arc<AtomicU64>,
        give_back: CancellationToken,
    ) {
        self.live.insert(
            chunk,
            LiveAttempt {
                started: Instant::now(),
                table_index,
                first,
                verifying: false,
                streamed,
                give_back,
                cut: None,
            },
        );
    }

    /// The attempt of `chunk` committed its copy: too late to hand it back.
    pub(crate) fn verifying(&mut self, chunk: ChunkId) {
        if let Some(attempt) = self.live.get_mut(&chunk) {
            attempt.verifying = true;
        }
    }

    /// The attempt of `chunk` ended.
    pub(crate) fn ended(&mut self, chunk: ChunkId) -> Option<LiveAttempt> {
        self.live.remove(&chunk)
    }

    /// Whether an attempt could be handed back later (a first attempt copying, not
    /// asked yet): what keeps the scheduler looking.
    pub(crate) fn any_candidate(&self) -> bool {
        self.live.values().any(LiveAttempt::askable)
    }

    /// The attempts that may be handed back, as [`choose_give_backs`] reads them.
    pub(crate) fn candidates(&self, model: &[ChunkRecord]) -> Vec<RunningCopy> {
        self.live
            .iter()
            .filter(|(_, attempt)| attempt.askable())
            .map(|(chunk, attempt)| RunningCopy {
                chunk: *chunk,
                table_index: attempt.table_index,
                elapsed: attempt.started.elapsed(),
                rows_streamed: attempt.streamed.load(Ordering::Relaxed),
                estimated_rows: model
                    .get(chunk.0 as usize)
                    .map_or(0, |record| record.estimated_rows),
            })
            .collect()
    }

    /// Asks the attempt of `chunk` to hand its chunk back, to be cut into `cut`.
    pub(crate) fn request(&mut self, chunk: ChunkId, cut: Vec<(ChunkRange, u64)>) {
        if let Some(attempt) = self.live.get_mut(&chunk) {
            attempt.cut = Some(cut);
            attempt.give_back.cancel();
        }
    }
}

impl Cutter<'_> {
    /// Asks the slowest first attempts to hand their chunks back when `free_slots` copy
    /// slots have nothing else to start ([`choose_give_backs`]).
    pub(crate) fn ask_give_backs(
        &mut self,
        free_slots: usize,
        live: &mut LiveAttempts,
        durations: &TableDurations,
        model: &[ChunkRecord],
    ) {
        let candidates = live.candidates(model);
        for (chunk, pieces) in choose_give_backs(free_slots, &candidates, durations) {
            let Some(cut) = self.cut_of(model, chunk, pieces) else {
                continue;
            };
            tracing::info!(job = %self.job.id, %chunk, pieces = cut.len(), "asking a slow chunk's attempt to hand it back, to cut it for idle workers");
            live.request(chunk, cut);
        }
    }
}
