//! `ferryctl sync` on PostgreSQL: reading rows past a watermark, writing them newer-wins
//! (`INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE target.wm <= EXCLUDED.wm`), and
//! deleting rows by integer key.

use bytes::BytesMut;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::{ColumnType, TableName, TableSchema};
use futures::SinkExt;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::catalog::CatalogTable;
use super::connect::query_error;
use super::encode::{push_header, push_trailer};
use super::read::{CopyDecoder, CopyReader, copy_out_sql, plan_columns};
use super::split::{key_columns, predicate};
use super::sql::{quote_ident, quote_table};
use super::write::{encode_batch, encoders, next_batch};
use crate::error::{ConnectorError, Result};
use crate::traits::{BatchStream, UpsertSummary, WatermarkStats};

/// The SQL condition `watermark >= since` for a timestamp column of `table`, `since` in
/// microseconds since the epoch (a zone-less timestamp's wall time read as UTC).
pub fn watermark_condition(
    table: &TableSchema,
    watermark: &str,
    since: Option<i64>,
) -> Result<String> {
    let column = table
        .columns
        .iter()
        .find(|column| column.name == watermark)
        .ok_or_else(|| ConnectorError::SchemaMismatch {
            table: table.name.clone(),
            detail: format!("the watermark column {watermark} is not in the table"),
        })?;
    let epoch = match column.column_type {
        ColumnType::Timestamp => "'epoch'::timestamp",
        ColumnType::TimestampTz => "'epoch'::timestamptz",
        _ => {
            return Err(ConnectorError::Unsupported {
                table: table.name.clone(),
                detail: format!(
                    "the watermark column {watermark} is {}, not a timestamp",
                    column.declared_type
                ),
            });
        }
    };
    Ok(match since {
        None => "TRUE".to_string(),
        Some(micros) => format!(
            "{} >= {epoch} + {micros} * interval '1 microsecond'",
            quote_ident(watermark)
        ),
    })
}

/// The SQL condition selecting the rows of `range` of `catalog`.
fn range_condition(catalog: &CatalogTable, key: &SplitKey, range: &ChunkRange) -> Result<String> {
    let keys = key_columns(catalog, key)?;
    predicate(&catalog.name, &keys, key, range)
}

/// Starts reading the rows of `range` of `catalog` whose watermark is at or past `since`.
pub async fn read_changed(
    client: &Client,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
    watermark: &str,
    since: Option<i64>,
) -> Result<CopyReader> {
    let columns = plan_columns(table, catalog, "source")?;
    let condition = format!(
        "({}) AND ({})",
        range_condition(catalog, key, range)?,
        watermark_condition(table, watermark, since)?
    );
    let sql = copy_out_sql(&catalog.name, &columns, &condition, None);
    let decoder = CopyDecoder::new(&catalog.name, &columns, table.arrow_schema(false))?;
    CopyReader::start(client, &sql, decoder, &catalog.name, "read changed rows").await
}

/// Counts the rows of `range` of `catalog` and reads their largest `watermark`, in
/// microseconds since the epoch (a zone-less timestamp's wall time read as UTC: `extract`
/// takes it so).
pub async fn watermark_stats(
    client: &Client,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
    watermark: &str,
) -> Result<WatermarkStats> {
    // Checks that the column is a timestamp of the table.
    watermark_condition(table, watermark, None)?;
    let condition = range_condition(catalog, key, range)?;
    let sql = format!(
        "SELECT count(*), floor(extract(epoch FROM max({wm})) * 1000000)::bigint FROM {} WHERE {condition}",
        quote_table(&catalog.name),
        wm = quote_ident(watermark)
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(query_error("read the watermark extent", &catalog.name))?;
    let rows: i64 = row
        .try_get(0)
        .map_err(query_error("read the watermark extent", &catalog.name))?;
    let newest: Option<i64> = row
        .try_get(1)
        .map_err(query_error("read the watermark extent", &catalog.name))?;
    Ok(WatermarkStats {
        rows: rows.max(0) as u64,
        newest,
    })
}

/// The write counters PostgreSQL keeps for `table` and each of its partitions
/// (`pg_stat_all_tables` over the table and `pg_partition_tree`, which lists nothing for
/// a table that is not partitioned), as one signature: rows inserted,
/// updated (HOT included), deleted, live and dead. They count aborted writes too and
/// change at VACUUM and ANALYZE (a false "changed"); a TRUNCATE, which the three write
/// counters skip, shows in the live count; `pg_stat_reset()`, a crash or a failover
/// starts them over (another signature: "changed").
pub async fn change_signature(client: &Client, table: &TableName) -> Result<Option<String>> {
    let on_error = query_error("read the write statistics", table);
    let row = client
        .query_one(
            "SELECT sum(s.n_tup_ins)::text || '/' || sum(s.n_tup_upd)::text || '/' || \
                    sum(s.n_tup_del)::text || '/' || sum(s.n_live_tup)::text || '/' || \
                    sum(s.n_dead_tup)::text \
             FROM (SELECT $1::text::regclass AS relid \
                   UNION SELECT relid FROM pg_partition_tree($1::text::regclass)) t \
             JOIN pg_stat_all_tables s ON s.relid = t.relid",
            &[&quote_table(table)],
        )
        .await
        .map_err(on_error)?;
    row.try_get(0)
        .map_err(query_error("read the write statistics", table))
}

/// The newer-wins statement: insert from the staging table, replace a target row only
/// when the incoming watermark is newer or equal and the row differs; returns the
/// inserted and updated counts.
fn upsert_sql(
    target: &str,
    staging: &str,
    columns: &[String],
    keys: &[String],
    watermark: &str,
) -> String {
    let quoted: Vec<String> = columns.iter().map(|name| quote_ident(name)).collect();
    let list = quoted.join(", ");
    let assignments: Vec<String> = quoted
        .iter()
        .filter(|name| !keys.iter().any(|key| quote_ident(key) == **name))
        .map(|name| format!("{name} = EXCLUDED.{name}"))
        .collect();
    let target_row: Vec<String> = quoted.iter().map(|name| format!("t.{name}")).collect();
    let incoming_row: Vec<String> = quoted
        .iter()
        .map(|name| format!("EXCLUDED.{name}"))
        .collect();
    let conflict: Vec<String> = keys.iter().map(|key| quote_ident(key)).collect();
    let wm = quote_ident(watermark);
    let action = if assignments.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!(
            "DO UPDATE SET {} WHERE t.{wm} <= EXCLUDED.{wm} \
             AND ROW({})::text IS DISTINCT FROM ROW({})::text",
            assignments.join(", "),
            target_row.join(", "),
            incoming_row.join(", ")
        )
    };
    format!(
        "WITH applied AS (INSERT INTO {target} AS t ({list}) SELECT {list} FROM {staging} \
         ON CONFLICT ({}) {action} RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM applied",
        conflict.join(", ")
    )
}

