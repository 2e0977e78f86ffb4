//! Creates or checks target tables (names, schemas, enum types, partitions, the column
//! types a target takes), and builds a deferred primary key once a table is loaded.

use ferry_model::key::SplitKey;
use ferry_model::schema::{ColumnType, Partitioning, TableName, TableSchema};
use ferry_model::spec::SchemaMode;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::KIND;
use super::catalog::{
    CatalogColumn, CatalogReader, CatalogTable, load_columns, load_partitioning, load_table,
};
use super::connect::{describe_error, query_error};
use super::encode::encoder_for;
use super::read::read_column;
use super::sql::{quote_ident, quote_literal, quote_table};
use super::types::target_type_for;
use super::write::ensure_fence_table;
use crate::compat::Differences;
use crate::error::{ConnectorError, Result};
use crate::traits::{PrepareOptions, PrepareOutcome};

/// Where a source table goes: the same schema and name for a PostgreSQL source, else
/// schema `public` and the source table's name.
pub fn target_name(table: &TableSchema) -> TableName {
    if table.source_kind == KIND {
        TableName {
            schema: Some(
                table
                    .name
                    .schema
                    .clone()
                    .unwrap_or_else(|| "public".to_string()),
            ),
            name: table.name.name.clone(),
        }
    } else {
        TableName {
            schema: Some("public".to_string()),
            name: table.name.name.clone(),
        }
    }
}

/// Where a chunk of `table` is written and read back: the target's partition table of the
/// same name and schema when the schema is restricted to a partition (ferry created the
/// target's partitions as the source's, or checked them), else [`target_name`].
pub fn target_relation(table: &TableSchema) -> TableName {
    match table.scoped_partition() {
        Some(partition) => TableName {
            schema: Some(
                partition
                    .schema
                    .clone()
                    .unwrap_or_else(|| schema_of(&target_name(table)).to_string()),
            ),
            name: partition.name.clone(),
        },
        None => target_name(table),
    }
}

/// The qualified target name of a partition, or of the table itself when `name` is `None`.
fn partition_target(
    table_target: &TableName,
    partitioning: &Partitioning,
    name: Option<&str>,
) -> TableName {
    match name.and_then(|name| partitioning.partition(name)) {
        Some(partition) => TableName {
            schema: Some(
                partition
                    .schema
                    .clone()
                    .unwrap_or_else(|| schema_of(table_target).to_string()),
            ),
            name: partition.name.clone(),
        },
        None => table_target.clone(),
    }
}

/// The statements that create the target's partitions like the source's, parents
/// before their children: `CREATE TABLE leaf PARTITION OF parent FOR VALUES ...`.
fn create_partitions_sql(target: &TableName, partitioning: &Partitioning) -> Vec<String> {
    partitioning
        .partitions
        .iter()
        .map(|partition| {
            let own = partition_target(target, partitioning, Some(&partition.name));
            let parent = partition_target(target, partitioning, partition.parent.as_deref());
            let mut statement = format!(
                "CREATE TABLE {} PARTITION OF {} {}",
                quote_table(&own),
                quote_table(&parent),
                partition.bound
            );
            if let Some(sub_method) = &partition.sub_method {
                statement.push_str(&format!(" PARTITION BY {sub_method}"));
            }
            statement
        })
        .collect()
}

pub(super) fn schema_of(table: &TableName) -> &str {
    table.schema.as_deref().unwrap_or("public")
}

/// Parses the last identifier of a possibly qualified, possibly quoted type name as
/// `format_type` prints it (`mood`, `s.mood`, `"My Mood"[]`).
pub fn bare_type_name(declared: &str) -> Option<String> {
    let mut text = declared.trim();
    while let Some(stripped) = text.strip_suffix("[]") {
        text = stripped.trim_end();
    }
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    let mut current = String::new();
    while let Some(character) = chars.next() {
        match character {
            '"' => loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        current.push('"');
                    }
                    Some('"') => break,
                    Some(inner) => current.push(inner),
                    None => return None,
                }
            },
            '.' => parts.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    parts.push(current);
    parts.pop().filter(|name| !name.is_empty())
}

/// The labels of an enum column (or an array of enums).
fn enum_labels(column_type: &ColumnType) -> Option<&[String]> {
    match column_type {
        ColumnType::Enum { labels } => Some(labels),
        ColumnType::Array { element } => match element.as_ref() {
            ColumnType::Enum { labels } => Some(labels),
            _ => None,
        },
        _ => None,
    }
}

