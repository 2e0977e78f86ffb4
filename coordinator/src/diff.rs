//! Localising a difference between source and target, as pure decisions over small
//! traits and plain data (the IO shell, over the connectors, is `ferryctl verify`'s):
//!
//! - [`bisect`]: a chunk range whose count or checksum differs is cut in two on its
//!   integer key, each half counted and checksummed on both sides, and the halves that
//!   still differ are cut again, until a differing range holds at most `leaf_rows` rows
//!   on either side (or cannot be cut: one key). Halves that agree are dropped.
//! - [`compare_rows`]: the rows of such a small range, read from both sides, compared by
//!   key: missing in the target, extra in the target, or changed (which columns).
//!
//! Ranges are half-open `[lower, upper)` with `None` unbounded, like chunk ranges: the
//! first and last halves keep the chunk's open ends, so a target row beyond every source
//! key is still inside a range.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ferry_model::checksum::RangeChecksum;

/// A half-open range `[lower, upper)` over one integer key; `None` is unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntRange {
    /// Inclusive lower bound.
    pub lower: Option<i64>,
    /// Exclusive upper bound.
    pub upper: Option<i64>,
}

/// Both sides of one range: their count and checksum, and the smallest and largest key
/// found on either side (`None` when both are empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sides {
    /// The source range.
    pub source: RangeChecksum,
    /// The target range.
    pub target: RangeChecksum,
    /// The smallest key on either side.
    pub min_key: Option<i64>,
    /// The largest key on either side.
    pub max_key: Option<i64>,
}

impl Sides {
    /// Whether both sides hold the same rows.
    pub fn agree(&self) -> bool {
        self.source == self.target
    }
}

/// Counts and checksums one range on both sides.
#[async_trait]
pub trait RangeProbe: Send + Sync {
    /// Why a probe failed.
    type Error: Send;

    /// Both sides of `range`.
    async fn probe(&self, range: IntRange) -> Result<Sides, Self::Error>;
}

/// What a bisection found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bisection {
    /// The smallest ranges that differ, in key order, with both sides of each.
    pub differing: Vec<(IntRange, Sides)>,
    /// Ranges probed (both sides each), the whole range included.
    pub probes: usize,
}

/// Cuts `range` (whose both sides are `whole`, already probed) into the smallest ranges
/// that still differ: halves on the integer key, down to at most `leaf_rows` rows on
/// either side. Returns nothing when the sides agree.
pub async fn bisect<P: RangeProbe + ?Sized>(
    probe: &P,
    range: IntRange,
    whole: Sides,
    leaf_rows: u64,
) -> Result<Bisection, P::Error> {
    let mut found = Bisection {
        differing: Vec::new(),
        probes: 1,
    };
    if whole.agree() {
        return Ok(found);
    }
    let mut pending = vec![(range, whole)];
    while let Some((range, sides)) = pending.pop() {
        let Some(middle) = split_point(range, &sides, leaf_rows) else {
            found.differing.push((range, sides));
            continue;
        };
        let lower_half = IntRange {
            lower: range.lower,
            upper: Some(middle),
        };
        let upper_half = IntRange {
            lower: Some(middle),
            upper: range.upper,
        };
        // Both halves at once: each reads its range on both sides.
        let (upper_sides, lower_sides) =
            futures::future::try_join(probe.probe(upper_half), probe.probe(lower_half)).await?;
        found.probes += 2;
        for (half, half_sides) in [(upper_half, upper_sides), (lower_half, lower_sides)] {
            if !half_sides.agree() {
                pending.push((half, half_sides));
            }
        }
    }
    found
        .differing
        .sort_by_key(|(range, _)| range.lower.map_or(i128::MIN, i128::from));
    Ok(found)
}

/// Where to cut a differing range in two, or `None` when it is small enough (at most
/// `leaf_rows` rows on either side) or holds a single key. The cut is the middle of the
/// keys the range actually holds, so both halves hold some.
pub fn split_point(range: IntRange, sides: &Sides, leaf_rows: u64) -> Option<i64> {
    if sides.source.rows.max(sides.target.rows) <= leaf_rows {
        return None;
    }
    let (min_key, max_key) = (sides.min_key?, sides.max_key?);
    let lowest = range.lower.map_or(min_key, |lower| lower.max(min_key));
    let highest = range
        .upper
        .map_or(max_key, |upper| (upper.saturating_sub(1)).min(max_key));
    if lowest >= highest {
        return None;
    }
    // In i128: the middle of two i64 never overflows there. The cut lies in
    // (lowest, highest], so [lower, cut) holds `lowest` and [cut, upper) holds `highest`.
    let middle = (i128::from(lowest) + i128::from(highest)) / 2 + 1;
    i64::try_from(middle).ok()
}

