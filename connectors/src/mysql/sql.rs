//! SQL text for MySQL/MariaDB: identifier and string quoting, key ranges as predicates
//! with typed parameters, and key values read back from the key columns.
//!
//! A key bound is compared in the database with the key column's own semantics, so its
//! parameter is bound by the column's type: decimals through `CAST(? AS DECIMAL(p,s))`
//! (a string against a decimal would compare as double), bytes through
//! `CAST(? AS BINARY)`, enum and set labels as their index (which is the order `ORDER
//! BY` uses), unsigned 64-bit values beyond `i64` as unsigned integers. Text is bound as
//! text, so the column's collation decides, as it does for `ORDER BY`.

use ferry_model::key::{Bucketing, ChunkRange, KeyBound, KeyValue, SplitKey};
use ferry_model::schema::{ColumnType, TableSchema};
use mysql_async::Value;

use super::values::{canonical_decimal, format_date, format_datetime, format_time_of_day_or_span};
use crate::error::{ConnectorError, Result};

/// A prefix on every statement ferry sends, so the load probe can tell ferry's own
/// running threads apart in the process list.
pub const STATEMENT_TAG: &str = "/*ferry*/ ";

/// Quotes an identifier with backticks, inner backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes `database`.`table`.
pub fn quote_table(database: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(database), quote_ident(table))
}

/// The table a data statement (SELECT, DELETE, LOAD DATA, INSERT) names: `db`.`t`, with
/// `PARTITION (p)` when the schema is restricted to one partition or subpartition, so the
/// statement sees and touches that partition's rows only (rows that belong elsewhere are
/// refused on insert).
pub fn data_table(database: &str, table: &TableSchema) -> String {
    let quoted = quote_table(database, &table.name.name);
    match &table.partition {
        Some(partition) => format!("{quoted} PARTITION ({})", quote_ident(partition)),
        None => quoted,
    }
}

/// Quotes a string literal for a session without `NO_BACKSLASH_ESCAPES` (ferry sets the
/// session's `sql_mode` itself).
pub fn quote_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for character in text.chars() {
        match character {
            '\'' => quoted.push_str("\\'"),
            '\\' => quoted.push_str("\\\\"),
            '\0' => quoted.push_str("\\0"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\u{1a}' => quoted.push_str("\\Z"),
            other => quoted.push(other),
        }
    }
    quoted.push('\'');
    quoted
}

/// One column of the split key, with the type its bounds are bound as.
#[derive(Clone, Debug)]
pub struct KeyColumn {
    /// The quoted column name; for a hash key, the expression of the row's bucket.
    pub quoted: String,
    /// The column's name.
    pub name: String,
    /// The carried type (the source's, on both sides); a bucket is a `bigint`.
    pub column_type: ColumnType,
    /// For a hash key (`SplitKey::Hash`): the number of buckets; the key is then the
    /// column's bucket number, not the column.
    pub hash_buckets: Option<u32>,
}

/// The bucket of `column` among `buckets`. [`Bucketing::EngineHash`]: the CRC-32 (ISO
/// 3309, the same in every MySQL and MariaDB version) of the column's text in `utf8mb4`,
/// NULL as the empty text, modulo `buckets`; `CONVERT … USING utf8mb4` makes the bytes
/// hashed independent of the column's and the session's character sets, so source and
/// target compute the same bucket of a row for integer, text and uuid columns (whose
/// text does not depend on session settings). [`Bucketing::Modulo`]: the integer
/// column's value itself, NULL as 0, reduced to `0..buckets` as PostgreSQL computes it
/// too (`%` truncates toward zero in both).
pub fn bucket_expr(column: &str, buckets: u32, bucketing: Bucketing) -> String {
    match bucketing {
        Bucketing::EngineHash => format!(
            "(CRC32(COALESCE(CONVERT({} USING utf8mb4), '')) % {buckets})",
            quote_ident(column)
        ),
        Bucketing::Modulo => format!(
            "((COALESCE({}, 0) % {buckets} + {buckets}) % {buckets})",
            quote_ident(column)
        ),
    }
}

/// `ORDER BY` list of the key; empty for a hash key (a chunk is one bucket: sorting it
/// by its bucket would order nothing and cost a sort).
pub fn order_by(columns: &[KeyColumn]) -> Vec<&str> {
    columns
        .iter()
        .filter(|column| column.hash_buckets.is_none())
        .map(|column| column.quoted.as_str())
        .collect()
}

impl KeyColumn {
    /// The expression that reads a key value back for a bound: enum and set columns as
    /// their index, so bounds compare as `ORDER BY` sorts.
    pub fn bound_select_expr(&self) -> String {
        match self.column_type {
            ColumnType::Enum { .. } | ColumnType::Set { .. } => format!("({} + 0)", self.quoted),
            _ => self.quoted.clone(),
        }
    }