/// A target column to be: its name and the type text for `CREATE TABLE`.
struct PlannedColumn {
    name: String,
    type_text: String,
    nullable: bool,
    source_type: ColumnType,
    source_declared: String,
}

async fn ensure_schema(client: &Client, table: &TableName) -> Result<()> {
    let schema = schema_of(table);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(query_error("check schema", table))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(schema)
            ))
            .await
            .map_err(query_error("create schema", table))?;
    }
    Ok(())
}

/// Creates an enum type in the target schema, or checks the existing one's labels.
async fn ensure_enum(
    client: &Client,
    table: &TableName,
    column: &str,
    type_name: &str,
    labels: &[String],
) -> Result<()> {
    let schema = schema_of(table);
    let existing = client
        .query_opt(
            "SELECT ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e \
                          WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder), t.typtype::text \
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
             WHERE n.nspname = $1 AND t.typname = $2",
            &[&schema, &type_name],
        )
        .await
        .map_err(query_error("check enum type", table))?;
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(type_name));
    match existing {
        None => {
            let label_list: Vec<String> = labels.iter().map(|label| quote_literal(label)).collect();
            let created = client
                .batch_execute(&format!(
                    "CREATE TYPE {qualified} AS ENUM ({})",
                    label_list.join(", ")
                ))
                .await;
            match created {
                Ok(()) => Ok(()),
                // Another preparer created it meanwhile: check it like an existing one.
                Err(error) if error.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
                    Box::pin(ensure_enum(client, table, column, type_name, labels)).await
                }
                Err(error) => Err(query_error("create enum type", table)(error)),
            }
        }
        Some(row) => {
            let typtype: String = row
                .try_get(1)
                .map_err(query_error("check enum type", table))?;
            let existing_labels: Vec<String> = row
                .try_get(0)
                .map_err(query_error("check enum type", table))?;
            if typtype != "e" || existing_labels != labels {
                return Err(ConnectorError::SchemaMismatch {
                    table: table.clone(),
                    detail: format!(
                        "column {column} needs enum type {qualified} with labels [{}], but the \
                         target's type of that name {}; fix or drop the type, or choose a type \
                         with `columns:` in the spec",
                        labels.join(", "),
                        if typtype == "e" {
                            format!("has labels [{}]", existing_labels.join(", "))
                        } else {
                            "is not an enum".to_string()
                        }
                    ),
                });
            }
            Ok(())
        }
    }
}

/// Resolves the planned types in the target by creating them in a temporary table that
/// is rolled back: exact `format_type` forms and wire types, or the first type the
/// target does not know.
async fn probe_types(
    client: &mut Client,
    table: &TableName,
    columns: &[PlannedColumn],
) -> Result<Vec<CatalogColumn>> {
    let definitions: Vec<String> = columns
        .iter()
        .map(|column| format!("{} {}", quote_ident(&column.name), column.type_text))
        .collect();
    let transaction = client
        .transaction()
        .await
        .map_err(query_error("check column types", table))?;
    let created = transaction
        .batch_execute(&format!(
            "CREATE TEMPORARY TABLE \"_ferry_probe\" ({}) ON COMMIT DROP",
            definitions.join(", ")
        ))
        .await;
    if let Err(error) = created {
        drop(transaction);
        // Find which column's type the target refuses, to name it.
        for column in columns {
            if let Err(column_error) = client
                .simple_query(&format!("SELECT NULL::{}", column.type_text))
                .await
            {
                return Err(ConnectorError::type_mapping(
                    table,
                    &column.name,
                    &column.source_declared,
                    KIND,
                    &format!(
                        "the target refuses the type {}: {}",
                        column.type_text,
                        describe_error(&column_error)
                    ),
                ));
            }
        }
        return Err(query_error("check column types", table)(error));
    }
    let probe_oid: u32 = transaction
        .query_one("SELECT 'pg_temp._ferry_probe'::regclass::oid", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("check column types", table))?;
    let resolved = load_columns(transaction.client(), probe_oid)
        .await
        .map_err(query_error("check column types", table))?;
    transaction
        .rollback()
        .await
        .map_err(query_error("check column types", table))?;
    Ok(resolved)
}

