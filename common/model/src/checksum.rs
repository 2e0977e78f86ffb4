//! The canonical checksum: how ferry proves that a target range holds the same rows as the
//! source range, whichever engines sit on either side.
//!
//! This module is a cross-engine contract. Every connector, whether it hashes Arrow batches
//! with [`RangeChecksum::add_batch`] or computes the same value inside the database, MUST
//! produce exactly the bytes and numbers defined here. Changing any rule below changes every
//! checksum ever recorded: treat it like a wire format.
//!
//! # Value encoding
//!
//! Every value is encoded as one tag byte followed by a payload whose length the tag (and,
//! for TEXT and BYTES, a length prefix) determines, so an encoding is self-delimiting.
//! Every multi-byte integer is little-endian two's complement. The tags are in [`tag`].
//!
//! | Tag | Name      | Payload                                                   | Arrow types |
//! |-----|-----------|-----------------------------------------------------------|-------------|
//! | 0   | NULL      | none                                                      | a null slot of any type; `Null` |
//! | 1   | BOOL      | 1 byte: `0` false, `1` true                               | `Boolean` |
//! | 2   | INT       | `i128`, 16 bytes                                          | `Int8`..`Int64`, `UInt8`..`UInt64` |
//! | 3   | FLOAT     | IEEE 754 binary64 bits as `u64`, 8 bytes                  | `Float32`, `Float64` |
//! | 4   | TEXT      | byte length as `u64` (8 bytes), then the UTF-8 bytes      | `Utf8`, `LargeUtf8`, `Utf8View` |
//! | 5   | BYTES     | byte length as `u64` (8 bytes), then the bytes            | `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary` |
//! | 6   | DECIMAL   | normalized coefficient `i128` (16 bytes), then scale `i32` (4 bytes) | `Decimal32`, `Decimal64`, `Decimal128`, `Decimal256` |
//! | 7   | DATE      | days since 1970-01-01 as `i64`, 8 bytes                   | `Date32`, `Date64` |
//! | 8   | TIMESTAMP | nanoseconds since 1970-01-01T00:00:00 UTC as `i128`, 16 bytes | `Timestamp(unit, tz)` |
//! | 9   | TIME      | nanoseconds since midnight as `i64`, 8 bytes              | `Time32(unit)`, `Time64(unit)` |
//! | 10  | BIG_DECIMAL | byte length as `u64`, then the canonical decimal text   | `Utf8` with `ferry.logical = decimal` |
//! | 11  | JSON      | byte length as `u64`, then the canonical JSON text         | `Utf8` with `ferry.logical = json` |
//!
//! Rules for each tag:
//!
//! - NULL is typeless: a null integer and a null text encode alike, as the single byte `0`.
//! - INT: every integer width, signed or unsigned, widens to `i128`, so 5 stored as int32,
//!   int64 or uint64 has one encoding.
//! - FLOAT: a 32-bit float is first widened to 64 bits, which is exact. Every NaN, whatever its
//!   sign and payload, is encoded as the one quiet NaN `0x7ff8000000000000`. Every other value,
//!   infinities included, is encoded bit-exactly; in particular **-0.0 and +0.0 differ**. A
//!   copy MUST preserve the sign of zero: a sink that turns -0.0 into 0.0 has changed the data,
//!   and the verification says so.
//! - TEXT and BYTES: the bytes exactly as stored; no Unicode normalization, trimming, padding
//!   removal or case folding.
//! - DECIMAL: the value is `coefficient × 10^(-scale)`. Before encoding it is normalized: a
//!   zero coefficient becomes `(0, 0)`; otherwise, while the coefficient is divisible by 10,
//!   it is divided by 10 and the scale decremented. So 1.50 `(150, 2)` and 1.5 `(15, 1)` both
//!   encode as `(15, 1)`, and 1200 `(1200, 0)` as `(12, -2)`: the scale may be negative. A
//!   value whose normalized coefficient does not fit in `i128` has no encoding (an error).
//! - DATE: a `Date64` (milliseconds) is converted only when it is a whole number of days;
//!   otherwise it has no encoding (an error).
//! - TIMESTAMP: every Arrow time unit converts exactly to nanoseconds. An Arrow timestamp
//!   counts from the UTC epoch whatever its time zone annotation, so the same instant agrees
//!   across units and zones; a timestamp without a zone is encoded from its stored value.
//! - TIME: every Arrow time unit converts exactly to nanoseconds; a value whose nanosecond
//!   count does not fit in `i64` has no encoding (an error).
//!
//! - Decimal text (`Utf8` with [`LOGICAL_METADATA_KEY`] = `decimal`): the text is first put
//!   in canonical form ([`crate::decimal::normalize`]). When its coefficient fits in `i128`
//!   it is encoded exactly as DECIMAL above, so a text decimal and an Arrow decimal of the
//!   same value agree; otherwise (more than 38 digits, NaN, ±Infinity) as BIG_DECIMAL.
//! - JSON (`Utf8` with [`LOGICAL_METADATA_KEY`] = `json`): parsed and written back with object
//!   keys sorted bytewise, no insignificant whitespace, strings re-escaped minimally, and
//!   numbers in canonical decimal form; so `{"b":1.0, "a":[1]}` and `{"a": [1], "b": 1}`
//!   encode alike, as PostgreSQL `jsonb` and MySQL `JSON` would compare them.
//!
//! Values of different tags never compare equal: 1.5 as DECIMAL differs from 1.5 as FLOAT,
//! and 1 as INT from `true` as BOOL. Two engines that store a column differently must agree,
//! through the table schema, on one Arrow type before hashing.
//!
//! # Variant values
//!
//! A dynamically typed value ([`VariantValue`], used for SQLite columns without a fixed type)
//! is encoded with the same tags: NULL, INT (the value must fit in `i64`), FLOAT, TEXT or
//! BYTES, as [`encode_variant`] writes it. An Arrow `Binary`, `LargeBinary` or `BinaryView`
//! column whose field metadata contains [`VARIANT_METADATA_KEY`] holds one such encoding in
//! every non-null slot; those bytes join the row encoding unchanged, and an Arrow null in such
//! a column encodes as NULL. Each slot is validated with [`decode_variant`], which accepts
//! exactly the byte strings that [`encode_variant`] produces, so a variant value is always
//! canonical and self-delimiting.
//!
//! # Row hash
//!
//! A row's encoding is the concatenation of its column encodings in column order, with no
//! separator (the length prefixes make `('x0', 'y')` and `('x', '0y')` differ). The row hash is
//! XXH3-128 of that encoding with seed 0 and the default secret, read as the unsigned 128-bit
//! integer `(high64 << 64) | low64`.
//!
//! # Range checksum
//!
//! A range's [`RangeChecksum`] is the number of rows (modulo 2^64) and the sum of the row
//! hashes modulo 2^128. The sum makes the checksum independent of row order and of how the
//! rows are split into batches or chunks, and lets partial checksums be merged. It is a sum and
//! not an XOR because XOR cancels a pair of identical rows. An empty range is `(0, 0)`. The
//! text form is `{rows} rows, {sum as 32 lowercase hex digits}`.
//!
//! [`LOGICAL_METADATA_KEY`]: crate::schema::LOGICAL_METADATA_KEY
//! [`VARIANT_METADATA_KEY`]: crate::schema::VARIANT_METADATA_KEY

