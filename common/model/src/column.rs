//! One typed view of an Arrow column, shared by everything that reads a batch value by
//! value: the canonical checksum and every sink's encoder.
//!
//! A [`ColumnView`] is built once per column of a batch: it downcasts the array and keeps
//! borrowed slices of its buffers, so reading a row is a `match` and an index, with no
//! allocation and no dynamic dispatch. [`ColumnView::cell`] returns a [`CellRef`], the
//! value borrowed from the batch and widened where no information is lost (every integer
//! that fits `i64` becomes [`CellRef::Int`], a `Float32` becomes an `f64`, each string and
//! binary layout one variant). The Arrow types a view accepts are listed once, in
//! [`ColumnView::new`]; a new type is taught here, and each reader then says, in its own
//! `match` on [`CellRef`], what it does with it.
//!
//! What the Arrow type does not say (decimal or JSON text, variant encodings) is in the
//! field's metadata and read by [`ColumnMeaning::of_field`].

use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type,
    Decimal256Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, BinaryArray, BinaryViewArray, BooleanArray, FixedSizeBinaryArray, LargeBinaryArray,
    LargeStringArray, PrimitiveArray, StringArray, StringViewArray,
};
use arrow_buffer::{NullBuffer, i256};
use arrow_schema::{DataType, Field, TimeUnit};

use crate::schema::{LOGICAL_METADATA_KEY, VARIANT_METADATA_KEY};

/// A column that a [`ColumnView`] cannot read, with its name and Arrow type.
#[derive(Debug, thiserror::Error)]
#[error("column {column} has Arrow type {data_type}{kind}")]
pub struct ColumnViewError {
    /// The column's name.
    pub column: String,
    /// The Arrow type the column reports, as Arrow displays it.
    pub data_type: String,
    /// What keeps the column from being read.
    pub kind: ColumnViewErrorKind,
}

/// What keeps a [`ColumnView`] from reading a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnViewErrorKind {
    /// The Arrow type is not one a [`ColumnView`] reads.
    UnsupportedType,
    /// The array's concrete type does not match the data type it reports (an Arrow bug).
    ArrayTypeMismatch,
}

impl std::fmt::Display for ColumnViewErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ColumnViewErrorKind::UnsupportedType => ", which ferry cannot read",
            ColumnViewErrorKind::ArrayTypeMismatch => " but its array is of another type",
        })
    }
}

