//! Key statistics and boundaries for planning, and range counts.

use ferry_model::key::{ChunkRange, KeyBound, KeySample, KeyStats, SplitKey};
use ferry_model::schema::TableSchema;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::query_error;
use super::sql::{
    KeyColumn, STATEMENT_TAG, data_table, key_columns, key_value_from_mysql, range_predicate,
};
use crate::error::{ConnectorError, Result};

fn count_of(value: Option<Value>) -> u64 {
    match value {
        Some(Value::Int(count)) => count.max(0).unsigned_abs(),
        Some(Value::UInt(count)) => count,
        Some(Value::Bytes(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// A signed integer result, as either protocol returns it; `None` for NULL.
fn integer_of(value: Value) -> Option<i64> {
    match value {
        Value::Int(value) => Some(value),
        Value::UInt(value) => i64::try_from(value).ok(),
        Value::Bytes(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        _ => None,
    }
}

/// A table the server estimates at fewer rows than this is counted exactly (quick, and
/// the estimate of a small or freshly loaded table can be far off); a larger one is
/// planned on the estimate (`information_schema.TABLES.TABLE_ROWS`), which sizes chunks
/// but never decides which rows are copied, and spares a full scan before anything moves.
pub const EXACT_COUNT_BELOW: u64 = 1_000_000;

/// Counts rows (or estimates them, see [`EXACT_COUNT_BELOW`]) and NULL keys, and reads
/// min/max of a single signed integer key.
pub async fn key_stats(
    conn: &mut Conn,
    database: &str,
    table: &TableSchema,
    key: &SplitKey,
) -> Result<KeyStats> {
    let on_error = query_error("read key statistics", &table.name);
    let quoted_table = data_table(database, table);
    let estimate: Option<Value> = match &table.partition {
        Some(partition) => conn
            .exec_first(
                format!(
                    "{STATEMENT_TAG}SELECT TABLE_ROWS FROM information_schema.PARTITIONS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                       AND ((PARTITION_NAME = ? AND SUBPARTITION_NAME IS NULL) \
                            OR SUBPARTITION_NAME = ?)"
                ),
                (
                    database,
                    table.name.name.as_str(),
                    partition.as_str(),
                    partition.as_str(),
                ),
            )
            .await
            .map_err(&on_error)?,
        None => conn
            .exec_first(
                format!(
                    "{STATEMENT_TAG}SELECT TABLE_ROWS FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?"
                ),
                (database, table.name.name.as_str()),
            )
            .await
            .map_err(&on_error)?,
    };
    let rows = match count_of(estimate) {
        estimate if estimate >= EXACT_COUNT_BELOW => estimate,
        _ => {
            let rows: Option<Value> = conn
                .query_first(format!(
                    "{STATEMENT_TAG}SELECT COUNT(*) FROM {quoted_table}"
                ))
                .await
                .map_err(&on_error)?;
            count_of(rows)
        }
    };
    let mut stats = KeyStats {
        rows,
        ..KeyStats::default()
    };
    let columns = key_columns(table, key)?;
    if key.nullable() {
        let (predicate, params) = range_predicate(table, &columns, key, &ChunkRange::NullKeys)?;
        let null_rows: Option<Value> = conn
            .exec_first(
                format!("{STATEMENT_TAG}SELECT COUNT(*) FROM {quoted_table} WHERE {predicate}"),
                params,
            )
            .await
            .map_err(&on_error)?;
        stats.null_key_rows = count_of(null_rows);
    }
    if key.single_integer()
        && let [column] = columns.as_slice()
        && column.column_type.is_signed_integer()
    {
        let extent: Option<(Value, Value)> = conn
            .query_first(format!(
                "{STATEMENT_TAG}SELECT MIN({name}), MAX({name}) FROM {quoted_table}",
                name = column.quoted
            ))
            .await
            .map_err(&on_error)?;
        // The text protocol answers with digits: without them the planner would fall
        // back to scanning every key for boundaries.
        if let Some((min, max)) = extent
            && let (Some(min), Some(max)) = (integer_of(min), integer_of(max))
        {
            stats.int_min_max = Some((min, max));
        }
    }
    Ok(stats)
}

/// Scans the non-NULL keys in order (an index scan, streamed row by row, never buffered)
/// and keeps every `every_rows`-th as a boundary: exact quantiles, so chunks are even
/// however skewed the keys are.
pub async fn key_boundaries(
    conn: &mut Conn,
    database: &str,
    table: &TableSchema,
    key: &SplitKey,
    every_rows: u64,
) -> Result<Vec<KeyBound>> {
    let on_error = query_error("read key boundaries", &table.name);
    let columns = key_columns(table, key)?;
    if columns.is_empty() || every_rows == 0 {
        return Ok(Vec::new());
    }
    let sql = ordered_keys_sql(database, table, &columns, None);
    let mut result = conn.exec_iter(sql, ()).await.map_err(&on_error)?;
    let mut boundaries: Vec<KeyBound> = Vec::new();
    let mut seen: u64 = 0;
    while let Some(row) = result.next().await.map_err(&on_error)? {
        if seen > 0 && seen.is_multiple_of(every_rows) {
            let bound = bound_of_row(table, &columns, row)?;
            // Keys come in the engine's order and a primary key is unique, so bounds
            // strictly increase; only a repeat (a non-unique key) is skipped.
            if boundaries.last() != Some(&bound) {
                boundaries.push(bound);
            }
        }
        seen += 1;
    }
    Ok(boundaries)
}

/// The key bound a row of key columns holds.
fn bound_of_row(
    table: &TableSchema,
    columns: &[KeyColumn],
    row: mysql_async::Row,
) -> Result<KeyBound> {
    let mut values = Vec::with_capacity(columns.len());
    for (column, value) in columns.iter().zip(row.unwrap()) {
        match key_value_from_mysql(&column.column_type, value) {
            Ok(Some(value)) => values.push(value),
            Ok(None) => {}
            Err(detail) => {
                return Err(ConnectorError::ValueType {
                    table: table.name.clone(),
                    column: column.name.clone(),
                    detail: format!(
                        "{detail}, so it cannot bound a chunk; fix the key or exclude the table"
                    ),
                });
            }
        }
    }
    Ok(KeyBound(values))
}

/// A sample rate at or above this reads as much as the exact scan and ships about as
/// many keys: [`key_sample`] declines and the planner scans.
pub const SAMPLE_MAX_FRACTION: f64 = 0.2;

/// Samples about `points` non-NULL keys: each row is kept with probability
/// `points / estimated_rows` (`RAND(0)`, seeded, so a plan is reproducible), and the kept
/// keys are sorted in the server. MySQL and MariaDB have no page sampling, so the server
/// still reads the table once, but unordered and shipping only the sample, where the
/// exact plan ships every key in key order. The rows the sample stands for are the kept
/// rows over the rate, which corrects a rough `TABLE_ROWS` estimate. `None` when the rate
/// would reach [`SAMPLE_MAX_FRACTION`] or nothing was kept.
pub async fn key_sample(
    conn: &mut Conn,
    database: &str,
    table: &TableSchema,
    key: &SplitKey,
    points: u64,
    estimated_rows: u64,
) -> Result<Option<KeySample>> {
    let on_error = query_error("sample keys", &table.name);
    let columns = key_columns(table, key)?;
    if columns.is_empty() || points == 0 || estimated_rows == 0 {
        return Ok(None);
    }
    let fraction = points as f64 / estimated_rows as f64;
    if fraction >= SAMPLE_MAX_FRACTION {
        return Ok(None);
    }
    let sql = ordered_keys_sql(
        database,
        table,
        &columns,
        Some(&format!("RAND(0) < {fraction:.12}")),
    );
    let mut result = conn.exec_iter(sql, ()).await.map_err(&on_error)?;
    let mut keys: Vec<KeyBound> = Vec::new();
    while let Some(row) = result.next().await.map_err(&on_error)? {
        keys.push(bound_of_row(table, &columns, row)?);
    }
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(KeySample {
        rows: (keys.len() as f64 / fraction) as u64,
        keys,
    }))
}

/// Counts the rows of a range.
pub async fn count_range(
    conn: &mut Conn,
    database: &str,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<u64> {
    let columns = key_columns(table, key)?;
    let (predicate, params) = range_predicate(table, &columns, key, range)?;
    let count: Option<Value> = conn
        .exec_first(
            format!(
                "{STATEMENT_TAG}SELECT COUNT(*) FROM {} WHERE {predicate}",
                data_table(database, table)
            ),
            params,
        )
        .await
        .map_err(query_error("count chunk", &table.name))?;
    Ok(count_of(count))
}

/// `SELECT` of the split key's bound expressions of every row with no NULL key (and
/// `condition`, when given), in key order.
fn ordered_keys_sql(
    database: &str,
    table: &TableSchema,
    columns: &[KeyColumn],
    condition: Option<&str>,
) -> String {
    let select_list: Vec<String> = columns
        .iter()
        .map(|column| column.bound_select_expr())
        .collect();
    let mut conditions: Vec<String> = columns
        .iter()
        .map(|column| format!("{} IS NOT NULL", column.quoted))
        .collect();
    conditions.extend(condition.map(str::to_string));
    let order: Vec<&str> = columns
        .iter()
        .map(|column| column.quoted.as_str())
        .collect();
    format!(
        "{STATEMENT_TAG}SELECT {} FROM {} WHERE {} ORDER BY {}",
        select_list.join(", "),
        data_table(database, table),
        conditions.join(" AND "),
        order.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_extents_are_read_from_either_protocol() {
        assert_eq!(integer_of(Value::Int(-5)), Some(-5));
        assert_eq!(integer_of(Value::UInt(7)), Some(7));
        assert_eq!(
            integer_of(Value::Bytes(b"-9223372036854775808".to_vec())),
            Some(i64::MIN)
        );
        assert_eq!(integer_of(Value::UInt(u64::MAX)), None);
        assert_eq!(integer_of(Value::NULL), None);
    }
}
