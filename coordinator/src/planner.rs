//! Pure planning decisions: which key a table is split on, and how its key space is cut
//! into chunks.
//!
//! Invariant (proptested below): the chunks of a table cover every row exactly once.
//! Intervals are half-open and the outer ones unbounded, so even rows inserted outside
//! the planned min/max belong to a chunk; rows with a NULL key get a chunk of their own.

use ferry_model::key::{ChunkRange, KeyBound, KeyStats, KeyValue, SplitKey};
use ferry_model::schema::TableSchema;

mod hash;
mod sample;

pub use hash::{HashSplitRefusal, hash_split_key, split_hint};
pub use sample::{
    MAX_SAMPLE_POINTS, SAMPLE_FROM_ROWS, SAMPLE_POINTS_PER_CHUNK, boundaries_from_sample,
    sample_points,
};

/// A single integer key counts as dense when its span is at most this many times its
/// row count: even cuts by arithmetic then give chunks within 2× of the target.
pub const DENSE_SPAN_FACTOR: u128 = 2;

/// One chunk as planned.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedChunk {
    /// The rows it owns.
    pub range: ChunkRange,
    /// Rows expected.
    pub estimated_rows: u64,
}

/// How to cut a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitChoice {
    /// One chunk over all non-NULL keys (or the whole table when there is no key).
    Single,
    /// `num_chunks` equal slices of the integer key span.
    Even {
        /// Smallest key.
        min: i64,
        /// Largest key.
        max: i64,
        /// How many slices.
        num_chunks: u64,
    },
    /// Boundaries read from the source, `every_rows` keys apart.
    Boundaries {
        /// Rows between boundaries.
        every_rows: u64,
    },
    /// Boundaries cut from a sample of `points` keys ([`boundaries_from_sample`]),
    /// about `every_rows` rows apart; a table of at least [`SAMPLE_FROM_ROWS`] keyed
    /// rows. When the source cannot sample, [`SplitChoice::Boundaries`] instead.
    Sample {
        /// Rows between boundaries.
        every_rows: u64,
        /// Sample points to ask the source for.
        points: u64,
    },
}

/// Picks the split key: the primary key; else the rowid when the sink can carry it; else
/// none, with a warning for the report.
///
/// Across engines (`same_engine == false`) only integer keys are split: text, decimal or
/// temporal keys may sort differently in the two engines (collations, text forms), and a
/// range must select the same rows on both sides or an overwrite would delete the wrong
/// rows. Such tables are copied as one chunk, with a warning.
pub fn choose_split_key(
    table: &TableSchema,
    sink_carries_rowid: bool,
    same_engine: bool,
) -> (SplitKey, Option<String>) {
    let all_integer = table.primary_key.iter().all(|name| {
        table
            .column(name)
            .is_some_and(|column| column.column_type.is_signed_integer())
    });
    if !table.primary_key.is_empty() && !same_engine && !all_integer {
        let warning = format!(
            "table {}: its primary key ({}) is not made of integers, which may sort differently \
             in the source and target engines: copied as one chunk, and a re-copy rewrites the \
             whole table",
            table.name,
            table.primary_key.join(", ")
        );
        return (SplitKey::None, Some(warning));
    }
    if let Some(key) = table.primary_split_key() {
        return (key, None);
    }
    // No unique key, but a column the source sorts by (ClickHouse): ranges over it still
    // hold every row once, and between two databases of its engine they select alike.
    if same_engine && !table.split_columns.is_empty() {
        let columns: Vec<_> = table
            .split_columns
            .iter()
            .filter_map(|name| table.column(name))
            .collect();
        if columns.len() == table.split_columns.len() {
            return (
                SplitKey::Columns {
                    names: table.split_columns.clone(),
                    nullable: columns.iter().any(|column| column.nullable),
                    single_integer: columns.len() == 1
                        && columns[0].column_type.is_signed_integer(),
                },
                None,
            );
        }
    }
    if table.has_rowid && sink_carries_rowid {
        return (SplitKey::Rowid, None);
    }
    let warning = format!(
        "table {} has no primary key{}: copied as one chunk, and a re-copy rewrites the whole table",
        table.name,
        if table.has_rowid {
            " and the target cannot keep its rowid"
        } else {
            ""
        }
    );
    (SplitKey::None, Some(warning))
}