    fn placeholder(&self) -> String {
        match &self.column_type {
            ColumnType::Decimal { precision, scale } => {
                let scale = scale.unwrap_or(30).clamp(0, 30);
                let precision = precision.unwrap_or(65).clamp(1, 65).max(scale as u32);
                format!("CAST(? AS DECIMAL({precision},{scale}))")
            }
            ColumnType::Blob | ColumnType::Uuid => "CAST(? AS BINARY)".to_string(),
            _ => "?".to_string(),
        }
    }
}

/// The split key's columns; a SQLite rowid key cannot be used here.
pub fn key_columns(table: &TableSchema, key: &SplitKey) -> Result<Vec<KeyColumn>> {
    match key {
        SplitKey::None => Ok(Vec::new()),
        SplitKey::Rowid => Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: "the table is split on a SQLite rowid, which a MySQL table cannot hold; \
                     add a primary key to the source table"
                .to_string(),
        }),
        SplitKey::Hash {
            column,
            buckets,
            bucketing,
        } => {
            if table.column(column).is_none() {
                return Err(ConnectorError::Unsupported {
                    table: table.name.clone(),
                    detail: format!("hash split column {column} is not a copied column"),
                });
            }
            Ok(vec![KeyColumn {
                quoted: bucket_expr(column, *buckets, *bucketing),
                name: column.clone(),
                column_type: ColumnType::Int64,
                hash_buckets: Some(*buckets),
            }])
        }
        SplitKey::Columns { names, .. } => names
            .iter()
            .map(|name| {
                let column = table
                    .column(name)
                    .ok_or_else(|| ConnectorError::Unsupported {
                        table: table.name.clone(),
                        detail: format!("key column {name} is not a copied column"),
                    })?;
                Ok(KeyColumn {
                    quoted: quote_ident(name),
                    name: name.clone(),
                    column_type: column.column_type.clone(),
                    hash_buckets: None,
                })
            })
            .collect(),
    }
}

/// A WHERE clause (without the keyword) and its parameters for the rows of `range`.
pub fn range_predicate(
    table: &TableSchema,
    columns: &[KeyColumn],
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<(String, Vec<Value>)> {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    match range {
        ChunkRange::WholeTable => {}
        ChunkRange::NullKeys => {
            let any_null: Vec<String> = columns
                .iter()
                .map(|column| format!("{} IS NULL", column.quoted))
                .collect();
            if any_null.is_empty() {
                clauses.push("FALSE".to_string());
            } else {
                clauses.push(format!("({})", any_null.join(" OR ")));
            }
        }
        ChunkRange::Interval { lower, upper } => {
            if key.nullable() {
                // A row value comparison does not exclude NULLs past its first column.
                for column in columns {
                    clauses.push(format!("{} IS NOT NULL", column.quoted));
                }
            }
            if let Some(bound) = lower {
                clauses.push(compare(table, columns, ">=", bound, &mut params)?);
            }
            if let Some(bound) = upper {
                clauses.push(compare(table, columns, "<", bound, &mut params)?);
            }
        }
    }
    if clauses.is_empty() {
        return Ok(("TRUE".to_string(), params));
    }
    Ok((clauses.join(" AND "), params))
}

fn compare(
    table: &TableSchema,
    columns: &[KeyColumn],
    operator: &str,
    bound: &KeyBound,
    params: &mut Vec<Value>,
) -> Result<String> {
    if bound.0.len() != columns.len() || columns.is_empty() {
        return Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!(
                "a chunk bound has {} values but the key has {} columns; plan the job again",
                bound.0.len(),
                columns.len()
            ),
        });
    }
    let mut bound_params = Vec::with_capacity(columns.len());
    for (column, value) in columns.iter().zip(&bound.0) {
        bound_params.push(key_value_to_param(table, column, value)?);
    }
    if columns.len() == 1 {
        params.push(bound_params.remove(0));
        return Ok(format!(
            "{} {operator} {}",
            columns[0].quoted,
            columns[0].placeholder()
        ));
    }
    // The leading column's own comparison lets the range optimizer use the index
    // (MariaDB does not range-scan row value comparisons).
    let leading_operator = if operator == "<" { "<=" } else { ">=" };
    params.push(bound_params[0].clone());
    params.extend(bound_params);
    let names: Vec<&str> = columns
        .iter()
        .map(|column| column.quoted.as_str())
        .collect();
    let placeholders: Vec<String> = columns.iter().map(KeyColumn::placeholder).collect();
    Ok(format!(
        "{} {leading_operator} {} AND ({}) {operator} ({})",
        columns[0].quoted,
        columns[0].placeholder(),
        names.join(", "),
        placeholders.join(", ")
    ))
}