use std::fmt;

use arrow_array::{Array, RecordBatch};
use arrow_buffer::i256;
use arrow_schema::{DataType, Field, TimeUnit};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::column::{CellRef, ColumnMeaning, ColumnView, ColumnViewError, ColumnViewErrorKind};

/// The tag bytes that open every canonical value encoding (see the module documentation).
pub mod tag {
    /// A null of any type; no payload.
    pub const NULL: u8 = 0;
    /// A boolean; payload 1 byte, `0` or `1`.
    pub const BOOL: u8 = 1;
    /// An integer of any width; payload `i128` little-endian.
    pub const INT: u8 = 2;
    /// A floating-point number; payload the binary64 bits little-endian, NaN canonicalized.
    pub const FLOAT: u8 = 3;
    /// UTF-8 text; payload `u64` little-endian byte length, then the bytes.
    pub const TEXT: u8 = 4;
    /// Raw bytes; payload `u64` little-endian byte length, then the bytes.
    pub const BYTES: u8 = 5;
    /// A decimal; payload normalized coefficient `i128` then scale `i32`, both little-endian.
    pub const DECIMAL: u8 = 6;
    /// A date; payload days since 1970-01-01 as `i64` little-endian.
    pub const DATE: u8 = 7;
    /// A decimal too wide for DECIMAL, or NaN/±Infinity; payload `u64` little-endian byte
    /// length, then the canonical decimal text (see [`crate::decimal`]).
    pub const BIG_DECIMAL: u8 = 10;
    /// A JSON document; payload `u64` little-endian byte length, then its canonical text.
    pub const JSON: u8 = 11;
    /// An instant; payload nanoseconds since the Unix epoch (UTC) as `i128` little-endian.
    pub const TIMESTAMP: u8 = 8;
    /// A time of day; payload nanoseconds since midnight as `i64` little-endian.
    pub const TIME: u8 = 9;
}

