//! Builders of the Arrow carriers of [`ColumnType`]s, shared by the connectors that decode
//! their engine's values into batches: which Arrow builder holds which ferry type is decided
//! once, here. Each connector matches on the variants to append its own values.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder,
    UInt32Builder, UInt64Builder,
};
use ferry_model::schema::ColumnType;

/// One column of a batch being built, typed by its carrier.
pub enum CarrierBuilder {
    /// `Bool`.
    Bool(BooleanBuilder),
    /// `Int8`.
    Int8(Int8Builder),
    /// `Int16`, `Year`.
    Int16(Int16Builder),
    /// `Int32`.
    Int32(Int32Builder),
    /// `Int64`.
    Int64(Int64Builder),
    /// `UInt8`.
    UInt8(UInt8Builder),
    /// `UInt16`.
    UInt16(UInt16Builder),
    /// `UInt32`.
    UInt32(UInt32Builder),
    /// `UInt64`, `Bit`.
    UInt64(UInt64Builder),
    /// `Float32`.
    Float32(Float32Builder),
    /// `Float64`.
    Float64(Float64Builder),
    /// Every type carried as text: decimal, text, timetz, interval, json, enum, set, array.
    Utf8(StringBuilder),
    /// `Blob`.
    Binary(BinaryBuilder),
    /// `Uuid`, 16 bytes.
    Uuid(FixedSizeBinaryBuilder),
    /// `Date`, days since 1970-01-01.
    Date32(Date32Builder),
    /// `Time`, microseconds since midnight.
    Time64(Time64MicrosecondBuilder),
    /// `Timestamp` (no zone) and `TimestampTz` (zone `UTC`), microseconds since the epoch.
    Timestamp(TimestampMicrosecondBuilder),
}

impl CarrierBuilder {
    /// A builder for the carrier of `column_type` with room for `rows` rows; `None` for
    /// `Variant`, which only SQLite produces.
    pub fn new(column_type: &ColumnType, rows: usize) -> Option<Self> {
        Some(match column_type {
            ColumnType::Bool => Self::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Int8 => Self::Int8(Int8Builder::with_capacity(rows)),
            ColumnType::Int16 | ColumnType::Year => Self::Int16(Int16Builder::with_capacity(rows)),
            ColumnType::Int32 => Self::Int32(Int32Builder::with_capacity(rows)),
            ColumnType::Int64 => Self::Int64(Int64Builder::with_capacity(rows)),
            ColumnType::UInt8 => Self::UInt8(UInt8Builder::with_capacity(rows)),
            ColumnType::UInt16 => Self::UInt16(UInt16Builder::with_capacity(rows)),
            ColumnType::UInt32 => Self::UInt32(UInt32Builder::with_capacity(rows)),
            ColumnType::UInt64 | ColumnType::Bit { .. } => {
                Self::UInt64(UInt64Builder::with_capacity(rows))
            }
            ColumnType::Float32 => Self::Float32(Float32Builder::with_capacity(rows)),
            ColumnType::Float64 => Self::Float64(Float64Builder::with_capacity(rows)),
            ColumnType::Decimal { .. }
            | ColumnType::Text
            | ColumnType::TimeTz
            | ColumnType::Interval
            | ColumnType::Json
            | ColumnType::Enum { .. }
            | ColumnType::Set { .. }
            | ColumnType::Array { .. } => Self::Utf8(StringBuilder::new()),
            ColumnType::Blob => Self::Binary(BinaryBuilder::new()),
            ColumnType::Uuid => Self::Uuid(FixedSizeBinaryBuilder::with_capacity(rows, 16)),
            ColumnType::Date => Self::Date32(Date32Builder::with_capacity(rows)),
            ColumnType::Time => Self::Time64(Time64MicrosecondBuilder::with_capacity(rows)),
            ColumnType::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows))
            }
            ColumnType::TimestampTz => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            ColumnType::Variant => return None,
        })
    }

    /// Finishes the column, leaving the builder empty for the next batch.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(builder) => Arc::new(builder.finish()),
            Self::Int8(builder) => Arc::new(builder.finish()),
            Self::Int16(builder) => Arc::new(builder.finish()),
            Self::Int32(builder) => Arc::new(builder.finish()),
            Self::Int64(builder) => Arc::new(builder.finish()),
            Self::UInt8(builder) => Arc::new(builder.finish()),
            Self::UInt16(builder) => Arc::new(builder.finish()),
            Self::UInt32(builder) => Arc::new(builder.finish()),
            Self::UInt64(builder) => Arc::new(builder.finish()),
            Self::Float32(builder) => Arc::new(builder.finish()),
            Self::Float64(builder) => Arc::new(builder.finish()),
            Self::Utf8(builder) => Arc::new(builder.finish()),
            Self::Binary(builder) => Arc::new(builder.finish()),
            Self::Uuid(builder) => Arc::new(builder.finish()),
            Self::Date32(builder) => Arc::new(builder.finish()),
            Self::Time64(builder) => Arc::new(builder.finish()),
            Self::Timestamp(builder) => Arc::new(builder.finish()),
        }
    }

    /// Appends a NULL.
    pub fn append_null(&mut self) {
        match self {
            Self::Bool(builder) => builder.append_null(),
            Self::Int8(builder) => builder.append_null(),
            Self::Int16(builder) => builder.append_null(),
            Self::Int32(builder) => builder.append_null(),
            Self::Int64(builder) => builder.append_null(),
            Self::UInt8(builder) => builder.append_null(),
            Self::UInt16(builder) => builder.append_null(),
            Self::UInt32(builder) => builder.append_null(),
            Self::UInt64(builder) => builder.append_null(),
            Self::Float32(builder) => builder.append_null(),
            Self::Float64(builder) => builder.append_null(),
            Self::Utf8(builder) => builder.append_null(),
            Self::Binary(builder) => builder.append_null(),
            Self::Uuid(builder) => builder.append_null(),
            Self::Date32(builder) => builder.append_null(),
            Self::Time64(builder) => builder.append_null(),
            Self::Timestamp(builder) => builder.append_null(),
        }
    }
}