/// Binds a key bound's value as a parameter for a comparison with `column`.
pub fn key_value_to_param(
    table: &TableSchema,
    column: &KeyColumn,
    value: &KeyValue,
) -> Result<Value> {
    let unusable = |detail: String| ConnectorError::ValueType {
        table: table.name.clone(),
        column: column.name.clone(),
        detail,
    };
    Ok(match (&column.column_type, value) {
        (ColumnType::UInt64 | ColumnType::Bit { .. }, KeyValue::Int(v)) if *v >= 0 => {
            Value::UInt(v.unsigned_abs())
        }
        (ColumnType::UInt64 | ColumnType::Bit { .. }, KeyValue::Text(text)) => Value::UInt(
            text.parse::<u64>()
                .map_err(|_| unusable(format!("key bound {text:?} is not an unsigned integer")))?,
        ),
        (ColumnType::Enum { labels }, KeyValue::Text(label)) => {
            let position = labels
                .iter()
                .position(|candidate| candidate == label)
                .ok_or_else(|| unusable(format!("key bound {label:?} is not an enum label")))?;
            Value::UInt(position as u64 + 1)
        }
        (ColumnType::Set { labels }, KeyValue::Text(members)) => {
            let mut mask = 0u64;
            for member in members.split(',').filter(|member| !member.is_empty()) {
                let position = labels
                    .iter()
                    .position(|candidate| candidate == member)
                    .filter(|position| *position < 64)
                    .ok_or_else(|| unusable(format!("key bound {member:?} is not a set label")))?;
                mask |= 1 << position;
            }
            Value::UInt(mask)
        }
        (ColumnType::Uuid, KeyValue::Text(text)) => Value::Bytes(
            super::values::parse_uuid(text)
                .ok_or_else(|| unusable(format!("key bound {text:?} is not a UUID")))?
                .to_vec(),
        ),
        (_, KeyValue::Int(v)) => Value::Int(*v),
        (_, KeyValue::Real(v)) => Value::Double(*v),
        (_, KeyValue::Text(text)) => Value::Bytes(text.clone().into_bytes()),
        (_, KeyValue::Blob(bytes)) => Value::Bytes(bytes.clone()),
    })
}

