//! SQL text for PostgreSQL: identifier and literal quoting, key expressions and range
//! predicates.
//!
//! `COPY (SELECT ...)` takes no bind parameters, so key bounds are written as quoted
//! literals with an explicit cast: integers as `'5'::int8` (compared across integer
//! widths without a narrowing cast), other values as their text cast back to the column's
//! own type, `'2024-01-01'::text::date`. Every ferry session sets
//! `standard_conforming_strings = on`, so doubling single quotes is the only escaping.
//!
//! Text keys are compared bytewise, as [`KeyValue::Text`] is: a key column whose
//! collation is not bytewise (`C`, `POSIX`, `C.UTF-8`, `ucs_basic`) is compared and
//! ordered `COLLATE "C"` on both sides, so a range selects the same rows in the source
//! and in a target whose default collation differs.

use ferry_model::key::{Bucketing, ChunkRange, KeyBound, KeyValue};
use ferry_model::schema::TableName;

/// Quotes an identifier: double quotes, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a schema-qualified table name.
pub fn quote_table(table: &TableName) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&table.name)),
        None => quote_ident(&table.name),
    }
}

/// Quotes a string literal (standard-conforming strings).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `text` as an escape string constant (`E'...'`): read the same whatever
/// `standard_conforming_strings` says, for statements sent as text with their values.
pub fn escaped_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A split key column as one table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// The column's name.
    pub name: String,
    /// The column's type as `format_type` prints it, for casting text bounds back.
    pub cast_type: String,
    /// Whether the column is an integer (its bounds are `KeyValue::Int`).
    pub integer: bool,
    /// Whether comparisons need `COLLATE "C"` to be bytewise.
    pub needs_c_collation: bool,
    /// For a hash key (`SplitKey::Hash`): the number of buckets and how a row's bucket
    /// is computed; the key is then the column's bucket number, not the column.
    pub hash_buckets: Option<(u32, Bucketing)>,
}

impl KeyColumn {
    /// The hash key of `column` over `buckets`.
    pub fn hash_bucket(column: KeyColumn, buckets: u32, bucketing: Bucketing) -> KeyColumn {
        KeyColumn {
            integer: true,
            needs_c_collation: false,
            hash_buckets: Some((buckets, bucketing)),
            ..column
        }
    }

    /// The expression that orders and compares the column.
    pub fn expr(&self) -> String {
        if let Some((buckets, bucketing)) = self.hash_buckets {
            return bucket_expr(&self.name, buckets, bucketing);
        }
        if self.needs_c_collation {
            format!("({} COLLATE \"C\")", quote_ident(&self.name))
        } else {
            quote_ident(&self.name)
        }
    }

    /// The expression that reads a bound from the column: `int8` for integers, else text.
    pub fn bound_expr(&self) -> String {
        if self.hash_buckets.is_some() {
            return self.expr();
        }
        if self.integer {
            format!("{}::int8", quote_ident(&self.name))
        } else {
            format!("{}::text", quote_ident(&self.name))
        }
    }

    fn literal(&self, value: &KeyValue) -> String {
        match value {
            KeyValue::Int(integer) => format!("'{integer}'::int8"),
            KeyValue::Real(real) => format!("'{real:?}'::float8"),
            KeyValue::Text(text) => format!("{}::text::{}", quote_literal(text), self.cast_type),
            KeyValue::Blob(bytes) => {
                format!(
                    "{}::bytea",
                    quote_literal(&super::binary::format_bytea_hex(bytes))
                )
            }
        }
    }
}

/// The bucket of `column` among `buckets`, reduced to `0..buckets` without overflow.
/// [`Bucketing::EngineHash`]: `hashtextextended` (PostgreSQL's stable hash, the one hash
/// partitioning relies on, seed 0) of the column's text, NULL as the empty text; source
/// and target compute it alike for integer, text and uuid columns, whose text does not
/// depend on session settings. [`Bucketing::Modulo`]: the integer column's value itself,
/// NULL as 0, as MySQL computes it too (`%` truncates toward zero in both).
pub fn bucket_expr(column: &str, buckets: u32, bucketing: Bucketing) -> String {
    match bucketing {
        Bucketing::EngineHash => format!(
            "((pg_catalog.hashtextextended(coalesce({}::text, ''), 0) % {buckets} + {buckets}) % {buckets})",
            quote_ident(column)
        ),
        Bucketing::Modulo => format!(
            "((coalesce({}, 0) % {buckets} + {buckets}) % {buckets})",
            quote_ident(column)
        ),
    }
}

