//! Key statistics and boundaries for planning, and range counts.

use ferry_model::key::{ChunkRange, KeyBound, KeyStats, SplitKey};
use ferry_model::schema::TableSchema;
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::query_error;
use super::sql::{key_exprs, key_value_from_sql, quote_table, range_predicate};
use crate::error::{ConnectorError, Result};

/// Counts rows and NULL keys, and reads min/max of a single integer key.
pub fn key_stats(connection: &Connection, table: &TableSchema, key: &SplitKey) -> Result<KeyStats> {
    let on_error = query_error("read key statistics", &table.name);
    let quoted_table = quote_table(&table.name);
    let rows: i64 = connection
        .query_row(&format!("SELECT count(*) FROM {quoted_table}"), [], |row| {
            row.get(0)
        })
        .map_err(&on_error)?;
    let exprs = key_exprs(table, key)?;
    let mut stats = KeyStats {
        rows: rows.max(0) as u64,
        ..KeyStats::default()
    };
    if key.nullable() {
        let (predicate, params) = range_predicate(&exprs, key, &ChunkRange::NullKeys);
        let null_rows: i64 = connection
            .query_row(
                &format!("SELECT count(*) FROM {quoted_table} WHERE {predicate}"),
                rusqlite::params_from_iter(params),
                |row| row.get(0),
            )
            .map_err(&on_error)?;
        stats.null_key_rows = null_rows.max(0) as u64;
    }
    if key.single_integer() {
        let expr = &exprs[0];
        let (min, max) = connection
            .query_row(
                &format!(
                    "SELECT min({expr}), max({expr}) FROM {quoted_table} WHERE {expr} IS NOT NULL"
                ),
                [],
                |row| {
                    let as_int = |value: ValueRef<'_>| match value {
                        ValueRef::Integer(v) => Some(v),
                        _ => None,
                    };
                    Ok((as_int(row.get_ref(0)?), as_int(row.get_ref(1)?)))
                },
            )
            .map_err(&on_error)?;
        // min/max follow SQLite's type order, so both being integers means every key is
        // a number; reals between them still fall into the half-open integer ranges.
        if let (Some(min), Some(max)) = (min, max) {
            stats.int_min_max = Some((min, max));
        }
    }
    Ok(stats)
}

/// Scans the non-NULL keys in order (an index scan) and keeps every `every_rows`-th as
/// a boundary: exact quantiles, so chunks are even however skewed the keys are.
pub fn key_boundaries(
    connection: &Connection,
    table: &TableSchema,
    key: &SplitKey,
    every_rows: u64,
) -> Result<Vec<KeyBound>> {
    let on_error = query_error("read key boundaries", &table.name);
    let exprs = key_exprs(table, key)?;
    if exprs.is_empty() || every_rows == 0 {
        return Ok(Vec::new());
    }
    let not_null: Vec<String> = exprs
        .iter()
        .map(|expr| format!("{expr} IS NOT NULL"))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {}",
        exprs.join(", "),
        quote_table(&table.name),
        not_null.join(" AND "),
        exprs.join(", ")
    );
    let mut statement = connection.prepare(&sql).map_err(&on_error)?;
    let mut rows = statement.query([]).map_err(&on_error)?;
    let mut boundaries: Vec<KeyBound> = Vec::new();
    let mut seen: u64 = 0;
    while let Some(row) = rows.next().map_err(&on_error)? {
        if seen > 0 && seen.is_multiple_of(every_rows) {
            let mut values = Vec::with_capacity(exprs.len());
            for (index, expr) in exprs.iter().enumerate() {
                let value = row.get_ref(index).map_err(&on_error)?;
                match key_value_from_sql(value) {
                    Ok(Some(value)) => values.push(value),
                    Ok(None) => {}
                    Err(_) => {
                        return Err(ConnectorError::ValueType {
                            table: table.name.clone(),
                            column: expr.clone(),
                            detail: "a key holds text that is not valid UTF-8, so it cannot \
                                     bound a chunk; fix the key or exclude the table"
                                .to_string(),
                        });
                    }
                }
            }
            let bound = KeyBound(values);
            let increasing = boundaries
                .last()
                .is_none_or(|last| last.sql_cmp(&bound) == std::cmp::Ordering::Less);
            if increasing {
                boundaries.push(bound);
            }
        }
        seen += 1;
    }
    Ok(boundaries)
}

/// Counts the rows of a range.
pub fn count_range(
    connection: &Connection,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<u64> {
    let exprs = key_exprs(table, key)?;
    let (predicate, params) = range_predicate(&exprs, key, range);
    let count: i64 = connection
        .query_row(
            &format!(
                "SELECT count(*) FROM {} WHERE {predicate}",
                quote_table(&table.name)
            ),
            rusqlite::params_from_iter(params),
            |row| row.get(0),
        )
        .map_err(query_error("count chunk", &table.name))?;
    Ok(count.max(0) as u64)
}