/// Writes `batches` newer-wins into `catalog` in one transaction: COPY into a temporary
/// staging table, then one `INSERT ... ON CONFLICT`.
pub async fn upsert_newer(
    client: &mut Client,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    watermark: &str,
    mut batches: BatchStream,
    cancel: &CancellationToken,
) -> Result<UpsertSummary> {
    let target = &catalog.name;
    let on_error = query_error("upsert changed rows", target);
    let column_encoders = encoders(table, catalog)?;
    let keys: Vec<String> = key_columns(catalog, key)?
        .into_iter()
        .map(|column| column.name)
        .collect();
    if keys.is_empty() {
        return Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: "a newer-wins upsert needs a primary key".to_string(),
        });
    }
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| column.name.clone())
        .collect();
    let transaction = client.transaction().await.map_err(&on_error)?;
    transaction
        .batch_execute(&format!(
            "CREATE TEMPORARY TABLE _ferry_sync_staging ON COMMIT DROP AS \
             SELECT {} FROM {} WITH NO DATA",
            columns
                .iter()
                .map(|name| quote_ident(name))
                .collect::<Vec<_>>()
                .join(", "),
            quote_table(target)
        ))
        .await
        .map_err(&on_error)?;
    let copy_sql = format!(
        "COPY _ferry_sync_staging ({}) FROM STDIN (FORMAT binary)",
        columns
            .iter()
            .map(|name| quote_ident(name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut copy_in = Box::pin(
        transaction
            .copy_in::<_, bytes::Bytes>(&copy_sql)
            .await
            .map_err(&on_error)?,
    );
    let mut buffer = BytesMut::with_capacity(1 << 20);
    push_header(&mut buffer);
    let mut scratch = Vec::new();
    while let Some(batch) = next_batch(&mut batches, cancel).await? {
        encode_batch(table, &column_encoders, &batch, &mut buffer, &mut scratch)?;
        if buffer.len() >= 1 << 20 {
            copy_in
                .send(buffer.split().freeze())
                .await
                .map_err(&on_error)?;
        }
    }
    push_trailer(&mut buffer);
    copy_in.send(buffer.freeze()).await.map_err(&on_error)?;
    let rows_read = copy_in.as_mut().finish().await.map_err(&on_error)?;
    let sql = upsert_sql(
        &quote_table(target),
        "_ferry_sync_staging",
        &columns,
        &keys,
        watermark,
    );
    let row = transaction.query_one(&sql, &[]).await.map_err(&on_error)?;
    let inserted: i64 = row.try_get(0).map_err(&on_error)?;
    let updated: i64 = row.try_get(1).map_err(&on_error)?;
    if cancel.is_cancelled() {
        return Err(ConnectorError::Cancelled);
    }
    transaction.commit().await.map_err(&on_error)?;
    Ok(UpsertSummary {
        rows_read,
        inserted: inserted.unsigned_abs(),
        updated: updated.unsigned_abs(),
    })
}

/// Deletes the rows of `catalog` whose single integer key is in `keys`.
pub async fn delete_keys(
    client: &Client,
    catalog: &CatalogTable,
    key: &SplitKey,
    keys: &[i64],
) -> Result<u64> {
    let key_column = match key_columns(catalog, key)?.as_slice() {
        [only] if only.integer => only.name.clone(),
        _ => {
            return Err(ConnectorError::Unsupported {
                table: catalog.name.clone(),
                detail: "rows are deleted by key only on a single integer key".to_string(),
            });
        }
    };
    client
        .execute(
            &format!(
                "DELETE FROM {} WHERE {} = ANY($1::bigint[])",
                quote_table(&catalog.name),
                quote_ident(&key_column)
            ),
            &[&keys],
        )
        .await
        .map_err(query_error("delete rows by key", &catalog.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_replaces_only_older_or_equal_and_different_rows() {
        let sql = upsert_sql(
            "\"public\".\"t\"",
            "s",
            &["id".into(), "v".into(), "updated_at".into()],
            &["id".into()],
            "updated_at",
        );
        assert!(sql.contains("ON CONFLICT (\"id\") DO UPDATE SET \"v\" = EXCLUDED.\"v\", \"updated_at\" = EXCLUDED.\"updated_at\""));
        assert!(sql.contains("WHERE t.\"updated_at\" <= EXCLUDED.\"updated_at\""));
        assert!(sql.contains("IS DISTINCT FROM"));
        let keys_only = upsert_sql("t", "s", &["id".into()], &["id".into()], "id");
        assert!(keys_only.contains("DO NOTHING"));
    }
}
