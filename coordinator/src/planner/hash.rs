//! `tables.split`: a table without a usable key cut into hash buckets of a column.
//!
//! A chunk is the bucket range `[b, b + 1)` of `hash(column) mod buckets`; the target
//! must compute the same bucket of a row, or a re-copy would delete other rows than it
//! rewrites. So buckets exist only between two databases of one engine — PostgreSQL
//! (`hashtextextended`, the stable hash hash partitioning relies on) or MySQL/MariaDB
//! (`CRC32` of the text in `utf8mb4`) — and only on columns whose text form does not
//! depend on session settings.

use ferry_model::key::{Bucketing, SplitKey};
use ferry_model::schema::{ColumnType, TableSchema};
use ferry_model::spec::HashSplitSpec;

/// Why a `tables.split` entry cannot cut its table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashSplitRefusal {
    /// The table has a key to split on.
    #[error("table {table} has a primary key ({key}), which splits it already; remove the entry")]
    HasKey {
        /// The table.
        table: String,
        /// Its key columns.
        key: String,
    },
    /// The pair of engines cannot compute the same buckets.
    #[error(
        "hash buckets need postgres or mysql on both sides (both must compute the same \
         bucket of a row, so that a re-copy deletes exactly the rows it rewrites), not \
         {source_kind} → {target_kind}; remove the entry (the table is then one chunk)"
    )]
    EnginePair {
        /// The source's kind.
        source_kind: String,
        /// The target's kind.
        target_kind: String,
    },
    /// Between two engines, a column that is not an integer.
    #[error(
        "column {column} of table {table} is {column_type}; between two engines ({source_kind} \
         → {target_kind}) a bucket is the column's value modulo the buckets, the one function \
         both compute alike: name an integer column, or remove the entry (the table is then \
         one chunk)"
    )]
    CrossEngineColumnType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its type, as described.
        column_type: String,
        /// The source's kind.
        source_kind: String,
        /// The target's kind.
        target_kind: String,
    },
    /// The column does not exist.
    #[error("table {table} has no column {column}; name one of: {available}")]
    NoSuchColumn {
        /// The table.
        table: String,
        /// The column asked for.
        column: String,
        /// The table's columns.
        available: String,
    },
    /// The column's type has no text form that is the same in every session.
    #[error(
        "column {column} of table {table} is {column_type}; hash buckets need an integer, \
         text or uuid column (other types print differently with session settings such as \
         TimeZone or DateStyle, so source and target could bucket a row differently)"
    )]
    ColumnType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its type, as described.
        column_type: String,
    },
}

