//! ClickHouse's `RowBinary` format: rows measured (for the native pass-through and its
//! checksum), decoded into Arrow carriers, and encoded from Arrow batches.
//!
//! A value is decoded into a [`Value`] and then appended to the carrier of the column's
//! ferry type, so a target column of another type (a `UInt8` holding a source `bool`, a
//! `String` holding a `json`) is read back into the source's carrier for verification.

use ferry_model::column::CellRef;

use super::types::ChType;
use crate::carrier::CarrierBuilder;

/// The row needs more bytes than the buffer holds.
#[derive(Debug)]
pub struct Incomplete;

fn take<'a>(cursor: &mut &'a [u8], len: usize) -> Result<&'a [u8], Incomplete> {
    if cursor.len() < len {
        return Err(Incomplete);
    }
    let (head, tail) = cursor.split_at(len);
    *cursor = tail;
    Ok(head)
}

fn take_array<const N: usize>(cursor: &mut &[u8]) -> Result<[u8; N], Incomplete> {
    let mut array = [0u8; N];
    array.copy_from_slice(take(cursor, N)?);
    Ok(array)
}

fn varint(cursor: &mut &[u8]) -> Result<u64, Incomplete> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(cursor, 1)?[0];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Ok(value)
}

fn push_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn decimal_width(precision: u32) -> usize {
    match precision {
        0..=9 => 4,
        10..=18 => 8,
        _ => 16,
    }
}

/// Skips one value of type `ch`.
pub fn skip(ch: &ChType, cursor: &mut &[u8]) -> Result<(), Incomplete> {
    let width = match ch {
        ChType::UInt8 | ChType::Int8 | ChType::Bool => 1,
        ChType::UInt16 | ChType::Int16 | ChType::Date => 2,
        ChType::UInt32 | ChType::Int32 | ChType::Float32 | ChType::DateTime => 4,
        ChType::UInt64 | ChType::Int64 | ChType::Float64 | ChType::DateTime64(_) => 8,
        ChType::Uuid => 16,
        ChType::FixedString(n) => *n,
        ChType::Decimal(precision, _) => decimal_width(*precision),
        ChType::Enum(_, wide) => {
            if *wide {
                2
            } else {
                1
            }
        }
        ChType::String => {
            let len = varint(cursor)?;
            usize::try_from(len).map_err(|_| Incomplete)?
        }
        ChType::Nullable(inner) => {
            if take(cursor, 1)?[0] != 0 {
                return Ok(());
            }
            return skip(inner, cursor);
        }
        ChType::LowCardinality(inner) => return skip(inner, cursor),
        ChType::Array(inner) => {
            let count = varint(cursor)?;
            for _ in 0..count {
                skip(inner, cursor)?;
            }
            return Ok(());
        }
        ChType::Tuple(elements) => {
            for element in elements {
                skip(element, cursor)?;
            }
            return Ok(());
        }
        ChType::Map(key, value) => {
            let count = varint(cursor)?;
            for _ in 0..count {
                skip(key, cursor)?;
                skip(value, cursor)?;
            }
            return Ok(());
        }
        ChType::Opaque(_, width) => *width,
    };
    take(cursor, width).map(drop)
}

/// The length of the first row of `bytes` over `columns`, or `None` when it is not whole.
pub fn row_len(columns: &[ChType], bytes: &[u8]) -> Option<usize> {
    let mut cursor = bytes;
    for column in columns {
        skip(column, &mut cursor).ok()?;
    }
    Some(bytes.len() - cursor.len())
}

