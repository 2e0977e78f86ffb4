//! Describes tables through `information_schema`, and maps MySQL column types to ferry's.
//!
//! Generated columns (`VIRTUAL`/`STORED GENERATED`, MariaDB `PERSISTENT`) and MariaDB's
//! system-versioning columns are left out of the described columns: their values are
//! computed by the database, so ferry neither reads nor writes them. A MySQL target gets
//! them back through the source's own `CREATE TABLE` (`native_ddl`); another target does
//! not get them at all.

use ferry_model::schema::{
    ColumnSchema, ColumnType, Partitioning, TableName, TablePartition, TableSchema,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::sql::{STATEMENT_TAG, quote_ident, quote_table};
use super::values::parse_labels;
use super::{FENCE_TABLE, KIND, query_error};
use crate::error::{ConnectorError, Result};

/// Maps a column's `DATA_TYPE` and `COLUMN_TYPE` to how ferry carries it; `None` for a
/// type ferry cannot carry (spatial types, MariaDB `VECTOR`).
pub fn column_type_for(
    data_type: &str,
    column_type: &str,
    json_checked: bool,
) -> Option<ColumnType> {
    let data_type = data_type.to_ascii_lowercase();
    let column_type_lower = column_type.to_ascii_lowercase();
    let unsigned = column_type_lower.contains("unsigned") || column_type_lower.contains("zerofill");
    let pick = |signed: ColumnType, unsigned_type: ColumnType| {
        if unsigned { unsigned_type } else { signed }
    };
    Some(match data_type.as_str() {
        // tinyint(1) (and BOOL, its alias) may hold -128..127, so it stays an integer.
        "tinyint" => pick(ColumnType::Int8, ColumnType::UInt8),
        "smallint" => pick(ColumnType::Int16, ColumnType::UInt16),
        "mediumint" | "int" | "integer" => pick(ColumnType::Int32, ColumnType::UInt32),
        "bigint" => pick(ColumnType::Int64, ColumnType::UInt64),
        "decimal" | "numeric" | "dec" | "fixed" => {
            let (precision, scale) = parenthesized_numbers(&column_type_lower);
            ColumnType::Decimal {
                precision: Some(precision.unwrap_or(10)),
                scale: Some(scale.unwrap_or(0) as i32),
            }
        }
        "float" => ColumnType::Float32,
        "double" | "real" | "double precision" => ColumnType::Float64,
        "bit" => ColumnType::Bit {
            width: parenthesized_numbers(&column_type_lower).0.unwrap_or(1),
        },
        "longtext" if json_checked => ColumnType::Json,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "inet4"
        | "inet6" => ColumnType::Text,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            ColumnType::Blob
        }
        "date" => ColumnType::Date,
        "datetime" => ColumnType::Timestamp,
        "timestamp" => ColumnType::TimestampTz,
        "time" => ColumnType::Time,
        "year" => ColumnType::Year,
        "json" => ColumnType::Json,
        "uuid" => ColumnType::Uuid,
        "enum" => ColumnType::Enum {
            labels: parse_labels(column_type)?,
        },
        "set" => ColumnType::Set {
            labels: parse_labels(column_type)?,
        },
        _ => return None,
    })
}

/// The numbers in the first parentheses: `decimal(65,30)` gives `(Some(65), Some(30))`.
fn parenthesized_numbers(column_type: &str) -> (Option<u32>, Option<u32>) {
    let Some(open) = column_type.find('(') else {
        return (None, None);
    };
    let Some(close) = column_type[open..].find(')') else {
        return (None, None);
    };
    let mut numbers = column_type[open + 1..open + close]
        .split(',')
        .map(|part| part.trim().parse::<u32>().ok());
    (numbers.next().flatten(), numbers.next().flatten())
}

/// Whether an `EXTRA` value marks a column whose values the database computes.
pub fn is_computed(extra: &str, generation_expression: Option<&str>) -> bool {
    let extra = extra.to_ascii_uppercase();
    extra.contains("VIRTUAL")
        || extra.contains("STORED GENERATED")
        || extra.contains("PERSISTENT")
        || extra.contains("ROW START")
        || extra.contains("ROW END")
        || generation_expression.is_some_and(|expression| !expression.trim().is_empty())
}

/// Reads a text cell of an `information_schema` row.
pub fn text_of(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::Int(v) => Some(v.to_string()),
        Value::UInt(v) => Some(v.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Lists the base tables of `database`, without ferry's fence table.
pub async fn list_tables(conn: &mut Conn, database: &str) -> Result<Vec<TableName>> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            format!(
                "{STATEMENT_TAG}SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> ? \
                 ORDER BY TABLE_NAME"
            ),
            (database, FENCE_TABLE),
        )
        .await
        .map_err(query_error(
            "list tables",
            &TableName::bare("information_schema.TABLES"),
        ))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.unwrap().into_iter().next().and_then(text_of))
        .map(|name| TableName {
            schema: Some(database.to_string()),
            name,
        })
        .collect())
}

