//! Reading `pg_catalog`: user tables, a table's columns (in `attnum` order, dropped
//! columns skipped) with their types, enum labels and collations, its primary key, and
//! the tree of its declarative partitions.

use ferry_model::schema::{ColumnSchema, Partitioning, TableName, TablePartition, TableSchema};
use tokio_postgres::{Client, Row};

use super::FENCE_TABLE;
use super::pool::Session;
use super::sql::KeyColumn;
use super::sql::escaped_literal;
use super::types::{WireType, column_type_of};

/// Where catalog statements run: a bare connection plans each statement anew; a pooled
/// [`Session`] prepares each statement once per connection and runs it again on its
/// plan (the statements name their table in their text, so they have no parameters).
pub trait CatalogReader: Sync {
    /// Runs `sql` (without parameters) and returns its rows.
    fn catalog_rows(
        &self,
        sql: &str,
    ) -> impl std::future::Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;
}

impl CatalogReader for Client {
    async fn catalog_rows(&self, sql: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.query_typed(sql, &[]).await
    }
}

impl CatalogReader for Session {
    async fn catalog_rows(&self, sql: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.query_prepared(sql).await
    }
}

/// One column as the catalog describes it.
#[derive(Clone, Debug)]
pub struct CatalogColumn {
    /// The column's name.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `numeric(12,2)` or `character varying(20)`.
    pub declared_type: String,
    /// How values travel in binary COPY.
    pub wire: WireType,
    /// `atttypmod` (-1 when none).
    pub typmod: i32,
    /// `attnotnull`.
    pub not_null: bool,
    /// A stored generated column (`attgenerated = 's'`).
    pub generated: bool,
    /// The enum's labels in sort order, for enum and enum-array columns.
    pub enum_labels: Vec<String>,
    /// Whether text comparisons on the column need `COLLATE "C"` to be bytewise.
    pub needs_c_collation: bool,
}

/// A table as the catalog describes it.
#[derive(Clone, Debug)]
pub struct CatalogTable {
    /// The table's qualified name.
    pub name: TableName,
    /// The columns in `attnum` order.
    pub columns: Vec<CatalogColumn>,
    /// Primary key column names in key order.
    pub primary_key: Vec<String>,
}

impl CatalogTable {
    /// Returns the column with the given name.
    pub fn column(&self, name: &str) -> Option<&CatalogColumn> {
        self.columns.iter().find(|column| column.name == name)
    }

    /// The key columns named `names`, as this table holds them.
    pub fn key_columns(&self, names: &[String]) -> Result<Vec<KeyColumn>, String> {
        names
            .iter()
            .map(|name| {
                let column = self
                    .column(name)
                    .ok_or_else(|| format!("key column {name} does not exist"))?;
                let integer =
                    matches!(&column.wire, WireType::Scalar(scalar) if scalar.is_integer());
                Ok(KeyColumn {
                    name: name.clone(),
                    cast_type: column.declared_type.clone(),
                    integer,
                    needs_c_collation: column.needs_c_collation,
                    hash_buckets: None,
                })
            })
            .collect()
    }

    /// The engine-neutral description of the table.
    pub fn to_schema(&self, source_kind: &str) -> TableSchema {
        let columns = self
            .columns
            .iter()
            .map(|column| ColumnSchema {
                name: column.name.clone(),
                declared_type: column.declared_type.clone(),
                column_type: column_type_of(&column.wire, column.typmod, &column.enum_labels),
                nullable: !column.not_null,
            })
            .collect();
        TableSchema {
            name: self.name.clone(),
            columns,
            primary_key: self.primary_key.clone(),
            has_rowid: false,
            source_kind: source_kind.to_string(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        }
    }
}

/// Lists user tables: ordinary tables and partitioned parents (never their partitions),
/// outside the system schemas, without ferry's fence table.
pub async fn list_tables(client: &Client) -> Result<Vec<TableName>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
               AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' \
               AND c.relname <> $1 \
             ORDER BY 1, 2",
            &[&FENCE_TABLE],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(TableName {
                schema: Some(row.try_get(0)?),
                name: row.try_get(1)?,
            })
        })
        .collect()
}

/// The database's default collation and its provider (`c` before PostgreSQL 15, which
/// added ICU as a database-wide default provider): read through `to_jsonb` so the same
/// statement runs on every version, as scalar subqueries of [`load_columns`]'s query
/// (no statement of its own).
const DATABASE_COLLATION_COLUMNS: &str = "(SELECT d.datcollate::text FROM pg_catalog.pg_database d \
                                           WHERE d.datname = current_database()), \
                                          (SELECT COALESCE(to_jsonb(d) ->> 'datlocprovider', 'c') \
                                           FROM pg_catalog.pg_database d \
                                           WHERE d.datname = current_database())";

fn is_bytewise_locale(locale: &str) -> bool {
    matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8" | "ucs_basic")
}

