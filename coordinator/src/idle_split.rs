//! No idle tail, first half: planned chunks are split before they start.
//!
//! A job whose plan holds one chunk far bigger than the rest (a partition 20× the size
//! of the others, a table planned with a large `chunking.target_rows`) ends with one
//! worker copying that chunk while the others sit idle. When the scheduler has free
//! slots, it cuts each queued chunk that holds more than [`SPLIT_SLACK`] times a fair
//! piece into pieces on its split key, before the chunk starts:
//!
//! - a fair piece is the job's remaining work over its slots, and at most
//!   `chunking.target_rows` ([`piece_rows`]);
//! - only chunks that never started are cut (PLANNED at attempt 0: no attempt of theirs
//!   ever wrote), so no row is lost or copied twice; the store refuses any other;
//! - only a single integer key is cut, at arithmetic boundaries of the range's bounds
//!   ([`cut_range`]). An unbounded end is cut from the smallest or largest key the
//!   planner saw in the chunk's table or partition ([`PlannedKeySpan`]); the outer
//!   pieces keep the chunk's own bounds, so the pieces cover exactly its rows, those
//!   inserted since planning included. A partition chunk's pieces stay in its partition.
//!
//! Everything here is pure; the scheduler applies the decisions through
//! [`ferry_coordination::Coordination::split_chunk`].

use ferry_coordination::PlannedKeySpan;
use ferry_model::ids::ChunkId;
use ferry_model::key::{ChunkRange, KeyBound, KeyValue};

use crate::planner::{even_boundaries, intervals};

/// A queued chunk is cut when it holds more than this many fair pieces: a chunk a little
/// over its share costs less whole than the extra chunks would.
pub const SPLIT_SLACK: f64 = 1.5;

/// The most pieces one chunk is cut into at once (the pieces may be cut again later).
pub const MAX_PIECES: usize = 16;

/// Pieces smaller than this many rows are not worth their per-chunk cost.
pub const MIN_PIECE_ROWS: u64 = 1_000;

/// What the scheduler knows when it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitInputs {
    /// Slots the job may run chunks on now (running and free).
    pub slots: usize,
    /// Estimated rows of every chunk not yet ended (queued, waiting for a retry, running).
    pub remaining_rows: u64,
    /// The spec's `chunking.target_rows`.
    pub target_rows: u64,
}

/// A chunk's fair size now: the remaining work over the slots, at most `target_rows`,
/// and never below [`MIN_PIECE_ROWS`].
pub fn piece_rows(inputs: &SplitInputs) -> u64 {
    let slots = inputs.slots.max(1) as u64;
    inputs
        .remaining_rows
        .div_ceil(slots)
        .min(inputs.target_rows.max(1))
        .max(MIN_PIECE_ROWS)
}

/// How many pieces a queued chunk of `estimated_rows` is cut into: `None` when it holds
/// no more than [`SPLIT_SLACK`] fair pieces, else 2 to [`MAX_PIECES`] pieces of about
/// [`piece_rows`] each.
pub fn pieces_for(estimated_rows: u64, inputs: &SplitInputs) -> Option<usize> {
    let piece = piece_rows(inputs);
    if (estimated_rows as f64) <= SPLIT_SLACK * piece as f64 {
        return None;
    }
    let wanted = estimated_rows.div_ceil(piece);
    let pieces = usize::try_from(wanted)
        .unwrap_or(usize::MAX)
        .min(MAX_PIECES);
    (pieces >= 2).then_some(pieces)
}

/// Which queued chunks to cut, and into how many pieces. `largest_first` lists the
/// queued chunks that may be cut (never started, not refused before) with their
/// estimated rows, largest first; the decision stops at the first one too small.
/// Nothing is cut without a free slot (`running >= slots`).
pub fn choose_splits(
    inputs: &SplitInputs,
    running: usize,
    largest_first: impl IntoIterator<Item = (ChunkId, u64)>,
) -> Vec<(ChunkId, usize)> {
    if running >= inputs.slots {
        return Vec::new();
    }
    largest_first
        .into_iter()
        .map_while(|(chunk, rows)| pieces_for(rows, inputs).map(|pieces| (chunk, pieces)))
        .collect()
}

