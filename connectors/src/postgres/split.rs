//! Key statistics and boundaries for planning, and range counts.

use ferry_model::key::{ChunkRange, KeyBound, KeySample, KeyStats, KeyValue, SplitKey};
use ferry_model::schema::TableName;
use tokio_postgres::Client;

use super::catalog::CatalogTable;
use super::connect::query_error;
use super::pool::Session;
use super::sql::{KeyColumn, order_by, quote_ident, quote_table, range_predicate};
use crate::error::{ConnectorError, Result};

/// The key columns of `key` as `catalog` holds them (none for a whole-table key).
pub fn key_columns(catalog: &CatalogTable, key: &SplitKey) -> Result<Vec<KeyColumn>> {
    match key {
        SplitKey::Columns { names, .. } => {
            catalog
                .key_columns(names)
                .map_err(|detail| ConnectorError::SchemaMismatch {
                    table: catalog.name.clone(),
                    detail: format!("{detail}; plan the job again, or fix the table"),
                })
        }
        SplitKey::Hash {
            column,
            buckets,
            bucketing,
        } => {
            let mut columns =
                catalog
                    .key_columns(std::slice::from_ref(column))
                    .map_err(|detail| ConnectorError::SchemaMismatch {
                        table: catalog.name.clone(),
                        detail: format!("{detail}; plan the job again, or fix the table"),
                    })?;
            Ok(columns
                .pop()
                .map(|column| KeyColumn::hash_bucket(column, *buckets, *bucketing))
                .into_iter()
                .collect())
        }
        SplitKey::None => Ok(Vec::new()),
        SplitKey::Rowid => Err(ConnectorError::Unsupported {
            table: catalog.name.clone(),
            detail: "PostgreSQL tables have no rowid to split on".to_string(),
        }),
    }
}

/// The WHERE condition of `range`, or an error naming the table.
pub fn predicate(
    table: &TableName,
    keys: &[KeyColumn],
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<String> {
    range_predicate(keys, key.nullable(), range).map_err(|detail| ConnectorError::Unsupported {
        table: table.clone(),
        detail: format!("range {range} does not fit the key: {detail}"),
    })
}

/// Makes the planner reach a range of a table ferry writes through its key's index, for
/// the rest of the session. A target being filled has no statistics yet, and for an
/// open-ended range (`key >= x`) the planner's default guess, a third of the table, picks
/// a sequential scan of the whole table for the first and the last chunk, in every delete
/// and read-back. Ranges are always on the primary key; a table without one is scanned
/// anyway.
pub const PREFER_KEY_INDEX: &str = "SET enable_seqscan = off";
/// [`PREFER_KEY_INDEX`] for the current transaction only.
pub const PREFER_KEY_INDEX_LOCAL: &str = "SET LOCAL enable_seqscan = off";

/// A table the catalog estimates at fewer rows than this is counted exactly (quick, and
/// the estimate of a small or freshly loaded table can be far off); a larger one is
/// planned on the estimate, which sizes chunks but never decides which rows are copied,
/// and spares a full scan before anything moves.
pub const EXACT_COUNT_BELOW: u64 = 1_000_000;

/// The planner's own row estimate: the density `reltuples / relpages` of the last
/// VACUUM or ANALYZE times the table's current size; `None` when never measured, or for
/// a table without storage of its own (a partitioned parent).
async fn estimated_rows(client: &Client, catalog: &CatalogTable) -> Result<Option<u64>> {
    let row = client
        .query_opt(
            "SELECT (c.reltuples / c.relpages * (pg_catalog.pg_relation_size(c.oid) \
                    / pg_catalog.current_setting('block_size')::float8))::int8 \
             FROM pg_catalog.pg_class c \
             WHERE c.oid = pg_catalog.to_regclass($1) AND c.reltuples >= 0 AND c.relpages > 0",
            &[&quote_table(&catalog.name)],
        )
        .await
        .map_err(query_error("estimate rows", &catalog.name))?;
    let estimate: Option<i64> = match row {
        Some(row) => row
            .try_get(0)
            .map_err(query_error("estimate rows", &catalog.name))?,
        None => None,
    };
    Ok(estimate.map(|rows| rows.max(0) as u64))
}

/// Counts rows (or estimates them, see [`EXACT_COUNT_BELOW`]) and NULL keys, and reads
/// min/max of a single integer key.
pub async fn key_stats(
    client: &Client,
    catalog: &CatalogTable,
    key: &SplitKey,
) -> Result<KeyStats> {
    let on_error = query_error("read key statistics", &catalog.name);
    let keys = key_columns(catalog, key)?;
    let quoted_table = quote_table(&catalog.name);
    let null_keys = if key.nullable() && !keys.is_empty() {
        predicate(&catalog.name, &keys, key, &ChunkRange::NullKeys)?
    } else {
        "false".to_string()
    };
    let integer_key = key.single_integer() && keys.len() == 1 && keys[0].integer;
    let min_max = if integer_key {
        let column = quote_ident(&keys[0].name);
        format!("min({column})::int8, max({column})::int8")
    } else {
        "NULL::int8, NULL::int8".to_string()
    };
    // NULL keys are counted by a scan anyway; without them a big table is estimated, and
    // min/max come from the key's index.
    if !key.nullable()
        && let Some(estimate) = estimated_rows(client, catalog).await?
        && estimate >= EXACT_COUNT_BELOW
    {
        // Without an integer key there is nothing to read: `SELECT NULL, NULL FROM t`
        // (no aggregate) would return a row per table row.
        let int_min_max = if integer_key {
            let row = client
                .query_one(&format!("SELECT {min_max} FROM {quoted_table}"), &[])
                .await
                .map_err(&on_error)?;
            let min: Option<i64> = row.try_get(0).map_err(&on_error)?;
            let max: Option<i64> = row.try_get(1).map_err(&on_error)?;
            min.zip(max)
        } else {
            None
        };
        return Ok(KeyStats {
            rows: estimate,
            null_key_rows: 0,
            int_min_max,
        });
    }
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE {null_keys}), {min_max} FROM {quoted_table}"
            ),
            &[],
        )
        .await
        .map_err(&on_error)?;
    let rows: i64 = row.try_get(0).map_err(&on_error)?;
    let null_key_rows: i64 = row.try_get(1).map_err(&on_error)?;
    let min: Option<i64> = row.try_get(2).map_err(&on_error)?;
    let max: Option<i64> = row.try_get(3).map_err(&on_error)?;
    Ok(KeyStats {
        rows: rows.max(0) as u64,
        null_key_rows: null_key_rows.max(0) as u64,
        int_min_max: min.zip(max),
    })
}

