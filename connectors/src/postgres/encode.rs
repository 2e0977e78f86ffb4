//! Encodes Arrow batches into a binary COPY stream for the *target* columns' types:
//! decimal text into `numeric`, `UInt64` into `numeric(20,0)`, JSON text into arrays,
//! `jsonb` with its version byte, and so on. Each carrier/target pair that works is listed
//! once, in [`encoder_for`]; `prepare_table` refuses every other pair before a row moves.

use arrow_array::Array;
use arrow_schema::TimeUnit;
use bytes::{BufMut, BytesMut};
use ferry_model::column::{CellRef, ColumnView};
use ferry_model::schema::ColumnType;

use super::array::json_to_array;
use super::binary::{
    PG_EPOCH_DAYS, PG_EPOCH_MICROS, format_uuid, i128_to_numeric, parse_interval, parse_timetz,
    text_to_numeric,
};
use super::read::COPY_SIGNATURE;
use super::types::{Scalar, WireType};

/// How one carrier is written into one target column type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// `Boolean` into `boolean`.
    Bool,
    /// Any integer carrier into an integer, `numeric` or text column.
    Integer(Scalar),
    /// A float carrier into `real` or `double precision`.
    Float(Scalar),
    /// Decimal text into `numeric` or an integer column.
    DecimalText(Scalar),
    /// Text into a text, enum or `json` column, as its bytes.
    Text,
    /// Text into `jsonb`: version byte 1, then the bytes.
    Jsonb,
    /// `timetz` carrier text into `timetz`.
    TimeTz,
    /// `interval` carrier text into `interval`.
    Interval,
    /// An array's JSON text into a PostgreSQL array.
    Array {
        /// The target's element type.
        element: Scalar,
        /// The element type's OID, which the array header must name.
        element_oid: u32,
    },
    /// `Binary` into `bytea`.
    Bytes,
    /// `Date32` into `date`.
    Date,
    /// `Time64(µs)` into `time`.
    Time,
    /// `Timestamp(µs)` into `timestamp` or `timestamptz`.
    Timestamp,
    /// `FixedSizeBinary(16)` into `uuid`.
    Uuid,
    /// `FixedSizeBinary(16)` into a text column, as `8-4-4-4-12`.
    UuidText,
}

/// The encoder writing `source`'s carrier into a `target` column, or `None`.
pub fn encoder_for(source: &ColumnType, target: &WireType) -> Option<Encoder> {
    let scalar = match target {
        WireType::Scalar(scalar) => *scalar,
        WireType::Array {
            element,
            element_oid,
        } => {
            return matches!(source, ColumnType::Array { .. }).then_some(Encoder::Array {
                element: *element,
                element_oid: *element_oid,
            });
        }
        WireType::Unsupported => return None,
    };
    let textual = matches!(scalar, Scalar::Text | Scalar::Enum);
    let into_text_or_json = || match scalar {
        Scalar::Text | Scalar::Enum | Scalar::Json => Some(Encoder::Text),
        Scalar::Jsonb => Some(Encoder::Jsonb),
        _ => None,
    };
    match source {
        ColumnType::Bool => (scalar == Scalar::Bool).then_some(Encoder::Bool),
        ColumnType::Int8
        | ColumnType::Int16
        | ColumnType::Int32
        | ColumnType::Int64
        | ColumnType::UInt8
        | ColumnType::UInt16
        | ColumnType::UInt32
        | ColumnType::UInt64
        | ColumnType::Bit { .. }
        | ColumnType::Year => (scalar.is_integer() || scalar == Scalar::Numeric || textual)
            .then_some(Encoder::Integer(scalar)),
        ColumnType::Float32 | ColumnType::Float64 => {
            matches!(scalar, Scalar::Float4 | Scalar::Float8).then_some(Encoder::Float(scalar))
        }
        ColumnType::Decimal { .. } => {
            if scalar == Scalar::Numeric || scalar.is_integer() {
                Some(Encoder::DecimalText(scalar))
            } else {
                textual.then_some(Encoder::Text)
            }
        }
        ColumnType::Text | ColumnType::Enum { .. } | ColumnType::Set { .. } => into_text_or_json(),
        ColumnType::Json | ColumnType::Array { .. } => into_text_or_json(),
        ColumnType::TimeTz => match scalar {
            Scalar::TimeTz => Some(Encoder::TimeTz),
            _ => textual.then_some(Encoder::Text),
        },
        ColumnType::Interval => match scalar {
            Scalar::Interval => Some(Encoder::Interval),
            _ => textual.then_some(Encoder::Text),
        },
        ColumnType::Blob => (scalar == Scalar::Bytea).then_some(Encoder::Bytes),
        ColumnType::Date => (scalar == Scalar::Date).then_some(Encoder::Date),
        ColumnType::Time => (scalar == Scalar::Time).then_some(Encoder::Time),
        ColumnType::Timestamp => (scalar == Scalar::Timestamp).then_some(Encoder::Timestamp),
        ColumnType::TimestampTz => (scalar == Scalar::TimestampTz).then_some(Encoder::Timestamp),
        ColumnType::Uuid => match scalar {
            Scalar::Uuid => Some(Encoder::Uuid),
            _ => textual.then_some(Encoder::UuidText),
        },
        ColumnType::Variant => None,
    }
}

