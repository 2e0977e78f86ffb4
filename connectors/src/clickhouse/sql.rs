//! SQL text: identifiers, literals, the predicates of a chunk (its partition and key
//! range), staging names, and the rewrite of a source table's `CREATE TABLE`.

use ferry_model::key::{ChunkRange, KeyBound, KeyValue, SplitKey};
use ferry_model::schema::TableSchema;
use ferry_model::spec::{EngineRule, engine_name};

/// `` `name` `` with backquotes and backslashes escaped.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// `'text'` with quotes and backslashes escaped.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `` `db`.`table` ``.
pub fn qualified(database: &str, table: &str) -> String {
    format!("{}.{}", ident(database), ident(table))
}

/// A split key column as compared in ranges: dates and times as their numbers, so a
/// bound is an integer on both sides.
pub fn key_expression(name: &str, declared_type: &str) -> String {
    let base = declared_type
        .trim_start_matches("LowCardinality(")
        .trim_start_matches("Nullable(");
    if base.starts_with("DateTime64") {
        format!("toInt64(toUnixTimestamp64Micro({}))", ident(name))
    } else if base.starts_with("DateTime") {
        format!("toInt64(toUInt32({}))", ident(name))
    } else if base.starts_with("Date") {
        format!("toInt64(toUInt16({}))", ident(name))
    } else {
        ident(name)
    }
}

fn value_sql(value: &KeyValue) -> String {
    match value {
        KeyValue::Int(v) => v.to_string(),
        KeyValue::Real(v) => format!("{v:?}"),
        KeyValue::Text(text) => literal(text),
        KeyValue::Blob(bytes) => literal(&String::from_utf8_lossy(bytes)),
    }
}

fn tuple_sql(items: &[String]) -> String {
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("tuple({})", items.join(", "))
    }
}

fn bound_sql(bound: &KeyBound) -> String {
    tuple_sql(&bound.0.iter().map(value_sql).collect::<Vec<_>>())
}

/// The key columns' expressions, for `table`.
pub fn key_expressions(table: &TableSchema, key: &SplitKey) -> Vec<String> {
    match key {
        SplitKey::Columns { names, .. } => names
            .iter()
            .map(|name| {
                let declared = table
                    .column(name)
                    .map_or("", |column| column.declared_type.as_str());
                key_expression(name, declared)
            })
            .collect(),
        // The planner gives a hash key only to PostgreSQL → PostgreSQL tables.
        SplitKey::Rowid | SplitKey::Hash { .. } | SplitKey::None => Vec::new(),
    }
}

/// The chunk's rows as a predicate that is never NULL (so `NOT` of it selects exactly
/// the other rows); `None` for every row.
pub fn range_predicate(
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    target_columns: Option<&[(String, String)]>,
) -> Option<String> {
    let names = match key {
        // An unbounded interval of a key without NULLs is every row: the chunk owns whole
        // partitions, and is swapped in without rebuilding them.
        SplitKey::Columns {
            nullable: false, ..
        } if matches!(
            range,
            ChunkRange::Interval {
                lower: None,
                upper: None
            }
        ) =>
        {
            return None;
        }
        SplitKey::Columns { names, .. } => names.clone(),
        _ => return None,
    };
    // On a target of another engine the key columns have the target's types.
    let expressions: Vec<String> = names
        .iter()
        .map(|name| {
            let declared = target_columns
                .and_then(|columns| {
                    columns
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, t)| t.clone())
                })
                .or_else(|| {
                    table
                        .column(name)
                        .map(|column| column.declared_type.clone())
                })
                .unwrap_or_default();
            key_expression(name, &declared)
        })
        .collect();
    match range {
        ChunkRange::WholeTable => None,
        ChunkRange::NullKeys => Some(format!(
            "({})",
            expressions
                .iter()
                .map(|e| format!("isNull({e})"))
                .collect::<Vec<_>>()
                .join(" OR ")
        )),
        ChunkRange::Interval { lower, upper } => {
            let row = tuple_sql(&expressions);
            let mut parts: Vec<String> = expressions
                .iter()
                .map(|e| format!("isNotNull({e})"))
                .collect();
            if let Some(lower) = lower {
                parts.push(format!("{row} >= {}", bound_sql(lower)));
            }
            if let Some(upper) = upper {
                parts.push(format!("{row} < {}", bound_sql(upper)));
            }
            if parts.is_empty() {
                return Some("1".into());
            }
            Some(format!("ifNull({}, 0)", parts.join(" AND ")))
        }
    }
}

/// The `WHERE` clause of a chunk: its partition and its range.
pub fn chunk_where(
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    target_columns: Option<&[(String, String)]>,
) -> String {
    let mut parts = Vec::new();
    if let Some(partition) = &table.partition {
        parts.push(format!("_partition_id = {}", literal(partition)));
    }
    if let Some(predicate) = range_predicate(table, key, range, target_columns) {
        parts.push(predicate);
    }
    if parts.is_empty() {
        "1".to_string()
    } else {
        parts.join(" AND ")
    }
}

/// A condition that is always true but reads the table's first column: ClickHouse
/// 18.16 cannot evaluate `_partition_id` in a query that reads no real column.
pub fn reads_a_column(table: &TableSchema) -> String {
    table.columns.first().map_or_else(
        || "1".to_string(),
        |column| format!("NOT ignore({})", ident(&column.name)),
    )
}

/// The prefix of every staging table of a chunk: `_ferry_stg_{run}_{chunk}_`.
pub fn staging_prefix(chunk_tag: &str) -> String {
    // chunk_tag is `ferry:{run8}:{chunk}:`
    let inner: Vec<&str> = chunk_tag.split(':').collect();
    let run = inner.get(1).copied().unwrap_or("0");
    let chunk = inner.get(2).copied().unwrap_or("0");
    format!("_ferry_stg_{run}_{chunk}_")
}

