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

    /// Returns whether the type is an integer, signed or unsigned, of any width.
    pub fn is_integer(&self) -> bool {
        self.is_signed_integer()
            || matches!(
                self,
                ColumnType::UInt8 | ColumnType::UInt16 | ColumnType::UInt32 | ColumnType::UInt64
            )
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
    /// The table's native partitions (PostgreSQL declarative partitions, MySQL
    /// partitions), when it has them. Absent from state files written before partitions
    /// were planned, hence the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioning: Option<Partitioning>,
    /// When set, this schema stands for one leaf partition of the table (a name of
    /// [`Partitioning::leaves`]): every read, write, count and checksum a connector runs
    /// with it is restricted to that partition. Set only by [`TableSchema::for_partition`]
    /// for one chunk, never in a described or stored schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Columns a source suggests cutting a table without a primary key on (ClickHouse:
    /// the sorting key's first column, or the spec's `split_column`). They are not unique:
    /// a range over them still selects every row once, since a row's key decides its
    /// range. Used only between two databases of the same engine, where they sort alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split_columns: Vec<String>,
}

/// How a table is divided into native partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitioning {
    /// The engine's partitioning clause: PostgreSQL `pg_get_partkeydef` (`RANGE (at)`),
    /// MySQL `PARTITION_METHOD` and `SUBPARTITION_METHOD` (`RANGE`, `RANGE/HASH`).
    pub method: String,
    /// Every partition below the table, parents before their children. The leaves (rows
    /// live only there) are the units ferry plans by.
    pub partitions: Vec<TablePartition>,
}

/// One partition of a partitioned table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePartition {
    /// The partition's name: PostgreSQL the partition table's own name (unique among a
    /// table's partitions), MySQL the partition or, for a leaf of a subpartitioned
    /// table, the subpartition name.
    pub name: String,
    /// PostgreSQL: the schema of the partition table (it may differ from the parent's).
    pub schema: Option<String>,
    /// PostgreSQL: the name of the partitioned partition this one is attached to, when
    /// it is not the table itself (multi-level partitioning). MySQL: the partition a
    /// subpartition belongs to.
    pub parent: Option<String>,
    /// The partition's bound: PostgreSQL `pg_get_expr(relpartbound)` (`FOR VALUES FROM
    /// ('2024-01-01') TO ('2025-01-01')`, `DEFAULT`), MySQL `PARTITION_DESCRIPTION`.
    pub bound: String,
    /// PostgreSQL: the partitioning clause of a partition that is itself partitioned.
    pub sub_method: Option<String>,
    /// Whether rows live in it (it is not partitioned further).
    pub leaf: bool,
}

impl Partitioning {
    /// The leaf partitions, in catalog order.
    pub fn leaves(&self) -> impl Iterator<Item = &TablePartition> {
        self.partitions.iter().filter(|partition| partition.leaf)
    }

    /// The partition named `name`.
    pub fn partition(&self, name: &str) -> Option<&TablePartition> {
        self.partitions
            .iter()
            .find(|partition| partition.name == name)
    }

    /// Lists how a target's partitions (`None`: not partitioned) differ from these, the
    /// source's, in words for an error message; empty when they agree. A partition's
    /// schema is compared only where both sides name one.
    pub fn differences(&self, target: Option<&Partitioning>) -> Vec<String> {
        let source = self;
        let Some(target) = target else {
            return vec![format!(
                "it is partitioned by {} in the source but not partitioned in the target",
                source.method
            )];
        };
        let mut differences = Vec::new();
        if source.method != target.method {
            differences.push(format!(
                "it is partitioned by {} in the source but by {} in the target",
                source.method, target.method
            ));
        }
        for wanted in &source.partitions {
            match target.partition(&wanted.name) {
                None => differences.push(format!(
                    "partition {} ({}) is missing in the target",
                    wanted.name, wanted.bound
                )),
                Some(found) if found.bound != wanted.bound => differences.push(format!(
                    "partition {} is {} in the source but {} in the target",
                    wanted.name, wanted.bound, found.bound
                )),
                Some(found)
                    if found.parent != wanted.parent
                        || found.leaf != wanted.leaf
                        || found.sub_method != wanted.sub_method
                        || (found.schema.is_some() && found.schema != wanted.schema) =>
                {
                    differences.push(format!(
                        "partition {} sits elsewhere in the partition tree of the target",
                        wanted.name
                    ));
                }
                Some(_) => {}
            }
        }
        for extra in &target.partitions {
            if source.partition(&extra.name).is_none() {
                differences.push(format!(
                    "partition {} ({}) exists only in the target",
                    extra.name, extra.bound
                ));
            }
        }
        differences
    }
}

impl TableSchema {
    /// The split key made of the primary key's columns (`None` without a primary key):
    /// nullable when any of them is, and marked single-integer for dense min/max splits.
    pub fn primary_split_key(&self) -> Option<crate::key::SplitKey> {
        if self.primary_key.is_empty() {
            return None;
        }
        let nullable = self
            .primary_key
            .iter()
            .any(|name| self.column(name).is_none_or(|column| column.nullable));
        let single_integer = self.primary_key.len() == 1
            && self
                .column(&self.primary_key[0])
                .is_some_and(|column| column.column_type.is_signed_integer());
        Some(crate::key::SplitKey::Columns {
            names: self.primary_key.clone(),
            nullable,
            single_integer,
        })
    }

    /// Returns the column with the given name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|column| column.name == name)
    }

    /// Returns this table restricted to its leaf partition `partition` (see
    /// [`TableSchema::partition`]), as the connectors receive it for one chunk.
    #[must_use]
    pub fn for_partition(&self, partition: &str) -> TableSchema {
        debug_assert!(
            self.partitioning
                .as_ref()
                .and_then(|partitioning| partitioning.partition(partition))
                .is_some_and(|found| found.leaf),
            "{partition} is not a leaf partition of {}",
            self.name
        );
        TableSchema {
            partition: Some(partition.to_string()),
            ..self.clone()
        }
    }

    /// The leaf partition this schema is restricted to, with its description.
    pub fn scoped_partition(&self) -> Option<&TablePartition> {
        let name = self.partition.as_deref()?;
        self.partitioning.as_ref()?.partition(name)
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