/// Checks a `tables.split` entry against its table and the engine pair, and returns the
/// hash key it cuts the table on. Only for tables without a primary key, only between
/// PostgreSQL and MySQL databases. Between two of one engine, the engine's hash of the
/// column's text ([`Bucketing::EngineHash`]), on integer, text and uuid columns, whose
/// text does not depend on the session; between the two engines, the integer column's
/// value modulo the buckets ([`Bucketing::Modulo`]), the same arithmetic in both.
pub fn hash_split_key(
    table: &TableSchema,
    split: &HashSplitSpec,
    source_kind: &str,
    target_kind: &str,
) -> Result<SplitKey, HashSplitRefusal> {
    if !table.primary_key.is_empty() {
        return Err(HashSplitRefusal::HasKey {
            table: table.name.to_string(),
            key: table.primary_key.join(", "),
        });
    }
    if !bucket_engine(source_kind) || !bucket_engine(target_kind) {
        return Err(HashSplitRefusal::EnginePair {
            source_kind: source_kind.to_string(),
            target_kind: target_kind.to_string(),
        });
    }
    let Some(column) = table.column(&split.column) else {
        return Err(HashSplitRefusal::NoSuchColumn {
            table: table.name.to_string(),
            column: split.column.clone(),
            available: table
                .columns
                .iter()
                .map(|column| column.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let integer = column.column_type.is_integer();
    let hashable = is_hashable(&column.column_type);
    let bucketing = if source_kind == target_kind {
        Bucketing::EngineHash
    } else {
        Bucketing::Modulo
    };
    if bucketing == Bucketing::Modulo && !integer {
        return Err(HashSplitRefusal::CrossEngineColumnType {
            table: table.name.to_string(),
            column: split.column.clone(),
            column_type: format!("{:?}", column.column_type),
            source_kind: source_kind.to_string(),
            target_kind: target_kind.to_string(),
        });
    }
    if !hashable {
        return Err(HashSplitRefusal::ColumnType {
            table: table.name.to_string(),
            column: split.column.clone(),
            column_type: format!("{:?}", column.column_type),
        });
    }
    Ok(SplitKey::Hash {
        column: split.column.clone(),
        buckets: split.buckets,
        bucketing,
    })
}

/// Whether buckets can be computed alike on both sides: PostgreSQL and MySQL only.
fn bucket_engine(kind: &str) -> bool {
    matches!(kind, "postgres" | "mysql")
}

fn is_hashable(column_type: &ColumnType) -> bool {
    column_type.is_integer() || matches!(column_type, ColumnType::Text | ColumnType::Uuid)
}

/// For a table without a usable key copied as one chunk: how `tables.split` would cut it
/// on this engine pair, naming its first column that qualifies, as a `tables.split`
/// entry to add; `None` where no column qualifies or the pair computes no buckets.
pub fn split_hint(table: &TableSchema, source_kind: &str, target_kind: &str) -> Option<String> {
    if !table.primary_key.is_empty() || !bucket_engine(source_kind) || !bucket_engine(target_kind) {
        return None;
    }
    let same_engine = source_kind == target_kind;
    let column = table.columns.iter().find(|column| {
        if same_engine {
            is_hashable(&column.column_type)
        } else {
            column.column_type.is_integer()
        }
    })?;
    Some(format!(
        "to cut it into chunks, add `tables: {{ split: {{ \"{}\": {{ column: {}, buckets: 16 }} }} }}` \
         (or another {} column; each bucket reads the whole source table)",
        table.name,
        column.name,
        if same_engine {
            "integer, text or uuid"
        } else {
            "integer"
        }
    ))
}

#[cfg(test)]
mod tests {
    use ferry_model::key::KeyStats;
    use ferry_model::schema::{ColumnSchema, TableName};

    use super::*;
    use crate::planner::{SplitChoice, choose_split, plan_table};

    fn keyless(column_type: ColumnType) -> TableSchema {
        TableSchema {
            name: TableName::bare("logs"),
            columns: vec![ColumnSchema {
                name: "id".into(),
                declared_type: "x".into(),
                column_type,
                nullable: true,
            }],
            primary_key: Vec::new(),
            has_rowid: false,
            source_kind: "postgres".into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        }
    }

    fn split(column: &str) -> HashSplitSpec {
        HashSplitSpec {
            column: column.into(),
            buckets: 16,
        }
    }

    #[test]
    fn a_keyless_postgres_table_gets_one_chunk_per_bucket() {
        let key = hash_split_key(
            &keyless(ColumnType::Int64),
            &split("id"),
            "postgres",
            "postgres",
        )
        .unwrap();
        assert_eq!(
            key,
            SplitKey::Hash {
                column: "id".into(),
                buckets: 16,
                bucketing: Bucketing::EngineHash,
            }
        );
        let stats = KeyStats {
            rows: 10,
            ..KeyStats::default()
        };
        let choice = choose_split(&key, &stats, 1_000_000);
        assert_eq!(
            choice,
            SplitChoice::Even {
                min: 0,
                max: 15,
                num_chunks: 16
            }
        );
        let chunks = plan_table(&key, &stats, choice, &[]);
        assert_eq!(chunks.len(), 16);
        // Bucket b is [b, b + 1); the outer chunks are unbounded, as every plan's.
        for bucket in 0..16i64 {
            let owners = chunks
                .iter()
                .filter(|chunk| {
                    chunk
                        .range
                        .contains(&[Some(ferry_model::key::KeyValue::Int(bucket))])
                })
                .count();
            assert_eq!(owners, 1, "bucket {bucket}");
        }
    }

    #[test]
    fn text_and_uuid_columns_hash_temporal_ones_are_refused() {
        for column_type in [ColumnType::Text, ColumnType::Uuid, ColumnType::Int16] {
            assert!(
                hash_split_key(&keyless(column_type), &split("id"), "postgres", "postgres").is_ok()
            );
        }
        let refusal = hash_split_key(
            &keyless(ColumnType::TimestampTz),
            &split("id"),
            "postgres",
            "postgres",
        )
        .unwrap_err();
        assert!(matches!(refusal, HashSplitRefusal::ColumnType { .. }));
        assert!(refusal.to_string().contains("TimeZone"), "{refusal}");
    }

    #[test]
    fn a_keyless_table_on_a_bucket_pair_gets_a_split_hint_naming_a_column() {
        let table = keyless(ColumnType::Text);
        let hint = split_hint(&table, "mysql", "mysql").expect("a hint");
        assert_eq!(
            hint,
            "to cut it into chunks, add `tables: { split: { \"logs\": { column: id, buckets: 16 } } }` \
             (or another integer, text or uuid column; each bucket reads the whole source table)"
        );
        // Between two engines only an integer column can be bucketed.
        assert_eq!(split_hint(&table, "postgres", "mysql"), None);
        let integer = keyless(ColumnType::Int32);
        assert!(
            split_hint(&integer, "postgres", "mysql")
                .expect("a hint")
                .contains("another integer column")
        );
        assert_eq!(split_hint(&integer, "sqlite", "postgres"), None);
        let keyed = TableSchema {
            primary_key: vec!["id".into()],
            ..integer
        };
        assert_eq!(split_hint(&keyed, "postgres", "postgres"), None);
    }

    #[test]
    fn engine_pairs_pick_their_bucketing_keyed_tables_and_missing_columns_are_refused() {
        let table = keyless(ColumnType::Int64);
        for (source, target) in [("postgres", "mysql"), ("mysql", "postgres")] {
            assert_eq!(
                hash_split_key(&table, &split("id"), source, target),
                Ok(SplitKey::Hash {
                    column: "id".into(),
                    buckets: 16,
                    bucketing: Bucketing::Modulo,
                })
            );
            let text = hash_split_key(&keyless(ColumnType::Text), &split("id"), source, target)
                .unwrap_err();
            assert!(
                matches!(text, HashSplitRefusal::CrossEngineColumnType { .. }),
                "{text}"
            );
            assert!(
                text.to_string().contains("name an integer column"),
                "{text}"
            );
        }
        assert!(matches!(
            hash_split_key(&table, &split("id"), "postgres", "sqlite"),
            Err(HashSplitRefusal::EnginePair { .. })
        ));
        assert!(matches!(
            hash_split_key(&table, &split("id"), "sqlite", "sqlite"),
            Err(HashSplitRefusal::EnginePair { .. })
        ));
        assert!(matches!(
            hash_split_key(&table, &split("id"), "mysql", "mysql"),
            Ok(SplitKey::Hash {
                bucketing: Bucketing::EngineHash,
                ..
            })
        ));
        let missing = hash_split_key(&table, &split("nope"), "postgres", "postgres").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "table logs has no column nope; name one of: id"
        );
        let keyed = TableSchema {
            primary_key: vec!["id".into()],
            ..table
        };
        assert!(matches!(
            hash_split_key(&keyed, &split("id"), "postgres", "postgres"),
            Err(HashSplitRefusal::HasKey { .. })
        ));
    }
}