/// Loads a table from the catalog; `Ok(None)` when there is no such table. A name without
/// a schema is resolved through the search path.
pub async fn load_table(
    reader: &impl CatalogReader,
    table: &TableName,
) -> Result<Option<CatalogTable>, tokio_postgres::Error> {
    // One statement (one round trip), prepared once per pooled connection: a catalog read
    // runs for every chunk's read, write and verification. Its rows are the table's
    // columns, each with the table's name and its primary key's column numbers (named
    // here from the columns: a key column cannot be dropped); a table without columns is
    // one row whose column fields are NULL.
    const PRIMARY_KEY: &str = "(SELECT i.indkey::int2[] FROM pg_catalog.pg_index i \
             WHERE i.indrelid = c.oid AND i.indisprimary)";
    let relation = match &table.schema {
        Some(schema) => format!(
            "n.nspname = {} AND c.relname = {}",
            escaped_literal(schema),
            escaped_literal(&table.name)
        ),
        None => format!(
            "c.relname = {} AND pg_catalog.pg_table_is_visible(c.oid)",
            escaped_literal(&table.name)
        ),
    };
    let rows = reader
        .catalog_rows(&format!(
            "SELECT n.nspname::text, c.relname::text, {PRIMARY_KEY}, col.* \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN LATERAL ({columns}) col ON true \
             WHERE {relation} AND c.relkind IN ('r', 'p') \
             ORDER BY col.attnum",
            columns = columns_sql("c.oid")
        ))
        .await?;
    let Some(found) = rows.first() else {
        return Ok(None);
    };
    let name = TableName {
        schema: Some(found.try_get(0)?),
        name: found.try_get(1)?,
    };
    let key_numbers: Vec<i16> = found.try_get::<_, Option<_>>(2)?.unwrap_or_default();
    // One table at most matches (a name without a schema resolves to the first visible).
    let mut columns = Vec::with_capacity(rows.len());
    let mut numbers = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<_, Option<String>>(TABLE_FIELDS)?.is_none() {
            continue;
        }
        columns.push(column_of(row, TABLE_FIELDS)?);
        numbers.push(row.try_get::<_, i16>(TABLE_FIELDS + COLUMN_FIELDS)?);
    }
    let primary_key = key_numbers
        .iter()
        .filter_map(|key_number| {
            let index = numbers.iter().position(|number| number == key_number)?;
            Some(columns[index].name.clone())
        })
        .collect();
    Ok(Some(CatalogTable {
        name,
        columns,
        primary_key,
    }))
}

/// The fields before the columns' in [`load_table`]'s rows.
const TABLE_FIELDS: usize = 3;

/// The fields of a column ([`column_of`]) in [`columns_sql`]'s rows, before its `attnum`.
const COLUMN_FIELDS: usize = 16;

/// The statement reading the columns of the relation whose oid is the SQL expression
/// `relation_oid`, in `attnum` order: the enum labels and the database's default collation
/// come as subqueries. Its last field is `attnum`.
///
/// Each column's type and collation are looked up by their index, one column at a time
/// (`OFFSET 0` keeps the planner from joining the whole `pg_type` by hash: measured, that
/// made this statement cost about twice as much for a table of a few columns), and enum
/// labels are read only for enum columns.
fn columns_sql(relation_oid: &str) -> String {
    format!(
        "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                a.atttypid, a.atttypmod, a.attnotnull, a.attgenerated::text, \
                t.typtype::text, t.typcategory::text, t.typelem, et.typtype::text, \
                CASE WHEN t.typtype = 'e' OR et.typtype = 'e' THEN \
                     ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e \
                           WHERE e.enumtypid = CASE WHEN t.typtype = 'e' THEN t.oid ELSE et.oid END \
                           ORDER BY e.enumsortorder) \
                     ELSE '{{}}'::text[] END, \
                COALESCE(co.collname::text, ''), COALESCE(co.collprovider::text, ''), \
                COALESCE(co.collcollate::text, ''), {DATABASE_COLLATION_COLUMNS}, a.attnum \
         FROM pg_catalog.pg_attribute a \
         CROSS JOIN LATERAL (SELECT t.oid, t.typtype, t.typcategory, t.typelem \
                             FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid OFFSET 0) t \
         LEFT JOIN LATERAL (SELECT et.oid, et.typtype FROM pg_catalog.pg_type et \
                            WHERE et.oid = t.typelem AND t.typcategory = 'A' OFFSET 0) et ON true \
         LEFT JOIN LATERAL (SELECT co.collname, co.collprovider, co.collcollate \
                            FROM pg_catalog.pg_collation co WHERE co.oid = a.attcollation \
                            OFFSET 0) co ON true \
         WHERE a.attrelid = {relation_oid} AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum"
    )
}

/// Loads the columns of the relation `relation_oid`.
pub async fn load_columns(
    reader: &impl CatalogReader,
    relation_oid: u32,
) -> Result<Vec<CatalogColumn>, tokio_postgres::Error> {
    let rows = reader
        .catalog_rows(&columns_sql(&format!("'{relation_oid}'::oid")))
        .await?;
    rows.iter().map(|row| column_of(row, 0)).collect()
}

