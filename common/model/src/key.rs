//! Split keys and the ranges of rows a chunk owns.
//!
//! Ranges are half-open intervals `[lower, upper)` over the split key, compared as row
//! values (lexicographically, column by column). A missing bound is unbounded, so the
//! first and last chunks of a table reach to the ends of the key space and rows inserted
//! outside the planned min/max still belong to a chunk. Rows whose key has a NULL in any
//! column belong to the separate [`ChunkRange::NullKeys`] chunk: no row falls outside
//! every chunk.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One non-NULL value of a split key column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    /// An integer.
    Int(i64),
    /// A real number (never NaN in a bound: bounds come from stored keys).
    Real(f64),
    /// UTF-8 text, compared bytewise (SQLite's BINARY collation).
    Text(String),
    /// Bytes, compared bytewise.
    Blob(Vec<u8>),
}

impl KeyValue {
    /// Orders values the way SQLite does: numbers (integers and reals compared by
    /// value) < text < blobs.
    pub fn sql_cmp(&self, other: &KeyValue) -> Ordering {
        fn class(value: &KeyValue) -> u8 {
            match value {
                KeyValue::Int(_) | KeyValue::Real(_) => 0,
                KeyValue::Text(_) => 1,
                KeyValue::Blob(_) => 2,
            }
        }
        match (self, other) {
            (KeyValue::Int(a), KeyValue::Int(b)) => a.cmp(b),
            (KeyValue::Int(a), KeyValue::Real(b)) => compare_int_real(*a, *b),
            (KeyValue::Real(a), KeyValue::Int(b)) => compare_int_real(*b, *a).reverse(),
            (KeyValue::Real(a), KeyValue::Real(b)) => a.total_cmp(b),
            (KeyValue::Text(a), KeyValue::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (KeyValue::Blob(a), KeyValue::Blob(b)) => a.cmp(b),
            _ => class(self).cmp(&class(other)),
        }
    }
}

fn compare_int_real(int: i64, real: f64) -> Ordering {
    // i64 -> f64 may round, so compare exactly: an integral real inside the i64 range is
    // compared as an integer; otherwise the real lies beyond every i64 or between two.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if real.is_nan() {
        return Ordering::Greater;
    }
    if (-TWO_POW_63..TWO_POW_63).contains(&real) {
        let truncated = real.trunc() as i64;
        return int.cmp(&truncated).then(if real > truncated as f64 {
            Ordering::Less
        } else if real < truncated as f64 {
            Ordering::Greater
        } else {
            Ordering::Equal
        });
    }
    if real < 0.0 {
        Ordering::Greater
    } else {
        Ordering::Less
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(value) => write!(f, "{value}"),
            KeyValue::Real(value) => write!(f, "{value:?}"),
            KeyValue::Text(value) => write!(f, "{value:?}"),
            KeyValue::Blob(value) => {
                f.write_str("x'")?;
                for byte in value {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
        }
    }
}

/// A row value over the split key columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyBound(pub Vec<KeyValue>);

impl KeyBound {
    /// Compares two bounds lexicographically with [`KeyValue::sql_cmp`].
    pub fn sql_cmp(&self, other: &KeyBound) -> Ordering {
        for (left, right) in self.0.iter().zip(other.0.iter()) {
            let ordering = left.sql_cmp(right);
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl fmt::Display for KeyBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() == 1 {
            return self.0[0].fmt(f);
        }
        f.write_str("(")?;
        for (index, value) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            value.fmt(f)?;
        }
        f.write_str(")")
    }
}

/// The rows one chunk owns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChunkRange {
    /// Every row: the table has no usable split key.
    WholeTable,
    /// Rows whose key has no NULL and satisfies `lower <= key < upper`.
    Interval {
        /// Inclusive lower bound; `None` is unbounded.
        lower: Option<KeyBound>,
        /// Exclusive upper bound; `None` is unbounded.
        upper: Option<KeyBound>,
    },
    /// Rows whose key has a NULL in any column.
    NullKeys,
}

impl ChunkRange {
    /// Returns whether a row with this key (one entry per key column, `None` for NULL)
    /// belongs to the range. This is the reference semantics that SQL predicates follow.
    pub fn contains(&self, key: &[Option<KeyValue>]) -> bool {
        let has_null = key.iter().any(Option::is_none);
        match self {
            ChunkRange::WholeTable => true,
            ChunkRange::NullKeys => has_null,
            ChunkRange::Interval { lower, upper } => {
                if has_null {
                    return false;
                }
                let values: Vec<KeyValue> = key.iter().flatten().cloned().collect();
                let row = KeyBound(values);
                let above_lower = lower
                    .as_ref()
                    .is_none_or(|bound| row.sql_cmp(bound) != Ordering::Less);
                let below_upper = upper
                    .as_ref()
                    .is_none_or(|bound| row.sql_cmp(bound) == Ordering::Less);
                above_lower && below_upper
            }
        }
    }
}

impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkRange::WholeTable => f.write_str("whole table"),
            ChunkRange::NullKeys => f.write_str("NULL keys"),
            ChunkRange::Interval { lower, upper } => {
                match lower {
                    Some(bound) => write!(f, "[{bound}, ")?,
                    None => f.write_str("(-inf, ")?,
                }
                match upper {
                    Some(bound) => write!(f, "{bound})"),
                    None => f.write_str("+inf)"),
                }
            }
        }
    }
}

/// The column(s) a table is split on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitKey {
    /// The primary key columns, in key order.
    Columns {
        /// Column names.
        names: Vec<String>,
        /// Whether any key column may hold NULL (SQLite allows it in rowid tables).
        nullable: bool,
        /// Whether the key is a single 64-bit integer column (dense splitting applies).
        single_integer: bool,
    },
    /// SQLite's implicit rowid, carried to the target so ranges match on both sides.
    Rowid,
    /// No usable key, but a column whose hash cuts the table into `buckets` chunks
    /// (`tables.split`): a chunk's range is `[b, b + 1)` over the bucket number
    /// `hash(column) mod buckets`, which source and target compute alike (see
    /// [`Bucketing`]). Every row has a bucket (NULL included).
    Hash {
        /// The column hashed.
        column: String,
        /// How many buckets (and chunks).
        buckets: u32,
        /// How a row's bucket is computed.
        #[serde(default)]
        bucketing: Bucketing,
    },
    /// No usable key: the table is copied as one chunk.
    None,
}

/// How a [`SplitKey::Hash`] computes a row's bucket; source and target must agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bucketing {
    /// The engine's own hash of the column's text (NULL as the empty text): PostgreSQL
    /// `hashtextextended(…, 0)`, MySQL `CRC32(CONVERT(… USING utf8mb4))`. Only between
    /// two databases of one engine.
    #[default]
    EngineHash,
    /// The integer column itself, `((column mod buckets) + buckets) mod buckets` (NULL
    /// as 0): plain integer arithmetic, the same in every engine, so it also holds
    /// between two engines. Only for integer columns.
    Modulo,
}

impl SplitKey {
    /// Returns whether keys may be NULL, so planning adds a [`ChunkRange::NullKeys`] chunk.
    pub fn nullable(&self) -> bool {
        matches!(self, SplitKey::Columns { nullable: true, .. })
    }

    /// Returns whether the key is one integer (a rowid or a single integer column).
    pub fn single_integer(&self) -> bool {
        match self {
            SplitKey::Columns { single_integer, .. } => *single_integer,
            SplitKey::Rowid => true,
            SplitKey::Hash { .. } | SplitKey::None => false,
        }
    }
}

/// A stored range could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid stored chunk range: {0}")]
pub struct RangeDecodeError(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_half_open_and_excludes_null_keys() {
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(10)])),
            upper: Some(KeyBound(vec![KeyValue::Int(20)])),
        };
        assert!(range.contains(&[Some(KeyValue::Int(10))]));
        assert!(range.contains(&[Some(KeyValue::Int(19))]));
        assert!(!range.contains(&[Some(KeyValue::Int(20))]));
        assert!(!range.contains(&[Some(KeyValue::Int(9))]));
        assert!(!range.contains(&[None]));
        assert!(ChunkRange::NullKeys.contains(&[Some(KeyValue::Int(1)), None]));
    }

    #[test]
    fn sqlite_type_order_is_numbers_then_text_then_blobs() {
        assert_eq!(
            KeyValue::Int(5).sql_cmp(&KeyValue::Real(4.5)),
            Ordering::Greater
        );
        assert_eq!(
            KeyValue::Int(i64::MAX).sql_cmp(&KeyValue::Text(String::new())),
            Ordering::Less
        );
        assert_eq!(
            KeyValue::Text("z".into()).sql_cmp(&KeyValue::Blob(vec![])),
            Ordering::Less
        );
    }
}

/// A sample of a table's non-NULL keys, for planning a big table without reading every
/// key: the planner cuts boundaries from it (`coordinator::planner::boundaries_from_sample`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeySample {
    /// Sampled keys in the source's key order, ascending.
    pub keys: Vec<KeyBound>,
    /// Non-NULL-key rows the sample stands for: the source's estimate from its sampling
    /// rate (rows sampled / fraction sampled).
    pub rows: u64,
}

/// What a source knows about a table's split key, for the planner to choose a split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    /// Rows in the table (exact or estimated, as the connector can).
    pub rows: u64,
    /// Rows whose key has a NULL in some column.
    pub null_key_rows: u64,
    /// Smallest and largest key, when the key is a single integer and the table has
    /// non-NULL keys that are all integers.
    pub int_min_max: Option<(i64, i64)>,
}
