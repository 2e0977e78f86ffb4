//! The checksum pushed down into SQL, for verifying a MySQL → MySQL copy without moving
//! the rows again: `COUNT(*)` and the sum of the first 64 bits of each row's MD5, over a
//! text form of each value that is exact for the value (hex for strings and bytes, the
//! double's shortest text for floats, the integer for bits, the fixed text of decimals
//! and temporal values) with a marker telling NULL apart.
//!
//! The digest is the sum as 32 hex digits. Both sides must describe the columns alike (same DDL), so the method names the server
//! flavour: MySQL and MariaDB print some values differently. A mismatch is not proof of a
//! difference (a target with another decimal scale prints other text); callers confirm
//! with the canonical checksum.

use ferry_common::key::{ChunkRange, SplitKey};
use ferry_common::schema::{ColumnType, TableSchema};
use mysql_async::Value;
use mysql_async::prelude::Queryable;

use super::describe::text_of;
use super::sql::{STATEMENT_TAG, key_columns, quote_ident, quote_table, range_predicate};
use super::{Shared, query_error};
use crate::error::{ConnectorError, Result};
use crate::traits::NativeChecksum;

/// The method of a MySQL server's checksums.
pub const MYSQL_METHOD: &str = "mysql-md5-sum-v1";
/// The method of a MariaDB server's checksums.
pub const MARIADB_METHOD: &str = "mariadb-md5-sum-v1";

/// The text of one column's value in the row digest: `n` for NULL, else `v` and an exact
/// text of the value.
fn value_expr(name: &str, column_type: &ColumnType) -> String {
    let column = quote_ident(name);
    let text = match column_type {
        ColumnType::Float32 | ColumnType::Float64 => format!("({column} + 0e0)"),
        ColumnType::Bit { .. } => format!("({column} + 0)"),
        ColumnType::Bool
        | ColumnType::Int8
        | ColumnType::Int16
        | ColumnType::Int32
        | ColumnType::Int64
        | ColumnType::UInt8
        | ColumnType::UInt16
        | ColumnType::UInt32
        | ColumnType::UInt64
        | ColumnType::Year
        | ColumnType::Decimal { .. }
        | ColumnType::Date
        | ColumnType::Time
        | ColumnType::Timestamp
        | ColumnType::TimestampTz => column.clone(),
        _ => format!("HEX({column})"),
    };
    format!("IFNULL(CONCAT('v', {text}), 'n')")
}

/// The statement computing the native checksum of `range`.
pub fn checksum_sql(database: &str, table: &TableSchema, predicate: &str) -> String {
    let values: Vec<String> = table
        .columns
        .iter()
        .map(|column| value_expr(&column.name, &column.column_type))
        .collect();
    let row = if values.is_empty() {
        "''".to_string()
    } else {
        format!("CONCAT_WS('#', {})", values.join(", "))
    };
    format!(
        "{STATEMENT_TAG}SELECT COUNT(*), \
         COALESCE(SUM(CAST(CONV(SUBSTRING(MD5({row}), 1, 16), 16, 10) AS UNSIGNED)), 0) \
         FROM {} WHERE {predicate}",
        quote_table(database, &table.name.name)
    )
}

/// Computes the native checksum of `range` on `shared`'s server.
pub async fn checksum(
    shared: &Shared,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<NativeChecksum> {
    let columns = key_columns(table, key)?;
    let (predicate, params) = range_predicate(table, &columns, key, range)?;
    let sql = checksum_sql(shared.database_of(table), table, &predicate);
    let mut conn = shared.conn(shared.role, &table.name).await?;
    let row: Option<(Value, Value)> = conn
        .exec_first(sql, params)
        .await
        .map_err(query_error("checksum chunk", &table.name))?;
    let (rows, sum) = row
        .map(|(rows, sum)| (text_of(rows), text_of(sum)))
        .unwrap_or_default();
    // At most 2^64 rows of 64-bit hashes: the exact sum fits in 128 bits.
    let sum = sum.as_deref().unwrap_or("0");
    let sum: u128 = sum.parse().map_err(|_| {
        ConnectorError::Task(format!(
            "the checksum of table {} is not an integer: {sum:?}",
            table.name
        ))
    })?;
    Ok(NativeChecksum {
        method: if shared.is_mariadb {
            MARIADB_METHOD
        } else {
            MYSQL_METHOD
        },
        rows: rows.and_then(|text| text.parse().ok()).unwrap_or(0),
        digest: format!("{sum:032x}"),
    })
}

#[cfg(test)]
mod tests {
    use ferry_common::schema::{ColumnSchema, TableName};

    use super::*;

    #[test]
    fn every_value_is_marked_and_exact() {
        let table = TableSchema {
            name: TableName::bare("t"),
            columns: vec![
                ColumnSchema {
                    name: "f".into(),
                    declared_type: "float".into(),
                    column_type: ColumnType::Float32,
                    nullable: true,
                },
                ColumnSchema {
                    name: "s".into(),
                    declared_type: "text".into(),
                    column_type: ColumnType::Text,
                    nullable: true,
                },
            ],
            primary_key: Vec::new(),
            has_rowid: false,
            source_kind: "mysql".into(),
            native_ddl: None,
        };
        assert_eq!(
            checksum_sql("db", &table, "TRUE"),
            "/*ferry*/ SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS('#', \
             IFNULL(CONCAT('v', (`f` + 0e0)), 'n'), IFNULL(CONCAT('v', HEX(`s`)), 'n'))), 1, 16), \
             16, 10) AS UNSIGNED)), 0) FROM `db`.`t` WHERE TRUE"
        );
    }
}