/// Creates, checks or recreates the target table per `options.mode`.
pub async fn prepare_table(
    client: &mut Client,
    table: &TableSchema,
    key: &SplitKey,
    options: &PrepareOptions,
) -> Result<PrepareOutcome> {
    let target = target_name(table);
    if matches!(key, SplitKey::Rowid) {
        return Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: "the postgres sink cannot keep a SQLite rowid".to_string(),
        });
    }
    let same_engine = table.source_kind == KIND;
    // 1. The type of every target column, before touching the target.
    let mut planned = Vec::with_capacity(table.columns.len());
    let mut enums: Vec<(String, String, Vec<String>)> = Vec::new();
    for column in &table.columns {
        let type_text = if let Some(chosen) = options.type_overrides.get(&column.name) {
            chosen.clone()
        } else if same_engine {
            match enum_labels(&column.column_type) {
                Some(labels) => {
                    let type_name = bare_type_name(&column.declared_type).ok_or_else(|| {
                        ConnectorError::type_mapping(
                            &table.name,
                            &column.name,
                            &column.declared_type,
                            KIND,
                            "its enum type name cannot be read",
                        )
                    })?;
                    enums.push((column.name.clone(), type_name.clone(), labels.to_vec()));
                    let array_suffix = if matches!(column.column_type, ColumnType::Array { .. }) {
                        "[]"
                    } else {
                        ""
                    };
                    format!(
                        "{}.{}{array_suffix}",
                        quote_ident(schema_of(&target)),
                        quote_ident(&type_name)
                    )
                }
                None => column.declared_type.clone(),
            }
        } else {
            target_type_for(&column.column_type).map_err(|why| {
                ConnectorError::type_mapping(
                    &table.name,
                    &column.name,
                    &format!(
                        "{} ({})",
                        column.declared_type,
                        column.column_type.display_name()
                    ),
                    KIND,
                    why,
                )
            })?
        };
        planned.push(PlannedColumn {
            name: column.name.clone(),
            type_text,
            nullable: column.nullable,
            source_type: column.column_type.clone(),
            source_declared: column.declared_type.clone(),
        });
    }

    // Partitions only between two PostgreSQL databases: the bounds are PostgreSQL's.
    let partitioning = table.partitioning.as_ref().filter(|_| same_engine);

    // 2. The schema and enum types the columns need.
    ensure_schema(client, &target).await?;
    if let Some(partitioning) = partitioning {
        for partition in &partitioning.partitions {
            let partition_table = partition_target(&target, partitioning, Some(&partition.name));
            ensure_schema(client, &partition_table).await?;
        }
    }
    for (column, type_name, labels) in &enums {
        ensure_enum(client, &target, column, type_name, labels).await?;
    }

    // 3. Every column can be written from its carrier and read back into it.
    let resolved = probe_types(client, &target, &planned).await?;
    for (column, resolved_column) in planned.iter().zip(&resolved) {
        let writable = encoder_for(&column.source_type, &resolved_column.wire).is_some();
        let readable = read_column(
            &column.name,
            &resolved_column.declared_type,
            &resolved_column.wire,
            &column.source_type,
        );
        let why = match (writable, readable) {
            (true, Ok(_)) => continue,
            (_, Err(reason)) => reason,
            (false, Ok(_)) => format!(
                "ferry cannot write {} values into a {} column",
                column.source_type.display_name(),
                resolved_column.declared_type
            ),
        };
        return Err(ConnectorError::type_mapping(
            &table.name,
            &column.name,
            &column.source_declared,
            KIND,
            &why,
        ));
    }

    // 4. Create, check or recreate.
    let existing = load_table(client, &target)
        .await
        .map_err(query_error("describe target table", &target))?;
    // `defer_primary_key`: a table created here is loaded without its key, built once
    // its chunks are copied. Not a partitioned table (its key spans the partitions).
    let defer_key = options.defer_primary_key && partitioning.is_none();
    let created_key: &[String] = if defer_key { &[] } else { &table.primary_key };
    let mut create_sql = create_table_sql(&target, &planned, created_key);
    if let Some(partitioning) = partitioning {
        // One multi-statement string runs as one implicit transaction: the parent and
        // its partitions are created together or not at all.
        create_sql.push_str(&format!(" PARTITION BY {}", partitioning.method));
        for statement in create_partitions_sql(&target, partitioning) {
            create_sql.push_str("; ");
            create_sql.push_str(&statement);
        }
    }
    let outcome = match (options.mode, existing) {
        (SchemaMode::Recreate, existing) => {
            let transaction = client
                .transaction()
                .await
                .map_err(query_error("recreate table", &target))?;
            transaction
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}; {create_sql}",
                    quote_table(&target)
                ))
                .await
                .map_err(query_error("recreate table", &target))?;
            transaction
                .commit()
                .await
                .map_err(query_error("recreate table", &target))?;
            if existing.is_some() {
                PrepareOutcome::Recreated
            } else {
                PrepareOutcome::Created
            }
        }
        (SchemaMode::RequireExisting, None) => {
            return Err(ConnectorError::SchemaMismatch {
                table: target,
                detail: "it does not exist in the target; create it, or set \
                         `schema: create_if_missing`"
                    .to_string(),
            });
        }
        (SchemaMode::CreateIfMissing, None) => {
            client
                .batch_execute(&create_sql)
                .await
                .map_err(query_error("create table", &target))?;
            PrepareOutcome::Created
        }
        (_, Some(existing)) => {
            // A table of this job loaded without its key (a resumed job): the key is
            // built later, once its chunks are copied. Under `create_if_missing`, an
            // empty table without its key is one an interrupted try of this job created
            // (a submit whose store write failed, then was sent again): it is taken as
            // created here, loaded keyless and keyed after.
            let keyless_by_earlier_try = defer_key
                && options.mode == SchemaMode::CreateIfMissing
                && existing.primary_key.is_empty()
                && !table.primary_key.is_empty()
                && table_is_empty(client, &target).await?;
            let key_missing_by_design = keyless_by_earlier_try
                || (options.defer_primary_key
                    && options.mode == SchemaMode::RequireExisting
                    && existing.primary_key.is_empty());
            let wanted_key: &[String] = if key_missing_by_design {
                &[]
            } else {
                &table.primary_key
            };
            check_compatible(&target, &planned, &resolved, &existing, wanted_key)?;
            if let Some(partitioning) = partitioning {
                let existing_partitioning = match load_partitioning(client, &target)
                    .await
                    .map_err(query_error("describe target partitions", &target))?
                {
                    None => None,
                    Some(Ok(found)) => Some(found),
                    Some(Err(problem)) => {
                        return Err(ConnectorError::SchemaMismatch {
                            table: target,
                            detail: format!(
                                "its partitions cannot be checked ({problem:?}); fix the \
                                 target's partitions or set `schema: recreate`"
                            ),
                        });
                    }
                };
                let differences = partitioning.differences(existing_partitioning.as_ref());
                if !differences.is_empty() {
                    return Err(ConnectorError::SchemaMismatch {
                        table: target,
                        detail: format!(
                            "its partitions differ from the source's: {}; ferry copies a \
                             partitioned table partition by partition, so fix the target's \
                             partitions or set `schema: recreate`",
                            differences.join("; ")
                        ),
                    });
                }
            }
            if keyless_by_earlier_try {
                PrepareOutcome::Created
            } else {
                PrepareOutcome::Existing
            }
        }
    };
    ensure_fence_table(client, &target).await?;
    Ok(outcome)
}

