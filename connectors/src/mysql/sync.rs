//! `ferryctl sync` on MySQL/MariaDB: reading rows past a watermark, writing them
//! newer-wins (`INSERT ... ON DUPLICATE KEY UPDATE c = IF(VALUES(wm) >= wm, VALUES(c), c)`,
//! the watermark assigned last: MySQL applies the assignments left to right, so an earlier
//! assignment to the watermark would change what the later `IF`s compare with), and
//! deleting rows by integer key.

use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::{ColumnType, TableSchema};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

use super::encode::BatchColumns;
use super::sql::{STATEMENT_TAG, data_table, key_columns, quote_ident, range_predicate};
use super::{Shared, query_error};
use crate::error::{ConnectorError, Result};
use crate::traits::{BatchStream, UpsertSummary, WatermarkStats};

/// Cap on one upsert statement, below `max_allowed_packet`.
const MAX_UPSERT_BYTES: usize = 4 << 20;

/// Checks that `watermark` is a timestamp column of `table`.
fn check_watermark(table: &TableSchema, watermark: &str) -> Result<()> {
    let column = table
        .columns
        .iter()
        .find(|column| column.name == watermark)
        .ok_or_else(|| ConnectorError::SchemaMismatch {
            table: table.name.clone(),
            detail: format!("the watermark column {watermark} is not in the table"),
        })?;
    if !matches!(
        column.column_type,
        ColumnType::Timestamp | ColumnType::TimestampTz
    ) {
        return Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!(
                "the watermark column {watermark} is {}, not a timestamp",
                column.declared_type
            ),
        });
    }
    Ok(())
}

/// The `SELECT` of the rows of `range` whose timestamp `watermark` is at or past `since`
/// (microseconds since the epoch; sessions run in UTC).
pub fn select_changed(
    database: &str,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    watermark: &str,
    since: Option<i64>,
) -> Result<(String, Vec<mysql_async::Value>)> {
    check_watermark(table, watermark)?;
    let columns = key_columns(table, key)?;
    let (predicate, mut params) = range_predicate(table, &columns, key, range)?;
    let select_list: Vec<String> = table
        .columns
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect();
    let mut sql = format!(
        "{STATEMENT_TAG}SELECT {} FROM {} WHERE ({predicate})",
        select_list.join(", "),
        data_table(database, table)
    );
    if let Some(micros) = since {
        sql.push_str(&format!(
            " AND {} >= TIMESTAMPADD(MICROSECOND, ?, '1970-01-01 00:00:00')",
            quote_ident(watermark)
        ));
        params.push(mysql_async::Value::Int(micros));
    }
    Ok((sql, params))
}

/// Counts the rows of `range` and reads their largest `watermark` in microseconds since
/// the epoch (sessions run in UTC).
pub async fn watermark_stats(
    shared: &Shared,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    watermark: &str,
) -> Result<WatermarkStats> {
    check_watermark(table, watermark)?;
    let columns = key_columns(table, key)?;
    let (predicate, params) = range_predicate(table, &columns, key, range)?;
    let sql = format!(
        "{STATEMENT_TAG}SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', MAX({})) \
         FROM {} WHERE {predicate}",
        quote_ident(watermark),
        data_table(shared.database_of(table), table)
    );
    let mut conn = shared.conn("source", &table.name).await?;
    let row: Option<(Option<i64>, Option<i64>)> = conn
        .exec_first(sql, params)
        .await
        .map_err(query_error("read the watermark extent", &table.name))?;
    let (rows, newest) = row.unwrap_or((None, None));
    Ok(WatermarkStats {
        rows: rows.unwrap_or(0).max(0) as u64,
        newest,
    })
}

/// The `ON DUPLICATE KEY UPDATE` tail: every non-key column takes the incoming value
/// only when the incoming watermark is newer or equal; the watermark itself last.
fn upsert_tail(columns: &[String], keys: &[String], watermark: &str) -> String {
    let wm = quote_ident(watermark);
    let newer = format!("VALUES({wm}) >= {wm}");
    let mut assignments: Vec<String> = columns
        .iter()
        .filter(|name| !keys.contains(name) && name.as_str() != watermark)
        .map(|name| {
            let quoted = quote_ident(name);
            format!("{quoted} = IF({newer}, VALUES({quoted}), {quoted})")
        })
        .collect();
    if !keys.iter().any(|key| key == watermark) {
        assignments.push(format!("{wm} = IF({newer}, VALUES({wm}), {wm})"));
    }
    format!(" ON DUPLICATE KEY UPDATE {}", assignments.join(", "))
}