/// Converts a stored key value (read with [`KeyColumn::bound_select_expr`]) to a bound;
/// NULL gives `None`. The error says what is wrong with the value.
pub fn key_value_from_mysql(
    column_type: &ColumnType,
    value: Value,
) -> std::result::Result<Option<KeyValue>, String> {
    let unsigned = |v: u64| match i64::try_from(v) {
        Ok(signed) => KeyValue::Int(signed),
        // Zero-padded so text order is numeric order among the values beyond i64.
        Err(_) => KeyValue::Text(format!("{v:020}")),
    };
    Ok(Some(match value {
        Value::NULL => return Ok(None),
        Value::Int(v) => KeyValue::Int(v),
        Value::UInt(v) => unsigned(v),
        Value::Float(v) => KeyValue::Real(f64::from(v)),
        Value::Double(v) => KeyValue::Real(v),
        Value::Bytes(bytes) => match column_type {
            ColumnType::Blob | ColumnType::Uuid => KeyValue::Blob(bytes),
            ColumnType::Bit { .. } => {
                if bytes.len() > 8 {
                    return Err("a bit value is wider than 64 bits".to_string());
                }
                let mut be = [0u8; 8];
                be[8 - bytes.len()..].copy_from_slice(&bytes);
                unsigned(u64::from_be_bytes(be))
            }
            ColumnType::Decimal { .. } => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| "a decimal value is not ASCII text".to_string())?;
                KeyValue::Text(
                    canonical_decimal(&text)
                        .ok_or_else(|| format!("{text:?} is not a decimal number"))?,
                )
            }
            _ => KeyValue::Text(
                String::from_utf8(bytes)
                    .map_err(|_| "a key holds text that is not valid UTF-8".to_string())?,
            ),
        },
        Value::Date(year, month, day, hour, minute, second, micros) => match column_type {
            ColumnType::Date => KeyValue::Text(format_date(year, month, day)),
            _ => KeyValue::Text(format_datetime(
                year, month, day, hour, minute, second, micros,
            )),
        },
        Value::Time(negative, days, hours, minutes, seconds, micros) => KeyValue::Text(
            format_time_of_day_or_span(negative, days, hours, minutes, seconds, micros),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use ferry_model::schema::{ColumnSchema, TableName};

    use super::*;

    fn table(columns: &[(&str, ColumnType)]) -> TableSchema {
        TableSchema {
            name: TableName {
                schema: Some("db".into()),
                name: "t".into(),
            },
            columns: columns
                .iter()
                .map(|(name, column_type)| ColumnSchema {
                    name: (*name).to_string(),
                    declared_type: String::new(),
                    column_type: column_type.clone(),
                    nullable: false,
                })
                .collect(),
            primary_key: columns
                .iter()
                .map(|(name, _)| (*name).to_string())
                .collect(),
            has_rowid: false,
            source_kind: "mysql".into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        }
    }

    #[test]
    fn a_hash_key_compares_the_bucket_and_orders_nothing() {
        let schema = table(&[("note", ColumnType::Text)]);
        let key = SplitKey::Hash {
            column: "note".into(),
            buckets: 8,
            bucketing: Bucketing::EngineHash,
        };
        let columns = key_columns(&schema, &key).expect("columns");
        assert!(order_by(&columns).is_empty());
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(3)])),
            upper: Some(KeyBound(vec![KeyValue::Int(4)])),
        };
        let (predicate, params) =
            range_predicate(&schema, &columns, &key, &range).expect("predicate");
        let bucket = "(CRC32(COALESCE(CONVERT(`note` USING utf8mb4), '')) % 8)";
        assert_eq!(predicate, format!("{bucket} >= ? AND {bucket} < ?"));
        assert_eq!(params, vec![Value::Int(3), Value::Int(4)]);
        let missing = SplitKey::Hash {
            column: "gone".into(),
            buckets: 8,
            bucketing: Bucketing::EngineHash,
        };
        assert!(key_columns(&schema, &missing).is_err());
        let modulo = SplitKey::Hash {
            column: "note".into(),
            buckets: 8,
            bucketing: Bucketing::Modulo,
        };
        let columns = key_columns(&schema, &modulo).expect("columns");
        assert_eq!(columns[0].quoted, "((COALESCE(`note`, 0) % 8 + 8) % 8)");
    }

    #[test]
    fn identifiers_and_strings_are_quoted() {
        assert_eq!(quote_ident("we`ird name"), "`we``ird name`");
        assert_eq!(quote_table("d b", "t"), "`d b`.`t`");
        assert_eq!(quote_string("it's a \\ \0 \n"), "'it\\'s a \\\\ \\0 \\n'");
    }

    #[test]
    fn composite_interval_binds_each_column_by_type() {
        let decimal = ColumnType::Decimal {
            precision: Some(10),
            scale: Some(2),
        };
        let schema = table(&[("a", ColumnType::Text), ("b", decimal)]);
        let key = SplitKey::Columns {
            names: vec!["a".into(), "b".into()],
            nullable: false,
            single_integer: false,
        };
        let columns = key_columns(&schema, &key).expect("columns");
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![
                KeyValue::Text("x".into()),
                KeyValue::Text("1.5".into()),
            ])),
            upper: None,
        };
        let (sql, params) = range_predicate(&schema, &columns, &key, &range).expect("predicate");
        assert_eq!(
            sql,
            "`a` >= ? AND (`a`, `b`) >= (?, CAST(? AS DECIMAL(10,2)))"
        );
        assert_eq!(params.len(), 3);
    }

    #[test]
    fn unsigned_keys_beyond_i64_round_trip_through_padded_text() {
        let column_type = ColumnType::UInt64;
        let bound = key_value_from_mysql(&column_type, Value::UInt(u64::MAX))
            .expect("valid")
            .expect("not null");
        assert_eq!(bound, KeyValue::Text("18446744073709551615".into()));
        let small = key_value_from_mysql(&column_type, Value::UInt(9_223_372_036_854_775_808))
            .expect("valid")
            .expect("not null");
        assert_eq!(small, KeyValue::Text("09223372036854775808".into()));
        let schema = table(&[("u", column_type)]);
        let columns = key_columns(
            &schema,
            &SplitKey::Columns {
                names: vec!["u".into()],
                nullable: false,
                single_integer: false,
            },
        )
        .expect("columns");
        assert_eq!(
            key_value_to_param(&schema, &columns[0], &small).expect("binds"),
            Value::UInt(9_223_372_036_854_775_808)
        );
    }

    #[test]
    fn enum_bounds_are_bound_as_their_index() {
        let schema = table(&[(
            "e",
            ColumnType::Enum {
                labels: vec!["b".into(), "a".into()],
            },
        )]);
        let columns = key_columns(
            &schema,
            &SplitKey::Columns {
                names: vec!["e".into()],
                nullable: false,
                single_integer: false,
            },
        )
        .expect("columns");
        assert_eq!(columns[0].bound_select_expr(), "(`e` + 0)");
        assert_eq!(
            key_value_to_param(&schema, &columns[0], &KeyValue::Text("a".into())).expect("binds"),
            Value::UInt(2)
        );
    }
}