/// Whether the target table holds no row.
async fn table_is_empty(client: &Client, target: &TableName) -> Result<bool, ConnectorError> {
    let row = client
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT 1 FROM {})", quote_table(target)),
            &[],
        )
        .await
        .map_err(query_error("look for rows in the target table", target))?;
    Ok(row.get(0))
}

fn create_table_sql(
    target: &TableName,
    columns: &[PlannedColumn],
    primary_key: &[String],
) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|column| {
            let mut part = format!("{} {}", quote_ident(&column.name), column.type_text);
            if !column.nullable {
                part.push_str(" NOT NULL");
            }
            part
        })
        .collect();
    if !primary_key.is_empty() {
        let key: Vec<String> = primary_key.iter().map(|name| quote_ident(name)).collect();
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!(
        "CREATE TABLE {} ({})",
        quote_table(target),
        parts.join(", ")
    )
}

fn check_compatible(
    target: &TableName,
    planned: &[PlannedColumn],
    resolved: &[CatalogColumn],
    existing: &CatalogTable,
    primary_key: &[String],
) -> Result<()> {
    let mut differences = Differences::default();
    let wanted_names: Vec<&str> = planned.iter().map(|c| c.name.as_str()).collect();
    let existing_names: Vec<&str> = existing.columns.iter().map(|c| c.name.as_str()).collect();
    differences.columns(&wanted_names, &existing_names, "", |index| {
        let (wanted, existing_column) = (&resolved[index], &existing.columns[index]);
        (wanted.declared_type != existing_column.declared_type).then(|| {
            format!(
                "column {} should be {} but is {}",
                existing_column.name, wanted.declared_type, existing_column.declared_type
            )
        })
    });
    differences.primary_key(primary_key, &existing.primary_key);
    differences.into_result(target)
}