/// The column described by the fields of `row` from `first` on ([`columns_sql`]'s).
fn column_of(row: &Row, first: usize) -> Result<CatalogColumn, tokio_postgres::Error> {
    let type_oid: u32 = row.try_get(first + 2)?;
    let typtype: String = row.try_get(first + 6)?;
    let typcategory: String = row.try_get(first + 7)?;
    let element_oid: u32 = row.try_get(first + 8)?;
    let element_typtype: Option<String> = row.try_get(first + 9)?;
    let enum_labels: Vec<String> = row.try_get(first + 10)?;
    let collation_name: String = row.try_get(first + 11)?;
    let collation_provider: String = row.try_get(first + 12)?;
    let collation_collate: String = row.try_get(first + 13)?;
    let database_collate: String = row.try_get(first + 14)?;
    let database_provider: String = row.try_get(first + 15)?;
    let default_bytewise = database_provider == "c" && is_bytewise_locale(&database_collate);
    let wire = WireType::from_catalog(
        type_oid,
        &typtype,
        &typcategory,
        element_oid,
        element_typtype.as_deref(),
    );
    let collatable = !collation_name.is_empty();
    let bytewise = match collation_name.as_str() {
        "" => true,
        "default" => default_bytewise,
        "C" | "POSIX" | "ucs_basic" => true,
        _ => collation_provider == "c" && is_bytewise_locale(&collation_collate),
    };
    Ok(CatalogColumn {
        name: row.try_get(first)?,
        declared_type: row.try_get(first + 1)?,
        wire,
        typmod: row.try_get(first + 3)?,
        not_null: row.try_get(first + 4)?,
        generated: !row.try_get::<_, String>(first + 5)?.is_empty(),
        enum_labels,
        needs_c_collation: collatable && !bytewise,
    })
}

/// What [`load_partitioning`] found wrong with a partition tree ferry cannot plan by.
#[derive(Debug)]
pub enum PartitionTreeProblem {
    /// Two partitions of the table share a name (in different schemas): a chunk names
    /// its partition by name.
    DuplicateName(String),
    /// A partition ferry cannot read or write as a table (a foreign table).
    NotATable(String),
}

/// Loads the declarative partitions of `table` (every level, parents before their
/// children), or `None` when it is not a partitioned table.
pub async fn load_partitioning(
    client: &Client,
    table: &TableName,
) -> Result<Option<Result<Partitioning, PartitionTreeProblem>>, tokio_postgres::Error> {
    let schema = table.schema.clone().unwrap_or_else(|| "public".to_string());
    let Some(root) = client
        .query_opt(
            "SELECT c.oid, pg_catalog.pg_get_partkeydef(c.oid) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'p'",
            &[&schema, &table.name],
        )
        .await?
    else {
        return Ok(None);
    };
    let root_oid: u32 = root.try_get(0)?;
    let method: String = root.try_get(1)?;
    let rows = client
        .query(
            "SELECT c.relname::text, n.nspname::text, \
                    CASE WHEN t.parentrelid = $1 THEN NULL ELSE pc.relname::text END, \
                    pg_catalog.pg_get_expr(c.relpartbound, c.oid), c.relkind::text, \
                    CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END \
             FROM pg_catalog.pg_partition_tree($1::oid::regclass) t \
             JOIN pg_catalog.pg_class c ON c.oid = t.relid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_class pc ON pc.oid = t.parentrelid \
             WHERE t.level > 0 \
             ORDER BY t.level, c.relname",
            &[&root_oid],
        )
        .await?;
    let mut partitions: Vec<TablePartition> = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0)?;
        let relkind: String = row.try_get(4)?;
        if partitions.iter().any(|known| known.name == name) {
            return Ok(Some(Err(PartitionTreeProblem::DuplicateName(name))));
        }
        if relkind != "r" && relkind != "p" {
            return Ok(Some(Err(PartitionTreeProblem::NotATable(name))));
        }
        partitions.push(TablePartition {
            name,
            schema: Some(row.try_get(1)?),
            parent: row.try_get(2)?,
            bound: row.try_get::<_, Option<String>>(3)?.unwrap_or_default(),
            sub_method: row.try_get(5)?,
            leaf: relkind == "r",
        });
    }
    Ok(Some(Ok(Partitioning { method, partitions })))
}

/// The table a chunk of `table` reads or writes in a database whose schema names are
/// those of the source: its partition table when the schema is restricted to one.
pub fn partition_relation(table: &TableSchema) -> TableName {
    match table.scoped_partition() {
        Some(partition) => TableName {
            schema: partition
                .schema
                .clone()
                .or_else(|| table.name.schema.clone()),
            name: partition.name.clone(),
        },
        None => table.name.clone(),
    }
}
