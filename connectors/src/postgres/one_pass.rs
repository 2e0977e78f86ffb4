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
use std::sync::Arc;

use super::catalog::CatalogTable;
use super::connect::{Endpoint, query_error};
use super::native::{CHECKSUM_METHOD, TupleHasher, hash_copy_out, malformed};
use super::pool::Session;
use super::read::{CopyDecoder, CopyReader, ReadColumn, copy_out_sql, plan_columns};
use super::split::key_columns;
use super::sql::{KeyColumn, below, quote_ident, quote_table, range_predicate};
use super::types::{Scalar, WireType};
use crate::error::{ConnectorError, Result};
use crate::traits::NativeChecksum;

/// Opens the pass's transaction with PostgreSQL's JIT compilation off: the server would
/// compile the search's expression (thousands of nodes for thousands of chunks) before
/// the first row. Measured for 3,000 chunks of 100 rows: 5.3 s with JIT, 0.16 s
/// without. A server without JIT (before 11) has no such setting: nothing is set. The
/// transaction reads only; it is rolled back when the session is given back.
async fn begin_without_jit(client: &mut Session, catalog: &CatalogTable) -> Result<()> {
    client
        .batch_execute(
            "BEGIN; SELECT pg_catalog.set_config(name, 'off', true) FROM pg_catalog.pg_settings \
             WHERE name = 'jit'",
        )
        .await
        .map_err(query_error("checksum chunks", &catalog.name))?;
    client.mark_transaction_open();
    Ok(())
}

/// The most ranges [`native_checksums`] and [`canonical_checksums`] take in one pass (its SQL names every bound).
const MOST_RANGES_IN_ONE_PASS: usize = 4096;

/// Reads a whole table back in binary COPY and hashes each row into the checksum of the
/// range it falls in, as [`super::native::checksum_range`] would hash each range alone,
/// in up to `streams` parts read at once ([`parts`]). `None` when the ranges do not tile
/// the key (they are checked one by one then).
pub async fn native_checksums(
    endpoint: &Endpoint,
    session: Session,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    ranges: &[ChunkRange],
    streams: usize,
) -> Result<Option<Vec<NativeChecksum>>> {
    let Some((session, index)) = range_index(session, catalog, key, ranges).await? else {
        return Ok(None);
    };
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect();
    let select = format!(
        "SELECT ({index})::int4, {} FROM {}",
        columns.join(", "),
        quote_table(&catalog.name)
    );
    let read = |mut client: Session, part: String| {
        let sql = format!("COPY ({select} WHERE {part}) TO STDOUT (FORMAT binary)");
        async move {
            begin_without_jit(&mut client, catalog).await?;
            let hasher = TupleHasher::per_range(table, ranges.len());
            let hasher = hash_copy_out(&mut client, &sql, hasher, &catalog.name).await?;
            client.release_settings_unchanged().await;
            hasher
                .finish_ranges()
                .map_err(|detail| malformed(&catalog.name, &detail))
        }
    };
    let sums = in_parts(endpoint, session, catalog, streams, ranges.len(), read).await?;
    Ok(Some(
        sums.into_iter()
            .map(|checksum| NativeChecksum {
                method: CHECKSUM_METHOD,
                checksum,
            })
            .collect(),
    ))
}

/// Reads the table in [`parts`] at once, the first on `session`, each other on a session
/// of its own, and adds up each range's checksum over the parts.
async fn in_parts<F, R>(
    endpoint: &Endpoint,
    session: Session,
    catalog: &CatalogTable,
    streams: usize,
    ranges: usize,
    read: R,
) -> Result<Vec<RangeChecksum>>
where
    R: Fn(Session, String) -> F,
    F: std::future::Future<Output = Result<(Vec<RangeChecksum>, u64)>>,
{
    let parts = parts(&session, catalog, streams).await?;
    let mut sessions = vec![session];
    for _ in 1..parts.len() {
        sessions.push(endpoint.session().await?);
    }
    let reads = sessions
        .into_iter()
        .zip(parts)
        .map(|(session, part)| read(session, part));
    let mut sums = vec![RangeChecksum::default(); ranges];
    let mut outside = 0;
    for (part_sums, part_outside) in futures::future::try_join_all(reads).await? {
        for (sum, part) in sums.iter_mut().zip(part_sums) {
            sum.merge(part);
        }
        outside += part_outside;
    }
    warn_outside(catalog, outside);
    Ok(sums)
}

/// The table's blocks per part at least: a smaller table is read in fewer parts.
const LEAST_BLOCKS_PER_PART: i64 = 1024;