/// Describes `database`.`name`; `Ok(None)` when no such base table exists.
pub async fn describe(
    conn: &mut Conn,
    database: &str,
    name: &str,
    is_mariadb: bool,
) -> Result<Option<TableSchema>> {
    let table = TableName {
        schema: Some(database.to_string()),
        name: name.to_string(),
    };
    let on_error = query_error("describe table", &table);
    let table_type: Option<Value> = conn
        .exec_first(
            format!(
                "{STATEMENT_TAG}SELECT TABLE_TYPE FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?"
            ),
            (database, name),
        )
        .await
        .map_err(&on_error)?;
    let Some(table_type) = table_type.and_then(text_of) else {
        return Ok(None);
    };
    if table_type != "BASE TABLE" {
        return Err(ConnectorError::Unsupported {
            table,
            detail: format!("it is a {table_type}, not a base table; exclude it from the job"),
        });
    }

    let json_columns = if is_mariadb {
        mariadb_json_columns(conn, database, name, &table).await?
    } else {
        Vec::new()
    };
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            format!(
                "{STATEMENT_TAG}SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, EXTRA, \
                 GENERATION_EXPRESSION FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
            ),
            (database, name),
        )
        .await
        .map_err(&on_error)?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut computed = Vec::new();
    for row in rows {
        let mut cells = row.unwrap().into_iter().map(text_of);
        let mut next = || cells.next().flatten();
        let column_name = next().unwrap_or_default();
        let data_type = next().unwrap_or_default();
        let declared_type = next().unwrap_or_default();
        let nullable = next().is_some_and(|value| value.eq_ignore_ascii_case("YES"));
        let extra = next().unwrap_or_default();
        let generation_expression = next();
        if is_computed(&extra, generation_expression.as_deref()) {
            computed.push(column_name);
            continue;
        }
        let json_checked = json_columns.contains(&column_name);
        let Some(column_type) = column_type_for(&data_type, &declared_type, json_checked) else {
            return Err(ConnectorError::Unsupported {
                table,
                detail: format!(
                    "column {column_name} is {declared_type}, which ferry cannot carry; \
                     exclude the table or copy it another way"
                ),
            });
        };
        columns.push(ColumnSchema {
            name: column_name,
            declared_type,
            column_type,
            nullable,
        });
    }

    let key_rows: Vec<mysql_async::Row> = conn
        .exec(
            format!(
                "{STATEMENT_TAG}SELECT COLUMN_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
                 ORDER BY SEQ_IN_INDEX"
            ),
            (database, name),
        )
        .await
        .map_err(&on_error)?;
    let mut primary_key: Vec<String> = key_rows
        .into_iter()
        .filter_map(|row| row.unwrap().into_iter().next().and_then(text_of))
        .collect();
    if primary_key.iter().any(|column| computed.contains(column)) {
        tracing::warn!(
            table = %table,
            "the primary key includes a generated column, which ferry does not read: \
             the table is copied without splitting"
        );
        primary_key.clear();
    }

    let create: Option<(Value, Value)> = conn
        .query_first(format!(
            "{STATEMENT_TAG}SHOW CREATE TABLE {}",
            quote_table(database, name)
        ))
        .await
        .map_err(&on_error)?;
    let native_ddl = create.and_then(|(_, ddl)| text_of(ddl));
    let partitioning = describe_partitions(conn, database, name, &table).await?;

    Ok(Some(TableSchema {
        name: table,
        columns,
        primary_key,
        has_rowid: false,
        source_kind: KIND.to_string(),
        native_ddl,
        partitioning,
        partition: None,
        split_columns: Vec::new(),
    }))
}

