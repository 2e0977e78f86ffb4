//! Reading the chunks of a table back in one pass: for a table whose key is not built
//! yet, where reading one range scans the whole table anyway
//! ([`crate::Sink::native_checksums`], [`crate::Sink::checksum_chunks`]). The server
//! puts each row in its chunk by a binary search over the chunks' bounds, sent as the
//! row's first field; the client hashes the rest of the row into that chunk's checksum,
//! exactly as a read of that chunk alone would.

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_schema::{DataType, Field, Schema};
use ferry_model::checksum::RangeChecksum;
use ferry_model::key::{ChunkRange, KeyBound, SplitKey};
use ferry_model::schema::{ColumnType, TableSchema};
use futures::StreamExt;
use std::sync::Arc;

use super::catalog::CatalogTable;
use super::connect::query_error;
use super::native::{CHECKSUM_METHOD, TupleHasher, malformed};
use super::pool::Session;
use super::read::{CopyDecoder, CopyReader, ReadColumn, copy_out_sql, plan_columns};
use super::split::key_columns;
use super::sql::{KeyColumn, below, quote_ident, quote_table, range_predicate};
use super::types::{Scalar, WireType};
use crate::error::{ConnectorError, Result};
use crate::traits::NativeChecksum;

/// The most ranges [`native_checksums`] and [`canonical_checksums`] take in one pass (its SQL names every bound).
const MOST_RANGES_IN_ONE_PASS: usize = 4096;

/// Reads a whole table back in one binary COPY and hashes each row into the checksum of
/// the range it falls in, as [`super::native::checksum_range`] would hash each range alone: for a table
/// whose key is not built yet, where reading one range scans the whole table anyway.
/// The server puts each row in its range by a binary search over the ranges' bounds.
/// `None` when the ranges do not tile the key (they are checked one by one then).
pub async fn native_checksums(
    client: &mut Session,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    ranges: &[ChunkRange],
) -> Result<Option<Vec<NativeChecksum>>> {
    let keys = key_columns(catalog, key)?;
    let Some(index) = range_index(catalog, &keys, key, ranges)? else {
        return Ok(None);
    };
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect();
    let sql = format!(
        "COPY (SELECT ({index})::int4, {} FROM {}) TO STDOUT (FORMAT binary)",
        columns.join(", "),
        quote_table(&catalog.name)
    );
    let on_error = query_error("checksum chunks", &catalog.name);
    let mut copy_out = Box::pin(client.copy_out(&sql).await.map_err(&on_error)?);
    let mut hasher = TupleHasher::per_range(table, ranges.len());
    let mut largest = 0;
    while let Some(data) = copy_out.next().await {
        let data = data.map_err(&on_error)?;
        largest = largest.max(data.len());
        hasher
            .push(&data)
            .map_err(|detail| malformed(&catalog.name, &detail))?;
    }
    drop(copy_out);
    client.note_read(largest);
    let (sums, outside) = hasher
        .finish_ranges()
        .map_err(|detail| malformed(&catalog.name, &detail))?;
    warn_outside(catalog, outside);
    Ok(Some(
        sums.into_iter()
            .map(|checksum| NativeChecksum {
                method: CHECKSUM_METHOD,
                checksum,
            })
            .collect(),
    ))
}

/// The SQL expression of the index in `ranges` of the range a row falls in (-1 for a
/// row in none), or `None` when the ranges are not a tiling of the key that a binary
/// search can walk: one unbounded interval, or intervals each starting where the last
/// ended, from unbounded to unbounded, and at most one range of NULL keys.
fn range_index_sql(
    keys: &[KeyColumn],
    nullable: bool,
    ranges: &[ChunkRange],
) -> Result<Option<String>, String> {
    if ranges.is_empty() || ranges.len() > MOST_RANGES_IN_ONE_PASS {
        return Ok(None);
    }
    let mut null_range = None;
    let mut intervals = Vec::with_capacity(ranges.len());
    for (index, range) in ranges.iter().enumerate() {
        match range {
            ChunkRange::WholeTable if ranges.len() == 1 => return Ok(Some("0".to_string())),
            ChunkRange::WholeTable => return Ok(None),
            ChunkRange::NullKeys if null_range.is_none() => null_range = Some(index),
            ChunkRange::NullKeys => return Ok(None),
            ChunkRange::Interval { lower, upper } => {
                intervals.push((index, lower.as_ref(), upper.as_ref()));
            }
        }
    }
    intervals.sort_by(|a, b| match (a.1, b.1) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => a.sql_cmp(b),
    });
    let tiled = intervals.first().is_some_and(|first| first.1.is_none())
        && intervals.last().is_some_and(|last| last.2.is_none())
        && intervals
            .windows(2)
            .all(|pair| pair[0].2.is_some() && pair[0].2 == pair[1].1);
    if !tiled {
        return Ok(None);
    }
    let search = binary_search_sql(keys, &intervals)?;
    if !nullable {
        return Ok(Some(search));
    }
    let any_null = range_predicate(keys, true, &ChunkRange::NullKeys)?;
    let null_index = null_range.map_or(-1, |index| index as i64);
    Ok(Some(format!(
        "CASE WHEN {any_null} THEN {null_index} ELSE {search} END"
    )))
}

/// A CASE expression that finds a key's interval among `intervals` (sorted, tiling the
/// key) in as many comparisons as the log of their number.
fn binary_search_sql(
    keys: &[KeyColumn],
    intervals: &[(usize, Option<&KeyBound>, Option<&KeyBound>)],
) -> Result<String, String> {
    let middle = intervals.len() / 2;
    match intervals {
        [] => Ok("-1".to_string()),
        [(index, _, _)] => Ok(index.to_string()),
        _ => {
            let Some(bound) = intervals[middle].1 else {
                return Err("an interval without a lower bound after the first".to_string());
            };
            Ok(format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                below(keys, bound)?,
                binary_search_sql(keys, &intervals[..middle])?,
                binary_search_sql(keys, &intervals[middle..])?
            ))
        }
    }
}

