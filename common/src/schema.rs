//! The engine-neutral description of a table, as a source connector reports it and a
//! sink connector creates or checks it, and its Arrow form.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
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

/// Field metadata key naming the logical type of a column whose Arrow carrier alone does
/// not say how to compare its values: `decimal` (canonical decimal text, see
/// [`crate::checksum`]) or `json` (JSON text, compared after canonicalisation).
pub const LOGICAL_METADATA_KEY: &str = "ferry.logical";

/// How ferry understands a column's values, independent of any engine. Each has one Arrow
/// carrier ([`ColumnType::arrow_type`]) and one canonical checksum encoding, so two
/// engines agree on what a value is. A sink reads its own columns back *into the source
/// column's carrier* when it verifies, so a mapping (say `uuid` to `CHAR(36)`) is checked
/// value by value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnType {
    /// true/false. Carrier: `Boolean`.
    Bool,
    /// 8-bit signed integer. Carrier: `Int8`.
    Int8,
    /// 16-bit signed integer. Carrier: `Int16`.
    Int16,
    /// 32-bit signed integer. Carrier: `Int32`.
    Int32,
    /// 64-bit signed integer. Carrier: `Int64`.
    Int64,
    /// 8-bit unsigned integer. Carrier: `UInt8`.
    UInt8,
    /// 16-bit unsigned integer. Carrier: `UInt16`.
    UInt16,
    /// 32-bit unsigned integer. Carrier: `UInt32`.
    UInt32,
    /// 64-bit unsigned integer. Carrier: `UInt64`.
    UInt64,
    /// IEEE 754 single. Carrier: `Float32`.
    Float32,
    /// IEEE 754 double. Carrier: `Float64`.
    Float64,
    /// Exact decimal. `precision: None` is unconstrained (PostgreSQL `numeric`), which
    /// may also hold `NaN`, `Infinity` and `-Infinity`. Carrier: `Utf8` holding the
    /// canonical decimal text, with `ferry.logical = decimal`.
    Decimal {
        /// Total significant digits, when constrained.
        precision: Option<u32>,
        /// Digits after the point, when constrained.
        scale: Option<i32>,
    },
    /// UTF-8 text. Carrier: `Utf8`.
    Text,
    /// Raw bytes. Carrier: `Binary`.
    Blob,
    /// A calendar date. Carrier: `Date32` (days since 1970-01-01).
    Date,
    /// A time of day without zone. Carrier: `Time64(Microsecond)`.
    Time,
    /// A time of day with a UTC offset (PostgreSQL `timetz`). Carrier: `Utf8`, as
    /// `HH:MM:SS.ffffff+HH:MM`.
    TimeTz,
    /// A date and time without zone. Carrier: `Timestamp(Microsecond, None)`.
    Timestamp,
    /// An instant. Carrier: `Timestamp(Microsecond, "UTC")`.
    TimestampTz,
    /// A PostgreSQL interval. Carrier: `Utf8`, as `{months} months {days} days {micros} us`.
    Interval,
    /// A UUID. Carrier: `FixedSizeBinary(16)`.
    Uuid,
    /// A JSON document. Carrier: `Utf8` with `ferry.logical = json`.
    Json,
    /// One label of a fixed set (PostgreSQL enum, MySQL `ENUM`). Carrier: `Utf8`.
    Enum {
        /// The labels, in declaration order.
        labels: Vec<String>,
    },
    /// Any subset of a fixed set of labels (MySQL `SET`). Carrier: `Utf8`, labels joined
    /// by commas in declaration order.
    Set {
        /// The labels, in declaration order.
        labels: Vec<String>,
    },
    /// A bit string of up to 64 bits (MySQL `BIT(n)`). Carrier: `UInt64`.
    Bit {
        /// Bits.
        width: u32,
    },
    /// A MySQL `YEAR`. Carrier: `Int16`.
    Year,
    /// A PostgreSQL array. Carrier: `Utf8` with `ferry.logical = json`: a JSON array
    /// (nested for more dimensions) of the elements' JSON forms.
    Array {
        /// The element type.
        element: Box<ColumnType>,
    },
    /// A dynamically typed value (SQLite columns with NUMERIC or no affinity): each value
    /// keeps its own storage class. Carrier: `Binary` of canonically encoded values, with
    /// the `ferry.variant` metadata.
    Variant,
}

impl ColumnType {
    /// Returns the Arrow data type that carries this column.
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int8 => DataType::Int8,
            ColumnType::Int16 | ColumnType::Year => DataType::Int16,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::UInt8 => DataType::UInt8,
            ColumnType::UInt16 => DataType::UInt16,
            ColumnType::UInt32 => DataType::UInt32,
            ColumnType::UInt64 | ColumnType::Bit { .. } => DataType::UInt64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Decimal { .. }
            | ColumnType::Text
            | ColumnType::TimeTz
            | ColumnType::Interval
            | ColumnType::Json
            | ColumnType::Enum { .. }
            | ColumnType::Set { .. }
            | ColumnType::Array { .. } => DataType::Utf8,
            ColumnType::Blob | ColumnType::Variant => DataType::Binary,
            ColumnType::Date => DataType::Date32,
            ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
            }
            ColumnType::Uuid => DataType::FixedSizeBinary(16),
        }
    }

    /// Returns the carrier's field metadata (how the checksum must read the values).
    pub fn arrow_metadata(&self) -> HashMap<String, String> {
        let entry = match self {
            ColumnType::Variant => (VARIANT_METADATA_KEY, "1"),
            ColumnType::Decimal { .. } => (LOGICAL_METADATA_KEY, "decimal"),
            ColumnType::Json | ColumnType::Array { .. } => (LOGICAL_METADATA_KEY, "json"),
            _ => return HashMap::new(),
        };
        HashMap::from([(entry.0.to_string(), entry.1.to_string())])
    }

    /// Returns whether the type is an integer that fits in `i64` (dense key splitting).
    pub fn is_signed_integer(&self) -> bool {
        matches!(
            self,
            ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64
        )
    }

    /// A short name for messages: `int64`, `decimal(12,2)`, `enum`, `array of text`.
    pub fn display_name(&self) -> String {
        match self {
            ColumnType::Decimal {
                precision: Some(p),
                scale: Some(s),
            } => format!("decimal({p},{s})"),
            ColumnType::Decimal {
                precision: Some(p),
                scale: None,
            } => format!("decimal({p})"),
            ColumnType::Decimal { .. } => "decimal".to_string(),
            ColumnType::Bit { width } => format!("bit({width})"),
            ColumnType::Array { element } => format!("array of {}", element.display_name()),
            other => {
                let text = serde_json::to_value(other).ok().and_then(|value| {
                    value
                        .get("type")
                        .and_then(|t| t.as_str().map(str::to_string))
                });
                text.unwrap_or_else(|| format!("{other:?}"))
            }
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
            let field = Field::new(&column.name, column.column_type.arrow_type(), true)
                .with_metadata(column.column_type.arrow_metadata());
            fields.push(field);
        }
        Arc::new(Schema::new(fields))
    }
}