/// One row of one side: its key (rendered for people) and its columns' canonical
/// encodings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideRow {
    /// The key's values as JSON (one value, or an array for a composite key).
    pub key: serde_json::Value,
    /// Each column's canonical encoding, in column order.
    pub cells: Vec<Vec<u8>>,
    /// Each column's value as JSON, for `--show-values`.
    pub values: Vec<serde_json::Value>,
}

/// How one key differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowDifference {
    /// In the source, not in the target.
    MissingInTarget {
        /// The key.
        key: serde_json::Value,
        /// The source row's values.
        source: Vec<serde_json::Value>,
    },
    /// In the target, not in the source.
    ExtraInTarget {
        /// The key.
        key: serde_json::Value,
        /// The target row's values.
        target: Vec<serde_json::Value>,
    },
    /// On both sides with other values.
    Changed {
        /// The key.
        key: serde_json::Value,
        /// Indexes of the columns that differ.
        columns: Vec<usize>,
        /// The source row's values.
        source: Vec<serde_json::Value>,
        /// The target row's values.
        target: Vec<serde_json::Value>,
    },
}

impl RowDifference {
    /// The key that differs.
    pub fn key(&self) -> &serde_json::Value {
        match self {
            RowDifference::MissingInTarget { key, .. }
            | RowDifference::ExtraInTarget { key, .. }
            | RowDifference::Changed { key, .. } => key,
        }
    }

    /// `missing`, `extra` or `changed`.
    pub fn kind(&self) -> &'static str {
        match self {
            RowDifference::MissingInTarget { .. } => "missing",
            RowDifference::ExtraInTarget { .. } => "extra",
            RowDifference::Changed { .. } => "changed",
        }
    }
}