/// The bits every NaN is encoded as: the quiet NaN with a zero payload and a clear sign bit.
pub const CANONICAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0000;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MILLISECOND: i64 = 1_000_000;
const NANOS_PER_MICROSECOND: i64 = 1_000;
const MILLISECONDS_PER_DAY: i64 = 86_400_000;

/// Size of a length prefix of TEXT and BYTES payloads.
const LENGTH_PREFIX_BYTES: usize = 8;

/// Why a value could not be checksummed or a variant encoding could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    /// The column's Arrow type has no canonical encoding.
    #[error("column {column} has type {data_type} that the canonical checksum does not support")]
    UnsupportedType {
        /// The column's name.
        column: String,
        /// The column's Arrow type, as Arrow displays it.
        data_type: String,
    },
    /// A column's field carries [`crate::schema::VARIANT_METADATA_KEY`] but its type is not
    /// a binary type.
    #[error("column {column} is marked as variant but has type {data_type}, not a binary type")]
    VariantColumnNotBinary {
        /// The column's name.
        column: String,
        /// The column's Arrow type, as Arrow displays it.
        data_type: String,
    },
    /// An array's concrete type does not match the data type it reports (an Arrow bug).
    #[error("column {column} reports type {data_type} but its array is of another type")]
    ArrayTypeMismatch {
        /// The column's name.
        column: String,
        /// The type the array reports, as Arrow displays it.
        data_type: String,
    },
    /// A byte string passed to [`decode_variant`] is not a canonical variant encoding.
    #[error("invalid variant encoding: {reason}")]
    InvalidVariant {
        /// What is wrong with the bytes.
        reason: &'static str,
    },
    /// A slot of a variant column is not a canonical variant encoding.
    #[error("column {column} row {row} holds an invalid variant encoding: {reason}")]
    InvalidVariantValue {
        /// The column's name.
        column: String,
        /// The row's index within its batch.
        row: usize,
        /// What is wrong with the bytes.
        reason: &'static str,
    },
    /// A value of a supported type has no canonical encoding (a `Date64` that is not a whole
    /// day, a decimal beyond `i128`, a time beyond `i64` nanoseconds).
    #[error("column {column} row {row} holds a value without a canonical encoding: {reason}")]
    UnrepresentableValue {
        /// The column's name.
        column: String,
        /// The row's index within its batch.
        row: usize,
        /// Why the value cannot be encoded.
        reason: &'static str,
    },
}