/// The 64-bit FNV-1a of a text, as hex: short names for per-table objects.
pub fn short_hash(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Finds the end of `ENGINE = X(...)` in a `CREATE TABLE` statement: the first clause
/// keyword at parenthesis depth 0 after it.
fn engine_span(ddl: &str) -> Option<(usize, usize)> {
    let start = ddl.find(" ENGINE = ")? + " ENGINE = ".len();
    let bytes = ddl.as_bytes();
    let (mut depth, mut quoted) = (0i32, false);
    let mut index = start;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' if quoted => index += 1,
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b' ' if !quoted && depth == 0 => {
                let rest = &ddl[index + 1..];
                if [
                    "PARTITION BY",
                    "ORDER BY",
                    "PRIMARY KEY",
                    "SAMPLE BY",
                    "SETTINGS",
                    "TTL",
                ]
                .iter()
                .any(|keyword| rest.starts_with(keyword))
                {
                    return Some((start, index));
                }
            }
            _ => {}
        }
        index += 1;
    }
    Some((start, bytes.len()))
}

/// The target's `CREATE TABLE` from the source's: the target's name, `ON CLUSTER`, and
/// the engine rewritten by the first rule naming the source's engine. Errors with why
/// when the statement cannot be rewritten or its engine cannot take partitions.
pub fn rewrite_ddl(
    ddl: &str,
    database: &str,
    table: &str,
    on_cluster: Option<&str>,
    rules: &[EngineRule],
) -> Result<String, String> {
    let open = ddl
        .find('(')
        .ok_or_else(|| "the source's CREATE TABLE has no column list".to_string())?;
    let (engine_start, engine_end) =
        engine_span(ddl).ok_or_else(|| "the source's CREATE TABLE names no ENGINE".to_string())?;
    let columns = &ddl[open..engine_start - " ENGINE = ".len()];
    let source_engine = &ddl[engine_start..engine_end];
    let name = engine_name(source_engine);
    let engine = match rules.iter().find(|rule| rule.from == name) {
        Some(rule) => rule
            .to
            .replace("{database}", database)
            .replace("{table}", table),
        None => source_engine.to_string(),
    };
    if !engine_name(&engine).ends_with("MergeTree") {
        return Err(format!(
            "its engine {name} is not of the MergeTree family, whose partitions ferry swaps \
             in; add a rule under target.clickhouse.engines, e.g. {name}: MergeTree ORDER BY ..."
        ));
    }
    let cluster = on_cluster
        .map(|cluster| format!(" ON CLUSTER {}", ident(cluster)))
        .unwrap_or_default();
    Ok(format!(
        "CREATE TABLE {}{cluster} {columns} ENGINE = {engine}{}",
        qualified(database, table),
        &ddl[engine_end..]
    ))
}

/// Unescapes one field of ClickHouse's TabSeparated output.
pub fn tsv_unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_the_engine_and_keeps_the_rest() {
        let ddl = "CREATE TABLE src.events ( d Date,  id UInt64) ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY id SETTINGS index_granularity = 8192";
        let rules = vec![EngineRule {
            from: "MergeTree".into(),
            to: "ReplicatedMergeTree('/t/{shard}/{database}/{table}', '{replica}')".into(),
        }];
        let out = rewrite_ddl(ddl, "dst", "events", Some("c1"), &rules).unwrap_or_default();
        assert_eq!(
            out,
            "CREATE TABLE `dst`.`events` ON CLUSTER `c1` ( d Date,  id UInt64) ENGINE = ReplicatedMergeTree('/t/{shard}/dst/events', '{replica}') PARTITION BY toYYYYMM(d) ORDER BY id SETTINGS index_granularity = 8192"
        );
        let log = "CREATE TABLE src.l ( a UInt8) ENGINE = Log";
        assert!(rewrite_ddl(log, "dst", "l", None, &[]).is_err());
    }

    #[test]
    fn an_unbounded_range_of_a_key_without_nulls_is_every_row() {
        let table = TableSchema {
            name: ferry_model::schema::TableName::bare("t"),
            columns: vec![ferry_model::schema::ColumnSchema {
                name: "id".into(),
                declared_type: "UInt64".into(),
                column_type: ferry_model::schema::ColumnType::UInt64,
                nullable: false,
            }],
            primary_key: Vec::new(),
            has_rowid: false,
            source_kind: "clickhouse".into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: vec!["id".into()],
        };
        let key = |nullable| SplitKey::Columns {
            names: vec!["id".into()],
            nullable,
            single_integer: false,
        };
        let all = ChunkRange::Interval {
            lower: None,
            upper: None,
        };
        assert_eq!(range_predicate(&table, &key(false), &all, None), None);
        assert_eq!(
            range_predicate(&table, &key(true), &all, None).as_deref(),
            Some("ifNull(isNotNull(`id`), 0)")
        );
        let upper = ChunkRange::Interval {
            lower: None,
            upper: Some(KeyBound(vec![KeyValue::Int(5)])),
        };
        assert_eq!(
            range_predicate(&table, &key(false), &upper, None).as_deref(),
            Some("ifNull(isNotNull(`id`) AND `id` < 5, 0)")
        );
    }

    #[test]
    fn staging_names_follow_the_chunk_tag() {
        assert_eq!(
            staging_prefix("ferry:a093e004:42:"),
            "_ferry_stg_a093e004_42_"
        );
        assert_eq!(tsv_unescape("a\\tb\\\\c\\n"), "a\tb\\c\n");
    }
}
