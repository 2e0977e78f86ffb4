//! PostgreSQL arrays carried as JSON text (`ColumnType::Array`): the binary array format
//! (`array_send`: ndim, has-null flag, element OID, then each dimension's length and
//! lower bound, then the elements) to a JSON array nested by dimension, and back.
//!
//! Element forms: booleans and integers as JSON literals; floats as JSON numbers, except
//! NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`; `numeric` as a
//! JSON number with its scale (`1.50`), NaN and infinities as strings; text and enum
//! labels as strings; `bytea` as `"\\x..."` hex strings; dates, times and timestamps as
//! ISO strings (`"infinity"`/`"-infinity"` for the infinities); `timetz`, `interval` and
//! `uuid` as the strings their own columns are carried as; `json`/`jsonb` elements as
//! strings holding their JSON text (so that a JSON array inside `json[]` is not mistaken
//! for another dimension). A lower bound other than 1 has no JSON form and is refused.

use super::binary::{
    PG_EPOCH_DAYS, PG_EPOCH_MICROS, fixed, format_bytea_hex, format_interval, format_timetz,
    format_uuid, numeric_to_text, parse_bytea_hex, parse_interval, parse_timetz, parse_uuid,
    text_to_numeric,
};
use super::json::{self, JsonValue};
use super::types::Scalar;
use ferry_model::temporal;

/// PostgreSQL's limit on array dimensions (`MAXDIM`).
const MAX_DIMENSIONS: usize = 6;