/// One value of a column, borrowed from its batch.
///
/// Each variant names the Arrow types it comes from. A reader matches the variants it can
/// write and refuses the others; the units of times and timestamps are kept, not converted,
/// so a reader that needs microseconds matches `unit: TimeUnit::Microsecond`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CellRef<'a> {
    /// A null slot of any type, and every slot of a `Null` column.
    Null,
    /// `Boolean`.
    Bool(bool),
    /// `Int8`, `Int16`, `Int32`, `Int64`, `UInt8`, `UInt16` and `UInt32`: every integer type
    /// whose values all fit `i64`.
    Int(i64),
    /// `UInt64`.
    UInt64(u64),
    /// `Float64`, and `Float32` widened (exactly) to 64 bits.
    Float(f64),
    /// `Utf8`, `LargeUtf8` and `Utf8View`.
    Utf8(&'a str),
    /// `Binary`, `LargeBinary` and `BinaryView`.
    Binary(&'a [u8]),
    /// `FixedSizeBinary(n)`: exactly `n` bytes.
    FixedSizeBinary(&'a [u8]),
    /// `Date32`: days since 1970-01-01.
    Date32(i32),
    /// `Date64`: milliseconds since 1970-01-01T00:00:00.
    Date64(i64),
    /// `Time32(unit)` (widened) and `Time64(unit)`: `value` units since midnight.
    Time {
        /// Units since midnight.
        value: i64,
        /// The column's unit: seconds or milliseconds for `Time32`, microseconds or
        /// nanoseconds for `Time64`.
        unit: TimeUnit,
    },
    /// `Timestamp(unit, time_zone)`: `value` units since 1970-01-01T00:00:00 UTC (an Arrow
    /// timestamp counts from the UTC epoch whatever its zone annotation).
    Timestamp {
        /// Units since the epoch.
        value: i64,
        /// The column's unit.
        unit: TimeUnit,
        /// The column's time zone annotation, if any.
        time_zone: Option<&'a str>,
    },
    /// `Decimal32`, `Decimal64` and `Decimal128` (widened): `coefficient × 10^(-scale)`.
    Decimal {
        /// The unscaled value.
        coefficient: i128,
        /// Digits after the point; negative for a multiple of a power of ten.
        scale: i8,
    },
    /// `Decimal256`: `coefficient × 10^(-scale)`.
    Decimal256 {
        /// The unscaled value.
        coefficient: i256,
        /// Digits after the point; negative for a multiple of a power of ten.
        scale: i8,
    },
}

/// A column of a batch, downcast once: [`ColumnView::cell`] reads any row without
/// allocating. Borrows the array's buffers; copies nothing.
#[derive(Debug)]
pub struct ColumnView<'a> {
    data_type: &'a DataType,
    /// The validity bitmap, or `None` when no slot is null (which skips the per-row check).
    nulls: Option<&'a NullBuffer>,
    values: TypedValues<'a>,
}

/// A column's values by Arrow type. Primitive columns are plain slices of the batch's
/// buffers, already offset for sliced arrays.
#[derive(Debug)]
enum TypedValues<'a> {
    AllNull,
    Boolean(&'a BooleanArray),
    Int8(&'a [i8]),
    Int16(&'a [i16]),
    Int32(&'a [i32]),
    Int64(&'a [i64]),
    UInt8(&'a [u8]),
    UInt16(&'a [u16]),
    UInt32(&'a [u32]),
    UInt64(&'a [u64]),
    Float32(&'a [f32]),
    Float64(&'a [f64]),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
    BinaryView(&'a BinaryViewArray),
    FixedSizeBinary(&'a FixedSizeBinaryArray),
    Date32(&'a [i32]),
    Date64(&'a [i64]),
    /// Values and unit (seconds or milliseconds).
    Time32(&'a [i32], TimeUnit),
    /// Values and unit (microseconds or nanoseconds).
    Time64(&'a [i64], TimeUnit),
    /// Values, unit and time zone.
    Timestamp(&'a [i64], TimeUnit, Option<&'a str>),
    /// Coefficients and scale, for each decimal width.
    Decimal32(&'a [i32], i8),
    Decimal64(&'a [i64], i8),
    Decimal128(&'a [i128], i8),
    Decimal256(&'a [i256], i8),
}

impl<'a> ColumnView<'a> {
    /// Downcasts `array`, the column named `column_name`.
    ///
    /// Reads `Null`, `Boolean`, every integer and float width but `Float16`, the three string
    /// and three binary layouts, `FixedSizeBinary`, `Date32`, `Date64`, `Time32`, `Time64`
    /// and `Timestamp` of every unit and zone, and `Decimal32` to `Decimal256`. Returns
    /// a [`ColumnViewError`] of kind [`ColumnViewErrorKind::UnsupportedType`], naming the
    /// column and its type, for any other.
    pub fn new(column_name: &str, array: &'a dyn Array) -> Result<Self, ColumnViewError> {
        let downcast = Downcast { column_name, array };
        let data_type = array.data_type();
        let values = match data_type {
            DataType::Null => TypedValues::AllNull,
            DataType::Boolean => TypedValues::Boolean(downcast.array()?),
            DataType::Int8 => TypedValues::Int8(downcast.primitive::<Int8Type>()?),
            DataType::Int16 => TypedValues::Int16(downcast.primitive::<Int16Type>()?),
            DataType::Int32 => TypedValues::Int32(downcast.primitive::<Int32Type>()?),
            DataType::Int64 => TypedValues::Int64(downcast.primitive::<Int64Type>()?),
            DataType::UInt8 => TypedValues::UInt8(downcast.primitive::<UInt8Type>()?),
            DataType::UInt16 => TypedValues::UInt16(downcast.primitive::<UInt16Type>()?),
            DataType::UInt32 => TypedValues::UInt32(downcast.primitive::<UInt32Type>()?),
            DataType::UInt64 => TypedValues::UInt64(downcast.primitive::<UInt64Type>()?),
            DataType::Float32 => TypedValues::Float32(downcast.primitive::<Float32Type>()?),
            DataType::Float64 => TypedValues::Float64(downcast.primitive::<Float64Type>()?),
            DataType::Utf8 => TypedValues::Utf8(downcast.array()?),
            DataType::LargeUtf8 => TypedValues::LargeUtf8(downcast.array()?),
            DataType::Utf8View => TypedValues::Utf8View(downcast.array()?),
            DataType::Binary => TypedValues::Binary(downcast.array()?),
            DataType::LargeBinary => TypedValues::LargeBinary(downcast.array()?),
            DataType::BinaryView => TypedValues::BinaryView(downcast.array()?),
            DataType::FixedSizeBinary(_) => TypedValues::FixedSizeBinary(downcast.array()?),
            DataType::Date32 => TypedValues::Date32(downcast.primitive::<Date32Type>()?),
            DataType::Date64 => TypedValues::Date64(downcast.primitive::<Date64Type>()?),
            DataType::Time32(unit @ TimeUnit::Second) => {
                TypedValues::Time32(downcast.primitive::<Time32SecondType>()?, *unit)
            }
            DataType::Time32(unit @ TimeUnit::Millisecond) => {
                TypedValues::Time32(downcast.primitive::<Time32MillisecondType>()?, *unit)
            }
            DataType::Time64(unit @ TimeUnit::Microsecond) => {
                TypedValues::Time64(downcast.primitive::<Time64MicrosecondType>()?, *unit)
            }
            DataType::Time64(unit @ TimeUnit::Nanosecond) => {
                TypedValues::Time64(downcast.primitive::<Time64NanosecondType>()?, *unit)
            }
            DataType::Timestamp(unit, time_zone) => {
                let values = match unit {
                    TimeUnit::Second => downcast.primitive::<TimestampSecondType>()?,
                    TimeUnit::Millisecond => downcast.primitive::<TimestampMillisecondType>()?,
                    TimeUnit::Microsecond => downcast.primitive::<TimestampMicrosecondType>()?,
                    TimeUnit::Nanosecond => downcast.primitive::<TimestampNanosecondType>()?,
                };
                TypedValues::Timestamp(values, *unit, time_zone.as_deref())
            }
            DataType::Decimal32(_, scale) => {
                TypedValues::Decimal32(downcast.primitive::<Decimal32Type>()?, *scale)
            }
            DataType::Decimal64(_, scale) => {
                TypedValues::Decimal64(downcast.primitive::<Decimal64Type>()?, *scale)
            }
            DataType::Decimal128(_, scale) => {
                TypedValues::Decimal128(downcast.primitive::<Decimal128Type>()?, *scale)
            }
            DataType::Decimal256(_, scale) => {
                TypedValues::Decimal256(downcast.primitive::<Decimal256Type>()?, *scale)
            }
            _ => return Err(downcast.unsupported()),
        };
        Ok(Self {
            data_type,
            nulls: array.nulls().filter(|nulls| nulls.null_count() > 0),
            values,
        })
    }

    /// Returns the column's Arrow type.
    pub fn data_type(&self) -> &'a DataType {
        self.data_type
    }

    /// Returns the value at `row`. Panics when `row` is not below the column's length, like
    /// indexing a slice.
    // Always inlined, so that this match and the reader's match on the returned cell fold
    // into one: called out of line, the checksum of a numeric batch ran 16% more
    // instructions than with its own downcast enum; inlined, 4% fewer.
    #[inline(always)]
    pub fn cell(&self, row: usize) -> CellRef<'a> {
        if let Some(nulls) = self.nulls
            && nulls.is_null(row)
        {
            return CellRef::Null;
        }
        match &self.values {
            TypedValues::AllNull => CellRef::Null,
            TypedValues::Boolean(array) => CellRef::Bool(array.value(row)),
            TypedValues::Int8(values) => CellRef::Int(i64::from(values[row])),
            TypedValues::Int16(values) => CellRef::Int(i64::from(values[row])),
            TypedValues::Int32(values) => CellRef::Int(i64::from(values[row])),
            TypedValues::Int64(values) => CellRef::Int(values[row]),
            TypedValues::UInt8(values) => CellRef::Int(i64::from(values[row])),
            TypedValues::UInt16(values) => CellRef::Int(i64::from(values[row])),
            TypedValues::UInt32(values) => CellRef::Int(i64::from(values[row])),
            TypedValues::UInt64(values) => CellRef::UInt64(values[row]),
            TypedValues::Float32(values) => CellRef::Float(f64::from(values[row])),
            TypedValues::Float64(values) => CellRef::Float(values[row]),
            TypedValues::Utf8(array) => CellRef::Utf8(array.value(row)),
            TypedValues::LargeUtf8(array) => CellRef::Utf8(array.value(row)),
            TypedValues::Utf8View(array) => CellRef::Utf8(array.value(row)),
            TypedValues::Binary(array) => CellRef::Binary(array.value(row)),
            TypedValues::LargeBinary(array) => CellRef::Binary(array.value(row)),
            TypedValues::BinaryView(array) => CellRef::Binary(array.value(row)),
            TypedValues::FixedSizeBinary(array) => CellRef::FixedSizeBinary(array.value(row)),
            TypedValues::Date32(values) => CellRef::Date32(values[row]),
            TypedValues::Date64(values) => CellRef::Date64(values[row]),
            TypedValues::Time32(values, unit) => CellRef::Time {
                value: i64::from(values[row]),
                unit: *unit,
            },
            TypedValues::Time64(values, unit) => CellRef::Time {
                value: values[row],
                unit: *unit,
            },
            TypedValues::Timestamp(values, unit, time_zone) => CellRef::Timestamp {
                value: values[row],
                unit: *unit,
                time_zone: *time_zone,
            },
            TypedValues::Decimal32(values, scale) => decimal_cell(i128::from(values[row]), *scale),
            TypedValues::Decimal64(values, scale) => decimal_cell(i128::from(values[row]), *scale),
            TypedValues::Decimal128(values, scale) => decimal_cell(values[row], *scale),
            TypedValues::Decimal256(values, scale) => CellRef::Decimal256 {
                coefficient: values[row],
                scale: *scale,
            },
        }
    }
}

/// The cell of a decimal of at most 128 bits.
#[inline(always)]
fn decimal_cell(coefficient: i128, scale: i8) -> CellRef<'static> {
    CellRef::Decimal { coefficient, scale }
}

/// The column being viewed, for downcasts that name it when they fail.
struct Downcast<'a, 'name> {
    column_name: &'name str,
    array: &'a dyn Array,
}

impl<'a> Downcast<'a, '_> {
    fn array<A: Array + 'static>(&self) -> Result<&'a A, ColumnViewError> {
        self.array
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| self.error(ColumnViewErrorKind::ArrayTypeMismatch))
    }

    fn primitive<T: ArrowPrimitiveType>(&self) -> Result<&'a [T::Native], ColumnViewError> {
        let primitive_array: &'a PrimitiveArray<T> = self.array()?;
        Ok(primitive_array.values())
    }

    fn unsupported(&self) -> ColumnViewError {
        self.error(ColumnViewErrorKind::UnsupportedType)
    }

    fn error(&self, kind: ColumnViewErrorKind) -> ColumnViewError {
        ColumnViewError {
            column: self.column_name.to_string(),
            data_type: self.array.data_type().to_string(),
            kind,
        }
    }
}

/// What a column's values mean beyond their Arrow type, as its field's metadata says
/// ([`LOGICAL_METADATA_KEY`], [`VARIANT_METADATA_KEY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnMeaning {
    /// The Arrow type says it all.
    Plain,
    /// Decimal text (`ferry.logical = decimal`; carried as `Utf8`).
    DecimalText,
    /// JSON text (`ferry.logical = json`; carried as `Utf8`).
    JsonText,
    /// Canonically encoded dynamic values (`ferry.variant`; carried as a binary type), see
    /// [`crate::checksum::decode_variant`].
    Variant,
}

impl ColumnMeaning {
    /// Reads the meaning of `field`'s values from its metadata. The variant marker wins over
    /// a logical type; an unknown logical type is [`ColumnMeaning::Plain`].
    pub fn of_field(field: &Field) -> Self {
        let metadata = field.metadata();
        if metadata.contains_key(VARIANT_METADATA_KEY) {
            return ColumnMeaning::Variant;
        }
        match metadata.get(LOGICAL_METADATA_KEY).map(String::as_str) {
            Some("decimal") => ColumnMeaning::DecimalText,
            Some("json") => ColumnMeaning::JsonText,
            _ => ColumnMeaning::Plain,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, Date32Array, Date64Array, Decimal32Array, Decimal64Array, Decimal128Array,
        Decimal256Array, Float16Array, Float32Array, Float64Array, Int8Array, Int16Array,
        Int32Array, Int64Array, ListArray, NullArray, Time32MillisecondArray, Time32SecondArray,
        Time64MicrosecondArray, Time64NanosecondArray, TimestampMicrosecondArray,
        TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt8Array,
        UInt16Array, UInt32Array, UInt64Array,
    };

    use super::*;

    /// The cells of a one-column batch, row by row.
    fn cells_of(array: &dyn Array) -> Vec<CellRef<'_>> {
        let view = ColumnView::new("c", array).unwrap();
        (0..array.len()).map(|row| view.cell(row)).collect()
    }

    /// The cell of a one-value column.
    fn single_cell(array: &dyn Array) -> CellRef<'_> {
        assert_eq!(array.len(), 1);
        cells_of(array)[0]
    }

    #[test]
    fn every_integer_width_reads_as_its_value() {
        let cases: Vec<(ArrayRef, CellRef<'static>)> = vec![
            (Arc::new(Int8Array::from(vec![i8::MIN])), CellRef::Int(-128)),
            (
                Arc::new(Int16Array::from(vec![i16::MIN])),
                CellRef::Int(-32_768),
            ),
            (
                Arc::new(Int32Array::from(vec![i32::MIN])),
                CellRef::Int(i64::from(i32::MIN)),
            ),
            (
                Arc::new(Int64Array::from(vec![i64::MIN])),
                CellRef::Int(i64::MIN),
            ),
            (Arc::new(UInt8Array::from(vec![u8::MAX])), CellRef::Int(255)),
            (
                Arc::new(UInt16Array::from(vec![u16::MAX])),
                CellRef::Int(65_535),
            ),
            (
                Arc::new(UInt32Array::from(vec![u32::MAX])),
                CellRef::Int(i64::from(u32::MAX)),
            ),
            (
                Arc::new(UInt64Array::from(vec![u64::MAX])),
                CellRef::UInt64(u64::MAX),
            ),
        ];
        for (array, expected) in &cases {
            assert_eq!(
                single_cell(array.as_ref()),
                *expected,
                "{}",
                array.data_type()
            );
        }
    }

    #[test]
    fn booleans_floats_and_nulls_read_as_their_values() {
        let booleans = BooleanArray::from(vec![Some(true), None, Some(false)]);
        assert_eq!(
            cells_of(&booleans),
            vec![CellRef::Bool(true), CellRef::Null, CellRef::Bool(false)]
        );
        assert_eq!(
            single_cell(&Float32Array::from(vec![0.1f32])),
            CellRef::Float(f64::from(0.1f32))
        );
        let CellRef::Float(negative_zero) = single_cell(&Float64Array::from(vec![-0.0])) else {
            panic!("expected a float");
        };
        assert_eq!(negative_zero.to_bits(), (-0.0f64).to_bits());
        assert_eq!(
            cells_of(&NullArray::new(2)),
            vec![CellRef::Null, CellRef::Null]
        );
    }

    #[test]
    fn every_string_and_binary_layout_reads_as_borrowed_bytes() {
        let strings: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["héllo"])),
            Arc::new(LargeStringArray::from(vec!["héllo"])),
            Arc::new(StringViewArray::from(vec!["héllo"])),
        ];
        for array in &strings {
            assert_eq!(single_cell(array.as_ref()), CellRef::Utf8("héllo"));
        }
        let binaries: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from(vec![&b"\x00\xff"[..]])),
            Arc::new(LargeBinaryArray::from(vec![&b"\x00\xff"[..]])),
            Arc::new(BinaryViewArray::from(vec![&b"\x00\xff"[..]])),
        ];
        for array in &binaries {
            assert_eq!(single_cell(array.as_ref()), CellRef::Binary(b"\x00\xff"));
        }
        let fixed = FixedSizeBinaryArray::try_from_iter(vec![[1u8, 2, 3]].into_iter()).unwrap();
        assert_eq!(single_cell(&fixed), CellRef::FixedSizeBinary(&[1, 2, 3]));
    }

    #[test]
    fn dates_times_and_timestamps_keep_their_units_and_zone() {
        assert_eq!(
            single_cell(&Date32Array::from(vec![-3])),
            CellRef::Date32(-3)
        );
        assert_eq!(
            single_cell(&Date64Array::from(vec![86_400_000])),
            CellRef::Date64(86_400_000)
        );
        let times: Vec<(ArrayRef, TimeUnit)> = vec![
            (Arc::new(Time32SecondArray::from(vec![7])), TimeUnit::Second),
            (
                Arc::new(Time32MillisecondArray::from(vec![7])),
                TimeUnit::Millisecond,
            ),
            (
                Arc::new(Time64MicrosecondArray::from(vec![7])),
                TimeUnit::Microsecond,
            ),
            (
                Arc::new(Time64NanosecondArray::from(vec![7])),
                TimeUnit::Nanosecond,
            ),
        ];
        for (array, unit) in &times {
            assert_eq!(
                single_cell(array.as_ref()),
                CellRef::Time {
                    value: 7,
                    unit: *unit
                }
            );
        }
        let timestamps: Vec<(ArrayRef, TimeUnit)> = vec![
            (
                Arc::new(TimestampSecondArray::from(vec![-9])),
                TimeUnit::Second,
            ),
            (
                Arc::new(TimestampMillisecondArray::from(vec![-9])),
                TimeUnit::Millisecond,
            ),
            (
                Arc::new(TimestampMicrosecondArray::from(vec![-9])),
                TimeUnit::Microsecond,
            ),
            (
                Arc::new(TimestampNanosecondArray::from(vec![-9])),
                TimeUnit::Nanosecond,
            ),
        ];
        for (array, unit) in &timestamps {
            assert_eq!(
                single_cell(array.as_ref()),
                CellRef::Timestamp {
                    value: -9,
                    unit: *unit,
                    time_zone: None
                }
            );
        }
        let zoned = TimestampMicrosecondArray::from(vec![5]).with_timezone("+02:00");
        assert_eq!(
            single_cell(&zoned),
            CellRef::Timestamp {
                value: 5,
                unit: TimeUnit::Microsecond,
                time_zone: Some("+02:00")
            }
        );
    }

    #[test]
    fn every_decimal_width_reads_its_coefficient_and_scale() {
        let decimals: Vec<ArrayRef> = vec![
            Arc::new(
                Decimal32Array::from(vec![-150])
                    .with_precision_and_scale(9, 2)
                    .unwrap(),
            ),
            Arc::new(
                Decimal64Array::from(vec![-150])
                    .with_precision_and_scale(18, 2)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from(vec![-150])
                    .with_precision_and_scale(38, 2)
                    .unwrap(),
            ),
        ];
        for array in &decimals {
            assert_eq!(
                single_cell(array.as_ref()),
                CellRef::Decimal {
                    coefficient: -150,
                    scale: 2
                }
            );
        }
        let wide = i256::from_i128(i128::MAX).wrapping_mul(i256::from_i128(10));
        let decimal256 = Decimal256Array::from(vec![wide])
            .with_precision_and_scale(76, -3)
            .unwrap();
        assert_eq!(
            single_cell(&decimal256),
            CellRef::Decimal256 {
                coefficient: wide,
                scale: -3
            }
        );
    }

    #[test]
    fn a_sliced_column_reads_its_own_rows_and_nulls() {
        let full = Int32Array::from(vec![Some(1), None, Some(3), Some(4)]);
        let sliced = full.slice(1, 3);
        assert_eq!(
            cells_of(&sliced),
            vec![CellRef::Null, CellRef::Int(3), CellRef::Int(4)]
        );
        let strings = StringArray::from(vec![Some("a"), None, Some("c")]);
        assert_eq!(
            cells_of(&strings.slice(1, 2)),
            vec![CellRef::Null, CellRef::Utf8("c")]
        );
    }

    #[test]
    fn an_unsupported_type_is_refused_with_the_column_named() {
        let half = Float16Array::from(vec![None]);
        let error = ColumnView::new("h", &half).unwrap_err();
        assert!(
            matches!(&error, ColumnViewError { column, data_type, kind: ColumnViewErrorKind::UnsupportedType }
                if column == "h" && data_type == "Float16"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "column h has Arrow type Float16, which ferry cannot read"
        );
        let mismatch = ColumnViewError {
            kind: ColumnViewErrorKind::ArrayTypeMismatch,
            ..error
        };
        assert_eq!(
            mismatch.to_string(),
            "column h has Arrow type Float16 but its array is of another type"
        );
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        let error = ColumnView::new("items", &list).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("column items has Arrow type List("),
            "{error}"
        );
    }

    #[test]
    fn meaning_comes_from_the_field_metadata() {
        let field_with = |entries: &[(&str, &str)]| {
            Field::new("c", DataType::Utf8, true).with_metadata(
                entries
                    .iter()
                    .map(|(key, value)| ((*key).to_string(), (*value).to_string()))
                    .collect::<HashMap<_, _>>(),
            )
        };
        assert_eq!(
            ColumnMeaning::of_field(&field_with(&[])),
            ColumnMeaning::Plain
        );
        assert_eq!(
            ColumnMeaning::of_field(&field_with(&[(LOGICAL_METADATA_KEY, "decimal")])),
            ColumnMeaning::DecimalText
        );
        assert_eq!(
            ColumnMeaning::of_field(&field_with(&[(LOGICAL_METADATA_KEY, "json")])),
            ColumnMeaning::JsonText
        );
        assert_eq!(
            ColumnMeaning::of_field(&field_with(&[(LOGICAL_METADATA_KEY, "other")])),
            ColumnMeaning::Plain
        );
        assert_eq!(
            ColumnMeaning::of_field(&field_with(&[
                (VARIANT_METADATA_KEY, "1"),
                (LOGICAL_METADATA_KEY, "decimal")
            ])),
            ColumnMeaning::Variant
        );
    }
}