/// `ORDER BY` list of the key; empty for a hash key (a chunk is one bucket: sorting it by
/// its bucket would order nothing and cost a sort).
pub fn order_by(keys: &[KeyColumn]) -> String {
    keys.iter()
        .filter(|key| key.hash_buckets.is_none())
        .map(KeyColumn::expr)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A WHERE condition (without the keyword) selecting the rows of `range`. `nullable`
/// says whether any key column may hold NULL.
pub fn range_predicate(
    keys: &[KeyColumn],
    nullable: bool,
    range: &ChunkRange,
) -> Result<String, String> {
    let mut clauses = Vec::new();
    match range {
        ChunkRange::WholeTable => {}
        ChunkRange::NullKeys => {
            if keys.is_empty() {
                return Err("a NULL-keys range needs a key".to_string());
            }
            let any_null: Vec<String> = keys
                .iter()
                .map(|key| format!("{} IS NULL", quote_ident(&key.name)))
                .collect();
            clauses.push(format!("({})", any_null.join(" OR ")));
        }
        ChunkRange::Interval { lower, upper } => {
            if keys.is_empty() && (lower.is_some() || upper.is_some()) {
                return Err("a bounded range needs a key".to_string());
            }
            // A row comparison does not exclude NULLs past its first column:
            // (1, NULL) >= (0, 5) is true. Exclude them explicitly.
            if nullable {
                for key in keys {
                    clauses.push(format!("{} IS NOT NULL", quote_ident(&key.name)));
                }
            }
            if let Some(bound) = lower {
                clauses.push(compare(keys, ">=", bound)?);
            }
            if let Some(bound) = upper {
                clauses.push(compare(keys, "<", bound)?);
            }
        }
    }
    if clauses.is_empty() {
        return Ok("true".to_string());
    }
    Ok(clauses.join(" AND "))
}

/// A condition (without the keyword) selecting the rows whose key (without NULLs) is
/// below `bound`.
pub fn below(keys: &[KeyColumn], bound: &KeyBound) -> Result<String, String> {
    compare(keys, "<", bound)
}

fn compare(keys: &[KeyColumn], operator: &str, bound: &KeyBound) -> Result<String, String> {
    if bound.0.len() != keys.len() {
        return Err(format!(
            "a bound of {} values for a key of {} columns",
            bound.0.len(),
            keys.len()
        ));
    }
    let literals: Vec<String> = keys
        .iter()
        .zip(&bound.0)
        .map(|(key, value)| key.literal(value))
        .collect();
    if keys.len() == 1 {
        return Ok(format!("{} {operator} {}", keys[0].expr(), literals[0]));
    }
    let exprs: Vec<String> = keys.iter().map(KeyColumn::expr).collect();
    Ok(format!(
        "({}) {operator} ({})",
        exprs.join(", "),
        literals.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, cast_type: &str, integer: bool, needs_c_collation: bool) -> KeyColumn {
        KeyColumn {
            name: name.to_string(),
            cast_type: cast_type.to_string(),
            integer,
            needs_c_collation,
            hash_buckets: None,
        }
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("Mixed \"Case\""), "\"Mixed \"\"Case\"\"\"");
        assert_eq!(quote_literal("it's \\ fine"), "'it''s \\ fine'");
        let table = TableName {
            schema: Some("s p".into()),
            name: "t".into(),
        };
        assert_eq!(quote_table(&table), "\"s p\".\"t\"");
    }

    #[test]
    fn a_hash_key_selects_one_bucket_and_orders_nothing() {
        let keys = vec![KeyColumn::hash_bucket(
            key("id", "bigint", true, false),
            8,
            Bucketing::EngineHash,
        )];
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(3)])),
            upper: Some(KeyBound(vec![KeyValue::Int(4)])),
        };
        let bucket = "((pg_catalog.hashtextextended(coalesce(\"id\"::text, ''), 0) % 8 + 8) % 8)";
        assert_eq!(
            range_predicate(&keys, false, &range).unwrap(),
            format!("{bucket} >= '3'::int8 AND {bucket} < '4'::int8")
        );
        assert_eq!(order_by(&keys), "");
        let modulo = vec![KeyColumn::hash_bucket(
            key("id", "bigint", true, false),
            8,
            Bucketing::Modulo,
        )];
        let bucket = "((coalesce(\"id\", 0) % 8 + 8) % 8)";
        assert_eq!(
            range_predicate(&modulo, false, &range).unwrap(),
            format!("{bucket} >= '3'::int8 AND {bucket} < '4'::int8")
        );
    }

    #[test]
    fn composite_nullable_interval_casts_text_bounds_back() {
        let keys = vec![
            key("name", "character varying(20)", false, true),
            key("n", "integer", true, false),
        ];
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![
                KeyValue::Text("o'k".into()),
                KeyValue::Int(-5),
            ])),
            upper: None,
        };
        assert_eq!(
            range_predicate(&keys, true, &range).unwrap(),
            "\"name\" IS NOT NULL AND \"n\" IS NOT NULL AND ((\"name\" COLLATE \"C\"), \"n\") >= \
             ('o''k'::text::character varying(20), '-5'::int8)"
        );
        assert_eq!(
            range_predicate(&keys, true, &ChunkRange::NullKeys).unwrap(),
            "(\"name\" IS NULL OR \"n\" IS NULL)"
        );
        assert_eq!(
            range_predicate(&[], false, &ChunkRange::WholeTable).unwrap(),
            "true"
        );
    }

    #[test]
    fn single_key_bounds_are_half_open() {
        let keys = vec![key("id", "bigint", true, false)];
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(10)])),
            upper: Some(KeyBound(vec![KeyValue::Int(20)])),
        };
        assert_eq!(
            range_predicate(&keys, false, &range).unwrap(),
            "\"id\" >= '10'::int8 AND \"id\" < '20'::int8"
        );
        let mismatched = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(1), KeyValue::Int(2)])),
            upper: None,
        };
        assert!(range_predicate(&keys, false, &mismatched).is_err());
    }
}