impl From<ColumnViewError> for ChecksumError {
    fn from(error: ColumnViewError) -> Self {
        let ColumnViewError {
            column,
            data_type,
            kind,
        } = error;
        match kind {
            ColumnViewErrorKind::UnsupportedType => {
                ChecksumError::UnsupportedType { column, data_type }
            }
            ColumnViewErrorKind::ArrayTypeMismatch => {
                ChecksumError::ArrayTypeMismatch { column, data_type }
            }
        }
    }
}

/// A dynamically typed value, as stored in a column without a fixed type (SQLite's storage
/// classes). Its encoding is the canonical encoding of the matching typed value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VariantValue<'a> {
    /// SQL NULL; encoded with tag NULL.
    Null,
    /// An integer; encoded with tag INT.
    Int(i64),
    /// A floating-point number; encoded with tag FLOAT.
    Real(f64),
    /// Text; encoded with tag TEXT.
    Text(&'a str),
    /// Bytes; encoded with tag BYTES.
    Blob(&'a [u8]),
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode_variant(value: &VariantValue<'_>, out: &mut Vec<u8>) {
    match *value {
        VariantValue::Null => push_null(out),
        VariantValue::Int(integer) => push_int(out, i128::from(integer)),
        VariantValue::Real(real) => push_float(out, real),
        VariantValue::Text(text) => push_length_prefixed(out, tag::TEXT, text.as_bytes()),
        VariantValue::Blob(blob) => push_length_prefixed(out, tag::BYTES, blob),
    }
}

/// Decodes exactly one variant value from `bytes`.
///
/// Accepts exactly the byte strings [`encode_variant`] produces. Returns
/// [`ChecksumError::InvalidVariant`] for empty input, an unknown tag or a tag without a variant
/// form (BOOL, DECIMAL, DATE, TIMESTAMP, TIME), a payload shorter than its tag or length prefix
/// requires, bytes after the value, text that is not UTF-8, an INT outside the `i64` range, or
/// a NaN other than the canonical one.
pub fn decode_variant(bytes: &[u8]) -> Result<VariantValue<'_>, ChecksumError> {
    let Some((&value_tag, payload)) = bytes.split_first() else {
        return Err(invalid_variant("empty input"));
    };
    match value_tag {
        tag::NULL => {
            expect_payload_len(payload, 0)?;
            Ok(VariantValue::Null)
        }
        tag::INT => {
            let integer = i128::from_le_bytes(fixed_payload::<16>(payload)?);
            let narrow = i64::try_from(integer)
                .map_err(|_| invalid_variant("integer outside the i64 range"))?;
            Ok(VariantValue::Int(narrow))
        }
        tag::FLOAT => {
            let bits = u64::from_le_bytes(fixed_payload::<8>(payload)?);
            let real = f64::from_bits(bits);
            if real.is_nan() && bits != CANONICAL_NAN_BITS {
                return Err(invalid_variant("nan is not the canonical nan"));
            }
            Ok(VariantValue::Real(real))
        }
        tag::TEXT => {
            let text_bytes = length_prefixed_payload(payload)?;
            let text = std::str::from_utf8(text_bytes)
                .map_err(|_| invalid_variant("text is not valid utf-8"))?;
            Ok(VariantValue::Text(text))
        }
        tag::BYTES => Ok(VariantValue::Blob(length_prefixed_payload(payload)?)),
        tag::BOOL | tag::DECIMAL | tag::DATE | tag::TIMESTAMP | tag::TIME => {
            Err(invalid_variant("tag has no variant form"))
        }
        _ => Err(invalid_variant("unknown tag")),
    }
}

fn invalid_variant(reason: &'static str) -> ChecksumError {
    ChecksumError::InvalidVariant { reason }
}

fn expect_payload_len(payload: &[u8], expected_len: usize) -> Result<(), ChecksumError> {
    if payload.len() < expected_len {
        return Err(invalid_variant("payload too short"));
    }
    if payload.len() > expected_len {
        return Err(invalid_variant("trailing bytes after the value"));
    }
    Ok(())
}

fn fixed_payload<const N: usize>(payload: &[u8]) -> Result<[u8; N], ChecksumError> {
    expect_payload_len(payload, N)?;
    let mut array = [0u8; N];
    array.copy_from_slice(payload);
    Ok(array)
}

fn length_prefixed_payload(payload: &[u8]) -> Result<&[u8], ChecksumError> {
    let Some((prefix, content)) = payload.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Err(invalid_variant("payload too short"));
    };
    let declared_len = u64::from_le_bytes(*prefix);
    // A length beyond usize cannot be present in memory, so it is too long for the payload.
    let declared_len =
        usize::try_from(declared_len).map_err(|_| invalid_variant("payload too short"))?;
    expect_payload_len(content, declared_len)?;
    Ok(content)
}