/// Inserted and updated rows of one `INSERT ... ON DUPLICATE KEY UPDATE` of `rows` rows,
/// from its affected rows (1 per insert, 2 per changed row, 0 per unchanged row) and its
/// info's `Duplicates:` count, which MariaDB gives as the rows changed by the update and
/// MySQL as every row whose key was there already.
fn split_affected(rows: u64, affected: u64, info: &str, is_mariadb: bool) -> (u64, u64) {
    let duplicates = info
        .split("Duplicates:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<u64>().ok())
        .unwrap_or(0);
    if is_mariadb {
        (affected.saturating_sub(2 * duplicates), duplicates)
    } else {
        let inserted = rows.saturating_sub(duplicates);
        (inserted, affected.saturating_sub(inserted) / 2)
    }
}

/// Writes `batches` newer-wins in one transaction, with multi-row upserts.
pub async fn upsert_newer(
    shared: &Shared,
    table: &TableSchema,
    key: &SplitKey,
    watermark: &str,
    mut batches: BatchStream,
    cancel: &CancellationToken,
) -> Result<UpsertSummary> {
    let on_error = query_error("upsert changed rows", &table.name);
    let keys: Vec<String> = key_columns(table, key)?
        .into_iter()
        .map(|column| column.name)
        .collect();
    if keys.is_empty() {
        return Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: "a newer-wins upsert needs a primary key".to_string(),
        });
    }
    let columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let head = format!(
        "{STATEMENT_TAG}INSERT INTO {} ({}) VALUES ",
        data_table(&shared.config.database, table),
        columns
            .iter()
            .map(|name| quote_ident(name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let tail = upsert_tail(&columns, &keys, watermark);
    let limit = shared
        .max_allowed_packet
        .saturating_sub(64 << 10)
        .clamp(64 << 10, MAX_UPSERT_BYTES);
    let mut conn = shared.conn("target", &table.name).await?;
    let mut transaction = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .map_err(&on_error)?;
    let mut summary = UpsertSummary::default();
    let mut statement: Vec<u8> = Vec::new();
    let mut rows_in_statement = 0u64;
    let mut row_text = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(ConnectorError::Cancelled),
            item = batches.next() => item.transpose()?,
        };
        let Some(batch) = next else { break };
        let batch_columns = BatchColumns::new(table, &batch)?;
        for row in 0..batch_columns.num_rows() {
            row_text.clear();
            batch_columns.push_sql_row(row, &mut row_text)?;
            if rows_in_statement > 0 && statement.len() + row_text.len() + tail.len() > limit {
                statement.extend_from_slice(tail.as_bytes());
                run_upsert(
                    &mut transaction,
                    &statement,
                    rows_in_statement,
                    shared.is_mariadb,
                    &mut summary,
                    &on_error,
                )
                .await?;
                statement.clear();
                rows_in_statement = 0;
            }
            if rows_in_statement == 0 {
                statement.extend_from_slice(head.as_bytes());
            } else {
                statement.push(b',');
            }
            statement.extend_from_slice(&row_text);
            rows_in_statement += 1;
        }
    }
    if rows_in_statement > 0 {
        statement.extend_from_slice(tail.as_bytes());
        run_upsert(
            &mut transaction,
            &statement,
            rows_in_statement,
            shared.is_mariadb,
            &mut summary,
            &on_error,
        )
        .await?;
    }
    if cancel.is_cancelled() {
        return Err(ConnectorError::Cancelled);
    }
    transaction.commit().await.map_err(&on_error)?;
    Ok(summary)
}

async fn run_upsert(
    transaction: &mut mysql_async::Transaction<'_>,
    statement: &[u8],
    rows: u64,
    is_mariadb: bool,
    summary: &mut UpsertSummary,
    on_error: &impl Fn(mysql_async::Error) -> ConnectorError,
) -> Result<()> {
    // Text comes from UTF-8 arrays and bytes travel as hex, so the statement is UTF-8.
    let text = std::str::from_utf8(statement)
        .map_err(|error| ConnectorError::Task(format!("an upsert is not UTF-8: {error}")))?;
    transaction.query_drop(text).await.map_err(on_error)?;
    let info = transaction.info().into_owned();
    let (inserted, updated) = split_affected(rows, transaction.affected_rows(), &info, is_mariadb);
    summary.rows_read += rows;
    summary.inserted += inserted;
    summary.updated += updated;
    Ok(())
}

/// Deletes the rows whose single integer key is one of `keys`.
pub async fn delete_keys(
    shared: &Shared,
    table: &TableSchema,
    key: &SplitKey,
    keys: &[i64],
) -> Result<u64> {
    let on_error = query_error("delete rows by key", &table.name);
    let key_column = match key_columns(table, key)?.as_slice() {
        [only]
            if matches!(
                key,
                SplitKey::Columns {
                    single_integer: true,
                    ..
                }
            ) =>
        {
            only.quoted.clone()
        }
        _ => {
            return Err(ConnectorError::Unsupported {
                table: table.name.clone(),
                detail: "rows are deleted by key only on a single integer key".to_string(),
            });
        }
    };
    let mut conn = shared.conn("target", &table.name).await?;
    let mut deleted = 0;
    for part in keys.chunks(10_000) {
        let list: Vec<String> = part.iter().map(i64::to_string).collect();
        conn.query_drop(format!(
            "{STATEMENT_TAG}DELETE FROM {} WHERE {key_column} IN ({})",
            data_table(&shared.config.database, table),
            list.join(",")
        ))
        .await
        .map_err(&on_error)?;
        deleted += conn.affected_rows();
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_assigned_last_and_only_when_newer() {
        let tail = upsert_tail(
            &["id".into(), "updated_at".into(), "v".into()],
            &["id".into()],
            "updated_at",
        );
        assert_eq!(
            tail,
            " ON DUPLICATE KEY UPDATE `v` = IF(VALUES(`updated_at`) >= `updated_at`, VALUES(`v`), `v`), \
             `updated_at` = IF(VALUES(`updated_at`) >= `updated_at`, VALUES(`updated_at`), `updated_at`)"
        );
    }

    #[test]
    fn affected_rows_split_into_inserted_and_updated() {
        // 5 rows: 2 new (2), 1 changed (2), 2 unchanged (0). MariaDB counts the changed
        // duplicate (as its client shows: `Records: 3  Duplicates: 1` for one new, one
        // changed and one unchanged row), MySQL every duplicate.
        assert_eq!(
            split_affected(5, 4, "Records: 5  Duplicates: 1  Warnings: 0", true),
            (2, 1)
        );
        assert_eq!(
            split_affected(31, 0, "Records: 31  Duplicates: 0  Warnings: 0", true),
            (0, 0)
        );
        assert_eq!(
            split_affected(5, 4, "Records: 5  Duplicates: 3  Warnings: 0", false),
            (2, 1)
        );
        assert_eq!(split_affected(3, 3, "", false), (3, 0));
    }
}
