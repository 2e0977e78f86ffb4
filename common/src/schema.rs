//! The engine-neutral description of a table, as a source connector reports it and a
//! sink connector creates or checks it, and its Arrow form.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// Field metadata key marking an Arrow `Binary` column whose values are canonically
/// encoded dynamic values (see [`crate::checksum::encode_variant`]), not raw bytes.
pub const VARIANT_METADATA_KEY: &str = "ferry.variant";

/// Name of the extra leading column that carries SQLite's implicit rowid when the
/// rowid is the split key (a rowid table without a primary key).
pub const ROWID_COLUMN: &str = "__ferry_rowid";

/// A table's name, qualified by its schema where the engine has schemas.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableName {
    /// The schema (PostgreSQL schema, MySQL database, SQLite attached database).
    pub schema: Option<String>,
    /// The table's own name, unquoted, exactly as stored in the catalog.
    pub name: String,
}

impl TableName {
    /// Returns a table name without a schema.
    pub fn bare(name: impl Into<String>) -> Self {
        Self {
            schema: None,
            name: name.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// How ferry carries a column's values. Each maps to one Arrow type and one canonical
/// checksum encoding, so two engines agree on what a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 64-bit signed integer.
    Int64,
    /// IEEE 754 double.
    Float64,
    /// UTF-8 text.
    Text,
    /// Raw bytes.
    Blob,
    /// A dynamically typed value (SQLite columns with NUMERIC or no affinity): each value
    /// keeps its own storage class; carried as canonically encoded bytes.
    Variant,
}

impl ColumnType {
    /// Returns the Arrow data type that carries this column.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Text => DataType::Utf8,
            ColumnType::Blob | ColumnType::Variant => DataType::Binary,
        }
    }
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// The column's name, unquoted.
    pub name: String,
    /// The type as declared in the source engine (e.g. `VARCHAR(20)`), kept so a sink of
    /// the same engine can recreate it verbatim.
    pub declared_type: String,
    /// How ferry carries the values.
    pub column_type: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// A table as a source describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table's name in the source.
    pub name: TableName,
    /// Columns in their declared order.
    pub columns: Vec<ColumnSchema>,
    /// Primary key column names in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    /// SQLite: the table has an implicit rowid (it is not `WITHOUT ROWID`).
    pub has_rowid: bool,
    /// The connector kind that described the table (`sqlite`).
    pub source_kind: String,
    /// The source engine's own `CREATE TABLE` statement, which a sink of the same kind
    /// runs verbatim so constraints, collations and defaults survive.
    pub native_ddl: Option<String>,
}

impl TableSchema {
    /// Returns the column with the given name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|column| column.name == name)
    }

    /// Returns the Arrow schema of the batches a chunk of this table travels in. With
    /// `carry_rowid`, a leading non-null Int64 column [`ROWID_COLUMN`] carries the rowid.
    pub fn arrow_schema(&self, carry_rowid: bool) -> SchemaRef {
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
        if carry_rowid {
            fields.push(Field::new(ROWID_COLUMN, DataType::Int64, false));
        }
        for column in &self.columns {
            let field = Field::new(&column.name, column.column_type.arrow_type(), true);
            let field = if column.column_type == ColumnType::Variant {
                field.with_metadata(HashMap::from([(
                    VARIANT_METADATA_KEY.to_string(),
                    "1".to_string(),
                )]))
            } else {
                field
            };
            fields.push(field);
        }
        Arc::new(Schema::new(fields))
    }
}