/// A range's checksum: its row count and the wrapping sum of its row hashes (see the module
/// documentation for the exact definition). Independent of row order and batch boundaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeChecksum {
    /// Number of rows, modulo 2^64.
    pub rows: u64,
    /// Sum of the rows' XXH3-128 hashes, modulo 2^128.
    pub sum: u128,
}

impl RangeChecksum {
    /// Adds every row of `batch` to the checksum.
    ///
    /// Returns [`ChecksumError::UnsupportedType`] (or [`ChecksumError::VariantColumnNotBinary`])
    /// when a column's type has no canonical encoding, and
    /// [`ChecksumError::UnrepresentableValue`] or [`ChecksumError::InvalidVariantValue`] when a
    /// value cannot be encoded. On error the checksum is left unchanged.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<(), ChecksumError> {
        let mut batch_sum: u128 = 0;
        for_each_row_hash(batch, |_, hash| batch_sum = batch_sum.wrapping_add(hash))?;
        // Committed only once every row encoded, so an error leaves `self` untouched.
        self.rows = self.rows.wrapping_add(batch.num_rows() as u64);
        self.sum = self.sum.wrapping_add(batch_sum);
        Ok(())
    }

    /// Adds each row of `batch` to the checksum of its range in `sums`: row `i` to
    /// `sums[ranges[i]]`, as [`RangeChecksum::add_batch`] of that range's rows alone would.
    /// Returns the number of rows whose range is `None` or past `sums` (not added). On
    /// error the checksums are left unchanged.
    pub fn add_batch_by_range(
        sums: &mut [RangeChecksum],
        batch: &RecordBatch,
        ranges: &[Option<usize>],
    ) -> Result<u64, ChecksumError> {
        let mut added = vec![RangeChecksum::default(); sums.len()];
        let mut outside = 0;
        for_each_row_hash(batch, |row, hash| {
            match ranges
                .get(row)
                .copied()
                .flatten()
                .and_then(|range| added.get_mut(range))
            {
                Some(checksum) => {
                    checksum.rows = checksum.rows.wrapping_add(1);
                    checksum.sum = checksum.sum.wrapping_add(hash);
                }
                None => outside += 1,
            }
        })?;
        for (sum, added) in sums.iter_mut().zip(added) {
            sum.merge(added);
        }
        Ok(outside)
    }

    /// Adds the rows counted by `other`, as if its batches had been added to `self`.
    pub fn merge(&mut self, other: RangeChecksum) {
        // Wrapping keeps merge associative and commutative for any inputs, including
        // checksums received from a peer.
        self.rows = self.rows.wrapping_add(other.rows);
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// An encoder per column of `batch`.
fn column_encoders(batch: &RecordBatch) -> Result<Vec<ColumnEncoder<'_>>, ChecksumError> {
    batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| ColumnEncoder::new(field, column.as_ref()))
        .collect()
}