/// Every `every_rows`-th non-NULL key in key order, computed in the database (an ordered
/// scan with `row_number()`, which streams there): exact quantiles, so chunks are even
/// however skewed the keys are, and only the boundaries cross the network.
pub async fn key_boundaries(
    client: &Client,
    catalog: &CatalogTable,
    key: &SplitKey,
    every_rows: u64,
) -> Result<Vec<KeyBound>> {
    let on_error = query_error("read key boundaries", &catalog.name);
    let keys = key_columns(catalog, key)?;
    if keys.is_empty() || every_rows == 0 {
        return Ok(Vec::new());
    }
    let every_rows = i64::try_from(every_rows).unwrap_or(i64::MAX);
    let BoundColumns {
        not_null,
        bound_exprs,
        bound_names,
    } = BoundColumns::of(&keys);
    // Row n (1-based) opens chunk n / every_rows, so the first bound is the key after the
    // first `every_rows` keys.
    let sql = format!(
        "SELECT {names} FROM (SELECT {bounds}, row_number() OVER (ORDER BY {order}) AS n \
         FROM {table} WHERE {not_null}) AS keys \
         WHERE n > 1 AND (n - 1) % {every_rows} = 0 ORDER BY n",
        names = bound_names.join(", "),
        bounds = bound_exprs.join(", "),
        order = order_by(&keys),
        table = quote_table(&catalog.name),
        not_null = not_null.join(" AND "),
    );
    let rows = client.query(&sql, &[]).await.map_err(&on_error)?;
    let mut boundaries: Vec<KeyBound> = Vec::with_capacity(rows.len());
    for row in rows {
        let bound = bound_of_row(&row, 0, &keys).map_err(&on_error)?;
        // The key is unique, so bounds from an ordered scan strictly increase; a repeat
        // could only come from a key that is not unique, and would make an empty range.
        if boundaries.last() != Some(&bound) {
            boundaries.push(bound);
        }
    }
    Ok(boundaries)
}

/// The key bound in columns `first..first + keys.len()` of `row`.
fn bound_of_row(
    row: &tokio_postgres::Row,
    first: usize,
    keys: &[KeyColumn],
) -> std::result::Result<KeyBound, tokio_postgres::Error> {
    let mut values = Vec::with_capacity(keys.len());
    for (index, column) in keys.iter().enumerate() {
        let value = if column.integer {
            row.try_get::<_, i64>(first + index).map(KeyValue::Int)?
        } else {
            row.try_get::<_, String>(first + index)
                .map(KeyValue::Text)?
        };
        values.push(value);
    }
    Ok(KeyBound(values))
}

