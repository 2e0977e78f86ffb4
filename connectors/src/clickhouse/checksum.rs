//! The checksum between two ClickHouse servers computed inside them: each side runs
//! `SELECT count(), sum(cityHash64(<the row's columns>))` over the chunk's rows, and
//! ferry compares the two answers. The servers scan and hash their columns far faster
//! than ferry can read a partition back over HTTP and hash it (measured in
//! `docs/clickhouse.md`), and the pass-through no longer hashes each row in ferry.
//!
//! Both sides must compute the same number for the same row, also when the two servers
//! run different versions. `cityHash64` is a fixed function (ClickHouse keeps CityHash
//! 1.0.2 for compatibility: sharding keys rely on it), and every column goes in through
//! a form whose bytes do not depend on the version: numbers, dates, strings and arrays
//! of them as they are, a UUID and a `LowCardinality(String)` as text, an Enum as its
//! number, a Decimal of up to 18 digits as its integer part and its fraction scaled to
//! an integer, a Nullable as a null flag and its value (the type's default under a
//! NULL). A table with any other column
//! (`Decimal` over 18 digits, `Tuple`, `Map`, arrays of other types) is verified by
//! reading the target back and hashing its `RowBinary` bytes, as before.

use ferry_model::checksum::RangeChecksum;
use ferry_model::schema::TableName;

use super::http::Endpoint;
use super::query_error;
use super::sql::ident;
use super::types::ChType;
use crate::error::{ConnectorError, Failure, Result};

/// The checksum's method: compared only with itself.
pub const SQL_CHECKSUM_METHOD: &str = "clickhouse-sql-cityhash64-v1";

/// The arguments of `cityHash64` for one row of `columns` (name, type), or `None` when
/// a column has no version-stable form.
pub fn row_hash_arguments(columns: &[(&str, &ChType)]) -> Option<String> {
    let mut arguments = Vec::new();
    for (name, column_type) in columns {
        arguments.extend(column_arguments(&ident(name), column_type)?);
    }
    (!arguments.is_empty()).then(|| arguments.join(", "))
}

/// `count()` and the wrapping sum of the row hashes over the rows of `table` (qualified)
/// that `condition` keeps, answered as TSV.
pub fn statement(arguments: &str, table: &str, condition: &str) -> String {
    format!(
        "SELECT count(), sum(cityHash64({arguments})) FROM {table} WHERE {condition} FORMAT TSV"
    )
}

/// Runs a [`statement`] and reads its answer.
pub async fn query(
    endpoint: &Endpoint,
    statement: &str,
    table: &TableName,
) -> Result<RangeChecksum> {
    let rows = endpoint
        .query_rows(statement)
        .await
        .map_err(query_error("checksum chunk", table))?;
    let parsed = rows.first().and_then(|row| {
        Some(RangeChecksum {
            rows: row.first()?.parse().ok()?,
            sum: u128::from(row.get(1)?.parse::<u64>().ok()?),
        })
    });
    parsed.ok_or_else(|| ConnectorError::Query {
        operation: "checksum chunk",
        table: table.clone(),
        source: format!("the server answered {rows:?} to count() and sum(cityHash64(...))").into(),
        failure: Failure::Transient,
    })
}

fn column_arguments(expression: &str, column_type: &ChType) -> Option<Vec<String>> {
    Some(match column_type {
        plain if is_plain(plain) => vec![expression.to_string()],
        ChType::FixedString(_) | ChType::DateTime64(_) => vec![expression.to_string()],
        ChType::Bool => vec![format!("toUInt8({expression})")],
        ChType::Uuid => vec![format!("toString({expression})")],
        ChType::Enum(_, wide) => vec![format!(
            "{}({expression})",
            if *wide { "toInt16" } else { "toInt8" }
        )],
        ChType::Decimal(precision, scale) if *precision <= 18 => vec![
            format!("toInt64({expression})"),
            format!(
                "toInt64(({expression} - toInt64({expression})) * {})",
                10u64.pow(*scale)
            ),
        ],
        ChType::Nullable(inner) => {
            // Not `assumeNotNull` alone: under a NULL a server keeps whatever value the
            // insert computed, which a copy does not carry.
            let mut arguments = vec![format!("isNull({expression})")];
            arguments.extend(column_arguments(
                &format!(
                    "ifNull({expression}, defaultValueOfArgumentType(assumeNotNull({expression})))"
                ),
                inner,
            )?);
            arguments
        }
        ChType::LowCardinality(inner) if matches!(**inner, ChType::String) => {
            vec![format!("toString({expression})")]
        }
        ChType::Array(inner) if is_plain(inner) => vec![expression.to_string()],
        _ => return None,
    })
}

/// A type hashed as it is, alone or inside an array.
fn is_plain(column_type: &ChType) -> bool {
    matches!(
        column_type,
        ChType::UInt8
            | ChType::UInt16
            | ChType::UInt32
            | ChType::UInt64
            | ChType::Int8
            | ChType::Int16
            | ChType::Int32
            | ChType::Int64
            | ChType::Float32
            | ChType::Float64
            | ChType::String
            | ChType::Date
            | ChType::DateTime
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(declared: &str) -> ChType {
        ChType::parse(declared).expect(declared)
    }

    #[test]
    fn each_carried_type_has_a_stable_form_or_none() {
        let cases = [
            ("UInt64", Some("`c`")),
            ("UUID", Some("toString(`c`)")),
            ("Enum8('a' = 1)", Some("toInt8(`c`)")),
            ("Enum16('a' = 1000)", Some("toInt16(`c`)")),
            (
                "Decimal(12, 2)",
                Some("toInt64(`c`), toInt64((`c` - toInt64(`c`)) * 100)"),
            ),
            (
                "Nullable(Int32)",
                Some("isNull(`c`), ifNull(`c`, defaultValueOfArgumentType(assumeNotNull(`c`)))"),
            ),
            (
                "Nullable(Decimal(9, 1))",
                Some(
                    "isNull(`c`), toInt64(ifNull(`c`, defaultValueOfArgumentType(assumeNotNull(`c`)))), \
                     toInt64((ifNull(`c`, defaultValueOfArgumentType(assumeNotNull(`c`))) - \
                     toInt64(ifNull(`c`, defaultValueOfArgumentType(assumeNotNull(`c`))))) * 10)",
                ),
            ),
            ("LowCardinality(String)", Some("toString(`c`)")),
            ("Array(UInt16)", Some("`c`")),
            ("Decimal(38, 10)", None),
            ("Array(Nullable(String))", None),
            ("Tuple(UInt8, String)", None),
        ];
        for (declared, expected) in cases {
            let column_type = parsed(declared);
            assert_eq!(
                row_hash_arguments(&[("c", &column_type)]).as_deref(),
                expected,
                "{declared}"
            );
        }
    }

    #[test]
    fn one_column_without_a_stable_form_rules_out_the_table() {
        let (id, tuple) = (parsed("UInt64"), parsed("Tuple(UInt8, String)"));
        assert_eq!(row_hash_arguments(&[("id", &id), ("t", &tuple)]), None);
        assert_eq!(
            statement(
                &row_hash_arguments(&[("id", &id)]).expect("plain"),
                "`d`.`t`",
                "1"
            ),
            "SELECT count(), sum(cityHash64(`id`)) FROM `d`.`t` WHERE 1 FORMAT TSV"
        );
    }
}