/// Calls `each` with every row's index and hash (XXH3-128 of its canonical encoding).
fn for_each_row_hash(
    batch: &RecordBatch,
    mut each: impl FnMut(usize, u128),
) -> Result<(), ChecksumError> {
    let column_encoders = column_encoders(batch)?;
    let mut row_encoding: Vec<u8> = Vec::with_capacity(256);
    for row in 0..batch.num_rows() {
        row_encoding.clear();
        for column_encoder in &column_encoders {
            column_encoder.encode(row, &mut row_encoding)?;
        }
        each(row, xxh3_128(&row_encoding));
    }
    Ok(())
}

/// Every row of `batch` as its columns' canonical encodings (see the module
/// documentation), for comparing rows column by column: a row's hash is XXH3-128 of the
/// concatenation of its cells, exactly as [`RangeChecksum::add_batch`] computes it.
pub fn canonical_cells(batch: &RecordBatch) -> Result<Vec<Vec<Vec<u8>>>, ChecksumError> {
    let column_encoders = column_encoders(batch)?;
    (0..batch.num_rows())
        .map(|row| {
            column_encoders
                .iter()
                .map(|encoder| {
                    let mut cell = Vec::new();
                    encoder.encode(row, &mut cell)?;
                    Ok(cell)
                })
                .collect()
        })
        .collect()
}

impl fmt::Display for RangeChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows, {:032x}", self.rows, self.sum)
    }
}

/// One column of a batch: its typed view, and what its field's metadata says its values are.
struct ColumnEncoder<'a> {
    column_name: &'a str,
    view: ColumnView<'a>,
    /// Checked against the column's type in [`ColumnEncoder::new`]: decimal and JSON text
    /// are `Utf8`, variant values are `Binary`, `LargeBinary` or `BinaryView`.
    meaning: ColumnMeaning,
}

impl<'a> ColumnEncoder<'a> {
    fn new(field: &'a Field, array: &'a dyn Array) -> Result<Self, ChecksumError> {
        let column_name = field.name().as_str();
        let data_type = array.data_type();
        let meaning = ColumnMeaning::of_field(field);
        let logical_name = match meaning {
            ColumnMeaning::Plain => None,
            ColumnMeaning::Variant => {
                if !matches!(
                    data_type,
                    DataType::Binary | DataType::LargeBinary | DataType::BinaryView
                ) {
                    return Err(ChecksumError::VariantColumnNotBinary {
                        column: column_name.to_string(),
                        data_type: data_type.to_string(),
                    });
                }
                None
            }
            ColumnMeaning::DecimalText => Some("decimal"),
            ColumnMeaning::JsonText => Some("json"),
        };
        if let Some(logical) = logical_name
            && *data_type != DataType::Utf8
        {
            return Err(ChecksumError::UnsupportedType {
                column: column_name.to_string(),
                data_type: format!("{data_type} (as {logical}, which must be Utf8)"),
            });
        }
        Ok(Self {
            column_name,
            view: ColumnView::new(column_name, array)?,
            meaning,
        })
    }