/// Decides whether a table is planned by its native partitions: returns its leaf
/// partitions when so, else `None`, with a warning for the report when the table is
/// partitioned but planned as a whole.
///
/// Partition chunks need a target partitioned the same way, which only a sink of the
/// source's engine gives (PostgreSQL creates the partitions from the source's bounds,
/// MySQL from the source's DDL); a table built from `columns:` overrides has no
/// partitions. Across engines the table is planned through the parent, on its key.
pub fn choose_plan_units(
    table: &TableSchema,
    same_engine: bool,
    has_type_overrides: bool,
) -> (Option<Vec<String>>, Option<String>) {
    let Some(partitioning) = &table.partitioning else {
        return (None, None);
    };
    let leaves: Vec<String> = partitioning
        .leaves()
        .map(|partition| partition.name.clone())
        .collect();
    if leaves.is_empty() {
        return (None, None);
    }
    let why_whole = if !same_engine {
        "partitions are planned one by one only between two databases of the same engine"
    } else if has_type_overrides {
        "its target is built from the columns (columns: overrides), without partitions"
    } else {
        return (Some(leaves), None);
    };
    let warning = format!(
        "table {} has {} partitions in the source, but {why_whole}: planned and copied \
         through the table itself, on its key",
        table.name,
        leaves.len()
    );
    (None, Some(warning))
}

/// Decides how to cut a table from its key statistics.
pub fn choose_split(key: &SplitKey, stats: &KeyStats, target_rows: u64) -> SplitChoice {
    let target_rows = target_rows.max(1);
    if let SplitKey::Hash { buckets, .. } = key {
        // Every row's bucket is in [0, buckets): one chunk per bucket, whatever the size.
        return SplitChoice::Even {
            min: 0,
            max: i64::from(*buckets) - 1,
            num_chunks: u64::from(*buckets),
        };
    }
    let keyed_rows = stats.rows.saturating_sub(stats.null_key_rows);
    if matches!(key, SplitKey::None) || keyed_rows <= target_rows {
        return SplitChoice::Single;
    }
    let num_chunks = keyed_rows.div_ceil(target_rows);
    if key.single_integer()
        && let Some((min, max)) = stats.int_min_max
    {
        let span = (i128::from(max) - i128::from(min) + 1) as u128;
        if span <= u128::from(keyed_rows) * DENSE_SPAN_FACTOR {
            return SplitChoice::Even {
                min,
                max,
                num_chunks,
            };
        }
    }
    if keyed_rows >= SAMPLE_FROM_ROWS {
        return SplitChoice::Sample {
            every_rows: target_rows,
            points: sample_points(keyed_rows, target_rows),
        };
    }
    SplitChoice::Boundaries {
        every_rows: target_rows,
    }
}

/// Cuts `[min, max]` into at most `num_chunks` equal integer slices, returned as the
/// inner boundaries (strictly increasing, each in `(min, max]`). Exact at the i64 ends.
pub fn even_boundaries(min: i64, max: i64, num_chunks: u64) -> Vec<KeyBound> {
    if max < min || num_chunks <= 1 {
        return Vec::new();
    }
    let span = i128::from(max) - i128::from(min) + 1;
    let slices = i128::from(num_chunks).min(span);
    let width = (span + slices - 1) / slices;
    (1..slices)
        .map(|index| i128::from(min) + index * width)
        .take_while(|bound| *bound <= i128::from(max))
        .filter_map(|bound| i64::try_from(bound).ok())
        .map(|bound| KeyBound(vec![KeyValue::Int(bound)]))
        .collect()
}

/// Turns strictly increasing boundaries into intervals reaching both ends of the key
/// space: `(-inf, b1), [b1, b2), …, [bn, +inf)`.
pub fn intervals(boundaries: &[KeyBound]) -> Vec<ChunkRange> {
    let mut ranges = Vec::with_capacity(boundaries.len() + 1);
    let mut lower: Option<KeyBound> = None;
    for bound in boundaries {
        ranges.push(ChunkRange::Interval {
            lower: lower.take(),
            upper: Some(bound.clone()),
        });
        lower = Some(bound.clone());
    }
    ranges.push(ChunkRange::Interval { lower, upper: None });
    ranges
}

