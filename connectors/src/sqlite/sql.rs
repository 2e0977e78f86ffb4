//! SQL text for SQLite: identifier quoting, key expressions and range predicates.

use ferry_model::key::{ChunkRange, KeyBound, KeyValue, SplitKey};
use ferry_model::schema::{TableName, TableSchema};
use rusqlite::types::Value;

use crate::error::{ConnectorError, Result};

/// Quotes an identifier for SQLite: double quotes, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a table name (SQLite tables live in `main` unless attached).
pub fn quote_table(table: &TableName) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&table.name)),
        None => quote_ident(&table.name),
    }
}

/// Returns the name under which the implicit rowid is reachable: `rowid`, `_rowid_` or
/// `oid`, whichever no column shadows.
pub fn rowid_alias(table: &TableSchema) -> Result<&'static str> {
    ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|alias| {
            !table
                .columns
                .iter()
                .any(|column| column.name.eq_ignore_ascii_case(alias))
        })
        .ok_or_else(|| ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: "columns named rowid, _rowid_ and oid all hide the rowid; add a primary key"
                .to_string(),
        })
}

/// The SQL expressions of the split key columns, in key order.
pub fn key_exprs(table: &TableSchema, key: &SplitKey) -> Result<Vec<String>> {
    match key {
        SplitKey::Columns { names, .. } => Ok(names.iter().map(|name| quote_ident(name)).collect()),
        SplitKey::Rowid => Ok(vec![rowid_alias(table)?.to_string()]),
        SplitKey::Hash { .. } => Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail:
                "hash buckets (tables.split) are computed by PostgreSQL and MySQL only; remove the \
                     table's tables.split entry"
                    .to_string(),
        }),
        SplitKey::None => Ok(Vec::new()),
    }
}

/// A WHERE clause (without the keyword) and its parameters for the rows of `range`.
pub fn range_predicate(
    key_exprs: &[String],
    key: &SplitKey,
    range: &ChunkRange,
) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    match range {
        ChunkRange::WholeTable => {}
        ChunkRange::NullKeys => {
            let any_null: Vec<String> = key_exprs
                .iter()
                .map(|expr| format!("{expr} IS NULL"))
                .collect();
            clauses.push(format!("({})", any_null.join(" OR ")));
        }
        ChunkRange::Interval { lower, upper } => {
            if key.nullable() {
                // A row value comparison does not exclude NULLs past its first column:
                // (1, NULL) >= (0, 5) is true. Exclude them explicitly.
                for expr in key_exprs {
                    clauses.push(format!("{expr} IS NOT NULL"));
                }
            }
            if let Some(bound) = lower {
                clauses.push(compare(key_exprs, ">=", bound, &mut params));
            }
            if let Some(bound) = upper {
                clauses.push(compare(key_exprs, "<", bound, &mut params));
            }
        }
    }
    if clauses.is_empty() {
        return ("1".to_string(), params);
    }
    (clauses.join(" AND "), params)
}

fn compare(
    key_exprs: &[String],
    operator: &str,
    bound: &KeyBound,
    params: &mut Vec<Value>,
) -> String {
    params.extend(bound.0.iter().map(key_value_to_sql));
    let placeholders = vec!["?"; bound.0.len()].join(", ");
    if key_exprs.len() == 1 {
        format!("{} {operator} {placeholders}", key_exprs[0])
    } else {
        format!("({}) {operator} ({placeholders})", key_exprs.join(", "))
    }
}

/// Converts a key value to a SQLite parameter.
pub fn key_value_to_sql(value: &KeyValue) -> Value {
    match value {
        KeyValue::Int(v) => Value::Integer(*v),
        KeyValue::Real(v) => Value::Real(*v),
        KeyValue::Text(v) => Value::Text(v.clone()),
        KeyValue::Blob(v) => Value::Blob(v.clone()),
    }
}

/// Converts a stored key value to a bound value; NULL gives `None`. Text that is not
/// valid UTF-8 cannot be a bound (as a blob it would sort differently) and is an error.
pub fn key_value_from_sql(
    value: rusqlite::types::ValueRef<'_>,
) -> std::result::Result<Option<KeyValue>, std::str::Utf8Error> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => None,
        ValueRef::Integer(v) => Some(KeyValue::Int(v)),
        ValueRef::Real(v) => Some(KeyValue::Real(v)),
        ValueRef::Text(v) => Some(KeyValue::Text(std::str::from_utf8(v)?.to_string())),
        ValueRef::Blob(v) => Some(KeyValue::Blob(v.to_vec())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_with_quotes_are_doubled() {
        assert_eq!(quote_ident("quote\"d"), "\"quote\"\"d\"");
        assert_eq!(quote_ident("audit log"), "\"audit log\"");
    }

    #[test]
    fn nullable_composite_interval_excludes_nulls_explicitly() {
        let key = SplitKey::Columns {
            names: vec!["a".into(), "b".into()],
            nullable: true,
            single_integer: false,
        };
        let exprs = vec!["\"a\"".to_string(), "\"b\"".to_string()];
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(1), KeyValue::Text("x".into())])),
            upper: None,
        };
        let (sql, params) = range_predicate(&exprs, &key, &range);
        assert_eq!(
            sql,
            "\"a\" IS NOT NULL AND \"b\" IS NOT NULL AND (\"a\", \"b\") >= (?, ?)"
        );
        assert_eq!(params.len(), 2);
    }
}
