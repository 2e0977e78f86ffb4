//! Boundaries cut from a sample of the keys, for tables too big to scan every key at
//! planning.
//!
//! A sample of `n` keys that stands for `rows` rows gives each sampled key the weight
//! `rows / n`; boundary `j` is the sampled key at position `j · every_rows · n / rows`.
//! With `k` independent sample points per chunk a chunk's size deviates from the target
//! by about `1/√k` ([`SAMPLE_POINTS_PER_CHUNK`] = 50: ~14 %, so 2× is ~7 standard
//! deviations away), whatever the key distribution: the sample is of rows, not of key
//! values, so skew and gaps in the keys do not bias it. Boundaries only move the cuts;
//! the intervals still cover every row exactly once.

use ferry_model::key::{KeyBound, KeySample};

/// Tables with fewer non-NULL-key rows than this are planned by an exact key scan
/// (`Source::key_boundaries`): quick at that size, and exact. Bigger ones are sampled.
pub const SAMPLE_FROM_ROWS: u64 = 1_000_000;

/// Sample points asked per planned chunk.
pub const SAMPLE_POINTS_PER_CHUNK: u64 = 50;

/// At most this many points are asked for one table (a job of more than 10,000 chunks
/// per table gets fewer points per chunk, so less even chunks).
pub const MAX_SAMPLE_POINTS: u64 = 500_000;

/// Sample points to ask for a table of `keyed_rows` cut into chunks of `every_rows`.
pub fn sample_points(keyed_rows: u64, every_rows: u64) -> u64 {
    let num_chunks = keyed_rows.div_ceil(every_rows.max(1));
    num_chunks
        .saturating_mul(SAMPLE_POINTS_PER_CHUNK)
        .clamp(SAMPLE_POINTS_PER_CHUNK, MAX_SAMPLE_POINTS)
}

/// Cuts boundaries about `every_rows` rows apart from `sample` (keys in the source's key
/// order): strictly increasing in that order when the sampled keys are distinct, as a
/// unique key's are. Empty when the sample stands for no more than one chunk.
pub fn boundaries_from_sample(sample: &KeySample, every_rows: u64) -> Vec<KeyBound> {
    let num_points = sample.keys.len() as u128;
    let rows = u128::from(sample.rows);
    let every_rows = u128::from(every_rows.max(1));
    if num_points == 0 || rows == 0 {
        return Vec::new();
    }
    let mut boundaries: Vec<KeyBound> = Vec::new();
    let mut last_position: Option<usize> = None;
    for index in 1u128.. {
        let position = index.saturating_mul(every_rows).saturating_mul(num_points) / rows;
        if position >= num_points {
            break;
        }
        // usize holds it: it is below the sample's length.
        let position = position as usize;
        if last_position == Some(position) {
            continue;
        }
        last_position = Some(position);
        let bound = &sample.keys[position];
        // A repeat (a key that is not unique) would make an empty range.
        if boundaries.last() != Some(bound) {
            boundaries.push(bound.clone());
        }
    }
    boundaries
}

#[cfg(test)]
mod tests {
    use ferry_model::key::{ChunkRange, KeyValue};
    use proptest::prelude::*;

    use super::*;
    use crate::planner::intervals;

    fn bound(key: i64) -> KeyBound {
        KeyBound(vec![KeyValue::Int(key)])
    }

    /// Rows of each interval of `boundaries`, counted over `keys` (sorted, distinct).
    fn chunk_sizes(boundaries: &[KeyBound], keys: &[i64]) -> Vec<u64> {
        let cuts: Vec<i64> = boundaries
            .iter()
            .map(|bound| match bound.0.as_slice() {
                [KeyValue::Int(value)] => *value,
                other => panic!("not an integer bound: {other:?}"),
            })
            .collect();
        let ranges = intervals(boundaries);
        assert_eq!(ranges.len(), cuts.len() + 1);
        let mut sizes = vec![0u64; ranges.len()];
        for key in keys {
            // The interval a key falls in: how many cuts are <= it (half-open ranges).
            let index = cuts.partition_point(|cut| cut <= key);
            sizes[index] += 1;
        }
        for (range, size) in ranges.iter().zip(&sizes) {
            if let ChunkRange::Interval { lower, upper } = range {
                assert!(lower.is_some() || upper.is_some() || *size == keys.len() as u64);
            }
        }
        sizes
    }