fn be_i32(bytes: &[u8], at: usize) -> Result<i32, String> {
    bytes
        .get(at..at + 4)
        .map(|slice| i32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
        .ok_or_else(|| "a truncated array value".to_string())
}

/// Appends the JSON form of a binary array of `element`s to `out`.
pub fn array_to_json(bytes: &[u8], element: Scalar, out: &mut String) -> Result<(), String> {
    let num_dimensions = be_i32(bytes, 0)?;
    if num_dimensions == 0 {
        out.push_str("[]");
        return Ok(());
    }
    let num_dimensions = usize::try_from(num_dimensions)
        .ok()
        .filter(|n| *n <= MAX_DIMENSIONS)
        .ok_or_else(|| format!("an array with {num_dimensions} dimensions"))?;
    let mut lengths = Vec::with_capacity(num_dimensions);
    let mut at = 12;
    for _ in 0..num_dimensions {
        let length = be_i32(bytes, at)?;
        let lower_bound = be_i32(bytes, at + 4)?;
        if lower_bound != 1 {
            return Err(format!(
                "an array whose lower bound is {lower_bound}, not 1, which its JSON form cannot \
                 keep; copy the column as text with a `columns:` override, or re-base the array"
            ));
        }
        lengths.push(usize::try_from(length).map_err(|_| "a negative array length")?);
        at += 8;
    }
    let mut cursor = at;
    write_dimension(bytes, &mut cursor, &lengths, element, out)?;
    if cursor != bytes.len() {
        return Err("an array value with trailing bytes".to_string());
    }
    Ok(())
}

fn write_dimension(
    bytes: &[u8],
    cursor: &mut usize,
    lengths: &[usize],
    element: Scalar,
    out: &mut String,
) -> Result<(), String> {
    out.push('[');
    for index in 0..lengths[0] {
        if index > 0 {
            out.push(',');
        }
        if lengths.len() > 1 {
            write_dimension(bytes, cursor, &lengths[1..], element, out)?;
            continue;
        }
        let length = be_i32(bytes, *cursor)?;
        *cursor += 4;
        if length < 0 {
            out.push_str("null");
            continue;
        }
        let end = *cursor + length as usize;
        let value = bytes
            .get(*cursor..end)
            .ok_or_else(|| "a truncated array element".to_string())?;
        *cursor = end;
        element_to_json(value, element, out)?;
    }
    out.push(']');
    Ok(())
}

fn element_to_json(value: &[u8], element: Scalar, out: &mut String) -> Result<(), String> {
    let as_text = |value: &[u8]| -> Result<String, String> {
        String::from_utf8(value.to_vec()).map_err(|_| "text that is not UTF-8".to_string())
    };
    match element {
        Scalar::Bool => out.push_str(if fixed::<1>(value, "boolean")?[0] != 0 {
            "true"
        } else {
            "false"
        }),
        Scalar::Int2 => out.push_str(&i16::from_be_bytes(fixed(value, "smallint")?).to_string()),
        Scalar::Int4 => out.push_str(&i32::from_be_bytes(fixed(value, "integer")?).to_string()),
        Scalar::Int8 => out.push_str(&i64::from_be_bytes(fixed(value, "bigint")?).to_string()),
        Scalar::Float4 => {
            let float = f32::from_be_bytes(fixed(value, "real")?);
            push_float(out, f64::from(float), format!("{float:?}"));
        }
        Scalar::Float8 => {
            let float = f64::from_be_bytes(fixed(value, "double precision")?);
            push_float(out, float, format!("{float:?}"));
        }
        Scalar::Numeric => {
            let text = numeric_to_text(value)?;
            if matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity") {
                json::push_string(out, &text);
            } else {
                out.push_str(&text);
            }
        }
        Scalar::Text | Scalar::Enum => json::push_string(out, &as_text(value)?),
        Scalar::Json => json::push_string(out, &as_text(value)?),
        Scalar::Jsonb => {
            let (version, body) = value
                .split_first()
                .ok_or_else(|| "an empty jsonb value".to_string())?;
            if *version != 1 {
                return Err(format!("a jsonb value of unknown version {version}"));
            }
            json::push_string(out, &as_text(body)?);
        }
        Scalar::Bytea => json::push_string(out, &format_bytea_hex(value)),
        Scalar::Date => {
            let days = i32::from_be_bytes(fixed(value, "date")?);
            let text = match days {
                i32::MAX => "infinity".to_string(),
                i32::MIN => "-infinity".to_string(),
                _ => temporal::format_date(i64::from(days) + PG_EPOCH_DAYS),
            };
            json::push_string(out, &text);
        }
        Scalar::Time => {
            let micros = i64::from_be_bytes(fixed(value, "time")?);
            json::push_string(out, &temporal::format_time(micros));
        }
        Scalar::TimeTz => {
            let raw: [u8; 12] = fixed(value, "timetz")?;
            let micros = i64::from_be_bytes([
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]);
            let zone = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
            json::push_string(out, &format_timetz(micros, zone));
        }
        Scalar::Timestamp | Scalar::TimestampTz => {
            let micros = i64::from_be_bytes(fixed(value, "timestamp")?);
            let text = match micros {
                i64::MAX => "infinity".to_string(),
                i64::MIN => "-infinity".to_string(),
                _ => {
                    let unix = micros
                        .checked_add(PG_EPOCH_MICROS)
                        .ok_or_else(|| "a timestamp out of range".to_string())?;
                    let mut text = temporal::format_timestamp(unix);
                    if element == Scalar::TimestampTz {
                        text.push('Z');
                    }
                    text
                }
            };
            json::push_string(out, &text);
        }
        Scalar::Interval => {
            let raw: [u8; 16] = fixed(value, "interval")?;
            let micros = i64::from_be_bytes([
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]);
            let days = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
            let months = i32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]);
            json::push_string(out, &format_interval(micros, days, months));
        }
        Scalar::Uuid => json::push_string(out, &format_uuid(&fixed::<16>(value, "uuid")?)),
    }
    Ok(())
}

fn push_float(out: &mut String, float: f64, finite_text: String) {
    if float.is_nan() {
        json::push_string(out, "NaN");
    } else if float == f64::INFINITY {
        json::push_string(out, "Infinity");
    } else if float == f64::NEG_INFINITY {
        json::push_string(out, "-Infinity");
    } else {
        out.push_str(&finite_text);
    }
}