/// Compares the rows of one range on both sides by key (`key_bytes` identifies a row:
/// its key columns' canonical encodings). Keys in key-byte order.
pub fn compare_rows(
    source: BTreeMap<Vec<u8>, SideRow>,
    mut target: BTreeMap<Vec<u8>, SideRow>,
) -> Vec<RowDifference> {
    let mut differences = Vec::new();
    for (key_bytes, source_row) in source {
        match target.remove(&key_bytes) {
            None => differences.push((
                key_bytes,
                RowDifference::MissingInTarget {
                    key: source_row.key,
                    source: source_row.values,
                },
            )),
            Some(target_row) => {
                let columns: Vec<usize> = (0..source_row.cells.len().max(target_row.cells.len()))
                    .filter(|index| source_row.cells.get(*index) != target_row.cells.get(*index))
                    .collect();
                if !columns.is_empty() {
                    differences.push((
                        key_bytes,
                        RowDifference::Changed {
                            key: source_row.key,
                            columns,
                            source: source_row.values,
                            target: target_row.values,
                        },
                    ));
                }
            }
        }
    }
    for (key_bytes, target_row) in target {
        differences.push((
            key_bytes,
            RowDifference::ExtraInTarget {
                key: target_row.key,
                target: target_row.values,
            },
        ));
    }
    differences.sort_by(|(left, _), (right, _)| left.cmp(right));
    differences
        .into_iter()
        .map(|(_, difference)| difference)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fake pair of tables: keys with a value on each side; a probe hashes the range.
    struct Tables {
        source: BTreeMap<i64, u64>,
        target: BTreeMap<i64, u64>,
        probes: AtomicUsize,
    }

    fn side(
        rows: &BTreeMap<i64, u64>,
        range: IntRange,
    ) -> (RangeChecksum, Option<i64>, Option<i64>) {
        let inside: Vec<(&i64, &u64)> = rows
            .iter()
            .filter(|(key, _)| {
                range.lower.is_none_or(|lower| **key >= lower)
                    && range.upper.is_none_or(|upper| **key < upper)
            })
            .collect();
        let checksum = RangeChecksum {
            rows: inside.len() as u64,
            sum: inside.iter().fold(0u128, |sum, (key, value)| {
                sum.wrapping_add(u128::from(**value).wrapping_mul(1_000_003) ^ (**key as u128))
            }),
        };
        (
            checksum,
            inside.first().map(|(key, _)| **key),
            inside.last().map(|(key, _)| **key),
        )
    }

    #[async_trait]
    impl RangeProbe for Tables {
        type Error = std::convert::Infallible;
        async fn probe(&self, range: IntRange) -> Result<Sides, Self::Error> {
            self.probes.fetch_add(1, Ordering::Relaxed);
            let (source, source_min, source_max) = side(&self.source, range);
            let (target, target_min, target_max) = side(&self.target, range);
            Ok(Sides {
                source,
                target,
                min_key: source_min.into_iter().chain(target_min).min(),
                max_key: source_max.into_iter().chain(target_max).max(),
            })
        }
    }

    fn tables(rows: i64) -> Tables {
        let source: BTreeMap<i64, u64> = (1..=rows).map(|key| (key, key as u64 * 7)).collect();
        Tables {
            target: source.clone(),
            source,
            probes: AtomicUsize::new(0),
        }
    }

    async fn run(tables: &Tables, range: IntRange, leaf_rows: u64) -> Bisection {
        let whole = tables.probe(range).await.expect("infallible");
        bisect(tables, range, whole, leaf_rows)
            .await
            .expect("infallible")
    }

    const UNBOUNDED: IntRange = IntRange {
        lower: None,
        upper: None,
    };

    #[tokio::test]
    async fn equal_sides_are_not_cut() {
        let tables = tables(10_000);
        let found = run(&tables, UNBOUNDED, 100).await;
        assert!(found.differing.is_empty());
        assert_eq!(found.probes, 1);
    }

    #[tokio::test]
    async fn each_difference_is_cut_down_to_a_small_range_that_holds_it() {
        let mut tables = tables(100_000);
        tables.target.remove(&17); // missing in target
        tables.target.insert(250_000, 1); // extra, beyond every source key
        tables.target.insert(50_000, 0); // changed
        tables.target.insert(-5, 3); // extra, below every source key
        let found = run(&tables, UNBOUNDED, 200).await;
        let mut holding = BTreeSet::new();
        for (range, sides) in &found.differing {
            assert!(!sides.agree());
            assert!(
                sides.source.rows.max(sides.target.rows) <= 200,
                "{range:?} {sides:?}"
            );
            for key in [17, 250_000, 50_000, -5] {
                if range.lower.is_none_or(|lower| key >= lower)
                    && range.upper.is_none_or(|upper| key < upper)
                {
                    holding.insert(key);
                }
            }
        }
        assert_eq!(
            holding.len(),
            4,
            "every differing key is in a range: {found:?}"
        );
        assert!(found.differing.len() <= 4);
        // Logarithmic: about two probes per halving per difference, not one per row.
        assert!(found.probes < 4 * 2 * 20, "{} probes", found.probes);
        // Ranges are in key order and never overlap.
        for pair in found.differing.windows(2) {
            let (left, right) = (pair[0].0, pair[1].0);
            assert!(left.upper.expect("bounded") <= right.lower.expect("bounded"));
        }
    }

    #[tokio::test]
    async fn a_range_of_one_key_is_a_leaf_however_many_rows() {
        let range = IntRange {
            lower: Some(5),
            upper: Some(6),
        };
        let sides = Sides {
            source: RangeChecksum { rows: 1, sum: 1 },
            target: RangeChecksum { rows: 1, sum: 2 },
            min_key: Some(5),
            max_key: Some(5),
        };
        assert_eq!(split_point(range, &sides, 0), None);
        let wide = IntRange {
            lower: Some(i64::MIN),
            upper: None,
        };
        let extreme = Sides {
            min_key: Some(i64::MIN),
            max_key: Some(i64::MAX),
            ..sides
        };
        let cut = split_point(wide, &extreme, 0).expect("cut");
        assert!(cut > i64::MIN);
    }

    fn row(key: i64, cells: &[&[u8]]) -> (Vec<u8>, SideRow) {
        (
            key.to_be_bytes().to_vec(),
            SideRow {
                key: serde_json::json!(key),
                cells: cells.iter().map(|cell| cell.to_vec()).collect(),
                values: cells
                    .iter()
                    .map(|cell| serde_json::json!(String::from_utf8_lossy(cell)))
                    .collect(),
            },
        )
    }

    #[test]
    fn rows_are_told_missing_extra_or_changed_by_column() {
        let source = BTreeMap::from([
            row(1, &[b"1", b"a"]),
            row(2, &[b"2", b"b"]),
            row(3, &[b"3", b"c"]),
        ]);
        let target = BTreeMap::from([
            row(1, &[b"1", b"a"]),
            row(3, &[b"3", b"C"]),
            row(4, &[b"4", b"d"]),
        ]);
        let differences = compare_rows(source, target);
        let summary: Vec<(String, &str)> = differences
            .iter()
            .map(|difference| (difference.key().to_string(), difference.kind()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("2".to_owned(), "missing"),
                ("3".to_owned(), "changed"),
                ("4".to_owned(), "extra"),
            ]
        );
        assert!(matches!(
            &differences[1],
            RowDifference::Changed { columns, .. } if columns == &vec![1]
        ));
    }
}