/// The inclusive integer keys `[low, high]` to cut `range` at: its own bounds where it
/// has them, the planned key span where it is unbounded, narrowed to that span when known
/// (keys outside it were not there at planning). `None` when the range is not over a
/// single integer, or an unbounded end has no span to stand for it.
pub fn cut_span(range: &ChunkRange, span: Option<&PlannedKeySpan>) -> Option<(i64, i64)> {
    let ChunkRange::Interval { lower, upper } = range else {
        return None;
    };
    let single_int = |bound: &KeyBound| match bound.0.as_slice() {
        [KeyValue::Int(value)] => Some(*value),
        _ => None,
    };
    let mut low = match lower {
        Some(bound) => single_int(bound)?,
        None => span?.min,
    };
    let mut high = match upper {
        // Half-open: the largest key inside is one below the bound.
        Some(bound) => single_int(bound)?.checked_sub(1)?,
        None => span?.max,
    };
    if let Some(span) = span {
        low = low.max(span.min);
        high = high.min(span.max);
    }
    (low < high).then_some((low, high))
}

/// Cuts `range` into about `pieces` ranges at equal steps over [`cut_span`]: the first
/// piece keeps the range's lower bound and the last its upper one, so together they own
/// exactly the range's rows. Each piece's estimate is an equal part of
/// `estimated_rows`. `None` when the range cannot be cut (see [`cut_span`]) or would
/// give fewer than two pieces.
pub fn cut_range(
    range: &ChunkRange,
    estimated_rows: u64,
    span: Option<&PlannedKeySpan>,
    pieces: usize,
) -> Option<Vec<(ChunkRange, u64)>> {
    let (low, high) = cut_span(range, span)?;
    let ChunkRange::Interval { lower, upper } = range else {
        return None;
    };
    let boundaries = even_boundaries(low, high, pieces as u64);
    if boundaries.is_empty() {
        return None;
    }
    let mut ranges = intervals(&boundaries);
    if let Some(ChunkRange::Interval { lower: first, .. }) = ranges.first_mut() {
        first.clone_from(lower);
    }
    if let Some(ChunkRange::Interval { upper: last, .. }) = ranges.last_mut() {
        last.clone_from(upper);
    }
    let each = estimated_rows.div_ceil(ranges.len() as u64);
    Some(ranges.into_iter().map(|range| (range, each)).collect())
}