/// Encodes the JSON form of an array (see the module documentation) as a binary array
/// of `element`s whose type OID is `element_oid`.
pub fn json_to_array(
    text: &str,
    element: Scalar,
    element_oid: u32,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let root = json::parse(text)?;
    let JsonValue::Array(items) = &root else {
        return Err("the value is not a JSON array".to_string());
    };
    if items.is_empty() {
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&element_oid.to_be_bytes());
        return Ok(());
    }
    // The dimensions are the lengths along the first elements; every sub-array must
    // then match them (PostgreSQL arrays are rectangular).
    let mut lengths = Vec::new();
    let mut probe = &root;
    while let JsonValue::Array(items) = probe {
        if items.is_empty() {
            return Err("an empty inner array, which a PostgreSQL array cannot hold".to_string());
        }
        lengths.push(items.len());
        if lengths.len() > MAX_DIMENSIONS {
            return Err("more than 6 array dimensions".to_string());
        }
        probe = &items[0];
    }
    let header_at = out.len();
    out.extend_from_slice(&(lengths.len() as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // has-null flag, set below
    out.extend_from_slice(&element_oid.to_be_bytes());
    for length in &lengths {
        let length = i32::try_from(*length).map_err(|_| "an array too long")?;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
    }
    let mut has_null = false;
    encode_dimension(&root, &lengths, element, out, &mut has_null)?;
    if has_null {
        out[header_at + 4..header_at + 8].copy_from_slice(&1i32.to_be_bytes());
    }
    Ok(())
}

fn encode_dimension(
    value: &JsonValue<'_>,
    lengths: &[usize],
    element: Scalar,
    out: &mut Vec<u8>,
    has_null: &mut bool,
) -> Result<(), String> {
    let Some((&length, inner)) = lengths.split_first() else {
        return encode_element(value, element, out, has_null);
    };
    match value {
        JsonValue::Array(items) if items.len() == length => {
            for item in items {
                encode_dimension(item, inner, element, out, has_null)?;
            }
            Ok(())
        }
        _ => Err("a JSON array that is not rectangular".to_string()),
    }
}

fn encode_element(
    value: &JsonValue<'_>,
    element: Scalar,
    out: &mut Vec<u8>,
    has_null: &mut bool,
) -> Result<(), String> {
    if *value == JsonValue::Null {
        *has_null = true;
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let length_at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    let wrong = || format!("a JSON element {value:?} that is not a {element:?} value");
    let string = || match value {
        JsonValue::String(text) => Ok(text.as_ref()),
        _ => Err(wrong()),
    };
    match element {
        Scalar::Bool => match value {
            JsonValue::Bool(flag) => out.push(u8::from(*flag)),
            _ => return Err(wrong()),
        },
        Scalar::Int2 | Scalar::Int4 | Scalar::Int8 => {
            let JsonValue::Number(number) = value else {
                return Err(wrong());
            };
            let integer: i64 = number.parse().map_err(|_| wrong())?;
            match element {
                Scalar::Int2 => out
                    .extend_from_slice(&i16::try_from(integer).map_err(|_| wrong())?.to_be_bytes()),
                Scalar::Int4 => out
                    .extend_from_slice(&i32::try_from(integer).map_err(|_| wrong())?.to_be_bytes()),
                _ => out.extend_from_slice(&integer.to_be_bytes()),
            }
        }
        Scalar::Float4 | Scalar::Float8 => {
            let text = match value {
                JsonValue::Number(number) => *number,
                JsonValue::String(text) => match text.as_ref() {
                    "NaN" => "NaN",
                    "Infinity" => "inf",
                    "-Infinity" => "-inf",
                    _ => return Err(wrong()),
                },
                _ => return Err(wrong()),
            };
            if element == Scalar::Float4 {
                let float: f32 = text.parse().map_err(|_| wrong())?;
                out.extend_from_slice(&float.to_be_bytes());
            } else {
                let float: f64 = text.parse().map_err(|_| wrong())?;
                out.extend_from_slice(&float.to_be_bytes());
            }
        }
        Scalar::Numeric => match value {
            JsonValue::Number(number) => text_to_numeric(number, out)?,
            JsonValue::String(text)
                if matches!(text.as_ref(), "NaN" | "Infinity" | "-Infinity") =>
            {
                text_to_numeric(text, out)?
            }
            _ => return Err(wrong()),
        },
        Scalar::Text | Scalar::Enum | Scalar::Json => out.extend_from_slice(string()?.as_bytes()),
        Scalar::Jsonb => {
            out.push(1);
            out.extend_from_slice(string()?.as_bytes());
        }
        Scalar::Bytea => out.extend_from_slice(&parse_bytea_hex(string()?).ok_or_else(wrong)?),
        Scalar::Date => {
            let days = match string()? {
                "infinity" => i32::MAX,
                "-infinity" => i32::MIN,
                text => {
                    let unix_days = temporal::parse_date(text).ok_or_else(wrong)?;
                    i32::try_from(unix_days - PG_EPOCH_DAYS).map_err(|_| wrong())?
                }
            };
            out.extend_from_slice(&days.to_be_bytes());
        }
        Scalar::Time => {
            let micros = temporal::parse_time(string()?).ok_or_else(wrong)?;
            out.extend_from_slice(&micros.to_be_bytes());
        }
        Scalar::TimeTz => {
            let (micros, zone) = parse_timetz(string()?).ok_or_else(wrong)?;
            out.extend_from_slice(&micros.to_be_bytes());
            out.extend_from_slice(&zone.to_be_bytes());
        }
        Scalar::Timestamp | Scalar::TimestampTz => {
            let micros = match string()? {
                "infinity" => i64::MAX,
                "-infinity" => i64::MIN,
                text => {
                    let unix = temporal::parse_timestamp(text).ok_or_else(wrong)?;
                    unix.checked_sub(PG_EPOCH_MICROS).ok_or_else(wrong)?
                }
            };
            out.extend_from_slice(&micros.to_be_bytes());
        }
        Scalar::Interval => {
            let (micros, days, months) = parse_interval(string()?).ok_or_else(wrong)?;
            out.extend_from_slice(&micros.to_be_bytes());
            out.extend_from_slice(&days.to_be_bytes());
            out.extend_from_slice(&months.to_be_bytes());
        }
        Scalar::Uuid => out.extend_from_slice(&parse_uuid(string()?).ok_or_else(wrong)?),
    }
    let length = i32::try_from(out.len() - length_at - 4).map_err(|_| "an element too long")?;
    out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::types::oid;

    fn round_trip(json_text: &str, element: Scalar, element_oid: u32) -> String {
        let mut binary = Vec::new();
        json_to_array(json_text, element, element_oid, &mut binary).expect("encodes");
        let mut back = String::new();
        array_to_json(&binary, element, &mut back).expect("decodes");
        back
    }

    #[test]
    fn arrays_round_trip_through_json() {
        assert_eq!(round_trip("[]", Scalar::Int4, oid::INT4), "[]");
        assert_eq!(
            round_trip("[[1,null],[3,4]]", Scalar::Int4, oid::INT4),
            "[[1,null],[3,4]]"
        );
        assert_eq!(
            round_trip(
                r#"[1.50,"NaN",-0.000000000000000000000000000001,123456789012345678901234567890123456789012]"#,
                Scalar::Numeric,
                oid::NUMERIC
            ),
            r#"[1.50,"NaN",-0.000000000000000000000000000001,123456789012345678901234567890123456789012]"#
        );
        assert_eq!(
            round_trip(
                r#"[-0.0,"NaN","-Infinity",0.1]"#,
                Scalar::Float8,
                oid::FLOAT8
            ),
            r#"[-0.0,"NaN","-Infinity",0.1]"#
        );
        assert_eq!(
            round_trip(r#"["a\"b",null,""]"#, Scalar::Text, oid::TEXT),
            r#"["a\"b",null,""]"#
        );
        assert_eq!(
            round_trip(r#"["\\x00ff"]"#, Scalar::Bytea, oid::BYTEA),
            r#"["\\x00ff"]"#
        );
        assert_eq!(
            round_trip(
                r#"["1969-12-31","infinity","-0044-03-15"]"#,
                Scalar::Date,
                oid::DATE
            ),
            r#"["1969-12-31","infinity","-0044-03-15"]"#
        );
        assert_eq!(
            round_trip(
                r#"["2040-01-01 00:00:00.000001Z","-infinity"]"#,
                Scalar::TimestampTz,
                oid::TIMESTAMPTZ
            ),
            r#"["2040-01-01 00:00:00.000001Z","-infinity"]"#
        );
        assert_eq!(
            round_trip(r#"["[1, 2]","{\"a\": 1}"]"#, Scalar::Json, oid::JSON),
            r#"["[1, 2]","{\"a\": 1}"]"#
        );
    }

    #[test]
    fn ragged_and_mistyped_arrays_are_refused() {
        let mut out = Vec::new();
        assert!(json_to_array("[[1],[2,3]]", Scalar::Int4, oid::INT4, &mut out).is_err());
        assert!(json_to_array("[[]]", Scalar::Int4, oid::INT4, &mut out).is_err());
        assert!(json_to_array("[\"x\"]", Scalar::Int4, oid::INT4, &mut out).is_err());
        assert!(json_to_array("[70000]", Scalar::Int2, oid::INT2, &mut out).is_err());
        assert!(json_to_array("{}", Scalar::Int4, oid::INT4, &mut out).is_err());
    }

    #[test]
    fn lower_bounds_other_than_one_are_refused() {
        // '[0:0]={7}'::int4[]
        let mut binary = Vec::new();
        for word in [1i32, 0, oid::INT4 as i32, 1, 0, 4, 7] {
            binary.extend_from_slice(&word.to_be_bytes());
        }
        let mut out = String::new();
        let error = array_to_json(&binary, Scalar::Int4, &mut out).unwrap_err();
        assert!(error.contains("lower bound is 0"), "{error}");
    }
}