/// Above this share of a table's pages a sample reads about as much as the exact
/// ordered scan: [`key_sample`] declines and the planner scans.
pub const SAMPLE_MAX_PERCENT: f64 = 20.0;

/// Samples about `points` non-NULL keys with `TABLESAMPLE SYSTEM`, which reads only the
/// sampled pages: `points` pages, so that the sample holds about `points` independent
/// places in the table even when keys follow the physical order (a page's rows then have
/// neighbouring keys). The sampled keys are sorted in the database and thinned there to
/// about `points`, evenly in key order, so only those cross the network. `REPEATABLE`
/// makes a plan reproducible. The rows it stands for are the sampled rows over the
/// sampled fraction. `None` for a table without pages of its own (a partitioned parent)
/// or when the sample would read more than [`SAMPLE_MAX_PERCENT`] of the pages.
pub async fn key_sample(
    client: &Client,
    catalog: &CatalogTable,
    key: &SplitKey,
    points: u64,
) -> Result<Option<KeySample>> {
    let on_error = query_error("sample keys", &catalog.name);
    let keys = key_columns(catalog, key)?;
    if keys.is_empty() || points == 0 {
        return Ok(None);
    }
    let pages: Option<i64> = client
        .query_one(
            "SELECT pg_catalog.pg_relation_size(pg_catalog.to_regclass($1)) \
                    / pg_catalog.current_setting('block_size')::int8",
            &[&quote_table(&catalog.name)],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(&on_error)?;
    let Some(pages) = pages.filter(|pages| *pages > 0) else {
        return Ok(None);
    };
    let percent = points as f64 * 100.0 / pages as f64;
    if percent > SAMPLE_MAX_PERCENT {
        return Ok(None);
    }
    let points = i64::try_from(points).unwrap_or(i64::MAX);
    let BoundColumns {
        not_null,
        bound_exprs,
        bound_names,
    } = BoundColumns::of(&keys);
    // Row n of `total` sampled keys is kept when n·points/total crosses an integer:
    // about `points` keys, evenly spread over the sorted sample (all of them when fewer).
    let sql = format!(
        "SELECT total, {names} FROM (SELECT {bounds}, \
                row_number() OVER (ORDER BY {order}) AS n, count(*) OVER () AS total \
             FROM {table} TABLESAMPLE SYSTEM ({percent}) REPEATABLE (0) WHERE {not_null}) AS keys \
         WHERE n * {points} / total > (n - 1) * {points} / total ORDER BY n",
        names = bound_names.join(", "),
        bounds = bound_exprs.join(", "),
        order = order_by(&keys),
        table = quote_table(&catalog.name),
        not_null = not_null.join(" AND "),
    );
    let rows = client.query(&sql, &[]).await.map_err(&on_error)?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let sampled: i64 = first.try_get(0).map_err(&on_error)?;
    let mut sample = KeySample {
        keys: Vec::with_capacity(rows.len()),
        rows: (sampled.max(0) as f64 * 100.0 / percent) as u64,
    };
    for row in &rows {
        sample
            .keys
            .push(bound_of_row(row, 1, &keys).map_err(&on_error)?);
    }
    Ok(Some(sample))
}

/// Counts the rows of a range.
pub async fn count_range(
    client: &mut Session,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<u64> {
    let keys = key_columns(catalog, key)?;
    let condition = predicate(&catalog.name, &keys, key, range)?;
    client
        .prefer_key_index()
        .await
        .map_err(query_error("count chunk", &catalog.name))?;
    let count: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE {condition}",
                quote_table(&catalog.name)
            ),
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("count chunk", &catalog.name))?;
    Ok(count.max(0) as u64)
}
/// The pieces of a query over the split key's bounds: `b0, b1, …` as the key columns'
/// bound expressions, their names, and the condition that no key column is NULL.
struct BoundColumns {
    not_null: Vec<String>,
    bound_exprs: Vec<String>,
    bound_names: Vec<String>,
}

impl BoundColumns {
    fn of(keys: &[KeyColumn]) -> Self {
        Self {
            not_null: keys
                .iter()
                .map(|column| format!("{} IS NOT NULL", quote_ident(&column.name)))
                .collect(),
            bound_exprs: keys
                .iter()
                .enumerate()
                .map(|(index, column)| format!("{} AS b{index}", column.bound_expr()))
                .collect(),
            bound_names: (0..keys.len()).map(|index| format!("b{index}")).collect(),
        }
    }
}