/// The header of a binary COPY stream.
pub fn push_header(out: &mut BytesMut) {
    out.put_slice(COPY_SIGNATURE);
    out.put_u32(0); // flags
    out.put_u32(0); // header extension length
}

/// The trailer of a binary COPY stream.
pub fn push_trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// Bytes in a `uuid` value.
const UUID_BYTES: usize = 16;

/// One column of a batch with its encoder.
pub struct ColumnWriter<'a> {
    encoder: &'a Encoder,
    view: ColumnView<'a>,
}

impl<'a> ColumnWriter<'a> {
    /// Pairs a batch column with its encoder; `Err` names the carrier that cannot be read.
    pub fn new(
        encoder: &'a Encoder,
        column_name: &str,
        array: &'a dyn Array,
    ) -> Result<Self, String> {
        let view = ColumnView::new(column_name, array).map_err(|_| {
            format!(
                "the postgres sink cannot read Arrow type {}",
                array.data_type()
            )
        })?;
        Ok(Self { encoder, view })
    }

    /// Appends the field (length and value) for `row`.
    pub fn write(
        &self,
        row: usize,
        out: &mut BytesMut,
        scratch: &mut Vec<u8>,
    ) -> Result<(), String> {
        let cell = self.view.cell(row);
        // Bytes the carrier holds as they are sent go straight to `out`, copied once.
        let verbatim = match (self.encoder, cell) {
            (_, CellRef::Null) => {
                out.put_i32(-1);
                return Ok(());
            }
            (Encoder::Text, CellRef::Utf8(text)) => Some(text.as_bytes()),
            (Encoder::Bytes, CellRef::Binary(bytes)) => Some(bytes),
            (Encoder::Uuid, CellRef::FixedSizeBinary(bytes)) if bytes.len() == UUID_BYTES => {
                Some(bytes)
            }
            _ => None,
        };
        if let Some(bytes) = verbatim {
            let length =
                i32::try_from(bytes.len()).map_err(|_| "a value above 2 GiB".to_string())?;
            out.put_i32(length);
            out.put_slice(bytes);
            return Ok(());
        }
        scratch.clear();
        self.encode_into(cell, scratch)?;
        let length = i32::try_from(scratch.len()).map_err(|_| "a value above 2 GiB".to_string())?;
        out.put_i32(length);
        out.put_slice(scratch);
        Ok(())
    }

    /// Writes the binary form of a value the encoder must convert.
    fn encode_into(&self, cell: CellRef<'_>, scratch: &mut Vec<u8>) -> Result<(), String> {
        match (self.encoder, cell) {
            (Encoder::Bool, CellRef::Bool(value)) => scratch.push(u8::from(value)),
            (Encoder::Integer(target), CellRef::Int(integer)) => {
                write_integer(i128::from(integer), *target, scratch)?;
            }
            (Encoder::Integer(target), CellRef::UInt64(integer)) => {
                write_integer(i128::from(integer), *target, scratch)?;
            }
            (Encoder::Float(target), CellRef::Float(double)) => {
                if *target == Scalar::Float4 {
                    let single = double as f32;
                    if f64::from(single).to_bits() != double.to_bits() && !double.is_nan() {
                        return Err(format!(
                            "the double {double:?} does not fit a real column exactly; \
                             choose double precision"
                        ));
                    }
                    scratch.extend_from_slice(&single.to_be_bytes());
                } else {
                    scratch.extend_from_slice(&double.to_be_bytes());
                }
            }
            (Encoder::DecimalText(target), CellRef::Utf8(text)) => {
                if *target == Scalar::Numeric {
                    text_to_numeric(text, scratch)?;
                } else {
                    let integer: i128 = ferry_model::decimal::normalize(text)
                        .ok()
                        .and_then(|canonical| canonical.parse().ok())
                        .ok_or_else(|| {
                            format!("the decimal {text:?} is not an integer for an integer column")
                        })?;
                    write_integer(integer, *target, scratch)?;
                }
            }
            (Encoder::Jsonb, CellRef::Utf8(text)) => {
                scratch.push(1);
                scratch.extend_from_slice(text.as_bytes());
            }
            (Encoder::TimeTz, CellRef::Utf8(text)) => {
                let (micros, zone) = parse_timetz(text).ok_or_else(|| {
                    format!("{text:?} is not a time with offset (HH:MM:SS.ffffff+HH:MM)")
                })?;
                scratch.extend_from_slice(&micros.to_be_bytes());
                scratch.extend_from_slice(&zone.to_be_bytes());
            }
            (Encoder::Interval, CellRef::Utf8(text)) => {
                let (micros, days, months) = parse_interval(text).ok_or_else(|| {
                    format!("{text:?} is not an interval ({{months}} months {{days}} days {{micros}} us)")
                })?;
                scratch.extend_from_slice(&micros.to_be_bytes());
                scratch.extend_from_slice(&days.to_be_bytes());
                scratch.extend_from_slice(&months.to_be_bytes());
            }
            (
                Encoder::Array {
                    element,
                    element_oid,
                },
                CellRef::Utf8(text),
            ) => json_to_array(text, *element, *element_oid, scratch)?,
            (Encoder::Date, CellRef::Date32(days)) => {
                let days = i64::from(days) - PG_EPOCH_DAYS;
                let days = i32::try_from(days).map_err(|_| "a date out of range".to_string())?;
                scratch.extend_from_slice(&days.to_be_bytes());
            }
            (
                Encoder::Time,
                CellRef::Time {
                    value: micros,
                    unit: TimeUnit::Microsecond,
                },
            ) => scratch.extend_from_slice(&micros.to_be_bytes()),
            (
                Encoder::Timestamp,
                CellRef::Timestamp {
                    value: micros,
                    unit: TimeUnit::Microsecond,
                    ..
                },
            ) => {
                let micros = micros
                    .checked_sub(PG_EPOCH_MICROS)
                    .ok_or_else(|| "a timestamp out of range".to_string())?;
                scratch.extend_from_slice(&micros.to_be_bytes());
            }
            (Encoder::UuidText, CellRef::FixedSizeBinary(bytes)) if bytes.len() == UUID_BYTES => {
                scratch.extend_from_slice(format_uuid(bytes).as_bytes());
            }
            _ => {
                return Err(format!(
                    "the carrier {} cannot be written as {:?}",
                    self.view.data_type(),
                    self.encoder
                ));
            }
        }
        Ok(())
    }
}