/// Reads a table's partitions from `information_schema.PARTITIONS`: each partition, and
/// under a subpartitioned one its subpartitions (then the leaves). `None` for a table
/// without partitions, and for MariaDB `PARTITION BY SYSTEM_TIME`, whose history
/// partitions hold old versions of rows that a `PARTITION (p)` read would return as if
/// they were current: such a table is read through the table itself.
async fn describe_partitions(
    conn: &mut Conn,
    database: &str,
    name: &str,
    table: &TableName,
) -> Result<Option<Partitioning>> {
    let rows: Vec<(Value, Value, Value, Value, Value)> = conn
        .exec(
            format!(
                "{STATEMENT_TAG}SELECT PARTITION_NAME, SUBPARTITION_NAME, PARTITION_METHOD, \
                        SUBPARTITION_METHOD, PARTITION_DESCRIPTION \
                 FROM information_schema.PARTITIONS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL \
                 ORDER BY PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION"
            ),
            (database, name),
        )
        .await
        .map_err(query_error("describe partitions", table))?;
    let mut method: Option<String> = None;
    let mut partitions: Vec<TablePartition> = Vec::new();
    for (partition_name, subpartition_name, partition_method, subpartition_method, description) in
        rows
    {
        let Some(partition_name) = text_of(partition_name) else {
            continue;
        };
        let partition_method = text_of(partition_method).unwrap_or_default();
        let subpartition_method = text_of(subpartition_method);
        if partition_method
            .to_ascii_uppercase()
            .contains("SYSTEM_TIME")
        {
            return Ok(None);
        }
        method.get_or_insert_with(|| match &subpartition_method {
            Some(sub) => format!("{partition_method}/{sub}"),
            None => partition_method.clone(),
        });
        let bound = text_of(description).unwrap_or_default();
        match text_of(subpartition_name) {
            None => partitions.push(TablePartition {
                name: partition_name,
                schema: None,
                parent: None,
                bound,
                sub_method: None,
                leaf: true,
            }),
            Some(subpartition) => {
                if !partitions.iter().any(|known| known.name == partition_name) {
                    partitions.push(TablePartition {
                        name: partition_name.clone(),
                        schema: None,
                        parent: None,
                        bound,
                        sub_method: subpartition_method.clone(),
                        leaf: false,
                    });
                }
                partitions.push(TablePartition {
                    name: subpartition,
                    schema: None,
                    parent: Some(partition_name),
                    bound: String::new(),
                    sub_method: None,
                    leaf: true,
                });
            }
        }
    }
    Ok(method.map(|method| Partitioning { method, partitions }))
}

/// MariaDB stores `JSON` as `LONGTEXT` with a `CHECK (json_valid(col))` named after the
/// column: returns those columns.
async fn mariadb_json_columns(
    conn: &mut Conn,
    database: &str,
    name: &str,
    table: &TableName,
) -> Result<Vec<String>> {
    let outcome: std::result::Result<Vec<(Value, Value)>, mysql_async::Error> = conn
        .exec(
            format!(
                "{STATEMENT_TAG}SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?"
            ),
            (database, name),
        )
        .await;
    let rows = match outcome {
        Ok(rows) => rows,
        // Before MariaDB 10.2 there is no CHECK_CONSTRAINTS table, and no JSON alias.
        Err(mysql_async::Error::Server(error)) if matches!(error.code, 1109 | 1054) => {
            return Ok(Vec::new());
        }
        Err(error) => return Err(query_error("describe table", table)(error)),
    };
    let compact = |text: &str| -> String {
        text.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    Ok(rows
        .into_iter()
        .filter_map(|(constraint, clause)| {
            let constraint = text_of(constraint)?;
            let clause = text_of(clause)?;
            let expected = compact(&format!("json_valid({})", quote_ident(&constraint)));
            (compact(&clause) == expected).then_some(constraint)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_types_keep_width_and_sign() {
        assert_eq!(
            column_type_for("tinyint", "tinyint(1)", false),
            Some(ColumnType::Int8)
        );
        assert_eq!(
            column_type_for("tinyint", "tinyint(3) unsigned", false),
            Some(ColumnType::UInt8)
        );
        assert_eq!(
            column_type_for("mediumint", "mediumint(9)", false),
            Some(ColumnType::Int32)
        );
        assert_eq!(
            column_type_for("int", "int(10) unsigned zerofill", false),
            Some(ColumnType::UInt32)
        );
        assert_eq!(
            column_type_for("bigint", "bigint(20) unsigned", false),
            Some(ColumnType::UInt64)
        );
    }

    #[test]
    fn other_types_map_as_documented() {
        assert_eq!(
            column_type_for("decimal", "decimal(65,30)", false),
            Some(ColumnType::Decimal {
                precision: Some(65),
                scale: Some(30)
            })
        );
        assert_eq!(
            column_type_for("bit", "bit(64)", false),
            Some(ColumnType::Bit { width: 64 })
        );
        assert_eq!(
            column_type_for("longtext", "longtext", true),
            Some(ColumnType::Json)
        );
        assert_eq!(
            column_type_for("longtext", "longtext", false),
            Some(ColumnType::Text)
        );
        assert_eq!(
            column_type_for("timestamp", "timestamp(6)", false),
            Some(ColumnType::TimestampTz)
        );
        assert_eq!(
            column_type_for("datetime", "datetime(6)", false),
            Some(ColumnType::Timestamp)
        );
        assert_eq!(
            column_type_for("set", "set('a','b')", false),
            Some(ColumnType::Set {
                labels: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(column_type_for("geometry", "geometry", false), None);
    }

    #[test]
    fn generated_and_versioning_columns_are_computed() {
        assert!(is_computed("VIRTUAL GENERATED", None));
        assert!(is_computed("STORED GENERATED", Some("`a` * 2")));
        assert!(is_computed("PERSISTENT", None));
        assert!(is_computed("", Some("`a` + 1")));
        assert!(!is_computed("DEFAULT_GENERATED", Some("")));
        assert!(!is_computed("auto_increment", None));
        assert!(!is_computed("INVISIBLE", None));
    }
}