/// Conditions that cut the table into up to `streams` parts of about as many blocks
/// each (`ctid` ranges, which PostgreSQL 14 on reads by a TID range scan: each part reads
/// its blocks only), covering every row; one part (`true`) on an older server, where each
/// part would scan the whole table.
async fn parts(client: &Session, catalog: &CatalogTable, streams: usize) -> Result<Vec<String>> {
    let row = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::int4, \
             (pg_catalog.pg_relation_size(pg_catalog.to_regclass($1)) \
              / pg_catalog.current_setting('block_size')::int8)::int8",
            &[&quote_table(&catalog.name)],
        )
        .await
        .map_err(query_error("size table", &catalog.name))?;
    let version: i32 = row
        .try_get(0)
        .map_err(query_error("size table", &catalog.name))?;
    let blocks: i64 = row
        .try_get(1)
        .map_err(query_error("size table", &catalog.name))?;
    Ok(block_parts(version, blocks, streams))
}

/// [`parts`] for a server of `version` (`server_version_num`) and a table of `blocks`.
fn block_parts(version: i32, blocks: i64, streams: usize) -> Vec<String> {
    let streams = i64::try_from(streams).unwrap_or(i64::MAX);
    let count = streams.min(blocks / LEAST_BLOCKS_PER_PART).max(1);
    if version < 140_000 || count == 1 {
        return vec!["true".to_string()];
    }
    let per_part = blocks / count;
    (0..count)
        .map(|part| {
            let lower = format!("ctid >= '({},0)'::tid", part * per_part);
            let upper = format!("ctid < '({},0)'::tid", (part + 1) * per_part);
            match part {
                0 => upper,
                // The last part takes every block from its start on.
                part if part == count - 1 => lower,
                _ => format!("{lower} AND {upper}"),
            }
        })
        .collect()
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
/// canonically), in up to `streams` parts read at once. `None` when the ranges do not
/// tile the key.
pub async fn canonical_checksums(
    endpoint: &Endpoint,
    session: Session,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    ranges: &[ChunkRange],
    streams: usize,
) -> Result<Option<Vec<RangeChecksum>>> {
    let Some((session, index)) = range_index(session, catalog, key, ranges).await? else {
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
    let values: Vec<usize> = (1..=table.columns.len()).collect();
    let failed = |error: &dyn std::fmt::Display| {
        ConnectorError::Task(format!(
            "failed to checksum table {}: {error}",
            catalog.name
        ))
    };
    let read = |mut client: Session, part: String| {
        let sql = copy_out_sql(&catalog.name, &columns, &part, None);
        let schema = schema.clone();
        let (values, columns) = (&values, &columns);
        async move {
            let decoder = CopyDecoder::new(&catalog.name, columns, schema)?;
            begin_without_jit(&mut client, catalog).await?;
            let mut reader =
                CopyReader::start(&client, &sql, decoder, &catalog.name, "checksum chunks").await?;
            let mut sums = vec![RangeChecksum::default(); ranges.len()];
            let mut outside = 0;
            while let Some(batch) = reader.next().await? {
                let chunks: Vec<Option<usize>> = batch
                    .column(0)
                    .as_primitive::<Int32Type>()
                    .iter()
                    .map(|index| index.and_then(|index| usize::try_from(index).ok()))
                    .collect();
                let rows = batch.project(values).map_err(|error| failed(&error))?;
                outside += RangeChecksum::add_batch_by_range(&mut sums, &rows, &chunks)
                    .map_err(|error| failed(&error))?;
            }
            client.note_read(reader.largest_piece());
            drop(reader);
            client.release_settings_unchanged().await;
            Ok((sums, outside))
        }
    };
    let sums = in_parts(endpoint, session, catalog, streams, ranges.len(), read).await?;
    Ok(Some(sums))
}

/// [`range_index_sql`] for `catalog`'s key, its errors named for the table, with the
/// session to read with; `None`, the session given back, when the ranges do not tile.
async fn range_index(
    session: Session,
    catalog: &CatalogTable,
    key: &SplitKey,
    ranges: &[ChunkRange],
) -> Result<Option<(Session, String)>> {
    let keys = key_columns(catalog, key)?;
    let index = range_index_sql(&keys, key.nullable(), ranges).map_err(|detail| {
        ConnectorError::Unsupported {
            table: catalog.name.clone(),
            detail: format!("its chunks' ranges do not fit the key: {detail}"),
        }
    })?;
    match index {
        Some(index) => Ok(Some((session, index))),
        None => {
            session.release_settings_unchanged().await;
            Ok(None)
        }
    }
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

    #[test]
    fn a_big_table_is_read_in_block_ranges_that_cover_every_block() {
        assert_eq!(
            block_parts(150_000, 24_476, 3),
            vec![
                "ctid < '(8158,0)'::tid".to_string(),
                "ctid >= '(8158,0)'::tid AND ctid < '(16316,0)'::tid".to_string(),
                "ctid >= '(16316,0)'::tid".to_string(),
            ]
        );
        // Small tables, one stream, servers before TID range scans: one part.
        for (version, blocks, streams) in [
            (150_000, 1_500, 4),
            (150_000, 24_476, 1),
            (130_000, 24_476, 4),
        ] {
            assert_eq!(
                block_parts(version, blocks, streams),
                vec!["true".to_string()]
            );
        }
        assert_eq!(block_parts(150_000, 2_048, 8).len(), 2);
    }
}