fn write_integer(integer: i128, target: Scalar, out: &mut Vec<u8>) -> Result<(), String> {
    let out_of_range = || format!("the value {integer} is out of range for a {target:?} column");
    match target {
        Scalar::Int2 => out.extend_from_slice(
            &i16::try_from(integer)
                .map_err(|_| out_of_range())?
                .to_be_bytes(),
        ),
        Scalar::Int4 => out.extend_from_slice(
            &i32::try_from(integer)
                .map_err(|_| out_of_range())?
                .to_be_bytes(),
        ),
        Scalar::Int8 => out.extend_from_slice(
            &i64::try_from(integer)
                .map_err(|_| out_of_range())?
                .to_be_bytes(),
        ),
        Scalar::Numeric => i128_to_numeric(integer, out),
        Scalar::Text | Scalar::Enum => out.extend_from_slice(integer.to_string().as_bytes()),
        _ => return Err(out_of_range()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::types::oid;

    #[test]
    fn every_foreign_target_type_has_an_encoder() {
        use super::super::types::target_type_for;
        // The default mapping's targets, recognised as the catalog would.
        let cases = [
            (ColumnType::UInt64, WireType::Scalar(Scalar::Numeric)),
            (ColumnType::Int8, WireType::Scalar(Scalar::Int2)),
            (ColumnType::Bit { width: 3 }, WireType::Scalar(Scalar::Int8)),
            (
                ColumnType::Decimal {
                    precision: Some(5),
                    scale: Some(2),
                },
                WireType::Scalar(Scalar::Numeric),
            ),
            (
                ColumnType::Set { labels: vec![] },
                WireType::Scalar(Scalar::Text),
            ),
            (ColumnType::Json, WireType::Scalar(Scalar::Jsonb)),
            (
                ColumnType::Array {
                    element: Box::new(ColumnType::Text),
                },
                WireType::Scalar(Scalar::Jsonb),
            ),
            (
                ColumnType::TimestampTz,
                WireType::Scalar(Scalar::TimestampTz),
            ),
        ];
        for (source, target) in cases {
            assert!(target_type_for(&source).is_ok());
            assert!(encoder_for(&source, &target).is_some(), "{source:?}");
        }
        assert_eq!(
            encoder_for(
                &ColumnType::Array {
                    element: Box::new(ColumnType::Int32)
                },
                &WireType::Array {
                    element: Scalar::Int4,
                    element_oid: oid::INT4
                }
            ),
            Some(Encoder::Array {
                element: Scalar::Int4,
                element_oid: oid::INT4
            })
        );
        assert!(encoder_for(&ColumnType::Text, &WireType::Scalar(Scalar::Bytea)).is_none());
        assert!(encoder_for(&ColumnType::Variant, &WireType::Scalar(Scalar::Bytea)).is_none());
    }

    #[test]
    fn integers_are_range_checked() {
        let mut out = Vec::new();
        assert!(write_integer(70_000, Scalar::Int2, &mut out).is_err());
        write_integer(-5, Scalar::Int2, &mut out).unwrap();
        assert_eq!(out, vec![0xff, 0xfb]);
    }
}