    /// A key set with the shapes that defeat arithmetic cuts: a Zipf-like density
    /// (squares: dense low keys, sparse high ones), a huge gap, negative keys.
    fn skewed_keys(count: u64) -> Vec<i64> {
        let mut keys: Vec<i64> = (1..=count as i64)
            .map(|index| {
                if index % 10 < 7 {
                    index * index
                } else {
                    5_000_000_000_000 + index * 1000
                }
            })
            .chain((1..=count as i64 / 10).map(|index| -index * 7))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// A seeded xorshift, so a failing case is replayed from its seed.
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn an_exact_sample_gives_exact_chunks() {
        let keys: Vec<i64> = (0..1000).collect();
        let sample = KeySample {
            keys: keys.iter().copied().map(bound).collect(),
            rows: 1000,
        };
        let boundaries = boundaries_from_sample(&sample, 100);
        assert_eq!(boundaries.len(), 9);
        assert_eq!(chunk_sizes(&boundaries, &keys), vec![100; 10]);
    }

    #[test]
    fn a_sample_of_one_chunk_or_nothing_has_no_boundaries() {
        let sample = KeySample {
            keys: vec![bound(1), bound(2)],
            rows: 100,
        };
        assert!(boundaries_from_sample(&sample, 100).is_empty());
        assert!(boundaries_from_sample(&KeySample::default(), 100).is_empty());
        let no_rows = KeySample {
            keys: vec![bound(1)],
            rows: 0,
        };
        assert!(boundaries_from_sample(&no_rows, 1).is_empty());
    }

    #[test]
    fn repeated_keys_never_make_an_empty_range() {
        let sample = KeySample {
            keys: vec![bound(1), bound(1), bound(1), bound(2), bound(2), bound(3)],
            rows: 6,
        };
        assert_eq!(
            boundaries_from_sample(&sample, 1),
            vec![bound(1), bound(2), bound(3)]
        );
    }

    #[test]
    fn points_follow_the_chunk_count_within_limits() {
        assert_eq!(sample_points(0, 100), SAMPLE_POINTS_PER_CHUNK);
        assert_eq!(sample_points(1000, 100), 10 * SAMPLE_POINTS_PER_CHUNK);
        assert_eq!(sample_points(u64::MAX, 1), MAX_SAMPLE_POINTS);
        assert_eq!(sample_points(10, 0), 10 * SAMPLE_POINTS_PER_CHUNK);
    }

    proptest! {
        /// A systematic sample (every `step`-th key from an offset) of any key set cuts
        /// chunks within 2× of the target, and every key lands in exactly one chunk.
        #[test]
        fn systematic_samples_cut_chunks_within_twice_the_target(
            keys in proptest::collection::btree_set(any::<i64>(), 0..3000),
            every_rows in 4u64..400,
            step_seed in 0u64..1000,
            offset_seed in 0u64..1000,
        ) {
            let keys: Vec<i64> = keys.into_iter().collect();
            let step = 1 + step_seed % (every_rows / 4).max(1);
            let offset = (offset_seed % step) as usize;
            let sample = KeySample {
                keys: keys.iter().skip(offset).step_by(step as usize).copied().map(bound).collect(),
                rows: keys.len() as u64,
            };
            let boundaries = boundaries_from_sample(&sample, every_rows);
            let sizes = chunk_sizes(&boundaries, &keys);
            prop_assert_eq!(sizes.iter().sum::<u64>(), keys.len() as u64);
            for size in &sizes {
                prop_assert!(*size <= 2 * every_rows, "chunk of {} rows, target {}", size, every_rows);
            }
            for pair in boundaries.windows(2) {
                prop_assert_eq!(pair[0].sql_cmp(&pair[1]), std::cmp::Ordering::Less);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// A random (Bernoulli) sample of as many points as the planner asks, over skewed
        /// keys with a huge gap, with the row total estimated from the sampling rate as a
        /// connector does: every chunk within 2× of the target.
        #[test]
        fn random_samples_of_skewed_keys_cut_chunks_within_twice_the_target(
            seed in 1u64..u64::MAX,
            every_rows in 2_000u64..20_000,
        ) {
            let keys = skewed_keys(200_000);
            let points = sample_points(keys.len() as u64, every_rows);
            let threshold = u64::MAX / keys.len() as u64 * points;
            let mut state = seed;
            let sampled: Vec<KeyBound> = keys
                .iter()
                .filter(|_| next_random(&mut state) < threshold)
                .copied()
                .map(bound)
                .collect();
            let fraction = points as f64 / keys.len() as f64;
            let sample = KeySample {
                rows: (sampled.len() as f64 / fraction) as u64,
                keys: sampled,
            };
            let sizes = chunk_sizes(&boundaries_from_sample(&sample, every_rows), &keys);
            prop_assert_eq!(sizes.iter().sum::<u64>(), keys.len() as u64);
            for size in &sizes {
                prop_assert!(*size <= 2 * every_rows, "chunk of {} rows, target {}", size, every_rows);
            }
        }
    }
}