    /// Appends the canonical encoding of the value at `row` to `out`.
    fn encode(&self, row: usize, out: &mut Vec<u8>) -> Result<(), ChecksumError> {
        match self.view.cell(row) {
            CellRef::Null => push_null(out),
            CellRef::Bool(value) => push_bool(out, value),
            CellRef::Int(value) => push_int(out, i128::from(value)),
            CellRef::UInt64(value) => push_int(out, i128::from(value)),
            CellRef::Float(value) => push_float(out, value),
            CellRef::Utf8(text) => match self.meaning {
                ColumnMeaning::DecimalText => self.push_decimal_text(row, text, out)?,
                ColumnMeaning::JsonText => {
                    let canonical = canonical_json(text).ok_or_else(|| {
                        self.unrepresentable(row, "text in a json column is not valid JSON")
                    })?;
                    push_length_prefixed(out, tag::JSON, canonical.as_bytes());
                }
                // A variant column is binary: `new` refuses one of text.
                ColumnMeaning::Plain | ColumnMeaning::Variant => {
                    push_length_prefixed(out, tag::TEXT, text.as_bytes());
                }
            },
            CellRef::Binary(encoded) if self.meaning == ColumnMeaning::Variant => {
                self.push_variant(row, encoded, out)?;
            }
            CellRef::Binary(bytes) | CellRef::FixedSizeBinary(bytes) => {
                push_length_prefixed(out, tag::BYTES, bytes);
            }
            CellRef::Date32(days) => push_date(out, i64::from(days)),
            CellRef::Date64(millis) => {
                if millis % MILLISECONDS_PER_DAY != 0 {
                    return Err(self.unrepresentable(row, "date64 is not a whole number of days"));
                }
                push_date(out, millis / MILLISECONDS_PER_DAY);
            }
            CellRef::Timestamp { value, unit, .. } => {
                // |i64| × 10^9 < 2^93: cannot overflow i128.
                push_timestamp(out, i128::from(value) * i128::from(nanos_per_unit(unit)));
            }
            CellRef::Time { value, unit } => {
                // A `Time32` (|i32| × 10^9 < 2^61) always fits; a `Time64` may not.
                let Some(nanos) = value.checked_mul(nanos_per_unit(unit)) else {
                    return Err(self.unrepresentable(row, "time beyond i64 nanoseconds"));
                };
                push_time(out, nanos);
            }
            CellRef::Decimal { coefficient, scale } => {
                push_decimal(out, coefficient, i32::from(scale));
            }
            CellRef::Decimal256 { coefficient, scale } => {
                let Some((normalized_coefficient, normalized_scale)) =
                    normalize_decimal256(coefficient, i32::from(scale))
                else {
                    return Err(self.unrepresentable(row, "decimal coefficient beyond i128"));
                };
                push_normalized_decimal(out, normalized_coefficient, normalized_scale);
            }
        }
        Ok(())
    }

    fn push_decimal_text(
        &self,
        row: usize,
        text: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), ChecksumError> {
        // Plain text (what engines print) that fits: its value directly, as the canonical
        // text below would give it, without building that text.
        if let Some((coefficient, scale)) = crate::decimal::plain_coefficient_scale(text) {
            push_decimal(out, coefficient, scale);
            return Ok(());
        }
        let canonical = crate::decimal::normalize(text)
            .map_err(|_| self.unrepresentable(row, "text in a decimal column is not a decimal"))?;
        match crate::decimal::to_coefficient_scale(&canonical) {
            Some((coefficient, scale)) => push_decimal(out, coefficient, scale),
            None => push_length_prefixed(out, tag::BIG_DECIMAL, canonical.as_bytes()),
        }
        Ok(())
    }

    fn push_variant(
        &self,
        row: usize,
        encoded: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ChecksumError> {
        // Validated so that a malformed slot cannot swallow or forge the next column's bytes.
        if let Err(error) = decode_variant(encoded) {
            let reason = match error {
                ChecksumError::InvalidVariant { reason } => reason,
                _ => "undecodable",
            };
            return Err(ChecksumError::InvalidVariantValue {
                column: self.column_name.to_string(),
                row,
                reason,
            });
        }
        out.extend_from_slice(encoded);
        Ok(())
    }

    fn unrepresentable(&self, row: usize, reason: &'static str) -> ChecksumError {
        ChecksumError::UnrepresentableValue {
            column: self.column_name.to_string(),
            row,
            reason,
        }
    }
}

fn nanos_per_unit(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => NANOS_PER_SECOND,
        TimeUnit::Millisecond => NANOS_PER_MILLISECOND,
        TimeUnit::Microsecond => NANOS_PER_MICROSECOND,
        TimeUnit::Nanosecond => 1,
    }
}

/// Returns the canonical text of a JSON document (see the module documentation), or
/// `None` when it is not valid JSON.
pub fn canonical_json(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut out = String::with_capacity(text.len());
    write_canonical_json(&value, &mut out);
    Some(out)
}