/// Plans one table's chunks. `boundaries` are the source's answer when the choice was
/// [`SplitChoice::Boundaries`], or those cut from its sample for [`SplitChoice::Sample`];
/// they are ignored otherwise.
pub fn plan_table(
    key: &SplitKey,
    stats: &KeyStats,
    choice: SplitChoice,
    boundaries: &[KeyBound],
) -> Vec<PlannedChunk> {
    if matches!(key, SplitKey::None) {
        return vec![PlannedChunk {
            range: ChunkRange::WholeTable,
            estimated_rows: stats.rows,
        }];
    }
    let keyed_rows = stats.rows.saturating_sub(stats.null_key_rows);
    let mut chunks: Vec<PlannedChunk> = match choice {
        SplitChoice::Single => vec![PlannedChunk {
            range: ChunkRange::Interval {
                lower: None,
                upper: None,
            },
            estimated_rows: keyed_rows,
        }],
        SplitChoice::Even {
            min,
            max,
            num_chunks,
        } => {
            let ranges = intervals(&even_boundaries(min, max, num_chunks));
            let each = keyed_rows.div_ceil(ranges.len() as u64);
            ranges
                .into_iter()
                .map(|range| PlannedChunk {
                    range,
                    estimated_rows: each,
                })
                .collect()
        }
        SplitChoice::Boundaries { every_rows } | SplitChoice::Sample { every_rows, .. } => {
            let ranges = intervals(boundaries);
            let last = ranges.len().saturating_sub(1);
            let before_last = every_rows.saturating_mul(last as u64);
            ranges
                .into_iter()
                .enumerate()
                .map(|(index, range)| PlannedChunk {
                    range,
                    estimated_rows: if index < last {
                        every_rows
                    } else {
                        keyed_rows.saturating_sub(before_last)
                    },
                })
                .collect()
        }
    };
    if key.nullable() {
        chunks.push(PlannedChunk {
            range: ChunkRange::NullKeys,
            estimated_rows: stats.null_key_rows,
        });
    }
    chunks
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use ferry_model::schema::{ColumnSchema, ColumnType, TableName};
    use proptest::prelude::*;

    use super::*;

    fn int_key(nullable: bool) -> SplitKey {
        SplitKey::Columns {
            names: vec!["id".into()],
            nullable,
            single_integer: true,
        }
    }

    /// Computes stats and boundaries the way a connector does, then plans.
    fn plan_for(
        key: &SplitKey,
        keys: &[Vec<Option<KeyValue>>],
        target_rows: u64,
    ) -> Vec<PlannedChunk> {
        let null_key_rows = keys
            .iter()
            .filter(|k| k.iter().any(Option::is_none))
            .count() as u64;
        let mut keyed: Vec<KeyBound> = keys
            .iter()
            .filter(|k| k.iter().all(Option::is_some))
            .map(|k| KeyBound(k.iter().flatten().cloned().collect()))
            .collect();
        keyed.sort_by(|a, b| a.sql_cmp(b));
        let ints: Vec<i64> = keyed
            .iter()
            .filter_map(|bound| match bound.0.as_slice() {
                [KeyValue::Int(v)] => Some(*v),
                _ => None,
            })
            .collect();
        let int_min_max = if key.single_integer() && !ints.is_empty() && ints.len() == keyed.len() {
            Some((ints[0], ints[ints.len() - 1]))
        } else {
            None
        };
        let stats = KeyStats {
            rows: keys.len() as u64,
            null_key_rows,
            int_min_max,
        };
        let choice = choose_split(key, &stats, target_rows);
        let boundaries: Vec<KeyBound> = match choice {
            SplitChoice::Boundaries { every_rows } => {
                let mut bounds: Vec<KeyBound> = Vec::new();
                for (index, bound) in keyed.iter().enumerate() {
                    if index > 0
                        && (index as u64).is_multiple_of(every_rows)
                        && bounds
                            .last()
                            .is_none_or(|last| last.sql_cmp(bound) == Ordering::Less)
                    {
                        bounds.push(bound.clone());
                    }
                }
                bounds
            }
            _ => Vec::new(),
        };
        plan_table(key, &stats, choice, &boundaries)
    }

    fn assert_exact_cover(chunks: &[PlannedChunk], keys: &[Vec<Option<KeyValue>>]) {
        for key in keys {
            let owners = chunks
                .iter()
                .filter(|chunk| chunk.range.contains(key))
                .count();
            assert_eq!(owners, 1, "key {key:?} is in {owners} chunks of {chunks:?}");
        }
    }

    fn edge_int() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MIN + 1),
            Just(i64::MAX),
            Just(i64::MAX - 1),
            Just(0i64),
            -1000i64..1000,
            any::<i64>(),
        ]
    }

    proptest! {
        #[test]
        fn integer_keys_are_covered_exactly_once(
            keys in proptest::collection::btree_set(edge_int(), 0..300),
            nulls in 0usize..5,
            target_rows in 1u64..80,
        ) {
            let mut rows: Vec<Vec<Option<KeyValue>>> =
                keys.iter().map(|k| vec![Some(KeyValue::Int(*k))]).collect();
            rows.extend((0..nulls).map(|_| vec![None]));
            let key = int_key(true);
            let chunks = plan_for(&key, &rows, target_rows);
            assert_exact_cover(&chunks, &rows);
            // Keys the plan never saw (inserted later) are covered too.
            assert_exact_cover(&chunks, &[vec![Some(KeyValue::Int(i64::MIN))], vec![Some(KeyValue::Int(i64::MAX))]]);
        }

        #[test]
        fn dense_keys_give_chunks_near_the_target(
            start in edge_int(),
            len in 1u64..5000,
            target_rows in 1u64..700,
        ) {
            let start = start.min(i64::MAX - len as i64);
            let rows: Vec<Vec<Option<KeyValue>>> =
                (0..len).map(|offset| vec![Some(KeyValue::Int(start + offset as i64))]).collect();
            let chunks = plan_for(&int_key(false), &rows, target_rows);
            assert_exact_cover(&chunks, &rows);
            for chunk in &chunks {
                let actual = rows.iter().filter(|k| chunk.range.contains(k)).count() as u64;
                prop_assert!(actual <= 2 * target_rows, "chunk {:?} has {actual} rows, target {target_rows}", chunk.range);
            }
        }

        #[test]
        fn composite_keys_are_covered_exactly_once(
            keys in proptest::collection::btree_set((edge_int(), proptest::option::of("[a-c]{0,3}")), 0..200),
            target_rows in 1u64..50,
        ) {
            let rows: Vec<Vec<Option<KeyValue>>> = keys
                .iter()
                .map(|(a, b)| vec![Some(KeyValue::Int(*a)), b.clone().map(KeyValue::Text)])
                .collect();
            let key = SplitKey::Columns { names: vec!["a".into(), "b".into()], nullable: true, single_integer: false };
            let chunks = plan_for(&key, &rows, target_rows);
            assert_exact_cover(&chunks, &rows);
            for chunk in chunks.iter().filter(|c| !matches!(c.range, ChunkRange::NullKeys)) {
                let actual = rows.iter().filter(|k| chunk.range.contains(k)).count() as u64;
                prop_assert!(actual <= target_rows, "boundary chunk has {actual} rows, target {target_rows}");
            }
        }

        #[test]
        fn even_boundaries_increase_strictly_and_stay_inside(
            a in edge_int(), b in edge_int(), num_chunks in 0u64..10_000,
        ) {
            let (min, max) = (a.min(b), a.max(b));
            let bounds = even_boundaries(min, max, num_chunks);
            prop_assert!(bounds.len() as u64 <= num_chunks.saturating_sub(1));
            let values: Vec<i64> = bounds.iter().map(|bound| match bound.0[0] { KeyValue::Int(v) => v, _ => unreachable!() }).collect();
            prop_assert!(values.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert!(values.iter().all(|v| *v > min && *v <= max));
        }
    }

    proptest! {
        /// A partitioned table is planned partition by partition: every row, identified by
        /// (partition, key), falls in exactly one chunk, which names its partition. The same
        /// key in two partitions is two rows (nothing above the partition orders keys).
        #[test]
        fn partitioned_tables_are_covered_exactly_once_per_partition(
            rows in proptest::collection::vec(
                (0usize..4, proptest::option::weighted(0.95, edge_int())),
                0..300,
            ),
            target_rows in 1u64..40,
        ) {
            let partition_names = ["p0", "p1", "p_empty", "p_default"];
            let key = int_key(true);
            let mut planned: Vec<(String, PlannedChunk)> = Vec::new();
            for (index, name) in partition_names.iter().enumerate() {
                // A partition's keys are unique within it (its primary key).
                let keys: std::collections::BTreeSet<Option<i64>> = rows
                    .iter()
                    .filter(|(partition, _)| *partition == index)
                    .map(|(_, value)| *value)
                    .collect();
                let partition_rows: Vec<Vec<Option<KeyValue>>> =
                    keys.iter().map(|value| vec![value.map(KeyValue::Int)]).collect();
                for chunk in plan_for(&key, &partition_rows, target_rows) {
                    planned.push((name.to_string(), chunk));
                }
            }
            // Every partition, even an empty one, owns an unbounded interval and a
            // NULL-key chunk, so rows inserted after planning still have a chunk.
            for name in partition_names {
                let in_partition: Vec<&PlannedChunk> = planned
                    .iter()
                    .filter(|(partition, _)| partition == name)
                    .map(|(_, chunk)| chunk)
                    .collect();
                prop_assert!(in_partition.iter().any(|chunk| chunk.range == ChunkRange::NullKeys));
                for unseen in [i64::MIN, i64::MAX] {
                    let owners = in_partition
                        .iter()
                        .filter(|chunk| chunk.range.contains(&[Some(KeyValue::Int(unseen))]))
                        .count();
                    prop_assert_eq!(owners, 1);
                }
            }
            for (partition, value) in &rows {
                let row_key = vec![value.map(KeyValue::Int)];
                let owners = planned
                    .iter()
                    .filter(|(name, chunk)| {
                        name == partition_names[*partition] && chunk.range.contains(&row_key)
                    })
                    .count();
                prop_assert_eq!(owners, 1, "row {:?} of {} owned {} times", row_key, partition_names[*partition], owners);
            }
        }
    }

    fn partitioned_table() -> TableSchema {
        use ferry_model::schema::{Partitioning, TablePartition};
        let partition = |name: &str, leaf: bool| TablePartition {
            name: name.to_string(),
            schema: Some("public".to_string()),
            parent: None,
            bound: "DEFAULT".to_string(),
            sub_method: (!leaf).then(|| "RANGE (id)".to_string()),
            leaf,
        };
        TableSchema {
            partitioning: Some(Partitioning {
                method: "RANGE (id)".to_string(),
                partitions: vec![
                    partition("a", true),
                    partition("mid", false),
                    partition("b", true),
                ],
            }),
            ..table(&["id"], false)
        }
    }

    #[test]
    fn partitions_are_planned_natively_only_between_one_engine() {
        let partitioned = partitioned_table();
        assert_eq!(
            choose_plan_units(&partitioned, true, false),
            (Some(vec!["a".to_string(), "b".to_string()]), None)
        );
        let (across, warning) = choose_plan_units(&partitioned, false, false);
        assert_eq!(across, None);
        assert!(
            warning.is_some_and(|w| w.contains("has 2 partitions") && w.contains("same engine"))
        );
        let (overridden, warning) = choose_plan_units(&partitioned, true, true);
        assert_eq!(overridden, None);
        assert!(warning.is_some_and(|w| w.contains("columns:")));
        assert_eq!(
            choose_plan_units(&table(&["id"], false), false, false),
            (None, None)
        );
    }

    #[test]
    fn empty_table_gets_one_chunk_per_kind_of_row() {
        let chunks = plan_for(&int_key(true), &[], 10);
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[0].range,
            ChunkRange::Interval {
                lower: None,
                upper: None
            }
        );
        assert_eq!(chunks[1].range, ChunkRange::NullKeys);
    }

    #[test]
    fn full_i64_span_splits_without_overflow() {
        let bounds = even_boundaries(i64::MIN, i64::MAX, 4);
        assert_eq!(bounds.len(), 3);
        assert_eq!(bounds[1], KeyBound(vec![KeyValue::Int(0)]));
    }

    #[test]
    fn skewed_keys_use_boundaries_not_arithmetic() {
        let stats = KeyStats {
            rows: 1000,
            null_key_rows: 0,
            int_min_max: Some((0, i64::MAX)),
        };
        assert_eq!(
            choose_split(&int_key(false), &stats, 100),
            SplitChoice::Boundaries { every_rows: 100 }
        );
    }

    #[test]
    fn big_skewed_tables_are_sampled_small_ones_scanned_exactly() {
        let stats_of = |rows| KeyStats {
            rows,
            null_key_rows: 0,
            int_min_max: Some((0, i64::MAX)),
        };
        assert_eq!(
            choose_split(&int_key(false), &stats_of(SAMPLE_FROM_ROWS - 1), 1000),
            SplitChoice::Boundaries { every_rows: 1000 }
        );
        assert_eq!(
            choose_split(&int_key(false), &stats_of(SAMPLE_FROM_ROWS), 100_000),
            SplitChoice::Sample {
                every_rows: 100_000,
                points: 10 * SAMPLE_POINTS_PER_CHUNK
            }
        );
        // A dense key is still cut by arithmetic, however big.
        let dense = KeyStats {
            rows: 50_000_000,
            null_key_rows: 0,
            int_min_max: Some((1, 50_000_000)),
        };
        assert!(matches!(
            choose_split(&int_key(false), &dense, 100_000),
            SplitChoice::Even { .. }
        ));
    }

    fn table(primary_key: &[&str], has_rowid: bool) -> TableSchema {
        TableSchema {
            name: TableName::bare("t"),
            columns: vec![ColumnSchema {
                name: "id".into(),
                declared_type: "INTEGER".into(),
                column_type: ColumnType::Int64,
                nullable: false,
            }],
            primary_key: primary_key.iter().map(|s| s.to_string()).collect(),
            has_rowid,
            source_kind: "sqlite".into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        }
    }

    #[test]
    fn table_without_key_is_one_chunk_with_a_warning() {
        let (key, warning) = choose_split_key(&table(&[], true), false, true);
        assert_eq!(key, SplitKey::None);
        assert!(warning.is_some_and(|w| w.contains("one chunk")));
        let stats = KeyStats {
            rows: 5_000_000,
            ..KeyStats::default()
        };
        let chunks = plan_table(&key, &stats, choose_split(&key, &stats, 10), &[]);
        assert_eq!(
            chunks,
            vec![PlannedChunk {
                range: ChunkRange::WholeTable,
                estimated_rows: 5_000_000
            }]
        );
    }

    #[test]
    fn text_keys_are_not_split_across_engines() {
        let mut text_keyed = table(&["id"], false);
        text_keyed.columns[0].column_type = ColumnType::Text;
        let (key, warning) = choose_split_key(&text_keyed, false, false);
        assert_eq!(key, SplitKey::None);
        assert!(warning.is_some_and(|w| w.contains("sort differently")));
        let (same, _) = choose_split_key(&text_keyed, false, true);
        assert!(matches!(same, SplitKey::Columns { .. }));
        let (integer, _) = choose_split_key(&table(&["id"], false), false, false);
        assert!(integer.single_integer());
    }

    #[test]
    fn rowid_is_the_key_when_the_sink_keeps_it() {
        assert_eq!(
            choose_split_key(&table(&[], true), true, true),
            (SplitKey::Rowid, None)
        );
        let (key, _) = choose_split_key(&table(&["id"], true), true, true);
        assert!(key.single_integer() && !key.nullable());
    }
}