/// Whether the target table has a primary key now.
async fn has_primary_key(client: &impl CatalogReader, table: &TableSchema) -> Result<bool> {
    let target = target_name(table);
    let catalog = load_table(client, &target)
        .await
        .map_err(query_error("describe target table", &target))?
        .ok_or_else(|| ConnectorError::TableNotFound {
            role: "target",
            table: target.clone(),
        })?;
    Ok(!catalog.primary_key.is_empty())
}

/// Builds the target table's primary key (the source's) unless it has one: one sorted
/// index build after the table is loaded. The index is built first under a lock that
/// lets readers in (the copied chunks are read back meanwhile, see
/// [`crate::Sink::native_checksums`]), then made the key, in the same transaction (a
/// moment's exclusive lock, once those readers are done). Rows with equal keys (the
/// source had duplicates, or a row was written twice) refuse it; the error names the
/// table and the fix.
pub async fn build_primary_key(client: &Client, table: &TableSchema) -> Result<()> {
    if table.primary_key.is_empty() || has_primary_key(client, table).await? {
        return Ok(());
    }
    let target = target_name(table);
    let key: Vec<String> = table
        .primary_key
        .iter()
        .map(|name| quote_ident(name))
        .collect();
    let index = quote_ident(&free_key_name(client, &target).await?);
    let statement = format!(
        "CREATE UNIQUE INDEX {index} ON {table} ({columns}); \
         ALTER TABLE {table} ADD CONSTRAINT {index} PRIMARY KEY USING INDEX {index}",
        table = quote_table(&target),
        columns = key.join(", ")
    );
    match client.batch_execute(&statement).await {
        Ok(()) => Ok(()),
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(ConnectorError::SchemaMismatch {
                table: target.clone(),
                detail: format!(
                    "its primary key ({}) cannot be built after loading: {}; rows with \
                     equal keys are in the table (the source holds duplicates, or rows were \
                     written twice); find them with SELECT {cols}, count(*) FROM {target} \
                     GROUP BY {cols} HAVING count(*) > 1, remove the duplicates from the \
                     source and run the job again with `schema: recreate` (with \
                     `chunking: {{ defer_key: false }}` the table is loaded keyed, and the \
                     copy stops at the first duplicate row)",
                    table.primary_key.join(", "),
                    describe_error(&error),
                    cols = key.join(", "),
                    target = quote_table(&target),
                ),
            })
        }
        Err(error) => Err(query_error("build primary key", &target)(error)),
    }
}

/// The name PostgreSQL gives a table's primary key (`{table}_pkey`, the table's name
/// cut to fit the 63 bytes of an identifier), or with the first number after it that no
/// relation of the table's schema has.
async fn free_key_name(client: &Client, target: &TableName) -> Result<String> {
    let taken: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class t \
             JOIN pg_catalog.pg_class c ON c.relnamespace = t.relnamespace \
             WHERE t.oid = pg_catalog.to_regclass($1) AND c.relname::text LIKE '%pkey%'",
            &[&quote_table(target)],
        )
        .await
        .map_err(query_error("name primary key", target))?
        .iter()
        .filter_map(|row| row.try_get(0).ok())
        .collect();
    let base = target.name.as_str();
    let name = (0..)
        .map(|number| {
            let suffix = match number {
                0 => "_pkey".to_string(),
                number => format!("_pkey{number}"),
            };
            // The table's name cut at a character boundary to leave room for the suffix.
            let mut end = base.len().min(63 - suffix.len());
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}{suffix}", &base[..end])
        })
        .find(|name| !taken.contains(name))
        .unwrap_or_default();
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_type_names_are_read_from_format_type() {
        assert_eq!(bare_type_name("mood").as_deref(), Some("mood"));
        assert_eq!(bare_type_name("s.mood[]").as_deref(), Some("mood"));
        assert_eq!(
            bare_type_name("\"My \"\"Schema\"\"\".\"Mood.Type\"").as_deref(),
            Some("Mood.Type")
        );
        assert_eq!(bare_type_name("\"unterminated"), None);
    }

    #[test]
    fn foreign_tables_go_to_public_and_postgres_tables_keep_their_schema() {
        let mut table = TableSchema {
            name: TableName {
                schema: Some("sales".into()),
                name: "orders".into(),
            },
            columns: vec![],
            primary_key: vec![],
            has_rowid: false,
            source_kind: KIND.into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        };
        assert_eq!(target_name(&table).schema.as_deref(), Some("sales"));
        table.source_kind = "mysql".into();
        assert_eq!(target_name(&table).schema.as_deref(), Some("public"));
    }
}