/// [`super::PostgresSink::checksum_chunk`] of each of `ranges`, in their order, in one
/// pass over the table (the rows decoded into the source's carriers and hashed
/// canonically). `None` when the ranges do not tile the key.
pub async fn canonical_checksums(
    client: &mut Session,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    ranges: &[ChunkRange],
) -> Result<Option<Vec<RangeChecksum>>> {
    let keys = key_columns(catalog, key)?;
    let Some(index) = range_index(catalog, &keys, key, ranges)? else {
        return Ok(None);
    };
    let mut columns = vec![ReadColumn {
        name: "the chunk's index".to_string(),
        select_expr: format!("({index})::int4"),
        wire: WireType::Scalar(Scalar::Int4),
        wanted: ColumnType::Int32,
    }];
    columns.extend(plan_columns(table, catalog, "target")?);
    let table_schema = table.arrow_schema(false);
    let mut fields = vec![Arc::new(Field::new("ferry_chunk", DataType::Int32, true))];
    fields.extend(table_schema.fields().iter().cloned());
    let schema = Arc::new(Schema::new(fields));
    let sql = copy_out_sql(&catalog.name, &columns, "true", None);
    let decoder = CopyDecoder::new(&catalog.name, &columns, schema)?;
    let mut reader =
        CopyReader::start(client, &sql, decoder, &catalog.name, "checksum chunks").await?;
    let mut sums = vec![RangeChecksum::default(); ranges.len()];
    let mut outside = 0;
    let rows: Vec<usize> = (1..=table.columns.len()).collect();
    while let Some(batch) = reader.next().await? {
        let chunks: Vec<Option<usize>> = batch
            .column(0)
            .as_primitive::<Int32Type>()
            .iter()
            .map(|index| index.and_then(|index| usize::try_from(index).ok()))
            .collect();
        let values = batch.project(&rows).map_err(|error| {
            ConnectorError::Task(format!(
                "failed to checksum table {}: {error}",
                catalog.name
            ))
        })?;
        outside +=
            RangeChecksum::add_batch_by_range(&mut sums, &values, &chunks).map_err(|error| {
                ConnectorError::Task(format!(
                    "failed to checksum table {}: {error}",
                    catalog.name
                ))
            })?;
    }
    client.note_read(reader.largest_piece());
    drop(reader);
    warn_outside(catalog, outside);
    Ok(Some(sums))
}

/// [`range_index_sql`] for `catalog`'s key, its errors named for the table.
fn range_index(
    catalog: &CatalogTable,
    keys: &[KeyColumn],
    key: &SplitKey,
    ranges: &[ChunkRange],
) -> Result<Option<String>> {
    range_index_sql(keys, key.nullable(), ranges).map_err(|detail| ConnectorError::Unsupported {
        table: catalog.name.clone(),
        detail: format!("its chunks' ranges do not fit the key: {detail}"),
    })
}

/// Rows in no chunk: a planning bug, or rows a chunk's predicate and the search
/// disagree on (those chunks then differ and are read again one by one).
fn warn_outside(catalog: &CatalogTable, outside: u64) {
    if outside > 0 {
        tracing::warn!(table = %catalog.name, rows = outside, "rows of the target table fall in none of its chunks");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_key() -> Vec<KeyColumn> {
        vec![KeyColumn {
            name: "id".into(),
            cast_type: "bigint".into(),
            integer: true,
            needs_c_collation: false,
            hash_buckets: None,
        }]
    }

    fn interval(lower: Option<i64>, upper: Option<i64>) -> ChunkRange {
        let bound = |value: i64| KeyBound(vec![ferry_model::key::KeyValue::Int(value)]);
        ChunkRange::Interval {
            lower: lower.map(bound),
            upper: upper.map(bound),
        }
    }

    #[test]
    fn rows_are_placed_by_a_binary_search_over_ranges_that_tile_the_key() {
        // Given out of order: the search still names each range by its place.
        let ranges = [
            interval(Some(20), None),
            interval(None, Some(10)),
            interval(Some(10), Some(20)),
        ];
        assert_eq!(
            range_index_sql(&int_key(), false, &ranges).expect("sql"),
            Some(
                "CASE WHEN \"id\" < '10'::int8 THEN 1 ELSE CASE WHEN \"id\" < '20'::int8 THEN 2 \
                 ELSE 0 END END"
                    .to_string()
            )
        );
        let with_nulls = [interval(None, None), ChunkRange::NullKeys];
        assert_eq!(
            range_index_sql(&int_key(), true, &with_nulls).expect("sql"),
            Some("CASE WHEN (\"id\" IS NULL) THEN 1 ELSE 0 END".to_string())
        );
        assert_eq!(
            range_index_sql(&int_key(), false, &[ChunkRange::WholeTable]).expect("sql"),
            Some("0".to_string())
        );
        // A gap, an overlap, a missing end: checked one by one instead.
        for ranges in [
            vec![interval(None, Some(10)), interval(Some(11), None)],
            vec![interval(None, Some(10)), interval(Some(5), None)],
            vec![interval(None, Some(10)), interval(Some(10), Some(20))],
            vec![interval(Some(0), None)],
            vec![],
        ] {
            assert_eq!(
                range_index_sql(&int_key(), false, &ranges),
                Ok(None),
                "{ranges:?}"
            );
        }
    }
}