fn write_canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            let text = number.to_string();
            match crate::decimal::normalize(&text) {
                Ok(canonical) => out.push_str(&canonical),
                Err(_) => out.push_str(&text),
            }
        }
        Value::String(text) => out.push_str(&Value::String(text.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical_json(item, out);
            }
            out.push('}');
        }
    }
}

fn push_null(out: &mut Vec<u8>) {
    out.push(tag::NULL);
}

fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.push(tag::BOOL);
    out.push(u8::from(value));
}

fn push_int(out: &mut Vec<u8>, value: i128) {
    out.push(tag::INT);
    out.extend_from_slice(&value.to_le_bytes());
}

fn push_float(out: &mut Vec<u8>, value: f64) {
    let bits = if value.is_nan() {
        CANONICAL_NAN_BITS
    } else {
        value.to_bits()
    };
    out.push(tag::FLOAT);
    out.extend_from_slice(&bits.to_le_bytes());
}

fn push_length_prefixed(out: &mut Vec<u8>, value_tag: u8, content: &[u8]) {
    // usize is at most 64 bits on every target Rust supports: the cast is lossless.
    let content_len = content.len() as u64;
    out.push(value_tag);
    out.extend_from_slice(&content_len.to_le_bytes());
    out.extend_from_slice(content);
}

fn push_decimal(out: &mut Vec<u8>, coefficient: i128, scale: i32) {
    let (normalized_coefficient, normalized_scale) = normalize_decimal(coefficient, scale);
    push_normalized_decimal(out, normalized_coefficient, normalized_scale);
}

fn push_normalized_decimal(out: &mut Vec<u8>, coefficient: i128, scale: i32) {
    debug_assert_eq!(normalize_decimal(coefficient, scale), (coefficient, scale));
    out.push(tag::DECIMAL);
    out.extend_from_slice(&coefficient.to_le_bytes());
    out.extend_from_slice(&scale.to_le_bytes());
}

/// Strips trailing decimal zeros from the coefficient, reducing the scale to match; zero
/// becomes `(0, 0)`.
fn normalize_decimal(coefficient: i128, scale: i32) -> (i128, i32) {
    if coefficient == 0 {
        return (0, 0);
    }
    let mut stripped_coefficient = coefficient;
    let mut reduced_scale = scale;
    while stripped_coefficient % 10 == 0 {
        stripped_coefficient /= 10;
        reduced_scale -= 1;
    }
    (stripped_coefficient, reduced_scale)
}

/// Normalizes a 256-bit decimal; `None` when the normalized coefficient exceeds `i128`.
fn normalize_decimal256(coefficient: i256, scale: i32) -> Option<(i128, i32)> {
    if let Some(narrow) = coefficient.to_i128() {
        return Some(normalize_decimal(narrow, scale));
    }
    // Beyond i128, trailing zeros may still bring the coefficient into range.
    let ten = i256::from_i128(10);
    let mut stripped_coefficient = coefficient;
    let mut reduced_scale = scale;
    loop {
        let (quotient, remainder) = stripped_coefficient.checked_div_rem(ten)?;
        if remainder != i256::ZERO {
            return None;
        }
        stripped_coefficient = quotient;
        reduced_scale -= 1;
        if let Some(narrow) = stripped_coefficient.to_i128() {
            return Some(normalize_decimal(narrow, reduced_scale));
        }
    }
}

fn push_date(out: &mut Vec<u8>, days: i64) {
    out.push(tag::DATE);
    out.extend_from_slice(&days.to_le_bytes());
}

fn push_timestamp(out: &mut Vec<u8>, nanos: i128) {
    out.push(tag::TIMESTAMP);
    out.extend_from_slice(&nanos.to_le_bytes());
}

fn push_time(out: &mut Vec<u8>, nanos: i64) {
    out.push(tag::TIME);
    out.extend_from_slice(&nanos.to_le_bytes());
}

#[cfg(test)]
mod tests;