/// The planned key span of a chunk's unit: its partition's, or its table's.
pub fn span_of<'a>(
    spans: &'a [PlannedKeySpan],
    partition: Option<&str>,
) -> Option<&'a PlannedKeySpan> {
    spans
        .iter()
        .find(|span| span.partition.as_deref() == partition)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn int(value: i64) -> Option<KeyBound> {
        Some(KeyBound(vec![KeyValue::Int(value)]))
    }

    fn span(min: i64, max: i64) -> PlannedKeySpan {
        PlannedKeySpan {
            partition: None,
            min,
            max,
        }
    }

    fn inputs(slots: usize, remaining_rows: u64) -> SplitInputs {
        SplitInputs {
            slots,
            remaining_rows,
            target_rows: u64::MAX,
        }
    }

    #[test]
    fn one_chunk_twenty_times_the_others_is_cut_into_fair_pieces_on_four_idle_slots() {
        // Four partitions of 10,000 rows and one of 200,000, one chunk each.
        let queue = [
            (ChunkId(4), 200_000),
            (ChunkId(0), 10_000),
            (ChunkId(1), 10_000),
            (ChunkId(2), 10_000),
            (ChunkId(3), 10_000),
        ];
        let inputs = inputs(4, 240_000);
        assert_eq!(piece_rows(&inputs), 60_000);
        assert_eq!(choose_splits(&inputs, 0, queue), vec![(ChunkId(4), 4)]);
    }

    #[test]
    fn nothing_is_cut_without_a_free_slot_or_when_the_chunks_are_balanced() {
        let queue = [(ChunkId(0), 200_000), (ChunkId(1), 10_000)];
        assert!(choose_splits(&inputs(4, 210_000), 4, queue).is_empty());
        let balanced = [(ChunkId(0), 50_000), (ChunkId(1), 50_000)];
        assert!(choose_splits(&inputs(2, 100_000), 0, balanced).is_empty());
        // Many chunks keep every slot busy while the big one runs: its share is big.
        let mut many = vec![(ChunkId(0), 20_000)];
        many.extend((1..100).map(|id| (ChunkId(id), 1_000)));
        assert!(choose_splits(&inputs(4, 119_000), 0, many).is_empty());
    }

    #[test]
    fn a_chunk_far_over_the_target_rows_is_cut_even_with_work_for_every_slot() {
        let inputs = SplitInputs {
            slots: 2,
            remaining_rows: 1_000_000,
            target_rows: 100_000,
        };
        assert_eq!(pieces_for(400_000, &inputs), Some(4));
        assert_eq!(pieces_for(140_000, &inputs), None, "within the slack");
        assert_eq!(pieces_for(10_000_000, &inputs), Some(MAX_PIECES));
    }

    #[test]
    fn small_chunks_are_never_cut_below_the_smallest_piece() {
        assert_eq!(piece_rows(&inputs(8, 800)), MIN_PIECE_ROWS);
        assert_eq!(pieces_for(1_400, &inputs(8, 2_000)), None);
        assert_eq!(pieces_for(2_000, &inputs(8, 2_000)), Some(2));
    }

    #[test]
    fn the_decision_stops_at_the_first_chunk_too_small() {
        let queue = [
            (ChunkId(0), 90_000),
            (ChunkId(1), 80_000),
            (ChunkId(2), 5_000),
        ];
        // A fair piece is 160,000 / 8 = 20,000 rows.
        let chosen = choose_splits(&inputs(8, 160_000), 2, queue);
        assert_eq!(chosen, vec![(ChunkId(0), 5), (ChunkId(1), 4)]);
    }

    #[test]
    fn an_unbounded_chunk_is_cut_from_its_planned_span_and_keeps_its_open_ends() {
        let whole = ChunkRange::Interval {
            lower: None,
            upper: None,
        };
        let pieces = cut_range(&whole, 1_000, Some(&span(0, 99)), 4).expect("cut");
        let ranges: Vec<&ChunkRange> = pieces.iter().map(|(range, _)| range).collect();
        assert_eq!(
            ranges,
            vec![
                &ChunkRange::Interval {
                    lower: None,
                    upper: int(25)
                },
                &ChunkRange::Interval {
                    lower: int(25),
                    upper: int(50)
                },
                &ChunkRange::Interval {
                    lower: int(50),
                    upper: int(75)
                },
                &ChunkRange::Interval {
                    lower: int(75),
                    upper: None
                },
            ]
        );
        assert!(pieces.iter().all(|(_, rows)| *rows == 250));
        assert_eq!(cut_range(&whole, 1_000, None, 4), None, "no span, no cut");
    }

    #[test]
    fn ranges_that_are_not_one_integer_are_left_whole() {
        let text = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Text("a".into())])),
            upper: Some(KeyBound(vec![KeyValue::Text("z".into())])),
        };
        assert_eq!(cut_range(&text, 10_000, None, 4), None);
        let pair = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(1), KeyValue::Int(2)])),
            upper: None,
        };
        assert_eq!(cut_range(&pair, 10_000, Some(&span(0, 9)), 4), None);
        for whole in [ChunkRange::WholeTable, ChunkRange::NullKeys] {
            assert_eq!(cut_range(&whole, 10_000, Some(&span(0, 9)), 4), None);
        }
        // One key: nothing to cut between.
        let single = ChunkRange::Interval {
            lower: int(5),
            upper: int(6),
        };
        assert_eq!(cut_range(&single, 10_000, None, 4), None);
    }

    #[test]
    fn the_span_of_a_chunk_is_its_partitions() {
        let spans = [
            PlannedKeySpan {
                partition: Some("p1".into()),
                min: 0,
                max: 9,
            },
            PlannedKeySpan {
                partition: Some("p2".into()),
                min: 10,
                max: 19,
            },
        ];
        assert_eq!(span_of(&spans, Some("p2")).map(|span| span.min), Some(10));
        assert_eq!(span_of(&spans, None), None);
    }

    fn bound() -> impl Strategy<Value = Option<i64>> {
        prop_oneof![
            Just(None),
            Just(Some(i64::MIN)),
            Just(Some(i64::MAX)),
            (-1_000i64..1_000).prop_map(Some),
            any::<i64>().prop_map(Some),
        ]
    }

    proptest! {
        /// The pieces own exactly the chunk's keys, whatever the bounds, the span (stale
        /// or not) and the number of pieces.
        #[test]
        fn pieces_cover_the_chunk_exactly_once(
            lower in bound(),
            upper in bound(),
            span_ends in proptest::option::of((-2_000i64..2_000, 0i64..4_000)),
            pieces in 2usize..20,
            probes in proptest::collection::vec(prop_oneof![
                -3_000i64..3_000,
                Just(i64::MIN),
                Just(i64::MAX),
                any::<i64>(),
            ], 1..60),
        ) {
            let range = ChunkRange::Interval {
                lower: lower.and_then(int),
                upper: upper.and_then(int),
            };
            let span = span_ends.map(|(min, len)| span(min, min.saturating_add(len)));
            let Some(cut) = cut_range(&range, 10_000, span.as_ref(), pieces) else {
                return Ok(());
            };
            prop_assert!(cut.len() >= 2 && cut.len() <= pieces);
            for probe in probes {
                let key = [Some(KeyValue::Int(probe))];
                let owners = cut.iter().filter(|(piece, _)| piece.contains(&key)).count();
                prop_assert_eq!(owners, usize::from(range.contains(&key)), "key {}", probe);
            }
        }
    }
}