/// One decoded value.
#[derive(Debug)]
pub enum Value<'a> {
    /// NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// String bytes.
    Bytes(&'a [u8]),
    /// Days since 1970-01-01.
    Date(i32),
    /// Seconds since the epoch.
    Seconds(i64),
    /// `DateTime64` ticks at a precision.
    Ticks(i64, u32),
    /// A decimal's coefficient and scale.
    Decimal(i128, u32),
    /// A UUID in standard byte order.
    Uuid([u8; 16]),
    /// An enum label.
    Label(&'a str),
    /// An array as JSON text.
    Json(String),
}

/// Decodes one value of type `ch`.
pub fn decode<'a>(ch: &'a ChType, cursor: &mut &'a [u8]) -> Result<Value<'a>, String> {
    let short = |_| "the row ends early".to_string();
    Ok(match ch {
        ChType::UInt8 | ChType::Bool => Value::UInt(u64::from(take(cursor, 1).map_err(short)?[0])),
        ChType::UInt16 => Value::UInt(u64::from(u16::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::UInt32 => Value::UInt(u64::from(u32::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::UInt64 => Value::UInt(u64::from_le_bytes(take_array(cursor).map_err(short)?)),
        ChType::Int8 => Value::Int(i64::from(i8::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::Int16 => Value::Int(i64::from(i16::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::Int32 => Value::Int(i64::from(i32::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::Int64 => Value::Int(i64::from_le_bytes(take_array(cursor).map_err(short)?)),
        ChType::Float32 => Value::Float(f64::from(f32::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::Float64 => Value::Float(f64::from_le_bytes(take_array(cursor).map_err(short)?)),
        ChType::String => {
            let len = varint(cursor).map_err(short)?;
            Value::Bytes(
                take(cursor, usize::try_from(len).map_err(|_| "string too long")?)
                    .map_err(short)?,
            )
        }
        ChType::FixedString(n) => Value::Bytes(take(cursor, *n).map_err(short)?),
        ChType::Date => Value::Date(i32::from(u16::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::DateTime => Value::Seconds(i64::from(u32::from_le_bytes(
            take_array(cursor).map_err(short)?,
        ))),
        ChType::DateTime64(precision) => Value::Ticks(
            i64::from_le_bytes(take_array(cursor).map_err(short)?),
            *precision,
        ),
        ChType::Decimal(precision, scale) => {
            let coefficient = match decimal_width(*precision) {
                4 => i128::from(i32::from_le_bytes(take_array(cursor).map_err(short)?)),
                8 => i128::from(i64::from_le_bytes(take_array(cursor).map_err(short)?)),
                _ => i128::from_le_bytes(take_array(cursor).map_err(short)?),
            };
            Value::Decimal(coefficient, *scale)
        }
        ChType::Uuid => {
            let raw: [u8; 16] = take_array(cursor).map_err(short)?;
            let mut standard = [0u8; 16];
            for index in 0..8 {
                standard[index] = raw[7 - index];
                standard[8 + index] = raw[15 - index];
            }
            Value::Uuid(standard)
        }
        ChType::Enum(labels, wide) => {
            let value = if *wide {
                i16::from_le_bytes(take_array(cursor).map_err(short)?)
            } else {
                i16::from(i8::from_le_bytes(take_array(cursor).map_err(short)?))
            };
            let label = labels
                .iter()
                .find(|(_, v)| *v == value)
                .ok_or_else(|| format!("enum value {value} has no label"))?;
            Value::Label(&label.0)
        }
        ChType::Nullable(inner) => {
            if take(cursor, 1).map_err(short)?[0] != 0 {
                Value::Null
            } else {
                decode(inner, cursor)?
            }
        }
        ChType::LowCardinality(inner) => decode(inner, cursor)?,
        ChType::Array(inner) => {
            let count = varint(cursor).map_err(short)?;
            let mut json = String::from("[");
            for index in 0..count {
                if index > 0 {
                    json.push(',');
                }
                let value = decode(inner, cursor)?;
                json_value(&value, &mut json)?;
            }
            json.push(']');
            Value::Json(json)
        }
        ChType::Tuple(_) | ChType::Map(..) | ChType::Opaque(..) => {
            return Err(format!(
                "{ch:?} is carried between ClickHouse servers only (as RowBinary bytes)"
            ));
        }
    })
}

fn json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_value(value: &Value<'_>, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Int(v) => out.push_str(&v.to_string()),
        Value::UInt(v) => out.push_str(&v.to_string()),
        Value::Float(v) if v.is_finite() => out.push_str(&v.to_string()),
        Value::Float(v) => return Err(format!("{v} has no JSON form")),
        Value::Bytes(bytes) => json_string(
            std::str::from_utf8(bytes).map_err(|_| "an array string is not UTF-8")?,
            out,
        ),
        Value::Label(label) => json_string(label, out),
        Value::Date(days) => {
            json_string(&ferry_model::temporal::format_date(i64::from(*days)), out)
        }
        Value::Decimal(coefficient, scale) => out.push_str(&decimal_text(*coefficient, *scale)),
        Value::Json(json) => out.push_str(json),
        Value::Seconds(_) | Value::Ticks(..) | Value::Uuid(_) => {
            return Err("arrays of times and UUIDs are not carried yet".into());
        }
    }
    Ok(())
}

/// `coefficient × 10^-scale` as plain decimal text.
pub fn decimal_text(coefficient: i128, scale: u32) -> String {
    let digits = coefficient.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if coefficient < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let point = padded.len() - scale;
    format!("{sign}{}.{}", &padded[..point], &padded[point..])
}

/// Appends `value` to `builder`, the carrier of `column_type`.
pub fn append(builder: &mut CarrierBuilder, value: Value<'_>) -> Result<(), String> {
    fn int(value: &Value<'_>) -> Option<i128> {
        match value {
            Value::Int(v) => Some(i128::from(*v)),
            Value::UInt(v) => Some(i128::from(*v)),
            _ => None,
        }
    }
    fn fit<T: TryFrom<i128>>(value: &Value<'_>) -> Result<T, String> {
        let wide = int(value).ok_or_else(|| format!("{value:?} is not an integer"))?;
        T::try_from(wide).map_err(|_| format!("{wide} is out of range"))
    }
    if matches!(value, Value::Null) {
        builder.append_null();
        return Ok(());
    }
    match builder {
        CarrierBuilder::Bool(b) => b.append_value(fit::<u8>(&value)? != 0),
        CarrierBuilder::Int8(b) => b.append_value(fit(&value)?),
        CarrierBuilder::Int16(b) => b.append_value(fit(&value)?),
        CarrierBuilder::Int32(b) => b.append_value(fit(&value)?),
        CarrierBuilder::Int64(b) => b.append_value(fit(&value)?),
        CarrierBuilder::UInt8(b) => b.append_value(fit(&value)?),
        CarrierBuilder::UInt16(b) => b.append_value(fit(&value)?),
        CarrierBuilder::UInt32(b) => b.append_value(fit(&value)?),
        CarrierBuilder::UInt64(b) => b.append_value(fit(&value)?),
        CarrierBuilder::Float32(b) => match value {
            Value::Float(v) => b.append_value(v as f32),
            other => return Err(format!("{other:?} is not a float")),
        },
        CarrierBuilder::Float64(b) => match value {
            Value::Float(v) => b.append_value(v),
            other => return Err(format!("{other:?} is not a float")),
        },
        CarrierBuilder::Utf8(b) => match value {
            Value::Bytes(bytes) => b.append_value(std::str::from_utf8(bytes).map_err(|_| {
                "holds bytes that are not UTF-8; a ClickHouse String is carried as text to \
                 other engines (between two ClickHouse servers it passes as bytes)"
                    .to_string()
            })?),
            Value::Label(label) => b.append_value(label),
            Value::Decimal(coefficient, scale) => b.append_value(decimal_text(coefficient, scale)),
            Value::Json(json) => b.append_value(json),
            other => return Err(format!("{other:?} is not text")),
        },
        CarrierBuilder::Binary(b) => match value {
            Value::Bytes(bytes) => b.append_value(bytes),
            other => return Err(format!("{other:?} is not bytes")),
        },
        CarrierBuilder::Uuid(b) => match value {
            Value::Uuid(bytes) => b.append_value(bytes).map_err(|error| error.to_string())?,
            other => return Err(format!("{other:?} is not a UUID")),
        },
        CarrierBuilder::Date32(b) => match value {
            Value::Date(days) => b.append_value(days),
            other => return Err(format!("{other:?} is not a date")),
        },
        CarrierBuilder::Time64(b) => b.append_value(fit(&value)?),
        CarrierBuilder::Timestamp(b) => match value {
            Value::Seconds(seconds) => b.append_value(seconds * 1_000_000),
            Value::Ticks(ticks, precision) if precision <= 6 => {
                b.append_value(ticks * 10i64.pow(6 - precision));
            }
            Value::Ticks(ticks, precision) => {
                let per_micro = 10i64.pow(precision - 6);
                if ticks % per_micro != 0 {
                    return Err(format!(
                        "DateTime64({precision}) value {ticks} is finer than the microseconds ferry carries"
                    ));
                }
                b.append_value(ticks / per_micro);
            }
            other => return Err(format!("{other:?} is not a time")),
        },
    }
    Ok(())
}

/// Writes one value of `ch` from `cell`, read from the column's Arrow carrier.
pub fn encode(ch: &ChType, cell: CellRef<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    fn int(cell: &CellRef<'_>) -> Result<i128, String> {
        match cell {
            CellRef::Int(v) => Ok(i128::from(*v)),
            CellRef::UInt64(v) => Ok(i128::from(*v)),
            CellRef::Bool(v) => Ok(i128::from(*v)),
            CellRef::Time { value, .. } => Ok(i128::from(*value)),
            other => Err(format!("{other:?} is not an integer")),
        }
    }
    fn fit<T: TryFrom<i128>>(cell: &CellRef<'_>) -> Result<T, String> {
        let wide = int(cell)?;
        T::try_from(wide).map_err(|_| format!("{wide} is out of range"))
    }
    fn text<'a>(cell: &CellRef<'a>) -> Result<&'a [u8], String> {
        match cell {
            CellRef::Utf8(text) => Ok(text.as_bytes()),
            CellRef::Binary(bytes) | CellRef::FixedSizeBinary(bytes) => Ok(bytes),
            other => Err(format!("{other:?} is not text")),
        }
    }
    fn micros(cell: &CellRef<'_>) -> Result<i64, String> {
        match cell {
            CellRef::Timestamp {
                value,
                unit: arrow_schema::TimeUnit::Microsecond,
                ..
            } => Ok(*value),
            other => Err(format!("{other:?} is not a microsecond timestamp")),
        }
    }
    match ch {
        ChType::Nullable(inner) => {
            if matches!(cell, CellRef::Null) {
                out.push(1);
                return Ok(());
            }
            out.push(0);
            return encode(inner, cell, out);
        }
        ChType::LowCardinality(inner) => return encode(inner, cell, out),
        _ if matches!(cell, CellRef::Null) => {
            return Err("NULL into a column that is not Nullable".into());
        }
        ChType::UInt8 | ChType::Bool => out.push(fit::<u8>(&cell)?),
        ChType::UInt16 => out.extend_from_slice(&fit::<u16>(&cell)?.to_le_bytes()),
        ChType::UInt32 => out.extend_from_slice(&fit::<u32>(&cell)?.to_le_bytes()),
        ChType::UInt64 => out.extend_from_slice(&fit::<u64>(&cell)?.to_le_bytes()),
        ChType::Int8 => out.extend_from_slice(&fit::<i8>(&cell)?.to_le_bytes()),
        ChType::Int16 => out.extend_from_slice(&fit::<i16>(&cell)?.to_le_bytes()),
        ChType::Int32 => out.extend_from_slice(&fit::<i32>(&cell)?.to_le_bytes()),
        ChType::Int64 => out.extend_from_slice(&fit::<i64>(&cell)?.to_le_bytes()),
        ChType::Float32 => match cell {
            CellRef::Float(v) => out.extend_from_slice(&(v as f32).to_le_bytes()),
            other => return Err(format!("{other:?} is not a float")),
        },
        ChType::Float64 => match cell {
            CellRef::Float(v) => out.extend_from_slice(&v.to_le_bytes()),
            other => return Err(format!("{other:?} is not a float")),
        },
        ChType::String => {
            let bytes = text(&cell)?;
            push_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }
        ChType::FixedString(n) => {
            let bytes = text(&cell)?;
            if bytes.len() > *n {
                return Err(format!("{} bytes do not fit FixedString({n})", bytes.len()));
            }
            out.extend_from_slice(bytes);
            out.resize(out.len() + n - bytes.len(), 0);
        }
        ChType::Date => match cell {
            CellRef::Date32(days) => out.extend_from_slice(
                &u16::try_from(days)
                    .map_err(|_| format!("day {days} is outside ClickHouse Date (1970-2149)"))?
                    .to_le_bytes(),
            ),
            other => return Err(format!("{other:?} is not a date")),
        },
        ChType::DateTime => {
            let value = micros(&cell)?;
            if value % 1_000_000 != 0 {
                return Err(format!(
                    "{} has a fraction of a second, which DateTime cannot hold",
                    ferry_model::temporal::format_timestamp(value)
                ));
            }
            let seconds = u32::try_from(value / 1_000_000)
                .map_err(|_| "outside ClickHouse DateTime (1970-2106)".to_string())?;
            out.extend_from_slice(&seconds.to_le_bytes());
        }
        ChType::DateTime64(precision) => {
            let value = i128::from(micros(&cell)?);
            let ticks = if *precision >= 6 {
                value * 10i128.pow(precision - 6)
            } else {
                let per = 10i128.pow(6 - precision);
                if value % per != 0 {
                    return Err(format!("finer than DateTime64({precision})"));
                }
                value / per
            };
            let ticks = i64::try_from(ticks).map_err(|_| "out of range".to_string())?;
            out.extend_from_slice(&ticks.to_le_bytes());
        }
        ChType::Decimal(precision, scale) => {
            let text = match cell {
                CellRef::Utf8(text) => text.to_string(),
                CellRef::Int(v) => v.to_string(),
                other => return Err(format!("{other:?} is not a decimal")),
            };
            let (coefficient, value_scale) =
                ferry_model::decimal::plain_coefficient_scale(&text)
                    .ok_or_else(|| format!("{text} is not a plain decimal"))?;
            let target_scale = *scale as i32;
            let coefficient = if value_scale <= target_scale {
                coefficient
                    .checked_mul(10i128.pow((target_scale - value_scale) as u32))
                    .ok_or_else(|| format!("{text} overflows Decimal({precision}, {scale})"))?
            } else {
                let divisor = 10i128.pow((value_scale - target_scale) as u32);
                if coefficient % divisor != 0 {
                    return Err(format!(
                        "{text} has more digits than Decimal({precision}, {scale})"
                    ));
                }
                coefficient / divisor
            };
            if coefficient.unsigned_abs() >= 10u128.pow(*precision) {
                return Err(format!("{text} overflows Decimal({precision}, {scale})"));
            }
            match decimal_width(*precision) {
                4 => out.extend_from_slice(&(coefficient as i32).to_le_bytes()),
                8 => out.extend_from_slice(&(coefficient as i64).to_le_bytes()),
                _ => out.extend_from_slice(&coefficient.to_le_bytes()),
            }
        }
        ChType::Uuid => match cell {
            CellRef::FixedSizeBinary(bytes) if bytes.len() == 16 => {
                for index in 0..8 {
                    out.push(bytes[7 - index]);
                }
                for index in 0..8 {
                    out.push(bytes[15 - index]);
                }
            }
            other => return Err(format!("{other:?} is not a UUID")),
        },
        ChType::Enum(labels, wide) => {
            let label = text(&cell)?;
            let value = labels
                .iter()
                .find(|(name, _)| name.as_bytes() == label)
                .map(|(_, value)| *value)
                .ok_or_else(|| {
                    format!(
                        "{:?} is not a label of the enum",
                        String::from_utf8_lossy(label)
                    )
                })?;
            if *wide {
                out.extend_from_slice(&value.to_le_bytes());
            } else {
                out.push(value as i8 as u8);
            }
        }
        ChType::Array(_) | ChType::Tuple(_) | ChType::Map(..) | ChType::Opaque(..) => {
            return Err(
                "Array, Tuple, Map and wide integer columns are copied between ClickHouse \
                 servers in RowBinary (the native path, taken unless a rows/s limit is set)"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_places_the_point() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(7, 0), "7");
    }

    #[test]
    fn rows_are_measured_and_values_round_trip() {
        let columns = vec![
            ChType::Nullable(Box::new(ChType::String)),
            ChType::Decimal(18, 2),
            ChType::Array(Box::new(ChType::UInt8)),
        ];
        let mut row = Vec::new();
        encode(&columns[0], CellRef::Utf8("hé"), &mut row).expect("encodes");
        encode(&columns[1], CellRef::Utf8("-1.5"), &mut row).expect("encodes");
        row.extend_from_slice(&[2, 7, 8]);
        assert_eq!(row_len(&columns, &row), Some(row.len()));
        assert_eq!(row_len(&columns, &row[..row.len() - 1]), None);
        let mut cursor = &row[..];
        assert!(matches!(
            decode(&columns[0], &mut cursor),
            Ok(Value::Bytes(b"h\xc3\xa9"))
        ));
        assert!(matches!(
            decode(&columns[1], &mut cursor),
            Ok(Value::Decimal(-150, 2))
        ));
        assert!(
            matches!(decode(&columns[2], &mut cursor), Ok(Value::Json(ref json)) if json == "[7,8]")
        );
    }
}
